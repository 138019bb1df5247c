/**
 * Ids, epochs, resume and refs: the `chat.json` events to the character, a
 * resume that misses nothing (or says what it missed), refs that make a
 * resent line a duplicate, and the terminal client that prints every
 * message once and sends every line once across dropped connections.
 */

import assert from "node:assert/strict";
import { recoveryNotice, WELCOME } from "../lib/protocol.ts";
import { reconnectedLine } from "../client.ts";
import {
  Cli,
  JsonClient,
  listenThroughCut,
  runCli,
  startServer,
  TcpProxy,
  TestClient,
} from "./helpers.ts";

/** The numbers `from`..`to` as `name`'s chat lines. */
function numbered(name: string, from: number, to: number): string[] {
  return Array.from({ length: to - from + 1 }, (_, i) => `${name}: ${from + i}`);
}

Deno.test("chat.json: each event has the documented shape", async () => {
  await using server = startServer({ echo: true });
  const [alice, welcome] = await JsonClient.join(`${server.url}/rust?name=alice`);
  assert.deepEqual(welcome, {
    type: "welcome",
    room: "rust",
    name: "alice",
    epoch: welcome.epoch,
    last: 0,
  });
  assert.match(welcome.epoch, /^[A-Za-z0-9_-]{12}$/);
  alice.send("hi", "a-1");
  const message = await alice.next("message");
  assert.deepEqual(message, {
    type: "message",
    id: 1,
    from: "alice",
    text: "hi",
    time: message.time,
    ref: "a-1",
  });
  assert.ok(Math.abs(message.time - Date.now()) < 60_000);
  // A plain line is a message too, without a ref; `/` is a command.
  alice.send("plain");
  assert.deepEqual(
    { ...await alice.next("message"), time: 0 },
    { type: "message", id: 2, from: "alice", text: "plain", time: 0, ref: null },
  );
  alice.send("/who");
  assert.deepEqual(await alice.next("notice"), {
    type: "notice",
    text: "online (1): alice",
  });
  const [bob, bobWelcome] = await JsonClient.join(`${server.url}/rust?name=bob`);
  assert.equal(bobWelcome.last, 2);
  assert.deepEqual(await alice.next("joined"), {
    type: "joined",
    name: "bob",
    online: 2,
  });
  // The newcomer's history follows its welcome.
  assert.deepEqual((await bob.next("message")).text, "hi");
  await bob.close();
  assert.deepEqual(await alice.next("left"), { type: "left", name: "bob", online: 1 });
  // A ref the room holds is a duplicate: not delivered, the sender told.
  alice.send("hi again", "a-1");
  assert.deepEqual(await alice.next("duplicate"), { type: "duplicate", ref: "a-1" });
  await alice.close();
});

Deno.test("chat.json: a turn's events come as one array", async () => {
  await using server = startServer();
  const [alice] = await JsonClient.join(`${server.url}/?name=alice`);
  for (let i = 1; i <= 20; i++) alice.send(String(i));
  for (let i = 1; i <= 20; i++) {
    assert.equal((await alice.next("message")).text, String(i));
  }
  assert.ok(alice.frames.some((count) => count > 1), `frames: ${alice.frames}`);
  await alice.close();
});

Deno.test("chat.json: without echo, the sender's ref is accepted", async () => {
  await using server = startServer({ echo: false });
  const [alice] = await JsonClient.join(`${server.url}/?name=alice`);
  const [bob] = await JsonClient.join(`${server.url}/?name=bob`);
  alice.send("quiet", "q-1");
  assert.deepEqual(await alice.next("accepted"), { type: "accepted", ref: "q-1" });
  assert.equal((await bob.next("message")).ref, "q-1");
  await Promise.all([alice.close(), bob.close()]);
});

Deno.test("chat.json: a rate-limited message is refused with when to retry", async () => {
  await using server = startServer({ rateLimit: 5, rateBurst: 1 });
  const [alice] = await JsonClient.join(`${server.url}/?name=alice`);
  alice.send("one", "r-1");
  alice.send("two", "r-2");
  alice.send("three", "r-3");
  const refused = await alice.next("refused");
  assert.equal(refused.ref, "r-2");
  assert.equal(refused.reason, "rate_limited");
  assert.ok(refused.retry_ms > 0 && refused.retry_ms <= 200, `${refused.retry_ms}`);
  // Those after it are refused too until it comes again, so that resent
  // in order they stay in order.
  assert.equal((await alice.next("refused")).ref, "r-3");
  alice.send("three", "r-3");
  assert.equal((await alice.next("refused")).ref, "r-3");
  // (The terminal client waits retry_ms and sends r-2 and r-3 again: below.)
  await alice.close();
});

Deno.test("chat.json: a bad message object or ref gets a notice, never a crash", async () => {
  await using server = startServer();
  const [alice] = await JsonClient.join(`${server.url}/?name=alice`);
  for (
    const [frame, notice] of [
      ['{"type":"message","text":"x","ref":"' + "r".repeat(65) + '"}', "ref"],
      ['{"type":"message","text":"x","ref":""}', "ref"],
      ['{"type":"message","text":"x","ref":"tab\\there"}', "ref"],
      ['{"type":"message","text":"x","ref":7}', "ref"],
      ['{"type":"mess', "expected"],
      ['{"type":"nope"}', "expected"],
      ['{"type":"message"}', "expected"],
    ]
  ) {
    alice.send(frame);
    const event = await alice.next("notice");
    assert.match(event.text, new RegExp(`^not sent: .*${notice}`), frame);
  }
  alice.send("still here", "ok-1");
  assert.equal((await alice.next("message")).text, "still here");
  await alice.close();
});

Deno.test("resume: everything after since, then live, with no gap and no duplicate", async () => {
  await using server = startServer({ history: 2 });
  const [alice, first] = await JsonClient.join(`${server.url}/?name=alice`);
  const sender = await server.join("sender");
  for (let i = 1; i <= 5; i++) sender.send(String(i));
  let last = 0;
  for (let i = 1; i <= 5; i++) last = (await alice.next("message")).id;
  await alice.close();
  // Away: 6..30 are sent.
  for (let i = 6; i <= 30; i++) sender.send(String(i));
  await sender.messages.skipTo((line) => line === "sender: 30");
  const back = new JsonClient(
    `${server.url}/?name=alice&since=${last}&epoch=${first.epoch}`,
  );
  // Messages keep coming while it resumes.
  for (let i = 31; i <= 40; i++) sender.send(String(i));
  const welcome = await back.next("welcome");
  assert.equal(welcome.epoch, first.epoch);
  assert.deepEqual(await back.next("recovered"), {
    type: "recovered",
    complete: true,
    missed: 0,
  });
  const texts: string[] = [];
  while (texts.length < 35) texts.push((await back.next("message")).text);
  assert.deepEqual(texts, Array.from({ length: 35 }, (_, i) => String(i + 6)));
  await back.close();
  await sender.close();
});

Deno.test("resume: beyond --history-keep, the missed are counted; another epoch is history lost", async () => {
  await using server = startServer({ historyKeep: 5, history: 1 });
  const [alice, first] = await JsonClient.join(`${server.url}/?name=alice`);
  const sender = await server.join("sender");
  sender.send("0");
  const since = (await alice.next("message")).id;
  await alice.close();
  for (let i = 1; i <= 20; i++) sender.send(String(i));
  await sender.messages.skipTo((line) => line === "sender: 20");
  const [back] = await JsonClient.join(
    `${server.url}/?name=alice&since=${since}&epoch=${first.epoch}`,
  );
  assert.deepEqual(await back.next("recovered"), {
    type: "recovered",
    complete: false,
    missed: 15,
  });
  assert.equal((await back.next("message")).text, "16");
  await back.close();
  // A plain client is told in words.
  const plain = new TestClient(
    `${server.url}/?name=carol&since=${since}&epoch=${first.epoch}`,
  );
  assert.deepEqual(await plain.messages.many(3), [
    WELCOME,
    recoveryNotice(15),
    "sender: 16",
  ]);
  assert.equal(recoveryNotice(15), "* some messages could not be recovered (15 missed)");
  await plain.close();
  // An epoch that is not the room's: what it holds, and history lost.
  const [other] = await JsonClient.join(
    `${server.url}/?name=dave&since=3&epoch=elsewhere`,
  );
  assert.deepEqual(await other.next("recovered"), {
    type: "recovered",
    complete: false,
    missed: null,
  });
  assert.equal((await other.next("message")).text, "20");
  await other.close();
  // A since past the room's latest id cannot be placed either.
  const [ahead] = await JsonClient.join(
    `${server.url}/?name=erin&since=999999999999999&epoch=${first.epoch}`,
  );
  assert.equal((await ahead.next("recovered")).missed, null);
  await ahead.close();
  await sender.close();
  const metrics = await (await fetch(`${server.pageUrl}metrics`)).text();
  for (const [result, count] of [["complete", 0], ["partial", 2], ["lost", 2]]) {
    assert.match(
      metrics,
      new RegExp(`^chat_resumes_total\\{result="${result}"\\} ${count}$`, "m"),
    );
  }
});

Deno.test("resume: a malformed since or epoch is a 400", async () => {
  await using server = startServer();
  const http = server.url.replace("ws:", "http:");
  const cases: [string, RegExp][] = [
    ["since=abc&epoch=x", /since must be a message id/],
    ["since=-1&epoch=x", /since must be a message id/],
    ["since=1e3&epoch=x", /since must be a message id/],
    ["since=9999999999999999&epoch=x", /since must be a message id/],
    ["since=1", /since without epoch/],
    ["epoch=x", /epoch without since/],
    ["since=1&epoch=" + "e".repeat(65), /epoch must be/],
    ["since=1&epoch=a%20b", /epoch must be/],
  ];
  for (const [query, problem] of cases) {
    const response = await fetch(`${http}/?${query}`, {
      headers: {
        upgrade: "websocket",
        connection: "Upgrade",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13",
      },
    });
    assert.equal(response.status, 400, query);
    assert.match(await response.text(), problem, query);
  }
  await using still = await server.join("still");
  still.send("fine");
  assert.equal(await still.messages.next(), "still: fine");
});

Deno.test("an emptied room keeps its history for --room-ttl, so its last member resumes", async () => {
  await using server = startServer();
  const [alice, first] = await JsonClient.join(`${server.url}/quiet?name=alice`);
  alice.send("last words", "w-1");
  const { id } = await alice.next("message");
  await alice.close();
  await server.log.take((line) =>
    line.startsWith("Disconnected ") && server.clients === 0
  );
  const [back, welcome] = await JsonClient.join(
    `${server.url}/quiet?name=alice&since=${id - 1}&epoch=${first.epoch}`,
  );
  assert.equal(welcome.epoch, first.epoch);
  assert.equal((await back.next("recovered")).complete, true);
  assert.equal((await back.next("message")).text, "last words");
  // Its ref is held too: sent again, it is a duplicate.
  back.send("last words", "w-1");
  assert.equal((await back.next("duplicate")).ref, "w-1");
  await back.close();
});

Deno.test("the client, cut off by a proxy while others talk, prints every message once and says nothing was missed", async () => {
  await using server = startServer({ rateLimit: 0 });
  await using proxy = TcpProxy.start(server.addr.port);
  await using sender = await server.join("sender");
  const { reconnected, lines } = await listenThroughCut(proxy, sender);
  assert.equal(reconnected, reconnectedLine(0));
  assert.equal(reconnectedLine(0), "chat: reconnected, nothing missed");
  assert.deepEqual(lines, numbered("sender", 1, 70));
});

Deno.test("a restart without --store is an epoch change: the client says history was lost", async () => {
  const first = startServer();
  const port = first.addr.port;
  await using listener = new Cli([
    "client",
    "--url",
    first.url,
    "--name",
    "listener",
    "--reconnect",
  ]);
  assert.equal(await listener.stdout.next(), WELCOME);
  const sender = await first.join("sender");
  sender.send("before");
  await listener.chat.skipTo((line) => line === "sender: before");
  await sender.close();
  await first.shutdown();
  await using second = startServer({ port });
  assert.equal(
    await listener.stderr.take((line) => line.startsWith("chat: reconnected")),
    reconnectedLine(null),
  );
  assert.equal(
    reconnectedLine(null),
    "chat: reconnected, history lost: messages may be missed",
  );
  const again = await second.join("sender");
  again.send("after");
  await listener.chat.skipTo((line) => line === "sender: after");
  await listener.stop("SIGINT");
  await again.close();
});

Deno.test("the client resends what the rate limit refused, in order, and loses nothing", async () => {
  await using server = startServer({ rateLimit: 50, rateBurst: 5 });
  const lines = Array.from({ length: 120 }, (_, i) => String(i + 1));
  await using sender = new Cli([
    "client",
    "--url",
    server.url,
    "--name",
    "sender",
    "--rate",
    "0",
  ]);
  await sender.write(lines.join("\n") + "\n");
  const status = await sender.finished();
  assert.equal(status.code, 0, sender.stderrLines.join("\n"));
  assert.deepEqual(
    sender.chatLines.filter((line) => line.startsWith("sender: ")),
    numbered("sender", 1, 120),
  );
});

Deno.test("emptied rooms kept for resumes stay within --history-bytes", async () => {
  await using server = startServer({ historyBytes: 100_000, rateLimit: 0 });
  const filler = "x".repeat(1000);
  for (let room = 0; room < 30; room++) {
    const [client] = await JsonClient.join(`${server.url}/r${room}?name=a`);
    for (let i = 0; i < 20; i++) client.send(`${i} ${filler}`, `r${room}-${i}`);
    for (let i = 0; i < 20; i++) await client.next("message");
    await client.close();
  }
  const metrics = await (await fetch(`${server.pageUrl}metrics`)).text();
  const held = Number(metrics.match(/^chat_history_bytes (\d+)$/m)?.[1]);
  assert.ok(held > 50_000 && held <= 100_000, `chat_history_bytes ${held}`);
});

Deno.test("a resume sends what fits in half of --max-buffered-bytes and counts the rest as missed", async () => {
  await using server = startServer({ maxBufferedBytes: 65536, rateLimit: 0 });
  const [alice, first] = await JsonClient.join(`${server.url}/?name=alice`);
  const filler = "z".repeat(4000);
  for (let i = 1; i <= 40; i++) alice.send(`${i} ${filler}`);
  for (let i = 1; i <= 40; i++) await alice.next("message");
  await alice.close();
  const [back] = await JsonClient.join(
    `${server.url}/?name=alice&since=0&epoch=${first.epoch}`,
  );
  const recovered = await back.next("recovered");
  assert.equal(recovered.complete, false);
  // 32 KiB hold 8 of these messages (4,072 bytes each, as the history
  // budget counts them): the 32 before them are missed.
  assert.equal(recovered.missed, 32);
  assert.match((await back.next("message")).text, /^33 /);
  back.send("still connected", "s-1");
  assert.equal(
    (await back.events.skipTo((e) => e.ref === "s-1")).text,
    "still connected",
  );
  await back.close();
});

Deno.test("without --reconnect, a dropped connection says how many lines were not sent", async () => {
  // One message a second: lines 2 to 5 are refused and wait to be sent again.
  await using server = startServer({ rateLimit: 1, rateBurst: 1 });
  await using proxy = TcpProxy.start(server.addr.port);
  await using sender = new Cli([
    "client",
    "--url",
    proxy.url,
    "--name",
    "sender",
    "--rate",
    "0",
  ]);
  assert.equal(await sender.stdout.next(), WELCOME);
  await sender.write("1\n2\n3\n4\n5\n");
  await sender.chat.skipTo((line) => line === "sender: 1");
  await sender.chat.skipTo((line) => line.startsWith("* rate limit"));
  await proxy.cut();
  const status = await sender.finished();
  assert.equal(status.code, 1);
  assert.match(sender.stderrLines.join("\n"), /^disconnected: 1006/m);
  assert.match(sender.stderrLines.join("\n"), /^chat: 4 lines not sent$/m);
});

Deno.test("a piped client on a --no-echo server waits for its lines to be accepted, then exits 0", async () => {
  await using server = startServer({ echo: false });
  await using listener = await server.join("listener");
  const { code, stdout, stderr } = await runCli(
    ["client", "--url", server.url, "--name", "quiet"],
    "one\ntwo\nthree\n",
  );
  assert.equal(code, 0, stderr);
  // Its own lines are not echoed to it...
  assert.doesNotMatch(stdout, /^quiet: /m);
  // ...and each reached the room once.
  for (const text of ["one", "two", "three"]) {
    assert.equal(await listener.messages.next(), `quiet: ${text}`);
  }
});

/** Rooms, presence, commands, history, the chat page, and the YewChat protocol. */
import assert from "node:assert/strict";
import { RawSocket } from "./raw.ts";
import { sendNumbered, startServer, takeNumbered, TestClient } from "./helpers.ts";
import { HELP_LINE, roomFromPath, WELCOME, whoLine, yewUsers } from "../lib/protocol.ts";

Deno.test("room paths: / is the default room, /NAME a room, anything else none", () => {
  assert.equal(roomFromPath("/"), "");
  assert.equal(roomFromPath("/rust"), "rust");
  assert.equal(roomFromPath("/a.b-c_d"), "a.b-c_d");
  for (
    const path of ["/a/b", "/rust/", "//", "/a%20b", "/é", `/${"x".repeat(33)}`]
  ) {
    assert.equal(roomFromPath(path), undefined, path);
  }
  for (const reserved of ["healthz", "readyz", "metrics", "favicon.ico"]) {
    assert.equal(roomFromPath(`/${reserved}`), undefined, reserved);
  }
});

Deno.test("messages never cross rooms", async () => {
  await using server = startServer();
  await using lobby = await server.join("lobby");
  await using rust = await server.join("ferris", "rust");
  await using rust2 = await server.join("crab", "rust");
  rust.send("in rust");
  assert.equal(await rust2.messages.next(), "ferris: in rust");
  lobby.send("in the lobby");
  assert.equal(await lobby.messages.next(), "lobby: in the lobby");
  rust2.send("still rust");
  assert.equal(
    await rust.messages.take((m) => m.includes("still")),
    "crab: still rust",
  );
  assert.deepEqual(rust.messages.queued, ["ferris: in rust"]);
  assert.deepEqual(lobby.presence.queued, []);
});

Deno.test("bad room paths: 400 for an upgrade, 404 for a page", async () => {
  await using server = startServer();
  const http = server.url.replace("ws:", "http:");
  for (
    const path of [
      "/a/b",
      "/rust/",
      "/a%20b",
      "/healthz",
      "/metrics",
      "/favicon.ico",
    ]
  ) {
    const raw = await RawSocket.open(server.addr.port, { path });
    assert.equal(raw.status, 400, path);
    assert.match(await raw.body(), /^no room at /);
    raw.close();
    // /healthz and /metrics answer for themselves; the others are not found.
    if (path === "/healthz" || path === "/metrics") continue;
    const page = await fetch(http + path);
    assert.equal(page.status, 404, path);
    await page.body?.cancel();
  }
});

Deno.test("presence: joined and left, with the count, to the others only", async () => {
  await using server = startServer();
  await using alice = await server.join("alice");
  const bob = await server.join("bob");
  assert.equal(await alice.presence.next(), "* bob joined (2 online)");
  await using anonymous = await server.join();
  const address = (await alice.presence.next()).match(
    /^\* (\S+) joined \(3 online\)$/,
  )
    ?.[1];
  assert.match(address ?? "", /^127\.0\.0\.1:\d+$/);
  await bob.close();
  assert.equal(await alice.presence.next(), "* bob left (2 online)");
  assert.equal(await anonymous.presence.next(), "* bob left (2 online)");
  // Bob saw the newcomer, never his own leaving.
  assert.deepEqual(bob.presence.queued, [`* ${address} joined (3 online)`]);
});

Deno.test("a name already in the room gets 409; the same name elsewhere is fine", async () => {
  await using server = startServer();
  await using alice = await server.join("alice");
  const taken = await RawSocket.open(server.addr.port, {
    path: "/?name=alice",
  });
  assert.equal(taken.status, 409);
  assert.equal(await taken.body(), "name taken: alice\n");
  taken.close();
  // The refused one never joined: alice heard of nobody.
  assert.deepEqual(alice.presence.queued, []);
  await using elsewhere = await server.join("alice", "other");
  elsewhere.send("hi");
  assert.equal(await elsewhere.messages.next(), "alice: hi");
  // The page asks first, with the same answer.
  const http = server.url.replace("ws:", "http:");
  const head = await fetch(`${http}/?name=alice`, { method: "HEAD" });
  assert.equal(head.status, 409);
  await head.body?.cancel();
  const free = await fetch(`${http}/?name=zed`, { method: "HEAD" });
  assert.equal(free.status, 200);
  await free.body?.cancel();
});

Deno.test("commands answer the sender alone: /who, /help, unknown, and // escapes", async () => {
  await using server = startServer();
  await using alice = await server.join("alice");
  await using bob = await server.join("bob");
  alice.send("/who");
  assert.equal(await alice.messages.next(), whoLine(["alice", "bob"]));
  assert.equal(whoLine(["alice", "bob"]), "* online (2): alice, bob");
  alice.send("/help");
  assert.equal(await alice.messages.next(), HELP_LINE);
  alice.send("/nope now");
  assert.equal(
    await alice.messages.next(),
    "* unknown command /nope: try /help",
  );
  alice.send("//slash is text");
  assert.equal(await bob.messages.next(), "alice: /slash is text");
  assert.equal(await alice.messages.next(), "alice: /slash is text");
  assert.deepEqual(bob.messages.queued, []);
});

Deno.test("history: a newcomer gets the last --history messages after the welcome", async () => {
  await using server = startServer({ history: 3, roomTtl: 0 });
  const alice = await server.join("alice");
  for (const text of ["one", "two", "three", "four"]) alice.send(text);
  await alice.messages.many(4);
  const bob = new TestClient(`${server.url}/?name=bob`);
  assert.deepEqual(await bob.messages.many(4), [
    WELCOME,
    "alice: two",
    "alice: three",
    "alice: four",
  ]);
  await bob.close();
  await alice.close();
  // The room emptied, and with --room-ttl 0 its history went at once.
  await server.log.take((line) =>
    line.startsWith("Disconnected ") && server.clients === 0
  );
  await using carol = new TestClient(`${server.url}/?name=carol`);
  assert.equal(await carol.messages.next(), WELCOME);
  carol.send("fresh");
  assert.equal(await carol.messages.next(), "carol: fresh");
});

Deno.test("--history 0 keeps none", async () => {
  await using server = startServer({ history: 0 });
  await using alice = await server.join("alice");
  alice.send("gone");
  await alice.messages.next();
  await using bob = new TestClient(`${server.url}/?name=bob`);
  assert.equal(await bob.messages.next(), WELCOME);
  bob.send("mine");
  assert.equal(await bob.messages.next(), "bob: mine");
});

Deno.test("GET and HEAD of a room serve the self-contained chat page", async () => {
  await using server = startServer();
  const http = server.url.replace("ws:", "http:");
  for (
    const [path, title] of [["/", "<title>chat</title>"], [
      "/rust",
      "<title>#rust · chat</title>",
    ]]
  ) {
    const response = await fetch(http + path);
    assert.equal(response.status, 200);
    assert.equal(
      response.headers.get("content-type"),
      "text/html; charset=utf-8",
    );
    assert.match(
      response.headers.get("content-security-policy") ?? "",
      /default-src 'none'/,
    );
    const page = await response.text();
    assert.ok(page.includes(title), title);
    // Nothing is loaded from anywhere else.
    assert.doesNotMatch(
      page,
      /<script[^>]+src=|<link[^>]+stylesheet|https?:\/\/|@import|url\(/,
    );
  }
  const head = await fetch(http + "/rust", { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal(await head.text(), "");
});

Deno.test("YewChat: register, user lists and JSON messages, mixed with plain clients", async () => {
  await using server = startServer();
  await using plain = await server.join("plain");
  const yew = new TestClient(server.url);
  await yew.opened;
  yew.send(JSON.stringify({ messageType: "register", data: "yewser" }));
  assert.equal(await yew.messages.next(), yewUsers(["plain", "yewser"]));
  assert.equal(await plain.presence.next(), "* yewser joined (2 online)");
  yew.send(JSON.stringify({ messageType: "message", data: "hello from yew" }));
  assert.equal(await plain.messages.next(), "yewser: hello from yew");
  const echoed = JSON.parse(await yew.messages.next());
  assert.equal(echoed.messageType, "message");
  const data = JSON.parse(echoed.data);
  assert.deepEqual(Object.keys(data), ["from", "message", "time"]);
  assert.equal(data.from, "yewser");
  assert.equal(data.message, "hello from yew");
  assert.ok(Math.abs(data.time - Date.now()) < 60_000);
  plain.send("/who");
  assert.equal(await plain.messages.next(), "* online (2): plain, yewser");
  // Never commands, never text: a /who from YewChat is a message like any other.
  yew.send(JSON.stringify({ messageType: "message", data: "/who" }));
  assert.equal(await plain.messages.next(), "yewser: /who");
  assert.equal(
    JSON.parse(JSON.parse(await yew.messages.next()).data).message,
    "/who",
  );
  await plain.close();
  assert.equal(await yew.messages.next(), yewUsers(["yewser"]));
  await yew.close();
});

Deno.test("YewChat: an invalid or taken NICK is closed with 1008 and the reason", async () => {
  await using server = startServer();
  await using alice = await server.join("alice");
  for (
    const [nick, reason] of [["alice", "name taken: alice"], [
      "bad nick",
      /^invalid name/,
    ]]
  ) {
    const yew = new TestClient(server.url);
    await yew.opened;
    yew.send(JSON.stringify({ messageType: "register", data: nick }));
    const closed = await yew.closed;
    assert.equal(closed.code, 1008);
    if (typeof reason === "string") assert.equal(closed.reason, reason);
    else assert.match(closed.reason, reason);
  }
  assert.deepEqual(alice.presence.queued, []);
});

Deno.test("without a name: the welcome comes after the first message or 500 ms of silence", async () => {
  await using server = startServer();
  const quick = new TestClient(server.url);
  await quick.opened;
  quick.send("first words");
  assert.equal(await quick.messages.next(), WELCOME);
  assert.match(await quick.messages.next(), /^127\.0\.0\.1:\d+: first words$/);
  const started = performance.now();
  await using silent = new TestClient(server.url);
  assert.equal(await silent.messages.next(), WELCOME);
  assert.ok(
    performance.now() - started >= 450,
    "the welcome came before 500 ms",
  );
  await quick.close();
});

Deno.test("without a name: what the room says while the client is held reaches it, once, in order", async () => {
  await using server = startServer({ history: 5, rateLimit: 0 });
  await using bob = await server.join("bob");
  await sendNumbered(bob, "bob", 1, 10);
  // Held up to 500 ms while it might still register as a YewChat client.
  await using held = new TestClient(server.url);
  await held.opened;
  await sendNumbered(bob, "bob", 11, 110);
  assert.deepEqual(held.messages.queued, [], "joined before the room spoke");
  assert.equal(await held.messages.next(), WELCOME);
  // The history at its upgrade (the last 5), then all 100 sent while it was held.
  await takeNumbered(held, "bob", 6, 110);
  bob.send("live");
  assert.equal(await held.messages.next(), "bob: live");
});

Deno.test("a YewChat client gets what the room said before it registered, as YewChat", async () => {
  await using server = startServer({ history: 5, rateLimit: 0 });
  await using bob = await server.join("bob");
  await using yew = new TestClient(server.url);
  await yew.opened;
  await sendNumbered(bob, "bob", 1, 20);
  yew.send(JSON.stringify({ messageType: "register", data: "ferris" }));
  const texts = (await yew.messages.many(21))
    .map((frame) => JSON.parse(frame))
    .filter((frame) => frame.messageType === "message")
    .map((frame) => JSON.parse(frame.data).message);
  assert.deepEqual(texts, Array.from({ length: 20 }, (_, i) => String(i + 1)));
});

Deno.test("past --presence-limit members, joins and leaves are not announced", async () => {
  await using server = startServer({ presenceLimit: 2 });
  await using alice = await server.join("alice");
  const bob = await server.join("bob");
  assert.equal(await alice.presence.next(), "* bob joined (2 online)");
  const carol = await server.join("carol");
  await carol.close();
  // Back at two members: announced again.
  assert.equal(await alice.presence.next(), "* carol left (2 online)");
  await bob.close();
  assert.equal(await alice.presence.next(), "* bob left (1 online)");
  // "carol joined (3 online)" was over the limit: never sent.
  assert.deepEqual(alice.presence.queued, []);
});

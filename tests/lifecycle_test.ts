/**
 * Whole-process behaviour: graceful shutdown under traffic, a client that
 * never reads, the client's pacing and reconnection, and memory held by a
 * never-reading client.
 */
import assert from "node:assert/strict";
import {
  Cli,
  closedPort,
  join,
  PRESENCE,
  pump,
  runCli,
  startServer,
  startServerProcess,
} from "./helpers.ts";
import { RawSocket } from "./raw.ts";
import { rssBytes } from "./proc.ts";
import { WELCOME } from "../lib/protocol.ts";
import { Backoff } from "../lib/backoff.ts";
import { END_OF_INPUT_WAIT_MS } from "../client.ts";

Deno.test("SIGTERM during traffic: reading clients get every accepted message, then 1001", async () => {
  const { cli: server, url } = await startServerProcess(["--rate-limit", "0"]);
  const readers = await Promise.all(
    ["r1", "r2", "r3"].map((name) => join(url, name)),
  );
  const received = readers.map(() => [] as string[]);
  readers.forEach((reader, i) => {
    reader.socket.addEventListener("message", (e) => {
      if (!PRESENCE.test(e.data)) received[i].push(String(e.data));
    });
  });
  const sender = await join(url, "sender");
  // Keep sending until the server closes the sender.
  let sent = 0;
  const sending = (async () => {
    while (sender.socket.readyState === WebSocket.OPEN) {
      for (
        let i = 0;
        i < 20 && sender.socket.readyState === WebSocket.OPEN;
        i++
      ) {
        sender.send(`m${sent++}`);
      }
      await sender.messages.next().catch(() => {});
    }
  })();
  // Signal once traffic is flowing.
  await readers[0].messages.take((m) => m === "sender: m100");
  server.kill("SIGTERM");
  for (const reader of readers) {
    const closed = await reader.closed;
    assert.equal(closed.code, 1001);
    assert.equal(closed.reason, "server shutting down");
  }
  await sending;
  await sender.closed;
  assert.equal((await server.finished()).code, 0);
  // What the server accepted is what it logged; every reader got all of it, in order.
  const accepted = server.stdoutLines
    .filter((line) => line.startsWith("From client "))
    .map((line) => `sender: ${JSON.parse(line.slice(line.indexOf('"')))}`);
  assert.ok(accepted.length > 100, `${accepted.length} accepted`);
  for (const messages of received) assert.deepEqual(messages, accepted);
});

Deno.test("shutdown ends within --shutdown-timeout even when a client never reads", async () => {
  const { cli: server, url, port } = await startServerProcess([
    "--rate-limit",
    "0",
    "--shutdown-timeout",
    "1",
  ]);
  const stalled = await RawSocket.open(port, { path: "/?name=stalled" });
  await using sender = await join(url, "sender");
  // Fill the stalled client's buffers: it will never take its close frame.
  await pump(sender, "sender", 512, 4096);
  const started = performance.now();
  server.kill("SIGTERM");
  const status = await server.finished();
  const elapsed = performance.now() - started;
  stalled.close();
  assert.equal(status.code, 0);
  // One second of grace, plus generous room for a loaded machine.
  assert.ok(elapsed < 4000, `took ${Math.round(elapsed)} ms`);
  assert.equal((await sender.closed).code, 1001);
});

Deno.test("a piped file of 100 lines passes a default server's rate limit, all of it", async () => {
  const { cli: server, url } = await startServerProcess();
  await using watcher = await join(url, "watcher");
  const lines = Array.from({ length: 100 }, (_, i) => `line ${i}`);
  const result = await runCli(
    ["client", "--url", url, "--name", "cat"],
    lines.join("\n") + "\n",
  );
  assert.equal(result.code, 0, result.stderr);
  assert.deepEqual(
    await watcher.messages.many(100),
    lines.map((l) => `cat: ${l}`),
  );
  assert.ok(!result.stdout.includes("* rate limit"), "the client was refused");
  await server.stop();
});

Deno.test("backoff: 0.5 s doubling to 30 s, jittered, reset after a connection", () => {
  const backoff = new Backoff();
  const full = Array.from({ length: 9 }, () => backoff.delay(1));
  assert.deepEqual(full, [
    500,
    1000,
    2000,
    4000,
    8000,
    16000,
    30000,
    30000,
    30000,
  ]);
  backoff.reset();
  assert.equal(backoff.delay(0), 250); // half of it, at the least
  assert.equal(backoff.delay(0.5), 750);
});

Deno.test("--reconnect: retries until the server is up, across a restart, lines sent once", async () => {
  const port = closedPort();
  const url = `ws://127.0.0.1:${port}`;
  const client = new Cli([
    "client",
    "--url",
    url,
    "--name",
    "phoenix",
    "--reconnect",
  ]);
  const firstRetry = await client.stderr.next();
  assert.match(
    firstRetry,
    new RegExp(
      `^chat: cannot connect to ${url}/\\?name=phoenix: connection refused; retrying in \\d\\.\\d s$`,
    ),
  );
  // Typed while no server is up: queued.
  await client.write("while down 1\nwhile down 2\n");
  let server = new Cli(["server", "--port", String(port)]);
  assert.equal(await server.stdout.next(), `listening on ${url}`);
  // Retries made before the server listened are passed over.
  assert.equal(
    await client.stderr.skipTo((l) => l.startsWith("connected")),
    `connected to ${url}/?name=phoenix`,
  );
  assert.equal(await client.chat.next(), WELCOME);
  assert.deepEqual(await client.chat.many(2), [
    "phoenix: while down 1",
    "phoenix: while down 2",
  ]);

  // The server restarts: 1001, then the client comes back by itself.
  server.kill("SIGTERM");
  assert.match(
    await client.stderr.next(),
    /^disconnected: 1001 server shutting down; reconnecting in \d\.\d s$/,
  );
  await server.finished();
  await client.write("during restart\n");
  server = new Cli(["server", "--port", String(port)]);
  assert.equal(await server.stdout.next(), `listening on ${url}`);
  await using watcher = await join(url, "watcher");
  assert.equal(
    await client.chat.take((l) => l.startsWith("phoenix: ")),
    "phoenix: during restart",
  );
  assert.equal(await watcher.messages.next(), "phoenix: during restart");
  assert.equal((await client.finished()).code, 0);
  // Each line went out exactly once.
  const sent = client.chatLines.filter((line) => line.startsWith("phoenix: "));
  assert.deepEqual(sent, [
    "phoenix: while down 1",
    "phoenix: while down 2",
    "phoenix: during restart",
  ]);
  await server.stop();
});

Deno.test("--reconnect: an HTTP 503 (server full) is retried until a slot frees", async () => {
  const { cli: server, url } = await startServerProcess(["--max-clients", "1"]);
  const holder = await join(url, "holder");
  const client = new Cli([
    "client",
    "--url",
    url,
    "--name",
    "waiter",
    "--reconnect",
  ]);
  assert.match(
    await client.stderr.next(),
    /: HTTP 503: server full: 1 client; retrying in \d\.\d s$/,
  );
  await holder.close();
  assert.equal(
    await client.stderr.take((l) => l.startsWith("connected")),
    `connected to ${url}/?name=waiter`,
  );
  assert.equal(await client.chat.next(), WELCOME);
  assert.equal((await client.finished()).code, 0);
  await server.stop();
});

Deno.test("--reconnect does not retry a refusal that will not change (HTTP 400)", async () => {
  const { cli: server, url } = await startServerProcess();
  const result = await runCli([
    "client",
    "--reconnect",
    "--url",
    `${url}/?name=a&name=b`,
  ]);
  assert.equal(result.code, 1);
  assert.equal(
    result.stderr,
    `chat: cannot connect to ${url}/?name=a&name=b: HTTP 400: repeated name parameter: give one name\n`,
  );
  await server.stop();
});

/** Sends `count` 4 KiB messages through a server process; returns its RSS growth. */
async function rssGrowth(withStalledClient: boolean): Promise<number> {
  const { cli: server, url, port } = await startServerProcess([
    "--rate-limit",
    "0",
  ]);
  await using sender = await join(url, "sender");
  const stalled = withStalledClient
    ? await RawSocket.open(port, { path: "/?name=stalled" })
    : undefined;
  const before = rssBytes(server.child.pid);
  await pump(sender, "sender", 20_000, 4096);
  const after = rssBytes(server.child.pid);
  stalled?.close();
  await server.stop();
  return after - before;
}

Deno.test(
  "a never-reading client costs the server a bounded amount of memory, not what it is sent",
  async () => {
    // 20,000 messages of 4 KiB is 80 MiB sent past the stalled client. With
    // the slow-consumer limit (1 MiB, at most 4 MiB within a turn) it holds
    // at most a few MiB of that; without it, it would hold all 80 MiB. The
    // bound allows 24 MiB over a control run of the same traffic for
    // allocator and GC noise.
    const control = await rssGrowth(false);
    const hostile = await rssGrowth(true);
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    assert.ok(
      hostile - control < 24 * 2 ** 20,
      `growth with a stalled client ${mib(hostile)}, without ${mib(control)}`,
    );
  },
);

Deno.test("--reconnect: once the input ends, the client gives up after 10 s out of reach and says what was not sent", async () => {
  const url = `ws://127.0.0.1:${closedPort()}`;
  const started = performance.now();
  const { code, stdout, stderr } = await runCli(
    ["client", "--url", url, "--reconnect"],
    "first\nsecond\n",
  );
  const took = performance.now() - started;
  assert.equal(code, 1);
  assert.equal(stdout, "");
  assert.equal(
    stderr.trimEnd().split("\n").at(-1),
    "chat: gave up: no connection within 10 s after the input ended; 2 lines not sent",
  );
  assert.ok(
    took >= END_OF_INPUT_WAIT_MS && took < END_OF_INPUT_WAIT_MS + 5000,
    `${took} ms`,
  );
});

Deno.test("SIGINT (Ctrl-C) at a piped client: a clean close with 1000, exit 0", async () => {
  await using server = startServer();
  await using bob = await server.join("bob");
  await using client = new Cli([
    "client",
    "--url",
    server.url,
    "--name",
    "alice",
  ]);
  await client.write("before\n");
  assert.equal(await bob.messages.next(), "alice: before");
  client.kill("SIGINT");
  assert.equal((await client.finished()).code, 0);
  assert.equal(
    await bob.presence.take((l) => l.includes("left")),
    "* alice left (1 online)",
  );
  assert.ok(!server.log.queued.some((line) => line.startsWith("Error")));
});

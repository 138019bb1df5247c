/**
 * Limits and hostile clients against the real server: one misbehaving
 * client costs only its own connection, and the others keep every message.
 */
import assert from "node:assert/strict";
import { join, pump, startServer, type TestClient } from "./helpers.ts";
import { Opcode, RawSocket } from "./raw.ts";
import { rateLimitNotice, WELCOME } from "../lib/protocol.ts";
import { Admission, messageBytes, utf8Length } from "../server/admission.ts";

/** Proves the chat still works: a fresh client's message reaches `client`. */
async function stillServes(url: string, client: TestClient) {
  await using probe = await join(url, "probe");
  probe.send("ok");
  assert.equal(
    await client.messages.take((m) => m.startsWith("probe: ")),
    "probe: ok",
  );
}

Deno.test("messageBytes counts UTF-8 bytes, and stops counting past the limit", () => {
  assert.equal(messageBytes("✓✓", 10), 6);
  assert.equal(messageBytes("✓".repeat(11), 10), 11); // over the limit either way
});

Deno.test("utf8Length counts UTF-8 bytes", () => {
  const samples = [
    "",
    "abc",
    "é",
    "✓",
    "😀",
    "a😀é✓",
    "\ud800",
    "x\udc00y",
    "\ud800\u0800",
    "\ud800a",
  ];
  for (const text of samples) {
    assert.equal(
      utf8Length(text),
      new TextEncoder().encode(text).length,
      JSON.stringify(text),
    );
  }
});

Deno.test("admission: size, then burst and rate, then the flood rule", () => {
  const admission = new Admission({
    maxMessageBytes: 4,
    rateLimit: 1,
    rateBurst: 2,
    rateBytes: 0,
    rateBytesBurst: 0,
  }, 0);
  assert.equal(admission.judge(utf8Length("✓✓"), 1, 0), "too_big"); // 6 bytes in 2 characters
  assert.equal(admission.judge(utf8Length("abcd"), 1, 0), "accept");
  assert.equal(admission.judge(utf8Length("b"), 1, 0), "accept");
  assert.equal(admission.judge(utf8Length("c"), 1, 0), "rate_limited");
  assert.equal(admission.judge(utf8Length("d"), 1, 1000), "accept");
  assert.equal(admission.floodLimit, 50);
  // Counted since the first refusal ("c"): c, d, 47 more and f make 50,
  // not yet over; g is the 51st in the window.
  for (let i = 0; i < 47; i++) {
    assert.equal(admission.judge(utf8Length("e"), 1, 1001), "rate_limited");
  }
  assert.equal(admission.judge(utf8Length("f"), 1, 1001), "rate_limited");
  assert.equal(admission.judge(utf8Length("g"), 1, 1001), "flooding");
  assert.equal(admission.mayNotify(0), true);
  assert.equal(admission.mayNotify(999), false);
  assert.equal(admission.mayNotify(1000), true);
  const off = new Admission({
    maxMessageBytes: 10,
    rateLimit: 0,
    rateBurst: 1,
    rateBytes: 0,
    rateBytesBurst: 1,
  }, 0);
  for (let i = 0; i < 1000; i++) assert.equal(off.judge(1, 1, 0), "accept");
});

Deno.test("admission: bytes per second counted as size times recipients, capped at the burst", () => {
  const admission = new Admission({
    maxMessageBytes: 1000,
    rateLimit: 1000,
    rateBurst: 1000,
    rateBytes: 1000,
    rateBytesBurst: 4000,
  }, 0);
  // 500 bytes to 4 readers cost 2000: two pass, the third waits.
  assert.equal(admission.judge(500, 4, 0), "accept");
  assert.equal(admission.judge(500, 4, 0), "accept");
  assert.equal(admission.judge(500, 4, 0), "bytes_limited");
  // Alone in its room, a small message costs its size alone.
  assert.equal(admission.judge(100, 0, 100), "accept");
  // A message whose fan-out is over the burst costs the burst: it passes when full.
  assert.equal(admission.judge(1000, 200, 4100), "accept");
  assert.equal(admission.judge(1, 1, 4100), "bytes_limited");
});

Deno.test("a message over --max-message-bytes closes its sender with 1009, unbroadcast", async () => {
  await using server = startServer({ maxMessageBytes: 10 });
  await using watcher = await server.join("watcher");
  await using sender = await server.join("sender");
  sender.send("✓✓✓"); // 9 bytes: fits
  assert.equal(await watcher.messages.next(), "sender: ✓✓✓");
  sender.send("✓✓✓✓"); // 12 bytes: too big
  const closed = await sender.closed;
  assert.equal(closed.code, 1009);
  assert.equal(closed.reason, "message too big");
  await stillServes(server.url, watcher);
  assert.deepEqual(watcher.messages.queued, []);
});

Deno.test("a fragmented message is judged whole, after Deno reassembles it", async () => {
  await using server = startServer({ maxMessageBytes: 1000 });
  await using watcher = await server.join("watcher");
  const raw = await RawSocket.open(server.addr.port);
  assert.equal(await raw.readText(), WELCOME);
  for (let i = 0; i < 3; i++) {
    await raw.sendFrame(
      i === 0 ? Opcode.TEXT : Opcode.CONTINUATION,
      "x".repeat(400),
      {
        fin: i === 2,
      },
    );
  }
  const closed = await raw.readUntilClose();
  assert.equal(closed.code, 1009);
  raw.close();
  await stillServes(server.url, watcher);
});

Deno.test("over the rate limit: not broadcast, one notice to the sender alone", async () => {
  await using server = startServer({ rateLimit: 1, rateBurst: 3 });
  await using watcher = await server.join("watcher");
  await using sender = await server.join("sender");
  for (let i = 0; i < 10; i++) sender.send(`m${i}`);
  // The three of the burst, then one notice; the refused ones go nowhere.
  assert.deepEqual(await sender.messages.many(4), [
    "sender: m0",
    "sender: m1",
    "sender: m2",
    rateLimitNotice(1),
  ]);
  assert.equal(rateLimitNotice(1), "* rate limit: 1 message per second");
  assert.deepEqual(await watcher.messages.many(3), [
    "sender: m0",
    "sender: m1",
    "sender: m2",
  ]);
  await stillServes(server.url, watcher);
  assert.deepEqual(watcher.messages.queued, []);
});

Deno.test("a flood (over 10 x rate x 5 messages in 5 s) is closed with 1008", async () => {
  await using server = startServer({ rateLimit: 1, rateBurst: 1 });
  await using watcher = await server.join("watcher");
  await using flooder = await server.join("flooder");
  // One accepted, then 51 refused in the window: 50 allowed, the 51st floods.
  // (Exactly that many, so the close is not answered by a reset: a client
  // that goes on sending after the 1008 may see its connection reset.)
  for (let i = 0; i < 52; i++) flooder.send(`f${i}`);
  const closed = await flooder.closed;
  assert.equal(closed.code, 1008);
  assert.equal(closed.reason, "flooding");
  assert.match(
    await server.log.take((line) => line.startsWith("Dropped ")),
    /^Dropped 127\.0\.0\.1:\d+: more than 50 messages in 5 s$/,
  );
  assert.equal(await watcher.messages.next(), "flooder: f0");
  await stillServes(server.url, watcher);
  assert.deepEqual(watcher.messages.queued, []);
});

Deno.test("a client that never reads is dropped as too slow; the others get everything", async () => {
  await using server = startServer({ rateLimit: 0 });
  await using reader = await server.join("reader");
  await using sender = await server.join("sender");
  const stalled = await RawSocket.open(server.addr.port, {
    path: "/?name=stalled",
  });
  // 64 MiB: enough to fill the kernel's buffers both ways and then some.
  const count = 16_384;
  const dropped = server.log.take((line) => line.includes("slow consumer"));
  await pump(sender, "sender", count, 4096);
  assert.match(
    await dropped,
    /^Dropped 127\.0\.0\.1:\d+: slow consumer, over 1048576 bytes unsent$/,
  );
  // The reader missed nothing, in order.
  const got = await reader.messages.many(count);
  got.forEach((line, i) => assert.ok(line.startsWith(`sender: ${i} `), `message ${i}`));
  sender.send("last");
  assert.equal(await reader.messages.next(), "sender: last");
  // The stalled client, once it reads, finds a prefix of the chat and then 1008.
  const { code, reason, texts } = await stalled.readUntilClose();
  stalled.close();
  assert.equal(code, 1008);
  assert.equal(reason, "too slow");
  assert.ok(
    texts.length < count,
    `${texts.length} messages reached the stalled client`,
  );
  assert.ok(!texts.includes("sender: last"));
  assert.equal(server.clients, 2);
});

Deno.test("--max-clients: one more gets HTTP 503 with Retry-After; a freed slot is reusable", async () => {
  await using server = startServer({ maxClients: 2 });
  const a = await server.join("a");
  await using b = await server.join("b");
  const refused = await RawSocket.open(server.addr.port, { path: "/?name=c" });
  assert.equal(refused.status, 503);
  assert.ok(Number(refused.headers.get("retry-after")) > 0);
  assert.match(await refused.body(), /server full: 2 clients/);
  refused.close();
  await a.close();
  await server.log.take((line) => line.startsWith("Disconnected "));
  await using c = await server.join("c");
  c.send("in");
  assert.equal(await b.messages.next(), "c: in");
});

Deno.test("--idle-timeout: a client that answers no ping is closed with 1001", async () => {
  await using server = startServer({ idleTimeout: 1 });
  const silent = await RawSocket.open(server.addr.port);
  const { code, reason } = await silent.readUntilClose();
  silent.close();
  assert.equal(code, 1001);
  assert.equal(reason, "No response from ping frame.");
});

Deno.test("a foreign Origin gets HTTP 403; no Origin, the own one and allowed ones pass", async () => {
  await using server = startServer({
    allowOrigins: ["https://chat.example.com"],
  });
  const port = server.addr.port;
  const cases: [Record<string, string>, number][] = [
    [{}, 101],
    [{ Origin: `http://127.0.0.1:${port}` }, 101],
    [{ Origin: "https://chat.example.com" }, 101],
    [{ Origin: "https://evil.example.com" }, 403],
    [{ Origin: `http://127.0.0.1:${port + 1}` }, 403],
    [{ Origin: "null" }, 403],
  ];
  for (const [headers, status] of cases) {
    const raw = await RawSocket.open(port, { headers });
    assert.equal(raw.status, status, JSON.stringify(headers));
    if (status === 403) assert.match(await raw.body(), /origin not allowed: /);
    raw.close();
  }
});

Deno.test("malformed frames, invalid UTF-8 and resets cost only that connection", async () => {
  await using server = startServer();
  await using watcher = await server.join("watcher");
  const attacks: [string, (raw: RawSocket) => Promise<void>][] = [
    [
      "invalid UTF-8",
      (raw) => raw.sendFrame(Opcode.TEXT, new Uint8Array([0xff, 0xfe])),
    ],
    ["reserved opcode", (raw) => raw.sendFrame(0x3, "?")],
    [
      "reserved bits",
      (raw) => raw.send(new Uint8Array([0xf1, 0x80, 0, 0, 0, 0])),
    ],
    ["reset mid-frame", async (raw) => {
      await raw.send(
        new Uint8Array([0x81, 0xfe, 0x10, 0x00, 1, 2, 3, 4, 5, 6]),
      );
      raw.close();
    }],
    [
      "garbage after the handshake",
      (raw) => raw.send(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n")),
    ],
  ];
  for (const [name, attack] of attacks) {
    const raw = await RawSocket.open(server.addr.port);
    assert.equal(await raw.readText(), WELCOME, name);
    await attack(raw);
    await server.log.take((line) => line.startsWith("Disconnected "));
    raw.close();
  }
  await stillServes(server.url, watcher);
});

Deno.test("garbage HTTP and huge headers get Deno's own answer; the server goes on", async () => {
  await using server = startServer();
  await using watcher = await server.join("watcher");
  for (
    const request of [
      "NOT HTTP AT ALL\r\n\r\n",
      `GET /${"a".repeat(100_000)} HTTP/1.1\r\nHost: x\r\n\r\n`,
      `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"b".repeat(200_000)}\r\n\r\n`,
    ]
  ) {
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.addr.port,
    });
    await conn.write(new TextEncoder().encode(request)).catch(() => 0);
    const answer = new Uint8Array(1024);
    const n = await conn.read(answer).catch(() => null);
    conn.close();
    const text = n ? new TextDecoder().decode(answer.subarray(0, n)) : "";
    // Deno answers 4xx by itself (or drops the connection): never a 5xx.
    assert.match(text, /^(HTTP\/1\.1 4\d\d|)/, request.slice(0, 20));
    assert.doesNotMatch(text, /^HTTP\/1\.1 5/);
  }
  await stillServes(server.url, watcher);
});

Deno.test("a throw while handling a message costs that client 1011, not the server", async () => {
  const lines: string[] = [];
  await using server = startServer({
    log(line) {
      if (line.includes("boom")) throw new Error("log failed");
      lines.push(line);
    },
  });
  await using watcher = await server.join("watcher");
  await using victim = await server.join("victim");
  victim.send("boom");
  const closed = await victim.closed;
  assert.equal(closed.code, 1011);
  assert.equal(closed.reason, "internal error");
  assert.ok(
    lines.some((line) => /^Error 127\.0\.0\.1:\d+ in message: log failed$/.test(line)),
  );
  await stillServes(server.url, watcher);
  assert.deepEqual(watcher.messages.queued, []);
});

Deno.test("upgrades during shutdown get HTTP 503", async () => {
  const server = startServer({ shutdownTimeout: 10 });
  // A client that never reads and never answers keeps the shutdown waiting.
  const stalled = await RawSocket.open(server.addr.port);
  const reader = await server.join("reader");
  const stopping = server.shutdown();
  assert.equal((await reader.closed).code, 1001);
  const late = await RawSocket.open(server.addr.port);
  assert.equal(late.status, 503);
  assert.match(await late.body(), /server shutting down/);
  late.close();
  // The stalled client goes; shutdown then finishes.
  stalled.close();
  await stopping;
});

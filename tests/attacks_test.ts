/**
 * What a hostile client tries, numbered as in the attack run: nothing it
 * sends crashes or stalls the server, memory stays under its stated bound,
 * and the others keep being served.
 */
import assert from "node:assert/strict";
import { encodeFrame, Opcode, RawSocket } from "./raw.ts";
import { join, pump, startServer, startServerProcess, TestClient } from "./helpers.ts";
import { rssBytes } from "./proc.ts";
import { closeReason, MAX_CLOSE_REASON_BYTES } from "../lib/protocol.ts";
import { quoteForLog, stdoutLog } from "../server/log.ts";

/** A new client joins and chats: the server still serves. */
async function stillChats(url: string, name = "survivor"): Promise<void> {
  await using client = await join(url, name);
  client.send("still here");
  // Past the room's history, its own message comes back.
  const echo = `${name}: still here`;
  assert.equal(await client.messages.take((m) => m === echo), echo);
}

/** A masked frame header with an all-zero key: the payload goes as it is. */
function zeroKeyHeader(
  opcode: number,
  length: number,
  fin: boolean,
): Uint8Array {
  const header = new Uint8Array(14);
  header[0] = (fin ? 0x80 : 0) | opcode;
  header[1] = 0x80 | 127;
  new DataView(header.buffer).setBigUint64(2, BigInt(length));
  return header; // bytes 10..13: the zero mask key
}

Deno.test("1: a 528 MiB message in 16 MiB fragments does not end the server", async () => {
  const { cli, url, port } = await startServerProcess([
    "--quiet",
    "--shutdown-timeout",
    "1",
  ]);
  const raw = await RawSocket.open(port, { path: "/?name=huge" });
  try {
    assert.equal(raw.status, 101);
    const chunk = new Uint8Array(16 * 2 ** 20).fill(0x61);
    const fragments = 33;
    for (let i = 0; i < fragments; i++) {
      const opcode = i === 0 ? Opcode.TEXT : Opcode.CONTINUATION;
      await raw.send(zeroKeyHeader(opcode, chunk.length, i === fragments - 1));
      await raw.send(chunk);
    }
    const line = await cli.stdout.take((l) => l.startsWith("Error in the runtime"));
    assert.match(line, /^Error in the runtime, survived: .*allocate/);
    // Alive, and serving: a new client joins and chats at once.
    const started = performance.now();
    await stillChats(url);
    assert.ok(performance.now() - started < 1000);
  } finally {
    raw.close();
    await cli.stop();
  }
});

Deno.test({
  name:
    "2: out of file descriptors, the server stays up, its chat goes on, and it accepts again",
  ignore: !hasPrlimit(),
  async fn() {
    const { cli, url } = await startServerProcess();
    try {
      await using before = await join(url, "before");
      const limit = await new Deno.Command("prlimit", {
        args: ["--pid", String(cli.child.pid), "--nofile=300:300"],
      }).output();
      assert.ok(limit.success, "prlimit failed");
      const port = Number(new URL(url).port);
      const bare: Deno.Conn[] = [];
      const failed = cli.stdout.take((line) =>
        line.startsWith("Error accepting connections")
      );
      let accepting = true;
      void failed.then(() => accepting = false);
      // Bare connections until the server runs out of descriptors.
      while (accepting && bare.length < 1000) {
        try {
          bare.push(await Deno.connect({ hostname: "127.0.0.1", port }));
        } catch {
          // Refused while the server is between listeners.
        }
      }
      assert.match(await failed, /Too many open files/);
      // The chat that was going on goes on.
      before.send("during the flood");
      assert.equal(await before.messages.next(), "before: during the flood");
      for (const conn of bare) conn.close();
      await cli.stdout.take((line) => line.startsWith("Accepting connections again"));
      await stillChats(url);
    } finally {
      await cli.stop();
    }
  },
});

function hasPrlimit(): boolean {
  try {
    return Deno.statSync("/usr/bin/prlimit").isFile;
  } catch {
    return false;
  }
}

Deno.test("7: --max-clients-per-ip: one address past its share gets 503 with Retry-After", async () => {
  await using server = startServer({ maxClientsPerIp: 2 });
  await using _a = await server.join("a");
  await using _b = await server.join("b");
  const refused = await RawSocket.open(server.addr.port, { path: "/?name=c" });
  assert.equal(refused.status, 503);
  assert.equal(refused.headers.get("retry-after"), "10");
  assert.equal(
    await refused.body(),
    "too many connections from 127.0.0.1: 2 at most\n",
  );
  refused.close();
});

Deno.test("7: a burst past a turn's budget is delivered whole, each sender's lines in order, a bystander's too", async () => {
  await using server = startServer({ rateLimit: 0 });
  const senders = await Promise.all(
    Array.from({ length: 10 }, (_, i) => server.join(`s${i}`, "crowd")),
  );
  const readers = await Promise.all(
    Array.from({ length: 40 }, (_, i) => server.join(`r${i}`, "crowd")),
  );
  await using bystander = await server.join("b", "quiet");
  try {
    // 300 lines into a room of 50: 15,000 frames, many turns' budget.
    for (let n = 0; n < 30; n++) senders.forEach((s) => s.send(String(n)));
    bystander.send("still here");
    assert.equal(await bystander.messages.next(), "b: still here");
    for (const reader of [readers[0], readers.at(-1)!, senders[3]]) {
      const got: string[] = [];
      while (got.length < 300) got.push(await reader.messages.next());
      for (let i = 0; i < 10; i++) {
        assert.deepEqual(
          got.filter((line) => line.startsWith(`s${i}: `)),
          Array.from({ length: 30 }, (_, n) => `s${i}: ${n}`),
        );
      }
    }
    const metrics = await fetch(server.url.replace("ws:", "http:") + "/metrics");
    const waited = Number(
      (await metrics.text()).match(/^chat_frames_waited_total (\d+)$/m)?.[1],
    );
    assert.ok(waited > 0, "some of the burst waited for a later turn");
  } finally {
    await Promise.all([...senders, ...readers].map((client) => client.close()));
  }
});

Deno.test("7: a bystander's message is not held behind a storm of messages to a crowded room", async () => {
  const STORM = 600;
  const { cli, url, port } = await startServerProcess([
    "--quiet",
    "--max-clients-per-ip",
    "1000",
  ]);
  const storm: RawSocket[] = [];
  try {
    for (let i = 0; i < STORM; i += 50) {
      storm.push(
        ...await Promise.all(
          Array.from(
            { length: 50 },
            (_, j) => RawSocket.open(port, { path: `/storm?name=s${i + j}` }),
          ),
        ),
      );
    }
    // They read what comes and drop it.
    const drained = storm.map(async (socket) => {
      const sink = new Uint8Array(1 << 16);
      try {
        while (await socket.conn.read(sink) !== null);
      } catch {
        // Closed at the end.
      }
    });
    let stormSeen = 0;
    const observer = new WebSocket(`${url}/storm?name=observer`);
    const underWay = Promise.withResolvers<void>();
    observer.onmessage = (event) => {
      if (/^s\d+: /.test(String(event.data)) && ++stormSeen === 10) underWay.resolve();
    };
    await new Promise((resolve) => observer.onopen = resolve);
    // Eight bystanders in a room of their own, as in `deno task bench attacks`.
    const bystanders = await Promise.all(
      Array.from({ length: 8 }, (_, i) => join(url, `b${i}`, "quiet")),
    );
    // One message each, all at once: 360,000 frames for the server to write.
    const frame = encodeFrame(Opcode.TEXT, new TextEncoder().encode("z".repeat(40)));
    await Promise.all(storm.map((socket) => socket.conn.write(frame)));
    await underWay.promise;
    // Ten rounds in which each bystander sends a line and waits for it: each
    // goes in one of the next turns, not after the storm.
    for (let n = 0; n < 10; n++) {
      bystanders.forEach((b) => b.send(`still here ${n}`));
      await Promise.all(
        bystanders.map((b, i) =>
          b.messages.take((line) => line === `b${i}: still here ${n}`)
        ),
      );
    }
    assert.ok(stormSeen < STORM / 2, `${stormSeen} of the storm's ${STORM} came first`);
    observer.close();
    await Promise.all(bystanders.map((b) => b.close()));
    for (const socket of storm) socket.conn.close();
    await Promise.all(drained);
  } finally {
    await cli.stop();
  }
});

Deno.test("4: --rate-bytes counts a message once per recipient", async () => {
  await using server = startServer({
    rateBytes: 1000,
    rateBytesBurst: 4000,
    rateBurst: 10,
  });
  await using sender = await server.join("sender");
  await using reader = await server.join("reader");
  await sender.presence.next();
  const text = "x".repeat(990); // 1000 bytes as a line, to 2 members: 2000
  sender.send(text);
  sender.send(text);
  sender.send(text);
  assert.equal(await reader.messages.next(), `sender: ${text}`);
  assert.equal(await reader.messages.next(), `sender: ${text}`);
  assert.equal(
    await sender.messages.skipTo((m) => m.startsWith("* ")),
    "* rate limit: 1000 bytes per second (size x recipients)",
  );
});

Deno.test("8: a stdout nobody reads stalls neither delivery nor /healthz", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      "main.ts",
      "server",
      "--port",
      "0",
      "--rate-limit",
      "0",
      "--rate-bytes",
      "0",
    ],
    cwd: new URL("..", import.meta.url).pathname,
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.getReader();
  let head = "";
  while (!head.includes("\n")) {
    const { value } = await reader.read();
    head += new TextDecoder().decode(value);
  }
  const url = head.match(/listening on (\S+)/)![1];
  // From here on nobody reads the server's stdout: the pipe fills.
  try {
    await using talker = await join(url, "talker");
    // More log than the pipe (64 KiB) and the log's buffer (1 MiB) hold.
    const filler = "y".repeat(200);
    for (let i = 0; i < 6000; i++) {
      talker.send(`${i} ${filler}`);
      if (i % 100 === 99) {
        await talker.messages.skipTo((m) => m.startsWith(`talker: ${i} `));
      }
    }
    const health = await fetch(`${url.replace("ws:", "http:")}/healthz`);
    assert.equal(health.status, 200);
    await health.body?.cancel();
    const metrics = await (await fetch(`${url.replace("ws:", "http:")}/metrics`)).text();
    const dropped = Number(
      metrics.match(/^chat_log_dropped_total (\d+)$/m)?.[1],
    );
    assert.ok(dropped > 0, `dropped ${dropped}`);
  } finally {
    child.kill("SIGKILL");
    await child.status;
    await reader.cancel();
  }
});

Deno.test("5 (log): a slow output drops lines, counts them, and says how many later", async () => {
  const written: string[] = [];
  let release!: () => void;
  const stalled = new Promise<void>((resolve) => release = resolve);
  let first = true;
  const log = stdoutLog({
    maxPendingChars: 100,
    output: {
      async write(bytes) {
        if (first) {
          first = false;
          await stalled;
        }
        written.push(new TextDecoder().decode(bytes));
        return bytes.length;
      },
    },
  });
  log("one");
  await new Promise((resolve) => setTimeout(resolve, 0)); // its write is under way
  for (let i = 0; i < 20; i++) log(`line ${i} ${"z".repeat(20)}`);
  assert.ok(log.dropped > 0);
  release();
  await log.flush();
  assert.equal(written[0], "one\n");
  assert.match(written[1], new RegExp(`^Log: ${log.dropped} lines dropped: `));
});

Deno.test("9: a message's log line quotes at most 200 bytes of it", async () => {
  assert.equal(quoteForLog("hi"), '"hi"');
  const controls = "\x01".repeat(65536);
  const quoted = quoteForLog(controls);
  assert.equal(quoted, `"${"\\u0001".repeat(200)}..." (+${65536 - 200} bytes)`);
  assert.equal(
    quoteForLog("é".repeat(150)),
    `"${"é".repeat(100)}..." (+100 bytes)`,
  );
  await using server = startServer();
  await using sender = await server.join("sender");
  sender.send("z".repeat(1000));
  assert.match(
    await server.log.take((l) => l.startsWith("From client")),
    /^From client 127\.0\.0\.1:\d+ "z{200}\.\.\." \(\+800 bytes\)$/,
  );
});

Deno.test("10: an upgrade naming a foreign Host on a loopback server gets 403", async () => {
  await using server = startServer();
  const port = server.addr.port;
  const rebound = await RawSocket.open(port, {
    headers: {
      Host: `evil.example:${port}`,
      Origin: `http://evil.example:${port}`,
    },
  });
  assert.equal(rebound.status, 403);
  assert.equal(
    await rebound.body(),
    `host not allowed: evil.example:${port}\n`,
  );
  rebound.close();
  for (const host of [`localhost:${port}`, `127.0.0.1:${port}`]) {
    const own = await RawSocket.open(port, { headers: { Host: host } });
    assert.equal(own.status, 101, host);
    own.close();
  }
});

Deno.test("10: with --public-url, a browser's Origin must be that URL's", async () => {
  await using server = startServer({
    publicUrls: ["https://chat.example.com"],
  });
  const port = server.addr.port;
  const cases: [string, number][] = [
    ["https://chat.example.com", 101],
    [`http://127.0.0.1:${port}`, 403],
  ];
  for (const [origin, status] of cases) {
    const raw = await RawSocket.open(port, { headers: { Origin: origin } });
    assert.equal(raw.status, status, origin);
    raw.close();
  }
});

Deno.test("12: a close reason is cut to 123 bytes at a character boundary, never 1011", async () => {
  const long = "é".repeat(100);
  const cut = closeReason(long);
  assert.ok(new TextEncoder().encode(cut).length <= MAX_CLOSE_REASON_BYTES);
  assert.ok(long.startsWith(cut));
  await using server = startServer();
  const yew = new TestClient(server.url + "/");
  await yew.opened;
  yew.send(JSON.stringify({ messageType: "register", data: "é".repeat(32) }));
  const closed = await yew.closed;
  assert.equal(closed.code, 1008);
  assert.match(closed.reason, /^invalid name "é+/);
});

Deno.test("13: names are unique whatever their case; reserved paths in any case", async () => {
  await using server = startServer();
  await using _alice = await server.join("alice");
  for (const name of ["Alice", "ALICE"]) {
    const raw = await RawSocket.open(server.addr.port, {
      path: `/?name=${name}`,
    });
    assert.equal(raw.status, 409, name);
    assert.equal(await raw.body(), `name taken: ${name}\n`);
    raw.close();
  }
  const http = server.url.replace("ws:", "http:");
  for (const path of ["/HEALTHZ", "/Metrics"]) {
    const response = await fetch(http + path);
    assert.equal(response.status, 404, path);
    await response.body?.cancel();
  }
});

Deno.test("14: malformed upgrades are refused as RFC 6455 says", async () => {
  await using server = startServer();
  const port = server.addr.port;
  const badKey = await RawSocket.open(port, {
    headers: { "Sec-WebSocket-Key": "!!!" },
  });
  assert.equal(badKey.status, 400);
  assert.match(await badKey.body(), /Sec-WebSocket-Key/);
  badKey.close();
  const oldVersion = await RawSocket.open(port, {
    headers: { "Sec-WebSocket-Version": "8" },
  });
  assert.equal(oldVersion.status, 426);
  assert.equal(oldVersion.headers.get("sec-websocket-version"), "13");
  oldVersion.close();
  const post = await RawSocket.open(port, { method: "POST" });
  assert.equal(post.status, 400);
  assert.match(await post.body(), /use GET/);
  post.close();
  await stillChats(server.url);
});

/**
 * RSS growth of a server process (with `args`) while 100 clients, each alone
 * in its room, send 50 messages of 65,000 bytes: 325 MB through the server.
 */
async function roomsOfOne(
  args: string[],
): Promise<{ growth: number; held: number }> {
  const { cli, url } = await startServerProcess([
    "--quiet",
    "--rate-limit",
    "0",
    "--max-clients-per-ip",
    "1000",
    ...args,
  ]);
  try {
    const pid = cli.child.pid;
    await stillChats(url, "warmup");
    const before = rssBytes(pid);
    const clients = await Promise.all(
      Array.from({ length: 100 }, (_, i) => join(url, `c${i}`, `room${i}`)),
    );
    try {
      await Promise.all(
        clients.map((client, i) => pump(client, `c${i}`, 50, 65_000, 10)),
      );
      const metrics = await (await fetch(`${url.replace("ws:", "http:")}/metrics`))
        .text();
      const held = Number(metrics.match(/^chat_history_bytes (\d+)$/m)?.[1]);
      return { growth: rssBytes(pid) - before, held };
    } finally {
      await Promise.all(clients.map((client) => client.close()));
    }
  } finally {
    await cli.stop();
  }
}

Deno.test("3: rooms of one with large messages hold at most --history-bytes of history", async () => {
  const budget = 8 * 2 ** 20;
  const bounded = await roomsOfOne(["--history-bytes", String(budget)]);
  assert.ok(bounded.held <= budget, `${bounded.held}`);
  assert.ok(bounded.held > budget / 2, `${bounded.held}`);
  // Without the budget the same traffic leaves all 325 MB in history.
  const unbounded = await roomsOfOne(["--history-bytes", String(2 ** 40)]);
  assert.ok(unbounded.held > 300e6, `${unbounded.held}`);
  const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  assert.ok(
    bounded.growth < unbounded.growth - 150 * 2 ** 20,
    `RSS grew ${mib(bounded.growth)} with the budget, ${mib(unbounded.growth)} without`,
  );
});

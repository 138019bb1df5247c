/**
 * The load generator: WebSocket clients on raw TCP sockets, light enough
 * not to be the bottleneck. Frames are masked with one fixed key, written
 * in batches, and parsed in place without allocating per frame; messages
 * inside `chat.batch` frames are counted too. For the closed loop the bench
 * runs bench/load.c instead where a C compiler is there: it also reads the
 * senders first and has the kernel wake the other clients only once a
 * large chunk waits for them (`SO_RCVLOWAT`, which `Deno.connect` does not
 * offer), so it costs far less per delivery.
 *
 *   deno run -A bench/load.ts '{"port":8080,"scenario":"closed","clients":100,...}'
 *
 * Prints one JSON object with the results.
 */

import { cpuSeconds } from "../tests/proc.ts";

export interface LoadOptions {
  port: number;
  /** closed: senders keep a window in flight; open: a fixed delivery rate; idle: connect many, one broadcast. */
  scenario: "closed" | "open" | "idle";
  clients: number;
  senders: number;
  /** Offer the chat.batch subprotocol. */
  batch: boolean;
  seconds: number;
  /** Messages each sender keeps in flight (closed loop). */
  window: number;
  /** Deliveries per second to aim at (open loop). */
  rate: number;
  /** Payload bytes per message. */
  size: number;
  /** Add one client that never reads (open loop). */
  stalled: boolean;
  /**
   * The server relays what it gets as it is (the baseline, ws, Bun): each
   * message then carries its sender's "sNN: " itself, so that what arrives
   * is the same line the chat server would make.
   */
  relay: boolean;
  /** The server's process id: its CPU time over the measured window is reported. */
  serverPid?: number;
}

/** Clients connecting at once, at most: each new one starts as one finishes. */
export const HANDSHAKES_IN_FLIGHT = 256;

/** Open loop: messages sent in this first stretch are left out of the latencies. */
const OPEN_LOOP_WARMUP_MS = 1000;

/**
 * Closed loop: the load runs this long before anything is counted. A
 * server compiled as it runs (the chat, the baseline, node `ws`) reaches
 * its steady speed only after about a second and a half of full load, and
 * Bun's native pub/sub has no such start (docs/performance.md, "What the
 * generator cost"). Also passed to bench/load.c.
 */
export const CLOSED_LOOP_WARMUP_MS = 2000;

export const LOAD_DEFAULTS: LoadOptions = {
  port: 8080,
  scenario: "closed",
  clients: 100,
  senders: 10,
  batch: false,
  seconds: 5,
  window: 50,
  rate: 50_000,
  size: 64,
  stalled: false,
  relay: false,
};

const encoder = new TextEncoder();
const MASK = new Uint8Array([0x12, 0x34, 0x56, 0x78]);
const RS = 0x1e;
/** Payload: 15 digits of microseconds since start, then padding. */
const STAMP_DIGITS = 15;
const start = performance.now();

function now(): number {
  return (performance.now() - start) * 1000; // microseconds
}

/** One masked text frame carrying `payload` (at most 65535 bytes). */
function frame(payload: Uint8Array): Uint8Array {
  const long = payload.length >= 126;
  const out = new Uint8Array((long ? 8 : 6) + payload.length);
  out[0] = 0x81;
  out[1] = 0x80 | (long ? 126 : payload.length);
  let offset = 2;
  if (long) {
    out[2] = payload.length >> 8;
    out[3] = payload.length & 0xff;
    offset = 4;
  }
  out.set(MASK, offset);
  offset += 4;
  for (let i = 0; i < payload.length; i++) {
    out[offset + i] = payload[i] ^ MASK[i & 3];
  }
  return out;
}

/** A payload stamped with the time it is sent (after "sNN: " when relayed). */
function stamped(size: number, prefix?: string): Uint8Array {
  const skip = prefix ? prefix.length : 0;
  const payload = new Uint8Array(skip + size).fill(0x78);
  if (prefix) payload.set(encoder.encode(prefix));
  const digits = String(Math.floor(now())).padStart(STAMP_DIGITS, "0");
  for (let i = 0; i < STAMP_DIGITS; i++) {
    payload[skip + i] = digits.charCodeAt(i);
  }
  return payload;
}

function readStamp(bytes: Uint8Array, at: number): number {
  let value = 0;
  for (let i = 0; i < STAMP_DIGITS; i++) {
    value = value * 10 + (bytes[at + i] - 48);
  }
  return value;
}

/** Where `needle` first starts in `bytes`, or -1. */
function indexOf(bytes: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= bytes.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (bytes[i + j] !== needle[j]) continue outer;
    }
    return i;
  }
  return -1;
}

class Stats {
  deliveries = 0;
  latencies: number[] = [];
  /** Latencies count for messages sent from this time on (µs, as `now()`). */
  since = 0;
  ownReceived = 0;
}

/** A reading client's buffer: large reads, fewer calls into the runtime per delivery. */
const READ_CHUNK = 65536;

/** Where a handshake's answer ends. */
const HEAD_END = encoder.encode("\r\n\r\n");

class Client {
  // Small while connecting (ten thousand connect at once); `run` makes it READ_CHUNK.
  buffer = new Uint8Array(1024);
  start = 0;
  end = 0;
  pending: Uint8Array[] = [];
  inflight = 0;
  closed = false;

  constructor(
    readonly conn: Deno.TcpConn,
    readonly name: string,
    readonly stats: Stats,
    readonly opts: LoadOptions,
    /** Parse stamps of these messages: a sender's own, or every one (open loop). */
    public track: "own" | "all" | "none",
    /** The fixed length of a chat line `sNN: PAYLOAD`. */
    readonly lineLength: number,
    readonly onOwn?: (client: Client) => void,
  ) {}

  static async connect(
    opts: LoadOptions,
    name: string,
    stats: Stats,
    track: "own" | "all" | "none",
    lineLength: number,
    onOwn?: (client: Client) => void,
  ): Promise<Client> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: opts.port });
    conn.setNoDelay(true);
    const request = [
      `GET /?name=${name} HTTP/1.1`,
      `Host: 127.0.0.1:${opts.port}`,
      "Upgrade: websocket",
      "Connection: Upgrade",
      "Sec-WebSocket-Version: 13",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
      ...(opts.batch ? ["Sec-WebSocket-Protocol: chat.batch"] : []),
      "",
      "",
    ].join("\r\n");
    await conn.write(encoder.encode(request));
    const client = new Client(
      conn,
      name,
      stats,
      opts,
      track,
      lineLength,
      onOwn,
    );
    // Read the handshake's answer; what follows it is frames.
    while (true) {
      if (client.end === client.buffer.length) {
        throw new Error("handshake too long");
      }
      const n = await conn.read(client.buffer.subarray(client.end));
      if (n === null) throw new Error("closed during handshake");
      client.end += n;
      const head = indexOf(client.buffer.subarray(0, client.end), HEAD_END);
      if (head >= 0) {
        const status = new TextDecoder().decode(
          client.buffer.subarray(0, head),
        );
        if (!status.startsWith("HTTP/1.1 101")) {
          throw new Error(status.split("\r\n")[0]);
        }
        client.start = head + HEAD_END.length;
        break;
      }
    }
    return client;
  }

  /** Reads and parses until the connection ends. */
  async run(): Promise<void> {
    if (this.buffer.length < READ_CHUNK) {
      const larger = new Uint8Array(READ_CHUNK);
      larger.set(this.buffer.subarray(0, this.end));
      this.buffer = larger;
    }
    try {
      while (!this.closed) {
        this.parse();
        // What the parse queued (a sender's next messages) goes out at once.
        if (this.pending.length > 0) void this.flush();
        if (this.end === this.buffer.length) {
          // Make room: move the partial frame to the front, or grow.
          if (this.start > 0) {
            this.buffer.copyWithin(0, this.start, this.end);
            this.end -= this.start;
            this.start = 0;
          } else {
            const bigger = new Uint8Array(this.buffer.length * 2);
            bigger.set(this.buffer);
            this.buffer = bigger;
          }
        }
        const n = await this.conn.read(this.buffer.subarray(this.end));
        if (n === null) break;
        this.end += n;
      }
    } catch {
      // Reset: the run is over for this client.
    }
    this.closed = true;
  }

  parse() {
    const b = this.buffer;
    while (this.end - this.start >= 2) {
      let length = b[this.start + 1] & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.end - this.start < 4) return;
        length = (b[this.start + 2] << 8) | b[this.start + 3];
        offset = 4;
      } else if (length === 127) {
        if (this.end - this.start < 10) return;
        length = 0;
        for (let i = 2; i < 10; i++) length = length * 256 + b[this.start + i];
        offset = 10;
      }
      if (this.end - this.start < offset + length) return;
      const opcode = b[this.start] & 0x0f;
      const from = this.start + offset;
      if (opcode === 1) this.message(from, from + length);
      this.start = from + length;
    }
    if (this.start === this.end) this.start = this.end = 0;
  }

  /** One text frame: one message, or several separated by RS. */
  message(from: number, to: number) {
    const b = this.buffer;
    const L = this.lineLength;
    const length = to - from;
    // Chat lines ("sNN: " and the payload) have one length: a batch of k of
    // them is k * (L + 1) - 1 bytes. Anything else (welcome, notices) is
    // counted the slow way and carries no stamp.
    const chat = b[from] === 0x73 && b[from + 3] === 0x3a &&
      (length + 1) % (L + 1) === 0;
    if (!chat) {
      let count = 1;
      for (let i = from; i < to; i++) if (b[i] === RS) count++;
      this.stats.deliveries += count;
      return;
    }
    const count = (length + 1) / (L + 1);
    this.stats.deliveries += count;
    if (this.track === "none") return;
    const t = now();
    for (let k = 0; k < count; k++) {
      const at = from + k * (L + 1);
      const own = b[at + 1] === this.name.charCodeAt(1) &&
        b[at + 2] === this.name.charCodeAt(2);
      if (this.track === "all" || own) {
        const stamp = readStamp(b, at + 5);
        if (stamp >= this.stats.since) this.stats.latencies.push(t - stamp);
      }
      if (own && this.onOwn) this.onOwn(this);
    }
  }

  /** Queues one stamped message. */
  send() {
    this.pending.push(
      frame(
        stamped(this.opts.size, this.opts.relay ? `${this.name}: ` : undefined),
      ),
    );
  }

  #flushing = false;

  /** Writes everything queued, one write per call (never two at once). */
  async flush() {
    if (this.#flushing) return;
    this.#flushing = true;
    while (this.pending.length > 0 && !this.closed) await this.#write();
    this.#flushing = false;
  }

  async #write() {
    const total = this.pending.reduce((sum, f) => sum + f.length, 0);
    const out = new Uint8Array(total);
    let offset = 0;
    for (const f of this.pending) {
      out.set(f, offset);
      offset += f.length;
    }
    this.pending = [];
    try {
      let written = 0;
      while (written < out.length) {
        written += await this.conn.write(out.subarray(written));
      }
    } catch {
      this.closed = true;
    }
  }

  close() {
    this.closed = true;
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
  }
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[
    Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))
  ];
}

async function connectAll(
  opts: LoadOptions,
  stats: Stats,
  trackReceivers: "all" | "none",
  onOwn?: (client: Client) => void,
): Promise<{ senders: Client[]; clients: Client[] }> {
  const lineLength = 5 + opts.size;
  const senders: Client[] = [];
  const clients: Client[] = [];
  for (let i = 0; i < opts.senders; i++) {
    const name = `s${String(i).padStart(2, "0")}`;
    const client = await Client.connect(
      opts,
      name,
      stats,
      "own",
      lineLength,
      onOwn,
    );
    if (trackReceivers === "all") client.track = "all";
    senders.push(client);
    clients.push(client);
  }
  // The rest, with at most HANDSHAKES_IN_FLIGHT handshakes open at once.
  const rest = opts.clients - opts.senders;
  let next = 0;
  const connector = async () => {
    while (next < rest) {
      const i = next++;
      clients.push(
        await Client.connect(opts, `r${i}`, stats, trackReceivers, lineLength),
      );
    }
  };
  await Promise.all(
    Array.from({ length: Math.min(HANDSHAKES_IN_FLIGHT, rest) }, connector),
  );
  return { senders, clients };
}

function delay(ms: number) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function closedLoop(opts: LoadOptions) {
  const stats = new Stats();
  let measuring = false;
  const refill = (client: Client) => {
    client.inflight--;
    if (!measuring) return;
    client.inflight++;
    client.send();
  };
  const { senders, clients } = await connectAll(opts, stats, "none", refill);
  const readers = clients.map((c) => c.run());
  await delay(300); // let joins and welcomes settle
  measuring = true;
  for (const s of senders) {
    for (let i = 0; i < opts.window; i++) s.send();
    s.inflight = opts.window;
  }
  await Promise.all(senders.map((s) => s.flush()));
  await delay(CLOSED_LOOP_WARMUP_MS);
  const before = stats.deliveries;
  stats.latencies = [];
  const window = serverCpuWindow(opts);
  const t0 = performance.now();
  await delay(opts.seconds * 1000);
  const elapsed = (performance.now() - t0) / 1000;
  const delivered = stats.deliveries - before;
  const cpuPerDelivery = window.microsecondsPer(delivered);
  const latencies = stats.latencies.sort((a, b) => a - b);
  measuring = false;
  for (const c of clients) c.close();
  await Promise.all(readers);
  return {
    deliveriesPerSecond: delivered / elapsed,
    p50: percentile(latencies, 50) / 1000,
    p99: percentile(latencies, 99) / 1000,
    cpuPerDelivery,
  };
}

/**
 * The server's CPU time (user + system, from /proc) from now on: per
 * delivery (or connect), in microseconds; `NaN` without the server's pid.
 */
function serverCpuWindow(opts: LoadOptions) {
  const pid = opts.serverPid;
  const start = pid === undefined ? NaN : cpuSeconds(pid);
  return {
    microsecondsPer(deliveries: number): number {
      if (pid === undefined || deliveries === 0) return NaN;
      return ((cpuSeconds(pid) - start) * 1e6) / deliveries;
    },
  };
}

async function openLoop(opts: LoadOptions) {
  const stats = new Stats();
  const { senders, clients } = await connectAll(opts, stats, "all");
  const readers = clients.map((c) => c.run());
  let stalled: Deno.TcpConn | undefined;
  if (opts.stalled) {
    stalled = await Deno.connect({ hostname: "127.0.0.1", port: opts.port });
    await stalled.write(encoder.encode(
      `GET /?name=stalled HTTP/1.1\r\nHost: 127.0.0.1:${opts.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
    ));
  }
  await delay(300);
  stats.latencies = [];
  const before = stats.deliveries;
  // Messages per second so that each, reaching every client, makes `rate` deliveries.
  const perSecond = opts.rate / opts.clients;
  const tick = 5; // ms
  let sent = 0;
  const window = serverCpuWindow(opts);
  const t0 = performance.now();
  // The first second warms up (compilation, first bursts): its messages
  // count as delivered or lost, but not in the latencies.
  stats.since = now() + OPEN_LOOP_WARMUP_MS * 1000;
  while (performance.now() - t0 < opts.seconds * 1000) {
    const due = Math.floor(((performance.now() - t0) / 1000) * perSecond);
    while (sent < due) {
      senders[sent % senders.length].send();
      sent++;
    }
    await Promise.all(senders.map((s) => s.flush()));
    await delay(tick);
  }
  // Let what is in flight arrive (bounded).
  const expected = sent * opts.clients;
  const drainUntil = performance.now() + 2000;
  while (
    stats.deliveries - before < expected && performance.now() < drainUntil
  ) {
    await delay(10);
  }
  const latencies = stats.latencies.sort((a, b) => a - b);
  const received = stats.deliveries - before;
  const cpuPerDelivery = window.microsecondsPer(received);
  for (const c of clients) c.close();
  stalled?.close();
  await Promise.all(readers);
  return {
    deliveriesPerSecond: received / opts.seconds,
    p50: percentile(latencies, 50) / 1000,
    p99: percentile(latencies, 99) / 1000,
    p999: percentile(latencies, 99.9) / 1000,
    loss: expected === 0 ? 0 : Math.max(0, expected - received) / expected,
    cpuPerDelivery,
  };
}

async function idle(opts: LoadOptions) {
  const stats = new Stats();
  const window = serverCpuWindow(opts);
  const cpu0 = cpuSeconds("self");
  const t0 = performance.now();
  const { senders, clients } = await connectAll(
    { ...opts, senders: 1 },
    stats,
    "none",
  );
  const connectSeconds = (performance.now() - t0) / 1000;
  const cpuPerConnect = window.microsecondsPer(clients.length);
  // The connects are what this scenario's rate measures, so the generator's share is theirs.
  const generatorCpu = (cpuSeconds("self") - cpu0) / connectSeconds;
  const readers = clients.map((c) => c.run());
  await delay(1000);
  // Signal the runner to read the server's RSS now, then wait for its go.
  console.log(JSON.stringify({ connected: clients.length, connectSeconds }));
  await readLine();
  const before = stats.deliveries;
  const t1 = performance.now();
  senders[0].send();
  await senders[0].flush();
  const deadline = t1 + 30_000;
  while (
    stats.deliveries - before < clients.length && performance.now() < deadline
  ) {
    await delay(1);
  }
  const broadcastMs = performance.now() - t1;
  const reached = stats.deliveries - before;
  for (const c of clients) c.close();
  await Promise.all(readers);
  return {
    connectPerSecond: clients.length / connectSeconds,
    cpuPerConnect,
    generatorCpu,
    broadcastMs,
    reached,
  };
}

async function readLine(): Promise<string> {
  const buffer = new Uint8Array(64);
  const n = await Deno.stdin.read(buffer);
  return new TextDecoder().decode(buffer.subarray(0, n ?? 0)).trim();
}

if (import.meta.main) {
  const opts: LoadOptions = {
    ...LOAD_DEFAULTS,
    ...JSON.parse(Deno.args[0] ?? "{}"),
  };
  const cpu0 = cpuSeconds("self");
  const t0 = performance.now();
  const result: Record<string, number> = opts.scenario === "closed"
    ? await closedLoop(opts)
    : opts.scenario === "open"
    ? await openLoop(opts)
    : await idle(opts);
  result.generatorCpu ??= (cpuSeconds("self") - cpu0) /
    ((performance.now() - t0) / 1000);
  console.log(JSON.stringify(result));
  Deno.exit(0);
}

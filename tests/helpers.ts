/**
 * Test helpers: a real server on port 0 with its log captured, WebSocket
 * clients that queue what they receive, and CLI subprocesses whose output
 * can be awaited line by line. Everything waits on events, never on time.
 */

import assert from "node:assert/strict";
import { type ChatServer, serveChat, type ServerOptions } from "../server.ts";
import { JSON_PROTOCOL, WELCOME } from "../lib/protocol.ts";
import { readLines } from "../client.ts";
import { redisServerArgs } from "./proc.ts";
import type { RoomEvent } from "../server/backplane.ts";

export const ROOT = new URL("..", import.meta.url).pathname;

/** Sends `signal` to `child`, unless it has ended already. */
export function signalChild(child: Deno.ChildProcess, signal: Deno.Signal): void {
  try {
    child.kill(signal);
  } catch {
    // Ended already.
  }
}

/** A queue of values that can be awaited one at a time. */
export class Inbox<T> {
  #items: T[] = [];
  #waiters: {
    test: (item: T) => boolean;
    resolve: (item: T) => void;
    reject: (error: Error) => void;
  }[] = [];
  #ended?: Error;

  push(item: T): void {
    const index = this.#waiters.findIndex((w) => w.test(item));
    if (index >= 0) {
      const [waiter] = this.#waiters.splice(index, 1);
      waiter.resolve(item);
    } else {
      this.#items.push(item);
    }
  }

  /** No more items will come: waiting takes fail now, and later ones that find nothing. */
  end(reason: string): void {
    this.#ended = new Error(reason);
    for (const waiter of this.#waiters.splice(0)) waiter.reject(this.#ended);
  }

  /** The next item, in order. */
  next(): Promise<T> {
    return this.take(() => true);
  }

  /** The first item that passes `test`; items before it stay queued. */
  take(test: (item: T) => boolean): Promise<T> {
    const index = this.#items.findIndex(test);
    if (index >= 0) return Promise.resolve(this.#items.splice(index, 1)[0]);
    if (this.#ended) return Promise.reject(this.#ended);
    return new Promise((resolve, reject) =>
      this.#waiters.push({ test, resolve, reject })
    );
  }

  /** The first item that passes `test`, dropping every item before it. */
  async skipTo(test: (item: T) => boolean): Promise<T> {
    const index = this.#items.findIndex(test);
    if (index >= 0) return this.#items.splice(0, index + 1)[index];
    this.#items.length = 0;
    return await this.take(test);
  }

  /** The next `count` items, in order. */
  async many(count: number): Promise<T[]> {
    const items: T[] = [];
    for (let i = 0; i < count; i++) items.push(await this.next());
    return items;
  }

  /** Everything queued and not yet taken. */
  get queued(): readonly T[] {
    return this.#items;
  }
}

/**
 * Joins the chat at `url` as `name` (without one, the server shows the
 * client's address) in `room` (the default room without one), and waits
 * for the welcome.
 */
export function join(
  url: string,
  name?: string,
  room = "",
): Promise<TestClient> {
  return TestClient.join(
    `${url}/${room}${name === undefined ? "" : `?name=${name}`}`,
  );
}

/** Something that serves the chat at `url`, joined by name. */
export interface Joinable {
  readonly url: string;
  /** Joins as `name` (none: the address shows) in `room` (the default room). */
  join(name?: string, room?: string): Promise<TestClient>;
}

/** A server on a free port whose log lines land in an inbox. */
export function startServer(
  options: ServerOptions = {},
): ChatServer & Joinable & {
  log: Inbox<string>;
  [Symbol.asyncDispose](): Promise<void>;
} {
  const log = new Inbox<string>();
  const server = serveChat({
    port: 0,
    ...options,
    log(line) {
      options.log?.(line);
      log.push(line);
    },
  });
  return Object.assign(server, {
    log,
    join: (name?: string, room?: string) => join(server.url, name, room),
    [Symbol.asyncDispose]: () => server.shutdown(),
  });
}

/** A presence notice: someone joined or left the room. */
export const PRESENCE = /^\* \S+ (joined|left) \(\d+ online\)$/;

/**
 * A WebSocket whose open and close can be awaited; what it receives goes
 * to `received`, and `ended` is told once it closes.
 */
abstract class AwaitableSocket {
  readonly socket: WebSocket;
  readonly opened: Promise<void>;
  readonly closed: Promise<CloseEvent>;

  constructor(url: string, protocols?: string | string[]) {
    this.socket = new WebSocket(url, protocols);
    this.socket.binaryType = "arraybuffer";
    const opened = Promise.withResolvers<void>();
    const closed = Promise.withResolvers<CloseEvent>();
    this.opened = opened.promise;
    this.closed = closed.promise;
    this.socket.onopen = () => opened.resolve();
    this.socket.onmessage = (event) => this.received(String(event.data));
    this.socket.onclose = (event) => {
      opened.reject(new Error(`closed before open: ${event.code}`));
      this.ended(`closed: ${event.code} ${event.reason}`);
      closed.resolve(event);
    };
    // Tests that expect a failed connect look at `closed`.
    this.opened.catch(() => {});
  }

  protected abstract received(data: string): void;
  protected abstract ended(reason: string): void;

  /** Closes (if still open) and waits for the close to finish. */
  async close(): Promise<CloseEvent> {
    if (this.socket.readyState <= WebSocket.OPEN) this.socket.close(1000);
    return await this.closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** A WebSocket client that queues what it receives. */
export class TestClient extends AwaitableSocket {
  /** Everything received but presence notices. */
  readonly messages = new Inbox<string>();
  /** `* NAME joined (N online)` and `* NAME left (N online)`. */
  readonly presence = new Inbox<string>();

  protected received(text: string): void {
    (PRESENCE.test(text) ? this.presence : this.messages).push(text);
  }

  protected ended(reason: string): void {
    this.messages.end(reason);
  }

  /** Connects and waits for the welcome, so the client is in the room. */
  static async join(url: string): Promise<TestClient> {
    const client = new TestClient(url);
    await client.opened;
    await client.messages.next();
    return client;
  }

  send(text: string | Uint8Array): void {
    this.socket.send(text);
  }
}

/**
 * Sends `count` numbered messages of `size` filler bytes from `sender` (in
 * the chat as `name`), waiting for its own echo every `window` messages so
 * that no turn's burst is large. Echoes it has seen are dropped.
 */
export async function pump(
  sender: TestClient,
  name: string,
  count: number,
  size: number,
  window = 32,
): Promise<void> {
  const filler = "x".repeat(size);
  for (let i = 0; i < count; i++) {
    sender.send(`${i} ${filler}`);
    if (i % window === window - 1 || i === count - 1) {
      await sender.messages.skipTo((m) => m.startsWith(`${name}: ${i} `));
    }
  }
}

/**
 * Sends the numbers `from`..`to` as messages from `sender` (in the chat as
 * `name`) and waits for its own echo of the last.
 */
export async function sendNumbered(
  sender: TestClient,
  name: string,
  from: number,
  to: number,
): Promise<void> {
  for (let i = from; i <= to; i++) sender.send(String(i));
  await sender.messages.skipTo((line) => line === `${name}: ${to}`);
}

/** Takes the next messages, which must be `name`'s numbers `from`..`to`, once each, in order. */
export async function takeNumbered(
  client: TestClient,
  name: string,
  from: number,
  to: number,
): Promise<void> {
  const lines = await client.messages.many(to - from + 1);
  assert.deepEqual(
    lines,
    Array.from({ length: to - from + 1 }, (_, i) => `${name}: ${from + i}`),
  );
}

/** Splits a byte stream into lines, pushed to an inbox as they arrive. */
function pumpLines(
  stream: ReadableStream<Uint8Array>,
  inbox: Inbox<string>,
  all: string[],
  chat?: Inbox<string>,
) {
  return (async () => {
    for await (const line of readLines(stream)) {
      all.push(line);
      inbox.push(line);
      if (chat && !PRESENCE.test(line)) chat.push(line);
    }
    inbox.end("output ended");
    chat?.end("output ended");
  })();
}

/** A running `chat` subprocess with its output as awaitable lines. */
export class Cli {
  readonly child: Deno.ChildProcess;
  readonly stdout = new Inbox<string>();
  /** Stdout without presence notices. */
  readonly chat = new Inbox<string>();
  readonly stderr = new Inbox<string>();
  readonly stdoutLines: string[] = [];
  /** Stdout lines so far, without presence notices. */
  get chatLines(): string[] {
    return this.stdoutLines.filter((line) => !PRESENCE.test(line));
  }
  readonly stderrLines: string[] = [];
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #pumps: Promise<unknown>;

  /** Runs `deno run main.ts ARGS` (or `deno task ...` with `task`). */
  constructor(
    args: string[],
    options: {
      task?: boolean;
      env?: Record<string, string>;
      /** Deno's permission flags. @default {["--allow-net", "--allow-read"]} */
      permissions?: string[];
    } = {},
  ) {
    const command = options.task ? ["task", "-q", ...args] : [
      "run",
      ...(options.permissions ?? ["--allow-net", "--allow-read"]),
      "main.ts",
      ...args,
    ];
    this.child = new Deno.Command(Deno.execPath(), {
      args: command,
      cwd: ROOT,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", ...options.env },
    }).spawn();
    this.#stdin = this.child.stdin.getWriter();
    this.#pumps = Promise.all([
      pumpLines(this.child.stdout, this.stdout, this.stdoutLines, this.chat),
      pumpLines(this.child.stderr, this.stderr, this.stderrLines),
    ]);
  }

  /** Writes text to the process's stdin. */
  async write(text: string): Promise<void> {
    await this.#stdin.write(new TextEncoder().encode(text));
  }

  /** Ends the process's stdin. */
  async endInput(): Promise<void> {
    await this.#stdin.close().catch(() => {});
  }

  /** Waits for the exit and for all output; ends stdin first. */
  async finished(): Promise<Deno.CommandStatus> {
    await this.endInput();
    const status = await this.child.status;
    await this.#pumps;
    return status;
  }

  /** Sends `signal` and waits for the exit and all output. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    this.kill(signal);
    return await this.finished();
  }

  kill(signal: Deno.Signal = "SIGTERM"): void {
    signalChild(this.child, signal);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.kill("SIGKILL");
    await this.finished();
  }
}

/** Runs a command to the end with the given stdin (in `cwd`, this checkout by default). */
export async function runProcess(
  command: string,
  args: string[],
  { stdin = "", cwd = ROOT }: { stdin?: string; cwd?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(command, {
    args,
    cwd,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(stdin));
  await writer.close();
  const output = await child.output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** Runs `chat ARGS` (as `deno run main.ts`) to the end with the given stdin. */
export function runCli(args: string[], stdin = "") {
  return runProcess(
    Deno.execPath(),
    ["run", "--allow-net", "--allow-read", "main.ts", ...args],
    { stdin },
  );
}

/** Starts `chat server ARGS --port 0` and waits for its `listening on` line. */
export async function startServerProcess(
  args: string[] = [],
): Promise<Joinable & { cli: Cli; port: number }> {
  const cli = new Cli(["server", "--port", "0", ...args]);
  const first = await cli.stdout.next();
  const match = first.match(/^listening on (wss?:\/\/.+):(\d+)$/);
  if (!match) throw new Error(`unexpected first line: ${first}`);
  const url = `${match[1]}:${match[2]}`;
  return {
    cli,
    url,
    port: Number(match[2]),
    join: (name?: string, room?: string) => join(url, name, room),
  };
}

/** A loopback port that nothing listens on (bound, then released). */
export function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** True when Debian's `redis-server` is installed (`.ci/run` installs it). */
export const HAS_REDIS = (() => {
  try {
    return Deno.statSync("/usr/bin/redis-server").isFile;
  } catch {
    return false;
  }
})();

/** A throwaway `redis-server` on a free loopback port, without persistence. */
export class RedisServer {
  #child?: Deno.ChildProcess;
  #output?: Promise<void>;

  private constructor(readonly port: number, readonly extraArgs: string[]) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /**
   * Starts one on `port` (a free one by default), with `args` after the
   * usual ones, and waits until it accepts connections.
   */
  static async start(
    { port = closedPort(), args = [] }: { port?: number; args?: string[] } = {},
  ): Promise<RedisServer> {
    const redis = new RedisServer(port, args);
    await redis.restart();
    return redis;
  }

  /** Starts it again on the same port (after `kill`). */
  async restart(): Promise<void> {
    const child = new Deno.Command("/usr/bin/redis-server", {
      args: [...redisServerArgs(this.port), ...this.extraArgs],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const ready = Promise.withResolvers<void>();
    this.#child = child;
    this.#output = (async () => {
      for await (const line of readLines(child.stdout)) {
        if (line.includes("Ready to accept connections")) ready.resolve();
      }
      ready.reject(
        new Error(`redis-server on port ${this.port} did not start`),
      );
    })();
    await ready.promise;
  }

  /** Sends `signal` (SIGKILL: gone at once; SIGSTOP: hung; SIGCONT: back). */
  signal(signal: Deno.Signal): void {
    this.#child?.kill(signal);
  }

  /** Kills it and waits until it is gone. */
  async kill(): Promise<void> {
    if (!this.#child) return;
    signalChild(this.#child, "SIGKILL");
    await this.#child.status;
    await this.#output;
    this.#child = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }
}

/**
 * Runs a `chat` command (`program`, e.g. an installed or compiled one) as
 * server and client: the server's first line names its address, a client
 * named `name` sends one line and gets the welcome and its echo, and
 * SIGTERM ends the server with status 0.
 */
export async function chatsEndToEnd(
  program: string,
  name: string,
): Promise<void> {
  const server = new Deno.Command(program, {
    args: ["server", "--port", "0"],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines = readLines(server.stdout)[Symbol.asyncIterator]();
  try {
    const first = (await lines.next()).value ?? "";
    const url = first.match(/^listening on (ws:\/\/\S+)/)?.[1];
    assert.ok(url, first);
    const client = await runProcess(
      program,
      ["client", "--url", url, "--name", name],
      { stdin: "hi\n" },
    );
    assert.equal(client.code, 0, client.stderr);
    assert.equal(client.stdout, `${WELCOME}\n${name}: hi\n`);
    server.kill("SIGTERM");
    assert.equal((await server.status).code, 0);
  } finally {
    signalChild(server, "SIGKILL");
    await server.status;
    await lines.return?.(undefined);
  }
}

/** One `chat.json` event, as a test reads it. */
// deno-lint-ignore no-explicit-any
export type ChatEvent = { type: string; [field: string]: any };

/** A `chat.json` client that queues every event it receives, one by one. */
export class JsonClient extends AwaitableSocket {
  readonly events = new Inbox<ChatEvent>();
  /** Each frame's event count, in order (a turn's events come as one frame). */
  readonly frames: number[] = [];

  constructor(url: string) {
    super(url, [JSON_PROTOCOL]);
  }

  protected received(data: string): void {
    const events = JSON.parse(data) as ChatEvent[];
    assert.ok(Array.isArray(events), "a chat.json frame is an array");
    this.frames.push(events.length);
    for (const one of events) this.events.push(one);
  }

  protected ended(reason: string): void {
    this.events.end(reason);
  }

  /** Connects and returns the client with its welcome event. */
  static async join(url: string): Promise<[JsonClient, ChatEvent]> {
    const client = new JsonClient(url);
    await client.opened;
    const welcome = await client.events.next();
    assert.equal(welcome.type, "welcome");
    return [client, welcome];
  }

  /** The next event of `type`, dropping others before it. */
  next(type: string): Promise<ChatEvent> {
    return this.events.skipTo((event) => event.type === type);
  }

  /** A `chat.json` message object (with `ref` when given), or a plain line. */
  send(text: string, ref?: string): void {
    this.socket.send(
      ref === undefined ? text : JSON.stringify({ type: "message", text, ref }),
    );
  }
}

/**
 * A TCP proxy on a loopback port to a chat's port, which a test can cut
 * (every connection through it dropped, new ones refused) and restore,
 * to the same port or, with `to`, another.
 */
export class TcpProxy {
  #listener?: Deno.TcpListener;
  #accepting?: Promise<void>;
  readonly #links = new Set<Promise<void>>();
  readonly #conns = new Set<Deno.TcpConn>();

  private constructor(readonly port: number, public target: number) {}

  /** Listens on a free port, forwarding to `target`. */
  static start(target: number): TcpProxy {
    const proxy = new TcpProxy(closedPort(), target);
    proxy.restore();
    return proxy;
  }

  /** `ws://` to the proxy. */
  get url(): string {
    return `ws://127.0.0.1:${this.port}`;
  }

  /** Drops every connection and refuses new ones until `restore`. */
  async cut(): Promise<void> {
    this.#listener?.close();
    this.#listener = undefined;
    for (const conn of this.#conns) {
      try {
        conn.close();
      } catch {
        // Closed already.
      }
    }
    await this.#accepting;
    await Promise.all(this.#links);
  }

  /** Accepts again, forwarding to `to` (the same target without it). */
  restore(to = this.target): void {
    this.target = to;
    const listener = Deno.listen({ hostname: "127.0.0.1", port: this.port });
    this.#listener = listener;
    this.#accepting = (async () => {
      try {
        for await (const client of listener) this.#link(client);
      } catch {
        // Cut.
      }
    })();
  }

  #link(client: Deno.TcpConn): void {
    const link = (async () => {
      let server: Deno.TcpConn | undefined;
      try {
        server = await Deno.connect({ hostname: "127.0.0.1", port: this.target });
      } catch {
        client.close();
        return;
      }
      this.#conns.add(client);
      this.#conns.add(server);
      const copy = async (from: Deno.TcpConn, to: Deno.TcpConn) => {
        try {
          await from.readable.pipeTo(to.writable);
        } catch {
          // One side went: the other goes too.
        }
        for (const conn of [from, to]) {
          this.#conns.delete(conn);
          try {
            conn.close();
          } catch {
            // Closed already.
          }
        }
      };
      await Promise.all([copy(client, server), copy(server, client)]);
    })();
    this.#links.add(link);
    void link.finally(() => this.#links.delete(link));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.cut();
  }
}

/**
 * A `--reconnect` terminal client joins through `proxy` as `listener` while
 * `sender` (its messages echoed to it) sends 1..30; the proxy is cut and
 * 31..60 are sent; it is restored (to `restoreTo`, or the same port) and
 * 61..70 follow. Resolves with what the listener said on reconnecting and
 * every line of `sender`'s it printed.
 */
export async function listenThroughCut(
  proxy: TcpProxy,
  sender: TestClient,
  restoreTo?: number,
): Promise<{ reconnected: string; lines: string[] }> {
  await using listener = new Cli([
    "client",
    "--url",
    proxy.url,
    "--name",
    "listener",
    "--reconnect",
  ]);
  assert.equal(await listener.stdout.next(), WELCOME);
  await sendNumbered(sender, "sender", 1, 30);
  await listener.chat.skipTo((line) => line === "sender: 30");
  await proxy.cut();
  await listener.stderr.take((line) => line.startsWith("disconnected: 1006"));
  await sendNumbered(sender, "sender", 31, 60);
  proxy.restore(restoreTo);
  const reconnected = await listener.stderr.take((line) =>
    line.startsWith("chat: reconnected")
  );
  await sendNumbered(sender, "sender", 61, 70);
  await listener.chat.skipTo((line) => line === "sender: 70");
  await listener.stop("SIGINT");
  const lines = listener.chatLines.filter((line) => line.startsWith("sender: "));
  return { reconnected, lines };
}

/** A chat message `text` from a client of another instance, as backplanes carry it. */
export function remoteMessage(text: string): RoomEvent {
  return { kind: "message", from: "a", text, time: 0, origin: "elsewhere", conn: 1 };
}

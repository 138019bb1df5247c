/**
 * The terminal client: lines from stdin go out as chat messages, messages
 * from the server come out on stdout, one line each. Status and errors go
 * to stderr, so stdout holds the conversation and nothing else.
 *
 * @module
 */

import {
  BATCH_PROTOCOL,
  BATCH_SEPARATOR,
  chatLine,
  CloseCode,
  joinedNotice,
  JSON_PROTOCOL,
  leftNotice,
  nameProblem,
  plural,
  roomProblem,
  WELCOME,
} from "./lib/protocol.ts";
import { TokenBucket } from "./lib/rate.ts";
import { colourLine, colourWanted, Prompt, timestamp } from "./lib/terminal.ts";
import { writeAllSync } from "./lib/io.ts";
import { Backoff } from "./lib/backoff.ts";
import { errorText } from "./lib/errors.ts";
import { delay, MAX_TIMER_MS } from "./lib/time.ts";
import {
  type CommandSpec,
  fileFlag,
  type FlagValues,
  integerFlag,
  parseFlags,
  pemFlag,
  runCommand,
  usage,
  UsageError,
} from "./lib/flags.ts";

/** What the client can be told; every field but `url` is optional. */
export interface ClientOptions {
  /** The server's URL: `ws://` or `wss://` (`http(s)://` is taken to mean the same). */
  url: string;
  /** The name to chat under; sets or replaces the URL's `name` parameter. @default {none: the server shows the client's address} */
  name?: string;
  /** The room to join; sets the URL's path (`/ROOM`). @default {the URL's path: `/`, the default room} */
  room?: string;
  /**
   * Messages sent per second at most, after a burst of twice as many; `0`
   * sends as fast as lines come. Just under the server's default limit
   * (20 a second, burst 40), since the server counts arrival times.
   * @default {18}
   */
  rate?: number;
  /** The bytes whose lines are sent. @default {stdin} */
  input?: ReadableStream<Uint8Array>;
  /** The lines to send, instead of `input`'s (the interactive prompt's). @default {none} */
  lines?: AsyncIterable<string>;
  /**
   * Print each line a server that does not echo (`--no-echo`) confirmed, as
   * `NAME: TEXT` (`you: TEXT` without `name`): the prompt erases a line as
   * it is sent, and the echo that would take its place never comes.
   * @default {false}
   */
  showAccepted?: boolean;
  /**
   * Once aborted, the input counts as ended: what was read is sent, then
   * the connection closes with 1000 (Ctrl-C). @default {none}
   */
  signal?: AbortSignal;
  /** Extra upgrade request headers (`Authorization`, ...). @default {none} */
  headers?: Record<string, string>;
  /**
   * A shell command that prints a fresh token: run at start when no token
   * is given, and again `TOKEN_RENEW_AHEAD_MS` before each token expires,
   * to renew it on the open connection (`/token`) and for reconnects.
   * Needs permission to run programs (`--allow-run`). @default {none}
   */
  tokenCommand?: string;
  /** Prefix each received line with `HH:MM ` (local time). @default {false} */
  timestamps?: boolean;
  /** Sender names in colour and notices dimmed (for a terminal). @default {false} */
  colour?: boolean;
  /** Receives each incoming message, made safe for a terminal. @default {a line on stdout} */
  output?: (line: string) => void;
  /** Receives status and error lines. @default {a line on stderr} */
  status?: (line: string) => void;
  /** Trust this certificate authority (PEM) for `wss://`, besides the system's. @default {none} */
  ca?: string;
  /**
   * After a failed connect, an HTTP 503 or a close other than 1000, connect
   * again with backoff (0.5 s doubling to 30 s, with jitter); lines typed
   * meanwhile are sent, once each, when connected again. Once the input has
   * ended, it gives up after `END_OF_INPUT_WAIT_MS` out of reach. @default {false}
   */
  reconnect?: boolean;
}

/**
 * With `reconnect`, how long the client keeps trying once its input has
 * ended and lines are still unsent.
 */
export const END_OF_INPUT_WAIT_MS = 10_000;

/** How long before its token expires the client renews it with `tokenCommand`. */
export const TOKEN_RENEW_AHEAD_MS = 60_000;

/** After `tokenCommand` failed, how long until it is run again. */
const TOKEN_RETRY_MS = 10_000;

/** How many lines the client reads ahead of what it sent. */
const READ_AHEAD_LINES = 1000;

/** The defaults of every option, the single source for `--help` and the README. */
export const CLIENT_DEFAULTS = {
  url: "ws://127.0.0.1:8080",
  rate: 18,
} as const;

/** How long the client waits for the server's close reply after stdin ends. */
export const CLOSE_WAIT_MS = 2000;

/** Who a confirmed line is shown from when the client chose no name (`showAccepted`). */
export const YOU = "you";

// deno-lint-ignore no-control-regex
const CONTROL_CHARACTERS = /[\x00-\x08\x0a-\x1f\x7f-\x9f]/g;

/**
 * Writes control characters (C0, DEL and C1; newline and carriage return
 * included, tab excepted) as `\xHH`, so one message is one line and no peer
 * can move the cursor or rewrite the terminal.
 */
export function escapeControl(text: string): string {
  return text.replace(
    CONTROL_CHARACTERS,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`,
  );
}

/**
 * Splits a byte stream into lines: LF or CRLF ends a line, and a last line
 * without a newline counts too.
 */
export async function* readLines(
  stream: ReadableStream<Uint8Array>,
): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let partial = "";
  for await (const chunk of stream) {
    const parts = (partial + decoder.decode(chunk, { stream: true })).split("\n");
    partial = parts.pop()!;
    for (const line of parts) yield line.endsWith("\r") ? line.slice(0, -1) : line;
  }
  partial += decoder.decode();
  if (partial !== "") yield partial.endsWith("\r") ? partial.slice(0, -1) : partial;
}

/**
 * The URL to connect to: `url` with `name`, when given, set as its `name`
 * parameter. Throws a `UsageError` for a URL that is not `ws(s)://` or
 * `http(s)://`.
 */
export function clientUrl(url: string, name?: string, room?: string): URL {
  const schemes: Record<string, string> = {
    "ws:": "ws:",
    "wss:": "wss:",
    "http:": "ws:",
    "https:": "wss:",
  };
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    // Not a URL at all: maybe one without its scheme.
  }
  const scheme = parsed && schemes[parsed.protocol];
  if (!parsed || !scheme) {
    // `127.0.0.1:8080` and `localhost:8080` lack only the scheme.
    const fixed = `ws://${url}`;
    const hint = !url.includes("://") && URL.canParse(fixed)
      ? `: add the scheme, as in ${fixed}`
      : ": expected ws:// or wss://";
    throw new UsageError(`invalid --url ${JSON.stringify(url)}${hint}`, "client");
  }
  // URL does not allow switching between special and non-special schemes in
  // place, so build the string again.
  const result = new URL(scheme + url.slice(parsed.protocol.length));
  if (name !== undefined) result.searchParams.set("name", name);
  if (room !== undefined) result.pathname = `/${room}`;
  return result;
}

const NATIVE_PREFIX = /^(NetworkError: )?failed to connect to WebSocket: /;

/** Why a connection could not be made, and whether trying again may help. */
export interface ConnectFailure {
  /** `connection refused`, `HTTP 400: BODY`, ... */
  problem: string;
  /** The HTTP status of a refused upgrade. */
  status?: number;
  /** False for refusals that will not change: HTTP 4xx, an untrusted certificate. */
  retryable: boolean;
}

/**
 * Says why a WebSocket connection could not be made, as specifically as can
 * be found out: the native error says little ("tcp connect error", "Invalid
 * status code: 400"), so this asks again at the level that failed.
 */
export async function connectProblem(
  url: URL,
  nativeMessage: string,
  client?: Deno.HttpClient,
  headers?: Record<string, string>,
): Promise<ConnectFailure> {
  const statusText = nativeMessage.match(/status code:? (\d{3})/)?.[1];
  if (statusText) {
    const status = Number(statusText);
    // 503 (full, shutting down) and 408/429 pass; other 4xx are final.
    const retryable = status >= 500 || status === 408 || status === 429;
    return {
      problem: await httpProblem(url, status, { client, headers }),
      status,
      retryable,
    };
  }
  const native = nativeMessage.replace(NATIVE_PREFIX, "");
  if (/certificate/i.test(native)) {
    const why = native.replace(/^invalid peer certificate: /, "");
    return {
      problem: `certificate not trusted (${why}); for a private CA use --ca FILE`,
      retryable: false,
    };
  }
  const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = Number(url.port || (url.protocol === "wss:" ? 443 : 80));
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ hostname, port });
  } catch (error) {
    return { problem: networkProblem(error), retryable: true };
  }
  const tls = url.protocol === "ws:" && /HTTP version/i.test(native)
    ? await speaksTls(conn)
    : false;
  try {
    conn.close();
  } catch {
    // Closed already (the TLS check timed out).
  }
  if (tls) return { problem: "the server speaks TLS: use wss://", retryable: false };
  if (/InvalidContentType|tls|handshake/i.test(native)) {
    return { problem: `TLS handshake failed (${native})`, retryable: false };
  }
  return { problem: native || "connection failed", retryable: true };
}

/**
 * True when the peer answers a plain HTTP request with a TLS record (a
 * TLS server's alert): its first byte is a TLS content type (20 to 23).
 */
async function speaksTls(conn: Deno.TcpConn): Promise<boolean> {
  try {
    await conn.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    const first = new Uint8Array(1);
    const timer = setTimeout(() => conn.close(), 2000);
    const n = await conn.read(first).finally(() => clearTimeout(timer));
    return n === 1 && first[0] >= 20 && first[0] <= 23;
  } catch {
    return false;
  }
}

/** `connection refused`, `host not found`, ... from a connect error. */
export function networkProblem(error: unknown): string {
  if (error instanceof Deno.errors.ConnectionRefused) return "connection refused";
  if (error instanceof Deno.errors.TimedOut) return "timed out";
  if (error instanceof Deno.errors.ConnectionReset) return "connection reset";
  if (error instanceof Deno.errors.AddrNotAvailable) return "address not available";
  const message = errorText(error);
  if (/lookup|dns|resolve|Name or service not known/i.test(message)) {
    return "host not found";
  }
  if (/unreachable/i.test(message)) return "network unreachable";
  return message.replace(/ \(os error \d+\)$/, "");
}

/**
 * `HTTP STATUS: BODY` for a refused upgrade. The native WebSocket hides the
 * body, so the same upgrade request is made again with `fetch` to read it.
 */
async function httpProblem(
  url: URL,
  status: number,
  { client, headers }: { client?: Deno.HttpClient; headers?: Record<string, string> },
): Promise<string> {
  const httpUrl = new URL(url.href.replace(/^ws/, "http"));
  try {
    const response = await fetch(httpUrl, {
      client,
      headers: {
        ...headers,
        upgrade: "websocket",
        connection: "Upgrade",
        "sec-websocket-version": "13",
        "sec-websocket-key": btoa(
          String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))),
        ),
      },
    });
    const body = (await response.text()).trim().split("\n")[0];
    if (response.status === status && body) return `HTTP ${status}: ${body}`;
  } catch {
    // Nothing more to learn: report the status alone.
  }
  return `HTTP ${status}`;
}

const encoder = new TextEncoder();

function stdoutLine(line: string) {
  writeAllSync(Deno.stdout, encoder.encode(line + "\n"));
}

function stderrLine(line: string) {
  writeAllSync(Deno.stderr, encoder.encode(line + "\n"));
}

/** A line to send; a chat message keeps the ref it was first sent with (`chat.json`). */
interface Line {
  text: string;
  ref?: string;
}

/**
 * The lines to send, read ahead of the connection (so that the end of the
 * input is known even while disconnected) and taken one at a time: a line
 * is `consume`d only once sent, so a line read while the connection dropped
 * goes out, once, on the next connection. Blank lines are skipped.
 */
class Outgoing {
  readonly #queue: Line[] = [];
  readonly #ended = Promise.withResolvers<void>();
  #endedAt?: number;
  #wake?: () => void;
  #room?: () => void;

  constructor(lines: AsyncIterable<string>, signal?: AbortSignal) {
    if (signal?.aborted) this.#end();
    signal?.addEventListener("abort", () => this.#end(), { once: true });
    void this.#read(lines);
  }

  async #read(lines: AsyncIterable<string>): Promise<void> {
    try {
      for await (const line of lines) {
        if (this.#endedAt !== undefined) return;
        if (line.trim() === "") continue;
        this.#queue.push({ text: line });
        this.#wake?.();
        while (this.#queue.length >= READ_AHEAD_LINES && this.#endedAt === undefined) {
          await new Promise<void>((resolve) => this.#room = resolve);
        }
      }
    } catch {
      // A read error on the input ends it, as end of input would.
    }
    this.#end();
  }

  #end(): void {
    if (this.#endedAt !== undefined) return;
    this.#endedAt = performance.now();
    this.#ended.resolve();
    this.#wake?.();
  }

  /** Settles once the input has ended (or was ended). */
  get ended(): Promise<void> {
    return this.#ended.promise;
  }

  /** When the input ended (`performance.now()`), if it has. */
  get endedAt(): number | undefined {
    return this.#endedAt;
  }

  /** Lines read and not yet sent. */
  get unsent(): number {
    return this.#queue.length;
  }

  /** The next line to send, or `undefined` once the input ended and all is sent. */
  async peek(): Promise<Line | undefined> {
    while (this.#queue.length === 0 && this.#endedAt === undefined) {
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    return this.#queue[0];
  }

  /** Sends `line` before any other line not yet sent (a command of the client's own). */
  pushFront(line: string): void {
    this.requeue([{ text: line }]);
  }

  /** Lines sent but not confirmed go out again, in their order, before any other. */
  requeue(lines: Line[]): void {
    this.#queue.unshift(...lines);
    this.#wake?.();
  }

  /**
   * `line`, from `peek`, was sent. (Lines requeued meanwhile may be in
   * front of it now: a socket's events can run before `peek`'s caller.)
   */
  consume(line: Line): void {
    const index = this.#queue.indexOf(line);
    if (index >= 0) this.#queue.splice(index, 1);
    if (this.#queue.length < READ_AHEAD_LINES) this.#room?.();
  }
}

/**
 * Waits `ms` before the next attempt to connect; once the input has ended,
 * never past `END_OF_INPUT_WAIT_MS` after its end. False: give up (the
 * time is up, or nothing is left to send).
 */
async function waitToRetry(ms: number, outgoing: Outgoing): Promise<boolean> {
  const until = performance.now() + ms;
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    new Promise((resolve) => timer = setTimeout(resolve, ms)),
    outgoing.ended,
  ]);
  clearTimeout(timer);
  const endedAt = outgoing.endedAt;
  if (endedAt === undefined) return true;
  if (outgoing.unsent === 0) return false;
  const deadline = endedAt + END_OF_INPUT_WAIT_MS;
  await delay(Math.max(0, Math.min(until, deadline) - performance.now()));
  return performance.now() < deadline;
}

/** How one connection ended. */
type SessionEnd =
  | { kind: "failed"; failure: ConnectFailure }
  | { kind: "closed"; code: number; reason: string }
  | { kind: "done" };

/** What the client prints on stderr after a reconnect that resumed. */
export function reconnectedLine(missed: number | null): string {
  if (missed === null) return "chat: reconnected, history lost: messages may be missed";
  if (missed === 0) return "chat: reconnected, nothing missed";
  return `chat: reconnected, ${plural(missed, "message")} missed`;
}

/** A `chat.json` event as the client reads it. */
type ServerEvent =
  | { type: "welcome"; epoch: string; last: number }
  | { type: "message"; id: number | null; from: string; text: string; ref: string | null }
  | { type: "joined" | "left"; name: string; online: number }
  | { type: "notice"; text: string }
  | { type: "recovered"; complete: boolean; missed: number | null }
  | { type: "duplicate" | "accepted"; ref: string }
  | { type: "refused"; ref: string | null; reason: string; retry_ms?: number };

/**
 * What a `chat.json` client keeps across its connections: where it is in
 * the room (the epoch and the last message id it printed, to resume from)
 * and the lines it sent that the room has not confirmed yet (by their echo,
 * an `accepted` or a `duplicate`), to send again after a reconnect.
 */
class Ledger {
  epoch?: string;
  last = 0;
  /** Lines sent and not yet confirmed, in the order they were sent. */
  readonly unconfirmed: Line[] = [];
  /** No message goes out before this (`performance.now()`): the server asked to wait. */
  holdUntil = 0;
  /** Set by a refusal: one line in flight at a time until all that was read is sent. */
  careful = false;
  readonly #prefix = crypto.randomUUID().slice(0, 8);
  #count = 0;

  /** A ref no other line of any client is likely to have: a random prefix and a counter. */
  newRef(): string {
    return `${this.#prefix}-${++this.#count}`;
  }

  /** The URL to connect to: with `since` and `epoch` once there is something to resume. */
  url(base: URL): URL {
    if (this.epoch === undefined) return base;
    const url = new URL(base);
    url.searchParams.set("since", String(this.last));
    url.searchParams.set("epoch", this.epoch);
    return url;
  }

  /** The room confirmed `ref`: its line, if it was waiting. */
  confirm(ref: string): Line | undefined {
    const index = this.unconfirmed.findIndex((line) => line.ref === ref);
    return index >= 0 ? this.unconfirmed.splice(index, 1)[0] : undefined;
  }

  /** The lines from `ref` on (all of them without one), taken back to be sent again. */
  takeBack(ref?: string): Line[] {
    const index = ref === undefined
      ? 0
      : this.unconfirmed.findIndex((line) => line.ref === ref);
    return index < 0 ? [] : this.unconfirmed.splice(index);
  }
}

/** What a connection needs besides its URL. */
interface Connection {
  outgoing: Outgoing;
  ledger: Ledger;
  pacer: TokenBucket | undefined;
  output: (line: string) => void;
  status: (line: string) => void;
  client: Deno.HttpClient | undefined;
  headers: Record<string, string> | undefined;
  onOpen: () => void;
  /** A line the room took without echoing it (`showAccepted`). */
  accepted?: (text: string) => void;
}

/** What a typed line sends: `//` at its start stands for a `/` that is not a command. */
function sentText(line: string): string {
  return line.startsWith("//") ? line.slice(1) : line;
}

/**
 * One connection, two directions at once until it ends: socket → output,
 * and outgoing lines → socket. Resolves when the server closes, the
 * connection fails, or the input ended and the close handshake finished.
 * It offers `chat.json` (ids, resume, refs) and `chat.batch`, and speaks
 * plain lines to a server that takes neither.
 */
function session(url: URL, connection: Connection): Promise<SessionEnd> {
  const { outgoing, ledger, pacer, output, client, onOpen } = connection;
  const resuming = ledger.epoch !== undefined;
  const socket = new WebSocket(ledger.url(url), {
    protocols: [JSON_PROTOCOL, BATCH_PROTOCOL],
    client,
    headers: connection.headers,
  });
  const ended = Promise.withResolvers<SessionEnd>();
  let nativeError = "";
  let wasOpen = false;
  let closingByUs = false;
  /** Settles when the ledger changes: a line confirmed, or a wait asked for. */
  let changed = Promise.withResolvers<void>();
  const change = () => {
    changed.resolve();
    changed = Promise.withResolvers<void>();
  };

  /** One `chat.json` event: printed as plain clients see it, or noted in the ledger. */
  const handle = (event: ServerEvent) => {
    switch (event.type) {
      case "welcome":
        // Another epoch: its ids start again.
        if (event.epoch !== ledger.epoch) ledger.last = 0;
        ledger.epoch = event.epoch;
        return output(WELCOME);
      case "message":
        // The server sends each message once: the id is where to resume from.
        if (event.id !== null) ledger.last = event.id;
        if (event.ref !== null) {
          ledger.confirm(event.ref);
          change();
        }
        return output(escapeControl(chatLine(event.from, event.text)));
      case "joined":
      case "left":
        return output(
          (event.type === "joined" ? joinedNotice : leftNotice)(event.name, event.online),
        );
      case "notice":
        return output(escapeControl(`* ${event.text}`));
      case "recovered":
        if (resuming) connection.status(reconnectedLine(event.missed));
        return;
      case "duplicate":
        ledger.confirm(event.ref);
        return change();
      case "accepted": {
        const line = ledger.confirm(event.ref);
        if (line) connection.accepted?.(sentText(line.text));
        return change();
      }
      case "refused":
        if (event.ref === null) return;
        if (event.reason === "invalid") {
          // Never accepted as it is: not sent again.
          ledger.confirm(event.ref);
          return change();
        }
        // It and every line sent after it go again, in order, once the server allows.
        outgoing.requeue(ledger.takeBack(event.ref));
        ledger.holdUntil = performance.now() + (event.retry_ms ?? 1000);
        ledger.careful = true;
        return change();
    }
  };

  // socket → output
  socket.onmessage = (event) => {
    if (typeof event.data !== "string") return;
    switch (socket.protocol) {
      case JSON_PROTOCOL: {
        let events: ServerEvent[];
        try {
          events = JSON.parse(event.data);
        } catch {
          return output(escapeControl(event.data));
        }
        for (const one of Array.isArray(events) ? events : []) handle(one);
        return;
      }
      case BATCH_PROTOCOL:
        for (const message of event.data.split(BATCH_SEPARATOR)) {
          output(escapeControl(message));
        }
        return;
      default:
        return output(escapeControl(event.data));
    }
  };
  socket.onerror = (event) => {
    nativeError = (event as ErrorEvent).message ?? "";
  };
  socket.onclose = async (event) => {
    if (socket.onclose === null) return; // `close` may fire twice
    socket.onclose = null;
    // What the room did not confirm goes again on the next connection.
    outgoing.requeue(ledger.takeBack());
    change();
    if (!wasOpen) {
      return ended.resolve({
        kind: "failed",
        failure: await connectProblem(url, nativeError, client, connection.headers),
      });
    }
    if (closingByUs) return ended.resolve({ kind: "done" });
    // No close frame (a reset, or an error) is reported as 1006.
    const code = event.code === 0 || !event.wasClean ? CloseCode.ABNORMAL : event.code;
    ended.resolve({ kind: "closed", code, reason: event.reason });
  };

  // outgoing lines → socket
  socket.onopen = async () => {
    wasOpen = true;
    const structured = socket.protocol === JSON_PROTOCOL;
    onOpen();
    const closed = ended.promise.then(() => undefined);
    const open = () => socket.readyState === WebSocket.OPEN;
    // Once the input ended and all is sent: close when every line is
    // confirmed (or, from a server without chat.json, has left), or
    // CLOSE_WAIT_MS after the last line went (refused lines go again).
    let deadline = Infinity;
    while (true) {
      const line = await Promise.race([outgoing.peek(), closed]);
      if (!open()) return;
      if (line === undefined) {
        ledger.careful = false;
        if (deadline === Infinity) deadline = performance.now() + CLOSE_WAIT_MS;
        // Lines may have been requeued since `peek` looked.
        if (outgoing.unsent > 0) continue;
        const owed = ledger.unconfirmed.length > 0 || socket.bufferedAmount > 0;
        if (!owed || performance.now() >= deadline) break;
        await Promise.race([delay(5), closed]);
        continue;
      }
      const wait = Math.max(pacer?.wait() ?? 0, ledger.holdUntil - performance.now());
      if (wait > 0) {
        // A refusal meanwhile may put earlier lines back in front: look again.
        await Promise.race([delay(wait), closed, changed.promise]);
        continue;
      }
      // After a refusal, one line at a time until the backlog is sent, so
      // that a line refused again does not take every later one with it.
      if (ledger.careful && ledger.unconfirmed.length > 0) {
        await Promise.race([changed.promise, closed]);
        continue;
      }
      pacer?.take();
      const command = line.text.startsWith("/") && !line.text.startsWith("//");
      if (structured && !command) {
        line.ref ??= ledger.newRef();
        const text = sentText(line.text);
        socket.send(JSON.stringify({ type: "message", text, ref: line.ref }));
        ledger.unconfirmed.push(line);
      } else {
        socket.send(line.text);
      }
      outgoing.consume(line);
      deadline = Infinity;
    }
    // Then wait (not forever) for the server's close reply and what comes before it.
    if (ledger.unconfirmed.length > 0) {
      // Taken back now, so the caller can say how many were not confirmed.
      outgoing.requeue(ledger.takeBack());
    }
    closingByUs = true;
    socket.close(CloseCode.NORMAL);
    const timer = setTimeout(() => ended.resolve({ kind: "done" }), CLOSE_WAIT_MS);
    await ended.promise;
    clearTimeout(timer);
  };
  return ended.promise;
}

/**
 * Connects and chats until the input ends or the server closes; with
 * `reconnect`, connects again after failures. Resolves with the exit status:
 * 0 when the input ended or the server closed with 1000 or 1001, 1
 * otherwise. It may resolve while `input` is still being read: the caller
 * exits the process.
 */
export async function runClient(options: ClientOptions): Promise<number> {
  const url = clientUrl(options.url, options.name, options.room);
  const rate = options.rate ?? CLIENT_DEFAULTS.rate;
  const print = options.output ?? stdoutLine;
  const output = (line: string) => {
    const stamped = options.timestamps ? timestamp(new Date()) : "";
    print(stamped + (options.colour ? colourLine(line) : line));
  };
  const status = options.status ?? stderrLine;
  const outgoing = new Outgoing(
    options.lines ?? readLines(options.input ?? Deno.stdin.readable),
    options.signal,
  );
  const pacer = rate > 0 ? new TokenBucket(rate, rate * 2) : undefined;
  const client = options.ca
    ? Deno.createHttpClient({ caCerts: [options.ca] })
    : undefined;
  const headers = { ...options.headers };
  const renewal = options.tokenCommand === undefined
    ? undefined
    : new TokenRenewal(options.tokenCommand, {
      renewed(token, first) {
        headers.Authorization = `Bearer ${token}`;
        // The open connection learns of it too (its answer is printed).
        if (!first) outgoing.pushFront(`/token ${token}`);
      },
      status,
    });
  const ledger = new Ledger();
  const backoff = new Backoff();
  /** Set while retrying, so that a connection that works again is reported. */
  let retrying = false;
  /** The input ended while the server was out of reach: 0 if all was sent, else 1. */
  const gaveUp = (): number => {
    const unsent = outgoing.unsent;
    if (unsent === 0) return 0;
    status(
      `chat: gave up: no connection within ${
        END_OF_INPUT_WAIT_MS / 1000
      } s after the input ended; ${plural(unsent, "line")} not sent`,
    );
    return 1;
  };
  if (renewal && !await renewal.start()) return 1;
  try {
    while (true) {
      const end = await session(url, {
        outgoing,
        ledger,
        pacer,
        output,
        status,
        client,
        headers,
        accepted: options.showAccepted
          ? (text) => output(escapeControl(chatLine(options.name ?? YOU, text)))
          : undefined,
        onOpen: () => {
          if (retrying) status(`connected to ${url.href}`);
          retrying = false;
          backoff.reset();
        },
      });
      if (end.kind === "done") {
        if (outgoing.unsent === 0) return 0;
        status(
          `chat: gave up: ${
            plural(outgoing.unsent, "line")
          } not confirmed by the server within ${CLOSE_WAIT_MS / 1000} s`,
        );
        return 1;
      }
      let retry: boolean;
      if (end.kind === "failed") {
        const line = `chat: cannot connect to ${url.href}: ${end.failure.problem}`;
        retry = options.reconnect === true && end.failure.retryable;
        if (!retry) {
          status(line);
          return 1;
        }
        const wait = backoff.delay();
        status(`${line}; retrying in ${(wait / 1000).toFixed(1)} s`);
        retrying = true;
        if (!await waitToRetry(wait, outgoing)) return gaveUp();
        continue;
      }
      const line = `disconnected: ${end.code}${end.reason ? ` ${end.reason}` : ""}`;
      retry = options.reconnect === true && end.code !== CloseCode.NORMAL;
      if (!retry) {
        status(line);
        // Lines read but not sent, or sent and never confirmed, are given up.
        if (outgoing.unsent > 0) {
          status(`chat: ${plural(outgoing.unsent, "line")} not sent`);
          return 1;
        }
        return end.code === CloseCode.NORMAL || end.code === CloseCode.GOING_AWAY ? 0 : 1;
      }
      const wait = backoff.delay();
      status(`${line}; reconnecting in ${(wait / 1000).toFixed(1)} s`);
      retrying = true;
      if (!await waitToRetry(wait, outgoing)) return gaveUp();
    }
  } finally {
    renewal?.stop();
    client?.close();
  }
}

/** When a token (a JWT) expires, in ms since the epoch, read without verifying it. */
export function tokenExpiry(token: string): number | undefined {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(payload)).exp;
    return typeof exp === "number" ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Keeps a token fresh with `--token-command`: runs it at start, then again
 * `TOKEN_RENEW_AHEAD_MS` before each token expires (every `TOKEN_RETRY_MS`
 * after a failure, until the token is gone).
 */
class TokenRenewal {
  #timer?: ReturnType<typeof setTimeout>;
  #stopped = false;

  constructor(
    readonly command: string,
    readonly to: {
      renewed(token: string, first: boolean): void;
      status(line: string): void;
    },
  ) {}

  /** Gets the first token; false (said on the status line) when it cannot. */
  async start(): Promise<boolean> {
    const token = await this.#run();
    if (token === undefined) return false;
    this.to.renewed(token, true);
    this.#schedule(token);
    return true;
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  #schedule(token: string): void {
    const expires = tokenExpiry(token);
    if (expires === undefined || this.#stopped) return;
    const wait = Math.max(0, expires - TOKEN_RENEW_AHEAD_MS - Date.now());
    this.#timer = setTimeout(
      () => void this.#renew(expires),
      Math.min(wait, MAX_TIMER_MS),
    );
  }

  async #renew(expires: number): Promise<void> {
    const token = await this.#run();
    if (this.#stopped) return;
    if (token !== undefined) {
      this.to.renewed(token, false);
      return this.#schedule(token);
    }
    if (Date.now() < expires) {
      this.#timer = setTimeout(() => void this.#renew(expires), TOKEN_RETRY_MS);
    }
  }

  /** Runs the command: the first line it prints, or `undefined` (said why). */
  async #run(): Promise<string | undefined> {
    try {
      const out = await new Deno.Command("sh", {
        args: ["-c", this.command],
        stdin: "null",
        stdout: "piped",
        stderr: "inherit",
      }).output();
      const token = new TextDecoder().decode(out.stdout).trim().split("\n")[0];
      if (out.success && token) return token;
      this.to.status(
        `chat: --token-command failed (${
          out.success ? "it printed no token" : `exit ${out.code}`
        })`,
      );
    } catch (error) {
      this.to.status(`chat: --token-command failed: ${errorText(error)}`);
    }
    return undefined;
  }
}

/** The client command's flags: the source of `chat client --help` and the README table. */
export const CLIENT_COMMAND: CommandSpec = {
  name: "client",
  summary: "chat from the terminal: stdin lines are sent, messages are printed",
  flags: [
    {
      name: "url",
      type: "string",
      valueName: "URL",
      default: CLIENT_DEFAULTS.url,
      help: "server to connect to (ws:// or wss://)",
    },
    {
      name: "name",
      type: "string",
      valueName: "NAME",
      help:
        "name to chat under: 1 to 32 letters, digits, '_', '-' or '.' (default: your address)",
    },
    {
      name: "room",
      type: "string",
      valueName: "ROOM",
      help:
        "room to join, like the URL path /ROOM (default: the URL's path, / for the main room)",
    },
    {
      name: "rate",
      type: "string",
      valueName: "N",
      default: String(CLIENT_DEFAULTS.rate),
      help: "send at most N messages a second after a burst of 2N; 0 = no pacing",
    },
    {
      name: "ca",
      type: "string",
      valueName: "FILE",
      help: "trust this certificate authority (PEM) for wss://",
    },
    {
      name: "reconnect",
      type: "boolean",
      help:
        "connect again (with backoff) after a failure or a close other than 1000, and resume: nothing missed, no line sent twice",
    },
    {
      name: "token",
      type: "string",
      valueName: "TOKEN",
      help: "a token for a server with --auth-secret (default: $CHAT_TOKEN)",
    },
    {
      name: "token-file",
      type: "string",
      valueName: "FILE",
      help: "read the token from FILE",
    },
    {
      name: "token-command",
      type: "string",
      valueName: "CMD",
      help: `run CMD for a token at start and ${
        TOKEN_RENEW_AHEAD_MS / 1000
      } s before each expires (needs --allow-run)`,
    },
    {
      name: "header",
      type: "string",
      valueName: "'NAME: VALUE'",
      multiple: true,
      help: "send this header with the upgrade request (Authorization, ...)",
    },
    {
      name: "timestamps",
      type: "boolean",
      help: "print the time (HH:MM, local) before each line received",
    },
  ],
};

/**
 * The token to send: `--token`, else `--token-file`'s first line, else
 * `CHAT_TOKEN` (read only when the environment may be read).
 */
function tokenFlag(values: FlagValues, command: string): string | undefined {
  if (values.token !== undefined && values["token-file"] !== undefined) {
    throw new UsageError("--token and --token-file: give one", command);
  }
  if (values.token !== undefined) return (values.token as string).trim();
  const file = values["token-file"] as string | undefined;
  if (file !== undefined) {
    const bytes = fileFlag(file, { command, flag: "token-file" });
    const token = new TextDecoder().decode(bytes).trim().split("\n")[0];
    if (token) return token;
    throw new UsageError(`--token-file ${JSON.stringify(file)} is empty`, command);
  }
  const permission = Deno.permissions.querySync({ name: "env", variable: "CHAT_TOKEN" });
  return permission.state === "granted"
    ? Deno.env.get("CHAT_TOKEN") || undefined
    : undefined;
}

/** `Name: value` as a header, or a `UsageError`. */
function headerFlag(text: string, command: string): [string, string] {
  const colon = text.indexOf(":");
  const name = colon > 0 ? text.slice(0, colon).trim() : "";
  const value = text.slice(colon + 1).trim();
  try {
    if (!name) throw new Error();
    new Headers([[name, value]]);
  } catch {
    throw new UsageError(
      `invalid --header ${JSON.stringify(text)}: expected 'Name: value'`,
      command,
    );
  }
  return [name, value];
}

/** Turns parsed flags into client options, or throws a `UsageError`. */
export function clientOptions(values: FlagValues): ClientOptions {
  const command = CLIENT_COMMAND.name;
  const name = values.name as string | undefined;
  if (name !== undefined) {
    const problem = nameProblem(name);
    if (problem) throw new UsageError(problem, command);
  }
  const room = values.room as string | undefined;
  const roomIssue = room === undefined ? undefined : roomProblem(room);
  if (roomIssue) {
    throw new UsageError(`invalid room ${JSON.stringify(room)}: ${roomIssue}`, command);
  }
  const url = (values.url as string | undefined) ?? CLIENT_DEFAULTS.url;
  clientUrl(url, name, room);
  const caFile = values.ca as string | undefined;
  const ca = caFile === undefined
    ? undefined
    : pemFlag(caFile, { command, flag: "ca", expected: "CERTIFICATE" });
  const headers = ((values.header ?? []) as string[]).map((h) => headerFlag(h, command));
  const token = tokenFlag(values, command);
  if (token !== undefined) headers.push(["Authorization", `Bearer ${token}`]);
  const tokenCommand = values["token-command"] as string | undefined;
  if (
    tokenCommand !== undefined &&
    Deno.permissions.querySync({ name: "run", command: "sh" }).state !== "granted"
  ) {
    throw new UsageError(
      "--token-command needs permission to run programs: start it with deno run --allow-run",
      command,
    );
  }
  return {
    url,
    name,
    room,
    ca,
    tokenCommand,
    headers: headers.length > 0 ? Object.fromEntries(headers) : undefined,
    timestamps: values.timestamps === true,
    reconnect: values.reconnect === true,
    rate: values.rate === undefined ? undefined : integerFlag(values.rate as string, {
      command,
      flag: "rate",
      min: 0,
      max: 1_000_000,
    }),
  };
}

/** `chat client [flags]`. */
export async function main(args: string[]): Promise<number> {
  const values = parseFlags(CLIENT_COMMAND, args);
  if (values.help) {
    console.log(usage(CLIENT_COMMAND));
    return 0;
  }
  const options = clientOptions(values);
  // Ctrl-C ends the input (what was typed is sent, then a clean close);
  // a second one ends the process at once.
  const stop = new AbortController();
  const interrupted = () => {
    if (stop.signal.aborted) Deno.exit(130);
    stop.abort();
  };
  Deno.addSignalListener("SIGINT", interrupted);
  // At a terminal (both ways): a prompt with line editing.
  const prompt = Deno.stdin.isTerminal() && Deno.stdout.isTerminal()
    ? new Prompt()
    : undefined;
  try {
    return await runClient({
      ...options,
      colour: colourWanted(),
      signal: stop.signal,
      ...(prompt && {
        lines: prompt.lines(),
        showAccepted: true,
        output: (line: string) => prompt.print(line),
        status: (line: string) => prompt.print(line, "stderr"),
      }),
    });
  } finally {
    prompt?.close();
    Deno.removeSignalListener("SIGINT", interrupted);
  }
}

if (import.meta.main) {
  Deno.exit(await runCommand(main, Deno.args));
}

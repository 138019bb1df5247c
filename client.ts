/**
 * The terminal client: lines from stdin go out as chat messages, messages
 * from the server come out on stdout, one line each. Status and errors go
 * to stderr, so stdout holds the conversation and nothing else.
 *
 * @module
 */

import { CloseCode, nameProblem } from "./protocol.ts";
import { TokenBucket } from "./rate.ts";
import { writeAllSync } from "./log.ts";
import {
  type CommandSpec,
  type FlagValues,
  integerFlag,
  parseFlags,
  runCommand,
  usage,
  UsageError,
} from "./flags.ts";

/** What the client can be told; every field but `url` is optional. */
export interface ClientOptions {
  /** The server's URL: `ws://` or `wss://` (`http(s)://` is taken to mean the same). */
  url: string;
  /** The name to chat under; sets or replaces the URL's `name` parameter. @default {none: the server shows the client's address} */
  name?: string;
  /**
   * Messages sent per second at most, after a burst of twice as many; `0`
   * sends as fast as lines come. Just under the server's default limit
   * (20 a second, burst 40), since the server counts arrival times.
   * @default {18}
   */
  rate?: number;
  /** The lines to send. @default {stdin} */
  input?: ReadableStream<Uint8Array>;
  /** Receives each incoming message, made safe for a terminal. @default {a line on stdout} */
  output?: (line: string) => void;
  /** Receives status and error lines. @default {a line on stderr} */
  status?: (line: string) => void;
}

/** The defaults of every option, the single source for `--help` and the README. */
export const CLIENT_DEFAULTS = {
  url: "ws://127.0.0.1:8080",
  rate: 18,
} as const;

/** How long the client waits for the server's close reply after stdin ends. */
export const CLOSE_WAIT_MS = 2000;

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
export function clientUrl(url: string, name?: string): URL {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`invalid --url ${JSON.stringify(url)}`, "client");
  }
  const schemes: Record<string, string> = {
    "ws:": "ws:",
    "wss:": "wss:",
    "http:": "ws:",
    "https:": "wss:",
  };
  const scheme = schemes[parsed.protocol];
  if (!scheme) {
    throw new UsageError(
      `invalid --url ${JSON.stringify(url)}: expected ws:// or wss://`,
      "client",
    );
  }
  // URL does not allow switching between special and non-special schemes in
  // place, so build the string again.
  const result = new URL(scheme + url.slice(parsed.protocol.length));
  if (name !== undefined) result.searchParams.set("name", name);
  return result;
}

const NATIVE_PREFIX = /^(NetworkError: )?failed to connect to WebSocket: /;

/**
 * Says why a WebSocket connection could not be made, as specifically as can
 * be found out: the native error says little ("tcp connect error", "Invalid
 * status code: 400"), so this asks again at the level that failed.
 */
export async function connectProblem(url: URL, nativeMessage: string): Promise<string> {
  const status = nativeMessage.match(/status code:? (\d{3})/)?.[1];
  if (status) return await httpProblem(url, Number(status));
  const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = Number(url.port || (url.protocol === "wss:" ? 443 : 80));
  try {
    const conn = await Deno.connect({ hostname, port });
    conn.close();
  } catch (error) {
    return networkProblem(error);
  }
  if (/InvalidContentType|tls|certificate|handshake/i.test(nativeMessage)) {
    return `TLS handshake failed (${nativeMessage.replace(NATIVE_PREFIX, "")})`;
  }
  return nativeMessage.replace(NATIVE_PREFIX, "") || "connection failed";
}

/** `connection refused`, `host not found`, ... from a connect error. */
export function networkProblem(error: unknown): string {
  if (error instanceof Deno.errors.ConnectionRefused) return "connection refused";
  if (error instanceof Deno.errors.TimedOut) return "timed out";
  if (error instanceof Deno.errors.ConnectionReset) return "connection reset";
  if (error instanceof Deno.errors.AddrNotAvailable) return "address not available";
  const message = error instanceof Error ? error.message : String(error);
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
async function httpProblem(url: URL, status: number): Promise<string> {
  const httpUrl = new URL(url.href.replace(/^ws/, "http"));
  try {
    const response = await fetch(httpUrl, {
      headers: {
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

function stdoutLine(line: string) {
  writeAllSync(Deno.stdout, new TextEncoder().encode(line + "\n"));
}

function stderrLine(line: string) {
  writeAllSync(Deno.stderr, new TextEncoder().encode(line + "\n"));
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Connects, then runs two directions at once until the chat ends: socket →
 * output, and input → socket. Resolves with the exit status: 0 when stdin
 * ended or the server closed with 1000 or 1001, 1 otherwise. It may resolve
 * while `input` is still being read: the caller exits the process.
 */
export async function runClient(options: ClientOptions): Promise<number> {
  const url = clientUrl(options.url, options.name);
  const rate = options.rate ?? CLIENT_DEFAULTS.rate;
  const output = options.output ?? stdoutLine;
  const status = options.status ?? stderrLine;
  const input = options.input ?? Deno.stdin.readable;

  const socket = new WebSocket(url);
  const opened = Promise.withResolvers<boolean>();
  const ended = Promise.withResolvers<number>();
  let nativeError = "";
  let wasOpen = false;
  let closingByUs = false;

  // socket → output
  socket.onmessage = (event) => {
    if (typeof event.data === "string") output(escapeControl(event.data));
  };
  socket.onopen = () => {
    wasOpen = true;
    opened.resolve(true);
  };
  socket.onerror = (event) => {
    nativeError = (event as ErrorEvent).message ?? "";
  };
  socket.onclose = async (event) => {
    if (socket.onclose === null) return; // `close` may fire twice
    socket.onclose = null;
    opened.resolve(false);
    if (!wasOpen) {
      status(
        `chat: cannot connect to ${url.href}: ${await connectProblem(url, nativeError)}`,
      );
      return ended.resolve(1);
    }
    if (closingByUs) return ended.resolve(0);
    // No close frame (a reset, or an error) is reported as 1006.
    const code = event.code === 0 || !event.wasClean ? CloseCode.ABNORMAL : event.code;
    status(`disconnected: ${code}${event.reason ? ` ${event.reason}` : ""}`);
    ended.resolve(code === CloseCode.NORMAL || code === CloseCode.GOING_AWAY ? 0 : 1);
  };

  // input → socket
  const sending = async () => {
    if (!await opened.promise) return;
    const pacer = rate > 0 ? new TokenBucket(rate, rate * 2) : undefined;
    for await (const line of readLines(input)) {
      if (line.trim() === "") continue;
      if (pacer) {
        const wait = pacer.wait();
        if (wait > 0) await delay(wait);
        pacer.take();
      }
      if (socket.readyState !== WebSocket.OPEN) return;
      socket.send(line);
    }
    // Everything is handed over; close only once it has left, then wait
    // (not forever) for the server's close reply and what comes before it.
    while (socket.bufferedAmount > 0 && socket.readyState === WebSocket.OPEN) {
      await delay(5);
    }
    if (socket.readyState !== WebSocket.OPEN) return;
    closingByUs = true;
    socket.close(CloseCode.NORMAL);
    const timer = setTimeout(() => ended.resolve(0), CLOSE_WAIT_MS);
    await ended.promise;
    clearTimeout(timer);
  };
  sending().catch((error) => {
    status(`chat: ${error instanceof Error ? error.message : String(error)}`);
    ended.resolve(1);
  });
  return await ended.promise;
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
      name: "rate",
      type: "string",
      valueName: "N",
      default: String(CLIENT_DEFAULTS.rate),
      help: "send at most N messages a second after a burst of 2N; 0 = no pacing",
    },
  ],
};

/** Turns parsed flags into client options, or throws a `UsageError`. */
export function clientOptions(values: FlagValues): ClientOptions {
  const command = CLIENT_COMMAND.name;
  const name = values.name as string | undefined;
  if (name !== undefined) {
    const problem = nameProblem(name);
    if (problem) throw new UsageError(problem, command);
  }
  const url = (values.url as string | undefined) ?? CLIENT_DEFAULTS.url;
  clientUrl(url, name);
  return {
    url,
    name,
    rate: values.rate === undefined
      ? undefined
      : integerFlag(command, "rate", values.rate as string, 0, 1_000_000),
  };
}

/** `chat client [flags]`. */
export async function main(args: string[]): Promise<number> {
  const values = parseFlags(CLIENT_COMMAND, args);
  if (values.help) {
    console.log(usage(CLIENT_COMMAND));
    return 0;
  }
  return await runClient(clientOptions(values));
}

if (import.meta.main) {
  Deno.exit(await runCommand(main, Deno.args));
}

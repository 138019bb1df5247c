/**
 * The chat server: `Deno.serve` with the native `Deno.upgradeWebSocket`.
 * Every text message a client sends goes to every member of its room as
 * `SENDER: TEXT`, in one order; rooms are URL paths, with presence,
 * history, a chat page, and (with `--redis`) several instances as one.
 *
 * ```ts
 * import { serveChat } from "./server.ts";
 * const server = serveChat({ port: 0 });
 * console.log(server.url); // ws://127.0.0.1:PORT
 * await server.shutdown();
 * ```
 *
 * The chat also mounts inside any `Deno.serve` app: `chatHandler` answers
 * the requests it is given (see the README).
 *
 * The parts live in `server/`: `options.ts` (options and flags), `http.ts`
 * (routes and the upgrade gate), `chat.ts` (rooms and sessions),
 * `session.ts` (one client's life), `room.ts`, `codec.ts`, `outbox.ts`,
 * `backplane.ts` and `redis.ts`. This file wires them.
 *
 * @module
 */

import { formatAddress } from "./lib/protocol.ts";
import { parseFlags, runCommand, usage, UsageError } from "./lib/flags.ts";
import { errorText } from "./lib/errors.ts";
import { delay } from "./lib/time.ts";
import { Chat } from "./server/chat.ts";
import {
  type ChatRequestHandler,
  chatRoutes,
  isLoopback,
  plainResponse,
} from "./server/http.ts";
import { ChatListener } from "./server/listener.ts";
import { SqliteStore, StoreError } from "./server/store.ts";
import { stdoutLog } from "./server/log.ts";
import { descriptorShortfall, guardProcess } from "./server/process.ts";
import {
  SERVER_COMMAND,
  SERVER_DEFAULTS,
  type ServerOptions,
  serverOptions,
  type ServerSettings,
} from "./server/options.ts";

export { SERVER_COMMAND, SERVER_DEFAULTS, type ServerOptions, serverOptions };
export { upgradeHint } from "./server/http.ts";

/** The chat as a request handler, to serve alone or beside other routes. */
export interface ChatHandler extends ChatRequestHandler {
  /** How many clients are in the chat, over all rooms. */
  readonly clients: number;
  /**
   * Refuses new upgrades (503), lets every client that reads take what was
   * already accepted, closes every client with 1001 ("server shutting
   * down"), and lets the backplane go; within `shutdownTimeout` seconds
   * even if some client never reads.
   */
  shutdown(): Promise<void>;
}

/** A running chat server. */
export interface ChatServer {
  /** The address actually bound (the real port when asked for `0`). */
  readonly addr: Deno.NetAddr;
  /** `ws://HOST:PORT` (`wss://` with TLS), the URL clients connect to. */
  readonly url: string;
  /** `http://HOST:PORT/` (`https://` with TLS), the chat page of the default room. */
  readonly pageUrl: string;
  /** How many clients are in the chat, over all rooms. */
  readonly clients: number;
  /**
   * Shuts the chat down (see `ChatHandler.shutdown`), then stops listening;
   * within `shutdownTimeout` seconds. Calling it again returns the same promise.
   */
  shutdown(): Promise<void>;
  /** Settles when the server has stopped. */
  readonly finished: Promise<void>;
}

/** Fills in every default. */
function settingsOf(options: ServerOptions): ServerSettings {
  const given = Object.entries(options).filter(([, value]) => value !== undefined);
  return { ...SERVER_DEFAULTS, ...Object.fromEntries(given) };
}

/** The chat's request handler: mount it in any `Deno.serve` app. */
export function chatHandler(options: ServerOptions = {}): ChatHandler {
  const settings = settingsOf(options);
  const log = settings.log ?? stdoutLog();
  const historyKeep = Math.max(settings.history, settings.historyKeep);
  const chat = new Chat({
    echo: settings.echo,
    history: settings.history,
    historyKeep,
    roomTtl: settings.roomTtl,
    store: settings.store === undefined
      ? undefined
      : new SqliteStore(settings.store, { keep: historyKeep, log }),
    presenceLimit: settings.presenceLimit,
    quiet: settings.quiet,
    limits: {
      maxMessageBytes: settings.maxMessageBytes,
      rateLimit: settings.rateLimit,
      rateBurst: Math.max(1, settings.rateBurst),
      rateBytes: settings.rateBytes,
      rateBytesBurst: Math.max(1, settings.rateBytesBurst),
    },
    historyBytes: settings.historyBytes,
    maxClientsPerIp: settings.maxClientsPerIp,
    maxBufferedBytes: settings.maxBufferedBytes,
    maxClients: settings.maxClients,
    authSecret: settings.authSecret,
    kickSeconds: settings.kickSeconds,
    redis: settings.redis === undefined ? undefined : {
      url: settings.redis,
      prefix: settings.redisPrefix,
      timeoutMs: settings.redisTimeout,
    },
    log,
  });
  const routes = chatRoutes(chat, {
    allowOrigins: settings.allowOrigins,
    publicUrls: settings.publicUrls,
    loopback: isLoopback(settings.hostname),
    idleTimeout: settings.idleTimeout,
    maxMessageBytes: settings.maxMessageBytes,
    authSecret: settings.authSecret,
  });
  return Object.defineProperties(routes, {
    clients: { get: () => chat.members },
    shutdown: {
      value: () => withDeadline(settings.shutdownTimeout, (d) => chat.shutdown(d)),
    },
  }) as ChatHandler;
}

/** Runs `work` with a promise that resolves `seconds` from now, cleared when it ends. */
async function withDeadline(
  seconds: number,
  work: (deadline: Promise<void>) => Promise<void>,
): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<void>((resolve) =>
    timer = setTimeout(resolve, seconds * 1000)
  );
  try {
    await work(deadline);
  } finally {
    clearTimeout(timer);
  }
}

/** Starts a chat server. It listens as soon as this returns. */
export function serveChat(options: ServerOptions = {}): ChatServer {
  const settings = settingsOf(options);
  const log = settings.log ?? stdoutLog();
  const handler = chatHandler({ ...options, log });
  const tls = settings.cert !== undefined && settings.key !== undefined;
  const listener = new ChatListener({
    hostname: settings.hostname,
    port: settings.port,
    cert: settings.cert,
    key: settings.key,
    handler,
    onError(error) {
      log(`Error handling a request: ${errorText(error)}`);
      return plainResponse(500, "internal error");
    },
    log,
  });
  const where = formatAddress(listener.addr.hostname, listener.addr.port);
  const stopped = Promise.withResolvers<void>();

  const shutdown = () =>
    withDeadline(settings.shutdownTimeout, async (deadline) => {
      await handler.shutdown();
      // A client that never reads cannot be closed by the native API: past
      // the deadline, the caller exits the process rather than wait for it.
      await Promise.race([listener.shutdown(), deadline]);
      stopped.resolve();
    });

  let stopping: Promise<void> | undefined;
  return {
    addr: listener.addr,
    url: `${tls ? "wss" : "ws"}://${where}`,
    pageUrl: `${tls ? "https" : "http"}://${where}/`,
    get clients() {
      return handler.clients;
    },
    shutdown: () => stopping ??= shutdown(),
    finished: stopped.promise,
  };
}

/** `chat server [flags]`: runs until SIGINT or SIGTERM, then exits 0. */
export async function main(args: string[]): Promise<number> {
  const values = parseFlags(SERVER_COMMAND, args);
  if (values.help) {
    console.log(usage(SERVER_COMMAND));
    return 0;
  }
  const options = serverOptions(values);
  const log = stdoutLog();
  let server: ChatServer;
  try {
    server = serveChat({ ...options, log });
  } catch (error) {
    if (error instanceof StoreError) {
      console.error(`chat: ${error.message}`);
      return 1;
    }
    if (options.cert !== undefined && !(error instanceof Deno.errors.AddrInUse)) {
      const why = errorText(error).replace(
        /^keys may not be consistent: KeyMismatch$/,
        "the key does not match the certificate",
      );
      throw new UsageError(`cannot use --cert/--key: ${why}`, SERVER_COMMAND.name);
    }
    const where = formatAddress(
      options.hostname ?? SERVER_DEFAULTS.hostname,
      options.port ?? SERVER_DEFAULTS.port,
    );
    console.error(`chat: cannot listen on ${where}: ${listenProblem(error)}`);
    return 1;
  }
  const unguard = guardProcess(log);
  // Signals are caught before anyone can know the address and send one.
  const stop = () => void server.shutdown();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  // Scripts wait for this line: it is always the first one, written at once.
  log(`listening on ${server.url}`);
  log(`chat page at ${server.pageUrl}`);
  const short = descriptorShortfall(options.maxClients ?? SERVER_DEFAULTS.maxClients);
  if (short) log(short);
  await log.flush();
  await server.finished;
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
  unguard();
  // What the log holds goes out, unless stdout stopped taking it.
  await Promise.race([log.flush(), delay(1000)]);
  return 0;
}

function listenProblem(error: unknown): string {
  if (error instanceof Deno.errors.AddrInUse) return "address already in use";
  if (error instanceof Deno.errors.AddrNotAvailable) return "address not available";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  return errorText(error).replace(/ \(os error \d+\)$/, "");
}

if (import.meta.main) {
  Deno.exit(await runCommand(main, Deno.args));
}

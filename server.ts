/**
 * The chat server: `Deno.serve` with the native `Deno.upgradeWebSocket`.
 * Every text message a client sends goes to every connected client as
 * `SENDER: TEXT`, in the order the server received it.
 *
 * ```ts
 * import { serveChat } from "./server.ts";
 * const server = serveChat({ port: 0 });
 * console.log(server.url); // ws://127.0.0.1:PORT
 * await server.shutdown();
 * ```
 *
 * @module
 */

import {
  chatLine,
  CloseCode,
  CloseReason,
  formatAddress,
  nameProblem,
  WELCOME,
} from "./protocol.ts";
import { type Member, Room } from "./room.ts";
import { type Log, stdoutLog } from "./log.ts";
import {
  type CommandSpec,
  type FlagValues,
  integerFlag,
  parseFlags,
  runCommand,
  usage,
  UsageError,
} from "./flags.ts";

/** What the server can be told; every field is optional. */
export interface ServerOptions {
  /** The address to listen on. @default {"127.0.0.1"} */
  hostname?: string;
  /** The port to listen on; `0` picks a free one. @default {8080} */
  port?: number;
  /** Send each message back to its sender too, as the original does. @default {true} */
  echo?: boolean;
  /** Where log lines go. @default {each line to stdout} */
  log?: Log;
}

/** The defaults of every option, the single source for `--help` and the README. */
export const SERVER_DEFAULTS = {
  hostname: "127.0.0.1",
  port: 8080,
  echo: true,
} as const;

/** A running chat server. */
export interface ChatServer {
  /** The address actually bound (the real port when asked for `0`). */
  readonly addr: Deno.NetAddr;
  /** `ws://HOST:PORT`, the URL clients connect to. */
  readonly url: string;
  /** How many clients are connected. */
  readonly clients: number;
  /**
   * Closes every client with 1001 ("server shutting down"), then stops
   * listening. Calling it again returns the same promise.
   */
  shutdown(): Promise<void>;
  /** Settles when the server has stopped. */
  readonly finished: Promise<void>;
}

/** The one-line hint a plain HTTP request gets, with status 426. */
export function upgradeHint(url: string): string {
  return `This is a WebSocket chat server: connect with a WebSocket client, e.g. chat client --url ${url}`;
}

/** One connected client, as a member of the chat. */
class Connection implements Member {
  #gone = false;

  constructor(
    readonly socket: WebSocket,
    /** `IP:PORT` as the server sees it. */
    readonly address: string,
    readonly sender: string,
  ) {}

  deliver(line: string): void {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(line);
  }

  close(code: number, reason: string): void {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.close(code, reason);
  }

  /** True the first time it is called: `onclose` may fire twice. */
  markGone(): boolean {
    if (this.#gone) return false;
    this.#gone = true;
    return true;
  }
}

function plainResponse(status: number, text: string, headers?: HeadersInit): Response {
  const response = new Response(text + "\n", { status, headers });
  response.headers.set("content-type", "text/plain; charset=utf-8");
  return response;
}

/** Reads the optional `name` query parameter: a name, none, or a problem. */
function nameFromQuery(url: URL): { name?: string; problem?: string } {
  const names = url.searchParams.getAll("name");
  if (names.length > 1) return { problem: "repeated name parameter: give one name" };
  if (names.length === 0 || names[0] === "") return {};
  const problem = nameProblem(names[0]);
  return problem ? { problem } : { name: names[0] };
}

function isUpgrade(request: Request): boolean {
  return request.headers.get("upgrade")?.toLowerCase() === "websocket";
}

/** Starts a chat server. It listens as soon as this returns. */
export function serveChat(options: ServerOptions = {}): ChatServer {
  const hostname = options.hostname ?? SERVER_DEFAULTS.hostname;
  const port = options.port ?? SERVER_DEFAULTS.port;
  const echo = options.echo ?? SERVER_DEFAULTS.echo;
  const log = options.log ?? stdoutLog();

  const room = new Room<Connection>();
  /** Every upgraded socket, open or not yet: what shutdown must close. */
  const connections = new Set<Connection>();
  let shuttingDown = false;
  let allClosed: (() => void) | undefined;

  function forget(connection: Connection) {
    if (!connection.markGone()) return;
    room.leave(connection);
    connections.delete(connection);
    log(`Disconnected ${connection.address}`);
    if (connections.size === 0) allClosed?.();
  }

  /** Runs an event handler so that a throw costs one connection, never the process. */
  function guarded(connection: Connection, what: string, handler: () => void) {
    try {
      handler();
    } catch (error) {
      log(`Error ${connection.address} in ${what}: ${errorText(error)}`);
      connection.close(CloseCode.INTERNAL_ERROR, CloseReason.INTERNAL_ERROR);
      forget(connection);
    }
  }

  function attach(connection: Connection) {
    const { socket } = connection;
    connections.add(connection);
    socket.onopen = () =>
      guarded(connection, "open", () => {
        log(`New connection from ${connection.address}`);
        connection.deliver(WELCOME);
        // Joining only once open: a socket still connecting cannot be sent to.
        room.join(connection);
      });
    socket.onmessage = (event) =>
      guarded(connection, "message", () => {
        if (typeof event.data !== "string") {
          connection.close(CloseCode.UNSUPPORTED_DATA, CloseReason.TEXT_ONLY);
          forget(connection);
          return;
        }
        log(`From client ${connection.address} ${JSON.stringify(event.data)}`);
        room.broadcast(
          chatLine(connection.sender, event.data),
          echo ? undefined : connection,
        );
      });
    // An error is always followed by a close event; the close does the cleanup.
    socket.onerror = () => {};
    socket.onclose = () => forget(connection);
  }

  function handle(request: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>): Response {
    if (!isUpgrade(request)) {
      const host = request.headers.get("host");
      return plainResponse(426, upgradeHint(host ? `ws://${host}` : url), {
        upgrade: "websocket",
      });
    }
    if (shuttingDown) {
      return plainResponse(503, "server shutting down", { "retry-after": "5" });
    }
    const { name, problem } = nameFromQuery(new URL(request.url));
    if (problem) return plainResponse(400, problem);
    // Read before the upgrade: afterwards the request is closed and so is `info`.
    const address = formatAddress(info.remoteAddr.hostname, info.remoteAddr.port);
    let upgrade: Deno.WebSocketUpgrade;
    try {
      upgrade = Deno.upgradeWebSocket(request);
    } catch (error) {
      return plainResponse(400, `bad WebSocket upgrade: ${errorText(error)}`);
    }
    attach(new Connection(upgrade.socket, address, name ?? address));
    return upgrade.response;
  }

  // Assigned right after listening, before any request can arrive.
  let url = "";
  const httpServer = Deno.serve({
    hostname,
    port,
    onListen() {},
    onError(error) {
      log(`Error handling a request: ${errorText(error)}`);
      return plainResponse(500, "internal error");
    },
  }, handle);
  const addr = httpServer.addr;
  url = `ws://${formatAddress(addr.hostname, addr.port)}`;

  let stopping: Promise<void> | undefined;

  async function shutdown(): Promise<void> {
    shuttingDown = true;
    const closed = new Promise<void>((resolve) => {
      allClosed = resolve;
      if (connections.size === 0) resolve();
    });
    for (const connection of connections) {
      connection.close(CloseCode.GOING_AWAY, CloseReason.SHUTTING_DOWN);
    }
    await closed;
    await httpServer.shutdown();
  }

  return {
    addr,
    url,
    get clients() {
      return room.size;
    },
    shutdown: () => stopping ??= shutdown(),
    finished: httpServer.finished,
  };
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The server command's flags: the source of `chat server --help` and the README table. */
export const SERVER_COMMAND: CommandSpec = {
  name: "server",
  summary: "run the broadcast chat server",
  flags: [
    {
      name: "host",
      type: "string",
      valueName: "HOST",
      default: SERVER_DEFAULTS.hostname,
      help: "address to listen on (0.0.0.0 or :: for every interface)",
    },
    {
      name: "port",
      type: "string",
      valueName: "PORT",
      default: String(SERVER_DEFAULTS.port),
      help: "port to listen on; 0 picks a free port",
    },
    {
      name: "no-echo",
      type: "boolean",
      help: "do not send a message back to its sender",
    },
  ],
};

/** Turns parsed flags into server options, or throws a `UsageError`. */
export function serverOptions(values: FlagValues): ServerOptions {
  const command = SERVER_COMMAND.name;
  const host = values.host as string | undefined;
  if (host !== undefined && host.trim() === "") {
    throw new UsageError("--host needs an address", command);
  }
  return {
    hostname: host,
    port: values.port === undefined
      ? undefined
      : integerFlag(command, "port", values.port as string, 0, 65535),
    echo: !values["no-echo"],
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
    const where = formatAddress(
      options.hostname ?? SERVER_DEFAULTS.hostname,
      options.port ?? SERVER_DEFAULTS.port,
    );
    console.error(`chat: cannot listen on ${where}: ${listenProblem(error)}`);
    return 1;
  }
  // Signals are caught before anyone can know the address and send one.
  const stop = () => void server.shutdown();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  // Scripts wait for this line: it is always the first one, written at once.
  log(`listening on ${server.url}`);
  log.flush();
  await server.finished;
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
  log.flush();
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

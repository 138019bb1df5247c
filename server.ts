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
  BACKPLANE_BACK,
  BACKPLANE_DOWN,
  BATCH_PROTOCOL,
  BATCH_SEPARATOR,
  CloseCode,
  CloseReason,
  formatAddress,
  HELP_LINE,
  joinedNotice,
  leftNotice,
  nameProblem,
  parseYew,
  rateLimitNotice,
  REGISTER_WAIT_MS,
  roomFromPath,
  SEPARATOR_REFUSED,
  unknownCommandLine,
  WELCOME,
  whoLine,
} from "./protocol.ts";
import { chatPage } from "./page.ts";
import { Admission, FLOOD_WINDOW_MS, messageBytes, utf8Length } from "./limits.ts";
import { Metrics, type RefusalReason } from "./metrics.ts";
import { Outbox, TurnChecks } from "./outbox.ts";
import { type Codec, Hub, type Member, type Room } from "./room.ts";
import {
  type Backplane,
  type BackplaneHandlers,
  type Delivery,
  LocalBackplane,
  RedisBackplane,
  type RoomEvent,
} from "./backplane.ts";
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
  /** Recent messages per room a newcomer receives after the welcome; `0` none. @default {50} */
  history?: number;
  /**
   * Joined/left notices go out while a room has at most this many members;
   * past it they stop (each would cost a line to everyone). @default {200}
   */
  presenceLimit?: number;
  /** Log no line per message (`From client ...`); connections and refusals still are. @default {false} */
  quiet?: boolean;
  /**
   * The largest text message, in UTF-8 bytes; a larger one closes its sender
   * with 1009 and is not broadcast. @default {65536}
   */
  maxMessageBytes?: number;
  /**
   * Messages per second per client (token bucket); over it, messages are
   * not broadcast and the sender gets a notice. `0` turns off this limit and
   * the flood rule. @default {20}
   */
  rateLimit?: number;
  /** Messages a client may send at once before the rate applies (at least 1). @default {40} */
  rateBurst?: number;
  /**
   * The unsent backlog (`bufferedAmount`) a client may have after an
   * event-loop turn (four times this at any moment); past it the client is a
   * slow consumer, closed with 1008. @default {1048576}
   */
  maxBufferedBytes?: number;
  /** Connections at once; beyond it upgrades get HTTP 503. @default {10000} */
  maxClients?: number;
  /**
   * Seconds without an answer to the server's pings before a client is
   * closed with 1001; `0` never. @default {30}
   */
  idleTimeout?: number;
  /**
   * Origins (`https://example.com`) allowed besides the server's own. An
   * upgrade whose `Origin` is neither gets HTTP 403; one without `Origin`
   * (not a browser) is allowed. @default {[]}
   */
  allowOrigins?: string[];
  /** Seconds shutdown waits for clients to take their last messages. @default {5} */
  shutdownTimeout?: number;
  /** TLS certificate chain, PEM; with `key`, the server speaks `wss://`. @default {none} */
  cert?: string;
  /** TLS private key, PEM, matching `cert`. @default {none} */
  key?: string;
  /**
   * A Redis server (`redis://[user:password@]host[:port][/db]`, `rediss://`
   * for TLS) through which several instances serve the same rooms, presence
   * and history; without it, the server stands alone. @default {none}
   */
  redis?: string;
  /** What the backplane's Redis keys and channels start with. @default {"chat:"} */
  redisPrefix?: string;
  /**
   * Milliseconds any Redis call may take; a later answer counts as Redis
   * being down. @default {1000}
   */
  redisTimeout?: number;
  /** Where log lines go. @default {each line to stdout} */
  log?: Log;
}

/** The defaults of every option, the single source for `--help` and the README. */
export const SERVER_DEFAULTS = {
  hostname: "127.0.0.1",
  port: 8080,
  echo: true,
  history: 50,
  presenceLimit: 200,
  quiet: false,
  maxMessageBytes: 65536,
  rateLimit: 20,
  rateBurst: 40,
  maxBufferedBytes: 1048576,
  maxClients: 10000,
  idleTimeout: 30,
  shutdownTimeout: 5,
  redisPrefix: "chat:",
  redisTimeout: 1000,
} as const;

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
   * Refuses new upgrades (503), lets every client that reads take what was
   * already accepted, closes every client with 1001 ("server shutting
   * down"), then stops listening; within `shutdownTimeout` seconds even if
   * some client never reads. Calling it again returns the same promise.
   */
  shutdown(): Promise<void>;
  /** Settles when the server has stopped. */
  readonly finished: Promise<void>;
}

/** The one-line hint a plain HTTP request gets, with status 426. */
export function upgradeHint(url: string): string {
  return `This is a WebSocket chat server: connect with a WebSocket client, e.g. chat client --url ${url}`;
}

/** The chat page's headers: all of it is inline, so nothing may load from elsewhere. */
const PAGE_HEADERS = {
  "content-type": "text/html; charset=utf-8",
  "cache-control": "no-cache",
  "content-security-policy":
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
};

/** What a server does with its connections' socket events. */
interface ConnectionEvents {
  open(connection: Connection): void;
  message(connection: Connection, event: MessageEvent): void;
  error(connection: Connection, event: ErrorEvent): void;
  close(connection: Connection): void;
  /** The connection's outbox gave up on it as too slow. */
  slow(connection: Connection): void;
}

/** One connected client: a member of the chat, with its admission and outbox. */
class Connection implements Member {
  #gone = false;
  /** True once out of the room for the others (its name given back to the backplane). */
  released = false;
  /**
   * While a newcomer waits for the room's history from the backplane, what
   * the room sends it waits here, with each chat message's `seq`.
   */
  catchUp?: [frame: string, bytes: number | undefined, seq: number | undefined][];
  /** Messages that arrived while the backplane decides on a YewChat NICK. */
  held?: string[];
  /** Plain until a client without a name registers as a YewChat client. */
  codec: Codec = "plain";
  /** False until the client is in its room (without a name: until it said how it speaks). */
  joined = false;
  /** The wait for an unnamed client's first message. */
  registerTimer?: ReturnType<typeof setTimeout>;
  /** Set right after construction: the outbox calls back into the connection. */
  outbox!: Outbox;

  constructor(
    readonly id: number,
    readonly socket: WebSocket,
    /** `IP:PORT` as the server sees it. */
    readonly address: string,
    /** Its name, or its address without one; a YewChat client takes its NICK. */
    public sender: string,
    /** True when the URL gave a name: no need to wait for a YewChat register. */
    readonly named: boolean,
    readonly room: Room<Connection>,
    readonly admission: Admission,
    readonly events: ConnectionEvents,
    readonly metrics: Metrics,
  ) {}

  /** The socket's events, all to one listener object. */
  handleEvent(event: Event): void {
    switch (event.type) {
      case "message":
        return this.events.message(this, event as MessageEvent);
      case "open":
        return this.events.open(this);
      case "error":
        return this.events.error(this, event as ErrorEvent);
      case "close":
        return this.events.close(this);
    }
  }

  deliver(frame: string, bytes?: number, seq?: number): void {
    if (this.outbox.stopped) return;
    if (this.catchUp) {
      this.catchUp.push([frame, bytes, seq]);
      return;
    }
    this.metrics.bytesSent += bytes ?? utf8Length(frame);
    this.outbox.send(frame);
  }

  /** Called by the outbox when the backlog passed the limit. */
  slow(): void {
    this.events.slow(this);
  }

  /** Sends nothing more, then closes (a no-op once closing). */
  close(code: number, reason: string): void {
    this.outbox.stop();
    if (this.socket.readyState === WebSocket.OPEN) this.socket.close(code, reason);
  }

  /** True once its socket closed. */
  get gone(): boolean {
    return this.#gone;
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

/** True when the upgrade offers the `chat.batch` subprotocol. */
function offersBatching(request: Request): boolean {
  const offered = request.headers.get("sec-websocket-protocol");
  return offered !== null && offered.split(",").some((p) => p.trim() === BATCH_PROTOCOL);
}

function isUpgrade(request: Request): boolean {
  return request.headers.get("upgrade")?.toLowerCase() === "websocket";
}

/**
 * Says why an upgrade's `Origin` is refused, or `undefined` to allow it:
 * allowed are no `Origin` (not a browser), the server's own (its host:port
 * is the request's `Host`), and the listed ones.
 */
function originProblem(
  request: Request,
  allowed: ReadonlySet<string>,
): string | undefined {
  const origin = request.headers.get("origin");
  if (origin === null) return undefined;
  let parsed: URL | undefined;
  try {
    parsed = new URL(origin);
  } catch {
    // "null" and garbage are refused below.
  }
  if (parsed && parsed.host === request.headers.get("host")) return undefined;
  if (parsed && allowed.has(parsed.origin)) return undefined;
  return `origin not allowed: ${origin}`;
}

/** Starts a chat server. It listens as soon as this returns. */
export function serveChat(options: ServerOptions = {}): ChatServer {
  const settings = { ...SERVER_DEFAULTS, ...withoutUndefined(options) };
  const log = options.log ?? stdoutLog();
  const limits = {
    maxMessageBytes: settings.maxMessageBytes,
    rateLimit: settings.rateLimit,
    rateBurst: Math.max(1, settings.rateBurst),
  };
  const allowedOrigins = new Set(
    (options.allowOrigins ?? []).map((origin) => new URL(origin).origin),
  );

  const hub = new Hub<Connection>(settings.history, settings.presenceLimit);
  const metrics = new Metrics();
  /** Every upgraded socket until its close event: each holds a `maxClients` slot. */
  const connections = new Set<Connection>();
  const turns = new TurnChecks();
  let shuttingDown = false;
  let allClosed: (() => void) | undefined;
  let lastId = 0;
  /** Upgrades waiting on the backplane: each will hold a `maxClients` slot. */
  let deciding = 0;

  const handlers: BackplaneHandlers = {
    deliver: deliverEvent,
    changed(up) {
      for (const room of hub.rooms()) room.notify(up ? BACKPLANE_BACK : BACKPLANE_DOWN);
    },
    presence() {
      const rooms = new Map<string, string[]>();
      for (const room of hub.rooms()) if (room.size > 0) rooms.set(room.name, room.who());
      return rooms;
    },
    log,
  };
  const backplane: Backplane = options.redis === undefined
    ? new LocalBackplane(handlers)
    : new RedisBackplane({
      url: options.redis,
      prefix: settings.redisPrefix,
      timeoutMs: settings.redisTimeout,
      historySize: settings.history,
      namesLimit: settings.presenceLimit,
    }, handlers);

  /**
   * A room's event, in the backplane's order, to this instance's members:
   * each message to every member (but its sender without echo), each join
   * or leave as a notice and a YewChat user list.
   */
  function deliverEvent(roomName: string, event: RoomEvent, delivery: Delivery) {
    const room = hub.get(roomName);
    if (!room) return;
    const subject = event.origin === backplane.instance ? event.conn : undefined;
    if (event.kind === "message") {
      metrics.messagesDelivered += room.broadcast(
        event,
        settings.echo ? undefined : subject,
        delivery.seq,
      );
      return;
    }
    const online = delivery.online ?? room.size;
    const notice = event.kind === "joined"
      ? joinedNotice(event.name, online)
      : leftNotice(event.name, online);
    // Through Redis, a large room's events do not list names: ask for them.
    const users = delivery.names ?? (delivery.seq === undefined ? room.who() : undefined);
    room.announce(notice, online, users, subject);
    if (users === undefined && room.hasYew) {
      void backplane.who(roomName).then((names) => {
        const now = hub.get(roomName);
        now?.users(names ?? now.who());
      });
    }
  }

  /** Drops `room` once nobody is in it or about to join it. */
  function tidy(room: Room<Connection>) {
    if (hub.tidy(room)) backplane.close(room.name);
  }

  /** Takes a client out of its room for everyone (once), announcing it if it was in. */
  function leave(connection: Connection) {
    if (connection.released) return;
    connection.released = true;
    const wasMember = connection.room.remove(connection);
    backplane.release(
      connection.room.name,
      connection.sender,
      wasMember
        ? {
          kind: "left",
          name: connection.sender,
          origin: backplane.instance,
          conn: connection.id,
        }
        : undefined,
    );
  }

  /** Takes a client out of the chat and closes it; it may take a while to go. */
  function drop(
    connection: Connection,
    code: number,
    reason: string,
    why?: string,
    refusal?: RefusalReason,
  ) {
    if (refusal) metrics.refuse(refusal);
    leave(connection);
    connection.close(code, reason);
    if (why) log(`Dropped ${connection.address}: ${why}`);
  }

  function forget(connection: Connection) {
    if (!connection.markGone()) return;
    clearTimeout(connection.registerTimer);
    leave(connection);
    connection.room.release(connection.sender);
    tidy(connection.room);
    connection.outbox.stop();
    connections.delete(connection);
    log(`Disconnected ${connection.address}`);
    if (connections.size === 0) allClosed?.();
  }

  /**
   * Puts a client in its room: a plain one gets the welcome and the room's
   * history first; a YewChat one gets the user list (from the join) and no
   * text. Then everyone is told.
   */
  function enter(connection: Connection, codec: Codec) {
    clearTimeout(connection.registerTimer);
    connection.codec = codec;
    connection.joined = true;
    const room = connection.room;
    if (codec === "plain") {
      connection.deliver(WELCOME);
      if (backplane.shared && backplane.up) {
        catchUp(connection);
      } else {
        for (const line of room.history()) connection.deliver(line);
        if (backplane.shared) connection.deliver(BACKPLANE_DOWN);
      }
    }
    room.add(connection);
    backplane.publish(room.name, {
      kind: "joined",
      name: connection.sender,
      origin: backplane.instance,
      conn: connection.id,
    });
  }

  /**
   * A newcomer's history from the backplane: what the room sends meanwhile
   * waits, then follows the history, without the messages already in it.
   */
  function catchUp(connection: Connection) {
    connection.catchUp = [];
    void backplane.history(connection.room.name).then((recent) => {
      const waiting = connection.catchUp ?? [];
      connection.catchUp = undefined;
      for (const line of recent?.lines ?? []) connection.deliver(line);
      for (const [frame, bytes, seq] of waiting) {
        if (seq === undefined || recent === undefined || seq > recent.last) {
          connection.deliver(frame, bytes);
        }
      }
    });
  }

  /**
   * The first message of a client without a name decides how it speaks: a
   * YewChat register takes a NICK (invalid or taken: closed with 1008);
   * anything else makes it a plain client, and is then handled as usual.
   * Says whether the message was the register.
   */
  function register(connection: Connection, text: string): boolean {
    const nick = parseYew(text, "register");
    if (nick === undefined) {
      enter(connection, "plain");
      return false;
    }
    clearTimeout(connection.registerTimer);
    const room = connection.room;
    const problem = nameProblem(nick) ??
      (room.claim(nick) ? undefined : `name taken: ${nick}`);
    if (problem) {
      drop(connection, CloseCode.POLICY_VIOLATION, problem, problem, "bad_name");
      return true;
    }
    if (!backplane.shared) {
      takeNick(connection, nick);
      return true;
    }
    // Other instances may hold the name: messages wait for the answer.
    connection.held = [];
    void backplane.claim(room.name, nick).then((claimed) => {
      try {
        const held = connection.held ?? [];
        connection.held = undefined;
        if (connection.gone || claimed === "taken") {
          room.release(nick);
          if (claimed === "claimed") backplane.release(room.name, nick);
          if (connection.gone) return tidy(room);
          const taken = `name taken: ${nick}`;
          return drop(connection, CloseCode.POLICY_VIOLATION, taken, taken, "bad_name");
        }
        takeNick(connection, nick);
        for (const data of held) handleText(connection, data);
      } catch (error) {
        failed(connection, "register", error);
      }
    });
    return true;
  }

  /** A YewChat client takes its NICK instead of its address. */
  function takeNick(connection: Connection, nick: string) {
    connection.room.release(connection.sender);
    backplane.release(connection.room.name, connection.sender);
    connection.sender = nick;
    enter(connection, "yew");
  }

  /** One message from a client: admit it, then handle it. */
  function receive(connection: Connection, data: unknown) {
    if (shuttingDown || connection.outbox.stopped) return;
    if (typeof data !== "string") {
      return drop(
        connection,
        CloseCode.UNSUPPORTED_DATA,
        CloseReason.TEXT_ONLY,
        "binary message",
        "binary",
      );
    }
    const bytes = messageBytes(data, limits.maxMessageBytes);
    metrics.bytesReceived += bytes;
    switch (connection.admission.judge(bytes)) {
      case "too_big":
        return drop(
          connection,
          CloseCode.MESSAGE_TOO_BIG,
          CloseReason.TOO_BIG,
          `message over ${limits.maxMessageBytes} bytes`,
          "too_big",
        );
      case "flooding":
        return drop(
          connection,
          CloseCode.POLICY_VIOLATION,
          CloseReason.FLOODING,
          `more than ${connection.admission.floodLimit} messages in ${
            FLOOD_WINDOW_MS / 1000
          } s`,
          "rate_limited",
        );
      case "rate_limited":
        metrics.refuse("rate_limited");
        if (connection.codec === "plain" && connection.admission.mayNotify()) {
          connection.deliver(rateLimitNotice(limits.rateLimit));
        }
        return;
    }
    if (connection.held) return void connection.held.push(data);
    handleText(connection, data);
  }

  /** An admitted message: a register, a command, or a message for the room. */
  function handleText(connection: Connection, data: string) {
    if (!connection.joined && register(connection, data)) return;
    let text: string | undefined = data;
    if (connection.codec === "yew") {
      // YewChat messages are never commands.
      text = parseYew(data, "message");
      if (text === undefined) return;
    } else if (data.startsWith("//")) {
      text = data.slice(1);
    } else if (data.startsWith("/")) {
      return command(connection, data);
    }
    // Batched frames separate messages with it: no message may hold one.
    if (text.includes(BATCH_SEPARATOR)) {
      if (connection.codec === "plain") connection.deliver(SEPARATOR_REFUSED);
      return;
    }
    if (!settings.quiet) log(`From client ${connection.address} ${JSON.stringify(text)}`);
    metrics.messagesReceived++;
    backplane.publish(connection.room.name, {
      kind: "message",
      from: connection.sender,
      text,
      time: Date.now(),
      origin: backplane.instance,
      conn: connection.id,
    });
  }

  /** A line starting with `/`: answered to the sender alone, never broadcast. */
  function command(connection: Connection, line: string) {
    const name = line.split(/\s/, 1)[0];
    switch (name) {
      case "/who":
        if (!backplane.shared) return connection.deliver(whoLine(connection.room.who()));
        // Everyone on every instance, by name (this instance's alone while Redis is down).
        return void backplane.who(connection.room.name).then((names) =>
          connection.deliver(whoLine(names ?? connection.room.who().sort()))
        );
      case "/help":
        return connection.deliver(HELP_LINE);
      default:
        return connection.deliver(unknownCommandLine(name));
    }
  }

  /** A throw while handling a client costs that client, never the process. */
  function failed(connection: Connection, what: string, error: unknown) {
    log(`Error ${connection.address} in ${what}: ${errorText(error)}`);
    drop(connection, CloseCode.INTERNAL_ERROR, CloseReason.INTERNAL_ERROR);
  }

  /** Every connection's socket events: one object for all, no closures per socket. */
  const events: ConnectionEvents = {
    open(connection) {
      try {
        log(`New connection from ${connection.address}`);
        if (shuttingDown) {
          return connection.close(CloseCode.GOING_AWAY, CloseReason.SHUTTING_DOWN);
        }
        // Joining only once open: a socket still connecting cannot be sent to.
        if (connection.named) return enter(connection, "plain");
        // Without a name it may be a YewChat client: its first message tells.
        connection.registerTimer = setTimeout(() => {
          try {
            enter(connection, "plain");
          } catch (error) {
            failed(connection, "open", error);
          }
        }, REGISTER_WAIT_MS);
      } catch (error) {
        failed(connection, "open", error);
      }
    },
    message(connection, event) {
      try {
        receive(connection, event.data);
      } catch (error) {
        failed(connection, "message", error);
      }
    },
    // An error (invalid UTF-8, a bad frame, a reset) is followed by a close
    // event, which does the cleanup; the error is worth its one log line.
    error(connection, event) {
      if (event.message) log(`Error ${connection.address}: ${event.message}`);
    },
    close(connection) {
      forget(connection);
    },
    slow(connection) {
      // Called from within a send: drop it once the broadcast is over.
      queueMicrotask(() =>
        drop(
          connection,
          CloseCode.POLICY_VIOLATION,
          CloseReason.TOO_SLOW,
          `slow consumer, over ${settings.maxBufferedBytes} bytes unsent`,
          "slow_consumer",
        )
      );
    },
  };

  function attach(
    socket: WebSocket,
    address: string,
    name: string | undefined,
    room: Room<Connection>,
    batching: boolean,
  ) {
    const connection = new Connection(
      ++lastId,
      socket,
      address,
      name ?? address,
      name !== undefined,
      room,
      new Admission(limits),
      events,
      metrics,
    );
    connection.outbox = new Outbox(
      socket,
      settings.maxBufferedBytes,
      turns,
      connection,
      batching,
    );
    connections.add(connection);
    for (const type of ["open", "message", "error", "close"]) {
      socket.addEventListener(type, connection);
    }
  }

  async function handle(
    request: Request,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
  ): Promise<Response> {
    const requestUrl = new URL(request.url);
    const roomName = roomFromPath(requestUrl.pathname);
    const upgrading = isUpgrade(request);
    if (!upgrading && (request.method === "GET" || request.method === "HEAD")) {
      const status = statusResponse(requestUrl.pathname);
      if (status) return status;
    }
    if (!upgrading) {
      if (roomName === undefined) return plainResponse(404, "not found");
      if (request.method === "GET" || request.method === "HEAD") {
        // The page for joining under a name that is taken: the page asks
        // this first, since a browser cannot see a refused upgrade's status.
        const wanted = requestUrl.searchParams.get("name");
        if (
          wanted &&
          (hub.has(roomName, wanted) || await backplane.taken(roomName, wanted))
        ) {
          return plainResponse(409, `name taken: ${wanted}`);
        }
        return new Response(chatPage(roomName), { headers: PAGE_HEADERS });
      }
      const host = request.headers.get("host");
      return plainResponse(426, upgradeHint(host ? `${scheme}://${host}` : url), {
        upgrade: "websocket",
      });
    }
    if (shuttingDown) return shuttingDownResponse();
    const refusedOrigin = originProblem(request, allowedOrigins);
    if (refusedOrigin) {
      metrics.refuse("origin");
      return plainResponse(403, refusedOrigin);
    }
    if (roomName === undefined) {
      return plainResponse(
        400,
        `no room at ${JSON.stringify(requestUrl.pathname)}: use / or /ROOM`,
      );
    }
    const { name, problem } = nameFromQuery(requestUrl);
    if (problem) {
      metrics.refuse("bad_name");
      return plainResponse(400, problem);
    }
    if (connections.size + deciding >= settings.maxClients) {
      metrics.refuse("max_clients");
      return plainResponse(503, `server full: ${settings.maxClients} clients`, {
        "retry-after": "10",
      });
    }
    const batching = offersBatching(request);
    // Read before the upgrade: afterwards the request is closed and so is `info`.
    const address = formatAddress(info.remoteAddr.hostname, info.remoteAddr.port);
    const room = hub.room(roomName);
    const claimed = name ?? address;
    // The name is held from now on, so two upgrades cannot both take it.
    if (!room.claim(claimed)) {
      metrics.refuse("bad_name");
      tidy(room);
      return plainResponse(409, `name taken: ${name}`);
    }
    if (backplane.shared) {
      // Other instances may hold the name; and the room's events must flow
      // here before the client is in it.
      deciding++;
      const [answer] = await backplane.started.then(() =>
        Promise.all([backplane.claim(roomName, claimed), backplane.open(roomName)])
      ).finally(() => deciding--);
      if (shuttingDown || (answer === "taken" && name !== undefined)) {
        room.release(claimed);
        if (answer === "claimed") backplane.release(roomName, claimed);
        tidy(room);
        if (shuttingDown) return shuttingDownResponse();
        metrics.refuse("bad_name");
        return plainResponse(409, `name taken: ${name}`);
      }
    }
    let upgrade: Deno.WebSocketUpgrade;
    try {
      upgrade = Deno.upgradeWebSocket(request, {
        idleTimeout: settings.idleTimeout,
        protocol: batching ? BATCH_PROTOCOL : undefined,
      });
    } catch (error) {
      room.release(claimed);
      backplane.release(roomName, claimed);
      tidy(room);
      return plainResponse(400, `bad WebSocket upgrade: ${errorText(error)}`);
    }
    attach(upgrade.socket, address, name, room, batching);
    return upgrade.response;
  }

  function shuttingDownResponse(): Response {
    return plainResponse(503, CloseReason.SHUTTING_DOWN, { "retry-after": "5" });
  }

  /** What `/healthz` says of the backplane: `none`, `up` or `down`. */
  function backplaneState(): "none" | "up" | "down" {
    if (!backplane.shared) return "none";
    return backplane.up ? "up" : "down";
  }

  /** `/healthz`, `/readyz` and `/metrics`; `undefined` for any other path. */
  function statusResponse(path: string): Response | undefined {
    switch (path) {
      case "/healthz":
        // Alive while it serves; the backplane's state is information here.
        return Response.json({
          status: shuttingDown ? "shutting down" : "ok",
          backplane: backplaneState(),
        });
      case "/readyz":
        // Not ready while shutting down, or while the backplane is down.
        if (shuttingDown) {
          return Response.json({ ready: false, reason: "shutting down" }, {
            status: 503,
          });
        }
        if (backplaneState() === "down") {
          return Response.json({ ready: false, reason: "backplane down" }, {
            status: 503,
          });
        }
        return Response.json({ ready: true });
      case "/metrics":
        return new Response(
          metrics.render({
            clients: hub.members,
            rooms: hub.occupied,
            backplaneUp: backplane.shared ? backplane.up : undefined,
          }),
          {
            headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
          },
        );
    }
    return undefined;
  }

  const tls = options.cert !== undefined && options.key !== undefined;
  const scheme = tls ? "wss" : "ws";
  // Assigned right after listening, before any request can arrive.
  let url = "";
  const httpServer = Deno.serve({
    hostname: settings.hostname,
    port: settings.port,
    ...(tls ? { cert: options.cert, key: options.key } : {}),
    onListen() {},
    onError(error) {
      log(`Error handling a request: ${errorText(error)}`);
      return plainResponse(500, "internal error");
    },
  }, handle);
  const addr = httpServer.addr;
  url = `${scheme}://${formatAddress(addr.hostname, addr.port)}`;
  const pageUrl = `${tls ? "https" : "http"}://${
    formatAddress(addr.hostname, addr.port)
  }/`;

  async function shutdown(): Promise<void> {
    shuttingDown = true;
    const deadline = timeout(settings.shutdownTimeout * 1000);
    const closed = new Promise<void>((resolve) => {
      allClosed = resolve;
      if (connections.size === 0) resolve();
    });
    // Each client that reads gets everything accepted before the 1001.
    for (const connection of connections) {
      clearTimeout(connection.registerTimer);
      void drained(connection.socket, deadline.promise).then(() =>
        connection.close(CloseCode.GOING_AWAY, CloseReason.SHUTTING_DOWN)
      );
    }
    await Promise.race([closed, deadline.promise]);
    turns.stop();
    await backplane.stop();
    // A client that never reads cannot be closed by the native API: past the
    // deadline, the caller exits the process rather than wait for it.
    await Promise.race([httpServer.shutdown(), deadline.promise]);
    deadline.cancel();
    stopped.resolve();
  }

  let stopping: Promise<void> | undefined;
  const stopped = Promise.withResolvers<void>();
  void httpServer.finished.then(() => stopped.resolve());
  return {
    addr,
    url,
    pageUrl,
    get clients() {
      return hub.members;
    },
    shutdown: () => stopping ??= shutdown(),
    finished: stopped.promise,
  };
}

/** A promise that resolves after `ms`, and a way to cancel its timer. */
function timeout(ms: number): { promise: Promise<void>; cancel(): void } {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const promise = new Promise<void>((resolve) => timer = setTimeout(resolve, ms));
  return { promise, cancel: () => clearTimeout(timer) };
}

/** Resolves once `socket` has written its backlog (or closed), or at `deadline`. */
async function drained(socket: WebSocket, deadline: Promise<void>): Promise<void> {
  let late = false;
  void deadline.then(() => late = true);
  // No event says the backlog is written: look again every few milliseconds.
  while (!late && socket.readyState === WebSocket.OPEN && socket.bufferedAmount > 0) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function withoutUndefined<T extends object>(object: T): Partial<T> {
  return Object.fromEntries(
    Object.entries(object).filter(([, v]) => v !== undefined),
  ) as Partial<
    T
  >;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A whole-number flag of the server, its default from `SERVER_DEFAULTS`. */
function numberFlag(
  name: string,
  option: keyof typeof SERVER_DEFAULTS,
  valueName: string,
  help: string,
): CommandSpec["flags"][number] {
  return {
    name,
    type: "string",
    valueName,
    default: String(SERVER_DEFAULTS[option]),
    help,
  };
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
    numberFlag("port", "port", "PORT", "port to listen on; 0 picks a free port"),
    {
      name: "no-echo",
      type: "boolean",
      help: "do not send a message back to its sender",
    },
    numberFlag(
      "history",
      "history",
      "N",
      "recent messages per room a newcomer receives; 0 = none",
    ),
    numberFlag(
      "presence-limit",
      "presenceLimit",
      "N",
      "announce joins and leaves while a room has at most N members",
    ),
    {
      name: "quiet",
      type: "boolean",
      help: "log no line per message (connections still are)",
    },
    numberFlag(
      "max-message-bytes",
      "maxMessageBytes",
      "N",
      "largest message in UTF-8 bytes; larger closes the client with 1009",
    ),
    numberFlag(
      "rate-limit",
      "rateLimit",
      "N",
      "messages per second per client; 0 turns off this and the flood rule",
    ),
    numberFlag(
      "rate-burst",
      "rateBurst",
      "N",
      "messages a client may send at once (at least 1)",
    ),
    numberFlag(
      "max-buffered-bytes",
      "maxBufferedBytes",
      "N",
      "unsent bytes per client before it is closed as too slow (1008)",
    ),
    numberFlag(
      "max-clients",
      "maxClients",
      "N",
      "connections at once; more get HTTP 503",
    ),
    numberFlag(
      "idle-timeout",
      "idleTimeout",
      "SECONDS",
      "close a client that answers no ping for this long (1001); 0 = never",
    ),
    {
      name: "allow-origin",
      type: "string",
      valueName: "URL",
      multiple: true,
      help: "also accept browser upgrades from this origin (others get HTTP 403)",
    },
    numberFlag(
      "shutdown-timeout",
      "shutdownTimeout",
      "SECONDS",
      "on SIGINT/SIGTERM, exit within this long even if a client never reads",
    ),
    {
      name: "cert",
      type: "string",
      valueName: "FILE",
      help: "TLS certificate chain (PEM); with --key, serve wss://",
    },
    {
      name: "key",
      type: "string",
      valueName: "FILE",
      help: "TLS private key (PEM) for --cert",
    },
    {
      name: "redis",
      type: "string",
      valueName: "URL",
      help: "share rooms with every instance on this Redis (redis://HOST:PORT)",
    },
    {
      name: "redis-prefix",
      type: "string",
      valueName: "PREFIX",
      default: SERVER_DEFAULTS.redisPrefix,
      help: "what the Redis keys and channels start with",
    },
    numberFlag(
      "redis-timeout",
      "redisTimeout",
      "MS",
      "a Redis call answered later than this counts as Redis down",
    ),
  ],
};

/** Turns parsed flags into server options (reading --cert and --key), or throws a `UsageError`. */
export function serverOptions(values: FlagValues): ServerOptions {
  const command = SERVER_COMMAND.name;
  const number = (name: string, min: number, max: number) =>
    values[name] === undefined
      ? undefined
      : integerFlag(command, name, values[name] as string, min, max);
  const host = values.host as string | undefined;
  if (host !== undefined && host.trim() === "") {
    throw new UsageError("--host needs an address", command);
  }
  const allowOrigins = (values["allow-origin"] as string[] | undefined ?? []).map(
    (origin) => {
      try {
        const url = new URL(origin);
        if (url.protocol === "http:" || url.protocol === "https:") return url.origin;
      } catch {
        // Reported below.
      }
      throw new UsageError(
        `invalid --allow-origin ${
          JSON.stringify(origin)
        }: expected http:// or https:// and a host`,
        command,
      );
    },
  );
  const [certFile, keyFile] = [
    values.cert as string | undefined,
    values.key as string | undefined,
  ];
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new UsageError("--cert and --key go together: give both or neither", command);
  }
  const redis = values.redis as string | undefined;
  if (redis !== undefined) redisProblem(command, redis);
  const redisPrefix = values["redis-prefix"] as string | undefined;
  if (redisPrefix !== undefined && /\s/.test(redisPrefix)) {
    throw new UsageError("--redis-prefix cannot contain spaces", command);
  }
  return {
    redis,
    redisPrefix,
    redisTimeout: number("redis-timeout", 1, 600_000),
    hostname: host,
    port: number("port", 0, 65535),
    echo: !values["no-echo"],
    history: number("history", 0, 100_000),
    quiet: values.quiet === true,
    presenceLimit: number("presence-limit", 0, 10_000_000),
    maxMessageBytes: number("max-message-bytes", 1, 64 * 1024 * 1024),
    rateLimit: number("rate-limit", 0, 1_000_000),
    rateBurst: number("rate-burst", 1, 1_000_000),
    maxBufferedBytes: number("max-buffered-bytes", 1, 2 ** 40),
    maxClients: number("max-clients", 1, 10_000_000),
    idleTimeout: number("idle-timeout", 0, 86_400),
    shutdownTimeout: number("shutdown-timeout", 0, 86_400),
    allowOrigins,
    cert: certFile === undefined ? undefined : readPem(command, "cert", certFile),
    key: keyFile === undefined ? undefined : readPem(command, "key", keyFile),
  };
}

/** Throws a `UsageError` unless `url` is a `redis://` or `rediss://` URL with a host. */
function redisProblem(command: string, url: string): void {
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    // Reported below.
  }
  if (
    parsed && (parsed.protocol === "redis:" || parsed.protocol === "rediss:") &&
    parsed.hostname !== ""
  ) return;
  throw new UsageError(
    `invalid --redis ${JSON.stringify(url)}: expected redis://HOST[:PORT] or rediss://`,
    command,
  );
}

function readPem(command: string, flag: string, file: string): string {
  try {
    return Deno.readTextFileSync(file);
  } catch (error) {
    const why = error instanceof Deno.errors.NotFound
      ? "no such file"
      : error instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : errorText(error);
    throw new UsageError(
      `cannot read --${flag} ${JSON.stringify(file)}: ${why}`,
      command,
    );
  }
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
  // Signals are caught before anyone can know the address and send one.
  const stop = () => void server.shutdown();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  // Scripts wait for this line: it is always the first one, written at once.
  log(`listening on ${server.url}`);
  log(`chat page at ${server.pageUrl}`);
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

/**
 * The server's options: the `ServerOptions` interface (each default in its
 * JSDoc), `SERVER_DEFAULTS`, and one schema, `SERVER_FLAGS`, from which the
 * flag table (`SERVER_COMMAND`, so `chat server --help` and the README),
 * and `serverOptions` (flags → options) both come.
 *
 * @module
 */

import { X509Certificate } from "node:crypto";
import { MIN_SECRET_BYTES, readSecret } from "../lib/auth.ts";
import {
  type CommandSpec,
  type FlagSpec,
  type FlagValues,
  integerFlag,
  pemFlag,
  UsageError,
} from "../lib/flags.ts";
import { PRESENCE_LIMIT } from "../lib/protocol.ts";
import type { Log } from "./log.ts";

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
   * Messages per room kept for clients that resume (`?since=`), with their
   * refs; at least `history` are kept. @default {1000}
   */
  historyKeep?: number;
  /**
   * Seconds an emptied room keeps its history (and epoch), so that its
   * last members can resume. @default {300}
   */
  roomTtl?: number;
  /**
   * An SQLite file that keeps every room's history, latest id and epoch
   * across restarts; not with `redis`. @default {none: history in memory}
   */
  store?: string;
  /**
   * The UTF-8 bytes of history all rooms together may hold (each message
   * counted with its sender and 64 bytes more); past it, the oldest
   * messages of the largest rooms go first. @default {67108864}
   */
  historyBytes?: number;
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
   * not broadcast and the sender gets a notice. `0` turns off every rate
   * limit (`rateBytes` too) and the flood rule. @default {20}
   */
  rateLimit?: number;
  /** Messages a client may send at once before the rate applies (at least 1). @default {40} */
  rateBurst?: number;
  /**
   * Bytes per second per client, each message counted as its size times the
   * members it goes to (its fan-out cost); over it, messages are not
   * broadcast and the sender gets a notice. `0` turns it off. @default {262144}
   */
  rateBytes?: number;
  /**
   * The fan-out bytes a client may send at once; a single message never
   * costs more than this, so any message passes once the client has
   * waited. @default {1048576}
   */
  rateBytesBurst?: number;
  /**
   * The unsent backlog (`bufferedAmount`) a client may have after an
   * event-loop turn (four times this at any moment); past it the client is a
   * slow consumer, closed with 1008. @default {1048576}
   */
  maxBufferedBytes?: number;
  /** Connections at once; beyond it upgrades get HTTP 503. @default {10000} */
  maxClients?: number;
  /**
   * Connections at once from one IP address (loopback included); beyond it
   * upgrades get HTTP 503. @default {100}
   */
  maxClientsPerIp?: number;
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
  /**
   * The URLs browsers reach the server by (`https://chat.example.com`),
   * behind a proxy or on a public address: when given, a browser's `Origin`
   * must be one of them (or allowed), instead of matching `Host`. On a
   * loopback `hostname`, upgrades must name a loopback `Host` whatever this
   * says, which defeats DNS rebinding. @default {[]}
   */
  publicUrls?: string[];
  /** Seconds shutdown waits for clients to take their last messages. @default {5} */
  shutdownTimeout?: number;
  /** TLS certificate chain, PEM; with `key`, the server speaks `wss://`. @default {none} */
  cert?: string;
  /** TLS private key, PEM, matching `cert`. @default {none} */
  key?: string;
  /**
   * The HMAC secret (at least 32 bytes) that signs tokens: with it, every
   * upgrade needs a token (HS256 JWT) naming who joins and where; without
   * it, anyone may join any room under any free name. @default {none}
   */
  authSecret?: Uint8Array;
  /** Seconds a name a moderator kicked out of a room may not join it again. @default {300} */
  kickSeconds?: number;
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
  historyKeep: 1000,
  roomTtl: 300,
  historyBytes: 67108864,
  presenceLimit: PRESENCE_LIMIT,
  quiet: false,
  maxMessageBytes: 65536,
  rateLimit: 20,
  rateBurst: 40,
  rateBytes: 262144,
  rateBytesBurst: 1048576,
  maxBufferedBytes: 1048576,
  maxClients: 10000,
  maxClientsPerIp: 100,
  idleTimeout: 30,
  allowOrigins: [] as string[],
  publicUrls: [] as string[],
  shutdownTimeout: 5,
  kickSeconds: 300,
  redisPrefix: "chat:",
  redisTimeout: 1000,
};

/** The server's options with every default filled in. */
export type ServerSettings = typeof SERVER_DEFAULTS & ServerOptions;

const COMMAND = "server";

/** One flag of the server and the option it sets. */
interface ServerFlag {
  /** The flag's name, without dashes. */
  flag: string;
  /** The option it sets. */
  option: keyof ServerOptions;
  /** A whole number in `[min, max]`, a switch, or text (checked by `parse`). */
  kind: "integer" | "switch" | "text";
  valueName?: string;
  help: string;
  min?: number;
  max?: number;
  /** May be given more than once: the option is a list. */
  multiple?: boolean;
  /** A switch that turns its option off (`--no-echo`). */
  negates?: boolean;
  /** Turns one text value into the option's value, or throws a `UsageError`. */
  parse?: (value: string) => unknown;
}

/** A text flag's parser that refuses a blank value with `problem`. */
function nonEmpty(problem: string): (value: string) => string {
  return (value) => {
    if (value.trim() === "") throw new UsageError(problem, COMMAND);
    return value;
  };
}

/** The server's flags, in `--help` order: the one schema of the command line. */
export const SERVER_FLAGS: readonly ServerFlag[] = [
  {
    flag: "host",
    option: "hostname",
    kind: "text",
    valueName: "HOST",
    help: "address to listen on (0.0.0.0 or :: for every interface)",
    parse: nonEmpty("--host needs an address"),
  },
  {
    flag: "port",
    option: "port",
    kind: "integer",
    valueName: "PORT",
    min: 0,
    max: 65535,
    help: "port to listen on; 0 picks a free port",
  },
  {
    flag: "no-echo",
    option: "echo",
    kind: "switch",
    negates: true,
    help: "do not send a message back to its sender",
  },
  {
    flag: "history",
    option: "history",
    kind: "integer",
    valueName: "N",
    min: 0,
    max: 100_000,
    help: "recent messages per room a newcomer receives; 0 = none",
  },
  {
    flag: "history-keep",
    option: "historyKeep",
    kind: "integer",
    valueName: "N",
    min: 0,
    max: 100_000,
    help: "messages per room kept for clients that resume (?since=)",
  },
  {
    flag: "room-ttl",
    option: "roomTtl",
    kind: "integer",
    valueName: "SECONDS",
    min: 0,
    max: 31_536_000,
    help: "how long an emptied room keeps its history for resumes",
  },
  {
    flag: "store",
    option: "store",
    kind: "text",
    valueName: "FILE",
    help: "keep history in this SQLite file across restarts (not with --redis)",
    parse: nonEmpty("--store needs a file name"),
  },
  {
    flag: "history-bytes",
    option: "historyBytes",
    kind: "integer",
    valueName: "N",
    min: 0,
    max: 2 ** 40,
    help: "bytes of history all rooms together hold; the largest lose first",
  },
  {
    flag: "presence-limit",
    option: "presenceLimit",
    kind: "integer",
    valueName: "N",
    min: 0,
    max: 10_000_000,
    help: "announce joins and leaves while a room has at most N members",
  },
  {
    flag: "quiet",
    option: "quiet",
    kind: "switch",
    help: "log no line per message (connections still are)",
  },
  {
    flag: "max-message-bytes",
    option: "maxMessageBytes",
    kind: "integer",
    valueName: "N",
    min: 1,
    max: 64 * 1024 * 1024,
    help: "largest message in UTF-8 bytes; larger closes the client with 1009",
  },
  {
    flag: "rate-limit",
    option: "rateLimit",
    kind: "integer",
    valueName: "N",
    min: 0,
    max: 1_000_000,
    help: "messages per second per client; 0 = no rate limits, no flood rule",
  },
  {
    flag: "rate-burst",
    option: "rateBurst",
    kind: "integer",
    valueName: "N",
    min: 1,
    max: 1_000_000,
    help: "messages a client may send at once (at least 1)",
  },
  {
    flag: "rate-bytes",
    option: "rateBytes",
    kind: "integer",
    valueName: "N",
    min: 0,
    max: 2 ** 40,
    help: "bytes per second per client, as size x recipients; 0 = no limit",
  },
  {
    flag: "rate-bytes-burst",
    option: "rateBytesBurst",
    kind: "integer",
    valueName: "N",
    min: 1,
    max: 2 ** 40,
    help: "bytes (size x recipients) a client may send at once",
  },
  {
    flag: "max-buffered-bytes",
    option: "maxBufferedBytes",
    kind: "integer",
    valueName: "N",
    min: 1,
    max: 2 ** 40,
    help: "unsent bytes per client before it is closed as too slow (1008)",
  },
  {
    flag: "max-clients",
    option: "maxClients",
    kind: "integer",
    valueName: "N",
    min: 1,
    max: 10_000_000,
    help: "connections at once; more get HTTP 503",
  },
  {
    flag: "max-clients-per-ip",
    option: "maxClientsPerIp",
    kind: "integer",
    valueName: "N",
    min: 1,
    max: 10_000_000,
    help: "connections at once from one IP address; more get HTTP 503",
  },
  {
    flag: "idle-timeout",
    option: "idleTimeout",
    kind: "integer",
    valueName: "SECONDS",
    min: 0,
    max: 86_400,
    help: "close a client that answers no ping for this long (1001); 0 = never",
  },
  {
    flag: "allow-origin",
    option: "allowOrigins",
    kind: "text",
    valueName: "URL",
    multiple: true,
    help: "also accept browser upgrades from this origin (others get HTTP 403)",
    parse: (value) => httpOrigin("allow-origin", value),
  },
  {
    flag: "public-url",
    option: "publicUrls",
    kind: "text",
    valueName: "URL",
    multiple: true,
    help: "a URL browsers reach the server by; their Origin must match one",
    parse: (value) => httpOrigin("public-url", value),
  },
  {
    flag: "shutdown-timeout",
    option: "shutdownTimeout",
    kind: "integer",
    valueName: "SECONDS",
    min: 0,
    max: 86_400,
    help: "on SIGINT/SIGTERM, exit within this long even if a client never reads",
  },
  {
    flag: "cert",
    option: "cert",
    kind: "text",
    valueName: "FILE",
    help: "TLS certificate chain (PEM); with --key, serve wss://",
    parse: (file) => serverCertificate(file),
  },
  {
    flag: "key",
    option: "key",
    kind: "text",
    valueName: "FILE",
    help: "TLS private key (PEM) for --cert",
    parse: (file) => pemFlag(file, { command: COMMAND, flag: "key" }),
  },
  {
    flag: "auth-secret",
    option: "authSecret",
    kind: "text",
    valueName: "FILE",
    help:
      `require a token signed with the secret in FILE (${MIN_SECRET_BYTES} bytes at least)`,
    parse: (file) => readSecret(file, { command: COMMAND, flag: "auth-secret" }),
  },
  {
    flag: "kick-seconds",
    option: "kickSeconds",
    kind: "integer",
    valueName: "SECONDS",
    min: 0,
    max: 31_536_000,
    help: "how long a name a moderator kicked may not rejoin that room",
  },
  {
    flag: "redis",
    option: "redis",
    kind: "text",
    valueName: "URL",
    help: "share rooms with every instance on this Redis (redis://HOST:PORT)",
    parse(value) {
      let url: URL | undefined;
      try {
        url = new URL(value);
      } catch {
        // Reported below.
      }
      if (
        url && (url.protocol === "redis:" || url.protocol === "rediss:") && url.hostname
      ) {
        return value;
      }
      throw new UsageError(
        `invalid --redis ${
          JSON.stringify(value)
        }: expected redis://HOST[:PORT] or rediss://`,
        COMMAND,
      );
    },
  },
  {
    flag: "redis-prefix",
    option: "redisPrefix",
    kind: "text",
    valueName: "PREFIX",
    help: "what the Redis keys and channels start with",
    parse(value) {
      if (/\s/.test(value)) {
        throw new UsageError("--redis-prefix cannot contain spaces", COMMAND);
      }
      return value;
    },
  },
  {
    flag: "redis-timeout",
    option: "redisTimeout",
    kind: "integer",
    valueName: "MS",
    min: 1,
    max: 600_000,
    help: "a Redis call answered later than this counts as Redis down",
  },
];

/** The origin of an `http://` or `https://` URL a flag gives, or a `UsageError`. */
function httpOrigin(flag: string, value: string): string {
  try {
    const url = new URL(value);
    if (url.protocol === "http:" || url.protocol === "https:") return url.origin;
  } catch {
    // Reported below.
  }
  throw new UsageError(
    `invalid --${flag} ${JSON.stringify(value)}: expected http:// or https:// and a host`,
    COMMAND,
  );
}

/** The default a flag shows in `--help`, from `SERVER_DEFAULTS`. */
function shownDefault(flag: ServerFlag): string | undefined {
  if (flag.kind === "switch" || flag.multiple) return undefined;
  const value = SERVER_DEFAULTS[flag.option as keyof typeof SERVER_DEFAULTS];
  return value === undefined ? undefined : String(value);
}

/** The server command's flags: the source of `chat server --help` and the README table. */
export const SERVER_COMMAND: CommandSpec = {
  name: COMMAND,
  summary: "run the broadcast chat server",
  flags: SERVER_FLAGS.map((flag): FlagSpec => ({
    name: flag.flag,
    type: flag.kind === "switch" ? "boolean" : "string",
    valueName: flag.valueName,
    default: shownDefault(flag),
    multiple: flag.multiple,
    help: flag.help,
  })),
};

/**
 * Turns parsed flags into server options (reading `--cert` and `--key`),
 * or throws a `UsageError`. Flags not given stay `undefined`, so the
 * defaults apply.
 */
export function serverOptions(values: FlagValues): ServerOptions {
  if (values.store !== undefined && values.redis !== undefined) {
    throw new UsageError(
      "--store and --redis do not go together: with --redis, Redis keeps the history",
      COMMAND,
    );
  }
  if ((values.cert === undefined) !== (values.key === undefined)) {
    throw new UsageError("--cert and --key go together: give both or neither", COMMAND);
  }
  const options: Record<string, unknown> = {};
  for (const flag of SERVER_FLAGS) {
    const given = values[flag.flag];
    if (flag.kind === "switch") {
      options[flag.option] = flag.negates ? given !== true : given === true;
      continue;
    }
    if (given === undefined) continue;
    const one = (value: string) =>
      flag.kind === "integer"
        ? integerFlag(value, {
          command: COMMAND,
          flag: flag.flag,
          min: flag.min!,
          max: flag.max!,
        })
        : flag.parse
        ? flag.parse(value)
        : value;
    options[flag.option] = flag.multiple
      ? (given as string[]).map(one)
      : one(given as string);
  }
  return options as ServerOptions;
}

/**
 * Reads `--cert`, refusing a certificate authority's own certificate: TLS
 * clients refuse one as a server's (rustls: `CaUsedAsEndEntity`), and it is
 * what the one-line `openssl req -x509` makes.
 */
function serverCertificate(file: string): string {
  const pem = pemFlag(file, { command: COMMAND, flag: "cert", expected: "CERTIFICATE" });
  let ca = false;
  try {
    ca = new X509Certificate(pem).ca;
  } catch {
    // Unreadable here: Deno.serve says what is wrong with it.
  }
  if (ca) {
    throw new UsageError(
      `--cert ${
        JSON.stringify(file)
      } is a CA certificate (CA:TRUE), which clients refuse from a server: sign a server certificate with it (README: TLS)`,
      COMMAND,
    );
  }
  return pem;
}

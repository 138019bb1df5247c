/**
 * Every refusal the server makes, in one table: for each reason, the HTTP
 * status (for an upgrade refused before it happens) or the close code (for
 * a client closed after), the text the client gets, the metric it counts
 * in, and the log line. `http.ts` answers the first kind through
 * `abortHandshake`, a session the second through `Session.refuse`.
 *
 * @module
 */

import {
  CloseCode,
  CloseReason,
  KICKED,
  plural,
  ROOM_NOT_ALLOWED,
} from "../lib/protocol.ts";
import type { RefusalReason } from "./metrics.ts";
import type { TokenProblem } from "../lib/auth.ts";

/** An upgrade refused with an HTTP status and a one-line body. */
export interface HttpRefusal {
  readonly status: number;
  readonly text: string;
  /** Counted in `chat_refusals_total`, when it is a refusal of a client's doing. */
  readonly metric?: RefusalReason;
  readonly headers?: Readonly<Record<string, string>>;
}

/** A client closed for what it did: close code and reason, metric, log line. */
export interface CloseRefusal {
  readonly code: number;
  readonly reason: string;
  readonly metric: RefusalReason;
  /** Why, for the server's log: `Dropped ADDRESS: LOG`. */
  readonly log: string;
}

/** The refusals, by reason; each builds the refusal from its details. */
export const Refusals = {
  /** A plain request for a path that is no room. */
  notFound: (): HttpRefusal => ({ status: 404, text: "not found" }),
  /** An upgrade while the server shuts down. */
  shuttingDown: (): HttpRefusal => ({
    status: 503,
    text: CloseReason.SHUTTING_DOWN,
    headers: { "retry-after": "5" },
  }),
  /** A browser upgrade from an origin that is not allowed. */
  origin: (origin: string): HttpRefusal => ({
    status: 403,
    text: `origin not allowed: ${origin}`,
    metric: "origin",
  }),
  /** An upgrade to a path that names no room. */
  noRoom: (path: string): HttpRefusal => ({
    status: 400,
    text: `no room at ${JSON.stringify(path)}: use / or /ROOM`,
  }),
  /** A `?name=` that breaks the name rule (or is given twice). */
  badName: (problem: string): HttpRefusal => ({
    status: 400,
    text: problem,
    metric: "bad_name",
  }),
  /** A `?since=` or `?epoch=` a resume cannot use. */
  badResume: (problem: string): HttpRefusal => ({ status: 400, text: problem }),
  /** `--max-clients` reached. */
  full: (maxClients: number): HttpRefusal => ({
    status: 503,
    text: `server full: ${plural(maxClients, "client")}`,
    metric: "max_clients",
    headers: { "retry-after": "10" },
  }),
  /** `--max-clients-per-ip` reached for this address. */
  fullForIp: (ip: string, maxClientsPerIp: number): HttpRefusal => ({
    status: 503,
    text: `too many connections from ${ip}: ${maxClientsPerIp} at most`,
    metric: "max_clients",
    headers: { "retry-after": "10" },
  }),
  /** An upgrade without a token the server accepts (`--auth-secret`). */
  token: (problem: TokenProblem): HttpRefusal => ({
    status: 401,
    text: problem,
    metric: "auth",
    headers: { "www-authenticate": 'Bearer realm="chat"' },
  }),
  /** A token whose `rooms` leave this room out. */
  roomNotAllowed: (): HttpRefusal => ({
    status: 403,
    text: ROOM_NOT_ALLOWED,
    metric: "auth",
  }),
  /** A name a moderator kicked out of the room, within `--kick-seconds`. */
  kicked: (): HttpRefusal => ({ status: 403, text: KICKED, metric: "auth" }),
  /** A `?name=` other than the token's name. */
  notTokenName: (name: string, tokenName: string): HttpRefusal => ({
    status: 400,
    text: `name ${name} is not the token's (${tokenName})`,
    metric: "auth",
  }),
  /** A name someone in the room holds (on any instance). */
  nameTaken: (name: string): HttpRefusal => ({
    status: 409,
    text: `name taken: ${name}`,
    metric: "bad_name",
  }),
  /** A malformed upgrade (RFC 6455, 4.2.1), or one the runtime rejects. */
  badUpgrade: (why: string): HttpRefusal => ({
    status: 400,
    text: `bad WebSocket upgrade: ${why}`,
  }),
  /** An upgrade for a WebSocket version other than 13 (RFC 6455, 4.4). */
  badVersion: (version: string): HttpRefusal => ({
    status: 426,
    text: `bad WebSocket upgrade: version ${
      JSON.stringify(version)
    } is not supported: use 13`,
    headers: { "sec-websocket-version": "13" },
  }),
  /** An upgrade whose `Host` is not this loopback server's: what DNS rebinding sends. */
  host: (host: string): HttpRefusal => ({
    status: 403,
    text: `host not allowed: ${host}`,
    metric: "origin",
  }),

  /** A binary message: the chat is text only. */
  binary: (): CloseRefusal => ({
    code: CloseCode.UNSUPPORTED_DATA,
    reason: CloseReason.TEXT_ONLY,
    metric: "binary",
    log: "binary message",
  }),
  /** A message over `--max-message-bytes`. */
  tooBig: (maxMessageBytes: number): CloseRefusal => ({
    code: CloseCode.MESSAGE_TOO_BIG,
    reason: CloseReason.TOO_BIG,
    metric: "too_big",
    log: `message over ${plural(maxMessageBytes, "byte")}`,
  }),
  /** More messages in the flood window than the flood rule allows. */
  flooding: (limit: number, windowSeconds: number): CloseRefusal => ({
    code: CloseCode.POLICY_VIOLATION,
    reason: CloseReason.FLOODING,
    metric: "rate_limited",
    log: `more than ${plural(limit, "message")} in ${windowSeconds} s`,
  }),
  /** A consumer whose unsent backlog passed `--max-buffered-bytes`. */
  tooSlow: (maxBufferedBytes: number): CloseRefusal => ({
    code: CloseCode.POLICY_VIOLATION,
    reason: CloseReason.TOO_SLOW,
    metric: "slow_consumer",
    log: `slow consumer, over ${plural(maxBufferedBytes, "byte")} unsent`,
  }),
  /** The token's `exp` passed with no fresh token sent (`/token`). */
  tokenExpired: (): CloseRefusal => ({
    code: CloseCode.POLICY_VIOLATION,
    reason: CloseReason.TOKEN_EXPIRED,
    metric: "auth",
    log: CloseReason.TOKEN_EXPIRED,
  }),
  /** A YewChat NICK that breaks the name rule or is taken. */
  badNick: (problem: string): CloseRefusal => ({
    code: CloseCode.POLICY_VIOLATION,
    reason: problem,
    metric: "bad_name",
    log: problem,
  }),
} as const;

/** The text of a refused NICK that someone holds: the same words as the HTTP 409. */
export function nameTakenText(name: string): string {
  return Refusals.nameTaken(name).text;
}

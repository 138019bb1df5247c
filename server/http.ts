/**
 * The chat's HTTP front: the page, `/healthz`, `/readyz`, `/metrics`, and
 * the gate every upgrade passes (shutdown, origin, room, name, capacity)
 * before the chat gets the socket. Every refusal goes through
 * `abortHandshake`, with its text and metric from the refusal table.
 *
 * @module
 */

import {
  EPOCH_PATTERN,
  formatAddress,
  nameProblem,
  type Protocol,
  PROTOCOLS,
  roomFromPath,
} from "../lib/protocol.ts";
import { errorText } from "../lib/errors.ts";
import type { Chat } from "./chat.ts";
import type { Metrics } from "./metrics.ts";
import { chatPage } from "./page.ts";
import { type HttpRefusal, Refusals } from "./refusals.ts";
import type { Resume } from "./room.ts";
import { type Identity, mayJoin, requestToken, verifyToken } from "../lib/auth.ts";

/** What the HTTP front is told (from the server's options). */
export interface HttpOptions {
  /** Origins allowed besides the server's own. */
  allowOrigins: readonly string[];
  /**
   * The URLs browsers reach the server by: when given, a browser's `Origin`
   * must be one of them (or allowed), and `Host` is not trusted for it.
   */
  publicUrls: readonly string[];
  /** The server listens on loopback only: upgrades must name a loopback `Host`. */
  loopback: boolean;
  /** Seconds without a pong before the runtime closes a socket; `0` never. */
  idleTimeout: number;
  /** The largest message, shown by the page as its input's limit. */
  maxMessageBytes: number;
  /** With a secret, every upgrade (and the page's name check) needs a token. */
  authSecret?: Uint8Array;
}

/** Answers one request; mountable in any `Deno.serve` app. */
export type ChatRequestHandler = (
  request: Request,
  info: Deno.ServeHandlerInfo<Deno.NetAddr>,
) => Promise<Response>;

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

/** A one-line plain-text response. */
export function plainResponse(
  status: number,
  text: string,
  headers?: HeadersInit,
): Response {
  const response = new Response(text + "\n", { status, headers });
  response.headers.set("content-type", "text/plain; charset=utf-8");
  return response;
}

/** Every refusal's response: counted, then answered with its status and line. */
export function abortHandshake(metrics: Metrics, refusal: HttpRefusal): Response {
  if (refusal.metric) metrics.refuse(refusal.metric);
  return plainResponse(refusal.status, refusal.text, refusal.headers);
}

/** Reads the optional `name` query parameter: a name, none, or a problem. */
function nameFromQuery(url: URL): { name?: string; problem?: string } {
  const names = url.searchParams.getAll("name");
  if (names.length > 1) return { problem: "repeated name parameter: give one name" };
  if (names.length === 0 || names[0] === "") return {};
  const problem = nameProblem(names[0]);
  return problem ? { problem } : { name: names[0] };
}

/** The subprotocol the server picks of those the upgrade offers, in the server's preference. */
function chosenProtocol(request: Request): Protocol | undefined {
  const offered = (request.headers.get("sec-websocket-protocol") ?? "").split(",")
    .map((p) => p.trim());
  return PROTOCOLS.find((protocol) => offered.includes(protocol));
}

/**
 * Reads a resume's `?since=ID&epoch=EPOCH`: where the client left off,
 * nothing (no `since`), or a problem.
 */
function resumeFromQuery(url: URL): { resume?: Resume; problem?: string } {
  const since = url.searchParams.get("since");
  const epoch = url.searchParams.get("epoch");
  if (since === null) {
    return epoch === null ? {} : { problem: "epoch without since: give both or neither" };
  }
  if (!/^\d{1,15}$/.test(since)) {
    return {
      problem: `since must be a message id (a whole number), not ${
        JSON.stringify(since.slice(0, 40))
      }`,
    };
  }
  if (epoch === null) return { problem: "since without epoch: give both or neither" };
  if (!EPOCH_PATTERN.test(epoch)) {
    return {
      problem: "epoch must be the one the server gave (letters, digits, - and _)",
    };
  }
  return { resume: { since: Number(since), epoch } };
}

function isUpgrade(request: Request): boolean {
  return request.headers.get("upgrade")?.toLowerCase() === "websocket";
}

/** The names a loopback server answers to in `Host`. */
const LOOPBACK_HOSTS = new Set(["127.0.0.1", "localhost", "[::1]"]);

/** True when `hostname` (a listening address) accepts connections from this machine only. */
export function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" || hostname.startsWith("127.");
}

/** The `Host` header's name without its port (`[::1]` keeps its brackets). */
function hostName(host: string): string {
  return host.replace(/:\d*$/, "");
}

/**
 * Why an upgrade breaks RFC 6455's opening handshake (4.2.1), or
 * `undefined`: a GET, version 13, a key of 16 bytes in base64.
 */
function malformedUpgrade(request: Request): HttpRefusal | undefined {
  if (request.method !== "GET") {
    return Refusals.badUpgrade(`method ${request.method}: use GET`);
  }
  const version = request.headers.get("sec-websocket-version") ?? "";
  if (version !== "13") return Refusals.badVersion(version);
  const key = request.headers.get("sec-websocket-key") ?? "";
  if (!/^[A-Za-z0-9+/]{22}==$/.test(key)) {
    return Refusals.badUpgrade("Sec-WebSocket-Key must be 16 bytes in base64");
  }
  return undefined;
}

/**
 * Says why an upgrade's `Origin` is refused, or `undefined` to allow it:
 * allowed are no `Origin` (not a browser), the listed ones, and the
 * server's own: one of the public URLs when given, else the request's
 * `Host` (on a loopback server, checked to be loopback first: DNS
 * rebinding can make any name point there).
 */
function refusedOrigin(
  request: Request,
  origins: { allowed: ReadonlySet<string>; publicOrigins: ReadonlySet<string> },
): string | undefined {
  const origin = request.headers.get("origin");
  if (origin === null) return undefined;
  let parsed: URL | undefined;
  try {
    parsed = new URL(origin);
  } catch {
    // "null" and garbage are refused below.
  }
  if (!parsed) return origin;
  if (origins.allowed.has(parsed.origin) || origins.publicOrigins.has(parsed.origin)) {
    return undefined;
  }
  const sameHost = parsed.host === request.headers.get("host");
  return origins.publicOrigins.size === 0 && sameHost ? undefined : origin;
}

/** The chat's routes and upgrade gate as one request handler. */
export function chatRoutes(chat: Chat, options: HttpOptions): ChatRequestHandler {
  const origins = {
    allowed: new Set(options.allowOrigins.map((o) => new URL(o).origin)),
    publicOrigins: new Set(options.publicUrls.map((u) => new URL(u).origin)),
  };
  const refuse = (refusal: HttpRefusal) => abortHandshake(chat.metrics, refusal);

  /** `/healthz`, `/readyz` and `/metrics`; `undefined` for any other path. */
  function statusResponse(path: string): Response | undefined {
    const backplane = chat.backplane;
    const backplaneState = !backplane.shared ? "none" : backplane.up ? "up" : "down";
    switch (path) {
      case "/healthz":
        // Alive while it serves; the backplane's state is information here.
        return Response.json({
          status: chat.shuttingDown ? "shutting down" : "ok",
          backplane: backplaneState,
        });
      case "/readyz": {
        // Not ready while shutting down, or while the backplane is down.
        const reason = chat.shuttingDown
          ? "shutting down"
          : backplaneState === "down"
          ? "backplane down"
          : undefined;
        return reason
          ? Response.json({ ready: false, reason }, { status: 503 })
          : Response.json({ ready: true });
      }
      case "/metrics":
        return new Response(
          chat.metrics.render({
            clients: chat.members,
            rooms: chat.occupiedRooms,
            backplaneUp: backplane.shared ? backplane.up : undefined,
            logDropped: chat.logDropped,
            historyBytes: chat.historyBytes,
          }),
          { headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" } },
        );
    }
    return undefined;
  }

  /** The identity a request's token carries for `room`, or why it is refused. */
  async function checkToken(
    request: Request,
    url: URL,
    room: string,
  ): Promise<Identity | HttpRefusal | undefined> {
    if (!options.authSecret) return undefined;
    const verified = await verifyToken(requestToken(request, url), options.authSecret);
    if (typeof verified === "string") return Refusals.token(verified);
    return mayJoin(verified, room) ? verified : Refusals.roomNotAllowed();
  }

  /** A request that is not an upgrade: status, the page, or a hint to upgrade. */
  async function plainRequest(request: Request, url: URL): Promise<Response> {
    const reading = request.method === "GET" || request.method === "HEAD";
    const status = reading ? statusResponse(url.pathname) : undefined;
    if (status) return status;
    const room = roomFromPath(url.pathname);
    if (room === undefined) return refuse(Refusals.notFound());
    if (reading) {
      // The page for joining under a name that is taken: the page asks
      // this first, since a browser cannot see a refused upgrade's status.
      const wanted = url.searchParams.get("name");
      if (wanted !== null) {
        const refused = await checkToken(request, url, room);
        if (refused && "status" in refused) {
          return plainResponse(refused.status, refused.text);
        }
      }
      if (wanted && chat.kicked(room, wanted)) {
        return plainResponse(403, Refusals.kicked().text);
      }
      if (wanted && await chat.nameTaken(room, wanted)) {
        return plainResponse(409, Refusals.nameTaken(wanted).text);
      }
      const page = chatPage(room, { maxMessageBytes: options.maxMessageBytes });
      return new Response(page, { headers: PAGE_HEADERS });
    }
    const host = request.headers.get("host") ?? url.host;
    return plainResponse(
      426,
      upgradeHint(`${url.protocol === "https:" ? "wss" : "ws"}://${host}`),
      {
        upgrade: "websocket",
      },
    );
  }

  return async (request, info) => {
    const url = new URL(request.url);
    if (!isUpgrade(request)) return await plainRequest(request, url);
    const malformed = malformedUpgrade(request);
    if (malformed) return refuse(malformed);
    if (chat.shuttingDown) return refuse(Refusals.shuttingDown());
    const host = request.headers.get("host") ?? "";
    if (options.loopback && !LOOPBACK_HOSTS.has(hostName(host))) {
      return refuse(Refusals.host(host));
    }
    const origin = refusedOrigin(request, origins);
    if (origin !== undefined) return refuse(Refusals.origin(origin));
    const room = roomFromPath(url.pathname);
    if (room === undefined) return refuse(Refusals.noRoom(url.pathname));
    const { name, problem } = nameFromQuery(url);
    if (problem) return refuse(Refusals.badName(problem));
    const identity = await checkToken(request, url, room);
    if (identity && "status" in identity) return refuse(identity);
    if (identity && name !== undefined && name !== identity.name) {
      return refuse(Refusals.notTokenName(name, identity.name));
    }
    const { resume, problem: resumeProblem } = resumeFromQuery(url);
    if (resumeProblem) return refuse(Refusals.badResume(resumeProblem));
    const protocol = chosenProtocol(request);
    // Read before the upgrade: afterwards the request is closed and so is `info`.
    const address = formatAddress(info.remoteAddr.hostname, info.remoteAddr.port);
    const reservation = await chat.reserve({
      room,
      name,
      address,
      protocol,
      identity,
      resume,
    });
    if ("status" in reservation) return refuse(reservation);
    let upgrade: Deno.WebSocketUpgrade;
    try {
      upgrade = Deno.upgradeWebSocket(request, {
        idleTimeout: options.idleTimeout,
        protocol: reservation.protocol,
      });
    } catch (error) {
      chat.cancel(reservation);
      return refuse(Refusals.badUpgrade(errorText(error)));
    }
    chat.attach(reservation, upgrade.socket);
    return upgrade.response;
  };
}

/**
 * Signed tokens: who may join, under which name, in which rooms. A token is
 * a JWT signed with HS256 under a shared secret (`--auth-secret`); the
 * server verifies it, `chat token` mints it. Signatures are made and
 * checked by `jose`; only HS256 is accepted (never `alg: none`).
 *
 * Claims: `sub` (the name, required), `exp` (seconds since the epoch,
 * required), `rooms` (room names, or `"*"`/absent for any), `admin`.
 *
 * @module
 */

import { errors, jwtVerify, SignJWT } from "jose";
import { nameProblem } from "./protocol.ts";
import { fileFlag, type FlagSource, UsageError } from "./flags.ts";

/** The shortest secret accepted, in bytes. */
export const MIN_SECRET_BYTES = 32;

/** The one algorithm tokens are signed with. */
const ALGORITHM = "HS256";

/** Who a valid token says its holder is. */
export interface Identity {
  /** The name the holder chats under: the token's `sub`. */
  name: string;
  /** The rooms it may join; `"*"` for any. */
  rooms: "*" | readonly string[];
  /** A moderator. */
  admin: boolean;
  /** When the token expires, in milliseconds since the epoch. */
  expires: number;
}

/** Why a token was not accepted: the body of the 401. */
export type TokenProblem = "token missing" | "token invalid" | "token expired";

/** The secret a file holds (a final newline is not part of it). */
export function readSecret(file: string, source: FlagSource): Uint8Array {
  const bytes = fileFlag(file, source);
  let end = bytes.length;
  if (bytes[end - 1] === 0x0a) end--;
  if (bytes[end - 1] === 0x0d) end--;
  const secret = bytes.subarray(0, end);
  if (secret.length < MIN_SECRET_BYTES) {
    throw new UsageError(
      `--${source.flag} ${
        JSON.stringify(file)
      } holds ${secret.length} bytes: a secret needs at least ${MIN_SECRET_BYTES} (e.g. openssl rand -base64 48 > ${file})`,
      source.command,
    );
  }
  return secret;
}

/** Verifies a token: the identity it carries, or why it is refused. */
export async function verifyToken(
  token: string | undefined,
  secret: Uint8Array,
): Promise<Identity | TokenProblem> {
  if (!token) return "token missing";
  try {
    const { payload } = await jwtVerify(token, secret, {
      algorithms: [ALGORITHM],
      requiredClaims: ["sub", "exp"],
    });
    const name = payload.sub;
    if (typeof name !== "string" || nameProblem(name)) return "token invalid";
    const rooms = payload.rooms;
    let allowed: Identity["rooms"];
    if (rooms === undefined || rooms === "*") allowed = "*";
    else if (Array.isArray(rooms) && rooms.every((room) => typeof room === "string")) {
      allowed = rooms.includes("*") ? "*" : rooms;
    } else return "token invalid";
    return {
      name,
      rooms: allowed,
      admin: payload.admin === true,
      expires: payload.exp! * 1000,
    };
  } catch (error) {
    return error instanceof errors.JWTExpired ? "token expired" : "token invalid";
  }
}

/** True when `identity` may join `room` (`""` is the default room). */
export function mayJoin(identity: Identity, room: string): boolean {
  return identity.rooms === "*" || identity.rooms.includes(room);
}

/** What `chat token` puts in a token. */
export interface TokenClaims {
  name: string;
  /** Rooms it may join; absent for any. */
  rooms?: readonly string[];
  /** Seconds it is valid for. */
  ttlSeconds: number;
  admin?: boolean;
}

/** Signs a token with `secret`. */
export async function mintToken(
  claims: TokenClaims,
  secret: Uint8Array,
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return await new SignJWT({
    ...(claims.rooms ? { rooms: claims.rooms } : {}),
    ...(claims.admin ? { admin: true } : {}),
  })
    .setProtectedHeader({ alg: ALGORITHM, typ: "JWT" })
    .setSubject(claims.name)
    .setIssuedAt(now)
    .setExpirationTime(now + claims.ttlSeconds)
    .sign(secret);
}

const TTL_UNITS: Record<string, number> = { "": 1, s: 1, m: 60, h: 3600, d: 86_400 };

/** Seconds from `90`, `90s`, `30m`, `12h` or `7d`; `undefined` for anything else. */
export function parseTtl(text: string): number | undefined {
  const match = /^(\d+)([smhd]?)$/.exec(text.trim());
  if (!match) return undefined;
  const seconds = Number(match[1]) * TTL_UNITS[match[2]];
  return seconds > 0 && Number.isSafeInteger(seconds) ? seconds : undefined;
}

/** The token an upgrade carries: `Authorization: Bearer TOKEN`, or `?token=`. */
export function requestToken(request: Request, url: URL): string | undefined {
  const header = request.headers.get("authorization");
  const bearer = header?.match(/^Bearer\s+(\S+)\s*$/i)?.[1];
  return bearer ?? url.searchParams.get("token") ?? undefined;
}

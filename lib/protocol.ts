/**
 * The wire contract shared by the server, the client and the tests: message
 * texts, close codes, the name rule and the form of a chat line. Scripts and
 * other clients depend on these strings, so each lives here once.
 *
 * @module
 */

/** The first message every client receives, to itself only. */
export const WELCOME = "Welcome to chat! Type a message";

/** WebSocket close codes the chat uses (RFC 6455, section 7.4.1). */
export const CloseCode = {
  /** Normal closure: the client is done (stdin ended). */
  NORMAL: 1000,
  /** Going away: the server is shutting down, or the peer stopped answering pings. */
  GOING_AWAY: 1001,
  /** The client sent a binary message; the chat is text only. */
  UNSUPPORTED_DATA: 1003,
  /** No close frame was received (reported by clients, never sent). */
  ABNORMAL: 1006,
  /** Policy violation: flooding, or a consumer too slow to keep up. */
  POLICY_VIOLATION: 1008,
  /** A message larger than the server accepts. */
  MESSAGE_TOO_BIG: 1009,
  /** The server hit an unexpected error handling this connection. */
  INTERNAL_ERROR: 1011,
  /** A moderator removed the client from the room (`/kick`). */
  KICKED: 4001,
} as const;

/** Close reasons sent with the codes above. */
export const CloseReason = {
  SHUTTING_DOWN: "server shutting down",
  TEXT_ONLY: "text only",
  TOO_BIG: "message too big",
  FLOODING: "flooding",
  TOO_SLOW: "too slow",
  INTERNAL_ERROR: "internal error",
  TOKEN_EXPIRED: "token expired",
} as const;

/** What a kicked name is told: the 403 body, and the close reason (without a reason given). */
export const KICKED = "kicked";

/** A token's `rooms` leave this room out: the 403 body, and a refused `/token`'s reason. */
export const ROOM_NOT_ALLOWED = "room not allowed";

/** The longest close reason RFC 6455 allows, in UTF-8 bytes (a close frame's payload is 125). */
export const MAX_CLOSE_REASON_BYTES = 123;

/** `reason` cut to `MAX_CLOSE_REASON_BYTES` at a character boundary, so a close never fails. */
export function closeReason(reason: string): string {
  const bytes = new TextEncoder().encode(reason);
  if (bytes.length <= MAX_CLOSE_REASON_BYTES) return reason;
  let end = MAX_CLOSE_REASON_BYTES;
  // Back up over continuation bytes (10xxxxxx) to the start of a character.
  while ((bytes[end] & 0xc0) === 0x80) end--;
  return new TextDecoder().decode(bytes.subarray(0, end));
}

/** The key a name is held under: names are unique in a room whatever their case. */
export function nameKey(name: string): string {
  return name.toLowerCase();
}

/** `1 line`, `2 lines`: a count and its noun, singular or plural as it needs. */
export function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

/** The answer to `/token` when the new token is accepted: its expiry, to the second. */
export function tokenRenewedNotice(expires: number): string {
  return `* token renewed until ${
    new Date(expires).toISOString().replace(/\.\d{3}Z$/, "Z")
  }`;
}

/** The answer to `/token` when the new token is not accepted. */
export function tokenRefusedNotice(reason: string): string {
  return `* token refused: ${reason}`;
}

/** What a sender alone is told, at most once a second, when it is over the rate limit. */
export function rateLimitNotice(perSecond: number): string {
  return `* rate limit: ${plural(perSecond, "message")} per second`;
}

/** The same for the byte rate, which counts each message once per recipient. */
export function byteRateNotice(bytesPerSecond: number): string {
  return `* rate limit: ${plural(bytesPerSecond, "byte")} per second (size x recipients)`;
}

/** The longest name a client may take. */
export const MAX_NAME_LENGTH = 32;

/** The name rule as a pattern (the length is checked apart, for a clearer message). */
// `\-`, not a bare `-`: browsers read a name box's pattern with the `v` flag.
export const NAME_PATTERN = /^[A-Za-z0-9_.\-]+$/;

/** The name rule in words, for error messages and help texts. */
export const NAME_RULE = `1 to ${MAX_NAME_LENGTH} ASCII letters, digits, '_', '-' or '.'`;

/**
 * Says what is wrong with a name, or returns `undefined` when it is valid.
 *
 * A name is 1 to 32 ASCII letters, digits, `_`, `-` or `.`.
 */
export function nameProblem(name: string): string | undefined {
  if (name.length === 0) return "name is empty";
  if (name.length > MAX_NAME_LENGTH) {
    return `name is longer than ${MAX_NAME_LENGTH} characters`;
  }
  if (!NAME_PATTERN.test(name)) {
    return `invalid name ${JSON.stringify(name)}: use ${NAME_RULE}`;
  }
  return undefined;
}

/** `IP:PORT`, with an IPv6 address in brackets (`[::1]:5555`). */
export function formatAddress(hostname: string, port: number): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}

/** The line every member receives for a chat message: `SENDER: TEXT`. */
export function chatLine(sender: string, text: string): string {
  return `${sender}: ${text}`;
}

/** Paths that are never rooms. */
export const RESERVED_PATHS = ["healthz", "readyz", "metrics", "favicon.ico"] as const;

/**
 * The room a URL path names: `/` is the default room (`""`), `/rust` the room
 * `rust` (a room name follows the name rule). Any other path names no room:
 * `undefined`.
 */
export function roomFromPath(pathname: string): string | undefined {
  if (pathname === "/") return "";
  const name = pathname.slice(1);
  if (!pathname.startsWith("/") || nameProblem(name) !== undefined) return undefined;
  // Matched in any case: `/HEALTHZ` is no room either.
  return (RESERVED_PATHS as readonly string[]).includes(name.toLowerCase())
    ? undefined
    : name;
}

/** Why `room` cannot name a room (`""` is the main room); `undefined` when it can. */
export function roomProblem(room: string): string | undefined {
  if (roomFromPath(`/${room}`) !== undefined) return undefined;
  return `use ${NAME_RULE}, not ${RESERVED_PATHS.join(", ")}`;
}

/**
 * Rooms of up to this many clients announce joins and leaves, by default
 * (`--presence-limit`): beyond it, each join would be a frame to everyone.
 */
export const PRESENCE_LIMIT = 200;

/** To the others when someone joins a room (the page fills in a template of it). */
export function joinedNotice(name: string, online: number | string): string {
  return `* ${name} joined (${online} online)`;
}

/** To the others when someone leaves a room. */
export function leftNotice(name: string, online: number | string): string {
  return `* ${name} left (${online} online)`;
}

/** Matches `joinedNotice` and `leftNotice` lines: the name, `joined` or `left`, the count. */
export const PRESENCE_PATTERN = /^\* (\S+) (joined|left) \((\d+) online\)$/;

/** What the answer to `/who` starts with. */
export const WHO_PREFIX = "* online (";

/** The answer to `/who`. */
export function whoLine(names: readonly string[]): string {
  return `${WHO_PREFIX}${names.length}): ${names.join(", ")}`;
}

/** To every member of this instance when the backplane goes, and to each joining while it is gone. */
export const BACKPLANE_DOWN =
  "* backplane down: messages reach only this server's members until it is back";

/** To a room's members here when events from other instances were lost on the way. */
export const MESSAGES_LOST = "* some messages from other servers were lost";

/** To every member of this instance when the backplane is back. */
export const BACKPLANE_BACK = "* backplane back: messages reach every server again";

/** The answer to `/help`. */
export const HELP_LINE =
  "* commands: /who (who is online), /help (this list), /token TOKEN (renew), /kick NAME [REASON] and /mute NAME SECONDS (moderators); start a message with // to send one that starts with /";

/** The answer to `/kick` or `/mute` from someone who is not a moderator. */
export const NOT_ALLOWED = "* not allowed";

/** The answer to a `/kick` or `/mute` that is not written as it should be. */
export function moderationUsage(command: "/kick" | "/mute"): string {
  return command === "/kick"
    ? "* usage: /kick NAME [REASON]"
    : "* usage: /mute NAME SECONDS";
}

/** The close reason of a kicked client: `kicked`, or `kicked: REASON`. */
export function kickedReason(reason: string): string {
  return reason ? `${KICKED}: ${reason}` : KICKED;
}

/** To the rest of the room when a moderator kicked someone. */
export function kickedNotice(name: string, by: string): string {
  return `* ${name} was kicked by ${by}`;
}

/** To a muted client, when muted and when it sends meanwhile. */
export function mutedNotice(seconds: number): string {
  return `* you are muted for ${seconds} s`;
}

/** The answer to a command the server does not know. */
export function unknownCommandLine(command: string): string {
  return `* unknown command ${command}: try /help`;
}

/**
 * The `data` of a YewChat frame of the given type: `register` carries the
 * NICK (`{"messageType":"register","data":"NICK"}`), `message` the text
 * (`{"messageType":"message","data":"TEXT"}`). `undefined` for anything else.
 */
export function parseYew(text: string, type: "register" | "message"): string | undefined {
  try {
    const frame = JSON.parse(text);
    if (frame?.messageType === type && typeof frame.data === "string") return frame.data;
  } catch {
    // Not JSON: not a YewChat frame.
  }
  return undefined;
}

/** A chat message for a YewChat client; `data` is itself a JSON string, as that front end expects. */
export function yewMessage(
  message: { from: string; text: string; time: number },
): string {
  return JSON.stringify({
    messageType: "message",
    data: JSON.stringify({
      from: message.from,
      message: message.text,
      time: message.time,
    }),
  });
}

/** The room's members for a YewChat client. */
export function yewUsers(names: readonly string[]): string {
  return JSON.stringify({ messageType: "users", dataArray: names });
}

/** How long a client without a name has to say whether it speaks YewChat. */
export const REGISTER_WAIT_MS = 500;

/**
 * The opt-in subprotocol in which one server frame may carry several
 * messages, separated by `BATCH_SEPARATOR`. Clients offer it in
 * `Sec-WebSocket-Protocol`; without it, one message is one frame.
 */
export const BATCH_PROTOCOL = "chat.batch";

/**
 * The opt-in structured subprotocol: every server frame is a JSON array of
 * one or more events (`welcome`, `message`, `joined`, `left`, `notice`,
 * `recovered`, `duplicate`, `accepted`, `refused`), and a client may send
 * `{"type":"message","text":"...","ref":"..."}` besides plain lines.
 */
export const JSON_PROTOCOL = "chat.json";

/** The subprotocols the server speaks, in the order it prefers them. */
export const PROTOCOLS = [JSON_PROTOCOL, BATCH_PROTOCOL] as const;
export type Protocol = typeof PROTOCOLS[number];

/** A message's `ref`: chosen by its sender, so that it is delivered once. */
export const REF_PATTERN = /^[\x20-\x7e]{1,64}$/;
export const REF_RULE = "a ref is 1 to 64 printable ASCII characters";

/** What a room's epoch looks like (the server makes them; a resume must send one back). */
export const EPOCH_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

/** Why a `chat.json` message was not delivered (`refused` events). */
export type RefusedReason = "rate_limited" | "muted" | "invalid";

/** What a plain client is told when a resume could not send everything it missed. */
export function recoveryNotice(missed: number | string | null): string {
  return `* some messages could not be recovered (${
    missed === null ? "history lost" : `${missed} missed`
  })`;
}

/** A `chat.json` frame that is not a message object, or a bad ref. */
export function badJsonNotice(problem: string): string {
  return `* not sent: ${problem}`;
}

/**
 * U+001E, ASCII's record separator (the one RFC 7464 uses between JSON
 * texts). The server accepts no message that contains it, so it can never
 * occur inside a message.
 */
export const BATCH_SEPARATOR = "\x1e";

/** What the sender of a message containing `BATCH_SEPARATOR` is told; it is not broadcast. */
export const SEPARATOR_REFUSED =
  "* not sent: messages cannot contain U+001E (record separator)";

/**
 * Codecs: how one kind of client speaks. Each decodes the frames its
 * clients send and encodes the room's events for them; a room encodes an
 * event once per codec, never once per member. Nothing outside this file
 * asks which codec a client speaks.
 *
 * - `PLAIN`: text lines. A frame is a message (`//` escapes a leading `/`)
 *   or a `/command`; the server sends `SENDER: TEXT` lines and notices
 *   starting with `* `. `chat.batch` clients speak it too: batching is the
 *   outbox's business, not the codec's.
 * - `YEW`: the YewChat front end's JSON. It carries chat messages and user
 *   lists only: no notices, no commands, no history.
 * - `JSON`: the `chat.json` subprotocol: every event an object with a
 *   `type`, every frame an array of them (a turn's events go as one array).
 *
 * @module
 */

import {
  BATCH_PROTOCOL,
  BATCH_SEPARATOR,
  chatLine,
  joinedNotice,
  JSON_PROTOCOL,
  leftNotice,
  parseYew,
  type Protocol,
  recoveryNotice,
  REF_PATTERN,
  REF_RULE,
  type RefusedReason,
  WELCOME,
  yewMessage,
  yewUsers,
} from "../lib/protocol.ts";
import { utf8Length } from "./admission.ts";

/** One chat message, before it is encoded for anyone. */
export interface ChatMessage {
  from: string;
  text: string;
  /** When the server accepted it, in milliseconds since the epoch. */
  time: number;
  /**
   * Its place in the room: 1, 2, 3, ...; absent for a message delivered
   * while the shared backplane was down (it reached this instance only).
   */
  id?: number;
  /** The sender's own reference, which makes a resent message a duplicate. */
  ref?: string;
}

/** What a client is told first: where it is and how far the room's messages go. */
export interface Welcome {
  room: string;
  name: string;
  /** The room's history epoch (see `Room.epoch`). */
  epoch: string;
  /** The id of the room's latest message (0 for none). */
  last: number;
}

/** An encoded frame and its UTF-8 length, computed once for every recipient. */
export interface Frame {
  readonly text: string;
  readonly bytes: number;
}

/** What a client's frame asks for. */
export type Input =
  | { kind: "message"; text: string; ref?: string }
  | { kind: "command"; line: string }
  | { kind: "invalid"; problem: string }
  | { kind: "nothing" };

/** One way of speaking to clients. */
export interface Codec {
  /** A small number that tells codecs apart: a room caches one frame per codec by it. */
  readonly slot: number;
  /** True when its clients get the member list on every join and leave. */
  readonly listsMembers: boolean;
  /** What an admitted frame from a client asks for. */
  decode(data: string): Input;
  /** The first frame a client gets; `undefined` when this codec has none. */
  welcome(welcome: Welcome): Frame | undefined;
  /** A chat message. */
  message(message: ChatMessage): Frame;
  /** A notice or a command's answer; `undefined` when this codec carries none. */
  notice(text: string): Frame | undefined;
  /** Someone joined or left; `online` are in the room now. */
  presence(kind: "joined" | "left", name: string, online: number): Frame | undefined;
  /** The room's member list; `undefined` when this codec carries none. */
  users(names: readonly string[]): Frame | undefined;
  /** A newcomer's recent messages, oldest first (none for a codec that shows only live ones). */
  recent(messages: readonly ChatMessage[]): Frame[];
  /**
   * How a resume went: `missed` messages could not be sent (`null`: the
   * room's history was lost); `undefined` when there is nothing to say.
   */
  recovered(missed: number | null): Frame | undefined;
  /** To the sender of a message with a ref: already delivered, or delivered (without echo). */
  receipt(type: "duplicate" | "accepted", ref: string): Frame | undefined;
  /** To the sender: its message was not delivered, and when it may try again. */
  refused(
    ref: string | undefined,
    reason: RefusedReason,
    retryMs?: number,
  ): Frame | undefined;
}

function frame(text: string): Frame {
  return { text, bytes: utf8Length(text) };
}

/** Text lines: the chat's own protocol, and the page's. */
export const PLAIN: Codec = {
  slot: 0,
  listsMembers: false,
  decode(data) {
    if (data.startsWith("//")) return { kind: "message", text: data.slice(1) };
    if (data.startsWith("/")) return { kind: "command", line: data };
    return { kind: "message", text: data };
  },
  welcome: () => frame(WELCOME),
  message: (message) => frame(chatLine(message.from, message.text)),
  notice: frame,
  presence: (kind, name, online) =>
    frame(kind === "joined" ? joinedNotice(name, online) : leftNotice(name, online)),
  users: () => undefined,
  recent: (messages) => messages.map((message) => PLAIN.message(message)),
  recovered: (missed) => missed === 0 ? undefined : frame(recoveryNotice(missed)),
  receipt: () => undefined,
  // The reason goes as a notice of its own (at most one a second).
  refused: () => undefined,
};

/** The YewChat front end's JSON frames; its messages are never commands. */
export const YEW: Codec = {
  slot: 1,
  listsMembers: true,
  decode(data) {
    const text = parseYew(data, "message");
    return text === undefined ? { kind: "nothing" } : { kind: "message", text };
  },
  welcome: () => undefined,
  message: (message) => frame(yewMessage(message)),
  notice: () => undefined,
  presence: () => undefined,
  users: (names) => frame(yewUsers(names)),
  recent: () => [],
  recovered: () => undefined,
  receipt: () => undefined,
  refused: () => undefined,
};

/** One `chat.json` event as a frame of its own: an array of one. */
function event(value: Record<string, unknown>): Frame {
  return frame(`[${JSON.stringify(value)}]`);
}

/** A `chat.json` frame from a client that is not a message object. */
const NOT_A_MESSAGE = 'expected {"type":"message","text":"...","ref":"..."}';

/** The `chat.json` subprotocol's events, for programs, the terminal client and the page. */
export const JSON_EVENTS: Codec = {
  slot: 2,
  listsMembers: false,
  decode(data) {
    // Anything but an object is a line, as plain clients send them.
    if (!data.startsWith("{")) return PLAIN.decode(data);
    let value: { type?: unknown; text?: unknown; ref?: unknown };
    try {
      value = JSON.parse(data);
    } catch {
      return { kind: "invalid", problem: NOT_A_MESSAGE };
    }
    if (value?.type !== "message" || typeof value.text !== "string") {
      return { kind: "invalid", problem: NOT_A_MESSAGE };
    }
    const ref = value.ref ?? undefined;
    if (ref !== undefined && (typeof ref !== "string" || !REF_PATTERN.test(ref))) {
      return { kind: "invalid", problem: REF_RULE };
    }
    return { kind: "message", text: value.text, ref };
  },
  welcome: (welcome) => event({ type: "welcome", ...welcome }),
  message: (message) =>
    event({
      type: "message",
      id: message.id ?? null,
      from: message.from,
      text: message.text,
      time: message.time,
      ref: message.ref ?? null,
    }),
  // Plain clients see notices as `* TEXT` lines; here the type says it.
  notice: (text) => event({ type: "notice", text: text.replace(/^\* /, "") }),
  presence: (type, name, online) => event({ type, name, online }),
  users: () => undefined,
  recent: (messages) => messages.map((message) => JSON_EVENTS.message(message)),
  recovered: (missed) => event({ type: "recovered", complete: missed === 0, missed }),
  receipt: (type, ref) => event({ type, ref }),
  refused: (ref, reason, retryMs) =>
    event({
      type: "refused",
      ref: ref ?? null,
      reason,
      ...(retryMs === undefined ? {} : { retry_ms: Math.ceil(retryMs) }),
    }),
};

/** How many codecs there are: the size of a per-codec cache. */
export const CODEC_SLOTS = 3;

/** Joins one turn's frames for a client of a batching subprotocol into one frame. */
export type Batcher = (frames: readonly string[]) => string;

/** How each subprotocol joins a turn's frames. */
export const BATCHERS: Record<Protocol, Batcher> = {
  // Plain frames, separated by `BATCH_SEPARATOR`.
  [BATCH_PROTOCOL]: (frames) => frames.join(BATCH_SEPARATOR),
  // The events of every frame (each an array) in one array.
  [JSON_PROTOCOL]: (frames) => {
    let events = "";
    for (const frame of frames) {
      events += (events === "" ? "" : ",") + frame.slice(1, -1);
    }
    return `[${events}]`;
  },
};

/**
 * The first frame of a client that gave no name decides how it speaks: a
 * YewChat `register` makes it a YewChat client under that NICK; anything
 * else leaves it plain.
 */
export function registration(data: string): { codec: Codec; nick: string } | undefined {
  const nick = parseYew(data, "register");
  return nick === undefined ? undefined : { codec: YEW, nick };
}

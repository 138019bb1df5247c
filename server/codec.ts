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
 *
 * @module
 */

import { chatLine, parseYew, yewMessage, yewUsers } from "../lib/protocol.ts";
import { utf8Length } from "./admission.ts";

/** One chat message, before it is encoded for anyone. */
export interface ChatMessage {
  from: string;
  text: string;
  /** When the server accepted it, in milliseconds since the epoch. */
  time: number;
}

/** An encoded frame and its UTF-8 length, computed once for every recipient. */
export interface Frame {
  readonly text: string;
  readonly bytes: number;
}

/** What a client's frame asks for. */
export type Input =
  | { kind: "message"; text: string }
  | { kind: "command"; line: string }
  | { kind: "nothing" };

/** One way of speaking to clients. */
export interface Codec {
  /** A small number that tells codecs apart: a room caches one frame per codec by it. */
  readonly slot: number;
  /** True when its clients get the member list on every join and leave. */
  readonly listsMembers: boolean;
  /** What an admitted frame from a client asks for. */
  decode(data: string): Input;
  /** A chat message. */
  message(message: ChatMessage): Frame;
  /** A notice or a command's answer; `undefined` when this codec carries none. */
  notice(text: string): Frame | undefined;
  /** The room's member list; `undefined` when this codec carries none. */
  users(names: readonly string[]): Frame | undefined;
  /** A newcomer's recent messages, oldest first (none for a codec that shows only live ones). */
  recent(messages: readonly ChatMessage[]): Frame[];
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
  message: (message) => frame(chatLine(message.from, message.text)),
  notice: frame,
  users: () => undefined,
  recent: (messages) => messages.map((message) => PLAIN.message(message)),
};

/** The YewChat front end's JSON frames; its messages are never commands. */
export const YEW: Codec = {
  slot: 1,
  listsMembers: true,
  decode(data) {
    const text = parseYew(data, "message");
    return text === undefined ? { kind: "nothing" } : { kind: "message", text };
  },
  message: (message) => frame(yewMessage(message)),
  notice: () => undefined,
  users: (names) => frame(yewUsers(names)),
  recent: () => [],
};

/** How many codecs there are: the size of a per-codec cache. */
export const CODEC_SLOTS = 2;

/**
 * The first frame of a client that gave no name decides how it speaks: a
 * YewChat `register` makes it a YewChat client under that NICK; anything
 * else leaves it plain.
 */
export function registration(data: string): { codec: Codec; nick: string } | undefined {
  const nick = parseYew(data, "register");
  return nick === undefined ? undefined : { codec: YEW, nick };
}

/**
 * Rooms' recent messages, within one byte budget for all rooms together:
 * each room keeps its last `--history-keep` messages (with their ids and
 * refs, for resumes and duplicates; newcomers get the last `--history`),
 * and when all rooms' history passes `--history-bytes`, the oldest messages
 * of the largest rooms go first, until the total is back under nine tenths
 * of the budget.
 *
 * @module
 */

import type { ChatMessage } from "./codec.ts";
import { utf8Length } from "./admission.ts";

/** What a held message is counted as beyond its text and sender: the object around them. */
export const MESSAGE_OVERHEAD_BYTES = 64;

/** The bytes a held message counts for in the budget. */
export function heldBytes(message: ChatMessage): number {
  return utf8Length(message.text) + utf8Length(message.from) +
    (message.ref?.length ?? 0) + MESSAGE_OVERHEAD_BYTES;
}

/**
 * A held text this long or longer (UTF-16 code units) is kept as UTF-8
 * bytes, off the JavaScript heap. A held message outlives the young
 * generation's collections, which copy whatever survives them: with 4 KiB
 * messages each such collection copied megabytes and stopped the server
 * for 10–16 ms. The bytes of an `ArrayBuffer` are not copied; a short text
 * costs less as itself.
 */
export const OFF_HEAP_TEXT_LENGTH = 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** `message` as a history keeps it: a long text as its bytes, read back as it was. */
function held(message: ChatMessage): ChatMessage {
  if (message.text.length < OFF_HEAP_TEXT_LENGTH) return message;
  const bytes = encoder.encode(message.text);
  // In the text's place (the order of its keys, enumerable): copies and JSON
  // carry it as they did the text.
  return Object.defineProperty({ ...message }, "text", {
    get: () => decoder.decode(bytes),
    enumerable: true,
  }) as ChatMessage;
}

/** One room's recent messages, oldest first. */
export class History {
  readonly #messages: ChatMessage[] = [];
  readonly #sizes: number[] = [];
  /** The refs of the messages held, each once (see `hasRef`). */
  readonly #refs = new Set<string>();
  #bytes = 0;

  constructor(
    /** Messages kept at most; `0` keeps none. */
    readonly limit: number,
    readonly budget: HistoryBudget,
  ) {}

  /** The bytes it holds, as the budget counts them. */
  get bytes(): number {
    return this.#bytes;
  }

  /** The messages, oldest first. */
  get messages(): readonly ChatMessage[] {
    return this.#messages;
  }

  /** True when a held message carries `ref`: a message with it again is a duplicate. */
  hasRef(ref: string): boolean {
    return this.#refs.has(ref);
  }

  /** Keeps a message (dropping the oldest past the limit), within the budget. */
  add(message: ChatMessage): void {
    if (this.limit === 0) return;
    const size = heldBytes(message);
    if (message.ref !== undefined) this.#refs.add(message.ref);
    this.#messages.push(held(message));
    this.#sizes.push(size);
    this.#bytes += size;
    if (this.#messages.length > this.limit) this.dropOldest();
    this.budget.grew(this, size);
  }

  /** Drops the oldest message; returns the bytes it freed. */
  dropOldest(): number {
    const ref = this.#messages.shift()?.ref;
    if (ref !== undefined) this.#refs.delete(ref);
    const size = this.#sizes.shift() ?? 0;
    this.#bytes -= size;
    this.budget.shrank(this, size);
    return size;
  }

  /** Drops every message (the room is gone). */
  clear(): void {
    while (this.#messages.length > 0) this.dropOldest();
  }
}

/** The byte budget all rooms' histories share. */
export class HistoryBudget {
  #total = 0;
  /** Histories holding something. */
  readonly #histories = new Set<History>();

  constructor(
    /** The bytes all histories may hold together. */
    readonly limit: number,
  ) {}

  /** The bytes all histories hold. */
  get total(): number {
    return this.#total;
  }

  /** `history` grew by `bytes`; past the limit, the largest give some back. */
  grew(history: History, bytes: number): void {
    this.#histories.add(history);
    this.#total += bytes;
    if (this.#total > this.limit) this.#trim();
  }

  /** `history` shrank by `bytes`. */
  shrank(history: History, bytes: number): void {
    this.#total -= bytes;
    if (history.bytes === 0) this.#histories.delete(history);
  }

  /**
   * Levels the largest histories down until the total is under nine tenths
   * of the limit: one sort, then the oldest messages of every history
   * above the level go.
   */
  #trim(): void {
    const target = Math.floor(this.limit * 0.9);
    const largest = [...this.#histories].sort((a, b) => b.bytes - a.bytes);
    // The level: the largest size such that cutting every history to it frees enough.
    let excess = this.#total - target;
    let level = 0;
    for (let i = 0; i < largest.length; i++) {
      const next = largest[i + 1]?.bytes ?? 0;
      const cut = (largest[i].bytes - next) * (i + 1);
      if (cut >= excess) {
        level = largest[i].bytes - Math.ceil(excess / (i + 1));
        break;
      }
      excess -= cut;
    }
    for (const history of largest) {
      if (history.bytes <= level) break;
      while (history.bytes > level && this.#total > target) history.dropOldest();
    }
  }
}

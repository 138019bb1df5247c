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

/** The bytes a held message counts for in the budget (`textBytes`: its text's UTF-8 length, if known). */
export function heldBytes(
  message: ChatMessage,
  textBytes: number = utf8Length(message.text),
): number {
  return textBytes + utf8Length(message.from) + (message.ref?.length ?? 0) +
    MESSAGE_OVERHEAD_BYTES;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * The smallest buffer for texts, in bytes; a new one is as large as the
 * texts held (up to `MAX_CHUNK_BYTES`), so that in a steady room the
 * buffers stay within about twice what they hold (see `#compact`).
 */
export const FIRST_CHUNK_BYTES = 1024;
/** The largest buffer for texts (a longer text gets one of its own size). */
const MAX_CHUNK_BYTES = 65_536;
/**
 * What a history's buffers may hold beyond twice its texts before they are
 * compacted into one (see `#compact`).
 */
export const BUFFER_SLACK_BYTES = 2 * FIRST_CHUNK_BYTES;
/** Where the first text goes before a history has a buffer (an empty one fits). */
const NO_BUFFER = new Uint8Array(0);
/** A history's first number of places for messages; it doubles as it fills, up to its limit. */
const FIRST_SLOTS = 16;

/**
 * One room's recent messages, oldest first, with no object per message:
 * texts as UTF-8 in a few buffers, numbers in typed arrays, all in a ring
 * of places (the oldest goes by moving where the ring starts); a message
 * is made again when it is read (a newcomer's recent messages, a resume).
 * Held objects would outlive the young generation's collections, which
 * copy what survives them: a busy room's history kept the collector busy
 * and paused the server (see docs/performance.md, "What the tail was").
 * A buffer lives as long as the newest message in it.
 */
export class History {
  /** Places for messages; the oldest at `#head`, `#count` of them, in order around the ring. */
  #slots = 0;
  #head = 0;
  #count = 0;
  /** Each message's buffer, where its text starts there, and how many bytes it has. */
  #chunks: (Uint8Array | undefined)[] = [];
  #starts = new Uint32Array(0);
  #lengths = new Uint32Array(0);
  #times = new Float64Array(0);
  /** Ids; `NaN` for a message without one. */
  #ids = new Float64Array(0);
  /** The bytes each counts for in the budget. */
  #sizes = new Float64Array(0);
  #froms: (string | undefined)[] = [];
  #refOf: (string | undefined)[] = [];
  /** The buffer texts are written to now, and how far it is written. */
  #chunk: Uint8Array | undefined;
  #written = 0;
  /** The UTF-8 bytes of the texts held, and of the buffers that hold them. */
  #textBytes = 0;
  #bufferBytes = 0;
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

  /**
   * The bytes of its buffers for texts: brought back within twice its
   * texts' UTF-8 plus `BUFFER_SLACK_BYTES` whenever a message goes.
   */
  get bufferBytes(): number {
    return this.#bufferBytes;
  }

  /** The messages, oldest first (made on each call). */
  get messages(): readonly ChatMessage[] {
    return this.latest(this.#count);
  }

  /** The newest `count` messages (at most), oldest first (made on each call). */
  latest(count: number): ChatMessage[] {
    const first = Math.max(0, this.#count - count);
    const messages: ChatMessage[] = [];
    for (let i = first; i < this.#count; i++) messages.push(this.#message(this.#at(i)));
    return messages;
  }

  /** True when a held message carries `ref`: a message with it again is a duplicate. */
  hasRef(ref: string): boolean {
    return this.#refs.has(ref);
  }

  /** Keeps a message (dropping the oldest past the limit), within the budget. */
  add(message: ChatMessage): void {
    if (this.limit === 0) return;
    if (message.ref !== undefined) this.#refs.add(message.ref);
    if (this.#count === this.limit) this.dropOldest();
    if (this.#count === this.#slots) this.#grow();
    const at = this.#at(this.#count++);
    // Written where the last text ended; a text that does not fit there
    // goes whole to a new buffer (what was written of it is not counted).
    let chunk = this.#chunk ?? NO_BUFFER;
    let written = encoder.encodeInto(message.text, chunk.subarray(this.#written));
    if (written.read < message.text.length) {
      chunk = this.#newChunk(utf8Length(message.text));
      written = encoder.encodeInto(message.text, chunk);
    }
    const size = heldBytes(message, written.written);
    this.#starts[at] = this.#written;
    this.#lengths[at] = written.written;
    this.#written += written.written;
    this.#textBytes += written.written;
    this.#chunks[at] = chunk;
    this.#times[at] = message.time;
    this.#ids[at] = message.id ?? NaN;
    this.#sizes[at] = size;
    this.#froms[at] = message.from;
    this.#refOf[at] = message.ref;
    this.#bytes += size;
    this.budget.grew(this, size);
  }

  /** Drops the oldest message; returns the bytes it freed. */
  dropOldest(): number {
    if (this.#count === 0) return 0;
    const at = this.#head;
    const ref = this.#refOf[at];
    if (ref !== undefined) this.#refs.delete(ref);
    const chunk = this.#chunks[at];
    // Nothing held keeps a buffer whose messages are all gone.
    this.#chunks[at] = this.#froms[at] = this.#refOf[at] = undefined;
    const size = this.#sizes[at];
    this.#head = (at + 1) % this.#slots;
    this.#textBytes -= this.#lengths[at];
    if (--this.#count === 0) {
      this.#chunk = undefined;
      this.#written = this.#bufferBytes = 0;
    } else if (chunk !== this.#chunks[this.#head] && chunk !== this.#chunk) {
      this.#bufferBytes -= chunk!.length;
    }
    if (this.#bufferBytes > 2 * this.#textBytes + BUFFER_SLACK_BYTES) this.#compact();
    this.#bytes -= size;
    this.budget.shrank(this, size);
    return size;
  }

  /** Drops every message (the room is gone). */
  clear(): void {
    while (this.#count > 0) this.dropOldest();
  }

  /** Where in the ring the `index`th oldest message is. */
  #at(index: number): number {
    return (this.#head + index) % this.#slots;
  }

  #message(at: number): ChatMessage {
    const start = this.#starts[at];
    const message: ChatMessage = {
      from: this.#froms[at]!,
      text: decoder.decode(this.#chunks[at]!.subarray(start, start + this.#lengths[at])),
      time: this.#times[at],
    };
    if (!Number.isNaN(this.#ids[at])) message.id = this.#ids[at];
    if (this.#refOf[at] !== undefined) message.ref = this.#refOf[at];
    return message;
  }

  /** A new buffer for texts, of at least `bytes`, written to from now on. */
  #newChunk(bytes: number): Uint8Array {
    const size = Math.max(
      bytes,
      Math.min(MAX_CHUNK_BYTES, Math.max(FIRST_CHUNK_BYTES, this.#textBytes)),
    );
    this.#bufferBytes += size;
    this.#written = 0;
    return this.#chunk = new Uint8Array(size);
  }

  /**
   * Copies the texts held into one buffer of their size, once the buffers
   * hold more than twice that (plus `BUFFER_SLACK_BYTES`): when the oldest
   * messages go faster than new ones come (the budget cuts the room, short
   * messages follow long ones), a buffer stays as long as its newest
   * message does, and would hold the dropped ones' bytes that long.
   */
  #compact(): void {
    const chunk = new Uint8Array(Math.max(FIRST_CHUNK_BYTES, this.#textBytes));
    let written = 0;
    for (let i = 0; i < this.#count; i++) {
      const at = this.#at(i);
      const start = this.#starts[at];
      chunk.set(this.#chunks[at]!.subarray(start, start + this.#lengths[at]), written);
      this.#chunks[at] = chunk;
      this.#starts[at] = written;
      written += this.#lengths[at];
    }
    this.#chunk = chunk;
    this.#written = written;
    this.#bufferBytes = chunk.length;
  }

  /** Twice the places (at most the limit), the oldest first; the ring is full. */
  #grow(): void {
    const slots = Math.min(this.limit, Math.max(FIRST_SLOTS, this.#slots * 2));
    const head = this.#head;
    this.#chunks = unrolled(this.#chunks, head, slots);
    this.#froms = unrolled(this.#froms, head, slots);
    this.#refOf = unrolled(this.#refOf, head, slots);
    this.#starts = unrolledNumbers(this.#starts, head, new Uint32Array(slots));
    this.#lengths = unrolledNumbers(this.#lengths, head, new Uint32Array(slots));
    this.#times = unrolledNumbers(this.#times, head, new Float64Array(slots));
    this.#ids = unrolledNumbers(this.#ids, head, new Float64Array(slots));
    this.#sizes = unrolledNumbers(this.#sizes, head, new Float64Array(slots));
    this.#slots = slots;
    this.#head = 0;
  }
}

/** A full ring's values oldest first (from `head`), in `slots` places. */
function unrolled<T>(ring: T[], head: number, slots: number): T[] {
  const values = [...ring.slice(head), ...ring.slice(0, head)];
  values.length = slots;
  return values;
}

/** A full ring's numbers oldest first (from `head`), written into `to`. */
function unrolledNumbers<T extends Uint32Array | Float64Array>(
  ring: T,
  head: number,
  to: T,
): T {
  to.set(ring.subarray(head));
  to.set(ring.subarray(0, head), ring.length - head);
  return to;
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

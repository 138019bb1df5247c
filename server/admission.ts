/**
 * What the server admits from one client: each message is checked for size,
 * rate and flooding before it reaches the room.
 *
 * @module
 */

import { TokenBucket } from "../lib/rate.ts";

/** The limits on what one client may send. */
export interface AdmissionLimits {
  /** The largest message, in UTF-8 bytes. */
  maxMessageBytes: number;
  /** Messages per second; `0` turns off every rate limit (bytes too) and the flood rule. */
  rateLimit: number;
  /** Messages that may come at once before the rate applies (at least 1). */
  rateBurst: number;
  /**
   * Bytes per second, counted as each message's size times its recipients
   * (its fan-out cost); `0` turns this limit off.
   */
  rateBytes: number;
  /** The fan-out bytes that may come at once; one message never costs more. */
  rateBytesBurst: number;
}

/** The flood rule's window. */
export const FLOOD_WINDOW_MS = 5000;
/** A client sending more than this many times its rate limit in a window is flooding. */
export const FLOOD_FACTOR = 10;
/** The rate-limit notice goes to a sender at most this often. */
export const NOTICE_INTERVAL_MS = 1000;

/** The verdict on one message. */
export type Verdict =
  | "accept"
  | "too_big"
  | "rate_limited"
  | "bytes_limited"
  | "flooding";

/** The UTF-8 length of a string, counted without encoding it. */
export function utf8Length(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) continue;
    if (code < 0x800) bytes += 1;
    else if (code >= 0xd800 && code <= 0xdbff && isLowSurrogate(text.charCodeAt(i + 1))) {
      // A surrogate pair: two code units, four bytes.
      bytes += 2;
      i++;
    } else bytes += 2; // three bytes, a lone surrogate too (sent as U+FFFD)
  }
  return bytes;
}

function isLowSurrogate(code: number): boolean {
  return code >= 0xdc00 && code <= 0xdfff;
}

/**
 * The UTF-8 length of a message, counted only as far as it matters: a text
 * of more than `limit` UTF-16 units is over any byte limit of `limit`, so
 * its length stands in (a lower bound) and the cost stays bounded.
 */
export function messageBytes(text: string, limit: number): number {
  return text.length > limit ? text.length : utf8Length(text);
}

/** Judges one client's messages against the limits. */
export class Admission {
  readonly #limits: AdmissionLimits;
  readonly #bucket?: TokenBucket;
  readonly #bytes?: TokenBucket;
  /** Arrival times of the latest messages, allocated at the first refusal. */
  #arrivals?: Float64Array;
  #next = 0;
  #lastNotice = -Infinity;

  constructor(limits: AdmissionLimits, now: number = performance.now()) {
    this.#limits = limits;
    if (limits.rateLimit > 0) {
      this.#bucket = new TokenBucket(limits.rateLimit, limits.rateBurst, now);
    }
    // `rateLimit` 0 turns every rate limit off, the byte rate too.
    if (limits.rateBytes > 0 && limits.rateLimit > 0) {
      this.#bytes = new TokenBucket(limits.rateBytes, limits.rateBytesBurst, now);
    }
  }

  /** The most messages allowed in any flood window. */
  get floodLimit(): number {
    return FLOOD_FACTOR * this.#limits.rateLimit * (FLOOD_WINDOW_MS / 1000);
  }

  /**
   * Says what to do with a message of `bytes` (see `messageBytes`) for
   * `recipients`, arriving at `now`.
   */
  judge(bytes: number, recipients = 1, now: number = performance.now()): Verdict {
    if (bytes > this.#limits.maxMessageBytes) return "too_big";
    if (this.#bucket) {
      if (this.#flooding(now)) return "flooding";
      if (!this.#bucket.take(now)) return "rate_limited";
    }
    if (this.#bytes && !this.#bytes.take(now, bytes * Math.max(1, recipients))) {
      return "bytes_limited";
    }
    return "accept";
  }

  /**
   * Records an arrival; says whether more than the flood limit arrived in
   * the window. Until the first refusal the bucket itself keeps a client far
   * under the limit (burst plus five seconds of rate), so arrival times are
   * kept only from then on: a client that is never refused costs nothing.
   */
  #flooding(now: number): boolean {
    if (!this.#arrivals) {
      if (this.#bucket!.wait(now) === 0) return false;
      this.#arrivals = new Float64Array(this.floodLimit).fill(-Infinity);
    }
    // The slot about to be overwritten holds the arrival floodLimit back:
    // if it is in the window, so are floodLimit + 1 arrivals with this one.
    const oldest = this.#arrivals[this.#next];
    this.#arrivals[this.#next] = now;
    this.#next = (this.#next + 1) % this.#arrivals.length;
    return now - oldest < FLOOD_WINDOW_MS;
  }

  /**
   * Milliseconds until a message of `bytes` for `recipients` would pass the
   * rate limits (told to `chat.json` senders, who send it again then).
   */
  retryMs(bytes: number, recipients = 1, now: number = performance.now()): number {
    return Math.max(
      this.#bucket?.wait(now) ?? 0,
      this.#bytes?.wait(now, bytes * Math.max(1, recipients)) ?? 0,
    );
  }

  /** True when a rate-limit notice may go out now (at most one a second). */
  mayNotify(now: number = performance.now()): boolean {
    if (now - this.#lastNotice < NOTICE_INTERVAL_MS) return false;
    this.#lastNotice = now;
    return true;
  }
}

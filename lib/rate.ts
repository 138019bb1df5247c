/**
 * A token bucket: `rate` tokens a second, holding at most `burst`. The
 * server uses one per client to limit messages; the client uses one to pace
 * what it sends so that a default server never refuses it.
 *
 * @module
 */

/** Tokens refill continuously at `rate` per second up to `burst`; it starts full. */
export class TokenBucket {
  #tokens: number;
  #last: number;

  constructor(
    /** Tokens added per second. */
    readonly rate: number,
    /** The most tokens it holds (at least 1). */
    readonly burst: number,
    now: number = performance.now(),
  ) {
    this.burst = Math.max(1, burst);
    this.#tokens = this.burst;
    this.#last = now;
  }

  #refill(now: number) {
    const elapsed = Math.max(0, now - this.#last);
    this.#tokens = Math.min(this.burst, this.#tokens + (elapsed * this.rate) / 1000);
    this.#last = now;
  }

  /** Takes `cost` tokens (at most `burst`) if there are as many; says whether it did. */
  take(now: number = performance.now(), cost = 1): boolean {
    this.#refill(now);
    const wanted = Math.min(cost, this.burst);
    if (this.#tokens < wanted) return false;
    this.#tokens -= wanted;
    return true;
  }

  /** Milliseconds until `cost` tokens (at most `burst`) are there: 0 when they are now. */
  wait(now: number = performance.now(), cost = 1): number {
    this.#refill(now);
    const wanted = Math.min(cost, this.burst);
    return this.#tokens >= wanted ? 0 : ((wanted - this.#tokens) * 1000) / this.rate;
  }
}

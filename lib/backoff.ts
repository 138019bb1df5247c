/**
 * Waits between attempts to reconnect: the first delay doubles after each
 * attempt up to a ceiling, and each delay is jittered (half to all of it)
 * so that many clients cut off together do not come back together.
 *
 * Used by the terminal client, the Redis backplane and (embedded with
 * `toString()`) the chat page, so the class refers to nothing outside it.
 *
 * @module
 */

/** Reconnection delays: `first` ms doubling to `max` ms, each with jitter. */
export class Backoff {
  #next: number;

  constructor(readonly first = 500, readonly max = 30_000) {
    this.#next = first;
  }

  /** The next delay in milliseconds: half to all of the current step. */
  delay(random: number = Math.random()): number {
    const base = this.#next;
    this.#next = Math.min(this.max, this.#next * 2);
    return Math.round(base * (0.5 + random / 2));
  }

  /** After an attempt that worked, start again from the first delay. */
  reset(): void {
    this.#next = this.first;
  }
}

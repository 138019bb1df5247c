/**
 * Waiting: a promise that settles after a delay, and the longest delay a
 * timer takes.
 *
 * @module
 */

/** The longest a timer can wait (2^31 - 1 ms, about 24.8 days); longer ones fire at once. */
export const MAX_TIMER_MS = 2_147_483_647;

/** Settles after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

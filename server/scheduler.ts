/**
 * Shares the event loop among clients. The runtime reads every socket that
 * has data in one poll and runs their handlers back to back, and the frames
 * they send are written after that, before any socket is read again: one
 * address's burst (fifty connections, each sending into a room of fifty) is
 * thousands of writes, and a bystander's message waits behind all of them.
 * The writes are the cost (a frame is a system call; the code around it is
 * a small part), so a turn's work for clients' input is bounded by the
 * frames and bytes it sends (`TURN_BUDGET`). Input that comes once the budget
 * is spent waits, in order per client, for a later turn, after the runtime
 * has written those frames and read the sockets again. Waiting clients take
 * turns, one input each; a client that starts waiting goes ahead of those
 * waiting already (but the longest-waiting one), so a quiet client waits
 * for about one turn's writes, and nobody waits forever.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import type { TurnChecks } from "./outbox.ts";

/**
 * What one turn of the event loop may send for clients' input before the
 * rest waits for a later one: about a millisecond of writes on loopback,
 * which is how long the runtime takes to come back to a zero timeout anyway.
 * Batching clients (`chat.batch`, `chat.json`) take one frame per turn
 * however many messages it has, so their rooms are rarely cut.
 */
export const TURN_BUDGET = { frames: 256, bytes: 4 << 20 };

/**
 * A turn's budget counts from its first input for at most this long
 * (milliseconds): the end of a turn is marked only once its budget is spent,
 * so the quiet turns before that are told apart by time.
 */
export const TURN_MS = 2;

/**
 * The input one client may have waiting, in characters (held as strings:
 * up to twice as many bytes). Input that would pass it is handled at once,
 * whatever the turn's budget: what waits is memory, and input arrives
 * whether or not the server is ready for it.
 */
export const MAX_WAITING_CHARS = 65_536;

/** A client whose admitted input waits for a turn. */
export interface Waiting {
  /** Handles its oldest waiting input; true while more waits. */
  runWaiting(): boolean;
}

/** What was sent when a turn began. */
interface Mark {
  frames: number;
  bytes: number;
}

/** The turn budget and the clients waiting for a turn. */
export class Scheduler {
  /** Where this turn's input began; undefined between turns. */
  #turn: Mark | undefined;
  /** When (`performance.now()`). */
  #turnAt = 0;
  /** Its end is scheduled (once its budget was spent). */
  #endDue = false;
  /** Clients that started waiting since the last turn for the waiting. */
  #fresh: Waiting[] = [];
  /** The others, in the order they take turns. */
  #rest: Waiting[] = [];
  #resume: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;

  /** Counts the frames and bytes sent. */
  constructor(readonly turns: TurnChecks) {}

  readonly #endTurn = () => {
    this.#turn = undefined;
    this.#endDue = false;
  };

  /**
   * True when input may be handled at once: this turn has budget left. A
   * turn starts with the first input after the last one was spent (its end
   * is scheduled then, after the turn's handlers), or `TURN_MS` after the
   * last one started. Scheduling an end for every turn would cost the
   * common, quiet turn an extra trip through the event loop.
   */
  mayRun(): boolean {
    const now = performance.now();
    if (this.#turn === undefined || now - this.#turnAt > TURN_MS) {
      this.#turn = this.#mark();
      this.#turnAt = now;
      return true;
    }
    if (this.#within(this.#turn)) return true;
    if (!this.#endDue) {
      this.#endDue = true;
      setImmediate(this.#endTurn);
    }
    return false;
  }

  #mark(): Mark {
    return { frames: this.turns.framesSent, bytes: this.turns.bytesSent };
  }

  #within(since: Mark): boolean {
    return this.turns.framesSent - since.frames < TURN_BUDGET.frames &&
      this.turns.bytesSent - since.bytes < TURN_BUDGET.bytes;
  }

  /**
   * `client` has input waiting (it calls this when its first one starts
   * waiting): it gets a turn once the runtime has written what this turn
   * sent. A zero timeout is what waits for that: `setImmediate`, or any
   * operation the runtime completes itself, resumes before the writes.
   */
  wait(client: Waiting): void {
    if (this.#stopped) {
      while (client.runWaiting());
      return;
    }
    this.#fresh.push(client);
    this.#resume ??= setTimeout(this.#run, 0);
  }

  /**
   * One input for each waiting client in turn, while the budget lasts: the
   * last that started waiting since the last time and the one that has
   * waited longest go whatever the budget (so that a newcomer waits one
   * turn and nobody waits forever), then the other newcomers, then the rest.
   */
  readonly #run = () => {
    this.#resume = undefined;
    const start = this.#mark();
    const always = Math.min(this.#fresh.length, 1) + Math.min(this.#rest.length, 1);
    // Newcomers newest first: a burst arrives together, and whoever comes
    // after it is likely not part of it.
    const fresh = this.#fresh.splice(0).reverse();
    const queue = [
      ...fresh.splice(0, 1),
      ...this.#rest.splice(0, 1),
      ...fresh,
      ...this.#rest,
    ];
    let next = 0;
    while (next < queue.length && (next < always || this.#within(start))) {
      const client = queue[next++];
      if (client.runWaiting()) queue.push(client);
    }
    this.#rest = queue.slice(next);
    if (this.#fresh.length > 0 || this.#rest.length > 0) {
      this.#resume = setTimeout(this.#run, 0);
    }
  };

  /** Handles everything waiting, now (at shutdown); later input is handled at once. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#resume);
    this.#resume = undefined;
    for (const client of [...this.#rest.splice(0), ...this.#fresh.splice(0)]) {
      while (client.runWaiting());
    }
  }
}

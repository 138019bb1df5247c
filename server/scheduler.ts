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
 * has written those frames and read the sockets again. A turn does not
 * start while the last one's frames are still unwritten: frames handed to
 * the runtime are written in the order they came, so a bystander's echo
 * would wait behind all of them. Waiting clients take turns, one input
 * each, as far as the budget goes: a client that starts waiting goes ahead
 * of those waiting already, an input that would not fit in what is left of
 * the budget (a message to a crowded room) is passed over for cheaper ones,
 * and the longest-waiting client goes each turn whatever its cost. So a
 * quiet client waits for about one turn's writes however many dear inputs
 * wait, and nobody waits forever.
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
 * How long (milliseconds) the waiting input waits for the runtime to write
 * the frames already handed to it, at most: a consumer that stops reading
 * holds its frames, and may be among the sockets that tell.
 */
export const MAX_WRITE_WAIT_MS = 50;

/**
 * The input one client may have waiting, in characters (held as strings:
 * up to twice as many bytes). Input that would pass it is handled at once,
 * whatever the turn's budget: what waits is memory, and input arrives
 * whether or not the server is ready for it.
 */
export const MAX_WAITING_CHARS = 65_536;

/** Frames and bytes: sent so far, or what an input is likely to send. */
export interface Cost {
  frames: number;
  bytes: number;
}

/** A client whose admitted input waits for a turn. */
export interface Waiting {
  /** Handles its oldest waiting input; true while more waits. */
  runWaiting(): boolean;
  /** What its oldest waiting input is likely to send (a frame per recipient). */
  waitingCost(): Cost;
}

/** The turn budget and the clients waiting for a turn. */
export class Scheduler {
  /** Where this turn's input began; undefined between turns. */
  #turn: Cost | undefined;
  /** When (`now()`). */
  #turnAt = 0;
  /** Its end is scheduled (once its budget was spent). */
  #endDue = false;
  /** Clients that started waiting since the last turn for the waiting. */
  #fresh: Waiting[] = [];
  /** The others, in the order they take turns. */
  #rest: Waiting[] = [];
  #resume: ReturnType<typeof setTimeout> | undefined;
  /** Since when the turn for the waiting has waited for the last frames' writes. */
  #unwrittenSince: number | undefined;
  /** A turn spent its whole budget since a turn last started. */
  #spent = false;
  #stopped = false;

  /**
   * `turns` counts the frames and bytes sent; `now` tells the time in
   * milliseconds (`performance.now`, unless a test holds the clock).
   */
  constructor(
    readonly turns: TurnChecks,
    readonly now: () => number = () => performance.now(),
  ) {}

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
    const now = this.now();
    if (this.#turn === undefined || now - this.#turnAt > TURN_MS) {
      // The last turn spent its budget and its frames are not written yet:
      // more would queue behind them, and a bystander's echo after that.
      const spent = this.#spent ||
        (this.#turn !== undefined && !this.#within(this.#turn));
      if (spent && !this.turns.written) return false;
      this.#spent = false;
      this.#turn = this.#mark();
      this.#turnAt = now;
      return true;
    }
    if (this.#within(this.#turn)) return true;
    if (!this.#endDue) {
      this.#endDue = true;
      this.#spent = true;
      setImmediate(this.#endTurn);
    }
    return false;
  }

  #mark(): Cost {
    return { frames: this.turns.framesSent, bytes: this.turns.bytesSent };
  }

  #within(since: Cost): boolean {
    return this.turns.framesSent - since.frames < TURN_BUDGET.frames &&
      this.turns.bytesSent - since.bytes < TURN_BUDGET.bytes;
  }

  /** Whether `cost` fits in what is left of the budget counted from `since`. */
  #fits(since: Cost, cost: Cost): boolean {
    return this.turns.framesSent - since.frames + cost.frames <= TURN_BUDGET.frames &&
      this.turns.bytesSent - since.bytes + cost.bytes <= TURN_BUDGET.bytes;
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
   * One input for each waiting client in turn, once the runtime has written
   * the last turn's frames: the newcomers (newest first) and then those
   * waiting before, each if its input fits in what is left of the budget
   * (a cheap input is not held behind dear ones), then the one that has
   * waited longest, whatever its cost (nobody waits forever), and those
   * with more, a round at a time, while the budget lasts (one client
   * waiting alone gets a whole turn, not one input).
   */
  readonly #run = () => {
    this.#resume = undefined;
    if (this.#spent && !this.turns.written) {
      const now = this.now();
      this.#unwrittenSince ??= now;
      if (now - this.#unwrittenSince < MAX_WRITE_WAIT_MS) {
        this.#resume = setTimeout(this.#run, 0);
        return;
      }
    }
    this.#unwrittenSince = undefined;
    this.#spent = false;
    const start = this.#mark();
    // Newcomers newest first: a burst arrives together, and whoever comes
    // after it is likely not part of it.
    const fresh = this.#fresh.splice(0).reverse();
    // The longest-waiting: the first of those waiting before, or of the
    // newcomers when nobody was.
    const old = this.#rest;
    const longest = old.length > 0 ? old.shift() : fresh.pop();
    // What does not go now, in the order it takes turns later: those that
    // waited before, the newcomers (in the order they came), those that went
    // now and have more.
    const before: Waiting[] = [];
    const newcomers: Waiting[] = [];
    let again: Waiting[] = [];
    // This turn's budget is all sent: nothing more fits.
    let full = false;
    const offer = (client: Waiting, whatever = false): boolean => {
      if (!whatever && (full || !this.#fits(start, client.waitingCost()))) {
        full ||= !this.#within(start);
        return false;
      }
      if (client.runWaiting()) again.push(client);
      return true;
    };
    for (const client of fresh) offer(client) || newcomers.push(client);
    for (const client of old) offer(client) || before.push(client);
    if (longest !== undefined) offer(longest, true);
    // Those with more go again while the budget lasts, a round at a time.
    while (!full && again.length > 0) {
      const round = again;
      again = [];
      const kept = round.filter((client) => !offer(client));
      again = [...kept, ...again];
      if (kept.length === round.length) break;
    }
    this.#spent = !this.#within(start);
    this.#rest = [...before, ...newcomers.reverse(), ...again];
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

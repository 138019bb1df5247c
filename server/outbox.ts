/**
 * A member's way out: what is owed to one socket, where backpressure lives
 * and where batching happens. The native `send()` never blocks and buffers
 * without bound, so each outbox watches its socket's `bufferedAmount` and
 * gives up on a consumer too slow to keep up, before it costs the server
 * unbounded memory. A client that speaks a batching subprotocol
 * (`chat.batch`, `chat.json`) gets each event-loop turn's frames as one.
 *
 * @module
 */

import { clearImmediate, setImmediate } from "node:timers";
import type { Batcher } from "./codec.ts";

/**
 * Schedules the outboxes' work at the end of the event-loop turn: batches
 * are flushed as soon as the turn's handlers have run (an immediate, no
 * delay), and backlogs are judged a turn later (a zero timeout), once the
 * writes the turn started had their chance: a burst handled within one turn
 * is not written yet, so it is never judged mid-turn.
 */
export class TurnChecks {
  /** Frames handed to sockets so far (the scheduler's measure of a turn's work). */
  framesSent = 0;
  /** Their UTF-8 bytes. */
  bytesSent = 0;
  /**
   * Runs before any batch leaves: what a turn's frames tell must be kept
   * first (the store's writes), so that no client sees a message that a
   * crash then loses.
   */
  beforeSend?: () => void;
  /** The last sockets handed a frame, a ring of `RECENT_SOCKETS`. */
  readonly #recent: WebSocket[] = [];
  #nextRecent = 0;
  readonly #flushes = new EndOfTurn((o) => o.flush(), setImmediate, clearImmediate);
  readonly #checks = new EndOfTurn(
    (o) => o.check(),
    (run) => setTimeout(run, 0),
    clearTimeout,
  );

  /** Counts a frame handed to `socket`. */
  sent(socket: WebSocket, bytes: number): void {
    this.framesSent++;
    this.bytesSent += bytes;
    this.#recent[this.#nextRecent] = socket;
    this.#nextRecent = (this.#nextRecent + 1) % RECENT_SOCKETS;
  }

  /**
   * True once the runtime has written (nearly) every frame handed to it.
   * It writes them in the order they were handed over, so one of the last
   * few sockets with nothing buffered (or closed) says that everything
   * before it was written; a few sockets rather than one, because a
   * consumer that has stopped reading holds its frames.
   */
  get written(): boolean {
    if (this.#recent.length === 0) return true;
    return this.#recent.some((socket) =>
      socket.readyState !== WebSocket.OPEN || socket.bufferedAmount === 0
    );
  }

  /** Flushes `outbox`'s batch at the end of this turn. */
  flush(outbox: Outbox): void {
    this.#flushes.add(outbox);
  }

  /** Judges `outbox`'s backlog after this turn's writes. */
  check(outbox: Outbox): void {
    this.#checks.add(outbox);
  }

  /** Drops everything pending (at shutdown). */
  stop(): void {
    this.#flushes.clear();
    this.#checks.clear();
  }
}

/** Outboxes due for one piece of work, run together by one scheduled callback. */
class EndOfTurn<Handle> {
  readonly #due = new Set<Outbox>();
  #handle: Handle | undefined;

  constructor(
    readonly work: (outbox: Outbox) => void,
    readonly schedule: (run: () => void) => Handle,
    readonly cancel: (handle: Handle) => void,
  ) {}

  add(outbox: Outbox): void {
    this.#due.add(outbox);
    this.#handle ??= this.schedule(() => {
      this.#handle = undefined;
      const due = [...this.#due];
      this.#due.clear();
      for (const o of due) this.work(o);
    });
  }

  clear(): void {
    if (this.#handle !== undefined) this.cancel(this.#handle);
    this.#handle = undefined;
    this.#due.clear();
  }
}

/** How many of the last sockets written to `TurnChecks.written` looks at. */
export const RECENT_SOCKETS = 4;

/** A batch is sent once it holds this many UTF-8 bytes, even mid-turn. */
export const MAX_BATCH_BYTES = 65_536;

/** What an outbox is given. */
export interface OutboxOptions {
  /** The socket it writes to. */
  socket: WebSocket;
  /** The unsent backlog judged after each turn; four times this ends it at once. */
  maxBufferedBytes: number;
  /** The end-of-turn work it schedules (batch flushes, backlog checks). */
  turns: TurnChecks;
  /** Told once when the backlog passes the limit; nothing is sent after. */
  owner: { slow(): void };
  /** Joins a turn's frames into one; without it, each frame leaves at once. */
  batch?: Batcher;
}

/** Sends frames to one socket; stops for good when its consumer is too slow. */
export class Outbox {
  #stopped = false;
  #checkDue = false;
  /** Frames held for the turn's batch (allocated when first needed). */
  #held: string[] | undefined;
  /** The UTF-8 bytes `#held` holds (for the backlog). */
  #heldBytes = 0;
  /** A flush is scheduled for the end of this turn. */
  #flushDue = false;
  /**
   * An upper bound on the backlog: `bufferedAmount` when last read, plus
   * what was sent or held since. Reading `bufferedAmount` is a call into
   * the runtime, too dear to make for every frame.
   */
  #owed = 0;

  readonly socket: WebSocket;
  readonly #options: OutboxOptions;

  constructor(options: OutboxOptions) {
    this.socket = options.socket;
    this.#options = options;
  }

  /** True once the outbox stopped: it sends nothing more. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /**
   * Queues one frame, unless stopped. Without batching it leaves at once;
   * with it, every frame of the turn is held and they go out as one frame
   * at its end: one write per turn, however many frames it had.
   */
  send(frame: string, bytes: number = frame.length): void {
    if (this.#stopped) return;
    if (this.#options.batch) {
      if (!this.#flushDue) {
        this.#flushDue = true;
        this.#options.turns.flush(this);
      }
      (this.#held ??= []).push(frame);
      this.#heldBytes += bytes;
      // A long turn's frames do not all wait for its end: they leave in
      // batches of about MAX_BATCH_BYTES while the turn goes on.
      if (this.#heldBytes >= MAX_BATCH_BYTES) this.#sendHeld();
    } else {
      this.socket.send(frame);
      this.#options.turns.sent(this.socket, bytes);
    }
    this.#owed += bytes;
    if (this.#owed > 4 * this.#options.maxBufferedBytes) {
      // The bound is loose: look at the real backlog before judging.
      this.#owed = this.socket.bufferedAmount + this.#heldBytes;
      if (this.#owed > 4 * this.#options.maxBufferedBytes) return this.#slow();
    }
    // Under the limit even by the upper bound: nothing to judge, and no
    // call into the runtime to read the real backlog.
    if (this.#owed > this.#options.maxBufferedBytes && !this.#checkDue) {
      this.#checkDue = true;
      this.#options.turns.check(this);
    }
  }

  /** Sends what is held as one frame; run by `TurnChecks` at the turn's end. */
  flush(): void {
    this.#flushDue = false;
    this.#sendHeld();
  }

  #sendHeld(): void {
    if (!this.#held?.length || this.#stopped) return;
    this.#options.turns.beforeSend?.();
    const batch = this.#held.length === 1
      ? this.#held[0]
      : this.#options.batch!(this.#held);
    this.#options.turns.sent(this.socket, this.#heldBytes);
    this.#held.length = 0;
    this.#heldBytes = 0;
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(batch);
  }

  /** Judges the backlog; run by `TurnChecks` after the turn's writes. */
  check(): void {
    this.#checkDue = false;
    if (this.#stopped) return;
    this.#owed = this.socket.bufferedAmount + this.#heldBytes;
    if (this.#owed > this.#options.maxBufferedBytes) this.#slow();
  }

  /** Sends nothing more. */
  stop(): void {
    this.#stopped = true;
    this.#held = undefined;
    this.#heldBytes = 0;
  }

  #slow() {
    if (this.#stopped) return;
    this.stop();
    this.#options.owner.slow();
  }
}

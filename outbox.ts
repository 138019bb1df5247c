/**
 * A member's way out: what is owed to one socket, where backpressure lives
 * and where batching happens. The native `send()` never blocks and buffers
 * without bound, so each outbox watches its socket's `bufferedAmount` and
 * gives up on a consumer too slow to keep up, before it costs the server
 * unbounded memory. A client that speaks the `chat.batch` subprotocol gets
 * what it is owed within one event-loop turn as one frame.
 *
 * @module
 */

import { BATCH_SEPARATOR } from "./protocol.ts";

/**
 * Runs each outbox's end of turn once per event-loop turn, after the turn's
 * sends: a burst handled within one turn has not been written yet, so the
 * backlog is judged only once the writes had their chance, and a batch is
 * flushed once the turn has added all it will.
 */
export class TurnChecks {
  readonly #pending = new Set<Outbox>();
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** Runs `outbox.endTurn()` after this turn. */
  schedule(outbox: Outbox): void {
    this.#pending.add(outbox);
    // A zero-delay timeout runs after the I/O the turn started: the next turn.
    this.#timer ??= setTimeout(() => this.#run(), 0);
  }

  #run() {
    this.#timer = undefined;
    const due = [...this.#pending];
    this.#pending.clear();
    for (const outbox of due) outbox.endTurn();
  }

  /** Drops every pending check (at shutdown). */
  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#pending.clear();
  }
}

/** Sends frames to one socket; stops for good when its consumer is too slow. */
export class Outbox {
  #stopped = false;
  /** True from the first send of a turn until its end. */
  #inTurn = false;
  /** Frames held for this turn's batch (batching outboxes only). */
  #held: string[] = [];
  #heldBytes = 0;

  constructor(
    readonly socket: WebSocket,
    /** The unsent backlog judged after each turn; four times this ends it at once. */
    readonly maxBufferedBytes: number,
    readonly checks: TurnChecks,
    /** Called once when the backlog passes the limit; nothing is sent after. */
    readonly onSlow: () => void,
    /** Several frames per turn go out as one, separated by `BATCH_SEPARATOR`. */
    readonly batching = false,
  ) {}

  /** False once the outbox stopped (slow, or closed). */
  get open(): boolean {
    return !this.#stopped && this.socket.readyState === WebSocket.OPEN;
  }

  /**
   * Queues one frame, unless stopped. With no backlog in this turn it leaves
   * at once; when batching, what follows in the same turn is held and sent
   * as one frame at the turn's end.
   */
  send(frame: string): void {
    if (!this.open) return;
    if (this.batching && this.#inTurn) {
      this.#held.push(frame);
      this.#heldBytes += frame.length;
      if (this.socket.bufferedAmount + this.#heldBytes > 4 * this.maxBufferedBytes) {
        this.#slow();
      }
      return;
    }
    this.socket.send(frame);
    if (this.socket.bufferedAmount > 4 * this.maxBufferedBytes) return this.#slow();
    if (!this.#inTurn) {
      this.#inTurn = true;
      this.checks.schedule(this);
    }
  }

  /** Flushes the batch and judges the backlog; run by `TurnChecks` after the turn. */
  endTurn(): void {
    this.#inTurn = false;
    if (this.#stopped) return;
    if (this.socket.bufferedAmount > this.maxBufferedBytes) return this.#slow();
    if (this.#held.length > 0) {
      const batch = this.#held.length === 1
        ? this.#held[0]
        : this.#held.join(BATCH_SEPARATOR);
      this.#held = [];
      this.#heldBytes = 0;
      if (this.socket.readyState !== WebSocket.OPEN) return;
      this.socket.send(batch);
      // The flush starts a turn of its own: its backlog is judged after it.
      this.#inTurn = true;
      this.checks.schedule(this);
    }
  }

  /** Sends nothing more. */
  stop(): void {
    this.#stopped = true;
    this.#held = [];
    this.#heldBytes = 0;
  }

  #slow() {
    if (this.#stopped) return;
    this.stop();
    this.onSlow();
  }
}

/**
 * A member's way out: what is owed to one socket, and where backpressure
 * lives. The native `send()` never blocks and buffers without bound, so each
 * outbox watches its socket's `bufferedAmount` and gives up on a consumer
 * too slow to keep up, before it costs the server unbounded memory.
 *
 * @module
 */

/**
 * Runs the slow-consumer check once per event-loop turn, after the turn's
 * sends: a burst handled within one turn has not been written yet, so the
 * backlog is judged only once the writes had their chance.
 */
export class TurnChecks {
  readonly #pending = new Set<Outbox>();
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** Checks `outbox` after this turn. */
  schedule(outbox: Outbox): void {
    this.#pending.add(outbox);
    this.#timer ??= setTimeout(() => this.#run(), 0);
  }

  #run() {
    this.#timer = undefined;
    const due = [...this.#pending];
    this.#pending.clear();
    for (const outbox of due) outbox.check();
  }

  /** Drops every pending check (at shutdown). */
  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#pending.clear();
  }
}

/** Sends lines to one socket; stops for good when its consumer is too slow. */
export class Outbox {
  #stopped = false;
  #scheduled = false;

  constructor(
    readonly socket: WebSocket,
    /** The unsent backlog judged after each turn; four times this ends it at once. */
    readonly maxBufferedBytes: number,
    readonly checks: TurnChecks,
    /** Called once when the backlog passes the limit; nothing is sent after. */
    readonly onSlow: () => void,
  ) {}

  /** False once the outbox stopped (slow, or closed). */
  get open(): boolean {
    return !this.#stopped && this.socket.readyState === WebSocket.OPEN;
  }

  /** Queues one text frame, unless stopped. */
  send(line: string): void {
    if (!this.open) return;
    this.socket.send(line);
    if (this.socket.bufferedAmount > 4 * this.maxBufferedBytes) {
      this.#slow();
    } else if (!this.#scheduled) {
      this.#scheduled = true;
      this.checks.schedule(this);
    }
  }

  /** Judges the backlog; run by `TurnChecks` after the turn. */
  check(): void {
    this.#scheduled = false;
    if (!this.#stopped && this.socket.bufferedAmount > this.maxBufferedBytes) {
      this.#slow();
    }
  }

  /** Sends nothing more. */
  stop(): void {
    this.#stopped = true;
  }

  #slow() {
    if (this.#stopped) return;
    this.#stopped = true;
    this.onSlow();
  }
}

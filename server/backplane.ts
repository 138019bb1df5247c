/**
 * Backplanes fix the order of a room's events (chat messages, joins and
 * leaves) and bring them to the room's members on every instance. In
 * process (the default, `LocalBackplane`) an event is delivered at once, in
 * the order it happened; `RedisBackplane` (redis.ts) spans instances.
 *
 * @module
 */

import type { ChatMessage } from "./codec.ts";
import type { Cost, Scheduler, Waiting } from "./scheduler.ts";

/** Something that happened in a room, as instances tell each other. */
export type RoomEvent =
  | Omit<ChatMessage, "id"> & {
    kind: "message";
    /** The instance whose client sent it. */
    origin: string;
    /** That client's session number on its instance. */
    conn: number;
  }
  | {
    kind: "joined" | "left";
    name: string;
    /** Absent for members whose instance stopped refreshing them. */
    origin?: string;
    conn?: number;
  }
  | {
    /** A moderator removed `name` from the room (`/kick`) or silenced it (`/mute`). */
    kind: "kicked" | "muted";
    name: string;
    /** The moderator's name. */
    by: string;
    /** Until when it holds, in milliseconds since the epoch. */
    until: number;
    /** Why, for a kick (may be empty). */
    reason?: string;
    origin?: string;
    conn?: number;
  };

/** What a backplane knows about an event beyond the event itself. */
export interface Delivery {
  /** The event's place in the room's order in Redis; absent in process. */
  seq?: number;
  /** A chat message's id, as Redis numbered it; absent in process (the room numbers it). */
  id?: number;
  /** The room's history epoch, with `id`. */
  epoch?: string;
  /** For joins and leaves: how many are in the room on all instances. */
  online?: number;
  /** For joins and leaves in rooms small enough: every member's name. */
  names?: string[];
}

/** What a room holds of its history: its epoch, its latest message's id, every message kept. */
export interface Held {
  epoch: string;
  /** The id of the room's latest message (0 for none). */
  last: number;
  /** Oldest first. */
  messages: readonly ChatMessage[];
}

/** A new epoch: 12 random URL-safe characters. */
export function newEpoch(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(9));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_");
}

/** Where a backplane delivers: the chat, which routes each event to its room. */
export interface BackplaneReceiver {
  /** An event for this instance's members of `room`, in the room's order. Must not throw. */
  deliver(room: string, event: RoomEvent, delivery: Delivery): void;
  /** The backplane went down (`false`) or came back (`true`). */
  changed(up: boolean): void;
  /** Events of `room` from other instances were lost on the way here. */
  missed(room: string): void;
  /** A message of `room` was not delivered: its `ref` is held already. */
  duplicate(room: string, event: RoomEvent & { kind: "message" }): void;
  /** Each room with members here, and their names: written to Redis again. */
  presence(): Map<string, string[]>;
  /** How many frames delivering `event` to `room`'s members here is likely to send. */
  deliveryCost(room: string, event: RoomEvent, delivery: Delivery): number;
  log(line: string): void;
}

/** How instances share rooms. */
export interface Backplane {
  /** True when events travel through a shared backplane (presence, history and names too). */
  readonly shared: boolean;
  /** True while events reach every instance (always, in process). */
  readonly up: boolean;
  /** This instance's identity in events it publishes. */
  readonly instance: string;
  /** Settles once the first attempt to reach the backplane has ended, either way. */
  readonly started: Promise<void>;
  /** Sends an event to the room's members on every instance. */
  publish(room: string, event: RoomEvent): void;
  /** Takes `name` in `room` for this instance: `unknown` when the backplane cannot say. */
  claim(room: string, name: string): Promise<"claimed" | "taken" | "unknown">;
  /** Gives `name` back (if this instance holds it), announcing `left` if given. */
  release(room: string, name: string, left?: RoomEvent): void;
  /** Whether `name` is taken in `room` anywhere; `undefined` when unknown. */
  taken(room: string, name: string): Promise<boolean | undefined>;
  /** The room's members on every instance, by name; `undefined` when unknown. */
  who(room: string): Promise<string[] | undefined>;
  /** The room's history (creating its epoch); `undefined` when unknown (or kept in process). */
  history(room: string): Promise<Held | undefined>;
  /**
   * Until when a moderator's kick and mute of `name` in `room` hold (ms
   * since the epoch), as every instance knows them; `undefined` when
   * unknown (or kept in process).
   */
  moderation(room: string, name: string): Promise<Sanctions | undefined>;
  /** Starts receiving the room's events (resolves once they flow). */
  open(room: string): Promise<void>;
  /** Stops receiving the room's events. */
  close(room: string): void;
  /** Lets outstanding calls finish (within the timeout), then disconnects. */
  stop(): Promise<void>;
}

/** Until when a name is kicked out of a room, and muted in it (ms since the epoch). */
export interface Sanctions {
  kicked?: number;
  muted?: number;
}

/** The default: one process, every event delivered at once. */
export class LocalBackplane implements Backplane {
  readonly shared = false;
  readonly up = true;
  readonly instance = "local";
  readonly started = Promise.resolve();

  constructor(readonly receiver: Pick<BackplaneReceiver, "deliver">) {}

  publish(room: string, event: RoomEvent): void {
    this.receiver.deliver(room, event, {});
  }
  claim(): Promise<"unknown"> {
    return Promise.resolve("unknown");
  }
  release(room: string, _name: string, left?: RoomEvent): void {
    if (left) this.receiver.deliver(room, left, {});
  }
  taken(): Promise<undefined> {
    return Promise.resolve(undefined);
  }
  who(): Promise<undefined> {
    return Promise.resolve(undefined);
  }
  history(): Promise<undefined> {
    return Promise.resolve(undefined);
  }
  moderation(): Promise<undefined> {
    return Promise.resolve(undefined);
  }
  open(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {}
  stop(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * What a backplane received waits here to be delivered, at most
 * `MAX_RECEIVED_WAITING_CHARS` of it (their JSON's characters).
 */
export const MAX_RECEIVED_WAITING_CHARS = 4 << 20;

/** An event a shared backplane brought, or word that some were lost before it. */
type Received =
  | { room: string; event: RoomEvent; delivery: Delivery; chars: number }
  | { room: string; lost: true };

/**
 * What a shared backplane brings back, delivered in its order within the
 * event loop's turn budget, as clients' input is: one read from Redis may
 * carry hundreds of events, each a frame per member here, and delivered at
 * once they held the event loop for seconds (a room of a thousand). What a
 * turn does not cover waits for later turns; past
 * `MAX_RECEIVED_WAITING_CHARS` everything is delivered at once, since what
 * waits is memory and the backplane does not wait for this instance.
 */
export class ReceivedEvents implements Waiting {
  #queue: Received[] = [];
  /** The oldest undelivered entry's index. */
  #next = 0;
  #chars = 0;
  /** It asked the scheduler for a turn and has not had it yet. */
  #waiting = false;

  constructor(
    readonly receiver: Pick<BackplaneReceiver, "deliver" | "missed" | "deliveryCost">,
    readonly scheduler: Pick<Scheduler, "mayRun" | "wait">,
    /** Called each time the last waiting entry has been delivered. */
    readonly emptied: () => void = () => {},
  ) {}

  /** Nothing waits. */
  get empty(): boolean {
    return this.#next === this.#queue.length;
  }

  /** `event` arrived for `room`; `chars` is its size as it came. */
  add(room: string, event: RoomEvent, delivery: Delivery, chars: number): void {
    this.#queue.push({ room, event, delivery, chars });
    this.#chars += chars;
  }

  /** Events of `room` were lost on the way, before those added next. */
  lost(room: string): void {
    this.#queue.push({ room, lost: true });
  }

  /** Delivers what this turn's budget covers; the rest waits for its turn. */
  deliver(): void {
    if (this.#chars > MAX_RECEIVED_WAITING_CHARS) return this.drain();
    if (this.#waiting) return;
    while (this.scheduler.mayRun()) if (!this.#deliverNext()) return;
    this.#waiting = true;
    this.scheduler.wait(this);
  }

  /**
   * Delivers everything now: before a failure or a stop is handled, so
   * nothing is lost or put out of order.
   */
  drain(): void {
    while (this.#deliverNext());
  }

  waitingCost(): Cost {
    const next = this.#queue[this.#next];
    if (next === undefined || "lost" in next) return { frames: 1, bytes: 0 };
    const frames = this.receiver.deliveryCost(next.room, next.event, next.delivery);
    return { frames, bytes: frames * next.chars };
  }

  /** The scheduler's turn: the oldest entry; true while more wait. */
  runWaiting(): boolean {
    const more = this.#deliverNext();
    if (!more) this.#waiting = false;
    return more;
  }

  /** Delivers the oldest entry; true while more wait. */
  #deliverNext(): boolean {
    const next = this.#queue[this.#next];
    if (next === undefined) return false;
    // A spent queue starts again, rather than shifting an array entry by entry.
    if (++this.#next === this.#queue.length) {
      this.#queue = [];
      this.#next = 0;
    }
    if ("lost" in next) this.receiver.missed(next.room);
    else {
      this.#chars -= next.chars;
      this.receiver.deliver(next.room, next.event, next.delivery);
    }
    if (this.#next < this.#queue.length) return true;
    this.emptied();
    return false;
  }
}

/**
 * The chat: its rooms, its live sessions and its backplane. HTTP hands it
 * upgrades (`reserve`, then `attach`); the backplane hands it every room's
 * events in order (`deliver`), which it routes to the room. It knows nothing
 * of HTTP and nothing of how a client speaks.
 *
 * @module
 */

import {
  BACKPLANE_BACK,
  BACKPLANE_DOWN,
  MESSAGES_LOST,
  type Protocol,
} from "../lib/protocol.ts";
import type { AdmissionLimits } from "./admission.ts";
import {
  type Backplane,
  type BackplaneReceiver,
  type Delivery,
  LocalBackplane,
  type RoomEvent,
} from "./backplane.ts";
import { RedisBackplane } from "./redis.ts";
import type { CountingLog, Log } from "./log.ts";
import { Metrics } from "./metrics.ts";
import { TurnChecks } from "./outbox.ts";
import { Scheduler } from "./scheduler.ts";
import { type HttpRefusal, Refusals } from "./refusals.ts";
import { Moderation, type Resume, Room, type RoomOptions } from "./room.ts";
import { HistoryBudget } from "./history.ts";
import type { Store } from "./store.ts";
import { Session, type SessionHost } from "./session.ts";
import type { Identity } from "../lib/auth.ts";

/** What a chat is told; the server's options, resolved (see `ServerOptions`). */
export interface ChatSettings {
  echo: boolean;
  history: number;
  /** Messages per room kept for resumes (at least `history`). */
  historyKeep: number;
  /** Seconds an emptied room keeps its history. */
  roomTtl: number;
  /** Keeps history across restarts (`--store`); in memory without it. */
  store?: Store;
  historyBytes: number;
  presenceLimit: number;
  quiet: boolean;
  limits: AdmissionLimits;
  maxBufferedBytes: number;
  maxClients: number;
  maxClientsPerIp: number;
  /** Tokens are signed with it (`--auth-secret`); without it, none are used. */
  authSecret?: Uint8Array;
  /** How long a kicked name may not join its room again. */
  kickSeconds: number;
  /** Share rooms through this Redis; in process without it. */
  redis?: { url: string; prefix: string; timeoutMs: number };
  log: Log;
}

/** A name held in a room for an upgrade about to happen. */
export interface Reservation {
  readonly room: Room<Session>;
  /** The name the URL gave, if any (else the address is held). */
  readonly name?: string;
  readonly address: string;
  /** The subprotocol the client speaks, if any. */
  readonly protocol?: Protocol;
  /** Who its token says it is (with `--auth-secret`): its name is the token's. */
  readonly identity?: Identity;
  /** Where a reconnecting client left off (`?since=&epoch=`). */
  readonly resume?: Resume;
}

/** The name an upgrade holds: the URL's, the token's, or else the address. */
function heldName(request: Omit<Reservation, "room">): string {
  return request.name ?? request.identity?.name ?? request.address;
}

/**
 * Emptied rooms kept for resumes at most (the oldest emptied goes first):
 * with `--max-clients`, it bounds how many rooms exist at once.
 */
export const MAX_IDLE_ROOMS = 10_000;

/** The IP address of an `IP:PORT` (`[::1]:5000` gives `::1`). */
function ipOf(address: string): string {
  return address.slice(0, address.lastIndexOf(":")).replace(/^\[(.*)\]$/, "$1");
}

/** Rooms, sessions and the backplane of one server. */
export class Chat implements SessionHost, BackplaneReceiver {
  readonly metrics = new Metrics();
  readonly turns = new TurnChecks();
  readonly scheduler = new Scheduler(this.turns);
  readonly backplane: Backplane;
  readonly log: Log;
  readonly limits: AdmissionLimits;
  readonly maxBufferedBytes: number;
  readonly quiet: boolean;
  readonly authSecret?: Uint8Array;
  readonly kickSeconds: number;
  readonly #settings: ChatSettings;
  readonly #roomOptions: RoomOptions;
  readonly #rooms = new Map<string, Room<Session>>();
  /** Emptied rooms, oldest first, each with the timer that drops it after `roomTtl`. */
  readonly #idle = new Map<Room<Session>, ReturnType<typeof setTimeout>>();
  /** Every upgraded socket until its close event: each holds a `maxClients` slot. */
  readonly #sessions = new Set<Session>();
  /** Upgrades waiting on the backplane: each will hold a `maxClients` slot. */
  #reserving = 0;
  /** Sessions and reservations by IP address, for `maxClientsPerIp`. */
  readonly #perIp = new Map<string, number>();
  #lastId = 0;
  #shuttingDown = false;
  #allEnded?: () => void;

  constructor(settings: ChatSettings) {
    this.#settings = settings;
    this.log = settings.log;
    this.limits = settings.limits;
    this.maxBufferedBytes = settings.maxBufferedBytes;
    this.quiet = settings.quiet;
    this.authSecret = settings.authSecret;
    this.kickSeconds = settings.kickSeconds;
    this.backplane = settings.redis === undefined
      ? new LocalBackplane(this)
      : new RedisBackplane({
        ...settings.redis,
        namesLimit: settings.presenceLimit,
        historyKeep: settings.historyKeep,
        roomTtlMs: settings.roomTtl * 1000,
        scheduler: this.scheduler,
      }, this);
    const store = settings.store;
    // What a batch tells must be in the store before the batch leaves.
    if (store) this.turns.beforeSend = () => store.commit();
    this.#roomOptions = {
      backplane: this.backplane,
      history: settings.history,
      historyKeep: settings.historyKeep,
      store,
      historyBudget: new HistoryBudget(settings.historyBytes),
      presenceLimit: settings.presenceLimit,
      echo: settings.echo,
      moderation: new Moderation(),
      scheduler: this.scheduler,
    };
    // The stored rooms wait, as emptied rooms do, for their members to resume.
    for (const name of store?.rooms() ?? []) this.tidy(this.#room(name));
  }

  /** Log lines dropped because the log's output could not keep up (when it counts them). */
  get logDropped(): number {
    return (this.log as Partial<CountingLog>).dropped ?? 0;
  }

  /** The bytes all rooms' history holds. */
  get historyBytes(): number {
    return this.#roomOptions.historyBudget.total;
  }

  get shuttingDown(): boolean {
    return this.#shuttingDown;
  }

  /** Clients in a room, over all rooms. */
  get members(): number {
    let count = 0;
    for (const room of this.#rooms.values()) count += room.size;
    return count;
  }

  /** Rooms with someone in them. */
  get occupiedRooms(): number {
    let count = 0;
    for (const room of this.#rooms.values()) if (room.size > 0) count++;
    return count;
  }

  /** Rooms that exist: occupied, about to be, or emptied and kept for resumes. */
  get rooms(): number {
    return this.#rooms.size;
  }

  /** True while a moderator's kick bars `name` from the room called `room`. */
  kicked(room: string, name: string): boolean {
    return this.#roomOptions.moderation.left("kicked", room, name) > 0;
  }

  /** True when `name` is held in the room called `room` here or on another instance. */
  async nameTaken(room: string, name: string): Promise<boolean> {
    return this.#rooms.get(room)?.has(name) === true ||
      await this.backplane.taken(room, name) === true;
  }

  /**
   * Holds a slot and the client's name (its address without one) for an
   * upgrade; a refusal when the server is full, the name is taken, or the
   * server began shutting down meanwhile.
   */
  async reserve(
    request: Omit<Reservation, "room"> & { room: string },
  ): Promise<Reservation | HttpRefusal> {
    if (this.#sessions.size + this.#reserving >= this.#settings.maxClients) {
      return Refusals.full(this.#settings.maxClients);
    }
    const ip = ipOf(request.address);
    const fromIp = this.#perIp.get(ip) ?? 0;
    if (fromIp >= this.#settings.maxClientsPerIp) {
      return Refusals.fullForIp(ip, this.#settings.maxClientsPerIp);
    }
    this.#perIp.set(ip, fromIp + 1);
    const room = this.#room(request.room);
    const wanted = heldName(request);
    this.#reserving++;
    let held: boolean;
    try {
      // An address is unique here; on another instance it does not matter.
      held = await room.hold(wanted, { exclusive: wanted !== request.address });
    } finally {
      this.#reserving--;
    }
    // Kicked, as another instance may just have told (the hold asks Redis).
    const kicked = this.kicked(room.name, wanted);
    if (held && !this.#shuttingDown && !kicked) {
      return { ...request, room };
    }
    if (held) room.release(wanted);
    this.tidy(room);
    this.#leftIp(request.address);
    return this.#shuttingDown
      ? Refusals.shuttingDown()
      : kicked
      ? Refusals.kicked()
      : Refusals.nameTaken(wanted);
  }

  /** Gives back what `reserve` held, for an upgrade that did not happen. */
  cancel(reservation: Reservation): void {
    reservation.room.release(heldName(reservation));
    this.tidy(reservation.room);
    this.#leftIp(reservation.address);
  }

  /** A session or reservation from `address` is over. */
  #leftIp(address: string): void {
    const ip = ipOf(address);
    const count = (this.#perIp.get(ip) ?? 1) - 1;
    if (count > 0) this.#perIp.set(ip, count);
    else this.#perIp.delete(ip);
  }

  /** A session for an upgraded socket; it joins its room once the socket opens. */
  attach(reservation: Reservation, socket: WebSocket): void {
    this.#sessions.add(
      new Session({
        id: ++this.#lastId,
        socket,
        address: reservation.address,
        name: reservation.name,
        room: reservation.room,
        protocol: reservation.protocol,
        identity: reservation.identity,
        resume: reservation.resume,
        host: this,
      }),
    );
  }

  /** The room called `name`, created (or kept from expiring) if needed. */
  #room(name: string): Room<Session> {
    let room = this.#rooms.get(name);
    if (room) {
      clearTimeout(this.#idle.get(room));
      this.#idle.delete(room);
    } else {
      room = new Room(name, this.#roomOptions);
      this.#rooms.set(name, room);
    }
    return room;
  }

  /**
   * Once nobody is in `room` or about to join it, it waits `roomTtl`
   * seconds for its members to resume, then goes with its history.
   */
  tidy(room: Room<Session>): void {
    if (!room.empty || this.#rooms.get(room.name) !== room || this.#idle.has(room)) {
      return;
    }
    // At shutdown rooms stay as they are: the store keeps them for the restart.
    if (this.#shuttingDown) return;
    const ttl = this.#settings.roomTtl;
    if (ttl === 0) return this.#drop(room);
    this.#idle.set(room, setTimeout(() => this.#drop(room), ttl * 1000));
    if (this.#idle.size > MAX_IDLE_ROOMS) this.#drop(this.#idle.keys().next().value!);
  }

  /** The room and its history go, from the store too. */
  #drop(room: Room<Session>): void {
    clearTimeout(this.#idle.get(room));
    this.#idle.delete(room);
    if (this.#rooms.get(room.name) !== room) return;
    this.#rooms.delete(room.name);
    room.close();
    this.backplane.close(room.name);
    this.#settings.store?.forget(room.name);
  }

  ended(session: Session): void {
    this.tidy(session.room);
    this.#leftIp(session.address);
    this.#sessions.delete(session);
    if (this.#sessions.size === 0) this.#allEnded?.();
  }

  /** A room's event, in the backplane's order, to its members here. */
  deliver(room: string, event: RoomEvent, delivery: Delivery): void {
    const delivered = this.#rooms.get(room)?.deliver(event, delivery) ?? 0;
    this.metrics.messagesDelivered += delivered;
  }

  changed(up: boolean): void {
    for (const room of this.#rooms.values()) {
      room.notify(up ? BACKPLANE_BACK : BACKPLANE_DOWN);
    }
  }

  missed(room: string): void {
    this.#rooms.get(room)?.notify(MESSAGES_LOST);
  }

  duplicate(room: string, event: RoomEvent & { kind: "message" }): void {
    if (event.origin === this.backplane.instance && event.ref !== undefined) {
      this.#rooms.get(room)?.duplicate(event.conn, event.ref);
    }
  }

  deliveryCost(room: string, event: RoomEvent, delivery: Delivery): number {
    return this.#rooms.get(room)?.deliveryCost(event, delivery) ?? 0;
  }

  presence(): Map<string, string[]> {
    const rooms = new Map<string, string[]>();
    for (const room of this.#rooms.values()) {
      if (room.size > 0) rooms.set(room.name, room.who());
    }
    return rooms;
  }

  /**
   * Refuses new clients, lets every client that reads take what it was
   * owed, closes each with 1001, then lets the backplane go; by `deadline`
   * even if some client never reads.
   */
  async shutdown(deadline: Promise<void>): Promise<void> {
    this.#shuttingDown = true;
    // Input admitted before the shutdown is delivered before the goodbyes.
    this.scheduler.stop();
    const ended = new Promise<void>((resolve) => {
      this.#allEnded = resolve;
      if (this.#sessions.size === 0) resolve();
    });
    for (const session of this.#sessions) void session.shutdown(deadline);
    await Promise.race([ended, deadline]);
    this.turns.stop();
    for (const timer of this.#idle.values()) clearTimeout(timer);
    this.#idle.clear();
    for (const room of this.#rooms.values()) room.close();
    this.#rooms.clear();
    this.#settings.store?.close();
    await this.backplane.stop();
  }
}

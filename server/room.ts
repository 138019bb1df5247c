/**
 * A room: the members that receive each other's messages, the names held in
 * it, its recent history (with each message's id and the room's epoch, for
 * resumes) and who is online. A room never touches sockets.
 * It sends its events through the backplane (`publish`), which fixes their
 * order, and takes them back from it (`deliver`) to hand each member a frame
 * encoded once per codec, not once per member.
 *
 * @module
 */

import {
  CloseCode,
  kickedNotice,
  kickedReason,
  mutedNotice,
  nameKey,
} from "../lib/protocol.ts";
import {
  type Backplane,
  type Delivery,
  type Held,
  newEpoch,
  type RoomEvent,
} from "./backplane.ts";
import { type ChatMessage, type Codec, CODEC_SLOTS, type Frame } from "./codec.ts";
import { heldBytes, History, type HistoryBudget } from "./history.ts";
import type { Scheduler, Waiting } from "./scheduler.ts";
import type { Store } from "./store.ts";

/** YewChat-style member lists go to a room at most this often. */
export const USER_LIST_INTERVAL_MS = 250;

/** Someone who receives a room's events. */
export interface Member {
  /** Tells members of one instance apart (events name their sender by it). */
  readonly id: number;
  /** How others see this member: its name, or its address without one. */
  readonly name: string;
  /** How its frames are encoded. */
  readonly codec: Codec;
  /**
   * Queues one encoded frame for this member; `place`, a chat message's in
   * the room's history. Must not throw.
   */
  deliver(frame: Frame, place?: Place): void;
  /** Takes it out of the room and closes it with `code` and `reason` (a kick). */
  close(code: number, reason: string): void;
}

/**
 * A client upgraded into the room but not yet in it (an unnamed client
 * waits to say whether it speaks YewChat): it sees the room's chat messages
 * from its upgrade on, to be sent after its welcome and history.
 */
export interface Arrival {
  /** A chat message the room delivered, and its place. Must not throw. */
  witness(message: ChatMessage, place?: Place): void;
}

/** Where a chat message stands in its room's history: its id, in an epoch. */
export interface Place {
  id: number;
  epoch: string;
}

/** Where a reconnecting client left off: the last message id it saw, and its room's epoch then. */
export interface Resume {
  since: number;
  epoch: string;
}

/** The room's messages as a client gets them on joining, and where the room stands. */
export interface Recent {
  /** The room's history epoch. */
  epoch: string;
  /** The id of the room's latest message (0 for none). */
  last: number;
  /** What the client gets, oldest first. */
  messages: readonly ChatMessage[];
  /**
   * For a resume, the messages it cannot send (`null`: the epoch changed,
   * so it cannot tell); absent without a resume.
   */
  missed?: number | null;
}

/**
 * What a client joining with `count` recent messages, or resuming, gets of
 * what a room holds: a newcomer the last `count`; a resume every message
 * after `since` (and how many it cannot send), or, when the epoch differs
 * or `since` is past the latest id, the last `count` and `missed: null`.
 */
export function recentFor(held: Held, count: number, resume?: Resume): Recent {
  const { epoch, last, messages } = held;
  const latest = count === 0 ? [] : messages.slice(-count);
  if (!resume) return { epoch, last, messages: latest };
  if (resume.epoch !== epoch || resume.since > last) {
    return { epoch, last, messages: latest, missed: null };
  }
  // Messages without an id (delivered while the backplane was down) cannot be placed.
  const after = messages.filter((m) => m.id !== undefined && m.id > resume.since);
  const first = after.length > 0 ? after[0].id! : last + 1;
  return { epoch, last, messages: after, missed: first - resume.since - 1 };
}

/**
 * A resume's messages cut to the newest that fit in `bytes` (as the history
 * budget counts them): the older ones count as missed, so that a client
 * that was away long is told what it missed rather than closed as too slow.
 */
export function withinBacklog(recent: Recent, bytes: number): Recent {
  if (recent.missed === undefined) return recent;
  const messages = recent.messages;
  let first = messages.length;
  let total = 0;
  while (first > 0 && (total += heldBytes(messages[first - 1])) <= bytes) first--;
  if (first === 0) return recent;
  return {
    ...recent,
    messages: messages.slice(first),
    missed: recent.missed === null ? null : recent.missed + first,
  };
}

/** What every room of a chat is told. */
export interface RoomOptions {
  /** Carries the room's events, in order, to every instance. */
  backplane: Backplane;
  /** Recent messages a newcomer receives. */
  history: number;
  /** Messages kept for resumes (at least `history`); `0` keeps none. */
  historyKeep: number;
  /** Keeps each room's history, counter and epoch across restarts (`--store`). */
  store?: Store;
  /** The byte budget all rooms' histories share. */
  historyBudget: HistoryBudget;
  /** Joined/left notices go out while a room has at most this many members. */
  presenceLimit: number;
  /** Chat messages go back to their sender too. */
  echo: boolean;
  /** Kicks and mutes, which outlive a room that empties. */
  moderation: Moderation;
  /** Shares the event loop: a large room's member list goes out a part per turn. */
  scheduler: Pick<Scheduler, "mayRun" | "wait">;
}

/**
 * Who is kicked out of or muted in which room, and until when: kept by the
 * chat rather than the room, since a kicked member leaving may empty it.
 */
export class Moderation {
  readonly #until = new Map<string, number>();

  #key(kind: "kicked" | "muted", room: string, name: string): string {
    return `${kind} ${room} ${nameKey(name)}`;
  }

  hold(kind: "kicked" | "muted", room: string, name: string, until: number): void {
    this.#until.set(this.#key(kind, room, name), until);
  }

  /** Milliseconds it still holds; 0 when it does not (a lapsed entry goes). */
  left(kind: "kicked" | "muted", room: string, name: string): number {
    // Asked for every message: nothing to look up (or build a key for) when
    // nobody is kicked or muted anywhere.
    if (this.#until.size === 0) return 0;
    const key = this.#key(kind, room, name);
    const left = (this.#until.get(key) ?? 0) - Date.now();
    if (left > 0) return left;
    this.#until.delete(key);
    return 0;
  }
}

/** Members who receive each other's events, in the backplane's order. */
export class Room<M extends Member = Member> {
  /** By id, so that a receipt finds its sender without a search. */
  readonly #members = new Map<number, M>();
  /** Clients about to join, who see its messages meanwhile. */
  readonly #arriving = new Set<Arrival>();
  /** Members whose codec carries user lists: they get one on every change. */
  #listeners = 0;
  /** Names held by members and by upgrades about to join, by `nameKey`: each once. */
  readonly #names = new Set<string>();
  readonly #history: History;
  /** Its history's epoch: changes whenever the history is lost. */
  #epoch: string;
  /** The id of its latest chat message. */
  #last = 0;
  /** When the last member list went out (`performance.now()`). */
  #listedAt = -Infinity;
  /** The member list being sent a part per turn, if one is. */
  #listSending?: Waiting;
  /** The members changed since the last list began. */
  #listDue = false;
  /** The next member list, once `USER_LIST_INTERVAL_MS` has passed since the last. */
  #listTimer?: ReturnType<typeof setTimeout>;
  /** The names for that list; `undefined` to ask the backplane then. */
  #listNames?: readonly string[];
  /** One encoded frame per codec for the event being delivered. */
  readonly #frames: (Frame | undefined)[] = new Array(CODEC_SLOTS);

  constructor(
    /** The room's name; `""` is the default room at `/`. */
    readonly name: string,
    readonly options: RoomOptions,
  ) {
    this.#history = new History(options.historyKeep, options.historyBudget);
    const saved = options.store?.load(name);
    this.#epoch = saved?.epoch ?? newEpoch();
    this.#last = saved?.last ?? 0;
    for (const message of saved?.messages ?? []) this.#history.add(message);
  }

  /** How many members the room has. */
  get size(): number {
    return this.#members.size;
  }

  /** True while nobody is in the room or about to join it. */
  get empty(): boolean {
    return this.#members.size === 0 && this.#names.size === 0;
  }

  /** True when `name` is held here. */
  has(name: string): boolean {
    return this.#names.has(nameKey(name));
  }

  /**
   * Holds `name` on this instance at once, then on every instance: false
   * (and nothing held) when it is taken here, or, with `exclusive`, taken
   * on another instance. The room's events flow here once this resolves.
   */
  async hold(name: string, options: { exclusive: boolean }): Promise<boolean> {
    const key = nameKey(name);
    if (this.#names.has(key)) return false;
    this.#names.add(key);
    const backplane = this.options.backplane;
    if (!backplane.shared) return true;
    const [answer, , sanctions] = await backplane.started.then(() =>
      Promise.all([
        backplane.claim(this.name, name),
        backplane.open(this.name),
        backplane.moderation(this.name, name),
      ])
    );
    // A kick or mute made while this instance did not serve the room.
    for (const kind of ["kicked", "muted"] as const) {
      const until = sanctions?.[kind];
      if (until) this.options.moderation.hold(kind, this.name, name, until);
    }
    if (answer === "taken" && options.exclusive) {
      this.#names.delete(key);
      return false;
    }
    return true;
  }

  /** Gives a held name back, here and on the backplane. */
  release(name: string): void {
    this.#names.delete(nameKey(name));
    this.options.backplane.release(this.name, name);
  }

  /** Whole seconds `name` stays muted; 0 when it may speak. */
  mutedFor(name: string): number {
    return Math.ceil(this.options.moderation.left("muted", this.name, name) / 1000);
  }

  /** `arrival` sees the room's chat messages until `unwatch`. */
  watch(arrival: Arrival): void {
    this.#arriving.add(arrival);
  }

  unwatch(arrival: Arrival): void {
    this.#arriving.delete(arrival);
  }

  /** Adds a member (holding its name) and announces it to the room. */
  join(member: M): void {
    this.#members.set(member.id, member);
    if (member.codec.listsMembers) this.#listeners++;
    this.publish({
      kind: "joined",
      name: member.name,
      origin: this.options.backplane.instance,
      conn: member.id,
    });
  }

  /**
   * Takes a member out and gives its name back, announcing that it left;
   * for a name held by an upgrade that never joined, just gives it back.
   */
  leave(member: M): void {
    this.#names.delete(nameKey(member.name));
    const wasMember = this.#isMember(member) && this.#members.delete(member.id);
    if (wasMember && member.codec.listsMembers) this.#listeners--;
    const backplane = this.options.backplane;
    backplane.release(
      this.name,
      member.name,
      wasMember
        ? { kind: "left", name: member.name, origin: backplane.instance, conn: member.id }
        : undefined,
    );
  }

  /**
   * True when a message with `ref` is held here: the same again is a
   * duplicate (through Redis, Redis tells too, of messages in flight).
   */
  holds(ref: string): boolean {
    return this.#history.hasRef(ref);
  }

  /** A member's chat message, to the room's members on every instance. */
  post(member: M, text: string, ref?: string): void {
    this.publish({
      kind: "message",
      from: member.name,
      text,
      time: Date.now(),
      ref,
      origin: this.options.backplane.instance,
      conn: member.id,
    });
  }

  /** The backplane found `ref` held already: its sender (if here) is told. */
  duplicate(conn: number, ref: string): void {
    this.#receipt(conn, "duplicate", ref);
  }

  /** Sends an event to the room's members on every instance, through the backplane. */
  publish(event: RoomEvent): void {
    this.options.backplane.publish(this.name, event);
  }

  /** The members' names here, in the order they joined. */
  who(): string[] {
    return [...this.#members.values()].map((member) => member.name);
  }

  /**
   * The members' names on every instance (sorted when the backplane
   * answers): at once in process, so an answer goes out before anything
   * the client sends next is handled.
   */
  everyone(): string[] | Promise<string[]> {
    const backplane = this.options.backplane;
    if (!backplane.shared) return this.who();
    // This instance's members alone while the backplane is down.
    return backplane.who(this.name).then((names) => names ?? this.who().sort());
  }

  /** Its history epoch, as this instance knows it. */
  get epoch(): string {
    return this.#epoch;
  }

  /**
   * What a client joining now gets (see `recentFor`): from the shared
   * backplane while it is up, else from this instance's history.
   */
  recent(resume?: Resume): Recent | Promise<Recent> {
    const count = this.options.history;
    const local = () =>
      recentFor(
        {
          epoch: this.#epoch,
          last: this.#last,
          // A newcomer gets the last `count`: the others are not made.
          messages: resume ? this.#history.messages : this.#history.latest(count),
        },
        count,
        resume,
      );
    const backplane = this.options.backplane;
    if (!backplane.shared || !backplane.up) return local();
    return backplane.history(this.name).then((held) =>
      held ? recentFor(held, count, resume) : local()
    );
  }

  /**
   * How many frames a member's chat message is likely to send here as it is
   * handled: one a member in process, none while a shared backplane carries
   * it (its frames go when it comes back, a delivery costed of its own). An
   * estimate of one a member there would make the scheduler pass a waiting
   * client's message over for the deliveries and give it a turn of its own
   * that sends nothing.
   */
  get messageCost(): number {
    const backplane = this.options.backplane;
    return backplane.shared && backplane.up ? 0 : this.#members.size;
  }

  /**
   * How many frames delivering `event` here is likely to send: one a member
   * for a chat message, a kick, or a join or leave that is announced; none
   * for a join or leave past `presenceLimit` (a member list goes in parts of
   * its own).
   */
  deliveryCost(event: RoomEvent, delivery: Delivery): number {
    const members = this.#members.size;
    switch (event.kind) {
      case "message":
      case "kicked":
        return members;
      case "muted":
        return 1;
      case "joined":
      case "left":
        return this.#announced(delivery) === undefined ? 0 : members;
    }
  }

  /**
   * The count a join or leave is announced with (all instances counted,
   * where the backplane says), or undefined past `presenceLimit`.
   */
  #announced(delivery: Delivery): number | undefined {
    const online = delivery.online ?? this.#members.size;
    return online <= this.options.presenceLimit ? online : undefined;
  }

  /**
   * An event in the backplane's order, to this instance's members: a chat
   * message to every member (but its sender without echo), a join or leave
   * as a notice and a user list. Returns how many chat messages it handed out.
   */
  deliver(event: RoomEvent, delivery: Delivery): number {
    const backplane = this.options.backplane;
    const subject = event.origin === backplane.instance ? event.conn : undefined;
    this.#frames.fill(undefined);
    if (event.kind === "message") {
      // In process the room numbers its messages; through Redis, Redis does
      // (and none has an id while it is down).
      let id: number | undefined;
      if (delivery.id !== undefined) {
        id = this.#last = delivery.id;
        this.#epoch = delivery.epoch ?? this.#epoch;
      } else if (!backplane.shared) id = ++this.#last;
      const message: ChatMessage = {
        from: event.from,
        text: event.text,
        time: event.time,
        id,
        ref: event.ref,
      };
      this.#history.add(message);
      if (id !== undefined) this.options.store?.append(this.name, this.#epoch, message);
      const place = id === undefined ? undefined : { id, epoch: this.#epoch };
      for (const arrival of this.#arriving) arrival.witness(message, place);
      const echo = this.options.echo;
      const delivered = this.#send((codec) => codec.message(message), {
        except: echo ? undefined : subject,
        place,
      });
      // Without echo, a sender that gave a ref learns its message went out.
      if (!echo && subject !== undefined && event.ref !== undefined) {
        this.#receipt(subject, "accepted", event.ref);
      }
      return delivered;
    }
    if (event.kind === "kicked" || event.kind === "muted") return this.#moderated(event);
    const online = this.#announced(delivery);
    if (online !== undefined) {
      const { kind, name } = event;
      this.#send((codec) => codec.presence(kind, name, online), { except: subject });
    }
    if (this.#listeners === 0) return 0;
    // Through Redis, a large room's events do not list names: ask for them.
    const names = delivery.names ?? (delivery.seq === undefined ? this.who() : undefined);
    this.#list(names);
    return 0;
  }

  /** A receipt (`accepted`, `duplicate`) for `ref` to the member `conn`, if it is here. */
  #receipt(conn: number, type: "accepted" | "duplicate", ref: string): void {
    const member = this.#members.get(conn);
    const frame = member?.codec.receipt(type, ref);
    if (frame) member!.deliver(frame);
  }

  #isMember(member: M): boolean {
    return this.#members.get(member.id) === member;
  }

  /** A kick or a mute, from a moderator on any instance: it holds here too. */
  #moderated(event: Extract<RoomEvent, { kind: "kicked" | "muted" }>): number {
    const key = nameKey(event.name);
    const targets = [...this.#members.values()].filter((m) => nameKey(m.name) === key);
    this.options.moderation.hold(event.kind, this.name, event.name, event.until);
    if (event.kind === "muted") {
      const frame = (codec: Codec) =>
        codec.notice(mutedNotice(this.mutedFor(event.name)));
      for (const member of targets) {
        const encoded = frame(member.codec);
        if (encoded) member.deliver(encoded);
      }
      return 0;
    }
    for (const member of targets) {
      member.close(CloseCode.KICKED, kickedReason(event.reason ?? ""));
    }
    this.#frames.fill(undefined);
    this.#send((codec) => codec.notice(kickedNotice(event.name, event.by)), {});
    return 0;
  }

  /**
   * Sends the member list to the members whose codec carries one, at most
   * once per `USER_LIST_INTERVAL_MS`: changes in between are folded into
   * the next list, so N joins cost O(N) lists, not O(N²). `undefined`
   * names are asked of the backplane when the list goes out.
   */
  #list(names: readonly string[] | undefined): void {
    this.#listNames = names;
    this.#listDue = true;
    this.#nextList();
  }

  /**
   * Sends the due list once `USER_LIST_INTERVAL_MS` has passed since the
   * last one went out (all of it: a large room's takes several turns).
   */
  #nextList(): void {
    if (!this.#listDue || this.#listTimer !== undefined || this.#listSending) return;
    const wait = this.#listedAt + USER_LIST_INTERVAL_MS - performance.now();
    if (wait <= 0) return this.#sendList();
    this.#listTimer = setTimeout(() => {
      this.#listTimer = undefined;
      this.#sendList();
    }, wait);
  }

  #sendList(): void {
    this.#listDue = false;
    this.#listedAt = performance.now();
    const names = this.#listNames;
    if (names) this.users(names);
    else void Promise.resolve(this.everyone()).then((everyone) => this.users(everyone));
  }

  /** The room is dropped (or the server stops): its history goes, and no list is due. */
  close(): void {
    clearTimeout(this.#listTimer);
    this.#listTimer = undefined;
    this.#listSending = undefined;
    this.#listDue = false;
    this.#history.clear();
  }

  /**
   * A notice to every member, whatever the room's size (codecs without
   * notices get nothing).
   */
  notify(notice: string): void {
    this.#frames.fill(undefined);
    this.#send((codec) => codec.notice(notice), {});
  }

  /**
   * Sends the user list to the members whose codec carries one. In a large
   * room that is as many large frames as members (1,200 YewChat clients:
   * 1,200 frames of 10 KB), so what one turn's budget does not cover goes in
   * later turns, between others' input, `LIST_PART` members at a time, to
   * whoever is still a member then.
   */
  users(names: readonly string[]): void {
    const members = [...this.#members.values()];
    const frames: (Frame | undefined)[] = [];
    const encode = (codec: Codec) => codec.users(names);
    let next = 0;
    // About a frame's bytes: the names and their quotes and commas.
    const listBytes = names.reduce((sum, name) => sum + name.length + 3, 64);
    const list: Waiting = {
      waitingCost: () => ({ frames: LIST_PART, bytes: LIST_PART * listBytes }),
      runWaiting: () => {
        // The room's end stops it.
        if (this.#listSending !== list) return false;
        const part = members.slice(next, next + LIST_PART);
        next += part.length;
        this.#send(encode, { to: part.filter((m) => this.#isMember(m)), frames });
        if (next < members.length) return true;
        this.#listSending = undefined;
        this.#listedAt = performance.now();
        this.#nextList();
        return false;
      },
    };
    this.#listSending = list;
    const scheduler = this.options.scheduler;
    while (scheduler.mayRun()) if (!list.runWaiting()) return;
    scheduler.wait(list);
  }

  /**
   * Hands each member but `except` its codec's frame, encoded once per
   * codec; returns how many members got one. Delivery is synchronous, so
   * every member sees events in the order they were delivered.
   */
  #send(
    encode: (codec: Codec) => Frame | undefined,
    { except, place, to = this.#members.values(), frames = this.#frames }: {
      except?: number;
      place?: Place;
      /** Who gets it: every member by default. */
      to?: Iterable<M>;
      /** Frames encoded so far for this event, by codec slot. */
      frames?: (Frame | undefined)[];
    },
  ): number {
    let recipients = 0;
    for (const member of to) {
      if (member.id === except) continue;
      const slot = member.codec.slot;
      const frame = frames[slot] ??= encode(member.codec) ?? NOTHING;
      if (frame === NOTHING) continue;
      member.deliver(frame, place);
      recipients++;
    }
    return recipients;
  }
}

/** Members a user list goes to between two looks at the turn's budget. */
const LIST_PART = 16;

/** Stands in the frame cache for "this codec carries nothing for this event". */
const NOTHING: Frame = { text: "", bytes: 0 };

/**
 * Rooms: the members that receive each other's messages, the room's recent
 * history and who is online. A room never touches sockets: it hands each
 * member an already encoded frame, encoded once per codec, not once per
 * member. A `Hub` maps room names to rooms and drops a room once it is empty.
 *
 * @module
 */

import { chatLine, yewMessage, yewUsers } from "./protocol.ts";
import { utf8Length } from "./limits.ts";

/**
 * How a member wants its frames: `plain` text lines (`SENDER: TEXT`, notices
 * starting with `* `), or the YewChat front end's JSON, which carries chat
 * messages and user lists only.
 */
export type Codec = "plain" | "yew";

/** Someone who receives a room's messages. */
export interface Member {
  /** Tells members of one instance apart (events name their sender by it). */
  readonly id: number;
  /** How others see this member: its name, or its address without one. */
  readonly sender: string;
  /** The form its frames take. */
  readonly codec: Codec;
  /**
   * Queues one encoded frame for this member; `bytes` is its UTF-8 length
   * when the caller knows it (a broadcast computes it once for everyone),
   * `seq` a chat message's place in the backplane's order. Must not throw.
   */
  deliver(frame: string, bytes?: number, seq?: number): void;
}

/** One chat message, before it is encoded for anyone. */
export interface ChatMessage {
  from: string;
  text: string;
  /** When the server accepted it, in milliseconds since the epoch. */
  time: number;
}

/** Members who receive each other's messages, in the order they arrive. */
export class Room<M extends Member = Member> {
  readonly #members = new Set<M>();
  /** The YewChat members: they need the user list on every change. */
  readonly #yew = new Set<M>();
  /** Names claimed by upgrades not yet open, and by members: each name once. */
  readonly #names = new Set<string>();
  readonly #history: string[] = [];

  constructor(
    /** The room's name; `""` is the default room at `/`. */
    readonly name: string,
    /** How many recent messages a newcomer receives; `0` keeps none. */
    readonly historySize: number,
    /**
     * Joined/left notices go out while the room has at most this many
     * members: past it, each join would cost a line to everyone.
     */
    readonly presenceLimit: number = Infinity,
  ) {}

  /** Claims `name` for a member about to join; false when it is taken. */
  claim(name: string): boolean {
    if (this.#names.has(name)) return false;
    this.#names.add(name);
    return true;
  }

  /** True when `name` is claimed. */
  has(name: string): boolean {
    return this.#names.has(name);
  }

  /** Gives a claimed name back. */
  release(name: string): void {
    this.#names.delete(name);
  }

  /** True while nobody is in the room or about to join it. */
  get empty(): boolean {
    return this.#members.size === 0 && this.#names.size === 0;
  }

  /** How many members the room has. */
  get size(): number {
    return this.#members.size;
  }

  /** True when some member speaks YewChat (and so needs user lists). */
  get hasYew(): boolean {
    return this.#yew.size > 0;
  }

  /** The members' names, in the order they joined. */
  who(): string[] {
    return [...this.#members].map((member) => member.sender);
  }

  /** The recent messages as plain lines, oldest first. */
  history(): readonly string[] {
    return this.#history;
  }

  /** Adds a member; nobody is told (see `announce`). False if it was one already. */
  add(member: M): boolean {
    if (this.#members.has(member)) return false;
    this.#members.add(member);
    if (member.codec === "yew") this.#yew.add(member);
    return true;
  }

  /** Removes a member; false if it was not one. */
  remove(member: M): boolean {
    this.#yew.delete(member);
    return this.#members.delete(member);
  }

  /**
   * A join or leave: plain members but the subject (`except`, a member id)
   * get `notice` while the room has at most `presenceLimit` members
   * (`online`, on every instance); YewChat members get the user list
   * `users` on every change, whatever the room's size, since they show
   * messages only from senders on their latest list.
   */
  announce(
    notice: string,
    online: number,
    users: readonly string[] | undefined,
    except?: number,
  ): void {
    if (online <= this.presenceLimit) {
      for (const member of this.#members) {
        if (member.id !== except && member.codec === "plain") member.deliver(notice);
      }
    }
    if (users) this.users(users);
  }

  /** Sends YewChat members the user list. */
  users(names: readonly string[]): void {
    if (this.#yew.size === 0) return;
    const list = yewUsers(names);
    for (const member of this.#yew) member.deliver(list);
  }

  /** A notice to every plain member, whatever the room's size. */
  notify(notice: string): void {
    for (const member of this.#members) {
      if (member.codec === "plain") member.deliver(notice);
    }
  }

  /**
   * Hands a chat message to every member but the one whose id is `except`,
   * encoded once per codec; delivery is synchronous, so every member sees
   * messages in the order they were broadcast. The message joins the
   * history. Returns how many members it was handed to.
   */
  broadcast(message: ChatMessage, except?: number, seq?: number): number {
    const line = chatLine(message.from, message.text);
    const lineBytes = utf8Length(line);
    let json: string | undefined;
    let jsonBytes = 0;
    let recipients = 0;
    for (const member of this.#members) {
      if (member.id === except) continue;
      recipients++;
      if (member.codec === "plain") {
        member.deliver(line, lineBytes, seq);
      } else {
        if (json === undefined) {
          json = yewMessage(message);
          jsonBytes = utf8Length(json);
        }
        member.deliver(json, jsonBytes, seq);
      }
    }
    if (this.historySize > 0) {
      this.#history.push(line);
      if (this.#history.length > this.historySize) this.#history.shift();
    }
    return recipients;
  }
}

/** Rooms by name: created when first needed, dropped (with their history) once empty. */
export class Hub<M extends Member = Member> {
  readonly #rooms = new Map<string, Room<M>>();

  constructor(readonly historySize: number, readonly presenceLimit: number = Infinity) {}

  /** The room called `name`, created if needed. */
  room(name: string): Room<M> {
    let room = this.#rooms.get(name);
    if (!room) {
      room = new Room<M>(name, this.historySize, this.presenceLimit);
      this.#rooms.set(name, room);
    }
    return room;
  }

  /** True when `name` is taken in the room called `room` (creating nothing). */
  has(room: string, name: string): boolean {
    return this.#rooms.get(room)?.has(name) ?? false;
  }

  /** The room called `name` if it exists. */
  get(name: string): Room<M> | undefined {
    return this.#rooms.get(name);
  }

  /** Drops `room` if nobody is in it or about to join it; true if it did. */
  tidy(room: Room<M>): boolean {
    if (!room.empty || this.#rooms.get(room.name) !== room) return false;
    this.#rooms.delete(room.name);
    return true;
  }

  /** Every room. */
  rooms(): IterableIterator<Room<M>> {
    return this.#rooms.values();
  }

  /** How many rooms exist. */
  get size(): number {
    return this.#rooms.size;
  }

  /** How many rooms have someone in them. */
  get occupied(): number {
    let count = 0;
    for (const room of this.#rooms.values()) if (room.size > 0) count++;
    return count;
  }

  /** How many members all rooms have. */
  get members(): number {
    let count = 0;
    for (const room of this.#rooms.values()) count += room.size;
    return count;
  }
}

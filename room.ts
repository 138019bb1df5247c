/**
 * A room: the set of members that receive each other's messages. It never
 * touches sockets; it hands each line to its members, which decide how to
 * send it.
 *
 * @module
 */

/** Someone who receives a room's messages. */
export interface Member {
  /** How others see this member: its name, or its address without one. */
  readonly sender: string;
  /** Queues one line for this member. Must not throw. */
  deliver(line: string): void;
}

/** Members who receive each other's messages, in the order they arrive. */
export class Room<M extends Member = Member> {
  readonly #members = new Set<M>();

  /** Adds a member; from now on it receives every broadcast. */
  join(member: M): void {
    this.#members.add(member);
  }

  /** Removes a member; it receives nothing more. Removing twice is harmless. */
  leave(member: M): void {
    this.#members.delete(member);
  }

  /** How many members the room has. */
  get size(): number {
    return this.#members.size;
  }

  /** The members, in the order they joined. */
  members(): IterableIterator<M> {
    return this.#members.values();
  }

  /**
   * Hands `line` to every member except `except`. The line is built once by
   * the caller and shared by all recipients; delivery is synchronous, so
   * every member sees broadcasts in the order they were made.
   */
  broadcast(line: string, except?: M): void {
    for (const member of this.#members) {
      if (member !== except) member.deliver(line);
    }
  }
}

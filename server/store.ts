/**
 * Where rooms' history outlives the process (`--store FILE`): an embedded
 * SQLite database (`node:sqlite`, built into Deno) holding each room's last
 * `--history-keep` messages with their ids and refs, its latest id and its
 * epoch, so that a restart keeps ids increasing and epochs unchanged and
 * clients resume across it.
 *
 * Writes never cost the message path a disk write each: a turn's messages
 * are written in one transaction at the turn's end, before any batch of
 * that turn leaves (`TurnChecks.beforeSend`), so a batching client never
 * sees a message that a crash then loses. A write that fails (a full disk)
 * is logged once, and the chat goes on in memory.
 *
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import { clearImmediate, setImmediate } from "node:timers";
import { errorText } from "../lib/errors.ts";
import type { Held } from "./backplane.ts";
import type { ChatMessage } from "./codec.ts";
import type { Log } from "./log.ts";

/** What the chat keeps through a store. */
export interface Store {
  /** The rooms it holds, to be loaded and expire like rooms that emptied. */
  rooms(): string[];
  /** A room's saved history, or `undefined` when it holds none. */
  load(room: string): Held | undefined;
  /** Keeps a delivered message (with its id), written by the end of the turn. */
  append(room: string, epoch: string, message: ChatMessage): void;
  /** Drops a room's history (the room expired). */
  forget(room: string): void;
  /** Writes what is pending now. */
  commit(): void;
  /** Writes what is pending and closes the file. */
  close(): void;
}

/** A store that cannot be used, said in one line (the server exits 1). */
export class StoreError extends Error {}

/** The schema's version, in SQLite's `user_version`. */
const SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS rooms (
  name TEXT PRIMARY KEY,
  epoch TEXT NOT NULL,
  last INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
  room TEXT NOT NULL,
  id INTEGER NOT NULL,
  sender TEXT NOT NULL,
  text TEXT NOT NULL,
  time INTEGER NOT NULL,
  ref TEXT,
  PRIMARY KEY (room, id)
) WITHOUT ROWID;
PRAGMA user_version = ${SCHEMA_VERSION};
`;

/** A pending write: one message of one room. */
interface Pending {
  room: string;
  epoch: string;
  message: ChatMessage;
}

/** History in an SQLite file. */
export class SqliteStore implements Store {
  readonly #db: DatabaseSync;
  readonly #keep: number;
  readonly #log: Log;
  readonly #file: string;
  #pending: Pending[] = [];
  #timer?: ReturnType<typeof setImmediate>;
  /** Set once a write failed: the chat goes on in memory. */
  #failed = false;
  readonly #insert: StatementSync;
  readonly #saveRoom: StatementSync;
  readonly #trim: StatementSync;

  /**
   * Opens (or creates) the store in `file`, keeping `keep` messages a room;
   * a `StoreError` when the file cannot be used.
   */
  constructor(file: string, options: { keep: number; log: Log }) {
    this.#file = file;
    this.#keep = options.keep;
    this.#log = options.log;
    try {
      this.#db = new DatabaseSync(file);
      const { user_version } = this.#db.prepare("PRAGMA user_version").get() as {
        user_version: number;
      };
      if (user_version !== 0 && user_version !== SCHEMA_VERSION) {
        throw new Error(`schema version ${user_version} is not this server's`);
      }
      // WAL: a commit is one append to the log, and a crash of the process
      // (not of the machine) loses nothing committed.
      this.#db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;");
      this.#db.exec(SCHEMA);
      this.#insert = this.#db.prepare(
        "INSERT OR REPLACE INTO messages (room, id, sender, text, time, ref) VALUES (?, ?, ?, ?, ?, ?)",
      );
      this.#saveRoom = this.#db.prepare(
        "INSERT OR REPLACE INTO rooms (name, epoch, last) VALUES (?, ?, ?)",
      );
      this.#trim = this.#db.prepare("DELETE FROM messages WHERE room = ? AND id <= ?");
    } catch (error) {
      throw new StoreError(
        `cannot use --store ${JSON.stringify(file)}: ${errorText(error)}`,
      );
    }
  }

  rooms(): string[] {
    const rows = this.#db.prepare("SELECT name FROM rooms").all() as { name: string }[];
    return rows.map((row) => row.name);
  }

  load(room: string): Held | undefined {
    this.commit();
    const saved = this.#db.prepare("SELECT epoch, last FROM rooms WHERE name = ?")
      .get(room) as { epoch: string; last: number } | undefined;
    if (!saved) return undefined;
    const rows = this.#db.prepare(
      "SELECT id, sender, text, time, ref FROM messages WHERE room = ? ORDER BY id DESC LIMIT ?",
    ).all(room, this.#keep) as {
      id: number;
      sender: string;
      text: string;
      time: number;
      ref: string | null;
    }[];
    const messages = rows.reverse().map((row): ChatMessage => ({
      from: row.sender,
      text: row.text,
      time: row.time,
      id: row.id,
      ref: row.ref ?? undefined,
    }));
    return { epoch: saved.epoch, last: saved.last, messages };
  }

  append(room: string, epoch: string, message: ChatMessage): void {
    if (this.#failed) return;
    this.#pending.push({ room, epoch, message });
    this.#timer ??= setImmediate(() => this.commit());
  }

  forget(room: string): void {
    this.commit();
    if (this.#failed) return;
    this.#write(() => {
      this.#db.prepare("DELETE FROM messages WHERE room = ?").run(room);
      this.#db.prepare("DELETE FROM rooms WHERE name = ?").run(room);
    });
  }

  commit(): void {
    clearImmediate(this.#timer);
    this.#timer = undefined;
    if (this.#pending.length === 0) return;
    const pending = this.#pending;
    this.#pending = [];
    this.#write(() => {
      const rooms = new Map<string, Pending>();
      for (const entry of pending) {
        const m = entry.message;
        this.#insert.run(entry.room, m.id!, m.from, m.text, m.time, m.ref ?? null);
        rooms.set(entry.room, entry);
      }
      for (const [room, latest] of rooms) {
        const last = latest.message.id!;
        this.#saveRoom.run(room, latest.epoch, last);
        this.#trim.run(room, last - this.#keep);
      }
    });
  }

  close(): void {
    this.commit();
    this.#db.close();
  }

  /** Runs `work` in one transaction; a failure is logged once and writing stops. */
  #write(work: () => void): void {
    if (this.#failed) return;
    try {
      this.#db.exec("BEGIN");
      work();
      this.#db.exec("COMMIT");
    } catch (error) {
      this.#failed = true;
      try {
        this.#db.exec("ROLLBACK");
      } catch {
        // No transaction left to roll back.
      }
      this.#log(
        `Store: cannot write ${this.#file}: ${
          errorText(error)
        }; history goes on in memory only`,
      );
    }
  }
}

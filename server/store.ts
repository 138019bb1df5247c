/**
 * Where rooms' history outlives the process (`--store FILE`): an embedded
 * SQLite database (`node:sqlite`, built into Deno) holding each room's last
 * `--history-keep` messages with their ids and refs, its latest id and its
 * epoch, so that a restart keeps ids increasing and epochs unchanged and
 * clients resume across it.
 *
 * Writes never cost the message path a disk write each: messages are
 * written together, one row a room, within `STORE_WRITE_MS`, and before
 * any batch that carries them leaves (`TurnChecks.beforeSend`), so a
 * batching client (`chat.json`, `chat.batch`) never sees a message that a
 * crash then loses. A write that fails (a full disk) is logged once, and
 * the chat goes on in memory.
 *
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
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

/**
 * How long a message may wait to be written while no batching client is
 * owed it: turns with such a client write at once, before their batches.
 */
export const STORE_WRITE_MS = 20;

/** Pages (4 KiB) the write-ahead log grows to before it is copied into the file. */
const WAL_PAGES = 10_000;

/** The schema's version, in SQLite's `user_version`. */
const SCHEMA_VERSION = 1;

/**
 * A room's messages go in chunks: one row per room and write, the
 * messages as a JSON array, keyed by the last one's id. A write costs one
 * row a room however many messages it carries.
 */
const SCHEMA = `
CREATE TABLE IF NOT EXISTS rooms (
  name TEXT PRIMARY KEY,
  epoch TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunks (
  room TEXT NOT NULL,
  last INTEGER NOT NULL,
  messages TEXT NOT NULL,
  PRIMARY KEY (room, last)
) WITHOUT ROWID;
PRAGMA user_version = ${SCHEMA_VERSION};
`;

/** A room's messages waiting to be written. */
interface Pending {
  epoch: string;
  messages: ChatMessage[];
}

/** History in an SQLite file. */
export class SqliteStore implements Store {
  readonly #db: DatabaseSync;
  readonly #keep: number;
  readonly #log: Log;
  readonly #file: string;
  /** Each room's messages not yet written, by room. */
  #pending = new Map<string, Pending>();
  #timer?: ReturnType<typeof setTimeout>;
  /** Rooms whose epoch the file holds. */
  readonly #saved = new Map<string, string>();
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
    let db: DatabaseSync | undefined;
    try {
      this.#db = db = new DatabaseSync(file);
      // WAL: a write is one append to the log, and a crash of the process
      // (not of the machine) loses nothing written. Exclusive: one server
      // per file (a second is told at start), and no lock calls per write.
      // The log is copied into the file (and both synced to disk, which
      // stalls the server for milliseconds) every WAL_PAGES pages, not every
      // 1000 (SQLite's default): ten times fewer stalls, a log of 40 MiB.
      this.#db.exec(
        `PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = ${WAL_PAGES};`,
      );
      const { user_version } = this.#db.prepare("PRAGMA user_version").get() as {
        user_version: number;
      };
      if (user_version !== 0 && user_version !== SCHEMA_VERSION) {
        throw new Error(`schema version ${user_version} is not this server's`);
      }
      this.#db.exec(SCHEMA);
      this.#insert = this.#db.prepare(
        "INSERT OR REPLACE INTO chunks (room, last, messages) VALUES (?, ?, ?)",
      );
      this.#saveRoom = this.#db.prepare(
        "INSERT OR REPLACE INTO rooms (name, epoch) VALUES (?, ?)",
      );
      // The newest chunk stays whatever `keep` is: it holds the latest id.
      this.#trim = this.#db.prepare(
        "DELETE FROM chunks WHERE room = ? AND last <= ? AND last < ?",
      );
    } catch (error) {
      try {
        db?.close();
      } catch {
        // Not open.
      }
      const problem = error instanceof Deno.errors.NotCapable
        ? `no permission to write it: run with --allow-write=${file} (README: History that survives a restart)`
        : errorText(error).replace(
          /^database is locked$/,
          "database is locked: another chat server uses it",
        );
      throw new StoreError(`cannot use --store ${JSON.stringify(file)}: ${problem}`);
    }
  }

  rooms(): string[] {
    const rows = this.#db.prepare("SELECT name FROM rooms").all() as { name: string }[];
    return rows.map((row) => row.name);
  }

  load(room: string): Held | undefined {
    this.commit();
    const saved = this.#db.prepare("SELECT epoch FROM rooms WHERE name = ?").get(room) as
      | { epoch: string }
      | undefined;
    if (!saved) return undefined;
    this.#saved.set(room, saved.epoch);
    const chunks = this.#db.prepare(
      "SELECT last, messages FROM chunks WHERE room = ? ORDER BY last DESC",
    ).iterate(room) as Iterable<{ last: number; messages: string }>;
    let last = 0;
    const messages: ChatMessage[] = [];
    for (const chunk of chunks) {
      last ||= chunk.last;
      if (messages.length >= this.#keep) break;
      messages.unshift(...JSON.parse(chunk.messages));
    }
    return {
      epoch: saved.epoch,
      last,
      messages: this.#keep === 0 ? [] : messages.slice(-this.#keep),
    };
  }

  append(room: string, epoch: string, message: ChatMessage): void {
    if (this.#failed) return;
    let pending = this.#pending.get(room);
    if (!pending) this.#pending.set(room, pending = { epoch, messages: [] });
    pending.epoch = epoch;
    pending.messages.push(message);
    this.#timer ??= setTimeout(() => this.commit(), STORE_WRITE_MS);
  }

  forget(room: string): void {
    this.commit();
    this.#saved.delete(room);
    this.#write(() => {
      this.#db.prepare("DELETE FROM chunks WHERE room = ?").run(room);
      this.#db.prepare("DELETE FROM rooms WHERE name = ?").run(room);
    });
  }

  commit(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#pending.size === 0) return;
    const pending = this.#pending;
    this.#pending = new Map();
    this.#write(() => {
      for (const [room, { epoch, messages }] of pending) {
        if (this.#saved.get(room) !== epoch) {
          this.#saveRoom.run(room, epoch);
          this.#saved.set(room, epoch);
        }
        const last = messages.at(-1)!.id!;
        this.#insert.run(room, last, JSON.stringify(messages));
        this.#trim.run(room, last - this.#keep, last);
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

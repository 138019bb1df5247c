/**
 * The Redis backplane: every instance publishes each of a room's events to
 * the room's channel and delivers what Redis sends back, so the members of a
 * room on every instance see one order, Redis's; presence and history live
 * in Redis too, so they span instances.
 *
 * Redis keys, for a room at path `P` (`/` or `/rust`) under the prefix:
 *
 * - `PREFIX` `room:P`: the pub/sub channel; each payload is
 *   `SEQ ONLINE NAMES ID EPOCH JSON` (`ONLINE` empty and `NAMES` `*` for
 *   messages; `ID` and `EPOCH` `-` for anything but messages). One
 *   event-loop turn's messages to a room from one instance travel as one
 *   payload: their JSON a line each, the first line's event numbered `SEQ`
 *   with message id `ID`, the next `SEQ + 1` and `ID + 1`, and so on.
 * - `PREFIX` `members:P`: sorted set, member name → expiry (Redis clock, ms);
 *   each instance pushes its members' expiries `PRESENCE_TTL_MS` ahead every
 *   `REFRESH_MS`, so a crashed instance's members expire.
 * - `PREFIX` `owners:P`: hash, member name in lower case (names are unique
 *   whatever their case) → the instance holding it.
 * - `PREFIX` `held:P`: the room's history, a list of pairs, one a publish:
 *   its first message's id, then its messages' JSON a line each, as
 *   published. The oldest pair goes while the rest hold `--history-keep`
 *   messages, so it holds that many and at most one publish (`MAX_BATCH`)
 *   more.
 * - `PREFIX` `seq:P`: the room's event counter (joins and leaves too).
 * - `PREFIX` `ids:P`: the room's message counter: each message's id.
 * - `PREFIX` `epoch:P`: the room's history epoch; made anew (with the
 *   history, ids and refs started again) whenever it is missing.
 * - `PREFIX` `refs:P`: sorted set, each held message's ref → its id; a
 *   message whose ref is in it is a duplicate and is not published.
 * - `PREFIX` `kicked:P:NAME`, `muted:P:NAME`: a moderator's sanction, until
 *   when (ms since the epoch), expiring then.
 *
 * Presence keys go with the room's last member; its history, counters,
 * epoch and refs `--room-ttl` seconds later.
 *
 * @module
 */

import { clearImmediate, setImmediate } from "node:timers";
import { createClient } from "@redis/client";
import {
  type Backplane,
  type BackplaneReceiver,
  type Held,
  newEpoch,
  ReceivedEvents,
  type RoomEvent,
  type Sanctions,
} from "./backplane.ts";
import type { ChatMessage } from "./codec.ts";
import type { Scheduler } from "./scheduler.ts";
import { Backoff } from "../lib/backoff.ts";
import { errorText } from "../lib/errors.ts";

/** How long a member stays in Redis's presence without a refresh from its instance. */
export const PRESENCE_TTL_MS = 15_000;
/** How often each instance refreshes its members' presence. */
export const REFRESH_MS = 5_000;
/** How often each instance checks that Redis still answers on both connections. */
export const HEARTBEAT_MS = 1_000;
/** The first wait before reconnecting; it doubles up to `MAX_RETRY_MS`. */
export const FIRST_RETRY_MS = 250;
export const MAX_RETRY_MS = 5_000;
/** Members hear of the backplane going down and coming back at most once in this long. */
export const NOTICE_PAIR_INTERVAL_MS = 30_000;
/** At most this many messages of a room go in one script call. */
export const MAX_BATCH = 1_000;
/**
 * How long (ms) a room's messages wait at most, while what Redis brought
 * is still being delivered here, before they go anyway.
 */
export const MAX_BATCH_HOLD_MS = 50;

/** Every Redis operation of the chat, one script so each is atomic. */
const SCRIPT = `
local members, owners, history, seqkey, channel = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local idkey, epochkey, refs = KEYS[6], KEYS[7], KEYS[8]
local op, roomttl = ARGV[1], tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local kept = {history, seqkey, idkey, epochkey, refs}

-- A key just made (where one is made, it is called) expires as the others
-- do, roomttl after the members would: the members' refresh sets the
-- expiry of keys that exist, not of those made after it.
local function expiring(key)
  if redis.call('PTTL', key) ~= -1 then return end
  local ttl = redis.call('PTTL', members)
  if ttl > 0 then redis.call('PEXPIRE', key, ttl + roomttl) end
end

-- The room's epoch; a missing one is made (from the caller's candidate),
-- and what it names starts again: history, ids and refs.
local function epoch(candidate)
  local current = redis.call('GET', epochkey)
  if current then return current end
  redis.call('DEL', history, idkey, refs)
  redis.call('SET', epochkey, candidate)
  expiring(epochkey)
  return candidate
end

-- Publishes an event after the room's counter; joins and leaves carry the
-- room's count and, up to limit members, their names ('*' when not listed).
local function post(json, presence, limit)
  local seq = redis.call('INCR', seqkey)
  if seq == 1 then expiring(seqkey) end
  local online, names = '', '*'
  if presence then
    -- Only the live: expired members may not have been pruned yet.
    online = redis.call('ZCOUNT', members, '(' .. now, '+inf')
    if online <= limit then
      names = table.concat(redis.call('ZRANGEBYSCORE', members, '(' .. now, '+inf'), ',')
    end
  end
  redis.call('PUBLISH', channel, seq .. ' ' .. online .. ' ' .. names .. ' - - ' .. json)
  return seq
end

-- With its last member the presence keys go; the history, roomttl later.
local function tidy()
  if redis.call('ZCARD', members) == 0 then
    redis.call('DEL', members, owners)
    for _, key in ipairs(kept) do
      if roomttl > 0 then redis.call('PEXPIRE', key, roomttl) else redis.call('DEL', key) end
    end
  end
end

-- Members whose instance stopped refreshing them leave, announced.
local function prune(limit)
  local gone = redis.call('ZRANGEBYSCORE', members, '-inf', now)
  for _, name in ipairs(gone) do
    redis.call('ZREM', members, name)
    redis.call('HDEL', owners, string.lower(name))
    post(cjson.encode({kind = 'left', name = name}), true, limit)
  end
  if #gone > 0 then tidy() end
end

-- Holds a name for an instance until now + ttl, unless another holds it.
local function hold(name, instance, ttl)
  local owner = redis.call('HGET', owners, string.lower(name))
  if owner and owner ~= instance then return false end
  redis.call('ZADD', members, now + ttl, name)
  redis.call('HSET', owners, string.lower(name), instance)
  redis.call('PEXPIRE', members, ttl)
  redis.call('PEXPIRE', owners, ttl)
  for _, key in ipairs(kept) do redis.call('PEXPIRE', key, ttl + roomttl) end
  return true
end

if op == 'claim' then -- name, instance, ttl, limit
  prune(tonumber(ARGV[6]))
  if hold(ARGV[3], ARGV[4], tonumber(ARGV[5])) then return 1 end
  return 0
elseif op == 'post' then -- json, presence, limit (any event but chat messages)
  return post(ARGV[3], ARGV[4] == '1', tonumber(ARGV[5]))
elseif op == 'batch' then -- history size, epoch candidate, count, the messages' JSON and refs (a line each; refs '' when none has one)
  -- One turn's messages: those whose ref is held already are duplicates;
  -- the others get consecutive seqs and ids and go in one publish (their
  -- JSON a line each, after the first's seq and id) and one entry of the
  -- history. A call's cost is its Redis calls (a few microseconds each),
  -- whatever their size, and the bytes of every string made or read here
  -- (Redis's Lua hashes each): so the lines come joined, as published,
  -- are stored as they came, and nothing is done a message at a time.
  local size, count, lines, given = tonumber(ARGV[3]), tonumber(ARGV[5]), ARGV[6], ARGV[7]
  local got = redis.call('MGET', epochkey, idkey)
  local current, firstid = got[1], tonumber(got[2] or '0') + 1
  if not current then current, firstid = epoch(ARGV[4]), 1 end
  local duplicates = {}
  if given ~= '' then
    local list = {}
    for ref in string.gmatch(given .. '\\n', '([^\\n]*)\\n') do table.insert(list, ref) end
    -- All at once (ZMSCORE, Redis 6.2), or one by one where it is unknown;
    -- '' (no ref) is never held.
    local known = redis.pcall('ZMSCORE', refs, unpack(list))
    if known.err then
      known = {}
      for i, ref in ipairs(list) do known[i] = ref ~= '' and redis.call('ZSCORE', refs, ref) end
    end
    local seen, added, id = {}, {}, firstid
    for i, ref in ipairs(list) do
      if known[i] or seen[ref] then
        table.insert(duplicates, i)
      else
        if ref ~= '' then
          seen[ref] = true
          table.insert(added, id)
          table.insert(added, ref)
        end
        id = id + 1
      end
    end
    if #added > 0 then
      redis.call('ZADD', refs, unpack(added))
      expiring(refs)
    end
  end
  local n = count - #duplicates
  if n == 0 then return duplicates end
  if #duplicates > 0 then
    local unique, d, i = {}, 1, 0
    for line in string.gmatch(lines, '[^\\n]+') do
      i = i + 1
      if duplicates[d] == i then d = d + 1 else table.insert(unique, line) end
    end
    lines = table.concat(unique, '\\n')
  end
  redis.call('INCRBY', idkey, n)
  if firstid == 1 then expiring(idkey) end
  local first = redis.call('INCRBY', seqkey, n) - n + 1
  if first == 1 then expiring(seqkey) end
  redis.call('PUBLISH', channel,
    first .. '  * ' .. firstid .. ' ' .. current .. ' ' .. lines)
  if size > 0 then
    if redis.call('RPUSH', history, firstid, lines) == 2 then expiring(history) end
    -- The oldest entry goes while the rest hold size messages at least.
    local last, oldest = firstid + n - 1, nil
    while true do
      local next = redis.call('LINDEX', history, 2)
      if not next or last - tonumber(next) + 1 < size then break end
      redis.call('LTRIM', history, 2, -1)
      oldest = next
    end
    if oldest then redis.call('ZREMRANGEBYSCORE', refs, '-inf', '(' .. oldest) end
  else
    redis.call('DEL', refs)
  end
  return duplicates
elseif op == 'history' then -- epoch candidate: the epoch and the latest id (the caller reads the history after, in one transaction)
  local current = epoch(ARGV[3])
  return {current, redis.call('GET', idkey) or '0'}
elseif op == 'leave' then -- name, instance, json or '', limit
  if redis.call('HGET', owners, string.lower(ARGV[3])) == ARGV[4] then
    redis.call('ZREM', members, ARGV[3])
    redis.call('HDEL', owners, string.lower(ARGV[3]))
  end
  if ARGV[5] ~= '' then post(ARGV[5], true, tonumber(ARGV[6])) end
  tidy()
  return 1
elseif op == 'refresh' then -- instance, ttl, limit, names...
  prune(tonumber(ARGV[5]))
  local taken = {}
  for i = 6, #ARGV do
    if not hold(ARGV[i], ARGV[3], tonumber(ARGV[4])) then table.insert(taken, ARGV[i]) end
  end
  return taken
elseif op == 'who' then -- limit
  prune(tonumber(ARGV[3]))
  return redis.call('ZRANGE', members, 0, -1)
elseif op == 'taken' then -- name, limit
  prune(tonumber(ARGV[4]))
  return redis.call('HEXISTS', owners, string.lower(ARGV[3]))
end
return redis.error_reply('unknown operation ' .. tostring(op))
`;

/** What the Redis backplane is told (the server passes its flags' values). */
export interface RedisBackplaneOptions {
  /** `redis://[user:password@]host[:port][/db]` or `rediss://` for TLS (`--redis`). */
  url: string;
  /** What every key and channel name starts with (`--redis-prefix`). */
  prefix: string;
  /** Milliseconds any Redis call may take before Redis counts as down (`--redis-timeout`). */
  timeoutMs: number;
  /** Messages kept per room (`--history-keep`, at least `--history`). */
  historyKeep: number;
  /** How long an emptied room's history stays (`--room-ttl`, in ms). */
  roomTtlMs: number;
  /** Presence events list every name while a room has at most this many members (`--presence-limit`). */
  namesLimit: number;
  /**
   * The event loop's turns, shared with clients' input: what Redis brings
   * back is delivered within a turn's budget, the rest in later turns, in
   * order (see `ReceivedEvents`).
   */
  scheduler: Pick<Scheduler, "mayRun" | "wait">;
}

/** The part of a Redis client the backplane uses. */
interface Client {
  connect(): Promise<unknown>;
  sendCommand(args: string[]): Promise<unknown>;
  multi(): Transaction;
  subscribe(
    channels: string | string[],
    listener: (message: string, channel: string) => void,
  ): Promise<void>;
  unsubscribe(
    channel: string,
    listener: (message: string, channel: string) => void,
  ): Promise<void>;
  ping(): Promise<unknown>;
  destroy(): void;
}
/** Commands that run together, nothing between them (MULTI ... EXEC). */
interface Transaction {
  addCommand(args: string[]): Transaction;
  exec(): Promise<unknown[]>;
}
type State = "connecting" | "up" | "down" | "stopped";

/** The kinds of key a room has (`PREFIX kind:P`, each described above). */
export const ROOM_KEYS = [
  "members",
  "owners",
  "held",
  "seq",
  "ids",
  "epoch",
  "refs",
] as const;

/** The room's path, as its keys name it: `/` for the default room (`""`), `/rust` for `rust`. */
function roomPath(room: string): string {
  return `/${room}`;
}

/** What `#eval` makes of Redis not holding the script (flushed, or a Redis restarted). */
const LOST_SCRIPT = Symbol("lost script");

/** Redis answered that it does not hold the script: alone, or first in a transaction. */
function lostScript(error: unknown): boolean {
  const first = (error as { replies?: unknown[] } | undefined)?.replies?.[0] ?? error;
  return String(first).includes("NOSCRIPT");
}

/** An event this instance published and has not yet received back. */
interface InFlight {
  room: string;
  event: RoomEvent;
}

/**
 * Rooms shared through Redis pub/sub. It never throws at its callers and
 * never blocks them: while Redis is unreachable (refused, closed, or slower
 * than the timeout) it delivers events locally, and it reconnects with
 * backoff, subscribing every open room and writing its members' presence
 * again before it counts as up.
 */
export class RedisBackplane implements Backplane {
  readonly shared = true;
  readonly instance = crypto.randomUUID();
  readonly started: Promise<void>;
  readonly #options: RedisBackplaneOptions;
  readonly #receiver: BackplaneReceiver;
  #state: State = "connecting";
  /** Bumped on every (re)connect: callbacks of older connections are ignored. */
  #generation = 0;
  #command?: Client;
  #subscriber?: Client;
  #sha = "";
  /** Rooms whose events this instance receives, and their subscription. */
  readonly #rooms = new Map<string, Promise<void>>();
  /** Own events on their way through Redis, by id, in publish order. */
  readonly #inFlight = new Map<number, InFlight>();
  #nextId = 0;
  readonly #backoff = new Backoff(FIRST_RETRY_MS, MAX_RETRY_MS);
  /** True from a failure until the backplane is up again. */
  #failing = false;
  /** Members were told it went down, and will be told when it is back. */
  #toldDown = false;
  #lastDownNotice = -Infinity;
  /** Each room's chat messages waiting to be published together (see `#flushAll`). */
  readonly #batches = new Map<string, RoomEvent[]>();
  #batchTimer?: ReturnType<typeof setImmediate>;
  /** Ends a hold of the batches behind what Redis brought (`MAX_BATCH_HOLD_MS`). */
  #holdTimer?: ReturnType<typeof setTimeout>;
  /** The last `seq` seen on each room's channel: a jump means events were lost. */
  readonly #lastSeq = new Map<string, number>();
  #retryTimer?: ReturnType<typeof setTimeout>;
  #heartbeat?: ReturnType<typeof setInterval>;
  #beats = 0;
  readonly #channelPrefix: string;
  /** How the JSON of an event this instance published starts (see `#track`). */
  readonly #ownPrefix = `{"origin":${JSON.stringify(this.instance)},"id":`;
  readonly #listener = (message: string, channel: string) =>
    this.#received(message, channel);
  /** What Redis brought, waiting for the event loop's turns. */
  readonly #arrived: ReceivedEvents;

  constructor(options: RedisBackplaneOptions, receiver: BackplaneReceiver) {
    this.#options = options;
    this.#receiver = receiver;
    this.#arrived = new ReceivedEvents(
      receiver,
      options.scheduler,
      () => this.#flushSoon(),
    );
    this.#channelPrefix = `${this.#options.prefix}room:`;
    this.started = this.#connect();
  }

  get up(): boolean {
    return this.#state === "up";
  }

  /**
   * A room's event, through Redis to every instance. Chat messages wait for
   * the end of the turn, to go with the room's others in one script call
   * and one publish (see `#flushAll` for when they wait longer); any other
   * event of the room sends those first, so its order holds.
   */
  publish(room: string, event: RoomEvent): void {
    if (event.kind === "message" && this.#state === "up") {
      let batch = this.#batches.get(room);
      if (!batch) this.#batches.set(room, batch = []);
      batch.push(event);
      if (batch.length >= MAX_BATCH) this.#flush(room);
      else this.#flushSoon();
      return;
    }
    this.#flush(room);
    if (this.#state !== "up") return this.#receiver.deliver(room, event, {});
    if (event.kind === "kicked" || event.kind === "muted") {
      // Kept in Redis too, for instances that serve the room later.
      const ttl = event.until - Date.now();
      if (ttl > 0) {
        void this.#call(
          this.#command!.sendCommand([
            "SET",
            this.#sanctionKey(event.kind, room, event.name),
            String(event.until),
            "PX",
            String(ttl),
          ]),
        ).catch(() => {});
      }
    }
    // Chat messages never come here while Redis is up: they go in batches.
    const { id, json } = this.#track(room, event);
    void this.#eval(room, [
      "post",
      json,
      event.kind === "joined" || event.kind === "left" ? "1" : "0",
      String(this.#options.namesLimit),
    ]).then(() => {
      // Nobody here receives the room any more: it will not come back.
      if (!this.#rooms.has(room)) this.#inFlight.delete(id);
    }, () => {});
  }

  /** Sends the rooms' waiting messages at the end of this turn. */
  #flushSoon(): void {
    if (this.#batches.size > 0) this.#batchTimer ??= setImmediate(() => this.#flushAll());
  }

  /**
   * Sends the rooms' waiting messages, unless what Redis brought is still
   * being delivered here: then they wait for it (at most
   * `MAX_BATCH_HOLD_MS`), so that under load a call carries what came
   * meanwhile rather than one turn's few, and this instance publishes no
   * faster than it delivers.
   */
  #flushAll(): void {
    this.#batchTimer = undefined;
    if (this.#arrived.empty) return this.#flushHeld();
    this.#holdTimer ??= setTimeout(() => this.#flushHeld(), MAX_BATCH_HOLD_MS);
  }

  /** Sends every room's waiting messages now. */
  #flushHeld(): void {
    clearTimeout(this.#holdTimer);
    this.#holdTimer = undefined;
    for (const room of [...this.#batches.keys()]) this.#flush(room);
  }

  /** Sends `room`'s waiting messages: one script call (locally, while Redis is down). */
  #flush(room: string): void {
    const batch = this.#batches.get(room);
    if (!batch) return;
    this.#batches.delete(room);
    if (this.#state !== "up") {
      for (const event of batch) this.#receiver.deliver(room, event, {});
      return;
    }
    const lines: string[] = [];
    const refs: string[] = [];
    let anyRef = false;
    const ids: number[] = [];
    for (const event of batch) {
      const { id, json } = this.#track(room, event);
      ids.push(id);
      lines.push(json);
      const ref = (event as Extract<RoomEvent, { kind: "message" }>).ref ?? "";
      refs.push(ref);
      if (ref !== "") anyRef = true;
    }
    const args = [
      "batch",
      String(this.#options.historyKeep),
      newEpoch(),
      String(batch.length),
      lines.join("\n"),
      anyRef ? refs.join("\n") : "",
    ];
    void this.#eval(room, args).then((duplicates) => {
      // Duplicates are not published: their senders are told.
      for (const index of duplicates as number[]) {
        const event = batch[index - 1] as Extract<RoomEvent, { kind: "message" }>;
        this.#inFlight.delete(ids[index - 1]);
        this.#receiver.duplicate(room, event);
      }
      // Nobody here receives the room any more: they will not come back.
      if (!this.#rooms.has(room)) { for (const id of ids) this.#inFlight.delete(id); }
    }, () => {});
  }

  async claim(room: string, name: string): Promise<"claimed" | "taken" | "unknown"> {
    if (this.#state !== "up") return "unknown";
    try {
      const claimed = await this.#eval(room, [
        "claim",
        name,
        this.instance,
        String(PRESENCE_TTL_MS),
        String(this.#options.namesLimit),
      ]);
      return claimed === 1 ? "claimed" : "taken";
    } catch {
      return "unknown";
    }
  }

  release(room: string, name: string, left?: RoomEvent): void {
    this.#flush(room);
    if (this.#state !== "up") {
      if (left) this.#receiver.deliver(room, left, {});
      return;
    }
    void this.#eval(room, [
      "leave",
      name,
      this.instance,
      left ? this.#track(room, left).json : "",
      String(this.#options.namesLimit),
    ]).catch(() => {});
  }

  async taken(room: string, name: string): Promise<boolean | undefined> {
    if (this.#state !== "up") return undefined;
    try {
      const exists = await this.#eval(room, [
        "taken",
        name,
        String(this.#options.namesLimit),
      ]);
      return exists === 1;
    } catch {
      return undefined;
    }
  }

  async who(room: string): Promise<string[] | undefined> {
    if (this.#state !== "up") return undefined;
    try {
      const names = await this.#eval(room, ["who", String(this.#options.namesLimit)]);
      return (names as string[]).sort();
    } catch {
      return undefined;
    }
  }

  async history(room: string): Promise<Held | undefined> {
    if (this.#state !== "up") return undefined;
    try {
      const [[epoch, last], entries] = await this.#eval(
        room,
        ["history", newEpoch()],
        ["LRANGE", this.#key("held", room), "0", "-1"],
      ) as [[string, string], string[]];
      // Pairs, one a publish: its first message's id, then its messages'
      // JSON a line each (as published, with what only instances read).
      const messages: ChatMessage[] = [];
      for (let i = 0; i + 1 < entries.length; i += 2) {
        let id = Number(entries[i]);
        for (const line of entries[i + 1].split("\n")) {
          const { from, text, time, ref } = JSON.parse(line) as ChatMessage;
          messages.push({ from, text, time, id: id++, ref });
        }
      }
      // The oldest publish may hold more than the history keeps.
      messages.splice(0, messages.length - this.#options.historyKeep);
      return { epoch, last: Number(last), messages };
    } catch {
      return undefined;
    }
  }

  async moderation(room: string, name: string): Promise<Sanctions | undefined> {
    if (this.#state !== "up") return undefined;
    try {
      const [kicked, muted] = await this.#call(
        this.#command!.sendCommand([
          "MGET",
          this.#sanctionKey("kicked", room, name),
          this.#sanctionKey("muted", room, name),
        ]),
      ) as (string | null)[];
      return {
        kicked: kicked === null ? undefined : Number(kicked),
        muted: muted === null ? undefined : Number(muted),
      };
    } catch {
      return undefined;
    }
  }

  /** `PREFIX kicked:P:NAME` or `muted:...`: until when, expiring with it. */
  #sanctionKey(kind: "kicked" | "muted", room: string, name: string): string {
    return `${this.#options.prefix}${kind}:${roomPath(room)}:${name.toLowerCase()}`;
  }

  open(room: string): Promise<void> {
    let subscribed = this.#rooms.get(room);
    if (!subscribed) {
      subscribed = this.#state === "up"
        ? this.#call(this.#subscriber!.subscribe(this.#channel(room), this.#listener))
          .catch(() => {})
        : Promise.resolve();
      this.#rooms.set(room, subscribed);
    }
    return subscribed;
  }

  close(room: string): void {
    this.#lastSeq.delete(room);
    if (!this.#rooms.delete(room) || this.#state !== "up") return;
    void this.#call(this.#subscriber!.unsubscribe(this.#channel(room), this.#listener))
      .catch(() => {});
  }

  async stop(): Promise<void> {
    clearImmediate(this.#batchTimer);
    this.#flushHeld();
    this.#arrived.drain();
    const wasUp = this.#state === "up";
    this.#state = "stopped";
    clearTimeout(this.#retryTimer);
    clearInterval(this.#heartbeat);
    // Commands run in order: once this answers, the releases before it are done.
    if (wasUp) {
      await this.#call(this.#command!.sendCommand(["PING"])).catch(() => {});
    }
    this.#disconnect();
  }

  /**
   * Notes an own event as in flight. Its JSON starts with its origin (this
   * instance) and the id it comes back with (`#ownPrefix`), so that it is
   * known again without being parsed.
   */
  #track(room: string, event: RoomEvent): { id: number; json: string } {
    const id = ++this.#nextId;
    this.#inFlight.set(id, { room, event });
    return { id, json: JSON.stringify({ origin: event.origin, id, ...event }) };
  }

  /** An event from the room's channel: an own one from `#inFlight`, any other parsed. */
  #event(json: string): RoomEvent {
    if (json.startsWith(this.#ownPrefix)) {
      const start = this.#ownPrefix.length;
      const id = Number(json.slice(start, json.indexOf(",", start)));
      const own = this.#inFlight.get(id);
      if (own) {
        this.#inFlight.delete(id);
        return own.event;
      }
    }
    // Not held here (another instance's, or this one's from before a failure).
    const { id: _id, ...event } = JSON.parse(json) as RoomEvent & { id?: number };
    return event;
  }

  #key(
    kind: typeof ROOM_KEYS[number],
    room: string,
  ): string {
    return `${this.#options.prefix}${kind}:${roomPath(room)}`;
  }

  #channel(room: string): string {
    return this.#channelPrefix + roomPath(room);
  }

  /**
   * Runs one operation of the script for `room` (`[op, ...its arguments]`;
   * the room TTL goes after `op`), loading the script again if Redis lost
   * it. With `after`, that command runs right after it in one transaction
   * and both answers come back: what it reads does not pass through the
   * script, whose Lua hashes every string it touches.
   */
  async #eval(room: string, [op, ...rest]: string[], after?: string[]): Promise<unknown> {
    const command = this.#command!;
    const keys = [
      this.#key("members", room),
      this.#key("owners", room),
      this.#key("held", room),
      this.#key("seq", room),
      this.#channel(room),
      this.#key("ids", room),
      this.#key("epoch", room),
      this.#key("refs", room),
    ];
    const args = [
      String(keys.length),
      ...keys,
      op,
      String(this.#options.roomTtlMs),
      ...rest,
    ];
    const run = (script: string[]) => {
      const sent = after
        ? command.multi().addCommand([...script, ...args]).addCommand(after).exec()
        : command.sendCommand([...script, ...args]);
      // A lost script is not Redis failing: it is sent whole below.
      return this.#call(sent.catch((error: unknown) => {
        if (lostScript(error)) return LOST_SCRIPT;
        throw error;
      }));
    };
    const answer = await run(["EVALSHA", this.#sha]);
    return answer === LOST_SCRIPT ? await run(["EVAL", SCRIPT]) : answer;
  }

  /**
   * A Redis call with the timeout: a failure or a late answer takes the
   * backplane down (and the call rejects), whichever connection it was on.
   */
  #call<T>(promise: Promise<T>): Promise<T> {
    const generation = this.#generation;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no answer within ${this.#options.timeoutMs} ms`)),
        this.#options.timeoutMs,
      );
    });
    return Promise.race([promise, late]).catch((error) => {
      this.#failed(generation, error);
      throw error;
    }).finally(() => clearTimeout(timer));
  }

  /** One connection attempt: both clients, the script, every room, presence. */
  async #connect(): Promise<void> {
    const generation = ++this.#generation;
    const client = (): Client => {
      const redis = createClient({
        url: this.#options.url,
        // Off: it is for Redis Enterprise, and it would read environment variables.
        maintNotifications: "disabled",
        // Commands fail at once while disconnected; the backplane reconnects itself.
        disableOfflineQueue: true,
        socket: { reconnectStrategy: false, connectTimeout: this.#options.timeoutMs },
      });
      redis.on("error", (error: unknown) => this.#failed(generation, error));
      redis.on("end", () => this.#failed(generation, new Error("connection closed")));
      return redis;
    };
    const command = client();
    const subscriber = client();
    this.#command = command;
    this.#subscriber = subscriber;
    try {
      await this.#call(Promise.all([command.connect(), subscriber.connect()]));
      this.#sha = await this.#call(
        command.sendCommand(["SCRIPT", "LOAD", SCRIPT]),
      ) as string;
      // A Redis that answers but takes no writes (out of memory, a read-only
      // replica) is down too: it is not up until a write goes through.
      await this.#call(
        command.sendCommand([
          "SET",
          `${this.#options.prefix}probe:${this.instance}`,
          "1",
          "PX",
          "1000",
        ]),
      );
      await this.#refresh();
      // Every open room is subscribed, those opened meanwhile too, before the
      // backplane counts as up (no await between the last check and "up").
      const subscribed = new Set<string>();
      for (;;) {
        const rooms = [...this.#rooms.keys()].filter((room) => !subscribed.has(room));
        if (rooms.length === 0) break;
        await this.#call(
          subscriber.subscribe(rooms.map((room) => this.#channel(room)), this.#listener),
        );
        for (const room of rooms) subscribed.add(room);
      }
      if (generation !== this.#generation || this.#state === "stopped") return;
      this.#state = "up";
      this.#backoff.reset();
      this.#failing = false;
      this.#receiver.log(`Backplane up: ${redactedUrl(this.#options.url)}`);
      this.#heartbeat = setInterval(() => this.#beat(), HEARTBEAT_MS);
      if (this.#toldDown) {
        this.#toldDown = false;
        this.#receiver.changed(true);
      }
    } catch (error) {
      this.#failed(generation, error);
    }
  }

  /** Every heartbeat: both connections answer, and every few, presence is refreshed. */
  #beat(): void {
    if (this.#state !== "up") return;
    this.#beats++;
    const calls: Promise<unknown>[] = [
      this.#call(this.#command!.sendCommand(["PING"])),
      this.#call(this.#subscriber!.ping()),
    ];
    if (this.#beats % Math.round(REFRESH_MS / HEARTBEAT_MS) === 0) {
      calls.push(this.#refresh());
    }
    void Promise.all(calls).catch(() => {});
  }

  /** Writes every member here into Redis's presence again, `PRESENCE_TTL_MS` ahead. */
  async #refresh(): Promise<void> {
    const rooms = [...this.#receiver.presence()];
    const taken = await Promise.all(rooms.map(([room, names]) =>
      this.#eval(room, [
        "refresh",
        this.instance,
        String(PRESENCE_TTL_MS),
        String(this.#options.namesLimit),
        ...names,
      ]) as Promise<string[]>
    ));
    taken.forEach((names, i) => {
      for (const name of names) {
        this.#receiver.log(
          `Backplane: ${name} in ${roomPath(rooms[i][0])} is held by another instance`,
        );
      }
    });
  }

  /** A payload from the room's channel: `SEQ ONLINE NAMES ID EPOCH JSON`. */
  #received(message: string, channel: string): void {
    if (this.#state !== "up") return;
    try {
      const room = channel.slice(this.#channelPrefix.length + 1);
      const fields: string[] = [];
      let start = 0;
      for (let i = 0; i < 5; i++) {
        const space = message.indexOf(" ", start);
        fields.push(message.slice(start, space));
        start = space + 1;
      }
      const [seqField, online, names, idField, epochField] = fields;
      const seq = Number(seqField);
      const firstId = idField === "-" ? undefined : Number(idField);
      const epoch = epochField === "-" ? undefined : epochField;
      const events = message.slice(start).split("\n");
      const last = this.#lastSeq.get(room);
      if (last !== undefined && seq > last + 1) this.#arrived.lost(room);
      this.#lastSeq.set(room, seq + events.length - 1);
      // The payload's presence is a join's or a leave's, one event alone.
      const count = online === "" ? undefined : Number(online);
      const listed = names === "*"
        ? undefined
        : names === ""
        ? []
        : names.split(",").sort();
      events.forEach((json, i) => {
        this.#arrived.add(room, this.#event(json), {
          seq: seq + i,
          id: firstId === undefined ? undefined : firstId + i,
          epoch,
          online: count,
          names: listed,
        }, json.length);
      });
    } catch (error) {
      this.#receiver.log(`Backplane: unreadable event on ${channel}: ${error}`);
    }
    this.#arrived.deliver();
  }

  /**
   * Redis failed (closed, refused, late): deliver here what it did not bring
   * back, tell the members, and try again after a backoff.
   */
  #failed(generation: number, error: unknown): void {
    if (generation !== this.#generation || this.#state === "stopped") return;
    // What Redis did bring goes first: nothing it sent is lost or put out of order.
    this.#arrived.drain();
    this.#generation++;
    const wasUp = this.#state === "up";
    this.#state = "down";
    clearInterval(this.#heartbeat);
    this.#disconnect();
    // Logged once an outage: when it starts, or when the first attempt fails.
    if (!this.#failing) {
      this.#failing = true;
      this.#receiver.log(`Backplane down: ${errorText(error) || "connection failed"}`);
    }
    // What Redis took and did not bring back reaches this instance's members
    // at least; the other instances may or may not have it.
    const stranded = [...this.#inFlight.values()];
    this.#inFlight.clear();
    for (const { room, event } of stranded) this.#receiver.deliver(room, event, {});
    // A pair of notices at most every NOTICE_PAIR_INTERVAL_MS, so a Redis
    // that flaps does not flood the members.
    const now = performance.now();
    if (!wasUp) {
      // Never up yet: whoever joins meanwhile is told it is down as it joins.
      this.#toldDown = true;
    } else if (now - this.#lastDownNotice >= NOTICE_PAIR_INTERVAL_MS) {
      this.#toldDown = true;
      this.#lastDownNotice = now;
      this.#receiver.changed(false);
    }
    this.#retryTimer = setTimeout(() => void this.#connect(), this.#backoff.delay());
  }

  #disconnect(): void {
    for (const client of [this.#command, this.#subscriber]) {
      try {
        client?.destroy();
      } catch {
        // Already closed.
      }
    }
  }
}

/** The URL without its password, for logs. */
export function redactedUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.href.replace(/\/$/, "");
  } catch {
    return url;
  }
}

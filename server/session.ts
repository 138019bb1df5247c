/**
 * One client's life, from its upgrade to its close, as one object with one
 * private state:
 *
 * ```
 * connecting ─open─▶ held ─(name, first frame, or 500 ms)─▶ joined ─▶ leaving ─▶ gone
 *                      └──────────── refused or closed ──────────────────┘
 * ```
 *
 * - `connecting`: upgraded; the socket is not open yet, so nothing can be sent.
 * - `held`: open, not yet in its room. A client that gave no name may be a
 *   YewChat client: its first frame tells (a `register` takes a NICK, whose
 *   claim may wait on the backplane while later frames queue).
 * - `joined`: in the room: its frames are admitted, decoded by its codec and
 *   published; the room's events come back through `deliver`.
 * - `leaving`: out of the room, sending nothing more, its socket closing.
 * - `gone`: its socket closed; the chat forgets it.
 *
 * @module
 */

import {
  BACKPLANE_DOWN,
  badJsonNotice,
  BATCH_SEPARATOR,
  byteRateNotice,
  CloseCode,
  CloseReason,
  closeReason,
  HELP_LINE,
  JSON_PROTOCOL,
  moderationUsage,
  mutedNotice,
  nameProblem,
  NOT_ALLOWED,
  type Protocol,
  rateLimitNotice,
  REGISTER_WAIT_MS,
  ROOM_NOT_ALLOWED,
  SEPARATOR_REFUSED,
  tokenRefusedNotice,
  tokenRenewedNotice,
  unknownCommandLine,
  whoLine,
} from "../lib/protocol.ts";
import { errorText } from "../lib/errors.ts";
import { delay, MAX_TIMER_MS } from "../lib/time.ts";
import {
  Admission,
  type AdmissionLimits,
  FLOOD_WINDOW_MS,
  messageBytes,
} from "./admission.ts";
import {
  BATCHERS,
  type ChatMessage,
  type Codec,
  type Frame,
  JSON_EVENTS,
  PLAIN,
  registration,
} from "./codec.ts";
import { type Log, quoteForLog } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import { Outbox, type TurnChecks } from "./outbox.ts";
import {
  type Cost,
  MAX_WAITING_CHARS,
  type Scheduler,
  type Waiting,
} from "./scheduler.ts";
import { type CloseRefusal, nameTakenText, Refusals } from "./refusals.ts";
import {
  type Arrival,
  type Member,
  type Place,
  type Recent,
  type Resume,
  type Room,
  withinBacklog,
} from "./room.ts";
import { type Identity, mayJoin, verifyToken } from "../lib/auth.ts";

/** Where a session is in its life. */
export type SessionState = "connecting" | "held" | "joined" | "leaving" | "gone";

/** What a session needs of the chat it belongs to. */
export interface SessionHost {
  readonly metrics: Metrics;
  readonly log: Log;
  readonly turns: TurnChecks;
  /** Shares the event loop: input beyond a turn's budget waits for a later one. */
  readonly scheduler: Scheduler;
  /** What one client may send. */
  readonly limits: AdmissionLimits;
  /** The unsent backlog a client may have before it is closed as too slow. */
  readonly maxBufferedBytes: number;
  /** No line per message in the log. */
  readonly quiet: boolean;
  /** Tokens are checked against it (`/token`); absent when none are used. */
  readonly authSecret?: Uint8Array;
  /** How long a kicked name may not join the room again. */
  readonly kickSeconds: number;
  /** True once the server is shutting down: nothing more is accepted. */
  readonly shuttingDown: boolean;
  /** The session's socket closed: it is out of the chat. */
  ended(session: Session): void;
  /** Drops `room` if nobody is in it or about to join it. */
  tidy(room: Room<Session>): void;
}

/** What a session starts from. */
export interface SessionOptions {
  /** Tells sessions of one instance apart. */
  id: number;
  socket: WebSocket;
  /** `IP:PORT` as the server sees it. */
  address: string;
  /** The name the URL gave, held in `room`; without one, the address is held. */
  name?: string;
  room: Room<Session>;
  /** The subprotocol it speaks: `chat.batch` and `chat.json` get a turn's frames as one. */
  protocol?: Protocol;
  /** Who its token says it is: its name, rooms and expiry (with `--auth-secret`). */
  identity?: Identity;
  /** Where it left off, when it resumes (`?since=&epoch=`). */
  resume?: Resume;
  host: SessionHost;
}

/** Calls `then` with `value` now, or once it settles when it is a promise. */
function answer<T>(value: T | Promise<T>, then: (value: T) => void): void {
  if (value instanceof Promise) void value.then(then);
  else then(value);
}

/** One connected client. */
export class Session implements Member, Arrival, Waiting {
  readonly id: number;
  readonly address: string;
  #name: string;
  #codec: Codec = PLAIN;
  #state: SessionState = "connecting";
  readonly #named: boolean;
  readonly #socket: WebSocket;
  readonly #room: Room<Session>;
  readonly #host: SessionHost;
  readonly #admission: Admission;
  readonly #outbox: Outbox;
  /** The wait for an unnamed client's first frame. */
  #registerTimer?: ReturnType<typeof setTimeout>;
  /** Who its token says it is; renewed by `/token`. */
  #identity?: Identity;
  /** Closes the client when its token expires. */
  #expiryTimer?: ReturnType<typeof setTimeout>;
  /** The ref of a `chat.json` message refused for the rate: others wait for it. */
  #awaitedRef?: string;
  /** Frames that arrived while the backplane decides on a NICK. */
  #pendingInput?: string[];
  /** Admitted frames waiting for a turn of the event loop (see `Scheduler`). */
  #waiting?: string[];
  /** Their characters. */
  #waitingLength = 0;
  /**
   * From the upgrade until it joins: the room's history as it was then (or
   * what a resume gets of it), and the chat messages the room has delivered
   * since, so that a client that takes its time to join misses nothing.
   */
  #arrival?: {
    history: Recent | Promise<Recent>;
    messages: [message: ChatMessage, place: Place | undefined][];
    /** What they would take to send, against `maxBufferedBytes`. */
    bytes: number;
  };
  /**
   * While a newcomer waits for the room's history from the backplane, what
   * the room sends it waits here, with each chat message's place.
   */
  #catchUp?: [frame: Frame, place: Place | undefined][];
  /**
   * Where the history it joined with ends, until a later message comes:
   * what the room delivered while the history was read, and what the
   * backplane still holds (waiting for the event loop's turns), may be in
   * it, and is not sent twice.
   */
  #historyEnd?: Place;

  constructor(options: SessionOptions) {
    this.id = options.id;
    this.address = options.address;
    this.#name = options.name ?? options.identity?.name ?? options.address;
    this.#identity = options.identity;
    this.#named = options.name !== undefined;
    // A `chat.json` client speaks it from the start (it is no YewChat client).
    if (options.protocol === JSON_PROTOCOL) this.#codec = JSON_EVENTS;
    this.#socket = options.socket;
    this.#room = options.room;
    this.#host = options.host;
    this.#admission = new Admission(options.host.limits);
    this.#outbox = new Outbox({
      socket: options.socket,
      maxBufferedBytes: options.host.maxBufferedBytes,
      turns: options.host.turns,
      owner: this,
      batch: options.protocol && BATCHERS[options.protocol],
    });
    for (const type of ["open", "message", "error", "close"]) {
      options.socket.addEventListener(type, this);
    }
    this.#arrival = {
      history: this.#room.recent(options.resume),
      messages: [],
      bytes: 0,
    };
    this.#room.watch(this);
  }

  /** How others see it: its name, its NICK, or its address. */
  get name(): string {
    return this.#name;
  }

  get codec(): Codec {
    return this.#codec;
  }

  /** The room it joins, or joined. */
  get room(): Room<Session> {
    return this.#room;
  }

  get state(): SessionState {
    return this.#state;
  }

  /**
   * The socket's events, all to this one listener object. A throw while
   * handling one costs this client, never the process.
   */
  handleEvent(event: Event): void {
    try {
      switch (event.type) {
        case "open":
          return this.#opened();
        case "message":
          return this.#received((event as MessageEvent).data);
        case "error":
          // Invalid UTF-8, a bad frame, a reset: the close event that
          // follows cleans up; the error is worth its one log line.
          if ((event as ErrorEvent).message) {
            this.#host.log(`Error ${this.address}: ${(event as ErrorEvent).message}`);
          }
          return;
        case "close":
          return this.#closed();
      }
    } catch (error) {
      this.#failed(event.type, error);
    }
  }

  #opened(): void {
    this.#host.log(`New connection from ${this.address}`);
    if (this.#host.shuttingDown) {
      return this.close(CloseCode.GOING_AWAY, CloseReason.SHUTTING_DOWN);
    }
    if (this.#state !== "connecting") return;
    this.#state = "held";
    this.#watchExpiry();
    // Joining only once open: a socket still connecting cannot be sent to.
    if (this.#named || this.#codec !== PLAIN) return this.#join(this.#codec);
    // Without a name it may be a YewChat client: its first frame tells.
    this.#registerTimer = setTimeout(() => {
      try {
        this.#join(PLAIN);
      } catch (error) {
        this.#failed("open", error);
      }
    }, REGISTER_WAIT_MS);
  }

  /** A chat message the room delivered before this client joined it. */
  witness(message: ChatMessage, place?: Place): void {
    const arrival = this.#arrival;
    if (!arrival) return;
    arrival.messages.push([message, place]);
    arrival.bytes += message.text.length + message.from.length;
    if (arrival.bytes > this.#host.maxBufferedBytes) this.slow();
  }

  /**
   * Into the room: the welcome, the room's history as it was at the upgrade
   * (or, for a resume, what it missed and how the recovery went) and every
   * chat message since (as the codec carries them), then the others are
   * told. Through a shared backplane the history comes from it, and what
   * the room sends meanwhile waits; nothing comes twice.
   */
  #join(codec: Codec): void {
    clearTimeout(this.#registerTimer);
    const arrival = this.#arrival!;
    this.#arrival = undefined;
    this.#room.unwatch(this);
    this.#codec = codec;
    this.#state = "joined";
    const down = this.#room.options.backplane.shared &&
      !this.#room.options.backplane.up;
    this.#catchUp = [];
    answer(arrival.history, (held) => {
      // Half the backlog a client may have, so live messages fit beside it.
      const recent = withinBacklog(held, this.#host.maxBufferedBytes / 2);
      const waiting = this.#catchUp ?? [];
      this.#catchUp = undefined;
      this.#own(codec.welcome({
        room: this.#room.name,
        name: this.#name,
        epoch: recent.epoch,
        last: recent.last,
      }));
      if (recent.missed !== undefined) {
        this.#host.metrics.resumed(recent.missed);
        this.#own(codec.recovered(recent.missed));
      }
      for (const frame of codec.recent(recent.messages)) this.deliver(frame);
      // What the history holds is not sent again (see `deliver`).
      this.#historyEnd = { id: recent.last, epoch: recent.epoch };
      for (const [message, place] of arrival.messages) {
        this.deliver(codec.message(message), place);
      }
      for (const [frame, place] of waiting) this.deliver(frame, place);
      if (down) this.#notify(BACKPLANE_DOWN);
    });
    this.#room.join(this);
  }

  /** One frame from the client: admitted (size, rate, flooding), then handled. */
  #received(data: unknown): void {
    if (this.#host.shuttingDown || this.#state === "leaving" || this.#state === "gone") {
      return;
    }
    if (typeof data !== "string") return this.refuse(Refusals.binary());
    const limits = this.#host.limits;
    const bytes = messageBytes(data, limits.maxMessageBytes);
    this.#host.metrics.bytesReceived += bytes;
    const now = performance.now();
    const verdict = this.#admission.judge(bytes, this.#room.size, now);
    switch (verdict) {
      case "too_big":
        return this.refuse(Refusals.tooBig(limits.maxMessageBytes));
      case "flooding":
        return this.refuse(
          Refusals.flooding(this.#admission.floodLimit, FLOOD_WINDOW_MS / 1000),
        );
      case "rate_limited":
      case "bytes_limited": {
        const ref = this.#refOf(data);
        if (ref !== undefined) this.#awaitedRef ??= ref;
        this.#refusedForRate(ref, bytes, now);
        if (this.#admission.mayNotify()) {
          this.#notify(
            verdict === "rate_limited"
              ? rateLimitNotice(limits.rateLimit)
              : byteRateNotice(limits.rateBytes),
          );
        }
        return;
      }
    }
    // Once a chat.json message was refused for the rate, later ones with
    // other refs are refused too until it comes again: resent in order,
    // they stay in order.
    if (this.#awaitedRef !== undefined) {
      const ref = this.#refOf(data);
      if (ref === this.#awaitedRef) this.#awaitedRef = undefined;
      else if (ref !== undefined) return this.#refusedForRate(ref, bytes, now);
    }
    if (this.#pendingInput) return void this.#pendingInput.push(data);
    // A held client's first frame says how it speaks (a YewChat register)
    // and must not wait past `REGISTER_WAIT_MS`; it sends nothing to others.
    if (!this.#waiting && (this.#state === "held" || this.#host.scheduler.mayRun())) {
      return this.#handle(data);
    }
    if (this.#waitingLength + data.length > MAX_WAITING_CHARS) {
      while (this.runWaiting());
      return this.#handle(data);
    }
    this.#waitingLength += data.length;
    this.#host.metrics.framesWaited++;
    if (this.#waiting) return void this.#waiting.push(data);
    this.#waiting = [data];
    this.#host.scheduler.wait(this);
  }

  /**
   * What its oldest waiting frame will likely send: a frame to each member
   * of its room, or one while a shared backplane carries the room's
   * messages (one, a YewChat register, before it joins).
   */
  waitingCost(): Cost {
    const recipients = this.#state === "joined" ? Math.max(1, this.#room.messageCost) : 1;
    return {
      frames: recipients,
      bytes: recipients * (this.#waiting?.[0].length ?? 0),
    };
  }

  /** Handles its oldest admitted frame that waited for a turn; true while more wait. */
  runWaiting(): boolean {
    const data = this.#waiting?.shift();
    if (data === undefined) return false;
    this.#waitingLength -= data.length;
    if (this.#waiting!.length === 0) this.#waiting = undefined;
    if (this.#state === "leaving" || this.#state === "gone") {
      // Refused or closed by the server meanwhile: what waits goes with it.
      this.#waiting = undefined;
      this.#waitingLength = 0;
      return false;
    }
    try {
      this.#handle(data);
    } catch (error) {
      this.#failed("message", error);
    }
    return this.#waiting !== undefined;
  }

  /** An admitted frame: a YewChat register, a command, or a message for the room. */
  #handle(data: string): void {
    if (this.#state === "held") {
      const yew = registration(data);
      if (yew) return this.#register(yew.codec, yew.nick);
      this.#join(PLAIN);
    }
    const input = this.#codec.decode(data);
    switch (input.kind) {
      case "command":
        return this.#command(input.line);
      case "invalid":
        return this.#notify(badJsonNotice(input.problem));
      case "message":
        // Batched frames separate messages with it: no message may hold one.
        if (input.text.includes(BATCH_SEPARATOR)) {
          this.#own(this.#codec.refused(input.ref, "invalid"));
          return this.#notify(SEPARATOR_REFUSED);
        }
        return this.#post(input.text, input.ref);
    }
  }

  /**
   * A chat message for the room, unless a moderator muted its sender or
   * its ref says it was delivered already.
   */
  #post(text: string, ref?: string): void {
    const muted = this.#room.mutedFor(this.#name);
    if (muted > 0) {
      this.#own(this.#codec.refused(ref, "muted", muted * 1000));
      if (this.#admission.mayNotify()) this.#notify(mutedNotice(muted));
      return;
    }
    if (ref !== undefined && this.#room.holds(ref)) {
      return this.#own(this.#codec.receipt("duplicate", ref));
    }
    if (!this.#host.quiet) {
      this.#host.log(`From client ${this.address} ${quoteForLog(text)}`);
    }
    this.#host.metrics.messagesReceived++;
    this.#room.post(this, text, ref);
  }

  /**
   * A message not taken for the rate: counted, and a `chat.json` one (with
   * its `ref`) is told when to send it again.
   */
  #refusedForRate(ref: string | undefined, bytes: number, now: number): void {
    this.#host.metrics.refuse("rate_limited");
    if (ref === undefined) return;
    const retry = this.#admission.retryMs(bytes, this.#room.size, now);
    this.#own(this.#codec.refused(ref, "rate_limited", retry));
  }

  /** The ref of a `chat.json` message frame (decoded again later if admitted). */
  #refOf(data: string): string | undefined {
    if (this.#codec !== JSON_EVENTS) return undefined;
    const input = this.#codec.decode(data);
    return input.kind === "message" ? input.ref : undefined;
  }

  /**
   * A YewChat client takes its NICK instead of its address, once the room
   * (on every instance) lets it hold the name; its frames wait until then.
   */
  #register(codec: Codec, nick: string): void {
    clearTimeout(this.#registerTimer);
    const problem = nameProblem(nick);
    if (problem) return this.refuse(Refusals.badNick(problem));
    if (this.#identity) {
      // With a token, the NICK is the token's name, held since the upgrade.
      if (nick !== this.#identity.name) {
        return this.refuse(
          Refusals.badNick(`NICK ${nick} is not the token's (${this.#identity.name})`),
        );
      }
      return this.#join(codec);
    }
    this.#pendingInput = [];
    void this.#room.hold(nick, { exclusive: true }).then((held) => {
      const pending = this.#pendingInput ?? [];
      this.#pendingInput = undefined;
      if (this.#state !== "held") {
        // Gone (or refused) meanwhile: the NICK goes back.
        if (held) this.#room.release(nick);
        return this.#host.tidy(this.#room);
      }
      if (!held) return this.refuse(Refusals.badNick(nameTakenText(nick)));
      this.#room.release(this.#name);
      this.#name = nick;
      this.#join(codec);
      for (const data of pending) this.#handle(data);
    }).catch((error) => this.#failed("register", error));
  }

  /** A line starting with `/`: answered to the sender alone, never broadcast. */
  #command(line: string): void {
    const command = line.split(/\s/, 1)[0];
    switch (command) {
      case "/who":
        // Everyone on every instance (this instance's alone while Redis is down).
        return answer(this.#room.everyone(), (names) => this.#notify(whoLine(names)));
      case "/help":
        return this.#notify(HELP_LINE);
      case "/token":
        return this.#renew(line.slice(command.length).trim());
      case "/kick":
      case "/mute":
        return this.#moderate(command, line.slice(command.length).trim());
      default:
        return this.#notify(unknownCommandLine(command));
    }
  }

  /**
   * Closes the client with 1008 `token expired` once its token expires
   * (timers hold at most about 24 days: a later expiry is looked at again).
   */
  #watchExpiry(): void {
    clearTimeout(this.#expiryTimer);
    if (!this.#identity) return;
    const left = this.#identity.expires - Date.now();
    this.#expiryTimer = setTimeout(() => {
      if (Date.now() >= this.#identity!.expires) this.refuse(Refusals.tokenExpired());
      else this.#watchExpiry();
    }, Math.max(0, Math.min(left, MAX_TIMER_MS)));
  }

  /**
   * `/kick NAME [REASON]` and `/mute NAME SECONDS`, for a moderator (a
   * token with `admin`): published to the room, so they hold on every
   * instance.
   */
  #moderate(command: "/kick" | "/mute", args: string): void {
    if (!this.#identity?.admin) return this.#notify(NOT_ALLOWED);
    const [name = "", ...rest] = args.split(/\s+/);
    if (nameProblem(name)) return this.#notify(moderationUsage(command));
    const base = {
      name,
      by: this.#name,
      origin: this.#room.options.backplane.instance,
      conn: this.id,
    };
    if (command === "/kick") {
      this.#room.publish({
        kind: "kicked",
        ...base,
        reason: rest.join(" "),
        until: Date.now() + this.#host.kickSeconds * 1000,
      });
      return;
    }
    const seconds = Number(rest[0]);
    if (rest.length !== 1 || !Number.isSafeInteger(seconds) || seconds < 1) {
      return this.#notify(moderationUsage(command));
    }
    this.#room.publish({ kind: "muted", ...base, until: Date.now() + seconds * 1000 });
  }

  /** `/token NEWTOKEN`: a fresh token for the same name moves the expiry. */
  #renew(token: string): void {
    const secret = this.#host.authSecret;
    if (!secret || !this.#identity) {
      return this.#notify(tokenRefusedNotice("this server does not use tokens"));
    }
    const current = this.#identity;
    void verifyToken(token, secret).then((fresh) => {
      if (this.#state !== "joined") return;
      if (typeof fresh === "string") return this.#notify(tokenRefusedNotice(fresh));
      if (fresh.name !== current.name) {
        return this.#notify(
          tokenRefusedNotice(`it names ${fresh.name}, not ${current.name}`),
        );
      }
      if (!mayJoin(fresh, this.#room.name)) {
        return this.#notify(tokenRefusedNotice(ROOM_NOT_ALLOWED));
      }
      this.#identity = fresh;
      this.#watchExpiry();
      this.#notify(tokenRenewedNotice(fresh.expires));
    });
  }

  /**
   * Queues one of the room's frames for the client (held while it catches
   * up on history); `place` is a chat message's.
   */
  deliver(frame: Frame, place?: Place): void {
    if (this.#outbox.stopped) return;
    if (this.#catchUp) return void this.#catchUp.push([frame, place]);
    if (place && this.#historyEnd) {
      const end = this.#historyEnd;
      if (place.epoch === end.epoch && place.id <= end.id) return;
      // Messages come in their order: once one is past the history, all are.
      this.#historyEnd = undefined;
    }
    this.#host.metrics.bytesSent += frame.bytes;
    this.#outbox.send(frame.text, frame.bytes);
  }

  /** A notice to this client alone, if its codec carries notices. */
  #notify(text: string): void {
    this.#own(this.#codec.notice(text));
  }

  /** A frame for this client alone, if its codec has one for what happened. */
  #own(frame: Frame | undefined): void {
    if (frame) this.deliver(frame);
  }

  /** Called by the outbox when the backlog passed the limit. */
  slow(): void {
    // Called from within a send, maybe a broadcast: close once it is over.
    queueMicrotask(() => this.refuse(Refusals.tooSlow(this.#host.maxBufferedBytes)));
  }

  /** Closes the client for what it did: counted, logged, out of the room at once. */
  refuse(refusal: CloseRefusal): void {
    if (this.#state === "leaving" || this.#state === "gone") return;
    this.#host.metrics.refuse(refusal.metric);
    this.#host.log(`Dropped ${this.address}: ${refusal.log}`);
    this.close(refusal.code, refusal.reason);
  }

  /**
   * Takes the client out of its room (announced, if it was in), sends it
   * nothing more, and closes its socket; it is gone once the close event
   * comes, which a client that stops reading may delay.
   */
  close(code: number, reason: string): void {
    if (this.#state !== "leaving" && this.#state !== "gone") this.#leave("leaving");
    if (this.#socket.readyState === WebSocket.OPEN) {
      this.#socket.close(code, closeReason(reason));
    }
  }

  /**
   * At shutdown: once the client has taken what it was owed (or at
   * `deadline`), it is closed with 1001.
   */
  async shutdown(deadline: Promise<void>): Promise<void> {
    clearTimeout(this.#registerTimer);
    clearTimeout(this.#expiryTimer);
    let late = false;
    void deadline.then(() => late = true);
    // No event says the backlog is written: look again every few milliseconds.
    while (
      !late && this.#socket.readyState === WebSocket.OPEN &&
      this.#socket.bufferedAmount > 0
    ) {
      await delay(10);
    }
    this.close(CloseCode.GOING_AWAY, CloseReason.SHUTTING_DOWN);
  }

  #closed(): void {
    // The close event may come twice.
    if (this.#state === "gone") return;
    // What it sent before closing goes first, as it would have without a wait.
    while (this.runWaiting());
    if (this.#state !== "leaving") this.#leave("gone");
    this.#state = "gone";
    this.#host.log(`Disconnected ${this.address}`);
    this.#host.ended(this);
  }

  /** Out of the room and its name given back; nothing more is sent. */
  #leave(next: "leaving" | "gone"): void {
    clearTimeout(this.#registerTimer);
    clearTimeout(this.#expiryTimer);
    this.#arrival = undefined;
    this.#room.unwatch(this);
    this.#state = next;
    this.#outbox.stop();
    this.#room.leave(this);
  }

  /** A throw while handling this client: logged, and the client closed with 1011. */
  #failed(what: string, error: unknown): void {
    this.#host.log(`Error ${this.address} in ${what}: ${errorText(error)}`);
    this.close(CloseCode.INTERNAL_ERROR, CloseReason.INTERNAL_ERROR);
  }
}

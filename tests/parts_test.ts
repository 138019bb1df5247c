/** The server's parts on their own: codecs, a room, an outbox, a session. */
import assert from "node:assert/strict";
import { setImmediate } from "node:timers";
import {
  BATCH_PROTOCOL,
  BATCH_SEPARATOR,
  CloseCode,
  CloseReason,
  joinedNotice,
  leftNotice,
  WELCOME,
  yewMessage,
  yewUsers,
} from "../lib/protocol.ts";
import {
  type Backplane,
  type Delivery,
  LocalBackplane,
  MAX_RECEIVED_WAITING_CHARS,
  ReceivedEvents,
  type RoomEvent,
} from "../server/backplane.ts";
import {
  BATCHERS,
  type ChatMessage,
  type Frame,
  PLAIN,
  registration,
  YEW,
} from "../server/codec.ts";
import {
  BUFFER_SLACK_BYTES,
  FIRST_CHUNK_BYTES,
  heldBytes,
  History,
  HistoryBudget,
} from "../server/history.ts";
import { utf8Length } from "../server/admission.ts";
import { Metrics } from "../server/metrics.ts";
import { MAX_BATCH_BYTES, Outbox, TurnChecks } from "../server/outbox.ts";
import {
  type Member,
  Moderation,
  type Recent,
  Room,
  USER_LIST_INTERVAL_MS,
} from "../server/room.ts";
import { Session, type SessionHost } from "../server/session.ts";
import { Inbox, remoteMessage } from "./helpers.ts";
import { Chat, MAX_IDLE_ROOMS } from "../server/chat.ts";
import {
  MAX_WAITING_CHARS,
  Scheduler,
  TURN_BUDGET,
  TURN_MS,
  type Waiting,
} from "../server/scheduler.ts";

/** Resolves once the current turn's end-of-turn work (flushes) has run. */
const endOfTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** A room on an in-process backplane, as the chat wires one. */
function localRoom<M extends Member>(
  options: {
    history?: number;
    historyBytes?: number;
    presenceLimit?: number;
    echo?: boolean;
    scheduler?: Scheduler;
    /** In process unless given. */
    backplane?: Backplane;
  } = {},
): Room<M> {
  const backplane = options.backplane ?? new LocalBackplane({
    deliver: (_name: string, event: RoomEvent, delivery: Delivery) =>
      room.deliver(event, delivery),
  });
  const room: Room<M> = new Room<M>("r", {
    backplane,
    history: options.history ?? 50,
    historyKeep: options.history ?? 50,
    historyBudget: new HistoryBudget(options.historyBytes ?? 2 ** 20),
    presenceLimit: options.presenceLimit ?? Infinity,
    echo: options.echo ?? true,
    moderation: new Moderation(),
    scheduler: options.scheduler ?? new Scheduler(new TurnChecks()),
  });
  return room;
}

/** A member that records the frames it is handed, and queues their texts. */
function recorder(id: number, name: string, codec = PLAIN) {
  const frames: Frame[] = [];
  const inbox = new Inbox<string>();
  const deliver = (frame: Frame) => {
    frames.push(frame);
    inbox.push(frame.text);
  };
  const closed: [number, string][] = [];
  const close = (code: number, reason: string) => void closed.push([code, reason]);
  const member = { id, name, codec, deliver, close };
  return {
    member,
    frames,
    inbox,
    closed,
    texts: () => frames.map((frame) => frame.text),
  };
}

Deno.test("plain frames: a line is a message, / a command, // a message starting with /", () => {
  assert.deepEqual(PLAIN.decode("hi"), { kind: "message", text: "hi" });
  assert.deepEqual(PLAIN.decode("/who"), { kind: "command", line: "/who" });
  assert.deepEqual(PLAIN.decode("//who"), { kind: "message", text: "/who" });
  assert.deepEqual(PLAIN.message({ from: "a", text: "é", time: 1 }), {
    text: "a: é",
    bytes: 5,
  });
  assert.deepEqual(PLAIN.notice(WELCOME)?.text, WELCOME);
  assert.equal(PLAIN.users(["a"]), undefined);
});

Deno.test("YewChat frames: messages and user lists only, never commands or notices", () => {
  const message = JSON.stringify({ messageType: "message", data: "/who" });
  assert.deepEqual(YEW.decode(message), { kind: "message", text: "/who" });
  assert.deepEqual(YEW.decode("plain text"), { kind: "nothing" });
  assert.equal(YEW.notice(WELCOME), undefined);
  assert.deepEqual(YEW.recent([{ from: "a", text: "old", time: 1 }]), []);
  assert.equal(YEW.users(["a", "b"])?.text, yewUsers(["a", "b"]));
  assert.equal(
    YEW.message({ from: "a", text: "three", time: 7 }).text,
    '{"messageType":"message","data":"{\\"from\\":\\"a\\",\\"message\\":\\"three\\",\\"time\\":7}"}',
  );
  assert.deepEqual(
    registration(JSON.stringify({ messageType: "register", data: "ann" })),
    { codec: YEW, nick: "ann" },
  );
  assert.equal(registration("hello"), undefined);
});

Deno.test("a room's delivery cost: a frame a member, none for joins and leaves past --presence-limit", async () => {
  const room = localRoom<ReturnType<typeof recorder>["member"]>({ presenceLimit: 2 });
  for (const m of [recorder(1, "a"), recorder(2, "b"), recorder(3, "c")]) {
    assert.ok(await room.hold(m.member.name, { exclusive: true }));
    room.join(m.member);
  }
  const message: RoomEvent = {
    kind: "message",
    from: "a",
    text: "hi",
    time: 0,
    origin: "elsewhere",
    conn: 1,
  };
  assert.equal(room.deliveryCost(message, {}), 3);
  assert.equal(room.deliveryCost({ kind: "joined", name: "d" }, {}), 0);
  assert.equal(room.deliveryCost({ kind: "left", name: "d" }, { online: 2 }), 3);
  const until = Date.now() + 1000;
  assert.equal(room.deliveryCost({ kind: "kicked", name: "c", by: "a", until }, {}), 3);
  assert.equal(room.deliveryCost({ kind: "muted", name: "c", by: "a", until }, {}), 1);
});

Deno.test("a member's message costs a frame a member in process, none while a shared backplane carries it", () => {
  /** A backplane shared by instances, as Redis is, up or down. */
  const shared = (up: boolean): Backplane =>
    Object.assign(new LocalBackplane({ deliver: () => {} }), { shared: true, up });
  const local = localRoom<ReturnType<typeof recorder>["member"]>();
  const up = localRoom<ReturnType<typeof recorder>["member"]>({
    backplane: shared(true),
  });
  const down = localRoom<ReturnType<typeof recorder>["member"]>({
    backplane: shared(false),
  });
  for (const r of [local, up, down]) {
    for (const m of [recorder(1, "a"), recorder(2, "b"), recorder(3, "c")]) {
      r.join(m.member);
    }
  }
  assert.equal(local.messageCost, 3);
  // Its frames go when Redis brings it back, costed as that delivery.
  assert.equal(up.messageCost, 0);
  // Delivered here at once while the backplane is down.
  assert.equal(down.messageCost, 3);
});

Deno.test("a room encodes an event once per codec, keeps the last N, and announces", async () => {
  const room = localRoom<ReturnType<typeof recorder>["member"]>({ history: 2 });
  const [a, b, y] = [recorder(1, "a"), recorder(2, "b"), recorder(3, "y", YEW)];
  for (const m of [a, b, y]) {
    assert.ok(await room.hold(m.member.name, { exclusive: true }));
    room.join(m.member);
  }
  assert.equal(await room.hold("a", { exclusive: true }), false);
  // Everyone but the newcomer hears of it.
  assert.deepEqual(a.texts(), [joinedNotice("b", 2), joinedNotice("y", 3)]);
  assert.deepEqual(b.texts(), [joinedNotice("y", 3)]);
  assert.deepEqual(y.texts(), [yewUsers(["a", "b", "y"])]);
  await y.inbox.next();
  for (const text of ["one", "two", "three"]) room.post(a.member, text);
  assert.deepEqual(b.texts().slice(-3), ["a: one", "a: two", "a: three"]);
  // One frame object for every member of a codec: encoded once.
  assert.equal(a.frames.at(-1), b.frames.at(-1));
  const { time } = JSON.parse(JSON.parse(y.texts().at(-1)!).data);
  assert.equal(
    y.texts().at(-1),
    yewMessage({ from: "a", text: "three", time }),
  );
  const recent = room.recent() as Recent;
  assert.deepEqual(recent.messages.map((m) => [m.id, m.text]), [[2, "two"], [
    3,
    "three",
  ]]);
  assert.equal(recent.last, 3);
  room.leave(b.member);
  assert.equal(a.texts().at(-1), leftNotice("b", 2));
  // Lists wait out USER_LIST_INTERVAL_MS since the last one.
  assert.equal(
    await y.inbox.skipTo((t) => t.includes('"users"')),
    yewUsers(["a", "y"]),
  );
  for (const m of [a, y]) room.leave(m.member);
  assert.ok(room.empty);
  room.close();
});

Deno.test("member lists: N joins in a burst cost two lists, not N", async () => {
  const room = localRoom<ReturnType<typeof recorder>["member"]>();
  const y = recorder(1, "y", YEW);
  room.join(y.member);
  const names = Array.from({ length: 20 }, (_, i) => `p${i}`);
  names.forEach((name, i) => room.join(recorder(i + 2, name).member));
  assert.equal(await y.inbox.next(), yewUsers(["y"]));
  assert.equal(await y.inbox.next(), yewUsers(["y", ...names]));
  assert.equal(y.frames.length, 2);
  room.close();
});

Deno.test("a room without echo leaves the sender out; past the presence limit, no notices", () => {
  const room = localRoom<ReturnType<typeof recorder>["member"]>({
    echo: false,
    presenceLimit: 1,
  });
  const [a, b, y] = [recorder(1, "a"), recorder(2, "b"), recorder(3, "y", YEW)];
  for (const m of [a, b, y]) room.join(m.member);
  // b joined as the second member: over the limit of 1, so a heard nothing.
  assert.deepEqual(a.texts(), []);
  assert.deepEqual(y.texts(), [yewUsers(["a", "b", "y"])]);
  room.post(a.member, "hi");
  assert.deepEqual(a.texts(), []);
  assert.equal(b.texts().at(-1), "a: hi");
});

/** A socket that records what is sent, with a backlog the test sets. */
class FakeSocket extends EventTarget {
  readyState: number = WebSocket.OPEN;
  bufferedAmount = 0;
  readonly sent: string[] = [];
  closed?: { code: number; reason: string };
  send(data: string): void {
    this.sent.push(data);
  }
  close(code: number, reason: string): void {
    this.closed = { code, reason };
    this.readyState = WebSocket.CLOSING;
  }
}

Deno.test("a batching outbox sends a turn's frames as one at its end", async () => {
  const socket = new FakeSocket();
  const turns = new TurnChecks();
  const outbox = new Outbox({
    socket: socket as unknown as WebSocket,
    maxBufferedBytes: 1 << 20,
    turns,
    owner: { slow: () => assert.fail("not slow") },
    batch: BATCHERS[BATCH_PROTOCOL],
  });
  outbox.send("one");
  outbox.send("two");
  outbox.send("three");
  assert.deepEqual(socket.sent, []);
  await endOfTurn();
  assert.deepEqual(socket.sent, [
    `one${BATCH_SEPARATOR}two${BATCH_SEPARATOR}three`,
  ]);
  // A turn with one frame: that frame alone.
  outbox.send("four");
  await endOfTurn();
  assert.deepEqual(socket.sent.at(-1), "four");
  // A long turn's frames leave in batches of MAX_BATCH_BYTES, not all at its end.
  const big = "x".repeat(MAX_BATCH_BYTES / 2);
  for (let i = 0; i < 5; i++) outbox.send(big);
  assert.deepEqual(socket.sent.slice(2), [
    `${big}${BATCH_SEPARATOR}${big}`,
    `${big}${BATCH_SEPARATOR}${big}`,
  ]);
  await endOfTurn();
  assert.deepEqual(socket.sent.slice(4), [big]);
  turns.stop();
});

Deno.test("an outbox gives up on a consumer at four times the backlog limit, once", () => {
  const socket = new FakeSocket();
  const turns = new TurnChecks();
  let slow = 0;
  const outbox = new Outbox({
    socket: socket as unknown as WebSocket,
    maxBufferedBytes: 10,
    turns,
    owner: { slow: () => slow++ },
  });
  socket.bufferedAmount = 45;
  outbox.send("x".repeat(41));
  outbox.send("more");
  assert.equal(slow, 1);
  assert.ok(outbox.stopped);
  assert.equal(socket.sent.length, 1);
  turns.stop();
});

/** A session's host with real metrics and turns, recording the log and the end. */
function host(): SessionHost & { lines: string[]; endings: number } {
  const lines: string[] = [];
  const turns = new TurnChecks();
  const result = {
    metrics: new Metrics(),
    log: (line: string) => void lines.push(line),
    turns,
    scheduler: new Scheduler(turns),
    limits: {
      maxMessageBytes: 100,
      rateLimit: 0,
      rateBurst: 1,
      rateBytes: 0,
      rateBytesBurst: 1,
    },
    maxBufferedBytes: 1024,
    quiet: false,
    kickSeconds: 300,
    shuttingDown: false,
    lines,
    endings: 0,
    ended: () => void result.endings++,
    tidy: () => {},
  };
  return result;
}

let sessions = 0;

/**
 * A session on a fake socket in `room` (one of its own by default), its
 * name (the address without one) held as the upgrade gate holds it.
 */
async function sessionFor(name?: string, room = localRoom<Session>()) {
  const socket = new FakeSocket();
  const chat = host();
  const address = `127.0.0.1:${5000 + ++sessions}`;
  assert.ok(
    await room.hold(name ?? address, { exclusive: name !== undefined }),
  );
  const session = new Session({
    id: sessions,
    socket: socket as unknown as WebSocket,
    address,
    name,
    room,
    host: chat,
  });
  return { room, socket, chat, address, session };
}

Deno.test("a message its history held is not sent to a newcomer again; one of a new epoch is", async () => {
  const room = localRoom<Session>();
  const said = (text: string): RoomEvent => ({
    kind: "message",
    from: "bob",
    text,
    time: 0,
    origin: "local",
    conn: 99,
  });
  for (const text of ["one", "two", "three"]) room.deliver(said(text), {});
  const { socket, chat, session } = await sessionFor("ann", room);
  socket.dispatchEvent(new Event("open"));
  assert.deepEqual(socket.sent, [WELCOME, "bob: one", "bob: two", "bob: three"]);
  const epoch = room.epoch;
  // A backplane that still held the second brings it now: not again.
  session.deliver({ text: "bob: two", bytes: 8 }, { id: 2, epoch });
  // The room's history started again (a Redis that lost it): ids start again.
  session.deliver({ text: "bob: anew", bytes: 9 }, { id: 1, epoch: "another" });
  session.deliver({ text: "bob: anew 2", bytes: 11 }, { id: 2, epoch: "another" });
  assert.deepEqual(socket.sent.slice(4), ["bob: anew", "bob: anew 2"]);
  session.close(CloseCode.NORMAL, "bye");
  socket.dispatchEvent(new Event("close"));
  chat.turns.stop();
  chat.scheduler.stop();
});

Deno.test("a session's life: held, joined, refused, gone once", async () => {
  const { room, socket, chat, address, session } = await sessionFor("ann");
  assert.equal(session.state, "connecting");
  socket.dispatchEvent(new Event("open"));
  assert.equal(session.state, "joined");
  assert.deepEqual(socket.sent, [WELCOME]);
  socket.dispatchEvent(new MessageEvent("message", { data: "hello" }));
  assert.equal(socket.sent.at(-1), "ann: hello");
  assert.equal(chat.lines.at(-1), `From client ${address} "hello"`);
  socket.dispatchEvent(new MessageEvent("message", { data: "x".repeat(101) }));
  assert.equal(session.state, "leaving");
  assert.deepEqual(socket.closed, {
    code: CloseCode.MESSAGE_TOO_BIG,
    reason: CloseReason.TOO_BIG,
  });
  assert.equal(chat.metrics.refusals.too_big, 1);
  assert.ok(room.empty);
  socket.dispatchEvent(new Event("close"));
  socket.dispatchEvent(new Event("close"));
  assert.equal(session.state, "gone");
  assert.equal(chat.endings, 1);
  assert.equal(chat.lines.at(-1), `Disconnected ${address}`);
  chat.turns.stop();
});

Deno.test("a session's input waits while the turn's budget is spent, up to MAX_WAITING_CHARS, in order", async () => {
  const { socket, chat, session } = await sessionFor("ann");
  chat.limits.maxMessageBytes = MAX_WAITING_CHARS;
  socket.dispatchEvent(new Event("open"));
  assert.deepEqual(socket.sent, [WELCOME]);
  const line = (n: number) => `${n}`.padEnd(MAX_WAITING_CHARS * 0.45, ".");
  const first = line(1);
  // This turn's budget, spent (the first input consults it; the others wait behind it).
  assert.ok(chat.scheduler.mayRun());
  chat.turns.framesSent += TURN_BUDGET.frames;
  socket.dispatchEvent(new MessageEvent("message", { data: first }));
  socket.dispatchEvent(new MessageEvent("message", { data: line(2) }));
  // Two wait (90% of the bound); nothing was sent.
  assert.deepEqual(socket.sent, [WELCOME]);
  assert.equal(chat.metrics.framesWaited, 2);
  // A third would pass the bound: all three go now, in order.
  socket.dispatchEvent(new MessageEvent("message", { data: line(3) }));
  assert.deepEqual(socket.sent.slice(1), [1, 2, 3].map((n) => `ann: ${line(n)}`));
  session.close(CloseCode.NORMAL, "bye");
  socket.dispatchEvent(new Event("close"));
  chat.turns.stop();
  chat.scheduler.stop();
});

Deno.test("a session without a name becomes a YewChat client by its register, however busy the turn", async () => {
  const { room, socket, chat, address, session } = await sessionFor();
  socket.dispatchEvent(new Event("open"));
  assert.equal(session.state, "held");
  // A turn that has spent its budget: the register does not wait (were it
  // to wait past REGISTER_WAIT_MS, the client would join as a plain one).
  assert.ok(chat.scheduler.mayRun());
  chat.turns.framesSent += TURN_BUDGET.frames;
  assert.ok(!chat.scheduler.mayRun());
  socket.dispatchEvent(
    new MessageEvent("message", {
      data: JSON.stringify({ messageType: "register", data: "yuri" }),
    }),
  );
  // The NICK's claim settles on the backplane's answer.
  await Promise.resolve();
  assert.equal(session.state, "joined");
  assert.equal(session.name, "yuri");
  assert.equal(session.codec, YEW);
  assert.ok(!room.has(address));
  assert.deepEqual(socket.sent, [yewUsers(["yuri"])]);
  session.close(CloseCode.NORMAL, "bye");
  socket.dispatchEvent(new Event("close"));
  assert.ok(room.empty);
  chat.turns.stop();
  chat.scheduler.stop();
});

Deno.test("a slow consumer is one call from its outbox to its session", async () => {
  const { socket, chat, address, session } = await sessionFor("sam");
  socket.dispatchEvent(new Event("open"));
  socket.bufferedAmount = 5000;
  session.deliver(PLAIN.notice("x".repeat(5000))!);
  await Promise.resolve();
  assert.deepEqual(socket.closed, {
    code: CloseCode.POLICY_VIOLATION,
    reason: CloseReason.TOO_SLOW,
  });
  assert.equal(
    chat.lines.at(-1),
    `Dropped ${address}: slow consumer, over 1024 bytes unsent`,
  );
  socket.dispatchEvent(new Event("close"));
  chat.turns.stop();
});

Deno.test("history: all rooms within one byte budget, the largest losing their oldest first", () => {
  const message = (text: string) => ({ from: "a", text, time: 0 });
  const size = heldBytes(message("x".repeat(100)));
  const budget = new HistoryBudget(10 * size);
  const [big, small] = [new History(100, budget), new History(100, budget)];
  for (let i = 0; i < 8; i++) big.add(message(String(i).repeat(100)));
  for (let i = 0; i < 2; i++) small.add(message(String(i).repeat(100)));
  assert.equal(budget.total, 10 * size);
  // One more passes the budget: back under nine tenths, from the largest.
  small.add(message("2".repeat(100)));
  assert.ok(budget.total <= 9 * size, `${budget.total}`);
  assert.equal(small.messages.length, 3);
  assert.equal(big.messages.length, 6);
  assert.equal(big.messages[0].text, "2".repeat(100));
  // Per room, --history still caps the count.
  const capped = new History(2, budget);
  for (const text of ["one", "two", "three"]) capped.add(message(text));
  assert.deepEqual(capped.messages.map((m) => m.text), ["two", "three"]);
  for (const history of [big, small, capped]) history.clear();
  assert.equal(budget.total, 0);
});

Deno.test("history: every message comes back as it was, across its buffers and its ring's growth, the last N alone if asked", () => {
  const budget = new HistoryBudget(2 ** 24);
  const history = new History(100, budget);
  const sent: ChatMessage[] = [];
  for (let i = 1; i <= 250; i++) {
    const message: ChatMessage = {
      from: `u${i % 7}`,
      // Short and long texts, past one buffer's size; several scripts; a lone surrogate.
      text: i % 50 === 0
        ? "é😀x".repeat(30_000)
        : i === 7
        ? "a\ud800b"
        : `${i} ünï ${"x".repeat(i)}`,
      time: 1000 + i,
      id: i,
    };
    if (i % 3 === 0) message.ref = `r${i}`;
    sent.push(message);
    history.add(message);
  }
  const kept = sent.slice(-100);
  assert.deepEqual(history.messages, kept);
  assert.deepEqual(history.latest(3), kept.slice(-3));
  assert.deepEqual(history.latest(1000), kept);
  assert.equal(JSON.stringify(history.messages[0]), JSON.stringify(kept[0]));
  assert.ok(history.hasRef("r249") && !history.hasRef("r150"));
  assert.equal(budget.total, history.bytes);
  assert.equal(history.bytes, kept.reduce((sum, m) => sum + heldBytes(m), 0));
  // A lone surrogate is kept as UTF-8 keeps it.
  const odd = new History(10, budget);
  odd.add({ from: "a", text: "a\ud800b", time: 0 });
  assert.equal(odd.messages[0].text, "a\ufffdb");
  // No id, no ref: the message comes back without them.
  odd.add({ from: "b", text: "plain", time: 1 });
  assert.deepEqual(odd.messages[1], { from: "b", text: "plain", time: 1 });
  // Six bytes (a lone surrogate, then U+0800) where four are left of the first
  // buffer: the part written there is dropped, and the text goes whole to a new buffer.
  const tight = new History(10, budget);
  const filler = "x".repeat(FIRST_CHUNK_BYTES - 4);
  tight.add({ from: "a", text: filler, time: 0 });
  tight.add({ from: "a", text: "\ud800\u0800", time: 1 });
  assert.deepEqual(tight.messages.map((m) => m.text), [filler, "\ufffd\u0800"]);
  tight.clear();
  // Long messages gone, short ones after them: the buffers shrink with what they hold.
  const utf8 = (h: History) => h.messages.reduce((sum, m) => sum + utf8Length(m.text), 0);
  const mixed = new History(10, budget);
  for (let i = 0; i < 10; i++) mixed.add({ from: "a", text: "L".repeat(6000), time: i });
  assert.ok(mixed.bufferBytes >= 60_000);
  for (let i = 0; i < 10; i++) mixed.add({ from: "a", text: `short ${i}`, time: i });
  assert.deepEqual(
    mixed.messages.map((m) => m.text),
    [...Array(10).keys()].map((i) => `short ${i}`),
  );
  assert.ok(
    mixed.bufferBytes <= 2 * utf8(mixed) + BUFFER_SLACK_BYTES,
    `${mixed.bufferBytes}`,
  );
  assert.ok(
    history.bufferBytes <= 2 * utf8(history) + BUFFER_SLACK_BYTES,
    `${history.bufferBytes}`,
  );
  for (const h of [history, odd, mixed]) h.clear();
  assert.equal(budget.total, 0);
  assert.equal(history.bufferBytes, 0);
  assert.deepEqual(history.messages, []);
});

Deno.test("a kick closes the name's members, bars the name, and tells the rest; a mute holds its time", () => {
  const room = localRoom<ReturnType<typeof recorder>["member"]>();
  const [a, b] = [recorder(1, "admin"), recorder(2, "Bob")];
  for (const m of [a, b]) room.join(m.member);
  const until = Date.now() + 60_000;
  room.publish({ kind: "muted", name: "bob", by: "admin", until });
  assert.equal(b.texts().at(-1), "* you are muted for 60 s");
  assert.equal(room.mutedFor("BOB"), 60);
  assert.notEqual(a.texts().at(-1), "* you are muted for 60 s");
  room.publish({
    kind: "kicked",
    name: "bob",
    by: "admin",
    reason: "spam",
    until,
  });
  assert.deepEqual(b.closed, [[4001, "kicked: spam"]]);
  assert.equal(a.texts().at(-1), "* bob was kicked by admin");
  const kicked = (name: string) => room.options.moderation.left("kicked", "r", name) > 0;
  assert.ok(kicked("Bob"));
  assert.ok(!kicked("admin"));
});

Deno.test("emptied rooms are kept for resumes, at most MAX_IDLE_ROOMS of them, oldest out first", async () => {
  const chat = new Chat({
    echo: true,
    history: 5,
    historyKeep: 10,
    roomTtl: 300,
    historyBytes: 2 ** 20,
    presenceLimit: 200,
    quiet: true,
    limits: {
      maxMessageBytes: 65536,
      rateLimit: 0,
      rateBurst: 1,
      rateBytes: 0,
      rateBytesBurst: 1,
    },
    maxBufferedBytes: 2 ** 20,
    maxClients: 10,
    maxClientsPerIp: 10,
    kickSeconds: 300,
    log() {},
  });
  for (let i = 0; i <= MAX_IDLE_ROOMS + 10; i++) {
    const reservation = await chat.reserve({ room: `r${i}`, address: `127.0.0.1:${i}` });
    assert.ok(!("status" in reservation));
    chat.cancel(reservation);
  }
  assert.equal(chat.rooms, MAX_IDLE_ROOMS);
  await chat.shutdown(Promise.resolve());
  assert.equal(chat.rooms, 0);
});

/**
 * A clock that stands still, for the scheduler's tests: a turn then ends
 * when its end is scheduled, never because time passed (a machine that
 * stalls a test past `TURN_MS` would otherwise start a new one).
 */
const HELD_CLOCK = () => 0;

/** A client of the scheduler: each input it handles sends `frames` frames. */
class Sender implements Waiting {
  readonly waiting: string[] = [];

  constructor(
    readonly name: string,
    readonly turns: TurnChecks,
    readonly handled: string[],
    readonly frames = 1,
  ) {}

  /** Its input `text`: handled at once if the turn allows, else it waits. */
  input(scheduler: Scheduler, text: string): void {
    if (this.waiting.length === 0 && scheduler.mayRun()) return this.#handle(text);
    this.waiting.push(text);
    if (this.waiting.length === 1) scheduler.wait(this);
  }

  #handle(text: string): void {
    this.handled.push(`${this.name} ${text}`);
    this.turns.framesSent += this.frames;
  }

  waitingCost() {
    return { frames: this.frames, bytes: 0 };
  }

  runWaiting(): boolean {
    const text = this.waiting.shift();
    if (text !== undefined) this.#handle(text);
    return this.waiting.length > 0;
  }
}

Deno.test("a turn sends at most its budget for input; the rest waits, in order, and a newcomer goes first", async () => {
  const turns = new TurnChecks();
  const scheduler = new Scheduler(turns, HELD_CLOCK);
  const handled: string[] = [];
  // Each of the crowd's inputs sends half a turn's budget.
  const crowd = [0, 1, 2].map((i) =>
    new Sender(`c${i}`, turns, handled, TURN_BUDGET.frames / 2)
  );
  const quiet = new Sender("q", turns, handled);
  for (let n = 0; n < 3; n++) for (const c of crowd) c.input(scheduler, String(n));
  // Two inputs fill the turn; the other seven wait.
  assert.deepEqual(handled, ["c0 0", "c1 0"]);
  assert.equal(scheduler.mayRun(), false);
  // A later turn: the quiet client's one input comes while the crowd waits,
  // and goes before what waits (save what one turn of the waiting may have
  // taken first: a budget's worth, two inputs, and the longest-waiting one).
  await new Promise((resolve) => setImmediate(resolve));
  quiet.input(scheduler, "hello");
  // Everything else goes out in later turns, each client's in its order.
  while (handled.length < 10) await new Promise((resolve) => setTimeout(resolve, 1));
  assert.ok(handled.indexOf("q hello") <= 5, handled.join(", "));
  for (const c of ["c0", "c1", "c2"]) {
    assert.deepEqual(
      handled.filter((line) => line.startsWith(c)),
      [`${c} 0`, `${c} 1`, `${c} 2`],
    );
  }
  scheduler.stop();
});

Deno.test("the longest-waiting goes each turn whatever its cost, after the inputs that fit", async () => {
  const turns = new TurnChecks();
  const scheduler = new Scheduler(turns, HELD_CLOCK);
  const handled: string[] = [];
  // Each of its inputs costs two turns' budget: none ever fits.
  const big = new Sender("big", turns, handled, 2 * TURN_BUDGET.frames);
  for (let n = 0; n < 4; n++) big.input(scheduler, String(n));
  assert.deepEqual(handled, ["big 0"]);
  // A cheap one starts waiting in the same, spent, turn.
  const late = new Sender("late", turns, handled);
  late.input(scheduler, "hi");
  assert.deepEqual(late.waiting, ["hi"]);
  while (handled.length < 5) await new Promise((resolve) => setTimeout(resolve, 1));
  // The next turn for the waiting: the cheap one first, then one of the
  // dear ones past the budget; the rest in later turns, in order.
  assert.deepEqual(handled, ["big 0", "late hi", "big 1", "big 2", "big 3"]);
  scheduler.stop();
});

Deno.test("a cheap input is not held behind dear ones: it goes in the next turn for the waiting", async () => {
  const turns = new TurnChecks();
  const scheduler = new Scheduler(turns, HELD_CLOCK);
  const handled: string[] = [];
  const turn = () => new Promise((resolve) => setTimeout(resolve, 1));
  // A hundred clients in a crowded room, each input five turns' budget.
  const crowd = Array.from(
    { length: 100 },
    (_, i) => new Sender(`c${i}`, turns, handled, 5 * TURN_BUDGET.frames),
  );
  for (const c of crowd) c.input(scheduler, "0");
  assert.deepEqual(handled, ["c0 0"]);
  // Two quiet clients start waiting in one turn; the newest goes first, the
  // other because it fits in what is left (not after 99 others).
  const quiet = [0, 1].map((i) => new Sender(`q${i}`, turns, handled));
  while (handled.length < 3) await turn();
  const before = handled.length;
  for (const q of quiet) q.input(scheduler, "hi");
  while (handled.length < before + 3) await turn();
  // The two go in the next turn for the waiting, and one of the crowd with
  // them (the longest-waiting), whatever the budget.
  const next = handled.slice(before, before + 3);
  assert.deepEqual(next.filter((line) => line.startsWith("q")).toSorted(), [
    "q0 hi",
    "q1 hi",
  ]);
  assert.deepEqual(next.filter((line) => line.startsWith("c")), [`c${before} 0`]);
  // The crowd still goes, one a turn at least, each once.
  while (handled.length < 102) await turn();
  assert.equal(new Set(handled).size, 102);
  scheduler.stop();
});

Deno.test("turns that do not spend the budget are told apart by time", () => {
  const turns = new TurnChecks();
  let clock = 0;
  const scheduler = new Scheduler(turns, () => clock);
  const handled: string[] = [];
  const sender = new Sender("s", turns, handled, TURN_BUDGET.frames);
  sender.input(scheduler, "0");
  // A whole budget, then a pause: the next input counts from nothing.
  clock += TURN_MS + 1;
  sender.input(scheduler, "1");
  assert.deepEqual(handled, ["s 0", "s 1"]);
  // Within the same turn it would have waited.
  sender.input(scheduler, "2");
  assert.deepEqual(sender.waiting, ["2"]);
  scheduler.stop();
  assert.deepEqual(handled, ["s 0", "s 1", "s 2"]);
});

Deno.test("a client waiting alone gets a whole budget in a turn for the waiting, not one input", async () => {
  const turns = new TurnChecks();
  const scheduler = new Scheduler(turns, HELD_CLOCK);
  const handled: string[] = [];
  // A whole budget spent: what comes next waits.
  new Sender("big", turns, handled, TURN_BUDGET.frames).input(scheduler, "0");
  const many = new Sender("many", turns, handled);
  for (let n = 0; n < 3 * TURN_BUDGET.frames; n++) many.input(scheduler, String(n));
  assert.equal(handled.length, 1);
  // How many the first turn for the waiting handled: a microtask runs once
  // that turn's callback has returned.
  const firstTurn = new Promise<number>((resolve) => {
    const handle = many.runWaiting.bind(many);
    many.runWaiting = () => {
      many.runWaiting = handle;
      queueMicrotask(() => resolve(handled.length - 1));
      return handle();
    };
  });
  assert.equal(await firstTurn, TURN_BUDGET.frames);
  while (handled.length < 1 + 3 * TURN_BUDGET.frames) {
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  assert.deepEqual(
    handled.slice(1),
    Array.from({ length: 3 * TURN_BUDGET.frames }, (_, n) => `many ${n}`),
  );
  scheduler.stop();
});

/**
 * Turns by hand, for a backplane's received events: each allows `budget`
 * frames, and a turn for the waiting serves them while it lasts (time
 * plays no part, as it does in the scheduler's).
 */
class HandTurns {
  sent = 0;
  waiting: Waiting[] = [];

  constructor(readonly budget: number) {}

  mayRun(): boolean {
    return this.sent < this.budget;
  }

  wait(client: Waiting): void {
    this.waiting.push(client);
  }

  /** The next turn: the waiting, in order, while the budget lasts. */
  turn(): void {
    this.sent = 0;
    const waiting = this.waiting.splice(0);
    for (const client of waiting) {
      let more = client.runWaiting();
      while (more && this.mayRun()) more = client.runWaiting();
      if (more) this.waiting.push(client);
    }
  }
}

/**
 * A backplane's received events for a room of `size` members, on turns by
 * hand, and what the room got.
 */
function receivedEvents(size: number) {
  const turns = new HandTurns(TURN_BUDGET.frames);
  const got: string[] = [];
  const events = new ReceivedEvents({
    deliver(_room, event) {
      got.push(event.kind === "message" ? event.text : event.kind);
      turns.sent += size;
    },
    missed: () => void got.push("lost"),
    deliveryCost: () => size,
  }, turns);
  return { turns, events, got };
}

Deno.test("a backplane's events are delivered within the turn's budget, the rest in later turns, in order, a loss in its place", () => {
  // Each event is a hundred frames: a turn holds three.
  const { turns, events, got } = receivedEvents(100);
  for (let n = 0; n < 5; n++) events.add("r", remoteMessage(String(n)), {}, 100);
  events.lost("r");
  for (let n = 5; n < 10; n++) events.add("r", remoteMessage(String(n)), {}, 100);
  events.deliver();
  assert.deepEqual(got, ["0", "1", "2"]);
  // More arrives meanwhile: it waits behind what waits already.
  events.add("r", remoteMessage("10"), {}, 100);
  events.deliver();
  assert.equal(got.length, 3);
  assert.equal(turns.waiting.length, 1);
  turns.turn();
  assert.deepEqual(got.slice(3), ["3", "4", "lost", "5"]);
  turns.turn();
  turns.turn();
  assert.deepEqual(got.slice(7), ["6", "7", "8", "9", "10"]);
  assert.ok(events.empty);
  assert.equal(turns.waiting.length, 0);
});

Deno.test("a backplane's waiting events are delivered at once when drained (a failure, a stop) or past their limit", () => {
  const { turns, events, got } = receivedEvents(1000);
  for (let n = 0; n < 4; n++) events.add("r", remoteMessage(String(n)), {}, 100);
  events.deliver();
  assert.deepEqual(got, ["0"]);
  events.drain();
  assert.deepEqual(got, ["0", "1", "2", "3"]);
  // Its turn finds nothing left, and it waits no more.
  turns.turn();
  assert.equal(turns.waiting.length, 0);
  // What waits is memory: past the limit, the budget gives way.
  got.length = 0;
  const half = MAX_RECEIVED_WAITING_CHARS / 2;
  for (let n = 0; n < 3; n++) events.add("r", remoteMessage(String(n)), {}, half);
  events.deliver();
  assert.deepEqual(got, ["0", "1", "2"]);
});

Deno.test("a backplane's events that send nothing here (joins past the presence limit) do not take a turn each", async () => {
  const turns = new TurnChecks();
  const scheduler = new Scheduler(turns, HELD_CLOCK);
  // Stands for a socket the runtime has written everything to.
  const written = { readyState: WebSocket.CLOSED } as WebSocket;
  const got: string[] = [];
  // The stretches of code deliveries ran in: a turn each.
  let stretches = 0;
  let inStretch = false;
  // A room of a thousand past its presence limit: a message is a frame a
  // member, a join none.
  const cost = (event: RoomEvent) => event.kind === "message" ? 1000 : 0;
  const events = new ReceivedEvents({
    deliver(_room, event) {
      got.push(event.kind === "message" ? event.text : event.kind);
      if (!inStretch) {
        inStretch = true;
        queueMicrotask(() => {
          stretches++;
          inStretch = false;
        });
      }
      for (let i = 0; i < cost(event); i++) turns.sent(written, 64);
    },
    missed: () => void got.push("lost"),
    deliveryCost: (_room, event) => cost(event),
  }, scheduler);
  events.add("r", remoteMessage("before"), {}, 100);
  for (let n = 0; n < 500; n++) {
    events.add("r", { kind: "joined", name: `n${n}` }, {}, 30);
  }
  events.add("r", remoteMessage("after"), {}, 100);
  events.deliver();
  while (got.at(-1) !== "after") await new Promise((resolve) => setTimeout(resolve, 1));
  assert.equal(got.length, 502);
  // The first message; the joins; the second (dearer than a turn).
  assert.ok(stretches <= 3, `${stretches} turns`);
  scheduler.stop();
});

Deno.test("at shutdown, whatever waits is handled at once", () => {
  const turns = new TurnChecks();
  const scheduler = new Scheduler(turns, HELD_CLOCK);
  const handled: string[] = [];
  const big = new Sender("big", turns, handled, TURN_BUDGET.frames);
  for (let n = 0; n < 3; n++) big.input(scheduler, String(n));
  assert.deepEqual(handled, ["big 0"]);
  scheduler.stop();
  assert.deepEqual(handled, ["big 0", "big 1", "big 2"]);
});

Deno.test("a large room's member list goes out a part per turn, to whoever is still a member, one list at a time", async () => {
  const turns = new TurnChecks();
  const scheduler = new Scheduler(turns);
  const room = localRoom<ReturnType<typeof recorder>["member"]>({ scheduler });
  /** When each list frame was handed out, by its text. */
  const handedOut = new Map<string, number[]>();
  const members = Array.from({ length: 3 * TURN_BUDGET.frames }, (_, i) => {
    const member = recorder(i, `y${i}`, YEW);
    // What the outbox would count.
    const deliver = member.member.deliver;
    member.member.deliver = (frame) => {
      deliver(frame);
      turns.framesSent++;
      handedOut.getOrInsert(frame.text, []).push(performance.now());
    };
    return member;
  });
  const names = members.map((m) => m.member.name);
  const tick = () => new Promise((resolve) => setTimeout(resolve, 1));
  // The first join's list goes at once; the others' is one list, later.
  for (const m of members) room.join(m.member);
  const first = members[0];
  assert.equal(await first.inbox.next(), yewUsers(["y0"]));
  assert.equal(await first.inbox.next(), yewUsers(names));
  const got = () =>
    members.filter((m) =>
      m.frames.length > 0 && m.frames.at(-1)!.text === yewUsers(names)
    ).length;
  const atOnce = got();
  assert.ok(atOnce >= TURN_BUDGET.frames && atOnce < members.length, `${atOnce} at once`);
  // One that leaves before its part goes out gets none, and the list its
  // leaving makes due waits for this one to be out.
  const leaver = members.at(-1)!;
  const leaverFrames = leaver.frames.length;
  room.leave(leaver.member);
  while (got() < members.length - 1) await tick();
  assert.equal(leaver.frames.length, leaverFrames);
  assert.equal(first.frames.length, 2);
  const rest = names.slice(0, -1);
  assert.equal(await first.inbox.next(), yewUsers(rest));
  const lastOfBig = Math.max(...handedOut.get(yewUsers(names))!);
  const firstOfNext = Math.min(...handedOut.get(yewUsers(rest))!);
  assert.ok(
    firstOfNext - lastOfBig >= USER_LIST_INTERVAL_MS - 1,
    `${firstOfNext - lastOfBig} ms`,
  );
  while (members[members.length - 2].frames.at(-1)?.text !== yewUsers(rest)) await tick();
  scheduler.stop();
  room.close();
});

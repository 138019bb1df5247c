/**
 * Several instances as one chat through a real `redis-server`: one order,
 * shared presence and history, Redis killed, hung and restarted, an
 * instance killed, health and metrics. Instances run as `chat server`
 * subprocesses with only `--allow-net` and `--allow-read`.
 */
import assert from "node:assert/strict";
import {
  BACKPLANE_BACK,
  BACKPLANE_DOWN,
  joinedNotice,
  leftNotice,
  MESSAGES_LOST,
  NOT_ALLOWED,
  WELCOME,
  whoLine,
  yewUsers,
} from "../lib/protocol.ts";
import {
  type Cli,
  closedPort,
  HAS_REDIS,
  type Joinable,
  JsonClient,
  listenThroughCut,
  RedisServer,
  remoteMessage,
  sendNumbered,
  startServerProcess,
  takeNumbered,
  TcpProxy,
  TestClient,
} from "./helpers.ts";
import { reconnectedLine } from "../client.ts";
import type { BackplaneReceiver, Delivery, RoomEvent } from "../server/backplane.ts";
import { RedisBackplane, ROOM_KEYS } from "../server/redis.ts";
import { Scheduler, TURN_BUDGET } from "../server/scheduler.ts";
import { TurnChecks } from "../server/outbox.ts";
import { mintToken } from "../lib/auth.ts";
import { RawSocket } from "./raw.ts";

/** A Redis test, reported ignored (with the reason) without `redis-server`. */
function redisTest(name: string, fn: () => Promise<void>) {
  Deno.test({
    name: HAS_REDIS ? name : `${name} (ignored: /usr/bin/redis-server is not installed)`,
    ignore: !HAS_REDIS,
    fn,
  });
}

/** An instance on `redis`, once its backplane is up (or, with `down`, once it failed). */
async function instance(
  redis: string,
  args: string[] = [],
  expect: "up" | "down" = "up",
): Promise<Joinable & { cli: Cli; http: string } & AsyncDisposable> {
  const { cli, url, join } = await startServerProcess([
    "--redis",
    redis,
    ...args,
  ]);
  await cli.stdout.take((line) => line.startsWith(`Backplane ${expect}`));
  return {
    cli,
    url,
    join,
    http: url.replace("ws:", "http:"),
    [Symbol.asyncDispose]: async () => void await cli.stop(),
  };
}

/** A redis-server and two instances on it (with `args`), all stopped at the end. */
async function twoInstances(args: string[] = []) {
  const redis = await RedisServer.start();
  const started: AsyncDisposable[] = [];
  try {
    const a = await instance(redis.url, args);
    started.push(a);
    const b = await instance(redis.url, args);
    started.push(b);
    return {
      redis,
      a,
      b,
      [Symbol.asyncDispose]: async () => {
        for (const each of started.reverse()) await each[Symbol.asyncDispose]();
        await redis.kill();
      },
    };
  } catch (error) {
    for (const each of started) await each[Symbol.asyncDispose]();
    await redis.kill();
    throw error;
  }
}

async function json(url: string): Promise<{ status: number; body: unknown }> {
  const response = await fetch(url);
  return { status: response.status, body: await response.json() };
}

async function metrics(http: string): Promise<Map<string, number>> {
  const values = new Map<string, number>();
  for (
    const line of (await (await fetch(`${http}/metrics`)).text()).split("\n")
  ) {
    if (line === "" || line.startsWith("#")) continue;
    const [name, value] = line.split(" ");
    values.set(name, Number(value));
  }
  return values;
}

redisTest(
  "two instances: every member sees every message, in one order",
  async () => {
    await using cluster = await twoInstances();
    const { a, b } = cluster;
    await using a1 = await a.join("a1");
    await using a2 = await a.join("a2");
    await using b1 = await b.join("b1");
    await a1.presence.take((line) => line === joinedNotice("b1", 3));
    const clients = [a1, a2, b1];
    const names = ["a1", "a2", "b1"];
    const count = 30;
    // All at once, from both instances: nothing orders them but Redis.
    for (let i = 0; i < count; i++) {
      clients.forEach((client, c) => client.send(`${names[c]} says ${i}`));
    }
    const seen = await Promise.all(
      clients.map((client) => client.messages.many(3 * count)),
    );
    assert.deepEqual(seen[1], seen[0]);
    assert.deepEqual(seen[2], seen[0]);
    for (const name of names) {
      const own = seen[0].filter((line) => line.startsWith(`${name}: `));
      assert.deepEqual(
        own,
        [...Array(count).keys()].map((i) => `${name}: ${name} says ${i}`),
      );
    }
  },
);

redisTest("presence, history and names span instances", async () => {
  await using cluster = await twoInstances();
  const { a, b } = cluster;
  await using alice = await a.join("alice", "rust");
  alice.send("first");
  alice.send("second");
  assert.equal(await alice.messages.next(), "alice: first");
  assert.equal(await alice.messages.next(), "alice: second");
  // A newcomer on the other instance gets the room's history, from Redis.
  await using bob = new TestClient(`${b.url}/rust?name=bob`);
  assert.deepEqual(await bob.messages.many(3), [
    WELCOME,
    "alice: first",
    "alice: second",
  ]);
  assert.equal(await alice.presence.next(), joinedNotice("bob", 2));
  bob.send("/who");
  assert.equal(await bob.messages.next(), whoLine(["alice", "bob"]));
  alice.send("/who");
  assert.equal(await alice.messages.next(), whoLine(["alice", "bob"]));
  // A name held on one instance is taken on the other: 409 before the upgrade.
  const upgrade = await fetch(`${b.http}/rust?name=alice`, {
    headers: {
      upgrade: "websocket",
      connection: "Upgrade",
      "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
      "sec-websocket-version": "13",
    },
  });
  assert.equal(upgrade.status, 409);
  assert.equal(await upgrade.text(), "name taken: alice\n");
  const page = await fetch(`${b.http}/rust?name=alice`, { method: "HEAD" });
  assert.equal(page.status, 409);
  // Other rooms are other rooms.
  const free = await fetch(`${b.http}/go?name=alice`, { method: "HEAD" });
  assert.equal(free.status, 200);
  // A YewChat client on B gets the user list of both instances.
  await using yew = new TestClient(`${b.url}/rust`);
  await yew.opened;
  yew.send(JSON.stringify({ messageType: "register", data: "yui" }));
  assert.equal(await yew.messages.next(), yewUsers(["alice", "bob", "yui"]));
  assert.equal(await alice.presence.next(), joinedNotice("yui", 3));
  await bob.close();
  assert.equal(await alice.presence.next(), leftNotice("bob", 2));
  assert.equal(await yew.messages.next(), yewUsers(["alice", "yui"]));
});

redisTest(
  "Redis killed and restarted: notices, local delivery, presence written again",
  async () => {
    await using cluster = await twoInstances(["--redis-timeout", "300"]);
    const { redis, a, b } = cluster;
    await using alice = await a.join("alice");
    await using bob = await b.join("bob");
    await alice.presence.take((line) => line === joinedNotice("bob", 2));
    alice.send("before");
    assert.equal(await bob.messages.next(), "alice: before");
    assert.equal(await alice.messages.next(), "alice: before");

    await redis.kill();
    assert.equal(await alice.messages.next(), BACKPLANE_DOWN);
    assert.equal(await bob.messages.next(), BACKPLANE_DOWN);
    for (const http of [a.http, b.http]) {
      assert.deepEqual(await json(`${http}/readyz`), {
        status: 503,
        body: { ready: false, reason: "backplane down" },
      });
      assert.deepEqual(await json(`${http}/healthz`), {
        status: 200,
        body: { status: "ok", backplane: "down" },
      });
      assert.equal((await metrics(http)).get("chat_backplane_up"), 0);
    }
    // Meanwhile each instance serves its own members, in order.
    alice.send("alone 1");
    alice.send("alone 2");
    assert.deepEqual(await alice.messages.many(2), [
      "alice: alone 1",
      "alice: alone 2",
    ]);
    bob.send("by myself");
    assert.equal(await bob.messages.next(), "bob: by myself");
    // A newcomer while it is gone is told so after the welcome and history.
    await using carol = new TestClient(`${a.url}/?name=carol`);
    assert.deepEqual(await carol.messages.many(4), [
      WELCOME,
      "alice: before",
      "alice: alone 1",
      "alice: alone 2",
    ]);
    assert.equal(await carol.messages.next(), BACKPLANE_DOWN);

    await redis.restart();
    for (const client of [alice, bob, carol]) {
      assert.equal(await client.messages.next(), BACKPLANE_BACK);
    }
    assert.deepEqual(await json(`${a.http}/readyz`), {
      status: 200,
      body: { ready: true },
    });
    // Presence was written again: both instances' members, in a Redis that lost everything.
    bob.send("/who");
    assert.equal(await bob.messages.next(), whoLine(["alice", "bob", "carol"]));
    // Nothing from the outage is replayed: bob's next message is this one.
    alice.send("after");
    assert.equal(await bob.messages.next(), "alice: after");
    assert.equal(await carol.messages.next(), "alice: after");
    assert.equal((await metrics(b.http)).get("chat_backplane_up"), 1);
  },
);

redisTest(
  "a hung Redis counts as down, and is back when it answers again",
  async () => {
    await using redis = await RedisServer.start();
    await using a = await instance(redis.url, ["--redis-timeout", "300"]);
    await using alice = await a.join("alice");
    redis.signal("SIGSTOP");
    try {
      assert.equal(await alice.messages.next(), BACKPLANE_DOWN);
      alice.send("still here");
      assert.equal(await alice.messages.next(), "alice: still here");
      assert.equal((await json(`${a.http}/readyz`)).status, 503);
    } finally {
      redis.signal("SIGCONT");
    }
    assert.equal(await alice.messages.next(), BACKPLANE_BACK);
    alice.send("through Redis");
    assert.equal(await alice.messages.next(), "alice: through Redis");
  },
);

redisTest(
  "an instance that starts without Redis serves locally, then joins it",
  async () => {
    const port = closedPort();
    await using a = await instance(`redis://127.0.0.1:${port}`, [], "down");
    assert.equal(a.cli.stdoutLines[0], `listening on ${a.url}`);
    await using alice = new TestClient(`${a.url}/?name=alice`);
    assert.deepEqual(await alice.messages.many(2), [WELCOME, BACKPLANE_DOWN]);
    alice.send("local");
    assert.equal(await alice.messages.next(), "alice: local");
    assert.deepEqual(await json(`${a.http}/healthz`), {
      status: 200,
      body: { status: "ok", backplane: "down" },
    });
    await using _redis = await RedisServer.start({ port });
    assert.equal(await alice.messages.next(), BACKPLANE_BACK);
    assert.equal((await json(`${a.http}/readyz`)).status, 200);
    await using b = await instance(`redis://127.0.0.1:${port}`);
    await using _bob = await b.join("bob");
    assert.equal(await alice.presence.next(), joinedNotice("bob", 2));
  },
);

redisTest(
  "a killed instance's members leave /who and the counts within 30 s",
  async () => {
    await using cluster = await twoInstances();
    const { a, b } = cluster;
    await using alice = await a.join("alice");
    await using bob = await b.join("bob");
    await alice.presence.take((line) => line === joinedNotice("bob", 2));
    const killed = Date.now();
    await a.cli.stop("SIGKILL");
    await alice.closed;
    assert.equal(await bob.presence.next(), leftNotice("alice", 1));
    const after = Date.now() - killed;
    assert.ok(after < 30_000, `alice left after ${after} ms`);
    bob.send("/who");
    assert.equal(await bob.messages.next(), whoLine(["bob"]));
    // Her name is free again.
    await using _again = await b.join("alice");
    assert.equal(await bob.presence.next(), joinedNotice("alice", 2));
  },
);

redisTest("each instance's metrics count its own traffic", async () => {
  await using cluster = await twoInstances();
  const { a, b } = cluster;
  await using alice = await a.join("alice");
  await using amy = await a.join("amy");
  await using bob = await b.join("bob");
  await alice.presence.take((line) => line === joinedNotice("bob", 3));
  for (const text of ["one", "two", "three"]) alice.send(text);
  for (const text of ["four", "five"]) bob.send(text);
  for (const client of [alice, amy, bob]) await client.messages.many(5);
  const [onA, onB] = [await metrics(a.http), await metrics(b.http)];
  assert.equal(onA.get("chat_clients"), 2);
  assert.equal(onB.get("chat_clients"), 1);
  assert.equal(onA.get("chat_rooms"), 1);
  assert.equal(onA.get("chat_messages_received_total"), 3);
  assert.equal(onB.get("chat_messages_received_total"), 2);
  // Every message reaches every member of each instance, echo included.
  assert.equal(onA.get("chat_messages_delivered_total"), 5 * 2);
  assert.equal(onB.get("chat_messages_delivered_total"), 5);
  assert.equal(onA.get("chat_bytes_received_total"), "onetwothree".length);
  assert.equal(onB.get("chat_bytes_received_total"), "fourfive".length);
  assert.equal(onA.get("chat_backplane_up"), 1);
  assert.deepEqual(await json(`${b.http}/healthz`), {
    status: 200,
    body: { status: "ok", backplane: "up" },
  });
  assert.deepEqual(await json(`${b.http}/readyz`), {
    status: 200,
    body: { ready: true },
  });
});

redisTest(
  "a YewChat NICK held on another instance is refused; messages wait for the answer",
  async () => {
    await using cluster = await twoInstances();
    const { a, b } = cluster;
    await using alice = await a.join("alice");
    await using taken = new TestClient(b.url);
    await taken.opened;
    taken.send(JSON.stringify({ messageType: "register", data: "alice" }));
    const refused = await taken.closed;
    assert.equal(refused.code, 1008);
    assert.equal(refused.reason, "name taken: alice");
    // Sent right behind its register, a message waits for the NICK, then goes out.
    await using yui = new TestClient(b.url);
    await yui.opened;
    yui.send(JSON.stringify({ messageType: "register", data: "yui" }));
    yui.send(JSON.stringify({ messageType: "message", data: "hi all" }));
    assert.equal(await alice.presence.next(), joinedNotice("yui", 2));
    assert.equal(await alice.messages.next(), "yui: hi all");
  },
);

redisTest(
  "--no-echo and a graceful shutdown work across instances",
  async () => {
    await using cluster = await twoInstances(["--no-echo"]);
    const { a, b } = cluster;
    await using alice = await a.join("alice");
    await using bob = await b.join("bob");
    await alice.presence.take((line) => line === joinedNotice("bob", 2));
    alice.send("not to me");
    assert.equal(await bob.messages.next(), "alice: not to me");
    bob.send("nor to me");
    // alice's next message is bob's: her own never came back to her.
    assert.equal(await alice.messages.next(), "bob: nor to me");
    // A stopped instance takes its members out of the room at once, not after the expiry.
    const status = await a.cli.stop("SIGTERM");
    assert.equal(status.code, 0);
    assert.equal((await alice.closed).code, 1001);
    assert.equal(await bob.presence.next(), leftNotice("alice", 1));
    bob.send("/who");
    assert.equal(await bob.messages.next(), whoLine(["bob"]));
  },
);

redisTest(
  "past --presence-limit, YewChat lists still span instances",
  async () => {
    await using cluster = await twoInstances(["--presence-limit", "1"]);
    const { a, b } = cluster;
    await using alice = await a.join("alice");
    await using yew = new TestClient(b.url);
    await yew.opened;
    yew.send(JSON.stringify({ messageType: "register", data: "yui" }));
    assert.equal(await yew.messages.next(), yewUsers(["alice", "yui"]));
    // Two members are past the limit: alice hears of no join; a message still arrives.
    yew.send(JSON.stringify({ messageType: "message", data: "hello" }));
    assert.equal(await alice.messages.next(), "yui: hello");
    assert.deepEqual(alice.presence.queued, []);
  },
);

Deno.test("the log shows a Redis URL without its password", async () => {
  const { redactedUrl } = await import("../server/redis.ts");
  assert.equal(
    redactedUrl("redis://user:secret@db.example:6380/2"),
    "redis://user:***@db.example:6380/2",
  );
  assert.equal(redactedUrl("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
});

/**
 * A Redis backplane on `redis` for tests that drive it directly, up and
 * receiving the room "r"; stopped (with its scheduler) when disposed. The
 * receiver takes what a test watches; the rest expects nothing lost and no
 * duplicates, and costs an event one frame.
 */
async function openBackplane(
  redis: RedisServer,
  receiver: Pick<BackplaneReceiver, "deliver"> & Partial<BackplaneReceiver>,
  scheduler = new Scheduler(new TurnChecks()),
): Promise<{ backplane: RedisBackplane } & AsyncDisposable> {
  const backplane = new RedisBackplane({
    url: redis.url,
    prefix: "chat:",
    timeoutMs: 1000,
    historyKeep: 50,
    roomTtlMs: 0,
    namesLimit: 200,
    scheduler,
  }, {
    changed() {},
    missed: () => assert.fail("nothing was lost"),
    duplicate: () => assert.fail("no duplicates"),
    presence: () => new Map(),
    deliveryCost: () => 1,
    log() {},
    ...receiver,
  });
  const stop = async () => {
    scheduler.stop();
    await backplane.stop();
  };
  try {
    await backplane.started;
    await backplane.open("r");
  } catch (error) {
    await stop();
    throw error;
  }
  return { backplane, [Symbol.asyncDispose]: stop };
}

/** A chat message event from `origin` (another instance by default), with `ref` if given. */
function messageEvent(text: string, ref?: string, origin = "elsewhere"): RoomEvent {
  return { kind: "message", from: "a", text, time: 0, ref, origin, conn: 1 };
}

/** How many PUBLISH commands `redis` has run (scripts' included). */
async function publishCalls(redis: RedisServer): Promise<number> {
  const stats = await redisCli(redis, "INFO", "commandstats");
  return Number(/cmdstat_publish:calls=(\d+)/.exec(stats)?.[1] ?? 0);
}

/** Runs `redis-cli` against `redis` and returns its answer. */
async function redisCli(
  redis: RedisServer,
  ...args: string[]
): Promise<string> {
  const out = await new Deno.Command("redis-cli", {
    args: ["-p", String(redis.port), ...args],
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(out.stdout).trim();
}

/** How many writes Redis has refused for want of memory. */
async function oomRefusals(redis: RedisServer): Promise<number> {
  const stats = await redisCli(redis, "INFO", "errorstats");
  return Number(/errorstat_OOM:count=(\d+)/.exec(stats)?.[1] ?? 0);
}

redisTest(
  "11: a Redis out of memory is down once for its members, without flapping, until it has room",
  async () => {
    // The attack's 60 KB messages, within every limit but Redis's memory.
    await using cluster = await twoInstances(["--rate-limit", "0"]);
    const { redis, a } = cluster;
    await using alice = await a.join("alice");
    assert.equal(
      await redisCli(redis, "CONFIG", "SET", "maxmemory", "1"),
      "OK",
    );
    const big = "x".repeat(60_000);
    for (let i = 0; i < 30; i++) alice.send(`${i} ${big}`);
    // Every message still reaches this instance's members, in order; they
    // hear once that the backplane is down.
    const got = await alice.messages.many(31);
    assert.deepEqual(got.filter((line) => line === BACKPLANE_DOWN).length, 1);
    assert.deepEqual(
      got.filter((line) => line !== BACKPLANE_DOWN).map((line) => line.split(" ")[1]),
      Array.from({ length: 30 }, (_, i) => String(i)),
    );
    // It keeps trying (each attempt's probe write refused), and stays down.
    const refused = await oomRefusals(redis);
    while (await oomRefusals(redis) < refused + 2) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal((await json(`${a.http}/readyz`)).status, 503);
    assert.equal(
      await redisCli(redis, "CONFIG", "SET", "maxmemory", "0"),
      "OK",
    );
    // No flapping: the next thing its members hear is that it is back.
    assert.equal(await alice.messages.next(), BACKPLANE_BACK);
    assert.equal(
      a.cli.stdoutLines.filter((line) => line.startsWith("Backplane down"))
        .length,
      1,
    );
    assert.match(
      a.cli.stdoutLines.find((line) => line.startsWith("Backplane down")) ?? "",
      /OOM/,
    );
  },
);

redisTest(
  "11: an instance that sees a room's sequence jump tells its members once",
  async () => {
    await using cluster = await twoInstances();
    const { redis, a, b } = cluster;
    await using alice = await a.join("alice", "r");
    await using bob = await b.join("bob", "r");
    await alice.presence.take((line) => line === joinedNotice("bob", 2));
    // Events that never reached the channel, as when a publish is lost.
    assert.equal(await redisCli(redis, "INCRBY", "chat:seq:/r", "3"), "5");
    alice.send("after the gap");
    for (const client of [alice, bob]) {
      assert.deepEqual(await client.messages.many(2), [
        MESSAGES_LOST,
        "alice: after the gap",
      ]);
    }
    alice.send("no gap");
    assert.equal(await bob.messages.next(), "alice: no gap");
  },
);

redisTest(
  "a client held before it joins gets, through Redis, what the room said meanwhile, once each",
  async () => {
    await using cluster = await twoInstances([
      "--history",
      "5",
      "--rate-limit",
      "0",
    ]);
    const { a, b } = cluster;
    await using bob = await b.join("bob");
    await sendNumbered(bob, "bob", 1, 10);
    await using held = new TestClient(a.url);
    await held.opened;
    await sendNumbered(bob, "bob", 11, 110);
    assert.equal(await held.messages.next(), WELCOME);
    await takeNumbered(held, "bob", 6, 110);
  },
);

redisTest(
  "a newcomer joining while Redis's events wait for their turns gets each message once, after its history",
  async () => {
    await using cluster = await twoInstances([
      "--history",
      "5",
      "--rate-limit",
      "0",
      "--presence-limit",
      "0",
      "--max-clients-per-ip",
      "1000",
    ]);
    const { a, b } = cluster;
    // A crowd on a: each message is more frames than a turn's budget, so
    // what one read from Redis brings waits for many turns there.
    const port = Number(new URL(a.url).port);
    const crowd: RawSocket[] = [];
    for (let i = 0; i < 2 * TURN_BUDGET.frames; i += 64) {
      crowd.push(
        ...await Promise.all(
          Array.from(
            { length: 64 },
            (_, j) => RawSocket.open(port, { path: `/?name=c${i + j}` }),
          ),
        ),
      );
    }
    const drained = crowd.map(async (socket) => {
      const sink = new Uint8Array(1 << 16);
      try {
        while (await socket.conn.read(sink) !== null);
      } catch {
        // Closed at the end.
      }
    });
    try {
      await using watcher = await a.join("watcher");
      await using sender = await b.join("sender");
      for (let i = 1; i <= 300; i++) sender.send(String(i));
      // Someone joins a while most of them wait there.
      await watcher.messages.skipTo((line) => line === "sender: 20");
      await using late = await a.join("late");
      // Its history: five in a row, the last it holds (all 300, unless some
      // were still on their way to Redis), then each later one once.
      const history = await late.messages.many(5);
      const first = Number(history[0].split(": ")[1]);
      assert.deepEqual(
        history,
        Array.from({ length: 5 }, (_, i) => `sender: ${first + i}`),
      );
      await takeNumbered(late, "sender", first + 5, 300);
      await watcher.messages.skipTo((line) => line === "sender: 300");
      // a has delivered all it held: what comes next is new.
      sender.send("301");
      assert.equal(await late.messages.next(), "sender: 301");
    } finally {
      for (const socket of crowd) socket.conn.close();
      await Promise.all(drained);
    }
  },
);

redisTest(
  "one turn's messages to a room cost one script call and one publish, in order",
  async () => {
    await using redis = await RedisServer.start();
    const received: [string, number | undefined][] = [];
    const arrived = Promise.withResolvers<void>();
    await using opened = await openBackplane(redis, {
      deliver(_room: string, event: RoomEvent, delivery: Delivery) {
        if (event.kind === "message") received.push([event.text, delivery.seq]);
        if (received.length === 30) arrived.resolve();
      },
    });
    const { backplane } = opened;
    const before = await publishCalls(redis);
    for (let i = 1; i <= 30; i++) backplane.publish("r", remoteMessage(String(i)));
    await arrived.promise;
    assert.deepEqual(
      received,
      Array.from({ length: 30 }, (_, i) => [String(i + 1), i + 1]),
    );
    assert.equal(await publishCalls(redis) - before, 1);
    const history = await backplane.history("r");
    assert.deepEqual(history?.messages.map((m) => m.text).slice(-3), [
      "28",
      "29",
      "30",
    ]);
    assert.equal(history?.last, 30);
  },
);

redisTest(
  "the history holds --history-keep messages in whole publishes, and the refs of those alone",
  async () => {
    await using redis = await RedisServer.start();
    let received = 0;
    let arrived = Promise.withResolvers<void>();
    await using opened = await openBackplane(redis, {
      deliver(_room: string, event: RoomEvent) {
        if (event.kind === "message" && ++received % 12 === 0) arrived.resolve();
      },
    });
    const { backplane } = opened;
    // Eight calls of twelve, each with a ref; the history keeps 50.
    for (let call = 0; call < 8; call++) {
      arrived = Promise.withResolvers<void>();
      for (let i = 1; i <= 12; i++) {
        const n = call * 12 + i;
        backplane.publish("r", messageEvent(String(n), `r${n}`));
      }
      await arrived.promise;
    }
    const history = await backplane.history("r");
    assert.equal(history?.last, 96);
    assert.deepEqual(
      history?.messages.map((m) => [m.id, m.text, m.ref]),
      Array.from({ length: 50 }, (_, i) => [47 + i, String(47 + i), `r${47 + i}`]),
    );
    // Message 47 is in the fourth call's (37 to 48): that call and the
    // four after it are held, as five pairs of id and lines.
    assert.equal(await redisCli(redis, "LLEN", "chat:held:/r"), "10");
    assert.equal(await redisCli(redis, "LINDEX", "chat:held:/r", "0"), "37");
    assert.equal(await redisCli(redis, "ZCARD", "chat:refs:/r"), "60");
    // A ref that went with its message is new again; one still held is not.
    const delivered = Promise.withResolvers<void>();
    const duplicate = Promise.withResolvers<string | undefined>();
    await using again = await openBackplane(redis, {
      deliver(_room: string, event: RoomEvent) {
        if (event.kind !== "message") return;
        if (event.text === "36 again") delivered.resolve();
        if (event.text === "37 again") duplicate.reject(new Error("delivered: 37 again"));
      },
      duplicate: (_room: string, event: RoomEvent & { kind: "message" }) =>
        duplicate.resolve(event.ref),
    });
    again.backplane.publish("r", messageEvent("36 again", "r36"));
    again.backplane.publish("r", messageEvent("37 again", "r37"));
    await delivered.promise;
    assert.equal(await duplicate.promise, "r37");
  },
);

redisTest(
  "every key a room's events make expires with its members, before any refresh",
  async () => {
    await using redis = await RedisServer.start();
    const arrived = Promise.withResolvers<void>();
    await using opened = await openBackplane(redis, {
      deliver(_room: string, event: RoomEvent) {
        if (event.kind === "message") arrived.resolve();
      },
    });
    const { backplane } = opened;
    // The claim's expiries go to the keys there are: none but presence yet.
    assert.equal(await backplane.claim("r", "ann"), "claimed");
    backplane.publish("r", { kind: "joined", name: "ann", origin: backplane.instance });
    backplane.publish("r", messageEvent("hi", "r1", backplane.instance));
    await arrived.promise;
    for (const kind of ROOM_KEYS) {
      const ttl = Number(await redisCli(redis, "PTTL", `chat:${kind}:/r`));
      assert.ok(ttl > 0, `chat:${kind}:/r PTTL ${ttl}`);
    }
  },
);

redisTest(
  "a Redis that lost the script (SCRIPT FLUSH) is sent it whole, and the backplane stays up",
  async () => {
    await using redis = await RedisServer.start();
    const told: string[] = [];
    const arrived = Promise.withResolvers<void>();
    await using opened = await openBackplane(redis, {
      deliver(_room: string, event: RoomEvent) {
        if (event.kind === "message") arrived.resolve();
      },
      log: (line: string) => told.push(line),
      changed: (up: boolean) => told.push(`changed: ${up}`),
    });
    const { backplane } = opened;
    assert.equal(await redisCli(redis, "SCRIPT", "FLUSH"), "OK");
    backplane.publish("r", messageEvent("after a flush"));
    await arrived.promise;
    // The history's read is a transaction: the script, then the list.
    assert.equal(await redisCli(redis, "SCRIPT", "FLUSH"), "OK");
    const history = await backplane.history("r");
    assert.deepEqual(history?.messages.map((m) => [m.id, m.text]), [[
      1,
      "after a flush",
    ]]);
    assert.ok(backplane.up);
    assert.deepEqual(told.filter((line) => !line.startsWith("Backplane up")), []);
  },
);

/**
 * An instance's own messages come back as it sent them, others' parsed; a
 * call's duplicates (refs held already, or twice in the call) are left out
 * of its publish and its history.
 */
async function ownAndDuplicates(redis: RedisServer): Promise<void> {
  const received: RoomEvent[] = [];
  const ids: (number | undefined)[] = [];
  const duplicates: (string | undefined)[] = [];
  let expected = 0;
  let arrived = Promise.withResolvers<void>();
  const told = Promise.withResolvers<void>();
  await using opened = await openBackplane(redis, {
    deliver(_room: string, event: RoomEvent, delivery: Delivery) {
      if (event.kind !== "message") return;
      // A duplicate delivered fails at once, rather than waiting to be told of it.
      if (/again|twice/.test(event.text)) {
        told.reject(new Error(`delivered: ${event.text}`));
      }
      received.push(event);
      ids.push(delivery.id);
      if (received.length === expected) arrived.resolve();
    },
    duplicate(_room: string, event: RoomEvent & { kind: "message" }) {
      duplicates.push(event.ref);
      if (duplicates.length === 3) told.resolve();
    },
  });
  const { backplane } = opened;
  const own = (text: string, ref?: string) => messageEvent(text, ref, backplane.instance);
  const sent = [own("1", "r1"), remoteMessage("2"), own("3", "r3")];
  expected = 3;
  for (const event of sent) backplane.publish("r", event);
  await arrived.promise;
  assert.equal(received[0], sent[0]);
  assert.notEqual(received[1], sent[1]);
  assert.deepEqual(received[1], sent[1]);
  assert.equal(received[2], sent[2]);
  // Refs held already, among new messages in one call.
  arrived = Promise.withResolvers<void>();
  expected = 6;
  const before = await publishCalls(redis);
  for (
    const event of [
      own("1 again", "r1"),
      own("4", "r4"),
      own("3 again", "r3"),
      own("4 twice", "r4"),
      own("5"),
      own("6", "r6"),
    ]
  ) backplane.publish("r", event);
  await arrived.promise;
  await told.promise;
  assert.deepEqual(received.slice(3).map((e) => e.kind === "message" && e.text), [
    "4",
    "5",
    "6",
  ]);
  assert.deepEqual(ids, [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(duplicates, ["r1", "r3", "r4"]);
  assert.equal(await publishCalls(redis) - before, 1);
  const history = await backplane.history("r");
  assert.deepEqual(history?.messages.map((m) => [m.id, m.text]), [
    [1, "1"],
    [2, "2"],
    [3, "3"],
    [4, "4"],
    [5, "5"],
    [6, "6"],
  ]);
}

redisTest(
  "an instance's own messages come back as it sent them, others' parsed; a call's duplicates are left out of its publish",
  async () => {
    await using redis = await RedisServer.start();
    await ownAndDuplicates(redis);
  },
);

redisTest(
  "duplicates are found one ref at a time on a Redis without ZMSCORE (before 6.2)",
  async () => {
    await using redis = await RedisServer.start({
      args: ["--rename-command", "ZMSCORE", ""],
    });
    await ownAndDuplicates(redis);
  },
);

redisTest(
  "what Redis brings back waits for the event loop's turns, in order, and messages sent meanwhile wait behind it, to go in one call",
  async () => {
    await using redis = await RedisServer.start();
    const turns = new TurnChecks();
    const scheduler = new Scheduler(turns);
    // Stands for a socket the runtime has written everything to.
    const written = { readyState: WebSocket.CLOSED } as WebSocket;
    const received: string[] = [];
    // Deliveries in one stretch of code share one microtask checkpoint.
    let stretches = 0;
    let inStretch = false;
    const arrived = Promise.withResolvers<void>();
    const members = 2 * TURN_BUDGET.frames;
    let backplane: RedisBackplane | undefined = undefined;
    await using opened = await openBackplane(redis, {
      deliver(_room: string, event: RoomEvent) {
        if (event.kind !== "message") return;
        received.push(event.text);
        if (!inStretch) {
          inStretch = true;
          queueMicrotask(() => {
            stretches++;
            inStretch = false;
          });
        }
        // A frame for each member, as a message to a crowded room is.
        for (let i = 0; i < members; i++) turns.sent(written, 64);
        // Someone here says something while the rest waits, each time in a
        // turn of its own.
        if (received.length <= 10) {
          backplane!.publish("r", remoteMessage(`x${received.length}`));
        }
        if (received.length === 40) arrived.resolve();
      },
      deliveryCost: () => members,
    }, scheduler);
    backplane = opened.backplane;
    const before = await publishCalls(redis);
    for (let i = 1; i <= 30; i++) backplane.publish("r", remoteMessage(String(i)));
    await arrived.promise;
    assert.deepEqual(received, [
      ...Array.from({ length: 30 }, (_, i) => String(i + 1)),
      ...Array.from({ length: 10 }, (_, i) => `x${i + 1}`),
    ]);
    // One publish brought the 30, each more than a turn's budget: a turn
    // each (two may share one when the machine stalls past a turn's time).
    assert.ok(stretches > 30, `${stretches} turns`);
    // The ten sent meanwhile went in one more.
    assert.equal(await publishCalls(redis) - before, 2);
  },
);

redisTest("a moderator's kick and mute hold on every instance", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chat-moderate-" });
  const secret = "m".repeat(40);
  await Deno.writeTextFile(`${dir}/secret`, secret);
  const key = new TextEncoder().encode(secret);
  const token = (name: string, admin = false) =>
    mintToken({ name, ttlSeconds: 600, admin }, key);
  try {
    await using cluster = await twoInstances([
      "--auth-secret",
      `${dir}/secret`,
    ]);
    const { a, b } = cluster;
    await using admin = await TestClient.join(
      `${a.url}/r?token=${await token("admin", true)}`,
    );
    await using carol = await TestClient.join(
      `${a.url}/r?token=${await token("carol")}`,
    );
    const bob = await TestClient.join(`${b.url}/r?token=${await token("bob")}`);
    await admin.presence.take((l) => l.startsWith("* bob joined"));

    // Not a moderator: not allowed.
    carol.send("/kick bob");
    assert.equal(await carol.messages.next(), NOT_ALLOWED);

    // A mute on instance A silences bob on instance B.
    admin.send("/mute bob 60");
    assert.equal(await bob.messages.next(), "* you are muted for 60 s");
    bob.send("can anyone hear me");
    assert.equal(await bob.messages.next(), "* you are muted for 60 s");

    // A kick on A closes bob on B, tells the others, and bars bob from the room.
    admin.send("/kick bob spamming");
    const closed = await bob.closed;
    assert.deepEqual([closed.code, closed.reason], [4001, "kicked: spamming"]);
    assert.equal(await carol.messages.next(), "* bob was kicked by admin");
    for (const instance of [a, b]) {
      const again = new TestClient(
        `${instance.url}/r?token=${await token("bob")}`,
      );
      await assert.rejects(again.opened);
      await again.closed;
    }
    // An instance that did not serve the room then learns it from Redis.
    await using c = await instance(cluster.redis.url, [
      "--auth-secret",
      `${dir}/secret`,
    ]);
    const late = new TestClient(`${c.url}/r?token=${await token("bob")}`);
    await assert.rejects(late.opened);
    await late.closed;
    // The page's name check says so too.
    const refused = await fetch(
      `${c.http}/r?name=bob&token=${await token("bob")}`,
    );
    assert.deepEqual([refused.status, (await refused.text()).trim()], [
      403,
      "kicked",
    ]);
    // Nothing bob said while muted reached the room.
    assert.ok(
      !carol.messages.queued.some((l) => l.includes("can anyone hear me")),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

redisTest(
  "a client cut off from one instance resumes on the other and misses nothing; refs hold across instances",
  async () => {
    await using redis = await RedisServer.start();
    await using a = await instance(redis.url, ["--rate-limit", "0"]);
    await using b = await instance(redis.url, ["--rate-limit", "0"]);
    const portOf = (url: string) => Number(url.slice(url.lastIndexOf(":") + 1));
    await using proxy = TcpProxy.start(portOf(a.url));
    const sender = await b.join("sender");
    const { reconnected, lines } = await listenThroughCut(proxy, sender, portOf(b.url));
    assert.equal(reconnected, reconnectedLine(0));
    assert.deepEqual(lines, Array.from({ length: 70 }, (_, i) => `sender: ${i + 1}`));
    // A ref delivered through one instance is a duplicate on the other.
    const [viaA, viaAWelcome] = await JsonClient.join(`${a.url}/?name=ann`);
    const [viaB] = await JsonClient.join(`${b.url}/?name=ben`);
    viaA.send("once", "shared-ref");
    const first = await viaB.events.skipTo((event) => event.ref === "shared-ref");
    assert.equal(first.type, "message");
    viaB.send("once", "shared-ref");
    assert.deepEqual(await viaB.next("duplicate"), {
      type: "duplicate",
      ref: "shared-ref",
    });
    // Both instances number the room's messages alike.
    viaB.send("next", "ben-1");
    const next = await viaA.events.skipTo((event) => event.ref === "ben-1");
    assert.equal(next.id, first.id + 1);
    const { epoch } = viaAWelcome;
    // Every key of the room expires, even if every instance serving it
    // crashed now: none is left behind for good.
    for (const kind of ROOM_KEYS) {
      const ttl = Number(await redisCli(redis, "PTTL", `chat:${kind}:/`));
      assert.ok(ttl > 0, `chat:${kind}:/ PTTL ${ttl}`);
    }
    await Promise.all([viaA.close(), viaB.close(), sender.close()]);
    // Everyone left: the room's history stays for --room-ttl, on either instance.
    const [back] = await JsonClient.join(
      `${a.url}/?name=amy&since=${first.id}&epoch=${epoch}`,
    );
    assert.deepEqual(await back.next("recovered"), {
      type: "recovered",
      complete: true,
      missed: 0,
    });
    assert.equal((await back.next("message")).ref, "ben-1");
    await back.close();
  },
);

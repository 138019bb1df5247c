/**
 * `--store FILE`: history, ids and epochs in SQLite survive a restart, a
 * crash loses no line a client saw, and a store that cannot be used is one
 * line at start.
 */

import assert from "node:assert/strict";
import { WELCOME } from "../lib/protocol.ts";
import { reconnectedLine } from "../client.ts";
import { Cli, JsonClient, runCli, runProcess, startServer } from "./helpers.ts";
import { freePort } from "./proc.ts";

/** Permissions a server with `--store` needs. */
const STORE_PERMISSIONS = ["--allow-net", "--allow-read", "--allow-write"];

/** `chat server --store FILE` on `port`, once it listens. */
async function storeServer(port: number, file: string): Promise<Cli> {
  const server = new Cli(
    ["server", "--port", String(port), "--store", file, "--rate-limit", "0"],
    { permissions: STORE_PERMISSIONS },
  );
  assert.match(await server.stdout.next(), /^listening on ws:\/\//);
  return server;
}

Deno.test("--store: a restart keeps each room's history, ids, epoch and refs", async () => {
  const dir = await Deno.makeTempDir();
  const store = `${dir}/chat.db`;
  let epoch: string;
  {
    await using server = startServer({ store });
    const [alice, welcome] = await JsonClient.join(`${server.url}/rust?name=alice`);
    epoch = welcome.epoch;
    for (let i = 1; i <= 5; i++) alice.send(String(i), `ref-${i}`);
    for (let i = 1; i <= 5; i++) await alice.next("message");
    await alice.close();
  }
  await using server = startServer({ store });
  const [bob, welcome] = await JsonClient.join(
    `${server.url}/rust?name=bob&since=3&epoch=${epoch}`,
  );
  assert.equal(welcome.epoch, epoch);
  assert.equal(welcome.last, 5);
  assert.deepEqual(await bob.next("recovered"), {
    type: "recovered",
    complete: true,
    missed: 0,
  });
  assert.deepEqual(
    [(await bob.next("message")).text, (await bob.next("message")).text],
    ["4", "5"],
  );
  // Ids go on from where they were; a ref sent before the restart is still held.
  bob.send("six", "ref-6");
  assert.equal((await bob.next("message")).id, 6);
  bob.send("five again", "ref-5");
  assert.deepEqual(await bob.next("duplicate"), { type: "duplicate", ref: "ref-5" });
  await bob.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("--store: killed with SIGKILL and restarted, every piped line reaches a listener once", async () => {
  const dir = await Deno.makeTempDir();
  const store = `${dir}/chat.db`;
  const port = freePort();
  const url = `ws://127.0.0.1:${port}`;
  let server = await storeServer(port, store);
  try {
    await using listener = new Cli([
      "client",
      "--url",
      url,
      "--name",
      "listener",
      "--reconnect",
    ]);
    assert.equal(await listener.stdout.next(), WELCOME);
    await using sender = new Cli([
      "client",
      "--url",
      url,
      "--name",
      "sender",
      "--reconnect",
      "--rate",
      "100",
    ]);
    const lines = Array.from({ length: 200 }, (_, i) => String(i + 1));
    await sender.write(lines.join("\n") + "\n");
    await sender.endInput();
    await listener.chat.skipTo((line) => line === "sender: 60");
    server.kill("SIGKILL");
    await server.finished();
    server = await storeServer(port, store);
    const status = await sender.finished();
    assert.equal(status.code, 0, sender.stderrLines.join("\n"));
    await listener.chat.skipTo((line) => line === "sender: 200");
    assert.equal(
      await listener.stderr.take((line) => line.startsWith("chat: reconnected")),
      reconnectedLine(0),
    );
    await listener.stop("SIGINT");
    assert.deepEqual(
      listener.chatLines.filter((line) => line.startsWith("sender: ")),
      lines.map((line) => `sender: ${line}`),
    );
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--store: an unusable file is one line and exit 1 at start; with --redis, a usage error", async () => {
  const dir = await Deno.makeTempDir();
  const corrupt = `${dir}/corrupt.db`;
  await Deno.writeTextFile(corrupt, "this is not a database, not at all. ".repeat(100));
  const run = (args: string[]) =>
    runProcess(Deno.execPath(), ["run", ...STORE_PERMISSIONS, "main.ts", ...args]);
  for (
    const [file, problem] of [
      [corrupt, /file is not a database/],
      [`${dir}/missing/chat.db`, /unable to open database file/],
    ] as const
  ) {
    const { code, stderr } = await run(["server", "--port", "0", "--store", file]);
    assert.equal(code, 1, stderr);
    assert.equal(stderr.trim().split("\n").length, 1, stderr);
    assert.match(stderr, /^chat: cannot use --store "/);
    assert.match(stderr, problem);
  }
  // One server per file.
  {
    await using server = startServer({ store: `${dir}/taken.db` });
    const { code, stderr } = await run([
      "server",
      "--port",
      "0",
      "--store",
      `${dir}/taken.db`,
    ]);
    assert.equal(code, 1, stderr);
    assert.match(stderr, /database is locked: another chat server uses it$/m);
    await using still = await server.join("still");
    assert.equal(still.socket.readyState, WebSocket.OPEN);
  }
  // Without permission to write, it says so.
  const denied = await runCli(["server", "--port", "0", "--store", `${dir}/x.db`]);
  assert.equal(denied.code, 1);
  assert.match(denied.stderr, /^chat: cannot use --store .*--allow-write/);
  const both = await runCli([
    "server",
    "--store",
    `${dir}/x.db`,
    "--redis",
    "redis://127.0.0.1:1",
  ]);
  assert.equal(both.code, 2);
  assert.match(both.stderr, /--store and --redis do not go together/);
  await Deno.remove(dir, { recursive: true });
});

/** Mounts a tmpfs of `bytes` for the test (root only); `undefined` when it cannot. */
async function tinyDisk(bytes: number): Promise<string | undefined> {
  const dir = await Deno.makeTempDir();
  const mounted = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", `size=${bytes}`, "tmpfs", dir],
    stdout: "null",
    stderr: "null",
  }).output().then((out) => out.success, () => false);
  if (mounted) return dir;
  await Deno.remove(dir);
  return undefined;
}

const disk = await tinyDisk(256 * 1024);

Deno.test({
  name: disk
    ? "--store: a disk that fills is logged once, and the chat goes on in memory"
    : "--store: a full disk (ignored: cannot mount a small tmpfs here; needs root)",
  ignore: !disk,
  async fn() {
    try {
      await using server = startServer({ store: `${disk}/chat.db`, rateLimit: 0 });
      const [alice, first] = await JsonClient.join(`${server.url}/?name=alice`);
      const filler = "x".repeat(8000);
      for (let i = 1; i <= 60; i++) alice.send(`${i} ${filler}`, `f-${i}`);
      for (let i = 1; i <= 60; i++) await alice.next("message");
      assert.match(
        await server.log.take((line) => line.startsWith("Store: ")),
        /^Store: cannot write .*chat\.db: .*; history goes on in memory only$/,
      );
      // Still chatting, and resuming from memory.
      alice.send("after", "f-61");
      const { id } = await alice.next("message");
      await alice.close();
      const [back] = await JsonClient.join(
        `${server.url}/?name=alice&since=${id - 1}&epoch=${first.epoch}`,
      );
      assert.equal((await back.next("recovered")).complete, true);
      assert.equal((await back.next("message")).text, "after");
      await back.close();
      assert.equal(server.log.queued.filter((l) => l.startsWith("Store: ")).length, 0);
    } finally {
      await new Deno.Command("umount", { args: [disk!] }).output();
      await Deno.remove(disk!);
    }
  },
});

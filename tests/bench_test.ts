/**
 * The benchmark's own parts, which its numbers stand on: the load
 * generator's connect scenario and the baseline's `--announce` floor.
 */
import assert from "node:assert/strict";
import { ROOT, startServer, TestClient } from "./helpers.ts";
import { freePort, waitForPort } from "./proc.ts";
import { joinedNotice, WELCOME } from "../lib/protocol.ts";

Deno.test("bench: the connect scenario connects every client, counts the server's CPU per connect and reaches them all", async () => {
  await using server = startServer({ quiet: true, maxClientsPerIp: 1000 });
  const clients = 300;
  const generator = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${ROOT}bench/load.ts`,
      JSON.stringify({
        port: server.addr.port,
        scenario: "idle",
        clients,
        senders: 1,
        serverPid: Deno.pid,
      }),
    ],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const lines = generator.stdout.pipeThrough(new TextDecoderStream()).values();
  let buffered = "";
  const nextLine = async (): Promise<string> => {
    while (!buffered.includes("\n")) {
      const { value, done } = await lines.next();
      if (done) throw new Error(`generator ended: ${buffered}`);
      buffered += value;
    }
    const at = buffered.indexOf("\n");
    const line = buffered.slice(0, at);
    buffered = buffered.slice(at + 1);
    return line;
  };
  // The runner reads the server's memory at this line, then says go.
  assert.equal(JSON.parse(await nextLine()).connected, clients);
  const writer = generator.stdin.getWriter();
  await writer.write(new TextEncoder().encode("go\n"));
  await writer.close();
  const result = JSON.parse(await nextLine());
  assert.equal(result.reached, clients);
  assert.ok(result.cpuPerConnect > 0 && Number.isFinite(result.cpuPerConnect));
  assert.ok(result.connectPerSecond > 0);
  assert.ok(result.generatorCpu >= 0 && Number.isFinite(result.generatorCpu));
  await lines.return?.();
  assert.equal((await generator.status).code, 0);
});

/** Starts bench/baseline.ts with `args` on a free port. */
async function startBaseline(...args: string[]) {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", `${ROOT}bench/baseline.ts`, String(port), ...args],
    stdout: "null",
    stderr: "null",
  }).spawn();
  await waitForPort(port);
  return {
    url: `ws://127.0.0.1:${port}`,
    async [Symbol.asyncDispose]() {
      child.kill("SIGKILL");
      await child.status;
    },
  };
}

Deno.test("bench: the baseline with --announce welcomes a newcomer and tells the others, as a chat must", async () => {
  await using baseline = await startBaseline("--announce");
  await using first = new TestClient(baseline.url);
  assert.equal(await first.messages.next(), WELCOME);
  await using second = new TestClient(baseline.url);
  assert.equal(await second.messages.next(), WELCOME);
  assert.equal(await first.presence.next(), joinedNotice("newcomer", 2));
});

Deno.test("bench: the bare baseline sends nothing of its own: the first frame is the echo", async () => {
  await using baseline = await startBaseline();
  await using client = new TestClient(baseline.url);
  await client.opened;
  client.send("only this");
  assert.equal(await client.messages.next(), "only this");
});

Deno.test("bench: an unknown scenario or a bad runs=N is a usage error, before anything runs", async () => {
  for (
    const [arg, expected] of [
      ["closed10", "bench: no scenario closed10 (scenarios: closed100 closed1000"],
      ["runs=0", "bench: runs=0 is not a whole number of runs (try runs=3)"],
    ]
  ) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${ROOT}bench/run.ts`, arg],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 2);
    assert.equal(new TextDecoder().decode(out.stdout), "");
    assert.ok(new TextDecoder().decode(out.stderr).startsWith(expected));
  }
});

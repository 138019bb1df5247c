/** The README documents every flag with the default the code uses. */
import assert from "node:assert/strict";
import config from "../deno.json" with { type: "json" };
import { Cli, ROOT, startServerProcess } from "./helpers.ts";
import { SERVER_TASK_ENV } from "./proc.ts";
import { WELCOME } from "../lib/protocol.ts";
import { SERVER_COMMAND } from "../server.ts";
import { CLIENT_COMMAND } from "../client.ts";
import { TOKEN_COMMAND } from "../token.ts";
import { Metrics } from "../server/metrics.ts";

const README = await Deno.readTextFile(`${ROOT}README.md`);

Deno.test("the README lists every flag with its default", () => {
  for (const command of [SERVER_COMMAND, CLIENT_COMMAND, TOKEN_COMMAND]) {
    for (const flag of command.flags) {
      const row = README.split("\n").find((line) =>
        line.startsWith(
          `| \`--${flag.name}${flag.valueName ? ` ${flag.valueName}` : ""}\``,
        )
      );
      assert.ok(row, `README has no row for ${command.name} --${flag.name}`);
      const expected = flag.default === undefined
        ? /\| (off|none) +\|/
        : `\`${flag.default}\``;
      if (typeof expected === "string") assert.ok(row.includes(expected), row);
      else assert.match(row, expected);
    }
  }
});

Deno.test("the README's version and test command are the real ones", async () => {
  assert.ok(README.includes(`prints \`chat ${config.version}\``));
  assert.ok(README.includes("```sh\ndeno task test\n```"));
  const ci = await Deno.readTextFile(`${ROOT}.ci/run`);
  assert.match(ci, /^deno task test /m);
});

/** `@default {X}` in an options interface's JSDoc, by option name. */
function documentedDefaults(
  source: string,
  interfaceName: string,
): Map<string, string> {
  const start = source.indexOf(`export interface ${interfaceName} {`);
  const body = source.slice(start, source.indexOf("\n}\n", start));
  const defaults = new Map<string, string>();
  for (
    const match of body.matchAll(/@default \{([^}]*)\}[^/]*\*\/\s*(\w+)\?:/g)
  ) {
    defaults.set(match[2], match[1]);
  }
  return defaults;
}

Deno.test("the options' JSDoc defaults are the defaults the code uses", async () => {
  const { SERVER_DEFAULTS } = await import("../server.ts");
  const { CLIENT_DEFAULTS } = await import("../client.ts");
  const cases: [string, string, Record<string, unknown>][] = [
    ["server/options.ts", "ServerOptions", SERVER_DEFAULTS],
    ["client.ts", "ClientOptions", CLIENT_DEFAULTS],
  ];
  for (const [file, name, defaults] of cases) {
    const source = await Deno.readTextFile(`${ROOT}${file}`);
    const documented = documentedDefaults(source, name);
    assert.ok(
      documented.size >= Object.keys(defaults).length - 1,
      `${file}: ${name}`,
    );
    for (const [option, value] of Object.entries(defaults)) {
      // A required option (the client's url) has a default on the command line only.
      if (!source.includes(`  ${option}?:`)) continue;
      assert.equal(
        documented.get(option),
        JSON.stringify(value),
        `${name}.${option}`,
      );
    }
  }
});

Deno.test("the README's backplane timings are the ones the code uses", async () => {
  const {
    PRESENCE_TTL_MS,
    REFRESH_MS,
    HEARTBEAT_MS,
    FIRST_RETRY_MS,
    MAX_RETRY_MS,
  } = await import("../server/redis.ts");
  const { SERVER_DEFAULTS } = await import("../server.ts");
  const text = README.replace(/\s+/g, " ");
  const s = (ms: number) => `${ms / 1000} s`;
  for (
    const phrase of [
      `presence ${s(PRESENCE_TTL_MS)} ahead every ${s(REFRESH_MS)}`,
      `within ${s(PRESENCE_TTL_MS)}`,
      `within ${s(PRESENCE_TTL_MS + REFRESH_MS)}`,
      `(\`--redis-timeout\`, ${SERVER_DEFAULTS.redisTimeout} ms)`,
      `pinged every ${HEARTBEAT_MS === 1000 ? "second" : s(HEARTBEAT_MS)}`,
      `backoff (${s(FIRST_RETRY_MS)} doubling to ${s(MAX_RETRY_MS)}`,
    ]
  ) {
    assert.ok(text.includes(phrase), `README does not say "${phrase}"`);
  }
});

Deno.test("the README's limits are the ones the code uses", async () => {
  const { LOG_BUFFER_CHARS, LOGGED_TEXT_BYTES } = await import(
    "../server/log.ts"
  );
  const { MESSAGE_OVERHEAD_BYTES } = await import("../server/history.ts");
  const { USER_LIST_INTERVAL_MS } = await import("../server/room.ts");
  const { MAX_BATCH_HOLD_MS, NOTICE_PAIR_INTERVAL_MS } = await import(
    "../server/redis.ts"
  );
  const { MAX_RECEIVED_WAITING_CHARS } = await import("../server/backplane.ts");
  const { FIRST_RELISTEN_MS } = await import("../server/listener.ts");
  const { MAX_CLOSE_REASON_BYTES } = await import("../lib/protocol.ts");
  const { RUNTIME_DESCRIPTORS } = await import("../server/process.ts");
  const { END_OF_INPUT_WAIT_MS, TOKEN_RENEW_AHEAD_MS } = await import("../client.ts");
  const { MIN_SECRET_BYTES } = await import("../lib/auth.ts");
  const { CLOSE_WAIT_MS } = await import("../client.ts");
  const { STORE_WRITE_MS } = await import("../server/store.ts");
  const { MAX_IDLE_ROOMS } = await import("../server/chat.ts");
  const { MAX_WAITING_CHARS, MAX_WRITE_WAIT_MS, TURN_BUDGET } = await import(
    "../server/scheduler.ts"
  );
  const { YOU } = await import("../client.ts");
  const text = README.replace(/\s+/g, " ");
  for (
    const phrase of [
      `a buffer of ${LOG_BUFFER_CHARS / 2 ** 20} MiB`,
      `most ${LOGGED_TEXT_BYTES} bytes of it`,
      `plus ${MESSAGE_OVERHEAD_BYTES} bytes`,
      `once per ${USER_LIST_INTERVAL_MS} ms per room`,
      `at most once per ${NOTICE_PAIR_INTERVAL_MS / 1000} s`,
      `(${FIRST_RELISTEN_MS / 1000} s doubling to 5 s)`,
      `cut to ${MAX_CLOSE_REASON_BYTES} bytes`,
      `--max-clients + ${RUNTIME_DESCRIPTORS}`,
      `tries for ${END_OF_INPUT_WAIT_MS / 1000} s more`,
      `no connection within ${END_OF_INPUT_WAIT_MS / 1000} s after the input ended`,
      `again ${TOKEN_RENEW_AHEAD_MS / 1000} s before each token expires`,
      `at least ${MIN_SECRET_BYTES} bytes`,
      `${CLOSE_WAIT_MS / 1000} s at most after the last line went`,
      `not confirmed by the server within ${CLOSE_WAIT_MS / 1000} s`,
      `within ${STORE_WRITE_MS} ms, and before any`,
      `at most ${MAX_IDLE_ROOMS.toLocaleString("en-US")} emptied ones`,
      `(\`TURN_BUDGET\`: ${TURN_BUDGET.frames} frames or ${
        TURN_BUDGET.bytes / 2 ** 20
      } MiB)`,
      `\`MAX_WAITING_CHARS\` (${MAX_WAITING_CHARS.toLocaleString("en-US")}) characters`,
      `max-clients × ${(2 * MAX_WAITING_CHARS) / 1024} KiB`,
      `(at most \`MAX_WRITE_WAIT_MS\`, ${MAX_WRITE_WAIT_MS} ms,`,
      `\`MAX_RECEIVED_WAITING_CHARS\` (${
        MAX_RECEIVED_WAITING_CHARS / 2 ** 20
      } MiB of their JSON)`,
      `(at most \`MAX_BATCH_HOLD_MS\`, ${MAX_BATCH_HOLD_MS} ms)`,
      // The allocator setting the server task makes, as deno.json has it.
      `\`GLIBC_TUNABLES=${SERVER_TASK_ENV.GLIBC_TUNABLES}\``,
      `or \`${YOU}: TEXT\` without \`--name\``,
    ]
  ) {
    assert.ok(text.includes(phrase), `README does not say "${phrase}"`);
  }
});

/** The walkthrough's `console` blocks: each command and the lines it shows. */
function walkthrough(): { command: string; lines: string[] }[] {
  const start = README.indexOf("## A walkthrough");
  const section = README.slice(start, README.indexOf("\n## ", start + 1));
  return [...section.matchAll(/```console\n\$ (.*)\n([^`]*)```/g)].map((m) => ({
    command: m[1],
    lines: m[2].trimEnd().split("\n"),
  }));
}

Deno.test("the walkthrough's transcripts are what the chat prints", async () => {
  const [serverBlock, aliceBlock, bobBlock, thirdBlock] = walkthrough();
  assert.equal(serverBlock.command, "deno task server");
  assert.equal(aliceBlock.command, "deno task client --name alice");
  assert.equal(bobBlock.command, "deno task client --name bob");
  assert.equal(thirdBlock.command, "deno task client");
  const { cli: server, url } = await startServerProcess();
  const client = (name?: string) =>
    new Cli(["client", "--url", url, ...(name ? ["--name", name] : [])]);
  const typed = (block: { lines: string[] }) =>
    block.lines.filter((l) => l.startsWith("> ")).map((l) => l.slice(2));
  const [aliceSays] = typed(aliceBlock);
  const [bobSays, bobAsks] = typed(bobBlock);
  const [thirdSays] = typed(thirdBlock);

  const alice = client("alice");
  assert.equal(await alice.stdout.next(), WELCOME);
  const bob = client("bob");
  assert.equal(await bob.stdout.next(), WELCOME);
  await alice.stdout.take((l) => l === "* bob joined (2 online)");
  await alice.write(`${aliceSays}\n`);
  await bob.stdout.take((l) => l === `alice: ${aliceSays}`);
  await bob.write(`${bobSays}\n`);
  await alice.stdout.take((l) => l === `bob: ${bobSays}`);
  const third = client();
  await third.stdout.take((l) => l === `bob: ${bobSays}`);
  await bob.stdout.take((l) => l.endsWith("joined (3 online)"));
  await bob.write(`${bobAsks}\n`);
  await bob.stdout.take((l) => l.startsWith("* online (3)"));
  await third.write(`${thirdSays}\n`);
  for (const each of [alice, bob]) {
    await each.stdout.take((l) => l.endsWith(thirdSays));
  }
  await third.finished();
  for (const each of [alice, bob]) {
    await each.stdout.take((l) => l.endsWith("left (2 online)"));
  }
  await alice.finished();
  await bob.stdout.take((l) => l === "* alice left (1 online)");
  await bob.finished();
  await server.stdout.take((l) =>
    l.startsWith("Disconnected") &&
    server.stdoutLines.filter((x) => x.startsWith("Disconnected")).length === 3
  );
  await server.stop();

  // Addresses as the README shows them: each client's port, in order of connection.
  const ports = [
    ...new Set(server.stdoutLines.join("\n").match(/127\.0\.0\.1:\d+/g)),
  ]
    .filter((address) => !url.endsWith(address));
  const readmePorts = ["127.0.0.1:41042", "127.0.0.1:41052", "127.0.0.1:41054"];
  const normal = (line: string) =>
    ports.reduce(
      (text, address, i) => text.replaceAll(address, readmePorts[i]),
      line,
    )
      .replace(url.replace("ws://", ""), "127.0.0.1:8080");
  const shown = (block: { lines: string[] }) =>
    block.lines.filter((l) => !l.startsWith("> "));
  assert.deepEqual(server.stdoutLines.map(normal), serverBlock.lines);
  assert.deepEqual(alice.stdoutLines.map(normal), shown(aliceBlock));
  assert.deepEqual(bob.stdoutLines.map(normal), shown(bobBlock));
  assert.deepEqual(third.stdoutLines.map(normal), shown(thirdBlock));
});

Deno.test("the README's metrics table lists every metric the server serves", () => {
  const rendered = new Metrics().render({
    clients: 0,
    rooms: 0,
    backplaneUp: true,
    logDropped: 0,
    historyBytes: 0,
  });
  const names = [...rendered.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]);
  assert.ok(names.length >= 10, `${names.length} metrics`);
  for (const name of names) {
    assert.match(README, new RegExp(`^\\| \`${name}[\`{]`, "m"), name);
  }
});

Deno.test("the README's architecture table names every source file", async () => {
  const files = ["main.ts", "server.ts", "client.ts", "token.ts"];
  for (const dir of ["server", "lib", "tools"]) {
    for await (const entry of Deno.readDir(`${ROOT}${dir}`)) {
      if (entry.name.endsWith(".ts")) files.push(`${dir}/${entry.name}`);
    }
  }
  const table = README.slice(README.indexOf("\n## Architecture"));
  for (const file of files) {
    assert.match(table, new RegExp(`^\\|[^\\n]*\`${file}\``, "m"), file);
  }
});

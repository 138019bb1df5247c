/** The README documents every flag with the default the code uses. */
import assert from "node:assert/strict";
import config from "../deno.json" with { type: "json" };
import { ROOT } from "./helpers.ts";
import { SERVER_COMMAND } from "../server.ts";
import { CLIENT_COMMAND } from "../client.ts";

const README = await Deno.readTextFile(`${ROOT}README.md`);

Deno.test("the README lists every flag with its default", () => {
  for (const command of [SERVER_COMMAND, CLIENT_COMMAND]) {
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
function documentedDefaults(source: string, interfaceName: string): Map<string, string> {
  const start = source.indexOf(`export interface ${interfaceName} {`);
  const body = source.slice(start, source.indexOf("\n}\n", start));
  const defaults = new Map<string, string>();
  for (const match of body.matchAll(/@default \{([^}]*)\}[^/]*\*\/\s*(\w+)\?:/g)) {
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
    assert.ok(documented.size >= Object.keys(defaults).length - 1, `${file}: ${name}`);
    for (const [option, value] of Object.entries(defaults)) {
      // A required option (the client's url) has a default on the command line only.
      if (!source.includes(`  ${option}?:`)) continue;
      assert.equal(documented.get(option), JSON.stringify(value), `${name}.${option}`);
    }
  }
});

Deno.test("the README's backplane timings are the ones the code uses", async () => {
  const { PRESENCE_TTL_MS, REFRESH_MS, HEARTBEAT_MS, FIRST_RETRY_MS, MAX_RETRY_MS } =
    await import("../server/redis.ts");
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
  const { LOG_BUFFER_CHARS, LOGGED_TEXT_BYTES } = await import("../server/log.ts");
  const { MESSAGE_OVERHEAD_BYTES } = await import("../server/history.ts");
  const { USER_LIST_INTERVAL_MS } = await import("../server/room.ts");
  const { NOTICE_PAIR_INTERVAL_MS } = await import("../server/redis.ts");
  const { FIRST_RELISTEN_MS } = await import("../server/listener.ts");
  const { MAX_CLOSE_REASON_BYTES } = await import("../lib/protocol.ts");
  const { RUNTIME_DESCRIPTORS } = await import("../server/process.ts");
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
    ]
  ) {
    assert.ok(text.includes(phrase), `README does not say "${phrase}"`);
  }
});

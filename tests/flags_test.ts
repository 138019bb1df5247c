import assert from "node:assert/strict";
import {
  type CommandSpec,
  integerFlag,
  parseFlags,
  usage,
  UsageError,
} from "../lib/flags.ts";

const COMMAND: CommandSpec = {
  name: "demo",
  summary: "a demo",
  flags: [
    {
      name: "port",
      type: "string",
      valueName: "PORT",
      default: "8080",
      help: "the port",
    },
    { name: "quiet", type: "boolean", help: "say less" },
    {
      name: "allow",
      type: "string",
      valueName: "URL",
      multiple: true,
      help: "allow it",
    },
  ],
};

function problem(args: string[]): string {
  try {
    parseFlags(COMMAND, args);
  } catch (error) {
    assert.ok(error instanceof UsageError);
    return error.line();
  }
  throw new Error("no usage error");
}

const PORT = { command: "demo", flag: "port", min: 0, max: 65535 };

Deno.test("flags parse into values", () => {
  const values = parseFlags(COMMAND, [
    "--port",
    "1",
    "--quiet",
    "--allow=a",
    "--allow",
    "b",
  ]);
  assert.deepEqual(values, { port: "1", quiet: true, allow: ["a", "b"] });
  assert.equal(parseFlags(COMMAND, ["-h"]).help, true);
});

Deno.test("usage errors name the problem and the help command", () => {
  assert.equal(
    problem(["--nope"]),
    "chat: unknown flag --nope (try 'chat demo --help')",
  );
  assert.equal(
    problem(["-x"]),
    "chat: unknown flag -x (try 'chat demo --help')",
  );
  assert.equal(
    problem(["--port"]),
    "chat: flag --port needs a value (try 'chat demo --help')",
  );
  assert.equal(
    problem(["--quiet=1"]),
    "chat: flag --quiet takes no value (try 'chat demo --help')",
  );
  assert.equal(
    problem(["stray"]),
    `chat: unexpected argument "stray" (try 'chat demo --help')`,
  );
});

Deno.test("whole-number flags are checked against their range", () => {
  assert.equal(integerFlag("0", PORT), 0);
  assert.equal(integerFlag("65535", PORT), 65535);
  for (const bad of ["abc", "70000", "-1", "1.5", "", "0x10", "1e3"]) {
    assert.throws(
      () => integerFlag(bad, PORT),
      (error: unknown) =>
        error instanceof UsageError &&
        error.line() ===
          `chat: invalid --port ${
            JSON.stringify(bad)
          }: expected a whole number from 0 to 65535 (try 'chat demo --help')`,
    );
  }
});

Deno.test("usage lists every flag with its default", () => {
  const text = usage(COMMAND);
  assert.match(text, /^chat demo: a demo\n/);
  assert.match(text, /--port PORT +the port \(default: 8080\)/);
  assert.match(text, /--quiet +say less\n/);
  assert.match(text, /--allow URL +allow it \(repeatable\)/);
  assert.match(text, /-h, --help +show this help/);
});

Deno.test("server flags become server options", async () => {
  const { SERVER_COMMAND, serverOptions } = await import("../server.ts");
  const options = serverOptions(parseFlags(SERVER_COMMAND, [
    "--no-echo",
    "--port=0",
    "--rate-limit",
    "0",
    "--max-clients",
    "3",
    "--allow-origin",
    "https://a.example/",
    "--allow-origin",
    "http://b.example:81",
  ]));
  assert.equal(options.echo, false);
  assert.equal(options.port, 0);
  assert.equal(options.rateLimit, 0);
  assert.equal(options.maxClients, 3);
  assert.deepEqual(options.allowOrigins, [
    "https://a.example",
    "http://b.example:81",
  ]);
  assert.equal(serverOptions(parseFlags(SERVER_COMMAND, [])).echo, true);
  assert.throws(
    () =>
      serverOptions(
        parseFlags(SERVER_COMMAND, ["--allow-origin", "example.com"]),
      ),
    UsageError,
  );
  assert.throws(
    () => serverOptions(parseFlags(SERVER_COMMAND, ["--rate-burst", "0"])),
    UsageError,
  );
});

Deno.test("--redis takes a redis:// URL; the prefix and timeout have defaults", async () => {
  const { SERVER_COMMAND, serverOptions } = await import("../server.ts");
  const options = serverOptions(parseFlags(SERVER_COMMAND, [
    "--redis",
    "redis://127.0.0.1:6379",
    "--redis-timeout",
    "250",
  ]));
  assert.equal(options.redis, "redis://127.0.0.1:6379");
  assert.equal(options.redisTimeout, 250);
  assert.equal(options.redisPrefix, undefined);
  assert.match(
    usage(SERVER_COMMAND),
    /--redis-prefix PREFIX +[^]+?\(default: chat:\)/,
  );
  const refused = (args: string[]) => {
    try {
      serverOptions(parseFlags(SERVER_COMMAND, args));
    } catch (error) {
      assert.ok(error instanceof UsageError);
      return error.line();
    }
    throw new Error("no usage error");
  };
  assert.equal(
    refused(["--redis", "127.0.0.1:6379"]),
    `chat: invalid --redis "127.0.0.1:6379": expected redis://HOST[:PORT] or rediss:// (try 'chat server --help')`,
  );
  assert.match(refused(["--redis", "http://x"]), /invalid --redis/);
  assert.match(refused(["--redis-timeout", "0"]), /--redis-timeout/);
  assert.match(
    refused(["--redis-prefix", "a b"]),
    /--redis-prefix cannot contain spaces/,
  );
});

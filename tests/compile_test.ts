/**
 * `deno task compile` builds `dist/chat`; this drives the binary like the CLI
 * tests drive `main.ts`. `deno compile` needs Deno's base runtime (`denort`),
 * which it downloads unless `DENORT_BIN` names one or its cache has it; when
 * it can get none, the test is reported as ignored with that reason. Any
 * other compile failure fails the test.
 */
import assert from "node:assert/strict";
import config from "../deno.json" with { type: "json" };
import { chatsEndToEnd, ROOT, runProcess } from "./helpers.ts";

const BINARY = `${ROOT}dist/chat`;

const build = await new Deno.Command(Deno.execPath(), {
  args: ["task", "-q", "compile"],
  cwd: ROOT,
  stdout: "piped",
  stderr: "piped",
  env: { NO_COLOR: "1" },
}).output();
const buildErrors = new TextDecoder().decode(build.stderr);
const noBaseRuntime = !build.success && /base runtime/.test(buildErrors);

function run(args: string[], stdin = "") {
  return runProcess(BINARY, args, { stdin });
}

Deno.test({
  name: noBaseRuntime
    ? "compiled dist/chat runs server and client (ignored: deno compile cannot get its base runtime denort here; set DENORT_BIN to a denort binary to run it)"
    : "compiled dist/chat runs server and client",
  ignore: noBaseRuntime,
  async fn() {
    assert.ok(build.success, `deno task compile failed:\n${buildErrors}`);
    const version = await run(["--version"]);
    assert.equal(version.stdout, `chat ${config.version}\n`);
    const usage = await run(["server", "--port", "nope"]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /^chat: invalid --port "nope"/);

    await chatsEndToEnd(BINARY, "bin");
  },
});

Deno.test({
  name: noBaseRuntime
    ? "deno task compile without its base runtime: one line saying why and what to do, exit 1, no dist/ left"
    : "deno task compile without its base runtime (ignored: the base runtime is available here)",
  ignore: !noBaseRuntime,
  async fn() {
    assert.equal(build.code, 1);
    const lines = buildErrors.trimEnd().split("\n");
    assert.equal(lines.length, 1, buildErrors);
    assert.match(
      lines[0],
      /^chat compile: cannot get Deno's base runtime https:\/\/\S+denort\S+ \([^)]+\): run it on a machine with network access, or set DENORT_BIN to a denort binary of Deno \d/,
    );
    const left = await Deno.readDir(`${ROOT}dist`)[Symbol.asyncIterator]()
      .next()
      .then((entry) => entry.value?.name ?? "(empty)", () => "nothing");
    assert.equal(left, "nothing", "dist/ was left behind");
  },
});

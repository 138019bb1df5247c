/**
 * The README's examples, run as written: the `Deno.serve` app that mounts
 * the chat, the browser snippet, and the closed chat's transcript (each `$`
 * line run, its output compared). The walkthrough, install line, TLS recipe
 * and flag tables have tests of their own (readme_test, install_test,
 * tls_test).
 */
import assert from "node:assert/strict";
import config from "../deno.json" with { type: "json" };
import { join, ROOT, runProcess, signalChild, startServer } from "./helpers.ts";
import { readLines } from "../client.ts";
import { JSON_EVENTS } from "../server/codec.ts";

const README = await Deno.readTextFile(`${ROOT}README.md`);

/** The code blocks of `lang` in the section whose heading starts with `heading`. */
function blocks(heading: string, lang: string): string[] {
  const start = README.indexOf(`\n## ${heading}`);
  assert.ok(start >= 0, heading);
  const end = README.indexOf("\n## ", start + 1);
  const section = README.slice(start, end < 0 ? undefined : end);
  const fence = new RegExp("```" + lang + "\\n([\\s\\S]*?)\\n```", "g");
  return [...section.matchAll(fence)].map((m) => m[1] + "\n");
}

/** Reads a child's stdout line by line until `test` passes; the lines so far. */
async function linesUntil(
  lines: AsyncIterator<string>,
  test: (line: string) => boolean,
): Promise<string[]> {
  const seen: string[] = [];
  for (;;) {
    const { value, done } = await lines.next();
    if (done) throw new Error(`output ended after:\n${seen.join("\n")}`);
    seen.push(value);
    if (test(value)) return seen;
  }
}

Deno.test("README: the Deno.serve app that mounts the chat runs as written", async () => {
  const [code] = blocks("Commands and flags", "ts");
  const dir = await Deno.makeTempDir({ prefix: "chat-example-" });
  const file = `${dir}/app.ts`;
  // Its own port, and the import from this checkout wherever the file is.
  await Deno.writeTextFile(
    file,
    code.replace('"./server.ts"', JSON.stringify(`${ROOT}server.ts`)).replace(
      "port: 8000",
      "port: 0",
    ),
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      `--config=${ROOT}deno.json`,
      file,
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const errors = readLines(child.stderr)[Symbol.asyncIterator]();
  try {
    const [listening] = await linesUntil(
      errors,
      (l) => l.startsWith("Listening on"),
    );
    const port = listening.match(/:(\d+)\//)![1];
    const hello = await fetch(`http://127.0.0.1:${port}/hello`);
    assert.equal(await hello.text(), "hello from my app\n");
    const alice = await join(`ws://127.0.0.1:${port}`, "alice");
    alice.send("in the app");
    assert.equal(await alice.messages.next(), "alice: in the app");
    child.kill("SIGTERM");
    assert.equal((await alice.closed).code, 1001);
    assert.equal((await child.status).code, 0);
  } finally {
    signalChild(child, "SIGKILL");
    await child.status;
    await child.stdout.cancel().catch(() => {});
    await errors.return?.(undefined);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("README: the browser snippet chats", async () => {
  const [snippet] = blocks("Wire protocol", "js");
  await using server = startServer();
  await using carol = await server.join("carol");
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", snippet.replace("ws://127.0.0.1:8080", server.url)],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines = readLines(child.stdout)[Symbol.asyncIterator]();
  try {
    assert.equal(await carol.messages.next(), "eve: hello from the browser");
    const seen = await linesUntil(lines, (l) => l.startsWith("eve: "));
    assert.deepEqual(seen.slice(-1), ["eve: hello from the browser"]);
  } finally {
    child.kill("SIGKILL");
    await child.status;
    await lines.return?.(undefined);
  }
});

/** `deno task [-q] NAME ARGS` as the `deno run` line its task stands for. */
function taskCommand(line: string): string {
  const tasks = config.tasks as Record<string, string>;
  return line.replace(/deno task (-q )?(\w+)/, (_, _quiet, name: string) => {
    const task = tasks[name];
    assert.ok(task, `no task ${name}`);
    return task
      .replace(/(^deno|\s)main\.ts/, ` '${ROOT}main.ts'`)
      .replace(/(^|\s)deno(?=\s)/, `$1'${Deno.execPath()}'`)
      // `exec` takes a command, not the task's NAME=VALUE words before it.
      .replace(/^(?=[A-Z_][A-Z0-9_]*=)/, "env ");
  });
}

Deno.test("README: a closed chat, step by step, prints what the transcript shows", async () => {
  const transcript = blocks("A closed chat", "console").join("");
  // Each `$` command, the lines typed into it (`> `), and what it shows.
  const steps = transcript.split(/^\$ /m).filter(Boolean).map((step) => {
    const [command, ...rest] = step.trimEnd().split("\n");
    return {
      command,
      typed: rest.filter((l) => l.startsWith("> ")).map((l) => l.slice(2)),
      shown: rest.filter((l) => !l.startsWith("> ")),
    };
  });
  const dir = await Deno.makeTempDir({ prefix: "chat-closed-" });
  let server: Deno.ChildProcess | undefined;
  try {
    let port = "";
    for (const step of steps) {
      let line = taskCommand(step.command);
      if (
        / server /.test(` ${line} `) && step.command.includes("task server")
      ) {
        server = new Deno.Command("sh", {
          args: ["-c", `exec ${line} --port 0`],
          cwd: dir,
          stdout: "piped",
          stderr: "null",
        }).spawn();
        const lines = readLines(server.stdout)[Symbol.asyncIterator]();
        const first = await linesUntil(
          lines,
          (l) => l.startsWith("chat page at"),
        );
        port = first[0].match(/:(\d+)$/)![1];
        assert.deepEqual(
          first.map((l) => l.replaceAll(`:${port}`, ":8080")),
          step.shown,
        );
        void (async () => {
          while (!(await lines.next()).done);
        })();
        continue;
      }
      if (step.command.includes("task client")) {
        line += ` --url ws://127.0.0.1:${port}`;
      }
      const out = await runProcess("sh", ["-c", line], {
        stdin: step.typed.map((t) => t + "\n").join(""),
        cwd: dir,
      });
      const decode = (text: string) =>
        text.replaceAll(`:${port}`, ":8080").split("\n").filter(Boolean);
      assert.deepEqual(
        [...decode(out.stdout), ...decode(out.stderr)],
        step.shown,
        step.command,
      );
    }
  } finally {
    if (server) {
      server.kill("SIGTERM");
      await server.status;
    }
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("README: the chat.json examples are what the server sends, field for field", () => {
  const start = README.indexOf("### `chat.json`");
  const section = README.slice(start, README.indexOf("\n## ", start));
  const examples = [...section.matchAll(/```json\n([\s\S]*?)\n```/g)].map((m) => m[1]);
  // Each server line is an array of events; the client's line an object.
  const events = examples.slice(0, -1).flatMap((block) =>
    block.split("\n").map((line) => line.trim()).join("").replaceAll("][", "],[")
  ).flatMap((text) => JSON.parse(`[${text}]`).flat()) as Record<string, unknown>[];
  const message = {
    from: "bob",
    text: "hi",
    time: 1764460800000,
    id: 42,
  };
  const encoded: Record<string, string> = {
    welcome: JSON_EVENTS.welcome({ room: "rust", name: "alice", epoch: "e", last: 41 })!
      .text,
    message: JSON_EVENTS.message(message).text,
    joined: JSON_EVENTS.presence("joined", "carol", 3)!.text,
    left: JSON_EVENTS.presence("left", "carol", 2)!.text,
    notice: JSON_EVENTS.notice("* rate limit: 20 messages per second")!.text,
    recovered: JSON_EVENTS.recovered(17)!.text,
    duplicate: JSON_EVENTS.receipt("duplicate", "r")!.text,
    accepted: JSON_EVENTS.receipt("accepted", "r")!.text,
    refused: JSON_EVENTS.refused("r", "rate_limited", 50)!.text,
  };
  const types = new Set<string>();
  for (const event of events) {
    const type = event.type as string;
    types.add(type);
    const [sent] = JSON.parse(encoded[type]);
    assert.deepEqual(Object.keys(event), Object.keys(sent), type);
  }
  // Every event type has an example, and the table lists each.
  assert.deepEqual([...types].sort(), Object.keys(encoded).sort());
  for (const type of types) assert.match(section, new RegExp(`\\| \`${type}\` +\\|`));
  assert.deepEqual(
    JSON_EVENTS.decode(examples.at(-1)!),
    { kind: "message", text: "hello", ref: "5f3c9a1e-20" },
  );
});

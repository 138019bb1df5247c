/**
 * The interactive client, as a person at a terminal meets it: `chat client`
 * runs under `script`, which gives it a real pseudo-terminal; the test types
 * keys into it and reads the screen back through a small terminal model.
 */
import assert from "node:assert/strict";
import { ROOT, runCli, signalChild, startServer } from "./helpers.ts";
import { colourLine, nameColour, timestamp } from "../lib/terminal.ts";
import { WELCOME } from "../lib/protocol.ts";
import { YOU } from "../client.ts";

const SCRIPT = "/usr/bin/script";
const missing = await Deno.stat(SCRIPT).then(() => false, () => true);

/**
 * The screen a program draws: the cursor movements and erasures readline
 * uses, applied to rows of text (colours are dropped).
 */
class Screen {
  rows: string[] = [""];
  row = 0;
  col = 0;

  #partial = "";

  write(chunk: string): void {
    // An escape sequence may be split between chunks: keep its start for the next.
    let text = this.#partial + chunk;
    // deno-lint-ignore no-control-regex
    const cut = text.search(/\x1b(\[[0-9;?]*)?$/);
    this.#partial = cut >= 0 ? text.slice(cut) : "";
    if (cut >= 0) text = text.slice(0, cut);
    // deno-lint-ignore no-control-regex
    const tokens = text.match(/\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]/g) ??
      [];
    for (const token of tokens) {
      if (token === "\r") this.col = 0;
      else if (token === "\n") this.#down();
      else if (token.startsWith("\x1b[")) this.#control(token);
      else this.#put(token);
    }
  }

  #down(): void {
    this.row++;
    while (this.rows.length <= this.row) this.rows.push("");
  }

  #put(char: string): void {
    const line = this.rows[this.row].padEnd(this.col);
    this.rows[this.row] = line.slice(0, this.col) + char +
      line.slice(this.col + 1);
    this.col++;
  }

  #control(token: string): void {
    const kind = token.at(-1)!;
    const n = Number(
      token.slice(2, -1) || (kind === "J" || kind === "K" ? 0 : 1),
    );
    switch (kind) {
      case "A":
        this.row = Math.max(0, this.row - n);
        break;
      case "B":
        this.row += n;
        while (this.rows.length <= this.row) this.rows.push("");
        break;
      case "C":
        this.col += n;
        break;
      case "D":
        this.col = Math.max(0, this.col - n);
        break;
      case "G":
        this.col = n - 1;
        break;
      case "K":
        if (n === 2) this.rows[this.row] = "";
        else this.rows[this.row] = this.rows[this.row].slice(0, this.col);
        break;
      case "J":
        this.rows[this.row] = this.rows[this.row].slice(0, this.col);
        this.rows.length = this.row + 1;
        break;
    }
  }

  /** The rows with text, trailing spaces trimmed. */
  get text(): string[] {
    return this.rows.map((row) => row.trimEnd()).filter((row) => row !== "");
  }
}

/** `chat client ARGS` at a pseudo-terminal: keys in, screen out. */
class Terminal {
  readonly screen = new Screen();
  readonly #child: Deno.ChildProcess;
  readonly #keys: WritableStreamDefaultWriter<Uint8Array>;
  readonly #changed: (() => void)[] = [];
  readonly #reading: Promise<void>;
  #ended = false;

  constructor(args: string[], env: Record<string, string> = {}) {
    const command = [
      Deno.execPath(),
      "run",
      "-A",
      `${ROOT}main.ts`,
      "client",
      ...args,
    ]
      .map((word) => `'${word}'`).join(" ");
    const child = new Deno.Command(SCRIPT, {
      args: ["-qfec", command, "/dev/null"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { COLUMNS: "80", LINES: "24", TERM: "xterm", ...env },
    }).spawn();
    this.#child = child;
    this.#keys = child.stdin.getWriter();
    this.#reading = (async () => {
      for await (
        const chunk of child.stdout.pipeThrough(new TextDecoderStream())
      ) {
        this.screen.write(chunk);
        for (const wake of this.#changed.splice(0)) wake();
      }
      this.#ended = true;
      for (const wake of this.#changed.splice(0)) wake();
    })();
  }

  async type(keys: string): Promise<void> {
    await this.#keys.write(new TextEncoder().encode(keys));
  }

  /** Waits until the screen's rows pass `test` (the screen as it is, on failure). */
  async until(
    test: (rows: string[]) => boolean,
    what: string,
  ): Promise<string[]> {
    let late = false;
    const timer = setTimeout(() => {
      late = true;
      for (const wake of this.#changed.splice(0)) wake();
    }, 10_000);
    try {
      while (!test(this.screen.text)) {
        if (late || this.#ended) {
          throw new Error(
            `screen never showed ${what}:\n${this.screen.text.join("\n")}`,
          );
        }
        await new Promise<void>((resolve) => this.#changed.push(resolve));
      }
      return this.screen.text;
    } finally {
      clearTimeout(timer);
    }
  }

  /** `chat client` joined as `name`: the welcome shown, the prompt below it. */
  static async joined(url: string, name: string): Promise<Terminal> {
    const terminal = new Terminal(["--url", url, "--name", name]);
    await terminal.until(
      (rows) => rows.includes(WELCOME) && rows.at(-1) === ">",
      "the welcome and the prompt",
    );
    return terminal;
  }

  /** Ends it, if still running (after a failed test). */
  async [Symbol.asyncDispose](): Promise<void> {
    signalChild(this.#child, "SIGKILL");
    await this.finished();
  }

  /** Its exit status, once it has ended. */
  async finished(): Promise<number> {
    await this.#keys.close().catch(() => {});
    const status = await this.#child.status;
    await this.#reading;
    await this.#child.stderr.cancel().catch(() => {});
    return status.code;
  }
}

const LEFT = "\x1b[D";
const UP = "\x1b[A";

Deno.test({
  name: missing
    ? "the interactive client (ignored: /usr/bin/script is not installed)"
    : "the interactive client: a prompt, lines printed above what is typed, editing, history, Ctrl-D",
  ignore: missing,
  async fn() {
    await using server = startServer({ rateLimit: 0 });
    await using terminal = await Terminal.joined(server.url, "alice");
    await using bob = await server.join("bob");
    await terminal.until(
      (rows) => rows.includes("* bob joined (2 online)"),
      "bob joining",
    );

    // A message arrives while alice types: it goes above her line, which stays intact.
    await terminal.type("see you");
    await terminal.until(
      (rows) => rows.at(-1) === "> see you",
      "the typed text",
    );
    bob.send("are you there?");
    const rows = await terminal.until(
      (rows) => rows.includes("bob: are you there?") && rows.at(-1) === "> see you",
      "bob's message above the line being typed",
    );
    assert.deepEqual(rows.slice(-2), ["bob: are you there?", "> see you"]);

    // Sent, her line is shown once: as the server's echo, in place of what she typed.
    await terminal.type(" at noon\r");
    assert.equal(
      await bob.messages.take((m) => m.startsWith("alice: ")),
      "alice: see you at noon",
    );
    const after = await terminal.until(
      (rows) => rows.includes("alice: see you at noon") && rows.at(-1) === ">",
      "her echo",
    );
    assert.equal(
      after.filter((row) => row.includes("see you at noon")).length,
      1,
    );

    // Left, then a letter, inserts; Up recalls the line sent before.
    await terminal.type(`helo${LEFT}l\r`);
    assert.equal(
      await bob.messages.take((m) => m.startsWith("alice: ")),
      "alice: hello",
    );
    await terminal.type(`${UP}\r`);
    assert.equal(
      await bob.messages.take((m) => m.startsWith("alice: ")),
      "alice: hello",
    );

    // Ctrl-D on an empty line: a clean close (1000) and exit status 0.
    await terminal.type("\x04");
    assert.equal(await terminal.finished(), 0);
    assert.equal(await bob.presence.next(), "* alice left (1 online)");
    const disconnected = await server.log.take((line) => line.startsWith("Disconnected"));
    assert.match(disconnected, /^Disconnected 127\.0\.0\.1:\d+$/);
    assert.ok(!server.log.queued.some((line) => line.startsWith("Error")));
  },
});

Deno.test({
  name: missing
    ? "the interactive client on a --no-echo server (ignored: /usr/bin/script is not installed)"
    : "on a --no-echo server, a line sent at the prompt is shown once the room takes it",
  ignore: missing,
  async fn() {
    await using server = startServer({ echo: false });
    await using bob = await server.join("bob");
    await using alice = await Terminal.joined(server.url, "alice");
    await alice.type("no echo here\r");
    assert.equal(
      await bob.messages.take((m) => m.startsWith("alice: ")),
      "alice: no echo here",
    );
    const rows = await alice.until(
      (rows) => rows.includes("alice: no echo here") && rows.at(-1) === ">",
      "her line, shown on the room's `accepted`",
    );
    assert.equal(rows.filter((row) => row.includes("no echo here")).length, 1);

    // Without a name the server knows her by her address; the line is shown as hers.
    const nameless = new Terminal(["--url", server.url]);
    await using _nameless = nameless;
    await nameless.until((rows) => rows.at(-1) === ">", "the prompt");
    await nameless.type("from nowhere\r");
    await nameless.until(
      (rows) => rows.includes(`${YOU}: from nowhere`),
      "the nameless line shown as the client's own",
    );
    await alice.type("\x04");
    assert.equal(await alice.finished(), 0);
  },
});

Deno.test({
  name: missing
    ? "Ctrl-C at the interactive client (ignored: /usr/bin/script is not installed)"
    : "Ctrl-C at the interactive client closes with 1000 and exits 0",
  ignore: missing,
  async fn() {
    await using server = startServer();
    await using bob = await server.join("bob");
    await using terminal = await Terminal.joined(server.url, "alice");
    await bob.presence.next();
    await terminal.type("half a line\x03");
    assert.equal(await terminal.finished(), 0);
    assert.equal(await bob.presence.next(), "* alice left (1 online)");
    // Nothing typed but not entered was sent.
    assert.deepEqual(bob.messages.queued, []);
    assert.ok(!server.log.queued.some((line) => line.startsWith("Error")));
  },
});

Deno.test("names get one colour each, wherever printed; notices are dimmed", () => {
  assert.equal(nameColour("alice"), nameColour("alice"));
  const colours = new Set(
    ["alice", "bob", "carol", "dave", "erin"].map(nameColour),
  );
  assert.ok(colours.size > 1, "every name had the same colour");
  assert.equal(
    colourLine("bob: hi: there"),
    `\x1b[${nameColour("bob")}mbob\x1b[39m: hi: there`,
  );
  assert.equal(
    colourLine("* bob joined (2 online)"),
    "\x1b[2m* bob joined (2 online)\x1b[22m",
  );
  assert.equal(
    colourLine("Welcome to chat! Type a message"),
    "Welcome to chat! Type a message",
  );
  assert.equal(timestamp(new Date(2026, 10, 30, 9, 5)), "09:05 ");
});

Deno.test("a piped client with --timestamps prefixes HH:MM to each line, no colour", async () => {
  await using server = startServer();
  const { stdout } = await runCli(
    ["client", "--url", server.url, "--timestamps"],
    "hi\n",
  );
  const out = stdout.trimEnd().split("\n");
  assert.equal(out.length, 2);
  assert.match(out[0], /^\d\d:\d\d Welcome to chat! Type a message$/);
  assert.match(out[1], /^\d\d:\d\d 127\.0\.0\.1:\d+: hi$/);
});

Deno.test("--header sends extra upgrade headers", async () => {
  let seen: string | null = null;
  const listener = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    (request) => {
      seen = request.headers.get("authorization");
      const { socket, response } = Deno.upgradeWebSocket(request);
      socket.onopen = () => socket.close(1000);
      return response;
    },
  );
  try {
    await runCli([
      "client",
      "--url",
      `ws://127.0.0.1:${listener.addr.port}`,
      "--header",
      "Authorization: Bearer abc",
    ]);
    assert.equal(seen, "Bearer abc");
  } finally {
    await listener.shutdown();
  }
});

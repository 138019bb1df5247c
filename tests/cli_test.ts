import assert from "node:assert/strict";
import config from "../deno.json" with { type: "json" };
import { Cli, closedPort, join, runCli, startServerProcess } from "./helpers.ts";
import { WELCOME } from "../lib/protocol.ts";

Deno.test("--help for chat, server and client prints usage and exits 0", async () => {
  const top = await runCli(["--help"]);
  assert.equal(top.code, 0);
  assert.match(top.stdout, /chat server \[flags\]/);
  assert.match(top.stdout, /chat client \[flags\]/);
  const server = await runCli(["server", "--help"]);
  assert.equal(server.code, 0);
  assert.match(server.stdout, /^chat server: /);
  for (const flag of ["--host HOST", "--port PORT", "--no-echo"]) {
    assert.ok(server.stdout.includes(flag), flag);
  }
  const client = await runCli(["client", "--help"]);
  assert.equal(client.code, 0);
  for (const flag of ["--url URL", "--name NAME", "--rate N"]) {
    assert.ok(client.stdout.includes(flag), flag);
  }
  assert.equal(top.stderr + server.stderr + client.stderr, "");
});

Deno.test("--version prints chat and the version in deno.json", async () => {
  const result = await runCli(["--version"]);
  assert.equal(result.code, 0);
  assert.equal(result.stdout, `chat ${config.version}\n`);
});

Deno.test("usage errors: one stderr line with a hint, nothing on stdout, exit 2", async () => {
  const cases: [string[], string][] = [
    [
      [],
      "chat: missing command: expected 'server', 'client' or 'token' (try 'chat --help')",
    ],
    [
      ["serve"],
      `chat: unknown command "serve": expected 'server', 'client' or 'token' (try 'chat --help')`,
    ],
    [
      ["server", "--nope"],
      "chat: unknown flag --nope (try 'chat server --help')",
    ],
    [
      ["server", "--port"],
      "chat: flag --port needs a value (try 'chat server --help')",
    ],
    [
      ["server", "--port", "abc"],
      `chat: invalid --port "abc": expected a whole number from 0 to 65535 (try 'chat server --help')`,
    ],
    [
      ["server", "--port", "70000"],
      `chat: invalid --port "70000": expected a whole number from 0 to 65535 (try 'chat server --help')`,
    ],
    [
      ["server", "--port", "-5"],
      `chat: invalid --port "-5": expected a whole number from 0 to 65535 (try 'chat server --help')`,
    ],
    [
      ["server", "extra"],
      `chat: unexpected argument "extra" (try 'chat server --help')`,
    ],
    [
      ["client", "--url", "127.0.0.1:8080"],
      `chat: invalid --url "127.0.0.1:8080": add the scheme, as in ws://127.0.0.1:8080 (try 'chat client --help')`,
    ],
    [
      ["client", "--header", "no colon"],
      `chat: invalid --header "no colon": expected 'Name: value' (try 'chat client --help')`,
    ],
    [
      ["client", "--name", "not ok"],
      `chat: invalid name "not ok": use 1 to 32 ASCII letters, digits, '_', '-' or '.' (try 'chat client --help')`,
    ],
    [
      ["client", "--url", "ftp://x/"],
      `chat: invalid --url "ftp://x/": expected ws:// or wss:// (try 'chat client --help')`,
    ],
    [
      ["client", "--url"],
      "chat: flag --url needs a value (try 'chat client --help')",
    ],
    [
      ["client", "--room", "a/b"],
      `chat: invalid room "a/b": use 1 to 32 ASCII letters, digits, '_', '-' or '.', not healthz, readyz, metrics, favicon.ico (try 'chat client --help')`,
    ],
  ];
  for (const [args, line] of cases) {
    const result = await runCli(args);
    assert.equal(result.code, 2, args.join(" "));
    assert.equal(result.stderr, line + "\n", args.join(" "));
    assert.equal(result.stdout, "", args.join(" "));
  }
});

Deno.test("the server's first line is its real address, also for --port 0", async () => {
  const { cli, port } = await startServerProcess();
  assert.equal(cli.stdoutLines[0], `listening on ws://127.0.0.1:${port}`);
  assert.equal(
    await cli.stdout.next(),
    `chat page at http://127.0.0.1:${port}/`,
  );
  assert.ok(port > 0);
  assert.equal((await cli.stop()).code, 0);
});

Deno.test("--host 0.0.0.0 stays 0.0.0.0, and IPv6 is bracketed", async () => {
  for (const [host, shown] of [["0.0.0.0", "0.0.0.0"], ["::1", "[::1]"]]) {
    const { cli, port } = await startServerProcess(["--host", host]);
    assert.equal(cli.stdoutLines[0], `listening on ws://${shown}:${port}`);
    assert.equal((await cli.stop()).code, 0);
  }
});

Deno.test("a port in use is one line on stderr and exit 1", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  const result = await runCli(["server", "--port", String(port)]);
  listener.close();
  assert.equal(result.code, 1);
  assert.equal(
    result.stderr,
    `chat: cannot listen on 127.0.0.1:${port}: address already in use\n`,
  );
  assert.equal(result.stdout, "");
});

Deno.test("one server, three `deno task client`s: each sees the others' lines", async () => {
  const { cli: server, url } = await startServerProcess();
  const names = ["alice", "bob", "carol"];
  const clients = names.map((name) =>
    new Cli(["client", "--url", url, "--name", name], { task: true })
  );
  // Each client is in the chat once its welcome is printed.
  for (const client of clients) assert.equal(await client.chat.next(), WELCOME);
  for (const [i, client] of clients.entries()) {
    await client.write(`hello from ${names[i]}\n`);
    const line = `${names[i]}: hello from ${names[i]}`;
    for (const other of clients) assert.equal(await other.chat.next(), line);
  }
  for (const client of clients) assert.equal((await client.finished()).code, 0);
  for (const client of clients) {
    assert.deepEqual(client.chatLines, [
      WELCOME,
      "alice: hello from alice",
      "bob: hello from bob",
      "carol: hello from carol",
    ]);
  }
  assert.equal((await server.stop()).code, 0);
  const log = server.stdoutLines.join("\n");
  assert.match(log, /^From client 127\.0\.0\.1:\d+ "hello from bob"$/m);
  assert.equal(
    server.stdoutLines.filter((l) => l.startsWith("Disconnected ")).length,
    3,
  );
});

Deno.test("a piped client sends every non-blank line, then exits 0 at EOF", async () => {
  const { cli: server, url } = await startServerProcess();
  await using watcher = await join(url, "watcher");
  const result = await runCli(
    ["client", "--url", url, "--name", "piper"],
    "first\r\n\n   \nsecond\nlast without newline",
  );
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stderr, "");
  // It printed its own lines too: it stayed until the server's close reply.
  assert.equal(
    result.stdout,
    `${WELCOME}\npiper: first\npiper: second\npiper: last without newline\n`,
  );
  assert.deepEqual(await watcher.messages.many(3), [
    "piper: first",
    "piper: second",
    "piper: last without newline",
  ]);
  await server.stop();
});

Deno.test("the client escapes control characters, one message per line", async () => {
  const { cli: server, url } = await startServerProcess();
  const client = new Cli(["client", "--url", url]);
  assert.equal(await client.chat.next(), WELCOME);
  await using peer = await join(url, "peer");
  peer.send("two\nlines \x1b[2J\rgone\u009b");
  assert.equal(
    await client.chat.next(),
    "peer: two\\x0alines \\x1b[2J\\x0dgone\\x9b",
  );
  await client.finished();
  await server.stop();
});

Deno.test("a refused connection is one line on stderr and exit 1", async () => {
  const port = closedPort();
  const result = await runCli(
    ["client", "--url", `ws://127.0.0.1:${port}`],
    "never sent\n",
  );
  assert.equal(result.code, 1);
  assert.equal(
    result.stderr,
    `chat: cannot connect to ws://127.0.0.1:${port}/: connection refused\n`,
  );
  assert.equal(result.stdout, "");
});

Deno.test("a refused upgrade reports the HTTP status and the server's reason", async () => {
  const { cli: server, url } = await startServerProcess();
  const result = await runCli(["client", "--url", `${url}/?name=a&name=b`]);
  assert.equal(result.code, 1);
  assert.equal(
    result.stderr,
    `chat: cannot connect to ${url}/?name=a&name=b: HTTP 400: repeated name parameter: give one name\n`,
  );
  await server.stop();
});

Deno.test("SIGTERM and SIGINT: clients are closed with 1001, the server exits 0", async () => {
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    const { cli: server, url } = await startServerProcess();
    const client = await join(url, "alice");
    // A terminal client with stdin still open exits at once when the server closes.
    const terminal = new Cli(["client", "--url", url, "--name", "bob"]);
    assert.equal(await terminal.chat.next(), WELCOME);
    server.kill(signal);
    const closed = await client.closed;
    assert.equal(closed.code, 1001);
    assert.equal(closed.reason, "server shutting down");
    assert.equal((await server.finished()).code, 0);
    assert.equal(
      await terminal.stderr.next(),
      "disconnected: 1001 server shutting down",
    );
    assert.equal((await terminal.child.status).code, 0);
    await terminal.finished();
  }
});

Deno.test("--room joins that room: its messages stay there", async () => {
  const { cli: server, url } = await startServerProcess();
  await using lobby = await join(url, "lobby");
  await using rustacean = await join(url, "ferris", "rust");
  const result = await runCli(
    ["client", "--url", url, "--room", "rust", "--name", "crab"],
    "hello rust\n",
  );
  assert.equal(result.code, 0, result.stderr);
  assert.equal(await rustacean.messages.next(), "crab: hello rust");
  lobby.send("lobby only");
  assert.equal(await lobby.messages.next(), "lobby: lobby only");
  assert.deepEqual(rustacean.messages.queued, []);
  await server.stop();
});

Deno.test("every --help fits 80 columns", async () => {
  for (
    const args of [["--help"], ["server", "--help"], ["client", "--help"], [
      "token",
      "--help",
    ]]
  ) {
    const { code, stdout } = await runCli(args);
    assert.equal(code, 0);
    for (const line of stdout.split("\n")) {
      assert.ok(
        line.length <= 80,
        `${args.join(" ")}: ${line.length} columns: ${line}`,
      );
    }
  }
});

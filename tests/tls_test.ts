/**
 * The chat over TLS, end to end, with a throwaway CA and certificate made by
 * `openssl` (which `.ci/run` installs when it is missing).
 */
import assert from "node:assert/strict";
import { Cli, PRESENCE, ROOT, runCli, startServerProcess } from "./helpers.ts";
import { WELCOME } from "../lib/protocol.ts";

/**
 * Runs the README's certificate recipe (its first `sh` block under "TLS")
 * as it is written, in a fresh directory, and adds a stranger's key.
 */
async function makeCertificates(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "chat-tls-" });
  const readme = await Deno.readTextFile(`${ROOT}README.md`);
  const section = readme.slice(readme.indexOf("\n## TLS\n"));
  const start = section.indexOf("```sh\n") + 6;
  const recipe = section.slice(start, section.indexOf("\n```", start));
  for (const script of [recipe, "openssl genrsa -out other-key.pem 2048"]) {
    const { success, stderr } = await new Deno.Command("bash", {
      args: ["-euc", script],
      cwd: dir,
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!success) {
      throw new Error(`${script}: ${new TextDecoder().decode(stderr)}`);
    }
  }
  return dir;
}

const opensslMissing = await new Deno.Command("openssl", {
  args: ["version"],
  stdout: "null",
})
  .output().then(() => false, () => true);
const dir = opensslMissing ? "" : await makeCertificates();
// The throwaway files go when the test run ends.
if (dir) {
  globalThis.addEventListener(
    "unload",
    () => Deno.removeSync(dir, { recursive: true }),
  );
}
const ignore = opensslMissing;
const because = ignore ? " (ignored: openssl is not installed)" : "";

/** The server's flags for the throwaway certificate. */
function tlsFlags(): string[] {
  return ["--cert", `${dir}/server.pem`, "--key", `${dir}/server-key.pem`];
}

Deno.test({
  name: `the chat runs over TLS end to end, large messages included${because}`,
  ignore,
  async fn() {
    const { cli: server, port } = await startServerProcess([
      ...tlsFlags(),
      "--max-message-bytes",
      "2000000",
      // Messages this large need a backlog allowance to match, and a byte rate.
      "--max-buffered-bytes",
      "16000000",
      "--rate-bytes-burst",
      "16000000",
    ]);
    assert.equal(server.stdoutLines[0], `listening on wss://127.0.0.1:${port}`);
    assert.equal(
      await server.stdout.next(),
      `chat page at https://127.0.0.1:${port}/`,
    );
    const url = `wss://localhost:${port}`;
    const client = Deno.createHttpClient({
      caCerts: [await Deno.readTextFile(`${dir}/ca.pem`)],
    });
    const watcher = new WebSocket(`${url}/?name=watcher`, { client });
    const received: string[] = [];
    const got = Promise.withResolvers<void>();
    watcher.onmessage = (e) => {
      if (PRESENCE.test(e.data)) return;
      received.push(e.data);
      if (received.length === 5) got.resolve();
    };
    await new Promise((resolve) => watcher.onopen = resolve);
    // Large messages are where a wss write could lose its tail.
    const big = Array.from(
      { length: 3 },
      (_, i) => String(i).repeat([150_000, 1_000_000, 1_500_000][i]),
    );
    const terminal = new Cli([
      "client",
      "--url",
      url,
      "--ca",
      `${dir}/ca.pem`,
      "--name",
      "alice",
    ]);
    assert.equal(await terminal.chat.next(), WELCOME);
    await terminal.write(["hello over tls", ...big].join("\n") + "\n");
    await got.promise;
    assert.deepEqual(received, [
      WELCOME,
      "alice: hello over tls",
      ...big.map((text) => `alice: ${text}`),
    ]);
    assert.equal((await terminal.finished()).code, 0);
    assert.equal(terminal.chatLines.length, 5);
    assert.equal(terminal.chatLines[4], `alice: ${big[2]}`);
    const closed = new Promise((resolve) => watcher.onclose = resolve);
    watcher.close();
    await closed;
    client.close();
    assert.equal((await server.stop()).code, 0);
  },
});

Deno.test({
  name:
    `a certificate the client cannot verify, or ws:// to TLS: one line, exit 1${because}`,
  ignore,
  async fn() {
    const { cli: server, port } = await startServerProcess(tlsFlags());
    const result = await runCli(["client", "--url", `wss://localhost:${port}`]);
    assert.equal(result.code, 1);
    assert.equal(
      result.stderr,
      `chat: cannot connect to wss://localhost:${port}/: certificate not trusted (UnknownIssuer); for a private CA use --ca FILE\n`,
    );
    // ws:// to it: the client says what to use instead.
    const plain = await runCli(["client", "--url", `ws://127.0.0.1:${port}`]);
    assert.equal(plain.code, 1);
    assert.equal(
      plain.stderr,
      `chat: cannot connect to ws://127.0.0.1:${port}/: the server speaks TLS: use wss://\n`,
    );
    await server.stop();
  },
});

Deno.test({
  name: `bad --cert, --key and --ca files are usage errors${because}`,
  ignore,
  async fn() {
    const cases: [string[], string][] = [
      [
        [
          "server",
          "--cert",
          `${dir}/missing.pem`,
          "--key",
          `${dir}/server-key.pem`,
        ],
        `chat: cannot read --cert "${dir}/missing.pem": no such file (try 'chat server --help')`,
      ],
      [
        ["server", "--cert", `${dir}/server.pem`],
        "chat: --cert and --key go together: give both or neither (try 'chat server --help')",
      ],
      [
        [
          "server",
          "--port",
          "0",
          "--cert",
          `${dir}/server.pem`,
          "--key",
          `${dir}/other-key.pem`,
        ],
        "chat: cannot use --cert/--key: the key does not match the certificate (try 'chat server --help')",
      ],
      [
        ["client", "--ca", `${dir}/nope.pem`],
        `chat: cannot read --ca "${dir}/nope.pem": no such file (try 'chat client --help')`,
      ],
      [
        ["client", "--ca", `${dir}/server-key.pem`],
        `chat: --ca "${dir}/server-key.pem" holds no PEM certificate (try 'chat client --help')`,
      ],
      [
        [
          "server",
          "--port",
          "0",
          "--cert",
          `${dir}/ca.pem`,
          "--key",
          `${dir}/ca-key.pem`,
        ],
        `chat: --cert "${dir}/ca.pem" is a CA certificate (CA:TRUE), which clients refuse from a server: sign a server certificate with it (README: TLS) (try 'chat server --help')`,
      ],
    ];
    for (const [args, line] of cases) {
      const result = await runCli(args);
      assert.equal(result.stderr, line + "\n", args.join(" "));
      assert.equal(result.code, 2, args.join(" "));
      assert.equal(result.stdout, "");
    }
  },
});

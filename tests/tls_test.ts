/**
 * The chat over TLS, end to end, with a throwaway CA and certificate made by
 * `openssl` (which `.ci/run` installs when it is missing).
 */
import assert from "node:assert/strict";
import { Cli, PRESENCE, runCli, startServerProcess } from "./helpers.ts";
import { WELCOME } from "../lib/protocol.ts";

async function openssl(args: string[], cwd: string): Promise<void> {
  const { success, stderr } = await new Deno.Command("openssl", {
    args,
    cwd,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) {
    throw new Error(`openssl ${args[0]}: ${new TextDecoder().decode(stderr)}`);
  }
}

/** A CA, a certificate for localhost and 127.0.0.1 signed by it, and a stranger's key. */
async function makeCertificates(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "chat-tls-" });
  const days = ["-days", "2"];
  await openssl(
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      "ca-key.pem",
      "-out",
      "ca.pem",
    ]
      .concat(days, ["-subj", "/CN=chat test CA"]),
    dir,
  );
  await openssl(
    ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "req.csr"]
      .concat(["-subj", "/CN=localhost"]),
    dir,
  );
  await Deno.writeTextFile(
    `${dir}/ext.cnf`,
    "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
  );
  await openssl(
    ["x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem"]
      .concat(["-CAcreateserial", "-out", "cert.pem", "-extfile", "ext.cnf"], days),
    dir,
  );
  await openssl(["genrsa", "-out", "other-key.pem", "2048"], dir);
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
  globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
}
const ignore = opensslMissing;
const because = ignore ? " (ignored: openssl is not installed)" : "";

/** The server's flags for the throwaway certificate. */
function tlsFlags(): string[] {
  return ["--cert", `${dir}/cert.pem`, "--key", `${dir}/key.pem`];
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
    assert.equal(await server.stdout.next(), `chat page at https://127.0.0.1:${port}/`);
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
  name: `a certificate the client cannot verify: one line, exit 1${because}`,
  ignore,
  async fn() {
    const { cli: server, port } = await startServerProcess(tlsFlags());
    const result = await runCli(["client", "--url", `wss://localhost:${port}`]);
    assert.equal(result.code, 1);
    assert.equal(
      result.stderr,
      `chat: cannot connect to wss://localhost:${port}/: certificate not trusted (UnknownIssuer); for a private CA use --ca FILE\n`,
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
        ["server", "--cert", `${dir}/missing.pem`, "--key", `${dir}/key.pem`],
        `chat: cannot read --cert "${dir}/missing.pem": no such file (try 'chat server --help')`,
      ],
      [
        ["server", "--cert", `${dir}/cert.pem`],
        "chat: --cert and --key go together: give both or neither (try 'chat server --help')",
      ],
      [
        [
          "server",
          "--port",
          "0",
          "--cert",
          `${dir}/cert.pem`,
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
        ["client", "--ca", `${dir}/key.pem`],
        `chat: --ca "${dir}/key.pem" holds no PEM certificate (try 'chat client --help')`,
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

/**
 * A closed chat: tokens signed with `--auth-secret`, checked at the upgrade
 * (each kind of wrong one refused), names taken from them, rooms limited by
 * them, expiry while connected and renewal with `/token`, and `chat token`
 * minting what `chat server` accepts.
 */
import assert from "node:assert/strict";
import { SignJWT } from "jose";
import { RawSocket } from "./raw.ts";
import {
  Cli,
  ROOT,
  runCli,
  startServer,
  startServerProcess,
  TestClient,
} from "./helpers.ts";
import { mintToken, parseTtl, verifyToken } from "../lib/auth.ts";
import { CloseCode, WELCOME } from "../lib/protocol.ts";

const SECRET = new TextEncoder().encode(
  "a test secret of forty-two bytes, at least",
);
const OTHER = new TextEncoder().encode(
  "another secret, just as long as the first one",
);

const now = () => Math.floor(Date.now() / 1000);

/** A token signed with `alg` (HS256 unless told) over `claims`. */
function sign(
  claims: Record<string, unknown>,
  { alg = "HS256", secret = SECRET }: { alg?: string; secret?: Uint8Array } = {},
): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg }).sign(secret);
}

const b64 = (value: unknown) =>
  btoa(JSON.stringify(value)).replace(/=+$/, "").replace(/\+/g, "-").replace(
    /\//g,
    "_",
  );

/** The status and body an upgrade to `path` with `headers` gets. */
async function upgrade(
  port: number,
  path: string,
  headers: Record<string, string> = {},
): Promise<[number, string]> {
  const socket = await RawSocket.open(port, { path, headers });
  try {
    return [
      socket.status,
      socket.status === 101 ? "" : (await socket.body()).trim(),
    ];
  } finally {
    socket.close();
  }
}

Deno.test("tokens: each kind of wrong one is refused with its status and body", async () => {
  await using server = startServer({ authSecret: SECRET });
  const port = Number(new URL(server.url).port);
  const good = { sub: "alice", exp: now() + 60 };
  const cases: [string, string | undefined, number, string][] = [
    ["no token", undefined, 401, "token missing"],
    [
      "expired",
      await sign({ sub: "alice", exp: now() - 10 }),
      401,
      "token expired",
    ],
    [
      "bad signature",
      await sign(good, { secret: OTHER }),
      401,
      "token invalid",
    ],
    [
      "alg none",
      `${b64({ alg: "none", typ: "JWT" })}.${b64(good)}.`,
      401,
      "token invalid",
    ],
    ["HS512", await sign(good, { alg: "HS512" }), 401, "token invalid"],
    ["no sub", await sign({ exp: now() + 60 }), 401, "token invalid"],
    ["no exp", await sign({ sub: "alice" }), 401, "token invalid"],
    [
      "sub breaks the name rule",
      await sign({ ...good, sub: "al ice" }),
      401,
      "token invalid",
    ],
    ["garbage", "not.a.token", 401, "token invalid"],
    [
      "room not in rooms",
      await sign({ ...good, rooms: ["rust"] }),
      403,
      "room not allowed",
    ],
  ];
  for (const [what, token, status, body] of cases) {
    const headers: Record<string, string> = token
      ? { Authorization: `Bearer ${token}` }
      : {};
    assert.deepEqual(await upgrade(port, "/", headers), [status, body], what);
  }
  // A ?name= that is not the token's.
  assert.deepEqual(
    await upgrade(port, `/?name=bob&token=${await sign(good)}`),
    [400, "name bob is not the token's (alice)"],
  );
  const metrics = await (await fetch(server.url.replace("ws:", "http:") + "/metrics"))
    .text();
  assert.match(metrics, /chat_refusals_total\{reason="auth"\} 11/);
  // Nothing of a token reaches the log.
  assert.ok(!server.log.queued.some((line) => line.includes("eyJ")));
});

Deno.test("tokens: the holder joins under the token's name, in the rooms it names", async () => {
  await using server = startServer({ authSecret: SECRET });
  const alice = await mintToken(
    { name: "alice", rooms: ["rust"], ttlSeconds: 60 },
    SECRET,
  );
  // As a browser would send it: in the URL.
  await using a = await TestClient.join(`${server.url}/rust?token=${alice}`);
  a.send("hello");
  assert.equal(await a.messages.next(), "alice: hello");
  // The same name again is taken, token or not.
  const again = new TestClient(`${server.url}/rust?token=${alice}`);
  await assert.rejects(again.opened);
  await again.closed;
  // A YewChat client's NICK must be the token's name.
  const bob = await mintToken({ name: "bob", ttlSeconds: 60 }, SECRET);
  const yew = new TestClient(`${server.url}/rust?token=${bob}`);
  await yew.opened;
  yew.send(JSON.stringify({ messageType: "register", data: "mallory" }));
  const closed = await yew.closed;
  assert.equal(closed.code, CloseCode.POLICY_VIOLATION);
  assert.equal(closed.reason, "NICK mallory is not the token's (bob)");
});

Deno.test("tokens: a connection closes when its token expires, unless /token renewed it", async () => {
  await using server = startServer({ authSecret: SECRET });
  // Second-granular: a token of N seconds lasts between N - 1 and N.
  const short = (name: string, ttlSeconds: number) =>
    mintToken({ name, ttlSeconds }, SECRET);
  await using renewing = await TestClient.join(
    `${server.url}/?token=${await short("alice", 5)}`,
  );
  const lapsing = await TestClient.join(
    `${server.url}/?token=${await short("bob", 2)}`,
  );
  const fresh = await mintToken({ name: "alice", ttlSeconds: 3600 }, SECRET);
  renewing.send(`/token ${fresh}`);
  const renewed = await renewing.messages.next();
  const until = new Date((now() + 3600) * 1000).toISOString().slice(0, 16);
  assert.match(
    renewed,
    new RegExp(`^\\* token renewed until ${until}:\\d\\dZ$`),
  );
  // A token for someone else, or a broken one, is refused and changes nothing.
  renewing.send(
    `/token ${await mintToken({ name: "carol", ttlSeconds: 60 }, SECRET)}`,
  );
  assert.equal(
    await renewing.messages.next(),
    "* token refused: it names carol, not alice",
  );
  renewing.send("/token nonsense");
  assert.equal(
    await renewing.messages.next(),
    "* token refused: token invalid",
  );
  // bob's lapses: closed with 1008 and the reason.
  const closed = await lapsing.closed;
  assert.deepEqual([closed.code, closed.reason], [
    CloseCode.POLICY_VIOLATION,
    "token expired",
  ]);
  assert.equal(
    await renewing.presence.take((l) => l.includes("bob left")),
    "* bob left (1 online)",
  );
  // alice is still in.
  renewing.send("still here");
  assert.equal(await renewing.messages.next(), "alice: still here");
});

Deno.test("chat token mints what chat server --auth-secret accepts; refusals are one line", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chat-auth-" });
  try {
    const secretFile = `${dir}/secret`;
    await Deno.writeTextFile(secretFile, "s".repeat(48) + "\n");
    const minted = await runCli([
      "token",
      "--secret",
      secretFile,
      "--name",
      "alice",
      "--ttl",
      "1h",
    ]);
    assert.equal(minted.code, 0, minted.stderr);
    const token = minted.stdout.trimEnd();
    assert.equal(minted.stdout, `${token}\n`);
    const identity = await verifyToken(
      token,
      new TextEncoder().encode("s".repeat(48)),
    );
    assert.ok(typeof identity === "object");
    assert.equal(identity.name, "alice");
    assert.ok(Math.abs(identity.expires - Date.now() - 3600_000) < 5000);

    const { cli: server, url } = await startServerProcess([
      "--auth-secret",
      secretFile,
    ]);
    try {
      const client = await runCli(
        ["client", "--url", url, "--token", token],
        "hi\n",
      );
      assert.equal(client.code, 0, client.stderr);
      assert.equal(client.stdout, `${WELCOME}\nalice: hi\n`);
      const refused = await runCli(
        ["client", "--url", url, "--reconnect"],
        "hi\n",
      );
      assert.equal(refused.code, 1);
      assert.equal(
        refused.stderr,
        `chat: cannot connect to ${url}/: HTTP 401: token missing\n`,
      );
      assert.ok(!server.stdoutLines.some((line) => line.includes(token)));
    } finally {
      await server.stop();
    }

    const usage = [
      [
        ["server", "--auth-secret", `${dir}/nope`],
        `chat: cannot read --auth-secret "${dir}/nope": no such file (try 'chat server --help')`,
      ],
      [
        ["token", "--name", "alice"],
        "chat: --secret FILE is required (try 'chat token --help')",
      ],
      [
        ["token", "--secret", secretFile, "--name", "alice", "--ttl", "soon"],
        `chat: invalid --ttl "soon": expected seconds, or 30m, 12h, 7d (try 'chat token --help')`,
      ],
    ];
    await Deno.writeTextFile(`${dir}/short`, "too short\n");
    usage.push([
      ["token", "--secret", `${dir}/short`, "--name", "alice"],
      `chat: --secret "${dir}/short" holds 9 bytes: a secret needs at least 32 (e.g. openssl rand -base64 48 > ${dir}/short) (try 'chat token --help')`,
    ]);
    for (const [args, line] of usage as [string[], string][]) {
      const result = await runCli(args);
      assert.equal(result.code, 2, args.join(" "));
      assert.equal(result.stderr, `${line}\n`, args.join(" "));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--ttl takes seconds or 30m, 12h, 7d", () => {
  assert.equal(parseTtl("90"), 90);
  assert.equal(parseTtl("30m"), 1800);
  assert.equal(parseTtl("12h"), 43_200);
  assert.equal(parseTtl("7d"), 604_800);
  for (const bad of ["", "0", "1w", "-5", "1.5h", "h"]) {
    assert.equal(parseTtl(bad), undefined, bad);
  }
});

Deno.test("--token-command gets the first token and renews it 60 s before it expires", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chat-renew-" });
  try {
    const secretFile = `${dir}/secret`;
    await Deno.writeTextFile(secretFile, "r".repeat(40));
    const { cli: server, url } = await startServerProcess([
      "--auth-secret",
      secretFile,
    ]);
    // Tokens of 62 s: each is renewed about 2 s after it was minted.
    const mint = `'${Deno.execPath()}' run --allow-read '${ROOT}main.ts' token ` +
      `--secret '${secretFile}' --name alice --ttl 62`;
    const client = new Cli(
      ["client", "--url", url, "--token-command", mint],
      { permissions: ["--allow-net", "--allow-read", "--allow-run"] },
    );
    try {
      assert.equal(await client.stdout.next(), WELCOME);
      assert.match(await client.stdout.next(), /^\* token renewed until \S+Z$/);
      await client.write("still alice\n");
      assert.equal(await client.stdout.next(), "alice: still alice");
      assert.equal((await client.finished()).code, 0);
    } finally {
      await client[Symbol.asyncDispose]();
      await server.stop();
    }
    // Without permission to run programs, it says so at once.
    const refused = await runCli([
      "client",
      "--url",
      url,
      "--token-command",
      "true",
    ]);
    assert.equal(refused.code, 2);
    assert.equal(
      refused.stderr,
      "chat: --token-command needs permission to run programs: start it with deno run --allow-run (try 'chat client --help')\n",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

import assert from "node:assert/strict";
import { join, startServer, TestClient } from "./helpers.ts";
import { WELCOME } from "../lib/protocol.ts";
import { chatHandler, upgradeHint } from "../server.ts";

Deno.test("a new client's first message is the welcome, to it alone", async () => {
  await using server = startServer();
  await using alice = await server.join("alice");
  await using bob = new TestClient(`${server.url}/?name=bob`);
  assert.equal(await bob.messages.next(), WELCOME);
  alice.send("after bob");
  assert.equal(await alice.messages.next(), "alice: after bob");
  assert.equal(await bob.messages.next(), "alice: after bob");
});

Deno.test("every message reaches every client, the sender too, as SENDER: TEXT", async () => {
  await using server = startServer();
  await using alice = await server.join("alice");
  await using bob = await server.join("bob");
  await using anonymous = await server.join();
  bob.send("hello, all");
  for (const client of [alice, bob, anonymous]) {
    assert.equal(await client.messages.next(), "bob: hello, all");
  }
  anonymous.send("who am I?");
  const line = await alice.messages.next();
  const match = line.match(/^127\.0\.0\.1:(\d+): who am I\?$/);
  assert.ok(match, line);
  assert.equal(await anonymous.messages.next(), line);
});

Deno.test("an empty name means the address; a repeated or bad name gets 400", async () => {
  await using server = startServer();
  await using blank = await server.join("");
  blank.send("x");
  assert.match(await blank.messages.next(), /^127\.0\.0\.1:\d+: x$/);

  const http = server.url.replace("ws:", "http:");
  const upgradeHeaders = {
    upgrade: "websocket",
    connection: "Upgrade",
    "sec-websocket-version": "13",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
  };
  const cases: [string, RegExp][] = [
    ["/?name=a%20b", /^invalid name "a b": use 1 to 32 ASCII/],
    [`/?name=${"x".repeat(33)}`, /^name is longer than 32 characters$/],
    ["/?name=a&name=b", /^repeated name parameter/],
  ];
  for (const [path, body] of cases) {
    const response = await fetch(http + path, { headers: upgradeHeaders });
    assert.equal(response.status, 400, path);
    assert.match((await response.text()).trim(), body);
  }
  // The refused upgrades never became connections.
  assert.equal(server.clients, 1);
});

Deno.test("a plain request that is not GET or HEAD gets 426 and a hint", async () => {
  await using server = startServer();
  const http = server.url.replace("ws:", "http:");
  for (
    const [method, path] of [["POST", "/"], ["PUT", "/rust?name=%%"], [
      "DELETE",
      "/x",
    ]]
  ) {
    const response = await fetch(http + path, {
      method,
      body: method === "DELETE" ? null : "x",
    });
    assert.equal(response.status, 426, `${method} ${path}`);
    assert.equal(response.headers.get("upgrade"), "websocket");
    assert.equal(await response.text(), upgradeHint(server.url) + "\n");
  }
});

Deno.test("--no-echo: the sender does not get its own message, the others do", async () => {
  await using server = startServer({ echo: false });
  await using alice = await server.join("alice");
  await using bob = await server.join("bob");
  // Each waits for the other's message before answering, so an echo, had
  // there been one, would arrive first on the same socket.
  alice.send("one");
  assert.equal(await bob.messages.next(), "alice: one");
  bob.send("two");
  assert.equal(await alice.messages.next(), "bob: two");
  alice.send("three");
  assert.equal(await bob.messages.next(), "alice: three");
});

Deno.test("the log has connect, each message as a JSON string, and disconnect", async () => {
  await using server = startServer();
  const client = await server.join("alice");
  const connected = await server.log.next();
  const address = connected.match(/^New connection from (127\.0\.0\.1:\d+)$/)
    ?.[1];
  assert.ok(address, connected);
  client.send('forged\nFrom client 1.2.3.4:5 "x" \u001b[31m');
  await client.messages.next();
  assert.equal(
    await server.log.next(),
    `From client ${address} "forged\\nFrom client 1.2.3.4:5 \\"x\\" \\u001b[31m"`,
  );
  await client.close();
  assert.equal(await server.log.next(), `Disconnected ${address}`);
});

Deno.test("all clients see two busy senders' messages in one order, each sender's in order", async () => {
  await using server = startServer({ rateLimit: 0 });
  await using alice = await server.join("alice");
  await using bob = await server.join("bob");
  await using carol = await server.join("carol");
  const count = 500;
  for (let i = 0; i < count; i++) {
    alice.send(`a${i}`);
    bob.send(`b${i}`);
  }
  const seen = await Promise.all(
    [alice, bob, carol].map((c) => c.messages.many(2 * count)),
  );
  assert.deepEqual(seen[1], seen[0]);
  assert.deepEqual(seen[2], seen[0]);
  const fromAlice = seen[0].filter((line) => line.startsWith("alice: "));
  const fromBob = seen[0].filter((line) => line.startsWith("bob: "));
  assert.deepEqual(
    fromAlice,
    Array.from({ length: count }, (_, i) => `alice: a${i}`),
  );
  assert.deepEqual(
    fromBob,
    Array.from({ length: count }, (_, i) => `bob: b${i}`),
  );
});

Deno.test("a binary message closes its sender with 1003 and is not broadcast", async () => {
  await using server = startServer();
  await using alice = await server.join("alice");
  await using bob = await server.join("bob");
  bob.send(new Uint8Array([1, 2, 3]));
  const closed = await bob.closed;
  assert.equal(closed.code, 1003);
  assert.equal(closed.reason, "text only");
  alice.send("still here");
  assert.equal(await alice.messages.next(), "alice: still here");
  assert.deepEqual(bob.messages.queued, []);
});

Deno.test("shutdown closes every client with 1001 and stops listening", async () => {
  const server = startServer();
  const alice = await server.join("alice");
  const bob = await server.join("bob");
  await server.shutdown();
  for (const client of [alice, bob]) {
    const closed = await client.closed;
    assert.equal(closed.code, 1001);
    assert.equal(closed.reason, "server shutting down");
  }
  await assert.rejects(
    Deno.connect({ hostname: "127.0.0.1", port: server.addr.port }).then((c) =>
      c.close()
    ),
    Deno.errors.ConnectionRefused,
  );
});

Deno.test("an IPv6 server brackets its host and its clients' addresses", async () => {
  await using server = startServer({ hostname: "::1" });
  assert.equal(server.url, `ws://[::1]:${server.addr.port}`);
  await using client = await server.join();
  client.send("v6");
  assert.match(await client.messages.next(), /^\[::1\]:\d+: v6$/);
});

Deno.test("the chat mounts in another Deno.serve app, beside the app's own routes", async () => {
  const chat = chatHandler({ log: () => {} });
  const app = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    (request, info) =>
      new URL(request.url).pathname === "/hello"
        ? new Response("hello from my app\n")
        : chat(request, info),
  );
  const url = `ws://127.0.0.1:${app.addr.port}`;
  const http = url.replace("ws:", "http:");
  assert.equal(
    await (await fetch(`${http}/hello`)).text(),
    "hello from my app\n",
  );
  assert.deepEqual(await (await fetch(`${http}/readyz`)).json(), {
    ready: true,
  });
  await using alice = await join(url, "alice", "rust");
  assert.equal(chat.clients, 1);
  alice.send("mounted");
  assert.equal(await alice.messages.next(), "alice: mounted");
  await chat.shutdown();
  assert.equal((await alice.closed).code, 1001);
  await app.shutdown();
});

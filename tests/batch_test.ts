/** The `chat.batch` subprotocol: several messages per frame, one frame per turn. */
import assert from "node:assert/strict";
import { startServer, TestClient } from "./helpers.ts";
import {
  BATCH_PROTOCOL,
  BATCH_SEPARATOR,
  SEPARATOR_REFUSED,
  WELCOME,
} from "../lib/protocol.ts";

Deno.test("a chat.batch client gets a burst in few frames, every message in order", async () => {
  await using server = startServer({ rateLimit: 0 });
  await using batched = new TestClient(
    `${server.url}/?name=batched`,
    BATCH_PROTOCOL,
  );
  await batched.opened;
  assert.equal(batched.socket.protocol, BATCH_PROTOCOL);
  assert.equal(await batched.messages.next(), WELCOME);
  await using plain = await server.join("plain");
  assert.equal(plain.socket.protocol, "");
  const count = 500;
  for (let i = 0; i < count; i++) plain.send(`m${i}`);
  const expected = Array.from({ length: count }, (_, i) => `plain: m${i}`);
  // The plain client: one message per frame.
  assert.deepEqual(await plain.messages.many(count), expected);
  const received: string[] = [];
  let frames = 0;
  while (received.length < count) {
    received.push(...(await batched.messages.next()).split(BATCH_SEPARATOR));
    frames++;
  }
  assert.deepEqual(received, expected);
  assert.ok(frames < count / 2, `${frames} frames for ${count} messages`);
});

Deno.test("with no backlog, a message to a chat.batch client leaves at once, alone", async () => {
  await using server = startServer();
  await using batched = new TestClient(`${server.url}/?name=b`, BATCH_PROTOCOL);
  assert.equal(await batched.messages.next(), WELCOME);
  batched.send("just one");
  assert.equal(await batched.messages.next(), "b: just one");
});

Deno.test("a message holding the record separator is refused, to the sender alone", async () => {
  await using server = startServer();
  await using watcher = await server.join("watcher");
  await using sender = await server.join("sender");
  sender.send(`split${BATCH_SEPARATOR}here`);
  assert.equal(await sender.messages.next(), SEPARATOR_REFUSED);
  sender.send("fine");
  assert.equal(await watcher.messages.next(), "sender: fine");
});

/** /healthz, /readyz and /metrics, with values checked against the traffic sent. */
import assert from "node:assert/strict";
import { RawSocket } from "./raw.ts";
import { startServer } from "./helpers.ts";

async function scrape(url: string): Promise<Map<string, number>> {
  const response = await fetch(url.replace("ws:", "http:") + "/metrics");
  assert.equal(response.status, 200);
  assert.match(
    response.headers.get("content-type") ?? "",
    /^text\/plain; version=0\.0\.4/,
  );
  const values = new Map<string, number>();
  for (const line of (await response.text()).split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const [name, value] = line.split(" ");
    values.set(name, Number(value));
  }
  return values;
}

Deno.test("/healthz and /readyz answer 200 with JSON while the server serves", async () => {
  await using server = startServer();
  const http = server.url.replace("ws:", "http:");
  const health = await fetch(`${http}/healthz`);
  assert.equal(health.status, 200);
  assert.deepEqual(await health.json(), { status: "ok", backplane: "none" });
  const ready = await fetch(`${http}/readyz`);
  assert.equal(ready.status, 200);
  assert.deepEqual(await ready.json(), { ready: true });
});

Deno.test("/metrics: every metric with HELP and TYPE, and no backplane metric without one", async () => {
  await using server = startServer();
  const text = await (await fetch(server.url.replace("ws:", "http:") + "/metrics"))
    .text();
  for (
    const name of [
      "chat_clients",
      "chat_rooms",
      "chat_messages_received_total",
      "chat_messages_delivered_total",
      "chat_bytes_received_total",
      "chat_bytes_sent_total",
      "chat_refusals_total",
    ]
  ) {
    assert.match(text, new RegExp(`^# HELP ${name} .+$`, "m"), name);
    assert.match(
      text,
      new RegExp(`^# TYPE ${name} (gauge|counter)$`, "m"),
      name,
    );
  }
  assert.doesNotMatch(text, /chat_backplane_up/);
});

Deno.test("/metrics counts what the test sent and what was refused", async () => {
  await using server = startServer({ maxMessageBytes: 100, maxClients: 3 });
  await using alice = await server.join("alice");
  await using bob = await server.join("bob", "rust");
  await using carol = await server.join("carol", "rust");
  let values = await scrape(server.url);
  assert.equal(values.get("chat_clients"), 3);
  assert.equal(values.get("chat_rooms"), 2);
  const sentBefore = values.get("chat_bytes_sent_total")!;

  bob.send("héllo"); // 6 bytes, to bob and carol
  bob.send("/who"); // a command: received bytes, not a chat message
  assert.equal(await carol.messages.next(), "bob: héllo");
  await bob.messages.next();
  assert.equal(await bob.messages.next(), "* online (2): bob, carol");
  alice.send("x".repeat(101)); // too big
  await alice.closed;
  const refused = [
    await RawSocket.open(server.addr.port, { path: "/rust?name=bob" }), // taken: 409
    await RawSocket.open(server.addr.port, { path: "/?name=a%20b" }), // bad name: 400
    await RawSocket.open(server.addr.port, {
      headers: { Origin: "https://evil.example" },
    }),
  ];
  assert.deepEqual(refused.map((r) => r.status), [409, 400, 403]);
  for (const r of refused) r.close();
  await server.log.take((line) => line.startsWith("Disconnected "));
  await using dave = await server.join("dave");
  const full = await RawSocket.open(server.addr.port, { path: "/?name=erin" });
  assert.equal(full.status, 503);
  full.close();

  values = await scrape(server.url);
  assert.equal(values.get("chat_messages_received_total"), 1);
  assert.equal(values.get("chat_messages_delivered_total"), 2);
  assert.equal(values.get("chat_bytes_received_total"), 6 + 4 + 101);
  // "bob: héllo" twice (11 bytes each), the /who answer, dave's welcome.
  const who = new TextEncoder().encode("* online (2): bob, carol").length;
  const welcome = new TextEncoder().encode("Welcome to chat! Type a message").length;
  assert.equal(
    values.get("chat_bytes_sent_total")! - sentBefore,
    2 * 11 + who + welcome,
  );
  assert.equal(values.get('chat_refusals_total{reason="too_big"}'), 1);
  assert.equal(values.get('chat_refusals_total{reason="bad_name"}'), 2);
  assert.equal(values.get('chat_refusals_total{reason="origin"}'), 1);
  assert.equal(values.get('chat_refusals_total{reason="max_clients"}'), 1);
  assert.equal(values.get('chat_refusals_total{reason="binary"}'), 0);
  assert.equal(values.get("chat_clients"), 3);
  dave.send("bye");
  await dave.messages.next();
});

import assert from "node:assert/strict";
import { clientUrl, escapeControl, networkProblem, readLines } from "../client.ts";
import { TokenBucket } from "../lib/rate.ts";
import { UsageError } from "../lib/flags.ts";

function streamOf(
  ...chunks: (string | Uint8Array)[]
): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return ReadableStream.from(
    chunks.map((chunk) => typeof chunk === "string" ? encoder.encode(chunk) : chunk),
  );
}

async function lines(...chunks: (string | Uint8Array)[]): Promise<string[]> {
  return await Array.fromAsync(readLines(streamOf(...chunks)));
}

Deno.test("control characters print as \\xHH, tab and text untouched", () => {
  assert.equal(escapeControl("plain text, ünïcödé ✓"), "plain text, ünïcödé ✓");
  assert.equal(escapeControl("a\tb"), "a\tb");
  assert.equal(escapeControl("a\nb\rc"), "a\\x0ab\\x0dc");
  assert.equal(escapeControl("\x1b[2J\x07\x00"), "\\x1b[2J\\x07\\x00");
  assert.equal(
    escapeControl("\x7f\x80\x9b\x9f\xa0"),
    "\\x7f\\x80\\x9b\\x9f\xa0",
  );
});

Deno.test("stdin lines end at LF or CRLF, and a last line needs no newline", async () => {
  assert.deepEqual(await lines("a\nb\r\nc"), ["a", "b", "c"]);
  assert.deepEqual(await lines("a\n\nb\n"), ["a", "", "b"]);
  assert.deepEqual(await lines(""), []);
  assert.deepEqual(await lines("one", " line\r", "\n", "two\r\n"), [
    "one line",
    "two",
  ]);
});

Deno.test("a character split across reads stays whole", async () => {
  const bytes = new TextEncoder().encode("é✓\n");
  assert.deepEqual(
    await lines(bytes.slice(0, 1), bytes.slice(1, 3), bytes.slice(3)),
    [
      "é✓",
    ],
  );
});

Deno.test("the name sets or replaces the URL's name parameter", () => {
  assert.equal(clientUrl("ws://127.0.0.1:8080").href, "ws://127.0.0.1:8080/");
  assert.equal(clientUrl("ws://h:1/", "al").href, "ws://h:1/?name=al");
  assert.equal(
    clientUrl("ws://h:1/x?name=old&k=v", "al").href,
    "ws://h:1/x?name=al&k=v",
  );
  assert.equal(clientUrl("http://h:1/").href, "ws://h:1/");
  assert.equal(clientUrl("https://h/").href, "wss://h/");
});

Deno.test("a URL that is not ws:// or wss:// is a usage error", () => {
  for (const url of ["ftp://h/", "nonsense", "127.0.0.1:8080"]) {
    assert.throws(() => clientUrl(url), UsageError, url);
  }
});

Deno.test("connect errors are said in plain words", () => {
  assert.equal(
    networkProblem(new Deno.errors.ConnectionRefused("x")),
    "connection refused",
  );
  assert.equal(
    networkProblem(
      new Error(
        "failed to lookup address information: Name or service not known",
      ),
    ),
    "host not found",
  );
});

Deno.test("a token bucket allows a burst, then its rate", () => {
  const bucket = new TokenBucket(10, 3, 0);
  assert.deepEqual([0, 0, 0, 0].map((t) => bucket.take(t)), [
    true,
    true,
    true,
    false,
  ]);
  assert.equal(bucket.wait(0), 100);
  assert.equal(bucket.take(50), false);
  assert.equal(bucket.take(100), true);
  assert.equal(bucket.wait(100), 100);
  assert.equal(bucket.take(10_000), true); // refills, but never past the burst
  assert.equal(bucket.take(10_000), true);
  assert.equal(bucket.take(10_000), true);
  assert.equal(bucket.take(10_000), false);
  assert.equal(new TokenBucket(5, 0, 0).burst, 1);
});

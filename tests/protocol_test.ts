import assert from "node:assert/strict";
import {
  chatLine,
  CloseCode,
  formatAddress,
  MAX_NAME_LENGTH,
  nameProblem,
  WELCOME,
} from "../lib/protocol.ts";

Deno.test("the welcome text is the original's, to the character", () => {
  assert.equal(WELCOME, "Welcome to chat! Type a message");
});

Deno.test("close codes are the documented ones", () => {
  assert.deepEqual(
    [
      CloseCode.NORMAL,
      CloseCode.GOING_AWAY,
      CloseCode.UNSUPPORTED_DATA,
      CloseCode.ABNORMAL,
      CloseCode.POLICY_VIOLATION,
      CloseCode.MESSAGE_TOO_BIG,
      CloseCode.INTERNAL_ERROR,
    ],
    [1000, 1001, 1003, 1006, 1008, 1009, 1011],
  );
});

Deno.test("names of 1 to 32 letters, digits, _ - . are valid", () => {
  for (
    const name of [
      "a",
      "alice",
      "Bob_2",
      "x-y.z",
      "_",
      "a".repeat(MAX_NAME_LENGTH),
    ]
  ) {
    assert.equal(nameProblem(name), undefined, name);
  }
});

Deno.test("other names are refused with a reason", () => {
  assert.equal(nameProblem(""), "name is empty");
  assert.equal(
    nameProblem("a".repeat(33)),
    "name is longer than 32 characters",
  );
  for (const name of ["a b", "ali:ce", "é", "a/b", "a\nb", "<script>", "a+b"]) {
    assert.match(
      nameProblem(name) ?? "",
      /^invalid name ".*": use 1 to 32 ASCII/,
      name,
    );
  }
});

Deno.test("addresses are IP:PORT, IPv6 in brackets", () => {
  assert.equal(formatAddress("127.0.0.1", 5555), "127.0.0.1:5555");
  assert.equal(formatAddress("::1", 5555), "[::1]:5555");
  assert.equal(formatAddress("0.0.0.0", 80), "0.0.0.0:80");
});

Deno.test("a chat line is SENDER: TEXT", () => {
  assert.equal(chatLine("alice", "hi there"), "alice: hi there");
  assert.equal(chatLine("[::1]:5555", ""), "[::1]:5555: ");
});

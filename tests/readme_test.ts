/** The README documents every flag with the default the code uses. */
import assert from "node:assert/strict";
import config from "../deno.json" with { type: "json" };
import { ROOT } from "./helpers.ts";
import { SERVER_COMMAND } from "../server.ts";
import { CLIENT_COMMAND } from "../client.ts";

const README = await Deno.readTextFile(`${ROOT}README.md`);

Deno.test("the README lists every flag with its default", () => {
  for (const command of [SERVER_COMMAND, CLIENT_COMMAND]) {
    for (const flag of command.flags) {
      const row = README.split("\n").find((line) =>
        line.startsWith(
          `| \`--${flag.name}${flag.valueName ? ` ${flag.valueName}` : ""}\``,
        )
      );
      assert.ok(row, `README has no row for ${command.name} --${flag.name}`);
      const expected = flag.default === undefined
        ? /\| (off|none) +\|/
        : `\`${flag.default}\``;
      if (typeof expected === "string") assert.ok(row.includes(expected), row);
      else assert.match(row, expected);
    }
  }
});

Deno.test("the README's version and test command are the real ones", async () => {
  assert.ok(README.includes(`prints \`chat ${config.version}\``));
  assert.ok(README.includes("```sh\ndeno task test\n```"));
  const ci = await Deno.readTextFile(`${ROOT}.ci/run`);
  assert.match(ci, /^deno task test /m);
});

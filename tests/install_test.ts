/**
 * The README's install line, run exactly as it is written into a temporary
 * install root: the installed `chat` command must then work.
 */
import assert from "node:assert/strict";
import { chatsEndToEnd, ROOT, runProcess } from "./helpers.ts";
import config from "../deno.json" with { type: "json" };

const README = await Deno.readTextFile(`${ROOT}README.md`);

Deno.test("the README's install line makes a chat command that works", async () => {
  const section = README.slice(
    README.indexOf("## Installing it as a `chat` command"),
  );
  const line = section.split("\n").find((l) => l.startsWith("deno install "));
  assert.ok(line, "no deno install line");
  const root = await Deno.makeTempDir({ prefix: "chat-install-" });
  try {
    const install = await new Deno.Command("sh", {
      args: ["-c", line],
      cwd: ROOT,
      env: { DENO_INSTALL_ROOT: root, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(install.success, new TextDecoder().decode(install.stderr));
    const chat = `${root}/bin/chat`;
    const version = await runProcess(chat, ["--version"]);
    assert.equal(version.stdout, `chat ${config.version}\n`);

    await chatsEndToEnd(chat, "inst");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

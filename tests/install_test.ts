/**
 * The README's install line, run exactly as it is written into a temporary
 * install root: the installed `chat` command must then work.
 */
import assert from "node:assert/strict";
import { ROOT, runProcess } from "./helpers.ts";
import config from "../deno.json" with { type: "json" };
import { WELCOME } from "../lib/protocol.ts";

const README = await Deno.readTextFile(`${ROOT}README.md`);

Deno.test("the README's install line makes a chat command that works", async () => {
  const section = README.slice(README.indexOf("## Installing it as a `chat` command"));
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

    const server = new Deno.Command(chat, {
      args: ["server", "--port", "0"],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes("\n")) text += (await reader.read()).value ?? "";
    const url = text.match(/^listening on (ws:\/\/\S+)/)?.[1];
    assert.ok(url, text);
    const client = await runProcess(
      chat,
      ["client", "--url", url, "--name", "inst"],
      "hi\n",
    );
    assert.equal(client.code, 0, client.stderr);
    assert.equal(client.stdout, `${WELCOME}\ninst: hi\n`);
    server.kill("SIGTERM");
    assert.equal((await server.status).code, 0);
    await reader.cancel();
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

/**
 * `chat`: one entrypoint for the broadcast chat's server and client.
 *
 * ```sh
 * deno run --allow-net main.ts server --port 8080
 * deno run --allow-net main.ts client --name alice
 * ```
 *
 * @module
 */

import config from "./deno.json" with { type: "json" };
import { runCommand, UsageError } from "./lib/flags.ts";
import { main as serverMain } from "./server.ts";
import { main as clientMain } from "./client.ts";
import { main as tokenMain } from "./token.ts";

/** The version in `deno.json`, printed by `chat --version`. */
export const VERSION: string = config.version;

const COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  server: serverMain,
  client: clientMain,
  token: tokenMain,
};

/** The top-level `--help` text. */
export const USAGE = `chat ${VERSION}: a WebSocket broadcast chat

Usage:
  chat server [flags]   run the chat server
  chat client [flags]   chat from the terminal (stdin lines are sent)
  chat token [flags]    print a token for a server run with --auth-secret
  chat --version        print the version
  chat --help           show this help

Run 'chat server --help', 'chat client --help' or 'chat token --help' for their
flags.
`;

/** Dispatches `chat COMMAND ...`; resolves with the exit status. */
export async function main(args: string[]): Promise<number> {
  const [first, ...rest] = args;
  if (first === "--help" || first === "-h" || first === "help") {
    console.log(USAGE);
    return 0;
  }
  if (first === "--version" || first === "-V") {
    console.log(`chat ${VERSION}`);
    return 0;
  }
  const command = first === undefined ? undefined : COMMANDS[first];
  if (!command) {
    const problem = first === undefined
      ? "missing command: expected 'server', 'client' or 'token'"
      : first.startsWith("-")
      ? `unknown flag ${first}`
      : `unknown command ${
        JSON.stringify(first)
      }: expected 'server', 'client' or 'token'`;
    console.error(new UsageError(problem).line());
    return 2;
  }
  return await runCommand(command, rest);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}

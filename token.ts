/**
 * `chat token`: mints a token for a server run with `--auth-secret`, and
 * prints it on stdout, nothing else.
 *
 * ```sh
 * chat token --secret secret.key --name alice --rooms rust,general --ttl 1h
 * ```
 *
 * @module
 */

import { mintToken, parseTtl, readSecret } from "./lib/auth.ts";
import {
  type CommandSpec,
  type FlagValues,
  parseFlags,
  runCommand,
  usage,
  UsageError,
} from "./lib/flags.ts";
import { nameProblem, roomProblem } from "./lib/protocol.ts";

/** The defaults of `chat token`, the single source for `--help` and the README. */
export const TOKEN_DEFAULTS = { ttl: "12h" } as const;

/** The token command's flags: the source of `chat token --help` and the README table. */
export const TOKEN_COMMAND: CommandSpec = {
  name: "token",
  summary: "print a token for a server run with --auth-secret",
  flags: [
    {
      name: "secret",
      type: "string",
      valueName: "FILE",
      help: "the file the server's --auth-secret names (required)",
    },
    {
      name: "name",
      type: "string",
      valueName: "NAME",
      help: "the name its holder chats under (required)",
    },
    {
      name: "rooms",
      type: "string",
      valueName: "ROOM,...",
      help: "the rooms it may join, comma-separated; '' is the main room (default: any)",
    },
    {
      name: "ttl",
      type: "string",
      valueName: "DURATION",
      default: TOKEN_DEFAULTS.ttl,
      help: "how long it is valid: seconds, or 30m, 12h, 7d",
    },
    { name: "admin", type: "boolean", help: "its holder is a moderator" },
  ],
};

/** What the flags ask for: the claims and the secret, or a `UsageError`. */
export function tokenRequest(values: FlagValues) {
  const command = TOKEN_COMMAND.name;
  const secretFile = values.secret as string | undefined;
  if (secretFile === undefined) {
    throw new UsageError("--secret FILE is required", command);
  }
  const name = values.name as string | undefined;
  if (name === undefined) throw new UsageError("--name NAME is required", command);
  const problem = nameProblem(name);
  if (problem) throw new UsageError(problem, command);
  const ttlText = (values.ttl as string | undefined) ?? TOKEN_DEFAULTS.ttl;
  const ttlSeconds = parseTtl(ttlText);
  if (ttlSeconds === undefined) {
    throw new UsageError(
      `invalid --ttl ${JSON.stringify(ttlText)}: expected seconds, or 30m, 12h, 7d`,
      command,
    );
  }
  const roomsText = values.rooms as string | undefined;
  const rooms = roomsText?.split(",").map((room) => room.trim());
  for (const room of rooms ?? []) {
    const problem = room === "*" ? undefined : roomProblem(room);
    if (problem) {
      throw new UsageError(
        `invalid room ${JSON.stringify(room)} in --rooms: ${problem}`,
        command,
      );
    }
  }
  return {
    claims: { name, rooms, ttlSeconds, admin: values.admin === true },
    secret: readSecret(secretFile, { command, flag: "secret" }),
  };
}

/** `chat token [flags]`. */
export async function main(args: string[]): Promise<number> {
  const values = parseFlags(TOKEN_COMMAND, args);
  if (values.help) {
    console.log(usage(TOKEN_COMMAND));
    return 0;
  }
  const { claims, secret } = tokenRequest(values);
  console.log(await mintToken(claims, secret));
  return 0;
}

if (import.meta.main) {
  Deno.exit(await runCommand(main, Deno.args));
}

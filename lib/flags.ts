/**
 * Command-line flags: one table per command is the single source of each
 * flag's name, default and help text. `parseFlags` turns it into a
 * `parseArgs` call (from `node:util`) and `usage` into the `--help` text.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { errorText } from "./errors.ts";

/** One flag of a command. */
export interface FlagSpec {
  /** The long name, without dashes: `port` for `--port`. */
  name: string;
  /** `string` takes a value; `boolean` is a switch. */
  type: "string" | "boolean";
  /** Shown in `--help` as `--port PORT`. */
  valueName?: string;
  /** The default as it appears in `--help` and the README. */
  default?: string;
  /** May be given more than once. */
  multiple?: boolean;
  /** One line of help. */
  help: string;
}

/** A command's name, summary and flags. */
export interface CommandSpec {
  /** `server` or `client`. */
  name: string;
  /** One line saying what the command does. */
  summary: string;
  flags: FlagSpec[];
}

/** A usage error: printed as one line with a hint, exit status 2. */
export class UsageError extends Error {
  constructor(message: string, readonly command?: string) {
    super(message);
    this.name = "UsageError";
  }

  /** `chat: PROBLEM (try 'chat COMMAND --help')`. */
  line(): string {
    const help = this.command ? `chat ${this.command} --help` : "chat --help";
    return `chat: ${this.message} (try '${help}')`;
  }
}

/** The values given on the command line, by flag name; `help` is always there. */
export type FlagValues = Record<
  string,
  string | boolean | (string | boolean)[] | undefined
>;

/**
 * Parses `args` against a command's flags. Every command also takes
 * `--help` (`-h`). Throws a `UsageError` for an unknown flag, a missing
 * value, a value given to a switch, or a stray argument.
 */
export function parseFlags(command: CommandSpec, args: string[]): FlagValues {
  const options: Record<
    string,
    { type: "string" | "boolean"; multiple?: boolean; short?: string }
  > = { help: { type: "boolean", short: "h" } };
  for (const flag of command.flags) {
    options[flag.name] = { type: flag.type, multiple: flag.multiple ?? false };
  }
  // `--port -5` is a value, not a flag: hand it over as `--port=-5`, so
  // that it gets the flag's own range message.
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const flag = args[i].startsWith("--") ? options[args[i].slice(2)] : undefined;
    if (flag?.type === "string" && /^-\d/.test(args[i + 1] ?? "")) {
      joined.push(`${args[i]}=${args[++i]}`);
    } else {
      joined.push(args[i]);
    }
  }
  try {
    const { values } = parseArgs({
      args: joined,
      options,
      strict: true,
      allowPositionals: false,
    });
    return { ...values };
  } catch (error) {
    throw new UsageError(describeParseError(error), command.name);
  }
}

/** Rewrites `parseArgs` errors, which are written for node, in this tool's words. */
function describeParseError(error: unknown): string {
  const message = errorText(error);
  const code = (error as { code?: string }).code;
  const quoted = message.match(/'(-[^' ]*)/)?.[1] ?? message.match(/'([^']*)'/)?.[1];
  switch (code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `unknown flag ${quoted}`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      return message.includes("argument missing")
        ? `flag ${quoted} needs a value`
        : `flag ${quoted} takes no value`;
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return `unexpected argument ${JSON.stringify(quoted)}`;
    default:
      return message;
  }
}

/** The `--help` text of a command. */
export function usage(command: CommandSpec): string {
  const rows = command.flags.map((flag) => {
    const left = `--${flag.name}${flag.valueName ? ` ${flag.valueName}` : ""}`;
    const extra = [
      flag.default !== undefined ? `default: ${flag.default}` : "",
      flag.multiple ? "repeatable" : "",
    ].filter(Boolean).join("; ");
    return [left, extra ? `${flag.help} (${extra})` : flag.help];
  });
  rows.push(["-h, --help", "show this help"]);
  const width = Math.max(...rows.map(([left]) => left.length));
  const indent = " ".repeat(width + 4);
  return [
    ...wrap(`chat ${command.name}: ${command.summary}`, HELP_COLUMNS, ""),
    "",
    `Usage: chat ${command.name} [flags]`,
    "",
    "Flags:",
    ...rows.flatMap(([left, right]) => {
      const [first, ...rest] = wrap(right, HELP_COLUMNS - indent.length, "");
      return [`  ${left.padEnd(width)}  ${first}`, ...rest.map((line) => indent + line)];
    }),
    "",
  ].join("\n");
}

/** `--help` fits a terminal of this many columns. */
export const HELP_COLUMNS = 80;

/** Breaks `text` into lines of at most `columns` at spaces, later lines after `indent`. */
function wrap(text: string, columns: number, indent: string): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line && line.length + 1 + word.length > columns) {
      lines.push(line);
      line = indent + word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  lines.push(line);
  return lines;
}

/** Which flag of which command a value came from, for its usage error. */
export interface FlagSource {
  /** The command: `server` or `client`. */
  command: string;
  /** The flag's name, without dashes. */
  flag: string;
}

/**
 * Reads a whole number between `min` and `max` from a flag's value, or
 * throws a `UsageError` naming the flag.
 */
export function integerFlag(
  value: string,
  { command, flag, min, max }: FlagSource & { min: number; max: number },
): number {
  const number = /^\d+$/.test(value.trim()) ? Number(value.trim()) : NaN;
  if (!Number.isSafeInteger(number) || number < min || number > max) {
    throw new UsageError(
      `invalid --${flag} ${
        JSON.stringify(value)
      }: expected a whole number from ${min} to ${max}`,
      command,
    );
  }
  return number;
}

/** Runs a command's `main`, turning a `UsageError` into its line and exit 2. */
export async function runCommand(
  entry: (args: string[]) => Promise<number>,
  args: string[],
): Promise<number> {
  try {
    return await entry(args);
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(error.line());
      return 2;
    }
    throw error;
  }
}

/**
 * Reads the file a flag names, or throws a `UsageError` saying why it
 * cannot: `cannot read --FLAG "FILE": no such file` (or permission denied).
 */
export function fileFlag(file: string, { command, flag }: FlagSource): Uint8Array {
  try {
    return Deno.readFileSync(file);
  } catch (error) {
    const why = error instanceof Deno.errors.NotFound
      ? "no such file"
      : error instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : errorText(error);
    throw new UsageError(
      `cannot read --${flag} ${JSON.stringify(file)}: ${why}`,
      command,
    );
  }
}

/**
 * Reads the PEM file a flag names (`--cert`, `--key`, `--ca`), or throws a
 * `UsageError` saying why it cannot: missing, unreadable, or holding no PEM
 * block of the `expected` kind (`CERTIFICATE`, or any with none given).
 */
export function pemFlag(
  file: string,
  { command, flag, expected }: FlagSource & { expected?: "CERTIFICATE" },
): string {
  const text = new TextDecoder().decode(fileFlag(file, { command, flag }));
  if (expected && !text.includes(`-----BEGIN ${expected}-----`)) {
    throw new UsageError(
      `--${flag} ${JSON.stringify(file)} holds no PEM ${expected.toLowerCase()}`,
      command,
    );
  }
  return text;
}

/**
 * The terminal client as a person sees it: a prompt with line editing
 * (`node:readline`), incoming lines printed above the line being typed,
 * sender names in colour, notices dimmed, and optional timestamps. None of
 * it applies when stdin or stdout is a pipe or a file: there, stdout is the
 * conversation and nothing else.
 *
 * @module
 */

import { clearLine, createInterface, cursorTo, type Interface } from "node:readline";
import process from "node:process";

/** What the interactive prompt shows. */
export const PROMPT = "> ";

/** Foreground colours for names: red, green, yellow, blue, magenta, cyan. */
const NAME_COLOURS = [31, 32, 33, 34, 35, 36];

/** One stable colour per name, whoever prints it. */
export function nameColour(name: string): number {
  let hash = 0;
  for (let i = 0; i < name.length; i++) hash = (hash * 31 + name.charCodeAt(i)) >>> 0;
  return NAME_COLOURS[hash % NAME_COLOURS.length];
}

/**
 * A received line (already made safe) in colour: the sender's name in its
 * colour, a server notice (`* ...`) dimmed.
 */
export function colourLine(line: string): string {
  if (line.startsWith("* ")) return `\x1b[2m${line}\x1b[22m`;
  const colon = line.indexOf(": ");
  if (colon <= 0) return line;
  const name = line.slice(0, colon);
  return `\x1b[${nameColour(name)}m${name}\x1b[39m${line.slice(colon)}`;
}

/** `HH:MM ` in local time. */
export function timestamp(date: Date): string {
  const two = (n: number) => String(n).padStart(2, "0");
  return `${two(date.getHours())}:${two(date.getMinutes())} `;
}

/** True when colour may be used on stdout: a terminal, and `NO_COLOR` unset or empty. */
export function colourWanted(): boolean {
  return Deno.stdout.isTerminal() && !Deno.env.get("NO_COLOR");
}

/**
 * The interactive prompt. Lines typed are `lines`; a typed line is erased
 * once entered, since the server's echo of it takes its place. Whatever
 * is printed goes above the line being typed, which is drawn again below
 * it as it was. Ctrl-C and Ctrl-D (on an empty line) end the input.
 */
export class Prompt {
  readonly #readline: Interface;
  readonly #queue: string[] = [];
  #wake?: () => void;
  #ended = false;
  #closed = false;

  constructor() {
    this.#readline = createInterface({
      input: process.stdin,
      output: process.stdout,
      prompt: PROMPT,
      terminal: true,
      historySize: 1000,
    });
    this.#readline.on("line", (line: string) => {
      // The terminal shows what was typed, prompt included, on as many rows
      // as it took: erase them; the echo comes from the server.
      const columns = process.stdout.columns || 80;
      const rows = Math.max(1, Math.ceil((PROMPT.length + line.length) / columns));
      process.stdout.write(`\x1b[${rows}A\r\x1b[J`);
      this.#queue.push(line);
      this.#wake?.();
      this.#readline.prompt();
    });
    this.#readline.on("SIGINT", () => this.#readline.close());
    this.#readline.on("close", () => {
      this.#ended = true;
      this.#wake?.();
    });
    this.#readline.prompt();
  }

  /** The lines typed, until Ctrl-C or Ctrl-D. */
  async *lines(): AsyncGenerator<string> {
    while (true) {
      if (this.#queue.length > 0) {
        yield this.#queue.shift()!;
        continue;
      }
      if (this.#ended) return;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }

  /** Prints `text` above the line being typed. */
  print(text: string, stream: "stdout" | "stderr" = "stdout"): void {
    if (!this.#closed) {
      clearLine(process.stdout, 0);
      cursorTo(process.stdout, 0);
    }
    (stream === "stdout" ? process.stdout : process.stderr).write(text + "\n");
    if (!this.#closed && !this.#ended) this.#readline.prompt(true);
  }

  /** Gives the terminal back as it was, without the prompt. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#readline.close();
    clearLine(process.stdout, 0);
    cursorTo(process.stdout, 0);
  }
}

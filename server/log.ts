/**
 * The server's log. Lines go to stdout without ever blocking the event
 * loop: lines logged during one turn are written together by one
 * asynchronous write, and while a write is in flight the next lines wait
 * in a bounded buffer. When stdout cannot keep up (a full pipe, a reader
 * that stopped), lines past the buffer are dropped and counted, and the
 * next line written says how many; delivery never waits for the log.
 *
 * @module
 */

import { utf8Length } from "./admission.ts";

/** Receives one log line, without its newline. */
export type Log = (line: string) => void;

/** A log with its own counters. */
export interface CountingLog extends Log {
  /** Lines dropped since the start because the output could not keep up. */
  readonly dropped: number;
}

/** Characters that may wait while a write is in flight, by default (1 MiB of ASCII). */
export const LOG_BUFFER_CHARS = 1048576;

/** The most a log line quotes of a message, in UTF-8 bytes. */
export const LOGGED_TEXT_BYTES = 200;

const encoder = new TextEncoder();

/**
 * A message's text for a log line: as a JSON string, cut after
 * `LOGGED_TEXT_BYTES` bytes (at a character boundary) with what was left
 * out counted: `"abc..." (+N bytes)`.
 */
export function quoteForLog(text: string): string {
  // A UTF-16 unit is at most 3 UTF-8 bytes: short texts need no counting.
  if (text.length * 3 <= LOGGED_TEXT_BYTES) return JSON.stringify(text);
  const head = encoder.encode(text.slice(0, LOGGED_TEXT_BYTES + 1));
  if (head.length <= LOGGED_TEXT_BYTES && text.length <= LOGGED_TEXT_BYTES) {
    return JSON.stringify(text);
  }
  let end = LOGGED_TEXT_BYTES;
  while ((head[end] & 0xc0) === 0x80) end--;
  const kept = new TextDecoder().decode(head.subarray(0, end));
  const rest = utf8Length(text) - end;
  return `${JSON.stringify(kept).slice(0, -1)}..." (+${rest} bytes)`;
}

/** Where a log writes: `Deno.stdout`, or a stand-in. */
export interface LogOutput {
  write(bytes: Uint8Array): Promise<number>;
}

/** What a stdout log is told. */
export interface StdoutLogOptions {
  /** Where lines go. @default {Deno.stdout} */
  output?: LogOutput;
  /** Characters that may wait while a write is in flight; more are dropped. @default {LOG_BUFFER_CHARS} */
  maxPendingChars?: number;
}

/**
 * A log to stdout (see the module's doc); `flush()` resolves once every
 * line logged so far is written.
 */
export function stdoutLog(
  options: StdoutLogOptions = {},
): CountingLog & { flush(): Promise<void> } {
  const output = options.output ?? Deno.stdout;
  const maxPendingChars = options.maxPendingChars ?? LOG_BUFFER_CHARS;
  let pending: string[] = [];
  let pendingChars = 0;
  let dropped = 0;
  let unreported = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let writing: Promise<void> | undefined;

  /** Writes what waits, then what came meanwhile, until nothing waits. */
  async function drain(): Promise<void> {
    while (pending.length > 0) {
      if (unreported > 0) {
        pending.unshift(`Log: ${unreported} lines dropped: the output could not keep up`);
        unreported = 0;
      }
      const bytes = encoder.encode(pending.join("\n") + "\n");
      pending = [];
      pendingChars = 0;
      let written = 0;
      try {
        while (written < bytes.length) {
          written += await output.write(bytes.subarray(written));
        }
      } catch {
        // stdout is gone (a closed pipe): nothing more can be said there.
        return;
      }
    }
  }

  function start(): void {
    timer = undefined;
    writing ??= drain().finally(() => {
      writing = undefined;
      if (pending.length > 0) start();
    });
  }

  const log = (line: string) => {
    if (pendingChars + line.length > maxPendingChars) {
      dropped++;
      unreported++;
      return;
    }
    pending.push(line);
    pendingChars += line.length + 1;
    if (writing === undefined) timer ??= setTimeout(start, 0);
  };

  async function flush(): Promise<void> {
    clearTimeout(timer);
    timer = undefined;
    while (writing || pending.length > 0) {
      if (!writing) start();
      await writing;
    }
  }

  return Object.defineProperties(log, {
    dropped: { get: () => dropped },
    flush: { value: flush },
  }) as CountingLog & { flush(): Promise<void> };
}

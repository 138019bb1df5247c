/**
 * Server log lines go to stdout, buffered: lines logged during one
 * event-loop turn are written together with one write, so logging costs one
 * syscall per turn, not one per message.
 *
 * @module
 */

/** Receives one log line, without its newline. */
export type Log = (line: string) => void;

/** A log that discards everything. */
export const silentLog: Log = () => {};

import { writeAllSync } from "../lib/io.ts";

const encoder = new TextEncoder();

/** A log to stdout that writes once per event-loop turn; `flush()` writes now. */
export function stdoutLog(): Log & { flush(): void } {
  let pending: string[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  const flush = () => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    if (pending.length === 0) return;
    const text = pending.join("\n") + "\n";
    pending = [];
    writeAllSync(Deno.stdout, encoder.encode(text));
  };
  const log = (line: string) => {
    pending.push(line);
    timer ??= setTimeout(flush, 0);
  };
  return Object.assign(log, { flush });
}

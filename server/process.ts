/**
 * What the server needs of its process: to survive what the runtime
 * rejects where no handler of the chat's can catch it, and enough file
 * descriptors for its clients.
 *
 * @module
 */

import { errorText } from "../lib/errors.ts";
import type { Log } from "./log.ts";

/** Descriptors the runtime itself may hold beside the clients' (stdio, listener, Redis). */
export const RUNTIME_DESCRIPTORS = 64;

/**
 * A warning when the process's file-descriptor limit is under what
 * `maxClients` clients may need; `undefined` when it is not (or cannot be
 * read). Deno raises the soft limit to the hard one at start, so the hard
 * limit is what counts.
 */
export function descriptorShortfall(maxClients: number): string | undefined {
  const needed = maxClients + RUNTIME_DESCRIPTORS;
  let limit: number;
  try {
    const limits = Deno.readTextFileSync("/proc/self/limits");
    limit = Number(limits.match(/^Max open files\s+(\d+)/m)?.[1]);
  } catch {
    return undefined;
  }
  if (!(limit < needed)) return undefined;
  return `Warning: the file-descriptor limit is ${limit}, under the ${needed} ` +
    `--max-clients may need: raise it (ulimit -Hn ${needed}) or lower --max-clients`;
}

/**
 * Keeps the process alive through a rejection inside the runtime's own
 * WebSocket or HTTP code, which no handler of the chat's can catch: a
 * message too large to become a string (fragments are joined before any
 * size check) rejects inside the socket's read loop. That socket reads no
 * more; its idle timeout closes it (see `--idle-timeout`). Returns the way
 * to take the guard off.
 */
export function guardProcess(log: Log): () => void {
  const onRejection = (event: PromiseRejectionEvent) => {
    event.preventDefault();
    log(`Error in the runtime, survived: ${errorText(event.reason)}`);
  };
  globalThis.addEventListener("unhandledrejection", onRejection);
  return () => globalThis.removeEventListener("unhandledrejection", onRejection);
}

/**
 * The server's `Deno.serve`, kept accepting. When the process runs out of
 * file descriptors, `Deno.serve`'s accept loop fails, drops its listener
 * and rejects `finished` (which, unhandled, ends the process). Here the
 * failure is logged and the same address is served again after a backoff;
 * the WebSockets already upgraded live on, untouched.
 *
 * What `Deno.serve` does not allow (measured in Deno 2.9.6): seeing a
 * connection before its request arrives, so a connection that never sends
 * one cannot be timed out or counted; and serving a connection the
 * program accepted itself (`serveHttpOnConnection`) closes its WebSocket as
 * soon as the upgrade is done. See the README's "What it costs at most".
 *
 * @module
 */

import { Backoff } from "../lib/backoff.ts";
import { errorText } from "../lib/errors.ts";
import type { Log } from "./log.ts";

/** What the listener is told. */
export interface ListenerOptions {
  hostname: string;
  port: number;
  /** PEM certificate chain and key: with both, connections speak TLS. */
  cert?: string;
  key?: string;
  handler: Deno.ServeHandler<Deno.NetAddr>;
  onError: (error: unknown) => Response;
  log: Log;
}

/** The first wait before serving again after the accept loop failed; it doubles to 5 s. */
export const FIRST_RELISTEN_MS = 100;
const MAX_RELISTEN_MS = 5_000;

/** Serves `handler` on one address until `shutdown`, whatever fails in between. */
export class ChatListener {
  /** The address bound (the real port when asked for `0`). */
  readonly addr: Deno.NetAddr;
  readonly #options: ListenerOptions;
  readonly #backoff = new Backoff(FIRST_RELISTEN_MS, MAX_RELISTEN_MS);
  /** Every server started: a failed one still holds its WebSockets' connections. */
  readonly #servers = new Set<Deno.HttpServer<Deno.NetAddr>>();
  #retry?: ReturnType<typeof setTimeout>;
  #lastFailure = -Infinity;
  #stopping = false;

  /** Listens at once; throws what `Deno.serve` throws (address in use, bad key). */
  constructor(options: ListenerOptions) {
    this.#options = options;
    this.addr = this.#serve(options.port).addr;
  }

  #serve(port: number): Deno.HttpServer<Deno.NetAddr> {
    const { hostname, cert, key, handler, onError } = this.#options;
    const server = Deno.serve({
      hostname,
      port,
      ...(cert !== undefined && key !== undefined ? { cert, key } : {}),
      onListen() {},
      onError,
    }, handler);
    this.#servers.add(server);
    server.finished.then(
      () => this.#servers.delete(server),
      (error) => this.#failed(error),
    );
    return server;
  }

  /** The accept loop failed (out of file descriptors): serve the address again, later. */
  #failed(error: unknown): void {
    if (this.#stopping) return;
    // A failure long after the last starts the backoff again.
    const now = performance.now();
    if (now - this.#lastFailure > 60_000) this.#backoff.reset();
    this.#lastFailure = now;
    const wait = this.#backoff.delay();
    this.#options.log(
      `Error accepting connections: ${errorText(error)}; accepting again in ${wait} ms`,
    );
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      if (this.#stopping) return;
      try {
        this.#serve(this.addr.port);
        this.#options.log(`Accepting connections again on port ${this.addr.port}`);
      } catch (again) {
        this.#failed(again);
      }
    }, wait);
  }

  /** Stops accepting and closes every connection still open. */
  async shutdown(): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#retry);
    await Promise.all(
      [...this.#servers].map((server) => server.shutdown().catch(() => {})),
    );
  }
}

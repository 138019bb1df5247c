/**
 * `deno task bench attacks`: what hostile clients cost a bystander. A chat
 * server runs on core 0 with its default limits (save `--max-clients-per-ip`,
 * raised because every client here comes from 127.0.0.1); bystanders in a
 * room of their own send at their rate limit and time their own echoes.
 * Each attack runs in a process of its own on core 1, numbered as in the
 * README's table (and tests/attacks_test.ts), and the bystanders' p99 during it is compared
 * with a quiet run on the same server.
 *
 *   deno task bench attacks          # every attack
 *   deno task bench attacks 4 5      # only these
 *
 * The same file is the attacker: `bench/attacks.ts attacker N PORT`.
 */

import { errorText } from "../lib/errors.ts";
import {
  cpuSeconds,
  freePort,
  HAVE_TASKSET,
  pinnedCommand,
  rssBytes,
  SERVER_TASK_ENV,
  waitForPort,
} from "../tests/proc.ts";
import { encodeFrame, Opcode } from "../tests/raw.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const SELF = new URL(import.meta.url).pathname;
/** Seconds each measurement lasts. */
const WINDOW_SECONDS = 8;
/**
 * Bystanders, each sending at 16 messages per second (under the default
 * 20): about a thousand samples per row, so that a p99 is more than a few.
 */
const BYSTANDERS = 8;
const BYSTANDER_INTERVAL_MS = 62;
/** The goal: a bystander's p99 under this multiple of its quiet value. */
const GOAL = 3;

interface Attack {
  key: string;
  title: string;
  /** Run the attack until killed; print "ready" once it is under way. */
  run(port: number): Promise<void>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A WebSocket that has opened, with everything it receives dropped. */
function open(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url);
    socket.onmessage = () => {};
    socket.onopen = () => resolve(socket);
    socket.onerror = () => reject(new Error(`cannot connect to ${url}`));
  });
}

/** Opens `count` sockets, `parallel` handshakes at a time, each handed to `opened`. */
async function openMany(
  count: number,
  url: (i: number) => string,
  parallel = 64,
  opened: (socket: WebSocket) => void = () => {},
): Promise<WebSocket[]> {
  const sockets: WebSocket[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < count) {
        const i = next++;
        const socket = await open(url(i));
        opened(socket);
        sockets.push(socket);
      }
    }),
  );
  return sockets;
}

const ATTACKS: Attack[] = [
  {
    key: "4",
    title: "4: one sender, 40 × 65,000 B then 16/s, into a room of 200 readers",
    async run(port) {
      await openMany(200, (i) => `ws://127.0.0.1:${port}/big?name=r${i}`);
      const sender = await open(`ws://127.0.0.1:${port}/big?name=sender`);
      console.log("ready");
      const big = "x".repeat(65_000);
      for (let i = 0; i < 40; i++) sender.send(big);
      for (;;) {
        await sleep(62);
        if (sender.readyState !== WebSocket.OPEN) return; // The server closed it.
        sender.send(big);
      }
    },
  },
  {
    key: "5",
    title: "5: a ping flood from one client, as fast as it can write",
    async run(port) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      const request = [
        "GET /pings?name=pinger HTTP/1.1",
        `Host: 127.0.0.1:${port}`,
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "",
        "",
      ].join("\r\n");
      await conn.write(new TextEncoder().encode(request));
      // Whatever comes back (the answer, pongs) is read and dropped.
      void (async () => {
        const sink = new Uint8Array(1 << 16);
        try {
          while (await conn.read(sink) !== null);
        } catch {
          // Closed.
        }
      })();
      const ping = encodeFrame(Opcode.PING, new Uint8Array(0));
      const burst = new Uint8Array(ping.length * 4096);
      for (let i = 0; i < 4096; i++) burst.set(ping, i * ping.length);
      console.log("ready");
      for (;;) {
        let written = 0;
        while (written < burst.length) {
          written += await conn.write(burst.subarray(written));
        }
      }
    },
  },
  {
    key: "6",
    title: "6: 1,200 YewChat registrations into one room",
    async run(port) {
      console.log("ready");
      // Each registers as soon as it is open, as YewChat does.
      let registered = 0;
      await openMany(
        1200,
        () => `ws://127.0.0.1:${port}/yew`,
        64,
        (socket) =>
          socket.send(
            JSON.stringify({ messageType: "register", data: `u${registered++}` }),
          ),
      );
    },
  },
  {
    key: "7",
    title: "7: 50 connections from one address, each at 18 messages/s of 250 B",
    async run(port) {
      const sockets = await openMany(
        50,
        (i) => `ws://127.0.0.1:${port}/crowd?name=c${i}`,
      );
      console.log("ready");
      const text = "y".repeat(250);
      for (;;) {
        for (const socket of sockets) {
          if (socket.readyState === WebSocket.OPEN) socket.send(text);
        }
        await sleep(56);
      }
    },
  },
  {
    key: "7b",
    title: "7b: 1,000 connections in one room, each sending one message at once",
    async run(port) {
      const sockets = await openMany(
        1000,
        (i) => `ws://127.0.0.1:${port}/storm?name=s${i}`,
      );
      console.log("ready");
      // A million frames to write: the turn budget's case at its largest.
      for (const socket of sockets) socket.send("z".repeat(40));
    },
  },
  {
    key: "2",
    title: "2: 20,000 TCP connections that never send a byte",
    async run(port) {
      const conns: Deno.Conn[] = [];
      for (let i = 0; i < 20_000; i++) {
        try {
          conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
        } catch {
          break;
        }
      }
      console.log(`opened ${conns.length}`);
      console.log("ready");
    },
  },
];

/**
 * Bystanders in a room of their own, connected before any attack (an
 * attack may leave no descriptor for a newcomer), each timing its echoes.
 */
class Bystanders {
  #sent: Map<string, number>[] = [];
  #latencies: number[] = [];

  private constructor(readonly sockets: WebSocket[]) {
    this.#sent = sockets.map(() => new Map());
    sockets.forEach((socket, i) => {
      socket.onmessage = (event) => {
        const at = this.#sent[i].get(String(event.data));
        if (at !== undefined) {
          this.#latencies.push(performance.now() - at);
          this.#sent[i].delete(String(event.data));
        }
      };
    });
  }

  static async join(port: number): Promise<Bystanders> {
    return new Bystanders(
      await openMany(
        BYSTANDERS,
        (i) => `ws://127.0.0.1:${port}/quiet?name=b${i}`,
      ),
    );
  }

  /** Sends for `seconds`; each echo's latency in ms (a lost one counts as 1 s). */
  async measure(seconds: number): Promise<number[]> {
    this.#latencies = [];
    const end = performance.now() + seconds * 1000;
    for (let n = 0; performance.now() < end; n++) {
      this.sockets.forEach((socket, i) => {
        const text = `${n} ${i}`;
        this.#sent[i].set(`b${i}: ${text}`, performance.now());
        socket.send(text);
      });
      await sleep(BYSTANDER_INTERVAL_MS);
    }
    // Whatever is still unanswered after a grace second counts as that second.
    await sleep(1000);
    const latencies = this.#latencies;
    for (const pending of this.#sent) {
      latencies.push(...Array(pending.size).fill(1000));
      pending.clear();
    }
    return latencies;
  }

  close(): void {
    for (const socket of this.sockets) socket.close();
  }
}

function percentile(values: number[], p: number): number {
  const sorted = values.toSorted((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ??
    NaN;
}

/** Can a new client join (get its welcome) within `ms`? Its time, or null. */
let newcomers = 0;
async function joinTime(port: number, ms: number): Promise<number | null> {
  const t0 = performance.now();
  const socket = new WebSocket(
    `ws://127.0.0.1:${port}/late?name=n${newcomers++}`,
  );
  const welcomed = new Promise<boolean>((resolve) => {
    socket.onmessage = () => resolve(true);
    socket.onerror = () => resolve(false);
    socket.onclose = () => resolve(false);
  });
  const timer = sleep(ms).then(() => false);
  const ok = await Promise.race([welcomed, timer]);
  const took = performance.now() - t0;
  // One still connecting is dropped when the process exits.
  if (socket.readyState === WebSocket.OPEN) socket.close();
  return ok ? took : null;
}

async function main(wanted: string[]) {
  // The bystanders share the server's core, so that the attacker's own work
  // (on core 1) is not counted against the server.
  if (HAVE_TASKSET) {
    await new Deno.Command("taskset", {
      args: ["-a", "-p", "-c", "0", String(Deno.pid)],
      stdout: "null",
    }).output();
  }
  const port = freePort();
  const server = pinnedCommand(0, [
    Deno.execPath(),
    "run",
    "--allow-net",
    "--allow-read",
    `${ROOT}main.ts`,
    "server",
    "--port",
    String(port),
    "--max-clients-per-ip",
    "10000",
  ], { env: SERVER_TASK_ENV, stdout: "piped", stderr: "null" }).spawn();
  const drained = server.stdout.pipeTo(new WritableStream());
  await waitForPort(port);
  console.log(
    `# deno task bench attacks: ${new Date().toISOString().slice(0, 10)}, ` +
      `${navigator.hardwareConcurrency} cores, Deno ${Deno.version.deno}, ` +
      (HAVE_TASKSET
        ? "server and bystanders on core 0, attacker on core 1"
        : "no taskset: not pinned"),
  );
  console.log(
    `\nBystanders: ${BYSTANDERS} clients in a room of their own, each sending ` +
      `${
        Math.round(1000 / BYSTANDER_INTERVAL_MS)
      } messages/s, ${WINDOW_SECONDS} s per row. ` +
      `Server: default flags but --max-clients-per-ip 10000.\n`,
  );
  console.log(
    "| run | bystanders' p50 | p99 | p99 vs quiet | goal (< 3x) | server CPU | server RSS | a new client joins |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
  const bystanders = await Bystanders.join(port);
  // Once unmeasured, so that the quiet row is not the server's (or the
  // bystanders') first, compiled-on-the-fly run.
  await bystanders.measure(WINDOW_SECONDS);
  let quiet = NaN;
  const row = async (title: string, attacker?: Deno.ChildProcess) => {
    const cpu0 = cpuSeconds(server.pid);
    const t0 = performance.now();
    const joined = await joinTime(port, 1000);
    const latencies = await bystanders.measure(WINDOW_SECONDS);
    const cpu = (cpuSeconds(server.pid) - cpu0) /
      ((performance.now() - t0) / 1000);
    const p99 = percentile(latencies, 0.99);
    if (!attacker) quiet = Number.isNaN(quiet) ? p99 : quiet;
    const ratio = p99 / quiet;
    console.log(
      `| ${title} | ${percentile(latencies, 0.5).toFixed(2)} ms | ${
        p99.toFixed(2)
      } ms | ${attacker ? `${ratio.toFixed(2)}x` : "–"} | ${
        attacker ? (ratio < GOAL ? "met" : "missed") : "–"
      } | ${(cpu * 100).toFixed(0)}% | ${
        (rssBytes(server.pid) / 2 ** 20).toFixed(0)
      } MiB | ${joined === null ? "no (1 s)" : `${joined.toFixed(0)} ms`} |`,
    );
  };
  try {
    await row("quiet");
    for (const attack of ATTACKS) {
      if (wanted.length > 0 && !wanted.includes(attack.key)) continue;
      const child = pinnedCommand(
        1,
        [
          Deno.execPath(),
          "run",
          "-A",
          SELF,
          "attacker",
          attack.key,
          String(port),
        ],
        { stdout: "piped", stderr: "inherit" },
      ).spawn();
      const lines = child.stdout.pipeThrough(new TextDecoderStream())
        .getReader();
      let head = "";
      while (!head.includes("ready\n")) {
        const { value, done } = await lines.read();
        if (done) break;
        head += value;
      }
      const opened = /opened (\d+)/.exec(head)?.[1];
      await row(
        opened ? `${attack.title} (${opened} opened)` : attack.title,
        child,
      );
      child.kill("SIGKILL");
      await child.status;
      lines.releaseLock();
      await child.stdout.cancel().catch(() => {});
      // After the attack: how long until a newcomer is welcomed again.
      const t0 = performance.now();
      let after: number | null = null;
      while (after === null && performance.now() - t0 < 10_000) {
        after = await joinTime(port, 1000);
      }
      console.log(
        `|   after it stops | | | | | | | ${
          after === null ? "no (10 s)" : `${(performance.now() - t0).toFixed(0)} ms`
        } |`,
      );
    }
    await row("quiet again");
  } catch (error) {
    console.log(`failed: ${errorText(error)}`);
  } finally {
    bystanders.close();
    server.kill("SIGKILL");
    await server.status;
    await drained.catch(() => {});
  }
}

/** Runs the attacks named in `wanted` (every one when empty). */
export { main as attacks };

if (import.meta.main) {
  if (Deno.args[0] === "attacker") {
    const attack = ATTACKS.find((a) => a.key === Deno.args[1])!;
    // Until killed, whatever happens to its own sockets.
    setInterval(() => {}, 60_000);
    await attack.run(Number(Deno.args[2])).catch(() => {});
  } else {
    await main(Deno.args);
    Deno.exit(0);
  }
}

/**
 * `deno task bench`: runs the same scenarios against the chat server, the
 * baseline (bench/baseline.ts), and, where the npm registry is reachable, a
 * node `ws` server and a Bun pub/sub server, and prints one table with
 * ratios to the baseline and each side's CPU. The server runs on core 0 and
 * the load generator on core 1 (with `taskset`, where it exists).
 *
 *   deno task bench            # every scenario
 *   deno task bench closed100  # only the named scenarios
 *   deno task bench attacks    # hostile clients against bystanders (bench/attacks.ts)
 */

import { errorText } from "../lib/errors.ts";
import { CLOSED_LOOP_WARMUP_MS, HANDSHAKES_IN_FLIGHT, LOAD_DEFAULTS } from "./load.ts";
import {
  cpuSeconds,
  freePort,
  HAVE_TASKSET,
  pinnedCommand,
  redisServerArgs,
  rssBytes,
  SERVER_TASK_ENV,
  waitForPort,
} from "../tests/proc.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const BENCH = `${ROOT}bench/`;
const haveRedis = await run(["sh", "-c", "command -v redis-server"]).then((r) => r.ok);

interface Server {
  name: string;
  /** Command line, given the port (and the Redis URL, for a server with `redis`). */
  command: (port: number, redis?: string) => string[];
  /** Runs on a fresh redis-server of its own, pinned to the server's core. */
  redis?: boolean;
  /** The generator offers chat.batch. */
  batch?: boolean;
  /** The server relays raw text (the generator adds "sNN: " itself). */
  relay?: boolean;
  /** The scenarios it runs in, by key; every one when not given. */
  only?: string[];
}

interface Scenario {
  key: string;
  title: string;
  /** What the scenario is judged by: deliveries/s, p99, or RSS per connection. */
  headline: keyof typeof HEADLINES;
  /** Runs per server; the median stands (for numbers that vary run to run). */
  repeat?: number;
  /** What the server's CPU is counted per: a delivered message (the default) or a connect. */
  per?: "connect";
  load: Record<string, unknown>;
  /** Which numbers to report. */
  report: (r: Record<string, number>, extra: Record<string, number>) => string;
}

/** Where `--store` rows keep their SQLite files (one per run, by port). */
const STORE_DIR = Deno.makeTempDirSync({ prefix: "chat-bench-" });
globalThis.addEventListener(
  "unload",
  () => Deno.removeSync(STORE_DIR, { recursive: true }),
);

const chat = (extra: string[] = []) => (port: number, redis?: string) => [
  Deno.execPath(),
  "run",
  "--allow-net",
  "--allow-read",
  `--allow-write=${STORE_DIR}`,
  `${ROOT}main.ts`,
  "server",
  "--port",
  String(port),
  "--rate-limit",
  "0",
  "--max-clients",
  "100000",
  // The load comes from one address and fans out wide: the per-address
  // cap and the byte rate are raised like the message rate.
  "--max-clients-per-ip",
  "100000",
  "--rate-bytes",
  "0",
  ...(redis ? ["--redis", redis] : []),
  ...extra,
];

/** bench/baseline.ts on the port, with `extra` arguments. */
const baseline = (extra: string[] = []) => (port: number) => [
  Deno.execPath(),
  "run",
  "--allow-net",
  `${BENCH}baseline.ts`,
  String(port),
  ...extra,
];

async function run(cmd: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const out = await new Deno.Command(cmd[0], {
      args: cmd.slice(1),
      stdout: "piped",
      stderr: "piped",
    })
      .output();
    return { ok: out.success, out: new TextDecoder().decode(out.stdout) };
  } catch {
    return { ok: false, out: "" };
  }
}

/** Installs ws and Bun from the npm registry into bench/ (pinned in bench/package.json). */
async function installPeers(): Promise<{ ws: boolean; bun: boolean }> {
  const exists = (path: string) => Deno.stat(path).then(() => true, () => false);
  if (
    !await exists(`${BENCH}node_modules/ws`) ||
    !await exists(`${BENCH}node_modules/.bin/bun`)
  ) {
    console.error(
      "installing ws and bun into bench/ from the npm registry ...",
    );
    await run([
      "npm",
      "install",
      "--prefix",
      BENCH,
      "--no-audit",
      "--no-fund",
      "--silent",
    ]);
  }
  return {
    ws: await exists(`${BENCH}node_modules/ws`) &&
      (await run(["node", "--version"])).ok,
    bun: (await run([`${BENCH}node_modules/.bin/bun`, "--version"])).ok,
  };
}

function pinned(core: number, cmd: string[]): string[] {
  return HAVE_TASKSET ? ["taskset", "-c", String(core), ...cmd] : cmd;
}

/** Starts a redis-server on a free port, on the server's core, without persistence. */
async function startRedis() {
  const port = freePort();
  const [command, ...args] = pinned(0, [
    "redis-server",
    ...redisServerArgs(port),
  ]);
  const child = new Deno.Command(command, {
    args,
    stdout: "null",
    stderr: "null",
  }).spawn();
  await waitForPort(port);
  return {
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      child.kill("SIGKILL");
      await child.status;
    },
  };
}

/** Starts a server and waits until it accepts connections. */
async function startServer(server: Server, redis?: string) {
  const port = freePort();
  const child = pinnedCommand(0, server.command(port, redis), {
    env: SERVER_TASK_ENV,
    stdout: "piped",
    stderr: "null",
  }).spawn();
  // Drain what it logs, as a terminal or a log collector would.
  const drained = child.stdout.pipeTo(new WritableStream());
  await waitForPort(port);
  return {
    port,
    pid: child.pid,
    async stop() {
      try {
        child.kill("SIGKILL");
      } catch {
        // Gone already.
      }
      await child.status;
      await drained.catch(() => {});
    },
  };
}

/** The C closed-loop generator, built from bench/load.c when a C compiler is there. */
const C_LOAD = `${BENCH}.build/load`;
const haveCLoad = await (async () => {
  await Deno.mkdir(`${BENCH}.build`, { recursive: true });
  return (await run(["cc", "-O2", "-o", C_LOAD, `${BENCH}load.c`])).ok;
})();

/** The generator's command: the C one for the closed loop when built, else load.ts. */
function loadCommand(options: Record<string, unknown>): string[] {
  if (!haveCLoad || options.scenario !== "closed") {
    return [Deno.execPath(), "run", "-A", `${BENCH}load.ts`, JSON.stringify(options)];
  }
  const o = options as Record<string, number | boolean>;
  return [
    C_LOAD,
    ...[o.port, o.clients, o.senders, o.batch ? 1 : 0, o.seconds, o.window, o.size]
      .map(String),
    o.relay ? "1" : "0",
    String(o.serverPid ?? 0),
    String(CLOSED_LOOP_WARMUP_MS),
  ];
}

async function load(
  options: Record<string, unknown>,
  onLine?: (line: string) => void,
) {
  const child = pinnedCommand(1, loadCommand({ ...LOAD_DEFAULTS, ...options }), {
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const writer = child.stdin.getWriter();
  let last = "";
  let buffered = "";
  for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      last = line;
      if (onLine && line.includes('"connected"')) {
        onLine(line);
        await writer.write(new TextEncoder().encode("go\n"));
      }
    }
  }
  await writer.close().catch(() => {});
  await child.status;
  return { pid: child.pid, result: JSON.parse(last) as Record<string, number> };
}

const ms = (n: number) => Number.isFinite(n) ? `${n.toFixed(2)} ms` : "–";
const rate = (n: number) =>
  n >= 1e6
    ? `${(n / 1e6).toFixed(2)}M`
    : n >= 1e4
    ? `${(n / 1e3).toFixed(0)}k`
    : n >= 1e3
    ? `${(n / 1e3).toFixed(1)}k`
    : n.toFixed(0);

/** The middle of `sorted` (the lower middle of an even count). */
function median<T>(sorted: T[]): T {
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

/** A number a scenario can be judged by. */
interface Headline {
  /** Its column's name. */
  column: string;
  /** It, from a run's result and extra numbers. */
  of: (result: Record<string, number>, extra: Record<string, number>) => number;
  /** How it reads in a table. */
  text: (n: number) => string;
}

const HEADLINES: Record<"rate" | "p99" | "rss", Headline> = {
  rate: {
    column: "deliveries/s",
    of: (result) => result.deliveriesPerSecond,
    text: (n) => `${rate(n)}/s`,
  },
  p99: { column: "p99", of: (result) => result.p99, text: ms },
  rss: {
    column: "RSS per connection",
    of: (_result, extra) => extra.rssPerConnection,
    text: (n) => `${(n / 1024).toFixed(1)} KiB`,
  },
};

/** The row every ratio is to. */
const BASELINE = "baseline (Set + send)";

/** A generator using this share of its core or more may be what limits a row. */
const GENERATOR_BOUND = 0.85;

const SCENARIOS: Scenario[] = [
  {
    key: "closed100",
    title: "100 clients, 10 senders, 50 in flight each, closed loop",
    headline: "rate",
    load: {
      scenario: "closed",
      clients: 100,
      senders: 10,
      window: 50,
      seconds: 5,
    },
    report: (r) => `${rate(r.deliveriesPerSecond)}/s, p50 ${ms(r.p50)}, p99 ${ms(r.p99)}`,
  },
  {
    key: "closed1000",
    title: "1000 clients, 10 senders, 50 in flight each, closed loop",
    headline: "rate",
    load: {
      scenario: "closed",
      clients: 1000,
      senders: 10,
      window: 50,
      seconds: 5,
    },
    report: (r) => `${rate(r.deliveriesPerSecond)}/s, p50 ${ms(r.p50)}, p99 ${ms(r.p99)}`,
  },
  {
    key: "few100",
    title: "100 clients, 10 senders, 8 in flight each, closed loop",
    headline: "rate",
    load: {
      scenario: "closed",
      clients: 100,
      senders: 10,
      window: 8,
      seconds: 5,
    },
    report: (r) => `${rate(r.deliveriesPerSecond)}/s, p50 ${ms(r.p50)}, p99 ${ms(r.p99)}`,
  },
  {
    key: "few1000",
    title: "1000 clients, 10 senders, 4 in flight each, closed loop",
    headline: "rate",
    load: {
      scenario: "closed",
      clients: 1000,
      senders: 10,
      window: 4,
      seconds: 5,
    },
    report: (r) => `${rate(r.deliveriesPerSecond)}/s, p50 ${ms(r.p50)}, p99 ${ms(r.p99)}`,
  },
  {
    key: "open",
    title: "open loop, 50,000 deliveries/s, 100 clients, 10 s",
    headline: "p99",
    repeat: 3,
    load: {
      scenario: "open",
      clients: 100,
      senders: 10,
      rate: 50_000,
      seconds: 10,
    },
    report: (r) =>
      `p50 ${ms(r.p50)}, p99 ${ms(r.p99)}, p99.9 ${ms(r.p999)}, loss ${
        (r.loss * 100).toFixed(2)
      }%`,
  },
  {
    key: "idle",
    title:
      `10,000 idle connections, ${HANDSHAKES_IN_FLIGHT} handshakes in flight at most`,
    headline: "rss",
    per: "connect",
    load: { scenario: "idle", clients: 10_000, senders: 1 },
    report: (r, extra) =>
      `${rate(r.connectPerSecond)} connects/s, ${
        (extra.rssPerConnection / 1024).toFixed(1)
      } KiB RSS each, broadcast to all ${ms(r.broadcastMs)} (${r.reached} reached)`,
  },
  {
    key: "stalled",
    title: "one never-reading client, 4 KiB messages, open loop 10 s",
    headline: "p99",
    repeat: 3,
    load: {
      scenario: "open",
      clients: 100,
      senders: 10,
      rate: 50_000,
      size: 4096,
      seconds: 10,
      stalled: true,
    },
    report: (r, extra) =>
      `others' p99 ${ms(r.p99)}, loss ${(r.loss * 100).toFixed(2)}%, server RSS +${
        (extra.rssGrowth / 2 ** 20).toFixed(1)
      } MiB, +${(extra.lateGrowth / 2 ** 20).toFixed(1)} MiB of it in the second half`,
  },
];

interface Measurement {
  result: Record<string, number>;
  extra: Record<string, number>;
  serverCpu: number;
  generatorCpu: number;
  /** The number the scenario is judged by. */
  headline: number;
}

/** One run of a scenario against a fresh server; a string says why it failed. */
async function measure(
  server: Server,
  scenario: Scenario,
): Promise<Measurement | string> {
  const redis = server.redis ? await startRedis() : undefined;
  let started: Awaited<ReturnType<typeof startServer>>;
  try {
    started = await startServer(server, redis?.url);
  } catch (error) {
    await redis?.stop();
    return `did not start: ${errorText(error)}`;
  }
  const cpu0 = cpuSeconds(started.pid);
  const rss0 = rssBytes(started.pid);
  const extra: Record<string, number> = {};
  const t0 = performance.now();
  // Server RSS every half second, to tell flat from rising.
  const samples: [number, number][] = [];
  const sampler = setInterval(() => {
    samples.push([performance.now() - t0, rssBytes(started.pid)]);
  }, 500);
  try {
    const { result } = await load(
      {
        ...scenario.load,
        port: started.port,
        serverPid: started.pid,
        batch: !!server.batch,
        relay: !!server.relay,
      },
      (line) => {
        const { connected } = JSON.parse(line);
        extra.rssPerConnection = (rssBytes(started.pid) - rss0) / connected;
      },
    );
    extra.rssGrowth = rssBytes(started.pid) - rss0;
    // Growth over the run's second half, once the working set is built.
    const half = samples.find(([t]) => t >= (performance.now() - t0) / 2);
    extra.lateGrowth = half ? samples.at(-1)![1] - half[1] : NaN;
    const seconds = (performance.now() - t0) / 1000;
    const serverCpu = (cpuSeconds(started.pid) - cpu0) / seconds;
    return {
      result,
      extra,
      serverCpu,
      generatorCpu: result.generatorCpu,
      headline: HEADLINES[scenario.headline].of(result, extra),
    };
  } catch (error) {
    return errorText(error);
  } finally {
    clearInterval(sampler);
    await started.stop();
    await redis?.stop();
  }
}

if (import.meta.main && Deno.args[0] === "attacks") {
  const { attacks } = await import("./attacks.ts");
  await attacks(Deno.args.slice(1));
  Deno.exit(0);
}

if (import.meta.main) {
  // Arguments name scenarios (closed100, ...), servers (server=TEXT) or
  // how many runs each server gets per scenario (runs=N).
  const options = Deno.args.filter((a) => /^(server|runs)=/.test(a));
  const wanted = new Set(Deno.args.filter((a) => !options.includes(a)));
  const serverFilter = options.filter((a) => a.startsWith("server=")).map((
    a,
  ) => a.slice(7));
  const runsArg = options.findLast((a) => a.startsWith("runs="))?.slice(5);
  const runsEach = runsArg === undefined ? undefined : Number(runsArg);
  if (runsEach !== undefined && !(Number.isInteger(runsEach) && runsEach > 0)) {
    console.error(`bench: runs=${runsArg} is not a whole number of runs (try runs=3)`);
    Deno.exit(2);
  }
  const unknown = [...wanted].filter((key) => !SCENARIOS.some((s) => s.key === key));
  if (unknown.length > 0) {
    console.error(
      `bench: no scenario ${unknown.join(", ")} (scenarios: ${
        SCENARIOS.map((s) => s.key).join(" ")
      }; or attacks, server=TEXT, runs=N)`,
    );
    Deno.exit(2);
  }
  const scenarios = SCENARIOS.filter((s) => wanted.size === 0 || wanted.has(s.key));
  const peers = await installPeers();
  const servers: Server[] = [
    { name: BASELINE, command: baseline(), relay: true },
    {
      // What a chat must send per connect (welcome, join notices), and no more.
      name: "baseline + welcome and join notices",
      command: baseline(["--announce"]),
      relay: true,
      only: ["idle"],
    },
    { name: "chat, plain clients", command: chat(["--quiet"]) },
    {
      name: "chat, chat.batch clients",
      command: chat(["--quiet"]),
      batch: true,
    },
    {
      name: "chat, plain, logging on",
      command: chat(),
      only: ["closed100", "idle"],
    },
    {
      // What announcing joins costs a connect, beside the row above it.
      name: "chat, plain, --presence-limit 0",
      command: chat(["--quiet", "--presence-limit", "0"]),
      only: ["idle"],
    },
    {
      name: "chat --store, plain clients",
      command: (port) => chat(["--quiet", "--store", `${STORE_DIR}/${port}.db`])(port),
    },
    {
      name: "chat --store, chat.batch clients",
      command: (port) => chat(["--quiet", "--store", `${STORE_DIR}/${port}.db`])(port),
      batch: true,
    },
    ...(haveRedis
      ? [
        {
          name: "chat --redis, plain clients",
          command: chat(["--quiet"]),
          redis: true,
        },
        {
          name: "chat --redis, chat.batch clients",
          command: chat(["--quiet"]),
          batch: true,
          redis: true,
        },
      ]
      : []),
    ...(peers.ws
      ? [{
        name: "node ws",
        command: (
          port: number,
        ) => ["node", `${BENCH}ws_server.mjs`, String(port)],
        relay: true,
      }]
      : []),
    ...(peers.bun
      ? [{
        name: "Bun pub/sub",
        command: (
          port: number,
        ) => [
          `${BENCH}node_modules/.bin/bun`,
          `${BENCH}bun_server.ts`,
          String(port),
        ],
        relay: true,
      }]
      : []),
  ];
  if (serverFilter.length > 0) {
    const keep = servers.filter((s) =>
      s.name.startsWith("baseline") ||
      serverFilter.some((f) => s.name.includes(f))
    );
    servers.splice(0, servers.length, ...keep);
  }
  console.log(
    `# deno task bench: ${
      new Date().toISOString().slice(0, 10)
    }, ${Deno.build.os}/${Deno.build.arch}, ` +
      `${navigator.hardwareConcurrency} cores, Deno ${Deno.version.deno}, ` +
      (HAVE_TASKSET ? "server on core 0, generator on core 1" : "no taskset: not pinned"),
  );
  console.log(
    haveCLoad
      ? "(closed-loop rows: the C generator, bench/load.c; the others: bench/load.ts)"
      : "(no C compiler: every row uses bench/load.ts)",
  );
  if (!peers.ws) console.log("(node ws: not installed, skipped)");
  if (!peers.bun) console.log("(Bun: not installed, skipped)");
  if (!haveRedis) {
    console.log("(redis-server: not installed, --redis rows skipped)");
  }
  for (const scenario of scenarios) {
    const rounds = runsEach ?? scenario.repeat ?? 1;
    const ofRuns = rounds > 1 ? `, median of ${rounds} runs` : "";
    console.log(`\n## ${scenario.title}${ofRuns}\n`);
    const headline = HEADLINES[scenario.headline];
    const per = scenario.per ?? "delivery";
    console.log(
      `| server | result | ${headline.column} vs baseline | server CPU | server µs per ${per} | generator CPU |`,
    );
    console.log("| --- | --- | --- | --- | --- | --- |");
    const taking = servers.filter((server) =>
      !server.only || server.only.includes(scenario.key)
    );
    // Repeated runs go round the servers in turn, so drift hits all alike;
    // each round's run is kept in its place (undefined when it failed).
    const runs = new Map<Server, (Measurement | undefined)[]>(
      taking.map((server) => [server, []]),
    );
    for (let round = 0; round < rounds; round++) {
      for (const server of taking) {
        const measured = await measure(server, scenario);
        if (typeof measured === "string") {
          console.log(`| ${server.name} | failed: ${measured} | | | | |`);
        }
        runs.get(server)!.push(typeof measured === "string" ? undefined : measured);
      }
    }
    const baselineRuns = [...runs].find(([server]) => server.name === BASELINE)?.[1] ??
      [];
    for (const [server, byRound] of runs) {
      const measurements = byRound.filter((m) => m !== undefined);
      if (measurements.length === 0) continue;
      // The median run by the headline number stands for the server.
      const sorted = measurements.toSorted((x, y) => x.headline - y.headline);
      const m = median(sorted);
      // The ratio is each round's to the baseline's run of the same round,
      // the median of those: a slow stretch of the machine moves both.
      const ratios = byRound.flatMap((run, round) => {
        const base = baselineRuns[round]?.headline;
        return run && base && run.headline ? [run.headline / base] : [];
      }).sort((x, y) => x - y);
      const ratio = ratios.length === 0
        ? "–"
        : ratios[0] === ratios.at(-1)
        ? `${ratios[0].toFixed(2)}x`
        : `${median(ratios).toFixed(2)}x (${ratios[0].toFixed(2)}–${
          ratios.at(-1)!.toFixed(2)
        })`;
      // A generator near a full core may be what limits the result: such a
      // row is to be compared on server µs per delivery (or connect), not on its rate.
      const bound = m.generatorCpu >= GENERATOR_BOUND ? " (generator-bound)" : "";
      // Every run's number, so the spread shows beside the median.
      const of = measurements.length > 1
        ? ` (median of ${measurements.length}: ${
          sorted.map((run) => headline.text(run.headline)).join(", ")
        })`
        : "";
      const cpuPer = per === "connect" ? m.result.cpuPerConnect : m.result.cpuPerDelivery;
      console.log(
        `| ${server.name} | ${
          scenario.report(m.result, m.extra)
        }${bound}${of} | ${ratio} | ${(m.serverCpu * 100).toFixed(0)}% | ${
          Number.isFinite(cpuPer) ? cpuPer.toFixed(per === "connect" ? 0 : 3) : "–"
        } | ${
          Number.isFinite(m.generatorCpu) ? `${(m.generatorCpu * 100).toFixed(0)}%` : "–"
        } |`,
      );
    }
  }
}

/** What the benchmark tools read about processes and ports (Linux). */

const CLK_TCK = 100;

/** CPU time used so far by a process (`"self"` for this one), in seconds. */
export function cpuTimes(
  pid: number | "self",
): { user: number; system: number } {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return {
      user: Number(fields[11]) / CLK_TCK,
      system: Number(fields[12]) / CLK_TCK,
    };
  } catch {
    return { user: NaN, system: NaN };
  }
}

/** User plus system CPU time of a process, in seconds. */
export function cpuSeconds(pid: number | "self"): number {
  const { user, system } = cpuTimes(pid);
  return user + system;
}

/** The resident memory of a process, in bytes. */
export function rssBytes(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    return Number(status.match(/VmRSS:\s+(\d+) kB/)![1]) * 1024;
  } catch {
    return NaN;
  }
}

/** A loopback port nothing listens on now. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** Waits (10 s at most) until something accepts connections on `port`. */
export async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  throw new Error(`nothing listens on port ${port}`);
}

/** `redis-server` arguments for a throwaway server on loopback `port`, without persistence. */
export function redisServerArgs(port: number): string[] {
  return [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
  ];
}

/** `taskset` exists here: benchmark processes can be pinned to cores. */
export const HAVE_TASKSET = ["/usr/bin/taskset", "/bin/taskset"].some(
  (path) => {
    try {
      return Deno.statSync(path).isFile;
    } catch {
      return false;
    }
  },
);

/**
 * `cmd` as a command pinned to `core` (where `taskset` exists), with a
 * descriptor limit of 20,000 for the thousands of connections a benchmark
 * opens.
 */
export function pinnedCommand(
  core: number,
  cmd: string[],
  options: Omit<Deno.CommandOptions, "args"> = {},
): Deno.Command {
  const pinned = HAVE_TASKSET ? ["taskset", "-c", String(core), ...cmd] : cmd;
  return new Deno.Command("bash", {
    ...options,
    args: ["-c", 'ulimit -n 20000; exec "$@"', "--", ...pinned],
  });
}

/**
 * The environment `deno task server` sets (the `NAME=VALUE` words that
 * start the task in deno.json): the benchmarks run every server with it,
 * so that they measure the server as the task runs it, and each alike.
 */
export const SERVER_TASK_ENV: Record<string, string> = (() => {
  const config = JSON.parse(
    Deno.readTextFileSync(new URL("../deno.json", import.meta.url)),
  );
  const env: Record<string, string> = {};
  for (const word of String(config.tasks.server).split(" ")) {
    const assignment = word.match(/^([A-Z_][A-Z0-9_]*)=(.*)$/);
    if (!assignment) break;
    env[assignment[1]] = assignment[2];
  }
  return env;
})();

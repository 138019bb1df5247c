/**
 * `deno task profile`: runs the chat server under V8's CPU profiler while
 * the load generator drives one closed-loop scenario, then prints where the
 * server's time went: the top functions by self time, grouped into the
 * server's own code, Deno's WebSocket and HTTP internals, and idle time.
 *
 *   deno task profile            # plain clients
 *   deno task profile batch      # chat.batch clients
 */

import { cpuTimes, freePort, SERVER_TASK_ENV, waitForPort } from "../tests/proc.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const batch = Deno.args.includes("batch");
const dir = await Deno.makeTempDir({ prefix: "chat-profile-" });

const port = freePort();

const server = new Deno.Command(Deno.execPath(), {
  env: SERVER_TASK_ENV,
  args: [
    "run",
    "--allow-net",
    "--allow-read",
    `--cpu-prof`,
    `--cpu-prof-dir=${dir}`,
    `${ROOT}main.ts`,
    "server",
    "--port",
    String(port),
    "--quiet",
    "--rate-limit",
    "0",
  ],
  stdout: "null",
  stderr: "null",
}).spawn();
await waitForPort(port);
const load = await new Deno.Command(Deno.execPath(), {
  args: [
    "run",
    "-A",
    `${ROOT}bench/load.ts`,
    JSON.stringify({
      port,
      scenario: "closed",
      clients: 100,
      senders: 10,
      window: 50,
      seconds: 5,
      batch,
    }),
  ],
  stdout: "piped",
}).output();
console.log(`load: ${new TextDecoder().decode(load.stdout).trim()}`);
// User time is JavaScript and the runtime; system time is the kernel's network work.
const { user, system } = cpuTimes(server.pid);
console.log(
  `server CPU: ${user.toFixed(1)} s user, ${system.toFixed(1)} s system (${
    ((system / (user + system)) * 100).toFixed(0)
  }% in the kernel)`,
);
// SIGINT lets the server shut down and write its profile.
server.kill("SIGINT");
await server.status;

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
const file = [...Deno.readDirSync(dir)].find((e) => e.name.endsWith(".cpuprofile"));
if (!file) throw new Error("no profile written");
const profile = JSON.parse(await Deno.readTextFile(`${dir}/${file.name}`)) as {
  nodes: Node[];
};
const total = profile.nodes.reduce((sum, n) => sum + (n.hitCount ?? 0), 0);
const byFunction = new Map<string, number>();
const byGroup = new Map<string, number>();
for (const node of profile.nodes) {
  const hits = node.hitCount ?? 0;
  if (!hits) continue;
  const { functionName, url, lineNumber } = node.callFrame;
  const name = `${functionName || "(anonymous)"} ${url.split("/").slice(-1)[0]}:${
    lineNumber + 1
  }`;
  byFunction.set(name, (byFunction.get(name) ?? 0) + hits);
  const group = url.startsWith("file://")
    ? "the server's own code"
    : url.includes("websocket")
    ? "Deno's WebSocket (ext:deno_websocket)"
    : url.includes("http") || url.includes("serve")
    ? "Deno's HTTP server (ext:deno_http)"
    : functionName === "(idle)"
    ? "idle"
    : functionName === "(program)" || functionName === "(garbage collector)"
    ? `V8 ${functionName}`
    : "other runtime code";
  byGroup.set(group, (byGroup.get(group) ?? 0) + hits);
}
const pct = (n: number) => `${((n / total) * 100).toFixed(1)}%`;
console.log(
  `\nserver CPU profile, ${batch ? "chat.batch" : "plain"} clients (${total} samples):\n`,
);
for (const [group, hits] of [...byGroup].sort((a, b) => b[1] - a[1])) {
  console.log(`  ${pct(hits).padStart(6)}  ${group}`);
}
console.log("\ntop functions by self time:\n");
for (
  const [name, hits] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, 12)
) {
  console.log(`  ${pct(hits).padStart(6)}  ${name}`);
}
await Deno.remove(dir, { recursive: true });

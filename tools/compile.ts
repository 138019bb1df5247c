/**
 * `deno task compile`: builds the standalone `dist/chat` with `deno
 * compile`, and says in one line what went wrong when it cannot (most
 * often: no network to download Deno's base runtime, `denort`), leaving no
 * empty `dist/` behind.
 *
 * @module
 */

const ROOT = new URL("..", import.meta.url).pathname;
const OUTPUT = "dist/chat";

/** The `deno compile` command line: the permissions the binary runs with. */
export const COMPILE_ARGS = [
  "compile",
  "--allow-net",
  "--allow-read",
  "--output",
  OUTPUT,
  "main.ts",
];

/** One line for a failed `deno compile`, from its error chain. */
export function compileProblem(stderr: string): string {
  // deno-lint-ignore no-control-regex
  const text = stderr.replace(/\x1b\[[0-9;]*m/g, "");
  if (/Setting up base binary/.test(text)) {
    const url = text.match(/https:\/\/\S+denort\S+\.zip/)?.[0] ?? "denort";
    const why = /dns error|failed to lookup/i.test(text)
      ? "host not found"
      : /Connect|connection|timed out/i.test(text)
      ? "no connection"
      : "download failed";
    return `chat compile: cannot get Deno's base runtime ${url} (${why}): run it on a machine with network access, or set DENORT_BIN to a denort binary of Deno ${Deno.version.deno}`;
  }
  const first = text.split("\n").find((line) => line.startsWith("error:")) ??
    text.split("\n").find((line) => line.trim() !== "") ?? "deno compile failed";
  return `chat compile: ${first.replace(/^error: /, "")}`;
}

if (import.meta.main) {
  const dist = `${ROOT}dist`;
  const existed = await Deno.stat(dist).then(() => true, () => false);
  const result = await new Deno.Command(Deno.execPath(), {
    args: COMPILE_ARGS,
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (result.success) {
    console.log(`wrote ${OUTPUT}`);
    Deno.exit(0);
  }
  console.error(compileProblem(new TextDecoder().decode(result.stderr)));
  // What deno compile left: its temporary file, and the folder it made.
  try {
    for await (const entry of Deno.readDir(dist)) {
      if (entry.name.startsWith("chat.tmp-")) await Deno.remove(`${dist}/${entry.name}`);
    }
    // Only if empty: a dist/ that held something stays.
    if (!existed) await Deno.remove(dist);
  } catch {
    // No dist/ at all, or not empty: nothing to tidy.
  }
  Deno.exit(1);
}

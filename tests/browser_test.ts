/**
 * The chat page in real headless Chromium (Debian's `chromium`, driven by
 * `playwright-core`), against the real server, with a terminal client on the
 * other end. Set CHAT_SCREENSHOT=PATH to save the screenshot the README shows.
 */
import assert from "node:assert/strict";
import { type Browser, chromium, type Page } from "playwright-core";
import { Cli, join, startServerProcess, TcpProxy } from "./helpers.ts";
import { recoveryNotice, WELCOME } from "../lib/protocol.ts";
import { mintToken } from "../lib/auth.ts";

const CHROMIUM = "/usr/bin/chromium";
const missing = await Deno.stat(CHROMIUM).then(() => false, () => true);

/** Flags for a headless Chromium in a sandbox with no network but loopback. */
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

async function phone(browser: Browser): Promise<Page> {
  const context = await browser.newContext({
    viewport: { width: 375, height: 667 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
    // The test's probes are evaluated strings, which the page's CSP forbids;
    // without the CSP the hostile-text check also proves the page itself
    // never turns text into HTML.
    bypassCSP: true,
  });
  const page = await context.newPage();
  // An alert would mean peer text ran as HTML.
  page.on("dialog", (dialog) => {
    throw new Error(`a dialog opened: ${dialog.message()}`);
  });
  return page;
}

// Code run in the page is written as strings: it runs in the browser, not here.

/** Waits until `selector`'s text matches. */
async function waitForText(page: Page, selector: string, pattern: RegExp) {
  await page.waitForFunction(
    `new RegExp(${JSON.stringify(pattern.source)}).test(document.querySelector(${
      JSON.stringify(selector)
    })?.textContent ?? "")`,
  );
}

async function focusedId(page: Page): Promise<string> {
  return await page.evaluate(`document.activeElement?.id ?? ""`);
}

Deno.test({
  name: missing
    ? "the chat page in a browser (ignored: /usr/bin/chromium is not installed)"
    : "the chat page: chat with a terminal, presence, hostile text, a phone, reconnecting",
  ignore: missing,
  sanitizeOps: false, // Playwright's pipe to Chromium outlives single ops.
  sanitizeResources: false,
  async fn() {
    const started = await startServerProcess();
    const port = started.port;
    let server = started.cli;
    assert.equal(
      await server.stdout.next(),
      `chat page at http://127.0.0.1:${port}/`,
    );
    const terminal = new Cli([
      "client",
      "--url",
      `ws://127.0.0.1:${port}`,
      "--name",
      "term",
    ]);
    assert.equal(await terminal.chat.next(), WELCOME);
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: CHROMIUM_ARGS,
    });
    try {
      const page = await phone(browser);
      await page.goto(`http://127.0.0.1:${port}/`);
      await page.fill("#name", "web");
      await page.press("#name", "Enter");
      await waitForText(page, "#status", /^connected as web$/);
      assert.equal(await focusedId(page), "text");
      await waitForText(page, "#online", /online \(2\): term, web/);
      assert.equal(
        await terminal.stdout.take((l) => l.startsWith("* ")),
        "* web joined (2 online)",
      );

      // Terminal → page, shown with its sender; the input keeps the focus.
      await terminal.write("hello browser\n");
      await waitForText(page, "#log", /termhello browser/);
      const last = await page.$eval("#log .chat:last-child", (el) => ({
        from: el.querySelector(".from")?.textContent,
        text: el.querySelector(".text")?.textContent,
        time: el.querySelector(".time")?.textContent,
        own: el.classList.contains("own"),
      }));
      assert.match(last.time ?? "", /^\d\d:\d\d$/);
      assert.deepEqual({ ...last, time: "" }, {
        from: "term",
        text: "hello browser",
        time: "",
        own: false,
      });
      assert.equal(await focusedId(page), "text");

      // Page → terminal, sent on Enter.
      await page.fill("#text", "hello terminal");
      await page.press("#text", "Enter");
      assert.equal(
        await terminal.chat.take((l) => l.startsWith("web: ")),
        "web: hello terminal",
      );
      assert.equal(await page.inputValue("#text"), "");
      assert.equal(await focusedId(page), "text");
      // Your own message looks different from the others'.
      await waitForText(page, "#log", /webhello terminal/);
      assert.equal(
        await page.$eval(
          "#log .chat:last-child",
          (el) => el.classList.contains("own"),
        ),
        true,
      );

      // Hostile text is shown literally, never run.
      const hostile = "<img src=x onerror=alert(1)>";
      await terminal.write(`${hostile}\n`);
      await waitForText(page, "#log", /onerror=alert/);
      assert.equal(
        await page.$eval(
          "#log .chat:last-child",
          (el) => el.querySelector(".text")?.textContent,
        ),
        hostile,
      );
      assert.equal(await page.$$eval("#log img", (images) => images.length), 0);

      // 15: a message's own newline stays in its box, marked, and cannot pose
      // as another sender's line; a right-to-left override stays inside it.
      const mallory = await join(`ws://127.0.0.1:${port}`, "mallory");
      const before = await page.$$eval("#log .chat", (lines) => lines.length);
      mallory.send("see you\nterm: send me your password");
      await waitForText(page, "#log", /send me your password/);
      mallory.send("file \u202Egnp.exe ok");
      await waitForText(page, "#log", /gnp\.exe ok/);
      const shown: {
        lines: number;
        from: string[];
        marks: number;
        tags: string[];
      } = await page.evaluate(`(() => {
          const lines = [...document.querySelectorAll("#log .chat")].slice(${before});
          return {
            lines: lines.length,
            from: lines.map((l) => l.querySelector(".from")?.textContent ?? ""),
            marks: lines[0].querySelectorAll(".newline").length,
            tags: lines.map((l) => l.querySelector(".text")?.tagName ?? ""),
          };
        })()`);
      assert.deepEqual(shown, {
        lines: 2,
        from: ["mallory", "mallory"],
        marks: 1,
        tags: ["BDI", "BDI"],
      });
      await mallory.close();

      const screenshot = Deno.env.get("CHAT_SCREENSHOT");
      const png = await page.screenshot({ path: screenshot || undefined });
      assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]); // "PNG"

      // A phone: long words wrap, nothing scrolls sideways, the input stays in view.
      await terminal.write(`${"w".repeat(300)}\n`);
      for (let i = 0; i < 30; i++) await terminal.write(`filler ${i}\n`);
      await waitForText(page, "#log", /filler 29/);
      const fit: {
        scrollWidth: number;
        width: number;
        input: number;
        height: number;
      } = await page.evaluate(`({
          scrollWidth: document.documentElement.scrollWidth,
          width: document.documentElement.clientWidth,
          input: document.getElementById("text").getBoundingClientRect().bottom,
          height: innerHeight,
        })`);
      assert.ok(
        fit.scrollWidth <= fit.width,
        `page is ${fit.scrollWidth}px wide`,
      );
      assert.ok(
        fit.input <= fit.height,
        `input bottom at ${fit.input} of ${fit.height}`,
      );
      // A name already in the room, on first join: ask for another. An invalid
      // one gets the page's own words, not the browser's.
      const second = await phone(browser);
      await second.goto(`http://127.0.0.1:${port}/`);
      await second.fill("#name", "no spaces");
      await second.press("#name", "Enter");
      await waitForText(second, "#join-error", /^Use 1 to 32 ASCII letters/);
      await second.fill("#name", "term");
      await second.press("#name", "Enter");
      await waitForText(second, "#join-error", /taken/);
      assert.equal(await second.isVisible("#join"), true);

      // The server restarts: the page says so, then reconnects by itself.
      server.kill("SIGTERM");
      await server.finished();
      await terminal.finished();
      await waitForText(page, "#status", /reconnecting/);
      assert.match(
        await page.textContent("#log") ?? "",
        /disconnected \(1001 server shutting down\)/,
      );
      server = new Cli(["server", "--port", String(port)]);
      assert.equal(
        await server.stdout.next(),
        `listening on ws://127.0.0.1:${port}`,
      );
      await waitForText(page, "#status", /^connected as web$/);
      // A restart without --store lost the room's history: the page says so.
      await waitForText(page, "#log .missed", /^some messages could not be recovered/);
      assert.equal(
        await page.textContent("#log .missed .text"),
        recoveryNotice(null).slice(2),
      );
      const again = new Cli([
        "client",
        "--url",
        `ws://127.0.0.1:${port}`,
        "--name",
        "term2",
      ]);
      assert.equal(await again.chat.next(), WELCOME);
      await waitForText(page, "#online", /term2/);
      await page.fill("#text", "back again");
      await page.press("#text", "Enter");
      assert.equal(await again.chat.next(), "web: back again");
      // The welcome was shown once, not again on the reconnect.
      assert.equal(
        await page.$$eval(
          "#log .notice .text",
          (lines, welcome) => lines.filter((l) => l.textContent === welcome).length,
          WELCOME,
        ),
        1,
      );
      await again.finished();
    } finally {
      await browser.close();
      await server.stop();
    }
  },
});

Deno.test({
  name: missing
    ? "the chat page with a token (ignored: /usr/bin/chromium is not installed)"
    : "the chat page with a token: #token= names the user; none, or an expired one, is said plainly",
  ignore: missing,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "chat-page-auth-" });
    const secretFile = `${dir}/secret`;
    await Deno.writeTextFile(secretFile, "p".repeat(40));
    const secret = new TextEncoder().encode("p".repeat(40));
    const started = await startServerProcess(["--auth-secret", secretFile]);
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: CHROMIUM_ARGS,
    });
    try {
      const http = started.url.replace("ws:", "http:");
      // With a token: no name box, straight in under the token's name.
      const page = await phone(browser);
      const alice = await mintToken({ name: "alice", ttlSeconds: 3 }, secret);
      await page.goto(`${http}/#token=${alice}`);
      await waitForText(page, "#status", /^connected as alice$/);
      assert.equal(await page.isVisible("#join"), false);
      await page.fill("#text", "hello with a token");
      await page.press("#text", "Enter");
      await waitForText(page, "#log", /alicehello with a token/);
      // It expires (3 s): the page says so and stops.
      await waitForText(page, "#status", /token expired/);
      // Without a token: the page says what is needed instead of retrying.
      const stranger = await phone(browser);
      await stranger.goto(`${http}/`);
      await stranger.fill("#name", "mallory");
      await stranger.press("#name", "Enter");
      await waitForText(
        stranger,
        "#join-error",
        /needs an invitation link.*token missing/,
      );
      assert.ok(!started.cli.stdoutLines.some((line) => line.includes(alice)));
    } finally {
      await browser.close();
      await started.cli.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: missing
    ? "the chat page resumes in a browser (ignored: /usr/bin/chromium is not installed)"
    : "the chat page, cut off and back, shows what it missed once and sends what was typed meanwhile once",
  ignore: missing,
  sanitizeOps: false, // Playwright's pipe to Chromium outlives single ops.
  sanitizeResources: false,
  async fn() {
    const server = await startServerProcess(["--rate-limit", "0"]);
    const proxy = TcpProxy.start(server.port);
    const terminal = await join(server.url, "term");
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: CHROMIUM_ARGS,
    });
    try {
      const page = await phone(browser);
      await page.goto(`http://127.0.0.1:${proxy.port}/`);
      await page.fill("#name", "web");
      await page.press("#name", "Enter");
      await waitForText(page, "#status", /^connected as web$/);
      terminal.send("one");
      await waitForText(page, "#log", /termone/);
      await proxy.cut();
      await waitForText(page, "#status", /reconnecting/);
      // While the page is away: the room goes on, and its user types on.
      for (const text of ["two", "three", "four"]) terminal.send(text);
      await terminal.messages.skipTo((line) => line === "term: four");
      await page.fill("#text", "typed while away");
      await page.press("#text", "Enter");
      proxy.restore();
      await waitForText(page, "#status", /^connected as web$/);
      assert.equal(
        await terminal.messages.skipTo((line) => line.startsWith("web: ")),
        "web: typed while away",
      );
      await waitForText(page, "#log", /typed while away/);
      const shown = await page.$$eval(
        "#log .chat",
        (lines) => lines.map((l) => l.querySelector(".text")?.textContent),
      );
      assert.deepEqual(shown, ["one", "two", "three", "four", "typed while away"]);
      // Nothing was missed, so no note says so.
      assert.equal(await page.$$eval("#log .missed", (lines) => lines.length), 0);
    } finally {
      await browser.close();
      await terminal.close();
      await proxy.cut();
      await server.cli.stop();
    }
  },
});

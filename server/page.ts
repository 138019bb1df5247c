/**
 * The chat page: one self-contained HTML document (inline style and script,
 * no external resources), embedded in the code so the compiled binary serves
 * it too. It speaks `chat.json`, so that it resumes after a reconnect and
 * sends each line once. Its script is `page_script.ts`; its rules and texts
 * are the protocol's own.
 *
 * @module
 */

import {
  CloseCode,
  CloseReason,
  joinedNotice,
  JSON_PROTOCOL,
  KICKED,
  leftNotice,
  MAX_NAME_LENGTH,
  NAME_PATTERN,
  NAME_RULE,
  recoveryNotice,
  WELCOME,
  WHO_PREFIX,
} from "../lib/protocol.ts";
import { Backoff } from "../lib/backoff.ts";
import { type PageConfig, pageScript } from "./page_script.ts";

/** Escapes text for an HTML attribute or element. */
function html(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A value as JavaScript inside a `<script>` element (no `</script>` can end it early). */
function scriptValue(value: unknown): string {
  return JSON.stringify(value).replace(/</g, "\\u003c");
}

/** The name rule with its length, for the name box and the script alike. */
const NAME_INPUT_PATTERN = NAME_PATTERN.source.replace(
  /\+\$$/,
  `{1,${MAX_NAME_LENGTH}}$`,
);

/** The page's script: `Backoff`, then `pageScript` called with its config. */
function script(room: string): string {
  const config: PageConfig = {
    room,
    namePattern: NAME_INPUT_PATTERN,
    nameRule: NAME_RULE,
    welcome: WELCOME,
    // Notices are shown without their `* `.
    joined: joinedNotice("{name}", "{online}").slice(2),
    left: leftNotice("{name}", "{online}").slice(2),
    missed: recoveryNotice("{missed}").slice(2),
    historyLost: recoveryNotice(null).slice(2),
    whoPrefix: WHO_PREFIX.slice(2),
    protocol: JSON_PROTOCOL,
    tokenExpired: { code: CloseCode.POLICY_VIOLATION, reason: CloseReason.TOKEN_EXPIRED },
    kicked: KICKED,
  };
  return `"use strict";\n${Backoff}\n(${pageScript})(${scriptValue(config)});`;
}

/** What the page shows beyond its room. */
export interface PageOptions {
  /** The message box's limit: the server's largest message. */
  maxMessageBytes: number;
}

/** The chat page for `room` (`""` is the default room). */
export function chatPage(room: string, options: PageOptions): string {
  const title = room ? `#${room} · chat` : "chat";
  const values: Record<string, string> = {
    TITLE: html(title),
    ROOM: html(room),
    NAME_MAX: String(MAX_NAME_LENGTH),
    NAME_PATTERN: html(NAME_INPUT_PATTERN),
    MESSAGE_MAX: String(options.maxMessageBytes),
    SCRIPT: script(room),
  };
  return PAGE.replace(/\{\{(\w+)\}\}/g, (_, key: string) => values[key]);
}

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1, interactive-widget=resizes-content">
<title>{{TITLE}}</title>
<link rel="icon" href="data:,">
<style>
  :root { color-scheme: light dark; --accent: #3a6ff7; --muted: #777; --line: #8884; }
  * { box-sizing: border-box; }
  html, body { margin: 0; height: 100%; }
  body {
    font: 16px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
    display: flex; flex-direction: column; height: 100dvh; overflow: hidden;
  }
  header {
    display: flex; flex-wrap: wrap; gap: .25rem .75rem; align-items: baseline;
    padding: .5rem .75rem; border-bottom: 1px solid var(--line);
  }
  header h1 { font-size: 1rem; margin: 0; }
  #status { font-size: .85rem; color: var(--muted); }
  #status.down { color: #c0392b; }
  #online { font-size: .85rem; color: var(--muted); flex-basis: 100%; overflow-wrap: anywhere; }
  main { flex: 1; overflow-y: auto; overflow-x: hidden; padding: .5rem .75rem; }
  /* Name, text and time in columns: wrapped lines stay under the text. */
  .message {
    display: grid; grid-template-columns: max-content minmax(0, 1fr) max-content;
    column-gap: .4rem; align-items: baseline;
    margin: .1rem -.35rem; padding: .05rem .35rem; border-radius: .35rem;
  }
  .text { unicode-bidi: isolate; overflow-wrap: anywhere; white-space: pre-wrap; }
  .notice .text { grid-column: 1 / 3; }
  .newline { color: var(--muted); }
  .from { font-weight: 600; color: var(--accent); }
  .own { background: #3a6ff71f; }
  .own .from { color: #2a9d55; }
  .time { font-size: .75rem; color: var(--muted); }
  .notice { color: var(--muted); font-style: italic; }
  .missed { color: #b3261e; font-style: normal; font-weight: 600; }
  form { display: flex; gap: .5rem; padding: .5rem .75rem; border-top: 1px solid var(--line); }
  input {
    flex: 1; min-width: 0; font: inherit; padding: .5rem .6rem;
    border: 1px solid var(--line); border-radius: .4rem; background: transparent; color: inherit;
  }
  button {
    font: inherit; padding: .5rem .9rem; border: 0; border-radius: .4rem;
    background: var(--accent); color: white;
  }
  #join { margin: auto; max-width: 22rem; width: 100%; padding: 1.5rem; flex-direction: column; border: 0; }
  #join p { margin: 0 0 .25rem; }
  #join .error { color: #c0392b; min-height: 1.4em; font-size: .9rem; }
  [hidden] { display: none !important; }
</style>
</head>
<body>
<header>
  <h1 id="title"></h1>
  <span id="status">not connected</span>
  <span id="online"></span>
</header>
<form id="join" autocomplete="off" novalidate>
  <p><label for="name">Your name</label></p>
  <input id="name" name="name" maxlength="{{NAME_MAX}}" pattern="{{NAME_PATTERN}}" required autofocus
    placeholder="letters, digits, _ - ." autocapitalize="off" spellcheck="false">
  <div class="error" id="join-error"></div>
  <button type="submit">Join</button>
</form>
<main id="log" hidden aria-live="polite"></main>
<form id="send" hidden autocomplete="off">
  <input id="text" aria-label="Message" placeholder="Message (Enter to send)" maxlength="{{MESSAGE_MAX}}">
  <button type="submit">Send</button>
</form>
<script>
{{SCRIPT}}
</script>
</body>
</html>
`;

/**
 * The chat page: one self-contained HTML document (inline style and script,
 * no external resources), embedded in the code so the compiled binary serves
 * it too. It speaks the same plain-text protocol as every other client.
 *
 * @module
 */

import { BATCH_PROTOCOL, BATCH_SEPARATOR } from "./protocol.ts";

/** Escapes text for an HTML attribute or element. */
function html(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The chat page for `room` (`""` is the default room). */
export function chatPage(room: string): string {
  const title = room ? `#${room} · chat` : "chat";
  return PAGE.replace("{{TITLE}}", html(title)).replace("{{ROOM}}", html(room));
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
  .message { margin: .15rem 0; overflow-wrap: anywhere; white-space: pre-wrap; }
  .from { font-weight: 600; color: var(--accent); margin-right: .35rem; }
  .notice { color: var(--muted); font-style: italic; }
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
<body data-room="{{ROOM}}">
<header>
  <h1 id="title"></h1>
  <span id="status">not connected</span>
  <span id="online"></span>
</header>
<form id="join" autocomplete="off">
  <p><label for="name">Your name</label></p>
  <input id="name" name="name" maxlength="32" pattern="[A-Za-z0-9_.\\-]{1,32}" required autofocus
    placeholder="letters, digits, _ - ." autocapitalize="off" spellcheck="false">
  <div class="error" id="join-error"></div>
  <button type="submit">Join</button>
</form>
<main id="log" hidden aria-live="polite"></main>
<form id="send" hidden autocomplete="off">
  <input id="text" aria-label="Message" placeholder="Message (Enter to send)" maxlength="65536">
  <button type="submit">Send</button>
</form>
<script>
"use strict";
const room = document.body.dataset.room;
const path = "/" + room;
const NAME = /^[A-Za-z0-9_.-]{1,32}$/;
const $ = (id) => document.getElementById(id);
const log = $("log"), text = $("text"), status = $("status"), online = $("online");
$("title").textContent = room ? "#" + room : "chat";

let name = "";
let socket = null;
let members = [];
let awaitingWho = false;
let delay = 500;

function show(kind, from, body) {
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  const line = document.createElement("div");
  line.className = "message " + kind;
  if (from !== null) {
    const who = document.createElement("span");
    who.className = "from";
    who.textContent = from;
    line.append(who);
  }
  // Peers' text is only ever text: never parsed as HTML.
  line.append(document.createTextNode(body));
  log.append(line);
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function setStatus(textContent, down) {
  status.textContent = textContent;
  status.classList.toggle("down", down);
}

function showMembers() {
  online.textContent = members.length ? "online (" + members.length + "): " + members.join(", ") : "";
}

// Presence lines keep the list current without asking again.
function presence(line) {
  let m = /^\\* (\\S+) joined \\(\\d+ online\\)$/.exec(line);
  if (m) { if (!members.includes(m[1])) members.push(m[1]); showMembers(); return; }
  m = /^\\* (\\S+) left \\(\\d+ online\\)$/.exec(line);
  if (m) { members = members.filter((n) => n !== m[1]); showMembers(); }
}

function receive(line) {
  if (awaitingWho && line.startsWith("* online (")) {
    awaitingWho = false;
    const list = line.slice(line.indexOf("): ") + 3);
    members = list ? list.split(", ") : [];
    showMembers();
    return;
  }
  if (line.startsWith("* ")) {
    presence(line);
    show("notice", null, line.slice(2));
    return;
  }
  const colon = line.indexOf(": ");
  if (colon > 0 && !line.startsWith("Welcome to chat!")) {
    show("chat", line.slice(0, colon), line.slice(colon + 2));
  } else {
    show("notice", null, line);
  }
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const url = scheme + location.host + path + "?name=" + encodeURIComponent(name);
  setStatus("connecting…", false);
  // Batched: what the page is owed in one server turn comes as one frame.
  const ws = new WebSocket(url, [${JSON.stringify(BATCH_PROTOCOL)}]);
  socket = ws;
  let opened = false;
  ws.onopen = () => {
    opened = true;
    delay = 500;
    setStatus("connected as " + name, false);
    awaitingWho = true;
    ws.send("/who");
    text.focus();
  };
  ws.onmessage = (event) => {
    if (typeof event.data !== "string") return;
    if (ws.protocol === ${JSON.stringify(BATCH_PROTOCOL)}) {
      for (const line of event.data.split(${
  JSON.stringify(BATCH_SEPARATOR)
})) receive(line);
    } else {
      receive(event.data);
    }
    if (document.activeElement !== text) text.focus();
  };
  ws.onclose = (event) => {
    if (socket !== ws) return;
    socket = null;
    members = [];
    showMembers();
    const wait = Math.round(delay * (0.5 + Math.random() / 2));
    delay = Math.min(delay * 2, 30000);
    const why = opened ? "disconnected" + (event.code ? " (" + event.code + (event.reason ? " " + event.reason : "") + ")" : "") : "cannot connect";
    setStatus(why + ", reconnecting in " + (wait / 1000).toFixed(1) + " s", true);
    if (opened) show("notice", null, why + "; reconnecting…");
    // A 409 now means the old connection has not timed out yet: retry all the same.
    setTimeout(connect, wait);
  };
}

$("join").addEventListener("submit", async (event) => {
  event.preventDefault();
  const wanted = $("name").value.trim();
  const error = $("join-error");
  if (!NAME.test(wanted)) {
    error.textContent = "Use 1 to 32 letters, digits, _, - or .";
    return;
  }
  // The browser hides a refused upgrade's status: ask first whether the name is free.
  try {
    const answer = await fetch(path + "?name=" + encodeURIComponent(wanted), { method: "HEAD" });
    if (answer.status === 409) {
      error.textContent = "That name is taken here: choose another.";
      $("name").focus();
      return;
    }
  } catch {
    // Offline: connect() will say so and retry.
  }
  name = wanted;
  try { localStorage.setItem("chat-name", name); } catch {}
  $("join").hidden = true;
  log.hidden = false;
  $("send").hidden = false;
  connect();
  text.focus();
});

$("send").addEventListener("submit", (event) => {
  event.preventDefault();
  const message = text.value;
  if (message.trim() && socket && socket.readyState === WebSocket.OPEN) {
    socket.send(message);
    text.value = "";
  }
  text.focus();
});

try { $("name").value = localStorage.getItem("chat-name") || ""; } catch {}
$("name").focus();
</script>
</body>
</html>
`;

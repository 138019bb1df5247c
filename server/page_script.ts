/**
 * The chat page's script, written as a real function so that it is linted
 * and type-checked with the rest. `page.ts` embeds its source
 * (`pageScript.toString()`) and calls it with a `PageConfig` made from the
 * server's own constants, so the page restates no rule and no text.
 *
 * The function may refer to nothing outside itself but the browser's
 * globals, its config, and `Backoff`, whose source the page embeds too.
 *
 * @module
 */

import { Backoff } from "../lib/backoff.ts";

// The parts of the DOM the page uses. Deno's types have no DOM, and the
// DOM's own types conflict with Deno's in one program; WebSocket, fetch,
// location and localStorage are typed by Deno as browsers have them.
interface PageNode {
  textContent: string | null;
}
interface PageElement extends PageNode, EventTarget {
  className: string;
  title: string;
  hidden: boolean;
  readonly classList: { toggle(token: string, force?: boolean): boolean };
  readonly scrollHeight: number;
  scrollTop: number;
  readonly clientHeight: number;
  append(...nodes: PageNode[]): void;
  focus(): void;
}
interface PageInput extends PageElement {
  value: string;
}
declare const document: {
  getElementById(id: string): PageElement | null;
  createElement(tag: string): PageElement;
  createTextNode(text: string): PageNode;
  readonly activeElement: PageElement | null;
};

/** What the page is told by the server: its room and the protocol's rules and texts. */
export interface PageConfig {
  /** The room's name; `""` for the default room. */
  room: string;
  /** The name rule as a regular expression's source. */
  namePattern: string;
  /** The name rule in words. */
  nameRule: string;
  /** The first line every client receives. */
  welcome: string;
  /** The joined and left notices, with `{name}` and `{online}` to fill in. */
  joined: string;
  left: string;
  /** The note for a resume that could not send everything, with `{missed}`; and for lost history. */
  missed: string;
  historyLost: string;
  /** What the answer to `/who` starts with. */
  whoPrefix: string;
  /** The subprotocol the page speaks: `chat.json`. */
  protocol: string;
  /** The close that says the token expired (reconnecting will not help). */
  tokenExpired: { code: number; reason: string };
  /** The answer to a name a moderator kicked out of the room. */
  kicked: string;
}

/** A `chat.json` event as the page reads it. */
type PageEvent =
  | { type: "welcome"; epoch: string }
  | {
    type: "message";
    id: number | null;
    from: string;
    text: string;
    time: number;
    ref: string | null;
  }
  | { type: "joined" | "left"; name: string; online: number }
  | { type: "notice"; text: string }
  | { type: "recovered"; complete: boolean; missed: number | null }
  | { type: "duplicate" | "accepted"; ref: string }
  | { type: "refused"; ref: string | null; reason: string; retry_ms?: number };

/** Runs the page: the join form, the connection and its reconnects, the log. */
export function pageScript(config: PageConfig): void {
  const path = "/" + config.room;
  const NAME = new RegExp(config.namePattern);
  const $ = <T extends PageElement>(id: string) => document.getElementById(id) as T;
  const log = $("log"), status = $("status"), online = $("online");
  const text = $<PageInput>("text"), nameInput = $<PageInput>("name");
  $("title").textContent = config.room ? "#" + config.room : "chat";

  let name = "";
  let welcomed = false;
  // A token rides in the URL's fragment (`#token=...`), which no server
  // log ever sees; it goes on as `?token=`. Its `sub` is the name to use.
  const token = new URLSearchParams(location.hash.slice(1)).get("token") ?? "";
  const tokenName = (() => {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const sub = JSON.parse(atob(part)).sub;
      return typeof sub === "string" ? sub : "";
    } catch {
      return "";
    }
  })();
  const tokenQuery = token ? "&token=" + encodeURIComponent(token) : "";
  let socket: WebSocket | null = null;
  let members: string[] = [];
  let awaitingWho = false;
  const backoff = new Backoff();
  // Where the page is in the room, to resume from after a reconnect.
  let epoch = "";
  let last = 0;
  // Lines sent and not yet confirmed by the room (their echo, `accepted` or
  // `duplicate`): sent again, with their refs, after a reconnect.
  let pending: { text: string; ref: string }[] = [];
  const refPrefix = Math.random().toString(36).slice(2, 10);
  let refCount = 0;
  let resendTimer: ReturnType<typeof setTimeout> | undefined;

  function show(kind: string, from: string | null, body: string, at = Date.now()) {
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    const line = document.createElement("div");
    // Your own messages stand out from the others'.
    line.className = "message " + kind + (from !== null && from === name ? " own" : "");
    if (from !== null) {
      const who = document.createElement("span");
      who.className = "from";
      who.textContent = from;
      line.append(who);
    }
    // Peers' text is only ever text, never HTML; isolated, so that no
    // right-to-left override reorders what follows it; and its own line
    // breaks stay in its own box, marked, so no line poses as another
    // sender's message.
    const text = document.createElement("bdi");
    text.className = "text";
    body.split("\n").forEach((part, i) => {
      if (i > 0) {
        const mark = document.createElement("span");
        mark.className = "newline";
        mark.textContent = "\n↳ ";
        text.append(mark);
      }
      text.append(document.createTextNode(part));
    });
    line.append(text);
    // When the server took it: the hour and minute shown, the whole time on hover.
    const now = new Date(at);
    const time = document.createElement("time");
    time.className = "time";
    time.textContent = String(now.getHours()).padStart(2, "0") + ":" +
      String(now.getMinutes()).padStart(2, "0");
    time.title = now.toLocaleString();
    line.append(time);
    log.append(line);
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function setStatus(textContent: string, down: boolean) {
    status.textContent = textContent;
    status.classList.toggle("down", down);
  }

  function showMembers() {
    online.textContent = members.length
      ? "online (" + members.length + "): " + members.join(", ")
      : "";
  }

  function fill(template: string, values: Record<string, string | number>) {
    return template.replace(/\{(\w+)\}/g, (_, key: string) => String(values[key]));
  }

  function confirm(ref: string | null) {
    pending = pending.filter((line) => line.ref !== ref);
  }

  function send(line: { text: string; ref: string }) {
    socket?.send(JSON.stringify({ type: "message", text: line.text, ref: line.ref }));
  }

  function receive(event: PageEvent) {
    switch (event.type) {
      case "welcome":
        // Another epoch: its ids start again.
        if (event.epoch !== epoch) last = 0;
        epoch = event.epoch;
        // Said once: a reconnect does not say it again.
        if (!welcomed) show("notice", null, config.welcome);
        welcomed = true;
        return;
      case "message":
        // The server sends each message once: the id is where to resume from.
        if (event.id !== null) last = event.id;
        confirm(event.ref);
        return show("chat", event.from, event.text, event.time);
      case "joined":
      case "left":
        // Presence keeps the list current without asking again.
        if (event.type === "joined") {
          if (!members.includes(event.name)) members.push(event.name);
        } else {
          members = members.filter((n) => n !== event.name);
        }
        showMembers();
        return show("notice", null, fill(config[event.type], event));
      case "notice":
        if (awaitingWho && event.text.startsWith(config.whoPrefix)) {
          awaitingWho = false;
          const list = event.text.slice(event.text.indexOf("): ") + 3);
          members = list ? list.split(", ") : [];
          showMembers();
          return;
        }
        return show("notice", null, event.text);
      case "recovered":
        // Said plainly, so nobody takes a gap for a quiet room.
        if (!event.complete) {
          show(
            "notice missed",
            null,
            event.missed === null
              ? config.historyLost
              : fill(config.missed, { missed: event.missed }),
          );
        }
        return;
      case "duplicate":
      case "accepted":
        return confirm(event.ref);
      case "refused": {
        if (event.reason === "invalid") return confirm(event.ref);
        // It and every line after it go again, in order, once allowed.
        clearTimeout(resendTimer);
        resendTimer = setTimeout(() => {
          const from = pending.findIndex((line) => line.ref === event.ref);
          if (from >= 0) pending.slice(from).forEach(send);
        }, event.retry_ms ?? 1000);
        return;
      }
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    // After a first connection: resume from the last message shown.
    const resume = epoch ? "&since=" + last + "&epoch=" + encodeURIComponent(epoch) : "";
    const url = scheme + location.host + path + "?name=" + encodeURIComponent(name) +
      tokenQuery + resume;
    setStatus("connecting…", false);
    // What the page is owed in one server turn comes as one frame of events.
    const ws = new WebSocket(url, [config.protocol]);
    socket = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      backoff.reset();
      setStatus("connected as " + name, false);
      awaitingWho = true;
      ws.send("/who");
      // What the room did not confirm goes again, in order.
      pending.forEach(send);
      text.focus();
    };
    ws.onmessage = (event) => {
      if (typeof event.data !== "string") return;
      for (const one of JSON.parse(event.data) as PageEvent[]) receive(one);
      if (document.activeElement !== text) text.focus();
    };
    ws.onclose = (event) => {
      if (socket !== ws) return;
      socket = null;
      members = [];
      showMembers();
      // An expired token will not work again: say so, and stop.
      if (
        event.code === config.tokenExpired.code &&
        event.reason === config.tokenExpired.reason
      ) {
        setStatus("your token expired: get a new one to chat again", true);
        show("notice", null, "disconnected: your token expired");
        return;
      }
      const wait = backoff.delay();
      const why = opened
        ? "disconnected" +
          (event.code
            ? " (" + event.code + (event.reason ? " " + event.reason : "") + ")"
            : "")
        : "cannot connect";
      setStatus(why + ", reconnecting in " + (wait / 1000).toFixed(1) + " s", true);
      if (opened) show("notice", null, why + "; reconnecting…");
      // A 409 now means the old connection has not timed out yet: retry all the same.
      setTimeout(connect, wait);
    };
  }

  $("join").addEventListener("submit", async (event) => {
    event.preventDefault();
    const wanted = nameInput.value.trim();
    const error = $("join-error");
    if (!NAME.test(wanted)) {
      error.textContent = "Use " + config.nameRule + ".";
      return;
    }
    // The browser hides a refused upgrade's status: ask first whether the
    // name is free (and the token good), with GET since HEAD has no body.
    try {
      const answer = await fetch(
        path + "?name=" + encodeURIComponent(wanted) + tokenQuery,
      );
      if (answer.status === 409) {
        error.textContent = "That name is taken here: choose another.";
        nameInput.focus();
        return;
      }
      if (answer.status === 401 || answer.status === 403) {
        const why = (await answer.text()).trim();
        setStatus("not allowed in", true);
        error.textContent = why === config.kicked
          ? "A moderator removed you from this room: try again later."
          : token
          ? "The server refused your token (" + why + "): ask for a new link."
          : "This chat needs an invitation link with a token (" + why + ").";
        return;
      }
    } catch {
      // Offline: connect() will say so and retry.
    }
    name = wanted;
    try {
      localStorage.setItem("chat-name", name);
    } catch {
      // Storage may be off: the name is asked for again next time.
    }
    $("join").hidden = true;
    log.hidden = false;
    $("send").hidden = false;
    connect();
    text.focus();
  });

  $("send").addEventListener("submit", (event) => {
    event.preventDefault();
    const message = text.value;
    const open = socket !== null && socket.readyState === WebSocket.OPEN;
    if (message.trim() && message.startsWith("/") && !message.startsWith("//")) {
      // A command is asked of this connection, or not at all.
      if (!open) return text.focus();
      socket!.send(message);
    } else if (message.trim()) {
      // A message is sent once, now or after the reconnect.
      const line = {
        text: message.startsWith("//") ? message.slice(1) : message,
        ref: refPrefix + "-" + ++refCount,
      };
      pending.push(line);
      if (open) send(line);
    }
    text.value = "";
    text.focus();
  });

  try {
    nameInput.value = localStorage.getItem("chat-name") || "";
  } catch {
    // Storage may be off.
  }
  nameInput.focus();
  // The token names the user: no name to ask for.
  if (tokenName) {
    nameInput.value = tokenName;
    $("join").dispatchEvent(new Event("submit", { cancelable: true }));
  }
}

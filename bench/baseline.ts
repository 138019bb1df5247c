/**
 * The baseline the benchmark compares against: the plain broadcast server
 * anyone would write first (a Set of sockets and a send() loop), with no
 * limits, rooms or logging.
 *
 * With `--announce` it also sends what any chat owes a newcomer and its
 * room, and nothing more: the welcome, and while the room is within the
 * default `--presence-limit`, a join notice to everyone else. It is the
 * floor of what a connect costs a chat on this runtime.
 *
 *   deno run --allow-net bench/baseline.ts PORT [--announce]
 */
const port = Number(Deno.args[0] ?? 8090);
// Loaded only for --announce, so that the plain baseline stays bare.
const announce = Deno.args.includes("--announce")
  ? await import("../lib/protocol.ts")
  : undefined;
const sockets = new Set<WebSocket>();
Deno.serve({
  hostname: "127.0.0.1",
  port,
  onListen: () => console.log(`listening ${port}`),
}, (req) => {
  if (req.headers.get("upgrade") !== "websocket") {
    return new Response("", { status: 426 });
  }
  const { socket, response } = Deno.upgradeWebSocket(req);
  socket.onopen = () => {
    sockets.add(socket);
    if (!announce) return;
    socket.send(announce.WELCOME);
    if (sockets.size > announce.PRESENCE_LIMIT) return;
    const notice = announce.joinedNotice("newcomer", sockets.size);
    for (const peer of sockets) if (peer !== socket) peer.send(notice);
  };
  socket.onmessage = (event) => {
    for (const peer of sockets) {
      if (peer.readyState === WebSocket.OPEN) peer.send(event.data);
    }
  };
  socket.onclose = () => sockets.delete(socket);
  return response;
});

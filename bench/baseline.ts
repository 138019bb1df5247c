/**
 * The baseline the benchmark compares against: the plain broadcast server
 * anyone would write first (a Set of sockets and a send() loop), with no
 * limits, rooms or logging.
 *
 *   deno run --allow-net bench/baseline.ts PORT
 */
const port = Number(Deno.args[0] ?? 8090);
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
  socket.onopen = () => sockets.add(socket);
  socket.onmessage = (event) => {
    for (const peer of sockets) {
      if (peer.readyState === WebSocket.OPEN) peer.send(event.data);
    }
  };
  socket.onclose = () => sockets.delete(socket);
  return response;
});

// The node `ws` broadcast server the benchmark compares against.
//   node bench/ws_server.mjs PORT   (needs `npm install --prefix bench ws`)
import { WebSocket, WebSocketServer } from "ws";

const port = Number(process.argv[2] ?? 8091);
const server = new WebSocketServer(
  { host: "127.0.0.1", port },
  () => console.log(`listening ${port}`),
);
server.on("connection", (socket) => {
  socket.on("message", (data, isBinary) => {
    for (const peer of server.clients) {
      if (peer.readyState === WebSocket.OPEN) {
        peer.send(data, { binary: isBinary });
      }
    }
  });
});

// deno-lint-ignore-file no-explicit-any
// The Bun pub/sub broadcast server the benchmark compares against.
//   bench/node_modules/.bin/bun bench/bun_server.ts PORT
declare const Bun: any;
const port = Number(Bun.argv[2] ?? 8092);
const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  fetch(req: Request, srv: any) {
    return srv.upgrade(req) ? undefined : new Response("", { status: 426 });
  },
  websocket: {
    open(ws: any) {
      ws.subscribe("chat");
    },
    message(_ws: any, message: string) {
      server.publish("chat", message);
    },
  },
});
console.log(`listening ${port}`);

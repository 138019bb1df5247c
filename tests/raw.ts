/**
 * A WebSocket client on a raw TCP socket, for the misbehaviour the
 * WebSocket API will not commit: never reading, unmasked or fragmented
 * frames, invalid UTF-8, resets in the middle of a frame.
 */

export const Opcode = {
  CONTINUATION: 0x0,
  TEXT: 0x1,
  BINARY: 0x2,
  CLOSE: 0x8,
  PING: 0x9,
  PONG: 0xa,
} as const;

export interface Frame {
  fin: boolean;
  opcode: number;
  payload: Uint8Array;
}

/** Encodes one client frame (masked unless told otherwise). */
export function encodeFrame(
  opcode: number,
  payload: Uint8Array,
  { fin = true, mask = true }: { fin?: boolean; mask?: boolean } = {},
): Uint8Array {
  const length = payload.length;
  const extra = length < 126 ? 0 : length < 65536 ? 2 : 8;
  const frame = new Uint8Array(2 + extra + (mask ? 4 : 0) + length);
  frame[0] = (fin ? 0x80 : 0) | opcode;
  frame[1] = (mask ? 0x80 : 0) |
    (extra === 0 ? length : extra === 2 ? 126 : 127);
  const view = new DataView(frame.buffer);
  if (extra === 2) view.setUint16(2, length);
  if (extra === 8) view.setBigUint64(2, BigInt(length));
  let offset = 2 + extra;
  if (mask) {
    const key = crypto.getRandomValues(new Uint8Array(4));
    frame.set(key, offset);
    offset += 4;
    for (let i = 0; i < length; i++) {
      frame[offset + i] = payload[i] ^ key[i & 3];
    }
  } else {
    frame.set(payload, offset);
  }
  return frame;
}

const encoder = new TextEncoder();

/** A raw WebSocket connection: the handshake's answer, then frames. */
export class RawSocket {
  #buffer = new Uint8Array(0);

  private constructor(
    readonly conn: Deno.Conn,
    /** The HTTP status of the handshake's answer. */
    readonly status: number,
    /** The answer's head, lower-cased header names. */
    readonly headers: Map<string, string>,
  ) {}

  /** Connects and sends an upgrade request; resolves once the answer's head is read. */
  static async open(
    port: number,
    { path = "/", headers = {}, hostname = "127.0.0.1", method = "GET" }: {
      path?: string;
      /** Headers besides the handshake's own, or replacing them. */
      headers?: Record<string, string>;
      hostname?: string;
      method?: string;
    } = {},
  ): Promise<RawSocket> {
    const conn = await Deno.connect({ hostname, port });
    const handshake: Record<string, string> = {
      Host: `${hostname}:${port}`,
      Upgrade: "websocket",
      Connection: "Upgrade",
      "Sec-WebSocket-Version": "13",
      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    };
    // A header given in any case replaces the handshake's own.
    const given = new Set(
      Object.keys(headers).map((name) => name.toLowerCase()),
    );
    const lines = [
      `${method} ${path} HTTP/1.1`,
      ...Object.entries(handshake).filter(([name]) => !given.has(name.toLowerCase()))
        .map(([name, value]) => `${name}: ${value}`),
      ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    ];
    await writeAll(conn, encoder.encode(lines.join("\r\n") + "\r\n\r\n"));
    const raw = new RawSocket(conn, 0, new Map());
    const head = new TextDecoder().decode(await raw.#readUntilBlankLine());
    const [statusLine, ...headerLines] = head.split("\r\n");
    const headerMap = new Map(
      headerLines.filter(Boolean).map((line) => {
        const colon = line.indexOf(":");
        return [
          line.slice(0, colon).trim().toLowerCase(),
          line.slice(colon + 1).trim(),
        ];
      }),
    );
    const socket = new RawSocket(
      conn,
      Number(statusLine.split(" ")[1]),
      headerMap,
    );
    socket.#buffer = raw.#buffer;
    return socket;
  }

  async #fill(): Promise<boolean> {
    const chunk = new Uint8Array(65536);
    const n = await this.conn.read(chunk);
    if (n === null) return false;
    const next = new Uint8Array(this.#buffer.length + n);
    next.set(this.#buffer);
    next.set(chunk.subarray(0, n), this.#buffer.length);
    this.#buffer = next;
    return true;
  }

  async #readUntilBlankLine(): Promise<Uint8Array> {
    while (true) {
      const text = new TextDecoder().decode(this.#buffer);
      const end = text.indexOf("\r\n\r\n");
      if (end >= 0) {
        const head = this.#buffer.subarray(0, end);
        this.#buffer = this.#buffer.slice(end + 4);
        return head;
      }
      if (!await this.#fill()) {
        throw new Error("connection closed during the handshake");
      }
    }
  }

  /** The answer's body (for refusals), as long as its Content-Length says. */
  async body(): Promise<string> {
    const length = Number(this.headers.get("content-length") ?? 0);
    while (this.#buffer.length < length && await this.#fill());
    return new TextDecoder().decode(this.#buffer.subarray(0, length));
  }

  async send(bytes: Uint8Array): Promise<void> {
    await writeAll(this.conn, bytes);
  }

  async sendFrame(
    opcode: number,
    payload: Uint8Array | string,
    options?: { fin?: boolean; mask?: boolean },
  ): Promise<void> {
    const bytes = typeof payload === "string" ? encoder.encode(payload) : payload;
    await this.send(encodeFrame(opcode, bytes, options));
  }

  /** The next frame, or `null` when the connection ended. */
  async readFrame(): Promise<Frame | null> {
    while (true) {
      const b = this.#buffer;
      if (b.length >= 2) {
        let length = b[1] & 0x7f;
        let offset = 2;
        if (length === 126 && b.length >= 4) {
          length = (b[2] << 8) | b[3];
          offset = 4;
        } else if (length === 127 && b.length >= 10) {
          length = Number(new DataView(b.buffer, b.byteOffset).getBigUint64(2));
          offset = 10;
        }
        if ((b[1] & 0x7f) < 126 || offset > 2) {
          if (b.length >= offset + length) {
            const frame = {
              fin: (b[0] & 0x80) !== 0,
              opcode: b[0] & 0x0f,
              payload: b.slice(offset, offset + length),
            };
            this.#buffer = b.slice(offset + length);
            return frame;
          }
        }
      }
      if (!await this.#fill().catch(() => false)) return null;
    }
  }

  /** Reads frames until a text frame, answering nothing; skips pings. */
  async readText(): Promise<string> {
    while (true) {
      const frame = await this.readFrame();
      if (!frame) throw new Error("connection ended");
      if (frame.opcode === Opcode.TEXT) {
        return new TextDecoder().decode(frame.payload);
      }
      if (frame.opcode === Opcode.CLOSE) {
        throw new Error(`closed: ${describeClose(frame)}`);
      }
    }
  }

  /** Reads until the close frame; returns its code and reason (code 1006 if none came). */
  async readUntilClose(): Promise<
    { code: number; reason: string; texts: string[] }
  > {
    const texts: string[] = [];
    while (true) {
      const frame = await this.readFrame();
      if (!frame) return { code: 1006, reason: "", texts };
      if (frame.opcode === Opcode.TEXT) {
        texts.push(new TextDecoder().decode(frame.payload));
      }
      if (frame.opcode === Opcode.CLOSE) {
        const view = new DataView(
          frame.payload.buffer,
          frame.payload.byteOffset,
        );
        return {
          code: frame.payload.length >= 2 ? view.getUint16(0) : 1005,
          reason: new TextDecoder().decode(frame.payload.subarray(2)),
          texts,
        };
      }
    }
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
  }
}

function describeClose(frame: Frame): string {
  const code = frame.payload.length >= 2
    ? (frame.payload[0] << 8) | frame.payload[1]
    : 1005;
  return `${code} ${new TextDecoder().decode(frame.payload.subarray(2))}`;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array) {
  let written = 0;
  while (written < bytes.length) {
    written += await conn.write(bytes.subarray(written));
  }
}

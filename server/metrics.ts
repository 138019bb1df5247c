/**
 * The server's counters, served at `GET /metrics` in the Prometheus text
 * format. Counting costs O(1) per message and per recipient: byte counts
 * of a broadcast line are computed once, not once per recipient.
 *
 * @module
 */

/** Why the server refused a message, a connection or a client. */
export type RefusalReason =
  | "too_big"
  | "rate_limited"
  | "slow_consumer"
  | "max_clients"
  | "origin"
  | "bad_name"
  | "binary"
  | "auth";

const REASONS: readonly RefusalReason[] = [
  "too_big",
  "rate_limited",
  "slow_consumer",
  "max_clients",
  "origin",
  "bad_name",
  "binary",
  "auth",
];

/** Gauges read when the metrics are served. */
export interface Gauges {
  clients: number;
  rooms: number;
  /** Whether the backplane is up; `undefined` without one (the metric is then absent). */
  backplaneUp?: boolean;
  /** Log lines dropped because the log's output could not keep up. */
  logDropped: number;
  /** The bytes all rooms' history holds, as `--history-bytes` counts them. */
  historyBytes: number;
}

/** Counters since the server started. */
export class Metrics {
  /** Chat messages accepted and broadcast (not commands, not refused ones). */
  messagesReceived = 0;
  /** Chat messages handed to clients: one per recipient. */
  messagesDelivered = 0;
  /** UTF-8 bytes of the text messages clients sent. */
  bytesReceived = 0;
  /** UTF-8 bytes of the messages and notices handed to clients (framing not counted). */
  bytesSent = 0;
  /** Client frames that waited for a later turn: the turn's send budget was spent. */
  framesWaited = 0;
  /** Resumes (`?since=`), by how they went: everything sent, some missed, history lost. */
  readonly resumes = { complete: 0, partial: 0, lost: 0 };
  readonly refusals: Record<RefusalReason, number> = Object.fromEntries(
    REASONS.map((reason) => [reason, 0]),
  ) as Record<RefusalReason, number>;

  refuse(reason: RefusalReason): void {
    this.refusals[reason]++;
  }

  /** A resume sent all but `missed` messages (`null`: the client's epoch was not the room's). */
  resumed(missed: number | null): void {
    this.resumes[missed === null ? "lost" : missed === 0 ? "complete" : "partial"]++;
  }

  /** The Prometheus text exposition of every metric, each with HELP and TYPE. */
  render(gauges: Gauges): string {
    const metrics: [name: string, type: string, help: string, samples: string[]][] = [
      ["chat_clients", "gauge", "Connected clients.", [`${gauges.clients}`]],
      ["chat_rooms", "gauge", "Rooms with someone in them.", [`${gauges.rooms}`]],
      [
        "chat_history_bytes",
        "gauge",
        "Bytes of history all rooms hold, as --history-bytes counts them.",
        [`${gauges.historyBytes}`],
      ],
      [
        "chat_messages_received_total",
        "counter",
        "Chat messages accepted (commands and refused messages excluded).",
        [`${this.messagesReceived}`],
      ],
      [
        "chat_messages_delivered_total",
        "counter",
        "Chat messages handed to clients, one per recipient.",
        [`${this.messagesDelivered}`],
      ],
      [
        "chat_bytes_received_total",
        "counter",
        "UTF-8 bytes of the text messages clients sent.",
        [`${this.bytesReceived}`],
      ],
      [
        "chat_bytes_sent_total",
        "counter",
        "UTF-8 bytes of the messages and notices handed to clients, framing excluded.",
        [`${this.bytesSent}`],
      ],
      [
        "chat_refusals_total",
        "counter",
        "Messages, connections and clients refused, by reason.",
        REASONS.map((reason) => `{reason="${reason}"} ${this.refusals[reason]}`),
      ],
      [
        "chat_frames_waited_total",
        "counter",
        "Client frames that waited for a later turn of the event loop (its send budget spent).",
        [`${this.framesWaited}`],
      ],
      [
        "chat_resumes_total",
        "counter",
        "Resumes (?since=), by result: complete, partial (some missed), lost (another epoch).",
        Object.entries(this.resumes).map(([result, n]) => `{result="${result}"} ${n}`),
      ],
      [
        "chat_log_dropped_total",
        "counter",
        "Log lines dropped because stdout could not keep up.",
        [`${gauges.logDropped}`],
      ],
    ];
    if (gauges.backplaneUp !== undefined) {
      metrics.push([
        "chat_backplane_up",
        "gauge",
        "1 while the backplane is reachable.",
        [`${gauges.backplaneUp ? 1 : 0}`],
      ]);
    }
    // A sample is the metric's name, then labels (if any) and value.
    return metrics.flatMap(([name, type, help, samples]) => [
      `# HELP ${name} ${help}`,
      `# TYPE ${name} ${type}`,
      ...samples.map((sample) => `${name}${sample.startsWith("{") ? "" : " "}${sample}`),
    ]).join("\n") + "\n";
  }
}

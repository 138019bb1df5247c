/*
 * The closed-loop load generator in C: the same clients, messages and
 * results as bench/load.ts's closed loop, at a fraction of its CPU per
 * delivery, so that the generator is not what limits a fast server.
 * One thread, epoll, non-blocking sockets; frames parsed in place.
 * Only the senders' latency is measured, so they go first: each wake-up
 * reads the senders and writes their next messages before it reads any
 * receiver, and receivers are woken by the kernel only once
 * RECEIVER_LOW_WATER bytes wait (SO_RCVLOWAT): a few large reads instead of
 * one per frame, which is most of what reading costs on loopback.
 *
 *   cc -O2 -o load bench/load.c
 *   load PORT CLIENTS SENDERS BATCH SECONDS WINDOW SIZE RELAY SERVER_PID WARMUP_MS
 *
 * Prints one JSON object: deliveriesPerSecond, p50, p99 (ms),
 * cpuPerDelivery (µs of the server's CPU), generatorCpu (cores).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_SIZE 65536
#define STAMP_DIGITS 15
#define RS 0x1e
#define MAX_LATENCIES 4000000
/* Bytes a receiver's socket holds before the kernel wakes it (from the
   warm-up on: the welcomes and joins before it are read as they come). */
#define RECEIVER_LOW_WATER 16384

static const uint8_t MASK[4] = {0x12, 0x34, 0x56, 0x78};

typedef struct {
  int fd;
  char name[16];
  int sender;
  uint8_t *buf;
  size_t start, end, cap;
  uint8_t *out; /* frames waiting to be written */
  size_t out_len, out_cap;
  int inflight;
} Client;

static int port, nclients, nsenders, batch, seconds, window_size, size, relay, server_pid,
    warmup_ms;
static size_t line_length; /* "sNN: " + payload */
static int measuring;
static uint64_t deliveries;
static double *latencies;
static size_t nlatencies;
static double t_start;

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3 - t_start;
}

static void die(const char *what) {
  fprintf(stderr, "load: %s: %s\n", what, strerror(errno));
  exit(1);
}

/* The server's user + system CPU seconds, from /proc. */
static double server_cpu(void) {
  if (server_pid <= 0) return 0;
  char path[64], text[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", server_pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = 0;
  char *p = strrchr(text, ')');
  if (!p) return 0;
  unsigned long utime = 0, stime = 0;
  /* Fields after the name: state is 3rd; utime 14th, stime 15th. */
  int field = 2;
  for (char *tok = strtok(p + 2, " "); tok; tok = strtok(NULL, " ")) {
    field++;
    if (field == 14) utime = strtoul(tok, NULL, 10);
    if (field == 15) { stime = strtoul(tok, NULL, 10); break; }
  }
  return (double)(utime + stime) / sysconf(_SC_CLK_TCK);
}

static double self_cpu(void) {
  struct rusage r;
  getrusage(RUSAGE_SELF, &r);
  return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec +
         r.ru_stime.tv_usec / 1e6;
}

/* Queues one masked, stamped message frame on a sender. */
static void queue_message(Client *c) {
  size_t skip = relay ? 5 : 0;
  size_t payload = skip + size;
  size_t header = payload >= 126 ? 8 : 6;
  size_t need = c->out_len + header + payload;
  if (need > c->out_cap) {
    c->out_cap = need * 2;
    c->out = realloc(c->out, c->out_cap);
  }
  uint8_t *f = c->out + c->out_len;
  f[0] = 0x81;
  if (payload >= 126) {
    f[1] = 0x80 | 126;
    f[2] = payload >> 8;
    f[3] = payload & 0xff;
  } else {
    f[1] = 0x80 | payload;
  }
  memcpy(f + header - 4, MASK, 4);
  uint8_t *p = f + header;
  memset(p, 'x', payload);
  if (relay) memcpy(p, c->name, 3), p[3] = ':', p[4] = ' ';
  char digits[STAMP_DIGITS + 1];
  snprintf(digits, sizeof digits, "%015llu", (unsigned long long)now_us());
  memcpy(p + skip, digits, STAMP_DIGITS);
  for (size_t i = 0; i < payload; i++) p[i] ^= MASK[i & 3];
  c->out_len = need;
  c->inflight++;
}

static void flush(Client *c) {
  size_t done = 0;
  while (done < c->out_len) {
    ssize_t n = write(c->fd, c->out + done, c->out_len - done);
    if (n < 0) {
      if (errno == EAGAIN) break;
      if (errno == EINTR) continue;
      c->out_len = 0;
      return;
    }
    done += n;
  }
  memmove(c->out, c->out + done, c->out_len - done);
  c->out_len -= done;
}

static uint64_t read_stamp(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < STAMP_DIGITS; i++) v = v * 10 + (p[i] - '0');
  return v;
}

/* One text frame: one message, or several separated by RS. */
static void message(Client *c, const uint8_t *p, size_t length) {
  size_t L = line_length;
  int chat = length >= 4 && p[0] == 's' && p[3] == ':' && (length + 1) % (L + 1) == 0;
  if (!chat) {
    uint64_t count = 1;
    for (size_t i = 0; i < length; i++) count += p[i] == RS;
    deliveries += count;
    return;
  }
  size_t count = (length + 1) / (L + 1);
  deliveries += count;
  if (!c->sender) return;
  double t = now_us();
  for (size_t k = 0; k < count; k++) {
    const uint8_t *line = p + k * (L + 1);
    if (line[1] != c->name[1] || line[2] != c->name[2]) continue;
    if (measuring && nlatencies < MAX_LATENCIES) {
      latencies[nlatencies++] = t - (double)read_stamp(line + 5);
    }
    c->inflight--;
    if (measuring) queue_message(c);
  }
}

static void parse(Client *c) {
  uint8_t *b = c->buf;
  while (c->end - c->start >= 2) {
    uint64_t length = b[c->start + 1] & 0x7f;
    size_t offset = 2;
    if (length == 126) {
      if (c->end - c->start < 4) break;
      length = (b[c->start + 2] << 8) | b[c->start + 3];
      offset = 4;
    } else if (length == 127) {
      if (c->end - c->start < 10) break;
      length = 0;
      for (int i = 2; i < 10; i++) length = length * 256 + b[c->start + i];
      offset = 10;
    }
    if (c->end - c->start < offset + length) break;
    if ((b[c->start] & 0x0f) == 1) message(c, b + c->start + offset, length);
    c->start += offset + length;
  }
  if (c->start == c->end) c->start = c->end = 0;
}

static void connect_client(Client *c, int epoll) {
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (c->fd < 0) die("socket");
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char request[512];
  int n = snprintf(request, sizeof request,
                   "GET /?name=%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n%s\r\n",
                   c->name, port, batch ? "Sec-WebSocket-Protocol: chat.batch\r\n" : "");
  if (write(c->fd, request, n) != n) die("handshake");
  c->cap = READ_SIZE;
  c->buf = malloc(c->cap);
  /* Read the answer's head; what follows it is frames. */
  for (;;) {
    ssize_t r = read(c->fd, c->buf + c->end, c->cap - c->end);
    if (r <= 0) die("handshake answer");
    c->end += r;
    uint8_t *head = memmem(c->buf, c->end, "\r\n\r\n", 4);
    if (head) {
      if (memcmp(c->buf, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "load: refused: %.*s\n", 40, c->buf);
        exit(1);
      }
      c->start = head + 4 - c->buf;
      break;
    }
  }
  if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) < 0) die("nonblock");
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
  if (epoll_ctl(epoll, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Reads and parses what `c` has waiting. */
static void read_all(Client *c) {
  for (;;) {
    if (c->end == c->cap) {
      if (c->start > 0) {
        memmove(c->buf, c->buf + c->start, c->end - c->start);
        c->end -= c->start;
        c->start = 0;
      } else {
        c->cap *= 2;
        c->buf = realloc(c->buf, c->cap);
      }
    }
    ssize_t r = read(c->fd, c->buf + c->end, c->cap - c->end);
    if (r <= 0) return;
    c->end += r;
    parse(c);
    if (r < (ssize_t)READ_SIZE / 2) return;
  }
}

/* Runs the event loop until `until` (µs, as now_us). */
static void run_until(int epoll, Client *clients, double until) {
  struct epoll_event events[256];
  while (now_us() < until) {
    int timeout = (int)((until - now_us()) / 1000) + 1;
    int n = epoll_wait(epoll, events, 256, timeout > 50 ? 50 : timeout);
    /* Senders in a first pass, each one's next messages written at once;
       receivers in a second. */
    for (int pass = 0; pass < 2; pass++) {
      for (int i = 0; i < n; i++) {
        Client *c = events[i].data.ptr;
        if (c->sender != (pass == 0)) continue;
        read_all(c);
        if (c->out_len > 0) flush(c);
      }
    }
    /* What a full socket buffer held back. */
    for (int s = 0; s < nsenders; s++) {
      if (clients[s].out_len > 0) flush(&clients[s]);
    }
  }
}

int main(int argc, char **argv) {
  if (argc != 11) {
    fprintf(stderr,
            "usage: load PORT CLIENTS SENDERS BATCH SECONDS WINDOW SIZE RELAY SERVER_PID WARMUP_MS\n");
    return 2;
  }
  port = atoi(argv[1]);
  nclients = atoi(argv[2]);
  nsenders = atoi(argv[3]);
  batch = atoi(argv[4]);
  seconds = atoi(argv[5]);
  window_size = atoi(argv[6]);
  size = atoi(argv[7]);
  relay = atoi(argv[8]);
  server_pid = atoi(argv[9]);
  warmup_ms = atoi(argv[10]);
  line_length = 5 + size;
  t_start = 0;
  t_start = now_us();
  double cpu0 = self_cpu(), wall0 = now_us();
  latencies = malloc(sizeof(double) * MAX_LATENCIES);
  int epoll = epoll_create1(0);
  if (epoll < 0) die("epoll_create1");
  Client *clients = calloc(nclients, sizeof(Client));
  for (int i = 0; i < nclients; i++) {
    Client *c = &clients[i];
    c->sender = i < nsenders;
    if (c->sender) snprintf(c->name, sizeof c->name, "s%02d", i);
    else snprintf(c->name, sizeof c->name, "r%d", i - nsenders);
    connect_client(c, epoll);
    parse(c);
  }
  run_until(epoll, clients, now_us() + 300e3); /* joins and welcomes settle */
  int low_water = RECEIVER_LOW_WATER;
  for (int i = nsenders; i < nclients; i++) {
    if (setsockopt(clients[i].fd, SOL_SOCKET, SO_RCVLOWAT, &low_water, sizeof low_water) < 0) {
      die("SO_RCVLOWAT");
    }
  }
  measuring = 1;
  for (int s = 0; s < nsenders; s++) {
    for (int k = 0; k < window_size; k++) queue_message(&clients[s]);
    flush(&clients[s]);
  }
  run_until(epoll, clients, now_us() + warmup_ms * 1e3); /* warm-up */
  uint64_t before = deliveries;
  nlatencies = 0;
  double cpu_before = server_cpu(), t0 = now_us();
  run_until(epoll, clients, t0 + seconds * 1e6);
  double elapsed = (now_us() - t0) / 1e6;
  uint64_t delivered = deliveries - before;
  double server = server_cpu() - cpu_before;
  qsort(latencies, nlatencies, sizeof(double), cmp);
  double p50 = nlatencies ? latencies[(size_t)(0.50 * nlatencies)] / 1000 : -1;
  double p99 = nlatencies ? latencies[(size_t)(0.99 * nlatencies)] / 1000 : -1;
  double generator = (self_cpu() - cpu0) / ((now_us() - wall0) / 1e6);
  printf("{\"deliveriesPerSecond\":%.1f,\"p50\":%.3f,\"p99\":%.3f,"
         "\"cpuPerDelivery\":%.4f,\"generatorCpu\":%.3f}\n",
         delivered / elapsed, p50, p99,
         server_pid > 0 && delivered ? server * 1e6 / delivered : -1, generator);
  return 0;
}

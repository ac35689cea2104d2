/* The seed echo server, fixed, in C: what the Python reference solution does, with the
 * calls Python hides.
 *
 * Build: cc -O2 -Wall -o echo_server docs/instructor/assignment/solution.c
 * Usage: echo_server [--host 127.0.0.1] [--port 8888]
 * Grade: muxlab grade ./echo_server   (the grader runs any executable that takes these options)
 *
 * Edge-triggered epoll (epoll(7)), every socket non-blocking (accept4 SOCK_NONBLOCK):
 * - accept until EAGAIN; EMFILE stops this round, the next arrival reports the listener;
 * - read until EAGAIN, end of file, a per-event budget (READ_BUDGET, so one client that
 *   never pauses cannot starve the others: epoll(7), "Possible pitfalls", starvation) or
 *   the output bound (MAX_OUTBOX: backpressure); a connection stopped by its budget goes
 *   on a run queue served after the batch, with a zero wait timeout;
 * - write with send until EAGAIN (send(2) may take part), the rest on EPOLLOUT;
 * - events are tested by bit, and a connection is closed only on what read and send
 *   return (0, ECONNRESET, EPIPE), never on the event bits alone: a stale event for a
 *   descriptor closed and reused earlier in the batch then costs one EAGAIN, nothing more;
 * - every connection record is freed when its connection closes.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
    READ_BYTES = 65536,
    READ_BUDGET = 256 * 1024,
    MAX_OUTBOX = 1 << 20,
    MAX_EVENTS = 256,
    BACKLOG = 1024,
};

struct conn {
    int fd;
    char *buf;     /* pending output is buf[off, end) */
    size_t off, end, cap;
    int peer_done; /* end of file read: close once the output is sent */
    int queued;    /* on the run queue */
    uint32_t interest;
};

static int ep = -1;
static int listener = -1;
static struct conn **conns; /* indexed by descriptor number */
static size_t conns_cap;
static int *runq;
static size_t runq_len, runq_cap;

static void die(const char *what) {
    perror(what);
    exit(1);
}

static size_t pending(const struct conn *c) { return c->end - c->off; }

static void close_conn(struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL); /* before close: see muxlab demo dup-fork */
    close(c->fd);
    conns[c->fd] = NULL;
    free(c->buf);
    free(c);
}

static void set_interest(struct conn *c) {
    int reading = !c->peer_done && pending(c) < MAX_OUTBOX;
    uint32_t want = (reading ? EPOLLIN | EPOLLRDHUP : 0) | (pending(c) ? EPOLLOUT : 0);
    if (want != c->interest) {
        struct epoll_event ev = {.events = want | EPOLLET, .data.fd = c->fd};
        if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0) die("epoll_ctl MOD");
        c->interest = want;
    }
}

static void enqueue(struct conn *c) {
    if (c->queued) return;
    if (runq_len == runq_cap) {
        runq_cap = runq_cap ? 2 * runq_cap : 64;
        runq = realloc(runq, runq_cap * sizeof *runq);
        if (!runq) die("realloc");
    }
    runq[runq_len++] = c->fd;
    c->queued = 1;
}

/* Returns 0 when the connection was closed (c is freed). */
static int flush(struct conn *c) {
    int was_full = pending(c) >= MAX_OUTBOX;
    while (pending(c)) {
        ssize_t n = send(c->fd, c->buf + c->off, pending(c), MSG_NOSIGNAL);
        if (n > 0) {
            c->off += (size_t)n;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else if (errno != EINTR) {
            close_conn(c);
            return 0;
        }
    }
    if (!pending(c)) c->off = c->end = 0;
    if (c->peer_done && !pending(c)) {
        close_conn(c);
        return 0;
    }
    set_interest(c);
    if (was_full && pending(c) < MAX_OUTBOX) enqueue(c); /* ET will not report it again */
    return 1;
}

static int make_room(struct conn *c) {
    if (c->off > 0) { /* compact: pending output to the front */
        memmove(c->buf, c->buf + c->off, pending(c));
        c->end -= c->off;
        c->off = 0;
    }
    if (c->cap - c->end >= READ_BYTES) return 1;
    size_t cap = c->end + READ_BYTES;
    char *buf = realloc(c->buf, cap);
    if (!buf) return 0;
    c->buf = buf;
    c->cap = cap;
    return 1;
}

static int read_some(struct conn *c) {
    size_t budget = READ_BUDGET;
    while (budget > 0 && pending(c) < MAX_OUTBOX && !c->peer_done) {
        if (!make_room(c)) {
            close_conn(c);
            return 0;
        }
        ssize_t n = recv(c->fd, c->buf + c->end, READ_BYTES, 0);
        if (n > 0) {
            c->end += (size_t)n;
            budget = (size_t)n >= budget ? 0 : budget - (size_t)n;
        } else if (n == 0) {
            c->peer_done = 1;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return flush(c);
        } else if (errno != EINTR) {
            close_conn(c);
            return 0;
        }
    }
    if (budget == 0 && !c->peer_done && pending(c) < MAX_OUTBOX) enqueue(c);
    return flush(c);
}

static void accept_all(void) {
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return; /* EAGAIN: done; EMFILE etc.: the next arrival reports again */
        if ((size_t)fd >= conns_cap) {
            size_t cap = (size_t)fd * 2 + 64;
            struct conn **grown = realloc(conns, cap * sizeof *grown);
            if (!grown) die("realloc");
            memset(grown + conns_cap, 0, (cap - conns_cap) * sizeof *grown);
            conns = grown;
            conns_cap = cap;
        }
        struct conn *c = calloc(1, sizeof *c);
        if (!c) die("calloc");
        c->fd = fd;
        c->interest = EPOLLIN | EPOLLRDHUP;
        struct epoll_event ev = {.events = c->interest | EPOLLET, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd); /* ENOMEM/ENOSPC: this connection only */
            free(c);
            continue;
        }
        conns[fd] = c;
    }
}

static void run_queue(void) {
    size_t n = runq_len;
    int *batch = malloc(n * sizeof *batch);
    if (!batch) die("malloc");
    memcpy(batch, runq, n * sizeof *batch);
    runq_len = 0;
    for (size_t i = 0; i < n; i++) {
        struct conn *c = (size_t)batch[i] < conns_cap ? conns[batch[i]] : NULL;
        if (c && c->queued) {
            c->queued = 0;
            read_some(c);
        }
    }
    free(batch);
}

static void serve_forever(void) {
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, events, MAX_EVENTS, runq_len ? 0 : -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            uint32_t ev = events[i].events;
            if (fd == listener) {
                accept_all();
                continue;
            }
            struct conn *c = (size_t)fd < conns_cap ? conns[fd] : NULL;
            if (!c) continue; /* closed earlier in this batch */
            if ((ev & EPOLLOUT) && !flush(c)) continue;
            if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) read_some(c);
        }
        if (runq_len) run_queue();
    }
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 8888;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--host") == 0 && i + 1 < argc) {
            host = argv[++i];
        } else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            port = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--host ADDR] [--port PORT]\n", argv[0]);
            return 2;
        }
    }
    struct rlimit lim; /* lift the soft descriptor limit to the hard one (getrlimit(2)) */
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "%s: not an IPv4 address: %s\n", argv[0], host);
        return 2;
    }
    int one = 1;
    listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listener < 0) die("socket");
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0) die("bind");
    if (listen(listener, BACKLOG) != 0) die("listen");
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = listener};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev) != 0) die("epoll_ctl ADD");
    serve_forever();
}

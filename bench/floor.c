/*
 * forestgate-floor: the least relay. The floor every proxy is measured against.
 *
 *   forestgate-floor --listen 127.0.0.1:PORT --backend 127.0.0.1:PORT --mode splice|copy
 *
 * One thread, one edge-triggered epoll. Each accepted client gets one backend
 * connection (a non-blocking connect), then bytes move both ways with no
 * protocol at all:
 *
 *   splice  socket -> pipe -> socket, one 64 KiB pipe per direction
 *           (SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
 *   copy    recv/send through a 64 KiB buffer per direction.
 *
 * Each socket is registered once, for input and output, edge-triggered, and
 * never modified again. As in nginx, each socket keeps two flags, readable and
 * writable: an edge sets them, a short read or write or an EAGAIN clears them,
 * so that no call is made that the kernel would answer with EAGAIN (bar one
 * case in splice mode, see floor_pump). Any event on a socket pumps both
 * directions of its pair as far as the flags allow; a direction whose
 * destination is full stops there, and the destination's EPOLLOUT edge pumps
 * it again. A source's end of file is passed on as shutdown(SHUT_WR) once its
 * bytes are out; the pair closes when both directions ended, or on the first
 * error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define FLOOR_CHUNK  65536 /* pipe size and buffer size, per direction */
#define FLOOR_EVENTS 256

enum floor_mode { FLOOR_SPLICE, FLOOR_COPY };

struct floor_pair;

/* One socket of a pair; epoll events point at it (NULL: the listener). */
struct floor_end {
    struct floor_pair *pair;
    int fd;
    bool readable; /* an edge said so, and no read came back short since */
    bool writable; /* an edge said so, and no write came back short since */
    bool rdhup;    /* the peer's end of file (or an error) is queued behind the bytes */
};

/* One direction: bytes read from `from`, held in a pipe or a buffer, written to `to`. */
struct floor_dir {
    struct floor_end *from, *to;
    int pipe[2]; /* splice: [0] read end, [1] write end */
    char *buf;   /* copy: FLOOR_CHUNK bytes */
    size_t off;  /* copy: first byte held */
    size_t held; /* bytes in the pipe or the buffer, not yet written */
    bool eof;    /* `from` said end of file */
    bool shut;   /* shutdown(to, SHUT_WR) done */
};

struct floor_pair {
    struct floor_end end[2]; /* [0] client, [1] backend */
    struct floor_dir dir[2]; /* [0] client -> backend, [1] backend -> client */
    bool connecting;         /* the backend's connect is in flight */
    bool dead;               /* closed; freed after this epoll batch */
    struct floor_pair *next_dead;
};

static enum floor_mode mode;
static struct sockaddr_storage backend_addr;
static socklen_t backend_len;
static int ep;
static struct floor_pair *dead_list;

static int floor_parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[128];
    const char *colon = strrchr(text, ':');
    if (!colon || (size_t)(colon - text) >= sizeof(host))
        return -1;
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = 0;
    char *h = host;
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h[hl - 1] = 0;
        h++;
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port <= 0 || port > 65535)
        return -1;
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, h, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof(*a4);
        return 0;
    }
    if (inet_pton(AF_INET6, h, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*a6);
        return 0;
    }
    return -1;
}

/* The kernel's own defaults would do; NODELAY because a relay must not hold
 * back the last small segment of a reply (every proxy measured sets it). */
static void floor_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Reads up to room bytes from d->from. Returns bytes read, 0 at end of file, -1 with errno. */
static ssize_t floor_fill(struct floor_dir *d, size_t room)
{
    if (mode == FLOOR_SPLICE)
        return splice(d->from->fd, NULL, d->pipe[1], NULL, room, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    return recv(d->from->fd, d->buf + d->off + d->held, room, 0);
}

/* Writes what is held to d->to. Returns bytes written, -1 with errno. */
static ssize_t floor_drain(struct floor_dir *d)
{
    if (mode == FLOOR_SPLICE)
        return splice(d->pipe[0], NULL, d->to->fd, NULL, d->held,
                      SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    ssize_t n = send(d->to->fd, d->buf + d->off, d->held, MSG_NOSIGNAL);
    if (n > 0)
        d->off += (size_t)n;
    return n;
}

/*
 * Moves bytes until neither side can go on: the source is not readable (or
 * ended) or the holder is full, and nothing is held or the destination is not
 * writable. A short recv means the socket is empty, its next edge says when
 * there is more; unless the end of file was seen (EPOLLRDHUP): then it waits
 * behind the bytes, and only the next read returns it. In splice mode a short read, or EAGAIN, may
 * instead mean that the pipe is full before FLOOR_CHUNK bytes (a slot per segment): the source
 * counts as empty only when splice says EAGAIN to an empty pipe, the one call
 * that may find nothing to do.
 * Returns 0, or -1 on an error of either socket.
 */
static int floor_pump(struct floor_dir *d)
{
    for (;;) {
        bool moved = false;
        size_t room = FLOOR_CHUNK - d->held - (mode == FLOOR_COPY ? d->off : 0);
        if (!d->eof && d->from->readable && room > 0) {
            ssize_t n = floor_fill(d, room);
            if (n > 0) {
                d->held += (size_t)n;
                moved = true;
                if (mode == FLOOR_COPY && (size_t)n < room && !d->from->rdhup)
                    d->from->readable = false;
            } else if (n == 0) {
                d->eof = true;
            } else if (errno == EAGAIN) {
                if (mode == FLOOR_COPY || d->held == 0)
                    d->from->readable = false;
            } else if (errno != EINTR) {
                return -1;
            }
        }
        if (d->held > 0 && d->to->writable) {
            ssize_t n = floor_drain(d);
            if (n > 0) {
                if ((size_t)n < d->held)
                    d->to->writable = false; /* its send buffer is full */
                d->held -= (size_t)n;
                if (d->held == 0)
                    d->off = 0; /* copy: the buffer is empty, fill it from its start */
                moved = true;
            } else if (errno == EAGAIN) {
                d->to->writable = false;
            } else if (errno != EINTR) {
                return -1;
            }
        }
        if (!moved)
            break;
    }
    if (d->eof && d->held == 0 && !d->shut) {
        /* The source ended and all its bytes are out: pass the end on. */
        if (shutdown(d->to->fd, SHUT_WR) < 0 && errno != ENOTCONN)
            return -1;
        d->shut = true;
    }
    return 0;
}

/* Closes both sockets and the pipes now; the memory goes after the epoll
 * batch, which may still hold an event that points at this pair. */
static void floor_close(struct floor_pair *p)
{
    if (p->dead)
        return;
    p->dead = true;
    for (int i = 0; i < 2; i++) {
        close(p->end[i].fd);
        struct floor_dir *d = &p->dir[i];
        if (d->pipe[0] >= 0) {
            close(d->pipe[0]);
            close(d->pipe[1]);
        }
    }
    p->next_dead = dead_list;
    dead_list = p;
}

static void floor_free_dead(void)
{
    while (dead_list) {
        struct floor_pair *p = dead_list;
        dead_list = p->next_dead;
        free(p->dir[0].buf);
        free(p->dir[1].buf);
        free(p);
    }
}

/* An event on socket e: note what it says, finish the connect, pump both ways. */
static void floor_event(struct floor_end *e, uint32_t events)
{
    struct floor_pair *p = e->pair;
    if (p->dead)
        return;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        e->readable = true; /* the read says what: bytes, end of file or the error */
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        e->rdhup = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        e->writable = true;
    if (p->connecting) {
        if (e == &p->end[0])
            return; /* the client's bytes wait in its socket until the backend is up */
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(e->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            fprintf(stderr, "forestgate-floor: connect to the backend: %s\n", strerror(err));
            floor_close(p);
            return;
        }
        if (!(events & EPOLLOUT))
            return;
        p->connecting = false;
    }
    if (floor_pump(&p->dir[0]) < 0 || floor_pump(&p->dir[1]) < 0 ||
        (p->dir[0].shut && p->dir[1].shut))
        floor_close(p);
}

static int floor_add(struct floor_end *e)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = e};
    return epoll_ctl(ep, EPOLL_CTL_ADD, e->fd, &ev);
}

static int floor_dir_init(struct floor_dir *d, struct floor_end *from, struct floor_end *to)
{
    d->from = from;
    d->to = to;
    if (mode == FLOOR_COPY) {
        d->buf = malloc(FLOOR_CHUNK);
        return d->buf ? 0 : -1;
    }
    if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) < 0)
        return -1;
    if (fcntl(d->pipe[1], F_SETPIPE_SZ, FLOOR_CHUNK) < 0)
        return -1;
    return 0;
}

/* A new client: its pair, the backend's connect started, both sockets watched. */
static void floor_accepted(int cfd)
{
    struct floor_pair *p = calloc(1, sizeof(*p));
    int bfd = socket(backend_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (!p || bfd < 0) {
        fprintf(stderr, "forestgate-floor: %s\n", strerror(p ? errno : ENOMEM));
        free(p);
        close(cfd);
        if (bfd >= 0)
            close(bfd);
        return;
    }
    p->end[0] = (struct floor_end){.pair = p, .fd = cfd, .writable = true};
    p->end[1] = (struct floor_end){.pair = p, .fd = bfd};
    p->dir[0].pipe[0] = p->dir[1].pipe[0] = -1;
    p->dir[0].pipe[1] = p->dir[1].pipe[1] = -1;
    floor_nodelay(cfd);
    floor_nodelay(bfd);
    if (floor_dir_init(&p->dir[0], &p->end[0], &p->end[1]) < 0 ||
        floor_dir_init(&p->dir[1], &p->end[1], &p->end[0]) < 0)
        goto fail;
    p->connecting = true;
    if (connect(bfd, (struct sockaddr *)&backend_addr, backend_len) < 0 && errno != EINPROGRESS)
        goto fail;
    /* Added ready, a socket reports at once what it already has. */
    if (floor_add(&p->end[0]) < 0 || floor_add(&p->end[1]) < 0)
        goto fail;
    return;
fail:
    fprintf(stderr, "forestgate-floor: new pair: %s\n", strerror(errno));
    floor_close(p);
}

static void floor_accept_all(int lfd)
{
    for (;;) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd >= 0) {
            floor_accepted(cfd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno != EAGAIN)
            /* EMFILE and the like: the waiting clients stay queued until the
             * next one arrives (edge-triggered); a benchmark sizes its limits. */
            fprintf(stderr, "forestgate-floor: accept: %s\n", strerror(errno));
        return;
    }
}

static int floor_listen(const struct sockaddr_storage *ss, socklen_t len)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)ss, len) < 0 || listen(fd, 4096) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int floor_usage(FILE *f, int rc)
{
    fprintf(f, "usage: forestgate-floor --listen ADDR:PORT --backend ADDR:PORT "
               "--mode splice|copy\n"
               "  the least relay: one thread, edge-triggered epoll, bytes both ways, "
               "no protocol\n");
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"backend", required_argument, NULL, 'b'},
                                         {"mode", required_argument, NULL, 'm'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    struct sockaddr_storage listen_addr;
    socklen_t listen_len = 0;
    const char *mode_name = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'l' && floor_parse_addr(optarg, &listen_addr, &listen_len) == 0)
            continue;
        if (c == 'b' && floor_parse_addr(optarg, &backend_addr, &backend_len) == 0)
            continue;
        if (c == 'm') {
            mode_name = optarg;
            continue;
        }
        if (c == 'h')
            return floor_usage(stdout, 0);
        if (c == 'l' || c == 'b')
            fprintf(stderr, "forestgate-floor: not an ADDR:PORT: '%s'\n", optarg);
        return floor_usage(stderr, 2);
    }
    if (optind != argc || !listen_len || !backend_len || !mode_name)
        return floor_usage(stderr, 2);
    if (strcmp(mode_name, "splice") == 0)
        mode = FLOOR_SPLICE;
    else if (strcmp(mode_name, "copy") == 0)
        mode = FLOOR_COPY;
    else
        return floor_usage(stderr, 2);

    signal(SIGPIPE, SIG_IGN); /* splice into a reset socket raises it; send has MSG_NOSIGNAL */
    int lfd = floor_listen(&listen_addr, listen_len);
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN | EPOLLET, .data.ptr = NULL};
    if (lfd < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) {
        fprintf(stderr, "forestgate-floor: listen: %s\n", strerror(errno));
        return 1;
    }
    fprintf(stderr, "forestgate-floor: relaying, mode %s\n", mode_name);
    struct epoll_event evs[FLOOR_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, evs, FLOOR_EVENTS, -1);
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "forestgate-floor: epoll_wait: %s\n", strerror(errno));
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct floor_end *e = evs[i].data.ptr;
            if (!e)
                floor_accept_all(lfd);
            else
                floor_event(e, evs[i].events);
        }
        floor_free_dead();
    }
}

/*
 * The metrics listener's sockets: accept, read the head, answer, close.
 * See metrics_http.h.
 */
#include "metrics_http.h"

#include "../base/log.h"
#include "../proto/http_parse.h"
#include "metrics.h"
#include "stats.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

enum mh_state { MH_READ, MH_WRITE, MH_LINGER };

struct mh_client {
    struct ev_handler h;
    struct fg_list node;
    struct metrics_http *m;
    uint8_t state;     /* enum mh_state */
    uint64_t accepted; /* ms */
    char *out;         /* the answer, headers and body */
    size_t out_len, out_off;
    struct http_parse p;
};

static void mh_client_free(struct mh_client *c)
{
    ev_del(c->m->loop, &c->h);
    close(c->h.fd);
    fg_list_del(&c->node);
    c->m->nclients--;
    free(c->out);
    free(c);
}

/* The body for a status other than 200. */
static const char *mh_reason(unsigned status)
{
    switch (status) {
    case 200:
        return "OK";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 431:
        return "Request Header Fields Too Large";
    default:
        return "Bad Request";
    }
}

/* Builds the whole answer in c->out. FG_OK, or FG_ERROR out of memory. */
static int mh_answer(struct mh_client *c, unsigned status, bool head_only)
{
    char *body = NULL, hdr[256];
    size_t blen = 0;
    FILE *f = open_memstream(&body, &blen);
    if (!f)
        return FG_ERROR;
    if (status == 200)
        metrics_render(c->m->st, f);
    else
        fprintf(f, "%u %s\n", status, mh_reason(status));
    if (fclose(f) != 0) {
        free(body);
        return FG_ERROR;
    }
    int n = snprintf(hdr, sizeof hdr,
                     "HTTP/1.1 %u %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                     "Connection: close\r\n\r\n",
                     status, mh_reason(status),
                     status == 200 ? METRICS_CONTENT_TYPE : "text/plain; charset=utf-8", blen,
                     status == 405 ? "Allow: GET, HEAD\r\n" : "");
    size_t total = (size_t)n + (head_only ? 0 : blen);
    if (!(c->out = malloc(total))) {
        free(body);
        return FG_ERROR;
    }
    memcpy(c->out, hdr, (size_t)n);
    if (!head_only)
        memcpy(c->out + n, body, blen);
    free(body);
    c->out_len = total;
    return FG_OK;
}

/* 404 for another path, 405 for another method on /metrics. */
static unsigned mh_route(const struct http_parse *p)
{
    if (!http_parse_path_is(p, "/metrics"))
        return 404;
    return p->method == HTTP_OTHER ? 405 : 200;
}

/* Writes what the socket takes; once all is out, half-closes and drains
 * what the client still sends (a close with unread bytes would reset the
 * connection, and could take the answer's tail with it). */
static void mh_write(struct mh_client *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->h.fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            mh_client_free(c);
            return;
        }
        c->out_off += (size_t)n;
    }
    shutdown(c->h.fd, SHUT_WR);
    c->state = MH_LINGER;
    if (ev_mod(c->m->loop, &c->h, EPOLLIN) != FG_OK)
        mh_client_free(c);
}

static void mh_respond(struct mh_client *c, unsigned status)
{
    if (mh_answer(c, status, status == 200 && c->p.method == HTTP_HEAD) != FG_OK) {
        mh_client_free(c);
        return;
    }
    c->state = MH_WRITE;
    if (ev_mod(c->m->loop, &c->h, EPOLLOUT) != FG_OK) {
        mh_client_free(c);
        return;
    }
    mh_write(c);
}

/* Reads what has come, at most one buffer per readiness: a client that
 * streams cannot hold the main thread. */
static void mh_read(struct mh_client *c)
{
    char buf[1024];
    size_t used;
    ssize_t n = recv(c->h.fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0 || c->state == MH_LINGER) {
        if (n <= 0)
            mh_client_free(c);
        return;
    }
    switch (http_parse_feed(&c->p, buf, (size_t)n, &used)) {
    case HTTP_AGAIN:
        return;
    case HTTP_DONE:
        mh_respond(c, mh_route(&c->p));
        return;
    case HTTP_ERROR:
        mh_respond(c, c->p.status);
        return;
    }
}

static void mh_client_event(struct ev_handler *h, uint32_t events)
{
    struct mh_client *c = FG_CONTAINER_OF(h, struct mh_client, h);
    if (c->state == MH_WRITE && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
        mh_write(c);
    else if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        mh_read(c);
}

static void mh_add_client(struct metrics_http *m, int fd)
{
    struct mh_client *c = m->nclients < METRICS_HTTP_CLIENTS ? calloc(1, sizeof *c) : NULL;
    if (!c) {
        close(fd);
        return;
    }
    c->h.fd = fd;
    c->h.fn = mh_client_event;
    c->m = m;
    c->accepted = ev_now_ms();
    http_parse_init(&c->p);
    if (ev_add(m->loop, &c->h, EPOLLIN) != FG_OK) {
        close(fd);
        free(c);
        return;
    }
    fg_list_add_tail(&m->clients, &c->node);
    m->nclients++;
}

static void mh_accept(struct ev_handler *h, uint32_t events FG_UNUSED)
{
    struct metrics_listener *l = FG_CONTAINER_OF(h, struct metrics_listener, h);
    for (int i = 0; i < 64; i++) {
        int fd = accept4(h->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            mh_add_client(l->m, fd);
            continue;
        }
        if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS) {
            /* The socket stays readable: stop watching it until the tick. */
            ev_del(l->m->loop, h);
            l->paused = true;
        }
        if (errno != EINTR && errno != ECONNABORTED)
            return;
    }
}

/* Closes the clients past their deadline, and resumes paused listeners. */
static void mh_tick(struct ev_tick *t, uint64_t now)
{
    struct metrics_http *m = FG_CONTAINER_OF(t, struct metrics_http, tick);
    struct fg_list *pos, *tmp;
    fg_list_for_each_safe(pos, tmp, &m->clients) {
        struct mh_client *c = FG_CONTAINER_OF(pos, struct mh_client, node);
        uint64_t limit = c->state == MH_READ ? METRICS_HTTP_REQUEST_MS : METRICS_HTTP_TOTAL_MS;
        if (now - c->accepted >= limit)
            mh_client_free(c);
    }
    for (unsigned i = 0; i < m->nls; i++)
        if (m->ls[i].paused && ev_add(m->loop, &m->ls[i].h, EPOLLIN) == FG_OK)
            m->ls[i].paused = false;
}

static int mh_listen(struct metrics_http *m, const union net_addr *a)
{
    char name[64];
    int one = 1;
    net_addr_str(a, name, sizeof name);
    int fd = socket(a->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, &a->sa, net_addr_len(a)) < 0 || listen(fd, 64) < 0) {
        log_msg(LOG_ERROR, "metrics", "MetricsBinding: cannot listen on %s: %s", name,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        return FG_ERROR;
    }
    struct metrics_listener *l = &m->ls[m->nls];
    l->h.fd = fd;
    l->h.fn = mh_accept;
    l->m = m;
    l->paused = false;
    if (ev_add(m->loop, &l->h, EPOLLIN) != FG_OK) {
        log_msg(LOG_ERROR, "metrics", "MetricsBinding %s: epoll: %s", name, strerror(errno));
        close(fd);
        return FG_ERROR;
    }
    m->nls++;
    log_msg(LOG_INFO, "metrics_listening", "GET http://%s/metrics", name);
    return FG_OK;
}

int metrics_http_open(struct metrics_http *m, struct evloop *l, const struct bindings *b,
                      const struct stats *st)
{
    memset(m, 0, sizeof *m);
    m->loop = l;
    m->st = st;
    fg_list_init(&m->clients);
    fg_list_init(&m->tick.node);
    if (b->n == 0)
        return FG_OK;
    m->tick.fn = mh_tick;
    ev_tick_add(l, &m->tick);
    for (unsigned i = 0; i < b->n; i++)
        if (mh_listen(m, &b->a[i]) != FG_OK)
            return FG_ERROR;
    return FG_OK;
}

void metrics_http_close(struct metrics_http *m)
{
    if (!m->loop)
        return;
    while (!fg_list_empty(&m->clients))
        mh_client_free(FG_CONTAINER_OF(m->clients.next, struct mh_client, node));
    for (unsigned i = 0; i < m->nls; i++) {
        if (!m->ls[i].paused)
            ev_del(m->loop, &m->ls[i].h);
        close(m->ls[i].h.fd);
    }
    m->nls = 0;
    if (m->tick.fn)
        ev_tick_del(&m->tick);
    m->loop = NULL;
}

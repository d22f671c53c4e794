/*
 * MetricsBinding's HTTP listener: GET /metrics for Prometheus, served on the
 * main thread's event loop (evloop.h) without ever blocking it. Each client
 * is a small state machine: its request head is read as it comes
 * (proto/http_parse.h) within METRICS_HTTP_REQUEST_MS, the answer written
 * as the socket takes it, then the connection closed. A slow or silent
 * client costs a descriptor and a few hundred bytes until its deadline,
 * never a wait; past METRICS_HTTP_CLIENTS the newest connections are closed
 * at once.
 */
#ifndef FG_METRICS_HTTP_H
#define FG_METRICS_HTTP_H

#include "../base/common.h"
#include "config.h"
#include "evloop.h"

#define METRICS_HTTP_CLIENTS    256
#define METRICS_HTTP_REQUEST_MS 5000  /* from accept to the request's last header */
#define METRICS_HTTP_TOTAL_MS   15000 /* from accept to closed: a slow reader of the answer */

struct stats;

struct metrics_listener {
    struct ev_handler h;
    struct metrics_http *m;
    bool paused; /* out of descriptors: watched again at the next tick */
};

struct metrics_http {
    struct evloop *loop;
    const struct stats *st;
    struct metrics_listener ls[CFG_MAX_BINDINGS];
    unsigned nls;
    struct fg_list clients;
    unsigned nclients;
    struct ev_tick tick;
};

/* Listens on every address of b (none: nothing to do). FG_OK, or FG_ERROR
 * after logging why; metrics_http_close is safe either way. */
int metrics_http_open(struct metrics_http *m, struct evloop *l, const struct bindings *b,
                      const struct stats *st);

/* Closes the listeners and every client. */
void metrics_http_close(struct metrics_http *m);

#endif

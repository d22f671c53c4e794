/*
 * The stats socket's server, on the main thread's event loop: a Unix
 * socket that answers one command per connection, in the manner of
 * HAProxy's (so socat works as a client, and so does "forestgate ctl").
 *
 * Nothing a client does can hold up the main thread, and with it signal
 * handling: sockets are non-blocking, a command must arrive whole within
 * STATSRV_READ_MS, an answer that the client does not read within
 * STATSRV_WRITE_MS is dropped, and at most STATSRV_MAX_CLIENTS are served
 * at once. Commands that need the workers (show sessions, kick) are posted
 * to them and answered when the last one has replied (wcmd.h).
 */
#ifndef FG_STATSRV_H
#define FG_STATSRV_H

#include "evloop.h"
#include "stats.h"

#define STATSRV_MAX_CLIENTS 64
#define STATSRV_LINE_MAX    1024
#define STATSRV_READ_MS     10000
#define STATSRV_WRITE_MS    30000

struct statsrv;

struct wcmd;

/* What the main thread does for "reload" and "drain [SECONDS]": each writes
 * its answer (one or more lines; an error line starts with "error:"). drain
 * may return the command it posted to the workers (done_fd its eventfd):
 * the answer then goes out once they have all run it, and the server frees
 * it. */
struct statsrv_hooks {
    void (*reload)(void *ctx, FILE *out);
    struct wcmd *(*drain)(void *ctx, const char *arg, int done_fd, FILE *out);
    void *ctx;
};

struct statsrv {
    struct stats *st;
    struct evloop *loop;
    struct statsrv_hooks hooks;
    struct ev_handler listen; /* the socket */
    struct ev_handler done;   /* eventfd: workers answered a command */
    struct ev_tick tick;      /* deadlines, and a paused listener */
    struct fg_list clients;   /* struct statsrv_client */
    struct fg_list orphans;   /* commands whose client left before the workers answered */
    unsigned nclients;
    uint64_t paused_until_ms; /* out of descriptors: the listener rests */
    char path[108];
};

/* Listens on path; FG_OK, or FG_ERROR after logging why. */
int statsrv_open(struct statsrv *sv, struct stats *st, struct evloop *loop, const char *path,
                 const struct statsrv_hooks *hooks);

/* Closes the socket and every client. Call after the workers have stopped:
 * a command still posted to one is freed here. */
void statsrv_close(struct statsrv *sv);

#endif

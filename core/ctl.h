/*
 * forestgate ctl: the stats socket's client, in the forestgate binary.
 *
 *   ctl.c        the command line, the socket path, one command and its answer
 *   ctl_watch.c  "ctl watch": the terminal loop (raw keys, signals, redraw)
 *   ctl_view.c   the watch screen as a pure function of two "show info"
 *                answers and the time between them, so a unit test checks
 *                the rates and the layout without a terminal
 */
#ifndef FG_CTL_H
#define FG_CTL_H

#include <stdbool.h>
#include <stddef.h>

#define CTL_DEFAULT_CONFIG "/etc/forestgate/forestgate.ini"
#define CTL_DEFAULT_SOCKET "/run/forestgate/stats.sock"

/* "forestgate ctl ...": argv[0] is "ctl". Returns the exit status: 0, 1 for
 * an error answer or no answer in time, 2 for a usage error or no socket. */
int ctl_main(int argc, char **argv);

/* ---- one command over the socket (ctl.c) ---- */

enum ctl_result {
    CTL_ANSWERED,   /* some bytes, then the server closed */
    CTL_EMPTY,      /* the server closed without a byte */
    CTL_NO_CONNECT, /* no socket, or nobody listening; *err_r says why */
    CTL_TIMEOUT,    /* nothing arrived for timeout_ms */
    CTL_BROKEN,     /* a read or write failed; *err_r says why */
};

/* Receives the answer as it arrives, a chunk at a time. */
typedef void ctl_sink(const char *data, size_t len, void *arg);

/* Connects to path, sends line and a newline, passes every byte of the
 * answer to sink until the server closes. timeout_ms bounds each wait for
 * the next bytes; 0 waits for ever. Never blocks in connect: a listener
 * whose backlog is full is CTL_NO_CONNECT (EAGAIN). */
enum ctl_result ctl_ask(const char *path, const char *line, int timeout_ms, ctl_sink *sink,
                        void *arg, int *err_r);

/* ---- ctl watch (ctl_watch.c) ---- */

/* argv[0] is "watch"; options -i SECONDS, -n COUNT. Returns the exit status. */
int ctl_watch(const char *path, int argc, char **argv);

/* ---- the watch screen (ctl_view.c) ---- */

#define CTL_SNAP_MAX 320

struct ctl_kv {
    char key[64];
    char val[64];
};

/* One "show info" answer: its "key: value" lines. */
struct ctl_snap {
    unsigned n;
    struct ctl_kv kv[CTL_SNAP_MAX];
};

/* Reads "key: value" lines; lines without ": " are skipped, keys and
 * values longer than the fields are cut, control bytes become '?'. Returns
 * the number of pairs kept (at most CTL_SNAP_MAX). */
unsigned ctl_snap_parse(struct ctl_snap *s, const char *text, size_t len);

/* The value of key, or NULL. */
const char *ctl_snap_get(const struct ctl_snap *s, const char *key);

/* The value of key as a number; false when absent or not a number. */
bool ctl_snap_num(const struct ctl_snap *s, const char *key, double *r);

/* Writes the screen into buf (NUL-terminated, cut at size - 1): one line per
 * row, each ending in '\n', fields wrapped to width columns. A row shows
 * only the fields whose keys cur has, and is left out when it has none.
 * Rates are the counters' deltas over dt seconds; without prev (or dt <= 0,
 * or a counter that went back, as after a restart) a rate shows as "-".
 * Returns the length of the text. */
size_t ctl_view_render(const struct ctl_snap *cur, const struct ctl_snap *prev, double dt,
                       unsigned width, char *buf, size_t size);

#endif

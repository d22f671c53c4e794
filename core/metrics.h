/*
 * Prometheus metrics: counters and histograms kept per worker, summed when
 * read, and rendered in the text exposition format (version 0.0.4) for the
 * stats socket's "show metrics" and MetricsBinding's GET /metrics.
 *
 * Every field of struct metrics_worker has one writer, its worker: an
 * increment is a relaxed load and a relaxed store (no locked instruction),
 * and a reader on another thread still sees whole values. Histograms keep
 * a count per bucket (not cumulative) and the sum in microseconds; the
 * reader accumulates.
 */
#ifndef FG_METRICS_H
#define FG_METRICS_H

#include "../base/login.h"
#include "../directory/logon_name.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

/* Adds v to (or takes v from) a counter only the calling thread writes. */
#define FG_SW_ADD(p, v)                                                                            \
    atomic_store_explicit((p), atomic_load_explicit((p), memory_order_relaxed) + (v),              \
                          memory_order_relaxed)
#define FG_SW_SUB(p, v)                                                                            \
    atomic_store_explicit((p), atomic_load_explicit((p), memory_order_relaxed) - (v),              \
                          memory_order_relaxed)

/* A connection's phase, for the connections gauge (CONN_BACKEND is login). */
enum metrics_phase { MP_PREAUTH, MP_LOGIN, MP_RELAY, MP_CLOSING, MP_COUNT };

#define METRICS_FORMS    (LN_DOMAIN_USER_ALIAS + 1)
#define METRICS_STATUSES (LOGIN_TOO_MANY + 1)
#define METRICS_BUCKETS  13 /* upper bounds in metrics.c, then +Inf */

struct metrics_hist {
    _Atomic uint64_t bucket[METRICS_BUCKETS + 1];
    _Atomic uint64_t sum_us;
};

struct metrics_worker {
    _Atomic uint32_t phase[FG_PROTO_COUNT][MP_COUNT];
    _Atomic uint64_t accepted[FG_PROTO_COUNT];
    _Atomic uint64_t logons[FG_PROTO_COUNT][METRICS_STATUSES][METRICS_FORMS];
    struct metrics_hist logon[FG_PROTO_COUNT]; /* LOGIN or PASS to the answer */
    struct metrics_hist dir;                   /* a directory request, queued to answered */
    _Atomic uint64_t backend_connects, backend_connect_failures, backend_tls_resumed;
};

/* Microseconds of CLOCK_MONOTONIC: a logon's and a directory request's clock. */
static inline uint64_t metrics_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Records a duration of us microseconds. By its single writer. */
void metrics_observe(struct metrics_hist *h, uint64_t us);

/* A logon attempt ended: counted by protocol, result and name form, with
 * its duration since started_us. */
void metrics_logon(struct metrics_worker *m, unsigned proto, enum login_status st,
                   enum logon_form form, uint64_t started_us);

/* A connection moved from phase old to phase new (MP_COUNT: none). */
static inline void metrics_phase_move(struct metrics_worker *m, unsigned proto,
                                      enum metrics_phase old, enum metrics_phase new_)
{
    if (old < MP_COUNT)
        FG_SW_SUB(&m->phase[proto][old], 1);
    if (new_ < MP_COUNT)
        FG_SW_ADD(&m->phase[proto][new_], 1);
}

struct stats;

/* Writes every metric, summed over the workers, in the text format. */
void metrics_render(const struct stats *st, FILE *out);

#endif

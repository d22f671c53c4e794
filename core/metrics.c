/*
 * The metrics' bookkeeping on the workers. See metrics.h; the rendering is
 * metrics_render.c.
 */
#include "metrics.h"

/* Bucket upper bounds: 1 ms to 10 s, for logons and directory requests. */
static const uint64_t bucket_us[METRICS_BUCKETS] = {
        1000,   2500,   5000,    10000,   25000,   50000,    100000,
        250000, 500000, 1000000, 2500000, 5000000, 10000000,
};
void metrics_observe(struct metrics_hist *h, uint64_t us)
{
    unsigned i = 0;
    while (i < METRICS_BUCKETS && us > bucket_us[i])
        i++;
    FG_SW_ADD(&h->bucket[i], 1);
    FG_SW_ADD(&h->sum_us, us);
}

void metrics_logon(struct metrics_worker *m, unsigned proto, enum login_status st,
                   enum logon_form form, uint64_t started_us)
{
    if (proto >= FG_PROTO_COUNT || (unsigned)st >= METRICS_STATUSES ||
        (unsigned)form >= METRICS_FORMS)
        return;
    FG_SW_ADD(&m->logons[proto][st][form], 1);
    uint64_t now = metrics_now_us();
    metrics_observe(&m->logon[proto], now > started_us ? now - started_us : 0);
}

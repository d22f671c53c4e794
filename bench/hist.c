#include "hist.h"

#include <string.h>

void hist_init(struct hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min_ns = UINT64_MAX;
}

unsigned hist_index(uint64_t ns)
{
    if (ns < HIST_SUB)
        return (unsigned)ns;
    unsigned msb = 63u - (unsigned)__builtin_clzll(ns);
    if (msb >= HIST_MAX_BITS)
        return HIST_BUCKETS - 1;
    unsigned shift = msb - HIST_SUB_BITS;
    unsigned sub = (unsigned)(ns >> shift) & (HIST_SUB - 1);
    return (shift + 1) * HIST_SUB + sub;
}

uint64_t hist_value(unsigned index)
{
    if (index < HIST_SUB)
        return index;
    unsigned shift = index / HIST_SUB - 1;
    uint64_t low = (uint64_t)(HIST_SUB + index % HIST_SUB) << shift;
    /* The midpoint of the bucket: half its width above the lower bound. */
    return low + ((1ull << shift) >> 1);
}

void hist_record(struct hist *h, uint64_t ns)
{
    h->b[hist_index(ns)]++;
    h->count++;
    h->sum_ns += ns;
    if (ns > h->max_ns)
        h->max_ns = ns;
    if (ns < h->min_ns)
        h->min_ns = ns;
}

void hist_merge(struct hist *into, const struct hist *from)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->b[i] += from->b[i];
    into->count += from->count;
    into->sum_ns += from->sum_ns;
    if (from->max_ns > into->max_ns)
        into->max_ns = from->max_ns;
    if (from->min_ns < into->min_ns)
        into->min_ns = from->min_ns;
}

uint64_t hist_quantile(const struct hist *h, double q)
{
    if (h->count == 0)
        return 0;
    if (q >= 1.0)
        return h->max_ns;
    /* Rank of the value wanted, 1-based: ceil(q * count), at least 1. */
    uint64_t rank = (uint64_t)(q * (double)h->count);
    if ((double)rank < q * (double)h->count)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            /* A bucket's midpoint may lie outside what was recorded. */
            if (v > h->max_ns)
                v = h->max_ns;
            if (v < h->min_ns)
                v = h->min_ns;
            return v;
        }
    }
    return h->max_ns;
}

double hist_mean(const struct hist *h)
{
    return h->count ? (double)h->sum_ns / (double)h->count : 0.0;
}

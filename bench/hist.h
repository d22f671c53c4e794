/*
 * A log-linear latency histogram in the spirit of HdrHistogram: 64 linear
 * sub-buckets per power of two, so every recorded value is kept to within
 * 1/64 (1.6 %) of itself, from 1 ns to about 18 minutes, in fixed memory.
 * Recording is one bit scan and one increment; histograms of several threads
 * are merged by adding their counts.
 */
#ifndef FGB_HIST_H
#define FGB_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 6
#define HIST_SUB      (1u << HIST_SUB_BITS)
#define HIST_MAX_BITS 40 /* 2^40 ns, about 18 minutes; larger values saturate */
#define HIST_BUCKETS  ((HIST_MAX_BITS - HIST_SUB_BITS + 1) * HIST_SUB)

struct hist {
    uint64_t count;
    uint64_t sum_ns;
    uint64_t max_ns;
    uint64_t min_ns;
    uint64_t b[HIST_BUCKETS];
};

void hist_init(struct hist *h);
void hist_record(struct hist *h, uint64_t ns);
void hist_merge(struct hist *into, const struct hist *from);
/* The smallest recorded value v such that a fraction q (0..1) of all values are <= v. */
uint64_t hist_quantile(const struct hist *h, double q);
double hist_mean(const struct hist *h);

/* Bucket index of a value and the value a bucket stands for (its midpoint). */
unsigned hist_index(uint64_t ns);
uint64_t hist_value(unsigned index);

#endif

/*
 * Prometheus's text exposition format (version 0.0.4) of every metric, for
 * the stats socket's "show metrics" and MetricsBinding's GET /metrics. The
 * counting is metrics.h, on the workers; this reads it.
 */
#ifndef FG_METRICS_RENDER_H
#define FG_METRICS_RENDER_H

#include "stats.h"

#include <stdio.h>

/* Writes every metric, summed over the workers, in the text format. */
void metrics_render(const struct stats *st, FILE *out);

#endif

/* Between base/log.c, which makes lines, and base/logq.c, which queues and
 * writes them. */
#ifndef FG_LOGQ_H
#define FG_LOGQ_H

#include "log.h"

/* Queues a whole line for its log, or counts it dropped when the queue is
 * full. Before the writer runs, an event line goes to stderr at once and a
 * protocol line nowhere. */
void logq_push(enum log_file which, const char *line, size_t n);

#endif

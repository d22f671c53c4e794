/*
 * The worker's life and its event loop: one thread, one ring, and the one
 * dispatcher that routes each completion to the phase module that owns the
 * connection's current state (client.c, login.c, relay.c), and starts the
 * next phase when one ends (conn_enter).
 *
 * This is the top of core/ below main.c: it calls every connection module,
 * and none of them calls it.
 */
#ifndef FG_WORKER_H
#define FG_WORKER_H

#include "ring.h"

/*
 * Prepares a worker: slot table, pipes, listening sockets. Returns FG_OK or
 * FG_ERROR after logging why.
 */
int worker_init(struct worker *w, unsigned id, const struct fg_config *cfg,
                struct fg_shared *shared, struct dir *dir, const struct fg_tls *tls,
                uint32_t nslots);

/* Starts the worker's thread, which sets up its ring; FG_OK once it runs. */
int worker_start(struct worker *w);

/* Asks the worker to stop; it closes its connections and its thread ends. */
void worker_stop(struct worker *w);

void worker_join(struct worker *w);
void worker_free(struct worker *w);

#endif

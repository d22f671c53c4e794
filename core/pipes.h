/*
 * Relay memory, held only while bytes are in flight: the worker's pool of
 * pipes (for splice) and a direction's copy buffer (for TLS, or when every
 * pipe is busy).
 *
 * Why a pool: an idle session holds no pipe and no buffer, only its two
 * sockets, so thousands of idle sessions cost almost nothing and stay far
 * from the open-files limit. A pipe that is empty again goes back to the
 * pool; one that still holds bytes is closed, never handed to another
 * session.
 */
#ifndef FG_PIPES_H
#define FG_PIPES_H

#include "conn_types.h"

#define RELAY_BUF_SZ  (16 * 1024)           /* a plain copy chunk */
#define RELAY_BUF_CAP (FG_TLS_CHUNK + 1024) /* or one TLS record, with its overhead */

/* The copy buffer of a direction that got no pipe, or of a TLS session,
 * while bytes are pending. */
struct relay_buf {
    uint32_t off;
    char data[RELAY_BUF_CAP];
};

/* Allocates the pool's tables for cap pipes (RelayPipes); no pipe is made
 * until one is needed. FG_OK or FG_ERROR. */
int pipes_init(struct pipe_pool *pp, uint32_t cap);

/* Closes the idle pipes and frees the tables. */
void pipes_free(struct pipe_pool *pp);

/* A pipe index for a direction, or -1 when the pool is exhausted. */
int32_t pipes_get(struct worker *w);

/* Drops what direction rd holds (its pipe, its buffer) and what was pending
 * in them. Safe on a direction that holds nothing. */
void pipes_release(struct worker *w, struct relay_dir *rd);

#endif

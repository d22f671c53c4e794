/* Relay memory: the worker's pipe pool and a direction's copy buffer. See pipes.h. */
#include "pipes.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int pipes_init(struct pipe_pool *pp, uint32_t cap)
{
    memset(pp, 0, sizeof *pp);
    pp->fds = malloc(sizeof *pp->fds * cap);
    pp->free = malloc(sizeof *pp->free * cap);
    pp->holes = malloc(sizeof *pp->holes * cap);
    if (!pp->fds || !pp->free || !pp->holes)
        return FG_ERROR;
    pp->cap = cap;
    return FG_OK;
}

void pipes_free(struct pipe_pool *pp)
{
    for (uint32_t i = 0; i < pp->nfree; i++) {
        close(pp->fds[pp->free[i]][0]);
        close(pp->fds[pp->free[i]][1]);
    }
    free(pp->fds);
    free(pp->free);
    free(pp->holes);
    memset(pp, 0, sizeof *pp);
}

/* Returns a pipe index, or -1 when the pool is exhausted. */
int32_t pipes_get(struct worker *w)
{
    struct pipe_pool *pp = &w->pipes;
    uint32_t i;

    if (pp->nfree > 0) {
        i = pp->free[--pp->nfree];
    } else {
        if (pp->nholes > 0)
            i = pp->holes[--pp->nholes];
        else if (pp->count < pp->cap)
            i = pp->count++;
        else
            return -1;
        if (pipe2(pp->fds[i], O_NONBLOCK | O_CLOEXEC) < 0) {
            pp->holes[pp->nholes++] = i;
            return -1;
        }
        fcntl(pp->fds[i][1], F_SETPIPE_SZ, FG_PIPE_SZ);
        STAT_ADD(w, pipes, 1);
    }
    STAT_ADD(w, pipes_busy, 1);
    return (int32_t)i;
}

/* Gives a pipe back. A pipe that still holds bytes is closed, not reused. */
static void pipes_put(struct worker *w, struct relay_dir *rd)
{
    struct pipe_pool *pp = &w->pipes;
    uint32_t i = (uint32_t)rd->pipe;

    if (rd->pipe < 0)
        return;
    rd->pipe = -1;
    STAT_SUB(w, pipes_busy, 1);
    if (rd->pending > 0 || pp->nfree >= FG_PIPES_IDLE) {
        close(pp->fds[i][0]);
        close(pp->fds[i][1]);
        pp->holes[pp->nholes++] = i;
        STAT_SUB(w, pipes, 1);
    } else {
        pp->free[pp->nfree++] = i;
    }
}

void pipes_release(struct worker *w, struct relay_dir *rd)
{
    pipes_put(w, rd);
    free(rd->buf);
    rd->buf = NULL;
    rd->pending = 0;
}

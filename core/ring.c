/* The worker's ring primitives: submission entries, provided receive
 * buffers, timer lists. See ring.h. */
#include "ring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define RING_SQ_ENTRIES 1024
#define RING_CQ_ENTRIES 8192

uint32_t ring_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint32_t)ts.tv_sec;
}

struct io_uring_sqe *ring_sqe(struct worker *w)
{
    struct io_uring_sqe *sqe;
    while (!(sqe = io_uring_get_sqe(&w->ring)))
        io_uring_submit(&w->ring);
    return sqe;
}

void ring_timer_touch(struct worker *w, struct ring_timer *t, enum timer_class tc)
{
    /* Within the same second the order of the list does not change. */
    if (t->list == tc && t->last == w->now)
        return;
    fg_list_del(&t->node);
    t->last = w->now;
    t->list = (uint8_t)tc;
    fg_list_add_tail(&w->tl[tc].head, &t->node);
}

void ring_timer_remove(struct ring_timer *t)
{
    fg_list_del(&t->node);
    t->list = TL_COUNT;
}

char *ring_buf(struct worker *w, struct io_uring_cqe *cqe)
{
    uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
    return w->bufs + (size_t)bid * FG_RECV_BUF_SZ;
}

void ring_buf_recycle(struct worker *w, uint16_t bid)
{
    io_uring_buf_ring_add(w->br, w->bufs + (size_t)bid * FG_RECV_BUF_SZ, FG_RECV_BUF_SZ, bid,
                          io_uring_buf_ring_mask(FG_RECV_BUFS), 0);
    io_uring_buf_ring_advance(w->br, 1);
}

static int ring_create(struct worker *w)
{
    /* Prefer one issuer and deferred task work (6.1+): completions are then
     * processed only when this thread asks, in batches. */
    static const unsigned flag_sets[] = {
            IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_COOP_TASKRUN,
            IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN,
            IORING_SETUP_COOP_TASKRUN,
            0,
    };
    int rc = -EINVAL;
    for (size_t i = 0; i < FG_ARRAY_SIZE(flag_sets); i++) {
        struct io_uring_params p = {.flags = flag_sets[i] | IORING_SETUP_CQSIZE,
                                    .cq_entries = RING_CQ_ENTRIES};
        rc = io_uring_queue_init_params(RING_SQ_ENTRIES, &w->ring, &p);
        if (rc == 0) {
            if (i > 0 && w->id == 0)
                log_msg(LOG_WARN, "io_uring", "kernel lacks some ring flags; using set %zu", i);
            return FG_OK;
        }
        if (rc != -EINVAL)
            break;
    }
    log_msg(LOG_ERROR, "io_uring", "cannot create a ring: %s", strerror(-rc));
    return FG_ERROR;
}

static int ring_buffers(struct worker *w)
{
    size_t ring_sz = FG_RECV_BUFS * sizeof(struct io_uring_buf);
    void *mem = mmap(NULL, ring_sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return FG_ERROR;
    w->br = mem;
    io_uring_buf_ring_init(w->br);
    struct io_uring_buf_reg reg = {
            .ring_addr = (uintptr_t)mem, .ring_entries = FG_RECV_BUFS, .bgid = FG_BUF_GROUP};
    int rc = io_uring_register_buf_ring(&w->ring, &reg, 0);
    if (rc < 0) {
        log_msg(LOG_ERROR, "io_uring", "cannot register the buffer ring: %s", strerror(-rc));
        return FG_ERROR;
    }
    w->bufs = malloc((size_t)FG_RECV_BUFS * FG_RECV_BUF_SZ);
    if (!w->bufs)
        return FG_ERROR;
    for (unsigned i = 0; i < FG_RECV_BUFS; i++)
        io_uring_buf_ring_add(w->br, w->bufs + (size_t)i * FG_RECV_BUF_SZ, FG_RECV_BUF_SZ,
                              (unsigned short)i, io_uring_buf_ring_mask(FG_RECV_BUFS), (int)i);
    io_uring_buf_ring_advance(w->br, FG_RECV_BUFS);
    return FG_OK;
}

int ring_setup(struct worker *w)
{
    return ring_create(w) == FG_OK && ring_buffers(w) == FG_OK ? FG_OK : FG_ERROR;
}

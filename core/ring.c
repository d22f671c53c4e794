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

#define RING_BATCH_WINDOW_MS  10
#define RING_BATCH_MIN_ACTIVE 4 /* sessions busy in a window before waits batch */
#define RING_BATCH_WANT       8
/* What a batched wait must gather, on average over a window, for waits to
 * go on batching: two completions, or 16 KiB relayed. One that ends on its
 * timer with one completion and a few bytes costs as many wake-ups as it
 * saves (two when none came), and each completion waited longer: a trickle
 * of logons does that. Large messages may bring one completion per wait, but
 * each moves more bytes for the wait (fewer splices per megabyte): they go
 * on batching. After a window that gathered too little, waits do not batch
 * for RING_BATCH_BACKOFF windows, then try again. */
#define RING_BATCH_EXPECT  2
#define RING_BATCH_BYTES   16384
#define RING_BATCH_BACKOFF 20

/* io_uring_enter's min_wait_usec (IORING_FEAT_MIN_TIMEOUT, Linux 6.12). */
#define RING_FEAT_MIN_TIMEOUT (1U << 15)

/* The kernel's struct io_uring_getevents_arg since 6.12; liburing 2.3 (Debian
 * 12) still calls min_wait_usec "pad". */
struct ring_wait_arg {
    uint64_t sigmask;
    uint32_t sigmask_sz;
    uint32_t min_wait_usec;
    uint64_t ts;
};

uint32_t ring_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint32_t)ts.tv_sec;
}

uint64_t ring_clock_ms(struct worker *w)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    w->now = (uint32_t)ts.tv_sec;
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
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
            if (p.features & RING_FEAT_MIN_TIMEOUT)
                w->batch.wait_us = w->cfg->batch_wait_us;
            else if (w->cfg->batch_wait_us && w->id == 0)
                log_msg(LOG_INFO, "io_uring",
                        "kernel cannot batch waits (6.12+); "
                        "BatchWaitMicroseconds has no effect");
            w->batch.want = 1;
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

/* What io_uring_submit() does before it enters the kernel: publish the
 * SQEs queued since, and count what the kernel has not consumed. */
static unsigned ring_flush_sq(struct io_uring *r)
{
    struct io_uring_sq *sq = &r->sq;
    unsigned tail = sq->sqe_tail;
    if (sq->sqe_head != tail) {
        sq->sqe_head = tail;
        io_uring_smp_store_release(sq->ktail, tail);
    }
    return tail - io_uring_smp_load_acquire(sq->khead);
}

int ring_wait(struct worker *w)
{
    struct io_uring *r = &w->ring;
    if (io_uring_cq_ready(r) > 0)
        return io_uring_submit(r);
    STAT_ADD(w, waits, 1);
    if (w->batch.want <= 1)
        return io_uring_submit_and_wait(r, 1);
    STAT_ADD(w, batched_waits, 1);
    /* min_wait only applies with a timeout: without one the kernel returns
     * when min_wait ends even with nothing ready. A second is longer than
     * the worker's tick, so the timeout itself never fires. */
    struct __kernel_timespec ts = {.tv_sec = 1};
    struct ring_wait_arg arg = {.min_wait_usec = w->batch.wait_us, .ts = (uintptr_t)&ts};
    int rc = io_uring_enter2((unsigned)r->ring_fd, ring_flush_sq(r), w->batch.want,
                             IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, (sigset_t *)&arg,
                             sizeof arg);
    w->batch.waits++;
    w->batch.gathered += io_uring_cq_ready(r);
    return rc == -ETIME ? 0 : rc;
}

void ring_batch_window(struct worker *w, uint64_t ms, unsigned ncqes)
{
    STAT_ADD(w, completions, ncqes);
    if (ms - w->batch.window_start < RING_BATCH_WINDOW_MS)
        return;
    struct ring_batch *b = &w->batch;
    if (b->waits > 0 && b->gathered < RING_BATCH_EXPECT * b->waits &&
        b->bytes < (uint64_t)RING_BATCH_BYTES * b->waits)
        b->backoff = RING_BATCH_BACKOFF;
    else if (b->backoff > 0)
        b->backoff--;
    bool busy = b->wait_us && b->active >= RING_BATCH_MIN_ACTIVE && b->backoff == 0;
    b->want = busy ? RING_BATCH_WANT : 1;
    b->active = 0;
    b->waits = b->gathered = 0;
    b->bytes = 0;
    b->epoch++;
    b->window_start = ms;
}

int ring_setup(struct worker *w)
{
    return ring_create(w) == FG_OK && ring_buffers(w) == FG_OK ? FG_OK : FG_ERROR;
}

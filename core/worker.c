/*
 * The worker: one thread, one io_uring ring, one event loop. See worker.h.
 *
 * The loop submits and waits in one system call, then reaps completions in a
 * batch and dispatches each on the operation encoded in its user_data and
 * the connection's phase.
 */
#include "worker.h"

#include "bclose.h"
#include "client.h"
#include "conn.h"
#include "login.h"
#include "pipes.h"
#include "relay.h"
#include "wcmd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/*
 * A phase ended and named the next (conn_enter): start it. Phases never call
 * each other, so the connection's life reads as this sequence: client, login,
 * relay, or client again after a failed login.
 */
static void worker_enter(struct worker *w, struct conn *c)
{
    while ((c->flags & CF_ENTER) && c->state != CONN_CLOSING) {
        c->flags &= ~CF_ENTER;
        switch (c->state) {
        case CONN_LOGIN:
            login_start(w, c);
            break;
        case CONN_RELAY:
            relay_start(w, c);
            break;
        case CONN_PREAUTH:
            client_resume(w, c);
            break;
        default:
            break;
        }
    }
}

/* The connection's phase timed out. */
static void worker_expire_conn(struct worker *w, struct conn *c)
{
    STAT_ADD(w, timeouts, 1);
    switch (c->state) {
    case CONN_BACKEND:
        login_expire(w, c);
        break;
    case CONN_RELAY:
        conn_close(w, c, "idle timeout");
        break;
    default:
        client_expire(w, c);
        break;
    }
    worker_enter(w, c);
}

/*
 * The timer lists' timeouts, read again at every tick: the stats socket's
 * set may change them (core/tune.c). A list's connections share its timeout
 * and are in order of their last activity, so a new timeout keeps the list
 * in expiry order; it applies at once to the connections already on it.
 */
static void worker_timeouts(struct worker *w)
{
    const struct fg_config *cfg = w->cfg;
    for (int p = 0; p < FG_PROTO_COUNT; p++) {
        const struct proto_conf *pc = &cfg->proto[p];
        w->tl[TL_PREAUTH + p].timeout =
                atomic_load_explicit(&pc->preauth_timeout, memory_order_relaxed);
        w->tl[TL_AUTH + p].timeout = atomic_load_explicit(&pc->auth_timeout, memory_order_relaxed);
        w->tl[TL_PROXY + p].timeout =
                atomic_load_explicit(&pc->proxy_timeout, memory_order_relaxed);
    }
    w->tl[TL_BACKEND].timeout =
            atomic_load_explicit(&cfg->backend.connect_timeout, memory_order_relaxed);
}

static void worker_expire(struct worker *w)
{
    for (int i = 0; i < TL_COUNT; i++) {
        struct timer_list *tl = &w->tl[i];
        while (!fg_list_empty(&tl->head)) {
            struct conn *c = FG_CONTAINER_OF(tl->head.next, struct conn, timer.node);
            if (w->now - c->timer.last < tl->timeout)
                break;
            worker_expire_conn(w, c);
            /* Every expiry closes the connection or moves it to another list. */
        }
    }
}

static void worker_arm_accept(struct worker *w, unsigned i)
{
    struct io_uring_sqe *sqe = ring_sqe(w);
    io_uring_prep_multishot_accept(sqe, w->ls[i].fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, ud_make(OP_ACCEPT, i, 0));
}

static void worker_arm_tick(struct worker *w)
{
    struct io_uring_sqe *sqe = ring_sqe(w);
    io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, ud_make(OP_TICK, 0, 0));
}

/* The first retry after a failed accept, and the longest wait between two. */
#define ACCEPT_BACKOFF_MIN_MS 10
#define ACCEPT_BACKOFF_MAX_MS 1000

/* Out of descriptors or memory: the kernel keeps new connections in the
 * listen backlog, and retrying at once would only fail again, in a busy
 * loop. Logged once per pause; each failed retry doubles the wait. */
static void worker_accept_pause(struct worker *w, struct listener *l, int err)
{
    struct accept_pause *ap = &l->pause;
    char a[64];

    if (ap->paused) {
        ap->backoff_ms = FG_MIN(ap->backoff_ms * 2, ACCEPT_BACKOFF_MAX_MS);
        return;
    }
    ap->paused = true;
    ap->since_ms = bhost_now_ms();
    ap->backoff_ms = ACCEPT_BACKOFF_MIN_MS;
    STAT_ADD(w, accept_paused, 1);
    struct log_line ll;
    net_addr_str(&l->addr, a, sizeof a);
    log_begin(&ll, LOG_WARN, "accept_paused");
    log_cstr(&ll, "listener", a);
    log_cstr(&ll, "reason", strerror(err));
    log_fmt(&ll, "worker", "%u", w->id);
    log_end(&ll);
}

/* An accept succeeded on a paused listener. */
static void worker_accept_resumed(struct worker *w, struct listener *l)
{
    char a[64];
    struct log_line ll;
    net_addr_str(&l->addr, a, sizeof a);
    log_begin(&ll, LOG_INFO, "accept_resumed");
    log_cstr(&ll, "listener", a);
    log_fmt(&ll, "worker", "%u", w->id);
    log_fmt(&ll, "paused_ms", "%llu", (unsigned long long)(bhost_now_ms() - l->pause.since_ms));
    log_end(&ll);
    l->pause.paused = false;
}

static bool worker_accept_starved(int res)
{
    return res == -EMFILE || res == -ENFILE || res == -ENOMEM || res == -ENOBUFS;
}

static void worker_on_accept(struct worker *w, struct io_uring_cqe *cqe)
{
    unsigned i = ud_slot(cqe->user_data);
    struct listener *l = &w->ls[i];
    int res = cqe->res;

    if (res >= 0) {
        if (l->pause.paused)
            worker_accept_resumed(w, l);
        client_accept(w, l, res);
    } else if (worker_accept_starved(res)) {
        worker_accept_pause(w, l, -res);
    } else if (res != -ECANCELED && res != -EBADF) {
        if (w->refused_logged != w->now)
            log_msg(LOG_ERROR, "accept", "accept failed: %s", strerror(-res));
        w->refused_logged = w->now;
    }
    if ((cqe->flags & IORING_CQE_F_MORE) || !w->accepting)
        return;
    if (!worker_accept_starved(res)) {
        worker_arm_accept(w, i);
        return;
    }
    /* The multishot accept ended: armed again once the back-off is over. */
    l->pause.ts.tv_sec = l->pause.backoff_ms / 1000;
    l->pause.ts.tv_nsec = (long long)(l->pause.backoff_ms % 1000) * 1000000;
    struct io_uring_sqe *sqe = ring_sqe(w);
    io_uring_prep_timeout(sqe, &l->pause.ts, 0, 0);
    io_uring_sqe_set_data64(sqe, ud_make(OP_ACCEPT_RETRY, i, 0));
}

/* Closes the listeners; the connections go on. */
static void worker_stop_accepting(struct worker *w)
{
    if (!w->accepting)
        return;
    w->accepting = false;
    for (unsigned i = 0; i < w->nls; i++) {
        /* The accept in flight holds the socket open past close(), and past
         * the process's exit while the kernel tears the ring down: it would
         * take connections into its backlog and then reset them, after a
         * balancer saw the connect succeed (so it does not try another
         * instance). shutdown() stops the listening itself, now. */
        shutdown(w->ls[i].fd, SHUT_RDWR);
        struct io_uring_sqe *sqe = ring_sqe(w);
        io_uring_prep_cancel_fd(sqe, w->ls[i].fd, IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(sqe, ud_make(OP_NONE, 0, 0));
    }
    io_uring_submit(&w->ring);
    for (unsigned i = 0; i < w->nls; i++) {
        close(w->ls[i].fd);
        w->ls[i].fd = -1;
    }
}

static void worker_begin_stop(struct worker *w)
{
    if (w->stopping)
        return;
    w->stopping = true;
    worker_stop_accepting(w);
    for (uint32_t s = 0; s < w->nslots; s++) {
        struct conn *c = &w->conns[s];
        if (c->state == CONN_RELAY)
            relay_bye(w, c, conn_bye_line(c->proto, SESS_BYE_SHUTDOWN), "server shutdown");
        else if (c->state != CONN_FREE && c->state != CONN_CLOSING)
            client_shutdown(w, c, SESS_BYE_SHUTDOWN, "server shutdown");
    }
}

/* Routes a connection's completion to the module of its phase. Client
 * sends and receives belong to the relay once it runs; before, to the client
 * phase, which keeps reading while a login is under way. */
static void worker_route(struct worker *w, struct conn *c, struct io_uring_cqe *cqe, enum fg_op op)
{
    bool relay = c->state == CONN_RELAY;

    switch (op) {
    case OP_C_RECV:
        (relay ? relay_on_client_recv : client_on_recv)(w, c, cqe);
        break;
    case OP_C_SEND:
        (relay ? relay_on_client_sent : client_on_sent)(w, c, cqe->res);
        break;
    case OP_LOGIN_DONE:
        login_on_directory(w, c);
        break;
    case OP_B_CONNECT:
        login_on_connect(w, c, cqe->res);
        break;
    case OP_B_RECV:
        login_on_recv(w, c, cqe);
        break;
    case OP_B_SEND:
        (relay ? relay_on_backend_sent : login_on_sent)(w, c, cqe->res);
        break;
    case OP_B_CANCEL:
    case OP_B_CLOSE:
        login_on_closed(w, c);
        break;
    case OP_C_POLLIN:
    case OP_C_POLLOUT:
    case OP_B_POLLIN:
    case OP_B_POLLOUT:
        relay_on_poll(w, c, op, cqe->res);
        break;
    default:
        break;
    }
}

/* A completion for a connection. */
static void worker_conn_event(struct worker *w, struct io_uring_cqe *cqe, enum fg_op op)
{
    uint32_t slot = ud_slot(cqe->user_data);
    struct conn *c = &w->conns[slot];

    if (slot >= w->nslots || ud_gen(cqe->user_data) != c->gen || c->inflight == 0) {
        log_msg(LOG_ERROR, "bug", "completion op %d for slot %u gen %u (now gen %u)", op, slot,
                ud_gen(cqe->user_data), slot < w->nslots ? c->gen : 0);
        return;
    }
    /* The directory's answer was written by another thread: take it over
     * (dir.h) before it is read, or freed with a closing connection. */
    if (op == OP_LOGIN_DONE && c->lg)
        dir_request_taken(&c->lg->req);
    c->inflight--;
    int side = conn_op_side(op);
    if (side >= 0)
        c->sideops[side]--;
    ring_batch_mark(w, &c->batch_epoch);
    if (c->state == CONN_CLOSING) {
        if (c->inflight == 0)
            conn_release(w, c);
        return;
    }
    worker_route(w, c, cqe, op);
    worker_enter(w, c);
}

static void worker_arm_mail(struct worker *w)
{
    struct io_uring_sqe *sqe = ring_sqe(w);
    io_uring_prep_read(sqe, w->stop_fd, &w->stop_val, sizeof w->stop_val, 0);
    io_uring_sqe_set_data64(sqe, ud_make(OP_STOP, 0, 0));
}

/* Answers every part waiting in the mailbox; a worker that stops answers
 * what it did not run with nothing, so no stats client waits for it. */
static void worker_run_mail(struct worker *w)
{
    struct fg_list parts;
    fg_list_init(&parts);
    wcmd_take_mail(w, &parts);
    while (!fg_list_empty(&parts)) {
        struct wcmd_part *p = FG_CONTAINER_OF(parts.next, struct wcmd_part, node);
        fg_list_del(&p->node);
        if (p->cmd->type == WCMD_STOP_ACCEPTING)
            worker_stop_accepting(w);
        else if (!w->stopping)
            wcmd_run(w, p);
        wcmd_part_done(p);
    }
}

/* The stop eventfd fired: a stop, or commands from the stats socket. */
static void worker_on_mail(struct worker *w)
{
    if (atomic_load(&w->stop_req))
        worker_begin_stop(w);
    worker_run_mail(w);
    worker_arm_mail(w);
}

static void worker_dispatch(struct worker *w, struct io_uring_cqe *cqe)
{
    enum fg_op op = ud_op(cqe->user_data);

    switch (op) {
    case OP_ACCEPT:
        worker_on_accept(w, cqe);
        break;
    case OP_ACCEPT_RETRY:
        if (w->accepting)
            worker_arm_accept(w, ud_slot(cqe->user_data));
        break;
    case OP_TICK:
        worker_timeouts(w);
        worker_expire(w);
        worker_arm_tick(w);
        break;
    case OP_STOP:
        worker_on_mail(w);
        break;
    case OP_NONE:
        break;
    case OP_B_BYE:
        bclose_on_timer(w, cqe->user_data);
        break;
    default:
        worker_conn_event(w, cqe, op);
        break;
    }
    /* Handlers copy what they need; the buffer goes straight back. */
    if (cqe->flags & IORING_CQE_F_BUFFER)
        ring_buf_recycle(w, (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT));
}

static void worker_loop(struct worker *w)
{
    worker_arm_mail(w);
    w->accepting = true;
    for (unsigned i = 0; i < w->nls; i++)
        worker_arm_accept(w, i);
    worker_arm_tick(w);

    while (!(w->stopping && atomic_load(&w->stats.conns) == 0)) {
        int rc = ring_wait(w);
        if (rc < 0 && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN) {
            log_msg(LOG_ERROR, "io_uring", "submit failed: %s", strerror(-rc));
            break;
        }
        uint64_t ms = ring_clock_ms(w);
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&w->ring, head, cqe)
        {
            worker_dispatch(w, cqe);
            n++;
        }
        io_uring_cq_advance(&w->ring, n);
        ring_batch_window(w, ms, n);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    int ok = ring_setup(w) == FG_OK;

    dir_thread_register(); /* logons read the route cache */
    pthread_mutex_lock(&w->ready_lock);
    w->ready = ok ? 1 : -1;
    pthread_cond_signal(&w->ready_cond);
    pthread_mutex_unlock(&w->ready_lock);
    if (ok) {
        worker_loop(w);
        worker_run_mail(w);
    }
    dir_thread_unregister();
    return NULL;
}

static int worker_listen(struct worker *w)
{
    const struct fg_config *cfg = w->cfg;
    unsigned n = 0;

    for (int p = 0; p < FG_PROTO_COUNT; p++)
        n += cfg->proto[p].enabled ? cfg->proto[p].plain.n + cfg->proto[p].tls.n : 0;
    w->ls = calloc(n, sizeof *w->ls);
    if (!w->ls)
        return FG_ERROR;
    for (int p = 0; p < FG_PROTO_COUNT; p++) {
        const struct proto_conf *pc = &cfg->proto[p];
        for (unsigned i = 0; pc->enabled && i < pc->plain.n + pc->tls.n; i++) {
            struct listener *l = &w->ls[w->nls];
            l->proto = (uint8_t)p;
            l->tls = i >= pc->plain.n;
            l->addr = l->tls ? pc->tls.a[i - pc->plain.n] : pc->plain.a[i];
            l->proxy = config_is_proxy_binding(cfg, p, &l->addr);
            l->fd = net_listen(&l->addr, 4096);
            if (l->fd < 0) {
                char s[64];
                net_addr_str(&l->addr, s, sizeof s);
                log_msg(LOG_ERROR, "listen", "cannot listen on %s: %s", s, strerror(errno));
                return FG_ERROR;
            }
            w->nls++;
        }
    }
    return FG_OK;
}

static int worker_slots(struct worker *w, uint32_t nslots)
{
    size_t sz = (size_t)nslots * sizeof(struct conn);
    /* Untouched slots cost no memory; a LIFO free list keeps the used ones dense. */
    void *mem = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    if (mem == MAP_FAILED)
        return FG_ERROR;
    w->conns = mem;
    w->nslots = nslots;
    w->free_slots = malloc(sizeof *w->free_slots * nslots);
    if (!w->free_slots)
        return FG_ERROR;
    for (uint32_t i = 0; i < nslots; i++)
        w->free_slots[i] = nslots - 1 - i;
    w->nfree = nslots;
    return FG_OK;
}

int worker_init(struct worker *w, unsigned id, const struct fg_config *cfg,
                struct fg_shared *shared, struct dir *dir, const struct fg_tls *tls,
                uint32_t nslots)
{
    memset(w, 0, sizeof *w);
    w->id = id;
    w->cfg = cfg;
    w->shared = shared;
    w->dir = dir;
    w->tls = tls;
    w->stop_fd = -1;
    fg_list_init(&w->mail);
    pthread_mutex_init(&w->mail_lock, NULL);
    w->now = ring_clock();
    w->tick_ts.tv_sec = 1;
    pthread_mutex_init(&w->ready_lock, NULL);
    pthread_cond_init(&w->ready_cond, NULL);
    for (int i = 0; i < TL_COUNT; i++)
        fg_list_init(&w->tl[i].head);
    worker_timeouts(w);
    if (getrandom(w->sid_salt, sizeof w->sid_salt, 0) != sizeof w->sid_salt)
        w->sid_salt[0] = (uint8_t)getpid();
    w->stop_fd = eventfd(0, EFD_CLOEXEC);
    w->tls_raw = malloc(FG_TLS_CHUNK);
    w->tls_plain = malloc(FG_TLS_PLAIN_SZ);
    if (w->stop_fd < 0 || worker_slots(w, nslots) != FG_OK || !w->tls_raw || !w->tls_plain ||
        pipes_init(&w->pipes, cfg->relay_pipes) != FG_OK) {
        log_msg(LOG_ERROR, "worker", "worker %u: out of memory", id);
        return FG_ERROR;
    }
    return worker_listen(w);
}

int worker_start(struct worker *w)
{
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc != 0) {
        log_msg(LOG_ERROR, "worker", "cannot start worker %u: %s", w->id, strerror(rc));
        return FG_ERROR;
    }
    w->started = true;
    pthread_mutex_lock(&w->ready_lock);
    while (w->ready == 0)
        pthread_cond_wait(&w->ready_cond, &w->ready_lock);
    pthread_mutex_unlock(&w->ready_lock);
    return w->ready > 0 ? FG_OK : FG_ERROR;
}

void worker_stop(struct worker *w)
{
    uint64_t one = 1;
    atomic_store(&w->stop_req, true);
    if (w->stop_fd >= 0) {
        ssize_t FG_UNUSED rc = write(w->stop_fd, &one, sizeof one);
    }
}

void worker_join(struct worker *w)
{
    if (w->started)
        pthread_join(w->thread, NULL);
    w->started = false;
}

void worker_free(struct worker *w)
{
    if (w->ready > 0)
        io_uring_queue_exit(&w->ring);
    for (unsigned i = 0; i < w->nls; i++)
        if (w->ls[i].fd >= 0)
            close(w->ls[i].fd);
    for (uint32_t s = 0; w->conns && s < w->nslots; s++) {
        struct conn *c = &w->conns[s];
        if (c->state != CONN_FREE) {
            /* Only after a failed start or a broken loop. */
            if (c->fd >= 0)
                close(c->fd);
            if (c->bfd >= 0)
                close(c->bfd);
            conn_release(w, c);
        }
    }
    pipes_free(&w->pipes);
    free(w->ls);
    free(w->free_slots);
    free(w->bufs);
    if (w->tls_plain)
        explicit_bzero(w->tls_plain, FG_TLS_PLAIN_SZ); /* the last records' plaintext */
    free(w->tls_plain);
    free(w->tls_raw);
    if (w->conns)
        munmap(w->conns, (size_t)w->nslots * sizeof(struct conn));
    if (w->br)
        munmap(w->br, FG_RECV_BUFS * sizeof(struct io_uring_buf));
    if (w->stop_fd >= 0)
        close(w->stop_fd);
    pthread_mutex_destroy(&w->ready_lock);
    pthread_mutex_destroy(&w->mail_lock);
    pthread_cond_destroy(&w->ready_cond);
}

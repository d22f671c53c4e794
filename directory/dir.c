/*
 * The directory front: the static route, and the pool that runs the
 * resolver against the forests' stores. See dir.h.
 */
#include "dir.h"

#include "../core/log.h"
#include "ldif_store.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

void dir_init(struct dir *d, const struct fg_config *cfg)
{
    memset(d, 0, sizeof *d);
    d->cfg = cfg;
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->cond, NULL);
}

/* Refusals that need no directory: they never reach a backend. */
static enum login_status dir_precheck(const struct cred *c)
{
    /* An empty password must never be tried: to LDAP it is an anonymous bind,
     * which succeeds (RFC 4513 section 5.1.2). */
    if (c->pass_len == 0 || c->user_len == 0)
        return LOGIN_FAILED;
    /* PLAIN's authzid asks to act as another user; only the directory, with
     * delegate rights, may grant that. */
    if (c->mech == CRED_MECH_PLAIN && c->authzid_len > 0 &&
        (c->authzid_len != c->user_len || memcmp(c->authzid, c->user, c->user_len) != 0))
        return LOGIN_DENIED;
    return LOGIN_OK;
}

static void dir_static_route(const struct fg_config *cfg, struct dir_request *req)
{
    req->route.target = &cfg->backend.target;
    req->route.port = cfg->proto[req->proto].target_port;
    req->route.mailbox_len = req->cred->user_len;
    memcpy(req->route.mailbox, req->cred->user, req->cred->user_len + 1);
}

/* ---- the pool ---- */

/* The servers of a database: [databases] first, else the directory's. */
static void dir_database(const struct dir_conf *dc, struct dir_request *req,
                         const struct store_op *op, struct store_result *res)
{
    char name[64];
    dir_database_name(op->dn, name, sizeof name);
    for (unsigned i = 0; i < dc->ndatabases; i++) {
        if (strcasecmp(dc->databases[i].name, name) == 0) {
            req->route.target = &dc->databases[i].target;
            res->nhosts = dc->databases[i].target.naddrs;
            return;
        }
    }
    const struct forest_conf *fc = &dc->forests[dc->order[op->forest]];
    ldif_store_run(fc->store, &dc->topo.forests[op->forest], op->forest, op, res);
}

/* Runs one store operation on the forest's store. */
static void dir_run_op(const struct dir_conf *dc, struct dir_request *req,
                       const struct store_op *op, struct store_result *res)
{
    if (op->kind == SOP_DATABASE) {
        dir_database(dc, req, op, res);
        return;
    }
    const struct forest_conf *fc = &dc->forests[dc->order[op->forest]];
    if (!fc->store) {
        memset(res, 0, sizeof *res);
        res->status = STORE_UNAVAILABLE;
        return;
    }
    ldif_store_run(fc->store, &dc->topo.forests[op->forest], op->forest, op, res);
}

/* Host names from the directory become addresses, in order. */
static void dir_resolve_hosts(struct dir_request *req, const struct resolution *rs)
{
    struct backend_target *t = &req->own_target;
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", rs->hosts[0]);
    for (unsigned h = 0; h < rs->nhosts && t->naddrs < CFG_MAX_BACKEND_ADDRS; h++) {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
        if (getaddrinfo(rs->hosts[h], NULL, &hints, &ai) != 0)
            continue;
        for (struct addrinfo *a = ai; a && t->naddrs < CFG_MAX_BACKEND_ADDRS; a = a->ai_next)
            if (a->ai_family == AF_INET || a->ai_family == AF_INET6)
                memcpy(&t->addrs[t->naddrs++], a->ai_addr, a->ai_addrlen);
        freeaddrinfo(ai);
    }
    req->route.target = t;
}

static void dir_audit(struct dir_request *req, const struct resolution *rs,
                      const struct dir_conf *dc)
{
    struct dir_audit *a = &req->audit;
    a->why = rs->why == RW_NONE ? NULL : resolve_why_text(rs->why);
    a->not_found =
            rs->why == RW_NOT_FOUND || rs->why == RW_UNKNOWN_DOMAIN || rs->why == RW_WRONG_DOMAIN;
    a->form = (uint8_t)rs->ln.form;
    a->ops = rs->ops;
    if (rs->account.dn[0]) {
        snprintf(a->account, sizeof a->account, "%s", rs->account.dn);
        snprintf(a->forest, sizeof a->forest, "%s", dc->topo.forests[rs->account.forest].name);
    }
}

/* Runs the resolver to its end and fills the request's answer. */
static void dir_resolve(const struct fg_config *cfg, struct dir_request *req)
{
    const struct dir_conf *dc = &cfg->dir;
    struct resolution *rs = calloc(1, sizeof *rs);
    uint32_t start = fg_now_ms();

    if (!rs) {
        req->status = LOGIN_UNAVAILABLE;
        return;
    }
    resolve_init(rs, &dc->topo, &dc->rules, req->cred->user, req->cred->user_len, req->cred->pass,
                 req->cred->pass_len, req->proto);
    req->route.target = NULL;
    while (resolve_next(rs) == RESOLVE_OP)
        dir_run_op(dc, req, &rs->op, &rs->res);
    req->status = rs->status;
    if (rs->status == LOGIN_OK && !req->route.target)
        dir_resolve_hosts(req, rs);
    /* A mailbox whose database has no server goes to DefaultServer, if any. */
    if (rs->why == RW_NO_DATABASE_SERVER && cfg->backend.target.naddrs > 0) {
        req->status = LOGIN_OK;
        req->route.target = &cfg->backend.target;
        rs->why = RW_NONE;
    }
    if (req->status == LOGIN_OK && (!req->route.target || req->route.target->naddrs == 0)) {
        req->status = LOGIN_UNAVAILABLE;
        rs->why = RW_NO_DATABASE_SERVER;
    }
    req->route.port = cfg->proto[req->proto].target_port;
    size_t n = strlen(rs->mailbox.alias);
    req->route.mailbox_len = (uint16_t)FG_MIN(n, (size_t)CRED_NAME_MAX);
    memcpy(req->route.mailbox, rs->mailbox.alias, req->route.mailbox_len);
    req->route.mailbox[req->route.mailbox_len] = 0;
    dir_audit(req, rs, dc);
    req->elapsed_ms = fg_now_ms() - start;
    explicit_bzero(rs, sizeof *rs);
    free(rs);
}

/* Posts the completion to the worker's ring. */
static void dir_post(struct io_uring *ring, struct dir_request *req)
{
    int fd = req->ring_fd;
    uint64_t ud = req->ud;
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    struct io_uring_cqe *cqe;
    /* After this the request belongs to the worker again: not a byte more. */
    io_uring_prep_msg_ring(sqe, fd, 0, ud, 0);
    io_uring_submit_and_wait(ring, 1);
    if (io_uring_wait_cqe(ring, &cqe) == 0) {
        if (cqe->res < 0)
            log_msg(LOG_ERROR, "directory", "cannot post a completion: %s", strerror(-cqe->res));
        io_uring_cqe_seen(ring, cqe);
    }
}

static void *dir_thread(void *arg)
{
    struct dir *d = arg;
    struct io_uring ring;

    if (io_uring_queue_init(8, &ring, 0) < 0) {
        log_msg(LOG_ERROR, "directory", "a directory thread cannot create its ring");
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&d->lock);
        while (!d->head && !d->stopping)
            pthread_cond_wait(&d->cond, &d->lock);
        struct dir_request *req = d->head;
        if (req) {
            d->head = req->next;
            if (!d->head)
                d->tail = NULL;
        }
        pthread_mutex_unlock(&d->lock);
        if (!req)
            break; /* stopping, and nothing left */
        dir_resolve(d->cfg, req);
        dir_post(&ring, req);
    }
    io_uring_queue_exit(&ring);
    return NULL;
}

int dir_start(struct dir *d)
{
    if (!d->cfg->dir.enabled)
        return FG_OK;
    for (unsigned i = 0; i < d->cfg->dir.threads && i < FG_ARRAY_SIZE(d->threads); i++) {
        if (pthread_create(&d->threads[i], NULL, dir_thread, d) != 0) {
            log_msg(LOG_ERROR, "directory", "cannot start directory thread %u", i);
            return FG_ERROR;
        }
        d->nthreads++;
    }
    return FG_OK;
}

void dir_stop(struct dir *d)
{
    pthread_mutex_lock(&d->lock);
    d->stopping = true;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    for (unsigned i = 0; i < d->nthreads; i++)
        pthread_join(d->threads[i], NULL);
    d->nthreads = 0;
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->cond);
}

int dir_submit(struct dir *d, struct io_uring *ring, struct dir_request *req, uint64_t ud)
{
    req->status = dir_precheck(req->cred);
    req->elapsed_ms = 0;
    memset(&req->audit, 0, sizeof req->audit);
    if (req->status == LOGIN_OK && d->cfg->dir.enabled) {
        req->ring_fd = ring->ring_fd;
        req->ud = ud;
        req->next = NULL;
        pthread_mutex_lock(&d->lock);
        if (d->tail)
            d->tail->next = req;
        else
            d->head = req;
        d->tail = req;
        pthread_cond_signal(&d->cond);
        pthread_mutex_unlock(&d->lock);
        return FG_OK;
    }
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe)
        return FG_AGAIN;
    if (req->status == LOGIN_OK)
        dir_static_route(d->cfg, req);
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, ud);
    return FG_OK;
}

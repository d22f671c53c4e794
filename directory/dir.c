/*
 * The directory front: the static route, and the pool that runs the
 * resolver against the forests' stores. See dir.h.
 */
#include "dir.h"

#include "../base/log.h"
#include "krb.h"
#include "ldap_store.h"
#include "ldif_store.h"

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

void dir_init(struct dir *d, const struct dir_conf *conf, const struct backend_target *fallback,
              const struct backend_policy *policy)
{
    memset(d, 0, sizeof *d);
    d->conf = conf;
    d->fallback = fallback;
    d->policy = policy;
}

/* Refusals that need no directory: they never reach a backend. */
static enum login_status dir_precheck(const struct cred *c)
{
    /* GSSAPI: the ticket is the proof, checked on a directory thread. */
    if (c->mech == CRED_MECH_GSSAPI)
        return LOGIN_OK;
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

static void dir_static_route(const struct dir *d, struct dir_request *req)
{
    req->route.target = d->fallback;
    req->route.port = d->policy->port[req->proto];
    req->route.mailbox_len = req->cred->user_len;
    memcpy(req->route.mailbox, req->cred->user, req->cred->user_len + 1);
}

/* ---- the pool ---- */

enum dj_kind {
    DJ_FULL, /* a resolution from the name */
    DJ_WARM, /* a cached route: the password, then the route's checks */
    DJ_WAIT, /* parked until another job resolves the same name */
};

/* One request on a directory thread. */
struct dir_job {
    struct fg_list link;  /* on the thread's jobs, oldest first */
    struct fg_list ilink; /* a leader: on the thread's in-flight names; DJ_WAIT: on its leader's */
    struct fg_list waiters; /* a leader's DJ_WAIT jobs */
    struct dir_request *req;
    struct ldap_store *waiting; /* the store lop is with, or NULL */
    uint64_t start_ms, deadline_ms;
    unsigned ldap_requests;
    uint8_t kind;         /* enum dj_kind */
    bool leads;           /* on the in-flight names: others may wait for it */
    bool has_hash;        /* cred holds the password's credential hash */
    bool throttled;       /* the throttle answered a bind: the password was not checked */
    struct thr_ticket tk; /* a bind under way, counted by the account throttle */
    uint8_t cred[RC_CRED_LEN];
    struct ldap_op lop;
    struct resolution rs;
};

#define DT_INFLIGHT_BUCKETS 256 /* a power of two */

/* A setting the stats socket's set may change while this thread reads it. */
#define DC_GET(dc, f) atomic_load_explicit(&(dc)->f, memory_order_relaxed)

/* A failed logon's answer, held until its time (FailedLogonDelayMs). */
struct dir_delayed {
    struct fg_list link; /* on the thread's delayed answers, soonest first */
    struct dir_request *req;
    uint64_t due_ms;
};

struct dir_thread {
    struct dir *d;
    pthread_t tid;
    bool started;
    int efd; /* new requests */
    pthread_mutex_t lock;
    struct fg_list requests;                /* queued by the workers; under lock */
    atomic_bool stopping;                   /* written under lock, read without it by the loop */
    struct io_uring ring;                   /* posts completions to the workers' rings */
    struct ldap_store *ls[DIR_MAX_FORESTS]; /* by topology index; NULL: LDIF */
    struct fg_list jobs;                    /* dir_job, by start time: they share one timeout */
    struct fg_list delayed;                 /* dir_delayed, by due time */
    struct fg_list held;                    /* dir_delayed: requests the address throttle holds */
    struct fg_list inflight[DT_INFLIGHT_BUCKETS]; /* leaders, by key hash: for coalescing */
};

static uint64_t dir_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The servers of a database from [databases]; false when it is not there. */
static bool dir_database_mapped(const struct dir_conf *dc, struct dir_request *req,
                                const struct store_op *op, struct store_result *res)
{
    char name[64];
    resolve_database_name(op->dn, name, sizeof name);
    for (unsigned i = 0; i < dc->ndatabases; i++) {
        if (dc->databases[i].mapped && strcasecmp(dc->databases[i].name, name) == 0) {
            memset(res, 0, sizeof *res);
            req->route.target = &dc->databases[i].target;
            res->nhosts = dc->databases[i].target.naddrs;
            return true;
        }
    }
    return false;
}

/* Host names from the directory (dNSHostName) become the route, in order,
 * reached as the database's policy says. */
static void dir_resolve_hosts(const struct dir *d, struct dir_request *req,
                              const struct resolution *rs)
{
    struct backend_target *t = &req->own_target;
    char db[64], why[200];
    memset(t, 0, sizeof *t);
    resolve_database_name(rs->mailbox.home_mdb, db, sizeof db);
    t->policy = dir_database_policy(d->conf, d->policy, db);
    for (unsigned h = 0; h < rs->nhosts; h++)
        if (dir_target_add(t, rs->hosts[h], why, sizeof why) != FG_OK)
            log_msg(LOG_WARN, "backend_dns", "database %s: host %s: %s", db, rs->hosts[h], why);
    req->route.target = t;
}

static void dir_audit(struct dir_request *req, const struct resolution *rs,
                      const struct dir_conf *dc, unsigned ldap_requests, bool throttled)
{
    struct dir_audit *a = &req->audit;
    a->why = rs->why == RW_NONE ? NULL : resolve_why_text(rs->why);
    if (throttled)
        a->why = resolve_why_text(RW_THROTTLED);
    a->not_found = resolve_why_not_found(rs->why);
    a->form = (uint8_t)rs->ln.form;
    a->ln = rs->ln;
    a->ops = rs->ops;
    a->ldap = ldap_requests;
    if (rs->account.dn[0]) {
        snprintf(a->account, sizeof a->account, "%s", rs->account.dn);
        snprintf(a->forest, sizeof a->forest, "%s", dc->topo.forests[rs->account.forest].name);
    }
}

static void dir_set_mailbox(struct dir_request *req, const char *login)
{
    size_t n = strlen(login);
    req->route.mailbox_len = (uint16_t)FG_MIN(n, (size_t)CRED_NAME_MAX);
    memcpy(req->route.mailbox, login, req->route.mailbox_len);
    req->route.mailbox[req->route.mailbox_len] = 0;
}

/* A full resolution's outcome becomes the request's route. */
static void dir_answer_full(const struct dir *d, struct dir_request *req, struct resolution *rs)
{
    if (rs->status == LOGIN_OK && !req->route.target)
        dir_resolve_hosts(d, req, rs);
    /* A mailbox whose database has no server goes to DefaultServer, if any. */
    if (rs->why == RW_NO_DATABASE_SERVER && d->fallback->naddrs > 0) {
        req->status = LOGIN_OK;
        req->route.target = d->fallback;
        rs->why = RW_NONE;
    }
    /* The backend login name: BackendLoginAttribute, else the alias. */
    dir_set_mailbox(req, rs->mailbox.login[0] ? rs->mailbox.login : rs->mailbox.alias);
}

/* The resolution's outcome becomes the request's answer. */
static void dir_answer(const struct dir *d, struct dir_job *j, uint64_t now)
{
    struct dir_request *req = j->req;
    struct resolution *rs = &j->rs;

    req->status = rs->status;
    if (req->sasl_continue) { /* a step of a GSSAPI exchange: no route yet */
        req->elapsed_ms = (uint32_t)(now - j->start_ms);
        return;
    }
    if (j->kind == DJ_FULL) {
        dir_answer_full(d, req, rs);
    } else if (rs->status == LOGIN_OK) {
        req->route.target = req->snap.target;
        dir_set_mailbox(req, req->snap.login);
    }
    if (req->status == LOGIN_OK && (!req->route.target || req->route.target->naddrs == 0)) {
        req->status = LOGIN_UNAVAILABLE;
        rs->why = RW_NO_DATABASE_SERVER;
    }
    req->route.port = req->route.target ? req->route.target->policy->port[req->proto] : 0;
    dir_audit(req, rs, d->conf, j->ldap_requests, j->throttled);
    if (rs->why == RW_KERBEROS && req->krb && req->krb->why[0])
        req->audit.why = req->krb->why; /* GSSAPI's own words; the login owns them */
    req->elapsed_ms = (uint32_t)(now - j->start_ms);
}

/* ---- the route cache, on the directory threads ---- */

static uint32_t dir_ms(uint32_t seconds)
{
    return seconds * 1000u;
}

/* The credential hash of the job's password, computed once. */
static const uint8_t *dj_hash(const struct dir *d, struct dir_job *j)
{
    const struct dir_request *req = j->req;
    if (!j->has_hash) {
        rc_cred_hash(&d->cache, req->key, req->key_len, req->cred->pass, req->cred->pass_len,
                     j->cred);
        j->has_hash = true;
    }
    return j->cred;
}

/* What a full resolution teaches the cache: the route, or that the name
 * found nobody. A wrong password teaches nothing. */
static void dc_learn(struct dir *d, struct dir_job *j, uint64_t now)
{
    const struct dir_conf *dc = d->conf;
    struct dir_request *req = j->req;
    const struct resolution *rs = &j->rs;
    char db[RC_DB_MAX];
    struct rc_value v = {0};

    if (req->status == LOGIN_OK) {
        resolve_database_name(rs->mailbox.home_mdb, db, sizeof db);
        v.kind = RC_ROUTE;
        v.forest = rs->account.forest;
        v.proto_disabled = rs->mailbox.proto_disabled;
        v.admin = rs->account.admin;
        v.account = rs->account.dn;
        v.login = req->route.mailbox;
        v.database = db;
        v.target = req->route.target;
        v.target_shared = req->route.target != &req->own_target;
        v.ttl_ms = dir_ms(DC_GET(dc, route_ttl));
        v.cred_ttl_ms = dir_ms(DC_GET(dc, cred_ttl));
        if (v.cred_ttl_ms)
            v.cred = dj_hash(d, j);
    } else if (req->status == LOGIN_FAILED && resolve_why_not_found(rs->why) &&
               DC_GET(dc, negative_ttl)) {
        v.kind = RC_NEGATIVE;
        v.why = (uint8_t)rs->why;
        v.ttl_ms = dir_ms(DC_GET(dc, negative_ttl));
    } else {
        return;
    }
    rc_put(&d->cache, req->key, req->key_len, req->key_hash, &v, now);
}

/* A warm logon's bind keeps the credential part current: the password that
 * bound replaces the old one's hash; a refused one drops it. */
static void dc_learn_bind(struct dir *d, struct dir_job *j, uint64_t now)
{
    const struct dir_conf *dc = d->conf;
    struct dir_request *req = j->req;
    uint32_t cred_ttl = DC_GET(dc, cred_ttl);
    if (!cred_ttl || req->audit.cache == DC_CREDENTIAL || j->rs.ops == 0)
        return;
    if (req->status == LOGIN_OK)
        rc_cred_set(&d->cache, req->key, req->key_len, req->key_hash, dj_hash(d, j),
                    dir_ms(cred_ttl), now);
    else if (j->rs.why == RW_BAD_PASSWORD || j->rs.why == RW_EXPIRED || j->rs.why == RW_DISABLED ||
             j->rs.why == RW_ACCOUNT_EXPIRED || j->rs.why == RW_LOCKED_OUT)
        rc_cred_set(&d->cache, req->key, req->key_len, req->key_hash, NULL, 0, now);
}

/*
 * ServeStaleOnDirectoryFailure: the directory did not answer, and an expired
 * route of this name is still known. It is used when the password can still
 * be checked: by the backend (LoginMode = PassThrough), or against the
 * route's credential hash, whatever its age.
 */
static void dc_serve_stale(struct dir *d, struct dir_job *j, uint64_t now)
{
    const struct dir_conf *dc = d->conf;
    struct dir_request *req = j->req;
    if (!dc->serve_stale || !req->stale_ok || req->status != LOGIN_UNAVAILABLE ||
        j->rs.why != RW_UNAVAILABLE)
        return;
    bool checked_by_backend = !dc->rules.allow_delegates;
    if (!checked_by_backend &&
        !rc_cred_match(&d->cache, req->key, req->key_len, req->key_hash, dj_hash(d, j), now, true))
        return;
    req->status = LOGIN_OK;
    req->route.target = req->snap.target;
    req->route.port = req->snap.target->policy->port[req->proto];
    dir_set_mailbox(req, req->snap.login);
    req->audit.cache = DC_STALE;
    req->audit.why = NULL;
    atomic_fetch_add_explicit(&d->cache.stats.served_stale, 1, memory_order_relaxed);
    log_msg(LOG_WARN, "directory_stale",
            "the directory did not answer: an expired route serves the logon "
            "(ServeStaleOnDirectoryFailure)");
}

static void dj_step(struct dir_thread *t, struct dir_job *j);
static void dj_finish(struct dir_thread *t, struct dir_job *j);

/*
 * A credential hit skips the bind, not the account throttle: past the
 * threshold an unfamiliar address is refused even with the right password,
 * as it would be with a bind. The hit is no success for the throttle
 * either (AD saw no bind: its badPwdCount is not reset), so the bind's
 * reservation is given back unanswered.
 */
static void dj_answer_now(struct dir_thread *t, struct dir_job *j, enum login_status st,
                          enum resolve_why why);

static bool dj_cred_throttled(struct dir_thread *t, struct dir_job *j)
{
    struct throttle *thr = t->d->thr;
    struct dir_request *req = j->req;
    struct thr_ticket tk;
    if (!thr || !thr->on)
        return false;
    enum thr_reason r =
            thr_account_check(thr, req->snap.account, strlen(req->snap.account), &req->client,
                              req->cred->pass, req->cred->pass_len, dir_clock_ms(), &tk);
    if (r == THR_PASS || r == THR_EXEMPT) {
        thr_account_done(thr, &tk, THR_BIND_NONE, dir_clock_ms());
        if (r == THR_EXEMPT)
            req->audit.throttle = THR_EXEMPT;
        return false;
    }
    req->audit.throttle = (uint8_t)r;
    j->throttled = true;
    return true;
}

/* A cached route: the password (unless the credential cache knows it),
 * then the route's checks. */
static void dj_start_warm(struct dir_thread *t, struct dir_job *j, uint64_t now)
{
    struct dir *d = t->d;
    const struct dir_conf *dc = d->conf;
    struct dir_request *req = j->req;
    const struct rc_snap *s = &req->snap;
    bool known = false;

    j->kind = DJ_WARM;
    if (DC_GET(dc, cred_ttl) && s->has_cred) {
        known = rc_cred_match(&d->cache, req->key, req->key_len, req->key_hash, dj_hash(d, j), now,
                              false);
        atomic_fetch_add_explicit(known ? &d->cache.stats.cred_hits : &d->cache.stats.cred_misses,
                                  1, memory_order_relaxed);
        if (known && dj_cred_throttled(t, j)) {
            dj_answer_now(t, j, LOGIN_FAILED, RW_BAD_PASSWORD);
            return;
        }
        if (known)
            req->audit.cache = DC_CREDENTIAL;
    }
    resolve_init_warm(&j->rs, &dc->topo, &dc->rules, req->cred->user, req->cred->user_len,
                      req->cred->pass, req->cred->pass_len, req->proto, s->account, s->forest,
                      s->admin, s->proto_disabled, known);
    dj_step(t, j);
}

/* Answers j with an outcome known without the directory. */
static void dj_answer_now(struct dir_thread *t, struct dir_job *j, enum login_status st,
                          enum resolve_why why)
{
    const struct dir_conf *dc = t->d->conf;
    struct dir_request *req = j->req;
    j->kind = DJ_WARM;
    resolve_init(&j->rs, &dc->topo, &dc->rules, req->cred->user, req->cred->user_len,
                 req->cred->pass, req->cred->pass_len, req->proto);
    logon_name_split(req->cred->user, req->cred->user_len, &j->rs.ln);
    j->rs.status = st;
    j->rs.why = why;
    dj_finish(t, j);
}

/* A name known to find nobody is answered from the cache, but throttled
 * and counted as if it had bound as nobody: an unknown name must look like
 * a known one, in the counters and the audit too. */
static void dj_count_nobody(struct dir_thread *t, struct dir_job *j)
{
    struct throttle *thr = t->d->thr;
    struct dir_request *req = j->req;
    struct thr_ticket tk;
    if (!thr || !thr->on)
        return;
    enum thr_reason r =
            thr_account_check(thr, req->key, req->key_len, &req->client, req->cred->pass,
                              req->cred->pass_len, dir_clock_ms(), &tk);
    if (r == THR_PASS || r == THR_EXEMPT)
        thr_account_done(thr, &tk, THR_BIND_FAILED, dir_clock_ms());
    if (r != THR_PASS)
        req->audit.throttle = (uint8_t)r;
}

/* A cached entry serves the request: a route, or "not found". */
static void dj_start_cached(struct dir_thread *t, struct dir_job *j, uint64_t now)
{
    struct rc_stats *cs = &t->d->cache.stats;
    if (j->req->snap.kind == RC_NEGATIVE) {
        atomic_fetch_add_explicit(&cs->negative, 1, memory_order_relaxed);
        j->req->audit.cache = DC_NEGATIVE;
        dj_count_nobody(t, j);
        dj_answer_now(t, j, LOGIN_FAILED, (enum resolve_why)j->req->snap.why);
        return;
    }
    atomic_fetch_add_explicit(&cs->hits, 1, memory_order_relaxed);
    j->req->audit.cache = DC_HIT;
    dj_start_warm(t, j, now);
}

static struct fg_list *dt_bucket(struct dir_thread *t, const struct dir_request *req)
{
    return &t->inflight[req->key_hash & (DT_INFLIGHT_BUCKETS - 1)];
}

/* The job resolving req's name on this thread, if any. */
static struct dir_job *dt_leader(struct dir_thread *t, const struct dir_request *req)
{
    struct fg_list *b = dt_bucket(t, req);
    for (struct fg_list *n = b->next; n != b; n = n->next) {
        struct dir_job *l = FG_CONTAINER_OF(n, struct dir_job, ilink);
        if (l->req->key_len == req->key_len && memcmp(l->req->key, req->key, req->key_len) == 0)
            return l;
    }
    return NULL;
}

/*
 * A step of a GSSAPI exchange (krb.h). The last one names the principal,
 * which is then resolved as a name with no password: no bind, the ticket
 * was the proof. A failure is told as a wrong password, its reason audited.
 */
static void dj_start_gss(struct dir_thread *t, struct dir_job *j)
{
    const struct dir_conf *dc = t->d->conf;
    struct dir_request *req = j->req;
    struct krb_sess *ks = req->krb;
    j->kind = DJ_FULL;
    req->route.target = NULL;
    enum krb_rc rc = KRB_FAILED;
    if (ks && t->d->krb)
        rc = krb_step(t->d->krb, ks, req->proto, req->cred->blob, req->cred->blob_len);
    if (rc == KRB_DONE) {
        resolve_init_principal(&j->rs, &dc->topo, &dc->rules, ks->name, ks->name_len,
                               ks->enterprise, req->proto);
        dj_step(t, j);
        return;
    }
    resolve_init(&j->rs, &dc->topo, &dc->rules, "", 0, NULL, 0, req->proto);
    req->sasl_continue = rc == KRB_CONTINUE;
    j->rs.status = rc == KRB_CONTINUE ? LOGIN_OK : LOGIN_FAILED;
    j->rs.why = rc == KRB_CONTINUE ? RW_NONE : RW_KERBEROS;
    dj_finish(t, j);
}

static void dj_start_full(struct dir_thread *t, struct dir_job *j)
{
    const struct dir_conf *dc = t->d->conf;
    struct dir_request *req = j->req;
    j->kind = DJ_FULL;
    req->route.target = NULL;
    resolve_init(&j->rs, &dc->topo, &dc->rules, req->cred->user, req->cred->user_len,
                 req->cred->pass, req->cred->pass_len, req->proto);
    dj_step(t, j);
}

/* Not in the cache: wait for the resolution of the same name under way, or
 * be that resolution. */
static void dj_start_miss(struct dir_thread *t, struct dir_job *j, uint64_t now)
{
    struct dir *d = t->d;
    struct dir_request *req = j->req;
    struct dir_job *l;

    if (req->key_len == 0) {
        dj_start_full(t, j);
        return;
    }
    if ((l = dt_leader(t, req))) {
        j->kind = DJ_WAIT;
        fg_list_add_tail(&l->waiters, &j->ilink);
        req->audit.cache = DC_COALESCED;
        atomic_fetch_add_explicit(&d->cache.stats.coalesced, 1, memory_order_relaxed);
        return;
    }
    /* A resolution may have filled the entry since the worker looked. */
    if (!req->fresh && rc_lookup(&d->cache, req->key, req->key_len, req->key_hash, now, &req->snap,
                                 &req->own_target) == RC_HIT) {
        dj_start_cached(t, j, now);
        return;
    }
    atomic_fetch_add_explicit(&d->cache.stats.misses, 1, memory_order_relaxed);
    req->audit.cache = DC_MISS;
    j->leads = true;
    fg_list_init(&j->waiters);
    fg_list_add_tail(dt_bucket(t, req), &j->ilink);
    dj_start_full(t, j);
}

/* The leader's route, for a waiter to check its own password against. */
static void dj_take_route(struct dir_request *w, const struct dir_job *leader, bool cred_on)
{
    const struct dir_request *lr = leader->req;
    const struct resolution *rs = &leader->rs;
    struct rc_snap *s = &w->snap;
    memset(s, 0, offsetof(struct rc_snap, account));
    s->kind = RC_ROUTE;
    s->forest = rs->account.forest;
    s->proto_disabled = rs->mailbox.proto_disabled;
    s->admin = rs->account.admin;
    s->has_cred = cred_on; /* the leader's hash, if the cache kept it */
    snprintf(s->account, sizeof s->account, "%s", rs->account.dn);
    snprintf(s->login, sizeof s->login, "%s", lr->route.mailbox);
    resolve_database_name(rs->mailbox.home_mdb, s->database, sizeof s->database);
    if (lr->route.target == &lr->own_target) {
        w->own_target = lr->own_target;
        s->target = &w->own_target;
    } else {
        s->target = lr->route.target;
    }
}

/*
 * The leader is done: its waiters go on. A route serves each of them with
 * one bind of its own password; "not found" and "unavailable" are their
 * answer too. After any other failure -- the leader's own wrong password,
 * say, from a device with an old one saved -- the first waiter resolves in
 * its turn and the others wait for it.
 */
static void dj_release(struct dir_thread *t, struct dir_job *leader, uint64_t now)
{
    const struct dir_request *lr = leader->req;
    struct fg_list *n;
    fg_list_del(&leader->ilink);
    leader->leads = false;
    while ((n = fg_list_pop(&leader->waiters))) {
        struct dir_job *w = FG_CONTAINER_OF(n, struct dir_job, ilink);
        if (lr->status == LOGIN_OK) {
            dj_take_route(w->req, leader, DC_GET(t->d->conf, cred_ttl) > 0);
            dj_start_warm(t, w, now);
        } else if (lr->status == LOGIN_UNAVAILABLE ||
                   (lr->status == LOGIN_FAILED && resolve_why_not_found(leader->rs.why))) {
            dj_answer_now(t, w, lr->status, leader->rs.why);
        } else {
            /* The next leader takes the rest of the queue with it. */
            w->leads = true;
            fg_list_init(&w->waiters);
            fg_list_splice_tail(&w->waiters, &leader->waiters);
            fg_list_add_tail(dt_bucket(t, w->req), &w->ilink);
            dj_start_full(t, w);
            return;
        }
    }
}

/* Posts the completion to the worker's ring. */
static void dir_post(struct io_uring *ring, struct dir_request *req)
{
    int fd = req->ring_fd;
    uint64_t ud = req->ud;
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    struct io_uring_cqe *cqe;
    /* After this the request belongs to the worker again: not a byte more. */
    atomic_store_explicit(&req->answered, true, memory_order_release);
    io_uring_prep_msg_ring(sqe, fd, 0, ud, 0);
    io_uring_submit_and_wait(ring, 1);
    if (io_uring_wait_cqe(ring, &cqe) == 0) {
        if (cqe->res < 0)
            log_msg(LOG_ERROR, "directory", "cannot post a completion: %s", strerror(-cqe->res));
        io_uring_cqe_seen(ring, cqe);
    }
}

static void dt_post(struct dir_thread *t, struct dir_request *req)
{
    atomic_fetch_sub_explicit(&t->d->stats.in_flight, 1, memory_order_relaxed);
    dir_post(&t->ring, req);
}

/* Orders the delayed answers by due time. */
static bool dd_before(const struct fg_list *a, const struct fg_list *b)
{
    return FG_CONTAINER_OF(a, struct dir_delayed, link)->due_ms <
           FG_CONTAINER_OF(b, struct dir_delayed, link)->due_ms;
}

/*
 * Every failed logon is answered FailedLogonDelayMs after it began, whatever
 * failed: an unknown name, whose directory work is a little cheaper (a search
 * that finds nobody, a bind as nobody), then cannot be told from a wrong
 * password by its timing, and guessing slows down. The answer is held here,
 * not on the worker; the resolution itself is gone.
 */
static bool dt_delay(struct dir_thread *t, struct dir_request *req, uint64_t start, uint64_t now)
{
    uint32_t d = DC_GET(t->d->conf, failed_delay_ms);
    struct dir_delayed *x;
    if (req->status != LOGIN_FAILED || d == 0 || start + d <= now || !(x = calloc(1, sizeof *x)))
        return false;
    x->req = req;
    x->due_ms = start + d;
    /* Logins end roughly in the order they began: the tail is the place,
     * nearly always, and fg_list_add_sorted looks there first. */
    fg_list_add_sorted(&t->delayed, &x->link, dd_before);
    return true;
}

static void dt_post_due(struct dir_thread *t, uint64_t now)
{
    struct dir_delayed *x;
    while ((x = FG_LIST_FIRST(&t->delayed, struct dir_delayed, link)) && x->due_ms <= now) {
        fg_list_del(&x->link);
        dt_post(t, x->req);
        free(x);
    }
}

static void dj_bind_done(struct dir_thread *t, struct dir_job *j, bool answered);

static void dj_finish(struct dir_thread *t, struct dir_job *j)
{
    uint64_t now = dir_clock_ms();
    struct dir *d = t->d;
    dj_bind_done(t, j, false); /* a bind that timed out is not counted */
    dir_answer(d, j, now);
    if (j->kind == DJ_FULL && j->req->key_len)
        dc_learn(d, j, now);
    else if (j->kind == DJ_WARM)
        dc_learn_bind(d, j, now);
    if (j->leads)
        dj_release(t, j, now);
    dc_serve_stale(d, j, now); /* a waiter too: the leader's "unavailable" is its answer */
    fg_list_del(&j->link);
    struct dir_stats *ds = &d->stats;
    atomic_fetch_add_explicit(&ds->ldap_requests, j->ldap_requests, memory_order_relaxed);
    if (j->req->status == LOGIN_UNAVAILABLE)
        atomic_fetch_add_explicit(&ds->unavailable, 1, memory_order_relaxed);
    if (!dt_delay(t, j->req, j->start_ms, now))
        dt_post(t, j->req);
    explicit_bzero(j, sizeof *j); /* the resolution held the password, the job its hash */
    free(j);
}

/* ---- the account throttle, around each bind ---- */

static uint64_t dir_clock_ms(void);

/*
 * Before a bind: the throttle may answer it as a wrong password, without
 * the directory (true). The account is the DN; a bind as nobody (a name
 * that found no account) is counted under the name, so an unknown name is
 * throttled and answered as a known one is.
 */
static bool dj_bind_throttled(struct dir_thread *t, struct dir_job *j)
{
    struct throttle *thr = t->d->thr;
    struct dir_request *req = j->req;
    const struct store_op *op = &j->rs.op;
    if (!thr || !thr->on)
        return false;
    const char *acct = op->dn;
    size_t n = strlen(op->dn);
    if (n == 0) {
        acct = req->key_len ? req->key : req->cred->user;
        n = req->key_len ? req->key_len : req->cred->user_len;
    }
    enum thr_reason r = thr_account_check(thr, acct, n, &req->client, op->pass, op->pass_len,
                                          dir_clock_ms(), &j->tk);
    if (r == THR_PASS || r == THR_EXEMPT) {
        if (r == THR_EXEMPT)
            req->audit.throttle = THR_EXEMPT;
        return false;
    }
    req->audit.throttle = (uint8_t)r;
    j->throttled = true;
    memset(&j->rs.res, 0, sizeof j->rs.res);
    j->rs.res.status = STORE_BIND_FAILED;
    return true;
}

/* A bind's outcome, for the account throttle; nothing when none is counted. */
static void dj_bind_done(struct dir_thread *t, struct dir_job *j, bool answered)
{
    struct throttle *thr = t->d->thr;
    if (!thr || !j->tk.counted)
        return;
    enum thr_outcome o = THR_BIND_NONE;
    if (answered && j->rs.res.status == STORE_OK)
        o = THR_BIND_OK;
    else if (answered && store_bind_refused(j->rs.res.status))
        o = THR_BIND_FAILED;
    thr_account_done(thr, &j->tk, o, dir_clock_ms());
}

/* Runs the resolver until it waits for LDAP or ends. The job may be gone
 * when this returns. */
static void dj_step(struct dir_thread *t, struct dir_job *j)
{
    const struct dir_conf *dc = t->d->conf;
    for (;;) {
        dj_bind_done(t, j, true);
        if (resolve_next(&j->rs) != RESOLVE_OP)
            break;
        const struct store_op *op = &j->rs.op;
        if (op->kind == SOP_DATABASE && dir_database_mapped(dc, j->req, op, &j->rs.res))
            continue;
        if (op->kind == SOP_BIND && dj_bind_throttled(t, j))
            continue;
        struct ldap_store *ls = t->ls[op->forest];
        if (ls) {
            j->waiting = ls;
            j->lop.job = j;
            j->lop.op = op;
            j->lop.res = &j->rs.res;
            ldap_store_start(ls, &j->lop, dir_clock_ms());
            return;
        }
        const struct forest_conf *fc = &dc->forests[dc->order[op->forest]];
        if (fc->store) {
            ldif_store_run(fc->store, &dc->topo.forests[op->forest], op->forest, op, &j->rs.res);
        } else {
            memset(&j->rs.res, 0, sizeof j->rs.res);
            j->rs.res.status = STORE_UNAVAILABLE;
        }
    }
    dj_finish(t, j);
}

static void dj_ldap_done(void *arg, struct ldap_op *lop)
{
    struct dir_job *j = lop->job;
    j->waiting = NULL;
    j->ldap_requests += lop->ldap_requests;
    dj_step(arg, j);
}

static void dj_start_now(struct dir_thread *t, struct dir_request *req, uint64_t now)
{
    const struct dir *d = t->d;
    struct dir_job *j = calloc(1, sizeof *j);
    if (!j) {
        req->status = LOGIN_UNAVAILABLE;
        dir_post(&t->ring, req);
        return;
    }
    j->req = req;
    j->start_ms = now;
    atomic_fetch_add_explicit(&t->d->stats.requests, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->d->stats.in_flight, 1, memory_order_relaxed);
    j->deadline_ms = now + (uint64_t)d->conf->request_timeout * 1000;
    fg_list_add_tail(&t->jobs, &j->link);
    if (req->refuse) {
        j->throttled = true;
        dj_answer_now(t, j, LOGIN_FAILED, RW_THROTTLED);
    } else if (req->cred->mech == CRED_MECH_GSSAPI) {
        dj_start_gss(t, j);
    } else if (req->audit.cache == DC_HIT) {
        dj_start_cached(t, j, now);
    } else if (req->audit.cache == DC_MISS) {
        dj_start_miss(t, j, now);
    } else {
        dj_start_full(t, j);
    }
}

/*
 * The address throttle's delay is held here, on the directory thread's
 * clock, not on the worker: a held request costs a list entry, and its
 * worker serves everyone else meanwhile. RequestTimeout counts from the
 * end of the hold.
 */
static void dj_start(struct dir_thread *t, struct dir_request *req, uint64_t now)
{
    struct dir_delayed *x;
    if (req->hold_ms == 0 || !(x = calloc(1, sizeof *x))) {
        dj_start_now(t, req, now);
        return;
    }
    x->req = req;
    x->due_ms = now + req->hold_ms;
    fg_list_add_sorted(&t->held, &x->link, dd_before);
}

static void dt_start_held(struct dir_thread *t, uint64_t now)
{
    struct dir_delayed *x;
    while ((x = FG_LIST_FIRST(&t->held, struct dir_delayed, link)) && x->due_ms <= now) {
        fg_list_del(&x->link);
        dj_start_now(t, x->req, now);
        free(x);
    }
}

/* RequestTimeout passed: the client hears [UNAVAILABLE]. Jobs are in
 * start order and share one timeout, so the expired ones are first. */
static void dt_expire(struct dir_thread *t, uint64_t now)
{
    struct dir_job *j;
    while ((j = FG_LIST_FIRST(&t->jobs, struct dir_job, link)) && j->deadline_ms <= now) {
        atomic_fetch_add_explicit(&t->d->stats.timeouts, 1, memory_order_relaxed);
        log_msg(LOG_WARN, "directory_timeout",
                "a login's directory request took longer than RequestTimeout (%us)",
                t->d->conf->request_timeout);
        if (j->kind == DJ_WAIT) {
            fg_list_del(&j->ilink); /* its leader goes on without it */
            dj_answer_now(t, j, LOGIN_UNAVAILABLE, RW_UNAVAILABLE);
            continue;
        }
        if (j->waiting) {
            j->ldap_requests += j->lop.ldap_requests;
            ldap_store_cancel(j->waiting, &j->lop);
            j->waiting = NULL;
        }
        j->rs.status = LOGIN_UNAVAILABLE;
        j->rs.why = RW_UNAVAILABLE;
        dj_finish(t, j);
    }
}

/* Nothing left to answer. */
static bool dt_idle(const struct dir_thread *t)
{
    return fg_list_empty(&t->jobs) && fg_list_empty(&t->delayed) && fg_list_empty(&t->held);
}

/* Takes the requests the workers queued. False when stopping with nothing
 * left to do. */
static bool dt_take(struct dir_thread *t, uint64_t now)
{
    struct fg_list batch;
    struct fg_list *n;
    uint64_t v;
    while (read(t->efd, &v, sizeof v) < 0 && errno == EINTR)
        ;
    /* The queue is taken whole under the lock, so the workers wait for a
     * splice, never for a resolution. */
    fg_list_init(&batch);
    pthread_mutex_lock(&t->lock);
    fg_list_splice_tail(&batch, &t->requests);
    bool stopping = atomic_load(&t->stopping);
    pthread_mutex_unlock(&t->lock);
    /* Unlinked before dj_start, which may post the answer: from then on the
     * request is the worker's again, and may be queued anew. */
    while ((n = fg_list_pop(&batch)))
        dj_start(t, FG_CONTAINER_OF(n, struct dir_request, link), now);
    return !(stopping && dt_idle(t));
}

static int dt_poll_timeout(const struct dir_thread *t, uint64_t now)
{
    const struct dir_job *j = FG_LIST_FIRST(&t->jobs, struct dir_job, link);
    const struct dir_delayed *x = FG_LIST_FIRST(&t->delayed, struct dir_delayed, link);
    const struct dir_delayed *h = FG_LIST_FIRST(&t->held, struct dir_delayed, link);
    uint64_t next = j ? j->deadline_ms : UINT64_MAX;
    if (x)
        next = FG_MIN(next, x->due_ms);
    if (h)
        next = FG_MIN(next, h->due_ms);
    for (unsigned f = 0; f < DIR_MAX_FORESTS; f++)
        if (t->ls[f])
            next = FG_MIN(next, ldap_store_next_timer(t->ls[f]));
    if (next == UINT64_MAX)
        return -1;
    return next <= now ? 0 : (int)FG_MIN(next - now, (uint64_t)60000);
}

static void *dir_thread_main(void *arg)
{
    struct dir_thread *t = arg;
    struct pollfd pfd[1 + DIR_MAX_FORESTS * (1 + LDS_MAX_BIND_CONNS)];

    rc_thread_register();
    for (;;) {
        unsigned n = 0;
        pfd[n++] = (struct pollfd){.fd = t->efd, .events = POLLIN};
        for (unsigned f = 0; f < DIR_MAX_FORESTS; f++)
            if (t->ls[f])
                n += ldap_store_pollfds(t->ls[f], pfd + n, FG_ARRAY_SIZE(pfd) - n);
        int rc = poll(pfd, n, dt_poll_timeout(t, dir_clock_ms()));
        uint64_t now = dir_clock_ms();
        if (rc < 0 && errno != EINTR) {
            log_msg(LOG_ERROR, "directory", "poll: %s", strerror(errno));
            break;
        }
        if ((pfd[0].revents & POLLIN) && !dt_take(t, now))
            break;
        for (unsigned f = 0; f < DIR_MAX_FORESTS; f++)
            if (t->ls[f])
                ldap_store_process(t->ls[f], now);
        dt_start_held(t, dir_clock_ms());
        dt_expire(t, dir_clock_ms());
        dt_post_due(t, dir_clock_ms());
        if (atomic_load(&t->stopping) && dt_idle(t))
            break;
    }
    rc_thread_unregister();
    return NULL;
}

static void dt_free(struct dir_thread *t)
{
    for (unsigned f = 0; f < DIR_MAX_FORESTS; f++)
        ldap_store_free(t->ls[f]);
    if (t->efd >= 0)
        close(t->efd);
    if (t->ring.ring_fd > 0)
        io_uring_queue_exit(&t->ring);
    pthread_mutex_destroy(&t->lock);
}

static int dt_init(struct dir *d, struct dir_thread *t)
{
    const struct dir_conf *dc = d->conf;
    t->d = d;
    fg_list_init(&t->requests);
    fg_list_init(&t->jobs);
    fg_list_init(&t->delayed);
    fg_list_init(&t->held);
    for (unsigned b = 0; b < DT_INFLIGHT_BUCKETS; b++)
        fg_list_init(&t->inflight[b]);
    t->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&t->lock, NULL);
    if (t->efd < 0 || io_uring_queue_init(8, &t->ring, 0) < 0) {
        log_msg(LOG_ERROR, "directory", "a directory thread cannot create its ring or eventfd");
        return FG_ERROR;
    }
    for (unsigned k = 0; k < dc->topo.nforests; k++) {
        const struct forest_conf *fc = &dc->forests[dc->order[k]];
        struct ldap_store_conf lc;
        if (!fc->uri[0])
            continue;
        dir_ldap_store_conf(dc, fc, &lc);
        lc.down_count = &d->stats.ldap_down;
        if (!(t->ls[k] = ldap_store_new(&lc, &dc->topo.forests[k], (int)k, dj_ldap_done, t))) {
            log_msg(LOG_ERROR, "directory", "forest %s: cannot set up its LDAP store", fc->name);
            return FG_ERROR;
        }
    }
    return FG_OK;
}

int dir_start(struct dir *d)
{
    const struct dir_conf *dc = d->conf;
    if (!dc->enabled)
        return FG_OK;
    if (dc->route_ttl > 0) {
        uint32_t keep = dc->serve_stale ? dir_ms(dc->route_ttl) : 0;
        if (rc_init(&d->cache, dc->route_max, keep) != FG_OK) {
            log_msg(LOG_ERROR, "directory", "cannot set up the route cache");
            return FG_ERROR;
        }
        d->cache_on = true;
    }
    d->threads = calloc(dc->threads, sizeof *d->threads);
    if (!d->threads)
        return FG_ERROR;
    for (unsigned i = 0; i < dc->threads; i++) {
        struct dir_thread *t = &d->threads[i];
        t->efd = -1;
        d->nthreads++;
        if (dt_init(d, t) != FG_OK)
            return FG_ERROR;
        if (pthread_create(&t->tid, NULL, dir_thread_main, t) != 0) {
            log_msg(LOG_ERROR, "directory", "cannot start directory thread %u", i);
            return FG_ERROR;
        }
        t->started = true;
    }
    return FG_OK;
}

static void dt_wake(struct dir_thread *t)
{
    uint64_t one = 1;
    while (write(t->efd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

void dir_stop(struct dir *d)
{
    for (unsigned i = 0; i < d->nthreads; i++) {
        struct dir_thread *t = &d->threads[i];
        if (!t->started)
            continue;
        pthread_mutex_lock(&t->lock);
        atomic_store(&t->stopping, true);
        pthread_mutex_unlock(&t->lock);
        dt_wake(t);
        pthread_join(t->tid, NULL);
    }
    for (unsigned i = 0; i < d->nthreads; i++)
        dt_free(&d->threads[i]);
    free(d->threads);
    d->threads = NULL;
    d->nthreads = 0;
    if (d->cache_on) {
        rc_destroy(&d->cache);
        d->cache_on = false;
    }
}

/*
 * The worker's look at the route cache, without a lock: a hit goes to the
 * pool as a warm logon (one bind, or none), a miss as a resolution. The
 * thread is chosen by the name, so that concurrent misses of one name meet
 * on one thread and make one resolution.
 */
static unsigned dir_lookup(struct dir *d, struct dir_request *req)
{
    req->key_len = 0;
    req->stale_ok = false;
    /* A Kerberos logon has no password to cache, nor a name until it ends. */
    if (!d->cache_on || req->cred->mech == CRED_MECH_GSSAPI ||
        !(req->key_len = (uint16_t)route_key(req->cred->user, req->cred->user_len, req->key))) {
        req->audit.cache = DC_OFF;
        return atomic_fetch_add_explicit(&d->next, 1, memory_order_relaxed);
    }
    req->key_hash = rc_hash(&d->cache, req->key, req->key_len);
    enum rc_found f = req->fresh ? RC_MISS
                                 : rc_lookup(&d->cache, req->key, req->key_len, req->key_hash,
                                             dir_clock_ms(), &req->snap, &req->own_target);
    req->audit.cache = f == RC_HIT ? DC_HIT : DC_MISS;
    req->stale_ok = f == RC_STALE;
    /* The high bits: the low ones pick the thread's in-flight bucket. */
    return (unsigned)(req->key_hash >> 40);
}

int dir_submit(struct dir *d, struct io_uring *ring, struct dir_request *req, uint64_t ud)
{
    req->status = dir_precheck(req->cred);
    req->elapsed_ms = 0;
    req->sasl_continue = false;
    if (req->cred->mech == CRED_MECH_GSSAPI && !(d->conf->enabled && d->nthreads > 0 && d->krb))
        req->status = LOGIN_UNAVAILABLE; /* the configuration check keeps this from happening */
    memset(&req->audit, 0, sizeof req->audit);
    atomic_store_explicit(&req->answered, false, memory_order_relaxed);
    if (req->status == LOGIN_OK && d->conf->enabled && d->nthreads > 0) {
        struct dir_thread *t = &d->threads[dir_lookup(d, req) % d->nthreads];
        req->ring_fd = ring->ring_fd;
        req->ud = ud;
        pthread_mutex_lock(&t->lock);
        fg_list_add_tail(&t->requests, &req->link);
        pthread_mutex_unlock(&t->lock);
        dt_wake(t);
        return FG_OK;
    }
    struct io_uring_sqe *sqe = NULL;
    if (req->hold_ms && !(sqe = io_uring_get_sqe(ring)))
        return FG_AGAIN;
    if (req->status == LOGIN_OK && req->refuse) {
        req->status = LOGIN_FAILED;
        req->audit.why = resolve_why_text(RW_THROTTLED);
    }
    if (req->status == LOGIN_OK)
        dir_static_route(d, req);
    if (!req->hold_ms)
        return FG_DONE; /* a completion for it would cost a trip through the ring */
    /* Without a pool the ring holds it: the kernel reads hold_ts when the
     * worker submits, and posts the answer when it runs out. */
    req->hold_ts.tv_sec = req->hold_ms / 1000;
    req->hold_ts.tv_nsec = (long long)(req->hold_ms % 1000) * 1000000;
    io_uring_prep_timeout(sqe, &req->hold_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, ud);
    return FG_OK;
}

bool dir_route_failed(struct dir *d, struct dir_request *req)
{
    enum dir_cache_use u = req->audit.cache;
    if (req->fresh || !d->cache_on || req->key_len == 0 ||
        (u != DC_HIT && u != DC_CREDENTIAL && u != DC_STALE))
        return false;
    rc_forget(&d->cache, req->key, req->key_len, req->key_hash);
    atomic_fetch_add_explicit(&d->cache.stats.stale, 1, memory_order_relaxed);
    req->fresh = true;
    return true;
}

void dir_thread_register(void)
{
    rc_thread_register();
}

void dir_thread_unregister(void)
{
    rc_thread_unregister();
}

void dir_cache_show(struct dir *d, const char *prefix, FILE *out)
{
    if (!d->cache_on) {
        fprintf(out, "the route cache is off (RouteCacheTTL = 00:00:00, or no forest)\n");
        return;
    }
    rc_show(&d->cache, &d->conf->topo, prefix, dir_clock_ms(), out);
}

unsigned dir_cache_flush(struct dir *d, const char *name)
{
    char key[ROUTE_KEY_MAX];
    size_t n;
    if (!d->cache_on)
        return 0;
    if (!name || !*name)
        return rc_flush(&d->cache);
    if ((n = route_key(name, strlen(name), key)) == 0)
        return 0;
    return rc_forget(&d->cache, key, n, rc_hash(&d->cache, key, n));
}

const char *dir_cache_use_name(enum dir_cache_use u)
{
    static const char *const names[] = {"off",        "miss",      "hit",  "negative",
                                        "credential", "coalesced", "stale"};
    return u < FG_ARRAY_SIZE(names) ? names[u] : "?";
}

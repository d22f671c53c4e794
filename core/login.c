/*
 * The login phase: directory request, backend connect, the backend's login
 * dialogue (proto/imap_backend.c, proto/pop3_backend.c), and the hand-over
 * to the relay. Every step is a completion on the worker's ring. See login.h.
 */
#include "login.h"

#include "../directory/krb.h"
#include "../proto/proxy_proto.h"
#include "../tls/tls.h"
#include "bclose.h"
#include "conn.h"
#include "srcaddr.h"
#include "tlsio.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const struct backend_login_ops *const login_ops[FG_PROTO_COUNT] = {&imap_backend_ops,
                                                                          &pop3_backend_ops};

static const char *login_status_name(enum login_status st)
{
    static const char *const names[] = {"ok",          "failed", "denied",  "expired",
                                        "unavailable", "in-use", "too-many"};
    return names[st];
}

/*
 * The address throttle, before the directory hears of the logon: a recent
 * failure from the address holds the request (on the directory's clock,
 * not here), and a refused address is answered as a wrong password after
 * the longest hold, without the directory.
 */
static void login_throttle(struct worker *w, struct conn *c)
{
    struct conn_login *lg = c->lg;
    struct throttle *thr = w->dir->thr;
    lg->req.client = c->peer;
    lg->req.hold_ms = 0;
    lg->req.refuse = false;
    lg->addr_throttle = THR_PASS;
    if (!thr || !thr->on || lg->req.fresh)
        return;
    enum thr_reason r = thr_addr_check(thr, &c->peer, fg_clock_ms(), &lg->req.hold_ms);
    if (r == THR_ADDR_BANNED) {
        lg->req.refuse = true;
        lg->req.hold_ms = thr->conf->addr_delay_max_ms;
    }
    lg->addr_throttle = (uint8_t)r;
}

/* A GSSAPI exchange's first response starts a new security context; a
 * cancelled or failed exchange's is dropped. False when out of memory. */
static bool login_gss_begin(struct conn_login *lg)
{
    const struct cred *cr = lg->req.cred;
    if (cr->mech != CRED_MECH_GSSAPI || !cr->gss_first)
        return true;
    krb_sess_free(lg->req.krb);
    lg->req.krb = krb_sess_new();
    return lg->req.krb != NULL;
}

void login_start(struct worker *w, struct conn *c)
{
    if (!c->lg && !(c->lg = calloc(1, sizeof *c->lg))) {
        c->s->ops->login_done(c->s, LOGIN_UNAVAILABLE, NULL, 0);
        conn_enter(w, c, CONN_PREAUTH);
        return;
    }
    struct conn_login *lg = c->lg;
    lg->req.cred = c->s->cred;
    lg->req.proto = (enum fg_proto)c->proto;
    if (!login_gss_begin(lg)) {
        c->s->ops->login_done(c->s, LOGIN_UNAVAILABLE, NULL, 0);
        conn_enter(w, c, CONN_PREAUTH);
        return;
    }
    /* GSSAPI's empty answer to the AP-REP: the offer is ready, no trip to
     * the directory pool. */
    if (lg->req.cred->mech == CRED_MECH_GSSAPI && lg->req.krb &&
        krb_step_here(lg->req.krb, lg->req.cred->blob_len)) {
        c->s->ops->sasl_challenge(c->s, lg->req.krb->out, lg->req.krb->out_len);
        conn_enter(w, c, CONN_PREAUTH);
        return;
    }
    login_throttle(w, c);
    lg->dir_queued_us = metrics_now_us();
    if (!lg->req.fresh) { /* a stale route's second resolution: the same logon */
        lg->dir_started_ms = fg_now_ms();
        lg->started_us = lg->dir_queued_us;
    }
    uint64_t ud = ud_make(OP_LOGIN_DONE, conn_slot(w, c), c->gen);
    int rc;
    while ((rc = dir_submit(w->dir, &w->ring, &lg->req, ud)) == FG_AGAIN)
        io_uring_submit(&w->ring);
    if (rc == FG_DONE) {
        login_on_directory(w, c); /* the static route: the same phase goes on */
        return;
    }
    c->inflight++;
}

/*
 * The directory's part of the audit line: how the name was split, the
 * account and its forest, why it failed, and the directory's time and
 * operations (a Windows Security log entry, as one line).
 */
static void login_log_directory(struct log_line *l, const struct conn *c, const struct dir_audit *a)
{
    const struct cred *cr = c->s ? c->s->cred : NULL;
    log_cstr(l, "form", logon_form_name((enum logon_form)a->form));
    /* How the name was split: the parts the directory searched for. */
    static const char *const part_names[] = {"split_domain", "split_user", "split_upn",
                                             "split_alias"};
    const struct ln_part *parts[] = {&a->ln.domain, &a->ln.user, &a->ln.upn, &a->ln.alias};
    for (size_t i = 0; cr && a->form != LN_INVALID && i < FG_ARRAY_SIZE(parts); i++)
        if (parts[i]->len > 0 && (size_t)parts[i]->off + parts[i]->len <= cr->user_len)
            log_str(l, part_names[i], cr->user + parts[i]->off, parts[i]->len);
    if (a->account[0]) {
        log_cstr(l, "account", a->account);
        log_cstr(l, "forest", a->forest);
    }
    if (a->not_found && cr) {
        char why[CRED_NAME_MAX + 64];
        snprintf(why, sizeof why, "User %.*s wasn't found in Active Directory.", (int)cr->user_len,
                 cr->user);
        log_cstr(l, "reason", why);
    } else if (a->why) {
        log_cstr(l, "reason", a->why);
    }
    if (a->cache != DC_OFF)
        log_cstr(l, "cache", dir_cache_use_name((enum dir_cache_use)a->cache));
    if (c->lg->req.fresh)
        log_cstr(l, "stale_retry", "1");
    log_fmt(l, "dir_ms", "%u", c->lg->req.elapsed_ms);
    log_fmt(l, "dir_ops", "%u", a->ops);
    if (a->ldap)
        log_fmt(l, "ldap_ops", "%u", a->ldap);
}

/* The throttle's part of the audit line: the account's decision, else the
 * address's, and how long the attempt was held. */
static void login_log_throttle(struct log_line *l, const struct conn_login *lg)
{
    uint8_t r = lg->req.audit.throttle ? lg->req.audit.throttle : lg->addr_throttle;
    if (r != THR_PASS)
        log_cstr(l, "throttle", thr_reason_name((enum thr_reason)r));
    if (lg->req.hold_ms)
        log_fmt(l, "hold_ms", "%u", lg->req.hold_ms);
}

/* Logs the outcome of a login attempt: one audit line per attempt. */
static void login_log(struct conn *c, enum login_status st, const char *reason)
{
    struct log_line l;
    const struct cred *cr = c->s ? c->s->cred : NULL;

    conn_log_begin(&l, c, st == LOGIN_OK ? LOG_INFO : LOG_WARN, "login");
    log_cstr(&l, "result", login_status_name(st));
    if (cr && !c->user)
        log_cstr(&l, "mech",
                 cr->mech == CRED_MECH_PLAIN    ? "plain"
                 : cr->mech == CRED_MECH_LOGIN  ? "login"
                 : cr->mech == CRED_MECH_GSSAPI ? "gssapi"
                                                : "user");
    if (cr && cr->mech == CRED_MECH_GSSAPI && c->lg && c->lg->req.krb &&
        c->lg->req.krb->principal_len)
        log_str(&l, "principal", c->lg->req.krb->principal, c->lg->req.krb->principal_len);
    if (c->lg && c->lg->req.status == LOGIN_OK)
        log_str(&l, "mailbox", c->lg->req.route.mailbox, c->lg->req.route.mailbox_len);
    const struct dir_audit *a = c->lg && (c->lg->req.audit.ops > 0 || c->lg->req.audit.why ||
                                          c->lg->req.audit.cache != DC_OFF)
                                        ? &c->lg->req.audit
                                        : NULL;
    if (a)
        login_log_directory(&l, c, a);
    if (reason && !(a && (a->why || a->not_found)))
        log_cstr(&l, "reason", reason);
    if (c->lg)
        login_log_throttle(&l, c->lg);
    if (c->s && c->s->client_id[0])
        log_cstr(&l, "client_id", c->s->client_id);
    /* Whether the password and the session crossed to the backend encrypted. */
    if (c->btls && tls_conn_done(c->btls))
        log_cstr(&l, "backend_tls", tls_conn_version(c->btls));
    else if (st == LOGIN_OK || (c->flags & CF_GREETED))
        log_cstr(&l, "backend_tls", "none");
    if (c->lg)
        log_fmt(&l, "ms", "%u", fg_now_ms() - c->lg->dir_started_ms);
    log_end(&l);
}

/* Gives up the backend socket; its pending completions become stale. */
static void login_abort(struct worker *w, struct conn *c)
{
    if (c->bfd < 0)
        return;
    int bye = bclose_login_keep(c); /* the backend closes first (bclose.h) */
    conn_close_fd(w, c, c->bfd, OP_B_CANCEL);
    bclose_login_bye(w, bye, c->proto);
    c->bops += 2;
    c->bfd = -1;
    c->flags |= CF_B_ABORTED;
    c->flags &= ~(CF_B_RECV | CF_GREETED | CF_B_UP | CF_B_PROBE);
    c->bh = NULL;
    STAT_SUB(w, backend_fds, 1);
    backend_login_free(&c->lg->bl);
    buf_free(&c->lg->bq.q);
    buf_free(&c->lg->bout);
    tls_conn_free(c->btls);
    c->btls = NULL;
    c->flags &= ~CF_B_TLS_HS;
}

/* The login failed: tell the client, and go back to reading commands. */
/* A wrong password (or name) from the client's address counts toward its
 * delay and its refusal; when it starts a refusal, that is logged once. */
static void login_count_failure(struct worker *w, struct conn *c)
{
    struct throttle *thr = w->dir->thr;
    if (!thr || !thr->on || !thr_addr_failed(thr, &c->peer, fg_clock_ms()))
        return;
    struct log_line l;
    conn_log_begin(&l, c, LOG_WARN, "address_refused");
    log_fmt(&l, "failures", "%u", thr->conf->addr_threshold);
    log_fmt(&l, "seconds", "%u", thr->conf->addr_ban);
    log_cstr(&l, "reason", "AddressFailureThreshold failed logons within AddressFailureWindow");
    log_end(&l);
}

/* The form of the name typed, for the metrics: as the directory split it,
 * else (no forests: the static route) split here. */
static enum logon_form login_form(const struct conn *c)
{
    struct logon_name ln;
    const struct cred *cr = c->s ? c->s->cred : NULL;
    if (c->lg->req.audit.form != LN_INVALID)
        return (enum logon_form)c->lg->req.audit.form;
    return cr ? logon_name_split(cr->user, cr->user_len, &ln) : LN_INVALID;
}

static void login_fail(struct worker *w, struct conn *c, enum login_status st, const char *reason)
{
    login_log(c, st, reason);
    metrics_logon(&w->metrics, c->proto, st, login_form(c), c->lg->started_us);
    if (st == LOGIN_FAILED)
        login_count_failure(w, c);
    STAT_ADD(w, logins_failed, 1);
    if (st == LOGIN_UNAVAILABLE)
        STAT_ADD(w, backend_errors, 1);
    login_abort(w, c);
    c->lg->req.fresh = false;
    c->s->ops->login_done(c->s, st, NULL, 0);
    conn_enter(w, c, CONN_PREAUTH);
}

/*
 * The backend refused the logon on its route, or no host of the route could
 * be reached. A route from the cache may be stale (the mailbox moved): it is
 * dropped and the name resolved again, once, before the client hears
 * anything. False when the route was fresh: the failure stands.
 */
static bool login_heal(struct worker *w, struct conn *c, const char *why)
{
    struct log_line l;
    if (!dir_route_failed(w->dir, &c->lg->req))
        return false;
    conn_log_begin(&l, c, LOG_WARN, "route_stale");
    log_str(&l, "mailbox", c->lg->req.route.mailbox, c->lg->req.route.mailbox_len);
    log_cstr(&l, "reason", why);
    log_cstr(&l, "action", "resolving the name again");
    log_end(&l);
    login_abort(w, c);
    /* The directory's time again, under the timeout the first request had. */
    ring_timer_touch(w, &c->timer, TL_PREAUTH + c->proto);
    conn_enter(w, c, CONN_LOGIN);
    return true;
}

static void login_fill_params(struct worker *w, struct conn *c)
{
    struct conn_login *lg = c->lg;
    struct backend_login_params *par = &lg->par;
    const struct backend_conf *bc = &w->cfg->backend;
    union net_addr local;
    socklen_t len = sizeof local;

    memset(par, 0, sizeof *par);
    par->mode = bc->mode;
    par->user = lg->req.route.mailbox;
    par->user_len = lg->req.route.mailbox_len;
    par->pass = lg->req.cred->pass;
    par->pass_len = lg->req.cred->pass_len;
    par->master_user = bc->master_user;
    par->master_user_len = strlen(bc->master_user);
    par->master_pass = bc->master_pass;
    par->master_pass_len = bc->master_pass_len;
    par->forward = bc->forward;
    par->starttls = lg->req.route.target->policy->tls == BACKEND_TLS_STARTTLS;
    par->ttl = bc->ttl;
    par->session_id = c->sid;
    if (getsockname(c->fd, &local.sa, &len) < 0)
        local.sa.sa_family = AF_UNSPEC;
    net_addr_ip(&c->peer, lg->client_ip, sizeof lg->client_ip);
    net_addr_ip(&local, lg->local_ip, sizeof lg->local_ip);
    par->client_ip = lg->client_ip;
    par->local_ip = lg->local_ip;
    par->client_port = net_addr_port(&c->peer);
    par->local_port = local.sa.sa_family == AF_UNSPEC ? 0 : net_addr_port(&local);
}

/* A host the directory named, seen for the first time: the start-up check
 * could not warn about it. */
static void login_warn_clear(struct worker *w, const struct conn *c, const struct bhost *h)
{
    const struct backend_target *t = c->lg->req.route.target;
    if (t != &c->lg->req.own_target || w->cfg->backend.mode != BACKEND_LOGIN_MASTER ||
        t->policy->tls != BACKEND_TLS_NONE || net_addr_is_loopback(&h->addr))
        return;
    log_msg(LOG_WARN, "backend_clear_text",
            "LoginMode = MasterUser with Tls = none: the master password goes in clear text to "
            "%s, which the directory names; set Tls = starttls or implicit",
            h->name);
}

/* Chooses the route's next address a logon may use now: a host that is down
 * is passed by until its back-off ends. False when none is left. */
static bool login_pick(struct worker *w, struct conn *c)
{
    struct conn_login *lg = c->lg;
    const struct backend_target *t = lg->req.route.target;
    struct bhost_table *bt = w->shared->bhosts;
    uint64_t now = bhost_now_ms();

    for (; lg->addr_idx < t->naddrs; lg->addr_idx++) {
        union net_addr a = t->addrs[lg->addr_idx];
        bool created = false;
        net_addr_set_port(&a, lg->req.route.port);
        struct bhost *h = bt ? bhost_get(bt, &a, t->hosts[t->addr_host[lg->addr_idx]],
                                         t->policy->tls, &created)
                             : NULL;
        if (created)
            login_warn_clear(w, c, h);
        enum bhost_use use = h ? bhost_claim(bt, h, now) : BHOST_USE;
        if (use == BHOST_SKIP)
            continue;
        c->baddr = a;
        c->bh = h;
        if (use == BHOST_PROBE)
            c->flags |= CF_B_PROBE;
        if (h)
            atomic_fetch_add_explicit(&h->attempts, 1, memory_order_relaxed);
        return true;
    }
    return false;
}

static void login_connect(struct worker *w, struct conn *c)
{
    struct conn_login *lg = c->lg;
    int one = 1;

    if (c->bops > 0) {
        c->flags |= CF_B_CONNECT; /* after the old socket's completions */
        return;
    }
    c->flags &= ~(CF_B_CONNECT | CF_B_ABORTED | CF_GREETED | CF_B_UP | CF_B_PROBE);
    if (!login_pick(w, c)) {
        /* Every copy is down: say so at once, as Exchange does when no copy
         * of a database is mounted -- unless the route was a cached one,
         * which may name the mailbox's old servers. */
        const char *why =
                lg->tried ? "no backend host reachable" : "every backend host of the route is down";
        if (!login_heal(w, c, why))
            login_fail(w, c, LOGIN_UNAVAILABLE, why);
        return;
    }
    lg->tried++;
    int fd = socket(c->baddr.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        login_fail(w, c, LOGIN_UNAVAILABLE, strerror(errno));
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    srcaddr_bind(&w->cfg->backend.sources, fd, c->baddr.sa.sa_family);
    c->bfd = fd;
    STAT_ADD(w, backend_fds, 1);
    FG_SW_ADD(&w->metrics.backend_connects, 1);
    conn_set_state(w, c, CONN_BACKEND);
    ring_timer_touch(w, &c->timer, TL_BACKEND);
    backend_login_init(&lg->bl, login_ops[c->proto], &lg->par, &lg->bq.q);
    if (plog_enabled(c->proto)) {
        lg->bl.plog = conn_plog;
        lg->bl.plog_ctx = c;
    }
    struct io_uring_sqe *sqe = ring_sqe(w);
    io_uring_prep_connect(sqe, fd, &c->baddr.sa, net_addr_len(&c->baddr));
    conn_tag(w, c, sqe, OP_B_CONNECT);
    c->bops++;
}

/* This host failed before it was usable (no greeting, no TLS): it is
 * marked down, and the next one is tried. */
static void login_next_host(struct worker *w, struct conn *c, const char *why)
{
    struct log_line l;
    conn_log_begin(&l, c, LOG_WARN, "backend_error");
    log_cstr(&l, "reason", why);
    log_end(&l);
    if (c->bh)
        bhost_failed(w->shared->bhosts, c->bh, c->flags & CF_B_PROBE, bhost_now_ms(), why);
    FG_SW_ADD(&w->metrics.backend_connect_failures, 1);
    login_abort(w, c);
    c->lg->addr_idx++;
    /* The next connect may wait for the old socket's completions; the
     * timeout starts again for it (and leaves the expiry list's head). */
    ring_timer_touch(w, &c->timer, TL_BACKEND);
    login_connect(w, c);
}

/* The reason on the audit line of a logon refused by MaxConnectionsPerUser. */
#define LOGIN_WHY_PER_USER "max_connections_per_user"

/* MaxConnectionsPerUser, before the backend login: a mailbox already at its
 * limit is refused without the work of a backend login. Only once the
 * directory has checked the password: without a directory the backend
 * checks it, and the refusal must not tell a guesser anything. */
static bool login_user_full(struct worker *w, struct conn *c)
{
    const struct dir_route *r = &c->lg->req.route;
    if (!w->cfg->dir.enabled ||
        !limits_user_full(w->shared->limits, c->proto, r->mailbox, r->mailbox_len))
        return false;
    STAT_ADD(w, refused_per_user, 1);
    login_fail(w, c, LOGIN_TOO_MANY, LOGIN_WHY_PER_USER);
    return true;
}

/* A Kerberos logon is known, from here on, by the name its principal
 * mapped to: the audit line splits it, the limits count it. */
static void login_gss_name(struct conn *c)
{
    struct cred *cr = c->s->cred;
    const struct krb_sess *ks = c->lg->req.krb;
    if (cr->mech == CRED_MECH_GSSAPI && ks && ks->name_len)
        cred_set(cr->user, &cr->user_len, CRED_NAME_MAX, ks->name, ks->name_len);
}

/* The directory's answer (login_start, or its completion). */
void login_on_directory(struct worker *w, struct conn *c)
{
    struct conn_login *lg = c->lg;

    metrics_observe(&w->metrics.dir, metrics_now_us() - lg->dir_queued_us);
    if (lg->req.sasl_continue) { /* GSSAPI goes on: the next challenge */
        struct krb_sess *ks = lg->req.krb;
        c->s->ops->sasl_challenge(c->s, ks->out, ks->out_len);
        conn_enter(w, c, CONN_PREAUTH);
        return;
    }
    login_gss_name(c);
    if (lg->req.status != LOGIN_OK) {
        login_fail(w, c, lg->req.status, "refused before the backend");
        return;
    }
    if (login_user_full(w, c))
        return;
    login_fill_params(w, c);
    lg->addr_idx = 0;
    lg->tried = 0;
    login_connect(w, c);
}

static bool login_op_done(struct worker *w, struct conn *c)
{
    c->bops--;
    if (!(c->flags & CF_B_ABORTED))
        return true;
    if (c->bops == 0 && (c->flags & CF_B_CONNECT))
        login_connect(w, c);
    return false;
}

static const struct backend_target *lg_target(const struct conn *c)
{
    return c->lg->req.route.target;
}

static void login_arm_recv(struct worker *w, struct conn *c)
{
    struct io_uring_sqe *sqe = ring_sqe(w);
    io_uring_prep_recv(sqe, c->bfd, NULL, FG_RECV_BUF_SZ, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = FG_BUF_GROUP;
    conn_tag(w, c, sqe, OP_B_RECV);
    c->bops++;
    c->flags |= CF_B_RECV;
}

/* SendProxyProtocol = v2: the first bytes on the backend connection, before
 * its TLS and its greeting, name the client (from its original address and
 * port to the address it connected to, forestgate's). */
static int login_send_proxy(struct conn *c)
{
    union net_addr local;
    socklen_t len = sizeof local;
    uint8_t hdr[PP_V2_HDR + 36];

    if (getsockname(c->fd, &local.sa, &len) < 0)
        local.sa.sa_family = AF_UNSPEC; /* then a LOCAL header */
    size_t n = pp_encode_v2(hdr, sizeof hdr, &c->peer, &local);
    return buf_append(&c->lg->bq.q, hdr, n);
}

void login_on_connect(struct worker *w, struct conn *c, int res)
{
    if (!login_op_done(w, c))
        return;
    if (res < 0) {
        login_next_host(w, c, strerror(-res));
        return;
    }
    const struct backend_policy *pol = lg_target(c)->policy;
    if (pol->send_proxy == BACKEND_PROXY_V2 && login_send_proxy(c) != FG_OK) {
        login_fail(w, c, LOGIN_UNAVAILABLE, "out of memory");
        return;
    }
    if (pol->tls == BACKEND_TLS_IMPLICIT && tlsio_backend_start(c) != FG_OK) {
        login_next_host(w, c, "cannot start TLS");
        return;
    }
    conn_flush_backend(w, c);
    login_arm_recv(w, c);
}

/* Logged in at the backend: answer the client and start relaying -- unless
 * the mailbox has MaxConnectionsPerUser now (the check before the backend
 * login was not exact: logons run in parallel). Then the backend session
 * is dropped and the client refused; its password was right. The count
 * is held until the connection ends. */
static void login_success(struct worker *w, struct conn *c)
{
    struct conn_login *lg = c->lg;
    struct session *s = c->s;

    if (!limits_user_acquire(w->shared->limits, c->proto, lg->req.route.mailbox,
                             lg->req.route.mailbox_len, &c->lim_user)) {
        STAT_ADD(w, refused_per_user, 1);
        login_fail(w, c, LOGIN_TOO_MANY, LOGIN_WHY_PER_USER);
        return;
    }
    c->user = strndup(s->cred->user, s->cred->user_len);
    c->mailbox = strndup(lg->req.route.mailbox, lg->req.route.mailbox_len);
    login_log(c, LOGIN_OK, NULL);
    metrics_logon(&w->metrics, c->proto, LOGIN_OK, login_form(c), lg->started_us);
    STAT_ADD(w, logins_ok, 1);
    if (c->btls)
        STAT_ADD(w, logins_backend_tls, 1);
    else
        STAT_ADD(w, logins_backend_clear, 1);
    if (c->bh) {
        atomic_fetch_add_explicit(&c->bh->sessions, 1, memory_order_relaxed);
        c->flags |= CF_B_SESSION;
    }
    s->ops->login_done(s, LOGIN_OK, lg->bl.caps, lg->bl.caps_len);
    /* Bytes that followed the login on either side belong to the session:
     * plaintext, encrypted on the way out when that side is TLS. */
    buf_append(s->out, buf_head(&lg->bl.in), buf_avail(&lg->bl.in));
    buf_append(c->btls ? &lg->bout : &lg->bq.q, buf_head(&s->in), buf_avail(&s->in));
    s->ops->destroy(s);
    c->s = NULL;
    lg->req.fresh = false;
    backend_login_free(&lg->bl);
    ring_timer_touch(w, &c->timer, TL_AUTH + c->proto);
    conn_enter(w, c, CONN_RELAY);
}

static void login_lost(struct worker *w, struct conn *c, const char *why);

/* Bytes from the backend during the login dialogue. */
static void login_input(struct worker *w, struct conn *c)
{
    struct conn_login *lg = c->lg;
    enum backend_login_result r = lg->bl.ops->input(&lg->bl);

    conn_flush_backend(w, c);
    switch (r) {
    case BACKEND_AGAIN:
        login_arm_recv(w, c);
        break;
    case BACKEND_OK:
        login_success(w, c);
        break;
    case BACKEND_NO:
        /* The directory accepted the password: a backend that refuses the
         * logon on a cached route may no longer hold the mailbox. It says
         * so as a failed login, or, to a master user, as a refused
         * authorization ([AUTHORIZATIONFAILED]). */
        if ((lg->bl.status == LOGIN_FAILED || lg->bl.status == LOGIN_DENIED) &&
            login_heal(w, c, lg->bl.reason))
            break;
        login_fail(w, c, lg->bl.status, lg->bl.reason);
        break;
    case BACKEND_FAIL:
        /* Before the host is usable (a STARTTLS route that refused
         * STARTTLS), no credential has gone out: the next copy may serve. */
        login_lost(w, c, lg->bl.reason[0] ? lg->bl.reason : "backend error");
        break;
    case BACKEND_STARTTLS:
        if (tlsio_backend_start(c) != FG_OK) {
            login_fail(w, c, LOGIN_UNAVAILABLE, "cannot start TLS to the backend");
            break;
        }
        conn_flush_backend(w, c);
        login_arm_recv(w, c);
        break;
    }
}

/* The backend went away, or its TLS failed: before the host was usable
 * (greeted, over TLS when the route says so) it counts against the host and
 * the next copy is tried; after, the password may have been sent, and the
 * logon ends. */
static void login_lost(struct worker *w, struct conn *c, const char *why)
{
    if (c->flags & CF_B_UP)
        login_fail(w, c, LOGIN_UNAVAILABLE, why);
    else
        login_next_host(w, c, why);
}

static void login_tls_failed(struct worker *w, struct conn *c, const char *why)
{
    char reason[200];
    snprintf(reason, sizeof reason, "TLS to the backend failed: %s", why);
    login_lost(w, c, reason);
}

/* The host answered as its route expects: greeted, and over TLS if the
 * route uses it (after STARTTLS, once the handshake is done). */
static void login_check_up(struct worker *w, struct conn *c)
{
    if ((c->flags & CF_B_UP) || !(c->flags & CF_GREETED))
        return;
    if (lg_target(c)->policy->tls != BACKEND_TLS_NONE && (!c->btls || (c->flags & CF_B_TLS_HS)))
        return;
    c->flags |= CF_B_UP;
    if (c->bh)
        bhost_ok(w->shared->bhosts, c->bh);
}

void login_on_recv(struct worker *w, struct conn *c, struct io_uring_cqe *cqe)
{
    int res = cqe->res;

    c->flags &= ~CF_B_RECV;
    if (!login_op_done(w, c))
        return;
    if (res == -ENOBUFS) {
        login_arm_recv(w, c); /* the buffer ring refills as completions are reaped */
        return;
    }
    if (res <= 0) {
        login_lost(w, c, res == 0 ? "backend closed the connection" : strerror(-res));
        return;
    }
    const char *data = ring_buf(w, cqe);
    if (c->btls) {
        const char *why;
        int trc = tlsio_backend_input(w, c, data, (size_t)res, &why);
        if (trc == FG_ERROR) {
            login_tls_failed(w, c, why);
            return;
        }
        if (trc == FG_DONE) {
            login_lost(w, c, why); /* a clean close_notify: no TLS failure */
            return;
        }
        conn_flush_backend(w, c);
        login_check_up(w, c);
        if (trc == FG_AGAIN || buf_avail(&c->lg->bl.in) == 0) {
            ring_timer_touch(w, &c->timer, TL_BACKEND);
            login_arm_recv(w, c); /* the handshake, or a record, goes on */
            return;
        }
    } else if (buf_append(&c->lg->bl.in, data, (size_t)res) != FG_OK) {
        login_fail(w, c, LOGIN_UNAVAILABLE, "out of memory");
        return;
    }
    if (buf_avail(&c->lg->bl.in) > 256 * 1024) {
        login_fail(w, c, LOGIN_UNAVAILABLE, "backend sent too much");
        return;
    }
    c->flags |= CF_GREETED;
    login_check_up(w, c);
    ring_timer_touch(w, &c->timer, TL_BACKEND);
    login_input(w, c);
}

void login_on_sent(struct worker *w, struct conn *c, int res)
{
    struct sendq *bq = &c->lg->bq;

    if (!login_op_done(w, c)) {
        /* The socket was given up: drop what it was sending. */
        bq->busy = false;
        buf_free(&bq->fly);
        return;
    }
    if (res < 0)
        login_fail(w, c, LOGIN_UNAVAILABLE, strerror(-res));
    else if (!conn_sent(w, c, SIDE_BACKEND, res))
        conn_flush_backend(w, c);
}

void login_expire(struct worker *w, struct conn *c)
{
    if (c->flags & CF_B_UP)
        login_fail(w, c, LOGIN_UNAVAILABLE, "backend did not answer in time");
    else
        login_next_host(w, c,
                        c->flags & CF_GREETED ? "backend TLS did not finish in time"
                                              : "backend connect or greeting timed out");
}

void login_on_closed(struct worker *w, struct conn *c)
{
    login_op_done(w, c);
}

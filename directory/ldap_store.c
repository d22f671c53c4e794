/*
 * The LDAP store. See ldap_store.h.
 *
 * Store operations map to LDAP like this (filters escaped per RFC 4515,
 * size limit 2 on every search: two entries are enough to say "not one"):
 *
 *   SOP_FIND_SAM    (&(objectClass=user)(sAMAccountName=K)(!(UAC bit 2)))
 *   SOP_FIND_UPN    (&(objectClass=user)(userPrincipalName=K))
 *   SOP_FIND_SMTP   (&(objectClass=user)(proxyAddresses=smtp:K))
 *   SOP_FIND_LINKED (&(objectClass=user)(homeMDB=*)(msExchMasterAccountSid=SID))
 *   SOP_FIND_ALIAS  (&(objectClass=user)(homeMDB=*)(mailNickname=K))
 *   SOP_FIND_SID    (&(objectClass=user)(objectSid=SID))
 *   SOP_DATABASE    base search of the database, then of each owning server
 *   SOP_TOKEN_GROUPS base search of the account for tokenGroups (AD computes
 *                   it for a base search only, nested groups included)
 *   SOP_BIND        a simple bind on a bind connection
 *
 * A search over a whole forest is one search per domain naming context, all
 * sent at once: like AD, a domain's search does not descend into its child
 * domains (it returns continuation references, which are ignored: referral
 * chasing is off).
 */
#include "ldap_store.h"
#include "ldap_filter.h"
#include "secdesc.h"

#include "../base/log.h"

#include <ctype.h>
#include <ldap.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>

#define LDS_BACKOFF_MIN_MS 1000
#define LDS_BACKOFF_MAX_MS 8000
#define LDS_MAX_ATTEMPTS   4
#define LDS_FILTER_MAX     2048

enum lc_state {
    LC_CLOSED,
    LC_BINDING, /* the service bind is outstanding; searches wait */
    LC_READY,
};

/* One LDAP request in flight. lop NULL: its operation was cancelled, the
 * answer is dropped when it comes. */
struct ldap_req {
    struct fg_list link; /* on its connection's reqs, newest first */
    struct ldap_op *lop;
    int msgid;
    int domain; /* a search of one domain: the index of the domain searched, else -1 */
    uint64_t sent_ms;
};

struct ldap_conn {
    LDAP *ld;
    int fd;
    uint8_t state;
    bool for_binds;
    unsigned uri;
    int service_msgid;
    uint64_t service_sent_ms;
    struct fg_list reqs; /* ldap_req */
};

struct ldap_store {
    char name[64];
    unsigned nuris;
    char uris[LDS_MAX_URIS][256];
    uint64_t down_until[LDS_MAX_URIS];
    uint32_t backoff_ms[LDS_MAX_URIS];
    char bind_dn[DIR_DN_MAX];
    char *bind_pass;
    size_t bind_pass_len;
    uint8_t tls;
    char ca_file[PATH_MAX];
    uint32_t op_timeout_ms, connect_timeout_ms;
    const struct dir_forest *df;
    int forest_index;
    _Atomic uint64_t *down_count;
    char nobody_dn[DIR_DN_MAX + 32];
    ldap_store_done_fn *done;
    void *arg;
    struct ldap_conn look;
    struct ldap_conn binds[LDS_MAX_BIND_CONNS];
    struct fg_list wait;     /* ldap_op waiting for a connection, FIFO */
    struct fg_list finished; /* ldap_op that ended, done() not yet called, FIFO */
    bool draining;
};

/* ---- small helpers ---- */

enum store_status ldap_bind_status(const char *diag)
{
    static const struct {
        unsigned code;
        enum store_status status;
    } map[] = {{0x532, STORE_BIND_EXPIRED},
               {0x773, STORE_BIND_EXPIRED},
               {0x533, STORE_BIND_DISABLED},
               {0x701, STORE_BIND_ACCOUNT_EXPIRED},
               {0x775, STORE_BIND_LOCKED}};
    const char *p = diag ? strstr(diag, "error, data ") : NULL;
    if (!p)
        return STORE_BIND_FAILED;
    p += strlen("error, data ");
    if (!isxdigit((unsigned char)*p))
        return STORE_BIND_FAILED;
    char *end;
    unsigned long code = strtoul(p, &end, 16);
    if (end - p > 8 || (*end && *end != ',' && *end != ' '))
        return STORE_BIND_FAILED;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (map[i].code == code)
            return map[i].status;
    return STORE_BIND_FAILED;
}

int ldap_store_parse_uris(const char *uris, char out[][256], unsigned max, char *err, size_t errlen)
{
    char tmp[1024];
    int n = 0;
    snprintf(tmp, sizeof tmp, "%s", uris);
    for (char *save = NULL, *tok = strtok_r(tmp, ", \t", &save); tok;
         tok = strtok_r(NULL, ", \t", &save)) {
        LDAPURLDesc *lud = NULL;
        if ((unsigned)n == max) {
            snprintf(err, errlen, "more than %u URIs", max);
            return -1;
        }
        if (strlen(tok) >= 256 || ldap_url_parse(tok, &lud) != LDAP_URL_SUCCESS) {
            snprintf(err, errlen, "%.200s is not an LDAP URI (ldap://host:port or ldaps://...)",
                     tok);
            return -1;
        }
        bool ok = lud->lud_host && lud->lud_host[0] &&
                  (strcasecmp(lud->lud_scheme, "ldap") == 0 ||
                   strcasecmp(lud->lud_scheme, "ldaps") == 0);
        ldap_free_urldesc(lud);
        if (!ok) {
            snprintf(err, errlen, "%.200s: needs ldap:// or ldaps:// and a host", tok);
            return -1;
        }
        snprintf(out[n++], 256, "%s", tok);
    }
    if (n == 0)
        snprintf(err, errlen, "no URI");
    return n > 0 ? n : -1;
}

/* Taken around libldap's TLS context set-up, which is not thread-safe. */
static pthread_mutex_t lds_tls_lock = PTHREAD_MUTEX_INITIALIZER;

/* Opens a connection to uri, synchronously, within the connect timeout:
 * TCP (and TLS for ldaps://), then StartTLS when asked. */
static LDAP *lds_connect(const char *uri, uint8_t tls, const char *ca_file, uint32_t timeout_ms,
                         char *why, size_t whylen)
{
    LDAP *ld = NULL;
    int rc = ldap_initialize(&ld, uri);
    if (rc != LDAP_SUCCESS) {
        snprintf(why, whylen, "%s", ldap_err2string(rc));
        return NULL;
    }
    int v3 = LDAP_VERSION3, zero = 0;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
    ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
    ldap_set_option(ld, LDAP_OPT_RESTART, LDAP_OPT_ON);
    ldap_set_option(ld, LDAP_OPT_SIZELIMIT, &zero);
    if (tls || strncasecmp(uri, "ldaps:", 6) == 0) {
        int demand = LDAP_OPT_X_TLS_DEMAND;
        ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &demand);
        if (ca_file && ca_file[0])
            ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, ca_file);
        /* A new context runs libldap's tls_init, which counts its callers in
         * two plain static ints and, on the first call, sets up a mutex and
         * GnuTLS: two directory threads connecting at once would race there.
         * Connections are rare, so they take turns. */
        pthread_mutex_lock(&lds_tls_lock);
        ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &zero);
        pthread_mutex_unlock(&lds_tls_lock);
    }
    rc = ldap_connect(ld);
    if (rc == LDAP_SUCCESS && tls == 1)
        rc = ldap_start_tls_s(ld, NULL, NULL);
    if (rc != LDAP_SUCCESS) {
        char *diag = NULL;
        ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag);
        /* libldap (GnuTLS) often says only "unknown error code" when the
         * handshake fails: name the usual causes. */
        bool tls_used = tls || strncasecmp(uri, "ldaps:", 6) == 0;
        snprintf(why, whylen, "%s%s%s%s", ldap_err2string(rc),
                 diag && diag[0] && !strstr(diag, "unknown error") ? ": " : "",
                 diag && !strstr(diag, "unknown error") ? diag : "",
                 tls_used ? " (TLS: no server there, or its certificate does not chain to "
                            "LdapCaFile or does not name the URI's host)"
                          : "");
        ldap_memfree(diag);
        ldap_unbind_ext(ld, NULL, NULL);
        return NULL;
    }
    return ld;
}

/* ---- operations' life ---- */

/* lop ended: an operation ends once per start, and it is then on no
 * list (its requests are answered or gone, it is not waiting). */
static void lds_finish(struct ldap_store *ls, struct ldap_op *lop)
{
    fg_list_add_tail(&ls->finished, &lop->link);
}

/* Calls done() for what finished; done() may start new operations. */
static void lds_drain(struct ldap_store *ls)
{
    struct fg_list *n;
    if (ls->draining)
        return;
    ls->draining = true;
    /* Unlinked first: done() may start lop again, or free it. */
    while ((n = fg_list_pop(&ls->finished)))
        ls->done(ls->arg, FG_CONTAINER_OF(n, struct ldap_op, link));
    ls->draining = false;
}

static void lds_unavailable(struct ldap_store *ls, struct ldap_op *lop)
{
    memset(lop->res, 0, sizeof *lop->res);
    lop->res->status = STORE_UNAVAILABLE;
    lds_finish(ls, lop);
}

static void lds_wait(struct ldap_store *ls, struct ldap_op *lop)
{
    if (lop->queued)
        return; /* never twice: a second link would corrupt the queue */
    lop->queued = true;
    fg_list_add_tail(&ls->wait, &lop->link);
}

static void lds_mark_down(struct ldap_store *ls, unsigned uri, uint64_t now, const char *why)
{
    uint32_t b = ls->backoff_ms[uri];
    b = b ? FG_MIN(b * 2, (uint32_t)LDS_BACKOFF_MAX_MS) : LDS_BACKOFF_MIN_MS;
    ls->backoff_ms[uri] = b;
    ls->down_until[uri] = now + b;
    if (ls->down_count)
        atomic_fetch_add_explicit(ls->down_count, 1, memory_order_relaxed);
    log_msg(LOG_WARN, "ldap_down", "forest=%s uri=%s reason=\"%s\" retry_in_ms=%u", ls->name,
            ls->uris[uri], why, b);
}

static void lds_close(struct ldap_conn *c)
{
    if (c->ld)
        ldap_unbind_ext(c->ld, NULL, NULL);
    c->ld = NULL;
    c->fd = -1;
    c->state = LC_CLOSED;
}

/* Forgets every request on c; their answers, if any come, are dropped. */
static void lds_drop_reqs(struct ldap_conn *c)
{
    struct fg_list *n;
    while ((n = fg_list_pop(&c->reqs)))
        free(FG_CONTAINER_OF(n, struct ldap_req, link));
}

/* Puts lop on a failed connection's redo list, once (a second time would
 * loop it). Newest first, as the requests were found. */
static void lds_redo(struct fg_list *redo, struct ldap_op *lop)
{
    if (lop->redo)
        return;
    lop->redo = true;
    lop->outstanding = 0;
    fg_list_add_head(redo, &lop->link);
}

static void lds_op_begin(struct ldap_store *ls, struct ldap_op *lop, uint64_t now);

/*
 * A connection failed. Every operation with a request on it starts again
 * (on the next server), up to LDS_MAX_ATTEMPTS times. A connection that
 * had nothing outstanding was only closed by its server (an idle timeout):
 * that server is not marked down.
 */
static void lds_conn_failed(struct ldap_store *ls, struct ldap_conn *c, uint64_t now,
                            const char *why, struct ldap_op *also)
{
    struct fg_list redo, *n;
    bool busy = !fg_list_empty(&c->reqs) || c->state == LC_BINDING || also != NULL;

    if (busy)
        lds_mark_down(ls, c->uri, now, why);
    /* An operation may have several requests here, and `also` may be one of
     * them. An operation with requests out is on no other list, so its link
     * is free for the redo list; a waiting one (queued) stays where it is. */
    fg_list_init(&redo);
    while ((n = fg_list_pop(&c->reqs))) {
        struct ldap_req *r = FG_CONTAINER_OF(n, struct ldap_req, link);
        if (r->lop)
            lds_redo(&redo, r->lop);
        free(r);
    }
    lds_close(c);
    if (also && !also->queued)
        lds_redo(&redo, also);
    while ((n = fg_list_pop(&redo))) {
        struct ldap_op *lop = FG_CONTAINER_OF(n, struct ldap_op, link);
        lop->redo = false;
        if (++lop->attempts > LDS_MAX_ATTEMPTS)
            lds_unavailable(ls, lop);
        else
            lds_op_begin(ls, lop, now);
    }
}

/* Connects c to the first server not marked down. False when none is left. */
static bool lds_open(struct ldap_store *ls, struct ldap_conn *c, uint64_t now)
{
    for (unsigned i = 0; i < ls->nuris; i++) {
        char why[300];
        if (ls->down_until[i] > now)
            continue;
        LDAP *ld = lds_connect(ls->uris[i], ls->tls, ls->ca_file, ls->connect_timeout_ms, why,
                               sizeof why);
        if (!ld) {
            lds_mark_down(ls, i, now, why);
            continue;
        }
        c->ld = ld;
        c->uri = i;
        ldap_get_option(ld, LDAP_OPT_DESC, &c->fd);
        if (c->for_binds) {
            c->state = LC_READY;
            return true;
        }
        /* The lookup connection searches as the service account. */
        struct berval cred = {ls->bind_pass_len, ls->bind_pass};
        int rc = ldap_sasl_bind(ld, ls->bind_dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL,
                                &c->service_msgid);
        if (rc != LDAP_SUCCESS) {
            lds_mark_down(ls, i, now, ldap_err2string(rc));
            lds_close(c);
            continue;
        }
        c->state = LC_BINDING;
        c->service_sent_ms = now;
        return true;
    }
    return false;
}

static void lds_track(struct ldap_conn *c, struct ldap_op *lop, int msgid, int domain, uint64_t now)
{
    struct ldap_req *r = calloc(1, sizeof *r);
    if (!r) { /* out of memory: the answer will be dropped; the op times out */
        return;
    }
    r->lop = lop;
    r->msgid = msgid;
    r->domain = domain;
    r->sent_ms = now;
    fg_list_add_head(&c->reqs, &r->link);
    lop->outstanding++;
    lop->ldap_requests++;
}

/* ---- searches ---- */

static const char *const lds_attrs_base[] = {
        "objectSid", "msExchMasterAccountSid", "userAccountControl", "adminCount",
        "homeMDB",   "mailNickname",           "protocolSettings"};
static char lds_sd_attr[] = "msExchMailboxSecurityDescriptor";

/* The filter of a search operation; 0 when the key cannot be put in one. */
static size_t lds_filter(const struct store_op *op, char *f, size_t cap)
{
    char k[3 * DIR_SID_MAX + 3 * 300 + 1];
    size_t kn = op->sid_len ? ldap_filter_escape(op->sid, op->sid_len, k, sizeof k)
                            : ldap_filter_escape(op->key, op->key_len, k, sizeof k);
    if (kn == 0)
        return 0;
    int n = 0;
    switch (op->kind) {
    case SOP_FIND_SAM:
        n = snprintf(f, cap,
                     "(&(objectClass=user)(sAMAccountName=%s)"
                     "(!(userAccountControl:1.2.840.113556.1.4.803:=2)))",
                     k);
        break;
    case SOP_FIND_UPN:
        n = snprintf(f, cap, "(&(objectClass=user)(userPrincipalName=%s))", k);
        break;
    case SOP_FIND_SMTP:
        n = snprintf(f, cap, "(&(objectClass=user)(proxyAddresses=smtp:%s))", k);
        break;
    case SOP_FIND_LINKED:
        n = snprintf(f, cap, "(&(objectClass=user)(homeMDB=*)(msExchMasterAccountSid=%s))", k);
        break;
    case SOP_FIND_ALIAS:
        n = snprintf(f, cap, "(&(objectClass=user)(homeMDB=*)(mailNickname=%s))", k);
        break;
    case SOP_FIND_SID:
        n = snprintf(f, cap, "(&(objectClass=user)(objectSid=%s))", k);
        break;
    default:
        return 0;
    }
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* domain: the index of the domain whose naming context base is, or -1. */
static bool lds_search(struct ldap_store *ls, struct ldap_op *lop, const char *base, int domain,
                       int scope, const char *filter, char **attrs, uint64_t now)
{
    int msgid;
    struct timeval tl = {(ls->op_timeout_ms + 999) / 1000, 0};
    int rc =
            ldap_search_ext(ls->look.ld, base, scope, filter, attrs, 0, NULL, NULL, &tl, 2, &msgid);
    if (rc != LDAP_SUCCESS)
        return false;
    lds_track(&ls->look, lop, msgid, domain, now);
    return true;
}

/* Sends the searches of lop's current stage on the ready lookup connection.
 * False when the connection failed while sending. */
static bool lds_send(struct ldap_store *ls, struct ldap_op *lop, uint64_t now)
{
    const struct store_op *op = lop->op;
    char filter[LDS_FILTER_MAX];
    const char *attrs[FG_ARRAY_SIZE(lds_attrs_base) + 4];
    unsigned na = 0;

    if (op->kind == SOP_DATABASE) {
        char *a0[] = {lop->stage == 0 ? "msExchOwningServer" : "dNSHostName", NULL};
        if (lop->stage == 0)
            return lds_search(ls, lop, op->dn, -1, LDAP_SCOPE_BASE, "(objectClass=*)", a0, now);
        for (unsigned i = 0; i < lop->nservers; i++)
            if (!lds_search(ls, lop, lop->servers[i], -1, LDAP_SCOPE_BASE, "(objectClass=*)", a0,
                            now))
                return false;
        return true;
    }
    if (op->kind == SOP_TOKEN_GROUPS) {
        char *a[] = {"tokenGroups", NULL};
        return lds_search(ls, lop, op->dn, -1, LDAP_SCOPE_BASE, "(objectClass=*)", a, now);
    }
    for (size_t i = 0; i < FG_ARRAY_SIZE(lds_attrs_base); i++)
        attrs[na++] = lds_attrs_base[i];
    if (op->kind == SOP_FIND_ALIAS && op->delegate_attr)
        attrs[na++] = op->delegate_attr;
    if (op->kind == SOP_FIND_ALIAS && op->token)
        attrs[na++] = lds_sd_attr;
    if (op->login_attr)
        attrs[na++] = op->login_attr;
    attrs[na] = NULL;
    if (lds_filter(op, filter, sizeof filter) == 0)
        return true; /* a key no filter can hold matches nobody */
    const struct dir_forest *fo = ls->df;
    for (unsigned d = 0; d < fo->ndomains; d++) {
        if (op->kind == SOP_FIND_SAM && op->domain >= 0 && (int)d != op->domain)
            continue;
        if (!lds_search(ls, lop, fo->domains[d].base, (int)d, LDAP_SCOPE_SUBTREE, filter,
                        (char **)attrs, now))
            return false;
    }
    return true;
}

/* ---- binds ---- */

static struct ldap_conn *lds_bind_conn(struct ldap_store *ls, uint64_t now, bool *none_up)
{
    struct ldap_conn *fresh = NULL;
    *none_up = false;
    for (unsigned i = 0; i < LDS_MAX_BIND_CONNS; i++) {
        struct ldap_conn *c = &ls->binds[i];
        if (c->ld && c->state == LC_READY && fg_list_empty(&c->reqs))
            return c;
        if (!c->ld && !fresh)
            fresh = c;
    }
    if (!fresh)
        return NULL; /* all busy: wait */
    if (!lds_open(ls, fresh, now)) {
        *none_up = true;
        return NULL;
    }
    return fresh;
}

static void lds_bind_begin(struct ldap_store *ls, struct ldap_op *lop, uint64_t now)
{
    const struct store_op *op = lop->op;
    bool none_up;

    /* An empty password is an anonymous bind, which succeeds: never send one. */
    if (op->pass_len == 0) {
        lop->res->status = STORE_BIND_FAILED;
        lds_finish(ls, lop);
        return;
    }
    struct ldap_conn *c = lds_bind_conn(ls, now, &none_up);
    if (!c) {
        if (none_up)
            lds_unavailable(ls, lop);
        else
            lds_wait(ls, lop);
        return;
    }
    /* Nobody ("" from the resolver): a name that exists nowhere, so that a
     * miss costs the same round trip as a wrong password. */
    const char *dn = op->dn[0] ? op->dn : ls->nobody_dn;
    struct berval cred = {op->pass_len, (char *)op->pass};
    int msgid;
    int rc = ldap_sasl_bind(c->ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, &msgid);
    if (rc != LDAP_SUCCESS) {
        lds_conn_failed(ls, c, now, ldap_err2string(rc), lop);
        return;
    }
    lds_track(c, lop, msgid, -1, now);
}

static void lds_op_begin(struct ldap_store *ls, struct ldap_op *lop, uint64_t now)
{
    memset(lop->res, 0, sizeof *lop->res);
    lop->res->status = STORE_OK;
    lop->stage = 0;
    lop->nservers = 0;
    lop->outstanding = 0;
    lop->queued = false;
    if (lop->op->kind == SOP_BIND) {
        lds_bind_begin(ls, lop, now);
        return;
    }
    struct ldap_conn *c = &ls->look;
    if (!c->ld && !lds_open(ls, c, now)) {
        lds_unavailable(ls, lop);
        return;
    }
    if (c->state != LC_READY) {
        lds_wait(ls, lop);
        return;
    }
    if (!lds_send(ls, lop, now)) {
        lds_conn_failed(ls, c, now, "cannot send a search", lop);
        return;
    }
    if (lop->outstanding == 0)
        lds_finish(ls, lop); /* nothing to ask */
}

void ldap_store_start(struct ldap_store *ls, struct ldap_op *lop, uint64_t now_ms)
{
    lop->attempts = 0;
    lop->ldap_requests = 0;
    fg_list_init(&lop->link);
    lop->queued = false;
    lop->redo = false;
    lds_op_begin(ls, lop, now_ms);
    lds_drain(ls);
}

/* ---- answers ---- */

static void lds_copy_first(LDAP *ld, LDAPMessage *e, const char *attr, void *dst, size_t cap,
                           size_t *len, bool text)
{
    struct berval **v = ldap_get_values_len(ld, e, attr);
    size_t n = 0;
    if (v && v[0] && v[0]->bv_len < cap) {
        n = v[0]->bv_len;
        memcpy(dst, v[0]->bv_val, n);
    }
    if (text)
        ((char *)dst)[n] = 0;
    if (len)
        *len = n;
    ldap_value_free_len(v);
}

/* DNs compare in their normalised form: servers escape differently. */
static bool lds_dn_equal(const char *a, const char *b)
{
    char *na = NULL, *nb = NULL;
    bool eq;
    if (ldap_dn_normalize(a, LDAP_DN_FORMAT_LDAP, &na, LDAP_DN_FORMAT_LDAPV3) == LDAP_SUCCESS &&
        ldap_dn_normalize(b, LDAP_DN_FORMAT_LDAP, &nb, LDAP_DN_FORMAT_LDAPV3) == LDAP_SUCCESS)
        eq = strcasecmp(na, nb) == 0;
    else
        eq = strcasecmp(a, b) == 0;
    ldap_memfree(na);
    ldap_memfree(nb);
    return eq;
}

static void lds_fill(struct ldap_store *ls, LDAP *ld, LDAPMessage *e, const char *dn,
                     const struct store_op *op, struct dir_entry *out)
{
    char num[32];
    size_t n;
    memset(out, 0, sizeof *out);
    snprintf(out->dn, sizeof out->dn, "%s", dn);
    out->forest = (uint8_t)ls->forest_index;
    lds_copy_first(ld, e, "objectSid", out->sid, sizeof out->sid + 1, &n, false);
    out->sid_len = n <= DIR_SID_MAX ? (uint8_t)n : 0;
    lds_copy_first(ld, e, "msExchMasterAccountSid", out->master_sid, sizeof out->master_sid + 1, &n,
                   false);
    out->master_sid_len = n <= DIR_SID_MAX ? (uint8_t)n : 0;
    lds_copy_first(ld, e, "userAccountControl", num, sizeof num, &n, true);
    out->uac = n ? (uint32_t)strtoul(num, NULL, 10) : 0x200;
    lds_copy_first(ld, e, "adminCount", num, sizeof num, &n, true);
    out->admin = strcmp(num, "1") == 0;
    lds_copy_first(ld, e, "homeMDB", out->home_mdb, sizeof out->home_mdb, &n, true);
    out->has_mailbox = n > 0;
    lds_copy_first(ld, e, "mailNickname", out->alias, sizeof out->alias, NULL, true);
    lds_copy_first(ld, e, op->login_attr ? op->login_attr : "mailNickname", out->login,
                   sizeof out->login, NULL, true);
    struct berval **v = ldap_get_values_len(ld, e, "protocolSettings");
    for (size_t i = 0; v && v[i]; i++)
        out->proto_disabled |= resolve_protocol_disabled(v[i]->bv_val, v[i]->bv_len);
    ldap_value_free_len(v);
    if (op->kind == SOP_FIND_ALIAS && op->dn && op->dn[0] && op->delegate_attr) {
        v = ldap_get_values_len(ld, e, op->delegate_attr);
        for (size_t i = 0; v && v[i] && !out->delegate_ok; i++) {
            char d[DIR_DN_MAX];
            if (v[i]->bv_len < sizeof d) {
                memcpy(d, v[i]->bv_val, v[i]->bv_len);
                d[v[i]->bv_len] = 0;
                out->delegate_ok = lds_dn_equal(d, op->dn);
            }
        }
        ldap_value_free_len(v);
    }
    if (op->kind == SOP_FIND_ALIAS && op->token) {
        v = ldap_get_values_len(ld, e, lds_sd_attr);
        out->sd_access = v && v[0]
                                 ? (uint8_t)sd_check((const uint8_t *)v[0]->bv_val, v[0]->bv_len,
                                                     op->token, op->token_len, SD_RIGHT_FULL_ACCESS)
                                 : SD_NONE;
        ldap_value_free_len(v);
    }
}

/* tokenGroups' SIDs, appended to the op's token; a value that is no SID is
 * skipped, one that does not fit marks the token incomplete. */
static void lds_token_groups(LDAP *ld, LDAPMessage *e, struct ldap_op *lop)
{
    const struct store_op *op = lop->op;
    struct store_result *res = lop->res;
    struct berval **v = ldap_get_values_len(ld, e, "tokenGroups");
    for (size_t i = 0; v && v[i] && !res->token_overflow; i++)
        if (!store_token_append(op, res, (const uint8_t *)v[i]->bv_val, v[i]->bv_len))
            break;
    ldap_value_free_len(v);
}

/* An entry of a search of domain (or -1). A server that keeps a child
 * domain in the parent's tree (one slapd database, say) returns the child's
 * entries to a search of the parent: they are the child's, not the
 * parent's, and are dropped, as AD would never send them. */
static void lds_account(struct ldap_store *ls, LDAP *ld, LDAPMessage *e, int domain,
                        struct ldap_op *lop)
{
    struct store_result *res = lop->res;
    char *dn = ldap_get_dn(ld, e);
    if (dn && (domain < 0 || resolve_domain_of(ls->df, dn) == domain)) {
        if (res->n < 2)
            lds_fill(ls, ld, e, dn, lop->op, &res->e[res->n]);
        if (res->n < 2)
            res->n++;
    }
    ldap_memfree(dn);
}

static void lds_entry(struct ldap_store *ls, LDAP *ld, LDAPMessage *e, int domain,
                      struct ldap_op *lop)
{
    if (lop->op->kind == SOP_TOKEN_GROUPS) {
        lds_token_groups(ld, e, lop);
        return;
    }
    if (lop->op->kind != SOP_DATABASE) {
        lds_account(ls, ld, e, domain, lop);
        return;
    }
    struct store_result *res = lop->res;
    const char *attr = lop->stage == 0 ? "msExchOwningServer" : "dNSHostName";
    struct berval **v = ldap_get_values_len(ld, e, attr);
    for (size_t i = 0; v && v[i]; i++) {
        if (lop->stage == 0 && lop->nservers < DIR_MAX_HOSTS && v[i]->bv_len < DIR_DN_MAX) {
            memcpy(lop->servers[lop->nservers], v[i]->bv_val, v[i]->bv_len);
            lop->servers[lop->nservers++][v[i]->bv_len] = 0;
        } else if (lop->stage == 1 && res->nhosts < DIR_MAX_HOSTS && v[i]->bv_len <= DIR_HOST_MAX) {
            memcpy(res->hosts[res->nhosts], v[i]->bv_val, v[i]->bv_len);
            res->hosts[res->nhosts++][v[i]->bv_len] = 0;
        }
    }
    ldap_value_free_len(v);
}

static bool lds_retryable(int rc)
{
    return rc == LDAP_BUSY || rc == LDAP_UNAVAILABLE || rc == LDAP_SERVER_DOWN ||
           rc == LDAP_TIMEOUT || rc == LDAP_TIMELIMIT_EXCEEDED || rc == LDAP_ADMINLIMIT_EXCEEDED;
}

/* A search of lop ended with rc. */
static void lds_search_done(struct ldap_store *ls, struct ldap_op *lop, int rc, uint64_t now)
{
    /* noSuchObject: a base that is gone (a database deleted) holds nobody. */
    if (rc != LDAP_SUCCESS && rc != LDAP_SIZELIMIT_EXCEEDED && rc != LDAP_NO_SUCH_OBJECT &&
        rc != LDAP_REFERRAL) {
        log_msg(LOG_WARN, "ldap_error", "forest=%s uri=%s result=%d reason=\"%s\"", ls->name,
                ls->uris[ls->look.uri], rc, ldap_err2string(rc));
        lop->res->status = STORE_UNAVAILABLE;
        if (lds_retryable(rc) && lop->attempts < LDS_MAX_ATTEMPTS)
            lop->stage = 0xff; /* start again once the others are in */
    }
    if (--lop->outstanding > 0)
        return;
    if (lop->stage == 0xff) {
        lop->attempts++;
        lds_op_begin(ls, lop, now);
    } else if (lop->res->status == STORE_OK && lop->op->kind == SOP_DATABASE && lop->stage == 0 &&
               lop->nservers > 0) {
        lop->stage = 1;
        if (!lds_send(ls, lop, now))
            lds_conn_failed(ls, &ls->look, now, "cannot send a search", lop);
    } else {
        lds_finish(ls, lop);
    }
}

static void lds_bind_done(struct ldap_store *ls, struct ldap_op *lop, int rc, const char *diag,
                          uint64_t now)
{
    lop->outstanding = 0;
    if (rc == LDAP_SUCCESS) {
        lop->res->status = STORE_OK;
    } else if (rc == LDAP_INVALID_CREDENTIALS) {
        /* A dummy bind (no DN) checks a password against nobody: whatever
         * the server adds, it is a wrong password. */
        lop->res->status = lop->op->dn[0] ? ldap_bind_status(diag) : STORE_BIND_FAILED;
    } else if (lds_retryable(rc) && lop->attempts < LDS_MAX_ATTEMPTS) {
        lop->attempts++;
        lds_op_begin(ls, lop, now);
        return;
    } else {
        /* unwillingToPerform, insufficientAccess...: a refusal, not an outage */
        lop->res->status = rc < 0 ? STORE_UNAVAILABLE : STORE_BIND_FAILED;
    }
    lds_finish(ls, lop);
}

static struct ldap_req *lds_take(struct ldap_conn *c, int msgid, bool remove)
{
    struct fg_list *n;
    fg_list_for_each(n, &c->reqs) {
        struct ldap_req *r = FG_CONTAINER_OF(n, struct ldap_req, link);
        if (r->msgid != msgid)
            continue;
        if (remove)
            fg_list_del(n);
        return r;
    }
    return NULL;
}

static void lds_service_bound(struct ldap_store *ls, struct ldap_conn *c, LDAPMessage *msg,
                              uint64_t now)
{
    int rc = LDAP_OTHER;
    char *diag = NULL;
    ldap_parse_result(c->ld, msg, &rc, NULL, &diag, NULL, NULL, 0);
    if (rc == LDAP_SUCCESS) {
        c->state = LC_READY;
        ls->backoff_ms[c->uri] = 0;
        log_msg(LOG_INFO, "ldap_up", "forest=%s uri=%s", ls->name, ls->uris[c->uri]);
    } else {
        char why[300];
        snprintf(why, sizeof why, "the service account (BindDn) cannot bind: %s%s%s",
                 ldap_err2string(rc), diag && diag[0] ? ": " : "", diag ? diag : "");
        lds_conn_failed(ls, c, now, why, NULL);
    }
    ldap_memfree(diag);
}

static void lds_dispatch(struct ldap_store *ls, struct ldap_conn *c, LDAPMessage *msg, uint64_t now)
{
    int id = ldap_msgid(msg), type = ldap_msgtype(msg);
    if (c->state == LC_BINDING && id == c->service_msgid) {
        lds_service_bound(ls, c, msg, now);
        return;
    }
    bool last = type != LDAP_RES_SEARCH_ENTRY && type != LDAP_RES_SEARCH_REFERENCE;
    struct ldap_req *r = lds_take(c, id, last);
    if (!r)
        return; /* abandoned */
    struct ldap_op *lop = r->lop;
    int domain = r->domain;
    if (last)
        free(r);
    if (!lop)
        return;
    if (type == LDAP_RES_SEARCH_ENTRY) {
        lds_entry(ls, c->ld, msg, domain, lop);
    } else if (type == LDAP_RES_SEARCH_RESULT || type == LDAP_RES_BIND) {
        int rc = LDAP_OTHER;
        char *diag = NULL;
        ldap_parse_result(c->ld, msg, &rc, NULL, &diag, NULL, NULL, 0);
        if (type == LDAP_RES_BIND)
            lds_bind_done(ls, lop, rc, diag, now);
        else
            lds_search_done(ls, lop, rc, now);
        ldap_memfree(diag);
    }
}

static void lds_read(struct ldap_store *ls, struct ldap_conn *c, uint64_t now)
{
    while (c->ld) {
        LDAPMessage *msg = NULL;
        struct timeval zero = {0, 0};
        int rc = ldap_result(c->ld, LDAP_RES_ANY, LDAP_MSG_ONE, &zero, &msg);
        if (rc == 0)
            return;
        if (rc < 0) {
            lds_conn_failed(ls, c, now, "the connection was lost", NULL);
            return;
        }
        lds_dispatch(ls, c, msg, now);
        ldap_msgfree(msg);
    }
}

/* A request unanswered for op_timeout_ms: the server is taken for dead. */
static void lds_check_stall(struct ldap_store *ls, struct ldap_conn *c, uint64_t now)
{
    if (!c->ld)
        return;
    /* Sums, not differences: a request may have been sent after `now`. */
    bool stalled = c->state == LC_BINDING && now >= c->service_sent_ms + ls->op_timeout_ms;
    struct fg_list *n;
    fg_list_for_each(n, &c->reqs)
        stalled = stalled ||
                  now >= FG_CONTAINER_OF(n, struct ldap_req, link)->sent_ms + ls->op_timeout_ms;
    if (stalled)
        lds_conn_failed(ls, c, now, "no answer in time", NULL);
}

/* True when a waiting operation can move: a lookup once the lookup
 * connection is not binding (ready, or closed and to be reopened), a bind
 * once a bind connection is idle or closed. */
static bool lds_can_progress(const struct ldap_store *ls)
{
    bool bind_free = false;
    const struct fg_list *n;
    for (unsigned i = 0; i < LDS_MAX_BIND_CONNS && !bind_free; i++)
        bind_free = !ls->binds[i].ld || fg_list_empty(&ls->binds[i].reqs);
    fg_list_for_each(n, &ls->wait) {
        const struct ldap_op *w = FG_CONTAINER_OF(n, struct ldap_op, link);
        if (w->op->kind == SOP_BIND ? bind_free : ls->look.state != LC_BINDING)
            return true;
    }
    return false;
}

/* Gives the waiting operations another go, each once: one that must wait
 * again goes back on ls->wait, not on the batch being worked through. */
static void lds_flush_wait(struct ldap_store *ls, uint64_t now)
{
    struct fg_list batch, *n;
    fg_list_init(&batch);
    fg_list_splice_tail(&batch, &ls->wait);
    while ((n = fg_list_pop(&batch))) {
        struct ldap_op *lop = FG_CONTAINER_OF(n, struct ldap_op, link);
        lop->queued = false;
        lds_op_begin(ls, lop, now);
    }
}

void ldap_store_process(struct ldap_store *ls, uint64_t now_ms)
{
    lds_read(ls, &ls->look, now_ms);
    for (unsigned i = 0; i < LDS_MAX_BIND_CONNS; i++)
        lds_read(ls, &ls->binds[i], now_ms);
    lds_check_stall(ls, &ls->look, now_ms);
    for (unsigned i = 0; i < LDS_MAX_BIND_CONNS; i++)
        lds_check_stall(ls, &ls->binds[i], now_ms);
    if (lds_can_progress(ls))
        lds_flush_wait(ls, now_ms);
    lds_drain(ls);
}

static void lds_cancel_on(struct ldap_conn *c, struct ldap_op *lop)
{
    bool bind_conn = false;
    struct fg_list *n, *tmp;
    /* An abandoned search gets no answer (RFC 4511 section 4.11): its
     * request is forgotten here, or it would look stalled later and take
     * its server down with it. A late answer finds no request and is dropped. */
    fg_list_for_each_safe(n, tmp, &c->reqs) {
        struct ldap_req *r = FG_CONTAINER_OF(n, struct ldap_req, link);
        if (r->lop != lop)
            continue;
        if (c->for_binds) {
            bind_conn = true;
            continue;
        }
        ldap_abandon_ext(c->ld, r->msgid, NULL, NULL);
        fg_list_del(n);
        free(r);
    }
    /* A bind cannot be abandoned and nothing may follow it until it is
     * answered: this connection goes, a new one takes its place. */
    if (bind_conn) {
        lds_drop_reqs(c);
        lds_close(c);
    }
}

void ldap_store_cancel(struct ldap_store *ls, struct ldap_op *lop)
{
    /* Waiting, or finished but not yet told: off its queue (the wait or the
     * done queue; it is on one at most). */
    fg_list_del(&lop->link);
    lop->queued = false;
    if (lop->outstanding > 0) {
        lds_cancel_on(&ls->look, lop);
        for (unsigned i = 0; i < LDS_MAX_BIND_CONNS; i++)
            lds_cancel_on(&ls->binds[i], lop);
        lop->outstanding = 0;
    }
}

unsigned ldap_store_pollfds(struct ldap_store *ls, struct pollfd *pfd, unsigned max)
{
    unsigned n = 0;
    if (ls->look.ld && ls->look.fd >= 0 && n < max)
        pfd[n++] = (struct pollfd){.fd = ls->look.fd, .events = POLLIN};
    for (unsigned i = 0; i < LDS_MAX_BIND_CONNS && n < max; i++)
        if (ls->binds[i].ld && ls->binds[i].fd >= 0)
            pfd[n++] = (struct pollfd){.fd = ls->binds[i].fd, .events = POLLIN};
    return n;
}

static uint64_t lds_conn_timer(const struct ldap_store *ls, const struct ldap_conn *c)
{
    uint64_t t = UINT64_MAX;
    const struct fg_list *n;
    if (c->ld && c->state == LC_BINDING)
        t = c->service_sent_ms + ls->op_timeout_ms;
    fg_list_for_each(n, &c->reqs)
        t = FG_MIN(t, FG_CONTAINER_OF(n, struct ldap_req, link)->sent_ms + ls->op_timeout_ms);
    return t;
}

uint64_t ldap_store_next_timer(const struct ldap_store *ls)
{
    if (lds_can_progress(ls))
        return 0;
    uint64_t t = lds_conn_timer(ls, &ls->look);
    for (unsigned i = 0; i < LDS_MAX_BIND_CONNS; i++)
        t = FG_MIN(t, lds_conn_timer(ls, &ls->binds[i]));
    return t;
}

/* ---- life ---- */

struct ldap_store *ldap_store_new(const struct ldap_store_conf *conf, const struct dir_forest *df,
                                  int forest_index, ldap_store_done_fn *done, void *arg)
{
    char err[300];
    int debug;
    /* libldap sets its global options up on first use, without a lock
     * (ldap_int_initialize): two directory threads opening their first
     * connections at once both did it (ThreadSanitizer saw them race). Stores
     * are made by the thread that starts the pool, before the first directory
     * thread runs, so set it up here: later calls only read it. */
    ldap_get_option(NULL, LDAP_OPT_DEBUG_LEVEL, &debug);
    struct ldap_store *ls = calloc(1, sizeof *ls);
    if (!ls)
        return NULL;
    int n = ldap_store_parse_uris(conf->uris, ls->uris, LDS_MAX_URIS, err, sizeof err);
    ls->bind_pass = mmap(NULL, conf->bind_pass_len + 1, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (n <= 0 || ls->bind_pass == MAP_FAILED) {
        if (ls->bind_pass != MAP_FAILED && ls->bind_pass)
            munmap(ls->bind_pass, conf->bind_pass_len + 1);
        free(ls);
        return NULL;
    }
    madvise(ls->bind_pass, conf->bind_pass_len + 1, MADV_DONTDUMP);
    memcpy(ls->bind_pass, conf->bind_pass, conf->bind_pass_len);
    ls->bind_pass_len = conf->bind_pass_len;
    ls->nuris = (unsigned)n;
    snprintf(ls->name, sizeof ls->name, "%s", conf->forest_name);
    snprintf(ls->bind_dn, sizeof ls->bind_dn, "%s", conf->bind_dn ? conf->bind_dn : "");
    snprintf(ls->ca_file, sizeof ls->ca_file, "%s", conf->ca_file ? conf->ca_file : "");
    ls->tls = conf->tls;
    ls->op_timeout_ms = conf->op_timeout_ms;
    ls->connect_timeout_ms = conf->connect_timeout_ms;
    ls->df = df;
    ls->forest_index = forest_index;
    ls->down_count = conf->down_count;
    snprintf(ls->nobody_dn, sizeof ls->nobody_dn, "CN=forestgate-nobody,%s",
             df->ndomains ? df->domains[0].base : "");
    ls->done = done;
    ls->arg = arg;
    fg_list_init(&ls->wait);
    fg_list_init(&ls->finished);
    ls->look.fd = -1;
    fg_list_init(&ls->look.reqs);
    for (unsigned i = 0; i < LDS_MAX_BIND_CONNS; i++) {
        ls->binds[i].fd = -1;
        ls->binds[i].for_binds = true;
        fg_list_init(&ls->binds[i].reqs);
    }
    return ls;
}

static void lds_free_conn(struct ldap_conn *c)
{
    lds_drop_reqs(c);
    lds_close(c);
}

void ldap_store_free(struct ldap_store *ls)
{
    if (!ls)
        return;
    lds_free_conn(&ls->look);
    for (unsigned i = 0; i < LDS_MAX_BIND_CONNS; i++)
        lds_free_conn(&ls->binds[i]);
    explicit_bzero(ls->bind_pass, ls->bind_pass_len);
    munmap(ls->bind_pass, ls->bind_pass_len + 1);
    free(ls);
}

/* ---- discovery, at start-up ---- */

static int lds_discover_on(LDAP *ld, const char *base_dn, ldap_domain_fn *add, void *arg, char *err,
                           size_t errlen)
{
    char *root_attrs[] = {"configurationNamingContext", NULL};
    char *xattrs[] = {"nETBIOSName", "dnsRoot", "nCName", NULL};
    char config[DIR_DN_MAX + 32] = "", parts[DIR_DN_MAX + 64];
    LDAPMessage *res = NULL;
    int rc = ldap_search_ext_s(ld, "", LDAP_SCOPE_BASE, "(objectClass=*)", root_attrs, 0, NULL,
                               NULL, NULL, 1, &res);
    LDAPMessage *e = rc == LDAP_SUCCESS ? ldap_first_entry(ld, res) : NULL;
    if (e)
        lds_copy_first(ld, e, "configurationNamingContext", config, sizeof config, NULL, true);
    ldap_msgfree(res);
    if (!config[0] && base_dn && base_dn[0])
        snprintf(config, sizeof config, "CN=Configuration,%s", base_dn);
    if (!config[0]) {
        snprintf(err, errlen,
                 "no configurationNamingContext in the rootDSE; set BaseDn or Domains");
        return FG_ERROR;
    }
    snprintf(parts, sizeof parts, "CN=Partitions,%s", config);
    res = NULL;
    rc = ldap_search_ext_s(ld, parts, LDAP_SCOPE_ONELEVEL,
                           "(&(objectClass=crossRef)(systemFlags:1.2.840.113556.1.4.803:=2))",
                           xattrs, 0, NULL, NULL, NULL, 0, &res);
    if (rc != LDAP_SUCCESS) {
        snprintf(err, errlen, "searching %s for crossRef objects: %s", parts, ldap_err2string(rc));
        ldap_msgfree(res);
        return FG_ERROR;
    }
    for (e = ldap_first_entry(ld, res); e; e = ldap_next_entry(ld, e)) {
        char nb[64], dns[256], nc[DIR_DN_MAX];
        size_t a, b, c;
        lds_copy_first(ld, e, "nETBIOSName", nb, sizeof nb, &a, true);
        lds_copy_first(ld, e, "dnsRoot", dns, sizeof dns, &b, true);
        lds_copy_first(ld, e, "nCName", nc, sizeof nc, &c, true);
        if (a && b && c)
            add(arg, nb, dns, nc);
    }
    ldap_msgfree(res);
    return FG_OK;
}

int ldap_store_discover(const struct ldap_store_conf *conf, const char *base_dn,
                        ldap_domain_fn *add, void *arg, char *err, size_t errlen)
{
    char uris[LDS_MAX_URIS][256], why[300] = "";
    int n = ldap_store_parse_uris(conf->uris, uris, LDS_MAX_URIS, err, errlen);
    for (int i = 0; i < n; i++) {
        LDAP *ld = lds_connect(uris[i], conf->tls, conf->ca_file, conf->connect_timeout_ms, why,
                               sizeof why);
        if (!ld)
            continue;
        struct berval cred = {conf->bind_pass_len, (char *)conf->bind_pass};
        int rc = ldap_sasl_bind_s(ld, conf->bind_dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
        if (rc != LDAP_SUCCESS) {
            snprintf(why, sizeof why, "the service account (BindDn) cannot bind: %s",
                     ldap_err2string(rc));
            ldap_unbind_ext(ld, NULL, NULL);
            continue;
        }
        int r = lds_discover_on(ld, base_dn, add, arg, err, errlen);
        ldap_unbind_ext(ld, NULL, NULL);
        return r;
    }
    if (n > 0)
        snprintf(err, errlen, "cannot discover the domains (no server answered: %s); set Domains",
                 why);
    return FG_ERROR;
}

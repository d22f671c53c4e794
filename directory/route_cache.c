/*
 * The route cache. See route_cache.h.
 *
 * An entry is one allocation: the fixed fields, the backend addresses (when
 * the directory named the hosts; the configuration's targets are kept by
 * pointer), then the strings: key, account DN, backend login, database,
 * host names. Bytes per entry are printed by tests/unit/test_route_cache.c.
 */
#define _LGPL_SOURCE /* rcu_read_lock inline: no call on the read side */
#include "route_cache.h"

#include "../base/siphash.h"
#include "resolve.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <urcu/rculfhash.h>
#include <urcu/urcu-memb.h>
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/hash.h>
#include <wolfssl/wolfcrypt/pwdbased.h>

/*
 * ThreadSanitizer cannot see the ordering liburcu makes (its barriers are
 * inline assembly, its library uninstrumented). Two annotations state it:
 * a reader's critical section ends with a release, and an entry is freed
 * after an acquire on the same address -- what a grace period guarantees.
 * Publication is made visible by the entry's own `ready` flag.
 */
#if defined(__SANITIZE_THREAD__)
#define RC_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RC_TSAN 1
#endif
#endif
#ifdef RC_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
static char rc_grace; /* the annotations' address */
#define RC_READ_END()   __tsan_release(&rc_grace)
#define RC_FREE_BEGIN() __tsan_acquire(&rc_grace)
#else
#define RC_READ_END()   ((void)0)
#define RC_FREE_BEGIN() ((void)0)
#endif

struct rc_entry {
    struct cds_lfht_node node;
    struct rcu_head rcu;
    struct fg_list fifo;    /* under wlock */
    _Atomic uint32_t ready; /* set, with release, before the entry is published */
    uint32_t size;          /* of the allocation: a copy is one memcpy */
    uint64_t hash;
    uint64_t expires_ms;
    uint64_t cred_expires_ms;
    const struct backend_policy *policy; /* a copied target's */
    const struct backend_target *shared; /* the configuration's target, or NULL */
    uint8_t kind, why, forest, proto_disabled;
    bool admin, has_cred;
    uint8_t nhosts, naddrs;
    uint16_t key_len, account_len, login_len, database_len, hosts_len;
    uint8_t cred[RC_CRED_LEN];
    uint8_t addr_host[CFG_MAX_BACKEND_ADDRS];
    union net_addr addrs[]; /* naddrs of them, then the strings */
};

static char *rce_strings(struct rc_entry *e)
{
    return (char *)(e->addrs + e->naddrs);
}

static const char *rce_key(const struct rc_entry *e)
{
    return rce_strings((struct rc_entry *)e);
}

static void rc_free_cb(struct rcu_head *head)
{
    struct rc_entry *e = caa_container_of(head, struct rc_entry, rcu);
    RC_FREE_BEGIN();
    explicit_bzero(e->cred, sizeof e->cred);
    free(e);
}

void rc_thread_register(void)
{
    urcu_memb_register_thread();
}

void rc_thread_unregister(void)
{
    urcu_memb_unregister_thread();
}

static void rc_read_lock(void)
{
    urcu_memb_read_lock();
}

static void rc_read_unlock(void)
{
    RC_READ_END();
    urcu_memb_read_unlock();
}

int rc_init(struct route_cache *rc, uint32_t max_entries, uint32_t keep_stale_ms)
{
    memset(rc, 0, sizeof *rc);
    rc->max = max_entries;
    rc->keep_stale_ms = keep_stale_ms;
    fg_list_init(&rc->fifo);
    pthread_mutex_init(&rc->wlock, NULL);
    /* The credential key: its own page, never in a core dump, never swapped
     * if the limits allow. */
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return FG_ERROR;
    madvise(p, 4096, MADV_DONTDUMP);
    mlock(p, 4096);
    rc->secret = p;
    if (getrandom(rc->secret, 32, 0) != 32 || getrandom(rc->hkey, sizeof rc->hkey, 0) != 16)
        return FG_ERROR;
    rc->ht = cds_lfht_new_flavor(1024, 1024, 1UL << 24, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING,
                                 &urcu_memb_flavor, NULL);
    return rc->ht ? FG_OK : FG_ERROR;
}

/* Unlinks e from the table and the FIFO, and frees it after a grace period.
 * Under wlock and the read lock. */
static void rc_drop(struct route_cache *rc, struct rc_entry *e)
{
    if (cds_lfht_del(rc->ht, &e->node) == 0) {
        fg_list_del(&e->fifo);
        atomic_fetch_sub_explicit(&rc->entries, 1, memory_order_relaxed);
        urcu_memb_call_rcu(&e->rcu, rc_free_cb);
    }
}

void rc_destroy(struct route_cache *rc)
{
    if (rc->ht) {
        rc_flush(rc);
        urcu_memb_barrier(); /* the frees queued above are done */
        cds_lfht_destroy(rc->ht, NULL);
        rc->ht = NULL;
    }
    if (rc->secret) {
        explicit_bzero(rc->secret, 32);
        munmap(rc->secret, 4096);
        rc->secret = NULL;
    }
    pthread_mutex_destroy(&rc->wlock);
}

uint64_t rc_hash(const struct route_cache *rc, const char *key, size_t n)
{
    return siphash24(rc->hkey, key, n);
}

struct rc_match_key {
    const char *key;
    size_t n;
};

static int rc_match(struct cds_lfht_node *node, const void *arg)
{
    struct rc_entry *e = caa_container_of(node, struct rc_entry, node);
    const struct rc_match_key *k = arg;
    /* The acquire pairs with the writer's release: the fields below were
     * written before the entry was published. */
    if (!atomic_load_explicit(&e->ready, memory_order_acquire))
        return 0;
    return e->key_len == k->n && memcmp(rce_key(e), k->key, k->n) == 0;
}

/* The live entry for key, or NULL. Under the read lock. */
static struct rc_entry *rc_find(struct route_cache *rc, const char *key, size_t n, uint64_t h)
{
    struct rc_match_key k = {key, n};
    struct cds_lfht_iter it;
    cds_lfht_lookup(rc->ht, (unsigned long)h, rc_match, &k, &it);
    struct cds_lfht_node *node = cds_lfht_iter_get_node(&it);
    return node ? caa_container_of(node, struct rc_entry, node) : NULL;
}

static void rc_copy_str(char *dst, size_t cap, const char *src, size_t n)
{
    n = FG_MIN(n, cap - 1);
    memcpy(dst, src, n);
    dst[n] = 0;
}

/* The entry's hosts as a target: the shared one, or a copy into own. */
static const struct backend_target *rc_target(struct rc_entry *e, struct backend_target *own)
{
    if (e->shared || e->kind != RC_ROUTE)
        return e->shared;
    const char *h = rce_strings(e) + e->key_len + e->account_len + e->login_len + e->database_len;
    memset(own, 0, offsetof(struct backend_target, hosts));
    own->policy = e->policy;
    own->nhosts = e->nhosts;
    own->naddrs = e->naddrs;
    memcpy(own->addr_host, e->addr_host, e->naddrs);
    memcpy(own->addrs, e->addrs, sizeof *e->addrs * e->naddrs);
    for (unsigned i = 0; i < e->nhosts; i++) {
        size_t n = strlen(h);
        rc_copy_str(own->hosts[i], sizeof own->hosts[i], h, n);
        h += n + 1;
    }
    return own;
}

static void rc_snap_fill(struct rc_entry *e, uint64_t now, struct rc_snap *out,
                         struct backend_target *own)
{
    const char *s = rce_strings(e) + e->key_len;
    out->kind = e->kind;
    out->why = e->why;
    out->forest = e->forest;
    out->proto_disabled = e->proto_disabled;
    out->admin = e->admin;
    out->has_cred = e->has_cred && now < e->cred_expires_ms;
    out->expires_ms = e->expires_ms;
    rc_copy_str(out->account, sizeof out->account, s, e->account_len);
    s += e->account_len;
    rc_copy_str(out->login, sizeof out->login, s, e->login_len);
    s += e->login_len;
    rc_copy_str(out->database, sizeof out->database, s, e->database_len);
    out->target = rc_target(e, own);
}

enum rc_found rc_lookup(struct route_cache *rc, const char *key, size_t n, uint64_t h, uint64_t now,
                        struct rc_snap *out, struct backend_target *own)
{
    enum rc_found found = RC_MISS;
    rc_read_lock();
    struct rc_entry *e = rc_find(rc, key, n, h);
    if (e && (now < e->expires_ms || e->kind == RC_ROUTE)) {
        rc_snap_fill(e, now, out, own);
        found = now < e->expires_ms ? RC_HIT : RC_STALE;
    }
    rc_read_unlock();
    return found;
}

static size_t rc_hosts_len(const struct rc_value *v)
{
    size_t n = 0;
    for (unsigned i = 0; v->target && !v->target_shared && i < v->target->nhosts; i++)
        n += strlen(v->target->hosts[i]) + 1;
    return n;
}

/* A new entry with v's contents, not yet published. */
static struct rc_entry *rc_entry_new(const char *key, size_t n, uint64_t h,
                                     const struct rc_value *v, uint64_t now)
{
    const struct backend_target *t = v->kind == RC_ROUTE ? v->target : NULL;
    bool copy = t && !v->target_shared;
    size_t al = v->account ? strlen(v->account) : 0, ll = v->login ? strlen(v->login) : 0;
    size_t dl = v->database ? FG_MIN(strlen(v->database), (size_t)RC_DB_MAX - 1) : 0;
    size_t hl = copy ? rc_hosts_len(v) : 0;
    unsigned naddrs = copy ? t->naddrs : 0;
    size_t size = sizeof(struct rc_entry) + sizeof(union net_addr) * naddrs + n + al + ll + dl + hl;
    if (al >= DIR_DN_MAX || ll > DIR_LOGIN_MAX)
        return NULL;
    struct rc_entry *e = calloc(1, size);
    if (!e)
        return NULL;
    e->size = (uint32_t)size;
    e->hash = h;
    e->kind = v->kind;
    e->why = v->why;
    e->forest = v->forest;
    e->proto_disabled = v->proto_disabled;
    e->admin = v->admin;
    e->expires_ms = now + v->ttl_ms;
    e->key_len = (uint16_t)n;
    e->account_len = (uint16_t)al;
    e->login_len = (uint16_t)ll;
    e->database_len = (uint16_t)dl;
    e->hosts_len = (uint16_t)hl;
    if (v->cred) {
        e->has_cred = true;
        memcpy(e->cred, v->cred, RC_CRED_LEN);
        e->cred_expires_ms = now + v->cred_ttl_ms;
    }
    if (t && !copy)
        e->shared = t;
    if (copy) {
        e->policy = t->policy;
        e->nhosts = t->nhosts;
        e->naddrs = (uint8_t)naddrs;
        memcpy(e->addr_host, t->addr_host, naddrs);
        memcpy(e->addrs, t->addrs, sizeof e->addrs[0] * naddrs);
    }
    char *s = rce_strings(e);
    memcpy(s, key, n);
    s += n;
    memcpy(s, v->account ? v->account : "", al);
    s += al;
    memcpy(s, v->login ? v->login : "", ll);
    s += ll;
    memcpy(s, v->database ? v->database : "", dl);
    s += dl;
    for (unsigned i = 0; copy && i < t->nhosts; i++) {
        size_t k = strlen(t->hosts[i]) + 1;
        memcpy(s, t->hosts[i], k);
        s += k;
    }
    return e;
}

/* The oldest entries go: past the bound, and those long expired. Under wlock
 * and the read lock. */
static void rc_trim(struct route_cache *rc, uint64_t now)
{
    struct rc_entry *e;
    while (atomic_load_explicit(&rc->entries, memory_order_relaxed) > rc->max &&
           (e = FG_LIST_FIRST(&rc->fifo, struct rc_entry, fifo))) {
        rc_drop(rc, e);
        atomic_fetch_add_explicit(&rc->stats.evictions, 1, memory_order_relaxed);
    }
    /* A few expired ones per insertion keep dead entries from piling up
     * when the table never fills. */
    for (int i = 0; i < 4 && (e = FG_LIST_FIRST(&rc->fifo, struct rc_entry, fifo)); i++) {
        uint64_t keep = e->kind == RC_ROUTE ? rc->keep_stale_ms : 0;
        if (e->expires_ms + keep > now)
            break;
        rc_drop(rc, e);
    }
}

/* Publishes e in key's place. Under wlock and the read lock. */
static void rc_publish(struct route_cache *rc, struct rc_entry *e, uint64_t now)
{
    struct rc_match_key k = {rce_key(e), e->key_len};
    atomic_store_explicit(&e->ready, 1, memory_order_release);
    struct cds_lfht_node *old =
            cds_lfht_add_replace(rc->ht, (unsigned long)e->hash, rc_match, &k, &e->node);
    fg_list_add_tail(&rc->fifo, &e->fifo);
    if (old) {
        struct rc_entry *o = caa_container_of(old, struct rc_entry, node);
        fg_list_del(&o->fifo);
        urcu_memb_call_rcu(&o->rcu, rc_free_cb);
    } else {
        atomic_fetch_add_explicit(&rc->entries, 1, memory_order_relaxed);
    }
    rc_trim(rc, now);
}

void rc_put(struct route_cache *rc, const char *key, size_t n, uint64_t h, const struct rc_value *v,
            uint64_t now)
{
    struct rc_entry *e = rc_entry_new(key, n, h, v, now);
    if (!e)
        return;
    pthread_mutex_lock(&rc->wlock);
    rc_read_lock();
    rc_publish(rc, e, now);
    rc_read_unlock();
    pthread_mutex_unlock(&rc->wlock);
}

void rc_cred_hash(const struct route_cache *rc, const char *key, size_t n, const char *pass,
                  size_t pass_len, uint8_t out[RC_CRED_LEN])
{
    /* The salt: the process's secret, then the name, so one password hashes
     * differently for each name and for each process. */
    uint8_t salt[32 + ROUTE_KEY_MAX];
    memcpy(salt, rc->secret, 32);
    memcpy(salt + 32, key, n);
    if (wc_PBKDF2(out, (const byte *)pass, (int)pass_len, salt, (int)(32 + n), RC_CRED_ROUNDS,
                  RC_CRED_LEN, WC_SHA256) != 0)
        getrandom(out, RC_CRED_LEN, 0); /* matches nothing */
    explicit_bzero(salt, sizeof salt);
}

static bool rc_ct_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= a[i] ^ b[i];
    return d == 0;
}

bool rc_cred_match(struct route_cache *rc, const char *key, size_t n, uint64_t h,
                   const uint8_t cred[RC_CRED_LEN], uint64_t now, bool any_age)
{
    bool ok = false;
    rc_read_lock();
    struct rc_entry *e = rc_find(rc, key, n, h);
    if (e && e->kind == RC_ROUTE && e->has_cred && (any_age || now < e->cred_expires_ms))
        ok = rc_ct_equal(e->cred, cred, RC_CRED_LEN);
    rc_read_unlock();
    return ok;
}

void rc_cred_set(struct route_cache *rc, const char *key, size_t n, uint64_t h, const uint8_t *cred,
                 uint32_t ttl_ms, uint64_t now)
{
    pthread_mutex_lock(&rc->wlock);
    rc_read_lock();
    struct rc_entry *e = rc_find(rc, key, n, h);
    if (e && e->kind == RC_ROUTE && (cred || e->has_cred)) {
        /* Entries never change once published: the copy replaces it, and
         * keeps its expiry (a password does not make a route younger) and
         * its place in the order. */
        struct rc_entry *c = malloc(e->size);
        if (c) {
            memcpy(c, e, e->size);
            atomic_store_explicit(&c->ready, 0, memory_order_relaxed);
            c->has_cred = cred != NULL;
            if (cred)
                memcpy(c->cred, cred, RC_CRED_LEN);
            else
                explicit_bzero(c->cred, RC_CRED_LEN);
            c->cred_expires_ms = now + ttl_ms;
            fg_list_add_after(&e->fifo, &c->fifo);
            fg_list_del(&e->fifo);
            struct rc_match_key k = {key, n};
            atomic_store_explicit(&c->ready, 1, memory_order_release);
            /* Writers hold wlock: the node replaced is e. */
            cds_lfht_add_replace(rc->ht, (unsigned long)h, rc_match, &k, &c->node);
            urcu_memb_call_rcu(&e->rcu, rc_free_cb);
        }
    }
    rc_read_unlock();
    pthread_mutex_unlock(&rc->wlock);
}

unsigned rc_forget(struct route_cache *rc, const char *key, size_t n, uint64_t h)
{
    unsigned dropped = 0;
    pthread_mutex_lock(&rc->wlock);
    rc_read_lock();
    struct rc_entry *e = rc_find(rc, key, n, h);
    if (e) {
        rc_drop(rc, e);
        dropped = 1;
    }
    rc_read_unlock();
    pthread_mutex_unlock(&rc->wlock);
    return dropped;
}

unsigned rc_flush(struct route_cache *rc)
{
    unsigned n = 0;
    struct rc_entry *e;
    pthread_mutex_lock(&rc->wlock);
    rc_read_lock();
    while ((e = FG_LIST_FIRST(&rc->fifo, struct rc_entry, fifo))) {
        rc_drop(rc, e);
        n++;
    }
    rc_read_unlock();
    pthread_mutex_unlock(&rc->wlock);
    return n;
}

static void rc_show_one(struct rc_entry *e, const struct dir_topology *topo, uint64_t now,
                        FILE *out)
{
    struct rc_snap s;
    struct backend_target own;
    const char *key = rce_key(e);
    long ttl = e->expires_ms > now ? (long)((e->expires_ms - now + 999) / 1000)
                                   : -(long)((now - e->expires_ms) / 1000);
    rc_snap_fill(e, now, &s, &own);
    fprintf(out, "name=%.*s form=%s ", (int)e->key_len - 1, key + 1,
            logon_form_name(route_key_form(key)));
    if (e->kind == RC_NEGATIVE) {
        fprintf(out, "kind=negative reason=\"%s\" ttl=%ld\n", resolve_why_text(e->why), ttl);
        return;
    }
    fprintf(out, "kind=route account=\"%s\" forest=%s mailbox=%s database=%s hosts=", s.account,
            e->forest < topo->nforests ? topo->forests[e->forest].name : "?", s.login,
            s.database[0] ? s.database : "-");
    for (unsigned i = 0; s.target && i < s.target->nhosts; i++)
        fprintf(out, "%s%s", i ? "," : "", s.target->hosts[i]);
    fprintf(out, " ttl=%ld credential=%s%s%s\n", ttl, s.has_cred ? "yes" : "no",
            s.proto_disabled ? " protocols_disabled=" : "",
            s.proto_disabled == 3   ? "imap,pop3"
            : s.proto_disabled == 1 ? "imap"
            : s.proto_disabled == 2 ? "pop3"
                                    : "");
}

void rc_show(struct route_cache *rc, const struct dir_topology *topo, const char *prefix,
             uint64_t now, FILE *out)
{
    size_t pl = prefix ? strlen(prefix) : 0;
    struct cds_lfht_iter it;
    struct rc_entry *e;
    unsigned n = 0;
    /* Lock-free: a slow reader of the answer delays only the reclaiming of
     * entries, never a logon. */
    rc_read_lock();
    cds_lfht_for_each_entry(rc->ht, &it, e, node)
    {
        if (!atomic_load_explicit(&e->ready, memory_order_acquire))
            continue;
        if (pl && (e->key_len - 1u < pl || strncasecmp(rce_key(e) + 1, prefix, pl) != 0))
            continue;
        rc_show_one(e, topo, now, out);
        n++;
    }
    rc_read_unlock();
    fprintf(out, "%u entr%s\n", n, n == 1 ? "y" : "ies");
}

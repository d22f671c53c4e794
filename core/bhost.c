/* Backend hosts' health: see bhost.h. */
#include "bhost.h"

#include "../base/log.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

uint64_t bhost_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int bhost_table_init(struct bhost_table *t, uint32_t backoff_ms, uint32_t backoff_max_ms,
                     uint32_t hold_ms)
{
    memset(t, 0, sizeof *t);
    t->backoff_ms = backoff_ms;
    t->backoff_max_ms = FG_MAX(backoff_ms, backoff_max_ms);
    t->probe_hold_ms = hold_ms;
    return pthread_mutex_init(&t->lock, NULL) == 0 ? FG_OK : FG_ERROR;
}

void bhost_table_free(struct bhost_table *t)
{
    uint32_t n = atomic_load(&t->n);
    for (uint32_t i = 0; i < n; i++)
        free(t->hosts[i]);
    pthread_mutex_destroy(&t->lock);
    memset(t, 0, sizeof *t);
}

/* The address and port bytes that make a host (sin6 flow info aside). */
static size_t bhost_key(const union net_addr *a, uint8_t key[20])
{
    uint16_t port = net_addr_port(a);
    key[0] = (uint8_t)(port >> 8);
    key[1] = (uint8_t)port;
    if (a->sa.sa_family == AF_INET) {
        memcpy(key + 2, &a->v4.sin_addr, 4);
        return 6;
    }
    memcpy(key + 2, &a->v6.sin6_addr, 16);
    return 18;
}

static bool bhost_same(const union net_addr *a, const union net_addr *b)
{
    uint8_t ka[20], kb[20];
    size_t n = bhost_key(a, ka);
    return a->sa.sa_family == b->sa.sa_family && n == bhost_key(b, kb) && memcmp(ka, kb, n) == 0;
}

/* FNV-1a over the key: a handful of hosts, no adversary to choose them. */
static uint32_t bhost_hash(const union net_addr *a)
{
    uint8_t k[20];
    size_t n = bhost_key(a, k);
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ k[i]) * 16777619u;
    return h;
}

/* The slot of addr: its host, or the empty slot where it would go. */
static uint32_t bhost_find(const struct bhost_table *t, const union net_addr *addr,
                           struct bhost **h_r)
{
    uint32_t i = bhost_hash(addr) & (BHOST_SLOTS - 1);
    for (;;) {
        struct bhost *h = atomic_load_explicit(&t->slots[i], memory_order_acquire);
        if (!h || bhost_same(&h->addr, addr)) {
            *h_r = h;
            return i;
        }
        i = (i + 1) & (BHOST_SLOTS - 1);
    }
}

static struct bhost *bhost_add(struct bhost_table *t, const union net_addr *addr, const char *name,
                               uint8_t tls, bool *created_r)
{
    struct bhost *h;
    pthread_mutex_lock(&t->lock);
    uint32_t slot = bhost_find(t, addr, &h); /* again: another worker may have added it */
    uint32_t n = atomic_load(&t->n);
    if (!h && n < BHOST_MAX && (h = calloc(1, sizeof *h))) {
        snprintf(h->name, sizeof h->name, "%s", name);
        h->addr = *addr;
        h->tls = tls;
        t->hosts[n] = h;
        atomic_store_explicit(&t->n, n + 1, memory_order_release);
        atomic_store_explicit(&t->slots[slot], h, memory_order_release);
        *created_r = true;
    }
    pthread_mutex_unlock(&t->lock);
    if (!h && !atomic_exchange(&t->full_logged, true))
        log_msg(LOG_WARN, "backend_hosts_full",
                "more than %d backend hosts: the others are used without failover tracking",
                BHOST_MAX);
    return h;
}

struct bhost *bhost_get(struct bhost_table *t, const union net_addr *addr, const char *name,
                        uint8_t tls, bool *created_r)
{
    struct bhost *h;
    *created_r = false;
    bhost_find(t, addr, &h);
    return h ? h : bhost_add(t, addr, name, tls, created_r);
}

enum bhost_use bhost_claim(struct bhost_table *t, struct bhost *h, uint64_t now)
{
    uint64_t until = atomic_load_explicit(&h->down_until, memory_order_acquire);
    if (atomic_load_explicit(&h->disabled, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&h->skipped, 1, memory_order_relaxed);
        return BHOST_SKIP;
    }
    if (until == 0)
        return BHOST_USE;
    /* Over its back-off: the first logon to get here probes it. Holding it
     * for the probe's time keeps the others off it until the probe ends, so
     * only one logon ever waits for a host that may still be dead. */
    if (now >= until &&
        atomic_compare_exchange_strong(
                &h->down_until, &until,
                now + atomic_load_explicit(&t->probe_hold_ms, memory_order_relaxed)))
        return BHOST_PROBE;
    atomic_fetch_add_explicit(&h->skipped, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->skipped, 1, memory_order_relaxed);
    return BHOST_SKIP;
}

/* why: the failure (backend_down), or NULL (backend_up). */
static void bhost_log(enum log_level lvl, const char *event, const struct bhost *h, const char *why)
{
    struct log_line l;
    char a[64];
    log_begin(&l, lvl, event);
    if (l.skip)
        return;
    net_addr_str(&h->addr, a, sizeof a);
    log_cstr(&l, "host", h->name);
    log_cstr(&l, "address", a);
    if (why) {
        log_cstr(&l, "reason", why);
        log_fmt(&l, "retry_in_ms", "%u", atomic_load(&h->backoff));
    } else {
        log_fmt(&l, "down_ms", "%llu",
                (unsigned long long)(bhost_now_ms() - atomic_load(&h->down_since)));
    }
    log_end(&l);
}

void bhost_ok(struct bhost_table *t, struct bhost *h)
{
    uint64_t until = atomic_load_explicit(&h->down_until, memory_order_acquire);
    /* Whoever brings it back logs it, once. */
    if (until == 0 || !atomic_compare_exchange_strong(&h->down_until, &until, 0))
        return;
    atomic_store(&h->backoff, 0);
    atomic_fetch_add_explicit(&t->ups, 1, memory_order_relaxed);
    bhost_log(LOG_INFO, "backend_up", h, NULL);
}

/* The last failure's text: written rarely, read by show backends. */
static void bhost_set_why(struct bhost_table *t, struct bhost *h, const char *why)
{
    pthread_mutex_lock(&t->lock);
    snprintf(h->why, sizeof h->why, "%s", why);
    pthread_mutex_unlock(&t->lock);
}

void bhost_failed(struct bhost_table *t, struct bhost *h, bool probe, uint64_t now, const char *why)
{
    atomic_fetch_add_explicit(&h->failures, 1, memory_order_relaxed);
    uint64_t zero = 0;
    if (probe) {
        /* Still dead: wait twice as long before the next probe. */
        uint32_t b = FG_MIN(atomic_load(&h->backoff) * 2, t->backoff_max_ms);
        atomic_store(&h->backoff, b);
        atomic_store_explicit(&h->down_until, now + b, memory_order_release);
    } else if (atomic_compare_exchange_strong(&h->down_until, &zero, now + t->backoff_ms)) {
        /* It was up: this logon saw it fall. Others that fail on it too, in
         * the meantime, find it down already and add nothing. */
        atomic_store(&h->backoff, t->backoff_ms);
        atomic_store(&h->down_since, now);
        atomic_fetch_add_explicit(&h->downs, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&t->downs, 1, memory_order_relaxed);
    } else {
        return;
    }
    bhost_set_why(t, h, why);
    bhost_log(LOG_WARN, "backend_down", h, why);
}

uint32_t bhost_down_count(const struct bhost_table *t)
{
    uint32_t n = atomic_load_explicit(&t->n, memory_order_acquire), down = 0;
    for (uint32_t i = 0; i < n; i++)
        down += atomic_load(&t->hosts[i]->down_until) != 0;
    return down;
}

void bhost_dump(struct bhost_table *t, FILE *out, uint64_t now)
{
    static const char *const tls[] = {"none", "starttls", "implicit"};
    uint32_t n = atomic_load_explicit(&t->n, memory_order_acquire);
    fprintf(out, "# host address tls state retry_in_ms backoff_ms attempts failures skipped "
                 "downs sessions last_error\n");
    for (uint32_t i = 0; i < n; i++) {
        const struct bhost *h = t->hosts[i];
        char a[64], why[sizeof h->why];
        uint64_t until = atomic_load(&h->down_until);
        net_addr_str(&h->addr, a, sizeof a);
        /* Copied under the lock, printed outside it: a stats client that
         * reads slowly blocks the print, and must not block a worker that
         * adds a host. */
        pthread_mutex_lock(&t->lock);
        memcpy(why, until ? h->why : "", until ? sizeof why : 1);
        pthread_mutex_unlock(&t->lock);
        fprintf(out, "%s %s %s %s %llu %u %llu %llu %llu %llu %u \"%s\"\n", h->name, a,
                tls[h->tls % 3],
                atomic_load(&h->disabled) ? "disabled"
                : until == 0              ? "up"
                : now < until             ? "down"
                                          : "retry",
                (unsigned long long)(until > now ? until - now : 0), atomic_load(&h->backoff),
                (unsigned long long)atomic_load(&h->attempts),
                (unsigned long long)atomic_load(&h->failures),
                (unsigned long long)atomic_load(&h->skipped),
                (unsigned long long)atomic_load(&h->downs), atomic_load(&h->sessions), why);
    }
}

/* Whether spec names h: its name or address, with its port or without. */
static bool bhost_matches(const struct bhost *h, const char *spec)
{
    char ip[INET6_ADDRSTRLEN], a[64], hp[300];
    net_addr_ip(&h->addr, ip, sizeof ip);
    net_addr_str(&h->addr, a, sizeof a);
    snprintf(hp, sizeof hp, "%s:%u", h->name, net_addr_port(&h->addr));
    return strcasecmp(spec, h->name) == 0 || strcasecmp(spec, hp) == 0 || strcmp(spec, ip) == 0 ||
           strcmp(spec, a) == 0;
}

unsigned bhost_set_disabled(struct bhost_table *t, const char *host, bool disabled)
{
    uint32_t n = atomic_load_explicit(&t->n, memory_order_acquire);
    unsigned matched = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct bhost *h = t->hosts[i];
        if (!bhost_matches(h, host))
            continue;
        matched++;
        if (atomic_exchange(&h->disabled, disabled) == disabled)
            continue;
        struct log_line l;
        char a[64];
        log_begin(&l, LOG_INFO, disabled ? "backend_disabled" : "backend_enabled");
        net_addr_str(&h->addr, a, sizeof a);
        log_cstr(&l, "host", h->name);
        log_cstr(&l, "address", a);
        log_fmt(&l, "sessions", "%u", atomic_load(&h->sessions));
        log_end(&l);
    }
    return matched;
}

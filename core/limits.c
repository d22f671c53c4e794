/* Connection limits: per protocol, per client address, per mailbox. See limits.h. */
#include "limits.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define LIMITS_MAX_ENTRIES (1u << 22) /* 32 MiB of counters: a million slots, at four each */
#define LIMITS_NAME_MAX    256        /* bytes of a mailbox name that make its key */

/* A key's bytes: its kind, its protocol, then the address or the name. */
struct limits_key {
    uint8_t b[3 + LIMITS_NAME_MAX];
    size_t n;
};

/* Where a key lives: its stripe, where its window starts, its tag. */
struct limits_pos {
    uint32_t stripe, start, tag;
};

int limits_init(struct limits *l, uint32_t slots)
{
    uint64_t want = FG_MAX((uint64_t)slots * 4, (uint64_t)LIMITS_STRIPES * LIMITS_WINDOW);
    uint32_t n = LIMITS_STRIPES * LIMITS_WINDOW;

    memset(l, 0, sizeof *l);
    while (n < want && n < LIMITS_MAX_ENTRIES)
        n <<= 1;
    l->stripe_size = n / LIMITS_STRIPES;
    l->entries = calloc(n, sizeof *l->entries);
    l->stripes = aligned_alloc(64, LIMITS_STRIPES * sizeof *l->stripes);
    if (!l->entries || !l->stripes) {
        free(l->entries);
        free(l->stripes);
        l->entries = NULL;
        l->stripes = NULL;
        return FG_ERROR;
    }
    memset(l->stripes, 0, LIMITS_STRIPES * sizeof *l->stripes);
    for (unsigned i = 0; i < LIMITS_STRIPES; i++)
        pthread_mutex_init(&l->stripes[i].lock, NULL);
    if (getrandom(l->sipkey, sizeof l->sipkey, 0) != sizeof l->sipkey) {
        /* No entropy yet (early boot): a weaker key still spreads keys. */
        uint64_t t = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)l;
        memcpy(l->sipkey, &t, sizeof t);
    }
    for (int k = 0; k < LIMITS_KINDS; k++)
        for (int p = 0; p < FG_PROTO_COUNT; p++)
            atomic_init(&l->max[k][p], LIMITS_NONE);
    atomic_init(&l->v6_prefix, 64);
    return FG_OK;
}

void limits_free(struct limits *l)
{
    if (l->stripes)
        for (unsigned i = 0; i < LIMITS_STRIPES; i++)
            pthread_mutex_destroy(&l->stripes[i].lock);
    free(l->stripes);
    free(l->entries);
    l->stripes = NULL;
    l->entries = NULL;
}

void limits_set(struct limits *l, enum limits_kind k, enum fg_proto p, uint32_t max)
{
    atomic_store_explicit(&l->max[k][p], FG_MIN(FG_MAX(max, 1u), (uint32_t)LIMITS_NONE),
                          memory_order_relaxed);
}

void limits_set_v6_prefix(struct limits *l, unsigned bits)
{
    atomic_store_explicit(&l->v6_prefix, FG_MIN(FG_MAX(bits, 32u), 128u), memory_order_relaxed);
}

uint32_t limits_get(const struct limits *l, enum limits_kind k, enum fg_proto p)
{
    return atomic_load_explicit(&l->max[k][p], memory_order_relaxed);
}

bool limits_conn_acquire(struct limits *l, enum fg_proto p)
{
    uint32_t max = limits_get(l, LIMITS_CONNS, p);
    /* Optimistic: one atomic on the accept path, undone when over. */
    if (atomic_fetch_add_explicit(&l->conns[p], 1, memory_order_relaxed) < max)
        return true;
    atomic_fetch_sub_explicit(&l->conns[p], 1, memory_order_relaxed);
    return false;
}

void limits_conn_release(struct limits *l, enum fg_proto p)
{
    atomic_fetch_sub_explicit(&l->conns[p], 1, memory_order_relaxed);
}

/* ---- keys ---- */

/* An address's key: IPv4 whole, IPv4-mapped IPv6 as IPv4, IPv6 cut to its
 * prefix. False for anything else (no address to count). */
static bool limits_ip_key(struct limits *l, enum fg_proto p, const union net_addr *a,
                          struct limits_key *k)
{
    k->b[0] = LIMITS_PER_IP;
    k->b[1] = (uint8_t)p;
    if (a->sa.sa_family == AF_INET) {
        k->b[2] = 4;
        memcpy(k->b + 3, &a->v4.sin_addr, 4);
        k->n = 7;
        return true;
    }
    if (a->sa.sa_family != AF_INET6)
        return false;
    const uint8_t *x = a->v6.sin6_addr.s6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&a->v6.sin6_addr)) {
        k->b[2] = 4;
        memcpy(k->b + 3, x + 12, 4);
        k->n = 7;
        return true;
    }
    unsigned bits = atomic_load_explicit(&l->v6_prefix, memory_order_relaxed);
    k->b[2] = 6;
    for (unsigned i = 0; i < 16; i++) {
        unsigned keep = bits >= 8 * (i + 1) ? 8 : bits > 8 * i ? bits - 8 * i : 0;
        k->b[3 + i] = (uint8_t)(x[i] & (0xff00u >> keep));
    }
    k->n = 19;
    return true;
}

/* A mailbox's key: the name in ASCII lower case. */
static void limits_user_key(enum fg_proto p, const char *name, size_t n, struct limits_key *k)
{
    k->b[0] = LIMITS_PER_USER;
    k->b[1] = (uint8_t)p;
    n = FG_MIN(n, (size_t)LIMITS_NAME_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        k->b[2 + i] = c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c;
    }
    k->n = 2 + n;
}

static void limits_locate(const struct limits *l, const struct limits_key *k,
                          struct limits_pos *pos)
{
    uint64_t h = siphash24(l->sipkey, k->b, k->n);
    pos->stripe = (uint32_t)h & (LIMITS_STRIPES - 1);
    pos->start = (uint32_t)(h >> 8) & (l->stripe_size - 1);
    pos->tag = (uint32_t)(h >> 32);
}

/* ---- the table; every function here runs under the key's stripe lock ---- */

/* The key's entry (*found), else the first free entry of its window, else
 * LIMITS_OVERFLOW. The whole window is searched, so a free entry before the
 * key's own (its earlier occupant left) never splits the key in two. */
static uint32_t limits_find(const struct limits *l, const struct limits_pos *pos, bool *found)
{
    uint32_t base = pos->stripe * l->stripe_size, mask = l->stripe_size - 1;
    uint32_t free_e = LIMITS_OVERFLOW;

    for (uint32_t i = 0; i < LIMITS_WINDOW; i++) {
        uint32_t e = base + ((pos->start + i) & mask);
        const struct limits_entry *x = &l->entries[e];
        if (x->count == 0) {
            if (free_e == LIMITS_OVERFLOW)
                free_e = e;
        } else if (x->tag == pos->tag) {
            *found = true;
            return e;
        }
    }
    *found = false;
    return free_e;
}

/* The key's count as a check must see it: its entry's, plus its stripe's
 * overflow, since some of those may be this key's. */
static uint32_t limits_seen(const struct limits *l, enum limits_kind k, enum fg_proto p,
                            const struct limits_pos *pos, uint32_t e, bool found)
{
    uint64_t n = l->stripes[pos->stripe].overflow[k][p];
    if (found)
        n += l->entries[e].count;
    return (uint32_t)FG_MIN(n, (uint64_t)UINT32_MAX);
}

/* Counts key under its limit; the entry taken (or LIMITS_OVERFLOW) in *e_r. */
static bool limits_add(struct limits *l, enum limits_kind k, enum fg_proto p,
                       const struct limits_pos *pos, uint32_t *e_r)
{
    uint32_t max = limits_get(l, k, p);
    bool found;
    uint32_t e = limits_find(l, pos, &found);

    if (limits_seen(l, k, p, pos, e, found) >= max)
        return false;
    if (e == LIMITS_OVERFLOW) {
        l->stripes[pos->stripe].overflow[k][p]++;
        atomic_fetch_add_explicit(&l->overflowed, 1, memory_order_relaxed);
    } else {
        l->entries[e].tag = pos->tag;
        l->entries[e].count++;
    }
    *e_r = e;
    return true;
}

static bool limits_acquire(struct limits *l, enum limits_kind k, enum fg_proto p,
                           const struct limits_key *key, struct limits_hold *h)
{
    struct limits_pos pos;
    uint32_t e;

    limits_locate(l, key, &pos);
    pthread_mutex_t *lock = &l->stripes[pos.stripe].lock;
    pthread_mutex_lock(lock);
    bool ok = limits_add(l, k, p, &pos, &e);
    pthread_mutex_unlock(lock);
    if (!ok)
        return false;
    *h = (struct limits_hold){.entry = e,
                              .stripe = (uint16_t)pos.stripe,
                              .kind = (uint8_t)k,
                              .proto = (uint8_t)p,
                              .held = true};
    atomic_fetch_add_explicit(&l->held[k], 1, memory_order_relaxed);
    return true;
}

static uint32_t limits_count(struct limits *l, enum limits_kind k, enum fg_proto p,
                             const struct limits_key *key)
{
    struct limits_pos pos;
    bool found;

    limits_locate(l, key, &pos);
    pthread_mutex_t *lock = &l->stripes[pos.stripe].lock;
    pthread_mutex_lock(lock);
    uint32_t e = limits_find(l, &pos, &found);
    uint32_t n = limits_seen(l, k, p, &pos, e, found);
    pthread_mutex_unlock(lock);
    return n;
}

void limits_release(struct limits *l, struct limits_hold *h)
{
    if (!h->held)
        return;
    h->held = false;
    struct limits_stripe *st = &l->stripes[h->stripe];
    pthread_mutex_lock(&st->lock);
    if (h->entry == LIMITS_OVERFLOW)
        st->overflow[h->kind][h->proto]--;
    else
        l->entries[h->entry].count--;
    pthread_mutex_unlock(&st->lock);
    atomic_fetch_sub_explicit(&l->held[h->kind], 1, memory_order_relaxed);
}

/* ---- by address, by mailbox ---- */

bool limits_ip_acquire(struct limits *l, enum fg_proto p, const union net_addr *addr,
                       struct limits_hold *h)
{
    struct limits_key k;
    if (h->held || !limits_ip_key(l, p, addr, &k))
        return true;
    return limits_acquire(l, LIMITS_PER_IP, p, &k, h);
}

bool limits_user_acquire(struct limits *l, enum fg_proto p, const char *name, size_t n,
                         struct limits_hold *h)
{
    struct limits_key k;
    if (h->held)
        return true;
    limits_user_key(p, name, n, &k);
    return limits_acquire(l, LIMITS_PER_USER, p, &k, h);
}

bool limits_user_full(struct limits *l, enum fg_proto p, const char *name, size_t n)
{
    return limits_user_count(l, p, name, n) >= limits_get(l, LIMITS_PER_USER, p);
}

uint32_t limits_ip_count(struct limits *l, enum fg_proto p, const union net_addr *addr)
{
    struct limits_key k;
    return limits_ip_key(l, p, addr, &k) ? limits_count(l, LIMITS_PER_IP, p, &k) : 0;
}

uint32_t limits_user_count(struct limits *l, enum fg_proto p, const char *name, size_t n)
{
    struct limits_key k;
    limits_user_key(p, name, n, &k);
    return limits_count(l, LIMITS_PER_USER, p, &k);
}

/*
 * Connection limits shared by every worker: Exchange's MaxConnections,
 * MaxConnectionFromSingleIP and MaxConnectionsPerUser, per protocol.
 *
 * MaxConnections is one counter per protocol. The other two count by key --
 * a client address, or a mailbox -- in one table of counters shared by the
 * workers:
 *  - a key is hashed with SipHash under a random key per process, so a
 *    client cannot aim its addresses or names at one part of the table;
 *  - the table is split into stripes, each with its own lock; a key's
 *    entries lie in one stripe, so two workers meet on a lock only when
 *    their keys share a stripe, for the few instructions of one update;
 *  - a key probes a window of LIMITS_WINDOW entries in its stripe. The
 *    table has four entries per connection slot (a connection holds at
 *    most two keys), so a window is as good as never full; if it ever is,
 *    the key is counted in its stripe's overflow counter for its kind and
 *    protocol, which it shares with the other keys of that stripe that
 *    overflowed, and every check in that stripe adds that counter to the
 *    key's own. That over-counts (those keys are held to one limit
 *    together, and their stripe's keys see them), never under-counts: a
 *    full table can refuse too much, in one stripe of LIMITS_STRIPES,
 *    but never admits past a limit, and never fails.
 *
 * What a connection counted is recorded in a struct limits_hold, so the
 * release decrements exactly what the acquire incremented, whatever changed
 * since (a limit, IPv6PrefixLength), and a second release does nothing.
 *
 * Keys:
 *  - an IPv4 address, whole (/32); an IPv4-mapped IPv6 address
 *    (::ffff:a.b.c.d) is the IPv4 address;
 *  - an IPv6 address cut to IPv6PrefixLength bits (default 64: one
 *    customer's network, which a client can otherwise walk through);
 *  - a mailbox name, ASCII case folded (the directory's names are
 *    case-insensitive).
 *
 * The limits are atomics, read relaxed where they are checked, so they can
 * be changed at run time (limits_set): a lower limit refuses new
 * connections and logons from then on and closes none.
 */
#ifndef FG_LIMITS_H
#define FG_LIMITS_H

#include "../base/login.h"
#include "../base/net.h"
#include "../base/siphash.h"

#include <pthread.h>
#include <stdatomic.h>

#define LIMITS_WINDOW   32 /* entries a key probes: four cache lines */
#define LIMITS_STRIPES  256
#define LIMITS_OVERFLOW UINT32_MAX /* a hold on the overflow counter */
#define LIMITS_NONE     INT32_MAX  /* Exchange's "no limit": its default for two of them */

/* The settings, by Exchange's names. */
enum limits_kind {
    LIMITS_CONNS,    /* MaxConnections: connections of the protocol */
    LIMITS_PER_IP,   /* MaxConnectionFromSingleIP: by client address */
    LIMITS_PER_USER, /* MaxConnectionsPerUser: by mailbox, once logged in */
    LIMITS_KINDS,
};

/* What one connection counted for one keyed limit. Zeroed: nothing. */
struct limits_hold {
    uint32_t entry;  /* table index, or LIMITS_OVERFLOW */
    uint16_t stripe; /* the key's */
    uint8_t kind;    /* LIMITS_PER_IP or LIMITS_PER_USER */
    uint8_t proto;
    bool held;
};

struct limits_entry {
    uint32_t tag;   /* bits of the key's hash; meaningful while count > 0 */
    uint32_t count; /* connections counted */
};

/* A lock and what it guards besides the stripe's entries; a cache line of
 * its own, so workers on different stripes share none. */
struct limits_stripe {
    pthread_mutex_t lock;
    uint32_t overflow[LIMITS_KINDS][FG_PROTO_COUNT]; /* keys counted without an entry */
} __attribute__((aligned(64)));

struct limits {
    /* the limits, changeable at run time; LIMITS_NONE: no limit */
    _Atomic uint32_t max[LIMITS_KINDS][FG_PROTO_COUNT];
    _Atomic uint32_t v6_prefix; /* IPv6PrefixLength: 32 to 128 */
    /* counts, for the checks and for show info */
    _Atomic uint32_t conns[FG_PROTO_COUNT];
    _Atomic uint32_t held[LIMITS_KINDS]; /* connections counted by key, per kind */
    _Atomic uint64_t overflowed;         /* acquires that found their window full */
    /* the table */
    uint8_t sipkey[SIPHASH_KEY_LEN];
    uint32_t stripe_size; /* entries per stripe, a power of two >= LIMITS_WINDOW */
    struct limits_entry *entries;
    struct limits_stripe *stripes;
};

/*
 * Sizes the table for slots connection slots in all (four entries each),
 * draws the hash key, sets every limit to LIMITS_NONE and IPv6PrefixLength
 * to 64. FG_OK, or FG_ERROR when out of memory.
 */
int limits_init(struct limits *l, uint32_t slots);
void limits_free(struct limits *l);

/* Sets a limit (1..LIMITS_NONE), or IPv6PrefixLength (32..128), now or at
 * run time; values out of range are clamped. After a prefix change, new
 * IPv6 connections count under the new prefix; those counted before stay
 * counted under the old one until they end. */
void limits_set(struct limits *l, enum limits_kind k, enum fg_proto p, uint32_t max);
void limits_set_v6_prefix(struct limits *l, unsigned bits);
uint32_t limits_get(const struct limits *l, enum limits_kind k, enum fg_proto p);

/* MaxConnections: counts a connection of protocol p; false (nothing
 * counted) when p has its limit. Every true is matched by one release. */
bool limits_conn_acquire(struct limits *l, enum fg_proto p);
void limits_conn_release(struct limits *l, enum fg_proto p);

/*
 * MaxConnectionFromSingleIP: counts a connection from addr (its address
 * only; the port is ignored) into *h. True when counted, or when addr is
 * not an IP address (nothing to count, *h stays empty); false when the
 * address (its /32, or its IPv6 prefix) has its limit: nothing counted.
 * Call it once per connection, whenever the client's address is known:
 * at accept, or after a PROXY protocol header.
 */
bool limits_ip_acquire(struct limits *l, enum fg_proto p, const union net_addr *addr,
                       struct limits_hold *h);

/*
 * MaxConnectionsPerUser: counts a logon to mailbox name (n bytes, any case)
 * into *h; false when the mailbox has its limit for p: nothing counted.
 */
bool limits_user_acquire(struct limits *l, enum fg_proto p, const char *name, size_t n,
                         struct limits_hold *h);

/* Whether a logon to name would be refused now: a check before the work of
 * a backend login, which limits_user_acquire makes exact afterwards. */
bool limits_user_full(struct limits *l, enum fg_proto p, const char *name, size_t n);

/* Gives back what *h counted, and empties it: a second call does nothing. */
void limits_release(struct limits *l, struct limits_hold *h);

/* How many connections are counted for addr or name now (tests, checks). */
uint32_t limits_ip_count(struct limits *l, enum fg_proto p, const union net_addr *addr);
uint32_t limits_user_count(struct limits *l, enum fg_proto p, const char *name, size_t n);

#endif

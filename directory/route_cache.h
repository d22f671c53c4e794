/*
 * The route cache: what a resolution learned about a typed name (the
 * account, its mailbox and the mailbox's servers), kept for RouteCacheTTL so
 * the next logon of that name costs one bind instead of one to three
 * searches and a bind. Names that found no account are kept too, for
 * NegativeCacheTTL, so a spray of unknown names stops at the gateway.
 *
 * Shared by every thread without a lock on the read side: a liburcu
 * lock-free hash table (rculfhash), with entries reclaimed after an RCU
 * grace period (urcu-memb: readers pay no barrier where the kernel has
 * membarrier). Workers look up on every logon; directory threads insert,
 * replace and delete under a writers' mutex that also keeps the insertion
 * order, so the oldest entry is evicted past RouteCacheMaxEntries.
 *
 * Entries are immutable once published: a change (a new credential hash)
 * is a copy that replaces the entry. So a reader's copy is always of one
 * consistent entry.
 *
 * The optional credential part is a keyed hash of the password that last
 * bound: PBKDF2-HMAC-SHA256 under a key random per process, held in memory
 * excluded from core dumps. Never the password.
 *
 * Every thread that calls in must be registered: rc_thread_register().
 */
#ifndef FG_ROUTE_CACHE_H
#define FG_ROUTE_CACHE_H

#include "dir_conf.h"
#include "route_key.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#define RC_CRED_LEN    32
#define RC_CRED_ROUNDS 1000 /* PBKDF2 iterations: about 0.3 ms on one core */
#define RC_DB_MAX      64

enum rc_kind {
    RC_ROUTE = 1,    /* the name logs on: account, mailbox, servers */
    RC_NEGATIVE = 2, /* the name found no account */
};

/* What a resolution leaves for the next logon of the same name. */
struct rc_value {
    uint8_t kind;           /* enum rc_kind */
    uint8_t why;            /* RC_NEGATIVE: enum resolve_why */
    uint8_t forest;         /* the account's forest (topology index) */
    uint8_t proto_disabled; /* 1 << fg_proto: protocolSettings of the mailbox */
    bool admin;             /* adminCount = 1 */
    const char *account;    /* DN */
    const char *login;      /* the backend login name */
    const char *database;   /* homeMDB's name; "" without one */
    const struct backend_target *target;
    bool target_shared;   /* the configuration's: kept by pointer; else copied */
    const uint8_t *cred;  /* RC_CRED_LEN bytes, or NULL */
    uint32_t ttl_ms;      /* RouteCacheTTL or NegativeCacheTTL */
    uint32_t cred_ttl_ms; /* CredentialCacheTTL */
};

/* A copy of one entry, for one logon. */
struct rc_snap {
    uint8_t kind, why, forest, proto_disabled;
    bool admin;
    bool has_cred; /* a credential hash that has not expired */
    uint64_t expires_ms;
    char account[DIR_DN_MAX];
    char login[DIR_LOGIN_MAX + 1];
    char database[RC_DB_MAX];
    const struct backend_target *target; /* shared, or the caller's own, filled */
};

enum rc_found {
    RC_MISS,
    RC_HIT,
    RC_STALE, /* a route past its TTL (kept for ServeStaleOnDirectoryFailure) */
};

struct rc_stats {
    _Atomic uint64_t hits;         /* routes found */
    _Atomic uint64_t misses;       /* names not found, or expired */
    _Atomic uint64_t negative;     /* negative entries found */
    _Atomic uint64_t coalesced;    /* requests that waited for another's resolution */
    _Atomic uint64_t evictions;    /* dropped past RouteCacheMaxEntries */
    _Atomic uint64_t stale;        /* routes that failed at the backend: dropped, resolved again */
    _Atomic uint64_t cred_hits;    /* logons the credential cache answered */
    _Atomic uint64_t cred_misses;  /* a credential entry, but another password: a real bind */
    _Atomic uint64_t served_stale; /* ServeStaleOnDirectoryFailure used */
};

struct route_cache {
    struct cds_lfht *ht;
    uint8_t hkey[16];      /* SipHash key: a client cannot aim names at one bucket */
    uint8_t *secret;       /* the credential hash's key: a page excluded from core dumps */
    pthread_mutex_t wlock; /* writers: the table's changes and the FIFO */
    struct fg_list fifo;   /* entries, oldest first */
    uint32_t max;
    uint32_t keep_stale_ms; /* how long an expired route is kept for serve-stale */
    _Atomic uint32_t entries;
    struct rc_stats stats;
};

/* FG_OK, or FG_ERROR (no memory, no randomness). */
int rc_init(struct route_cache *rc, uint32_t max_entries, uint32_t keep_stale_ms);

/* Frees everything; no thread may be using the cache. */
void rc_destroy(struct route_cache *rc);

/* Every thread that uses a cache registers once, and unregisters before it ends. */
void rc_thread_register(void);
void rc_thread_unregister(void);

uint64_t rc_hash(const struct route_cache *rc, const char *key, size_t n);

/* Copies the entry for key into out (own receives a copied target).
 * Lock-free. */
enum rc_found rc_lookup(struct route_cache *rc, const char *key, size_t n, uint64_t h, uint64_t now,
                        struct rc_snap *out, struct backend_target *own);

/* Inserts or replaces key's entry; evicts the oldest past the bound. */
void rc_put(struct route_cache *rc, const char *key, size_t n, uint64_t h, const struct rc_value *v,
            uint64_t now);

/* The credential hash of pass for key (slow on purpose: call it off the workers). */
void rc_cred_hash(const struct route_cache *rc, const char *key, size_t n, const char *pass,
                  size_t pass_len, uint8_t out[RC_CRED_LEN]);

/* True when key's route holds cred, unexpired unless any_age (and the route
 * itself may then be expired too: serve-stale). Constant time in the hash. */
bool rc_cred_match(struct route_cache *rc, const char *key, size_t n, uint64_t h,
                   const uint8_t cred[RC_CRED_LEN], uint64_t now, bool any_age);

/* Sets (cred) or drops (NULL) the credential part of key's route. */
void rc_cred_set(struct route_cache *rc, const char *key, size_t n, uint64_t h, const uint8_t *cred,
                 uint32_t ttl_ms, uint64_t now);

/* Drops key's entry; 1 when there was one. */
unsigned rc_forget(struct route_cache *rc, const char *key, size_t n, uint64_t h);

/* Drops every entry; how many there were. */
unsigned rc_flush(struct route_cache *rc);

/* One line per entry whose name starts with prefix (canonical, any case):
 * names and routes, never a credential hash. */
void rc_show(struct route_cache *rc, const struct dir_topology *topo, const char *prefix,
             uint64_t now, FILE *out);

#endif

/*
 * The throttle: failed logons counted per client address and per account,
 * so that guessing slows down and an attacker's guesses stop reaching the
 * directory before it locks the account.
 *
 * Per address: every failed logon makes the address's next attempts wait
 * longer (AddressFailureDelayMs, doubling up to AddressFailureDelayMaxMs);
 * AddressFailureThreshold failures within AddressFailureWindow refuse the
 * address for AddressBanTime.
 *
 * Per account ("smart lockout", as Entra ID does it): the failed binds of an
 * account are counted within AccountFailureWindow, and split by whether the
 * address is familiar -- it logged on to that account successfully within
 * FamiliarLocationDays. Past AccountFailureThreshold, attempts from
 * unfamiliar addresses are answered as a wrong password without a bind, so
 * they no longer reach the directory and cannot raise the account's
 * badPwdCount; attempts from familiar addresses keep their bind up to
 * FamiliarAccountFailureThreshold. A bind is counted while it is under way,
 * so parallel attempts cannot overshoot a threshold. A wrong password tried
 * again (one of the account's last BadPasswordHistory wrong ones) is
 * answered without a bind and not counted again. An unknown name is counted
 * under the name as an account is under its DN, and answered alike.
 *
 * Nothing here keeps a password or an address: records are keyed by SipHash
 * with a key random per process, and a wrong password is remembered as a
 * 128-bit keyed hash of it and the account. Every call is safe from any
 * thread and never blocks on I/O: workers and directory threads share one
 * table of each kind, locked per stripe. Times are CLOCK_MONOTONIC
 * milliseconds, given by the caller.
 */
#ifndef FG_THROTTLE_H
#define FG_THROTTLE_H

#include "../base/net.h"

#include <pthread.h>
#include <stdatomic.h>

#define THR_MAX_NETS    32
#define THR_BAD_MAX     8 /* BadPasswordHistory's ceiling */
#define THR_PW_HASH_LEN 16
#define THR_STRIPES     64
#define THR_PREFIX_MAX  64 /* ThrottleStorePrefix */
#define THR_KEY_MIN     32 /* ThrottleKeyFile: bytes of randomness, at least */

/* [throttle] */
struct thr_conf {
    bool enabled;      /* Enabled */
    char exempt[1024]; /* ExemptNetworks, as written */
    unsigned nexempt;  /* ... parsed */
    struct net_cidr exempt_nets[THR_MAX_NETS];
    uint32_t addr_delay_ms;            /* AddressFailureDelayMs: 0 = no delay */
    uint32_t addr_delay_max_ms;        /* AddressFailureDelayMaxMs */
    uint32_t addr_threshold;           /* AddressFailureThreshold: 0 = never refuse */
    uint32_t addr_window;              /* AddressFailureWindow, seconds */
    uint32_t addr_ban;                 /* AddressBanTime, seconds */
    uint32_t acct_threshold;           /* AccountFailureThreshold: 0 = no account throttling */
    uint32_t acct_familiar_threshold;  /* FamiliarAccountFailureThreshold */
    uint32_t acct_window;              /* AccountFailureWindow, seconds */
    uint32_t familiar_days;            /* FamiliarLocationDays: 0 = no address is familiar */
    uint32_t bad_history;              /* BadPasswordHistory */
    uint32_t max_entries;              /* MaxEntries, per kind of record */
    char store[512];                   /* ThrottleStore: "" (this instance) or redis://... */
    char store_prefix[THR_PREFIX_MAX]; /* ThrottleStorePrefix */
    uint32_t store_timeout_ms;         /* ThrottleStoreTimeoutMs */
    char key_file[512];                /* ThrottleKeyFile */
    uint8_t *key;                      /* ... its bytes, in memory kept out of core dumps */
    size_t key_len;
};

/* Fills in the defaults. */
void thr_conf_defaults(struct thr_conf *c);

/* A throttle decision, for the audit line (thr_reason_name) and counters. */
enum thr_reason {
    THR_PASS,
    THR_EXEMPT,           /* ExemptNetworks: neither throttled nor counted */
    THR_ADDR_DELAY,       /* the address failed recently: its attempt waits */
    THR_ADDR_BANNED,      /* the address failed AddressFailureThreshold times */
    THR_ACCOUNT_LOCKED,   /* past AccountFailureThreshold, from an unfamiliar address */
    THR_ACCOUNT_FAMILIAR, /* past FamiliarAccountFailureThreshold, from any address */
    THR_REPEAT_PASSWORD,  /* a wrong password tried again: no bind, not counted */
    THR_REASON_COUNT,
};

const char *thr_reason_name(enum thr_reason r);

struct thr_table;
struct thr_ticket;
enum thr_outcome;

/*
 * A store that counts for a fleet (thrstore.c: Redis), as the throttle
 * sees it: consulted after this instance's own tables, which stay the
 * floor. account_check is false when the store did not answer.
 */
struct thr_fleet_ops {
    bool (*account_check)(void *store, struct thr_ticket *tk, bool familiar, enum thr_reason *why);
    void (*account_done)(void *store, const struct thr_ticket *tk, enum thr_outcome o);
    void (*addr_failed)(void *store, uint64_t addr_key);
    void (*flush)(void *store);
};

struct thr_stats {
    _Atomic uint64_t reasons[THR_REASON_COUNT]; /* decisions other than THR_PASS */
    _Atomic uint64_t addr_failures;             /* failed logons counted per address */
    _Atomic uint64_t account_failures;          /* failed binds counted per account */
    _Atomic uint64_t bans;                      /* addresses refused (each ban once) */
    _Atomic uint64_t evictions;                 /* records dropped for MaxEntries */
};

struct throttle {
    const struct thr_conf *conf;
    bool on;
    uint8_t *secret; /* 3 SipHash keys, in a page kept out of core dumps */
    struct thr_table *addrs, *accounts, *familiar;
    const struct thr_fleet_ops *fleet_ops; /* ThrottleStore, or NULL */
    void *fleet;
    struct thr_stats stats;
};

/* FG_OK, or FG_ERROR (out of memory) after logging why. With the conf
 * disabled nothing is allocated and every check passes. The keys come from
 * conf->key when it is set (ThrottleKeyFile: the same on every instance of
 * a fleet), else at random. A fleet store is attached after (ts_attach)
 * and goes before thr_free (ts_detach). */
int thr_init(struct throttle *t, const struct thr_conf *conf);
void thr_free(struct throttle *t);

/* ---- per address ---- */

/*
 * Before a logon: THR_PASS, THR_EXEMPT, THR_ADDR_DELAY (wait *delay_ms
 * first) or THR_ADDR_BANNED (refuse it).
 */
enum thr_reason thr_addr_check(struct throttle *t, const union net_addr *a, uint64_t now,
                               uint32_t *delay_ms);

/* A logon from a failed. True when this failure starts a ban. */
bool thr_addr_failed(struct throttle *t, const union net_addr *a, uint64_t now);

/* The fleet's count of an address's failures (key: its keyed hash), and
 * the ms its ban has left, as the store heard them. */
void thr_addr_learn(struct throttle *t, uint64_t key, uint32_t fails, uint64_t ban_ms,
                    uint64_t now);

/* Whether a is refused now (at accept). */
bool thr_addr_banned(struct throttle *t, const union net_addr *a, uint64_t now);

/* ---- per account ---- */

/* One bind's passage through the account throttle. */
struct thr_ticket {
    uint64_t account; /* the account's key */
    uint64_t place;   /* the account and address's key, for familiarity */
    uint8_t pw[THR_PW_HASH_LEN];
    bool counted; /* a bind is reserved: thr_account_done must follow */
    bool exempt;
    bool remote;   /* ... in the fleet's store too */
    bool familiar; /* the place was familiar to the fleet at the check */
    uint64_t rid;  /* the store's reservation */
};

/*
 * Before a bind as account (a DN, or the name typed when it found nobody;
 * compared without ASCII case) with pass, from a. THR_PASS or THR_EXEMPT:
 * bind, then report its outcome with thr_account_done. Otherwise answer a
 * wrong password without binding; nothing is to be reported.
 */
enum thr_reason thr_account_check(struct throttle *t, const char *account, size_t account_len,
                                  const union net_addr *a, const char *pass, size_t pass_len,
                                  uint64_t now, struct thr_ticket *tk);

enum thr_outcome {
    THR_BIND_OK,     /* the password is right: the address becomes familiar */
    THR_BIND_FAILED, /* a wrong password: counted */
    THR_BIND_NONE,   /* no answer (timeout, server down) or an expired password */
};

/* The bind's outcome; releases the ticket. Safe to call twice. */
void thr_account_done(struct throttle *t, struct thr_ticket *tk, enum thr_outcome o, uint64_t now);

/* ---- operating it ---- */

/* Forgets every record: unbans every address, unblocks every account, in
 * the fleet's store too. */
void thr_flush(struct throttle *t);
/* The same on this instance only: what the store asks of it. */
void thr_flush_local(struct throttle *t);

/* Records held now, per kind. */
void thr_counts(struct throttle *t, uint64_t *addrs, uint64_t *accounts, uint64_t *familiar);

#endif

/*
 * Backend hosts: the health of every backend server forestgate logs in to,
 * shared by all workers, in the manner of Exchange's Active Manager for its
 * database copies.
 *
 * A host is one address and port (a database copy's IMAP or POP3 service).
 * A host that refuses a connection, does not greet within ConnectTimeout or
 * fails TLS is marked down for a back-off (FailoverBackoff, doubling with
 * each failed probe up to FailoverBackoffMax). While it is down, logons skip
 * it and go to the route's next copy at once, without waiting out a timeout.
 * When the back-off ends, one logon probes it: the others keep skipping it
 * until the probe answers. A probe that gets a greeting (and TLS, when the
 * route uses it) brings it back up.
 *
 * Hosts are added the first time a route names them (configured at start,
 * or found in the directory) and live until exit. Lookups take no lock:
 * the table's slots are published with release stores, and a host's state is
 * a few atomics. Only adding a host takes a mutex.
 */
#ifndef FG_BHOST_H
#define FG_BHOST_H

#include "../base/net.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#define BHOST_MAX   1024 /* hosts tracked; more are used untracked */
#define BHOST_SLOTS 2048 /* open addressing, a power of two */

struct bhost {
    char name[256];              /* as the route named it: the certificate's name */
    union net_addr addr;         /* with the port */
    uint8_t tls;                 /* enum backend_tls of the route that first named it */
    _Atomic uint64_t down_until; /* CLOCK_MONOTONIC ms; 0: up */
    _Atomic uint64_t down_since; /* ms; when it went down */
    _Atomic uint32_t backoff;    /* ms: the current back-off */
    _Atomic uint64_t attempts;   /* connections started */
    _Atomic uint64_t failures;   /* of those, failed before the host was usable */
    _Atomic uint64_t skipped;    /* logons that passed it by while it was down */
    _Atomic uint64_t downs;      /* times it went down */
    _Atomic uint32_t sessions;   /* relayed sessions now */
    _Atomic bool disabled;       /* by the stats socket: no new sessions */
    char why[160];               /* the last failure, for show backends; under the lock */
};

struct bhost_table {
    pthread_mutex_t lock; /* adding hosts only */
    uint32_t backoff_ms, backoff_max_ms;
    _Atomic uint32_t probe_hold_ms; /* how long others skip a host while one logon probes it;
                                     * ConnectTimeout's, which set may change (core/tune.c) */
    _Atomic uint32_t n;
    struct bhost *hosts[BHOST_MAX];             /* in the order they were added */
    _Atomic(struct bhost *) slots[BHOST_SLOTS]; /* by address */
    _Atomic uint64_t downs, ups, skipped;       /* totals, for show info */
    _Atomic bool full_logged;
};

/* What a logon may do with a host. */
enum bhost_use {
    BHOST_USE,   /* up: connect */
    BHOST_PROBE, /* down, its back-off over: this logon probes it */
    BHOST_SKIP,  /* down: go to the next copy */
};

/* backoff_ms doubling to backoff_max_ms; a probe holds a host for hold_ms.
 * FG_OK or FG_ERROR. */
int bhost_table_init(struct bhost_table *t, uint32_t backoff_ms, uint32_t backoff_max_ms,
                     uint32_t hold_ms);
void bhost_table_free(struct bhost_table *t);

/*
 * The host for addr (with its port), added under name when it is new
 * (*created_r says so). NULL when the table is full: such a host is used
 * without health tracking (logged once).
 */
struct bhost *bhost_get(struct bhost_table *t, const union net_addr *addr, const char *name,
                        uint8_t tls, bool *created_r);

/* Whether a logon may connect to h now (CLOCK_MONOTONIC ms), or should skip. */
enum bhost_use bhost_claim(struct bhost_table *t, struct bhost *h, uint64_t now);

/* h greeted (and finished TLS): it is up; logs event=backend_up if it was
 * down. */
void bhost_ok(struct bhost_table *t, struct bhost *h);

/* h failed before it was usable: it goes down, or stays down longer after a
 * failed probe; logs event=backend_down. */
void bhost_failed(struct bhost_table *t, struct bhost *h, bool probe, uint64_t now,
                  const char *why);

/*
 * "disable backend HOST" / "enable backend HOST": HOST is a host's name,
 * its address, or either with ":port". A disabled host gets no new
 * sessions, and its sessions go on. Returns the hosts that matched.
 */
unsigned bhost_set_disabled(struct bhost_table *t, const char *host, bool disabled);

/* Hosts down now. */
uint32_t bhost_down_count(const struct bhost_table *t);

/* The stats socket's "show backends": a header, then one line per host. */
void bhost_dump(struct bhost_table *t, FILE *out, uint64_t now);

/* CLOCK_MONOTONIC in ms. */
uint64_t bhost_now_ms(void);

#endif

/*
 * The directory: turns a client's credentials into a route (which backend,
 * which mailbox), or a refusal.
 *
 * The worker never waits for the directory: dir_submit() returns at once,
 * with the outcome when it is known at once, or later as a completion on the
 * worker's own ring, carrying the user_data the worker chose.
 *
 * Without forests ([forest:NAME]) every login goes to DefaultServer under
 * the name typed, and the backend checks the password: the answer is known
 * at once (FG_DONE), or after the failed-logon delay, held by a timeout on
 * the ring. With forests, the request goes to the
 * directory pool: DirectoryThreads threads, each an event loop that runs
 * many resolutions (resolve.h) at once against the forests' stores -- the
 * LDIF file in memory answers at once, LDAP (ldap_store.h) later -- and
 * posts each answer to the worker's ring with IORING_OP_MSG_RING, so a
 * worker never waits for the directory. Every request is answered within
 * RequestTimeout, [UNAVAILABLE] if need be.
 */
#ifndef FG_DIR_H
#define FG_DIR_H

#include "../base/cred.h"
#include "dir_conf.h"
#include "route_cache.h"
#include "throttle.h"

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>

struct dir_route {
    const struct backend_target *target; /* hosts to try, in order */
    uint16_t port;
    uint16_t mailbox_len;
    char mailbox[CRED_NAME_MAX + 1]; /* the name to log in to the backend with */
};

/* How the route cache served a request, for the audit line. */
enum dir_cache_use {
    DC_OFF,        /* no cache: RouteCacheTTL = 0, no forests, or a name with no valid form */
    DC_MISS,       /* resolved in full */
    DC_HIT,        /* a cached route: one bind */
    DC_NEGATIVE,   /* a cached "not found": no LDAP operation */
    DC_CREDENTIAL, /* a cached route and password: no LDAP operation */
    DC_COALESCED,  /* waited for another logon's resolution of the same name */
    DC_STALE,      /* ServeStaleOnDirectoryFailure: an expired route, the directory down */
};

const char *dir_cache_use_name(enum dir_cache_use u);

/* What the audit line reports about a resolution. */
struct dir_audit {
    const char *why;      /* resolve_why_text(), or NULL */
    uint8_t form;         /* enum logon_form */
    struct logon_name ln; /* the parts, as offsets into the name typed */
    bool not_found;       /* "User <name> wasn't found in Active Directory." */
    char forest[64];
    char account[DIR_DN_MAX];
    unsigned ops;     /* store operations */
    unsigned ldap;    /* LDAP requests sent (LDAP forests), retries included */
    uint8_t cache;    /* enum dir_cache_use */
    uint8_t throttle; /* enum thr_reason: the account throttle's decision, if not THR_PASS */
};

/* Owned by the connection; it must stay valid until the completion arrives. */
struct dir_request {
    /* in */
    const struct cred *cred;
    enum fg_proto proto;
    bool fresh;            /* skip the route cache: a cached route failed at the backend */
    union net_addr client; /* for the throttle */
    uint32_t hold_ms;      /* the address throttle's delay before the request starts */
    bool refuse;           /* after the hold, answer LOGIN_FAILED: the address is refused */
    struct krb_sess *krb;  /* a GSSAPI logon's exchange (cred->mech); the login owns it */
    /* out */
    bool sasl_continue; /* GSSAPI: not done; send krb->out to the client as a challenge */
    enum login_status status;
    struct dir_route route;
    uint32_t elapsed_ms;
    struct dir_audit audit;
    /* the pool's */
    struct fg_list link; /* on a directory thread's queue, under its lock */
    int ring_fd;
    uint64_t ud;
    struct backend_target own_target; /* hosts read from the directory, or cached */
    /* the route cache's */
    bool stale_ok;    /* snap holds an expired route (ServeStaleOnDirectoryFailure) */
    uint16_t key_len; /* 0: not cached */
    uint64_t key_hash;
    char key[ROUTE_KEY_MAX];
    struct rc_snap snap;
    struct __kernel_timespec hold_ts; /* the hold without a directory pool */
    /*
     * The hand-off back to the worker. The completion travels through the
     * kernel (IORING_OP_MSG_RING), which orders the answer before it, but
     * ThreadSanitizer cannot see that: the pool stores true here with
     * release, last, just before it posts; the worker loads it with acquire
     * (dir_request_taken) when the completion arrives, before it reads the
     * answer or frees the request. A plain store and load on x86.
     */
    atomic_bool answered;
};

struct dir_thread;
struct krb_acceptor;

/* Counters for the stats socket's show info. */
struct dir_stats {
    _Atomic uint64_t requests;      /* resolutions started */
    _Atomic uint64_t timeouts;      /* answered [UNAVAILABLE] after RequestTimeout */
    _Atomic uint64_t unavailable;   /* answered [UNAVAILABLE], timeouts included */
    _Atomic uint64_t ldap_requests; /* LDAP searches and binds sent */
    _Atomic uint64_t ldap_down;     /* servers marked down (failovers) */
    _Atomic uint32_t in_flight;
};

struct dir {
    const struct dir_conf *conf;
    const struct backend_target *fallback; /* DefaultServer: every route without a directory */
    const struct backend_policy *policy;   /* [backend]'s: databases without a section */
    unsigned nthreads;
    struct dir_thread *threads;
    _Atomic unsigned next; /* round robin over the threads */
    struct dir_stats stats;
    bool cache_on; /* RouteCacheTTL > 0 and forests */
    struct route_cache cache;
    struct throttle *thr;     /* set by the caller after dir_init */
    struct krb_acceptor *krb; /* KerberosKeytab's keys; set by the caller, or NULL */
};

/* fallback and policy are [backend]'s DefaultServer and TLS policy. */
void dir_init(struct dir *d, const struct dir_conf *conf, const struct backend_target *fallback,
              const struct backend_policy *policy);

/* Starts the directory pool when forests are configured. FG_OK or FG_ERROR. */
int dir_start(struct dir *d);

/* Stops the pool once the workers are gone. */
void dir_stop(struct dir *d);

/* Every thread that submits requests or runs the cache commands below
 * registers with the route cache once, and unregisters before it ends. */
void dir_thread_register(void);
void dir_thread_unregister(void);

/*
 * The backend refused a logon on req's route, or none of its hosts could be
 * reached. When the route came from the cache it may be stale (the mailbox
 * moved): the entry is dropped and true says to submit req again, with
 * req->fresh set, so it is resolved anew. Once per logon.
 */
bool dir_route_failed(struct dir *d, struct dir_request *req);

/* The stats socket's "show cache [prefix]" and "flush cache [name]". */
void dir_cache_show(struct dir *d, const char *prefix, FILE *out);
unsigned dir_cache_flush(struct dir *d, const char *name);

/*
 * Starts resolving req. Returns FG_DONE when req holds the answer already
 * (the static route: no completion follows); FG_OK when the answer is
 * written to req before the completion with user_data ud is posted to ring;
 * or FG_AGAIN when no submission slot is free (the caller flushes its ring
 * and retries).
 */
int dir_submit(struct dir *d, struct io_uring *ring, struct dir_request *req, uint64_t ud);

/*
 * The worker's half of the hand-off: call it when req's completion arrives,
 * before anything reads the answer or frees req. Returns whether a directory
 * thread answered (false: the static route, answered by dir_submit itself).
 */
static inline bool dir_request_taken(struct dir_request *req)
{
    return atomic_load_explicit(&req->answered, memory_order_acquire);
}

#endif

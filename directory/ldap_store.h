/*
 * The LDAP store: a forest served by its domain controllers over LDAP
 * (libldap), answering the resolver's store operations (resolve.h) without
 * ever blocking on an answer.
 *
 * One ldap_store belongs to one directory thread and one forest. It keeps a
 * lookup connection, bound as the forest's service account (BindDn), that
 * carries any number of searches at once, and a few bind connections that
 * check users' passwords, one bind each at a time (RFC 4511 section 4.2.1:
 * nothing else may be outstanding during a bind). The thread polls the
 * connections' descriptors and hands readiness to ldap_store_process();
 * finished operations are reported through the done callback.
 *
 * The URIs of the forest are tried in order. A server that refuses, drops
 * the connection with requests outstanding, or leaves a request unanswered
 * for half the RequestTimeout is marked down for a back-off (1 s, doubling
 * up to 8 s) and the operations are sent again to the next URI. When every
 * URI is down an operation fails at once with STORE_UNAVAILABLE.
 *
 * Connecting (TCP, and StartTLS or ldaps) is done with libldap's own
 * synchronous calls, bounded by a connect timeout: it happens on a directory
 * thread, never on a worker, and only when a connection is (re)made.
 */
#ifndef FG_LDAP_STORE_H
#define FG_LDAP_STORE_H

#include "resolve.h"

#include <poll.h>
#include <stdatomic.h>

struct forest_conf;
struct ldap_store;
struct ldap_conn;

#define LDS_MAX_URIS       8
#define LDS_MAX_BIND_CONNS 4

/* One store operation in flight; the caller owns the memory (it lives in the
 * directory thread's job) until done() is called or ldap_store_cancel(). */
struct ldap_op {
    /* private: on one list at a time, or none -- the store's wait queue
     * (queued), its done queue, or a failed connection's redo list (redo) */
    struct fg_list link;
    void *job;
    const struct store_op *op;
    struct store_result *res;
    unsigned ldap_requests; /* LDAP requests sent for it, retries included */
    /* private */
    uint8_t stage;        /* SOP_DATABASE: 0 the database, 1 its servers */
    uint8_t attempts;     /* retries after a connection failure */
    bool queued;          /* on the store's wait queue */
    bool redo;            /* on a failed connection's list of operations to restart */
    unsigned outstanding; /* requests in flight */
    unsigned nservers;
    char servers[DIR_MAX_HOSTS][DIR_DN_MAX];
};

/* Settings the store keeps; the strings are copied. */
struct ldap_store_conf {
    const char *forest_name;
    const char *uris; /* "ldap://a ldap://b", commas allowed */
    const char *bind_dn;
    const char *bind_pass; /* wiped by the caller; the store keeps its own copy */
    size_t bind_pass_len;
    uint8_t tls; /* 0 none, 1 starttls, 2 ldaps */
    const char *ca_file;
    uint32_t op_timeout_ms;       /* an unanswered request marks the server down */
    uint32_t connect_timeout_ms;  /* TCP connect, TLS, and the service bind */
    _Atomic uint64_t *down_count; /* counts servers marked down; may be NULL */
};

typedef void ldap_store_done_fn(void *arg, struct ldap_op *lop);

/* Splits a Uri setting into URIs and checks each with ldap_url_parse.
 * Returns the count, or -1 with a reason in err. */
int ldap_store_parse_uris(const char *uris, char out[][256], unsigned max, char *err,
                          size_t errlen);

/* The first call must come before any other thread uses libldap: it sets
 * libldap's global options up, which libldap does without a lock. */
struct ldap_store *ldap_store_new(const struct ldap_store_conf *conf, const struct dir_forest *df,
                                  int forest_index, ldap_store_done_fn *done, void *arg);
void ldap_store_free(struct ldap_store *ls);

/* Starts lop (lop->op, lop->res, lop->job set by the caller). The answer is
 * in lop->res when done() is called; done() may come before this returns
 * (nothing to ask, or every server down). */
void ldap_store_start(struct ldap_store *ls, struct ldap_op *lop, uint64_t now_ms);

/* Forgets lop: its requests are abandoned and done() is not called. */
void ldap_store_cancel(struct ldap_store *ls, struct ldap_op *lop);

/* The descriptors to poll (POLLIN); returns how many were written. */
unsigned ldap_store_pollfds(struct ldap_store *ls, struct pollfd *pfd, unsigned max);

/* Reads every answer that arrived, fails over stalled servers, and sends
 * what waited for a connection. */
void ldap_store_process(struct ldap_store *ls, uint64_t now_ms);

/* The next moment process() has something to check (a stalled request, a
 * back-off ending), or UINT64_MAX. */
uint64_t ldap_store_next_timer(const struct ldap_store *ls);

/*
 * What an AD bind refusal (invalidCredentials) says in its diagnostic text,
 * "... AcceptSecurityContext error, data 775, v4563": 532 (password expired)
 * and 773 (must change it) mean the password was right but has to be
 * changed; 533 disabled, 701 account expired, 775 locked out; anything else
 * (52e, no diagnostic, another directory) is a wrong password.
 */
enum store_status ldap_bind_status(const char *diag);

/*
 * Discovers a forest's domains from its crossRef objects (CN=Partitions of
 * the configuration naming context, systemFlags bit 2), synchronously, at
 * start-up. add() is called for each. FG_OK, or FG_ERROR with a reason.
 */
typedef void ldap_domain_fn(void *arg, const char *netbios, const char *dns, const char *base);
int ldap_store_discover(const struct ldap_store_conf *conf, const char *base_dn,
                        ldap_domain_fn *add, void *arg, char *err, size_t errlen);

#endif

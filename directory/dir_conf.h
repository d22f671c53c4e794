/*
 * The directory's settings, as the configuration file gives them:
 * [directory], [forest:NAME], [databases] and [database:NAME], and the route
 * types they produce (how a backend is reached, and which hosts). The parser
 * in core/ fills them; the directory reads them. Owned here so that the
 * directory depends on no configuration reader.
 */
#ifndef FG_DIR_CONF_H
#define FG_DIR_CONF_H

#include "../base/net.h"
#include "resolve.h"

#include <limits.h>
#include <stdatomic.h>

#define CFG_MAX_BACKEND_HOSTS 8  /* servers (database copies) of one route */
#define CFG_MAX_BACKEND_ADDRS 16 /* their addresses, all together */
#define CFG_HOST_MAX          255

struct tls_client;

/* How forestgate talks to a backend server. */
enum backend_tls {
    BACKEND_TLS_NONE,
    BACKEND_TLS_STARTTLS, /* STARTTLS (IMAP) or STLS (POP3) after the greeting */
    BACKEND_TLS_IMPLICIT, /* TLS from the first byte (993/995) */
};

/* What forestgate sends first on a backend connection (SendProxyProtocol). */
enum backend_send_proxy {
    BACKEND_PROXY_NO,
    BACKEND_PROXY_V2, /* a PROXY protocol v2 header: the client's address */
};

/*
 * How the servers of a route are reached: [backend]'s Tls settings, or a
 * [database:NAME] section's, which override them for one database. Every
 * route has one: DefaultServer, the [databases] hosts and the hosts the
 * directory names (msExchOwningServer -> dNSHostName).
 */
struct backend_policy {
    uint8_t tls;                   /* Tls: enum backend_tls */
    bool verify;                   /* TlsVerify: check the certificate and the name */
    bool resume;                   /* TlsResume: offer each host its last session again */
    char ca_file[PATH_MAX];        /* TlsCaFile */
    char server_name[256];         /* TlsServerName: the name to verify instead of each host's */
    uint16_t port[FG_PROTO_COUNT]; /* the backend port per protocol, following tls */
    uint8_t send_proxy;            /* SendProxyProtocol: enum backend_send_proxy */
    struct tls_client *tls_cl;     /* verifies the servers; NULL without TLS */
};

/* The servers of one route, tried in order, each with its addresses. */
struct backend_target {
    const struct backend_policy *policy;
    uint8_t nhosts, naddrs;
    uint8_t addr_host[CFG_MAX_BACKEND_ADDRS];            /* hosts[] index of each address */
    union net_addr addrs[CFG_MAX_BACKEND_ADDRS];         /* without a port: the policy's */
    char hosts[CFG_MAX_BACKEND_HOSTS][CFG_HOST_MAX + 1]; /* as named; certificates carry these */
};

/* The name the certificate of a target's address i must carry. */
static inline const char *backend_tls_name(const struct backend_target *t, unsigned i)
{
    return t->policy->server_name[0] ? t->policy->server_name : t->hosts[t->addr_host[i]];
}

#define CFG_MAX_DATABASES 64

struct ldif_store;
struct krb_acceptor;

enum forest_role {
    FOREST_ROLE_UNSET,
    FOREST_ROLE_ORGANIZATION, /* holds the mailboxes; exactly one */
    FOREST_ROLE_ACCOUNT,      /* trusted for logon only */
};

/* [forest:NAME] */
struct forest_conf {
    char name[64];
    uint8_t role;  /* enum forest_role */
    char uri[512]; /* Uri: LDAP URIs, tried in order */
    char bind_dn[DIR_DN_MAX];
    char bind_password_file[PATH_MAX];
    char base_dn[DIR_DN_MAX];
    char domains[1024]; /* Domains: "NETBIOS:dns.name:DC=base; ..." */
    char default_domain[256];
    uint8_t ldap_tls; /* LdapTls: 0 none, 1 starttls, 2 ldaps */
    char ldap_ca_file[PATH_MAX];
    char *bind_pass; /* BindPasswordFile's line, in memory excluded from core dumps */
    size_t bind_pass_len;
    char ldif[PATH_MAX];      /* Ldif: the embedded store */
    struct ldif_store *store; /* loaded from Ldif */
};

/*
 * A mailbox database: [databases] NAME = its copies' hosts, tried in order,
 * and [database:NAME], how to reach them (or the hosts the directory names
 * for it). Either may be given without the other.
 */
struct database_conf {
    char name[64];
    bool mapped;                  /* in [databases] */
    bool custom;                  /* has a [database:NAME] section */
    struct backend_policy policy; /* [backend]'s, with the section's overrides */
    struct backend_target target; /* [databases]'s hosts; naddrs 0 when not mapped */
    char hosts[512];              /* [databases]'s value, as written */
};

/* [directory] and the forests. enabled: at least one forest is configured. */
struct dir_conf {
    bool enabled;
    unsigned threads;         /* DirectoryThreads */
    uint32_t request_timeout; /* seconds */
    /* Atomics: the stats socket's set changes them while the directory's
     * threads read them (core/tune.c). */
    _Atomic uint32_t failed_delay_ms; /* FailedLogonDelayMs: a failed logon answers no sooner */
    _Atomic uint32_t route_ttl;       /* RouteCacheTTL, seconds; 0: no route cache */
    _Atomic uint32_t negative_ttl;    /* NegativeCacheTTL, seconds; 0: no negative entries */
    uint32_t route_max;               /* RouteCacheMaxEntries */
    _Atomic uint32_t cred_ttl;        /* CredentialCacheTTL, seconds; 0: off */
    bool serve_stale;                 /* ServeStaleOnDirectoryFailure */
    bool allow_smtp_login;            /* AllowSmtpAddressLogin */
    bool allow_admin;                 /* AllowAdminLogon */
    char delegate_attr[64];           /* DelegateAttribute */
    uint8_t delegate_check;           /* DelegateCheck: enum delegate_check */
    char login_attr[64];              /* BackendLoginAttribute: the backend login name */
    char search_order[256];           /* SearchOrder: account forests, in order */
    char keytab[PATH_MAX];            /* KerberosKeytab: imap/HOST and pop/HOST keys */
    struct krb_acceptor *krb;         /* its keys, loaded (CONFIG_FILES); NULL without */
    unsigned nforests;
    struct forest_conf forests[DIR_MAX_FORESTS]; /* as configured */
    uint8_t order[DIR_MAX_FORESTS];              /* topology index -> forests[] index */
    struct dir_topology topo;                    /* organisation first, then SearchOrder */
    struct resolve_conf rules;
    unsigned ndatabases;
    struct database_conf databases[CFG_MAX_DATABASES];
};

/*
 * Adds host (a name, an address, or "[v6 address]") to t: its name, for
 * certificates, and its addresses, resolved now (getaddrinfo: it may block).
 * FG_OK, or FG_ERROR with a reason in why.
 */
int dir_target_add(struct backend_target *t, const char *host, char *why, size_t n);

/* The policy routes to database `name` follow (homeMDB's first RDN). */
const struct backend_policy *
dir_database_policy(const struct dir_conf *dc, const struct backend_policy *dflt, const char *name);

struct ldap_store_conf;

/* The LDAP store's settings for a forest (directory/ldap_store.h). */
void dir_ldap_store_conf(const struct dir_conf *dc, const struct forest_conf *fc,
                         struct ldap_store_conf *lc);

#endif

/*
 * The configuration: one INI file, read with inih. Section and setting names
 * follow Exchange's Get-ImapSettings / Get-PopSettings where Exchange has one.
 * Every problem is reported as "file:line: reason"; all problems are listed,
 * not just the first.
 */
#ifndef FG_CONFIG_H
#define FG_CONFIG_H

#include "../directory/resolve.h"
#include "../proto/backend.h"
#include "../proto/session.h"
#include "net.h"

#include <limits.h>
#include <stdio.h>

#define CFG_MAX_BINDINGS      16
#define CFG_MAX_BACKEND_HOSTS 8  /* servers (database copies) of one route */
#define CFG_MAX_BACKEND_ADDRS 16 /* their addresses, all together */
#define CFG_HOST_MAX          255

enum log_level {
    LOG_ERROR,
    LOG_WARN,
    LOG_INFO,
    LOG_DEBUG,
};

#define CFG_MAX_CERTS 16

struct tls_server;
struct tls_client;
struct fg_config;

/* How forestgate talks to a backend server. */
enum backend_tls {
    BACKEND_TLS_NONE,
    BACKEND_TLS_STARTTLS, /* STARTTLS (IMAP) or STLS (POP3) after the greeting */
    BACKEND_TLS_IMPLICIT, /* TLS from the first byte (993/995) */
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
    char ca_file[PATH_MAX];        /* TlsCaFile */
    char server_name[256];         /* TlsServerName: the name to verify instead of each host's */
    uint16_t port[FG_PROTO_COUNT]; /* the backend port per protocol, following tls */
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

struct bindings {
    unsigned n;
    union net_addr a[CFG_MAX_BINDINGS];
};

struct proto_conf {
    bool enabled;                  /* the section is present */
    struct bindings plain;         /* UnencryptedOrTLSBindings: clear text, STARTTLS/STLS */
    struct bindings tls;           /* SSLBindings: implicit TLS */
    char cert_names[512];          /* X509CertificateName: comma-separated host names */
    struct tls_server *tls_server; /* its certificates, loaded; NULL without any */
    char banner[200];
    struct sess_conf sess;    /* what the session reads; sess.banner points at banner */
    uint32_t preauth_timeout; /* seconds */
    uint32_t auth_timeout;
    uint32_t max_connections;
    bool protocol_log;
    uint16_t target_port; /* ProxyTargetPort */
};

struct backend_conf {
    char server[256];
    struct backend_target target; /* DefaultServer */
    struct backend_policy policy; /* [backend]'s: every route without a [database:NAME] */
    enum backend_login_mode mode;
    char master_user[CRED_NAME_MAX + 1];
    char master_password_file[PATH_MAX];
    char *master_pass; /* in memory excluded from core dumps */
    size_t master_pass_len;
    uint32_t connect_timeout; /* seconds */
    uint32_t backoff;         /* FailoverBackoff, seconds: a down host is skipped this long */
    uint32_t backoff_max;     /* FailoverBackoffMax: the back-off doubles up to this */
    bool forward;
    unsigned ttl;
    bool allow_unchecked_master;
};

#define CFG_MAX_DATABASES 64

struct ldif_store;

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

/*
 * Adds host (a name, an address, or "[v6 address]") to t: its name, for
 * certificates, and its addresses, resolved now (getaddrinfo: it may block).
 * FG_OK, or FG_ERROR with a reason in why.
 */
int config_target_add(struct backend_target *t, const char *host, char *why, size_t n);

/* The policy routes to database `name` follow (homeMDB's first RDN). */
const struct backend_policy *config_database_policy(const struct fg_config *cfg, const char *name);

/* [directory] and the forests. enabled: at least one forest is configured. */
struct dir_conf {
    bool enabled;
    unsigned threads;         /* DirectoryThreads */
    uint32_t request_timeout; /* seconds */
    uint32_t failed_delay_ms; /* FailedLogonDelayMs: a failed logon answers no sooner */
    bool allow_smtp_login;    /* AllowSmtpAddressLogin */
    bool allow_admin;         /* AllowAdminLogon */
    char delegate_attr[64];   /* DelegateAttribute */
    char login_attr[64];      /* BackendLoginAttribute: the backend login name */
    char search_order[256];   /* SearchOrder: account forests, in order */
    unsigned nforests;
    struct forest_conf forests[DIR_MAX_FORESTS]; /* as configured */
    uint8_t order[DIR_MAX_FORESTS];              /* topology index -> forests[] index */
    struct dir_topology topo;                    /* organisation first, then SearchOrder */
    struct resolve_conf rules;
    unsigned ndatabases;
    struct database_conf databases[CFG_MAX_DATABASES];
};

struct ldap_store_conf;

/* The LDAP store's settings for a forest (directory/ldap_store.h). */
void cfg_ldap_store_conf(const struct dir_conf *dc, const struct forest_conf *fc,
                         struct ldap_store_conf *lc);

struct fg_config {
    char path[PATH_MAX];
    unsigned workers;     /* 0: one per core */
    uint32_t relay_pipes; /* per worker */
    enum log_level log_level;
    char log_dir[PATH_MAX]; /* LogFileLocation, for protocol logs */
    char stats_socket[108];
    char cert_dir[PATH_MAX]; /* CertificateDirectory: NAME.crt and NAME.key */
    struct proto_conf proto[FG_PROTO_COUNT];
    struct backend_conf backend;
    struct dir_conf dir;
};

/*
 * Reads and checks the file. Problems are written to err, one per line, as
 * "file:line: reason". Returns the number of errors (0: usable).
 */
int config_load(struct fg_config *cfg, const char *path, FILE *err);

/* Wipes the master password and releases what the configuration holds. */
void config_free(struct fg_config *cfg);

/*
 * Loads the certificates X509CertificateName names for protocol p, from
 * CertificateDirectory: for SIGHUP. Returns NULL with a reason in err.
 */
struct tls_server *config_load_certs(const struct fg_config *cfg, int p, char *err, size_t errlen);

/* Prints the effective settings in the file's format, from the parser's own
 * tables: every key of every section in use. A setting that is not set is
 * printed as a comment ("# Key = (not set)"); secrets appear only as the
 * files they are read from. */
void config_dump(const struct fg_config *cfg, FILE *out);

/* The parser's sections and keys, for tests: the name of section kind k
 * ("global", "imap", "pop3", "backend", "directory", "forest:", "database:")
 * and of its i-th key; NULL past the last. */
const char *config_section_kind(unsigned k);
const char *config_key_name(unsigned k, unsigned i);

const char *config_login_type_name(enum login_type t);

#endif

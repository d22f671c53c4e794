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
#define CFG_MAX_BACKEND_ADDRS 8

enum log_level {
    LOG_ERROR,
    LOG_WARN,
    LOG_INFO,
    LOG_DEBUG,
};

#define CFG_MAX_CERTS 16

struct tls_server;
struct tls_client;

/* How forestgate talks to a backend server. */
enum backend_tls {
    BACKEND_TLS_NONE,
    BACKEND_TLS_STARTTLS, /* STARTTLS (IMAP) or STLS (POP3) after the greeting */
    BACKEND_TLS_IMPLICIT, /* TLS from the first byte (993/995) */
};

/* The hosts of one backend server, tried in order, and how to reach them. */
struct backend_target {
    char name[256];
    unsigned naddrs;
    union net_addr addrs[CFG_MAX_BACKEND_ADDRS];
    uint8_t tls;               /* enum backend_tls */
    char tls_name[256];        /* the name its certificate must carry */
    struct tls_client *tls_cl; /* verifies it; NULL without TLS */
};

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
    struct backend_target target;
    enum backend_login_mode mode;
    char master_user[CRED_NAME_MAX + 1];
    char master_password_file[PATH_MAX];
    char *master_pass; /* in memory excluded from core dumps */
    size_t master_pass_len;
    uint32_t connect_timeout; /* seconds */
    bool forward;
    unsigned ttl;
    bool allow_unchecked_master;
    uint8_t tls; /* Tls: enum backend_tls */
    char tls_ca_file[PATH_MAX];
    char tls_name[256]; /* TlsServerName; default: DefaultServer */
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

/* [databases]: a mailbox database's copies, tried in order. */
struct database_conf {
    char name[64];
    struct backend_target target;
};

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

/* Prints the effective settings, one "[section] Key = value" per line. */
void config_dump(const struct fg_config *cfg, FILE *out);

const char *config_login_type_name(enum login_type t);

#endif

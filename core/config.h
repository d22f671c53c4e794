/*
 * The configuration: one INI file, read with inih. Section and setting names
 * follow Exchange's Get-ImapSettings / Get-PopSettings where Exchange has one.
 * Every problem is reported as "file:line: reason"; all problems are listed,
 * not just the first.
 */
#ifndef FG_CONFIG_H
#define FG_CONFIG_H

#include "../base/log.h"
#include "../directory/dir_conf.h"
#include "../directory/throttle.h"
#include "../proto/backend.h"
#include "../proto/session.h"

#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>

#define CFG_MAX_BINDINGS 16

#define CFG_MAX_CERTS 16

struct tls_server;
struct tls_client;
struct fg_config;

struct bindings {
    unsigned n;
    union net_addr a[CFG_MAX_BINDINGS];
};

#define CFG_MAX_CIDRS 32

#define CFG_MAX_SOURCES 16

/* SourceAddresses: local addresses, without ports, to bind backend
 * connections to (core/srcaddr.c). */
struct source_addrs {
    unsigned n;
    union net_addr a[CFG_MAX_SOURCES];
};

/* An address list such as TrustedProxies: addresses and prefixes. */
struct cidrs {
    unsigned n;
    struct net_cidr a[CFG_MAX_CIDRS];
};

struct proto_conf {
    bool enabled;                  /* the section is present */
    struct bindings plain;         /* UnencryptedOrTLSBindings: clear text, STARTTLS/STLS */
    struct bindings tls;           /* SSLBindings: implicit TLS */
    char cert_names[512];          /* X509CertificateName: comma-separated host names */
    struct tls_server *tls_server; /* its certificates, loaded; NULL without any */
    char banner[200];
    struct sess_conf sess; /* what the session reads; sess.banner points at banner */
    /* The timeouts are atomics: the stats socket's set changes them while
     * the workers read them (core/tune.c). */
    _Atomic uint32_t preauth_timeout; /* seconds */
    _Atomic uint32_t auth_timeout;
    uint32_t max_connections;
    uint32_t max_per_ip;   /* MaxConnectionFromSingleIP */
    uint32_t max_per_user; /* MaxConnectionsPerUser */
    bool protocol_log;
    bool gssapi;          /* EnableGSSAPIAndNTLMAuth: GSSAPI (NTLM is not offered) */
    uint16_t target_port; /* ProxyTargetPort */
    /* The PROXY protocol: bindings that expect its header first, who may
     * send one there, and how long the header may take. */
    struct bindings proxy;          /* ProxyProtocolBindings: some of plain and tls */
    struct cidrs trusted;           /* TrustedProxies */
    _Atomic uint32_t proxy_timeout; /* ProxyProtocolTimeout, seconds */
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
    _Atomic uint32_t connect_timeout; /* seconds; set may change it (core/tune.c) */
    struct source_addrs sources;      /* SourceAddresses: empty, the kernel picks */
    uint32_t backoff;     /* FailoverBackoff, seconds: a down host is skipped this long */
    uint32_t backoff_max; /* FailoverBackoffMax: the back-off doubles up to this */
    bool forward;
    unsigned ttl;
    bool allow_unchecked_master;
};

struct fg_config {
    char path[PATH_MAX];
    unsigned workers;       /* 0: one per core */
    uint32_t relay_pipes;   /* per worker */
    uint32_t batch_wait_us; /* BatchWaitMicroseconds (ring_wait) */
    enum log_level log_level;
    char log_dir[PATH_MAX];        /* LogFileLocation, for protocol logs */
    char event_log[PATH_MAX];      /* EventLogFile; empty: stderr */
    struct log_roll_conf log_roll; /* roll-over and retention of the log files */
    char stats_socket[108];
    struct bindings metrics; /* MetricsBinding: GET /metrics over HTTP (none: off) */
    char cert_dir[PATH_MAX]; /* CertificateDirectory: NAME.crt and NAME.key */
    uint32_t ipv6_prefix;    /* IPv6PrefixLength: bits of an IPv6 client address counted */

    char user[64];             /* User: switched to once the ports are bound (core/privdrop.c) */
    char group[64];            /* Group: else User's own group */
    uint32_t run_uid, run_gid; /* User's and Group's ids, when User is set */
    struct proto_conf proto[FG_PROTO_COUNT];
    struct backend_conf backend;
    struct dir_conf dir;
    struct thr_conf throttle;
};

/* What config_load does beyond reading and checking the file itself. */
enum config_flags {
    CONFIG_FILES = 1 << 0,       /* load what it names: certificates, password, LDIF and CA files */
    CONFIG_NETWORK = 1 << 1,     /* look host names up, ask LDAP forests for their domains */
    CONFIG_CHECK = CONFIG_FILES, /* --check-config */
    CONFIG_START = CONFIG_FILES | CONFIG_NETWORK, /* start-up: everything */
};

/*
 * Reads and checks the file, then loads what flags ask for. Problems are
 * written to err, one per line, as "file:line: reason". Returns the number
 * of errors (0: usable). Without CONFIG_NETWORK nothing leaves the machine:
 * a host given as an address is still taken, a name is not looked up.
 */
int config_load(struct fg_config *cfg, const char *path, FILE *err, unsigned flags);

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

/*
 * For the stats socket's set (core/tune.c): parses value as the file would
 * read "name = value" in [section] (global, imap, pop3, backend, directory or
 * throttle), with the same units, ranges and reasons; for settings of one
 * number, time, boolean or name. *out gets the number, the seconds, 0 or 1,
 * or the name's value. FG_OK, or FG_ERROR with the reason in why (the
 * file's reason without "file:line: ").
 */
int config_parse_scalar(const char *section, const char *name, const char *value, uint32_t *out,
                        char *why, size_t whylen);

/* Writes v as show settings prints the value of [section] name. */
void config_scalar_str(const char *section, const char *name, uint32_t v, char *buf, size_t n);

const char *config_login_type_name(enum login_type t);

/* True when a listener on addr of protocol p expects a PROXY header. */
bool config_is_proxy_binding(const struct fg_config *cfg, int p, const union net_addr *addr);

/* True when addr is in list (TrustedProxies). */
bool config_cidrs_match(const struct cidrs *list, const union net_addr *addr);

#endif

/*
 * Configuration loading. inih does the INI syntax; this file knows the
 * settings: a table per section gives each key its type, place and range.
 *
 * inih's handler is not told line numbers, so the file is fed through our own
 * reader, which counts lines, spots section headers and refuses lines longer
 * than inih's buffer instead of letting inih split them silently.
 */
#include "config.h"

#include "../directory/ldap_store.h"
#include "../directory/ldif_store.h"
#include "../tls/tls.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <netdb.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The fixed sections, then one slot per [forest:NAME] section and one per
 * database ([databases] line or [database:NAME] section). */
enum cfg_section {
    SEC_GLOBAL,
    SEC_IMAP,
    SEC_POP3,
    SEC_BACKEND,
    SEC_DIRECTORY,
    SEC_DATABASES,
    SEC_FOREST,
    SEC_DATABASE = SEC_FOREST + DIR_MAX_FORESTS,
    SEC_COUNT = SEC_DATABASE + CFG_MAX_DATABASES,
    SEC_NONE = -1,
};

static const char *const cfg_section_names[SEC_FOREST] = {"global",  "imap",      "pop3",
                                                          "backend", "directory", "databases"};

enum cfg_type {
    CT_UINT,
    CT_BOOL,
    CT_TIME,
    CT_STR,
    CT_BINDINGS,
    CT_ENUM, /* one of the names of cfg_enums[min] */
};

/* The settings that take one of a list of names. */
enum cfg_enum_kind {
    EN_LOGIN_TYPE,
    EN_LOGIN_MODE,
    EN_LOG_LEVEL,
    EN_BACKEND_TLS,
    EN_ROLE,
    EN_LDAP_TLS
};

/* Prints a key's effective value when it is not simply the field's (it is
 * derived: discovered domains, the search order). */
typedef void cfg_dump_fn(const struct fg_config *cfg, const void *base, FILE *out);

struct cfg_key {
    const char *name;
    uint8_t type;
    size_t off;  /* in the section's struct */
    size_t size; /* of the field */
    uint32_t min, max;
    cfg_dump_fn *dump; /* NULL: the field, by its type */
};

#define KEYD(n, t, st, f, lo, hi, d)                                                               \
    {                                                                                              \
        n, t, offsetof(st, f), sizeof(((st *)0)->f), lo, hi, d                                     \
    }
#define KEY(n, t, st, f, lo, hi) KEYD(n, t, st, f, lo, hi, NULL)

static cfg_dump_fn cfg_dump_search_order, cfg_dump_domains, cfg_dump_default_domain;

static const struct cfg_key cfg_global_keys[] = {
        KEY("Workers", CT_UINT, struct fg_config, workers, 0, 256),
        KEY("RelayPipes", CT_UINT, struct fg_config, relay_pipes, 1, 4096),
        KEY("LogLevel", CT_ENUM, struct fg_config, log_level, EN_LOG_LEVEL, 0),
        KEY("LogFileLocation", CT_STR, struct fg_config, log_dir, 1, 0),
        KEY("StatsSocket", CT_STR, struct fg_config, stats_socket, 1, 0),
        KEY("CertificateDirectory", CT_STR, struct fg_config, cert_dir, 1, 0),
        {NULL, 0, 0, 0, 0, 0, NULL},
};

/* Ranges follow Exchange's where it documents one. */
static const struct cfg_key cfg_proto_keys[] = {
        KEY("UnencryptedOrTLSBindings", CT_BINDINGS, struct proto_conf, plain, 0, 0),
        KEY("SSLBindings", CT_BINDINGS, struct proto_conf, tls, 0, 0),
        KEY("X509CertificateName", CT_STR, struct proto_conf, cert_names, 1, 0),
        KEY("LoginType", CT_ENUM, struct proto_conf, sess.login_type, EN_LOGIN_TYPE, 0),
        KEY("Banner", CT_STR, struct proto_conf, banner, 0, 0),
        KEY("PreAuthenticatedConnectionTimeout", CT_TIME, struct proto_conf, preauth_timeout, 10,
            3600),
        KEY("AuthenticatedConnectionTimeout", CT_TIME, struct proto_conf, auth_timeout, 30, 86400),
        KEY("MaxCommandSize", CT_UINT, struct proto_conf, sess.max_command, 40, 65536),
        KEY("MaxConnections", CT_UINT, struct proto_conf, max_connections, 1, INT32_MAX),
        KEY("ProtocolLogEnabled", CT_BOOL, struct proto_conf, protocol_log, 0, 0),
        KEY("ProxyTargetPort", CT_UINT, struct proto_conf, target_port, 1, 65535),
        {NULL, 0, 0, 0, 0, 0, NULL},
};

static const struct cfg_key cfg_backend_keys[] = {
        KEY("DefaultServer", CT_STR, struct backend_conf, server, 1, 0),
        KEY("LoginMode", CT_ENUM, struct backend_conf, mode, EN_LOGIN_MODE, 0),
        KEY("MasterUser", CT_STR, struct backend_conf, master_user, 1, 0),
        KEY("MasterPasswordFile", CT_STR, struct backend_conf, master_password_file, 1, 0),
        KEY("ConnectTimeout", CT_TIME, struct backend_conf, connect_timeout, 1, 300),
        KEY("ForwardClientAddress", CT_BOOL, struct backend_conf, forward, 0, 0),
        KEY("ProxyTtl", CT_UINT, struct backend_conf, ttl, 1, 100),
        KEY("AllowUncheckedMasterLogin", CT_BOOL, struct backend_conf, allow_unchecked_master, 0,
            0),
        KEY("Tls", CT_ENUM, struct backend_conf, policy.tls, EN_BACKEND_TLS, 0),
        KEY("TlsCaFile", CT_STR, struct backend_conf, policy.ca_file, 1, 0),
        KEY("TlsVerify", CT_BOOL, struct backend_conf, policy.verify, 0, 0),
        KEY("TlsServerName", CT_STR, struct backend_conf, policy.server_name, 1, 0),
        KEY("FailoverBackoff", CT_TIME, struct backend_conf, backoff, 1, 3600),
        KEY("FailoverBackoffMax", CT_TIME, struct backend_conf, backoff_max, 1, 86400),
        {NULL, 0, 0, 0, 0, 0, NULL},
};

/* [database:NAME]: [backend]'s Tls settings for one database, and its ports.
 * What is not set here is [backend]'s. */
static const struct cfg_key cfg_database_keys[] = {
        KEY("Tls", CT_ENUM, struct database_conf, policy.tls, EN_BACKEND_TLS, 0),
        KEY("TlsCaFile", CT_STR, struct database_conf, policy.ca_file, 1, 0),
        KEY("TlsVerify", CT_BOOL, struct database_conf, policy.verify, 0, 0),
        KEY("TlsServerName", CT_STR, struct database_conf, policy.server_name, 1, 0),
        KEY("ImapPort", CT_UINT, struct database_conf, policy.port[FG_PROTO_IMAP], 1, 65535),
        KEY("Pop3Port", CT_UINT, struct database_conf, policy.port[FG_PROTO_POP3], 1, 65535),
        {NULL, 0, 0, 0, 0, 0, NULL},
};

static const struct cfg_key cfg_directory_keys[] = {
        KEY("DirectoryThreads", CT_UINT, struct dir_conf, threads, 1, 64),
        KEY("RequestTimeout", CT_TIME, struct dir_conf, request_timeout, 1, 300),
        KEY("FailedLogonDelayMs", CT_UINT, struct dir_conf, failed_delay_ms, 0, 10000),
        KEY("AllowSmtpAddressLogin", CT_BOOL, struct dir_conf, allow_smtp_login, 0, 0),
        KEY("AllowAdminLogon", CT_BOOL, struct dir_conf, allow_admin, 0, 0),
        KEY("DelegateAttribute", CT_STR, struct dir_conf, delegate_attr, 1, 0),
        KEY("BackendLoginAttribute", CT_STR, struct dir_conf, login_attr, 1, 0),
        KEYD("SearchOrder", CT_STR, struct dir_conf, search_order, 1, 0, cfg_dump_search_order),
        {NULL, 0, 0, 0, 0, 0, NULL},
};

static const struct cfg_key cfg_forest_keys[] = {
        KEY("Role", CT_ENUM, struct forest_conf, role, EN_ROLE, 0),
        KEY("Uri", CT_STR, struct forest_conf, uri, 1, 0),
        KEY("BindDn", CT_STR, struct forest_conf, bind_dn, 1, 0),
        KEY("BindPasswordFile", CT_STR, struct forest_conf, bind_password_file, 1, 0),
        KEY("BaseDn", CT_STR, struct forest_conf, base_dn, 1, 0),
        KEYD("Domains", CT_STR, struct forest_conf, domains, 1, 0, cfg_dump_domains),
        KEYD("DefaultDomain", CT_STR, struct forest_conf, default_domain, 1, 0,
             cfg_dump_default_domain),
        KEY("LdapTls", CT_ENUM, struct forest_conf, ldap_tls, EN_LDAP_TLS, 0),
        KEY("LdapCaFile", CT_STR, struct forest_conf, ldap_ca_file, 1, 0),
        KEY("Ldif", CT_STR, struct forest_conf, ldif, 1, 0),
        {NULL, 0, 0, 0, 0, 0, NULL},
};

static const struct cfg_key *cfg_keys_of(int sec)
{
    static const struct cfg_key none[] = {{NULL, 0, 0, 0, 0, 0, NULL}};
    static const struct cfg_key *const fixed[SEC_FOREST] = {cfg_global_keys,    cfg_proto_keys,
                                                            cfg_proto_keys,     cfg_backend_keys,
                                                            cfg_directory_keys, none};
    if (sec >= SEC_DATABASE)
        return cfg_database_keys;
    return sec >= SEC_FOREST ? cfg_forest_keys : fixed[sec];
}

#define CFG_MAX_KEYS 16

/* The kinds of section, for config_section_kind / config_key_name. */
static const struct {
    const char *name;
    const struct cfg_key *keys;
} cfg_kinds[] = {
        {"global", cfg_global_keys},       {"imap", cfg_proto_keys},
        {"pop3", cfg_proto_keys},          {"backend", cfg_backend_keys},
        {"directory", cfg_directory_keys}, {"forest:", cfg_forest_keys},
        {"database:", cfg_database_keys},
};

const char *config_section_kind(unsigned k)
{
    return k < FG_ARRAY_SIZE(cfg_kinds) ? cfg_kinds[k].name : NULL;
}

const char *config_key_name(unsigned k, unsigned i)
{
    if (k >= FG_ARRAY_SIZE(cfg_kinds))
        return NULL;
    for (unsigned j = 0; j <= i; j++)
        if (!cfg_kinds[k].keys[j].name)
            return NULL;
    return cfg_kinds[k].keys[i].name;
}

struct cfg_parse {
    struct fg_config *cfg;
    FILE *fp, *err;
    int errors;
    unsigned line;
    unsigned section_line[SEC_COUNT];
    unsigned key_line[SEC_COUNT][CFG_MAX_KEYS]; /* 0: not set */
    unsigned bad_lines[32];                     /* lines with an error: later checks skip them */
    unsigned nbad;
    unsigned db_line[CFG_MAX_DATABASES];
};

static void cfg_error(struct cfg_parse *cp, unsigned line, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void cfg_error(struct cfg_parse *cp, unsigned line, const char *fmt, ...)
{
    va_list ap;
    if (line)
        fprintf(cp->err, "%s:%u: ", cp->cfg->path, line);
    else
        fprintf(cp->err, "%s: ", cp->cfg->path);
    va_start(ap, fmt);
    vfprintf(cp->err, fmt, ap);
    va_end(ap);
    fputc('\n', cp->err);
    cp->errors++;
    if (line && cp->nbad < FG_ARRAY_SIZE(cp->bad_lines))
        cp->bad_lines[cp->nbad++] = line;
}

/* A key whose value was refused: checks that depend on it would only add noise. */
static bool cfg_line_bad(const struct cfg_parse *cp, unsigned line)
{
    for (unsigned i = 0; i < cp->nbad; i++)
        if (line && cp->bad_lines[i] == line)
            return true;
    return false;
}

static int cfg_section_of(const struct fg_config *cfg, const char *name)
{
    for (int i = 0; i < SEC_FOREST; i++)
        if (strcasecmp(name, cfg_section_names[i]) == 0)
            return i;
    if (strncasecmp(name, "forest:", 7) == 0)
        for (unsigned f = 0; f < cfg->dir.nforests; f++)
            if (strcasecmp(name + 7, cfg->dir.forests[f].name) == 0)
                return SEC_FOREST + (int)f;
    if (strncasecmp(name, "database:", 9) == 0)
        for (unsigned d = 0; d < cfg->dir.ndatabases; d++)
            if (cfg->dir.databases[d].custom &&
                strcasecmp(name + 9, cfg->dir.databases[d].name) == 0)
                return SEC_DATABASE + (int)d;
    return SEC_NONE;
}

static void *cfg_base(struct fg_config *cfg, int sec)
{
    switch (sec) {
    case SEC_IMAP:
        return &cfg->proto[FG_PROTO_IMAP];
    case SEC_POP3:
        return &cfg->proto[FG_PROTO_POP3];
    case SEC_BACKEND:
        return &cfg->backend;
    case SEC_DIRECTORY:
        return &cfg->dir;
    default:
        if (sec >= SEC_DATABASE)
            return &cfg->dir.databases[sec - SEC_DATABASE];
        return sec >= SEC_FOREST ? (void *)&cfg->dir.forests[sec - SEC_FOREST] : (void *)cfg;
    }
}

/* "[d.]hh:mm:ss" to seconds. */
static int cfg_parse_time(const char *v, uint32_t *out)
{
    unsigned long d = 0, h, m, s;
    char tail;
    const char *dot = strchr(v, '.');
    if (dot && sscanf(v, "%lu.%lu:%lu:%lu%c", &d, &h, &m, &s, &tail) != 4)
        return FG_ERROR;
    if (!dot && sscanf(v, "%lu:%lu:%lu%c", &h, &m, &s, &tail) != 3)
        return FG_ERROR;
    if (!isdigit((unsigned char)v[0]) || m > 59 || s > 59 || h > 23 + (dot ? 0 : 9976) || d > 365)
        return FG_ERROR;
    *out = (uint32_t)(((d * 24 + h) * 60 + m) * 60 + s);
    return FG_OK;
}

static int cfg_parse_bool(const char *v, bool *out)
{
    static const char *const t[] = {"true", "$true", "yes", "on", "1"};
    static const char *const f[] = {"false", "$false", "no", "off", "0"};
    for (size_t i = 0; i < FG_ARRAY_SIZE(t); i++) {
        if (strcasecmp(v, t[i]) == 0) {
            *out = true;
            return FG_OK;
        }
        if (strcasecmp(v, f[i]) == 0) {
            *out = false;
            return FG_OK;
        }
    }
    return FG_ERROR;
}

/* Matches v against names[]; returns the index or -1. */
static int cfg_enum(const char *v, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(v, names[i]) == 0)
            return (int)i;
    return -1;
}

static const char *const cfg_login_types[] = {"PlainTextLogin", "PlainTextAuthentication",
                                              "SecureLogin"};
static const char *const cfg_login_modes[] = {"PassThrough", "MasterUser"};
static const char *const cfg_log_levels[] = {"error", "warning", "info", "debug"};
static const char *const cfg_backend_tls[] = {"none", "starttls", "implicit"};
static const char *const cfg_roles[] = {"", "Organization", "Account"};
static const char *const cfg_ldap_tls[] = {"none", "starttls", "ldaps"};

const char *config_login_type_name(enum login_type t)
{
    return cfg_login_types[t];
}

static int cfg_set_bindings(struct cfg_parse *cp, struct bindings *b, const char *v)
{
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s", v);
    b->n = 0;
    for (char *save = NULL, *tok = strtok_r(tmp, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok))
            tok++;
        char *e = tok + strlen(tok);
        while (e > tok && isspace((unsigned char)e[-1]))
            *--e = 0;
        if (*tok == 0)
            continue;
        const char *why;
        if (b->n == CFG_MAX_BINDINGS) {
            cfg_error(cp, cp->line, "more than %d bindings", CFG_MAX_BINDINGS);
            return FG_ERROR;
        }
        if (net_parse_binding(tok, &b->a[b->n], &why) != FG_OK) {
            cfg_error(cp, cp->line, "binding \"%s\": %s", tok, why);
            return FG_ERROR;
        }
        b->n++;
    }
    return FG_OK;
}

static void cfg_set_uint(void *field, size_t size, uint32_t v)
{
    if (size == sizeof(uint16_t))
        *(uint16_t *)field = (uint16_t)v;
    else if (size == sizeof(uint8_t))
        *(uint8_t *)field = (uint8_t)v;
    else
        *(uint32_t *)field = v;
}

struct cfg_enum_def {
    const char *const *names;
    size_t n;
    uint8_t first; /* the value of names[0] */
};

static const struct cfg_enum_def cfg_enums[] = {
        [EN_LOGIN_TYPE] = {cfg_login_types, FG_ARRAY_SIZE(cfg_login_types), 0},
        [EN_LOGIN_MODE] = {cfg_login_modes, FG_ARRAY_SIZE(cfg_login_modes), 0},
        [EN_LOG_LEVEL] = {cfg_log_levels, FG_ARRAY_SIZE(cfg_log_levels), 0},
        [EN_BACKEND_TLS] = {cfg_backend_tls, FG_ARRAY_SIZE(cfg_backend_tls), 0},
        [EN_ROLE] = {cfg_roles + 1, FG_ARRAY_SIZE(cfg_roles) - 1, 1},
        [EN_LDAP_TLS] = {cfg_ldap_tls, FG_ARRAY_SIZE(cfg_ldap_tls), 0},
};

/* A name from the key's list, any case; else "Key: expected A, B or C". */
static int cfg_set_enum(struct cfg_parse *cp, const struct cfg_key *k, void *field, const char *v)
{
    const struct cfg_enum_def *en = &cfg_enums[k->min];
    int e = cfg_enum(v, en->names, en->n);
    if (e >= 0) {
        cfg_set_uint(field, k->size, (uint32_t)e + en->first);
        return FG_OK;
    }
    char list[200];
    size_t o = 0;
    for (size_t i = 0; i < en->n; i++)
        o += (size_t)snprintf(list + o, sizeof list - o, "%s%s",
                              i == 0           ? ""
                              : i + 1 == en->n ? " or "
                                               : ", ",
                              en->names[i]);
    cfg_error(cp, cp->line, "%s: expected %s, got \"%s\"", k->name, list, v);
    return FG_ERROR;
}

/* Stores one value; returns FG_ERROR (after reporting) when it is bad. */
static int cfg_set(struct cfg_parse *cp, int sec, const struct cfg_key *k, const char *v)
{
    void *field = (char *)cfg_base(cp->cfg, sec) + k->off;
    char *end;
    unsigned long u;
    uint32_t t;

    switch (k->type) {
    case CT_UINT:
        errno = 0;
        u = strtoul(v, &end, 10);
        if (!isdigit((unsigned char)*v) || *end || errno || u < k->min || u > k->max) {
            cfg_error(cp, cp->line, "%s: expected a number from %u to %u, got \"%s\"", k->name,
                      k->min, k->max, v);
            return FG_ERROR;
        }
        cfg_set_uint(field, k->size, (uint32_t)u);
        return FG_OK;
    case CT_BOOL:
        if (cfg_parse_bool(v, field) == FG_OK)
            return FG_OK;
        cfg_error(cp, cp->line, "%s: expected true or false, got \"%s\"", k->name, v);
        return FG_ERROR;
    case CT_TIME:
        if (cfg_parse_time(v, &t) != FG_OK || t < k->min || t > k->max) {
            cfg_error(cp, cp->line,
                      "%s: expected a time hh:mm:ss from %u to %u seconds, got \"%s\"", k->name,
                      k->min, k->max, v);
            return FG_ERROR;
        }
        *(uint32_t *)field = t;
        return FG_OK;
    case CT_STR:
        if (strlen(v) >= k->size || (k->min > 0 && *v == 0)) {
            cfg_error(cp, cp->line, "%s: %s", k->name, *v ? "value too long" : "empty value");
            return FG_ERROR;
        }
        memcpy(field, v, strlen(v) + 1);
        return FG_OK;
    case CT_BINDINGS:
        return cfg_set_bindings(cp, field, v);
    case CT_ENUM:
        return cfg_set_enum(cp, k, field, v);
    }
    return FG_ERROR;
}

/* The database called name (any case), found or added; NULL after an error. */
static struct database_conf *cfg_database_slot(struct cfg_parse *cp, const char *name)
{
    struct dir_conf *dc = &cp->cfg->dir;
    for (unsigned i = 0; i < dc->ndatabases; i++)
        if (strcasecmp(dc->databases[i].name, name) == 0)
            return &dc->databases[i];
    if (!*name || strlen(name) >= sizeof dc->databases[0].name) {
        cfg_error(cp, cp->line, "database \"%s\": a name is 1 to %zu characters", name,
                  sizeof dc->databases[0].name - 1);
        return NULL;
    }
    if (dc->ndatabases == CFG_MAX_DATABASES) {
        cfg_error(cp, cp->line, "more than %d databases", CFG_MAX_DATABASES);
        return NULL;
    }
    struct database_conf *db = &dc->databases[dc->ndatabases++];
    snprintf(db->name, sizeof db->name, "%s", name);
    return db;
}

/* [databases] NAME = host, host: the names are the databases' (homeMDB's
 * first RDN); the hosts are resolved by cfg_check_databases. */
static void cfg_database(struct cfg_parse *cp, const char *name, const char *value)
{
    struct database_conf *db = cfg_database_slot(cp, name);
    if (!db)
        return;
    unsigned i = (unsigned)(db - cp->cfg->dir.databases);
    if (db->mapped) {
        cfg_error(cp, cp->line, "database %s is already mapped on line %u", name, cp->db_line[i]);
        return;
    }
    if (!*value || strlen(value) >= sizeof db->hosts) {
        cfg_error(cp, cp->line, "[databases] %s: %s", name,
                  !*value ? "no host given" : "too long a value");
        return;
    }
    db->mapped = true;
    snprintf(db->hosts, sizeof db->hosts, "%s", value);
    cp->db_line[i] = cp->line;
}

/* [database:NAME]: a new section of settings for one database. */
static void cfg_new_database(struct cfg_parse *cp, const char *name)
{
    struct database_conf *db = cfg_database_slot(cp, name);
    if (!db)
        return;
    db->custom = true;
    cp->section_line[SEC_DATABASE + (db - cp->cfg->dir.databases)] = cp->line;
}

static int cfg_handler(void *user, const char *section, const char *name, const char *value)
{
    struct cfg_parse *cp = user;
    int sec = cfg_section_of(cp->cfg, section);

    if (section[0] == 0) {
        cfg_error(cp, cp->line, "setting \"%s\" outside of any section", name);
        return 1;
    }
    if (sec == SEC_NONE)
        return 1; /* reported once, by the reader, at the section header */
    if (sec == SEC_DATABASES) {
        cfg_database(cp, name, value);
        return 1;
    }
    const struct cfg_key *keys = cfg_keys_of(sec);
    for (int i = 0; keys[i].name; i++) {
        if (strcasecmp(keys[i].name, name) != 0)
            continue;
        if (cp->key_line[sec][i]) {
            cfg_error(cp, cp->line, "%s is already set on line %u", keys[i].name,
                      cp->key_line[sec][i]);
            return 1;
        }
        cp->key_line[sec][i] = cp->line;
        cfg_set(cp, sec, &keys[i], value);
        return 1;
    }
    cfg_error(cp, cp->line, "unknown setting \"%s\" in [%s]", name, section);
    return 1;
}

/* [forest:NAME]: a new forest, named by letters, digits, '-' and '_'. */
static void cfg_new_forest(struct cfg_parse *cp, const char *name)
{
    struct dir_conf *dc = &cp->cfg->dir;
    size_t n = strlen(name);
    bool ok = n > 0 && n < sizeof dc->forests[0].name;
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)name[i]) || name[i] == '-' || name[i] == '_';
    if (!ok) {
        cfg_error(cp, cp->line, "[forest:%s]: a forest's name is 1 to 63 letters, digits, - or _",
                  name);
        return;
    }
    if (dc->nforests == DIR_MAX_FORESTS) {
        cfg_error(cp, cp->line, "more than %d forests", DIR_MAX_FORESTS);
        return;
    }
    snprintf(dc->forests[dc->nforests].name, sizeof dc->forests[0].name, "%s", name);
    cp->section_line[SEC_FOREST + dc->nforests++] = cp->line;
}

/* Notes a section header line: its position, or an error if it is unknown. */
static void cfg_header(struct cfg_parse *cp, const char *s)
{
    const char *close = strchr(s, ']');
    if (!close)
        return; /* inih reports the syntax error */
    char name[80];
    snprintf(name, sizeof name, "%.*s", (int)(close - s - 1), s + 1);
    int sec = cfg_section_of(cp->cfg, name);
    if (sec == SEC_NONE && strncasecmp(name, "forest:", 7) == 0) {
        cfg_new_forest(cp, name + 7);
        return;
    }
    if (sec == SEC_NONE && strncasecmp(name, "database:", 9) == 0) {
        cfg_new_database(cp, name + 9);
        return;
    }
    if (sec == SEC_NONE) {
        cfg_error(cp, cp->line, "unknown section [%s]", name);
        return;
    }
    if (cp->section_line[sec]) {
        cfg_error(cp, cp->line, "section [%s] already started on line %u", name,
                  cp->section_line[sec]);
        return;
    }
    cp->section_line[sec] = cp->line;
}

static char *cfg_reader(char *str, int num, void *stream)
{
    struct cfg_parse *cp = stream;
    if (!fgets(str, num, cp->fp))
        return NULL;
    cp->line++;
    size_t n = strlen(str);
    if (n > 0 && str[n - 1] != '\n' && !feof(cp->fp)) {
        cfg_error(cp, cp->line, "line longer than %d bytes", num - 2);
        int c;
        while ((c = fgetc(cp->fp)) != EOF && c != '\n')
            ;
        str[0] = '\n';
        str[1] = 0;
        return str;
    }
    const char *s = str;
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s == '[')
        cfg_header(cp, s);
    return str;
}

static void cfg_defaults(struct fg_config *cfg)
{
    static const char *const banners[FG_PROTO_COUNT] = {"The forestgate IMAP4 service is ready.",
                                                        "The forestgate POP3 service is ready."};
    static const uint32_t max_command[FG_PROTO_COUNT] = {10240, 512};
    static const uint16_t ports[FG_PROTO_COUNT] = {143, 110};

    memset(cfg, 0, sizeof *cfg);
    cfg->log_level = LOG_INFO;
    cfg->relay_pipes = 256;
    snprintf(cfg->log_dir, sizeof cfg->log_dir, "/var/log/forestgate");
    snprintf(cfg->cert_dir, sizeof cfg->cert_dir, "/etc/forestgate/tls");
    for (int i = 0; i < FG_PROTO_COUNT; i++) {
        struct proto_conf *pc = &cfg->proto[i];
        snprintf(pc->banner, sizeof pc->banner, "%s", banners[i]);
        pc->sess.login_type = LOGIN_TYPE_SECURE;
        pc->sess.max_command = max_command[i];
        pc->preauth_timeout = 60;
        pc->auth_timeout = 1800;
        pc->max_connections = INT32_MAX;
        pc->target_port = ports[i];
    }
    cfg->backend.connect_timeout = 5;
    cfg->backend.backoff = 2;
    cfg->backend.backoff_max = 60;
    cfg->backend.policy.verify = true;
    cfg->backend.target.policy = &cfg->backend.policy;
    cfg->dir.threads = 2;
    cfg->dir.request_timeout = 10;
    cfg->dir.failed_delay_ms = 1000;
    snprintf(cfg->dir.delegate_attr, sizeof cfg->dir.delegate_attr, "msExchDelegateListLink");
    snprintf(cfg->dir.login_attr, sizeof cfg->dir.login_attr, "mailNickname");
    cfg->backend.forward = true;
    cfg->backend.ttl = 5;
}

/* Exchange's default bindings, used when a protocol section names none. */
static void cfg_default_bindings(struct bindings *b, uint16_t port)
{
    const char *why;
    char s[32];
    snprintf(s, sizeof s, "0.0.0.0:%u", port);
    net_parse_binding(s, &b->a[0], &why);
    snprintf(s, sizeof s, "[::]:%u", port);
    net_parse_binding(s, &b->a[1], &why);
    b->n = 2;
}

/* The line a key was set on, or 0. */
static unsigned cfg_key_line(const struct cfg_parse *cp, int sec, const char *name)
{
    const struct cfg_key *keys = cfg_keys_of(sec);
    for (int i = 0; keys[i].name; i++)
        if (strcmp(keys[i].name, name) == 0)
            return cp->key_line[sec][i];
    return 0;
}

static void cfg_warn(struct cfg_parse *cp, unsigned line, const char *msg)
{
    if (line)
        fprintf(cp->err, "%s:%u: warning: %s\n", cp->cfg->path, line, msg);
    else
        fprintf(cp->err, "%s: warning: %s\n", cp->cfg->path, msg);
}

static bool cfg_same_addr(const union net_addr *a, const union net_addr *b)
{
    return net_addr_len(a) == net_addr_len(b) && memcmp(a, b, net_addr_len(a)) == 0;
}

/* Every binding must be unique across both protocols and both kinds: each
 * one is compared with those before it (protocol, then plain before TLS). */
static void cfg_check_unique(struct cfg_parse *cp, int p, int kind, unsigned line)
{
    const struct bindings *b = kind ? &cp->cfg->proto[p].tls : &cp->cfg->proto[p].plain;
    for (unsigned i = 0; i < b->n; i++) {
        bool dup = false;
        for (int q = 0; q <= p && !dup; q++) {
            const struct proto_conf *oc = &cp->cfg->proto[q];
            for (int k = 0; k < 2 && !dup && oc->enabled; k++) {
                const struct bindings *o = k ? &oc->tls : &oc->plain;
                bool same_set = q == p && k == kind;
                if (q == p && k > kind)
                    break;
                for (unsigned j = 0; j < (same_set ? i : o->n) && !dup; j++)
                    dup = cfg_same_addr(&o->a[j], &b->a[i]);
            }
        }
        if (dup) {
            char s[64];
            net_addr_str(&b->a[i], s, sizeof s);
            cfg_error(cp, line, "binding %s is used twice", s);
        }
    }
}

/* A name from X509CertificateName becomes a file name: no paths. */
static bool cfg_cert_name_ok(const char *n, size_t len)
{
    if (len == 0 || len > TLS_NAME_MAX || n[0] == '.')
        return false;
    /* A wildcard is "*." and a name: nothing else may carry a star. */
    size_t from = len > 2 && n[0] == '*' && n[1] == '.' ? 2 : 0;
    for (size_t i = from; i < len; i++)
        if (!isalnum((unsigned char)n[i]) && n[i] != '.' && n[i] != '-' && n[i] != '_')
            return false;
    return n[from] != '.';
}

struct tls_server *config_load_certs(const struct fg_config *cfg, int p, char *err, size_t errlen)
{
    char tmp[sizeof cfg->proto[p].cert_names];
    char names[CFG_MAX_CERTS][TLS_NAME_MAX + 1];
    char files[CFG_MAX_CERTS][2][PATH_MAX + 8];
    struct tls_cert certs[CFG_MAX_CERTS];
    size_t n = 0;

    snprintf(tmp, sizeof tmp, "%s", cfg->proto[p].cert_names);
    for (char *save = NULL, *tok = strtok_r(tmp, ", \t", &save); tok;
         tok = strtok_r(NULL, ", \t", &save)) {
        if (n == CFG_MAX_CERTS) {
            snprintf(err, errlen, "X509CertificateName: more than %d names", CFG_MAX_CERTS);
            return NULL;
        }
        if (!cfg_cert_name_ok(tok, strlen(tok))) {
            snprintf(err, errlen,
                     "X509CertificateName: \"%s\" is not a host name (letters, digits, '.', "
                     "'-', a leading \"*.\")",
                     tok);
            return NULL;
        }
        snprintf(names[n], sizeof names[n], "%s", tok);
        snprintf(files[n][0], sizeof files[n][0], "%s/%s.crt", cfg->cert_dir, tok);
        snprintf(files[n][1], sizeof files[n][1], "%s/%s.key", cfg->cert_dir, tok);
        certs[n] = (struct tls_cert){names[n], files[n][0], files[n][1]};
        n++;
    }
    if (n == 0) {
        snprintf(err, errlen, "X509CertificateName: no name given");
        return NULL;
    }
    /* The first name is also the default, for clients that send no SNI. */
    return tls_server_new(certs, n, err, errlen);
}

static void cfg_check_tls(struct cfg_parse *cp, int p)
{
    struct proto_conf *pc = &cp->cfg->proto[p];
    int sec = SEC_IMAP + p;
    unsigned nl = cfg_key_line(cp, sec, "X509CertificateName");
    char err[PATH_MAX + 200];

    if (pc->cert_names[0] && !cfg_line_bad(cp, nl)) {
        pc->tls_server = config_load_certs(cp->cfg, p, err, sizeof err);
        if (!pc->tls_server)
            cfg_error(cp, nl, "%s", err);
    }
    pc->sess.starttls = pc->tls_server != NULL;
    unsigned tl = cfg_key_line(cp, sec, "SSLBindings");
    if (pc->tls.n > 0 && !pc->cert_names[0])
        cfg_error(cp, tl ? tl : cp->section_line[sec],
                  "SSLBindings needs a certificate: set X509CertificateName");
    unsigned lt = cfg_key_line(cp, sec, "LoginType");
    if (pc->sess.login_type == LOGIN_TYPE_SECURE && !pc->cert_names[0] && !cfg_line_bad(cp, lt))
        cfg_warn(cp, lt ? lt : cp->section_line[sec],
                 "LoginType = SecureLogin (the default) without a certificate "
                 "(X509CertificateName): clients cannot log in");
}

static void cfg_check_proto(struct cfg_parse *cp, int p)
{
    struct proto_conf *pc = &cp->cfg->proto[p];
    int sec = SEC_IMAP + p;
    unsigned bl = cfg_key_line(cp, sec, "UnencryptedOrTLSBindings");
    unsigned tl = cfg_key_line(cp, sec, "SSLBindings");

    if (pc->plain.n + pc->tls.n == 0 && !cfg_line_bad(cp, bl) && !cfg_line_bad(cp, tl))
        cfg_error(cp,
                  bl   ? bl
                  : tl ? tl
                       : cp->section_line[sec],
                  "[%s] has no bindings to listen on", cfg_section_names[sec]);
    /* Default bindings have no line of their own: the section's stands in. */
    cfg_check_unique(cp, p, 0, bl ? bl : cp->section_line[sec]);
    cfg_check_unique(cp, p, 1, tl ? tl : cp->section_line[sec]);
    cfg_check_tls(cp, p);
    if (pc->protocol_log && access(cp->cfg->log_dir, W_OK | X_OK) != 0) {
        unsigned ll = cfg_key_line(cp, SEC_GLOBAL, "LogFileLocation");
        cfg_error(cp, ll ? ll : cfg_key_line(cp, sec, "ProtocolLogEnabled"),
                  "LogFileLocation %s is not a writable folder: %s", cp->cfg->log_dir,
                  strerror(errno));
    }
}

/* Keeps the master password in memory that never reaches a core dump. */
static char *cfg_secret_alloc(size_t n)
{
    size_t len = (n + 4095) & ~(size_t)4095;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    madvise(p, len, MADV_DONTDUMP);
    return p;
}

/* A password file: one line of 1 to CRED_PASS_MAX bytes (a trailing newline
 * is the file's), kept in memory excluded from core dumps. */
static void cfg_load_secret(struct cfg_parse *cp, unsigned line, const char *key, const char *path,
                            char **out, size_t *out_len)
{
    char tmp[CRED_PASS_MAX + 3];
    FILE *f = fopen(path, "r");

    if (!f) {
        cfg_error(cp, line, "%s %s: %s", key, path, strerror(errno));
        return;
    }
    size_t n = fread(tmp, 1, sizeof tmp, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    if (n > 0 && tmp[n - 1] == '\n')
        n--;
    if (n > 0 && tmp[n - 1] == '\r')
        n--;
    if (more || n > CRED_PASS_MAX || n == 0 || memchr(tmp, 0, n) || memchr(tmp, '\n', n)) {
        cfg_error(cp, line, "%s %s: expected one line of 1 to %d bytes", key, path, CRED_PASS_MAX);
    } else if ((*out = cfg_secret_alloc(n + 1)) != NULL) {
        memcpy(*out, tmp, n);
        *out_len = n;
    }
    explicit_bzero(tmp, sizeof tmp);
}

static void cfg_secret_free(char **p, size_t *n)
{
    if (!*p)
        return;
    size_t len = (*n + 1 + 4095) & ~(size_t)4095;
    explicit_bzero(*p, *n);
    munmap(*p, len);
    *p = NULL;
    *n = 0;
}

static void cfg_check_master(struct cfg_parse *cp)
{
    struct backend_conf *bc = &cp->cfg->backend;
    unsigned line = cfg_key_line(cp, SEC_BACKEND, "LoginMode");

    if (!bc->master_user[0])
        cfg_error(cp, line, "LoginMode = MasterUser needs MasterUser");
    if (!bc->master_password_file[0])
        cfg_error(cp, line, "LoginMode = MasterUser needs MasterPasswordFile");
    else
        cfg_load_secret(cp, cfg_key_line(cp, SEC_BACKEND, "MasterPasswordFile"),
                        "MasterPasswordFile", bc->master_password_file, &bc->master_pass,
                        &bc->master_pass_len);
    /* The backend trusts a master login for any mailbox, so somebody else has
     * to check the client's password: the directory. */
    if (!bc->allow_unchecked_master && !cp->cfg->dir.enabled)
        cfg_error(cp, line,
                  "LoginMode = MasterUser: no directory is configured to check client "
                  "passwords, so every password would be accepted; set "
                  "AllowUncheckedMasterLogin = true only for tests");
}

/* Adds host (a name or an address, "[::1]" too) and its addresses to t. */
static void cfg_add_host(struct cfg_parse *cp, unsigned line, struct backend_target *t,
                         const char *host, const char *what)
{
    char why[300];
    int rc = dir_target_add(t, host, why, sizeof why);
    if (rc != FG_OK)
        cfg_error(cp, line, "%s %s: %s", what, host, why);
}

static void cfg_resolve_backend(struct cfg_parse *cp)
{
    struct backend_conf *bc = &cp->cfg->backend;
    cfg_add_host(cp, cfg_key_line(cp, SEC_BACKEND, "DefaultServer"), &bc->target, bc->server,
                 "DefaultServer");
}

/* ---- the directory ---- */

static void cfg_add_domain(struct cfg_parse *cp, unsigned line, struct dir_forest *df,
                           const char *nb, const char *dns, const char *base)
{
    if (df->ndomains == DIR_MAX_DOMAINS) {
        cfg_error(cp, line, "more than %d domains in a forest", DIR_MAX_DOMAINS);
        return;
    }
    if (!*nb || strlen(nb) > 15 || !*dns || strlen(dns) >= sizeof df->domains[0].dns || !*base ||
        strlen(base) >= DIR_DN_MAX) {
        cfg_error(cp, line,
                  "domain \"%s:%s:%s\": expected NETBIOS (1 to 15 characters):dns.name:base DN", nb,
                  dns, base);
        return;
    }
    struct dir_domain *d = &df->domains[df->ndomains++];
    snprintf(d->netbios, sizeof d->netbios, "%s", nb);
    snprintf(d->dns, sizeof d->dns, "%s", dns);
    snprintf(d->base, sizeof d->base, "%s", base);
}

static char *cfg_trim(char *t)
{
    while (isspace((unsigned char)*t))
        t++;
    char *e = t + strlen(t);
    while (e > t && isspace((unsigned char)e[-1]))
        *--e = 0;
    return t;
}

/* Domains = NETBIOS:dns.name:DC=base; ... */
static void cfg_parse_domains(struct cfg_parse *cp, unsigned line, const char *v,
                              struct dir_forest *df)
{
    char tmp[sizeof((struct forest_conf *)0)->domains];
    snprintf(tmp, sizeof tmp, "%s", v);
    for (char *save = NULL, *tok = strtok_r(tmp, ";", &save); tok;
         tok = strtok_r(NULL, ";", &save)) {
        char *t = cfg_trim(tok), *c1 = strchr(t, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!*t)
            continue;
        if (!c2) {
            cfg_error(cp, line, "Domains: \"%s\": expected NETBIOS:dns.name:base DN", t);
            continue;
        }
        *c1 = *c2 = 0;
        cfg_add_domain(cp, line, df, cfg_trim(t), cfg_trim(c1 + 1), cfg_trim(c2 + 1));
    }
}

/* No Domains: the crossRef objects of the forest's configuration, as AD
 * publishes them (systemFlags bit 2 marks a domain). */
static void cfg_discover_domains(struct cfg_parse *cp, unsigned line, const struct ldif_store *st,
                                 struct dir_forest *df)
{
    for (size_t i = 0; i < st->n; i++) {
        const struct ldif_entry *e = &st->e[i];
        const struct ldif_attr *oc = ldif_attr(e, "objectClass");
        const struct ldif_attr *nb = ldif_attr(e, "nETBIOSName"), *dns = ldif_attr(e, "dnsRoot"),
                               *nc = ldif_attr(e, "nCName"), *fl = ldif_attr(e, "systemFlags");
        bool cross = false;
        for (unsigned k = 0; oc && k < oc->nvals; k++)
            cross |= strcasecmp(oc->vals[k].p, "crossRef") == 0;
        if (!cross || !nb || !dns || !nc || !fl || !(strtoul(fl->vals[0].p, NULL, 10) & 2))
            continue;
        cfg_add_domain(cp, line, df, nb->vals[0].p, dns->vals[0].p, nc->vals[0].p);
    }
}

/* The LDAP settings of a forest: URIs that parse, who to search as. */
static void cfg_check_ldap_forest(struct cfg_parse *cp, unsigned i)
{
    struct forest_conf *fc = &cp->cfg->dir.forests[i];
    int sec = SEC_FOREST + (int)i;
    unsigned sl = cp->section_line[sec];
    char uris[LDS_MAX_URIS][256], err[300];

    int n = ldap_store_parse_uris(fc->uri, uris, LDS_MAX_URIS, err, sizeof err);
    if (n < 0)
        cfg_error(cp, cfg_key_line(cp, sec, "Uri"), "Uri: %s", err);
    /* A URI's scheme and LdapTls must agree: never clear text by mistake. */
    for (int k = 0; k < n; k++) {
        bool ldaps = strncasecmp(uris[k], "ldaps:", 6) == 0;
        if (fc->ldap_tls == 2 && !ldaps)
            cfg_error(cp, cfg_key_line(cp, sec, "LdapTls"),
                      "LdapTls = ldaps needs ldaps:// URIs, not %s", uris[k]);
        else if (fc->ldap_tls == 1 && ldaps)
            cfg_error(cp, cfg_key_line(cp, sec, "LdapTls"),
                      "LdapTls = starttls needs ldap:// URIs: %s is TLS already", uris[k]);
    }
    /* AD answers no anonymous search: the lookups need an account. */
    if (!fc->bind_dn[0])
        cfg_error(cp, sl, "[forest:%s]: Uri needs BindDn, the account that searches", fc->name);
    if (!fc->bind_password_file[0])
        cfg_error(cp, sl, "[forest:%s]: Uri needs BindPasswordFile", fc->name);
    else
        cfg_load_secret(cp, cfg_key_line(cp, sec, "BindPasswordFile"), "BindPasswordFile",
                        fc->bind_password_file, &fc->bind_pass, &fc->bind_pass_len);
    if (fc->ldap_ca_file[0] && access(fc->ldap_ca_file, R_OK) != 0)
        cfg_error(cp, cfg_key_line(cp, sec, "LdapCaFile"), "LdapCaFile %s: %s", fc->ldap_ca_file,
                  strerror(errno));
}

struct cfg_found_domains {
    struct cfg_parse *cp;
    unsigned line;
    struct dir_forest *df;
};

static void cfg_found_domain(void *arg, const char *nb, const char *dns, const char *base)
{
    struct cfg_found_domains *fd = arg;
    cfg_add_domain(fd->cp, fd->line, fd->df, nb, dns, base);
}

/* No Domains for an LDAP forest: ask its servers, once, at start-up. */
static void cfg_discover_ldap_domains(struct cfg_parse *cp, unsigned i, struct dir_forest *df)
{
    struct forest_conf *fc = &cp->cfg->dir.forests[i];
    unsigned sl = cp->section_line[SEC_FOREST + (int)i];
    struct ldap_store_conf lc;
    struct cfg_found_domains fd = {cp, sl, df};
    char err[400];

    dir_ldap_store_conf(&cp->cfg->dir, fc, &lc);
    if (ldap_store_discover(&lc, fc->base_dn, cfg_found_domain, &fd, err, sizeof err) != FG_OK)
        cfg_error(cp, sl, "[forest:%s]: %s", fc->name, err);
}

static void cfg_check_forest(struct cfg_parse *cp, unsigned i, struct dir_forest *df)
{
    struct forest_conf *fc = &cp->cfg->dir.forests[i];
    int sec = SEC_FOREST + (int)i;
    unsigned sl = cp->section_line[sec];
    char err[PATH_MAX + 300];

    snprintf(df->name, sizeof df->name, "%s", fc->name);
    df->organization = fc->role == FOREST_ROLE_ORGANIZATION;
    if (fc->role == FOREST_ROLE_UNSET && !cfg_line_bad(cp, cfg_key_line(cp, sec, "Role")))
        cfg_error(cp, sl, "[forest:%s] needs Role = Organization or Account", fc->name);
    if (fc->uri[0] && fc->ldif[0])
        cfg_error(cp, cfg_key_line(cp, sec, "Ldif"),
                  "[forest:%s]: Uri and Ldif exclude each other: one store per forest", fc->name);
    else if (!fc->uri[0] && !fc->ldif[0])
        cfg_error(cp, sl, "[forest:%s] needs Uri (LDAP servers) or Ldif (a file)", fc->name);
    else if (fc->uri[0])
        cfg_check_ldap_forest(cp, i);
    if (fc->ldif[0] && !fc->uri[0]) {
        if (!(fc->store = calloc(1, sizeof *fc->store)) ||
            ldif_load(fc->store, fc->ldif, err, sizeof err) != FG_OK) {
            cfg_error(cp, cfg_key_line(cp, sec, "Ldif"), "%s", fc->store ? err : "out of memory");
            free(fc->store);
            fc->store = NULL;
        }
    }
    unsigned dl = cfg_key_line(cp, sec, "Domains");
    if (fc->domains[0])
        cfg_parse_domains(cp, dl, fc->domains, df);
    else if (fc->store)
        cfg_discover_domains(cp, sl, fc->store, df);
    else if (fc->uri[0] && fc->bind_pass && cp->errors == 0)
        cfg_discover_ldap_domains(cp, i, df);
    if (df->ndomains == 0 && (fc->store || fc->domains[0]) && !cfg_line_bad(cp, dl))
        cfg_error(cp, dl ? dl : sl,
                  "[forest:%s] has no domain: set Domains, or give crossRef objects in its "
                  "directory",
                  fc->name);
    if (fc->default_domain[0]) {
        int f, d;
        struct dir_topology one = {.nforests = 1};
        one.forests[0] = *df;
        if (!df->organization ||
            !dir_find_domain(&one, fc->default_domain, strlen(fc->default_domain), &f, &d))
            cfg_error(cp, cfg_key_line(cp, sec, "DefaultDomain"), "DefaultDomain %s: %s",
                      fc->default_domain,
                      df->organization ? "not a domain of this forest"
                                       : "only the organisation forest has one");
        else
            df->default_domain = (unsigned)d;
    }
}

/* Organisation forest first, then SearchOrder, then the other account
 * forests as configured. */
static void cfg_order_forests(struct cfg_parse *cp, const struct dir_forest *df, int org)
{
    struct dir_conf *dc = &cp->cfg->dir;
    bool used[DIR_MAX_FORESTS] = {false};
    unsigned n = 0, line = cfg_key_line(cp, SEC_DIRECTORY, "SearchOrder");
    char tmp[sizeof dc->search_order];

    dc->order[n++] = (uint8_t)org;
    used[org] = true;
    snprintf(tmp, sizeof tmp, "%s", dc->search_order);
    for (char *save = NULL, *tok = strtok_r(tmp, ", ", &save); tok;
         tok = strtok_r(NULL, ", ", &save)) {
        unsigned f = 0;
        while (f < dc->nforests && strcasecmp(dc->forests[f].name, tok) != 0)
            f++;
        if (f == dc->nforests)
            cfg_error(cp, line, "SearchOrder: no [forest:%s]", tok);
        else if (!used[f])
            dc->order[n++] = (uint8_t)f, used[f] = true;
    }
    for (unsigned f = 0; f < dc->nforests; f++)
        if (!used[f])
            dc->order[n++] = (uint8_t)f;
    dc->topo.nforests = n;
    dc->topo.org = 0;
    for (unsigned k = 0; k < n; k++)
        dc->topo.forests[k] = df[dc->order[k]];
}

static void cfg_add_host(struct cfg_parse *cp, unsigned line, struct backend_target *t,
                         const char *host, const char *what);

/* [databases] NAME = host, host: each host's addresses, in order. */
static void cfg_database_hosts(struct cfg_parse *cp, unsigned i)
{
    struct database_conf *db = &cp->cfg->dir.databases[i];
    char hosts[sizeof db->hosts];
    snprintf(hosts, sizeof hosts, "%s", db->hosts);
    for (char *save = NULL, *tok = strtok_r(hosts, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save))
        if (*cfg_trim(tok))
            cfg_add_host(cp, cp->db_line[i], &db->target, cfg_trim(tok), db->name);
}

static void cfg_check_databases(struct cfg_parse *cp)
{
    struct dir_conf *dc = &cp->cfg->dir;
    for (unsigned i = 0; i < dc->ndatabases; i++) {
        struct database_conf *db = &dc->databases[i];
        db->target.policy = &db->policy;
        if (db->mapped)
            cfg_database_hosts(cp, i);
    }
}

static void cfg_check_directory(struct cfg_parse *cp)
{
    struct dir_conf *dc = &cp->cfg->dir;
    struct dir_forest df[DIR_MAX_FORESTS];
    int org = -1, norg = 0;

    dc->enabled = dc->nforests > 0;
    if (!dc->enabled) {
        unsigned l = cp->section_line[SEC_DIRECTORY] ? cp->section_line[SEC_DIRECTORY]
                                                     : cp->section_line[SEC_DATABASES];
        /* Without [databases], a database comes from its [database:NAME]. */
        if (!l && dc->ndatabases)
            l = cp->section_line[SEC_DATABASE];
        if (l)
            cfg_error(cp, l,
                      "[directory], [databases] and [database:NAME] need at least one "
                      "[forest:NAME]");
        return;
    }
    memset(df, 0, sizeof df);
    for (unsigned i = 0; i < dc->nforests; i++) {
        cfg_check_forest(cp, i, &df[i]);
        if (df[i].organization) {
            org = org < 0 ? (int)i : org;
            norg++;
        }
    }
    if (norg != 1)
        cfg_error(cp, cp->section_line[SEC_FOREST],
                  "exactly one forest must have Role = Organization; %d do", norg);
    cfg_order_forests(cp, df, org < 0 ? 0 : org);
    dc->rules.allow_smtp_login = dc->allow_smtp_login;
    dc->rules.allow_admin = dc->allow_admin;
    dc->rules.login_attr = dc->login_attr;
    dc->rules.delegate_attr = dc->delegate_attr;
    dc->rules.allow_delegates = cp->cfg->backend.mode == BACKEND_LOGIN_MASTER;
    cfg_check_databases(cp);
}

/* Exchange's backend ports: 143/110 in clear or with STARTTLS, 993/995 for
 * implicit TLS. */
static uint16_t cfg_default_port(int proto, uint8_t tls)
{
    static const uint16_t ports[2][FG_PROTO_COUNT] = {{143, 110}, {993, 995}};
    return ports[tls == BACKEND_TLS_IMPLICIT][proto];
}

/*
 * A database's policy: [backend]'s, then what its [database:NAME] sets. A
 * port not set is ProxyTargetPort, unless the database speaks implicit TLS
 * and [backend] does not, or the other way round: then it is that kind's
 * default (993/995 for implicit TLS, 143/110 for clear text and STARTTLS).
 */
static void cfg_database_policy(struct cfg_parse *cp, unsigned i)
{
    const struct backend_policy *global = &cp->cfg->backend.policy;
    struct database_conf *db = &cp->cfg->dir.databases[i];
    struct database_conf raw = *db;
    int sec = SEC_DATABASE + (int)i;

    db->policy = *global;
    db->policy.tls_cl = NULL;
    for (int k = 0; cfg_database_keys[k].name; k++)
        if (cp->key_line[sec][k])
            memcpy((char *)db + cfg_database_keys[k].off, (char *)&raw + cfg_database_keys[k].off,
                   cfg_database_keys[k].size);
    static const char *const port_keys[FG_PROTO_COUNT] = {"ImapPort", "Pop3Port"};
    for (int p = 0; p < FG_PROTO_COUNT; p++)
        if (!cfg_key_line(cp, sec, port_keys[p]))
            db->policy.port[p] = (db->policy.tls == BACKEND_TLS_IMPLICIT) ==
                                                 (global->tls == BACKEND_TLS_IMPLICIT)
                                         ? global->port[p]
                                         : cfg_default_port(p, db->policy.tls);
}

/* Tls = starttls | implicit: the certificate is verified unless TlsVerify =
 * false says otherwise, loudly. sec is the policy's section. */
static void cfg_check_policy(struct cfg_parse *cp, int sec, struct backend_policy *pol)
{
    char err[PATH_MAX + 200];
    unsigned line = cfg_key_line(cp, sec, "Tls");
    unsigned ca_line = cfg_key_line(cp, sec, "TlsCaFile");
    unsigned vl = cfg_key_line(cp, sec, "TlsVerify");

    if (pol->tls == BACKEND_TLS_NONE)
        return;
    if (!line)
        line = cfg_key_line(cp, SEC_BACKEND, "Tls");
    if (pol->verify && !pol->ca_file[0]) {
        cfg_error(cp, line ? line : cp->section_line[sec],
                  "Tls = %s needs TlsCaFile, the CA certificates that verify the backend",
                  cfg_backend_tls[pol->tls]);
        return;
    }
    if (!pol->verify)
        cfg_warn(cp, vl ? vl : cfg_key_line(cp, SEC_BACKEND, "TlsVerify"),
                 "TlsVerify = false: backend certificates are not checked, so anyone on the "
                 "path can pose as the backend and read every password");
    pol->tls_cl = tls_client_new(pol->ca_file, pol->verify, err, sizeof err);
    if (!pol->tls_cl)
        cfg_error(cp, ca_line ? ca_line : cfg_key_line(cp, SEC_BACKEND, "TlsCaFile"), "%s", err);
}

/* Appends "host (address)" for each address of t that would carry the
 * master password in clear to another machine. */
static void cfg_clear_hosts(const struct backend_target *t, char *list, size_t n)
{
    if (!t->policy || t->policy->tls != BACKEND_TLS_NONE)
        return;
    for (unsigned a = 0; a < t->naddrs; a++) {
        char ip[INET6_ADDRSTRLEN];
        size_t len = strlen(list);
        if (net_addr_is_loopback(&t->addrs[a]) || len + 4 >= n)
            continue;
        net_addr_ip(&t->addrs[a], ip, sizeof ip);
        snprintf(list + len, n - len, "%s%s (%s)", len ? ", " : "", t->hosts[t->addr_host[a]], ip);
    }
}

/* MasterUser: one loud warning when the master password would cross the
 * network in clear text to a configured host. (A host the directory names
 * is warned about when it is first used.) */
static void cfg_warn_clear_master(struct cfg_parse *cp)
{
    const struct fg_config *cfg = cp->cfg;
    char list[1024] = "", msg[1400];

    if (cfg->backend.mode != BACKEND_LOGIN_MASTER)
        return;
    cfg_clear_hosts(&cfg->backend.target, list, sizeof list);
    for (unsigned i = 0; i < cfg->dir.ndatabases; i++)
        cfg_clear_hosts(&cfg->dir.databases[i].target, list, sizeof list);
    if (!list[0])
        return;
    snprintf(msg, sizeof msg,
             "LoginMode = MasterUser with Tls = none: the master password crosses the network "
             "in clear text to %s; set Tls = starttls or implicit",
             list);
    cfg_warn(cp, cfg_key_line(cp, SEC_BACKEND, "LoginMode"), msg);
}

/* PassThrough logs in with the client's own password, which cannot open a
 * mailbox the client only has full access to. */
static void cfg_warn_delegates(struct cfg_parse *cp)
{
    unsigned line = cfg_key_line(cp, SEC_BACKEND, "LoginMode");
    if (cp->cfg->backend.mode != BACKEND_LOGIN_PASSTHROUGH || !cp->cfg->dir.enabled)
        return;
    cfg_warn(cp, line ? line : cp->section_line[SEC_BACKEND],
             "LoginMode = PassThrough: delegate logons (DOMAIN\\user\\alias or upn\\alias to "
             "a mailbox the account has full access to) are refused; they need LoginMode = "
             "MasterUser");
}

/* A host given as an address, on a route that checks certificates against
 * its host's name: certificates name hosts, and wolfSSL matches a name, not
 * an IP address entry, so this needs TlsServerName (or a CN of the address). */
static void cfg_warn_address_names(struct cfg_parse *cp, unsigned line,
                                   const struct backend_target *t)
{
    const struct backend_policy *pol = t->policy;
    char msg[600];
    if (!pol || pol->tls == BACKEND_TLS_NONE || !pol->verify || pol->server_name[0])
        return;
    for (unsigned h = 0; h < t->nhosts; h++) {
        struct in6_addr a;
        if (inet_pton(AF_INET, t->hosts[h], &a) != 1 && inet_pton(AF_INET6, t->hosts[h], &a) != 1)
            continue;
        snprintf(msg, sizeof msg,
                 "%s is an address: its certificate must carry the name \"%s\"; give the route's "
                 "TlsServerName the name its certificate carries",
                 t->hosts[h], t->hosts[h]);
        cfg_warn(cp, line, msg);
    }
}

/* Every route's TLS: [backend]'s, then each database's. */
static void cfg_check_backend_tls(struct cfg_parse *cp)
{
    struct fg_config *cfg = cp->cfg;
    for (int p = 0; p < FG_PROTO_COUNT; p++)
        cfg->backend.policy.port[p] = cfg->proto[p].target_port;
    cfg_check_policy(cp, SEC_BACKEND, &cfg->backend.policy);
    cfg_warn_address_names(cp, cfg_key_line(cp, SEC_BACKEND, "DefaultServer"),
                           &cfg->backend.target);
    for (unsigned i = 0; i < cfg->dir.ndatabases; i++) {
        cfg_database_policy(cp, i);
        cfg_check_policy(cp, SEC_DATABASE + (int)i, &cfg->dir.databases[i].policy);
        cfg_warn_address_names(cp, cp->db_line[i], &cfg->dir.databases[i].target);
    }
}

static void cfg_check(struct cfg_parse *cp)
{
    struct fg_config *cfg = cp->cfg;

    if (!cfg->proto[FG_PROTO_IMAP].enabled && !cfg->proto[FG_PROTO_POP3].enabled)
        cfg_error(cp, 0, "neither [imap] nor [pop3] is configured: nothing to serve");
    for (int p = 0; p < FG_PROTO_COUNT; p++)
        if (cfg->proto[p].enabled)
            cfg_check_proto(cp, p);
    cfg_check_directory(cp);
    /* Without a directory every login goes to DefaultServer; with one it is
     * the route of mailboxes whose database has no server. */
    if (!cfg->backend.server[0] && !cfg->dir.enabled)
        cfg_error(cp, cp->section_line[SEC_BACKEND],
                  "[backend] DefaultServer is required without a directory ([forest:NAME])");
    else if (cfg->backend.server[0])
        cfg_resolve_backend(cp);
    if (cfg->backend.mode == BACKEND_LOGIN_MASTER)
        cfg_check_master(cp);
    if (cfg->backend.backoff_max < cfg->backend.backoff)
        cfg_error(cp, cfg_key_line(cp, SEC_BACKEND, "FailoverBackoffMax"),
                  "FailoverBackoffMax is shorter than FailoverBackoff");
    cfg_check_backend_tls(cp);
    cfg_warn_clear_master(cp);
    cfg_warn_delegates(cp);
}

int config_load(struct fg_config *cfg, const char *path, FILE *err)
{
    struct cfg_parse cp = {.cfg = cfg, .err = err};

    cfg_defaults(cfg);
    snprintf(cfg->path, sizeof cfg->path, "%s", path);
    cp.fp = fopen(path, "r");
    if (!cp.fp) {
        cfg_error(&cp, 0, "cannot open: %s", strerror(errno));
        return cp.errors;
    }
    int rc = ini_parse_stream(cfg_reader, &cp, cfg_handler, &cp);
    fclose(cp.fp);
    if (rc > 0)
        cfg_error(&cp, (unsigned)rc, "syntax error: expected [section], key = value or a comment");
    for (int i = 0; i < FG_PROTO_COUNT; i++) {
        struct proto_conf *pc = &cfg->proto[i];
        pc->enabled = cp.section_line[SEC_IMAP + i] != 0;
        pc->sess.banner = pc->banner;
        bool plain_set = cfg_key_line(&cp, SEC_IMAP + i, "UnencryptedOrTLSBindings") != 0;
        bool tls_set = cfg_key_line(&cp, SEC_IMAP + i, "SSLBindings") != 0;
        /* Exchange's defaults when neither is set; TLS ones only with a certificate. */
        if (pc->enabled && !plain_set && !tls_set) {
            cfg_default_bindings(&pc->plain, i == FG_PROTO_IMAP ? 143 : 110);
            if (pc->cert_names[0])
                cfg_default_bindings(&pc->tls, i == FG_PROTO_IMAP ? 993 : 995);
        }
        /* Implicit TLS to the backend: its TLS ports, unless told otherwise. */
        if (!cfg_key_line(&cp, SEC_IMAP + i, "ProxyTargetPort"))
            pc->target_port = cfg_default_port(i, cfg->backend.policy.tls);
    }
    cfg_check(&cp);
    return cp.errors;
}

void config_free(struct fg_config *cfg)
{
    for (int p = 0; p < FG_PROTO_COUNT; p++) {
        tls_server_free(cfg->proto[p].tls_server);
        cfg->proto[p].tls_server = NULL;
    }
    tls_client_free(cfg->backend.policy.tls_cl);
    cfg->backend.policy.tls_cl = NULL;
    for (unsigned i = 0; i < cfg->dir.ndatabases; i++) {
        tls_client_free(cfg->dir.databases[i].policy.tls_cl);
        cfg->dir.databases[i].policy.tls_cl = NULL;
    }
    for (unsigned f = 0; f < cfg->dir.nforests; f++) {
        if (cfg->dir.forests[f].store)
            ldif_free(cfg->dir.forests[f].store);
        free(cfg->dir.forests[f].store);
        cfg->dir.forests[f].store = NULL;
    }
    for (unsigned f = 0; f < cfg->dir.nforests; f++)
        cfg_secret_free(&cfg->dir.forests[f].bind_pass, &cfg->dir.forests[f].bind_pass_len);
    cfg_secret_free(&cfg->backend.master_pass, &cfg->backend.master_pass_len);
}

/* ---- show settings: the effective values, from the keys' tables ---- */

static uint32_t cfg_get_uint(const void *field, size_t size)
{
    if (size == sizeof(uint16_t))
        return *(const uint16_t *)field;
    if (size == sizeof(uint8_t))
        return *(const uint8_t *)field;
    return *(const uint32_t *)field;
}

/* "hh:mm:ss", or "d.hh:mm:ss" from a day on: what cfg_parse_time reads. */
static void cfg_dump_time(FILE *out, uint32_t t)
{
    if (t >= 86400)
        fprintf(out, "%u.", t / 86400);
    fprintf(out, "%02u:%02u:%02u", t / 3600 % 24, t / 60 % 60, t % 60);
}

static void cfg_dump_value(FILE *out, const struct cfg_key *k, const void *field)
{
    const struct bindings *b = field;
    switch (k->type) {
    case CT_UINT:
        fprintf(out, "%u", cfg_get_uint(field, k->size));
        break;
    case CT_BOOL:
        fputs(*(const bool *)field ? "true" : "false", out);
        break;
    case CT_TIME:
        cfg_dump_time(out, *(const uint32_t *)field);
        break;
    case CT_STR:
        fputs(field, out);
        break;
    case CT_BINDINGS:
        for (unsigned i = 0; i < b->n; i++) {
            char a[64];
            net_addr_str(&b->a[i], a, sizeof a);
            fprintf(out, "%s%s", i ? ", " : "", a);
        }
        break;
    case CT_ENUM:
        fputs(cfg_enums[k->min].names[cfg_get_uint(field, k->size) - cfg_enums[k->min].first], out);
        break;
    }
}

/* One section: every key of its table, by its type or its own printer. A
 * string that must not be empty and is not set becomes a comment. */
static void cfg_dump_section(const struct fg_config *cfg, FILE *out, const char *name,
                             const struct cfg_key *keys, const void *base)
{
    fprintf(out, "[%s]\n", name);
    for (const struct cfg_key *k = keys; k->name; k++) {
        const void *field = (const char *)base + k->off;
        if (k->dump) {
            k->dump(cfg, base, out);
        } else if (k->type == CT_STR && k->min > 0 && !*(const char *)field) {
            fprintf(out, "# %s = (not set)\n", k->name);
        } else {
            fprintf(out, "%s = ", k->name);
            cfg_dump_value(out, k, field);
            fputc('\n', out);
        }
    }
}

/* The account forests in the order they are searched. */
static void cfg_dump_search_order(const struct fg_config *cfg, const void *base, FILE *out)
{
    const struct dir_conf *dc = base;
    (void)cfg;
    if (dc->topo.nforests < 2) {
        fprintf(out, "# SearchOrder = (no account forest)\n");
        return;
    }
    fprintf(out, "SearchOrder =");
    for (unsigned k = 1; k < dc->topo.nforests; k++)
        fprintf(out, "%s %s", k > 1 ? "," : "", dc->topo.forests[k].name);
    fputc('\n', out);
}

/* A forest as the resolver sees it (configured or discovered). */
static const struct dir_forest *cfg_topo_forest(const struct fg_config *cfg,
                                                const struct forest_conf *fc)
{
    const struct dir_conf *dc = &cfg->dir;
    for (unsigned k = 0; k < dc->topo.nforests; k++)
        if (&dc->forests[dc->order[k]] == fc)
            return &dc->topo.forests[k];
    return NULL;
}

static void cfg_dump_domains(const struct fg_config *cfg, const void *base, FILE *out)
{
    const struct dir_forest *df = cfg_topo_forest(cfg, base);
    if (!df || df->ndomains == 0) {
        fprintf(out, "# Domains = (none)\n");
        return;
    }
    fprintf(out, "Domains =");
    for (unsigned d = 0; d < df->ndomains; d++)
        fprintf(out, "%s %s:%s:%s", d ? ";" : "", df->domains[d].netbios, df->domains[d].dns,
                df->domains[d].base);
    fputc('\n', out);
}

static void cfg_dump_default_domain(const struct fg_config *cfg, const void *base, FILE *out)
{
    const struct dir_forest *df = cfg_topo_forest(cfg, base);
    if (df && df->organization && df->ndomains)
        fprintf(out, "DefaultDomain = %s\n", df->domains[df->default_domain].netbios);
    else
        fprintf(out, "# DefaultDomain = (%s)\n",
                df && df->organization ? "none" : "only the organisation forest has one");
}

static void cfg_dump_directory(const struct fg_config *cfg, FILE *out)
{
    const struct dir_conf *dc = &cfg->dir;
    char name[80];
    cfg_dump_section(cfg, out, "directory", cfg_directory_keys, dc);
    for (unsigned k = 0; k < dc->topo.nforests; k++) {
        const struct forest_conf *fc = &dc->forests[dc->order[k]];
        snprintf(name, sizeof name, "forest:%s", fc->name);
        cfg_dump_section(cfg, out, name, cfg_forest_keys, fc);
    }
    bool mapped = false;
    for (unsigned i = 0; i < dc->ndatabases; i++)
        mapped |= dc->databases[i].mapped;
    if (mapped)
        fprintf(out, "[databases]\n");
    for (unsigned i = 0; i < dc->ndatabases; i++)
        if (dc->databases[i].mapped)
            fprintf(out, "%s = %s\n", dc->databases[i].name, dc->databases[i].hosts);
    for (unsigned i = 0; i < dc->ndatabases; i++) {
        if (!dc->databases[i].custom)
            continue;
        snprintf(name, sizeof name, "database:%s", dc->databases[i].name);
        cfg_dump_section(cfg, out, name, cfg_database_keys, &dc->databases[i]);
    }
}

void config_dump(const struct fg_config *cfg, FILE *out)
{
    cfg_dump_section(cfg, out, "global", cfg_global_keys, cfg);
    for (int p = 0; p < FG_PROTO_COUNT; p++)
        if (cfg->proto[p].enabled)
            cfg_dump_section(cfg, out, cfg_section_names[SEC_IMAP + p], cfg_proto_keys,
                             &cfg->proto[p]);
    cfg_dump_section(cfg, out, "backend", cfg_backend_keys, &cfg->backend);
    if (cfg->dir.enabled)
        cfg_dump_directory(cfg, out);
}

/*
 * The configuration reader. inih does the INI syntax; this file knows the
 * settings: a table per section gives each key its type, place and range.
 * The settings dump is generated from the same tables. The checks here need
 * nothing but the file; config_load.c loads what it names.
 *
 * inih's handler is not told line numbers, so the file is fed through our own
 * reader, which counts lines, spots section headers and refuses lines longer
 * than inih's buffer instead of letting inih split them silently.
 */
#include "config_int.h"

#include "../base/logfile.h"
#include "../directory/thrstore.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <ini.h>
#include <netdb.h>
#include <pwd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static const char *const cfg_section_names[SEC_FOREST] = {
        "global", "imap", "pop3", "backend", "directory", "databases", "throttle"};

static cfg_dump_fn cfg_dump_search_order, cfg_dump_domains, cfg_dump_default_domain;

static const struct cfg_key cfg_global_keys[] = {
        KEY("Workers", CT_UINT, struct fg_config, workers, 0, 256),
        KEY("RelayPipes", CT_UINT, struct fg_config, relay_pipes, 1, 4096),
        KEY("BatchWaitMicroseconds", CT_UINT, struct fg_config, batch_wait_us, 0, 1000),
        KEY("LogLevel", CT_ENUM, struct fg_config, log_level, EN_LOG_LEVEL, 0),
        KEY("LogFileLocation", CT_STR, struct fg_config, log_dir, 1, 0),
        KEY("StatsSocket", CT_STR, struct fg_config, stats_socket, 1, 0),
        KEY("MetricsBinding", CT_BINDINGS, struct fg_config, metrics, 0, 0),
        /* The log files (README, "Log files"). */
        KEY("EventLogFile", CT_STR, struct fg_config, event_log, 0, 0),
        KEY("LogFileRollOverSettings", CT_ENUM, struct fg_config, log_roll.roll, EN_LOG_ROLL, 0),
        KEY("LogPerFileSizeQuota", CT_SIZE, struct fg_config, log_roll.file_quota, 0, 0),
        KEY("LogFileMaxAge", CT_TIME, struct fg_config, log_roll.max_age, 0, 365 * 86400 + 86399),
        KEY("LogDirectorySizeQuota", CT_SIZE, struct fg_config, log_roll.dir_quota, 0, 0),
        KEY("LogQueueSize", CT_SIZE, struct fg_config, log_roll.queue_size, 16384, 1u << 30),
        /* For tests: a roll-over period in seconds instead of an hour or a day. */
        KEY("LogFileRollOverSeconds", CT_UINT, struct fg_config, log_roll.roll_seconds, 0, 86400),
        KEY("CertificateDirectory", CT_STR, struct fg_config, cert_dir, 1, 0),
        /* Not Exchange's: how much of an IPv6 address MaxConnectionFromSingleIP
         * counts as one client (a /64 is one customer's network). */
        KEY("IPv6PrefixLength", CT_UINT, struct fg_config, ipv6_prefix, 32, 128),
        KEY("User", CT_STR, struct fg_config, user, 1, 0),
        KEY("Group", CT_STR, struct fg_config, group, 1, 0),
        {NULL, 0, 0, 0, 0, 0, NULL},
};

/* Ranges follow Exchange's where it documents one. The connection limits are
 * Exchange 2013+'s (Set-ImapSettings, Set-PopSettings: "Valid values are from
 * 1 through 2147483647"; MaxConnections and MaxConnectionFromSingleIP default
 * to 2147483647, no limit; MaxConnectionsPerUser to 16), see
 * https://learn.microsoft.com/powershell/module/exchange/set-imapsettings */
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
        KEY("MaxConnectionFromSingleIP", CT_UINT, struct proto_conf, max_per_ip, 1, INT32_MAX),
        KEY("MaxConnectionsPerUser", CT_UINT, struct proto_conf, max_per_user, 1, INT32_MAX),
        KEY("ProtocolLogEnabled", CT_BOOL, struct proto_conf, protocol_log, 0, 0),
        KEY("EnableGSSAPIAndNTLMAuth", CT_BOOL, struct proto_conf, gssapi, 0, 0),
        KEY("ProxyTargetPort", CT_UINT, struct proto_conf, target_port, 1, 65535),
        KEY("ProxyProtocolBindings", CT_BINDINGS, struct proto_conf, proxy, 0, 0),
        KEY("TrustedProxies", CT_CIDRS, struct proto_conf, trusted, 0, 0),
        KEY("ProxyProtocolTimeout", CT_TIME, struct proto_conf, proxy_timeout, 1, 300),
        {NULL, 0, 0, 0, 0, 0, NULL},
};

static const struct cfg_key cfg_backend_keys[] = {
        KEY("DefaultServer", CT_STR, struct backend_conf, server, 1, 0),
        KEY("LoginMode", CT_ENUM, struct backend_conf, mode, EN_LOGIN_MODE, 0),
        KEY("MasterUser", CT_STR, struct backend_conf, master_user, 1, 0),
        KEY("MasterPasswordFile", CT_STR, struct backend_conf, master_password_file, 1, 0),
        KEY("ConnectTimeout", CT_TIME, struct backend_conf, connect_timeout, 1, 300),
        KEY("SourceAddresses", CT_ADDRS, struct backend_conf, sources, 0, 0),
        KEY("ForwardClientAddress", CT_BOOL, struct backend_conf, forward, 0, 0),
        KEY("ProxyTtl", CT_UINT, struct backend_conf, ttl, 1, 100),
        KEY("AllowUncheckedMasterLogin", CT_BOOL, struct backend_conf, allow_unchecked_master, 0,
            0),
        KEY("Tls", CT_ENUM, struct backend_conf, policy.tls, EN_BACKEND_TLS, 0),
        KEY("TlsCaFile", CT_STR, struct backend_conf, policy.ca_file, 1, 0),
        KEY("TlsVerify", CT_BOOL, struct backend_conf, policy.verify, 0, 0),
        KEY("TlsServerName", CT_STR, struct backend_conf, policy.server_name, 1, 0),
        KEY("TlsResume", CT_BOOL, struct backend_conf, policy.resume, 0, 0),
        KEY("FailoverBackoff", CT_TIME, struct backend_conf, backoff, 1, 3600),
        KEY("FailoverBackoffMax", CT_TIME, struct backend_conf, backoff_max, 1, 86400),
        KEY("SendProxyProtocol", CT_ENUM, struct backend_conf, policy.send_proxy, EN_SEND_PROXY, 0),
        {NULL, 0, 0, 0, 0, 0, NULL},
};

/* [database:NAME]: [backend]'s Tls settings for one database, and its ports.
 * What is not set here is [backend]'s. */
const struct cfg_key cfg_database_keys[] = {
        KEY("Tls", CT_ENUM, struct database_conf, policy.tls, EN_BACKEND_TLS, 0),
        KEY("TlsCaFile", CT_STR, struct database_conf, policy.ca_file, 1, 0),
        KEY("TlsVerify", CT_BOOL, struct database_conf, policy.verify, 0, 0),
        KEY("TlsServerName", CT_STR, struct database_conf, policy.server_name, 1, 0),
        KEY("TlsResume", CT_BOOL, struct database_conf, policy.resume, 0, 0),
        KEY("ImapPort", CT_UINT, struct database_conf, policy.port[FG_PROTO_IMAP], 1, 65535),
        KEY("Pop3Port", CT_UINT, struct database_conf, policy.port[FG_PROTO_POP3], 1, 65535),
        KEY("SendProxyProtocol", CT_ENUM, struct database_conf, policy.send_proxy, EN_SEND_PROXY,
            0),
        {NULL, 0, 0, 0, 0, 0, NULL},
};

static const struct cfg_key cfg_directory_keys[] = {
        KEY("DirectoryThreads", CT_UINT, struct dir_conf, threads, 1, 64),
        KEY("RequestTimeout", CT_TIME, struct dir_conf, request_timeout, 1, 300),
        KEY("FailedLogonDelayMs", CT_UINT, struct dir_conf, failed_delay_ms, 0, 10000),
        KEY("RouteCacheTTL", CT_TIME, struct dir_conf, route_ttl, 0, 86400),
        KEY("NegativeCacheTTL", CT_TIME, struct dir_conf, negative_ttl, 0, 86400),
        KEY("RouteCacheMaxEntries", CT_UINT, struct dir_conf, route_max, 1, 10000000),
        KEY("CredentialCacheTTL", CT_TIME, struct dir_conf, cred_ttl, 0, 86400),
        KEY("ServeStaleOnDirectoryFailure", CT_BOOL, struct dir_conf, serve_stale, 0, 0),
        KEY("AllowSmtpAddressLogin", CT_BOOL, struct dir_conf, allow_smtp_login, 0, 0),
        KEY("AllowAdminLogon", CT_BOOL, struct dir_conf, allow_admin, 0, 0),
        KEY("DelegateAttribute", CT_STR, struct dir_conf, delegate_attr, 1, 0),
        KEY("DelegateCheck", CT_ENUM, struct dir_conf, delegate_check, EN_DELEGATE_CHECK, 0),
        KEY("BackendLoginAttribute", CT_STR, struct dir_conf, login_attr, 1, 0),
        KEY("KerberosKeytab", CT_STR, struct dir_conf, keytab, 1, 0),
        KEYD("SearchOrder", CT_STR, struct dir_conf, search_order, 1, 0, cfg_dump_search_order),
        {NULL, 0, 0, 0, 0, 0, NULL},
};

/* ThrottleStore without its password: show settings is no place for it. */
static void cfg_dump_store(const struct fg_config *cfg, const void *base, FILE *out)
{
    const struct thr_conf *tc = base;
    (void)cfg;
    const char *at = strrchr(tc->store, '@');
    if (!tc->store[0])
        fprintf(out, "# ThrottleStore = (not set: this instance counts alone)\n");
    else if (!at)
        fprintf(out, "ThrottleStore = %s\n", tc->store);
    else
        fprintf(out, "ThrottleStore = redis://(credentials hidden)@%s\n", at + 1);
}

/* The throttle's defaults sit below AD's usual lockoutThreshold (README,
 * "Throttling"). */
static const struct cfg_key cfg_throttle_keys[] = {
        KEY("Enabled", CT_BOOL, struct thr_conf, enabled, 0, 0),
        KEY("ExemptNetworks", CT_STR, struct thr_conf, exempt, 0, 0),
        KEY("AddressFailureDelayMs", CT_UINT, struct thr_conf, addr_delay_ms, 0, 60000),
        KEY("AddressFailureDelayMaxMs", CT_UINT, struct thr_conf, addr_delay_max_ms, 0, 60000),
        KEY("AddressFailureThreshold", CT_UINT, struct thr_conf, addr_threshold, 0, 1000000),
        KEY("AddressFailureWindow", CT_TIME, struct thr_conf, addr_window, 1, 86400),
        KEY("AddressBanTime", CT_TIME, struct thr_conf, addr_ban, 1, 7 * 86400),
        KEY("AccountFailureThreshold", CT_UINT, struct thr_conf, acct_threshold, 0, 1000),
        KEY("FamiliarAccountFailureThreshold", CT_UINT, struct thr_conf, acct_familiar_threshold, 1,
            1000),
        KEY("AccountFailureWindow", CT_TIME, struct thr_conf, acct_window, 1, 7 * 86400),
        KEY("FamiliarLocationDays", CT_UINT, struct thr_conf, familiar_days, 0, 365),
        KEY("BadPasswordHistory", CT_UINT, struct thr_conf, bad_history, 0, THR_BAD_MAX),
        KEY("MaxEntries", CT_UINT, struct thr_conf, max_entries, 64, 100000000),
        KEYD("ThrottleStore", CT_STR, struct thr_conf, store, 1, 0, cfg_dump_store),
        KEY("ThrottleStorePrefix", CT_STR, struct thr_conf, store_prefix, 0, 0),
        KEY("ThrottleStoreTimeoutMs", CT_UINT, struct thr_conf, store_timeout_ms, 10, 10000),
        KEY("ThrottleKeyFile", CT_STR, struct thr_conf, key_file, 1, 0),
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
    static const struct cfg_key *const fixed[SEC_FOREST] = {
            cfg_global_keys,    cfg_proto_keys, cfg_proto_keys,   cfg_backend_keys,
            cfg_directory_keys, none,           cfg_throttle_keys};
    if (sec >= SEC_DATABASE)
        return cfg_database_keys;
    return sec >= SEC_FOREST ? cfg_forest_keys : fixed[sec];
}

/* The kinds of section, for config_section_kind / config_key_name. */
static const struct {
    const char *name;
    const struct cfg_key *keys;
} cfg_kinds[] = {
        {"global", cfg_global_keys},       {"imap", cfg_proto_keys},
        {"pop3", cfg_proto_keys},          {"backend", cfg_backend_keys},
        {"directory", cfg_directory_keys}, {"forest:", cfg_forest_keys},
        {"database:", cfg_database_keys},  {"throttle", cfg_throttle_keys},
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

void cfg_error(struct cfg_parse *cp, unsigned line, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

void cfg_error(struct cfg_parse *cp, unsigned line, const char *fmt, ...)
{
    va_list ap;
    if (!cp->cfg)
        ; /* config_parse_scalar: the reason alone, no file */
    else if (line)
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

bool cfg_line_bad(const struct cfg_parse *cp, unsigned line)
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
    case SEC_THROTTLE:
        return &cfg->throttle;
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
static const char *const cfg_send_proxy[] = {"no", "v2"};
static const char *const cfg_log_roll[] = {"Hourly", "Daily"};
/* In enum delegate_check's order. */
static const char *const cfg_delegate_check[] = {"security-descriptor", "delegate-list", "both"};

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

/* "127.0.0.1, 10.0.0.0/8, ::1": addresses and prefixes, comma-separated. */
static int cfg_set_cidrs(struct cfg_parse *cp, const struct cfg_key *k, struct cidrs *l,
                         const char *v)
{
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s", v);
    l->n = 0;
    for (char *save = NULL, *tok = strtok_r(tmp, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        tok = cfg_trim(tok);
        if (*tok == 0)
            continue;
        const char *why;
        if (l->n == CFG_MAX_CIDRS) {
            cfg_error(cp, cp->line, "%s: more than %d addresses", k->name, CFG_MAX_CIDRS);
            return FG_ERROR;
        }
        if (net_parse_cidr(tok, &l->a[l->n], &why) != FG_OK) {
            cfg_error(cp, cp->line, "%s: \"%s\": %s", k->name, tok, why);
            return FG_ERROR;
        }
        l->n++;
    }
    return FG_OK;
}

/* One local address: IPv4, or IPv6 with or without brackets. */
static const char *cfg_parse_addr(const char *tok, union net_addr *a)
{
    char t[INET6_ADDRSTRLEN + 2];
    size_t n = strlen(tok);
    if (n >= sizeof t)
        return "not an IPv4 or IPv6 address";
    memcpy(t, tok, n + 1);
    memset(a, 0, sizeof *a);
    if (inet_pton(AF_INET, t, &a->v4.sin_addr) == 1) {
        a->sa.sa_family = AF_INET;
        return a->v4.sin_addr.s_addr == INADDR_ANY ? "the unspecified address binds nothing" : NULL;
    }
    if (t[0] == '[' && n > 2 && t[n - 1] == ']') {
        t[n - 1] = 0;
        memmove(t, t + 1, n - 1);
    }
    if (inet_pton(AF_INET6, t, &a->v6.sin6_addr) != 1)
        return "not an IPv4 or IPv6 address";
    a->sa.sa_family = AF_INET6;
    return IN6_IS_ADDR_UNSPECIFIED(&a->v6.sin6_addr) ? "the unspecified address binds nothing"
                                                     : NULL;
}

/* SourceAddresses: "10.0.0.1, 10.0.0.2 2001:db8::1", commas or spaces. */
static int cfg_set_addrs(struct cfg_parse *cp, const struct cfg_key *k, struct source_addrs *l,
                         const char *v)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", v);
    l->n = 0;
    for (char *save = NULL, *tok = strtok_r(tmp, ", \t", &save); tok;
         tok = strtok_r(NULL, ", \t", &save)) {
        if (l->n == CFG_MAX_SOURCES) {
            cfg_error(cp, cp->line, "%s: more than %d addresses", k->name, CFG_MAX_SOURCES);
            return FG_ERROR;
        }
        const char *why = cfg_parse_addr(tok, &l->a[l->n]);
        for (unsigned i = 0; !why && i < l->n; i++)
            if (net_addr_same(&l->a[i], &l->a[l->n]))
                why = "listed twice";
        if (why) {
            cfg_error(cp, cp->line, "%s: \"%s\": %s", k->name, tok, why);
            return FG_ERROR;
        }
        l->n++;
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
        [EN_SEND_PROXY] = {cfg_send_proxy, FG_ARRAY_SIZE(cfg_send_proxy), 0},
        [EN_LOG_ROLL] = {cfg_log_roll, FG_ARRAY_SIZE(cfg_log_roll), 0},
        [EN_DELEGATE_CHECK] = {cfg_delegate_check, FG_ARRAY_SIZE(cfg_delegate_check), 0},
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

/* Bytes, with Exchange's units (base/logfile.c), within the key's range. */
static int cfg_set_size(struct cfg_parse *cp, const struct cfg_key *k, void *field, const char *v)
{
    uint64_t b;
    if (logf_parse_size(v, &b) == FG_OK && b >= k->min && (!k->max || b <= k->max)) {
        *(uint64_t *)field = b;
        return FG_OK;
    }
    if (k->max)
        cfg_error(cp, cp->line,
                  "%s: expected a size from %u to %u bytes (B, KB, MB or GB may follow), "
                  "got \"%s\"",
                  k->name, k->min, k->max, v);
    else
        cfg_error(cp, cp->line,
                  "%s: expected a size in bytes (B, KB, MB or GB may follow) or Unlimited, "
                  "got \"%s\"",
                  k->name, v);
    return FG_ERROR;
}

/* Stores one value in field; returns FG_ERROR (after reporting) when it is bad. */
static int cfg_set_field(struct cfg_parse *cp, const struct cfg_key *k, void *field, const char *v)
{
    char *end;
    unsigned long u;
    uint32_t t;

    /* After a space, ';' starts a comment: "Key =;x" would be read as ";x"
     * but shown by show settings as "Key = ;x", which reads as empty. */
    if (*v == ';') {
        cfg_error(cp, cp->line, "%s: a value cannot begin with ';', which starts a comment",
                  k->name);
        return FG_ERROR;
    }
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
    case CT_CIDRS:
        return cfg_set_cidrs(cp, k, field, v);
    case CT_ADDRS:
        return cfg_set_addrs(cp, k, field, v);
    case CT_SIZE:
        return cfg_set_size(cp, k, field, v);
    }
    return FG_ERROR;
}

static int cfg_set(struct cfg_parse *cp, int sec, const struct cfg_key *k, const char *v)
{
    return cfg_set_field(cp, k, (char *)cfg_base(cp->cfg, sec) + k->off, v);
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
    cfg->batch_wait_us = 200;
    cfg->ipv6_prefix = 64;
    snprintf(cfg->log_dir, sizeof cfg->log_dir, "/var/log/forestgate");
    cfg->log_roll.roll = LOG_ROLL_DAILY;
    cfg->log_roll.max_age = 30 * 86400;
    cfg->log_roll.queue_size = 4u << 20;
    snprintf(cfg->cert_dir, sizeof cfg->cert_dir, "/etc/forestgate/tls");
    for (int i = 0; i < FG_PROTO_COUNT; i++) {
        struct proto_conf *pc = &cfg->proto[i];
        snprintf(pc->banner, sizeof pc->banner, "%s", banners[i]);
        pc->sess.login_type = LOGIN_TYPE_SECURE;
        pc->sess.max_command = max_command[i];
        pc->preauth_timeout = 60;
        pc->auth_timeout = 1800;
        pc->max_connections = INT32_MAX;
        pc->max_per_ip = INT32_MAX;
        pc->max_per_user = 16;
        pc->target_port = ports[i];
        pc->proxy_timeout = 5;
    }
    cfg->backend.connect_timeout = 5;
    cfg->backend.backoff = 2;
    cfg->backend.backoff_max = 60;
    cfg->backend.policy.verify = true;
    cfg->backend.policy.resume = true;
    cfg->backend.target.policy = &cfg->backend.policy;
    cfg->dir.threads = 2;
    cfg->dir.request_timeout = 10;
    cfg->dir.failed_delay_ms = 1000;
    cfg->dir.route_ttl = 300;
    cfg->dir.negative_ttl = 60;
    cfg->dir.route_max = 100000;
    snprintf(cfg->dir.delegate_attr, sizeof cfg->dir.delegate_attr, "msExchDelegateListLink");
    snprintf(cfg->dir.login_attr, sizeof cfg->dir.login_attr, "mailNickname");
    cfg->backend.forward = true;
    cfg->backend.ttl = 5;
    thr_conf_defaults(&cfg->throttle);
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

unsigned cfg_key_line(const struct cfg_parse *cp, int sec, const char *name)
{
    const struct cfg_key *keys = cfg_keys_of(sec);
    for (int i = 0; keys[i].name; i++)
        if (strcmp(keys[i].name, name) == 0)
            return cp->key_line[sec][i];
    return 0;
}

void cfg_warn(struct cfg_parse *cp, unsigned line, const char *msg)
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

/* The certificates themselves are loaded by config_load.c. */
static void cfg_check_tls(struct cfg_parse *cp, int p)
{
    struct proto_conf *pc = &cp->cfg->proto[p];
    int sec = SEC_IMAP + p;
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

static bool cfg_in_bindings(const struct bindings *b, const union net_addr *a)
{
    for (unsigned i = 0; i < b->n; i++)
        if (net_addr_same(&b->a[i], a))
            return true;
    return false;
}

bool config_is_proxy_binding(const struct fg_config *cfg, int p, const union net_addr *addr)
{
    return cfg_in_bindings(&cfg->proto[p].proxy, addr);
}

bool config_cidrs_match(const struct cidrs *list, const union net_addr *addr)
{
    for (unsigned i = 0; i < list->n; i++)
        if (net_cidr_match(&list->a[i], addr))
            return true;
    return false;
}

/* ProxyProtocolBindings names some of the section's own bindings, and
 * needs TrustedProxies: a header from anyone would let anyone choose the
 * address every log line, limit and backend sees. */
static void cfg_check_proxy(struct cfg_parse *cp, int p)
{
    const struct proto_conf *pc = &cp->cfg->proto[p];
    int sec = SEC_IMAP + p;
    unsigned pl = cfg_key_line(cp, sec, "ProxyProtocolBindings");
    unsigned tl = cfg_key_line(cp, sec, "TrustedProxies");

    for (unsigned i = 0; i < pc->proxy.n; i++) {
        if (cfg_in_bindings(&pc->plain, &pc->proxy.a[i]) ||
            cfg_in_bindings(&pc->tls, &pc->proxy.a[i]))
            continue;
        char a[64];
        net_addr_str(&pc->proxy.a[i], a, sizeof a);
        cfg_error(cp, pl,
                  "ProxyProtocolBindings: %s is not one of [%s]'s UnencryptedOrTLSBindings or "
                  "SSLBindings",
                  a, cfg_section_names[sec]);
    }
    if (pc->proxy.n > 0 && pc->trusted.n == 0 && !cfg_line_bad(cp, tl))
        cfg_error(cp, pl,
                  "ProxyProtocolBindings needs TrustedProxies, the load balancers' addresses "
                  "that may send a PROXY header");
    if (pc->trusted.n > 0 && pc->proxy.n == 0 && !cfg_line_bad(cp, pl))
        cfg_warn(cp, tl,
                 "TrustedProxies without ProxyProtocolBindings: no binding expects a PROXY "
                 "header, so the list is not used");
}

/* GSSAPI proves who the client is, never a password: the backend must
 * take a master login, and the directory must map the principal. */
static void cfg_check_gssapi(struct cfg_parse *cp, int p)
{
    const struct fg_config *cfg = cp->cfg;
    unsigned line = cfg_key_line(cp, SEC_IMAP + p, "EnableGSSAPIAndNTLMAuth");
    if (!cfg->proto[p].gssapi || cfg_line_bad(cp, line))
        return;
    if (!cfg->dir.enabled)
        cfg_error(cp, line,
                  "EnableGSSAPIAndNTLMAuth needs a directory ([forest:NAME]) to find the "
                  "principal's account");
    else if (!cfg->dir.keytab[0])
        cfg_error(cp, line, "EnableGSSAPIAndNTLMAuth needs [directory] KerberosKeytab");
    if (cfg->backend.mode != BACKEND_LOGIN_MASTER)
        cfg_error(cp, line,
                  "EnableGSSAPIAndNTLMAuth needs [backend] LoginMode = MasterUser: a Kerberos "
                  "logon gives no password to pass through");
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
    cfg_check_proxy(cp, p);
    if (pc->protocol_log && access(cp->cfg->log_dir, W_OK | X_OK) != 0) {
        unsigned ll = cfg_key_line(cp, SEC_GLOBAL, "LogFileLocation");
        cfg_error(cp, ll ? ll : cfg_key_line(cp, sec, "ProtocolLogEnabled"),
                  "LogFileLocation %s is not a writable folder: %s", cp->cfg->log_dir,
                  strerror(errno));
    }
}

static void cfg_check_master(struct cfg_parse *cp)
{
    struct backend_conf *bc = &cp->cfg->backend;
    unsigned line = cfg_key_line(cp, SEC_BACKEND, "LoginMode");

    if (!bc->master_user[0])
        cfg_error(cp, line, "LoginMode = MasterUser needs MasterUser");
    if (!bc->master_password_file[0])
        cfg_error(cp, line, "LoginMode = MasterUser needs MasterPasswordFile");
    /* The backend trusts a master login for any mailbox, so somebody else has
     * to check the client's password: the directory. */
    if (!bc->allow_unchecked_master && !cp->cfg->dir.enabled)
        cfg_error(cp, line,
                  "LoginMode = MasterUser: no directory is configured to check client "
                  "passwords, so every password would be accepted; set "
                  "AllowUncheckedMasterLogin = true only for tests");
}

/* ---- the directory ---- */

/* Exchange's backend ports: 143/110 in clear or with STARTTLS, 993/995 for
 * implicit TLS. */
uint16_t cfg_default_port(int proto, uint8_t tls)
{
    static const uint16_t ports[2][FG_PROTO_COUNT] = {{143, 110}, {993, 995}};
    return ports[tls == BACKEND_TLS_IMPLICIT][proto];
}

/* Tls = starttls | implicit: the certificate is verified unless TlsVerify =
 * false says otherwise, loudly. sec is the policy's section. */
static void cfg_check_policy(struct cfg_parse *cp, int sec, struct backend_policy *pol)
{
    unsigned line = cfg_key_line(cp, sec, "Tls");
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

/* Every route's TLS: [backend]'s, then each database's. */
static void cfg_check_backend_tls(struct cfg_parse *cp)
{
    struct fg_config *cfg = cp->cfg;
    for (int p = 0; p < FG_PROTO_COUNT; p++)
        cfg->backend.policy.port[p] = cfg->proto[p].target_port;
    cfg_check_policy(cp, SEC_BACKEND, &cfg->backend.policy);
    for (unsigned i = 0; i < cfg->dir.ndatabases; i++) {
        cfg_database_policy(cp, i);
        cfg_check_policy(cp, SEC_DATABASE + (int)i, &cfg->dir.databases[i].policy);
    }
}

/* ThrottleStore: a URL Redis can be reached at, and the keys every instance
 * shares; a prefix that cannot run into Redis's glob characters. */
static void cfg_check_store(struct cfg_parse *cp, const struct thr_conf *tc)
{
    char why[200];
    unsigned line = cfg_key_line(cp, SEC_THROTTLE, "ThrottleStore");
    if (tc->store[0] && ts_url_check(tc->store, why, sizeof why) != FG_OK)
        cfg_error(cp, line, "ThrottleStore: %s", why);
    if (tc->store[0] && !tc->key_file[0])
        cfg_error(cp, line,
                  "ThrottleStore needs ThrottleKeyFile: the instances of a fleet must hash "
                  "addresses and accounts with the same key");
    for (const char *p = tc->store_prefix; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr(":._-", *p)) {
            cfg_error(cp, cfg_key_line(cp, SEC_THROTTLE, "ThrottleStorePrefix"),
                      "ThrottleStorePrefix: letters, digits and ':', '.', '_', '-' only");
            break;
        }
}

/* [throttle]: the networks, and thresholds that make sense together. */
static void cfg_check_throttle(struct cfg_parse *cp)
{
    struct thr_conf *tc = &cp->cfg->throttle;
    char why[160];
    int n = net_cidr_parse_list(tc->exempt, tc->exempt_nets, THR_MAX_NETS, why, sizeof why);
    if (n < 0)
        cfg_error(cp, cfg_key_line(cp, SEC_THROTTLE, "ExemptNetworks"), "ExemptNetworks: %s", why);
    tc->nexempt = n < 0 ? 0 : (unsigned)n;
    if (tc->acct_threshold > tc->acct_familiar_threshold)
        cfg_error(cp, cfg_key_line(cp, SEC_THROTTLE, "FamiliarAccountFailureThreshold"),
                  "FamiliarAccountFailureThreshold (%u) is below AccountFailureThreshold (%u): "
                  "familiar addresses would be stopped first",
                  tc->acct_familiar_threshold, tc->acct_threshold);
    if (tc->addr_delay_max_ms < tc->addr_delay_ms)
        cfg_error(cp, cfg_key_line(cp, SEC_THROTTLE, "AddressFailureDelayMaxMs"),
                  "AddressFailureDelayMaxMs is shorter than AddressFailureDelayMs");
    cfg_check_store(cp, tc);
}

/* EventLogFile: a file forestgate can write, in a folder where it can
 * create the next one when the log rolls over. */
static void cfg_check_event_log(struct cfg_parse *cp)
{
    const char *path = cp->cfg->event_log;
    unsigned line = cfg_key_line(cp, SEC_GLOBAL, "EventLogFile");
    struct logf_name nm;
    if (!path[0] || cfg_line_bad(cp, line))
        return;
    if (logf_split(path, &nm) != FG_OK || path[strlen(path) - 1] == '/')
        cfg_error(cp, line, "EventLogFile %s: not a file name", path);
    else if (access(nm.dir, W_OK | X_OK) != 0)
        cfg_error(cp, line, "EventLogFile %s: %s is not a writable folder: %s", path, nm.dir,
                  strerror(errno));
    else if (access(path, F_OK) == 0 && access(path, W_OK) != 0)
        cfg_error(cp, line, "EventLogFile %s: %s", path, strerror(errno));
}

/* User and Group name accounts of this machine (core/privdrop.c switches to
 * them); root is no account to drop to. */
/* getpwnam_r(3): a name that is not there may come back as 0, ENOENT,
 * ESRCH, EBADF or EPERM, depending on the NSS modules (winbind, sss, ...). */
static bool cfg_not_found(int rc)
{
    return rc == 0 || rc == ENOENT || rc == ESRCH || rc == EBADF || rc == EPERM;
}

static void cfg_check_user(struct cfg_parse *cp)
{
    struct fg_config *cfg = cp->cfg;
    unsigned ul = cfg_key_line(cp, SEC_GLOBAL, "User");
    unsigned gl = cfg_key_line(cp, SEC_GLOBAL, "Group");
    char buf[4096];

    if (!cfg->user[0]) {
        if (cfg->group[0])
            cfg_error(cp, gl, "Group needs User");
        return;
    }
    struct passwd pw, *pwp = NULL;
    int rc = getpwnam_r(cfg->user, &pw, buf, sizeof buf, &pwp);
    if (!pwp) {
        cfg_error(cp, ul, "User %s: %s", cfg->user,
                  cfg_not_found(rc) ? "no such user" : strerror(rc));
        return;
    }
    if (pw.pw_uid == 0)
        cfg_error(cp, ul, "User %s is root: name an unprivileged account", cfg->user);
    cfg->run_uid = pw.pw_uid;
    cfg->run_gid = pw.pw_gid;
    if (!cfg->group[0])
        return;
    struct group gr, *grp = NULL;
    rc = getgrnam_r(cfg->group, &gr, buf, sizeof buf, &grp);
    if (!grp)
        cfg_error(cp, gl, "Group %s: %s", cfg->group,
                  cfg_not_found(rc) ? "no such group" : strerror(rc));
    else
        cfg->run_gid = gr.gr_gid;
}

static void cfg_check(struct cfg_parse *cp)
{
    struct fg_config *cfg = cp->cfg;

    if (!cfg->proto[FG_PROTO_IMAP].enabled && !cfg->proto[FG_PROTO_POP3].enabled)
        cfg_error(cp, 0, "neither [imap] nor [pop3] is configured: nothing to serve");
    for (int p = 0; p < FG_PROTO_COUNT; p++)
        if (cfg->proto[p].enabled)
            cfg_check_proto(cp, p);
    cfg_check_event_log(cp);
    cfg_check_directory(cp);
    for (int p = 0; p < FG_PROTO_COUNT; p++)
        if (cfg->proto[p].enabled)
            cfg_check_gssapi(cp, p); /* after the directory's: it asks for forests */
    /* Without a directory every login goes to DefaultServer; with one it is
     * the route of mailboxes whose database has no server. */
    if (!cfg->backend.server[0] && !cfg->dir.enabled)
        cfg_error(cp, cp->section_line[SEC_BACKEND],
                  "[backend] DefaultServer is required without a directory ([forest:NAME])");
    if (cfg->backend.mode == BACKEND_LOGIN_MASTER)
        cfg_check_master(cp);
    if (cfg->backend.backoff_max < cfg->backend.backoff)
        cfg_error(cp, cfg_key_line(cp, SEC_BACKEND, "FailoverBackoffMax"),
                  "FailoverBackoffMax is shorter than FailoverBackoff");
    cfg_check_backend_tls(cp);
    cfg_warn_delegates(cp);
    cfg_check_throttle(cp);
    cfg_check_user(cp);
}

/* Reads, checks and loads; returns the number of errors. */
static int cfg_read(struct cfg_parse *cp, const char *path)
{
    struct fg_config *cfg = cp->cfg;

    cfg_defaults(cfg);
    snprintf(cfg->path, sizeof cfg->path, "%s", path);
    cp->fp = fopen(path, "r");
    if (!cp->fp) {
        cfg_error(cp, 0, "cannot open: %s", strerror(errno));
        return cp->errors;
    }
    int rc = ini_parse_stream(cfg_reader, cp, cfg_handler, cp);
    fclose(cp->fp);
    if (rc > 0)
        cfg_error(cp, (unsigned)rc, "syntax error: expected [section], key = value or a comment");
    for (int i = 0; i < FG_PROTO_COUNT; i++) {
        struct proto_conf *pc = &cfg->proto[i];
        pc->enabled = cp->section_line[SEC_IMAP + i] != 0;
        pc->sess.banner = pc->banner;
        bool plain_set = cfg_key_line(cp, SEC_IMAP + i, "UnencryptedOrTLSBindings") != 0;
        bool tls_set = cfg_key_line(cp, SEC_IMAP + i, "SSLBindings") != 0;
        /* Exchange's defaults when neither is set; TLS ones only with a certificate. */
        if (pc->enabled && !plain_set && !tls_set) {
            cfg_default_bindings(&pc->plain, i == FG_PROTO_IMAP ? 143 : 110);
            if (pc->cert_names[0])
                cfg_default_bindings(&pc->tls, i == FG_PROTO_IMAP ? 993 : 995);
        }
        /* Implicit TLS to the backend: its TLS ports, unless told otherwise. */
        if (!cfg_key_line(cp, SEC_IMAP + i, "ProxyTargetPort"))
            pc->target_port = cfg_default_port(i, cfg->backend.policy.tls);
    }
    cfg_check(cp);
    if (cp->flags & CONFIG_FILES)
        cfg_load(cp);
    cfg_finish_directory(cp);
    return cp->errors;
}

int config_load(struct fg_config *cfg, const char *path, FILE *err, unsigned flags)
{
    struct cfg_parse *cp = calloc(1, sizeof *cp); /* the forests' domains: 50 KB */
    if (!cp) {
        fprintf(err, "%s: out of memory\n", path);
        return 1;
    }
    cp->cfg = cfg;
    cp->err = err;
    cp->flags = flags;
    int errors = cfg_read(cp, path);
    free(cp);
    return errors;
}

/* Reads, checks and loads; returns the number of errors. */

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

static void cfg_dump_cidrs(FILE *out, const struct cidrs *l)
{
    for (unsigned i = 0; i < l->n; i++) {
        char a[64];
        net_cidr_str(&l->a[i], a, sizeof a);
        fprintf(out, "%s%s", i ? ", " : "", a);
    }
}

static void cfg_dump_addrs(FILE *out, const struct source_addrs *l)
{
    for (unsigned i = 0; i < l->n; i++) {
        char a[INET6_ADDRSTRLEN];
        net_addr_ip(&l->a[i], a, sizeof a);
        fprintf(out, "%s%s", i ? ", " : "", a);
    }
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
    case CT_CIDRS:
        cfg_dump_cidrs(out, field);
        break;
    case CT_ADDRS:
        cfg_dump_addrs(out, field);
        break;
    case CT_SIZE:
        fprintf(out, "%llu", (unsigned long long)*(const uint64_t *)field);
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
        } else if (k->type == CT_ADDRS && !((const struct source_addrs *)field)->n) {
            fprintf(out, "# %s = (not set: the kernel picks)\n", k->name);
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
    cfg_dump_section(cfg, out, "throttle", cfg_throttle_keys, &cfg->throttle);
}

/* ---- one value at a time, for the stats socket's set (core/tune.c) ---- */

/* A key of a fixed section that holds one number, time, boolean or name. */
static const struct cfg_key *cfg_scalar_key(const char *section, const char *name)
{
    for (int sec = 0; sec < SEC_FOREST; sec++) {
        if (strcasecmp(section, cfg_section_names[sec]) != 0)
            continue;
        for (const struct cfg_key *k = cfg_keys_of(sec); k->name; k++)
            if (strcasecmp(k->name, name) == 0)
                return k->type == CT_UINT || k->type == CT_BOOL || k->type == CT_TIME ||
                                       k->type == CT_ENUM
                               ? k
                               : NULL;
    }
    return NULL;
}

int config_parse_scalar(const char *section, const char *name, const char *value, uint32_t *out,
                        char *why, size_t whylen)
{
    const struct cfg_key *k = cfg_scalar_key(section, name);
    union {
        uint32_t u32;
        uint16_t u16;
        uint8_t u8;
        bool b;
    } field = {0};
    char *msg = NULL;
    size_t len = 0;

    snprintf(why, whylen, "%s: not a setting of one value", name);
    struct cfg_parse *cp = k ? calloc(1, sizeof *cp) : NULL;
    if (!cp || !(cp->err = open_memstream(&msg, &len))) {
        free(cp);
        return FG_ERROR;
    }
    int rc = cfg_set_field(cp, k, &field, value);
    fclose(cp->err);
    free(cp);
    if (rc == FG_OK)
        *out = cfg_get_uint(&field, k->size);
    else
        snprintf(why, whylen, "%.*s", (int)strcspn(msg, "\n"), msg);
    free(msg);
    return rc;
}

void config_scalar_str(const char *section, const char *name, uint32_t v, char *buf, size_t n)
{
    const struct cfg_key *k = cfg_scalar_key(section, name);
    uint32_t field[2] = {0, 0};
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);

    snprintf(buf, n, "%u", v);
    if (!k || !out) {
        if (out)
            fclose(out);
        free(text);
        return;
    }
    cfg_set_uint(field, k->size, v);
    cfg_dump_value(out, k, field);
    fclose(out);
    snprintf(buf, n, "%s", text);
    free(text);
}

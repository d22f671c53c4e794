/* Run-time tuning: the stats socket's set. See tune.h. */
#include "tune.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

/* Where a setting lives: its section. TS_PROTO is [imap] and [pop3]. */
enum tune_sec {
    TS_GLOBAL,
    TS_PROTO,
    TS_BACKEND,
    TS_DIRECTORY,
};

struct tune_setting;

/* The live value of s for protocol p (p: TS_PROTO only). */
typedef uint32_t tune_get_fn(const struct stats *st, const struct tune_setting *s, int p);

/* Makes v live; FG_ERROR with the reason in why when it cannot be now. */
typedef int tune_set_fn(const struct stats *st, const struct tune_setting *s, int p, uint32_t v,
                        char *why, size_t n);

struct tune_setting {
    const char *name; /* the file's */
    uint8_t sec;      /* enum tune_sec */
    uint8_t kind;     /* enum limits_kind, for the connection limits */
    size_t off;       /* the field, in its section's struct */
    tune_get_fn *get;
    tune_set_fn *set;
};

/* The field of s in the configuration, for protocol p. */
static void *tune_field(const struct stats *st, const struct tune_setting *s, int p)
{
    struct fg_config *cfg = st->cfg;
    void *base = s->sec == TS_PROTO       ? (void *)&cfg->proto[p]
                 : s->sec == TS_BACKEND   ? (void *)&cfg->backend
                 : s->sec == TS_DIRECTORY ? (void *)&cfg->dir
                                          : (void *)cfg;
    return (char *)base + s->off;
}

static const char *tune_sec_name(const struct tune_setting *s, int p)
{
    static const char *const names[] = {
            [TS_GLOBAL] = "global", [TS_BACKEND] = "backend", [TS_DIRECTORY] = "directory"};
    if (s->sec == TS_PROTO)
        return p == FG_PROTO_IMAP ? "imap" : "pop3";
    return names[s->sec];
}

/* ---- the live values ---- */

/* An atomic field of the configuration, read where it is used. */
static uint32_t tune_get_atomic(const struct stats *st, const struct tune_setting *s, int p)
{
    return atomic_load_explicit((_Atomic uint32_t *)tune_field(st, s, p), memory_order_relaxed);
}

static int tune_set_atomic(const struct stats *st, const struct tune_setting *s, int p, uint32_t v,
                           char *why, size_t n)
{
    (void)why, (void)n;
    atomic_store_explicit((_Atomic uint32_t *)tune_field(st, s, p), v, memory_order_relaxed);
    return FG_OK;
}

/* A probe of a host that was down takes at most ConnectTimeout: the others
 * skip the host that long and a second more (as main.c sets it up). */
static int tune_set_connect(const struct stats *st, const struct tune_setting *s, int p, uint32_t v,
                            char *why, size_t n)
{
    if (st->bhosts)
        atomic_store_explicit(&st->bhosts->probe_hold_ms, v * 1000 + 1000, memory_order_relaxed);
    return tune_set_atomic(st, s, p, v, why, n);
}

/* The connection limits: the limits' own atomics (limits_set is made for
 * this); the configuration's field, which only this thread reads, keeps
 * show settings right. */
static uint32_t tune_get_limit(const struct stats *st, const struct tune_setting *s, int p)
{
    return limits_get(st->limits, (enum limits_kind)s->kind, (enum fg_proto)p);
}

static int tune_set_limit(const struct stats *st, const struct tune_setting *s, int p, uint32_t v,
                          char *why, size_t n)
{
    (void)why, (void)n;
    limits_set(st->limits, (enum limits_kind)s->kind, (enum fg_proto)p, v);
    *(uint32_t *)tune_field(st, s, p) = v;
    return FG_OK;
}

static uint32_t tune_get_log_level(const struct stats *st, const struct tune_setting *s, int p)
{
    (void)st, (void)s, (void)p;
    return (uint32_t)atomic_load_explicit(&log_level, memory_order_relaxed);
}

static int tune_set_log_level(const struct stats *st, const struct tune_setting *s, int p,
                              uint32_t v, char *why, size_t n)
{
    (void)s, (void)p, (void)why, (void)n;
    st->cfg->log_level = (enum log_level)v;
    atomic_store_explicit(&log_level, (enum log_level)v, memory_order_relaxed);
    return FG_OK;
}

static uint32_t tune_get_plog(const struct stats *st, const struct tune_setting *s, int p)
{
    (void)st, (void)s;
    return atomic_load_explicit(&plog_on[p], memory_order_relaxed);
}

/* ProtocolLogEnabled: the file is opened the first time it is turned on,
 * as start-up would; sessions that start from then on are logged. */
static int tune_set_plog(const struct stats *st, const struct tune_setting *s, int p, uint32_t v,
                         char *why, size_t n)
{
    (void)s;
    if (!v) {
        plog_disable(p);
    } else if (plog_enable(p, st->cfg->log_dir) != FG_OK) {
        snprintf(why, n, "cannot open the protocol log in LogFileLocation %s: %s", st->cfg->log_dir,
                 strerror(errno));
        return FG_ERROR;
    }
    st->cfg->proto[p].protocol_log = v != 0;
    return FG_OK;
}

/* FailedLogonDelayMs: read by the directory's threads. */
static int tune_set_dir(const struct stats *st, const struct tune_setting *s, int p, uint32_t v,
                        char *why, size_t n)
{
    if (!st->dir || !st->cfg->dir.enabled) {
        snprintf(why, n, "no directory is configured ([forest:NAME]): it would do nothing");
        return FG_ERROR;
    }
    return tune_set_atomic(st, s, p, v, why, n);
}

/* The cache's TTLs: new entries get the new one; those cached keep theirs
 * (flush cache drops them). The cache itself is set up at start. */
static int tune_set_cache(const struct stats *st, const struct tune_setting *s, int p, uint32_t v,
                          char *why, size_t n)
{
    if (!st->dir || !st->dir->cache_on) {
        snprintf(why, n,
                 "the route cache is off (no directory, or RouteCacheTTL = 00:00:00 at start): "
                 "turning it on needs a restart");
        return FG_ERROR;
    }
    if (v == 0 && strcmp(s->name, "RouteCacheTTL") == 0) {
        snprintf(why, n,
                 "00:00:00 turns the route cache off, which needs a restart (flush cache empties "
                 "it now)");
        return FG_ERROR;
    }
    return tune_set_atomic(st, s, p, v, why, n);
}

#define TUNE_ATOMIC(name, sec, type, f, set)                                                       \
    {                                                                                              \
        name, sec, 0, offsetof(type, f), tune_get_atomic, set                                      \
    }
#define TUNE_LIMIT(name, f, kind)                                                                  \
    {                                                                                              \
        name, TS_PROTO, kind, offsetof(struct proto_conf, f), tune_get_limit, tune_set_limit       \
    }

static const struct tune_setting tune_settings[] = {
        {"LogLevel", TS_GLOBAL, 0, 0, tune_get_log_level, tune_set_log_level},
        TUNE_ATOMIC("PreAuthenticatedConnectionTimeout", TS_PROTO, struct proto_conf,
                    preauth_timeout, tune_set_atomic),
        TUNE_ATOMIC("AuthenticatedConnectionTimeout", TS_PROTO, struct proto_conf, auth_timeout,
                    tune_set_atomic),
        TUNE_ATOMIC("ProxyProtocolTimeout", TS_PROTO, struct proto_conf, proxy_timeout,
                    tune_set_atomic),
        TUNE_LIMIT("MaxConnections", max_connections, LIMITS_CONNS),
        TUNE_LIMIT("MaxConnectionFromSingleIP", max_per_ip, LIMITS_PER_IP),
        TUNE_LIMIT("MaxConnectionsPerUser", max_per_user, LIMITS_PER_USER),
        {"ProtocolLogEnabled", TS_PROTO, 0, 0, tune_get_plog, tune_set_plog},
        TUNE_ATOMIC("ConnectTimeout", TS_BACKEND, struct backend_conf, connect_timeout,
                    tune_set_connect),
        TUNE_ATOMIC("FailedLogonDelayMs", TS_DIRECTORY, struct dir_conf, failed_delay_ms,
                    tune_set_dir),
        TUNE_ATOMIC("RouteCacheTTL", TS_DIRECTORY, struct dir_conf, route_ttl, tune_set_cache),
        TUNE_ATOMIC("NegativeCacheTTL", TS_DIRECTORY, struct dir_conf, negative_ttl,
                    tune_set_cache),
        TUNE_ATOMIC("CredentialCacheTTL", TS_DIRECTORY, struct dir_conf, cred_ttl, tune_set_cache),
};

/* Settings that cannot change, where the reason is not plain. */
static const struct {
    const char *name, *why;
} tune_fixed[] = {
        {"RequestTimeout", "the LDAP connections' timeouts are set from it at start"},
        {"RouteCacheMaxEntries", "the route cache is sized at start"},
        {"Workers", "the workers start with the process"},
};

/* ---- SETTING: which setting, and which protocol ---- */

/* A setting named as the user wrote it: section (NULL: none given) and name. */
struct tune_name {
    char section[80];
    bool has_section;
    char name[64];
};

static bool tune_proto_of(const char *section, int *p_r)
{
    if (strcasecmp(section, "imap") == 0)
        *p_r = FG_PROTO_IMAP;
    else if (strcasecmp(section, "pop3") == 0)
        *p_r = FG_PROTO_POP3;
    else
        return false;
    return true;
}

/* The kind of section config_section_kind calls it, or -1. */
static int tune_kind_of(const char *section)
{
    for (unsigned k = 0; config_section_kind(k); k++) {
        const char *kn = config_section_kind(k);
        size_t kl = strlen(kn);
        bool prefix = kn[kl - 1] == ':'; /* forest:NAME, database:NAME */
        if (prefix ? strncasecmp(section, kn, kl) == 0 && section[kl]
                   : strcasecmp(section, kn) == 0)
            return (int)k;
    }
    return -1;
}

/* The section that has a key name (kind k, or any when k < 0), or NULL. */
static const char *tune_config_has(int k, const char *name)
{
    for (unsigned kk = k < 0 ? 0 : (unsigned)k; config_section_kind(kk); kk++) {
        for (unsigned i = 0; config_key_name(kk, i); i++)
            if (strcasecmp(config_key_name(kk, i), name) == 0)
                return config_section_kind(kk);
        if (k >= 0)
            break;
    }
    return NULL;
}

/* Not a setting set can change: unknown, or changed only by a restart. */
static void tune_refuse_unknown(const struct tune_name *tn, char *why, size_t n)
{
    int k = tn->has_section ? tune_kind_of(tn->section) : -1;
    if (tn->has_section && k < 0) {
        snprintf(why, n, "unknown section [%s]", tn->section);
        return;
    }
    const char *sec = tune_config_has(k, tn->name);
    if (!sec) {
        snprintf(why, n, "unknown setting \"%s\"%s%s%s", tn->name, tn->has_section ? " in [" : "",
                 tn->has_section ? tn->section : "", tn->has_section ? "]" : "");
        return;
    }
    for (size_t i = 0; i < FG_ARRAY_SIZE(tune_fixed); i++)
        if (strcasecmp(tn->name, tune_fixed[i].name) == 0) {
            snprintf(why, n,
                     "%s cannot change at run time (%s): change it in the file and "
                     "restart",
                     tune_fixed[i].name, tune_fixed[i].why);
            return;
        }
    snprintf(why, n, "%s cannot change at run time: change it in [%s] in the file and restart",
             tn->name, tn->has_section ? tn->section : sec);
}

/* A [imap]/[pop3] setting: the protocol named, or the one in use. */
static bool tune_pick_proto(const struct stats *st, const struct tune_name *tn, const char *name,
                            int *p_r, char *why, size_t n)
{
    const struct proto_conf *pc = st->cfg->proto;
    if (tn->has_section) {
        if (!pc[*p_r].enabled) {
            snprintf(why, n, "[%s] is not configured", tn->section);
            return false;
        }
        return true;
    }
    if (pc[FG_PROTO_IMAP].enabled && pc[FG_PROTO_POP3].enabled) {
        snprintf(why, n, "%s is in [imap] and [pop3]: say imap.%s or pop3.%s", name, name, name);
        return false;
    }
    *p_r = pc[FG_PROTO_IMAP].enabled ? FG_PROTO_IMAP : FG_PROTO_POP3;
    return true;
}

/* Finds the setting tn names; *p_r gets the protocol of an [imap]/[pop3]
 * one. NULL with the reason in why. */
static const struct tune_setting *tune_find(const struct stats *st, const struct tune_name *tn,
                                            int *p_r, char *why, size_t n)
{
    static const char *const secs[] = {
            [TS_GLOBAL] = "global", [TS_BACKEND] = "backend", [TS_DIRECTORY] = "directory"};
    for (size_t i = 0; i < FG_ARRAY_SIZE(tune_settings); i++) {
        const struct tune_setting *s = &tune_settings[i];
        if (strcasecmp(s->name, tn->name) != 0)
            continue;
        *p_r = 0;
        if (s->sec == TS_PROTO) {
            if (tn->has_section && !tune_proto_of(tn->section, p_r))
                continue;
            return tune_pick_proto(st, tn, s->name, p_r, why, n) ? s : NULL;
        }
        if (!tn->has_section || strcasecmp(tn->section, secs[s->sec]) == 0)
            return s;
    }
    tune_refuse_unknown(tn, why, n);
    return NULL;
}

/* "Section.Name" (split at the last dot: a forest's name may have dots) or "Name". */
static bool tune_parse_name(const char *arg, size_t len, struct tune_name *tn)
{
    const char *dot = memrchr(arg, '.', len);
    memset(tn, 0, sizeof *tn);
    size_t nl = dot ? len - (size_t)(dot + 1 - arg) : len;
    size_t sl = dot ? (size_t)(dot - arg) : 0;
    if (nl == 0 || nl >= sizeof tn->name || sl >= sizeof tn->section || (dot && sl == 0))
        return false;
    memcpy(tn->name, dot ? dot + 1 : arg, nl);
    memcpy(tn->section, arg, sl);
    tn->has_section = dot != NULL;
    return true;
}

/* ---- the command ---- */

static void tune_usage(FILE *out)
{
    fprintf(out, "error: usage: set SETTING VALUE; SETTING is one of:");
    for (size_t i = 0; i < FG_ARRAY_SIZE(tune_settings); i++) {
        const struct tune_setting *s = &tune_settings[i];
        fprintf(out, "%s %s.%s", i ? "," : "",
                s->sec == TS_PROTO ? "imap|pop3" : tune_sec_name(s, 0), s->name);
    }
    fputc('\n', out);
}

static void tune_log(const char *setting, const char *old, const char *new)
{
    struct log_line ll;
    log_begin(&ll, LOG_INFO, "setting_changed");
    log_cstr(&ll, "setting", setting);
    log_cstr(&ll, "old", old);
    log_cstr(&ll, "new", new);
    log_cstr(&ll, "by", "stats socket");
    log_end(&ll);
}

/* Parses, applies and logs the new value of s; the answer goes to out. */
static void tune_apply(const struct stats *st, const struct tune_setting *s, int p,
                       const char *value, FILE *out)
{
    const char *sec = tune_sec_name(s, p);
    char why[300], setting[160], old[64], new[64];
    uint32_t v;

    snprintf(setting, sizeof setting, "%s.%s", sec, s->name);
    if (config_parse_scalar(sec, s->name, value, &v, why, sizeof why) != FG_OK) {
        fprintf(out, "error: %s.%s\n", sec, why);
        return;
    }
    uint32_t was = s->get(st, s, p);
    config_scalar_str(sec, s->name, was, old, sizeof old);
    config_scalar_str(sec, s->name, v, new, sizeof new);
    /* A quieter LogLevel is logged before it applies, a louder one after:
     * the line is written whenever either level shows it. */
    bool quieter = s->set == tune_set_log_level && v < was;
    if (quieter)
        tune_log(setting, old, new);
    if (s->set(st, s, p, v, why, sizeof why) != FG_OK) {
        fprintf(out, "error: %s: %s\n", setting, why);
        return;
    }
    if (!quieter)
        tune_log(setting, old, new);
    fprintf(out, "%s = %s (was %s)\n", setting, new, old);
}

void tune_command(const struct stats *st, const char *args, FILE *out)
{
    struct tune_name tn;
    char why[300];
    int p;

    args += strspn(args, " \t");
    size_t len = strcspn(args, " \t");
    const char *value = args + len + strspn(args + len, " \t");
    size_t vl = strlen(value);
    while (vl > 0 && isspace((unsigned char)value[vl - 1]))
        vl--;
    if (len == 0 || vl == 0) {
        tune_usage(out);
        return;
    }
    if (!tune_parse_name(args, len, &tn)) {
        fprintf(out, "error: \"%.*s\" is not a setting: Section.Name or Name\n",
                (int)FG_MIN(len, 80), args);
        return;
    }
    const struct tune_setting *s = tune_find(st, &tn, &p, why, sizeof why);
    if (!s) {
        fprintf(out, "error: %s\n", why);
        return;
    }
    char v[128];
    snprintf(v, sizeof v, "%.*s", (int)vl, value);
    tune_apply(st, s, p, v, out);
}

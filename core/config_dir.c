/*
 * The configuration's directory sections: [forest:NAME] (what each forest
 * is and where its store is), [databases] and [database:NAME] (the mailbox
 * databases' hosts and how to reach them), and, once the stores are loaded,
 * the forests' domains and the order they are searched in. See config_int.h.
 */
#include "config_int.h"

#include "../directory/ldap_store.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

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
void cfg_database(struct cfg_parse *cp, const char *name, const char *value)
{
    struct database_conf *db = cfg_database_slot(cp, name);
    if (!db)
        return;
    unsigned i = (unsigned)(db - cp->cfg->dir.databases);
    if (db->mapped) {
        cfg_error(cp, cp->line, "database %s is already mapped on line %u", name, cp->db_line[i]);
        return;
    }
    if (*value == ';') { /* see cfg_set: it would read back as a comment */
        cfg_error(cp, cp->line, "[databases] %s: a value cannot begin with ';'", name);
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
void cfg_new_database(struct cfg_parse *cp, const char *name)
{
    struct database_conf *db = cfg_database_slot(cp, name);
    if (!db)
        return;
    db->custom = true;
    cp->section_line[SEC_DATABASE + (db - cp->cfg->dir.databases)] = cp->line;
}

/* [forest:NAME]: a new forest, named by letters, digits, '-' and '_'. */
void cfg_new_forest(struct cfg_parse *cp, const char *name)
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

void cfg_add_domain(struct cfg_parse *cp, unsigned line, struct dir_forest *df, const char *nb,
                    const char *dns, const char *base)
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

char *cfg_trim(char *t)
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
}

static void cfg_check_forest(struct cfg_parse *cp, unsigned i, struct dir_forest *df)
{
    struct forest_conf *fc = &cp->cfg->dir.forests[i];
    int sec = SEC_FOREST + (int)i;
    unsigned sl = cp->section_line[sec];

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
    if (fc->domains[0])
        cfg_parse_domains(cp, cfg_key_line(cp, sec, "Domains"), fc->domains, df);
}

/* After loading: every forest has domains (configured or discovered), and
 * the organisation's DefaultDomain is one of them. */
static void cfg_check_domains(struct cfg_parse *cp, unsigned i, struct dir_forest *df)
{
    struct forest_conf *fc = &cp->cfg->dir.forests[i];
    int sec = SEC_FOREST + (int)i;
    unsigned sl = cp->section_line[sec], dl = cfg_key_line(cp, sec, "Domains");

    if (df->ndomains == 0 && (fc->store || fc->domains[0]) && !cfg_line_bad(cp, dl))
        cfg_error(cp, dl ? dl : sl,
                  "[forest:%s] has no domain: set Domains, or give crossRef objects in its "
                  "directory",
                  fc->name);
    /* Domains an LDAP forest would tell: not asked for (CONFIG_NETWORK). */
    bool untold = !fc->domains[0] && fc->uri[0] && !(cp->flags & CONFIG_NETWORK);
    if (!fc->default_domain[0] || untold)
        return;
    int f, d;
    struct dir_topology one = {.nforests = 1};
    one.forests[0] = *df;
    if (!df->organization ||
        !resolve_find_domain(&one, fc->default_domain, strlen(fc->default_domain), &f, &d))
        cfg_error(cp, cfg_key_line(cp, sec, "DefaultDomain"), "DefaultDomain %s: %s",
                  fc->default_domain,
                  df->organization ? "not a domain of this forest"
                                   : "only the organisation forest has one");
    else
        df->default_domain = (unsigned)d;
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

static void cfg_check_databases(struct cfg_parse *cp)
{
    struct dir_conf *dc = &cp->cfg->dir;
    for (unsigned i = 0; i < dc->ndatabases; i++) {
        struct database_conf *db = &dc->databases[i];
        db->target.policy = &db->policy;
    }
}

/* Cache settings that do not do what they seem to: warnings, not errors. */
static void cfg_check_cache(struct cfg_parse *cp)
{
    const struct dir_conf *dc = &cp->cfg->dir;
    unsigned line;
    if (dc->cred_ttl && !dc->route_ttl &&
        (line = cfg_key_line(cp, SEC_DIRECTORY, "CredentialCacheTTL")))
        cfg_warn(cp, line,
                 "CredentialCacheTTL does nothing with RouteCacheTTL = 00:00:00: the password's "
                 "hash is kept beside the route");
    else if (dc->cred_ttl > dc->route_ttl &&
             (line = cfg_key_line(cp, SEC_DIRECTORY, "CredentialCacheTTL")))
        cfg_warn(cp, line,
                 "CredentialCacheTTL is longer than RouteCacheTTL: a password's hash lasts no "
                 "longer than its route");
    if (dc->negative_ttl && dc->route_ttl && !dc->failed_delay_ms &&
        (line = cfg_key_line(cp, SEC_DIRECTORY, "FailedLogonDelayMs")))
        cfg_warn(cp, line,
                 "FailedLogonDelayMs = 0 with NegativeCacheTTL: a name the negative cache knows "
                 "is refused with no LDAP operation, faster than a wrong password, so a client "
                 "can tell unknown names by their timing; set FailedLogonDelayMs");
    if (dc->serve_stale && !dc->route_ttl &&
        (line = cfg_key_line(cp, SEC_DIRECTORY, "ServeStaleOnDirectoryFailure")))
        cfg_warn(cp, line,
                 "ServeStaleOnDirectoryFailure does nothing with RouteCacheTTL = 00:00:00");
}

void cfg_check_directory(struct cfg_parse *cp)
{
    struct dir_conf *dc = &cp->cfg->dir;
    struct dir_forest *df = cp->df;
    int norg = 0;

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
    for (unsigned i = 0; i < dc->nforests; i++) {
        cfg_check_forest(cp, i, &df[i]);
        norg += df[i].organization;
    }
    if (norg != 1)
        cfg_error(cp, cp->section_line[SEC_FOREST],
                  "exactly one forest must have Role = Organization; %d do", norg);
    dc->rules.allow_smtp_login = dc->allow_smtp_login;
    dc->rules.allow_admin = dc->allow_admin;
    dc->rules.login_attr = dc->login_attr;
    dc->rules.delegate_attr = dc->delegate_attr;
    dc->rules.delegate_check = dc->delegate_check;
    dc->rules.allow_delegates = cp->cfg->backend.mode == BACKEND_LOGIN_MASTER;
    cfg_check_databases(cp);
    cfg_check_cache(cp);
}

void cfg_finish_directory(struct cfg_parse *cp)
{
    struct dir_conf *dc = &cp->cfg->dir;
    int org = -1;

    if (!dc->enabled)
        return;
    for (unsigned i = 0; i < dc->nforests; i++) {
        cfg_check_domains(cp, i, &cp->df[i]);
        if (cp->df[i].organization && org < 0)
            org = (int)i;
    }
    cfg_order_forests(cp, cp->df, org < 0 ? 0 : org);
}

/*
 * A database's policy: [backend]'s, then what its [database:NAME] sets. A
 * port not set is ProxyTargetPort, unless the database speaks implicit TLS
 * and [backend] does not, or the other way round: then it is that kind's
 * default (993/995 for implicit TLS, 143/110 for clear text and STARTTLS).
 */
void cfg_database_policy(struct cfg_parse *cp, unsigned i)
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

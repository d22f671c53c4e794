/*
 * Start-up loading: what the checked settings name. Certificates, password
 * files (kept in memory excluded from core dumps), LDIF files and CA files
 * are read; with CONFIG_NETWORK, host names are looked up and LDAP forests
 * without Domains are asked for theirs. Every problem is reported at the
 * line that named the thing. See config_int.h.
 */
#include "config_int.h"

#include "../directory/krb.h"
#include "../directory/ldap_store.h"
#include "../directory/ldif_store.h"
#include "../tls/tls.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* Reads fd into buf (cap bytes at most); *more says whether bytes followed.
 * Returns the count, or -1 with errno. read(2), not stdio: a FILE keeps its
 * own copy of what it read in a heap buffer that fclose frees unwiped. */
static ssize_t cfg_read_secret(int fd, char *buf, size_t cap, bool *more)
{
    size_t n = 0;
    char c;
    ssize_t r = 1;
    while (n < cap && (r = read(fd, buf + n, cap - n)) != 0) {
        if (r < 0 && errno != EINTR)
            return -1;
        n += r > 0 ? (size_t)r : 0;
    }
    while (n == cap && (r = read(fd, &c, 1)) < 0 && errno == EINTR)
        ;
    *more = n == cap && r > 0;
    explicit_bzero(&c, sizeof c);
    return r < 0 ? -1 : (ssize_t)n;
}

/* A password file: one line of 1 to CRED_PASS_MAX bytes (a trailing newline
 * is the file's), kept in memory excluded from core dumps. */
static void cfg_load_secret(struct cfg_parse *cp, unsigned line, const char *key, const char *path,
                            char **out, size_t *out_len)
{
    char tmp[CRED_PASS_MAX + 3];
    bool more;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t got = fd < 0 ? -1 : cfg_read_secret(fd, tmp, sizeof tmp, &more);

    if (got < 0) {
        cfg_error(cp, line, "%s %s: %s", key, path, strerror(errno));
        if (fd >= 0)
            close(fd);
        explicit_bzero(tmp, sizeof tmp);
        return;
    }
    close(fd);
    size_t n = (size_t)got;
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

/* True for "1.2.3.4", "::1" and "[::1]": resolving it needs no lookup. */
static bool cfg_is_address(const char *host)
{
    char a[64];
    struct in6_addr x;
    size_t n = strlen(host);
    bool br = n > 2 && host[0] == '[' && host[n - 1] == ']';
    snprintf(a, sizeof a, "%.*s", (int)(br ? n - 2 : n), host + br);
    return inet_pton(AF_INET, a, &x) == 1 || inet_pton(AF_INET6, a, &x) == 1;
}

/* Adds host (a name or an address, "[::1]" too) and its addresses to t. A
 * name is looked up only when CONFIG_NETWORK asks for it. */
static void cfg_add_host(struct cfg_parse *cp, unsigned line, struct backend_target *t,
                         const char *host, const char *what)
{
    char why[300];
    if (!(cp->flags & CONFIG_NETWORK) && !cfg_is_address(host))
        return;
    int rc = dir_target_add(t, host, why, sizeof why);
    if (rc != FG_OK)
        cfg_error(cp, line, "%s %s: %s", what, host, why);
}

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

/* A forest's store and its secrets: the bind password, the CA file, the
 * LDIF file; then its domains, unless Domains lists them: the LDIF file's
 * crossRef objects, or (CONFIG_NETWORK) its LDAP servers, asked once. */
static void cfg_load_forest(struct cfg_parse *cp, unsigned i)
{
    struct forest_conf *fc = &cp->cfg->dir.forests[i];
    struct dir_forest *df = &cp->df[i];
    int sec = SEC_FOREST + (int)i;
    unsigned sl = cp->section_line[sec];
    char err[PATH_MAX + 300];

    if (fc->uri[0] && fc->bind_password_file[0])
        cfg_load_secret(cp, cfg_key_line(cp, sec, "BindPasswordFile"), "BindPasswordFile",
                        fc->bind_password_file, &fc->bind_pass, &fc->bind_pass_len);
    if (fc->uri[0] && fc->ldap_ca_file[0] && access(fc->ldap_ca_file, R_OK) != 0)
        cfg_error(cp, cfg_key_line(cp, sec, "LdapCaFile"), "LdapCaFile %s: %s", fc->ldap_ca_file,
                  strerror(errno));
    if (fc->ldif[0] && !fc->uri[0]) {
        if (!(fc->store = calloc(1, sizeof *fc->store)) ||
            ldif_load(fc->store, fc->ldif, err, sizeof err) != FG_OK) {
            cfg_error(cp, cfg_key_line(cp, sec, "Ldif"), "%s", fc->store ? err : "out of memory");
            free(fc->store);
            fc->store = NULL;
        }
    }
    if (fc->domains[0])
        return;
    if (fc->store)
        cfg_discover_domains(cp, sl, fc->store, df);
    else if (fc->uri[0] && fc->bind_pass && cp->errors == 0 && (cp->flags & CONFIG_NETWORK))
        cfg_discover_ldap_domains(cp, i, df);
}

/* The certificates X509CertificateName names, for a protocol. */
static void cfg_load_certs(struct cfg_parse *cp, int p)
{
    struct proto_conf *pc = &cp->cfg->proto[p];
    unsigned nl = cfg_key_line(cp, SEC_IMAP + p, "X509CertificateName");
    char err[PATH_MAX + 200];

    if (pc->cert_names[0] && !cfg_line_bad(cp, nl)) {
        pc->tls_server = config_load_certs(cp->cfg, p, err, sizeof err);
        if (!pc->tls_server)
            cfg_error(cp, nl, "%s", err);
    }
    pc->sess.starttls = pc->tls_server != NULL;
}

/* A route's TLS client: the CA certificates that verify its servers. The
 * settings were checked (config.c); sec is the policy's section. */
static void cfg_load_policy(struct cfg_parse *cp, int sec, struct backend_policy *pol)
{
    char err[PATH_MAX + 200];
    unsigned ca_line = cfg_key_line(cp, sec, "TlsCaFile");

    if (pol->tls == BACKEND_TLS_NONE || (pol->verify && !pol->ca_file[0]))
        return;
    pol->tls_cl = tls_client_new(pol->ca_file, pol->verify, err, sizeof err);
    if (!pol->tls_cl)
        cfg_error(cp, ca_line ? ca_line : cfg_key_line(cp, SEC_BACKEND, "TlsCaFile"), "%s", err);
}

/* The backend's hosts, their TLS, and the warnings that need their names
 * and addresses. */
static void cfg_load_backend(struct cfg_parse *cp)
{
    struct fg_config *cfg = cp->cfg;
    struct backend_conf *bc = &cfg->backend;

    if (bc->server[0])
        cfg_add_host(cp, cfg_key_line(cp, SEC_BACKEND, "DefaultServer"), &bc->target, bc->server,
                     "DefaultServer");
    for (unsigned i = 0; i < cfg->dir.ndatabases; i++)
        if (cfg->dir.databases[i].mapped)
            cfg_database_hosts(cp, i);
    if (bc->mode == BACKEND_LOGIN_MASTER && bc->master_password_file[0])
        cfg_load_secret(cp, cfg_key_line(cp, SEC_BACKEND, "MasterPasswordFile"),
                        "MasterPasswordFile", bc->master_password_file, &bc->master_pass,
                        &bc->master_pass_len);
    cfg_load_policy(cp, SEC_BACKEND, &bc->policy);
    cfg_warn_address_names(cp, cfg_key_line(cp, SEC_BACKEND, "DefaultServer"), &bc->target);
    for (unsigned i = 0; i < cfg->dir.ndatabases; i++) {
        cfg_load_policy(cp, SEC_DATABASE + (int)i, &cfg->dir.databases[i].policy);
        cfg_warn_address_names(cp, cp->db_line[i], &cfg->dir.databases[i].target);
    }
    cfg_warn_clear_master(cp);
}

/* ThrottleKeyFile: THR_KEY_MIN to 4096 bytes, any bytes, that no one but
 * forestgate's user and group may read: it keys every hash the fleet's
 * store holds, the wrong passwords' among them. */
static void cfg_load_throttle_key(struct cfg_parse *cp)
{
    struct thr_conf *tc = &cp->cfg->throttle;
    unsigned line = cfg_key_line(cp, SEC_THROTTLE, "ThrottleKeyFile");
    uint8_t tmp[4097];
    struct stat st;
    bool more;

    if (!tc->enabled || !tc->key_file[0])
        return;
    int fd = open(tc->key_file, O_RDONLY | O_CLOEXEC);
    ssize_t got = fd < 0 || fstat(fd, &st) != 0
                          ? -1
                          : cfg_read_secret(fd, (char *)tmp, sizeof tmp, &more);
    if (got < 0) {
        cfg_error(cp, line, "ThrottleKeyFile %s: %s", tc->key_file, strerror(errno));
        if (fd >= 0)
            close(fd);
        explicit_bzero(tmp, sizeof tmp);
        return;
    }
    close(fd);
    size_t n = more ? sizeof tmp : (size_t)got;
    if (st.st_mode & S_IROTH)
        cfg_error(cp, line, "ThrottleKeyFile %s: others can read it (chmod o-r)", tc->key_file);
    else if (n < THR_KEY_MIN || n >= sizeof tmp)
        cfg_error(cp, line,
                  "ThrottleKeyFile %s: expected %d to 4096 random bytes "
                  "(head -c 32 /dev/urandom > FILE)",
                  tc->key_file, THR_KEY_MIN);
    else if ((tc->key = (uint8_t *)cfg_secret_alloc(n + 1)) != NULL) {
        memcpy(tc->key, tmp, n);
        tc->key_len = n;
    }
    explicit_bzero(tmp, sizeof tmp);
}

/* KerberosKeytab: read now, before privileges drop, as a certificate's key;
 * each protocol that offers GSSAPI needs a key for its service. */
static void cfg_load_keytab(struct cfg_parse *cp)
{
    struct fg_config *cfg = cp->cfg;
    struct dir_conf *dc = &cfg->dir;
    unsigned line = cfg_key_line(cp, SEC_DIRECTORY, "KerberosKeytab");
    static const char *const service[FG_PROTO_COUNT] = {"imap", "pop"};
    char err[PATH_MAX + 300];
    if (!dc->keytab[0] || cfg_line_bad(cp, line))
        return;
    if (!(dc->krb = krb_open(dc->keytab, err, sizeof err))) {
        cfg_error(cp, line, "KerberosKeytab %s: %s", dc->keytab, err);
        return;
    }
    for (int p = 0; p < FG_PROTO_COUNT; p++)
        if (cfg->proto[p].enabled && cfg->proto[p].gssapi && !(krb_services(dc->krb) & (1u << p)))
            cfg_error(cp, line,
                      "KerberosKeytab %s holds no key for %s/HOST, which [%s] "
                      "EnableGSSAPIAndNTLMAuth needs",
                      dc->keytab, service[p], p == FG_PROTO_IMAP ? "imap" : "pop3");
        else if (cfg->proto[p].gssapi)
            cfg->proto[p].sess.gssapi = true;
}

void cfg_load(struct cfg_parse *cp)
{
    struct fg_config *cfg = cp->cfg;

    for (int p = 0; p < FG_PROTO_COUNT; p++)
        if (cfg->proto[p].enabled)
            cfg_load_certs(cp, p);
    for (unsigned i = 0; cfg->dir.enabled && i < cfg->dir.nforests; i++)
        cfg_load_forest(cp, i);
    cfg_load_backend(cp);
    cfg_load_throttle_key(cp);
    cfg_load_keytab(cp);
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
    cfg_secret_free((char **)&cfg->throttle.key, &cfg->throttle.key_len);
    krb_close(cfg->dir.krb);
    cfg->dir.krb = NULL;
}

/* The directory's settings: the helpers that turn them into routes and store settings. */
#include "dir_conf.h"
#include "ldap_store.h"

#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

int dir_target_add(struct backend_target *t, const char *host, char *why, size_t n)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    char name[CFG_HOST_MAX + 1];
    size_t len = strlen(host);

    if (t->nhosts == CFG_MAX_BACKEND_HOSTS) {
        snprintf(why, n, "more than %d hosts", CFG_MAX_BACKEND_HOSTS);
        return FG_ERROR;
    }
    if (len == 0 || len > CFG_HOST_MAX) {
        snprintf(why, n, "not a host name");
        return FG_ERROR;
    }
    bool bracket = host[0] == '[' && host[len - 1] == ']' && len > 2;
    snprintf(name, sizeof name, "%.*s", (int)(bracket ? len - 2 : len), host + bracket);
    int rc = getaddrinfo(name, NULL, &hints, &res);
    if (rc != 0) {
        snprintf(why, n, "%s", gai_strerror(rc));
        return FG_ERROR;
    }
    unsigned h = t->nhosts++;
    memcpy(t->hosts[h], name, strlen(name) + 1);
    for (struct addrinfo *ai = res; ai && t->naddrs < CFG_MAX_BACKEND_ADDRS; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        memcpy(&t->addrs[t->naddrs], ai->ai_addr, ai->ai_addrlen);
        t->addr_host[t->naddrs++] = (uint8_t)h;
    }
    freeaddrinfo(res);
    return FG_OK;
}

const struct backend_policy *
dir_database_policy(const struct dir_conf *dc, const struct backend_policy *dflt, const char *name)
{
    for (unsigned i = 0; i < dc->ndatabases; i++)
        if (strcasecmp(dc->databases[i].name, name) == 0)
            return &dc->databases[i].policy;
    return dflt;
}

void dir_ldap_store_conf(const struct dir_conf *dc, const struct forest_conf *fc,
                         struct ldap_store_conf *lc)
{
    uint32_t t = dc->request_timeout * 1000;
    *lc = (struct ldap_store_conf){
            .forest_name = fc->name,
            .uris = fc->uri,
            .bind_dn = fc->bind_dn,
            .bind_pass = fc->bind_pass,
            .bind_pass_len = fc->bind_pass_len,
            .tls = fc->ldap_tls,
            .ca_file = fc->ldap_ca_file,
            /* Half the request's time: a second server still has the other half. */
            .op_timeout_ms = t / 2,
            .connect_timeout_ms = FG_MIN(t / 2, 3000u),
    };
}

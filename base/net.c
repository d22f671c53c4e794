#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

uint16_t net_addr_port(const union net_addr *a)
{
    return ntohs(a->sa.sa_family == AF_INET6 ? a->v6.sin6_port : a->v4.sin_port);
}

void net_addr_set_port(union net_addr *a, uint16_t port)
{
    if (a->sa.sa_family == AF_INET6)
        a->v6.sin6_port = htons(port);
    else
        a->v4.sin_port = htons(port);
}

static int net_parse_port(const char *s, uint16_t *port)
{
    char *end;
    if (*s < '0' || *s > '9')
        return FG_ERROR;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v == 0 || v > 65535)
        return FG_ERROR;
    *port = (uint16_t)v;
    return FG_OK;
}

int net_parse_binding(const char *s, union net_addr *a, const char **why_r)
{
    char host[INET6_ADDRSTRLEN + 2];
    const char *colon;
    uint16_t port;

    memset(a, 0, sizeof *a);
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':' || (size_t)(close - s - 1) >= sizeof host) {
            *why_r = "expected [IPv6]:port";
            return FG_ERROR;
        }
        memcpy(host, s + 1, (size_t)(close - s - 1));
        host[close - s - 1] = 0;
        colon = close + 1;
        a->v6.sin6_family = AF_INET6;
        if (inet_pton(AF_INET6, host, &a->v6.sin6_addr) != 1) {
            *why_r = "invalid IPv6 address";
            return FG_ERROR;
        }
    } else {
        colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= sizeof host) {
            *why_r = "expected address:port";
            return FG_ERROR;
        }
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = 0;
        a->v4.sin_family = AF_INET;
        if (inet_pton(AF_INET, host, &a->v4.sin_addr) != 1) {
            *why_r = "invalid IPv4 address (IPv6 addresses go in brackets)";
            return FG_ERROR;
        }
    }
    if (net_parse_port(colon + 1, &port) != FG_OK) {
        *why_r = "invalid port";
        return FG_ERROR;
    }
    net_addr_set_port(a, port);
    return FG_OK;
}

void net_addr_ip(const union net_addr *a, char *ip, size_t n)
{
    if (a->sa.sa_family == AF_INET6) {
        const struct in6_addr *in6 = &a->v6.sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(in6))
            inet_ntop(AF_INET, &in6->s6_addr[12], ip, (socklen_t)n);
        else
            inet_ntop(AF_INET6, in6, ip, (socklen_t)n);
    } else if (a->sa.sa_family == AF_INET) {
        inet_ntop(AF_INET, &a->v4.sin_addr, ip, (socklen_t)n);
    } else {
        snprintf(ip, n, "unknown");
    }
}

void net_addr_str(const union net_addr *a, char *s, size_t n)
{
    char ip[INET6_ADDRSTRLEN];
    net_addr_ip(a, ip, sizeof ip);
    if (strchr(ip, ':'))
        snprintf(s, n, "[%s]:%u", ip, net_addr_port(a));
    else
        snprintf(s, n, "%s:%u", ip, net_addr_port(a));
}

int net_listen(const union net_addr *a, int backlog)
{
    int one = 1;
    int fd = socket(a->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return FG_ERROR;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        (a->sa.sa_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0) ||
        bind(fd, &a->sa, net_addr_len(a)) < 0 || listen(fd, backlog) < 0) {
        int err = errno;
        close(fd);
        errno = err; /* the caller says why */
        return FG_ERROR;
    }
    return fd;
}

bool net_addr_is_loopback(const union net_addr *a)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (a->sa.sa_family == AF_INET)
        return (ntohl(a->v4.sin_addr.s_addr) >> 24) == 127;
    const uint8_t *b = a->v6.sin6_addr.s6_addr;
    if (memcmp(b, mapped, 12) == 0)
        return b[12] == 127;
    return IN6_IS_ADDR_LOOPBACK(&a->v6.sin6_addr);
}

size_t net_addr_bytes(const union net_addr *a, uint8_t out[16])
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (a->sa.sa_family == AF_INET) {
        memcpy(out, &a->v4.sin_addr, 4);
        return 4;
    }
    if (a->sa.sa_family != AF_INET6)
        return 0;
    const uint8_t *b = a->v6.sin6_addr.s6_addr;
    if (memcmp(b, mapped, 12) == 0) {
        memcpy(out, b + 12, 4);
        return 4;
    }
    memcpy(out, b, 16);
    return 16;
}

/* One "addr[/prefix]" item, trimmed. */
static int net_cidr_parse(const char *item, size_t n, struct net_cidr *c)
{
    char buf[INET6_ADDRSTRLEN + 8];
    if (n == 0 || n >= sizeof buf)
        return FG_ERROR;
    memcpy(buf, item, n);
    buf[n] = 0;
    char *slash = strchr(buf, '/');
    unsigned long prefix = 0;
    if (slash) {
        char *end;
        *slash = 0;
        if (slash[1] < '0' || slash[1] > '9')
            return FG_ERROR;
        prefix = strtoul(slash + 1, &end, 10);
        if (*end || prefix > 128)
            return FG_ERROR;
    }
    memset(c, 0, sizeof *c);
    if (inet_pton(AF_INET, buf, c->b) == 1)
        c->len = 4;
    else if (inet_pton(AF_INET6, buf, c->b) == 1)
        c->len = 16;
    else
        return FG_ERROR;
    if (!slash)
        prefix = c->len * 8u;
    if (prefix > c->len * 8u)
        return FG_ERROR;
    c->prefix = (uint8_t)prefix;
    return FG_OK;
}

int net_cidr_parse_list(const char *s, struct net_cidr *out, unsigned max, char *why,
                        size_t why_len)
{
    unsigned n = 0;
    while (*s) {
        while (*s == ' ' || *s == '\t' || *s == ',')
            s++;
        if (!*s)
            break;
        size_t len = strcspn(s, ", \t");
        if (n == max) {
            snprintf(why, why_len, "more than %u networks", max);
            return -1;
        }
        if (net_cidr_parse(s, len, &out[n]) != FG_OK) {
            snprintf(why, why_len, "'%.*s' is not an address or an address/prefix network",
                     (int)FG_MIN(len, (size_t)64), s);
            return -1;
        }
        n++;
        s += len;
    }
    return (int)n;
}

static bool net_cidr_has(const struct net_cidr *c, const uint8_t *b, size_t len)
{
    if (c->len != len)
        return false;
    unsigned full = c->prefix / 8u, rest = c->prefix % 8u;
    if (memcmp(c->b, b, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (c->b[full] & mask) == (b[full] & mask);
}

bool net_cidr_match(const struct net_cidr *nets, unsigned n, const union net_addr *a)
{
    uint8_t b[16];
    size_t len = net_addr_bytes(a, b);
    for (unsigned i = 0; i < n && len; i++)
        if (net_cidr_has(&nets[i], b, len))
            return true;
    return false;
}

#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
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
    /* TCP_NODELAY is inherited by every accepted socket: commands and
     * replies are small and go at once, without a setsockopt per client. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
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

int net_parse_cidr(const char *s, struct net_cidr *c, const char **why_r)
{
    char host[INET6_ADDRSTRLEN];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);

    memset(c, 0, sizeof *c);
    if (n == 0 || n >= sizeof host) {
        *why_r = "expected an address or address/bits";
        return FG_ERROR;
    }
    memcpy(host, s, n);
    host[n] = 0;
    c->family = strchr(host, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(c->family, host, c->addr) != 1) {
        *why_r = c->family == AF_INET6 ? "invalid IPv6 address" : "invalid IPv4 address";
        return FG_ERROR;
    }
    unsigned max = c->family == AF_INET6 ? 128 : 32;
    c->bits = (uint8_t)max;
    if (slash) {
        char *end;
        errno = 0;
        unsigned long b = strtoul(slash + 1, &end, 10);
        if (slash[1] < '0' || slash[1] > '9' || *end || errno || b > max) {
            *why_r = max == 32 ? "invalid prefix length (0 to 32)"
                               : "invalid prefix length (0 to 128)";
            return FG_ERROR;
        }
        c->bits = (uint8_t)b;
    }
    for (unsigned i = c->bits; i < max; i++)
        if (c->addr[i / 8] & (0x80 >> (i % 8))) {
            *why_r = "address has bits set past the prefix length";
            return FG_ERROR;
        }
    return FG_OK;
}

bool net_cidr_match(const struct net_cidr *c, const union net_addr *a)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    const uint8_t *b;
    int family = a->sa.sa_family;

    if (family == AF_INET) {
        b = (const uint8_t *)&a->v4.sin_addr;
    } else if (family == AF_INET6) {
        b = a->v6.sin6_addr.s6_addr;
        if (c->family == AF_INET && memcmp(b, mapped, 12) == 0) {
            b += 12;
            family = AF_INET;
        }
    } else {
        return false;
    }
    if (family != c->family)
        return false;
    unsigned full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(b, c->addr, full) != 0)
        return false;
    return rest == 0 || ((b[full] ^ c->addr[full]) & (0xff00 >> rest) & 0xff) == 0;
}

void net_cidr_str(const struct net_cidr *c, char *s, size_t n)
{
    char ip[INET6_ADDRSTRLEN];
    inet_ntop(c->family, c->addr, ip, sizeof ip);
    if (c->bits == (c->family == AF_INET6 ? 128 : 32))
        snprintf(s, n, "%s", ip);
    else
        snprintf(s, n, "%s/%u", ip, c->bits);
}

bool net_addr_same(const union net_addr *a, const union net_addr *b)
{
    return a->sa.sa_family == b->sa.sa_family && net_addr_len(a) == net_addr_len(b) &&
           memcmp(a, b, net_addr_len(a)) == 0;
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
        char item[INET6_ADDRSTRLEN + 8];
        const char *reason = "too long";
        if (n == max) {
            snprintf(why, why_len, "more than %u networks", max);
            return -1;
        }
        if (len >= sizeof item || (memcpy(item, s, len), item[len] = 0,
                                   net_parse_cidr(item, &out[n], &reason) != FG_OK)) {
            snprintf(why, why_len, "'%.*s': %s", (int)FG_MIN(len, (size_t)64), s, reason);
            return -1;
        }
        n++;
        s += len;
    }
    return (int)n;
}

bool net_cidr_match_any(const struct net_cidr *nets, unsigned n, const union net_addr *a)
{
    for (unsigned i = 0; i < n; i++)
        if (net_cidr_match(&nets[i], a))
            return true;
    return false;
}

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

/* Socket addresses: parsing Exchange-style bindings, formatting, listening. */
#ifndef FG_NET_H
#define FG_NET_H

#include "common.h"

#include <netinet/in.h>
#include <sys/socket.h>

/* An IPv4 or IPv6 socket address, small enough to keep per connection. */
union net_addr {
    struct sockaddr sa;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
};

static inline socklen_t net_addr_len(const union net_addr *a)
{
    return a->sa.sa_family == AF_INET6 ? sizeof a->v6 : sizeof a->v4;
}

uint16_t net_addr_port(const union net_addr *a);
void net_addr_set_port(union net_addr *a, uint16_t port);

/*
 * Parses "1.2.3.4:143" or "[::1]:143". Returns FG_OK, or FG_ERROR with a
 * reason in *why_r.
 */
int net_parse_binding(const char *s, union net_addr *a, const char **why_r);

/* Writes the address without port into ip (INET6_ADDRSTRLEN bytes). An
 * IPv4-mapped IPv6 address is written as IPv4. */
void net_addr_ip(const union net_addr *a, char *ip, size_t n);

/* Writes "ip:port" or "[ip]:port". */
void net_addr_str(const union net_addr *a, char *s, size_t n);

/* True for 127.0.0.0/8, ::1 and IPv4-mapped 127.x: traffic that never
 * leaves the machine. */
bool net_addr_is_loopback(const union net_addr *a);

/* An address block: an IPv4 or IPv6 prefix, as "10.0.0.0/8" or "::1". */
struct net_cidr {
    uint8_t family; /* AF_INET or AF_INET6 */
    uint8_t bits;   /* prefix length */
    uint8_t addr[16];
};

/*
 * Parses "ADDRESS" or "ADDRESS/BITS" (IPv6 without brackets). Bits past the
 * prefix must be zero. Returns FG_OK, or FG_ERROR with a reason in *why_r.
 */
int net_parse_cidr(const char *s, struct net_cidr *c, const char **why_r);

/* True when a's address is inside c. An IPv4-mapped IPv6 address matches
 * as IPv4. */
bool net_cidr_match(const struct net_cidr *c, const union net_addr *a);

/* Writes "ADDRESS/BITS", or just "ADDRESS" for a single host: what
 * net_parse_cidr reads back. */
void net_cidr_str(const struct net_cidr *c, char *s, size_t n);

/* True when a and b are the same address and port. */
bool net_addr_same(const union net_addr *a, const union net_addr *b);

/*
 * An address's bytes for comparing and counting: 4 for IPv4 (an IPv4-mapped
 * IPv6 address counts as the IPv4 address it carries), 16 for IPv6. Returns
 * the length, 0 for another family.
 */
size_t net_addr_bytes(const union net_addr *a, uint8_t out[16]);

/*
 * Parses a comma-separated list of networks (net_parse_cidr's form) into
 * out (at most max). Returns the number parsed, or -1 with a reason in why
 * (why_len bytes) naming the item at fault.
 */
int net_cidr_parse_list(const char *s, struct net_cidr *out, unsigned max, char *why,
                        size_t why_len);

/* True when a lies in one of the n networks. */
bool net_cidr_match_any(const struct net_cidr *nets, unsigned n, const union net_addr *a);

/*
 * Opens a non-blocking listening socket with SO_REUSEPORT, so that every
 * worker binds its own socket to the same address. Returns the fd, or
 * FG_ERROR with errno set.
 */
int net_listen(const union net_addr *a, int backlog);

#endif

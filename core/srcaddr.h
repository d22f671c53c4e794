/*
 * SourceAddresses: backend connections spread over local addresses, as
 * Dovecot's login_source_ips and nginx's proxy_bind do. Each address has its
 * own ~28,000 ephemeral ports toward one backend address and port, so a
 * gateway that opens thousands of backend connections a second does not run
 * out of them.
 */
#ifndef FG_SRCADDR_H
#define FG_SRCADDR_H

#include "config.h"

/*
 * Binds fd, a new socket of the given family not yet connected, to the next
 * of the list's addresses of that family, round-robin per thread, with port
 * 0 and IP_BIND_ADDRESS_NO_PORT: connect() then picks the port against the
 * whole 4-tuple. An address that cannot be bound (EADDRNOTAVAIL: not on this
 * host) is logged, passed over for a minute by every worker, and the next one
 * is tried. With no usable address of the family, the kernel picks, as
 * without the setting.
 */
void srcaddr_bind(const struct source_addrs *l, int fd, int family);

/* Bind failures since start, for tests and the load script's report. */
unsigned long srcaddr_failures(void);

#endif

/* SourceAddresses: see srcaddr.h. */
#include "srcaddr.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>

/* How long an address that failed to bind is passed over before it is
 * tried again (it may have been added to the host since). */
#define SRCADDR_RETRY_MS 60000

/* By list position: until when (fg_clock_ms) the address is passed over.
 * Shared by the workers; the list is the one configuration's. */
static _Atomic uint64_t srcaddr_down_until[CFG_MAX_SOURCES];
static _Atomic unsigned long srcaddr_nfail;

/* The next position to try, per worker thread and family. */
static _Thread_local unsigned srcaddr_next[2];

unsigned long srcaddr_failures(void)
{
    return atomic_load_explicit(&srcaddr_nfail, memory_order_relaxed);
}

/* The address failed: logged once per minute it is passed over, not once
 * per connection. */
static void srcaddr_down(const union net_addr *a, unsigned i, int err, uint64_t now)
{
    atomic_fetch_add_explicit(&srcaddr_nfail, 1, memory_order_relaxed);
    uint64_t until = atomic_load_explicit(&srcaddr_down_until[i], memory_order_relaxed);
    if (until > now ||
        !atomic_compare_exchange_strong(&srcaddr_down_until[i], &until, now + SRCADDR_RETRY_MS))
        return;
    char ip[INET6_ADDRSTRLEN];
    net_addr_ip(a, ip, sizeof ip);
    struct log_line l;
    log_begin(&l, LOG_WARN, "source_address_error");
    log_cstr(&l, "address", ip);
    log_cstr(&l, "reason", strerror(err));
    log_fmt(&l, "retry_s", "%u", SRCADDR_RETRY_MS / 1000);
    log_end(&l);
}

static bool srcaddr_try(const union net_addr *src, int fd)
{
    union net_addr a = *src;
    net_addr_set_port(&a, 0);
    return bind(fd, &a.sa, net_addr_len(&a)) == 0;
}

void srcaddr_bind(const struct source_addrs *l, int fd, int family)
{
    if (l->n == 0)
        return;
    unsigned *next = &srcaddr_next[family == AF_INET6];
    uint64_t now = 0;
    bool noport_set = false;
    for (unsigned k = 0; k < l->n; k++) {
        unsigned i = (*next + k) % l->n;
        const union net_addr *a = &l->a[i];
        if (a->sa.sa_family != family)
            continue;
        if (!now)
            now = fg_clock_ms();
        if (atomic_load_explicit(&srcaddr_down_until[i], memory_order_relaxed) > now)
            continue;
        if (!noport_set) {
            /* Without it bind() would pick a port for the address alone,
             * and a busy address would run out after ~28,000 connections
             * whatever their destinations. */
            int one = 1;
            setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
            noport_set = true;
        }
        if (srcaddr_try(a, fd)) {
            *next = i + 1;
            return;
        }
        srcaddr_down(a, i, errno, now);
    }
}

#include "stats.h"

#include "../directory/thrstore.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef FG_VERSION
#define FG_VERSION "dev"
#endif

/* The backend hosts' health, summed (show backends has each host). */
static void stats_backends_info(const struct bhost_table *t, FILE *out)
{
    fprintf(out,
            "backend_hosts: %u\nbackend_hosts_down: %u\nbackend_down_total: %llu\n"
            "backend_up_total: %llu\nbackend_skipped_total: %llu\n",
            atomic_load(&t->n), bhost_down_count(t), (unsigned long long)atomic_load(&t->downs),
            (unsigned long long)atomic_load(&t->ups), (unsigned long long)atomic_load(&t->skipped));
}

static void stats_cache_info(const struct route_cache *rc, FILE *out)
{
    const struct rc_stats *c = &rc->stats;
    fprintf(out,
            "route_cache_entries: %u\nroute_cache_hits_total: %llu\n"
            "route_cache_misses_total: %llu\nroute_cache_negative_hits_total: %llu\n"
            "route_cache_coalesced_total: %llu\nroute_cache_evictions_total: %llu\n"
            "route_cache_stale_retries_total: %llu\ncredential_cache_hits_total: %llu\n"
            "credential_cache_misses_total: %llu\nroute_cache_served_stale_total: %llu\n",
            atomic_load(&rc->entries), (unsigned long long)atomic_load(&c->hits),
            (unsigned long long)atomic_load(&c->misses),
            (unsigned long long)atomic_load(&c->negative),
            (unsigned long long)atomic_load(&c->coalesced),
            (unsigned long long)atomic_load(&c->evictions),
            (unsigned long long)atomic_load(&c->stale),
            (unsigned long long)atomic_load(&c->cred_hits),
            (unsigned long long)atomic_load(&c->cred_misses),
            (unsigned long long)atomic_load(&c->served_stale));
}

/* The limits' refusals, the accept pauses, and what the limits count now. */
/* Backend TLS handshakes that resumed a session (tls_conn_resume): also
 * tls_resumptions_total{side="backend"} in the metrics. */
static void stats_backend_resumed_info(const struct stats *st, FILE *out)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < st->nworkers; i++)
        n += atomic_load(&st->workers[i].metrics.backend_tls_resumed);
    fprintf(out, "backend_tls_resumed_total: %llu\n", (unsigned long long)n);
}

static void stats_limits_info(const struct stats *st, FILE *out)
{
    uint64_t conns = 0, ip = 0, user = 0, paused = 0;
    for (unsigned i = 0; i < st->nworkers; i++) {
        const struct worker_stats *s = &st->workers[i].stats;
        conns += atomic_load(&s->refused_max_conns);
        ip += atomic_load(&s->refused_per_ip);
        user += atomic_load(&s->refused_per_user);
        paused += atomic_load(&s->accept_paused);
    }
    fprintf(out,
            "refused_max_connections_total: %llu\nrefused_per_ip_total: %llu\n"
            "refused_per_user_total: %llu\naccept_paused_total: %llu\n",
            (unsigned long long)conns, (unsigned long long)ip, (unsigned long long)user,
            (unsigned long long)paused);
    if (!st->limits)
        return;
    fprintf(out, "counted_per_ip: %u\ncounted_per_user: %u\nlimits_overflow_total: %llu\n",
            atomic_load(&st->limits->held[LIMITS_PER_IP]),
            atomic_load(&st->limits->held[LIMITS_PER_USER]),
            (unsigned long long)atomic_load(&st->limits->overflowed));
}

/* ThrottleStore: whether the fleet's counters are in use now. */
static void stats_throttle_store(struct throttle *t, FILE *out)
{
    struct ts_info i;
    bool fleet = ts_info(t, &i);
    fprintf(out,
            "throttle_store: %s\nthrottle_store_up: %d\nthrottle_store_errors_total: %llu\n"
            "throttle_store_sent_total: %llu\nthrottle_store_dropped_total: %llu\n"
            "throttle_store_learned_total: %llu\n",
            fleet ? "redis" : "local", i.up, (unsigned long long)i.errors,
            (unsigned long long)i.sent, (unsigned long long)i.dropped,
            (unsigned long long)i.learned);
}

/* The throttle's decisions and what it holds. */
static void stats_throttle_info(struct throttle *t, FILE *out)
{
    static const char *const names[THR_REASON_COUNT] = {
            [THR_EXEMPT] = "throttle_exempt_total",
            [THR_ADDR_DELAY] = "throttle_address_delayed_total",
            [THR_ADDR_BANNED] = "throttle_address_refused_total",
            [THR_ACCOUNT_LOCKED] = "throttle_account_unfamiliar_total",
            [THR_ACCOUNT_FAMILIAR] = "throttle_account_familiar_total",
            [THR_REPEAT_PASSWORD] = "throttle_repeat_password_total",
    };
    uint64_t na, nacc, nf;
    for (int r = THR_EXEMPT; r < THR_REASON_COUNT; r++)
        fprintf(out, "%s: %llu\n", names[r], (unsigned long long)atomic_load(&t->stats.reasons[r]));
    thr_counts(t, &na, &nacc, &nf);
    fprintf(out,
            "throttle_address_failures_total: %llu\nthrottle_account_failures_total: %llu\n"
            "throttle_bans_total: %llu\nthrottle_evictions_total: %llu\n"
            "throttle_addresses: %llu\nthrottle_accounts: %llu\nthrottle_familiar_places: %llu\n",
            (unsigned long long)atomic_load(&t->stats.addr_failures),
            (unsigned long long)atomic_load(&t->stats.account_failures),
            (unsigned long long)atomic_load(&t->stats.bans),
            (unsigned long long)atomic_load(&t->stats.evictions), (unsigned long long)na,
            (unsigned long long)nacc, (unsigned long long)nf);
    stats_throttle_store(t, out);
}

/* PROXY protocol headers accepted and connections refused over one. */
static void stats_proxy_info(const struct stats *st, FILE *out)
{
    uint64_t acc = 0, ref = 0;
    for (unsigned i = 0; i < st->nworkers; i++) {
        acc += atomic_load(&st->workers[i].stats.proxy_accepted);
        ref += atomic_load(&st->workers[i].stats.proxy_refused);
    }
    fprintf(out, "proxy_accepted_total: %llu\nproxy_refused_total: %llu\n", (unsigned long long)acc,
            (unsigned long long)ref);
}

static void stats_hist_add(const struct metrics_hist *h, uint64_t *count, uint64_t *sum_us)
{
    for (unsigned b = 0; b <= METRICS_BUCKETS; b++)
        *count += atomic_load_explicit(&h->bucket[b], memory_order_relaxed);
    *sum_us += atomic_load_explicit(&h->sum_us, memory_order_relaxed);
}

/* The logon and directory histograms' sums and counts, over every worker
 * and protocol: a mean over an interval for "forestgate ctl watch". */
static void stats_latency_info(const struct stats *st, FILE *out)
{
    uint64_t ln = 0, lsum = 0, dn = 0, dsum = 0;
    for (unsigned i = 0; i < st->nworkers; i++) {
        const struct metrics_worker *m = &st->workers[i].metrics;
        for (int p = 0; p < FG_PROTO_COUNT; p++)
            stats_hist_add(&m->logon[p], &ln, &lsum);
        stats_hist_add(&m->dir, &dn, &dsum);
    }
    fprintf(out,
            "logon_latency_seconds_sum: %.6f\nlogon_latency_seconds_count: %llu\n"
            "directory_latency_seconds_sum: %.6f\ndirectory_latency_seconds_count: %llu\n",
            (double)lsum / 1e6, (unsigned long long)ln, (double)dsum / 1e6, (unsigned long long)dn);
}

static void stats_info(const struct stats *st, FILE *out)
{
    uint64_t acc = 0, ref = 0, ok = 0, fail = 0, berr = 0, tmo = 0, rel0 = 0, rel1 = 0, pw = 0;
    uint64_t hs = 0, res = 0, tfail = 0, bhs = 0, btls = 0, bclear = 0, waits = 0, bwaits = 0;
    uint64_t cqes = 0;
    uint32_t conns = 0, pre = 0, login = 0, relay = 0, closing = 0, bfds = 0, pipes = 0, busy = 0;

    for (unsigned i = 0; i < st->nworkers; i++) {
        const struct worker_stats *s = &st->workers[i].stats;
        acc += atomic_load(&s->accepted);
        ref += atomic_load(&s->refused);
        ok += atomic_load(&s->logins_ok);
        fail += atomic_load(&s->logins_failed);
        berr += atomic_load(&s->backend_errors);
        tmo += atomic_load(&s->timeouts);
        pw += atomic_load(&s->relay_copies);
        waits += atomic_load(&s->waits);
        bwaits += atomic_load(&s->batched_waits);
        cqes += atomic_load(&s->completions);
        rel0 += atomic_load(&s->relayed[0]);
        rel1 += atomic_load(&s->relayed[1]);
        hs += atomic_load(&s->tls_handshakes);
        res += atomic_load(&s->tls_resumed);
        tfail += atomic_load(&s->tls_failed);
        bhs += atomic_load(&s->backend_tls_handshakes);
        btls += atomic_load(&s->logins_backend_tls);
        bclear += atomic_load(&s->logins_backend_clear);
        conns += atomic_load(&s->conns);
        pre += atomic_load(&s->preauth);
        login += atomic_load(&s->login);
        relay += atomic_load(&s->relay);
        closing += atomic_load(&s->closing);
        bfds += atomic_load(&s->backend_fds);
        pipes += atomic_load(&s->pipes);
        busy += atomic_load(&s->pipes_busy);
    }
    fprintf(out,
            "version: %s\ntls_library: %s\nworkers: %u\nslots: %u\nconnections: %u\npreauth: %u\n"
            "login: %u\n"
            "relay: %u\nclosing: %u\nbackend_connections: %u\npipes: %u\npipes_busy: %u\n"
            "accepted_total: %llu\nrefused_total: %llu\nlogins_ok_total: %llu\n"
            "logins_failed_total: %llu\nbackend_errors_total: %llu\ntimeouts_total: %llu\n"
            "relayed_client_to_backend_bytes: %llu\nrelayed_backend_to_client_bytes: %llu\n"
            "relay_copies_total: %llu\n",
            FG_VERSION, FG_WOLFSSL_BUILD, st->nworkers, st->slots, conns, pre, login, relay,
            closing, bfds, pipes, busy, (unsigned long long)acc, (unsigned long long)ref,
            (unsigned long long)ok, (unsigned long long)fail, (unsigned long long)berr,
            (unsigned long long)tmo, (unsigned long long)rel0, (unsigned long long)rel1,
            (unsigned long long)pw);
    fprintf(out,
            "tls_handshakes_total: %llu\ntls_resumed_total: %llu\ntls_failed_total: %llu\n"
            "backend_tls_handshakes_total: %llu\nlogins_backend_tls_total: %llu\n"
            "logins_backend_clear_total: %llu\n",
            (unsigned long long)hs, (unsigned long long)res, (unsigned long long)tfail,
            (unsigned long long)bhs, (unsigned long long)btls, (unsigned long long)bclear);
    stats_backend_resumed_info(st, out);
    fprintf(out, "waits_total: %llu\nbatched_waits_total: %llu\ncompletions_total: %llu\n",
            (unsigned long long)waits, (unsigned long long)bwaits, (unsigned long long)cqes);
    stats_limits_info(st, out);
    stats_proxy_info(st, out);
    stats_latency_info(st, out);
    log_counters_print(out);
    if (st->bhosts)
        stats_backends_info(st->bhosts, out);
    if (st->dir && st->dir->nthreads > 0) {
        const struct dir_stats *d = &st->dir->stats;
        fprintf(out,
                "directory_threads: %u\ndirectory_in_flight: %u\ndirectory_requests_total: %llu\n"
                "directory_timeouts_total: %llu\ndirectory_unavailable_total: %llu\n"
                "ldap_requests_total: %llu\nldap_servers_down_total: %llu\n",
                st->dir->nthreads, atomic_load(&d->in_flight),
                (unsigned long long)atomic_load(&d->requests),
                (unsigned long long)atomic_load(&d->timeouts),
                (unsigned long long)atomic_load(&d->unavailable),
                (unsigned long long)atomic_load(&d->ldap_requests),
                (unsigned long long)atomic_load(&d->ldap_down));
    }
    if (st->dir && st->dir->cache_on)
        stats_cache_info(&st->dir->cache, out);
    if (st->dir && st->dir->thr && st->dir->thr->on)
        stats_throttle_info(st->dir->thr, out);
}

/* "show cache [prefix]" and "flush cache [name]"; false for other commands. */
static bool stats_cache_command(const struct stats *st, const char *cmd, FILE *out)
{
    const char *arg;
    if (strncmp(cmd, "show cache", 10) == 0 && (cmd[10] == 0 || cmd[10] == ' ')) {
        arg = cmd + 10 + strspn(cmd + 10, " ");
        if (st->dir)
            dir_cache_show(st->dir, arg, out);
        return true;
    }
    if (strncmp(cmd, "flush cache", 11) == 0 && (cmd[11] == 0 || cmd[11] == ' ')) {
        arg = cmd + 11 + strspn(cmd + 11, " ");
        unsigned n = st->dir ? dir_cache_flush(st->dir, arg) : 0;
        fprintf(out, "flushed %u entr%s\n", n, n == 1 ? "y" : "ies");
        log_msg(LOG_INFO, "cache_flush", "the stats socket flushed %u route cache entr%s%s%s", n,
                n == 1 ? "y" : "ies", *arg ? " for " : "", arg);
        return true;
    }
    return false;
}

/* "disable backend HOST" / "enable backend HOST". */
static bool stats_backend_command(const struct stats *st, const char *cmd, FILE *out)
{
    bool off = strncmp(cmd, "disable backend", 15) == 0;
    if (!off && strncmp(cmd, "enable backend", 14) != 0)
        return false;
    const char *verb = off ? "disable" : "enable";
    const char *host = cmd + (off ? 15 : 14);
    if (*host && *host != ' ')
        return false;
    host += strspn(host, " ");
    if (!*host || strchr(host, ' ')) {
        fprintf(out, "error: usage: %s backend HOST (a name or address, with :port or not)\n",
                verb);
        return true;
    }
    unsigned n = st->bhosts ? bhost_set_disabled(st->bhosts, host, off) : 0;
    if (n == 0)
        fprintf(out,
                "error: no backend host %s; show backends lists them (a host is known once a "
                "logon has used it)\n",
                host);
    else
        fprintf(out, "%sd %u backend host%s\n", verb, n, n == 1 ? "" : "s");
    return true;
}

void stats_command(const struct stats *st, const char *cmd, FILE *out)
{
    if (stats_cache_command(st, cmd, out) || stats_backend_command(st, cmd, out))
        return;
    if (strcmp(cmd, "flush throttle") == 0) {
        if (st->dir && st->dir->thr)
            thr_flush(st->dir->thr);
        fprintf(out, "flushed the throttle: every address and account starts again\n");
        log_msg(LOG_INFO, "throttle_flush",
                "the stats socket flushed the throttle's addresses and accounts");
        return;
    }
    if (strcmp(cmd, "show info") == 0)
        stats_info(st, out);
    else if (strcmp(cmd, "show settings") == 0)
        config_dump(st->cfg, out);
    else if (strcmp(cmd, "show backends") == 0 && st->bhosts)
        bhost_dump(st->bhosts, out, bhost_now_ms());
    else if (strcmp(cmd, "help") == 0 || cmd[0] == 0)
        fprintf(out,
                "show info      counters and current connections\n"
                "show settings [SECTION [NAME]]  the effective configuration, or one section\n"
                "               (imap, pop3, backend, directory, forest NAME, throttle ...)\n"
                "show metrics   the counters in Prometheus's text format\n"
                "show sessions [user NAME | client ADDRESS | backend HOST]\n"
                "               each connection: client, user, mailbox, backend, phase, TLS, "
                "age, bytes\n"
                "kick user NAME | kick session ID  end sessions (the client hears BYE)\n"
                "show backends  each backend host: up, down or disabled, its back-off, counters\n"
                "disable backend HOST | enable backend HOST  no new sessions to HOST, or again\n"
                "reload         reload the TLS certificates (as SIGHUP)\n"
                "drain [SECONDS]  stop accepting, exit when the sessions end (default 60 s)\n"
                "show cache [PREFIX]  route cache entries (names starting with PREFIX)\n"
                "flush cache [NAME]   drop every route cache entry, or NAME's\n"
                "flush throttle       forget failed logons: unblock every address and account\n"
                "set SETTING VALUE    change a setting now (\"set\" alone lists those it can)\n");
    else
        fprintf(out, "Unknown command \"%s\". Try \"help\".\n", cmd);
}

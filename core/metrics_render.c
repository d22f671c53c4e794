/*
 * The metrics rendered in Prometheus's text format, summed over the
 * workers. The names and labels are listed in README's "Metrics".
 */
#include "metrics_render.h"

#include "../directory/thrstore.h"
#include "metrics.h"

#include <string.h>

#ifndef FG_VERSION
#define FG_VERSION "dev"
#endif
#ifndef FG_WOLFSSL_VERSION
#define FG_WOLFSSL_VERSION "unknown"
#endif
#ifdef FG_WOLFSSL_FAST
#define METRICS_TLS_FAST "true"
#else
#define METRICS_TLS_FAST "false"
#endif

static const char *const bucket_le[METRICS_BUCKETS + 1] = {
        "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
        "0.25",  "0.5",    "1",     "2.5",  "5",     "10",   "+Inf",
};
static const char *const proto_names[FG_PROTO_COUNT] = {"imap", "pop3"};
static const char *const phase_names[MP_COUNT] = {"preauth", "login", "relay", "closing"};
/* Label values: no backslash, so a query needs no escaping. */
static const char *const form_names[METRICS_FORMS] = {
        [LN_INVALID] = "invalid",
        [LN_USER] = "user",
        [LN_UPN] = "upn",
        [LN_DOMAIN_USER] = "domain_user",
        [LN_UPN_ALIAS] = "upn_alias",
        [LN_DOMAIN_UPN] = "domain_upn",
        [LN_DOMAIN_USER_ALIAS] = "domain_user_alias",
};
static const char *const status_names[METRICS_STATUSES] = {
        [LOGIN_OK] = "ok",
        [LOGIN_FAILED] = "failed",
        [LOGIN_DENIED] = "denied",
        [LOGIN_EXPIRED] = "expired",
        [LOGIN_UNAVAILABLE] = "unavailable",
        [LOGIN_IN_USE] = "in_use",
        [LOGIN_TOO_MANY] = "too_many",
};

static void mh(FILE *out, const char *name, const char *type, const char *help)
{
    fprintf(out, "# HELP forestgate_%s %s\n# TYPE forestgate_%s %s\n", name, help, name, type);
}

static void mv(FILE *out, const char *name, uint64_t v)
{
    fprintf(out, "forestgate_%s %llu\n", name, (unsigned long long)v);
}

/* One sample with one label: forestgate_NAME{LABEL="VALUE"} V. */
static void ml(FILE *out, const char *name, const char *label, const char *value, uint64_t v)
{
    fprintf(out, "forestgate_%s{%s=\"%s\"} %llu\n", name, label, value, (unsigned long long)v);
}

/* A family of one sample without labels. */
static void m1(FILE *out, const char *name, const char *type, const char *help, uint64_t v)
{
    mh(out, name, type, help);
    mv(out, name, v);
}

static uint64_t ld(const _Atomic uint64_t *p)
{
    return atomic_load_explicit(p, memory_order_relaxed);
}

static uint32_t ld32(const _Atomic uint32_t *p)
{
    return atomic_load_explicit(p, memory_order_relaxed);
}

/* Sums a counter of every worker's struct worker_stats. */
#define SUM_STAT(st, f)                                                                            \
    ({                                                                                             \
        uint64_t s_ = 0;                                                                           \
        for (unsigned i_ = 0; i_ < (st)->nworkers; i_++)                                           \
            s_ += atomic_load_explicit(&(st)->workers[i_].stats.f, memory_order_relaxed);          \
        s_;                                                                                        \
    })
#define SUM_M(st, f)                                                                               \
    ({                                                                                             \
        uint64_t s_ = 0;                                                                           \
        for (unsigned i_ = 0; i_ < (st)->nworkers; i_++)                                           \
            s_ += atomic_load_explicit(&(st)->workers[i_].metrics.f, memory_order_relaxed);        \
        s_;                                                                                        \
    })

/* One histogram's samples, from per-worker buckets: the +Inf bucket and
 * the count are the buckets' total, so they agree even mid-update. */
static void metrics_hist_out(FILE *out, const char *name, const char *labels,
                             const struct metrics_hist *const *hs, unsigned n)
{
    uint64_t b[METRICS_BUCKETS + 1] = {0}, sum_us = 0, cum = 0;
    for (unsigned w = 0; w < n; w++) {
        for (unsigned i = 0; i <= METRICS_BUCKETS; i++)
            b[i] += ld(&hs[w]->bucket[i]);
        sum_us += ld(&hs[w]->sum_us);
    }
    const char *sep = labels[0] ? "," : "";
    for (unsigned i = 0; i <= METRICS_BUCKETS; i++) {
        cum += b[i];
        fprintf(out, "forestgate_%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels, sep, bucket_le[i],
                (unsigned long long)cum);
    }
    const char *open = labels[0] ? "{" : "", *close = labels[0] ? "}" : "";
    fprintf(out, "forestgate_%s_sum%s%s%s %.6f\n", name, open, labels, close, (double)sum_us / 1e6);
    fprintf(out, "forestgate_%s_count%s%s%s %llu\n", name, open, labels, close,
            (unsigned long long)cum);
}

static void metrics_build(const struct stats *st, FILE *out)
{
    mh(out, "build_info", "gauge", "The version and TLS library of this forestgate (always 1).");
    fprintf(out,
            "forestgate_build_info{version=\"%s\",tls_library=\"wolfSSL %s\","
            "tls_accelerated=\"%s\"} 1\n",
            FG_VERSION, FG_WOLFSSL_VERSION, METRICS_TLS_FAST);
    m1(out, "workers", "gauge", "Worker threads.", st->nworkers);
    m1(out, "connection_slots", "gauge", "Connection slots, all workers together.", st->slots);
}

static void metrics_connections(const struct stats *st, FILE *out)
{
    mh(out, "connections", "gauge", "Client connections open now, by protocol and phase.");
    for (unsigned p = 0; p < FG_PROTO_COUNT; p++)
        for (unsigned ph = 0; ph < MP_COUNT; ph++) {
            uint64_t v = 0;
            for (unsigned w = 0; w < st->nworkers; w++)
                v += ld32(&st->workers[w].metrics.phase[p][ph]);
            fprintf(out, "forestgate_connections{protocol=\"%s\",phase=\"%s\"} %llu\n",
                    proto_names[p], phase_names[ph], (unsigned long long)v);
        }
    mh(out, "connections_accepted_total", "counter", "Client connections accepted, by protocol.");
    for (unsigned p = 0; p < FG_PROTO_COUNT; p++)
        fprintf(out, "forestgate_connections_accepted_total{protocol=\"%s\"} %llu\n",
                proto_names[p], (unsigned long long)SUM_M(st, accepted[p]));
    m1(out, "connections_refused_total", "counter",
       "Client connections closed at accept: a limit, no free slot, a banned address, stopping.",
       SUM_STAT(st, refused));
    m1(out, "timeouts_total", "counter", "Connections closed by a phase's timeout.",
       SUM_STAT(st, timeouts));
    m1(out, "accept_paused_total", "counter",
       "Times a listener paused accepting for want of descriptors or memory.",
       SUM_STAT(st, accept_paused));
    mh(out, "proxy_headers_total", "counter", "PROXY protocol headers, by result.");
    ml(out, "proxy_headers_total", "result", "accepted", SUM_STAT(st, proxy_accepted));
    ml(out, "proxy_headers_total", "result", "refused", SUM_STAT(st, proxy_refused));
}

static void metrics_refusals(const struct stats *st, FILE *out)
{
    const struct throttle *t = st->dir ? st->dir->thr : NULL;
    uint64_t thr_addr = t ? ld(&t->stats.reasons[THR_ADDR_BANNED]) : 0;
    uint64_t thr_acct = t ? ld(&t->stats.reasons[THR_ACCOUNT_LOCKED]) +
                                        ld(&t->stats.reasons[THR_ACCOUNT_FAMILIAR])
                          : 0;
    mh(out, "refusals_total", "counter",
       "Connections and logons refused by a limit: MaxConnections, MaxConnectionFromSingleIP, "
       "MaxConnectionsPerUser, the address and account throttles.");
    ml(out, "refusals_total", "limit", "max_connections", SUM_STAT(st, refused_max_conns));
    ml(out, "refusals_total", "limit", "per_ip", SUM_STAT(st, refused_per_ip));
    ml(out, "refusals_total", "limit", "per_user", SUM_STAT(st, refused_per_user));
    ml(out, "refusals_total", "limit", "throttle_address", thr_addr);
    ml(out, "refusals_total", "limit", "throttle_account", thr_acct);
}

static void metrics_logons(const struct stats *st, FILE *out)
{
    const struct metrics_hist *hs[st->nworkers ? st->nworkers : 1];
    char labels[64];
    mh(out, "logons_total", "counter",
       "Logon attempts, by protocol, result and the form of the name typed.");
    for (unsigned p = 0; p < FG_PROTO_COUNT; p++)
        for (unsigned r = 0; r < METRICS_STATUSES; r++)
            for (unsigned f = 0; f < METRICS_FORMS; f++)
                fprintf(out,
                        "forestgate_logons_total{protocol=\"%s\",result=\"%s\",form=\"%s\"} "
                        "%llu\n",
                        proto_names[p], status_names[r], form_names[f],
                        (unsigned long long)SUM_M(st, logons[p][r][f]));
    mh(out, "logon_duration_seconds", "histogram",
       "From the client's LOGIN, AUTHENTICATE or PASS to the answer: the backend session, or the "
       "failure.");
    for (unsigned p = 0; p < FG_PROTO_COUNT; p++) {
        for (unsigned w = 0; w < st->nworkers; w++)
            hs[w] = &st->workers[w].metrics.logon[p];
        snprintf(labels, sizeof labels, "protocol=\"%s\"", proto_names[p]);
        metrics_hist_out(out, "logon_duration_seconds", labels, hs, st->nworkers);
    }
    mh(out, "backend_logons_total", "counter",
       "Logons that reached a backend session, by the backend leg's encryption.");
    ml(out, "backend_logons_total", "leg", "tls", SUM_STAT(st, logins_backend_tls));
    ml(out, "backend_logons_total", "leg", "clear", SUM_STAT(st, logins_backend_clear));
}

static void metrics_backends(const struct stats *st, FILE *out)
{
    const struct bhost_table *t = st->bhosts;
    m1(out, "backend_connects_total", "counter", "Connections to backend hosts attempted.",
       SUM_M(st, backend_connects));
    m1(out, "backend_connect_failures_total", "counter",
       "Backend hosts that failed before they were usable (no connection, greeting or TLS).",
       SUM_M(st, backend_connect_failures));
    m1(out, "backend_errors_total", "counter",
       "Logons answered unavailable: no backend host, or the directory down.",
       SUM_STAT(st, backend_errors));
    m1(out, "backend_connections", "gauge", "Backend sockets open now.", SUM_STAT(st, backend_fds));
    m1(out, "backend_hosts", "gauge", "Backend hosts known.", t ? atomic_load(&t->n) : 0);
    m1(out, "backend_hosts_down", "gauge", "Backend hosts marked down now.",
       t ? bhost_down_count(t) : 0);
    m1(out, "backend_host_downs_total", "counter", "Times a backend host was marked down.",
       t ? ld(&t->downs) : 0);
    m1(out, "backend_host_ups_total", "counter", "Times a backend host came back up.",
       t ? ld(&t->ups) : 0);
    m1(out, "backend_host_skips_total", "counter", "Times a logon passed a host that was down by.",
       t ? ld(&t->skipped) : 0);
}

static void metrics_relay_tls(const struct stats *st, FILE *out)
{
    mh(out, "relayed_bytes_total", "counter", "Bytes relayed between clients and backends.");
    ml(out, "relayed_bytes_total", "direction", "client_to_backend", SUM_STAT(st, relayed[0]));
    ml(out, "relayed_bytes_total", "direction", "backend_to_client", SUM_STAT(st, relayed[1]));
    m1(out, "relay_copies_total", "counter",
       "Relay chunks copied through memory because no pipe was free.", SUM_STAT(st, relay_copies));
    m1(out, "worker_waits_total", "counter",
       "Times a worker slept in the kernel waiting for completions.", SUM_STAT(st, waits));
    m1(out, "worker_batched_waits_total", "counter",
       "Of those, the waits that gathered completions for BatchWaitMicroseconds.",
       SUM_STAT(st, batched_waits));
    m1(out, "worker_completions_total", "counter",
       "io_uring completions the workers handled (waits per completion: how well they batch).",
       SUM_STAT(st, completions));
    m1(out, "relay_pipes", "gauge", "Relay pipes open.", SUM_STAT(st, pipes));
    m1(out, "relay_pipes_busy", "gauge", "Relay pipes holding bytes now.",
       SUM_STAT(st, pipes_busy));
    mh(out, "tls_handshakes_total", "counter", "TLS handshakes completed, by side.");
    ml(out, "tls_handshakes_total", "side", "client", SUM_STAT(st, tls_handshakes));
    ml(out, "tls_handshakes_total", "side", "backend", SUM_STAT(st, backend_tls_handshakes));
    mh(out, "tls_resumptions_total", "counter", "TLS handshakes that resumed a session, by side.");
    ml(out, "tls_resumptions_total", "side", "client", SUM_STAT(st, tls_resumed));
    ml(out, "tls_resumptions_total", "side", "backend", SUM_M(st, backend_tls_resumed));
    m1(out, "tls_handshake_failures_total", "counter", "Client TLS handshakes that failed.",
       SUM_STAT(st, tls_failed));
}

static void metrics_directory(const struct stats *st, FILE *out)
{
    const struct dir *d = st->dir;
    const struct dir_stats *ds = d ? &d->stats : NULL;
    const struct metrics_hist *hs[st->nworkers ? st->nworkers : 1];
    m1(out, "directory_threads", "gauge", "Directory threads.", d ? d->nthreads : 0);
    m1(out, "directory_in_flight", "gauge", "Directory requests being resolved now.",
       ds ? ld32(&ds->in_flight) : 0);
    m1(out, "directory_requests_total", "counter", "Directory resolutions started.",
       ds ? ld(&ds->requests) : 0);
    m1(out, "directory_timeouts_total", "counter",
       "Directory requests answered unavailable after RequestTimeout.", ds ? ld(&ds->timeouts) : 0);
    m1(out, "directory_unavailable_total", "counter",
       "Directory requests answered unavailable, timeouts included.",
       ds ? ld(&ds->unavailable) : 0);
    m1(out, "ldap_operations_total", "counter", "LDAP searches and binds sent, retries included.",
       ds ? ld(&ds->ldap_requests) : 0);
    m1(out, "ldap_servers_down_total", "counter", "Times an LDAP server was marked down.",
       ds ? ld(&ds->ldap_down) : 0);
    mh(out, "directory_request_duration_seconds", "histogram",
       "A logon's directory request, from queued to answered (the static route included).");
    for (unsigned w = 0; w < st->nworkers; w++)
        hs[w] = &st->workers[w].metrics.dir;
    metrics_hist_out(out, "directory_request_duration_seconds", "", hs, st->nworkers);
}

static void metrics_cache(const struct stats *st, FILE *out)
{
    const struct route_cache *rc = st->dir && st->dir->cache_on ? &st->dir->cache : NULL;
    const struct rc_stats *c = rc ? &rc->stats : NULL;
    m1(out, "route_cache_entries", "gauge", "Route cache entries.",
       rc ? atomic_load(&rc->entries) : 0);
    m1(out, "route_cache_hits_total", "counter", "Routes found in the cache.",
       c ? ld(&c->hits) : 0);
    m1(out, "route_cache_misses_total", "counter", "Names not in the cache, or expired.",
       c ? ld(&c->misses) : 0);
    m1(out, "route_cache_negative_hits_total", "counter", "Cached \"not found\" entries used.",
       c ? ld(&c->negative) : 0);
    m1(out, "route_cache_coalesced_total", "counter",
       "Requests that waited for another logon's resolution of the same name.",
       c ? ld(&c->coalesced) : 0);
    m1(out, "route_cache_evictions_total", "counter", "Entries dropped past RouteCacheMaxEntries.",
       c ? ld(&c->evictions) : 0);
    m1(out, "route_cache_stale_retries_total", "counter",
       "Cached routes that failed at the backend and were resolved again.", c ? ld(&c->stale) : 0);
    m1(out, "route_cache_served_stale_total", "counter",
       "Expired routes used because the directory was down.", c ? ld(&c->served_stale) : 0);
    m1(out, "credential_cache_hits_total", "counter",
       "Logons the credential cache answered without a bind.", c ? ld(&c->cred_hits) : 0);
    m1(out, "credential_cache_misses_total", "counter",
       "Credential entries found with another password: a real bind.", c ? ld(&c->cred_misses) : 0);
}

static void metrics_throttle(const struct stats *st, FILE *out)
{
    static const char *const reasons[THR_REASON_COUNT] = {
            [THR_EXEMPT] = "exempt",
            [THR_ADDR_DELAY] = "address_delayed",
            [THR_ADDR_BANNED] = "address_refused",
            [THR_ACCOUNT_LOCKED] = "account_unfamiliar",
            [THR_ACCOUNT_FAMILIAR] = "account_familiar",
            [THR_REPEAT_PASSWORD] = "repeat_password",
    };
    struct throttle *t = st->dir && st->dir->thr && st->dir->thr->on ? st->dir->thr : NULL;
    uint64_t na = 0, nacc = 0, nf = 0;
    struct ts_info i = {0};
    mh(out, "throttle_decisions_total", "counter", "The throttle's decisions, by reason.");
    for (int r = THR_EXEMPT; r < THR_REASON_COUNT; r++)
        fprintf(out, "forestgate_throttle_decisions_total{reason=\"%s\"} %llu\n", reasons[r],
                (unsigned long long)(t ? ld(&t->stats.reasons[r]) : 0));
    mh(out, "throttle_failures_total", "counter", "Failed logons counted, per address or account.");
    ml(out, "throttle_failures_total", "kind", "address", (t ? ld(&t->stats.addr_failures) : 0));
    ml(out, "throttle_failures_total", "kind", "account", (t ? ld(&t->stats.account_failures) : 0));
    m1(out, "throttle_bans_total", "counter", "Addresses refused (each ban once).",
       t ? ld(&t->stats.bans) : 0);
    m1(out, "throttle_evictions_total", "counter", "Throttle records dropped for MaxEntries.",
       t ? ld(&t->stats.evictions) : 0);
    if (t)
        thr_counts(t, &na, &nacc, &nf);
    mh(out, "throttle_tracked", "gauge", "Records the throttle holds, by kind.");
    ml(out, "throttle_tracked", "kind", "addresses", na);
    ml(out, "throttle_tracked", "kind", "accounts", nacc);
    ml(out, "throttle_tracked", "kind", "familiar_places", nf);
    bool fleet = t && ts_info(t, &i);
    m1(out, "throttle_store_up", "gauge", "1 while ThrottleStore's Redis answers (0: local only).",
       fleet && i.up);
    m1(out, "throttle_store_errors_total", "counter", "ThrottleStore calls that failed.", i.errors);
    m1(out, "throttle_store_sent_total", "counter", "Address failures counted in ThrottleStore.",
       i.sent);
    m1(out, "throttle_store_dropped_total", "counter",
       "Address failures not sent: the store down or its queue full.", i.dropped);
}

/* The log files' writer: lines written, lost and waiting, per log. */
static void metrics_logs(FILE *out)
{
    static const struct {
        const char *name, *type, *help;
        size_t off;
    } fams[] = {
            {"log_lines_written_total", "counter", "Lines written to the log.",
             offsetof(struct log_counters, written)},
            {"log_lines_dropped_total", "counter",
             "Lines lost: the log's queue was full or its file took nothing.",
             offsetof(struct log_counters, dropped)},
            {"log_rollovers_total", "counter", "Log files rolled over.",
             offsetof(struct log_counters, rollovers)},
            {"log_lines_queued", "gauge", "Lines waiting in the log's queue.",
             offsetof(struct log_counters, queued)},
    };
    struct log_counters c[LOG_FILE_COUNT];
    for (int f = 0; f < LOG_FILE_COUNT; f++)
        log_counters((enum log_file)f, &c[f]);
    for (size_t i = 0; i < FG_ARRAY_SIZE(fams); i++) {
        mh(out, fams[i].name, fams[i].type, fams[i].help);
        for (int f = 0; f < LOG_FILE_COUNT; f++) {
            uint64_t v;
            memcpy(&v, (const char *)&c[f] + fams[i].off, sizeof v);
            fprintf(out, "forestgate_%s{log=\"%s\"} %llu\n", fams[i].name,
                    log_file_name((enum log_file)f), (unsigned long long)v);
        }
    }
}

void metrics_render(const struct stats *st, FILE *out)
{
    metrics_build(st, out);
    metrics_connections(st, out);
    metrics_refusals(st, out);
    metrics_logons(st, out);
    metrics_backends(st, out);
    metrics_relay_tls(st, out);
    metrics_directory(st, out);
    metrics_cache(st, out);
    metrics_throttle(st, out);
    metrics_logs(out);
}

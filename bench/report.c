/*
 * The end of a run: a table for a person (stderr) and JSON for scripts
 * (bench/compare reads it). Latencies are reported in microseconds.
 */
#include "report.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const double QUANTILES[] = {0.5, 0.9, 0.99, 0.999};
static const char *const QNAMES[] = {"p50", "p90", "p99", "p99.9"};

static double us(uint64_t ns)
{
    return (double)ns / 1000.0;
}

static uint64_t errors_total(const struct fgb_kstats *k)
{
    uint64_t n = 0;
    for (int e = 0; e < E_N; e++)
        n += k->errors[e];
    return n;
}

/* All kinds together: what the top-level numbers of a run are. */
static void report_total(const struct fgb_result *r, struct fgb_kstats *all)
{
    memset(all, 0, sizeof(*all));
    hist_init(&all->lat);
    for (int k = 0; k < K_N; k++) {
        all->ops += r->k[k].ops;
        all->bytes += r->k[k].bytes;
        for (int e = 0; e < E_N; e++)
            all->errors[e] += r->k[k].errors[e];
        hist_merge(&all->lat, &r->k[k].lat);
    }
}

static void table_row(FILE *f, const char *name, const struct fgb_kstats *k, double secs)
{
    fprintf(f, "%-10s %10llu %10.1f %9.1f", name, (unsigned long long)k->ops,
            secs > 0 ? (double)k->ops / secs : 0.0, secs > 0 ? (double)k->bytes / secs / 1e6 : 0.0);
    for (size_t i = 0; i < sizeof(QUANTILES) / sizeof(*QUANTILES); i++)
        fprintf(f, " %9.0f", us(hist_quantile(&k->lat, QUANTILES[i])));
    fprintf(f, " %9.0f %7llu\n", us(k->lat.max_ns), (unsigned long long)errors_total(k));
}

void report_table(FILE *f, const struct fgb_opts *o, const struct fgb_result *r)
{
    struct fgb_kstats all;
    report_total(r, &all);
    fprintf(f, "\nforestgate-bench %s %s, %d sessions, %d threads, %.1f s measured\n",
            o->scenario == SC_MIXED ? "mixed" : (o->proto == FGB_IMAP ? "imap" : "pop3"),
            fgb_scenario_names[o->scenario], o->conns, o->threads, r->measured_s);
    fprintf(f, "%-10s %10s %10s %9s %9s %9s %9s %9s %9s %7s\n", "", "ops", "ops/s", "MB/s",
            "p50 us", "p90 us", "p99 us", "p99.9 us", "max us", "errors");
    if (o->scenario == SC_MIXED) {
        table_row(f, "pop3_poll", &r->k[K_POP3_POLL], r->measured_s);
        table_row(f, "imap_stay", &r->k[K_IMAP_STAY], r->measured_s);
    }
    table_row(f, "total", &all, r->measured_s);
    fprintf(f, "connections: %llu opened, %llu failed, %llu open at most, %llu logged in at most\n",
            (unsigned long long)r->opened, (unsigned long long)r->failed,
            (unsigned long long)r->peak_open, (unsigned long long)r->peak_logged_in);
    if (errors_total(&all)) {
        fprintf(f, "errors:");
        for (int e = 0; e < E_N; e++)
            if (all.errors[e])
                fprintf(f, " %s %llu", fgb_err_names[e], (unsigned long long)all.errors[e]);
        fprintf(f, "\n");
    }
    if (o->tls || o->starttls)
        fprintf(f, "TLS: %llu handshakes, %llu of them resumed\n",
                (unsigned long long)r->tls_handshakes, (unsigned long long)r->tls_resumed);
    if (o->rate > 0)
        fprintf(f, "open loop at %.0f logins/s: %llu scheduled logins never started\n", o->rate,
                (unsigned long long)r->sched_missed);
}

/* Writes s as a JSON string. */
static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* The CDF as about 100 points, denser towards the tail, for charts. */
static void json_cdf(FILE *f, const struct hist *h)
{
    fprintf(f, "[");
    int first = 1;
    double last_q = -1;
    for (int i = 0; i <= 100; i++) {
        /* q runs 0..0.9 linearly, then 0.9, 0.99, 0.999... in steps. */
        double q = i <= 60 ? i / 66.6 : 1.0 - 0.1 * pow(10.0, -(i - 60) / 10.0);
        if (q <= last_q || q > 1.0)
            continue;
        last_q = q;
        fprintf(f, "%s[%.1f, %.6f]", first ? "" : ", ", us(hist_quantile(h, q)), q);
        first = 0;
    }
    if (h->count)
        fprintf(f, "%s[%.1f, 1.0]", first ? "" : ", ", us(h->max_ns));
    fprintf(f, "]");
}

static void json_kind(FILE *f, const struct fgb_kstats *k, double secs, const char *indent)
{
    fprintf(f, "%s\"ops\": %llu, \"ops_per_s\": %.2f,\n", indent, (unsigned long long)k->ops,
            secs > 0 ? (double)k->ops / secs : 0.0);
    fprintf(f, "%s\"bytes\": %llu, \"mb_per_s\": %.3f,\n", indent, (unsigned long long)k->bytes,
            secs > 0 ? (double)k->bytes / secs / 1e6 : 0.0);
    fprintf(f, "%s\"latency_us\": {\"count\": %llu, \"mean\": %.1f", indent,
            (unsigned long long)k->lat.count, hist_mean(&k->lat) / 1000.0);
    for (size_t i = 0; i < sizeof(QUANTILES) / sizeof(*QUANTILES); i++)
        fprintf(f, ", \"%s\": %.1f", QNAMES[i], us(hist_quantile(&k->lat, QUANTILES[i])));
    fprintf(f, ", \"max\": %.1f},\n", us(k->lat.max_ns));
    fprintf(f, "%s\"latency_cdf\": ", indent);
    json_cdf(f, &k->lat);
    fprintf(f, ",\n%s\"errors\": {", indent);
    for (int e = 0; e < E_N; e++)
        fprintf(f, "%s\"%s\": %llu", e ? ", " : "", fgb_err_names[e],
                (unsigned long long)k->errors[e]);
    fprintf(f, "},\n%s\"errors_total\": %llu", indent, (unsigned long long)errors_total(k));
}

static void json_write(FILE *f, const struct fgb_opts *o, const struct fgb_result *r)
{
    struct fgb_kstats all;
    report_total(r, &all);
    fprintf(f, "{\n  \"tool\": \"forestgate-bench\", \"version\": \"%s\",\n", FG_VERSION);
    fprintf(f, "  \"proto\": \"%s\", \"scenario\": \"%s\", \"host\": ",
            o->scenario == SC_MIXED ? "mixed" : (o->proto == FGB_IMAP ? "imap" : "pop3"),
            fgb_scenario_names[o->scenario]);
    json_str(f, o->host);
    fprintf(f, ", \"port\": %d,\n", o->scenario == SC_MIXED ? o->imap_port : o->port);
    fprintf(f, "  \"conns\": %d, \"threads\": %d, \"rate\": %.1f, \"duration_s\": %.3f,\n",
            o->conns, o->threads, o->rate, r->measured_s);
    fprintf(f, "  \"op\": \"%s\",\n", fgb_scenario_names[o->scenario]);
    json_kind(f, &all, r->measured_s, "  ");
    fprintf(f,
            ",\n  \"connections\": {\"opened\": %llu, \"failed\": %llu, \"peak\": %llu, "
            "\"logged_in_peak\": %llu},\n",
            (unsigned long long)r->opened, (unsigned long long)r->failed,
            (unsigned long long)r->peak_open, (unsigned long long)r->peak_logged_in);
    fprintf(f, "  \"tls\": {\"handshakes\": %llu, \"resumed\": %llu},\n",
            (unsigned long long)r->tls_handshakes, (unsigned long long)r->tls_resumed);
    fprintf(f, "  \"schedule_missed\": %llu", (unsigned long long)r->sched_missed);
    if (o->scenario == SC_MIXED) {
        fprintf(f, ",\n  \"kinds\": {\n");
        for (int k = K_POP3_POLL; k < K_N; k++) {
            fprintf(f, "    \"%s\": {\n", fgb_kind_names[k]);
            json_kind(f, &r->k[k], r->measured_s, "      ");
            fprintf(f, "\n    }%s\n", k + 1 < K_N ? "," : "");
        }
        fprintf(f, "  }");
    }
    fprintf(f, "\n}\n");
}

int report_json(const char *path, const struct fgb_opts *o, const struct fgb_result *r)
{
    FILE *f = strcmp(path, "-") == 0 ? stdout : fopen(path, "w");
    if (!f) {
        fprintf(stderr, "forestgate-bench: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    json_write(f, o, r);
    if (f == stdout)
        return fflush(f) == 0 ? 0 : -1;
    if (fclose(f) != 0) {
        fprintf(stderr, "forestgate-bench: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

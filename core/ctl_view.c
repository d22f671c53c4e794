/*
 * The watch screen: rows of fields read from "show info". The rows are a
 * table, and a field whose key the server does not send is left out, so the
 * screen shows what this build of forestgate counts (a directory's latency
 * appears once show info has directory_latency_seconds_sum and _count).
 */
#include "ctl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How a field's value is shown. */
enum ctl_kind {
    CV_NOW,  /* the value as it is now (a gauge, or a counter's total) */
    CV_RATE, /* the sum of the keys' deltas per second */
    CV_MBPS, /* bytes' delta per second, in MB (10^6 bytes) */
    CV_MEAN, /* milliseconds: delta of KEY_sum (seconds) / delta of KEY_count */
    CV_TEXT, /* the value as text */
};

#define CTL_FIELD_KEYS 3

struct ctl_field {
    const char *label;
    enum ctl_kind kind;
    const char *keys[CTL_FIELD_KEYS]; /* CV_RATE sums them; the others read keys[0] */
};

#define CTL_ROW_FIELDS 7

struct ctl_row {
    const char *title;
    struct ctl_field f[CTL_ROW_FIELDS];
};

/* The title column's width: every row's fields start here. */
#define CTL_TITLE_W 15

static const struct ctl_row ctl_rows[] = {
        {"connections",
         {{"now", CV_NOW, {"connections"}},
          {"preauth", CV_NOW, {"preauth"}},
          {"login", CV_NOW, {"login"}},
          {"relay", CV_NOW, {"relay"}},
          {"closing", CV_NOW, {"closing"}},
          {"to backends", CV_NOW, {"backend_connections"}}}},
        {"connections/s",
         {{"accepted", CV_RATE, {"accepted_total"}},
          {"refused", CV_RATE, {"refused_total"}},
          {"timed out", CV_RATE, {"timeouts_total"}}}},
        {"logons/s",
         {{"ok", CV_RATE, {"logins_ok_total"}},
          {"failed", CV_RATE, {"logins_failed_total"}},
          {"refused by limits",
           CV_RATE,
           {"refused_max_connections_total", "refused_per_ip_total", "refused_per_user_total"}},
          {"backend errors", CV_RATE, {"backend_errors_total"}},
          {"latency ms", CV_MEAN, {"logon_latency_seconds"}}}},
        {"logons total",
         {{"ok", CV_NOW, {"logins_ok_total"}}, {"failed", CV_NOW, {"logins_failed_total"}}}},
        {"directory",
         {{"requests/s", CV_RATE, {"directory_requests_total"}},
          {"in flight", CV_NOW, {"directory_in_flight"}},
          {"latency ms", CV_MEAN, {"directory_latency_seconds"}},
          {"timeouts/s", CV_RATE, {"directory_timeouts_total"}},
          {"unavailable/s", CV_RATE, {"directory_unavailable_total"}},
          {"LDAP requests/s", CV_RATE, {"ldap_requests_total"}}}},
        {"relay MB/s",
         {{"client>backend", CV_MBPS, {"relayed_client_to_backend_bytes"}},
          {"backend>client", CV_MBPS, {"relayed_backend_to_client_bytes"}},
          {"pipes busy", CV_NOW, {"pipes_busy"}}}},
        {"TLS/s",
         {{"handshakes", CV_RATE, {"tls_handshakes_total"}},
          {"resumed", CV_RATE, {"tls_resumed_total"}},
          {"failed", CV_RATE, {"tls_failed_total"}},
          {"to backends", CV_RATE, {"backend_tls_handshakes_total"}}}},
        {"backend hosts",
         {{"known", CV_NOW, {"backend_hosts"}},
          {"down", CV_NOW, {"backend_hosts_down"}},
          {"skipped/s", CV_RATE, {"backend_skipped_total"}}}},
        {"throttle",
         {{"delayed/s", CV_RATE, {"throttle_address_delayed_total"}},
          {"refused/s", CV_RATE, {"throttle_address_refused_total"}},
          {"locked/s", CV_RATE, {"throttle_account_unfamiliar_total"}},
          {"addresses", CV_NOW, {"throttle_addresses"}},
          {"store", CV_TEXT, {"throttle_store"}}}},
        {"log lines",
         {{"written/s",
           CV_RATE,
           {"log_event_written_total", "log_imap_protocol_written_total",
            "log_pop3_protocol_written_total"}},
          {"dropped",
           CV_NOW,
           {"log_event_dropped_total", "log_imap_protocol_dropped_total",
            "log_pop3_protocol_dropped_total"}}}},
        {"route cache",
         {{"hits/s", CV_RATE, {"route_cache_hits_total"}},
          {"misses/s", CV_RATE, {"route_cache_misses_total"}},
          {"entries", CV_NOW, {"route_cache_entries"}}}},
};

unsigned ctl_snap_parse(struct ctl_snap *s, const char *text, size_t len)
{
    const char *p = text, *end = text + len;

    s->n = 0;
    while (p < end && s->n < CTL_SNAP_MAX) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon && colon > p && colon + 1 < eol && colon[1] == ' ') {
            struct ctl_kv *kv = &s->kv[s->n++];
            const char *v = colon + 2;
            size_t kl = (size_t)(colon - p), vl = (size_t)(eol - v);
            if (vl > 0 && v[vl - 1] == '\r')
                vl--;
            snprintf(kv->key, sizeof kv->key, "%.*s", (int)kl, p);
            snprintf(kv->val, sizeof kv->val, "%.*s", (int)vl, v);
            /* What the server sends is drawn on a terminal: no escapes. */
            for (char *c = kv->val; *c; c++)
                if ((unsigned char)*c < 0x20 || *c == 0x7f)
                    *c = '?';
        }
        p = eol + 1;
    }
    return s->n;
}

const char *ctl_snap_get(const struct ctl_snap *s, const char *key)
{
    for (unsigned i = 0; i < s->n; i++)
        if (strcmp(s->kv[i].key, key) == 0)
            return s->kv[i].val;
    return NULL;
}

bool ctl_snap_num(const struct ctl_snap *s, const char *key, double *r)
{
    const char *v = ctl_snap_get(s, key);
    char *end;
    if (!v || !*v)
        return false;
    *r = strtod(v, &end);
    return *end == 0;
}

/* A key with a suffix: "directory_latency_seconds" + "_sum". */
static bool ctl_snap_num2(const struct ctl_snap *s, const char *key, const char *suffix, double *r)
{
    char name[96];
    snprintf(name, sizeof name, "%s%s", key, suffix);
    return ctl_snap_num(s, name, r);
}

/* The sum of a field's keys' values in s; false if any key is missing. */
static bool ctl_field_sum(const struct ctl_field *f, const struct ctl_snap *s, double *r)
{
    *r = 0;
    for (int k = 0; k < CTL_FIELD_KEYS && f->keys[k]; k++) {
        double v;
        if (!ctl_snap_num(s, f->keys[k], &v))
            return false;
        *r += v;
    }
    return true;
}

/* Whether cur has what the field needs to be shown at all. */
static bool ctl_field_present(const struct ctl_field *f, const struct ctl_snap *cur)
{
    double v;
    if (f->kind == CV_TEXT)
        return ctl_snap_get(cur, f->keys[0]) != NULL;
    if (f->kind == CV_MEAN)
        return ctl_snap_num2(cur, f->keys[0], "_sum", &v) &&
               ctl_snap_num2(cur, f->keys[0], "_count", &v);
    return ctl_field_sum(f, cur, &v);
}

/* A counter's delta per second; false when there is nothing to compare. */
static bool ctl_rate(const struct ctl_field *f, const struct ctl_snap *cur,
                     const struct ctl_snap *prev, double dt, double *r)
{
    double a, b;
    if (!prev || dt <= 0 || !ctl_field_sum(f, cur, &a) || !ctl_field_sum(f, prev, &b) || a < b)
        return false;
    *r = (a - b) / dt;
    return true;
}

/* The mean latency over the interval in ms; "-" when nothing was timed. */
static void ctl_mean(const struct ctl_field *f, const struct ctl_snap *cur,
                     const struct ctl_snap *prev, char *out, size_t size)
{
    double s1, c1, s0, c0;
    if (!prev || !ctl_snap_num2(cur, f->keys[0], "_sum", &s1) ||
        !ctl_snap_num2(cur, f->keys[0], "_count", &c1) ||
        !ctl_snap_num2(prev, f->keys[0], "_sum", &s0) ||
        !ctl_snap_num2(prev, f->keys[0], "_count", &c0) || c1 <= c0 || s1 < s0) {
        snprintf(out, size, "-");
        return;
    }
    snprintf(out, size, "%.1f", (s1 - s0) / (c1 - c0) * 1000.0);
}

/* A field's value as text. */
static void ctl_field_value(const struct ctl_field *f, const struct ctl_snap *cur,
                            const struct ctl_snap *prev, double dt, char *out, size_t size)
{
    double v;
    switch (f->kind) {
    case CV_NOW:
        ctl_field_sum(f, cur, &v);
        snprintf(out, size, "%.0f", v);
        break;
    case CV_TEXT:
        snprintf(out, size, "%s", ctl_snap_get(cur, f->keys[0]));
        break;
    case CV_MEAN:
        ctl_mean(f, cur, prev, out, size);
        break;
    case CV_RATE:
    case CV_MBPS:
        if (!ctl_rate(f, cur, prev, dt, &v))
            snprintf(out, size, "-");
        else if (f->kind == CV_MBPS) /* a trickle is not shown as 0.00 */
            snprintf(out, size, v > 0 && v < 1e4 ? "%.4f" : "%.2f", v / 1e6);
        else
            snprintf(out, size, v >= 1000 ? "%.0f" : "%.1f", v);
        break;
    }
}

/* Text appended to a buffer that stops at its end. */
struct ctl_out {
    char *buf;
    size_t size, len;
};

static void ctl_put(struct ctl_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void ctl_put(struct ctl_out *o, const char *fmt, ...)
{
    va_list ap;
    if (o->len + 1 >= o->size)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, o->size - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len = o->len + (size_t)n < o->size ? o->len + (size_t)n : o->size - 1;
}

/* One row: the title, then "label value" fields three spaces apart; a field
 * that would pass width starts a new line under the first field. */
static void ctl_render_row(struct ctl_out *o, const struct ctl_row *row, const struct ctl_snap *cur,
                           const struct ctl_snap *prev, double dt, unsigned width)
{
    size_t col = 0;
    for (int i = 0; i < CTL_ROW_FIELDS && row->f[i].label; i++) {
        const struct ctl_field *f = &row->f[i];
        char val[80];
        if (!ctl_field_present(f, cur))
            continue;
        ctl_field_value(f, cur, prev, dt, val, sizeof val);
        size_t w = strlen(f->label) + 1 + strlen(val);
        if (col == 0) {
            ctl_put(o, "%-*s", CTL_TITLE_W - 1, row->title);
            col = CTL_TITLE_W - 1;
        } else if (col + 3 + w > width) {
            ctl_put(o, "\n%*s", CTL_TITLE_W - 1, "");
            col = CTL_TITLE_W - 1;
        } else {
            ctl_put(o, "  ");
            col += 2;
        }
        ctl_put(o, " %s %s", f->label, val);
        col += 1 + w;
    }
    if (col > 0)
        ctl_put(o, "\n");
}

size_t ctl_view_render(const struct ctl_snap *cur, const struct ctl_snap *prev, double dt,
                       unsigned width, char *buf, size_t size)
{
    struct ctl_out o = {buf, size, 0};
    const char *v;

    if (size == 0)
        return 0;
    buf[0] = 0;
    ctl_put(&o, "forestgate %s", (v = ctl_snap_get(cur, "version")) ? v : "?");
    if ((v = ctl_snap_get(cur, "workers")))
        ctl_put(&o, "   workers %s", v);
    if ((v = ctl_snap_get(cur, "slots")))
        ctl_put(&o, "   slots %s", v);
    ctl_put(&o, "\n\n");
    for (size_t r = 0; r < sizeof ctl_rows / sizeof ctl_rows[0]; r++)
        ctl_render_row(&o, &ctl_rows[r], cur, prev, dt, width);
    return o.len;
}

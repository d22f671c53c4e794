#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

_Atomic enum log_level log_level = LOG_INFO;
_Atomic bool plog_on[FG_PROTO_COUNT];

static const char *const log_level_names[] = {"error", "warning", "info", "debug"};

static size_t log_time(char *dst, size_t n)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    return (size_t)snprintf(dst, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                            tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                            ts.tv_nsec / 1000000);
}

void log_begin(struct log_line *l, enum log_level level, const char *event)
{
    char ts[64]; /* room for any year gmtime_r can give */
    l->skip = !log_enabled(level);
    l->n = 0;
    if (l->skip)
        return;
    log_time(ts, sizeof ts);
    l->n = (size_t)snprintf(l->buf, sizeof l->buf, "ts=%s level=%s event=%s", ts,
                            log_level_names[level], event);
}

/* logfmt needs quotes around an empty value, and around one holding a byte
 * that would end it (space, control bytes) or read as syntax. */
static bool log_needs_quotes(const char *v, size_t n)
{
    if (n == 0)
        return true;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f)
            return true;
    }
    return false;
}

/* How one byte of a value is written: '"' and '\' behind a backslash,
 * control bytes as \xHH, the rest (UTF-8 included) as it is. */
static size_t log_escape(unsigned char c, char out[4])
{
    static const char hex[] = "0123456789abcdef";
    if (c == '"' || c == '\\') {
        out[0] = '\\';
        out[1] = (char)c;
        return 2;
    }
    if (c < 0x20 || c == 0x7f) {
        out[0] = '\\';
        out[1] = 'x';
        out[2] = hex[c >> 4];
        out[3] = hex[c & 15];
        return 4;
    }
    out[0] = (char)c;
    return 1;
}

/* Appends k bytes, all or none, leaving room for a closing quote and the
 * newline: a cut value ends on a whole escape, so it still reads back. */
static bool log_put(struct log_line *l, const char *s, size_t k)
{
    if (l->n + k + 2 >= sizeof l->buf)
        return false;
    memcpy(l->buf + l->n, s, k);
    l->n += k;
    return true;
}

void log_str(struct log_line *l, const char *key, const char *v, size_t n)
{
    if (l->skip)
        return;
    bool quote = log_needs_quotes(v, n);
    int k = snprintf(l->buf + l->n, sizeof l->buf - l->n, " %s=%s", key, quote ? "\"" : "");
    /* A field whose key does not fit is left out whole, not cut. */
    if (k < 0 || l->n + (size_t)k + 2 >= sizeof l->buf)
        return;
    l->n += (size_t)k;
    for (size_t i = 0; i < n; i++) {
        char esc[4];
        if (!log_put(l, esc, log_escape((unsigned char)v[i], esc)))
            break;
    }
    if (quote)
        l->buf[l->n++] = '"';
}

void log_fmt(struct log_line *l, const char *key, const char *fmt, ...)
{
    va_list ap;
    if (l->skip || l->n + 3 >= sizeof l->buf)
        return;
    l->n += (size_t)snprintf(l->buf + l->n, sizeof l->buf - l->n, " %s=", key);
    if (l->n >= sizeof l->buf - 2) {
        l->n = sizeof l->buf - 3;
        return;
    }
    va_start(ap, fmt);
    int k = vsnprintf(l->buf + l->n, sizeof l->buf - 2 - l->n, fmt, ap);
    va_end(ap);
    if (k > 0)
        l->n = FG_MIN(l->n + (size_t)k, sizeof l->buf - 3);
}

void log_end(struct log_line *l)
{
    if (l->skip)
        return;
    l->buf[l->n++] = '\n';
    logq_push(LOG_FILE_EVENT, l->buf, l->n);
}

void log_msg(enum log_level level, const char *event, const char *fmt, ...)
{
    struct log_line l;
    char msg[1024];
    va_list ap;

    log_begin(&l, level, event);
    if (l.skip)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_str(&l, "msg", msg, n < 0 ? 0 : FG_MIN((size_t)n, sizeof msg - 1));
    log_end(&l);
}

void plog_write(enum fg_proto p, const char *session, const char *dir, const char *line, size_t n)
{
    char buf[1024];
    size_t o = log_time(buf, sizeof buf);
    o += (size_t)snprintf(buf + o, sizeof buf - o, " %s %s ", session, dir);
    n = FG_MIN(n, sizeof buf - o - 1);
    memcpy(buf + o, line, n);
    o += n;
    buf[o++] = '\n';
    logq_push(LOG_FILE_IMAP + p, buf, o);
}

#include "logfile.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int logf_split(const char *path, struct logf_name *out)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const char *dot = strrchr(base, '.');
    if (!dot || dot == base)
        dot = base + strlen(base);
    int dn = slash ? snprintf(out->dir, sizeof out->dir, "%.*s",
                              (int)(slash == path ? 1 : slash - path), path)
                   : snprintf(out->dir, sizeof out->dir, ".");
    int sn = snprintf(out->stem, sizeof out->stem, "%.*s", (int)(dot - base), base);
    int en = snprintf(out->ext, sizeof out->ext, "%s", dot);
    if (*base == 0 || dn < 0 || (size_t)dn >= sizeof out->dir || sn < 0 ||
        (size_t)sn >= sizeof out->stem || en < 0 || (size_t)en >= sizeof out->ext)
        return FG_ERROR;
    return FG_OK;
}

int logf_parse_size(const char *v, uint64_t *out)
{
    static const char *const units[] = {"B", "KB", "MB", "GB", "TB"};
    char *end;
    if (strcasecmp(v, "unlimited") == 0) {
        *out = 0;
        return FG_OK;
    }
    if (!isdigit((unsigned char)*v))
        return FG_ERROR;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno)
        return FG_ERROR;
    while (*end == ' ')
        end++;
    unsigned shift = 0;
    if (*end) {
        size_t i = 0;
        while (i < FG_ARRAY_SIZE(units) && strcasecmp(end, units[i]) != 0)
            i++;
        if (i == FG_ARRAY_SIZE(units))
            return FG_ERROR;
        shift = 10 * (unsigned)i;
    }
    if (shift && n > (UINT64_MAX >> shift))
        return FG_ERROR;
    *out = (uint64_t)n << shift;
    return FG_OK;
}

time_t logf_period_start(time_t t, uint32_t period)
{
    return period ? t - t % (time_t)period : t;
}

void logf_stamp(char *dst, size_t n, time_t start, uint32_t period)
{
    struct tm tm;
    gmtime_r(&start, &tm);
    const char *fmt = period >= 86400 ? "%Y%m%d" : period >= 3600 ? "%Y%m%dT%H" : "%Y%m%dT%H%M%S";
    if (strftime(dst, n, fmt, &tm) == 0 && n > 0)
        dst[0] = 0;
}

int logf_rolled_name(char *dst, size_t n, const struct logf_name *nm, const char *stamp,
                     unsigned seq)
{
    int k = snprintf(dst, n, "%s-%s-%u%s", nm->stem, stamp, seq, nm->ext);
    return k < 0 || (size_t)k >= n ? FG_ERROR : FG_OK;
}

/* Digits, n of them at least; returns the first byte after them. */
static const char *logf_digits(const char *s, size_t min)
{
    size_t i = 0;
    while (isdigit((unsigned char)s[i]))
        i++;
    return i >= min ? s + i : NULL;
}

/* STEM-YYYYMMDD[THH[MMSS]]-N.EXT: what logf_rolled_name makes, and nothing
 * else, so retention never touches a file that is not the log's own. */
bool logf_is_rolled(const struct logf_name *nm, const char *file)
{
    size_t sl = strlen(nm->stem), el = strlen(nm->ext), fl = strlen(file);
    if (fl < sl + el + 11 || strncmp(file, nm->stem, sl) != 0 || file[sl] != '-' ||
        strcmp(file + fl - el, nm->ext) != 0)
        return false;
    const char *p = file + sl + 1, *stamp = p;
    p = logf_digits(p, 8);
    if (!p || p - stamp != 8)
        return false;
    if (*p == 'T') {
        const char *t = p + 1;
        p = logf_digits(t, 2);
        if (!p || (p - t != 2 && p - t != 6))
            return false;
    }
    if (*p != '-' || p[1] == '0')
        return false;
    const char *seq = p + 1;
    p = logf_digits(seq, 1);
    return p && p - seq <= 9 && (size_t)(p - file) == fl - el;
}

static int logf_by_mtime(const void *a, const void *b)
{
    const struct logf_old *x = a, *y = b;
    if (x->mtime != y->mtime)
        return x->mtime < y->mtime ? -1 : 1;
    return strcmp(x->name, y->name);
}

size_t logf_pick(struct logf_old *f, size_t n, time_t now, uint32_t max_age, uint64_t quota,
                 uint64_t live)
{
    size_t marked = 0;
    uint64_t total = live;
    if (n == 0)
        return 0;
    qsort(f, n, sizeof *f, logf_by_mtime);
    for (size_t i = 0; i < n; i++) {
        f[i].remove = max_age && f[i].mtime < now - (time_t)max_age;
        if (f[i].remove)
            marked++;
        else
            total += f[i].size;
    }
    for (size_t i = 0; quota && total > quota && i < n; i++) {
        if (f[i].remove)
            continue;
        f[i].remove = true;
        total -= f[i].size;
        marked++;
    }
    return marked;
}

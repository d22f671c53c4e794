/* Splitting a typed logon name: see logon_name.h and docs/login-rules.md section 1. */
#include "logon_name.h"

#include <string.h>

static bool ln_is_sep(char c)
{
    return c == '\\' || c == '/';
}

/* NUL, C0 controls and DEL, and C1 controls (U+0080..U+009F, in UTF-8
 * C2 80..C2 9F): Unicode's category Cc. */
static bool ln_has_control(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return true;
        if (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 &&
            (unsigned char)s[i + 1] <= 0x9f)
            return true;
    }
    return false;
}

static struct ln_part ln_part(size_t off, size_t len)
{
    return (struct ln_part){(uint16_t)off, (uint16_t)len};
}

/* A UPN needs one '@' with something on both sides. */
static bool ln_upn_ok(const char *s, struct ln_part p)
{
    const char *at = memchr(s + p.off, '@', p.len);
    return at && at > s + p.off && at < s + p.off + p.len - 1;
}

/* Fills the parts of a name with s separators (at seps[]) and a '@'s. */
static enum logon_form ln_form(const char *name, size_t n, const size_t *seps, unsigned s,
                               unsigned a, size_t at, struct logon_name *ln)
{
    /* The pieces between separators; none may be empty. */
    struct ln_part piece[3];
    size_t start = 0;
    for (unsigned i = 0; i <= s; i++) {
        size_t end = i < s ? seps[i] : n;
        if (end == start)
            return LN_INVALID;
        piece[i] = ln_part(start, end - start);
        start = end + 1;
    }
    switch (s * 4 + (a > 1 ? 3 : a)) {
    case 0: /* user */
        ln->user = piece[0];
        return LN_USER;
    case 1: /* upn */
        ln->upn = piece[0];
        return ln_upn_ok(name, ln->upn) ? LN_UPN : LN_INVALID;
    case 4: /* domain\user */
        ln->domain = piece[0];
        ln->user = piece[1];
        return LN_DOMAIN_USER;
    case 5: /* upn\alias or domain\upn: where the '@' is decides */
        if (at < seps[0]) {
            ln->upn = piece[0];
            ln->alias = piece[1];
            return ln_upn_ok(name, ln->upn) ? LN_UPN_ALIAS : LN_INVALID;
        }
        ln->domain = piece[0];
        ln->upn = piece[1];
        return ln_upn_ok(name, ln->upn) ? LN_DOMAIN_UPN : LN_INVALID;
    case 8: /* domain\user\alias */
        ln->domain = piece[0];
        ln->user = piece[1];
        ln->alias = piece[2];
        return LN_DOMAIN_USER_ALIAS;
    default: /* two or more '@', or a UPN with two separators */
        return LN_INVALID;
    }
}

enum logon_form logon_name_split(const char *name, size_t n, struct logon_name *ln)
{
    size_t seps[3], at = 0;
    unsigned s = 0, a = 0;

    memset(ln, 0, sizeof *ln);
    if (n == 0 || n > LOGON_NAME_MAX || ln_has_control(name, n))
        return ln->form = LN_INVALID;
    for (size_t i = 0; i < n; i++) {
        if (ln_is_sep(name[i])) {
            if (s == 2)
                return ln->form = LN_INVALID; /* three or more */
            seps[s++] = i;
        } else if (name[i] == '@') {
            a++;
            at = i;
        }
    }
    enum logon_form f = ln_form(name, n, seps, s, a, at, ln);
    if (f == LN_INVALID)
        memset(ln, 0, sizeof *ln);
    return ln->form = f;
}

bool logon_name_is_anonymous(const char *name, const struct logon_name *ln)
{
    struct ln_part p = ln->user;
    if (p.len == 0 && ln->upn.len > 0) {
        const char *at = memchr(name + ln->upn.off, '@', ln->upn.len);
        p = ln_part(ln->upn.off, (size_t)(at - (name + ln->upn.off)));
    }
    return fg_ieq(name + p.off, p.len, "anonymous") || fg_ieq(name + p.off, p.len, "guest");
}

const char *logon_form_name(enum logon_form f)
{
    static const char *const names[] = {
            [LN_INVALID] = "invalid",
            [LN_USER] = "user",
            [LN_UPN] = "upn",
            [LN_DOMAIN_USER] = "domain\\user",
            [LN_UPN_ALIAS] = "upn\\alias",
            [LN_DOMAIN_UPN] = "domain\\upn",
            [LN_DOMAIN_USER_ALIAS] = "domain\\user\\alias",
    };
    return names[f];
}

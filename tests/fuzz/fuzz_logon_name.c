/*
 * libFuzzer target: the logon-name splitter (directory/logon_name.c).
 *
 * The input is a typed name. Its form is checked against a reference written
 * here from docs/login-rules.md section 1, and the parts against the name:
 * every part lies inside it, the present parts tile it in order with one
 * separator between them, a UPN holds its one '@' inside, no other part
 * holds a '@' or a separator, and absent parts are empty. An invalid name
 * leaves every part empty. logon_name_is_anonymous is checked too.
 *
 * The route cache's key (directory/route_key.h) is made from the same name:
 * a key exactly when the name has a form, the form in its first byte, one
 * byte per byte of the name, and the canonical name it spells keys to the
 * same key again. A name of ASCII only keys as its upper-case spelling does.
 */
#include "../../directory/logon_name.h"
#include "../../directory/route_key.h"
#include "fuzz_util.h"

#include <ctype.h>

#include <strings.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool is_sep(char c)
{
    return c == '\\' || c == '/';
}

static bool has_control(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x20 || s[i] == 0x7f)
            return true;
        if (s[i] == 0xc2 && i + 1 < n && s[i + 1] >= 0x80 && s[i + 1] <= 0x9f)
            return true; /* a C1 control in UTF-8 */
    }
    return false;
}

/* '@' count and position in s[from .. to). */
static unsigned count_at(const char *s, size_t from, size_t to, size_t *at_r)
{
    unsigned a = 0;
    for (size_t i = from; i < to; i++)
        if (s[i] == '@') {
            a++;
            *at_r = i;
        }
    return a;
}

/* One '@' with something on both sides of it. */
static bool upn_ok(const char *s, size_t from, size_t to)
{
    size_t at = 0;
    return count_at(s, from, to, &at) == 1 && at > from && at + 1 < to;
}

/* The form, decided the long way. */
static enum logon_form reference_form(const char *s, size_t n)
{
    size_t sep[8], ns = 0, at = 0;
    if (n == 0 || n > LOGON_NAME_MAX || has_control((const uint8_t *)s, n))
        return LN_INVALID;
    for (size_t i = 0; i < n; i++)
        if (is_sep(s[i]) && ns < 8)
            sep[ns++] = i;
    if (ns > 2)
        return LN_INVALID;
    size_t start = 0;
    for (size_t i = 0; i <= ns; i++) { /* no empty piece */
        size_t end = i < ns ? sep[i] : n;
        if (end == start)
            return LN_INVALID;
        start = end + 1;
    }
    unsigned a = count_at(s, 0, n, &at);
    if (a > 1)
        return LN_INVALID;
    if (ns == 0)
        return a == 0 ? LN_USER : upn_ok(s, 0, n) ? LN_UPN : LN_INVALID;
    if (ns == 2)
        return a == 0 ? LN_DOMAIN_USER_ALIAS : LN_INVALID;
    if (a == 0)
        return LN_DOMAIN_USER;
    if (at < sep[0]) /* upn\alias */
        return upn_ok(s, 0, sep[0]) ? LN_UPN_ALIAS : LN_INVALID;
    return upn_ok(s, sep[0] + 1, n) ? LN_DOMAIN_UPN : LN_INVALID;
}

static bool empty(struct ln_part p)
{
    return p.off == 0 && p.len == 0;
}

/* A part that is neither a UPN nor absent: no '@', no separator. */
static void check_plain(const char *s, struct ln_part p)
{
    for (size_t i = p.off; i < (size_t)p.off + p.len; i++)
        FZ_CHECK(s[i] != '@' && !is_sep(s[i]));
}

/* The present parts, in order, with one separator between, are the name. */
static void check_tiling(const char *s, size_t n, const struct ln_part *parts, unsigned k)
{
    size_t pos = 0;
    for (unsigned i = 0; i < k; i++) {
        FZ_CHECK(parts[i].len > 0 && parts[i].off == pos);
        pos += parts[i].len;
        if (i + 1 < k) {
            FZ_CHECK(pos < n && is_sep(s[pos]));
            pos++;
        }
    }
    FZ_CHECK(pos == n);
}

static void check_parts(const char *s, size_t n, const struct logon_name *ln)
{
    struct ln_part order[3];
    unsigned k = 0;
    bool has_domain = false, has_user = false, has_upn = false, has_alias = false;

    switch (ln->form) {
    case LN_USER:
        has_user = true;
        break;
    case LN_UPN:
        has_upn = true;
        break;
    case LN_DOMAIN_USER:
        has_domain = has_user = true;
        break;
    case LN_UPN_ALIAS:
        has_upn = has_alias = true;
        break;
    case LN_DOMAIN_UPN:
        has_domain = has_upn = true;
        break;
    case LN_DOMAIN_USER_ALIAS:
        has_domain = has_user = has_alias = true;
        break;
    default:
        FZ_CHECK(false);
    }
    FZ_CHECK(has_domain != empty(ln->domain) && has_user != empty(ln->user));
    FZ_CHECK(has_upn != empty(ln->upn) && has_alias != empty(ln->alias));
    if (has_domain)
        order[k++] = ln->domain;
    if (has_user)
        order[k++] = ln->user;
    if (has_upn)
        order[k++] = ln->upn;
    if (has_alias)
        order[k++] = ln->alias;
    check_tiling(s, n, order, k);
    check_plain(s, ln->domain);
    check_plain(s, ln->user);
    check_plain(s, ln->alias);
    if (has_upn) {
        FZ_CHECK(upn_ok(s, ln->upn.off, (size_t)ln->upn.off + ln->upn.len));
        for (size_t i = ln->upn.off; i < (size_t)ln->upn.off + ln->upn.len; i++)
            FZ_CHECK(!is_sep(s[i]));
    }
}

/* The account part (sAMAccountName, or the UPN's left side) is anonymous or guest. */
static bool reference_anonymous(const char *s, const struct logon_name *ln)
{
    struct ln_part p = ln->user;
    if (p.len == 0) {
        const char *at = memchr(s + ln->upn.off, '@', ln->upn.len);
        p.off = ln->upn.off;
        p.len = (uint16_t)(at - (s + ln->upn.off));
    }
    return (p.len == 9 && strncasecmp(s + p.off, "anonymous", 9) == 0) ||
           (p.len == 5 && strncasecmp(s + p.off, "guest", 5) == 0);
}

static void check_key(const char *name, size_t size, enum logon_form f)
{
    char k[ROUTE_KEY_MAX], k2[ROUTE_KEY_MAX];
    size_t n = route_key(name, size, k);
    FZ_CHECK((n == 0) == (f == LN_INVALID));
    if (n == 0)
        return;
    FZ_CHECK(n == size + 1 && route_key_form(k) == f);
    char *canon = fz_dup((const uint8_t *)k + 1, n - 1);
    FZ_CHECK(route_key(canon, n - 1, k2) == n && memcmp(k, k2, n) == 0);
    free(canon);
    bool ascii = true;
    for (size_t i = 0; i < size; i++)
        ascii = ascii && (unsigned char)name[i] < 0x80;
    if (ascii) {
        char *up = fz_dup((const uint8_t *)name, size);
        for (size_t i = 0; i < size; i++)
            up[i] = (char)toupper((unsigned char)up[i]);
        FZ_CHECK(route_key(up, size, k2) == n && memcmp(k, k2, n) == 0);
        free(up);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *name = fz_dup(data, size);
    struct logon_name ln;
    enum logon_form f = logon_name_split(name, size, &ln);

    FZ_CHECK(f == ln.form && f == reference_form(name, size));
    FZ_CHECK(logon_form_name(f) != NULL);
    if (f == LN_INVALID) {
        FZ_CHECK(empty(ln.domain) && empty(ln.user) && empty(ln.upn) && empty(ln.alias));
    } else {
        check_parts(name, size, &ln);
        FZ_CHECK(logon_name_is_anonymous(name, &ln) == reference_anonymous(name, &ln));
    }
    check_key(name, size, f);
    free(name);
    return 0;
}

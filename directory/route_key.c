/* The route cache's key. See route_key.h. */
#include "route_key.h"

#include <string.h>

uint32_t route_key_fold(uint32_t cp)
{
    if (cp >= 'A' && cp <= 'Z')
        return cp + 0x20;
    if (cp < 0xc0)
        return cp;
    if (cp <= 0xde)
        return cp == 0xd7 ? cp : cp + 0x20; /* Latin-1, but the multiplication sign */
    /* Latin Extended-A: pairs, upper case first. U+0130/0131 (Turkish i),
     * U+0138 (kra), U+0149 and U+017F (long s) have no one-to-one partner. */
    if ((cp >= 0x100 && cp <= 0x12f) || (cp >= 0x132 && cp <= 0x137) ||
        (cp >= 0x14a && cp <= 0x177))
        return cp | 1;
    if ((cp >= 0x139 && cp <= 0x148) || (cp >= 0x179 && cp <= 0x17e))
        return (cp & 1) ? cp + 1 : cp;
    if (cp == 0x178)
        return 0xff; /* Y with diaeresis: its lower case is in Latin-1 */
    if (cp >= 0x391 && cp <= 0x3a9 && cp != 0x3a2)
        return cp + 0x20; /* Greek capitals; U+03A2 is unassigned */
    if (cp >= 0x410 && cp <= 0x42f)
        return cp + 0x20; /* Cyrillic А..Я */
    if (cp >= 0x400 && cp <= 0x40f)
        return cp + 0x50; /* Cyrillic Ѐ..Џ */
    return cp;
}

/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlong forms, no
 * surrogates, nothing past U+10FFFF), or 0. */
static size_t rk_seq_len(const uint8_t *p, size_t n)
{
    uint8_t b = p[0];
    if (b < 0x80)
        return 1;
    size_t len = b >= 0xc2 && b <= 0xdf   ? 2
                 : b >= 0xe0 && b <= 0xef ? 3
                 : b >= 0xf0 && b <= 0xf4 ? 4
                                          : 0;
    if (len == 0 || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    if ((b == 0xe0 && p[1] < 0xa0) || (b == 0xed && p[1] > 0x9f) || (b == 0xf0 && p[1] < 0x90) ||
        (b == 0xf4 && p[1] > 0x8f))
        return 0;
    return len;
}

static bool rk_valid_utf8(const uint8_t *p, size_t n)
{
    for (size_t i = 0, len; i < n; i += len)
        if ((len = rk_seq_len(p + i, n - i)) == 0)
            return false;
    return true;
}

/*
 * Copies one part, folding its case. Every folded pair lies in one UTF-8
 * length class (ASCII to ASCII, two bytes to two bytes), so the length
 * does not change.
 */
static size_t rk_part(char *out, const uint8_t *p, size_t n, bool fold)
{
    for (size_t i = 0; i < n;) {
        if (!fold || p[i] < 0x80 || (p[i] & 0xe0) != 0xc0) {
            uint8_t b = p[i];
            out[i++] = (char)(fold && b >= 'A' && b <= 'Z' ? b + 0x20 : b);
            continue;
        }
        uint32_t cp = route_key_fold(((uint32_t)(p[i] & 0x1f) << 6) | (p[i + 1] & 0x3f));
        out[i] = (char)(0xc0 | (cp >> 6));
        out[i + 1] = (char)(0x80 | (cp & 0x3f));
        i += 2;
    }
    return n;
}

size_t route_key(const char *name, size_t n, char out[ROUTE_KEY_MAX])
{
    struct logon_name ln;
    if (logon_name_split(name, n, &ln) == LN_INVALID)
        return 0;
    bool fold = rk_valid_utf8((const uint8_t *)name, n);
    /* The parts the form uses, in the order they are typed. */
    const struct ln_part *parts[3];
    unsigned np = 0;
    if (ln.domain.len)
        parts[np++] = &ln.domain;
    parts[np++] = ln.upn.len ? &ln.upn : &ln.user;
    if (ln.alias.len)
        parts[np++] = &ln.alias;
    size_t k = 0;
    out[k++] = (char)('0' + ln.form);
    for (unsigned i = 0; i < np; i++) {
        if (i > 0)
            out[k++] = '\\';
        k += rk_part(out + k, (const uint8_t *)name + parts[i]->off, parts[i]->len, fold);
    }
    return k;
}

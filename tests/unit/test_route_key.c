/*
 * The route cache's key (directory/route_key.h): spellings of one name share
 * a key, names that can resolve differently do not, and case is folded only
 * where the pairs are one to one. Each name is also keyed from a guarded
 * copy, so a read past its end faults.
 */
#include "../../directory/route_key.h"
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>

/* Names in one group share a key; no two groups do. */
static const char *const groups[][6] = {
        {"tuser", "TUSER", "TUser", NULL},
        {"UCLABOR\\tuser", "uclabor\\TUSER", "UCLABOR/tuser", "uclabor/TuSeR", NULL},
        {"uclabor.de\\tuser", "UCLABOR.DE/TUSER", NULL}, /* the DNS name: another key */
        {"tuser.upn@upn.uclabor.de", "TUSER.UPN@UPN.UCLABOR.DE", NULL},
        {"tuser.upn@upn.uclabor.de\\other", "TUSER.UPN@upn.uclabor.de/OTHER", NULL},
        {"UCLABOR\\tuser.upn@upn.uclabor.de", "uclabor/Tuser.Upn@Upn.Uclabor.De", NULL},
        {"UCLABOR\\tuser\\other", "uclabor/TUSER/Other", "UCLABOR\\tuser/other", NULL},
        {"UCLABOR\\other", NULL}, /* another user */
        {"tuser\\x", NULL},       /* not a form of tuser: domain tuser, user x */
        /* Latin-1 and Latin Extended-A pairs */
        {"J\xc3\x9cRGEN", "j\xc3\xbcrgen", "J\xc3\xbcRgen", NULL},
        {"\xc5\x81UKASZ", "\xc5\x82ukasz", NULL},                       /* Ł ł */
        {"\xc5\xb8vonne", "\xc3\xbfvonne", NULL},                       /* Ÿ ÿ */
        {"\xce\x9a\xce\xa9\xce\xa3", "\xce\xba\xcf\x89\xcf\x83", NULL}, /* ΚΩΣ κωσ */
        {"\xd0\x98\xd0\x92\xd0\x90\xd0\x9d", "\xd0\xb8\xd0\xb2\xd0\xb0\xd0\xbd", NULL}, /* ИВАН */
        {"\xd0\x81\xd0\xb6", "\xd1\x91\xd0\xb6", NULL}, /* Ёж ёж */
        /* Not folded: no one-to-one pair AD is sure to share */
        {"\xc4\xb0stanbul", NULL},      /* İ (dotted capital I) */
        {"istanbul", "ISTANBUL", NULL}, /* so not İstanbul's key */
        {"\xc4\xb1stanbul", NULL},      /* ı (dotless i) */
        {"stra\xc3\x9f"
         "e",
         NULL}, /* ß is not "ss" */
        {"strasse", "STRASSE", NULL},
        {"\xe2\x84\xaa"
         "elvin",
         NULL}, /* the Kelvin sign is not K */
        {"kelvin", "KELVIN", NULL},
        {"\xef\xbc\xa1"
         "bc",
         NULL}, /* fullwidth A: kept */
        /* Not valid UTF-8: byte for byte, not even ASCII folded */
        {"AB\xc3", NULL},
        {"ab\xc3", NULL},
        {"\xc1\x81"
         "x",
         NULL}, /* an overlong 'A' is not 'a' */
        {"ax", NULL},
};

static size_t key_of(const char *name, char *out)
{
    size_t n = strlen(name);
    char *g = th_guard_copy(name, n);
    size_t k = route_key(g, n, out);
    th_guard_free(g, n);
    return k;
}

static void test_groups(void)
{
    char keys[FG_ARRAY_SIZE(groups)][ROUTE_KEY_MAX];
    size_t lens[FG_ARRAY_SIZE(groups)];
    for (size_t g = 0; g < FG_ARRAY_SIZE(groups); g++) {
        lens[g] = key_of(groups[g][0], keys[g]);
        CHECKF(lens[g] > 0, "%s: no key", groups[g][0]);
        for (size_t i = 1; groups[g][i]; i++) {
            char k[ROUTE_KEY_MAX];
            size_t n = key_of(groups[g][i], k);
            CHECKF(n == lens[g] && memcmp(k, keys[g], n) == 0, "%s and %s: keys differ",
                   groups[g][0], groups[g][i]);
        }
    }
    for (size_t a = 0; a < FG_ARRAY_SIZE(groups); a++)
        for (size_t b = a + 1; b < FG_ARRAY_SIZE(groups); b++)
            CHECKF(lens[a] != lens[b] || memcmp(keys[a], keys[b], lens[a]) != 0,
                   "%s and %s share a key", groups[a][0], groups[b][0]);
}

/* The key reads as the canonical name, with its form first. */
static void test_readable(void)
{
    static const struct {
        const char *name;
        enum logon_form form;
        const char *canon;
    } rows[] = {
            {"TUser", LN_USER, "tuser"},
            {"UCLABOR/TUser", LN_DOMAIN_USER, "uclabor\\tuser"},
            {"UCLABOR/TUser/Other", LN_DOMAIN_USER_ALIAS, "uclabor\\tuser\\other"},
            {"T.Upn@Upn.De", LN_UPN, "t.upn@upn.de"},
            {"T.Upn@Upn.De/Other", LN_UPN_ALIAS, "t.upn@upn.de\\other"},
            {"UCLABOR/T.Upn@Upn.De", LN_DOMAIN_UPN, "uclabor\\t.upn@upn.de"},
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(rows); i++) {
        char k[ROUTE_KEY_MAX];
        size_t n = key_of(rows[i].name, k);
        CHECK_INT(route_key_form(k), rows[i].form);
        CHECK_MEM(k + 1, n - 1, rows[i].canon);
    }
}

/* Names with no valid form get no key: they are never cached. */
static void test_invalid(void)
{
    static const char *const bad[] = {"",   "\\tuser",   "a\\b\\c\\d", "a@b@c",
                                      "@b", "tab\there", "a\\b@c\\d"};
    char k[ROUTE_KEY_MAX];
    for (size_t i = 0; i < FG_ARRAY_SIZE(bad); i++)
        CHECKF(route_key(bad[i], strlen(bad[i]), k) == 0, "%s has a key", bad[i]);
    /* The longest valid name fits. */
    char name[LOGON_NAME_MAX + 1];
    memset(name, 'A', LOGON_NAME_MAX);
    CHECK_INT(route_key(name, LOGON_NAME_MAX, k), LOGON_NAME_MAX + 1);
    CHECK(k[1] == 'a' && k[LOGON_NAME_MAX] == 'a');
    CHECK_INT(route_key(name, LOGON_NAME_MAX + 1, k), 0);
}

/* The fold is one to one on what it folds: no two code points share a
 * lower case, so it never merges names AD keeps apart by case alone. */
static void test_fold_injective(void)
{
    static uint32_t seen[0x800];
    memset(seen, 0xff, sizeof seen);
    for (uint32_t cp = 0; cp < 0x800; cp++) {
        uint32_t f = route_key_fold(cp);
        CHECKF(f < 0x800, "U+%04X folds out of the 2-byte range", cp);
        if (f == cp || f >= 0x800)
            continue;
        CHECKF(route_key_fold(f) == f, "U+%04X's fold U+%04X folds again", cp, f);
        CHECKF(seen[f] == 0xffffffffu, "U+%04X and U+%04X fold alike", seen[f], cp);
        seen[f] = cp;
    }
    CHECK_INT(route_key_fold(0x130), 0x130);
    CHECK_INT(route_key_fold(0x131), 0x131);
    CHECK_INT(route_key_fold(0x17f), 0x17f);
    CHECK_INT(route_key_fold(0xd7), 0xd7);
}

int main(void)
{
    test_groups();
    test_readable();
    test_invalid();
    test_fold_injective();
    return th_finish("test_route_key");
}

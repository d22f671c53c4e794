/*
 * The logon-name splitter (docs/login-rules.md section 1): every row of its table,
 * the invalid forms, the field-test names of section 6, limits and control
 * characters. Each name is also run from a guarded copy, so a read past its
 * end faults.
 */
#include "../../directory/logon_name.h"
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>

struct row {
    const char *typed;
    enum logon_form form;
    const char *parts; /* "domain|user|upn|alias" */
};

static const struct row rows[] = {
        /* s = 0, a = 0: user */
        {"tuser", LN_USER, "|tuser||"},
        {"Administrator", LN_USER, "|Administrator||"},
        {"t.user-1_x", LN_USER, "|t.user-1_x||"},
        {"pässwörd", LN_USER, "|pässwörd||"},
        {"a b", LN_USER, "|a b||"},
        /* s = 0, a = 1: upn */
        {"tuser.upn@upn.uclabor.de", LN_UPN, "||tuser.upn@upn.uclabor.de|"},
        {"a@b", LN_UPN, "||a@b|"},
        /* s = 1, a = 0: domain\user, with either separator */
        {"UCLABOR\\tuser", LN_DOMAIN_USER, "UCLABOR|tuser||"},
        {"UCLABOR/tuser", LN_DOMAIN_USER, "UCLABOR|tuser||"},
        {"uclabor.de\\tuser", LN_DOMAIN_USER, "uclabor.de|tuser||"},
        /* s = 1, a = 1: the '@' decides */
        {"tuser.upn@upn.uclabor.de\\other", LN_UPN_ALIAS, "||tuser.upn@upn.uclabor.de|other"},
        {"auser@acc.example/linked", LN_UPN_ALIAS, "||auser@acc.example|linked"},
        {"UCLABOR\\tuser.upn@upn.uclabor.de", LN_DOMAIN_UPN, "UCLABOR||tuser.upn@upn.uclabor.de|"},
        {"ACC/auser@acc.example", LN_DOMAIN_UPN, "ACC||auser@acc.example|"},
        /* s = 2, a = 0: domain\user\alias, separators mixed */
        {"UCLABOR\\tuser\\other", LN_DOMAIN_USER_ALIAS, "UCLABOR|tuser||other"},
        {"UCLABOR/tuser\\testalias", LN_DOMAIN_USER_ALIAS, "UCLABOR|tuser||testalias"},
        {"ACC\\auser/linked", LN_DOMAIN_USER_ALIAS, "ACC|auser||linked"},
        /* invalid by count */
        {"a@b@c", LN_INVALID, NULL},                                    /* s 0, a 2 */
        {"x\\a@b@c", LN_INVALID, NULL},                                 /* s 1, a 2 */
        {"a@b@c\\x", LN_INVALID, NULL},                                 /* s 1, a 2 */
        {"UCLABOR\\tuser.upn@upn.uclabor.de\\other", LN_INVALID, NULL}, /* s 2, a 1 */
        {"UCLABOR\\tuser.upn@upn.uclabor.de\\tuser.upn@upn.uclabor.de", LN_INVALID, NULL},
        {"a\\b\\c@d", LN_INVALID, NULL},
        {"a@b\\c\\d", LN_INVALID, NULL},
        {"a\\b\\c\\d", LN_INVALID, NULL}, /* s 3 */
        {"a/b/c/d/e", LN_INVALID, NULL},
        /* empty parts */
        {"", LN_INVALID, NULL},
        {"\\user", LN_INVALID, NULL},
        {"dom\\", LN_INVALID, NULL},
        {"a\\\\b", LN_INVALID, NULL},
        {"/", LN_INVALID, NULL},
        {"a\\b\\", LN_INVALID, NULL},
        {"\\b\\c", LN_INVALID, NULL},
        {"user@", LN_INVALID, NULL},
        {"@dom", LN_INVALID, NULL},
        {"@", LN_INVALID, NULL},
        {"@dom\\alias", LN_INVALID, NULL},
        {"user@\\alias", LN_INVALID, NULL},
        {"dom\\@x", LN_INVALID, NULL},
        {"dom\\x@", LN_INVALID, NULL},
        /* control characters: C0, DEL, C1 (U+0085 is C2 85) */
        {"tu\tser", LN_INVALID, NULL},
        {"tuser\r", LN_INVALID, NULL},
        {"\x1btuser", LN_INVALID, NULL},
        {"tu\x7fser", LN_INVALID, NULL},
        {"tu\xc2\x85ser", LN_INVALID, NULL},
        {"tu\xc2\x9fser", LN_INVALID, NULL},
        {"tu\xc2\xa0ser", LN_USER, "|tu\xc2\xa0ser||"}, /* U+00A0 is no control */
};

static void fmt_parts(const char *s, const struct logon_name *ln, char *out, size_t n)
{
    const struct ln_part p[4] = {ln->domain, ln->user, ln->upn, ln->alias};
    size_t o = 0;
    for (int i = 0; i < 4; i++)
        o += (size_t)snprintf(out + o, n - o, "%s%.*s", i ? "|" : "", (int)p[i].len, s + p[i].off);
}

static void check_row(const char *typed, size_t n, enum logon_form form, const char *parts)
{
    struct logon_name ln;
    char *g = th_guard_copy(typed, n);
    enum logon_form f = logon_name_split(g, n, &ln);
    CHECKF(f == form && ln.form == form, "\"%.*s\": form %s, expected %s", (int)n, typed,
           logon_form_name(f), logon_form_name(form));
    if (parts) {
        char got[1024];
        fmt_parts(g, &ln, got, sizeof got);
        CHECKF(strcmp(got, parts) == 0, "\"%.*s\": parts \"%s\", expected \"%s\"", (int)n, typed,
               got, parts);
    } else {
        CHECK(ln.domain.len == 0 && ln.user.len == 0 && ln.upn.len == 0 && ln.alias.len == 0);
    }
    th_guard_free(g, n);
}

static void test_table(void)
{
    for (size_t i = 0; i < FG_ARRAY_SIZE(rows); i++)
        check_row(rows[i].typed, strlen(rows[i].typed), rows[i].form, rows[i].parts);
}

/* NUL anywhere is a control character, never the end of the name. */
static void test_nul(void)
{
    check_row("tu\0ser", 6, LN_INVALID, NULL);
    check_row("tuser\0", 6, LN_INVALID, NULL);
    check_row("\0", 1, LN_INVALID, NULL);
    check_row("dom\\u\0", 6, LN_INVALID, NULL);
}

/* 256 bytes of UTF-8 are allowed, 257 are not, whatever the form. */
static void test_length(void)
{
    char name[300];
    memset(name, 'a', sizeof name);
    struct logon_name ln;
    CHECK_INT(logon_name_split(name, 256, &ln), LN_USER);
    CHECK_INT(ln.user.len, 256);
    CHECK_INT(logon_name_split(name, 257, &ln), LN_INVALID);
    memcpy(name, "DOM\\", 4);
    name[100] = '@';
    CHECK_INT(logon_name_split(name, 256, &ln), LN_DOMAIN_UPN);
    CHECK_INT(ln.upn.len, 252);
    CHECK_INT(logon_name_split(name, 257, &ln), LN_INVALID);
    /* multi-byte characters count as their bytes: 128 x "ä" = 256 bytes */
    for (int i = 0; i < 129; i++)
        memcpy(name + 2 * i, "\xc3\xa4", 2);
    CHECK_INT(logon_name_split(name, 256, &ln), LN_USER);
    CHECK_INT(logon_name_split(name, 258, &ln), LN_INVALID);
}

/* Every prefix and suffix of the field-test names, cut at every byte: the
 * splitter never reads outside them and agrees with a slow recount. */
static void test_every_cut(void)
{
    static const char *const names[] = {"UCLABOR\\tuser.upn@upn.uclabor.de\\other",
                                        "tuser.upn@upn.uclabor.de\\other", "ACC/auser\\linked"};
    for (size_t k = 0; k < FG_ARRAY_SIZE(names); k++) {
        size_t n = strlen(names[k]);
        for (size_t cut = 0; cut <= n; cut++) {
            struct logon_name a, b;
            char *g = th_guard_copy(names[k], cut);
            logon_name_split(g, cut, &a);
            th_guard_free(g, cut);
            g = th_guard_copy(names[k] + cut, n - cut);
            logon_name_split(g, n - cut, &b);
            th_guard_free(g, n - cut);
            /* a valid result has non-empty parts that lie inside the name */
            const struct logon_name *r[2] = {&a, &b};
            size_t len[2] = {cut, n - cut};
            for (int i = 0; i < 2; i++) {
                const struct ln_part p[4] = {r[i]->domain, r[i]->user, r[i]->upn, r[i]->alias};
                for (int j = 0; j < 4; j++)
                    CHECK((size_t)p[j].off + p[j].len <= len[i]);
                CHECK(r[i]->form == LN_INVALID || r[i]->user.len + r[i]->upn.len > 0);
            }
        }
    }
}

static void test_anonymous_and_guest(void)
{
    static const struct {
        const char *typed;
        bool refused;
    } cases[] = {
            {"anonymous", true},
            {"Guest", true},
            {"GUEST", true},
            {"UCLABOR\\guest", true},
            {"uclabor.de/Anonymous", true},
            {"guest@uclabor.de", true},
            {"UCLABOR\\guest@uclabor.de", true},
            {"guest@uclabor.de\\other", true},
            {"UCLABOR\\guest\\tuser", true},
            {"tuser", false},
            {"UCLABOR\\tuser\\guest", false}, /* an alias part is not checked */
            {"guests", false},
            {"anonymous1", false},
            {"tuser@guest", false},
            {"guest.upn@x", false},
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(cases); i++) {
        struct logon_name ln;
        const char *t = cases[i].typed;
        CHECKF(logon_name_split(t, strlen(t), &ln) != LN_INVALID, "%s", t);
        CHECKF(logon_name_is_anonymous(t, &ln) == cases[i].refused, "%s: refused should be %d", t,
               cases[i].refused);
    }
}

int main(void)
{
    test_table();
    test_nul();
    test_length();
    test_every_cut();
    test_anonymous_and_guest();
    return th_finish("test_logon_name");
}

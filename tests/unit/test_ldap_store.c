/*
 * The LDAP store's pure parts: RFC 4515 filter escaping (what stands
 * between a typed name and the directory's filter), AD's "expired" bind
 * diagnostics, and the Uri list. The store's conversations with a server
 * are tested against a real slapd (tests/integration/test_directory_ldap.py).
 */
#include "../../directory/ldap_filter.h"
#include "../../directory/ldap_store.h"
#include "harness.h"

#include <string.h>

static void check_escape(const char *in, size_t n, const char *want)
{
    char out[256];
    size_t got = ldap_filter_escape(in, n, out, sizeof out);
    CHECKF(got == strlen(want) && strcmp(out, want) == 0, "escape(%.*s) = %s, expected %s", (int)n,
           in, got ? out : "(none)", want);
}

static void test_escape(void)
{
    check_escape("tuser", 5, "tuser");
    check_escape("*", 1, "\\2a");
    check_escape("a*", 2, "a\\2a");
    check_escape("x)(|(uid=*)", 11, "x\\29\\28|\\28uid=\\2a\\29");
    check_escape("a\\b", 3, "a\\5cb");
    check_escape("a\0b", 3, "a\\00b");
    check_escape("a b", 3, "a\\20b");
    check_escape("M\xc3\xbcller", 7, "M\\c3\\bcller");
    check_escape("\x01\x05\xff", 3, "\\01\\05\\ff"); /* SID bytes */
    /* Every escaped output must itself hold no filter metacharacter. */
    for (int c = 0; c < 256; c++) {
        char in = (char)c, out[8];
        CHECK(ldap_filter_escape(&in, 1, out, sizeof out) > 0);
        CHECK(!strpbrk(out, "*()") && (out[0] != '\\' || strlen(out) == 3));
    }
    /* Too long for the buffer: refused, not cut. */
    char out[4];
    CHECK_INT(ldap_filter_escape("**", 2, out, sizeof out), 0);
    CHECK_INT(ldap_filter_escape("abcd", 4, out, sizeof out), 0);
    CHECK_INT(ldap_filter_escape("abc", 3, out, sizeof out), 3);
}

static void test_bind_status(void)
{
    static const char *const pre = "80090308: LdapErr: DSID-0C09044E, comment: "
                                   "AcceptSecurityContext error, data ";
    static const struct {
        const char *code;
        enum store_status want;
    } t[] = {{"773, v4563", STORE_BIND_EXPIRED},
             {"532, v4563", STORE_BIND_EXPIRED},
             {"52e, v4563", STORE_BIND_FAILED},
             {"533, v4563", STORE_BIND_DISABLED},
             {"701, v1db1", STORE_BIND_ACCOUNT_EXPIRED},
             {"775, v1db1", STORE_BIND_LOCKED},
             {"775", STORE_BIND_LOCKED},
             {"52E, v4563", STORE_BIND_FAILED},
             {"5320, v4563", STORE_BIND_FAILED},
             {"7750, v1", STORE_BIND_FAILED},
             {"77", STORE_BIND_FAILED},
             {"775x, v1", STORE_BIND_FAILED},
             {", v1", STORE_BIND_FAILED},
             {"", STORE_BIND_FAILED},
             {"ffffffffff, v1", STORE_BIND_FAILED}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char diag[200];
        snprintf(diag, sizeof diag, "%s%s", pre, t[i].code);
        CHECK_INT(ldap_bind_status(diag), t[i].want);
    }
    /* only after "error, data ": a DN or a comment that says "data 775" is not it */
    CHECK_INT(ldap_bind_status("80090308: ... data 533, v4563"), STORE_BIND_FAILED);
    CHECK_INT(ldap_bind_status("data 775, v1"), STORE_BIND_FAILED);
    CHECK_INT(ldap_bind_status(""), STORE_BIND_FAILED);
    CHECK_INT(ldap_bind_status(NULL), STORE_BIND_FAILED);
}

static void test_uris(void)
{
    char uris[LDS_MAX_URIS][256], err[300];
    CHECK_INT(ldap_store_parse_uris("ldap://a:389 ldaps://b", uris, LDS_MAX_URIS, err, sizeof err),
              2);
    CHECK(strcmp(uris[0], "ldap://a:389") == 0 && strcmp(uris[1], "ldaps://b") == 0);
    CHECK_INT(ldap_store_parse_uris(" ldap://a, ldap://b ,ldap://c ", uris, LDS_MAX_URIS, err,
                                    sizeof err),
              3);
    CHECK_INT(ldap_store_parse_uris("http://a", uris, LDS_MAX_URIS, err, sizeof err), -1);
    CHECK(strstr(err, "not an LDAP URI"));
    CHECK_INT(ldap_store_parse_uris("ldapi:///", uris, LDS_MAX_URIS, err, sizeof err), -1);
    CHECK(strstr(err, "needs ldap:// or ldaps://"));
    CHECK_INT(ldap_store_parse_uris(" , ", uris, LDS_MAX_URIS, err, sizeof err), -1);
    CHECK(strstr(err, "no URI"));
    CHECK_INT(ldap_store_parse_uris("ldap://1 ldap://2 ldap://3", uris, 2, err, sizeof err), -1);
    CHECK(strstr(err, "more than 2"));
}

int main(void)
{
    test_escape();
    test_bind_status();
    test_uris();
    return th_finish("test_ldap_store");
}

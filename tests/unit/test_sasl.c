/*
 * Base64, SASL PLAIN, and the IMAP credential re-encoder: every character
 * class a client can send must come back unchanged after the encoder writes
 * it and a server-side parser reads it.
 */
#include "../../base/base64.h"
#include "../../base/cred.h"
#include "../../proto/imap_parse.h"
#include "../../proto/sasl_plain.h"
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>

static void test_base64_vectors(void)
{
    /* RFC 4648 section 10. */
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const enc[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                      "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char out[16];
        uint8_t dec[16];
        size_t n = strlen(plain[i]);
        base64_encode((const uint8_t *)plain[i], n, out);
        CHECK_MEM(out, base64_encoded_len(n), enc[i]);
        long d = base64_decode(enc[i], strlen(enc[i]), dec);
        CHECK_MEM(dec, d, plain[i]);
    }
}

static void test_base64_rejects_noncanonical(void)
{
    uint8_t dec[16];
    static const char *const bad[] = {
            "Zg=", "Zg=a", "Z===", "Zh==", "Zm9=", "Zm 9v", "Zm9v!A==", "=Zm9", "Zg==Zg=="};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        th_checks++;
        if (base64_decode(bad[i], strlen(bad[i]), dec) != -1)
            th_fail(__FILE__, __LINE__, "\"%s\" was accepted", bad[i]);
    }
}

static void test_plain_decode(void)
{
    struct cred c = {0};
    CHECK_INT(sasl_plain_decode((const uint8_t *)"\0user\0pass", 10, &c), FG_OK);
    CHECK_MEM(c.user, c.user_len, "user");
    CHECK_MEM(c.pass, c.pass_len, "pass");
    CHECK_INT(c.authzid_len, 0);
    CHECK_INT(sasl_plain_decode((const uint8_t *)"box\0user\0p w", 12, &c), FG_OK);
    CHECK_MEM(c.authzid, c.authzid_len, "box");
    CHECK_MEM(c.pass, c.pass_len, "p w");
    CHECK_INT(sasl_plain_decode((const uint8_t *)"\0user\0", 6, &c), FG_OK);
    CHECK_INT(c.pass_len, 0);
    /* Malformed: one NUL, three NULs (a NUL inside the password), no authcid. */
    CHECK_INT(sasl_plain_decode((const uint8_t *)"user\0pass", 9, &c), FG_ERROR);
    CHECK_INT(sasl_plain_decode((const uint8_t *)"\0user\0pa\0ss", 11, &c), FG_ERROR);
    CHECK_INT(sasl_plain_decode((const uint8_t *)"\0\0pass", 6, &c), FG_ERROR);
    CHECK_INT(sasl_plain_decode((const uint8_t *)"", 0, &c), FG_ERROR);
    uint8_t big[CRED_NAME_MAX + 10] = {0};
    memset(big + 1, 'u', CRED_NAME_MAX + 1);
    big[CRED_NAME_MAX + 2] = 0;
    big[CRED_NAME_MAX + 3] = 'p';
    CHECK_INT(sasl_plain_decode(big, CRED_NAME_MAX + 4, &c), FG_ERROR);
    big[CRED_NAME_MAX + 1] = 0; /* exactly 256 bytes of name is allowed */
    CHECK_INT(sasl_plain_decode(big, CRED_NAME_MAX + 2, &c), FG_OK);
    CHECK_INT(c.user_len, CRED_NAME_MAX);
}

static void test_plain_encode_roundtrip(void)
{
    char b64[sasl_plain_encoded_max() + 1];
    uint8_t raw[2048];
    size_t n = sasl_plain_encode("mbox", 4, "master", 6, "p\xc3\xa4ss w", 8, b64);
    long d = base64_decode(b64, n, raw);
    CHECK_INT(d, 20);
    CHECK(memcmp(raw, "mbox\0master\0p\xc3\xa4ss w", 20) == 0);
}

/* Passwords of every class a client can send. */
static const char *const classes[] = {
        "secret",
        "a+b",
        "a/b",
        "a&b",
        "a%b",
        "a(b",
        "a)b",
        "a=b",
        "a?b",
        "a[b",
        "a]b",
        "a\\b",
        "a\"b",
        "a{b",
        "a}b",
        "{5}",
        "{5+}",
        "a b",
        " lead",
        "trail ",
        "p\xc3\xa4ss\xe2\x82\xac",
        "\xf0\x9f\x94\x91key",
        "tab\tbed",
        "ctl\x01x",
        "\"\\\"",
        "*",
        "%",
        "NIL",
        "x\x7fy",
};

/* Encodes user and password the way the backend dialogue does, parses the
 * command as a server would, and compares. */
static void reencode_one(const char *pass, bool lit_plus)
{
    char cmd[1024], q[600];
    size_t o = (size_t)snprintf(cmd, sizeof cmd, "F2 LOGIN user ");
    size_t n = strlen(pass);

    switch (imap_astring_kind(pass, n)) {
    case IMAP_ASTRING_ATOM:
        memcpy(cmd + o, pass, n);
        o += n;
        break;
    case IMAP_ASTRING_QUOTED:
        o += imap_quote(pass, n, cmd + o);
        break;
    case IMAP_ASTRING_LITERAL:
        o += (size_t)snprintf(cmd + o, sizeof cmd - o, "{%zu%s}\r\n", n, lit_plus ? "+" : "");
        memcpy(cmd + o, pass, n);
        o += n;
        break;
    }
    memcpy(cmd + o, "\r\n", 2);
    o += 2;
    (void)q;
    struct imap_parser p;
    imap_parser_init(&p, 1000);
    int rc;
    while ((rc = imap_parse_command(&p, cmd, o)) == IMAP_PARSE_CONTINUE)
        CHECK(!lit_plus);
    th_checks++;
    if (rc != IMAP_PARSE_DONE || p.nargs != 4 || p.args[3].len != n ||
        memcmp(cmd + p.args[3].off, pass, n) != 0)
        th_fail(__FILE__, __LINE__, "password \"%s\" did not survive (rc %d)", pass, rc);
}

static void test_reencoder_every_class(void)
{
    for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++) {
        reencode_one(classes[i], true);
        reencode_one(classes[i], false);
    }
    CHECK_INT(imap_astring_kind("a b", 3), IMAP_ASTRING_QUOTED);
    CHECK_INT(imap_astring_kind("p\xc3\xa4ss", 5), IMAP_ASTRING_LITERAL);
    CHECK_INT(imap_astring_kind("a+b/c&d=e?f[g}h", 15), IMAP_ASTRING_ATOM);
}

static void test_cred_set_refuses_nul_and_length(void)
{
    struct cred *c = cred_new();
    CHECK(c != NULL);
    CHECK_INT(cred_set(c->pass, &c->pass_len, CRED_PASS_MAX, "a\0b", 3), FG_ERROR);
    char big[CRED_PASS_MAX + 1];
    memset(big, 'x', sizeof big);
    CHECK_INT(cred_set(c->pass, &c->pass_len, CRED_PASS_MAX, big, sizeof big), FG_ERROR);
    CHECK_INT(cred_set(c->pass, &c->pass_len, CRED_PASS_MAX, big, CRED_PASS_MAX), FG_OK);
    CHECK_INT(c->pass_len, CRED_PASS_MAX);
    cred_free(c);
}

int main(void)
{
    test_base64_vectors();
    test_base64_rejects_noncanonical();
    test_plain_decode();
    test_plain_encode_roundtrip();
    test_reencoder_every_class();
    test_cred_set_refuses_nul_and_length();
    return th_finish("test_sasl");
}

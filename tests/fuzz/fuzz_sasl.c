/*
 * libFuzzer target: base64 (base/base64.c) and SASL PLAIN (proto/sasl_plain.c).
 *
 * The input is read three ways:
 *  - as the base64 text of an AUTHENTICATE response. Decoding is strict, so
 *    what decodes must encode back to the very same text; and when it holds
 *    a PLAIN message, sasl_plain_encode of its fields must give that text too.
 *    Whether sasl_plain_decode accepts is checked against RFC 4616's rule;
 *  - as raw bytes: base64 encode then decode gives them back, and a PLAIN
 *    message in them survives encode and decode;
 *  - as three fields (lengths from the first bytes) that the backend login
 *    encodes: decoding that gives the same three fields.
 */
#include "../../base/base64.h"
#include "../../proto/sasl_plain.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* RFC 4616 as sasl_plain_decode applies it: exactly two NULs, an authcid,
 * and fields that fit a struct cred. */
static bool plain_ok(const uint8_t *m, size_t n)
{
    const uint8_t *a = memchr(m, 0, n);
    const uint8_t *b = a ? memchr(a + 1, 0, n - (size_t)(a - m) - 1) : NULL;
    if (!b || memchr(b + 1, 0, n - (size_t)(b - m) - 1))
        return false;
    size_t zn = (size_t)(a - m), un = (size_t)(b - a) - 1, pn = n - (size_t)(b - m) - 1;
    return un > 0 && zn <= CRED_NAME_MAX && un <= CRED_NAME_MAX && pn <= CRED_PASS_MAX;
}

/* The fields of c, joined as a PLAIN message, must be exactly m. */
static void check_fields(const struct cred *c, const uint8_t *m, size_t n)
{
    FZ_CHECK(c->mech == CRED_MECH_PLAIN && c->user_len > 0);
    FZ_CHECK((size_t)c->authzid_len + c->user_len + c->pass_len + 2 == n);
    FZ_CHECK(c->authzid[c->authzid_len] == 0 && c->user[c->user_len] == 0 &&
             c->pass[c->pass_len] == 0);
    FZ_CHECK(memcmp(m, c->authzid, c->authzid_len) == 0 && m[c->authzid_len] == 0);
    m += c->authzid_len + 1;
    FZ_CHECK(memcmp(m, c->user, c->user_len) == 0 && m[c->user_len] == 0);
    FZ_CHECK(memcmp(m + c->user_len + 1, c->pass, c->pass_len) == 0);
}

/* Encodes the fields as the backend login does; returns a heap copy. */
static char *encode_fields(const struct cred *c, size_t *len_r)
{
    char *dst = malloc(sasl_plain_encoded_max());
    *len_r = sasl_plain_encode(c->authzid, c->authzid_len, c->user, c->user_len, c->pass,
                               c->pass_len, dst);
    char *out = fz_dup(dst, *len_r);
    free(dst);
    return out;
}

static void as_text(const uint8_t *data, size_t n)
{
    char *text = fz_dup(data, n);
    uint8_t *raw = fz_alloc(base64_decoded_max(n));
    long dn = base64_decode(text, n, raw);
    if (dn >= 0) {
        FZ_CHECK((size_t)dn <= base64_decoded_max(n) && base64_encoded_len((size_t)dn) == n);
        char *again = fz_alloc(n);
        base64_encode(raw, (size_t)dn, again);
        FZ_CHECK(memcmp(again, text, n) == 0); /* canonical: one text per value */
        free(again);

        struct cred c = {0};
        int rc = sasl_plain_decode(raw, (size_t)dn, &c);
        FZ_CHECK((rc == FG_OK) == plain_ok(raw, (size_t)dn));
        if (rc == FG_OK) {
            check_fields(&c, raw, (size_t)dn);
            size_t en;
            char *enc = encode_fields(&c, &en);
            FZ_CHECK(en == n && memcmp(enc, text, n) == 0);
            free(enc);
        }
    }
    free(raw);
    free(text);
}

static void as_raw(const uint8_t *data, size_t n)
{
    size_t en = base64_encoded_len(n);
    char *enc = fz_alloc(en);
    base64_encode(data, n, enc);
    uint8_t *dec = fz_alloc(base64_decoded_max(en));
    FZ_CHECK(base64_decode(enc, en, dec) == (long)n && memcmp(dec, data, n) == 0);
    free(dec);
    free(enc);

    uint8_t *msg = (uint8_t *)fz_dup(data, n);
    struct cred c = {0};
    if (sasl_plain_decode(msg, n, &c) == FG_OK) {
        check_fields(&c, data, n);
        size_t len;
        char *text = encode_fields(&c, &len);
        uint8_t *back = fz_alloc(base64_decoded_max(len));
        FZ_CHECK(base64_decode(text, len, back) == (long)n && memcmp(back, data, n) == 0);
        free(back);
        free(text);
    }
    free(msg);
}

/* Three fields as the backend login encodes them, read back by the decoder. */
static void as_fields(const uint8_t *data, size_t n)
{
    struct fz f = {data, n, 0};
    const uint8_t *z, *u, *p;
    size_t zn = fz_bytes(&f, (size_t)fz_u16(&f) % (CRED_NAME_MAX + 8), &z);
    size_t un = fz_bytes(&f, (size_t)fz_u16(&f) % (CRED_NAME_MAX + 8), &u);
    size_t pn = fz_bytes(&f, (size_t)fz_u16(&f) % (CRED_PASS_MAX + 8), &p);
    char *dst = malloc(sasl_plain_encoded_max());
    size_t len =
            sasl_plain_encode((const char *)z, zn, (const char *)u, un, (const char *)p, pn, dst);
    if (zn > CRED_NAME_MAX || un > CRED_NAME_MAX || pn > CRED_PASS_MAX) {
        FZ_CHECK(len == 0); /* refused, not cut */
        free(dst);
        return;
    }
    FZ_CHECK(len == base64_encoded_len(zn + un + pn + 2) && len <= sasl_plain_encoded_max());
    char *text = fz_dup(dst, len);
    uint8_t *raw = fz_alloc(base64_decoded_max(len));
    long dn = base64_decode(text, len, raw);
    FZ_CHECK(dn == (long)(zn + un + pn + 2));
    struct cred c = {0};
    bool clean = un > 0 && !memchr(z, 0, zn) && !memchr(u, 0, un) && !memchr(p, 0, pn);
    FZ_CHECK((sasl_plain_decode(raw, (size_t)dn, &c) == FG_OK) == clean);
    if (clean) {
        FZ_CHECK(c.authzid_len == zn && memcmp(c.authzid, z, zn) == 0);
        FZ_CHECK(c.user_len == un && memcmp(c.user, u, un) == 0);
        FZ_CHECK(c.pass_len == pn && memcmp(c.pass, p, pn) == 0);
    }
    free(raw);
    free(text);
    free(dst);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    as_text(data, size);
    as_raw(data, size);
    as_fields(data, size);
    return 0;
}

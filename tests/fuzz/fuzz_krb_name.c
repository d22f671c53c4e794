/*
 * libFuzzer target: the pure parts of Kerberos logons (directory/krb_name.c).
 *
 * The whole input is a client's first GSS token: krb_token_service must stay
 * inside it (ASan: an exact heap copy) and, with a small and a large max,
 * give the same service or, when it does not fit the small one, none. A
 * service holds no NUL, lies inside the token, and is then checked as
 * krb.c checks it.
 *
 * The input is also a principal and an authorisation identity, split at
 * its first 0xff byte (a byte UTF-8 never holds, so either side may hold
 * any other: NULs, controls, escapes): krb_map_principal must agree with a
 * reference written here from krb.h's description, and its name must be
 * NUL-terminated, fit CRED_NAME_MAX and hold an '@'. Asking again with the
 * name it gave as the authzid asks for the own mailbox: the same name.
 * krb_service_ok, for either protocol, must agree with its reference too.
 */
#include "../../directory/krb.h"
#include "fuzz_util.h"

#include <string.h>
#include <strings.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- the references ---- */

static const char *const ref_service[FG_PROTO_COUNT] = {"imap", "pop"};

/* The target's first component, up to an unescaped '/' or '@', is the
 * protocol's service. The service's letters hold no '\', so the component
 * is exactly the service when the next byte ends it. */
static bool ref_service_ok(const char *t, size_t n, enum fg_proto proto)
{
    if ((unsigned)proto >= FG_PROTO_COUNT)
        return false;
    const char *s = ref_service[proto];
    size_t k = strlen(s);
    if (n < k)
        return false;
    for (size_t i = 0; i < k; i++)
        if ((t[i] | 0x20) != s[i])
            return false;
    return n == k || t[k] == '/' || t[k] == '@';
}

static bool ref_ieq(const char *a, size_t an, const char *b, size_t bn)
{
    if (an != bn)
        return false;
    for (size_t i = 0; i < an; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z')
            x |= 0x20;
        if (y >= 'A' && y <= 'Z')
            y |= 0x20;
        if (x != y)
            return false;
    }
    return true;
}

/* No control byte and no backslash: what a realm and an alias may hold. */
static bool ref_plain(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || c == '\\')
            return false;
    }
    return true;
}

/* krb.h's krb_map_principal, the long way: 0, or the name's length. */
static size_t ref_map(const char *p, size_t n, const char *a, size_t an, char *out, bool *ent)
{
    char user[2 * CRED_NAME_MAX + 8];
    size_t at = n, un = 0;
    *ent = false;
    if (memchr(p, 0, n) || memchr(a, 0, an))
        return 0;
    /* the user part, unescaped: no component separator, only \@ and \\ */
    for (size_t i = 0; i < n && at == n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '@') {
            at = i;
        } else if (c == '\\') {
            if (i + 1 == n || (p[i + 1] != '@' && p[i + 1] != '\\'))
                return 0;
            *ent = *ent || p[i + 1] == '@';
            if (un < sizeof user)
                user[un++] = p[++i];
        } else if (c == '/' || c < 0x20 || c == 0x7f) {
            return 0;
        } else if (un < sizeof user) {
            user[un++] = (char)c;
        }
    }
    if (at == n || un == 0 || at + 1 == n || un > CRED_NAME_MAX ||
        !ref_plain(p + at + 1, n - at - 1))
        return 0;
    size_t o = un;
    memcpy(out, user, un);
    if (!*ent) { /* user@realm, the realm as it is (plain) */
        if (un + 1 + (n - at - 1) > CRED_NAME_MAX)
            return 0;
        out[o++] = '@';
        memcpy(out + o, p + at + 1, n - at - 1);
        o += n - at - 1;
    }
    if (an > 0 && !ref_ieq(a, an, p, n) && !ref_ieq(a, an, out, o) && !ref_ieq(a, an, user, un)) {
        if (o + 1 + an > CRED_NAME_MAX || !ref_plain(a, an))
            return 0;
        out[o++] = '\\';
        memcpy(out + o, a, an);
        o += an;
    }
    return o;
}

/* ---- the checks ---- */

/* A room larger than any input: only the token bounds the service. */
#define FZ_SERVICE_MAX 65536

static void check_token(const uint8_t *data, size_t size)
{
    uint8_t *tok = (uint8_t *)fz_dup(data, size);
    char *big = fz_alloc(size + 1), small[8];
    size_t rb = krb_token_service(tok, size, big, FZ_SERVICE_MAX);
    size_t rs = krb_token_service(tok, size, small, 4);
    FZ_CHECK(rb <= FZ_SERVICE_MAX && rb <= size && rs <= 4);
    FZ_CHECK(rs == (rb <= 4 ? rb : 0) && memcmp(small, big, rs) == 0);
    if (rb > 0) {
        FZ_CHECK(memchr(big, 0, rb) == NULL);
        FZ_CHECK(memmem(tok, size, big, rb) != NULL);
        /* as krb.c checks the service */
        char *svc = fz_dup(big, rb);
        for (int p = 0; p < FG_PROTO_COUNT; p++)
            FZ_CHECK(krb_service_ok(svc, rb, (enum fg_proto)p) ==
                     ref_service_ok(svc, rb, (enum fg_proto)p));
        free(svc);
    }
    free(big);
    free(tok);
}

static void check_service(const char *t, size_t n)
{
    bool imap = krb_service_ok(t, n, FG_PROTO_IMAP), pop = krb_service_ok(t, n, FG_PROTO_POP3);
    FZ_CHECK(imap == ref_service_ok(t, n, FG_PROTO_IMAP));
    FZ_CHECK(pop == ref_service_ok(t, n, FG_PROTO_POP3));
    FZ_CHECK(!(imap && pop));
    FZ_CHECK(!krb_service_ok(t, n, FG_PROTO_COUNT));
}

/* One mapping: the invariants, and the reference's answer. */
static size_t check_map(const char *p, size_t n, const char *a, size_t an, char *out, bool *ent)
{
    char ref[2 * CRED_NAME_MAX + 8];
    bool ref_ent;
    memset(out, 'X', CRED_NAME_MAX + 1);
    size_t r = krb_map_principal(p, n, a, an, out, ent);
    size_t rr = ref_map(p, n, a, an, ref, &ref_ent);
    FZ_CHECK(r <= CRED_NAME_MAX);
    FZ_CHECK(r == rr);
    if (r == 0)
        return 0;
    FZ_CHECK(out[r] == 0 && strlen(out) == r);
    FZ_CHECK(memcmp(out, ref, r) == 0 && *ent == ref_ent);
    FZ_CHECK(memchr(out, '@', r) != NULL);
    return r;
}

static void check_names(const uint8_t *data, size_t size)
{
    const uint8_t *sep = memchr(data, 0xff, size);
    size_t n = sep ? (size_t)(sep - data) : size;
    size_t an = sep ? size - n - 1 : 0;
    char *p = fz_dup(data, n), *a = fz_dup(sep ? sep + 1 : data, an);
    char out[CRED_NAME_MAX + 1], own[CRED_NAME_MAX + 1];
    bool ent, ent2;

    size_t r = check_map(p, n, a, an, out, &ent);
    /* the principal alone: a refusal of it refuses any authzid */
    char *none = fz_alloc(0);
    size_t r0 = check_map(p, n, none, 0, own, &ent2);
    free(none);
    FZ_CHECK(r0 > 0 || r == 0);
    if (r0 > 0) {
        FZ_CHECK(ent2 == ent || r == 0);
        /* with an authzid, the name is the own name or the own name\alias */
        FZ_CHECK(r == 0 || r == r0 || (r == r0 + 1 + an && out[r0] == '\\'));
        FZ_CHECK(r == 0 || memcmp(out, own, r0) == 0);
        /* the name it gave, as the authzid, asks for the own mailbox */
        char *again = fz_dup(own, r0);
        size_t r2 = check_map(p, n, again, r0, out, &ent);
        FZ_CHECK(r2 == r0 && memcmp(out, own, r0) == 0 && ent == ent2);
        free(again);
    }
    check_service(p, n);
    free(a);
    free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_token(data, size);
    check_names(data, size);
    char *whole = fz_dup(data, size);
    check_service(whole, size);
    free(whole);
    return 0;
}

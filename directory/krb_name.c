/*
 * The pure parts of Kerberos logons (krb.h): a principal's logon name, and
 * the service a ticket was issued for. Names are as MIT's krb5_unparse_name
 * writes them: components split by '/', the realm after the first '@' not
 * escaped, and '\' escaping '/', '@', '\' and the control characters.
 */
#include "krb.h"

#include <string.h>
#include <strings.h>

/* The offset of the first c in s[0..n) that no '\' escapes, or n. */
static size_t krb_unescaped(const char *s, size_t n, char c)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == c)
            return i;
    }
    return n;
}

/*
 * Copies the principal's single name component, unescaped, to out (room for
 * max). Only '\@' (an enterprise name: a UPN) and '\\' unescape to bytes a
 * logon name may hold; a control character or a NUL cannot be an account's.
 * Returns the length, or 0; *at says whether it held an '@'.
 */
static size_t krb_unescape(const char *s, size_t n, char *out, size_t max, bool *at)
{
    size_t o = 0;
    *at = false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '\\') {
            if (++i >= n || (s[i] != '@' && s[i] != '\\'))
                return 0;
            ch = s[i];
            *at = *at || ch == '@';
        } else if ((unsigned char)ch < 0x20 || ch == 0x7f) {
            return 0;
        }
        if (o >= max)
            return 0;
        out[o++] = ch;
    }
    return o;
}

/* Bytes a logon name's part may hold: no control byte, no '\\' (which
 * would be read as the separator of DOMAIN\\user or upn\\alias). */
static bool krb_plain(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f || s[i] == '\\')
            return false;
    return true;
}

static bool krb_ieq(const char *a, size_t an, const char *b, size_t bn)
{
    return an == bn && strncasecmp(a, b, an) == 0;
}

size_t krb_map_principal(const char *principal, size_t n, const char *authzid, size_t an, char *out,
                         bool *enterprise)
{
    size_t at = krb_unescaped(principal, n, '@');
    size_t realm_len = at < n ? n - at - 1 : 0;
    *enterprise = false;
    /* A service (host/x@R) or a principal without a realm names no user. */
    if (at == 0 || realm_len == 0 || krb_unescaped(principal, at, '/') < at)
        return 0;
    /* The realm is no escaped name (MIT escapes nothing a realm should
     * hold); the authzid comes from the client as it is. */
    if (memchr(principal, 0, n) || memchr(authzid, 0, an) ||
        !krb_plain(principal + at + 1, realm_len))
        return 0;
    size_t o = krb_unescape(principal, at, out, CRED_NAME_MAX, enterprise);
    if (o == 0)
        return 0;
    size_t user_len = o;
    if (!*enterprise) {
        if (o + 1 + realm_len > CRED_NAME_MAX)
            return 0;
        out[o++] = '@';
        memcpy(out + o, principal + at + 1, realm_len);
        o += realm_len;
    }
    /* An authzid that names the principal itself asks for its own mailbox. */
    bool own = an == 0 || krb_ieq(authzid, an, principal, n) || krb_ieq(authzid, an, out, o) ||
               krb_ieq(authzid, an, out, user_len);
    if (!own) {
        if (o + 1 + an > CRED_NAME_MAX || !krb_plain(authzid, an))
            return 0;
        out[o++] = '\\';
        memcpy(out + o, authzid, an);
        o += an;
    }
    out[o] = 0;
    return o;
}

bool krb_service_ok(const char *target, size_t n, enum fg_proto proto)
{
    static const char *const service[FG_PROTO_COUNT] = {"imap", "pop"};
    size_t at = krb_unescaped(target, n, '@');
    size_t slash = krb_unescaped(target, at, '/');
    if ((unsigned)proto >= FG_PROTO_COUNT)
        return false;
    return krb_ieq(target, slash, service[proto], strlen(service[proto]));
}

/* ---- the service a Kerberos GSS token's ticket is for ---- */

struct krb_der {
    const uint8_t *p;
    size_t n;
};

/* Reads one DER element of tag from d: its contents in *in, d moves past
 * it. False on another tag, a length that does not fit, or an indefinite
 * length (DER has none). */
static bool krb_der_take(struct krb_der *d, uint8_t tag, struct krb_der *in)
{
    if (d->n < 2 || d->p[0] != tag)
        return false;
    size_t len = d->p[1], hdr = 2;
    if (len & 0x80) {
        size_t k = len & 0x7f;
        if (k == 0 || k > 4 || d->n < 2 + k)
            return false;
        len = 0;
        for (size_t i = 0; i < k; i++)
            len = len << 8 | d->p[2 + i];
        hdr += k;
    }
    if (len > d->n - hdr)
        return false;
    in->p = d->p + hdr;
    in->n = len;
    d->p += hdr + len;
    d->n -= hdr + len;
    return true;
}

/* Skips context-tagged fields of a SEQUENCE up to [want]; reads it. */
static bool krb_der_field(struct krb_der *seq, unsigned want, struct krb_der *in)
{
    for (unsigned t = 0; t <= want; t++) {
        struct krb_der skip;
        if (t < want && seq->n && seq->p[0] == (0xa0 | t) && !krb_der_take(seq, 0xa0 | t, &skip))
            return false;
    }
    return krb_der_take(seq, (uint8_t)(0xa0 | want), in);
}

size_t krb_token_service(const uint8_t *tok, size_t n, char *out, size_t max)
{
    /* RFC 2743 3.1 framing, the krb5 mechanism's OID, TOK_ID 01 00 (RFC
     * 4121 4.1), then the AP-REQ (RFC 4120 5.5.1) and its ticket's sname. */
    static const uint8_t krb5_oid[] = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7,
                                       0x12, 0x01, 0x02, 0x02, 0x01, 0x00};
    struct krb_der d = {tok, n}, gss, ap, seq, f, tkt, tseq, sname, names, comp;
    if (!krb_der_take(&d, 0x60, &gss) || gss.n < sizeof krb5_oid ||
        memcmp(gss.p, krb5_oid, sizeof krb5_oid) != 0)
        return 0;
    gss.p += sizeof krb5_oid;
    gss.n -= sizeof krb5_oid;
    if (!krb_der_take(&gss, 0x6e, &ap) || !krb_der_take(&ap, 0x30, &seq) ||
        !krb_der_field(&seq, 3, &f) || !krb_der_take(&f, 0x61, &tkt) ||
        !krb_der_take(&tkt, 0x30, &tseq) || !krb_der_field(&tseq, 2, &f) ||
        !krb_der_take(&f, 0x30, &sname) || !krb_der_field(&sname, 1, &f) ||
        !krb_der_take(&f, 0x30, &names) || !krb_der_take(&names, 0x1b, &comp))
        return 0;
    if (comp.n == 0 || comp.n > max || memchr(comp.p, 0, comp.n))
        return 0;
    memcpy(out, comp.p, comp.n);
    return comp.n;
}

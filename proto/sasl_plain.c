/* SASL PLAIN (RFC 4616) in both directions. */
#include "sasl_plain.h"

#include "../base/base64.h"

#include <stdlib.h>
#include <string.h>

int sasl_plain_decode(const uint8_t *msg, size_t n, struct cred *c)
{
    const uint8_t *nul1 = memchr(msg, 0, n);
    if (!nul1)
        return FG_ERROR;
    size_t zn = (size_t)(nul1 - msg);
    const uint8_t *user = nul1 + 1;
    const uint8_t *nul2 = memchr(user, 0, n - zn - 1);
    if (!nul2)
        return FG_ERROR;
    size_t un = (size_t)(nul2 - user);
    const uint8_t *pass = nul2 + 1;
    size_t pn = n - zn - un - 2;

    /* Lengths come from the NUL positions, never from strlen on the password:
     * a third NUL inside it is refused by cred_set, not silently cut. */
    if (un == 0)
        return FG_ERROR;
    if (cred_set(c->authzid, &c->authzid_len, CRED_NAME_MAX, (const char *)msg, zn) ||
        cred_set(c->user, &c->user_len, CRED_NAME_MAX, (const char *)user, un) ||
        cred_set(c->pass, &c->pass_len, CRED_PASS_MAX, (const char *)pass, pn))
        return FG_ERROR;
    c->mech = CRED_MECH_PLAIN;
    return FG_OK;
}

size_t sasl_plain_encode(const char *authzid, size_t zn, const char *authcid, size_t cn,
                         const char *pass, size_t pn, char *dst)
{
    uint8_t raw[2 * CRED_NAME_MAX + CRED_PASS_MAX + 2];
    size_t n = 0;

    if (zn > CRED_NAME_MAX || cn > CRED_NAME_MAX || pn > CRED_PASS_MAX)
        return 0;
    memcpy(raw, authzid, zn);
    n += zn;
    raw[n++] = 0;
    memcpy(raw + n, authcid, cn);
    n += cn;
    raw[n++] = 0;
    memcpy(raw + n, pass, pn);
    n += pn;
    base64_encode(raw, n, dst);
    explicit_bzero(raw, sizeof raw);
    return base64_encoded_len(n);
}

enum sasl_result sasl_plain_response(const char *b64, size_t n, struct cred *c)
{
    uint8_t raw[2048];

    if (n == 1 && b64[0] == '=')
        n = 0;
    long len = base64_decoded_max(n) <= sizeof raw ? base64_decode(b64, n, raw) : -1;
    if (len < 0)
        return SASL_BAD_BASE64;
    int rc = sasl_plain_decode(raw, (size_t)len, c);
    explicit_bzero(raw, sizeof raw);
    return rc == FG_OK ? SASL_OK : SASL_BAD_PLAIN;
}

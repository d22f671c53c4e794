/* SASL PLAIN (RFC 4616): decoding what a client sends, encoding what the
 * backend login sends. */
#ifndef FG_SASL_PLAIN_H
#define FG_SASL_PLAIN_H

#include "../base/cred.h"

/*
 * Decodes a SASL PLAIN message (RFC 4616: authzid NUL authcid NUL passwd) into c.
 * Returns FG_OK, or FG_ERROR when the message is malformed: not exactly two
 * NULs, an empty authcid, or a field over its limit.
 */
int sasl_plain_decode(const uint8_t *msg, size_t n, struct cred *c);

/* How a client's SASL PLAIN response failed, or SASL_OK. */
enum sasl_result {
    SASL_OK,
    SASL_BAD_BASE64, /* not base64: a protocol error */
    SASL_BAD_PLAIN,  /* base64, but not a PLAIN message: a refused login */
};

/*
 * Decodes a client's base64 response to AUTHENTICATE/AUTH PLAIN (a lone "="
 * is the empty response, RFC 4954 and RFC 5034) into c. The decoded bytes
 * are wiped before returning.
 */
enum sasl_result sasl_plain_response(const char *b64, size_t n, struct cred *c);

/*
 * Encodes authzid NUL authcid NUL passwd as base64 into dst, which must have
 * room for sasl_plain_encoded_max() bytes. Returns the length written.
 */
size_t sasl_plain_encode(const char *authzid, size_t zn, const char *authcid, size_t cn,
                         const char *pass, size_t pn, char *dst);

static inline size_t sasl_plain_encoded_max(void)
{
    return (2 * CRED_NAME_MAX + CRED_PASS_MAX + 2 + 2) / 3 * 4;
}

#endif

/*
 * Credentials as a client gave them. They live from the login command until
 * the backend has answered, and are wiped with explicit_bzero when freed.
 */
#ifndef FG_CRED_H
#define FG_CRED_H

#include "../core/common.h"

/* A logon name may be 256 bytes (docs/login-rules.md section 1); AD passwords are up to
 * 256 UTF-16 units, which is at most 768 UTF-8 bytes. */
#define CRED_NAME_MAX 256
#define CRED_PASS_MAX 1024

enum cred_mech {
    CRED_MECH_LOGIN,    /* IMAP LOGIN */
    CRED_MECH_USERPASS, /* POP3 USER + PASS */
    CRED_MECH_PLAIN,    /* SASL PLAIN (IMAP AUTHENTICATE, POP3 AUTH) */
};

struct cred {
    uint16_t authzid_len, user_len, pass_len;
    uint8_t mech;
    char authzid[CRED_NAME_MAX + 1];
    char user[CRED_NAME_MAX + 1];
    char pass[CRED_PASS_MAX + 1];
};

/*
 * Stores a field, NUL-terminated. Returns FG_ERROR when it is too long or holds
 * a NUL: a NUL would let a later C-string use cut a password short.
 */
int cred_set(char *dst, uint16_t *len_r, size_t max, const char *src, size_t n);

/* Allocates an empty credential record; cred_free wipes and frees it. */
struct cred *cred_new(void);
void cred_free(struct cred *c);

/*
 * Decodes a SASL PLAIN message (RFC 4616: authzid NUL authcid NUL passwd) into c.
 * Returns FG_OK, or FG_ERROR when the message is malformed: not exactly two
 * NULs, an empty authcid, or a field over its limit.
 */
int sasl_plain_decode(const uint8_t *msg, size_t n, struct cred *c);

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

/*
 * Credentials as a client gave them. They live from the login command until
 * the backend has answered, and are wiped with explicit_bzero when freed.
 */
#ifndef FG_CRED_H
#define FG_CRED_H

#include "common.h"

/* A logon name may be 256 bytes (docs/login-rules.md section 1); AD passwords are up to
 * 256 UTF-16 units, which is at most 768 UTF-8 bytes. */
#define CRED_NAME_MAX 256
#define CRED_PASS_MAX 1024

enum cred_mech {
    CRED_MECH_LOGIN,    /* IMAP LOGIN */
    CRED_MECH_USERPASS, /* POP3 USER + PASS */
    CRED_MECH_PLAIN,    /* SASL PLAIN (IMAP AUTHENTICATE, POP3 AUTH) */
    CRED_MECH_GSSAPI,   /* SASL GSSAPI: one client response of the exchange, in blob */
};

struct cred {
    uint16_t authzid_len, user_len, pass_len;
    uint8_t mech;
    bool gss_first; /* GSSAPI: the exchange's first response: a new context */
    uint32_t blob_len;
    uint8_t *blob; /* GSSAPI: the decoded response; malloc'd, wiped when freed */
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

#endif

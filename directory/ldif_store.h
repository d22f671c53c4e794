/*
 * The LDIF store: a forest served from an LDIF file held in memory, the
 * embedded default for the demo and small sites. It answers the resolver's
 * store operations (resolve.h) at once, with the same meaning as the LDAP
 * store, and checks passwords against userPassword hashes locally:
 * {SSHA}, {SSHA512} and {CRYPT}.
 *
 * The parser takes RFC 2849 content records: comments, folded lines,
 * base64 values (`attr:: ...`), attribute options (dropped). Change
 * records and URL values are refused with file:line and a reason.
 */
#ifndef FG_LDIF_STORE_H
#define FG_LDIF_STORE_H

#include "resolve.h"

struct ldif_value {
    char *p; /* NUL-terminated; binary values may hold NULs too */
    size_t n;
};

struct ldif_attr {
    char *name;
    unsigned nvals;
    struct ldif_value *vals;
};

struct ldif_entry {
    char *dn;
    unsigned nattrs;
    struct ldif_attr *attrs;
};

struct ldif_store {
    size_t n;
    struct ldif_entry *e;
    /* A userPassword of the file (its costliest scheme): a bind as nobody is
     * checked against it, so that a miss takes as long as a wrong password. */
    const struct ldif_value *dummy;
};

/* Parses n bytes of LDIF. FG_OK, or FG_ERROR with "line N: reason" in err. */
int ldif_parse(struct ldif_store *st, const char *buf, size_t n, char *err, size_t errlen);

/* Reads and parses a file. FG_ERROR with "file:line: reason" in err. */
int ldif_load(struct ldif_store *st, const char *path, char *err, size_t errlen);

void ldif_free(struct ldif_store *st);

/* The values of attr on e (any case), or NULL. */
const struct ldif_attr *ldif_attr(const struct ldif_entry *e, const char *attr);

/*
 * Runs one store operation against forest `forest` (its domains say which
 * entries lie in which domain). The answer is written to res.
 */
void ldif_store_run(const struct ldif_store *st, const struct dir_forest *forest, int forest_index,
                    const struct store_op *op, struct store_result *res);

/* Checks a password against one userPassword value, in constant time for
 * the hash comparison. True when it matches. */
bool ldif_password_ok(const char *stored, size_t stored_n, const char *pass, size_t pass_n);

#endif

/*
 * The form of a typed logon name (docs/login-rules.md section 1): the one place
 * that decides how `user`, `DOMAIN\user`, `DOMAIN\user\alias`, `upn`,
 * `upn\alias` and `DOMAIN\upn` are told apart.
 *
 * Pure: no allocation, no I/O. The parts are offsets into the caller's
 * bytes, which stay the caller's.
 */
#ifndef FG_LOGON_NAME_H
#define FG_LOGON_NAME_H

#include "../base/common.h"

#define LOGON_NAME_MAX 256 /* bytes of UTF-8; exactly 256 is allowed */

enum logon_form {
    LN_INVALID,           /* fails like a wrong password */
    LN_USER,              /* sAMAccountName */
    LN_UPN,               /* userPrincipalName */
    LN_DOMAIN_USER,       /* domain, sAMAccountName */
    LN_UPN_ALIAS,         /* UPN, mailbox alias */
    LN_DOMAIN_UPN,        /* domain, UPN */
    LN_DOMAIN_USER_ALIAS, /* domain, sAMAccountName, mailbox alias */
};

/* A part of the typed name: name[off .. off + len). len 0: absent. */
struct ln_part {
    uint16_t off, len;
};

struct logon_name {
    enum logon_form form;
    struct ln_part domain; /* NetBIOS or DNS name, as typed */
    struct ln_part user;   /* sAMAccountName */
    struct ln_part upn;    /* the whole UPN */
    struct ln_part alias;  /* mailbox alias */
};

/*
 * Splits name (n bytes, not NUL-terminated) into ln. Returns ln->form;
 * LN_INVALID for a bad count of separators ('\' and '/' alike) or '@', an
 * empty part or UPN side, a control character (C0, DEL or C1) or NUL, or
 * more than LOGON_NAME_MAX bytes.
 */
enum logon_form logon_name_split(const char *name, size_t n, struct logon_name *ln);

/* True when the account part (the sAMAccountName, or the UPN's left side)
 * is "anonymous" or "guest", in any case: refused before any lookup. */
bool logon_name_is_anonymous(const char *name, const struct logon_name *ln);

/* "user", "upn", "domain\user", ...: for the audit log. */
const char *logon_form_name(enum logon_form f);

#endif

/*
 * The login vocabulary every stage shares: which protocol, what Exchange's
 * LoginType allows, and how a login ended. Type-only, so proto/, directory/
 * and core/ can speak of a login without depending on each other.
 */
#ifndef FG_BASE_LOGIN_H
#define FG_BASE_LOGIN_H

enum fg_proto {
    FG_PROTO_IMAP,
    FG_PROTO_POP3,
    FG_PROTO_COUNT,
};

/* Exchange's LoginType: what may be sent in clear text. */
enum login_type {
    LOGIN_TYPE_PLAIN_TEXT_LOGIN, /* LOGIN, USER/PASS and AUTHENTICATE allowed */
    LOGIN_TYPE_PLAIN_TEXT_AUTH,  /* AUTHENTICATE/AUTH only */
    LOGIN_TYPE_SECURE,           /* nothing that reveals a password */
};

/* Outcome of a login, as the client is told. */
enum login_status {
    LOGIN_OK,
    LOGIN_FAILED,      /* unknown name or wrong password: never say which */
    LOGIN_DENIED,      /* authenticated, but may not open that mailbox */
    LOGIN_EXPIRED,     /* password expired or must be changed */
    LOGIN_UNAVAILABLE, /* directory or backend down */
    LOGIN_IN_USE,      /* the backend says the mailbox is locked (POP3) */
    LOGIN_TOO_MANY,    /* authenticated, but the mailbox has MaxConnectionsPerUser */
};

#endif

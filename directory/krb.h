/*
 * Kerberos logons: the acceptor's side of SASL GSSAPI (RFC 4752), for
 * IMAP's AUTHENTICATE GSSAPI and POP3's AUTH GSSAPI.
 *
 * The client proves its principal with a service ticket for imap/HOST or
 * pop/HOST, which the KDC (a domain controller) issued; forestgate checks it
 * with the service's keys from KerberosKeytab and asks the KDC nothing. The
 * principal then takes the same road as a password logon (resolve.h, in
 * principal mode): its account, mailbox, checks and route, and the backend
 * login as the master user.
 *
 * The keytab is read into memory at start-up, before privileges are dropped,
 * as the TLS key is. Each step runs on a directory thread: a ticket's check
 * writes the replay cache, and a worker never waits for a file.
 *
 * The exchange, one krb_step() per client response:
 *   ACCEPT  the client's GSS token(s) -> gss_accept_sec_context; the ticket's
 *           service must be the protocol's (imap/ or pop/);
 *   AP_REP  mutual authentication: the server's last token was sent, the
 *           client answers with an empty response;
 *   OFFER   the server sent its wrapped offer: security layer "none" only,
 *           as RFC 4752 section 3.3 allows; the client's wrapped answer
 *           chooses it and carries the authorisation identity.
 */
#ifndef FG_KRB_H
#define FG_KRB_H

#include "../base/common.h"
#include "../base/cred.h"
#include "../base/login.h"

struct krb_acceptor;

/* Which protocols' services the keytab holds keys for (1 << fg_proto). */
unsigned krb_services(const struct krb_acceptor *a);

/*
 * Reads the keytab (a path, or a "FILE:" or "WRFILE:" name) into memory and
 * makes the acceptor's credential. NULL with a reason in err when the file
 * cannot be read, holds no key, or GSSAPI refuses it.
 */
struct krb_acceptor *krb_open(const char *keytab, char *err, size_t errn);
void krb_close(struct krb_acceptor *a);

enum krb_rc {
    KRB_CONTINUE, /* send ks->out to the client, as a challenge */
    KRB_DONE,     /* ks->name is the principal's logon name for the resolver */
    KRB_FAILED,   /* ks->why says why; the client hears a failed logon */
};

enum krb_phase {
    KP_ACCEPT,
    KP_AP_REP,
    KP_OFFER,
    KP_DONE,
};

/* One Kerberos logon's state, owned by the connection's login. */
struct krb_sess {
    void *ctx; /* gss_ctx_id_t */
    uint8_t phase;
    bool enterprise; /* an enterprise principal (a UPN): searched by UPN only */
    uint32_t out_len, offer_len;
    uint8_t *out;   /* the next challenge; malloc'd */
    uint8_t *offer; /* the wrapped security layer offer, made with the context */
    uint16_t principal_len, name_len;
    char principal[CRED_NAME_MAX + 1]; /* as GSSAPI displays it: user@REALM */
    char name[CRED_NAME_MAX + 1];      /* user@realm, or user@realm\alias */
    char why[320];                     /* a failure, for the audit line */
};

struct krb_sess *krb_sess_new(void);
void krb_sess_free(struct krb_sess *ks);

/* Runs the step that the client's response in (n bytes, decoded) answers.
 * proto decides the service the ticket must be for. */
enum krb_rc krb_step(struct krb_acceptor *a, struct krb_sess *ks, enum fg_proto proto,
                     const uint8_t *in, size_t n);

/* The step the worker may run itself, as it touches only memory: the
 * client's empty answer to the AP-REP gets the offer wrapped beforehand.
 * True when done (send ks->out); false: the directory pool runs the step. */
bool krb_step_here(struct krb_sess *ks, size_t n);

/*
 * The pure parts, unit-tested and fuzzed:
 *
 * krb_map_principal: the logon name for the resolver, from the principal as
 * GSSAPI displays it and the authorisation identity the client asked for.
 * "alice@CORP.EXAMPLE" -> "alice@CORP.EXAMPLE" (its realm names the domain
 * whose sAMAccountName is searched first, then the UPN);
 * "alice.smith\@corp.com@CORP.EXAMPLE" (an enterprise principal) ->
 * "alice.smith@corp.com", searched by UPN only (*enterprise). An authzid
 * that is empty, the principal, or its user part asks for the account's own
 * mailbox; another names a mailbox alias, as in upn\alias. Returns the
 * length written to out (room for CRED_NAME_MAX + 1), or 0 when the
 * principal cannot name an account: a service (a/b@R), no realm, bytes
 * that a logon name cannot hold (a control byte, a NUL, a '\' in the
 * realm or the authzid, an escape other than \@ and \\ in the user).
 */
size_t krb_map_principal(const char *principal, size_t n, const char *authzid, size_t an, char *out,
                         bool *enterprise);

/* The service of the ticket in a client's first GSS token (krb5's AP-REQ):
 * its sname's first component ("imap"), copied to out (up to max bytes, no
 * NUL added). 0 when the token is no krb5 AP-REQ. The ticket's names are in
 * the clear; which key opens it is GSSAPI's business. */
size_t krb_token_service(const uint8_t *tok, size_t n, char *out, size_t max);

/* The service part of a ticket's target ("imap/host@R", or "imap" alone) is
 * the protocol's: imap for IMAP, pop for POP3 (case-insensitive). */
bool krb_service_ok(const char *target, size_t n, enum fg_proto proto);

#endif

/*
 * Full Access as Exchange stores it: a mailbox's msExchMailboxSecurityDescriptor,
 * a self-relative Windows security descriptor ([MS-DTYP] 2.4.6), read for
 * one right against an access token (the account's SID and its groups).
 *
 * Pure and allocation-free: the LDAP store, the LDIF store, a unit test and a
 * fuzzer share it. The descriptor is untrusted input (any LDAP server can
 * send any bytes): every offset and length is checked against the value's
 * end, and whatever does not parse grants nothing.
 */
#ifndef FG_SECDESC_H
#define FG_SECDESC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exchange's mailbox rights (MailboxRights): Full Access is the first bit,
 * which SDDL spells CC. */
#define SD_RIGHT_FULL_ACCESS 0x00000001u

enum sd_access {
    SD_NONE,      /* no ACE for the token grants or denies the right */
    SD_ALLOWED,   /* the first ACE that decides the right allows it */
    SD_DENIED,    /* the first ACE that decides the right denies it */
    SD_MALFORMED, /* not a self-relative descriptor with a DACL that parses */
};

/* The length of the binary SID at p ([MS-DTYP] 2.4.2.2: revision 1, at
 * most 15 sub-authorities), or 0 when the avail bytes there hold none. */
size_t sd_sid_len(const uint8_t *p, size_t avail);

/* A token is SIDs in binary form, one after another. Whether it holds sid. */
bool sd_token_has(const uint8_t *token, size_t token_len, const uint8_t *sid, size_t sid_len);

/*
 * Whether the descriptor's DACL gives right to the token, as Windows'
 * AccessCheck decides one right: ACEs in order, an ACE counting when its SID
 * is in the token and its mask holds the right (or GENERIC_ALL); the first
 * that counts decides, deny or allow. So an explicit deny (canonically
 * first) takes away what any allow gives. Inherit-only ACEs and object ACEs
 * for one property or extended right do not apply to the mailbox itself. A
 * descriptor without a DACL grants nothing here (Windows would read a NULL
 * DACL as "everyone"; a mailbox descriptor always has one, and a gateway
 * must not open every mailbox on a damaged value).
 */
enum sd_access sd_check(const uint8_t *sd, size_t len, const uint8_t *token, size_t token_len,
                        uint32_t right);

#endif

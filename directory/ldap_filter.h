/*
 * RFC 4515 escaping of a value put into an LDAP search filter: what stands
 * between a typed name (or a SID) and the directory's filter. Pure, so the
 * LDAP store, a unit test and a fuzzer share it without linking libldap.
 */
#ifndef FG_LDAP_FILTER_H
#define FG_LDAP_FILTER_H

#include <stddef.h>

/* RFC 4515 escaping of n bytes into out (NUL-terminated). Returns the
 * length, or 0 when it does not fit (n > 0). Every byte outside printable
 * ASCII, and * ( ) \, becomes \XX. */
size_t ldap_filter_escape(const void *v, size_t n, char *out, size_t cap);

#endif

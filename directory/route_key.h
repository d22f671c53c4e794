/*
 * The route cache's key: the canonical form of a typed logon name.
 *
 * The key is the name's form (logon_name.h) and its parts, joined by '\'
 * (so '/' and '\' type the same key), with case folded where Active
 * Directory compares without case. Two spellings of one name share a key;
 * two names that reach one mailbox (user, DOMAIN\user, the UPN) do not,
 * because they can resolve differently.
 *
 * Folding errs on the side of separate keys: a key that merged two names AD
 * tells apart would hand one name the other's route. So only one-to-one
 * case pairs are folded, in the scripts whose pairs are unambiguous: ASCII,
 * Latin-1, Latin Extended-A (not the Turkish dotted and dotless i, nor long
 * s), basic Greek and Cyrillic. A name spelled with other letters in
 * another case gets an entry of its own, which costs one more resolution
 * and is never wrong. A name that is not valid UTF-8 is kept byte for byte.
 *
 * Pure: no allocation, no I/O.
 */
#ifndef FG_ROUTE_KEY_H
#define FG_ROUTE_KEY_H

#include "logon_name.h"

#define ROUTE_KEY_MAX (1 + LOGON_NAME_MAX) /* the form's byte, then the parts */

/*
 * Writes name's key (n bytes, as typed) into out, which holds ROUTE_KEY_MAX
 * bytes. Returns its length, or 0 for a name with no valid form: the
 * resolver refuses those at once, and they are never cached. key[0] is '0' +
 * enum logon_form; the rest is the readable canonical name.
 */
size_t route_key(const char *name, size_t n, char out[ROUTE_KEY_MAX]);

/* The form a key was made from. */
static inline enum logon_form route_key_form(const char *key)
{
    return (enum logon_form)(key[0] - '0');
}

/* Folds the case of one code point, as route_key does; others unchanged. */
uint32_t route_key_fold(uint32_t cp);

#endif

/*
 * Backend TLS sessions kept for resumption: tls.c's private cache, one per
 * thread. Each worker logs on through its own, so the logon path takes no
 * lock; a worker pays one full handshake per backend host before it
 * resumes, which is nothing beside the logons that follow.
 *
 * A session is kept under a key that names everything it was made for: the
 * backend policy (tls_client: its CA file and whether it verifies), the
 * backend's address and port, and the name sent as SNI and verified. A
 * session is never offered to another host or under another name.
 *
 * A session goes when wolfSSL finds it expired (its ticket's lifetime, or
 * the session timeout), after TLS_RESUME_MAX_AGE whatever the ticket said,
 * when a handshake that offered it fails or the backend declines it, and
 * when the slot is needed for another host (the oldest goes). It is TLS
 * session state only: no logon name or password ever reaches it.
 */
#ifndef FG_TLS_RESUME_H
#define FG_TLS_RESUME_H

#include <stddef.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#define TLS_RESUME_SLOTS   256  /* backend hosts a thread remembers */
#define TLS_RESUME_MAX_AGE 3600 /* seconds a session is offered at most */

/* The session kept under key (borrowed: the cache keeps its reference), or
 * NULL. One past TLS_RESUME_MAX_AGE is dropped and not returned. */
WOLFSSL_SESSION *tls_resume_get(const char *key);

/* Keeps s (the caller's reference passes to the cache) under key, in place
 * of any other. Out of memory: s is freed, and nothing is kept. */
void tls_resume_put(const char *key, WOLFSSL_SESSION *s);

/* Forgets the session kept under key, if any. */
void tls_resume_drop(const char *key);

/* Sessions this thread keeps now (for the tests). */
size_t tls_resume_count(void);

#endif

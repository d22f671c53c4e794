/*
 * The directory: turns a client's credentials into a route (which backend,
 * which mailbox), or a refusal.
 *
 * A lookup is always asynchronous for the worker: dir_submit() returns at
 * once and the outcome arrives later as a completion on the worker's own
 * ring, carrying the user_data the worker chose. Today the only route is the
 * static DefaultServer and the backend checks the password itself, so the
 * answer is known at once and posted with a NOP; the LDAP directory pool
 * posts its answers with IORING_OP_MSG_RING to the same user_data, so the
 * worker side does not change.
 */
#ifndef FG_DIR_H
#define FG_DIR_H

#include "../core/config.h"

#include <liburing.h>

struct dir_route {
    const struct backend_target *target; /* hosts to try, in order */
    uint16_t port;
    uint16_t mailbox_len;
    char mailbox[CRED_NAME_MAX + 1]; /* the name to log in to the backend with */
};

/* Owned by the connection; it must stay valid until the completion arrives. */
struct dir_request {
    /* in */
    const struct cred *cred;
    enum fg_proto proto;
    /* out */
    enum login_status status;
    struct dir_route route;
    uint32_t elapsed_ms;
};

struct dir {
    const struct fg_config *cfg;
};

void dir_init(struct dir *d, const struct fg_config *cfg);

/*
 * Starts resolving req. The result is written to req before the completion
 * with user_data ud is posted to ring. Returns FG_OK, or FG_AGAIN when no
 * submission slot is free (the caller flushes its ring and retries).
 */
int dir_submit(struct dir *d, struct io_uring *ring, struct dir_request *req, uint64_t ud);

#endif

/*
 * The static route: every login goes to [backend] DefaultServer, under the
 * name the client typed, and the backend checks the password.
 */
#include "dir.h"

#include <string.h>

void dir_init(struct dir *d, const struct fg_config *cfg)
{
    d->cfg = cfg;
}

/* Refusals that need no directory: they never reach a backend. */
static enum login_status dir_precheck(const struct cred *c)
{
    /* An empty password must never be tried: to LDAP it is an anonymous bind,
     * which succeeds (RFC 4513 section 5.1.2). */
    if (c->pass_len == 0 || c->user_len == 0)
        return LOGIN_FAILED;
    /* PLAIN's authzid asks to act as another user; only the directory, with
     * delegate rights, may grant that. */
    if (c->mech == CRED_MECH_PLAIN && c->authzid_len > 0 &&
        (c->authzid_len != c->user_len || memcmp(c->authzid, c->user, c->user_len) != 0))
        return LOGIN_DENIED;
    return LOGIN_OK;
}

int dir_submit(struct dir *d, struct io_uring *ring, struct dir_request *req, uint64_t ud)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe)
        return FG_AGAIN;

    req->status = dir_precheck(req->cred);
    req->elapsed_ms = 0;
    if (req->status == LOGIN_OK) {
        req->route.target = &d->cfg->backend.target;
        req->route.port = d->cfg->proto[req->proto].target_port;
        req->route.mailbox_len = req->cred->user_len;
        memcpy(req->route.mailbox, req->cred->user, req->cred->user_len + 1);
    }
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, ud);
    return FG_OK;
}

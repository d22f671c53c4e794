/* Closing backend connections so that the backend closes first: see bclose.h. */
#include "bclose.h"

#include "ring.h"

#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

static const char bclose_imap_logout[] = "fgZ LOGOUT\r\n";
static const char bclose_pop3_quit[] = "QUIT\r\n";

static const struct __kernel_timespec bclose_wait = {
        .tv_sec = BCLOSE_WAIT_MS / 1000,
        .tv_nsec = (BCLOSE_WAIT_MS % 1000) * 1000000L,
};

/* Where the backend's last words are read to and dropped: written by the
 * kernel only, never read. */
static char bclose_sink[4096];

static struct io_uring_sqe *bclose_sqe(struct worker *w, uint8_t flags)
{
    struct io_uring_sqe *sqe = ring_sqe(w);
    io_uring_sqe_set_data64(sqe, ud_make(OP_NONE, 0, 0));
    sqe->flags |= flags;
    return sqe;
}

/* The backend's FIN, or the time limit. A link timeout ends the poll with
 * -ECANCELED; the hard links let the rest of the chain run either way. */
static void bclose_wait_fin(struct worker *w, int fd)
{
    io_uring_prep_poll_add(bclose_sqe(w, IOSQE_IO_HARDLINK), fd, POLLRDHUP);
    io_uring_prep_link_timeout(bclose_sqe(w, IOSQE_IO_HARDLINK),
                               (struct __kernel_timespec *)&bclose_wait, 0);
}

/* A chain must go to the kernel in one submission, or its links break. */
static void bclose_room(struct worker *w, unsigned n)
{
    if (io_uring_sq_space_left(&w->ring) < n)
        io_uring_submit(&w->ring);
}

int bclose_login_keep(const struct conn *c)
{
    /* A STARTTLS route says nothing more in the clear than STARTTLS, not
     * even LOGOUT: the backend may be an impostor that refused it. */
    if (c->bfd < 0 || !(c->flags & CF_GREETED) || c->btls || (c->lg && c->lg->par.starttls))
        return -1;
    return fcntl(c->bfd, F_DUPFD_CLOEXEC, 0);
}

void bclose_login_bye(struct worker *w, int fd, int proto)
{
    if (fd < 0)
        return;
    const char *bye = proto == FG_PROTO_IMAP ? bclose_imap_logout : bclose_pop3_quit;
    bclose_room(w, 5);
    io_uring_prep_send(bclose_sqe(w, IOSQE_IO_HARDLINK), fd, bye, strlen(bye), MSG_NOSIGNAL);
    bclose_wait_fin(w, fd);
    io_uring_prep_recv(bclose_sqe(w, IOSQE_IO_HARDLINK), fd, bclose_sink, sizeof bclose_sink,
                       MSG_DONTWAIT);
    io_uring_prep_close(bclose_sqe(w, 0), fd);
}

/* True when the backend has ended its side already. */
static bool bclose_peer_done(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static const struct __kernel_timespec bclose_grace = {
        .tv_sec = BCLOSE_GRACE_MS / 1000,
        .tv_nsec = (BCLOSE_GRACE_MS % 1000) * 1000000L,
};

/* Not tagged to the connection (conn_tag): the slot is not held for it, and
 * its generation tells whether the connection is still the same. */
static void bclose_arm(struct worker *w, struct conn *c, const struct __kernel_timespec *ts)
{
    struct io_uring_sqe *sqe = ring_sqe(w);
    io_uring_prep_timeout(sqe, (struct __kernel_timespec *)ts, 0, 0);
    io_uring_sqe_set_data64(sqe, ud_make(OP_B_BYE, conn_slot(w, c), c->gen));
}

void bclose_relay_eof(struct worker *w, struct conn *c)
{
    if (bclose_peer_done(c->bfd)) {
        shutdown(c->bfd, SHUT_WR); /* the backend closed first already */
        return;
    }
    if (c->proto == FG_PROTO_IMAP && !c->btls) {
        ssize_t FG_UNUSED rc = send(c->bfd, bclose_imap_logout, strlen(bclose_imap_logout),
                                    MSG_DONTWAIT | MSG_NOSIGNAL);
        bclose_arm(w, c, &bclose_wait);
    } else {
        bclose_arm(w, c, &bclose_grace);
    }
}

void bclose_on_timer(struct worker *w, uint64_t ud)
{
    uint32_t slot = ud_slot(ud);
    if (slot >= w->nslots)
        return;
    struct conn *c = &w->conns[slot];
    if (c->gen == ud_gen(ud) && c->state == CONN_RELAY && c->bfd >= 0)
        shutdown(c->bfd, SHUT_WR);
}

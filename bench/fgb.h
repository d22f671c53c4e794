/*
 * forestgate-bench: shared declarations of the load generator (client side)
 * and the mock backend (--serve). Both are single-binary, epoll-driven, one
 * event loop per thread, no locks on the hot path.
 */
#ifndef FGB_H
#define FGB_H

#include <stddef.h>
#include <stdint.h>

enum fgb_proto { FGB_IMAP, FGB_POP3 };

/* How the mock backend cuts a message into writes (--serve-writes). */
enum fgb_writes {
    FGB_WRITES_DOVECOT, /* as Dovecot 2.3 does: 8 KiB (IMAP) or 4 KiB (POP3) writes */
    FGB_WRITES_BULK,    /* all that is queued, in sendmsg calls of up to 64 segments */
};

/* Options of the mock backend: forestgate-bench --serve imap|pop3 ... */
struct fgb_serve_opts {
    enum fgb_proto proto;
    const char *host; /* bind address, default 127.0.0.1 */
    int port;         /* required */
    int threads;      /* event loops, each with its own SO_REUSEPORT listener; default 1 */
    int messages;     /* messages in every user's INBOX, default 10 */
    size_t msg_size;  /* bytes of every message (CRLF lines), default 102400 */
    double duration;  /* seconds to run, 0 = until SIGINT/SIGTERM */
    enum fgb_writes writes;
    int quiet; /* no start-up line on stderr */
};

/* Runs the mock backend until the duration ends or a signal; returns the exit code. */
int fgb_serve(const struct fgb_serve_opts *o);

/* Monotonic clock in nanoseconds. */
uint64_t fgb_now_ns(void);

#endif

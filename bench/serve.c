/*
 * forestgate-bench --serve: a MOCK IMAP4/POP3 backend for benchmarks.
 *
 * It stands where Dovecot would stand behind forestgate, so that a benchmark
 * measures the proxy and not a mail server. It is not a mail server: any login
 * succeeds (except an empty password, so that failure paths can be driven),
 * every user sees the same INBOX of generated messages, and nothing is stored.
 *
 * Cost per byte and per command is what matters here:
 *  - one epoll loop per thread, each with its own SO_REUSEPORT listener, so the
 *    kernel spreads connections and the loops share only read-only data;
 *  - the messages are generated once, and their bodies (also the dot-stuffed
 *    form POP3 needs) go out by reference in sendmsg segments, never copied per
 *    connection;
 *  - idle connections hold no buffers: input is read into a per-loop buffer and
 *    replies are queued in a per-loop queue; only what is left over at the end
 *    of a turn (a partial command, unsent output) moves to memory of the
 *    connection's own;
 *  - a connection whose output is backed up is not read, which bounds memory.
 *
 * A message goes out in writes cut as Dovecot 2.3 cuts them (--serve-writes
 * dovecot, the default; measured with strace, see bench/dovecot-writes and
 * BENCHMARKS.md "How Dovecot writes"), so that a proxy meets the chunks a real
 * backend sends: a relay that splices gains far less from 8 KiB writes than
 * from the megabyte-long sendmsg calls of --serve-writes bulk.
 */
#include "fgb.h"

#include "../base/base64.h"
#include "../proto/sasl_plain.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define SRV_IN_CAP   8192         /* longest command, its literals included */
#define SRV_TAG_MAX  64           /* longer IMAP tags are refused, never echoed */
#define SRV_USER_MAX 64           /* longest user name echoed in a login reply */
#define SRV_OUT_HIGH (256 * 1024) /* queued bytes above which commands wait */
#define SRV_IOV      64           /* segments per sendmsg */
#define SRV_BACKLOG  4096
#define SRV_EVENTS   256
#define SRV_MSG_MIN  200          /* smallest message: the headers and a little body */
#define SRV_LINE     72           /* body line, CRLF not counted */
#define SRV_LINE_MAX 76           /* the last line may be longer: lines stay <= 78 with CRLF */
#define SRV_PAUSE_NS 100000000ull /* accepts rest this long after EMFILE */
#define SRV_SEC_NS   1000000000ull
#define SRV_DC_IMAP  8192 /* Dovecot's IMAP literal writes: its 8 KiB reads of the mail file */
#define SRV_DC_POP3  4096 /* Dovecot's POP3 RETR/TOP writes, the status line in the first */

/* The mailbox every user sees; the header and envelope must say the same. */
#define SRV_DATE  "Mon, 01 Jan 2024 00:00:00 +0000"
#define SRV_IDATE "01-Jan-2024 00:00:00 +0000"
#define SRV_HDR_FMT                                                                                \
    "From: <mock@bench.invalid>\r\n"                                                               \
    "To: <user@bench.invalid>\r\n"                                                                 \
    "Subject: mock message %d\r\n"                                                                 \
    "Date: " SRV_DATE "\r\n"                                                                       \
    "Message-ID: <%d@mock.invalid>\r\n"                                                            \
    "X-Mock-Pad: "
#define SRV_PART       "\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" "
#define SRV_ENV_ADDR   "((NIL NIL \"mock\" \"bench.invalid\")) "
#define SRV_ENV_TO     "((NIL NIL \"user\" \"bench.invalid\")) "
#define SRV_IMAP_CAPS0 "IMAP4rev1 LITERAL+ SASL-IR ID AUTH=PLAIN AUTH=LOGIN IDLE"
#define SRV_IMAP_CAPS  "IMAP4rev1 LITERAL+ SASL-IR ID IDLE UNSELECT NAMESPACE"
#define SRV_SELECT_HEAD                                                                            \
    "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"                                  \
    "* OK [PERMANENTFLAGS ()] The MOCK keeps no flags.\r\n* "

/* Return codes: a few small ints, as in the rest of forestgate. */
enum { SRV_OK = 0, SRV_ERROR = -1, SRV_AGAIN = -2 };

/* What the next input line is: a command, or a step of a longer dialogue. */
enum srv_state {
    SRV_ST_CMD,
    SRV_ST_SASL_PLAIN, /* "+ " sent, waiting for the PLAIN response */
    SRV_ST_SASL_USER,  /* AUTH LOGIN: "+ VXNlcm5hbWU6" sent */
    SRV_ST_SASL_PASS,  /* AUTH LOGIN: "+ UGFzc3dvcmQ6" sent */
    SRV_ST_IDLE,       /* IMAP IDLE, waiting for DONE */
};

enum srv_auth { SRV_AUTH_OK, SRV_AUTH_FAILED, SRV_AUTH_ABORTED, SRV_AUTH_BAD_B64, SRV_AUTH_MECH };

/* The state a command needs. */
enum srv_need { SRV_NEED_ANY, SRV_NEED_PREAUTH, SRV_NEED_AUTH, SRV_NEED_SELECTED };

struct srv_conn;

/* What differs between IMAP and POP3; the loop and the I/O are shared. */
struct srv_proto {
    const char *name;
    void (*greet)(struct srv_conn *c);
    /* The end of the next command in buf[c->head..len) (past its LF),
     * SRV_AGAIN for more input, SRV_ERROR when it cannot fit. */
    ssize_t (*frame)(struct srv_conn *c, char *buf, size_t len);
    /* One command without its CRLF; the bytes may be changed in place. */
    void (*command)(struct srv_conn *c, char *cmd, size_t n);
    void (*auth_done)(struct srv_conn *c, enum srv_auth res);
    const char *too_long; /* the reply before closing on an over-long command */
};

/* Every user's INBOX: count messages of size bytes, all sharing one body. */
struct srv_mail {
    int count;
    size_t size;
    size_t hdr_len;              /* the same for every message, blank line included */
    size_t body_len, body_lines; /* body_len = size - hdr_len */
    size_t stuffed_len;          /* the body dot-stuffed for POP3 */
    char *hdrs;                  /* count * hdr_len */
    char *body, *stuffed;
};

struct srv_shared {
    const struct srv_proto *proto;
    struct srv_mail mail;
    enum fgb_writes writes;
    int stop_fd;                       /* eventfd: readable once the loops must stop */
    _Atomic uint64_t accept_warned_ns; /* the last EMFILE warning, to print one a second */
};

/* A piece of output: shared memory (p set) or the queue's own text (p NULL).
 * cut: a write ends with this piece (only --serve-writes dovecot sets it). */
struct srv_seg {
    const char *p;
    size_t off, len;
    bool cut;
};

struct srv_out {
    char *text;
    size_t tlen, tcap;
    struct srv_seg *segs;
    size_t shead, slen, scap;
    size_t bytes; /* not sent yet */
    bool failed;  /* an allocation failed: the connection must close */
};

struct srv_loop {
    struct srv_shared *sh;
    pthread_t thread;
    int epfd, lfd;
    bool accept_paused;
    uint64_t resume_ns;
    struct srv_conn *conns; /* every open connection, for the clean-up at stop */
    struct srv_out scratch; /* the output queue of the connection being served */
    char rbuf[SRV_IN_CAP];  /* the input buffer of the connection being served */
};

struct srv_conn {
    struct srv_conn *prev, *next;
    struct srv_loop *loop;
    int fd;
    uint8_t state; /* enum srv_state */
    bool logged_in, selected, user_given;
    bool rd_ready; /* the socket may hold unread bytes (edge-triggered epoll) */
    bool rd_hup;   /* the peer shut down: read until EOF, not just until a short read */
    bool blocked;  /* output backed up during this turn: stop running commands */
    bool closing;  /* close once the output is sent */
    bool broken;   /* close now */
    bool drain;    /* read what the peer sent before closing, so no RST eats our reply */
    bool lit_cut;  /* a short literal was queued: a write ends with its FETCH line */
    uint8_t tag_len, user_len;
    char *in; /* leftover input (a partial command), or NULL */
    uint32_t in_len;
    uint32_t head, scan, line, lit_left; /* framing, as offsets into the input */
    struct srv_out *out;                 /* NULL, the loop's scratch, or our own */
    char tag[SRV_TAG_MAX];
    char user[SRV_USER_MAX];
};

struct srv_str {
    char *p;
    size_t n;
};

/* The unparsed rest of a command. */
struct srv_args {
    char *p, *end;
};

static const struct srv_proto srv_imap, srv_pop3;

/* ------------------------------------------------------------------ helpers */

static uint64_t srv_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * SRV_SEC_NS + (uint64_t)ts.tv_nsec;
}

static int srv_lower(int ch)
{
    return ch >= 'A' && ch <= 'Z' ? ch + 32 : ch;
}

/* Case-insensitive: is p[0..n) the word? */
static bool srv_ieq(const char *p, size_t n, const char *word)
{
    size_t i = 0;
    for (; i < n; i++)
        if (!word[i] || srv_lower((unsigned char)p[i]) != srv_lower((unsigned char)word[i]))
            return false;
    return word[i] == 0;
}

/* A decimal number of up to 10 digits in p[0..n); SRV_ERROR for anything else. */
static int srv_number(const char *p, size_t n, uint64_t *v_r)
{
    uint64_t v = 0;
    if (n == 0 || n > 10)
        return SRV_ERROR;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return SRV_ERROR;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *v_r = v;
    return SRV_OK;
}

/* Decodes base64 in place. "=" alone is the empty response (RFC 4959). */
static long srv_b64_decode(char *s, size_t n)
{
    if (n == 1 && s[0] == '=')
        return 0;
    /* base64_decode reads each quantum before writing fewer bytes: safe in place. */
    return base64_decode(s, n, (uint8_t *)s);
}

/* Remembers a user name for the login reply, only when it is safe to echo. */
static void srv_user_set(struct srv_conn *c, const char *p, size_t n)
{
    c->user_len = 0;
    if (n > sizeof c->user)
        return;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f)
            return;
    memcpy(c->user, p, n);
    c->user_len = (uint8_t)n;
}

/* ------------------------------------------------------------------ mailbox */

/* Body line j cut to len bytes: every tenth line starts with a dot, so that
 * POP3 dot-stuffing is exercised. */
static void srv_mail_line(char *p, size_t j, size_t len)
{
    static const char fill[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    char t[SRV_LINE_MAX + 32];
    int k = snprintf(t, sizeof t,
                     j % 10 == 0 ? ".mock dot-stuffed line %06zu " : "mock line %06zu ", j);
    for (size_t i = (size_t)k; i < SRV_LINE_MAX; i++)
        t[i] = fill[(i + j) % (sizeof fill - 1)];
    memcpy(p, t, len);
}

/* Fills the body with CRLF lines of at most 78 bytes, exactly body_len in all.
 * Line 50 of every hundred is a lone "." - the line POP3 must stuff to "..". */
static void srv_mail_body(struct srv_mail *m)
{
    char *p = m->body;
    size_t rem = m->body_len, j = 0;

    while (rem > 0) {
        size_t len;
        if (rem <= SRV_LINE_MAX + 2) {
            len = rem - 2; /* the last line; rem is never 1, see below */
            srv_mail_line(p, j, len);
        } else if (j % 100 == 50) {
            len = 1; /* leaves at least 76 */
            p[0] = '.';
        } else {
            len = SRV_LINE; /* leaves at least 5 */
            srv_mail_line(p, j, len);
        }
        p[len] = '\r';
        p[len + 1] = '\n';
        p += len + 2;
        rem -= len + 2;
        j++;
    }
    m->body_lines = j;
}

/* The body as RETR and TOP send it: a line that starts with "." gets another. */
static int srv_mail_stuff(struct srv_mail *m)
{
    const char *p = m->body, *end = m->body + m->body_len;
    size_t dots = 0;
    char *w;

    for (const char *q = p; q < end; q = (const char *)memchr(q, '\n', (size_t)(end - q)) + 1)
        dots += *q == '.';
    m->stuffed_len = m->body_len + dots;
    m->stuffed = w = malloc(m->stuffed_len);
    if (!w)
        return SRV_ERROR;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)(nl - p) + 1;
        if (*p == '.')
            *w++ = '.';
        memcpy(w, p, n);
        w += n;
        p += n;
    }
    return SRV_OK;
}

/* Every header has the same length (padded), so the messages can share a body
 * and still all be exactly the size asked for. */
static int srv_mail_headers(struct srv_mail *m)
{
    int widest = m->count > 0 ? m->count : 1;
    m->hdr_len = (size_t)snprintf(NULL, 0, SRV_HDR_FMT, widest, widest) + 1 + 4;
    m->hdrs = malloc((size_t)m->count * m->hdr_len + 1);
    if (!m->hdrs)
        return SRV_ERROR;
    for (int i = 1; i <= m->count; i++) {
        char *h = m->hdrs + (size_t)(i - 1) * m->hdr_len;
        size_t k = (size_t)snprintf(h, m->hdr_len + 1, SRV_HDR_FMT, i, i);
        memset(h + k, 'x', m->hdr_len - 4 - k);
        memcpy(h + m->hdr_len - 4, "\r\n\r\n", 4);
    }
    return SRV_OK;
}

static void srv_mail_free(struct srv_mail *m)
{
    free(m->hdrs);
    free(m->body);
    free(m->stuffed);
    memset(m, 0, sizeof *m);
}

static int srv_mail_init(struct srv_mail *m, int count, size_t size)
{
    memset(m, 0, sizeof *m);
    m->count = count > 0 ? count : 0;
    if (srv_mail_headers(m))
        return SRV_ERROR;
    m->size = size < SRV_MSG_MIN ? SRV_MSG_MIN : size;
    if (m->size < m->hdr_len + 2)
        m->size = m->hdr_len + 2;
    m->body_len = m->size - m->hdr_len;
    m->body = malloc(m->body_len);
    if (!m->body)
        return SRV_ERROR;
    srv_mail_body(m);
    return srv_mail_stuff(m);
}

static const char *srv_mail_hdr(const struct srv_mail *m, uint32_t i)
{
    return m->hdrs + (size_t)(i - 1) * m->hdr_len;
}

/* Bytes of the stuffed body that hold its first `lines` lines (POP3 TOP). */
static size_t srv_mail_top_len(const struct srv_mail *m, uint64_t lines)
{
    const char *p = m->stuffed, *end = m->stuffed + m->stuffed_len;
    for (; lines > 0 && p < end; lines--)
        p = (const char *)memchr(p, '\n', (size_t)(end - p)) + 1;
    return (size_t)(p - m->stuffed);
}

/* ------------------------------------------------------------------- output */

static void srv_out_reset(struct srv_out *o)
{
    o->tlen = o->shead = o->slen = o->bytes = 0;
    o->failed = false;
}

/* The queue replies go to: the loop's scratch unless output is pending. */
static struct srv_out *srv_out_get(struct srv_conn *c)
{
    if (!c->out)
        c->out = &c->loop->scratch;
    return c->out;
}

static struct srv_seg *srv_out_seg(struct srv_out *o)
{
    if (o->slen == o->scap) {
        size_t cap = o->scap ? 2 * o->scap : 16;
        struct srv_seg *s = realloc(o->segs, cap * sizeof *s);
        if (!s) {
            o->failed = true;
            return NULL;
        }
        o->segs = s;
        o->scap = cap;
    }
    return &o->segs[o->slen++];
}

static int srv_out_grow(struct srv_out *o, size_t n)
{
    size_t cap = o->tcap ? o->tcap : 4096;
    while (cap - o->tlen < n)
        cap *= 2;
    char *t = realloc(o->text, cap);
    if (!t) {
        o->failed = true;
        return SRV_ERROR;
    }
    o->text = t;
    o->tcap = cap;
    return SRV_OK;
}

/* Queues a copy of s; adjacent text joins one segment. */
static void srv_out_text(struct srv_conn *c, const char *s, size_t n)
{
    struct srv_out *o = srv_out_get(c);
    if (o->failed || n == 0 || (o->tcap - o->tlen < n && srv_out_grow(o, n)))
        return;
    memcpy(o->text + o->tlen, s, n);
    struct srv_seg *last = o->slen > o->shead ? &o->segs[o->slen - 1] : NULL;
    if (last && !last->p && !last->cut && last->off + last->len == o->tlen) {
        last->len += n;
    } else {
        struct srv_seg *g = srv_out_seg(o);
        if (!g)
            return;
        *g = (struct srv_seg){NULL, o->tlen, n, false};
    }
    o->tlen += n;
    o->bytes += n;
}

static void srv_out_str(struct srv_conn *c, const char *s)
{
    srv_out_text(c, s, strlen(s));
}

static void srv_out_num(struct srv_conn *c, uint64_t v)
{
    char b[20];
    size_t i = sizeof b;
    do {
        b[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    srv_out_text(c, b + i, sizeof b - i);
}

/* Queues shared memory by reference: it outlives every connection. */
static void srv_out_ref(struct srv_conn *c, const char *p, size_t n)
{
    struct srv_out *o = srv_out_get(c);
    if (o->failed || n == 0)
        return;
    struct srv_seg *g = srv_out_seg(o);
    if (!g)
        return;
    *g = (struct srv_seg){p, 0, n, false};
    o->bytes += n;
}

/* Ends a write after what is queued so far, when writing as Dovecot does. */
static void srv_out_cut(struct srv_conn *c)
{
    struct srv_out *o = srv_out_get(c);
    if (c->loop->sh->writes == FGB_WRITES_DOVECOT && o->slen > o->shead)
        o->segs[o->slen - 1].cut = true;
}

static void srv_out_release(struct srv_conn *c)
{
    struct srv_out *o = c->out;
    c->out = NULL;
    if (!o)
        return;
    if (o == &c->loop->scratch) {
        srv_out_reset(o);
        return;
    }
    free(o->text);
    free(o->segs);
    free(o);
}

static void srv_out_consume(struct srv_out *o, size_t n)
{
    o->bytes -= n;
    while (n > 0) {
        struct srv_seg *s = &o->segs[o->shead];
        size_t k = n < s->len ? n : s->len;
        s->off += k;
        s->len -= k;
        n -= k;
        if (s->len == 0)
            o->shead++;
    }
}

/* Sends what is queued. SRV_OK once all is sent, SRV_AGAIN when the socket is
 * full (epoll reports EPOLLOUT later), SRV_ERROR. */
static int srv_out_flush(struct srv_conn *c)
{
    struct srv_out *o = c->out;
    if (!o)
        return SRV_OK;
    if (o->failed)
        return SRV_ERROR;
    while (o->shead < o->slen) {
        struct iovec iov[SRV_IOV];
        size_t k = 0, want = 0;
        for (size_t i = o->shead; i < o->slen && k < SRV_IOV; i++) {
            const struct srv_seg *s = &o->segs[i];
            iov[k].iov_base = (void *)((s->p ? s->p : o->text) + s->off);
            iov[k++].iov_len = s->len;
            want += s->len;
            if (s->cut)
                break;
        }
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = k};
        ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? SRV_AGAIN : SRV_ERROR;
        srv_out_consume(o, (size_t)n);
        /* A short write means a full socket buffer: another try would only
         * cost a syscall to learn EAGAIN. */
        if ((size_t)n < want)
            return SRV_AGAIN;
    }
    srv_out_release(c);
    return SRV_OK;
}

/* At the end of a turn, moves unsent output from the loop's scratch queue to
 * the connection's own, so the scratch is free for the next connection. */
static int srv_out_keep(struct srv_conn *c)
{
    struct srv_out *s = &c->loop->scratch, *o;
    if (c->out != s)
        return SRV_OK;
    c->out = NULL;
    if (s->failed || s->shead == s->slen) {
        int rc = s->failed ? SRV_ERROR : SRV_OK;
        srv_out_reset(s);
        return rc;
    }
    /* Text segments are in order: the first unsent one starts what is kept. */
    size_t nseg = s->slen - s->shead, base = s->tlen;
    for (size_t i = s->shead; i < s->slen; i++) {
        if (!s->segs[i].p) {
            base = s->segs[i].off;
            break;
        }
    }
    o = calloc(1, sizeof *o);
    if (o) {
        o->text = malloc(s->tlen - base + 1);
        o->segs = malloc(nseg * sizeof *o->segs);
    }
    if (!o || !o->text || !o->segs) {
        if (o) {
            free(o->text);
            free(o->segs);
        }
        free(o);
        srv_out_reset(s);
        return SRV_ERROR;
    }
    o->tlen = o->tcap = s->tlen - base;
    memcpy(o->text, s->text + base, o->tlen);
    memcpy(o->segs, s->segs + s->shead, nseg * sizeof *o->segs);
    for (size_t i = 0; i < nseg; i++)
        if (!o->segs[i].p)
            o->segs[i].off -= base;
    o->slen = o->scap = nseg;
    o->bytes = s->bytes;
    srv_out_reset(s);
    c->out = o;
    return SRV_OK;
}

/* A literal: "{n}\r\n" and then the bytes, from up to two pieces of memory. */
struct srv_view {
    const char *p[2];
    size_t n[2];
};

/* Queues the view in writes of block bytes (the first counts from the view's
 * start); cut_tail also ends a write after a last, shorter block. */
static void srv_out_blocks(struct srv_conn *c, const struct srv_view *v, size_t block,
                           bool cut_tail)
{
    size_t room = block;
    if (c->loop->sh->writes == FGB_WRITES_BULK)
        room = block = SIZE_MAX; /* whole pieces: fewer segments per sendmsg */
    for (int j = 0; j < 2; j++) {
        const char *p = v->p[j];
        for (size_t n = v->n[j], k; n > 0; p += k, n -= k) {
            k = n < room ? n : room;
            srv_out_ref(c, p, k);
            room -= k;
            if (room == 0) {
                srv_out_cut(c);
                room = block;
            }
        }
    }
    if (cut_tail && room != block)
        srv_out_cut(c);
}

/* Dovecot reads the mail in 8 KiB blocks and writes each as it comes; a mail
 * of less than one block stays in its output buffer with the FETCH line around
 * it, and goes out in one write at the line's end (srv_fetch_one). */
static void srv_out_literal(struct srv_conn *c, const struct srv_view *v)
{
    size_t n = v->n[0] + v->n[1];
    srv_out_text(c, "{", 1);
    srv_out_num(c, n);
    srv_out_text(c, "}\r\n", 3);
    if (c->loop->sh->writes == FGB_WRITES_BULK || n < SRV_DC_IMAP) {
        srv_out_ref(c, v->p[0], v->n[0]);
        srv_out_ref(c, v->p[1], v->n[1]);
        c->lit_cut = true;
        return;
    }
    srv_out_cut(c);
    srv_out_blocks(c, v, SRV_DC_IMAP, true);
}

/* ------------------------------------------------------------------ framing */

/*
 * The mock frames and parses IMAP with code of its own on purpose, not with
 * proto/imap_parse.c: a benchmark or test that drives forestgate against this
 * backend must not check the proxy's parser against itself, since a bug shared
 * by both ends would go unseen. It also takes only what proxies and the bench
 * send (no pre-login limits or invalid-command counting as the proxy has), so
 * it stays small and costs little per command. Only pieces with one right
 * answer are shared with forestgate: base64 and the SASL PLAIN split.
 */

/* A line ending in LF: POP3 commands, and IMAP continuation lines. */
static ssize_t srv_line_frame(struct srv_conn *c, char *buf, size_t len)
{
    char *nl = memchr(buf + c->scan, '\n', len - c->scan);
    if (!nl) {
        c->scan = (uint32_t)len;
        return SRV_AGAIN;
    }
    return nl - buf + 1;
}

/* Does the line end in a literal announcement "{n}" or "{n+}"? */
static bool srv_imap_literal_at_eol(const char *line, size_t n, uint64_t *lit_r, bool *sync_r)
{
    size_t end, i;
    if (n > 0 && line[n - 1] == '\r')
        n--;
    if (n == 0 || line[n - 1] != '}')
        return false;
    i = end = n - 1;
    *sync_r = !(i > 0 && line[i - 1] == '+');
    if (!*sync_r)
        i = end = i - 1;
    while (i > 0 && line[i - 1] >= '0' && line[i - 1] <= '9')
        i--;
    if (i == 0 || line[i - 1] != '{')
        return false;
    return srv_number(line + i, end - i, lit_r) == SRV_OK;
}

/*
 * An IMAP command: a line, and when it ends in a literal announcement, the
 * literal and the line after it, and so on. A synchronising literal gets its
 * "+ OK" here, as soon as it is announced: nginx's mail proxy waits for it.
 * Resumable: c->scan, c->line and c->lit_left say where it stopped.
 */
static ssize_t srv_imap_frame(struct srv_conn *c, char *buf, size_t len)
{
    if (c->state != SRV_ST_CMD)
        return srv_line_frame(c, buf, len);
    for (;;) {
        if (c->lit_left > 0) {
            size_t take = len - c->scan < c->lit_left ? len - c->scan : c->lit_left;
            c->scan += (uint32_t)take;
            c->lit_left -= (uint32_t)take;
            if (c->lit_left > 0)
                return SRV_AGAIN;
            c->line = c->scan;
        }
        char *nl = memchr(buf + c->scan, '\n', len - c->scan);
        if (!nl) {
            c->scan = (uint32_t)len;
            return SRV_AGAIN;
        }
        size_t eol = (size_t)(nl - buf);
        uint64_t lit;
        bool sync;
        if (!srv_imap_literal_at_eol(buf + c->line, eol - c->line, &lit, &sync))
            return (ssize_t)eol + 1;
        if (eol + 1 - c->head + lit > SRV_IN_CAP)
            return SRV_ERROR;
        if (sync)
            srv_out_str(c, "+ OK\r\n");
        c->lit_left = (uint32_t)lit;
        c->scan = c->line = (uint32_t)eol + 1;
    }
}

/* ------------------------------------------------------------- SASL (both) */

/* RFC 4616's fields are split by proto/'s decoder, the one forestgate uses on
 * its clients: an empty authcid or a third NUL fails, as it would there. */
static void srv_sasl_plain(struct srv_conn *c, char *b64, size_t n)
{
    const struct srv_proto *pr = c->loop->sh->proto;
    long len = srv_b64_decode(b64, n);
    if (len < 0) {
        pr->auth_done(c, SRV_AUTH_BAD_B64);
        return;
    }
    struct cred cr;
    bool ok = sasl_plain_decode((const uint8_t *)b64, (size_t)len, &cr) == FG_OK;
    explicit_bzero(b64, (size_t)len);
    /* A master login (authzid set) logs in as the authzid, as Dovecot does. */
    if (ok && cr.authzid_len)
        srv_user_set(c, cr.authzid, cr.authzid_len);
    else if (ok)
        srv_user_set(c, cr.user, cr.user_len);
    ok = ok && cr.pass_len > 0;
    explicit_bzero(&cr, sizeof cr);
    pr->auth_done(c, ok ? SRV_AUTH_OK : SRV_AUTH_FAILED);
}

static void srv_sasl_login_user(struct srv_conn *c, char *b64, size_t n)
{
    long len = srv_b64_decode(b64, n);
    if (len < 0) {
        c->loop->sh->proto->auth_done(c, SRV_AUTH_BAD_B64);
        return;
    }
    srv_user_set(c, b64, (size_t)len);
    c->state = SRV_ST_SASL_PASS;
    srv_out_str(c, "+ UGFzc3dvcmQ6\r\n");
}

static void srv_sasl_login_pass(struct srv_conn *c, char *b64, size_t n)
{
    long len = srv_b64_decode(b64, n);
    if (len >= 0)
        explicit_bzero(b64, (size_t)len);
    c->loop->sh->proto->auth_done(c, len < 0    ? SRV_AUTH_BAD_B64
                                     : len == 0 ? SRV_AUTH_FAILED
                                                : SRV_AUTH_OK);
}

/* AUTHENTICATE / AUTH with a mechanism and maybe an initial response (ir). */
static void srv_sasl_start(struct srv_conn *c, const struct srv_str *mech, struct srv_str *ir)
{
    c->user_len = 0;
    if (srv_ieq(mech->p, mech->n, "PLAIN")) {
        if (ir) {
            srv_sasl_plain(c, ir->p, ir->n);
            return;
        }
        c->state = SRV_ST_SASL_PLAIN;
        srv_out_str(c, "+ \r\n");
    } else if (srv_ieq(mech->p, mech->n, "LOGIN")) {
        if (ir) {
            srv_sasl_login_user(c, ir->p, ir->n);
            return;
        }
        c->state = SRV_ST_SASL_USER;
        srv_out_str(c, "+ VXNlcm5hbWU6\r\n");
    } else {
        c->loop->sh->proto->auth_done(c, SRV_AUTH_MECH);
    }
}

/* A client response line during a SASL exchange; "*" cancels it. */
static void srv_sasl_line(struct srv_conn *c, char *line, size_t n)
{
    enum srv_state st = (enum srv_state)c->state;
    c->state = SRV_ST_CMD;
    if (n == 1 && line[0] == '*') {
        c->loop->sh->proto->auth_done(c, SRV_AUTH_ABORTED);
        return;
    }
    if (st == SRV_ST_SASL_PLAIN)
        srv_sasl_plain(c, line, n);
    else if (st == SRV_ST_SASL_USER)
        srv_sasl_login_user(c, line, n);
    else
        srv_sasl_login_pass(c, line, n);
}

static bool srv_in_sasl(const struct srv_conn *c)
{
    return c->state == SRV_ST_SASL_PLAIN || c->state == SRV_ST_SASL_USER ||
           c->state == SRV_ST_SASL_PASS;
}

/* ------------------------------------------------------------ IMAP parsing */

/* A tag: 1 to SRV_TAG_MAX ASTRING-CHARs but "+" (RFC 3501). Only a tag that
 * passes is ever echoed, so text sent to the wrong port gets no crafted reply. */
static bool srv_imap_tag_ok(const char *p, size_t n)
{
    if (n == 0 || n > SRV_TAG_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch <= 0x20 || ch >= 0x7f || strchr("(){%*\"\\+", ch))
            return false;
    }
    return true;
}

/* The next word after one SP: up to the next SP. */
static int srv_arg_word(struct srv_args *a, struct srv_str *w)
{
    if (a->p >= a->end || *a->p != ' ')
        return SRV_ERROR;
    w->p = ++a->p;
    while (a->p < a->end && *a->p != ' ')
        a->p++;
    w->n = (size_t)(a->p - w->p);
    return w->n > 0 ? SRV_OK : SRV_ERROR;
}

/* A quoted string, unescaped in place. */
static int srv_arg_quoted(struct srv_args *a, struct srv_str *s)
{
    char *r = a->p + 1, *w = r;
    s->p = w;
    for (; r < a->end && *r != '"'; r++) {
        if (*r == '\\' && (++r == a->end || (*r != '"' && *r != '\\')))
            return SRV_ERROR;
        if (*r == '\r' || *r == '\n')
            return SRV_ERROR;
        *w++ = *r;
    }
    if (r == a->end)
        return SRV_ERROR;
    s->n = (size_t)(w - s->p);
    a->p = r + 1;
    return SRV_OK;
}

/* A literal "{n}" or "{n+}", CRLF, n bytes; the framer saw that they are here. */
static int srv_arg_literal(struct srv_args *a, struct srv_str *s)
{
    char *p = a->p + 1, *digits = p;
    uint64_t n;
    while (p < a->end && *p >= '0' && *p <= '9')
        p++;
    if (srv_number(digits, (size_t)(p - digits), &n))
        return SRV_ERROR;
    if (p < a->end && *p == '+')
        p++;
    if (p < a->end && *p == '}')
        p++;
    else
        return SRV_ERROR;
    if (p < a->end && *p == '\r')
        p++;
    if (p >= a->end || *p != '\n' || n > (uint64_t)(a->end - p - 1))
        return SRV_ERROR;
    s->p = p + 1;
    s->n = (size_t)n;
    a->p = s->p + n;
    return SRV_OK;
}

/* The next astring after one SP: atom, quoted string or literal. Atoms are
 * taken loosely (list wildcards, "]") since nothing here depends on them. */
static int srv_arg_astring(struct srv_args *a, struct srv_str *s)
{
    if (a->p >= a->end || *a->p != ' ')
        return SRV_ERROR;
    a->p++;
    if (a->p < a->end && *a->p == '"')
        return srv_arg_quoted(a, s);
    if (a->p < a->end && *a->p == '{')
        return srv_arg_literal(a, s);
    s->p = a->p;
    while (a->p < a->end && (unsigned char)*a->p > 0x20 && (unsigned char)*a->p < 0x7f &&
           !strchr("()\"", *a->p))
        a->p++;
    s->n = (size_t)(a->p - s->p);
    return s->n > 0 && (a->p == a->end || *a->p == ' ') ? SRV_OK : SRV_ERROR;
}

/* "tag text\r\n"; the tag passed srv_imap_tag_ok. */
static void srv_imap_reply(struct srv_conn *c, const char *text)
{
    srv_out_text(c, c->tag, c->tag_len);
    srv_out_text(c, " ", 1);
    srv_out_str(c, text);
    srv_out_text(c, "\r\n", 2);
}

static void srv_imap_bad_args(struct srv_conn *c)
{
    srv_imap_reply(c, "BAD Invalid arguments.");
}

/* -------------------------------------------------------------- IMAP FETCH */

enum srv_item_kind {
    SRV_IT_UID,
    SRV_IT_FLAGS,
    SRV_IT_SIZE,
    SRV_IT_DATE,
    SRV_IT_ENVELOPE,
    SRV_IT_BODYSTRUCTURE,
    SRV_IT_BODY, /* BODY without a section: the structure, non-extensible */
    SRV_IT_RFC822,
    SRV_IT_RFC822_HEADER,
    SRV_IT_RFC822_TEXT,
    SRV_IT_SECTION, /* BODY[...] and BODY.PEEK[...], maybe <partial> */
};

enum srv_section { SRV_SEC_ALL, SRV_SEC_HEADER, SRV_SEC_TEXT, SRV_SEC_1 };

static const char *const srv_section_names[] = {"", "HEADER", "TEXT", "1"};

struct srv_item {
    uint8_t kind, section;
    bool partial;
    uint64_t off, cnt;
};

#define SRV_ITEMS_MAX 32

struct srv_fetch {
    struct srv_item it[SRV_ITEMS_MAX];
    int n;
};

static const struct {
    const char *name;
    uint8_t kind;
} srv_fetch_names[] = {
        {"UID", SRV_IT_UID},
        {"FLAGS", SRV_IT_FLAGS},
        {"RFC822.SIZE", SRV_IT_SIZE},
        {"INTERNALDATE", SRV_IT_DATE},
        {"ENVELOPE", SRV_IT_ENVELOPE},
        {"BODYSTRUCTURE", SRV_IT_BODYSTRUCTURE},
        {"BODY", SRV_IT_BODY},
        {"RFC822", SRV_IT_RFC822},
        {"RFC822.HEADER", SRV_IT_RFC822_HEADER},
        {"RFC822.TEXT", SRV_IT_RFC822_TEXT},
};

/* The macros expand to these kinds; FULL's BODY is the structure. */
static const struct {
    const char *name;
    uint8_t kinds[5];
    int n;
} srv_fetch_macros[] = {
        {"ALL", {SRV_IT_FLAGS, SRV_IT_DATE, SRV_IT_SIZE, SRV_IT_ENVELOPE}, 4},
        {"FAST", {SRV_IT_FLAGS, SRV_IT_DATE, SRV_IT_SIZE}, 3},
        {"FULL", {SRV_IT_FLAGS, SRV_IT_DATE, SRV_IT_SIZE, SRV_IT_ENVELOPE, SRV_IT_BODY}, 5},
};

static int srv_fetch_add(struct srv_fetch *f, uint8_t kind)
{
    if (f->n == SRV_ITEMS_MAX)
        return SRV_ERROR;
    memset(&f->it[f->n], 0, sizeof f->it[0]);
    f->it[f->n++].kind = kind;
    return SRV_OK;
}

/* One item name: up to SP or ")"; a [section] may hold spaces. */
static int srv_fetch_token(struct srv_args *a, struct srv_str *t)
{
    t->p = a->p;
    while (a->p < a->end && *a->p != ' ' && *a->p != ')') {
        if (*a->p == '[') {
            char *rb = memchr(a->p, ']', (size_t)(a->end - a->p));
            if (!rb)
                return SRV_ERROR;
            a->p = rb;
        }
        a->p++;
    }
    t->n = (size_t)(a->p - t->p);
    return t->n > 0 ? SRV_OK : SRV_ERROR;
}

/* "<offset.count>" after a section. */
static int srv_fetch_partial(const char *p, const char *end, struct srv_item *it)
{
    const char *dot = memchr(p, '.', (size_t)(end - p));
    if (end - p < 5 || *p != '<' || end[-1] != '>' || !dot)
        return SRV_ERROR;
    it->partial = true;
    if (srv_number(p + 1, (size_t)(dot - p - 1), &it->off) ||
        srv_number(dot + 1, (size_t)(end - dot - 2), &it->cnt))
        return SRV_ERROR;
    return SRV_OK;
}

/* BODY[section]<partial> or BODY.PEEK[...]; the sections a one-part text
 * message has: "", HEADER, TEXT and 1. */
static int srv_fetch_section(const struct srv_str *t, char *lb, struct srv_item *it)
{
    char *end = t->p + t->n, *rb = memchr(lb, ']', (size_t)(end - lb));
    size_t pre = (size_t)(lb - t->p);
    if (!rb || (!srv_ieq(t->p, pre, "BODY") && !srv_ieq(t->p, pre, "BODY.PEEK")))
        return SRV_ERROR;
    it->kind = SRV_IT_SECTION;
    it->section = 0xff;
    for (uint8_t s = 0; s < 4; s++)
        if (srv_ieq(lb + 1, (size_t)(rb - lb - 1), srv_section_names[s]))
            it->section = s;
    if (it->section == 0xff)
        return SRV_ERROR;
    return rb + 1 == end ? SRV_OK : srv_fetch_partial(rb + 1, end, it);
}

static int srv_fetch_item(struct srv_fetch *f, const struct srv_str *t)
{
    char *lb = memchr(t->p, '[', t->n);
    if (lb) {
        if (srv_fetch_add(f, SRV_IT_SECTION))
            return SRV_ERROR;
        return srv_fetch_section(t, lb, &f->it[f->n - 1]);
    }
    for (size_t i = 0; i < sizeof srv_fetch_names / sizeof srv_fetch_names[0]; i++)
        if (srv_ieq(t->p, t->n, srv_fetch_names[i].name))
            return srv_fetch_add(f, srv_fetch_names[i].kind);
    return SRV_ERROR;
}

static int srv_fetch_list(struct srv_args *a, struct srv_fetch *f)
{
    struct srv_str t;
    a->p++;
    for (;;) {
        if (srv_fetch_token(a, &t) || srv_fetch_item(f, &t))
            return SRV_ERROR;
        if (a->p < a->end && *a->p == ')') {
            a->p++;
            return SRV_OK;
        }
        if (a->p >= a->end || *a->p != ' ')
            return SRV_ERROR;
        a->p++;
    }
}

/* The items after the sequence set: a macro, one item, or a list. UID FETCH
 * always reports the UID (RFC 3501 6.4.8), first unless asked elsewhere. */
static int srv_fetch_parse(struct srv_args *a, struct srv_fetch *f, bool uid)
{
    struct srv_str t;
    f->n = 0;
    if (a->p + 1 >= a->end || *a->p != ' ')
        return SRV_ERROR;
    a->p++;
    if (*a->p == '(') {
        if (srv_fetch_list(a, f))
            return SRV_ERROR;
    } else {
        if (srv_fetch_token(a, &t))
            return SRV_ERROR;
        size_t i = 0, nm = sizeof srv_fetch_macros / sizeof srv_fetch_macros[0];
        while (i < nm && !srv_ieq(t.p, t.n, srv_fetch_macros[i].name))
            i++;
        if (i == nm && srv_fetch_item(f, &t))
            return SRV_ERROR;
        for (int k = 0; i < nm && k < srv_fetch_macros[i].n; k++)
            srv_fetch_add(f, srv_fetch_macros[i].kinds[k]);
    }
    if (a->p != a->end)
        return SRV_ERROR;
    for (int k = 0; uid && k < f->n; k++)
        if (f->it[k].kind == SRV_IT_UID)
            return SRV_OK;
    if (uid) {
        if (f->n == SRV_ITEMS_MAX)
            return SRV_ERROR;
        memmove(&f->it[1], &f->it[0], (size_t)f->n * sizeof f->it[0]);
        memset(&f->it[0], 0, sizeof f->it[0]);
        f->it[0].kind = SRV_IT_UID;
        f->n++;
    }
    return SRV_OK;
}

/* One number of a sequence set; "*" is the last message. */
static int srv_seq_num(char **p, const char *end, uint32_t max, uint32_t *v_r)
{
    char *s = *p;
    uint64_t v;
    if (s < end && *s == '*') {
        *p = s + 1;
        *v_r = max;
        return SRV_OK;
    }
    while (*p < end && **p >= '0' && **p <= '9')
        (*p)++;
    if (srv_number(s, (size_t)(*p - s), &v) || v == 0 || v > UINT32_MAX)
        return SRV_ERROR;
    *v_r = (uint32_t)v;
    return SRV_OK;
}

/*
 * The next range of a sequence set at *p, as lo..hi clamped to 1..max (empty
 * when lo > hi). UIDs are the sequence numbers, so FETCH and UID FETCH agree;
 * numbers past the end give nothing, and "n:*" always reaches the last
 * message, as RFC 3501 says for UIDs.
 */
static int srv_seq_next(char **p, const char *end, uint32_t max, uint32_t *lo, uint32_t *hi)
{
    uint32_t a, b;
    if (srv_seq_num(p, end, max, &a))
        return SRV_ERROR;
    b = a;
    if (*p < end && **p == ':') {
        (*p)++;
        if (srv_seq_num(p, end, max, &b))
            return SRV_ERROR;
    }
    if (*p < end && (**p != ',' || ++*p == end))
        return SRV_ERROR;
    *lo = a < b ? a : b;
    *hi = a < b ? b : a;
    if (*hi > max)
        *hi = max;
    if (*lo == 0)
        *lo = 1;
    return SRV_OK;
}

static bool srv_seq_valid(const struct srv_str *set, uint32_t max)
{
    char *p = set->p;
    uint32_t lo, hi;
    while (p < set->p + set->n)
        if (srv_seq_next(&p, set->p + set->n, max, &lo, &hi))
            return false;
    return true;
}

static struct srv_view srv_fetch_view(const struct srv_mail *m, uint32_t i, uint8_t section)
{
    struct srv_view v = {{srv_mail_hdr(m, i), m->body}, {m->hdr_len, m->body_len}};
    if (section == SRV_SEC_HEADER)
        v.n[1] = 0;
    if (section == SRV_SEC_TEXT || section == SRV_SEC_1)
        v = (struct srv_view){{m->body, NULL}, {m->body_len, 0}};
    return v;
}

static void srv_view_slice(struct srv_view *v, uint64_t off, uint64_t cnt)
{
    for (int j = 0; j < 2; j++) {
        size_t k = off < v->n[j] ? (size_t)off : v->n[j];
        v->p[j] += k;
        v->n[j] -= k;
        off -= k;
    }
    for (int j = 0; j < 2; j++) {
        if (v->n[j] > cnt)
            v->n[j] = (size_t)cnt;
        cnt -= v->n[j];
    }
}

static void srv_fetch_envelope(struct srv_conn *c, uint32_t i)
{
    srv_out_str(c, "ENVELOPE (\"" SRV_DATE "\" \"mock message ");
    srv_out_num(c, i);
    srv_out_str(c, "\" " SRV_ENV_ADDR SRV_ENV_ADDR SRV_ENV_ADDR SRV_ENV_TO "NIL NIL NIL \"<");
    srv_out_num(c, i);
    srv_out_str(c, "@mock.invalid>\")");
}

static void srv_fetch_structure(struct srv_conn *c, const struct srv_mail *m, bool ext)
{
    srv_out_str(c, ext ? "BODYSTRUCTURE (" SRV_PART : "BODY (" SRV_PART);
    srv_out_num(c, m->body_len);
    srv_out_text(c, " ", 1);
    srv_out_num(c, m->body_lines);
    srv_out_str(c, ext ? " NIL NIL NIL NIL)" : ")");
}

static void srv_fetch_body(struct srv_conn *c, const struct srv_item *it, uint32_t i)
{
    const struct srv_mail *m = &c->loop->sh->mail;
    struct srv_view v = srv_fetch_view(m, i, it->section);
    srv_out_str(c, "BODY[");
    srv_out_str(c, srv_section_names[it->section]);
    srv_out_text(c, "]", 1);
    if (it->partial) {
        srv_out_text(c, "<", 1);
        srv_out_num(c, it->off);
        srv_out_text(c, ">", 1);
        srv_view_slice(&v, it->off, it->cnt);
    }
    srv_out_text(c, " ", 1);
    srv_out_literal(c, &v);
}

static void srv_fetch_emit(struct srv_conn *c, const struct srv_item *it, uint32_t i)
{
    const struct srv_mail *m = &c->loop->sh->mail;
    struct srv_view v;
    switch (it->kind) {
    case SRV_IT_UID:
        srv_out_str(c, "UID ");
        srv_out_num(c, i);
        break;
    case SRV_IT_FLAGS:
        srv_out_str(c, "FLAGS ()");
        break;
    case SRV_IT_SIZE:
        srv_out_str(c, "RFC822.SIZE ");
        srv_out_num(c, m->size);
        break;
    case SRV_IT_DATE:
        srv_out_str(c, "INTERNALDATE \"" SRV_IDATE "\"");
        break;
    case SRV_IT_ENVELOPE:
        srv_fetch_envelope(c, i);
        break;
    case SRV_IT_BODYSTRUCTURE:
    case SRV_IT_BODY:
        srv_fetch_structure(c, m, it->kind == SRV_IT_BODYSTRUCTURE);
        break;
    case SRV_IT_RFC822:
    case SRV_IT_RFC822_HEADER:
    case SRV_IT_RFC822_TEXT:
        v = srv_fetch_view(m, i,
                           it->kind == SRV_IT_RFC822          ? SRV_SEC_ALL
                           : it->kind == SRV_IT_RFC822_HEADER ? SRV_SEC_HEADER
                                                              : SRV_SEC_TEXT);
        srv_out_str(c, it->kind == SRV_IT_RFC822          ? "RFC822 "
                       : it->kind == SRV_IT_RFC822_HEADER ? "RFC822.HEADER "
                                                          : "RFC822.TEXT ");
        srv_out_literal(c, &v);
        break;
    case SRV_IT_SECTION:
        srv_fetch_body(c, it, i);
        break;
    }
}

static void srv_fetch_one(struct srv_conn *c, const struct srv_fetch *f, uint32_t i)
{
    srv_out_text(c, "* ", 2);
    srv_out_num(c, i);
    srv_out_text(c, " FETCH (", 8);
    for (int k = 0; k < f->n; k++) {
        if (k > 0)
            srv_out_text(c, " ", 1);
        srv_fetch_emit(c, &f->it[k], i);
    }
    srv_out_text(c, ")\r\n", 3);
    if (c->lit_cut)
        srv_out_cut(c);
    c->lit_cut = false;
}

/* FETCH and UID FETCH: all is checked before the first byte is queued. */
static void srv_imap_fetch_as(struct srv_conn *c, struct srv_args *a, bool uid)
{
    uint32_t max = (uint32_t)c->loop->sh->mail.count, lo, hi;
    struct srv_str set;
    struct srv_fetch f;
    if (srv_arg_word(a, &set) || !srv_seq_valid(&set, max) || srv_fetch_parse(a, &f, uid)) {
        srv_imap_bad_args(c);
        return;
    }
    for (char *p = set.p; p < set.p + set.n;) {
        srv_seq_next(&p, set.p + set.n, max, &lo, &hi);
        for (uint64_t i = lo; i <= hi; i++)
            srv_fetch_one(c, &f, (uint32_t)i);
    }
    srv_imap_reply(c, "OK Fetch completed.");
}

/* ----------------------------------------------------------- IMAP commands */

static void srv_imap_greet(struct srv_conn *c)
{
    srv_out_str(c, "* OK [CAPABILITY " SRV_IMAP_CAPS0 "] forestgate-bench MOCK IMAP ready.\r\n");
}

static void srv_imap_auth_done(struct srv_conn *c, enum srv_auth res)
{
    switch (res) {
    case SRV_AUTH_OK:
        c->logged_in = true;
        srv_out_text(c, c->tag, c->tag_len);
        srv_out_str(c, " OK [CAPABILITY " SRV_IMAP_CAPS "] Logged in");
        if (c->user_len) {
            srv_out_str(c, " as ");
            srv_out_text(c, c->user, c->user_len);
        }
        srv_out_str(c, " (MOCK).\r\n");
        break;
    case SRV_AUTH_FAILED:
        srv_imap_reply(c,
                       "NO [AUTHENTICATIONFAILED] Authentication failed (MOCK: empty password).");
        break;
    case SRV_AUTH_ABORTED:
        srv_imap_reply(c, "BAD Authentication aborted.");
        break;
    case SRV_AUTH_BAD_B64:
        srv_imap_reply(c, "BAD Invalid base64 data.");
        break;
    case SRV_AUTH_MECH:
        srv_imap_reply(c, "NO Unsupported authentication mechanism.");
        break;
    }
}

static void srv_imap_capability(struct srv_conn *c, struct srv_args *a)
{
    (void)a;
    srv_out_str(c, c->logged_in ? "* CAPABILITY " SRV_IMAP_CAPS "\r\n"
                                : "* CAPABILITY " SRV_IMAP_CAPS0 "\r\n");
    srv_imap_reply(c, "OK Capability completed.");
}

static void srv_imap_noop(struct srv_conn *c, struct srv_args *a)
{
    (void)a;
    srv_imap_reply(c, "OK NOOP completed.");
}

/* CHECK, EXPUNGE, STORE: nothing is stored, so there is nothing to do. */
static void srv_imap_done(struct srv_conn *c, struct srv_args *a)
{
    (void)a;
    srv_imap_reply(c, "OK Completed (MOCK: nothing changes).");
}

static void srv_imap_id(struct srv_conn *c, struct srv_args *a)
{
    (void)a;
    srv_out_str(c, "* ID NIL\r\n");
    srv_imap_reply(c, "OK ID completed.");
}

static void srv_imap_logout(struct srv_conn *c, struct srv_args *a)
{
    (void)a;
    srv_out_str(c, "* BYE forestgate-bench MOCK IMAP logging out.\r\n");
    srv_imap_reply(c, "OK Logout completed.");
    c->closing = true;
}

static void srv_imap_login(struct srv_conn *c, struct srv_args *a)
{
    struct srv_str user, pass;
    if (srv_arg_astring(a, &user) || srv_arg_astring(a, &pass) || a->p != a->end) {
        srv_imap_bad_args(c);
        return;
    }
    srv_user_set(c, user.p, user.n);
    explicit_bzero(pass.p, pass.n);
    srv_imap_auth_done(c, pass.n > 0 ? SRV_AUTH_OK : SRV_AUTH_FAILED);
}

static void srv_imap_authenticate(struct srv_conn *c, struct srv_args *a)
{
    struct srv_str mech, ir;
    if (srv_arg_word(a, &mech)) {
        srv_imap_bad_args(c);
        return;
    }
    bool has_ir = srv_arg_word(a, &ir) == SRV_OK;
    srv_sasl_start(c, &mech, has_ir ? &ir : NULL);
}

static bool srv_is_inbox(const struct srv_str *mb)
{
    return srv_ieq(mb->p, mb->n, "INBOX");
}

static void srv_imap_no_mailbox(struct srv_conn *c)
{
    srv_imap_reply(c, "NO [NONEXISTENT] Mailbox doesn't exist (the MOCK has only INBOX).");
}

static void srv_imap_select_as(struct srv_conn *c, struct srv_args *a, bool rw)
{
    uint32_t n = (uint32_t)c->loop->sh->mail.count;
    struct srv_str mb;
    c->selected = false;
    if (srv_arg_astring(a, &mb)) {
        srv_imap_bad_args(c);
        return;
    }
    if (!srv_is_inbox(&mb)) {
        srv_imap_no_mailbox(c);
        return;
    }
    c->selected = true;
    srv_out_str(c, SRV_SELECT_HEAD);
    srv_out_num(c, n);
    srv_out_str(c, " EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 1] UIDs valid.\r\n* OK [UIDNEXT ");
    srv_out_num(c, (uint64_t)n + 1);
    srv_out_str(c, "] Predicted next UID.\r\n");
    srv_imap_reply(c,
                   rw ? "OK [READ-WRITE] Select completed." : "OK [READ-ONLY] Examine completed.");
}

static void srv_imap_select(struct srv_conn *c, struct srv_args *a)
{
    srv_imap_select_as(c, a, true);
}

static void srv_imap_examine(struct srv_conn *c, struct srv_args *a)
{
    srv_imap_select_as(c, a, false);
}

/* STATUS INBOX (items): unknown items are left out of the answer. */
static void srv_imap_status(struct srv_conn *c, struct srv_args *a)
{
    uint64_t n = (uint64_t)c->loop->sh->mail.count;
    struct srv_str mb, w;
    if (srv_arg_astring(a, &mb) || a->end - a->p < 3 || a->p[0] != ' ' || a->p[1] != '(' ||
        a->end[-1] != ')') {
        srv_imap_bad_args(c);
        return;
    }
    if (!srv_is_inbox(&mb)) {
        srv_imap_no_mailbox(c);
        return;
    }
    struct srv_args items = {a->p + 1, a->end - 1};
    items.p[0] = ' '; /* the "(" becomes the separator srv_arg_word expects */
    srv_out_str(c, "* STATUS INBOX (");
    for (bool first = true; srv_arg_word(&items, &w) == SRV_OK;) {
        static const char *const names[] = {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY",
                                            "UNSEEN"};
        uint64_t values[] = {n, 0, n + 1, 1, 0};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            if (!srv_ieq(w.p, w.n, names[i]))
                continue;
            srv_out_str(c, first ? "" : " ");
            srv_out_str(c, names[i]);
            srv_out_text(c, " ", 1);
            srv_out_num(c, values[i]);
            first = false;
        }
    }
    srv_out_text(c, ")\r\n", 3);
    srv_imap_reply(c, "OK Status completed.");
}

static void srv_imap_list_as(struct srv_conn *c, struct srv_args *a, const char *what)
{
    struct srv_str ref, pat;
    if (srv_arg_astring(a, &ref) || srv_arg_astring(a, &pat)) {
        srv_imap_bad_args(c);
        return;
    }
    srv_out_str(c, what);
    /* An empty pattern asks for the hierarchy delimiter (RFC 3501 6.3.8). */
    srv_out_str(c, pat.n == 0 ? " (\\Noselect) \"/\" \"\"\r\n" : " () \"/\" INBOX\r\n");
    srv_imap_reply(c, "OK List completed.");
}

static void srv_imap_list(struct srv_conn *c, struct srv_args *a)
{
    srv_imap_list_as(c, a, "* LIST");
}

static void srv_imap_lsub(struct srv_conn *c, struct srv_args *a)
{
    srv_imap_list_as(c, a, "* LSUB");
}

static void srv_imap_namespace(struct srv_conn *c, struct srv_args *a)
{
    (void)a;
    srv_out_str(c, "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
    srv_imap_reply(c, "OK Namespace completed.");
}

static void srv_imap_idle(struct srv_conn *c, struct srv_args *a)
{
    (void)a;
    c->state = SRV_ST_IDLE;
    srv_out_str(c, "+ idling\r\n");
}

static void srv_imap_idle_line(struct srv_conn *c, const char *line, size_t n)
{
    c->state = SRV_ST_CMD;
    srv_imap_reply(c, srv_ieq(line, n, "DONE") ? "OK Idle completed." : "BAD Expected DONE.");
}

static void srv_imap_close(struct srv_conn *c, struct srv_args *a)
{
    (void)a;
    c->selected = false;
    srv_imap_reply(c, "OK Completed.");
}

/* SEARCH and UID SEARCH: whatever the criteria, every message matches. */
static void srv_imap_search(struct srv_conn *c, struct srv_args *a)
{
    (void)a;
    srv_out_str(c, "* SEARCH");
    for (int i = 1; i <= c->loop->sh->mail.count; i++) {
        srv_out_text(c, " ", 1);
        srv_out_num(c, (uint64_t)i);
    }
    srv_out_text(c, "\r\n", 2);
    srv_imap_reply(c, "OK Search completed.");
}

static void srv_imap_fetch(struct srv_conn *c, struct srv_args *a)
{
    srv_imap_fetch_as(c, a, false);
}

static void srv_imap_uid(struct srv_conn *c, struct srv_args *a)
{
    struct srv_str w;
    if (srv_arg_word(a, &w))
        srv_imap_bad_args(c);
    else if (srv_ieq(w.p, w.n, "FETCH"))
        srv_imap_fetch_as(c, a, true);
    else if (srv_ieq(w.p, w.n, "SEARCH"))
        srv_imap_search(c, a);
    else if (srv_ieq(w.p, w.n, "STORE") || srv_ieq(w.p, w.n, "EXPUNGE"))
        srv_imap_done(c, a);
    else
        srv_imap_reply(c, "BAD Unknown UID command.");
}

typedef void srv_imap_fn(struct srv_conn *c, struct srv_args *a);

static const struct srv_imap_cmd {
    const char *name;
    uint8_t need; /* enum srv_need */
    srv_imap_fn *fn;
} srv_imap_cmds[] = {
        {"CAPABILITY", SRV_NEED_ANY, srv_imap_capability},
        {"NOOP", SRV_NEED_ANY, srv_imap_noop},
        {"LOGOUT", SRV_NEED_ANY, srv_imap_logout},
        {"ID", SRV_NEED_ANY, srv_imap_id},
        {"LOGIN", SRV_NEED_PREAUTH, srv_imap_login},
        {"AUTHENTICATE", SRV_NEED_PREAUTH, srv_imap_authenticate},
        {"SELECT", SRV_NEED_AUTH, srv_imap_select},
        {"EXAMINE", SRV_NEED_AUTH, srv_imap_examine},
        {"STATUS", SRV_NEED_AUTH, srv_imap_status},
        {"LIST", SRV_NEED_AUTH, srv_imap_list},
        {"LSUB", SRV_NEED_AUTH, srv_imap_lsub},
        {"NAMESPACE", SRV_NEED_AUTH, srv_imap_namespace},
        {"IDLE", SRV_NEED_AUTH, srv_imap_idle},
        {"FETCH", SRV_NEED_SELECTED, srv_imap_fetch},
        {"UID", SRV_NEED_SELECTED, srv_imap_uid},
        {"SEARCH", SRV_NEED_SELECTED, srv_imap_search},
        {"STORE", SRV_NEED_SELECTED, srv_imap_done},
        {"EXPUNGE", SRV_NEED_SELECTED, srv_imap_done},
        {"CHECK", SRV_NEED_SELECTED, srv_imap_done},
        {"CLOSE", SRV_NEED_SELECTED, srv_imap_close},
        {"UNSELECT", SRV_NEED_SELECTED, srv_imap_close},
};

/* Whether the command may run now; if not, says why. */
static bool srv_imap_allowed(struct srv_conn *c, enum srv_need need)
{
    const char *why = NULL;
    if (need == SRV_NEED_PREAUTH && c->logged_in)
        why = "BAD Already logged in.";
    else if (need >= SRV_NEED_AUTH && !c->logged_in)
        why = "BAD Log in first.";
    else if (need == SRV_NEED_SELECTED && !c->selected)
        why = "BAD No mailbox selected.";
    if (why)
        srv_imap_reply(c, why);
    return !why;
}

static void srv_imap_command(struct srv_conn *c, char *cmd, size_t n)
{
    if (srv_in_sasl(c)) {
        srv_sasl_line(c, cmd, n);
        return;
    }
    if (c->state == SRV_ST_IDLE) {
        srv_imap_idle_line(c, cmd, n);
        return;
    }
    if (n == 0)
        return; /* an empty line is no command; Dovecot ignores it too */
    char *sp = memchr(cmd, ' ', n);
    size_t tag_len = sp ? (size_t)(sp - cmd) : n;
    if (!srv_imap_tag_ok(cmd, tag_len)) {
        srv_out_str(c, "* BAD Invalid tag.\r\n");
        return;
    }
    memcpy(c->tag, cmd, tag_len);
    c->tag_len = (uint8_t)tag_len;
    struct srv_args a = {cmd + tag_len, cmd + n};
    struct srv_str name;
    if (srv_arg_word(&a, &name)) {
        srv_imap_reply(c, "BAD Missing command.");
        return;
    }
    for (size_t i = 0; i < sizeof srv_imap_cmds / sizeof srv_imap_cmds[0]; i++) {
        const struct srv_imap_cmd *k = &srv_imap_cmds[i];
        if (!srv_ieq(name.p, name.n, k->name))
            continue;
        if (srv_imap_allowed(c, (enum srv_need)k->need))
            k->fn(c, &a);
        return;
    }
    srv_imap_reply(c, "BAD Unknown command.");
}

static const struct srv_proto srv_imap = {
        .name = "imap",
        .greet = srv_imap_greet,
        .frame = srv_imap_frame,
        .command = srv_imap_command,
        .auth_done = srv_imap_auth_done,
        .too_long = "* BYE Line too long (MOCK).\r\n",
};

/* ----------------------------------------------------------- POP3 commands */

static void srv_pop3_greet(struct srv_conn *c)
{
    srv_out_str(c, "+OK forestgate-bench MOCK POP3 ready.\r\n");
}

static void srv_pop3_auth_done(struct srv_conn *c, enum srv_auth res)
{
    static const char *const replies[] = {
            [SRV_AUTH_FAILED] = "-ERR [AUTH] Authentication failed (MOCK: empty password).\r\n",
            [SRV_AUTH_ABORTED] = "-ERR Authentication aborted.\r\n",
            [SRV_AUTH_BAD_B64] = "-ERR Invalid base64 data.\r\n",
            [SRV_AUTH_MECH] = "-ERR Unsupported authentication mechanism.\r\n",
    };
    c->user_given = false;
    if (res != SRV_AUTH_OK) {
        srv_out_str(c, replies[res]);
        return;
    }
    c->logged_in = true;
    srv_out_str(c, "+OK Logged in");
    if (c->user_len) {
        srv_out_str(c, " as ");
        srv_out_text(c, c->user, c->user_len);
    }
    srv_out_str(c, " (MOCK).\r\n");
}

/* A message number, 1..count; replies itself when there is none. */
static int srv_pop3_msgno(struct srv_conn *c, const char *arg, size_t n, uint32_t *i_r)
{
    uint64_t v;
    if (srv_number(arg, n, &v) || v == 0 || v > (uint64_t)c->loop->sh->mail.count) {
        srv_out_str(c, "-ERR No such message.\r\n");
        return SRV_ERROR;
    }
    *i_r = (uint32_t)v;
    return SRV_OK;
}

static void srv_pop3_capa(struct srv_conn *c, char *arg, size_t n)
{
    (void)arg, (void)n;
    srv_out_str(c, "+OK Capability list follows.\r\nCAPA\r\nTOP\r\nUSER\r\nUIDL\r\nRESP-CODES\r\n"
                   "AUTH-RESP-CODE\r\nPIPELINING\r\nSASL PLAIN LOGIN\r\nXCLIENT\r\n"
                   "IMPLEMENTATION forestgate-bench-MOCK\r\n.\r\n");
}

static void srv_pop3_quit(struct srv_conn *c, char *arg, size_t n)
{
    (void)arg, (void)n;
    srv_out_str(c, "+OK forestgate-bench MOCK POP3 signing off.\r\n");
    c->closing = true;
}

/* NOOP, RSET, XCLIENT: nothing to do, nothing stored. */
static void srv_pop3_ok(struct srv_conn *c, char *arg, size_t n)
{
    (void)arg, (void)n;
    srv_out_str(c, "+OK\r\n");
}

static void srv_pop3_user(struct srv_conn *c, char *arg, size_t n)
{
    if (n == 0) {
        srv_out_str(c, "-ERR No username given.\r\n");
        return;
    }
    srv_user_set(c, arg, n);
    c->user_given = true;
    srv_out_str(c, "+OK\r\n");
}

/* The password is the rest of the line, spaces and all. */
static void srv_pop3_pass(struct srv_conn *c, char *arg, size_t n)
{
    if (!c->user_given) {
        srv_out_str(c, "-ERR No username given.\r\n");
        return;
    }
    explicit_bzero(arg, n);
    srv_pop3_auth_done(c, n > 0 ? SRV_AUTH_OK : SRV_AUTH_FAILED);
}

static void srv_pop3_auth(struct srv_conn *c, char *arg, size_t n)
{
    if (n == 0) {
        srv_out_str(c, "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n");
        return;
    }
    char *sp = memchr(arg, ' ', n);
    struct srv_str mech = {arg, sp ? (size_t)(sp - arg) : n};
    struct srv_str ir = {sp + 1, sp ? n - mech.n - 1 : 0};
    srv_sasl_start(c, &mech, sp ? &ir : NULL);
}

static void srv_pop3_stat(struct srv_conn *c, char *arg, size_t n)
{
    const struct srv_mail *m = &c->loop->sh->mail;
    (void)arg, (void)n;
    srv_out_str(c, "+OK ");
    srv_out_num(c, (uint64_t)m->count);
    srv_out_text(c, " ", 1);
    srv_out_num(c, (uint64_t)m->count * m->size);
    srv_out_text(c, "\r\n", 2);
}

/* LIST and UIDL: one message, or all of them as a multi-line reply. */
static void srv_pop3_listing(struct srv_conn *c, char *arg, size_t n, bool uidl)
{
    const struct srv_mail *m = &c->loop->sh->mail;
    uint32_t i, lo = 1, hi = (uint32_t)m->count;
    if (n > 0) {
        if (srv_pop3_msgno(c, arg, n, &i))
            return;
        lo = hi = i;
        srv_out_str(c, "+OK ");
    } else {
        srv_out_str(c, "+OK\r\n");
    }
    for (i = lo; i <= hi && i > 0; i++) {
        srv_out_num(c, i);
        srv_out_str(c, uidl ? " mock" : " ");
        srv_out_num(c, uidl ? i : m->size);
        srv_out_text(c, "\r\n", 2);
    }
    if (n == 0)
        srv_out_text(c, ".\r\n", 3);
}

static void srv_pop3_list(struct srv_conn *c, char *arg, size_t n)
{
    srv_pop3_listing(c, arg, n, false);
}

static void srv_pop3_uidl(struct srv_conn *c, char *arg, size_t n)
{
    srv_pop3_listing(c, arg, n, true);
}

/* The headers, then body_bytes of the dot-stuffed body, then the end mark.
 * Dovecot writes the status line with the first 4 KiB of the mail, then 4 KiB
 * at a time; the end mark joins the last block unless that one was full. */
static void srv_pop3_send(struct srv_conn *c, uint32_t i, size_t body_bytes)
{
    const struct srv_mail *m = &c->loop->sh->mail;
    struct srv_view v = {{srv_mail_hdr(m, i), m->stuffed}, {m->hdr_len, body_bytes}};
    srv_out_blocks(c, &v, SRV_DC_POP3, false);
    srv_out_text(c, ".\r\n", 3);
    srv_out_cut(c);
}

static void srv_pop3_retr(struct srv_conn *c, char *arg, size_t n)
{
    const struct srv_mail *m = &c->loop->sh->mail;
    uint32_t i;
    if (srv_pop3_msgno(c, arg, n, &i))
        return;
    srv_out_str(c, "+OK ");
    srv_out_num(c, m->size);
    srv_out_str(c, " octets\r\n");
    srv_pop3_send(c, i, m->stuffed_len);
}

static void srv_pop3_top(struct srv_conn *c, char *arg, size_t n)
{
    char *sp = memchr(arg, ' ', n);
    uint64_t lines;
    uint32_t i;
    if (!sp || srv_number(sp + 1, n - (size_t)(sp - arg) - 1, &lines)) {
        srv_out_str(c, "-ERR Usage: TOP msg lines\r\n");
        return;
    }
    if (srv_pop3_msgno(c, arg, (size_t)(sp - arg), &i))
        return;
    srv_out_str(c, "+OK\r\n");
    srv_pop3_send(c, i, srv_mail_top_len(&c->loop->sh->mail, lines));
}

static void srv_pop3_dele(struct srv_conn *c, char *arg, size_t n)
{
    uint32_t i;
    if (srv_pop3_msgno(c, arg, n, &i) == SRV_OK)
        srv_out_str(c, "+OK Marked to be deleted (MOCK: nothing is ever deleted).\r\n");
}

typedef void srv_pop3_fn(struct srv_conn *c, char *arg, size_t n);

static const struct srv_pop3_cmd {
    const char *name;
    uint8_t need; /* enum srv_need; SELECTED is not used */
    srv_pop3_fn *fn;
} srv_pop3_cmds[] = {
        {"CAPA", SRV_NEED_ANY, srv_pop3_capa},      {"QUIT", SRV_NEED_ANY, srv_pop3_quit},
        {"NOOP", SRV_NEED_ANY, srv_pop3_ok},        {"USER", SRV_NEED_PREAUTH, srv_pop3_user},
        {"PASS", SRV_NEED_PREAUTH, srv_pop3_pass},  {"AUTH", SRV_NEED_PREAUTH, srv_pop3_auth},
        {"XCLIENT", SRV_NEED_PREAUTH, srv_pop3_ok}, {"STAT", SRV_NEED_AUTH, srv_pop3_stat},
        {"LIST", SRV_NEED_AUTH, srv_pop3_list},     {"UIDL", SRV_NEED_AUTH, srv_pop3_uidl},
        {"RETR", SRV_NEED_AUTH, srv_pop3_retr},     {"TOP", SRV_NEED_AUTH, srv_pop3_top},
        {"DELE", SRV_NEED_AUTH, srv_pop3_dele},     {"RSET", SRV_NEED_AUTH, srv_pop3_ok},
};

static void srv_pop3_command(struct srv_conn *c, char *cmd, size_t n)
{
    if (srv_in_sasl(c)) {
        srv_sasl_line(c, cmd, n);
        return;
    }
    char *sp = memchr(cmd, ' ', n);
    size_t name_len = sp ? (size_t)(sp - cmd) : n;
    char *arg = sp ? sp + 1 : cmd + n;
    size_t arg_len = sp ? n - name_len - 1 : 0;
    for (size_t i = 0; i < sizeof srv_pop3_cmds / sizeof srv_pop3_cmds[0]; i++) {
        const struct srv_pop3_cmd *k = &srv_pop3_cmds[i];
        if (!srv_ieq(cmd, name_len, k->name))
            continue;
        if (k->need == SRV_NEED_PREAUTH && c->logged_in)
            srv_out_str(c, "-ERR Already logged in.\r\n");
        else if (k->need == SRV_NEED_AUTH && !c->logged_in)
            srv_out_str(c, "-ERR Log in first.\r\n");
        else
            k->fn(c, arg, arg_len);
        return;
    }
    srv_out_str(c, "-ERR Unknown command.\r\n");
}

static const struct srv_proto srv_pop3 = {
        .name = "pop3",
        .greet = srv_pop3_greet,
        .frame = srv_line_frame,
        .command = srv_pop3_command,
        .auth_done = srv_pop3_auth_done,
        .too_long = "-ERR Line too long (MOCK).\r\n",
};

/* ------------------------------------------------------------- connections */

static void srv_loop_resume_accept(struct srv_loop *l);

/* Runs the complete commands in buf[c->head..len) until the input ends, the
 * output backs up, or the connection is to close. */
static void srv_conn_process(struct srv_conn *c, char *buf, size_t len)
{
    const struct srv_proto *pr = c->loop->sh->proto;
    while (c->head < len && !c->closing && !c->blocked && !c->broken) {
        ssize_t end = pr->frame(c, buf, len);
        if (end == SRV_AGAIN && len - c->head < SRV_IN_CAP)
            return;
        if (end < 0) {
            srv_out_str(c, pr->too_long);
            c->closing = c->drain = true;
            return;
        }
        char *cmd = buf + c->head;
        size_t n = (size_t)end - c->head;
        c->head = c->scan = c->line = (uint32_t)end;
        n -= n > 0 && cmd[n - 1] == '\n';
        n -= n > 0 && cmd[n - 1] == '\r';
        pr->command(c, cmd, n);
        if (c->out && c->out->bytes > SRV_OUT_HIGH) {
            int rc = srv_out_flush(c);
            c->blocked = rc == SRV_AGAIN;
            c->broken = rc == SRV_ERROR;
        }
    }
}

/* Keeps the unprocessed rest of buf (a partial command, or commands that wait
 * for the output) in the connection's own buffer; frees it once empty. */
static int srv_conn_keep_input(struct srv_conn *c, const char *buf, size_t len)
{
    size_t left = len - c->head;
    if (left == 0 || c->closing) {
        free(c->in);
        c->in = NULL;
        c->in_len = c->head = c->scan = c->line = c->lit_left = 0;
        return SRV_OK;
    }
    if (!c->in) {
        c->in = malloc(SRV_IN_CAP);
        if (!c->in)
            return SRV_ERROR;
        memcpy(c->in, buf + c->head, left);
    } else if (c->head > 0) {
        memmove(c->in, c->in + c->head, left);
    }
    c->in_len = (uint32_t)left;
    c->scan -= c->head;
    c->line -= c->head;
    c->head = 0;
    return SRV_OK;
}

/* Reads once, into the leftover or else the loop's buffer, and runs what came. */
static int srv_conn_read(struct srv_conn *c)
{
    char *buf = c->in ? c->in : c->loop->rbuf;
    size_t len = c->in ? c->in_len : 0, room = SRV_IN_CAP - len;
    ssize_t n = recv(c->fd, buf + len, room, 0);
    if (n < 0) {
        if (errno == EINTR)
            return SRV_OK;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return SRV_ERROR;
        c->rd_ready = false;
        return SRV_OK;
    }
    if (n == 0) {
        c->rd_ready = false;
        c->closing = true; /* what is queued still goes out */
        return SRV_OK;
    }
    /* With edge-triggered epoll a short read means the socket is empty: new
     * bytes bring a new event. Not so for the EOF that came with this one. */
    if ((size_t)n < room && !c->rd_hup)
        c->rd_ready = false;
    len += (size_t)n;
    srv_conn_process(c, buf, len);
    return srv_conn_keep_input(c, buf, len);
}

static int srv_conn_pump(struct srv_conn *c)
{
    if (c->in) {
        srv_conn_process(c, c->in, c->in_len);
        if (srv_conn_keep_input(c, c->in, c->in_len))
            return SRV_ERROR;
    }
    while (c->rd_ready && !c->closing && !c->blocked && !c->broken)
        if (srv_conn_read(c))
            return SRV_ERROR;
    return c->broken ? SRV_ERROR : SRV_OK;
}

/* Reads what the peer already sent, so that close() sends a FIN and not an
 * RST, which could make the peer drop our last reply unread. */
static void srv_conn_drain(struct srv_conn *c)
{
    shutdown(c->fd, SHUT_WR);
    for (int i = 0; i < 16; i++)
        if (recv(c->fd, c->loop->rbuf, sizeof c->loop->rbuf, MSG_DONTWAIT) <= 0)
            break;
}

static void srv_conn_close(struct srv_conn *c)
{
    struct srv_loop *l = c->loop;
    if (c->drain)
        srv_conn_drain(c);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv_out_release(c);
    free(c->in);
    free(c);
    if (l->accept_paused)
        srv_loop_resume_accept(l); /* a descriptor is free again */
}

/* Ends a turn: keeps unsent output, closes when due. rc is SRV_ERROR to close now. */
static void srv_conn_end_turn(struct srv_conn *c, int rc)
{
    if (rc == SRV_ERROR || c->broken || srv_out_keep(c) == SRV_ERROR)
        srv_conn_close(c);
    else if (c->closing && !c->out)
        srv_conn_close(c);
}

/* One epoll event: send what waits, then read and run commands. */
static void srv_conn_event(struct srv_conn *c, uint32_t ev)
{
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->rd_ready = true;
    if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->rd_hup = true;
    c->blocked = false;
    int rc = srv_out_flush(c);
    if (rc == SRV_OK && !c->closing) {
        rc = srv_conn_pump(c);
        if (rc == SRV_OK)
            rc = srv_out_flush(c);
    }
    srv_conn_end_turn(c, rc);
}

static void srv_conn_new(struct srv_loop *l, int fd)
{
    struct srv_conn *c = calloc(1, sizeof *c);
    int one = 1;
    if (!c) {
        close(fd);
        return;
    }
    c->fd = fd;
    c->loop = l;
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* Edge-triggered and registered once: no epoll_ctl per reply. */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        srv_conn_close(c);
        return;
    }
    l->sh->proto->greet(c);
    srv_conn_end_turn(c, srv_out_flush(c));
}

/* -------------------------------------------------------------------- loops */

static void srv_loop_listen_events(struct srv_loop *l, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = l};
    epoll_ctl(l->epfd, EPOLL_CTL_MOD, l->lfd, &ev);
}

static void srv_loop_resume_accept(struct srv_loop *l)
{
    l->accept_paused = false;
    srv_loop_listen_events(l, EPOLLIN);
}

/* Out of descriptors or memory: the listener would stay readable and the loop
 * would spin, so accepts rest a while; one warning a second at most. */
static void srv_loop_pause_accept(struct srv_loop *l, int err)
{
    uint64_t now = srv_now_ns(), last = atomic_load(&l->sh->accept_warned_ns);
    srv_loop_listen_events(l, 0);
    l->accept_paused = true;
    l->resume_ns = now + SRV_PAUSE_NS;
    if ((last == 0 || now - last >= SRV_SEC_NS) &&
        atomic_compare_exchange_strong(&l->sh->accept_warned_ns, &last, now))
        fprintf(stderr, "forestgate-bench: MOCK %s backend: accept: %s; accepts pause for 100 ms\n",
                l->sh->proto->name, strerror(err));
}

static void srv_loop_accept(struct srv_loop *l)
{
    for (;;) {
        int fd = accept4(l->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            srv_conn_new(l, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
            srv_loop_pause_accept(l, errno);
        return;
    }
}

static int srv_loop_timeout(const struct srv_loop *l)
{
    if (!l->accept_paused)
        return -1;
    uint64_t now = srv_now_ns();
    return now >= l->resume_ns ? 0 : (int)((l->resume_ns - now) / 1000000) + 1;
}

static void *srv_loop_main(void *arg)
{
    struct srv_loop *l = arg;
    struct epoll_event ev[SRV_EVENTS];
    for (;;) {
        int n = epoll_wait(l->epfd, ev, SRV_EVENTS, srv_loop_timeout(l));
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "forestgate-bench: MOCK %s backend: epoll_wait: %s\n",
                    l->sh->proto->name, strerror(errno));
            return NULL;
        }
        if (l->accept_paused && srv_now_ns() >= l->resume_ns)
            srv_loop_resume_accept(l);
        for (int i = 0; i < n; i++) {
            void *p = ev[i].data.ptr;
            if (p == &l->sh->stop_fd)
                return NULL; /* the connections are closed after the join */
            if (p == l)
                srv_loop_accept(l);
            else
                srv_conn_event(p, ev[i].events);
        }
    }
}

/* A listener of its own: SO_REUSEPORT lets the kernel spread connections. */
static int srv_listen(const struct sockaddr_storage *ss, socklen_t len)
{
    int one = 1, fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        bind(fd, (const struct sockaddr *)ss, len) < 0 || listen(fd, SRV_BACKLOG) < 0) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

static int srv_loop_init(struct srv_loop *l, struct srv_shared *sh,
                         const struct sockaddr_storage *ss, socklen_t len)
{
    l->sh = sh;
    l->lfd = srv_listen(ss, len);
    if (l->lfd < 0)
        return SRV_ERROR;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0)
        return SRV_ERROR;
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = l};
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &sh->stop_fd};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->lfd, &lev) < 0 ||
        epoll_ctl(l->epfd, EPOLL_CTL_ADD, sh->stop_fd, &sev) < 0)
        return SRV_ERROR;
    return SRV_OK;
}

static void srv_loop_free(struct srv_loop *l)
{
    l->accept_paused = false;
    while (l->conns)
        srv_conn_close(l->conns);
    if (l->lfd >= 0)
        close(l->lfd);
    if (l->epfd >= 0)
        close(l->epfd);
    free(l->scratch.text);
    free(l->scratch.segs);
}

/* ---------------------------------------------------------------- fgb_serve */

/* An IPv4 or IPv6 literal ("[::1]" too); prints host:port into text. */
static int srv_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len_r,
                    char *text, size_t text_size)
{
    char h[INET6_ADDRSTRLEN + 1];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']')
        host++, n -= 2;
    if (n >= sizeof h)
        return SRV_ERROR;
    memcpy(h, host, n);
    h[n] = 0;
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, h, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        *len_r = sizeof *s4;
        snprintf(text, text_size, "%s:%d", h, port);
    } else if (inet_pton(AF_INET6, h, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *len_r = sizeof *s6;
        snprintf(text, text_size, "[%s]:%d", h, port);
    } else {
        return SRV_ERROR;
    }
    return SRV_OK;
}

/* A timerfd that fires once after `seconds`, or -1 when there is no limit. */
static int srv_timer(double seconds)
{
    if (seconds <= 0)
        return -1;
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    struct itimerspec its = {{0, 0}, {(time_t)seconds, 0}};
    its.it_value.tv_nsec = (long)((seconds - (double)its.it_value.tv_sec) * 1e9);
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
        its.it_value.tv_nsec = 1;
    if (fd >= 0 && timerfd_settime(fd, 0, &its, NULL) < 0) {
        close(fd);
        return -2;
    }
    return fd >= 0 ? fd : -2;
}

/* Sleeps until a signal (signalfd) or the end of the duration (timerfd). */
static void srv_wait_stop(int sigfd, int tfd)
{
    struct pollfd p[2] = {{sigfd, POLLIN, 0}, {tfd, POLLIN, 0}};
    while (poll(p, 2, -1) < 0 && errno == EINTR)
        ;
}

/* Opens every loop's listener; with port 0 the first one picks the port. */
static int srv_open_loops(struct srv_loop *loops, int n, struct srv_shared *sh,
                          struct sockaddr_storage *ss, socklen_t len, int *port_io)
{
    for (int i = 0; i < n; i++) {
        if (srv_loop_init(&loops[i], sh, ss, len))
            return SRV_ERROR;
        if (i == 0 && *port_io == 0) {
            socklen_t sl = len;
            if (getsockname(loops[0].lfd, (struct sockaddr *)ss, &sl) < 0)
                return SRV_ERROR;
            *port_io = ntohs(ss->ss_family == AF_INET ? ((struct sockaddr_in *)ss)->sin_port
                                                      : ((struct sockaddr_in6 *)ss)->sin6_port);
        }
    }
    return SRV_OK;
}

/* Starts the loops, waits for the stop, stops and joins them. */
static int srv_run(struct srv_loop *loops, int n, struct srv_shared *sh, int sigfd, int tfd)
{
    int started = 0, rc = 0;
    for (; started < n; started++) {
        if (pthread_create(&loops[started].thread, NULL, srv_loop_main, &loops[started])) {
            fprintf(stderr, "forestgate-bench: MOCK backend: cannot start a thread\n");
            rc = 1;
            break;
        }
    }
    if (rc == 0)
        srv_wait_stop(sigfd, tfd);
    uint64_t one = 1;
    if (write(sh->stop_fd, &one, sizeof one) < 0)
        rc = 1;
    for (int i = 0; i < started; i++)
        pthread_join(loops[i].thread, NULL);
    return rc;
}

int fgb_serve(const struct fgb_serve_opts *o)
{
    struct srv_shared sh = {.proto = o->proto == FGB_POP3 ? &srv_pop3 : &srv_imap,
                            .writes = o->writes,
                            .stop_fd = -1};
    int threads = o->threads > 0 ? o->threads : 1, port = o->port, rc = 1, sigfd = -1, tfd;
    struct sockaddr_storage ss;
    socklen_t sslen;
    char where[INET6_ADDRSTRLEN + 16];
    sigset_t sigs, old;

    if (port < 0 || port > 65535 ||
        srv_addr(o->host ? o->host : "127.0.0.1", port, &ss, &sslen, where, sizeof where)) {
        fprintf(stderr, "forestgate-bench: MOCK backend: --host must be an IPv4 or IPv6 "
                        "address and --port 0..65535\n");
        return 2;
    }
    if (srv_mail_init(&sh.mail, o->messages, o->msg_size)) {
        fprintf(stderr, "forestgate-bench: MOCK backend: out of memory for the messages\n");
        srv_mail_free(&sh.mail);
        return 1;
    }
    /* Blocked before any thread starts, so every thread inherits the mask and
     * the signals wait for the signalfd. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, &old);
    struct srv_loop *loops = calloc((size_t)threads, sizeof *loops);
    for (int i = 0; loops && i < threads; i++)
        loops[i].lfd = loops[i].epfd = -1;
    sh.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    sigfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
    tfd = srv_timer(o->duration);
    if (!loops || sh.stop_fd < 0 || sigfd < 0 || tfd == -2) {
        fprintf(stderr, "forestgate-bench: MOCK backend: %s\n", strerror(errno));
    } else if (srv_open_loops(loops, threads, &sh, &ss, sslen, &port)) {
        fprintf(stderr, "forestgate-bench: MOCK %s backend: cannot listen on %s: %s\n",
                sh.proto->name, where, strerror(errno));
    } else {
        srv_addr(o->host ? o->host : "127.0.0.1", port, &ss, &sslen, where, sizeof where);
        if (!o->quiet)
            fprintf(stderr,
                    "forestgate-bench: MOCK %s backend on %s, %d thread%s, %d messages of %zu "
                    "bytes, %s writes\n",
                    sh.proto->name, where, threads, threads == 1 ? "" : "s", sh.mail.count,
                    sh.mail.size, o->writes == FGB_WRITES_BULK ? "bulk" : "Dovecot-like");
        rc = srv_run(loops, threads, &sh, sigfd, tfd);
    }
    for (int i = 0; loops && i < threads; i++)
        srv_loop_free(&loops[i]);
    free(loops);
    struct signalfd_siginfo si;
    while (sigfd >= 0 && read(sigfd, &si, sizeof si) > 0)
        ; /* taken: restoring the mask must not deliver it again */
    if (sigfd >= 0)
        close(sigfd);
    if (tfd >= 0)
        close(tfd);
    if (sh.stop_fd >= 0)
        close(sh.stop_fd);
    srv_mail_free(&sh.mail);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

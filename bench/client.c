/*
 * Sessions of the load generator. Each session runs a short script (connect,
 * greeting, login, the scenario's commands, logout) as a state machine fed
 * by a pure response reader (resp.c). One epoll loop per thread; no locks:
 * a thread touches only its own sessions and counters, and the main thread
 * reads the counters with relaxed atomic loads for the progress line.
 *
 * Time: every session waits in at most one of three FIFO queues, each with a
 * constant delay, so each queue stays ordered by deadline and is swept from
 * its head: the activity queue (--timeout), the back-off queue (after an
 * error) and the NOOP queue (mixed: IMAP sessions that stay).
 */
#include "client.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "../proto/imap_parse.h"
#include "../proto/sasl_plain.h"
#include "resp.h"

const char *const fgb_err_names[E_N] = {"connect", "greeting", "login", "command", "protocol",
                                        "closed",  "timeout",  "size",  "tls"};
const char *const fgb_kind_names[K_N] = {"main", "pop3_poll", "imap_stay"};
const char *const fgb_scenario_names[] = {"login", "fetch", "idle", "mixed"};

#define NS              1000000000ull
#define BACKOFF_NS      (50 * 1000000ull) /* before reconnecting after an error */
#define DRAIN_NS        (3 * NS)          /* for logouts after the measurement ends */
#define OUT_MAX         2048
#define READS_PER_EVENT 8 /* then let other sessions run; epoll comes back */

uint64_t fgb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

enum step {
    ST_FREE,     /* not started, or done */
    ST_CONNECT,  /* connect() in progress */
    ST_TLS,      /* TLS handshake in progress */
    ST_STARTTLS, /* STARTTLS / STLS sent */
    ST_GREETING, /* waiting for the greeting */
    ST_USER,     /* POP3 USER sent */
    ST_LOGIN,    /* LOGIN / AUTHENTICATE / PASS / AUTH sent */
    ST_SELECT,   /* IMAP SELECT or POP3 STAT sent */
    ST_CMD,      /* a scenario command in flight (FETCH, RETR, NOOP, UIDL) */
    ST_HOLD,     /* logged in, idle */
    ST_LOGOUT,   /* LOGOUT / QUIT sent */
};

enum cmd { C_NONE, C_FETCH, C_RETR, C_UIDL, C_NOOP, C_FLAGS };

struct queue {
    struct sess *head, *tail;
    uint64_t delay;
};

struct thr;

struct sess {
    struct thr *t;
    int fd;
    uint32_t gen; /* bumped at close: epoll events of an older fd are dropped */
    uint32_t idx;
    enum fgb_proto proto;
    enum fgb_kind kind;
    enum step step;
    int logged_in;
    uint32_t tagn;
    char tag[12];
    uint64_t t_start; /* of the login: connect, or its scheduled time */
    uint64_t t_cmd;   /* of the command in flight */
    /* Fetch loop and mixed. */
    uint32_t nmsgs, next_msg, noops;
    int64_t announced; /* size the server announced for the message in flight, or -1 */
    uint64_t body;     /* message bytes of the response in flight */
    enum cmd cmd;      /* the command in flight, in ST_CMD */
    const struct fgb_user *user;
    /* The one queue the session waits in. */
    struct queue *q;
    struct sess *prev, *next;
    uint64_t due;
    /* TLS: the connection, and the session kept to resume the next login. */
    WOLFSSL *ssl;
    WOLFSSL_SESSION *resume;
    int tls_up;
    /* Output not yet written. */
    size_t out_len, out_off;
    int want_out;
    char out[OUT_MAX];
    union {
        struct imr imr;
        struct p3r p3r;
    } rd;
};

struct thr {
    int id;
    pthread_t tid;
    int epfd;
    const struct fgb_opts *o;
    struct sess *sess;
    uint32_t nsess;
    uint32_t first_idx;
    struct queue q_active, q_backoff, q_noop, q_start;
    uint32_t preauth; /* sessions between connect and login */
    uint64_t t0, m_start, m_end, drain_end;
    int stopping;
    double rate; /* of this thread, logins/s; 0 = closed loop */
    uint64_t started, user_seq;
    uint64_t behind; /* open loop: scheduled logins waiting for a free session */
    /* Counters: ops/bytes/errors/open are read by the main thread. */
    struct fgb_kstats k[K_N];
    uint64_t open_now, logged_in_now, opened, failed, peak_open, peak_logged_in;
    uint64_t tls_handshakes, tls_resumed;
    char rbuf[65536];
};

static void sess_close(struct sess *s);
static void sess_fail(struct sess *s, enum fgb_err e);
static void sess_logout(struct sess *s);
static void sess_readable(struct sess *s);
static void imap_login(struct sess *s);
static void pop3_login(struct sess *s);

static void ctr_add(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
}

static int in_window(const struct thr *t, uint64_t now)
{
    return now >= t->m_start && now < t->m_end;
}

/* ---- queues ---- */

static void q_remove(struct sess *s)
{
    struct queue *q = s->q;
    if (!q)
        return;
    if (s->prev)
        s->prev->next = s->next;
    else
        q->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        q->tail = s->prev;
    s->prev = s->next = NULL;
    s->q = NULL;
}

static void q_push(struct queue *q, struct sess *s, uint64_t now)
{
    q_remove(s);
    s->q = q;
    s->due = now + q->delay;
    s->prev = q->tail;
    s->next = NULL;
    if (q->tail)
        q->tail->next = s;
    else
        q->head = s;
    q->tail = s;
}

/* ---- output ---- */

static int ep_mod(struct sess *s, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.u64 = (uint64_t)s->gen << 32 | s->idx};
    return epoll_ctl(s->t->epfd, EPOLL_CTL_MOD, s->fd, &ev);
}

static WOLFSSL_CTX *tls_ctx; /* shared by the threads: wolfSSL allows it */

/* A wolfSSL result as the socket calls would give it: -1 with EAGAIN, or 0 at close. */
static ssize_t tls_result(struct sess *s, int ret)
{
    if (ret > 0)
        return ret;
    int e = wolfSSL_get_error(s->ssl, ret);
    if (e == WOLFSSL_ERROR_WANT_READ || e == WOLFSSL_ERROR_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
    if (e == WOLFSSL_ERROR_ZERO_RETURN)
        return 0;
    errno = EPROTO;
    return -1;
}

/* The transport: plain TCP, or TLS once the handshake is done. */
static ssize_t sess_send_raw(struct sess *s, const char *p, size_t n)
{
    if (s->tls_up)
        return tls_result(s, wolfSSL_write(s->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n));
    return send(s->fd, p, n, MSG_NOSIGNAL);
}

static ssize_t sess_recv(struct sess *s, char *p, size_t n)
{
    if (s->tls_up)
        return tls_result(s, wolfSSL_read(s->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n));
    return recv(s->fd, p, n, 0);
}

/* Bytes wolfSSL decrypted already: epoll cannot report them. */
static int sess_tls_pending(struct sess *s)
{
    return s->tls_up && wolfSSL_pending(s->ssl) > 0;
}

/* Writes what is queued; returns -1 if the connection failed. */
static int sess_flush(struct sess *s)
{
    while (s->out_off < s->out_len) {
        ssize_t w = sess_send_raw(s, s->out + s->out_off, s->out_len - s->out_off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            if (!s->want_out && ep_mod(s, EPOLLIN | EPOLLOUT) == 0)
                s->want_out = 1;
            return 0;
        }
        if (w <= 0)
            return -1;
        s->out_off += (size_t)w;
    }
    /* Sent: a PASS or LOGIN line must not linger in memory. */
    explicit_bzero(s->out, s->out_len);
    s->out_off = s->out_len = 0;
    if (s->want_out && ep_mod(s, EPOLLIN) == 0)
        s->want_out = 0;
    return 0;
}

/* Queues a command (formatted) and writes it; the session may be closed on return. */
__attribute__((format(printf, 2, 3))) static void sess_cmd(struct sess *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(s->out + s->out_len, sizeof(s->out) - s->out_len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(s->out) - s->out_len) {
        sess_fail(s, E_PROTOCOL); /* a user name or password too long for a command */
        return;
    }
    s->out_len += (size_t)n;
    s->t_cmd = fgb_now_ns();
    q_push(&s->t->q_active, s, s->t_cmd);
    if (sess_flush(s) < 0)
        sess_fail(s, E_CLOSED);
}

static const char *next_tag(struct sess *s)
{
    snprintf(s->tag, sizeof(s->tag), "b%u", ++s->tagn);
    return s->tag;
}

/* ---- IMAP ---- */

/*
 * Writes s into dst (cap bytes) as an IMAP astring, encoded as proto/ encodes
 * it for a backend. A literal is LITERAL+ ({n+}): a load generator must not
 * wait for a "+" in the middle of its LOGIN. Returns -1 when dst is too small,
 * and then the command would be too long anyway.
 */
static int imap_astring(char *dst, size_t cap, const char *s)
{
    size_t n = strlen(s);
    int w = -1;
    switch (imap_astring_kind(s, n)) {
    case IMAP_ASTRING_ATOM:
        w = snprintf(dst, cap, "%s", s);
        break;
    case IMAP_ASTRING_QUOTED:
        if (2 * n + 2 >= cap)
            return -1;
        w = (int)imap_quote(s, n, dst);
        dst[w] = 0;
        break;
    case IMAP_ASTRING_LITERAL:
        w = snprintf(dst, cap, "{%zu+}\r\n%s", n, s);
        break;
    }
    return w >= 0 && (size_t)w < cap ? 0 : -1;
}

/* The SASL PLAIN initial response of u, NUL-terminated, into dst (room for
 * sasl_plain_encoded_max() + 1). Returns -1 when a field is over proto/'s limits. */
static int sasl_plain_b64(const struct fgb_user *u, char *dst)
{
    size_t n = sasl_plain_encode("", 0, u->name, strlen(u->name), u->pass, strlen(u->pass), dst);
    dst[n] = 0;
    return n > 0 ? 0 : -1;
}

/* Users are taken in turn, interleaved over the threads. */
static const struct fgb_user *sess_user(struct sess *s)
{
    struct thr *t = s->t;
    uint64_t i = (uint64_t)t->id + (uint64_t)t->o->threads * t->user_seq++;
    s->user = &t->o->users[i % t->o->nusers];
    return s->user;
}

static void imap_login(struct sess *s)
{
    const struct fgb_user *u = sess_user(s);
    s->step = ST_LOGIN;
    if (s->t->o->auth_plain) {
        char b64[sasl_plain_encoded_max() + 1];
        if (sasl_plain_b64(u, b64) < 0)
            sess_fail(s, E_PROTOCOL);
        else
            sess_cmd(s, "%s AUTHENTICATE PLAIN %s\r\n", next_tag(s), b64);
        explicit_bzero(b64, sizeof(b64));
        return;
    }
    char user[OUT_MAX], pass[OUT_MAX];
    if (imap_astring(user, sizeof(user), u->name) < 0 ||
        imap_astring(pass, sizeof(pass), u->pass) < 0)
        sess_fail(s, E_PROTOCOL); /* a user name or password too long for a command */
    else
        sess_cmd(s, "%s LOGIN %s %s\r\n", next_tag(s), user, pass);
    explicit_bzero(pass, sizeof(pass));
}

/* "* 3 EXISTS" */
static int imap_exists(const char *l, size_t n, uint32_t *count)
{
    char tmp[64];
    if (n >= sizeof(tmp))
        return 0;
    memcpy(tmp, l, n);
    tmp[n] = 0;
    unsigned v;
    char word[8];
    if (sscanf(tmp, "* %u %7s", &v, word) != 2 || strcasecmp(word, "EXISTS") != 0)
        return 0;
    *count = v;
    return 1;
}

/* RFC822.SIZE in the first line of a FETCH response, or -1. */
static int64_t imap_rfc822_size(const char *l, size_t n)
{
    const char key[] = "RFC822.SIZE ";
    const char *p = memmem(l, n, key, sizeof(key) - 1);
    if (!p)
        return -1;
    p += sizeof(key) - 1;
    int64_t v = 0;
    int digits = 0;
    while (p < l + n && *p >= '0' && *p <= '9' && digits < 18) {
        v = v * 10 + (*p++ - '0');
        digits++;
    }
    return digits ? v : -1;
}

static int tagged_is(const struct imr_resp *r, const char *tag, const char *status)
{
    size_t tl = strlen(tag), sl = strlen(status);
    return r->len > tl + sl && memcmp(r->line, tag, tl) == 0 && r->line[tl] == ' ' &&
           strncasecmp(r->line + tl + 1, status, sl) == 0;
}

/* ---- TLS ---- */

static void sess_tls_step(struct sess *s);

/* Starts the handshake: at connect (--tls) or after STARTTLS/STLS's OK. */
static void sess_tls_start(struct sess *s)
{
    const struct fgb_opts *o = s->t->o;
    s->ssl = wolfSSL_new(tls_ctx);
    if (!s->ssl || wolfSSL_set_fd(s->ssl, s->fd) != WOLFSSL_SUCCESS ||
        (o->sni && wolfSSL_UseSNI(s->ssl, WOLFSSL_SNI_HOST_NAME, o->sni,
                                  (unsigned short)strlen(o->sni)) != WOLFSSL_SUCCESS)) {
        sess_fail(s, E_TLS);
        return;
    }
    if (o->tls_resume && s->resume)
        wolfSSL_set_session(s->ssl, s->resume);
    /* A new reader: no byte from before the handshake is read after it. */
    if (s->proto == FGB_IMAP)
        imr_init(&s->rd.imr);
    else
        p3r_init(&s->rd.p3r);
    s->step = ST_TLS;
    q_push(&s->t->q_active, s, fgb_now_ns());
    sess_tls_step(s);
}

/* Advances the handshake; after it, the greeting (--tls) or the login (--starttls). */
static void sess_tls_step(struct sess *s)
{
    struct thr *t = s->t;
    int ret = wolfSSL_connect(s->ssl);
    if (ret != WOLFSSL_SUCCESS) {
        int e = wolfSSL_get_error(s->ssl, ret);
        uint32_t ev = e == WOLFSSL_ERROR_WANT_WRITE ? EPOLLIN | EPOLLOUT : EPOLLIN;
        if (e != WOLFSSL_ERROR_WANT_READ && e != WOLFSSL_ERROR_WANT_WRITE)
            sess_fail(s, E_TLS);
        else if (ep_mod(s, ev) == 0)
            s->want_out = ev != EPOLLIN;
        return;
    }
    s->tls_up = 1;
    if (in_window(t, fgb_now_ns())) {
        ctr_add(&t->tls_handshakes, 1);
        ctr_add(&t->tls_resumed, wolfSSL_session_reused(s->ssl) ? 1 : 0);
    }
    if (ep_mod(s, EPOLLIN) == 0)
        s->want_out = 0;
    if (t->o->tls) {
        s->step = ST_GREETING;
        if (sess_tls_pending(s))
            sess_readable(s); /* the greeting came with the last handshake flight */
    } else if (s->proto == FGB_IMAP) {
        imap_login(s);
    } else {
        pop3_login(s);
    }
}

/* ---- common script ---- */

static void record(struct sess *s, enum fgb_kind k, uint64_t since, uint64_t bytes)
{
    struct thr *t = s->t;
    uint64_t now = fgb_now_ns();
    if (!in_window(t, now))
        return;
    hist_record(&t->k[k].lat, now - since);
    ctr_add(&t->k[k].ops, 1);
    ctr_add(&t->k[k].bytes, bytes);
}

static void pop3_login(struct sess *s)
{
    const struct fgb_user *u = sess_user(s);
    if (s->t->o->auth_plain) {
        char b64[sasl_plain_encoded_max() + 1];
        if (sasl_plain_b64(u, b64) < 0) {
            sess_fail(s, E_PROTOCOL);
            return;
        }
        s->step = ST_LOGIN;
        sess_cmd(s, "AUTH PLAIN %s\r\n", b64);
        explicit_bzero(b64, sizeof(b64));
        return;
    }
    s->step = ST_USER;
    sess_cmd(s, "USER %s\r\n", u->name);
}

/* The messages the fetch loop takes in turn: lo .. lo + n - 1 (--fetch-msgs,
 * within the mailbox); n = 0 if none. */
static uint32_t fetch_range(const struct sess *s, uint32_t *lo)
{
    const struct fgb_opts *o = s->t->o;
    uint32_t hi = o->fetch_last && o->fetch_last < s->nmsgs ? o->fetch_last : s->nmsgs;
    *lo = o->fetch_first ? o->fetch_first : 1;
    return *lo <= hi ? hi - *lo + 1 : 0;
}

/* The fetch loop: the next message, in turn, with UID FETCH or RETR. */
static void sess_fetch_next(struct sess *s)
{
    uint32_t k = s->next_msg, lo, n = fetch_range(s, &lo);
    s->next_msg = lo + (k - lo + 1) % n;
    s->step = ST_CMD;
    s->announced = -1;
    s->body = 0;
    if (s->proto == FGB_IMAP) {
        s->cmd = C_FETCH;
        sess_cmd(s, "%s UID FETCH %u (RFC822.SIZE BODY.PEEK[])\r\n", next_tag(s), k);
    } else {
        s->cmd = C_RETR;
        p3r_expect(&s->rd.p3r, 1, 0);
        sess_cmd(s, "RETR %u\r\n", k);
    }
}

/* After the login's OK: what the scenario does next. */
static void sess_logged_in(struct sess *s)
{
    struct thr *t = s->t;
    s->logged_in = 1;
    t->preauth--;
    ctr_add(&t->logged_in_now, 1);
    if (t->logged_in_now > t->peak_logged_in)
        t->peak_logged_in = t->logged_in_now;
    const struct fgb_opts *o = t->o;
    if (s->kind == K_MAIN && o->scenario != SC_FETCH)
        record(s, K_MAIN, s->t_start, 0);
    if (t->stopping) {
        sess_logout(s);
        return;
    }
    if (o->scenario == SC_LOGIN) {
        sess_logout(s);
    } else if (o->scenario == SC_IDLE) {
        s->step = ST_HOLD;
        q_remove(s);
    } else if (s->proto == FGB_IMAP) {
        s->step = ST_SELECT;
        sess_cmd(s, "%s SELECT INBOX\r\n", next_tag(s));
    } else {
        s->step = ST_SELECT;
        sess_cmd(s, "STAT\r\n");
    }
}

/* SELECT / STAT done: start the loop of the scenario. */
static void sess_selected(struct sess *s)
{
    if (s->t->stopping) {
        sess_logout(s);
        return;
    }
    if (s->kind == K_IMAP_STAY) {
        s->step = ST_CMD;
        s->cmd = C_FLAGS;
        sess_cmd(s, "%s UID FETCH 1:* (FLAGS)\r\n", next_tag(s));
        return;
    }
    if (s->kind == K_POP3_POLL) {
        s->step = ST_CMD;
        s->cmd = C_UIDL;
        p3r_expect(&s->rd.p3r, 1, 0);
        sess_cmd(s, "UIDL\r\n");
        return;
    }
    uint32_t lo, n = fetch_range(s, &lo);
    if (n == 0) {
        static int said;
        if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
            fprintf(stderr,
                    "forestgate-bench: the mailbox has no message to fetch (%u "
                    "messages; --fetch-msgs)\n",
                    s->nmsgs);
        sess_fail(s, E_COMMAND);
        return;
    }
    s->next_msg = lo + s->idx % n; /* sessions spread over the messages */
    sess_fetch_next(s);
}

static void sess_logout(struct sess *s)
{
    s->step = ST_LOGOUT;
    if (s->proto == FGB_IMAP) {
        sess_cmd(s, "%s LOGOUT\r\n", next_tag(s));
    } else {
        p3r_expect(&s->rd.p3r, 0, 0);
        sess_cmd(s, "QUIT\r\n");
    }
}

/* A scenario command completed with OK. */
static void sess_cmd_done(struct sess *s)
{
    struct thr *t = s->t;
    if (s->kind == K_MAIN) { /* fetch loop */
        /* No message data, or not as much as announced, is a wrong answer. */
        if (s->body == 0 || (s->announced >= 0 && (uint64_t)s->announced != s->body)) {
            sess_fail(s, E_SIZE);
            return;
        }
        record(s, K_MAIN, s->t_cmd, s->body);
    } else if (s->kind == K_IMAP_STAY) {
        record(s, K_IMAP_STAY, s->t_cmd, 0);
    }
    if (t->stopping) {
        sess_logout(s);
    } else if (s->kind == K_POP3_POLL) {
        sess_logout(s);
    } else if (s->kind == K_IMAP_STAY) {
        if ((double)s->noops * t->o->noop_s >= t->o->stay_s) {
            sess_logout(s);
        } else {
            s->step = ST_HOLD;
            q_push(&t->q_noop, s, fgb_now_ns());
        }
    } else {
        sess_fetch_next(s);
    }
}

/* LOGOUT / QUIT answered: the cycle is complete. */
static void sess_cycle_done(struct sess *s)
{
    struct thr *t = s->t;
    if (s->kind == K_POP3_POLL)
        record(s, K_POP3_POLL, s->t_start, 0);
    sess_close(s);
    if (t->stopping || (t->o->scenario != SC_LOGIN && t->o->scenario != SC_MIXED))
        return;
    q_push(&t->q_start, s, 0); /* closed loop: again at once; open loop: when scheduled */
}

static void imap_on_resp(struct sess *s, const struct imr_resp *r)
{
    if (r->kind == IMR_UNTAGGED) {
        if (s->step == ST_GREETING) {
            if (r->len < 4 || strncasecmp(r->line, "* OK", 4) != 0) {
                sess_fail(s, E_GREETING);
            } else if (s->t->o->starttls && !s->tls_up) {
                s->step = ST_STARTTLS;
                sess_cmd(s, "%s STARTTLS\r\n", next_tag(s));
            } else {
                imap_login(s);
            }
        } else if (s->step == ST_SELECT) {
            imap_exists(r->line, r->len, &s->nmsgs);
        } else if (s->step == ST_CMD && r->literal_bytes > 0) {
            s->announced = imap_rfc822_size(r->line, r->len);
            s->body += r->literal_bytes;
        }
        return;
    }
    if (r->kind == IMR_CONT) {
        sess_fail(s, E_PROTOCOL); /* we never send what asks for a continuation */
        return;
    }
    if (s->step == ST_GREETING || s->step == ST_HOLD) {
        sess_fail(s, E_PROTOCOL);
        return;
    }
    if (!tagged_is(r, s->tag, "")) {
        sess_fail(s, E_PROTOCOL);
        return;
    }
    int ok = tagged_is(r, s->tag, "OK ") || tagged_is(r, s->tag, "OK");
    switch (s->step) {
    case ST_LOGIN:
        ok ? sess_logged_in(s) : sess_fail(s, E_LOGIN);
        break;
    case ST_STARTTLS:
        ok ? sess_tls_start(s) : sess_fail(s, E_TLS);
        break;
    case ST_SELECT:
        ok ? sess_selected(s) : sess_fail(s, E_COMMAND);
        break;
    case ST_CMD:
        s->noops += s->cmd == C_NOOP;
        ok ? sess_cmd_done(s) : sess_fail(s, E_COMMAND);
        break;
    case ST_LOGOUT:
        sess_cycle_done(s);
        break;
    default:
        sess_fail(s, E_PROTOCOL);
    }
}

/* "+OK 1234 octets" -> 1234, or -1. */
static int64_t pop3_octets(const char *l, size_t n)
{
    char tmp[64];
    size_t k = n < sizeof(tmp) - 1 ? n : sizeof(tmp) - 1;
    memcpy(tmp, l, k);
    tmp[k] = 0;
    long long v;
    char word[16];
    if (sscanf(tmp, "+OK %lld %15s", &v, word) == 2 && strcasecmp(word, "octets") == 0)
        return v;
    return -1;
}

static void pop3_on_resp(struct sess *s, const struct p3r_resp *r)
{
    int ok = r->status == P3R_OK;
    switch (s->step) {
    case ST_GREETING:
        if (!ok) {
            sess_fail(s, E_GREETING);
        } else if (s->t->o->starttls && !s->tls_up) {
            s->step = ST_STARTTLS;
            sess_cmd(s, "STLS\r\n");
        } else {
            pop3_login(s);
        }
        break;
    case ST_STARTTLS:
        ok ? sess_tls_start(s) : sess_fail(s, E_TLS);
        break;
    case ST_USER:
        if (!ok) {
            sess_fail(s, E_LOGIN);
            break;
        }
        s->step = ST_LOGIN;
        sess_cmd(s, "PASS %s\r\n", s->user->pass);
        break;
    case ST_LOGIN:
        ok ? sess_logged_in(s) : sess_fail(s, E_LOGIN);
        break;
    case ST_SELECT: {
        unsigned n = 0;
        char tmp[64];
        size_t k = r->len < sizeof(tmp) - 1 ? r->len : sizeof(tmp) - 1;
        memcpy(tmp, r->line, k);
        tmp[k] = 0;
        if (!ok || sscanf(tmp, "+OK %u", &n) != 1) {
            sess_fail(s, ok ? E_PROTOCOL : E_COMMAND);
            break;
        }
        s->nmsgs = n;
        sess_selected(s);
        break;
    }
    case ST_CMD:
        if (!ok) {
            sess_fail(s, E_COMMAND);
            break;
        }
        if (s->cmd == C_RETR) {
            s->announced = pop3_octets(r->line, r->len);
            s->body = r->body_bytes;
        }
        sess_cmd_done(s);
        break;
    case ST_LOGOUT:
        sess_cycle_done(s);
        break;
    default:
        sess_fail(s, E_PROTOCOL);
    }
}

/* ---- connections ---- */

/* Ends TLS on a connection; keeps its session for the next login to resume. */
static void sess_tls_end(struct sess *s)
{
    if (!s->ssl)
        return;
    if (s->t->o->tls_resume && s->tls_up) {
        WOLFSSL_SESSION *kept = wolfSSL_get1_session(s->ssl);
        if (kept) {
            if (s->resume)
                wolfSSL_SESSION_free(s->resume);
            s->resume = kept;
        }
    }
    wolfSSL_free(s->ssl);
    s->ssl = NULL;
    s->tls_up = 0;
}

static void sess_close(struct sess *s)
{
    struct thr *t = s->t;
    q_remove(s);
    sess_tls_end(s);
    if (s->fd >= 0) {
        close(s->fd); /* also removes it from the epoll set */
        s->fd = -1;
        ctr_add(&t->open_now, (uint64_t)-1);
    }
    if (s->logged_in)
        ctr_add(&t->logged_in_now, (uint64_t)-1);
    else if (s->step != ST_FREE)
        t->preauth--;
    s->logged_in = 0;
    s->step = ST_FREE;
    s->gen++;
    explicit_bzero(s->out, s->out_len);
    s->out_len = s->out_off = 0;
    s->want_out = 0;
}

static void sess_fail(struct sess *s, enum fgb_err e)
{
    struct thr *t = s->t;
    uint64_t now = fgb_now_ns();
    if (in_window(t, now) || (!t->stopping && now < t->m_start))
        ctr_add(&t->k[s->kind].errors[e], 1);
    if (e == E_CONNECT)
        t->failed++;
    sess_close(s);
    if (!t->stopping)
        q_push(&t->q_backoff, s, now);
}

static void sess_start(struct sess *s, uint64_t t_start)
{
    struct thr *t = s->t;
    const struct fgb_opts *o = t->o;
    int p = s->proto;
    s->t_start = t_start;
    s->tagn = 0;
    s->noops = 0;
    s->nmsgs = 0;
    s->step = ST_CONNECT;
    t->preauth++;
    s->fd = socket(o->addr[p].ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        sess_fail(s, E_CONNECT);
        return;
    }
    ctr_add(&t->open_now, 1);
    t->opened++;
    if (t->open_now > t->peak_open)
        t->peak_open = t->open_now;
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (p == FGB_IMAP)
        imr_init(&s->rd.imr);
    else
        p3r_init(&s->rd.p3r);
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)s->gen << 32 | s->idx};
    if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, s->fd, &ev) < 0) {
        sess_fail(s, E_CONNECT);
        return;
    }
    s->want_out = 1;
    if (connect(s->fd, (const struct sockaddr *)&o->addr[p], o->addrlen[p]) < 0 &&
        errno != EINPROGRESS) {
        sess_fail(s, E_CONNECT);
        return;
    }
    q_push(&t->q_active, s, fgb_now_ns());
}

static void sess_connected(struct sess *s)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
        sess_fail(s, E_CONNECT);
        return;
    }
    if (s->t->o->tls) {
        sess_tls_start(s);
        return;
    }
    s->step = ST_GREETING;
    if (ep_mod(s, EPOLLIN) == 0)
        s->want_out = 0;
}

/* Feeds received bytes to the reader; stops if the session closed meanwhile. */
static void sess_input(struct sess *s, const char *p, size_t n)
{
    uint32_t gen = s->gen;
    /* Once TLS starts, what followed STARTTLS in the clear is dropped. */
    while (n > 0 && s->gen == gen && s->step != ST_TLS) {
        int done = 0;
        ssize_t used;
        if (s->proto == FGB_IMAP) {
            struct imr_resp r;
            used = imr_feed(&s->rd.imr, p, n, &r, &done);
            if (used >= 0 && done)
                imap_on_resp(s, &r);
        } else {
            struct p3r_resp r;
            used = p3r_feed(&s->rd.p3r, p, n, &r, &done);
            if (used >= 0 && done)
                pop3_on_resp(s, &r);
        }
        if (used < 0) {
            if (s->gen == gen)
                sess_fail(s, E_PROTOCOL);
            return;
        }
        p += used;
        n -= (size_t)used;
    }
}

static void sess_readable(struct sess *s)
{
    struct thr *t = s->t;
    uint32_t gen = s->gen;
    for (int i = 0; (i < READS_PER_EVENT || sess_tls_pending(s)) && s->gen == gen; i++) {
        ssize_t r = sess_recv(s, t->rbuf, sizeof(t->rbuf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return;
        if (r <= 0) {
            /* A server may close right after answering LOGOUT/QUIT. */
            if (s->step == ST_LOGOUT)
                sess_cycle_done(s);
            else
                sess_fail(s, E_CLOSED);
            return;
        }
        if (s->q == &t->q_active)
            q_push(&t->q_active, s, fgb_now_ns());
        sess_input(s, t->rbuf, (size_t)r);
    }
}

static void sess_event(struct thr *t, uint64_t data, uint32_t events)
{
    uint32_t idx = (uint32_t)data, gen = (uint32_t)(data >> 32);
    struct sess *s = &t->sess[idx - t->first_idx];
    if (s->gen != gen || s->fd < 0)
        return; /* an event of a connection already closed in this batch */
    if (s->step == ST_CONNECT) {
        sess_connected(s);
        return;
    }
    if (s->step == ST_TLS) {
        sess_tls_step(s);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        sess_readable(s);
    if (s->gen == gen && (events & EPOLLOUT) && sess_flush(s) < 0)
        sess_fail(s, E_CLOSED);
}

/* ---- the thread ---- */

/* Open loop: starts the logins whose scheduled time has come, if a session is free. */
static void thr_schedule(struct thr *t, uint64_t now)
{
    uint64_t until = now < t->m_end ? now : t->m_end;
    uint64_t due = (uint64_t)((double)(until - t->t0) * t->rate / 1e9);
    while (t->started < due && t->q_start.head && t->preauth < (uint32_t)t->o->ramp) {
        struct sess *s = t->q_start.head;
        q_remove(s);
        sess_start(s, t->t0 + (uint64_t)((double)t->started * 1e9 / t->rate));
        t->started++;
    }
    /* Logins due but not started: every session is busy. */
    t->behind = due - t->started;
}

static void thr_sweep(struct thr *t, uint64_t now)
{
    struct sess *s;
    while ((s = t->q_active.head) && s->due <= now)
        sess_fail(s, E_TIMEOUT);
    while ((s = t->q_backoff.head) && s->due <= now) {
        q_remove(s);
        if (!t->stopping)
            q_push(&t->q_start, s, 0);
    }
    while ((s = t->q_noop.head) && s->due <= now) {
        s->step = ST_CMD;
        s->cmd = C_NOOP;
        sess_cmd(s, "%s NOOP\r\n", next_tag(s));
    }
    if (t->rate > 0) {
        thr_schedule(t, now);
        return;
    }
    while (!t->stopping && (s = t->q_start.head) && t->preauth < (uint32_t)t->o->ramp) {
        q_remove(s);
        sess_start(s, now);
    }
}

/* The measurement ended: log out what is idle, close what is not logged in. */
static void thr_stop(struct thr *t)
{
    t->stopping = 1;
    for (uint32_t i = 0; i < t->nsess; i++) {
        struct sess *s = &t->sess[i];
        if (s->q == &t->q_start || s->q == &t->q_backoff)
            q_remove(s);
        if (s->step == ST_HOLD)
            sess_logout(s);
        else if (s->step != ST_FREE && !s->logged_in && s->step != ST_LOGIN)
            sess_close(s);
    }
}

static int thr_wait_ms(struct thr *t, uint64_t now)
{
    uint64_t next = now + 100 * 1000000ull;
    struct queue *qs[] = {&t->q_active, &t->q_backoff, &t->q_noop};
    for (size_t i = 0; i < 3; i++)
        if (qs[i]->head && qs[i]->head->due < next)
            next = qs[i]->head->due;
    if (t->rate > 0 && !t->stopping)
        next = now + 1000000ull; /* the schedule is checked every millisecond */
    if (!t->stopping && t->m_end < next)
        next = t->m_end;
    return next <= now ? 0 : (int)((next - now + 999999) / 1000000);
}

volatile sig_atomic_t fgb_interrupted;

static void *thr_main(void *arg)
{
    struct thr *t = arg;
    struct epoll_event evs[256];
    for (;;) {
        uint64_t now = fgb_now_ns();
        if (!t->stopping && fgb_interrupted && now < t->m_end) {
            /* Ctrl-C: the measurement ends now; sessions still log out. */
            t->m_end = now;
            t->drain_end = now + DRAIN_NS;
        }
        if (!t->stopping && now >= t->m_end)
            thr_stop(t);
        if (t->stopping && (t->open_now == 0 || now >= t->drain_end))
            break;
        thr_sweep(t, now);
        int n = epoll_wait(t->epfd, evs, 256, thr_wait_ms(t, fgb_now_ns()));
        for (int i = 0; i < n; i++)
            sess_event(t, evs[i].data.u64, evs[i].events);
    }
    for (uint32_t i = 0; i < t->nsess; i++) {
        if (t->sess[i].fd >= 0)
            sess_close(&t->sess[i]);
        if (t->sess[i].resume)
            wolfSSL_SESSION_free(t->sess[i].resume);
    }
    return NULL;
}

/* ---- setup and the main thread ---- */

static int thr_init(struct thr *t, const struct fgb_opts *o, int id, uint64_t t0)
{
    memset(t, 0, offsetof(struct thr, rbuf));
    t->id = id;
    t->o = o;
    t->first_idx = (uint32_t)((uint64_t)o->conns * (uint64_t)id / (uint64_t)o->threads);
    t->nsess = (uint32_t)((uint64_t)o->conns * (uint64_t)(id + 1) / (uint64_t)o->threads) -
               t->first_idx;
    t->epfd = epoll_create1(EPOLL_CLOEXEC);
    t->sess = calloc(t->nsess ? t->nsess : 1, sizeof(*t->sess));
    if (t->epfd < 0 || !t->sess)
        return -1;
    t->q_active.delay = (uint64_t)(o->timeout * 1e9);
    t->q_backoff.delay = BACKOFF_NS;
    t->q_noop.delay = (uint64_t)(o->noop_s * 1e9);
    t->t0 = t0;
    t->m_start = t0 + (uint64_t)(o->warmup * 1e9);
    t->m_end = t->m_start + (uint64_t)(o->duration * 1e9);
    t->drain_end = t->m_end + DRAIN_NS;
    t->rate = o->rate > 0 ? o->rate / o->threads : 0;
    for (uint32_t i = 0; i < t->nsess; i++) {
        struct sess *s = &t->sess[i];
        s->t = t;
        s->fd = -1;
        s->idx = t->first_idx + i;
        s->proto = o->proto;
        s->kind = K_MAIN;
        if (o->scenario == SC_MIXED) {
            /* The first mix_imap share of the sessions stay on IMAP; the rest poll POP3. */
            int imap = (uint64_t)s->idx * (uint64_t)(o->mix_imap + o->mix_pop3) <
                       (uint64_t)o->conns * (uint64_t)o->mix_imap;
            s->proto = imap ? FGB_IMAP : FGB_POP3;
            s->kind = imap ? K_IMAP_STAY : K_POP3_POLL;
        }
        q_push(&t->q_start, s, 0);
    }
    for (int k = 0; k < K_N; k++)
        hist_init(&t->k[k].lat);
    return 0;
}

static uint64_t sum_ctr(struct thr *ts, int n, size_t off)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v += __atomic_load_n((uint64_t *)((char *)&ts[i] + off), __ATOMIC_RELAXED);
    return v;
}

static uint64_t sum_kind(struct thr *ts, int n, int what)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < K_N; k++) {
            if (what == 0)
                v += __atomic_load_n(&ts[i].k[k].ops, __ATOMIC_RELAXED);
            else if (what == 1)
                v += __atomic_load_n(&ts[i].k[k].bytes, __ATOMIC_RELAXED);
            else
                for (int e = 0; e < E_N; e++)
                    v += __atomic_load_n(&ts[i].k[k].errors[e], __ATOMIC_RELAXED);
        }
    return v;
}

static void write_ready(const char *path, uint64_t n)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%llu\n", (unsigned long long)n) < 0 || fclose(f) != 0 ||
        rename(tmp, path) != 0)
        fprintf(stderr, "forestgate-bench: cannot write %s: %s\n", path, strerror(errno));
}

/* Once per second a progress line; the ready file as soon as every session is in. */
static void watch(const struct fgb_opts *o, struct thr *ts, uint64_t t0, int *running)
{
    uint64_t last_ops = 0, last_bytes = 0, last = t0;
    int ready = 0;
    uint64_t next_print = t0 + NS;
    while (__atomic_load_n(running, __ATOMIC_ACQUIRE) > 0) {
        struct timespec d = {0, 20 * 1000000};
        nanosleep(&d, NULL);
        uint64_t now = fgb_now_ns();
        uint64_t logged = sum_ctr(ts, o->threads, offsetof(struct thr, logged_in_now));
        if (o->ready_file && !ready && logged >= (uint64_t)o->conns) {
            write_ready(o->ready_file, logged);
            ready = 1;
            if (!o->quiet)
                fprintf(stderr, "ready: %llu sessions logged in\n", (unsigned long long)logged);
        }
        if (o->quiet || now < next_print)
            continue;
        uint64_t ops = sum_kind(ts, o->threads, 0), bytes = sum_kind(ts, o->threads, 1);
        double dt = (double)(now - last) / 1e9;
        fprintf(stderr,
                "[%5.1fs] open %llu logged-in %llu | %.0f ops/s | %.1f MB/s | errors %llu\n",
                (double)(now - t0) / 1e9,
                (unsigned long long)sum_ctr(ts, o->threads, offsetof(struct thr, open_now)),
                (unsigned long long)logged, (double)(ops - last_ops) / dt,
                (double)(bytes - last_bytes) / dt / 1e6,
                (unsigned long long)sum_kind(ts, o->threads, 2));
        last_ops = ops;
        last_bytes = bytes;
        last = now;
        next_print += NS;
    }
}

struct thr_arg {
    struct thr *t;
    int *running;
};

static void *thr_entry(void *arg)
{
    struct thr_arg *a = arg;
    thr_main(a->t);
    __atomic_fetch_sub(a->running, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void merge(const struct fgb_opts *o, struct thr *ts, struct fgb_result *res)
{
    memset(res, 0, sizeof(*res));
    for (int k = 0; k < K_N; k++)
        hist_init(&res->k[k].lat);
    for (int i = 0; i < o->threads; i++) {
        struct thr *t = &ts[i];
        for (int k = 0; k < K_N; k++) {
            res->k[k].ops += t->k[k].ops;
            res->k[k].bytes += t->k[k].bytes;
            for (int e = 0; e < E_N; e++)
                res->k[k].errors[e] += t->k[k].errors[e];
            hist_merge(&res->k[k].lat, &t->k[k].lat);
        }
        res->opened += t->opened;
        res->failed += t->failed;
        res->peak_open += t->peak_open;
        res->peak_logged_in += t->peak_logged_in;
        res->sched_missed += t->behind;
        res->tls_handshakes += t->tls_handshakes;
        res->tls_resumed += t->tls_resumed;
    }
}

/*
 * The client context: TLS 1.2 or 1.3, and no certificate check -- a load
 * generator measures the server's work, and test certificates are self-signed.
 */
static int tls_client_init(void)
{
    if (wolfSSL_Init() != WOLFSSL_SUCCESS ||
        !(tls_ctx = wolfSSL_CTX_new(wolfSSLv23_client_method())) ||
        wolfSSL_CTX_SetMinVersion(tls_ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS) {
        fprintf(stderr, "forestgate-bench: cannot set up TLS\n");
        return -1;
    }
    wolfSSL_CTX_set_verify(tls_ctx, WOLFSSL_VERIFY_NONE, NULL);
    return 0;
}

int fgb_client_run(const struct fgb_opts *o, struct fgb_result *res)
{
    struct thr *ts = calloc((size_t)o->threads, sizeof(*ts));
    struct thr_arg *args = calloc((size_t)o->threads, sizeof(*args));
    int running = 0, rc = 0;
    if (!ts || !args) {
        free(ts);
        free(args);
        return -1;
    }
    if ((o->tls || o->starttls) && tls_client_init() < 0) {
        free(ts);
        free(args);
        return -1;
    }
    uint64_t t0 = fgb_now_ns();
    for (int i = 0; i < o->threads; i++)
        if (thr_init(&ts[i], o, i, t0) < 0)
            rc = -1;
    for (int i = 0; rc == 0 && i < o->threads; i++) {
        args[i].t = &ts[i];
        args[i].running = &running;
        __atomic_fetch_add(&running, 1, __ATOMIC_RELEASE);
        if (pthread_create(&ts[i].tid, NULL, thr_entry, &args[i]) != 0) {
            __atomic_fetch_sub(&running, 1, __ATOMIC_RELEASE);
            rc = -1;
            /* Stop the threads already running: their window ends now. */
            for (int j = 0; j < i; j++)
                __atomic_store_n(&ts[j].m_end, fgb_now_ns(), __ATOMIC_RELAXED);
            break;
        }
    }
    watch(o, ts, t0, &running);
    for (int i = 0; i < o->threads; i++)
        if (ts[i].tid)
            pthread_join(ts[i].tid, NULL);
    merge(o, ts, res);
    uint64_t end = fgb_now_ns();
    uint64_t m_end = ts[0].m_end < end ? ts[0].m_end : end;
    res->measured_s = m_end > ts[0].m_start ? (double)(m_end - ts[0].m_start) / 1e9 : 0;
    for (int i = 0; i < o->threads; i++) {
        if (ts[i].epfd > 0)
            close(ts[i].epfd);
        free(ts[i].sess);
    }
    free(ts);
    free(args);
    if (tls_ctx) {
        wolfSSL_CTX_free(tls_ctx);
        tls_ctx = NULL;
        wolfSSL_Cleanup();
    }
    return rc;
}

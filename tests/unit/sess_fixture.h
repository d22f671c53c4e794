/*
 * The fixture both session tests share: a session of FX_OPS (define it before
 * including this header) with its own settings and output buffer, fed the
 * way the core feeds it.
 */
#ifndef FG_TEST_SESS_FIXTURE_H
#define FG_TEST_SESS_FIXTURE_H

#include "../../proto/session.h"
#include "harness.h"

#include <stdlib.h>

#define LT_LOGIN  LOGIN_TYPE_PLAIN_TEXT_LOGIN
#define LT_AUTH   LOGIN_TYPE_PLAIN_TEXT_AUTH
#define LT_SECURE LOGIN_TYPE_SECURE

/* base64 of "\0alice\0secret", "admin\0alice\0secret" and "\0alice\0Sup3r$ecret" */
#define B64_ALICE       "AGFsaWNlAHNlY3JldA=="
#define B64_ALICE_AUTHZ "YWRtaW4AYWxpY2UAc2VjcmV0"
#define B64_SECRET      "AGFsaWNlAFN1cDNyJGVjcmV0"
#define SECRET          "Sup3r$ecret"

/* The replies to the last input, compared whole, by prefix, or searched. */
#define OUT(f)          (int)buf_avail(&(f)->out), buf_head(&(f)->out)
#define FEED(f, lit)    fx_feed(f, lit, sizeof(lit) - 1) /* literal strings holding a NUL */
#define CHECK_OUT(f, s) CHECK_MEM(buf_head(&(f)->out), buf_avail(&(f)->out), s)
#define CHECK_PREFIX(f, s)                                                                         \
    CHECKF(out_starts(f, s), "output \"%.*s\" should start \"%s\"", OUT(f), s)
#define CHECK_HAS(f, s) CHECKF(out_has(f, s), "output \"%.*s\" should contain \"%s\"", OUT(f), s)
#define CHECK_LACKS(f, s)                                                                          \
    CHECKF(!out_has(f, s), "output \"%.*s\" must not contain \"%s\"", OUT(f), s)

/* The pending credentials, byte for byte. */
#define CHECK_CRED(f, u, p)                                                                        \
    do {                                                                                           \
        CHECK((f)->s->cred != NULL);                                                               \
        if ((f)->s->cred) {                                                                        \
            CHECK_MEM((f)->s->cred->user, (f)->s->cred->user_len, u);                              \
            CHECK_MEM((f)->s->cred->pass, (f)->s->cred->pass_len, p);                              \
        }                                                                                          \
    } while (0)

struct fx {
    struct sess_conf conf;
    struct buf out;
    struct session *s;
};

static inline void fx_open_max(struct fx *f, uint8_t login_type, bool tls, uint32_t max)
{
    memset(f, 0, sizeof *f);
    f->conf.banner = BANNER;
    f->conf.max_command = max;
    f->conf.login_type = login_type;
    f->s = FX_OPS.create(&f->conf, &f->out);
    if (!f->s)
        abort();
    f->s->tls = tls;
}

static inline void fx_open(struct fx *f, uint8_t login_type)
{
    fx_open_max(f, login_type, false, MAX_CMD);
}

static inline void fx_clear(struct fx *f)
{
    buf_consume(&f->out, buf_avail(&f->out));
}

/* Appends client bytes and runs input(); the output holds only the new replies. */
static inline enum sess_action fx_feed(struct fx *f, const char *p, size_t n)
{
    fx_clear(f);
    buf_append(&f->s->in, p, n);
    return f->s->ops->input(f->s);
}

static inline enum sess_action fx_cmd(struct fx *f, const char *line)
{
    return fx_feed(f, line, strlen(line));
}

static inline void fx_done(struct fx *f, enum login_status st, const char *caps)
{
    fx_clear(f);
    f->s->ops->login_done(f->s, st, caps, caps ? strlen(caps) : 0);
}

static inline void fx_close(struct fx *f)
{
    f->s->ops->destroy(f->s);
    buf_free(&f->out);
}

static inline bool out_starts(const struct fx *f, const char *s)
{
    size_t n = strlen(s);
    return buf_avail(&f->out) >= n && memcmp(buf_head(&f->out), s, n) == 0;
}

static inline bool out_has(const struct fx *f, const char *s)
{
    return th_contains(buf_head(&f->out), buf_avail(&f->out), s);
}

/* Lines (CRLF-terminated) in the output. */
static inline int out_lines(const struct fx *f)
{
    int n = 0;
    for (uint32_t i = 1; i < buf_avail(&f->out); i++)
        n += buf_head(&f->out)[i - 1] == '\r' && buf_head(&f->out)[i] == '\n';
    return n;
}

/* Base64, written apart from base/base64.c so that it can judge it. */
static inline void b64_encode(const unsigned char *src, size_t n, char *dst)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)src[i] << 16;
        v |= i + 1 < n ? (unsigned)src[i + 1] << 8 : 0;
        v |= i + 2 < n ? src[i + 2] : 0;
        dst[o++] = a[v >> 18];
        dst[o++] = a[(v >> 12) & 63];
        dst[o++] = i + 1 < n ? a[(v >> 6) & 63] : '=';
        dst[o++] = i + 2 < n ? a[v & 63] : '=';
    }
    dst[o] = 0;
}

/* A script fed whole and fed a byte at a time must give the same replies,
 * the same final action and the same credentials. */
struct run {
    struct buf out;
    enum sess_action last;
    int early; /* non-AGAIN results before the last byte */
    char user[300], pass[300];
    uint16_t user_len, pass_len;
};

static inline void run_script(const char *script, bool bytewise, struct run *r)
{
    struct sess_conf conf = {BANNER, MAX_CMD, LT_LOGIN};
    size_t n = strlen(script);
    memset(r, 0, sizeof *r);
    struct session *s = FX_OPS.create(&conf, &r->out);
    s->ops->greeting(s);
    for (size_t i = 0; i < n; i += bytewise ? 1 : n) {
        buf_append(&s->in, script + i, bytewise ? 1 : n);
        r->last = s->ops->input(s);
        if (r->last != SESS_AGAIN && i + 1 < n && bytewise)
            r->early++;
    }
    if (s->cred) {
        memcpy(r->user, s->cred->user, s->cred->user_len);
        memcpy(r->pass, s->cred->pass, s->cred->pass_len);
        r->user_len = s->cred->user_len;
        r->pass_len = s->cred->pass_len;
    }
    s->ops->destroy(s);
}

static inline void check_bytewise(const char *script, enum sess_action want, const char *must_have)
{
    struct run a, b;
    run_script(script, false, &a);
    run_script(script, true, &b);
    CHECK_INT(a.last, want);
    CHECK_INT(b.last, want);
    CHECK_INT(b.early, 0);
    CHECKF(th_contains(a.out.data, a.out.len, must_have), "bulk output \"%.*s\" lacks \"%s\"",
           (int)a.out.len, a.out.data, must_have);
    CHECKF(a.out.len == b.out.len && memcmp(a.out.data, b.out.data, a.out.len) == 0,
           "bulk output \"%.*s\" != byte-at-a-time output \"%.*s\"", (int)a.out.len, a.out.data,
           (int)b.out.len, b.out.data);
    CHECK(a.user_len == b.user_len && memcmp(a.user, b.user, a.user_len) == 0);
    CHECK(a.pass_len == b.pass_len && memcmp(a.pass, b.pass, a.pass_len) == 0);
    buf_free(&a.out);
    buf_free(&b.out);
}

#endif

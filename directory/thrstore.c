/*
 * The throttle's fleet store in Redis. See thrstore.h.
 *
 * Keys, under ThrottleStorePrefix and a keyed hash in hex:
 *   a:ADDR  an address's failed logons: a counter that expires
 *           AddressFailureWindow after the last one
 *   b:ADDR  the address is refused while it lives (AddressBanTime)
 *   u:ACCT  an account's failed binds: f (all), u (from unfamiliar places),
 *           expiring AccountFailureWindow after the last one
 *   w:ACCT  the account's last BadPasswordHistory wrong passwords, as keyed
 *           hashes
 *   r:ACCT  binds under way: members that are reservations, scored by their
 *           expiry
 *   p:PLACE the account logged on from the address (FamiliarLocationDays)
 * and one channel, PREFIX "events", that carries "a ADDR COUNT BAN_MS"
 * after each address failure and "f" after a flush.
 */
#include "thrstore.h"

#include "../base/log.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#define TS_QUEUE   4096 /* jobs waiting for the store's thread */
#define TS_BATCH   64
#define TS_POOL    64   /* idle connections kept for the directory threads */
#define TS_RETRY   1000 /* ms between tries while Redis does not answer */
#define TS_HEX_LEN 17

enum { TS_ACHECK, TS_ADONE, TS_AFAIL, TS_NSCRIPTS };

/* Each is one atomic step in Redis; TIME is Redis's clock, the one every
 * instance shares. */
static const char *const ts_scripts[TS_NSCRIPTS] = {
        /* KEYS u w r p; ARGV pw thr fthr hist rid reserve_ms familiar */
        [TS_ACHECK] = "local t = redis.call('TIME')\n"
                      "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
                      "local fam = ARGV[7] == '1' or redis.call('EXISTS', KEYS[4]) == 1\n"
                      "local f = fam and 1 or 0\n"
                      "if tonumber(ARGV[4]) > 0 then\n"
                      "  for _, b in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do\n"
                      "    if b == ARGV[1] then return {1, f} end\n"
                      "  end\n"
                      "end\n"
                      "redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)\n"
                      "if tonumber(ARGV[2]) > 0 then\n"
                      "  local h = redis.call('HMGET', KEYS[1], 'f', 'u')\n"
                      "  local i = redis.call('ZCARD', KEYS[3])\n"
                      "  if (tonumber(h[1]) or 0) + i >= tonumber(ARGV[3]) then return {2, f} end\n"
                      "  if not fam and (tonumber(h[2]) or 0) + i >= tonumber(ARGV[2]) then\n"
                      "    return {3, f}\n"
                      "  end\n"
                      "end\n"
                      "redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[5])\n"
                      "redis.call('PEXPIRE', KEYS[3], ARGV[6])\n"
                      "return {0, f}\n",
        /* KEYS u w r p; ARGV outcome rid familiar pw hist window_ms familiar_ms */
        [TS_ADONE] = "redis.call('ZREM', KEYS[3], ARGV[2])\n"
                     "if ARGV[1] == 'ok' then\n"
                     "  redis.call('DEL', KEYS[1], KEYS[2])\n"
                     "  if tonumber(ARGV[7]) > 0 then\n"
                     "    redis.call('SET', KEYS[4], '1', 'PX', ARGV[7])\n"
                     "  end\n"
                     "elseif ARGV[1] == 'failed' then\n"
                     "  redis.call('HINCRBY', KEYS[1], 'f', 1)\n"
                     "  if ARGV[3] == '0' then redis.call('HINCRBY', KEYS[1], 'u', 1) end\n"
                     "  redis.call('PEXPIRE', KEYS[1], ARGV[6])\n"
                     "  local hist = tonumber(ARGV[5])\n"
                     "  if hist > 0 then\n"
                     "    redis.call('LPUSH', KEYS[2], ARGV[4])\n"
                     "    redis.call('LTRIM', KEYS[2], 0, hist - 1)\n"
                     "    redis.call('PEXPIRE', KEYS[2], ARGV[6])\n"
                     "  end\n"
                     "end\n"
                     "return 0\n",
        /* KEYS a b; ARGV window_ms threshold ban_ms channel addr */
        [TS_AFAIL] = "local n = redis.call('INCR', KEYS[1])\n"
                     "redis.call('PEXPIRE', KEYS[1], ARGV[1])\n"
                     "local ban = redis.call('PTTL', KEYS[2])\n"
                     "if ban < 0 then ban = 0 end\n"
                     "local thr = tonumber(ARGV[2])\n"
                     "if thr > 0 and n >= thr and ban == 0 then\n"
                     "  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])\n"
                     "  ban = tonumber(ARGV[3])\n"
                     "end\n"
                     "redis.call('PUBLISH', ARGV[4], 'a ' .. ARGV[5] .. ' ' .. n .. ' ' .. ban)\n"
                     "return n\n",
};

struct ts_url {
    char host[256];
    int port;
    unsigned db;
    char user[128];
    char pass[256];
};

enum { TS_UNKNOWN, TS_UP, TS_DOWN };

/* What the store's thread sends for others, who do not wait for it. */
struct ts_job {
    bool account;    /* a bind's outcome (tk, outcome); else an address's failure (key) */
    uint8_t outcome; /* enum thr_outcome */
    uint64_t key;    /* the address's */
    struct thr_ticket tk;
};

struct thr_store {
    struct throttle *t;
    const struct thr_conf *conf;
    struct ts_url url;
    uint32_t reserve_ms;
    uint64_t instance; /* reservations are named by it and a count */
    _Atomic uint64_t next_rid;

    char sha[TS_NSCRIPTS][41]; /* the scripts' SHA1s, once Redis said them */

    pthread_mutex_t lock; /* the pool, the queue, sha */
    redisContext *pool[TS_POOL];
    unsigned npool;
    struct ts_job queue[TS_QUEUE];
    unsigned qhead, qlen;

    _Atomic int state;
    _Atomic uint64_t retry_ms;
    _Atomic uint64_t errors, sent, dropped, learned;

    int efd; /* wakes the thread: a job queued, or stop */
    _Atomic bool stop;
    bool started;
    pthread_t thread;
    redisContext *sub;
    uint64_t sub_retry_ms;
};

/* ---- the URL ---- */

static int ts_url_fail(char *why, size_t n, const char *msg)
{
    snprintf(why, n, "%s (expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB])", msg);
    return FG_ERROR;
}

/* USER:PASSWORD@ or :PASSWORD@, before the host. */
static int ts_url_userinfo(struct ts_url *u, const char **p, char *why, size_t n)
{
    const char *at = strrchr(*p, '@');
    if (!at)
        return FG_OK;
    const char *colon = memchr(*p, ':', (size_t)(at - *p));
    if (!colon)
        return ts_url_fail(why, n, "the user needs a password after ':'");
    size_t ul = (size_t)(colon - *p), pl = (size_t)(at - colon - 1);
    if (ul >= sizeof u->user || pl >= sizeof u->pass || pl == 0)
        return ts_url_fail(why, n, "the user or the password is too long or empty");
    memcpy(u->user, *p, ul);
    memcpy(u->pass, colon + 1, pl);
    *p = at + 1;
    return FG_OK;
}

/* HOST, [V6], :PORT and /DB. */
static int ts_url_hostport(struct ts_url *u, const char *p, char *why, size_t n)
{
    const char *end = p + strcspn(p, "/");
    const char *hend = end;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (!rb)
            return ts_url_fail(why, n, "an IPv6 address needs its ']'");
        hend = rb + 1;
        p++;
    } else if (memchr(p, ':', (size_t)(end - p))) {
        hend = memchr(p, ':', (size_t)(end - p));
    }
    size_t hl = (size_t)(hend - p) - (p[-1] == '[');
    if (hl == 0 || hl >= sizeof u->host)
        return ts_url_fail(why, n, "no host, or a host name too long");
    memcpy(u->host, p, hl);
    u->port = 6379;
    if (hend < end && *hend == ':') {
        char *e;
        long port = strtol(hend + 1, &e, 10);
        if (e != end || port < 1 || port > 65535)
            return ts_url_fail(why, n, "the port is not a number from 1 to 65535");
        u->port = (int)port;
    }
    if (*end == '/' && end[1]) {
        char *e;
        long db = strtol(end + 1, &e, 10);
        if (*e || db < 0 || db > 1000000)
            return ts_url_fail(why, n, "the database is not a number");
        u->db = (unsigned)db;
    }
    return FG_OK;
}

static int ts_url_parse(struct ts_url *u, const char *url, char *why, size_t n)
{
    memset(u, 0, sizeof *u);
    if (strncasecmp(url, "redis://", 8) != 0)
        return ts_url_fail(why, n, "not a redis:// URL");
    const char *p = url + 8;
    if (ts_url_userinfo(u, &p, why, n) != FG_OK || ts_url_hostport(u, p, why, n) != FG_OK) {
        explicit_bzero(u, sizeof *u);
        return FG_ERROR;
    }
    return FG_OK;
}

int ts_url_check(const char *url, char *why, size_t whylen)
{
    struct ts_url u;
    int rc = ts_url_parse(&u, url, why, whylen);
    explicit_bzero(&u, sizeof u);
    return rc;
}

/* ---- up and down ---- */

static void ts_down(struct thr_store *s, const char *why)
{
    atomic_fetch_add_explicit(&s->errors, 1, memory_order_relaxed);
    atomic_store(&s->retry_ms, fg_clock_ms() + TS_RETRY);
    if (atomic_exchange(&s->state, TS_DOWN) != TS_DOWN)
        log_msg(LOG_WARN, "throttle_store_down",
                "Redis at %s:%d: %s; the throttle counts on this instance alone until it answers",
                s->url.host, s->url.port, why);
}

static void ts_up(struct thr_store *s)
{
    if (atomic_exchange(&s->state, TS_UP) != TS_UP)
        log_msg(LOG_INFO, "throttle_store_up",
                "Redis at %s:%d answers: the throttle counts for the fleet", s->url.host,
                s->url.port);
}

static bool ts_reply_ok(redisContext *c, redisReply *r, const char **why)
{
    if (!r) {
        *why = c->errstr[0] ? c->errstr : "no answer";
        return false;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        *why = "an error reply";
        return false;
    }
    return true;
}

/* One command's reply checked and freed; refused names an error reply. */
static bool ts_cmd_ok(redisContext *c, redisReply *r, const char **why, const char *refused)
{
    bool ok = ts_reply_ok(c, r, why);
    if (r && r->type == REDIS_REPLY_ERROR)
        *why = refused;
    if (r)
        freeReplyObject(r);
    return ok;
}

/* AUTH and SELECT on a new connection. */
static bool ts_hello(struct thr_store *s, redisContext *c, const char **why)
{
    if (s->url.pass[0] &&
        !ts_cmd_ok(c,
                   s->url.user[0] ? redisCommand(c, "AUTH %s %s", s->url.user, s->url.pass)
                                  : redisCommand(c, "AUTH %s", s->url.pass),
                   why, "AUTH was refused"))
        return false;
    return s->url.db == 0 ||
           ts_cmd_ok(c, redisCommand(c, "SELECT %u", s->url.db), why, "SELECT was refused");
}

/* Frees a context that failed to connect; *why, which may point into it,
 * is copied first: the caller logs it. */
static redisContext *ts_connect_failed(redisContext *c, const char **why)
{
    static _Thread_local char buf[128];
    snprintf(buf, sizeof buf, "%s", *why);
    *why = buf;
    if (c)
        redisFree(c);
    return NULL;
}

static redisContext *ts_connect(struct thr_store *s, const char **why)
{
    uint32_t ms = s->conf->store_timeout_ms;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(s->url.host, s->url.port, tv);
    if (!c || c->err) {
        *why = c && c->errstr[0] ? c->errstr : "cannot connect";
        return ts_connect_failed(c, why);
    }
    redisSetTimeout(c, tv);
    redisEnableKeepAlive(c);
    if (!ts_hello(s, c, why))
        return ts_connect_failed(c, why);
    return c;
}

/* A connection for one call: an idle one, or a new one unless Redis was
 * found down less than TS_RETRY ago. NULL: decide without the store. */
static redisContext *ts_get(struct thr_store *s)
{
    redisContext *c = NULL;
    pthread_mutex_lock(&s->lock);
    if (s->npool)
        c = s->pool[--s->npool];
    pthread_mutex_unlock(&s->lock);
    if (c)
        return c;
    /* While Redis is down, one caller a second tries it; the others do
     * not wait on a connect that will likely fail too. */
    uint64_t retry = atomic_load(&s->retry_ms), now = fg_clock_ms();
    if (atomic_load(&s->state) == TS_DOWN &&
        (now < retry || !atomic_compare_exchange_strong(&s->retry_ms, &retry, now + TS_RETRY)))
        return NULL;
    const char *why = "";
    if (!(c = ts_connect(s, &why))) {
        ts_down(s, why);
        return NULL;
    }
    ts_up(s);
    return c;
}

static void ts_put(struct thr_store *s, redisContext *c)
{
    pthread_mutex_lock(&s->lock);
    if (s->npool < TS_POOL) {
        s->pool[s->npool++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    if (c)
        redisFree(c);
}

/* A call failed: the connection goes, and Redis is taken for down. */
static void ts_bad(struct thr_store *s, redisContext *c, const char *why)
{
    ts_down(s, why);
    redisFree(c);
}

static void ts_pool_clear(struct thr_store *s)
{
    pthread_mutex_lock(&s->lock);
    while (s->npool)
        redisFree(s->pool[--s->npool]);
    pthread_mutex_unlock(&s->lock);
}

/* ---- the scripts ---- */

/* Runs script i by its SHA1, loading it when Redis does not know it (a
 * restart, SCRIPT FLUSH). NULL or an error reply: failed. */
static redisReply *ts_eval(struct thr_store *s, redisContext *c, int i, int argc, const char **argv,
                           const size_t *lens)
{
    const char *av[16];
    size_t al[16];
    char sha[41];
    pthread_mutex_lock(&s->lock);
    memcpy(sha, s->sha[i], sizeof sha);
    pthread_mutex_unlock(&s->lock);
    av[0] = sha[0] ? "EVALSHA" : "EVAL";
    av[1] = sha[0] ? sha : ts_scripts[i];
    al[0] = strlen(av[0]);
    al[1] = strlen(av[1]);
    for (int k = 0; k < argc; k++) {
        av[k + 2] = argv[k];
        al[k + 2] = lens[k];
    }
    redisReply *r = redisCommandArgv(c, argc + 2, av, al);
    if (r && r->type == REDIS_REPLY_ERROR && sha[0] && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        freeReplyObject(r);
        av[0] = "EVAL";
        av[1] = ts_scripts[i];
        al[0] = 4;
        al[1] = strlen(ts_scripts[i]);
        r = redisCommandArgv(c, argc + 2, av, al);
    }
    if (r && r->type != REDIS_REPLY_ERROR && !sha[0]) {
        redisReply *l = redisCommand(c, "SCRIPT LOAD %s", ts_scripts[i]);
        if (l && l->type == REDIS_REPLY_STRING && l->len == 40) {
            pthread_mutex_lock(&s->lock);
            memcpy(s->sha[i], l->str, 41);
            pthread_mutex_unlock(&s->lock);
        }
        if (l)
            freeReplyObject(l);
    }
    return r;
}

/* Runs a script on a pooled connection; false when the store did not
 * answer (and is now taken for down). *out is the reply, to be freed. */
static bool ts_run(struct thr_store *s, int i, int argc, const char **argv, const size_t *lens,
                   redisReply **out)
{
    redisContext *c = ts_get(s);
    if (!c)
        return false;
    redisReply *r = ts_eval(s, c, i, argc, argv, lens);
    const char *why = "";
    if (!ts_reply_ok(c, r, &why)) {
        if (r) {
            log_msg(LOG_WARN, "throttle_store_error", "Redis refused a script: %.200s", r->str);
            freeReplyObject(r);
        }
        ts_bad(s, c, why);
        return false;
    }
    ts_put(s, c);
    *out = r;
    return true;
}

static void ts_hex(uint64_t v, char out[TS_HEX_LEN])
{
    snprintf(out, TS_HEX_LEN, "%016" PRIx64, v);
}

/* PREFIX + kind + ":" + hex. */
static size_t ts_key(const struct thr_store *s, char kind, uint64_t v, char *out, size_t n)
{
    char h[TS_HEX_LEN];
    ts_hex(v, h);
    return (size_t)snprintf(out, n, "%s%c:%s", s->conf->store_prefix, kind, h);
}

/* ---- accounts ---- */

#define TS_KEY_MAX (THR_PREFIX_MAX + 24)

struct ts_acct_keys {
    char k[4][TS_KEY_MAX];
    size_t n[4];
};

static void ts_acct_keys(const struct thr_store *s, const struct thr_ticket *tk,
                         struct ts_acct_keys *ak)
{
    ak->n[0] = ts_key(s, 'u', tk->account, ak->k[0], TS_KEY_MAX);
    ak->n[1] = ts_key(s, 'w', tk->account, ak->k[1], TS_KEY_MAX);
    ak->n[2] = ts_key(s, 'r', tk->account, ak->k[2], TS_KEY_MAX);
    ak->n[3] = ts_key(s, 'p', tk->place, ak->k[3], TS_KEY_MAX);
}

static void ts_pw_hex(const struct thr_ticket *tk, char out[2 * THR_PW_HASH_LEN + 1])
{
    for (unsigned i = 0; i < THR_PW_HASH_LEN; i++)
        snprintf(out + 2 * i, 3, "%02x", tk->pw[i]);
}

static enum thr_reason ts_verdict_reason(long long code)
{
    switch (code) {
    case 1:
        return THR_REPEAT_PASSWORD;
    case 2:
        return THR_ACCOUNT_FAMILIAR;
    case 3:
        return THR_ACCOUNT_LOCKED;
    default:
        return THR_PASS;
    }
}

static bool ts_account_check(void *store, struct thr_ticket *tk, bool familiar,
                             enum thr_reason *why)
{
    struct thr_store *s = store;
    const struct thr_conf *c = s->conf;
    struct ts_acct_keys ak;
    char pw[2 * THR_PW_HASH_LEN + 1], thr[12], fthr[12], hist[12], rid[40], res[24];
    ts_acct_keys(s, tk, &ak);
    ts_pw_hex(tk, pw);
    snprintf(thr, sizeof thr, "%u", c->acct_threshold);
    snprintf(fthr, sizeof fthr, "%u", c->acct_familiar_threshold);
    snprintf(hist, sizeof hist, "%u", FG_MIN(c->bad_history, (uint32_t)THR_BAD_MAX));
    tk->rid = atomic_fetch_add(&s->next_rid, 1);
    snprintf(rid, sizeof rid, "%016" PRIx64 ":%" PRIu64, s->instance, tk->rid);
    snprintf(res, sizeof res, "%u", s->reserve_ms);
    const char *argv[] = {"4", ak.k[0], ak.k[1], ak.k[2], ak.k[3], pw,
                          thr, fthr,    hist,    rid,     res,     familiar ? "1" : "0"};
    size_t lens[12] = {1, ak.n[0], ak.n[1], ak.n[2], ak.n[3]};
    for (unsigned i = 5; i < 12; i++)
        lens[i] = strlen(argv[i]);
    redisReply *r;
    if (!ts_run(s, TS_ACHECK, 12, argv, lens, &r))
        return false;
    bool ok = r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
              r->element[0]->type == REDIS_REPLY_INTEGER;
    if (ok) {
        *why = ts_verdict_reason(r->element[0]->integer);
        tk->familiar = r->element[1]->type == REDIS_REPLY_INTEGER && r->element[1]->integer;
    }
    freeReplyObject(r);
    return ok;
}

static void ts_account_send(struct thr_store *s, const struct thr_ticket *tk, enum thr_outcome o)
{
    const struct thr_conf *c = s->conf;
    struct ts_acct_keys ak;
    char pw[2 * THR_PW_HASH_LEN + 1], hist[12], rid[40], win[24], fam[24];
    ts_acct_keys(s, tk, &ak);
    ts_pw_hex(tk, pw);
    snprintf(hist, sizeof hist, "%u", FG_MIN(c->bad_history, (uint32_t)THR_BAD_MAX));
    snprintf(rid, sizeof rid, "%016" PRIx64 ":%" PRIu64, s->instance, tk->rid);
    snprintf(win, sizeof win, "%llu", 1000ull * c->acct_window);
    snprintf(fam, sizeof fam, "%llu", 86400000ull * c->familiar_days);
    const char *out = o == THR_BIND_OK ? "ok" : o == THR_BIND_FAILED ? "failed" : "none";
    const char *argv[] = {"4",     ak.k[0], ak.k[1], ak.k[2],
                          ak.k[3], out,     rid,     tk->familiar ? "1" : "0",
                          pw,      hist,    win,     fam};
    size_t lens[12] = {1, ak.n[0], ak.n[1], ak.n[2], ak.n[3]};
    for (unsigned i = 5; i < 12; i++)
        lens[i] = strlen(argv[i]);
    redisReply *r;
    if (ts_run(s, TS_ADONE, 12, argv, lens, &r))
        freeReplyObject(r);
}

/* ---- addresses ---- */

/* Queues a job for the store's thread; false when the queue is full. */
static bool ts_enqueue(struct thr_store *s, const struct ts_job *job)
{
    bool queued = false;
    pthread_mutex_lock(&s->lock);
    if (s->qlen < TS_QUEUE) {
        s->queue[(s->qhead + s->qlen++) % TS_QUEUE] = *job;
        queued = true;
    }
    pthread_mutex_unlock(&s->lock);
    if (queued) {
        uint64_t one = 1;
        ssize_t w = write(s->efd, &one, sizeof one);
        (void)w; /* a full counter already wakes the thread */
    }
    return queued;
}

/*
 * A bind's outcome needs no answer, so the directory thread does not wait
 * for it: the store's thread sends it. Until it lands, the bind's
 * reservation stands in Redis for the failure it may be, so no check in
 * between can let more binds through than the threshold. With the queue
 * full, the directory thread sends it itself.
 */
static void ts_account_done(void *store, const struct thr_ticket *tk, enum thr_outcome o)
{
    struct thr_store *s = store;
    struct ts_job job = {.account = true, .outcome = (uint8_t)o, .tk = *tk};
    if (!ts_enqueue(s, &job))
        ts_account_send(s, tk, o);
    explicit_bzero(&job, sizeof job);
}

/* ---- addresses ---- */

/* A worker never waits for Redis: the failure is queued, or dropped (and
 * counted) when the queue is full. */
static void ts_addr_failed(void *store, uint64_t addr_key)
{
    struct thr_store *s = store;
    struct ts_job job = {.key = addr_key};
    if (!ts_enqueue(s, &job))
        atomic_fetch_add_explicit(&s->dropped, 1, memory_order_relaxed);
}

static void ts_send_failure(struct thr_store *s, uint64_t key)
{
    const struct thr_conf *c = s->conf;
    char ka[TS_KEY_MAX], kb[TS_KEY_MAX], win[24], thr[12], ban[24], chan[THR_PREFIX_MAX + 8],
            hex[TS_HEX_LEN];
    size_t na = ts_key(s, 'a', key, ka, sizeof ka), nb = ts_key(s, 'b', key, kb, sizeof kb);
    snprintf(win, sizeof win, "%llu", 1000ull * c->addr_window);
    snprintf(thr, sizeof thr, "%u", c->addr_threshold);
    snprintf(ban, sizeof ban, "%llu", 1000ull * c->addr_ban);
    snprintf(chan, sizeof chan, "%sevents", c->store_prefix);
    ts_hex(key, hex);
    const char *argv[] = {"2", ka, kb, win, thr, ban, chan, hex};
    size_t lens[8] = {1, na, nb};
    for (unsigned i = 3; i < 8; i++)
        lens[i] = strlen(argv[i]);
    redisReply *r;
    if (!ts_run(s, TS_AFAIL, 8, argv, lens, &r)) {
        atomic_fetch_add_explicit(&s->dropped, 1, memory_order_relaxed);
        return;
    }
    freeReplyObject(r);
    atomic_fetch_add_explicit(&s->sent, 1, memory_order_relaxed);
}

static void ts_send_jobs(struct thr_store *s)
{
    struct ts_job batch[TS_BATCH];
    for (;;) {
        unsigned n = 0;
        pthread_mutex_lock(&s->lock);
        while (s->qlen && n < TS_BATCH) {
            batch[n++] = s->queue[s->qhead];
            explicit_bzero(&s->queue[s->qhead], sizeof s->queue[0]);
            s->qhead = (s->qhead + 1) % TS_QUEUE;
            s->qlen--;
        }
        pthread_mutex_unlock(&s->lock);
        if (n == 0)
            return;
        for (unsigned i = 0; i < n; i++) {
            if (batch[i].account)
                ts_account_send(s, &batch[i].tk, (enum thr_outcome)batch[i].outcome);
            else
                ts_send_failure(s, batch[i].key);
        }
        explicit_bzero(batch, n * sizeof batch[0]);
    }
}

/* ---- what the fleet says ---- */

static void ts_hear_message(struct thr_store *s, const char *msg, size_t len)
{
    char buf[96];
    if (len >= sizeof buf)
        return;
    memcpy(buf, msg, len);
    buf[len] = 0;
    if (strcmp(buf, "f") == 0) {
        thr_flush_local(s->t);
        return;
    }
    uint64_t key, ban;
    unsigned count;
    if (sscanf(buf, "a %16" SCNx64 " %u %" SCNu64, &key, &count, &ban) != 3)
        return;
    thr_addr_learn(s->t, key, count, ban, fg_clock_ms());
    atomic_fetch_add_explicit(&s->learned, 1, memory_order_relaxed);
}

static void ts_hear_reply(struct thr_store *s, redisReply *r)
{
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
        r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "message") == 0 &&
        r->element[2]->type == REDIS_REPLY_STRING)
        ts_hear_message(s, r->element[2]->str, r->element[2]->len);
}

static void ts_sub_lost(struct thr_store *s, const char *why)
{
    ts_down(s, why);
    redisFree(s->sub);
    s->sub = NULL;
    s->sub_retry_ms = fg_clock_ms() + TS_RETRY;
}

/* Reads what arrived on the subscription, without waiting for more. */
static void ts_hear(struct thr_store *s)
{
    void *r;
    if (redisBufferRead(s->sub) != REDIS_OK) {
        ts_sub_lost(s, s->sub->errstr[0] ? s->sub->errstr : "the subscription closed");
        return;
    }
    while (redisGetReplyFromReader(s->sub, &r) == REDIS_OK && r) {
        ts_hear_reply(s, r);
        freeReplyObject(r);
    }
    if (s->sub->err)
        ts_sub_lost(s, s->sub->errstr);
}

static void ts_subscribe(struct thr_store *s)
{
    const char *why = "";
    char chan[THR_PREFIX_MAX + 8];
    snprintf(chan, sizeof chan, "%sevents", s->conf->store_prefix);
    s->sub_retry_ms = fg_clock_ms() + TS_RETRY;
    if (!(s->sub = ts_connect(s, &why))) {
        ts_down(s, why);
        return;
    }
    redisReply *r = redisCommand(s->sub, "SUBSCRIBE %s", chan);
    if (!ts_reply_ok(s->sub, r, &why)) {
        if (r)
            freeReplyObject(r);
        ts_sub_lost(s, why);
        return;
    }
    freeReplyObject(r);
    /* Reading is driven by poll() from now on. */
    struct timeval none = {0, 0};
    redisSetTimeout(s->sub, none);
    ts_up(s);
}

static void *ts_main(void *arg)
{
    struct thr_store *s = arg;
    while (!atomic_load(&s->stop)) {
        if (!s->sub && fg_clock_ms() >= s->sub_retry_ms)
            ts_subscribe(s);
        struct pollfd p[2] = {{.fd = s->efd, .events = POLLIN},
                              {.fd = s->sub ? s->sub->fd : -1, .events = POLLIN}};
        if (poll(p, 2, 500) < 0 && errno != EINTR)
            break;
        if (p[0].revents & POLLIN) {
            uint64_t n;
            ssize_t rd = read(s->efd, &n, sizeof n);
            (void)rd;
            ts_send_jobs(s);
        }
        if (s->sub && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
            ts_hear(s);
    }
    ts_send_jobs(s); /* the last outcomes: their reservations go now, not at expiry */
    return NULL;
}

/* ---- operating it ---- */

/* Deletes the keys of one kind, a SCAN page at a time. */
static bool ts_flush_kind(struct thr_store *s, redisContext *c, char kind)
{
    char match[THR_PREFIX_MAX + 8];
    snprintf(match, sizeof match, "%s%c:*", s->conf->store_prefix, kind);
    char cursor[32] = "0";
    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, match);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            if (r)
                freeReplyObject(r);
            return false;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        redisReply *keys = r->element[1];
        for (size_t i = 0; i < keys->elements; i++) {
            redisReply *d =
                    redisCommand(c, "DEL %b", keys->element[i]->str, (size_t)keys->element[i]->len);
            if (d)
                freeReplyObject(d);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return true;
}

static void ts_flush(void *store)
{
    struct thr_store *s = store;
    redisContext *c = ts_get(s);
    if (!c)
        return;
    static const char kinds[] = "abuwr"; /* familiar places (p) stay */
    bool ok = true;
    for (const char *k = kinds; ok && *k; k++)
        ok = ts_flush_kind(s, c, *k);
    redisReply *r = ok ? redisCommand(c, "PUBLISH %sevents f", s->conf->store_prefix) : NULL;
    const char *why = "";
    if (!ok || !ts_reply_ok(c, r, &why)) {
        if (r)
            freeReplyObject(r);
        ts_bad(s, c, ok ? why : "SCAN failed");
        return;
    }
    freeReplyObject(r);
    ts_put(s, c);
}

bool ts_info(const struct throttle *t, struct ts_info *out)
{
    struct thr_store *s = t->fleet;
    memset(out, 0, sizeof *out);
    if (!s)
        return false;
    out->up = atomic_load(&s->state) == TS_UP;
    out->errors = atomic_load(&s->errors);
    out->sent = atomic_load(&s->sent);
    out->dropped = atomic_load(&s->dropped);
    out->learned = atomic_load(&s->learned);
    return true;
}

/* ---- life ---- */

static const struct thr_fleet_ops ts_ops = {
        .account_check = ts_account_check,
        .account_done = ts_account_done,
        .addr_failed = ts_addr_failed,
        .flush = ts_flush,
};

static void ts_free(struct thr_store *s)
{
    if (!s)
        return;
    if (s->started) {
        atomic_store(&s->stop, true);
        uint64_t one = 1;
        ssize_t w = write(s->efd, &one, sizeof one);
        (void)w;
        pthread_join(s->thread, NULL);
    }
    if (s->sub)
        redisFree(s->sub);
    if (s->efd >= 0) {
        ts_pool_clear(s);
        pthread_mutex_destroy(&s->lock);
        close(s->efd);
    }
    explicit_bzero(&s->url, sizeof s->url);
    free(s);
}

static struct thr_store *ts_new(struct throttle *t, uint32_t reserve_s)
{
    struct thr_store *s = calloc(1, sizeof *s);
    char why[200];
    if (!s)
        return NULL;
    s->t = t;
    s->conf = t->conf;
    s->reserve_ms = 1000 * FG_MAX(reserve_s, 1u);
    s->efd = -1;
    if (ts_url_parse(&s->url, t->conf->store, why, sizeof why) != FG_OK ||
        getrandom(&s->instance, sizeof s->instance, 0) != sizeof s->instance ||
        (s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        ts_free(s);
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    return s;
}

int ts_attach(struct throttle *t, uint32_t reserve_s)
{
    if (!t->on || !t->conf->store[0])
        return FG_OK;
    struct thr_store *s = ts_new(t, reserve_s);
    if (!s || pthread_create(&s->thread, NULL, ts_main, s) != 0) {
        log_msg(LOG_ERROR, "throttle", "cannot start the ThrottleStore's thread");
        ts_free(s);
        return FG_ERROR;
    }
    s->started = true;
    t->fleet = s;
    t->fleet_ops = &ts_ops;
    return FG_OK;
}

void ts_detach(struct throttle *t)
{
    ts_free(t->fleet);
    t->fleet = NULL;
    t->fleet_ops = NULL;
}

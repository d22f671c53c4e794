/*
 * The throttle's counters. See throttle.h.
 *
 * Three tables -- addresses, accounts, familiar places -- so that a flood of
 * one kind (a spray from many addresses, or of many names) cannot evict the
 * records of another: above all, never the familiar places, which only a
 * right password creates. Each table is THR_STRIPES chained hash tables,
 * each with its own lock and its records in least-recently-touched order, so
 * the oldest goes first when the stripe is full, and a record past its time
 * is dropped when met. A logon touches at most three records, briefly: the
 * locks are not what limits a gateway that does a bind per failed logon.
 */
#include "throttle.h"

#include "../base/log.h"
#include "../base/siphash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/random.h>

enum { K_ADDR, K_ACCOUNT, K_PLACE, K_PW1, K_PW2, K_COUNT }; /* the secret's keys */

struct thr_rec {
    struct thr_rec *next; /* in its bucket */
    struct fg_list lru;   /* in its stripe, least recently touched first */
    uint64_t key;
    uint64_t touched_ms;
    uint64_t until_ms;         /* addresses: refused until then */
    uint32_t fails;            /* addresses: failed logons; accounts: failed binds */
    uint32_t fails_unfamiliar; /* accounts: of those, from unfamiliar addresses */
    uint32_t inflight;         /* accounts: binds under way, counted as failures */
    uint8_t nbad, badpos;      /* accounts: the wrong passwords remembered */
    uint8_t bad[][THR_PW_HASH_LEN];
};

struct thr_stripe {
    pthread_mutex_t lock;
    struct fg_list lru;
    uint32_t count;
    struct thr_rec *buckets[];
};

struct thr_table {
    uint32_t nbuckets; /* per stripe, a power of two */
    uint32_t max;      /* records per stripe */
    uint32_t ttl_ms;   /* a record untouched this long is gone */
    size_t rec_size;
    struct thr_stats *stats;
    struct thr_stripe *stripes[THR_STRIPES];
};

void thr_conf_defaults(struct thr_conf *c)
{
    memset(c, 0, sizeof *c);
    c->enabled = true;
    c->addr_delay_ms = 500;
    c->addr_delay_max_ms = 8000;
    c->addr_threshold = 30;
    c->addr_window = 600;
    c->addr_ban = 900;
    c->acct_threshold = 5;
    c->acct_familiar_threshold = 8;
    c->acct_window = 1800;
    c->familiar_days = 30;
    c->bad_history = 3;
    c->max_entries = 100000;
    snprintf(c->store_prefix, sizeof c->store_prefix, "fg:");
    c->store_timeout_ms = 200;
}

const char *thr_reason_name(enum thr_reason r)
{
    static const char *const names[THR_REASON_COUNT] = {
            [THR_PASS] = "pass",
            [THR_EXEMPT] = "exempt",
            [THR_ADDR_DELAY] = "address_delay",
            [THR_ADDR_BANNED] = "address_refused",
            [THR_ACCOUNT_LOCKED] = "account_unfamiliar",
            [THR_ACCOUNT_FAMILIAR] = "account_familiar",
            [THR_REPEAT_PASSWORD] = "repeat_password",
    };
    return (unsigned)r < THR_REASON_COUNT ? names[r] : "?";
}

/* ---- the tables ---- */

static struct thr_table *tt_new(uint32_t max_entries, uint64_t ttl_ms, size_t rec_size,
                                struct thr_stats *stats)
{
    struct thr_table *tt = calloc(1, sizeof *tt);
    if (!tt)
        return NULL;
    tt->max = FG_MAX(max_entries / THR_STRIPES, 1u);
    tt->nbuckets = 16;
    while (tt->nbuckets < tt->max && tt->nbuckets < (1u << 20))
        tt->nbuckets <<= 1;
    tt->ttl_ms = (uint32_t)FG_MIN(ttl_ms, (uint64_t)UINT32_MAX);
    tt->rec_size = rec_size;
    tt->stats = stats;
    for (unsigned i = 0; i < THR_STRIPES; i++) {
        struct thr_stripe *s = calloc(1, sizeof *s + tt->nbuckets * sizeof(struct thr_rec *));
        if (!s)
            return tt; /* tt_ok() says no */
        pthread_mutex_init(&s->lock, NULL);
        fg_list_init(&s->lru);
        tt->stripes[i] = s;
    }
    return tt;
}

static bool tt_ok(const struct thr_table *tt)
{
    return tt && tt->stripes[THR_STRIPES - 1];
}

static void tt_clear(const struct thr_table *tt, struct thr_stripe *s)
{
    struct fg_list *n;
    while ((n = fg_list_pop(&s->lru))) {
        struct thr_rec *r = FG_CONTAINER_OF(n, struct thr_rec, lru);
        explicit_bzero(r, tt->rec_size); /* the keyed hashes of wrong passwords */
        free(r);
    }
    memset(s->buckets, 0, tt->nbuckets * sizeof s->buckets[0]);
    s->count = 0;
}

static void tt_free(struct thr_table *tt)
{
    if (!tt)
        return;
    for (unsigned i = 0; i < THR_STRIPES; i++) {
        if (!tt->stripes[i])
            continue;
        tt_clear(tt, tt->stripes[i]);
        pthread_mutex_destroy(&tt->stripes[i]->lock);
        free(tt->stripes[i]);
    }
    free(tt);
}

static struct thr_stripe *tt_lock(struct thr_table *tt, uint64_t key)
{
    /* The low bits pick the bucket; the stripe takes the high ones. */
    struct thr_stripe *s = tt->stripes[key >> 58];
    pthread_mutex_lock(&s->lock);
    return s;
}

static void tt_unlock(struct thr_stripe *s)
{
    pthread_mutex_unlock(&s->lock);
}

static void tt_unlink(const struct thr_table *tt, struct thr_stripe *s, struct thr_rec *r)
{
    struct thr_rec **p = &s->buckets[r->key & (tt->nbuckets - 1)];
    while (*p != r)
        p = &(*p)->next;
    *p = r->next;
    fg_list_del(&r->lru);
    s->count--;
    explicit_bzero(r, tt->rec_size);
    free(r);
}

/* Drops the records past their time from the old end, then the oldest
 * while the stripe is full. */
static void tt_trim(struct thr_table *tt, struct thr_stripe *s, uint64_t now, uint32_t room)
{
    struct thr_rec *r;
    while ((r = FG_LIST_FIRST(&s->lru, struct thr_rec, lru))) {
        bool expired = now - r->touched_ms >= tt->ttl_ms;
        if (!expired && s->count + room <= tt->max)
            break;
        if (!expired)
            atomic_fetch_add_explicit(&tt->stats->evictions, 1, memory_order_relaxed);
        tt_unlink(tt, s, r);
    }
}

/* The record of key, or NULL; with create, a new zeroed one (NULL only
 * when memory is out). Under the stripe's lock. A record past its time is
 * as good as absent. */
static struct thr_rec *tt_get(struct thr_table *tt, struct thr_stripe *s, uint64_t key,
                              uint64_t now, bool create)
{
    struct thr_rec *r = s->buckets[key & (tt->nbuckets - 1)];
    while (r && r->key != key)
        r = r->next;
    if (r && now - r->touched_ms >= tt->ttl_ms) {
        tt_unlink(tt, s, r);
        r = NULL;
    }
    if (r || !create)
        return r;
    tt_trim(tt, s, now, 1);
    if (!(r = calloc(1, tt->rec_size)))
        return NULL;
    r->key = key;
    r->touched_ms = now;
    struct thr_rec **b = &s->buckets[key & (tt->nbuckets - 1)];
    r->next = *b;
    *b = r;
    fg_list_add_tail(&s->lru, &r->lru);
    s->count++;
    return r;
}

static void tt_touch(struct thr_stripe *s, struct thr_rec *r, uint64_t now)
{
    r->touched_ms = now;
    fg_list_del(&r->lru);
    fg_list_add_tail(&s->lru, &r->lru);
}

static uint64_t tt_count(struct thr_table *tt)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < THR_STRIPES; i++) {
        pthread_mutex_lock(&tt->stripes[i]->lock);
        n += tt->stripes[i]->count;
        pthread_mutex_unlock(&tt->stripes[i]->lock);
    }
    return n;
}

/* ---- keys ---- */

static const uint8_t *thr_key(const struct throttle *t, int k)
{
    return t->secret + k * SIPHASH_KEY_LEN;
}

/* An address counts per /64 for IPv6: one host holds a whole /64, as
 * SLAAC and privacy addresses hand them out. */
static uint64_t thr_addr_key(const struct throttle *t, const union net_addr *a)
{
    uint8_t b[16];
    size_t n = net_addr_bytes(a, b);
    return siphash24(thr_key(t, K_ADDR), b, n == 16 ? 8 : n);
}

static uint64_t thr_account_key(const struct throttle *t, const char *acct, size_t n)
{
    char low[512];
    n = FG_MIN(n, sizeof low);
    for (size_t i = 0; i < n; i++)
        low[i] = (char)((acct[i] >= 'A' && acct[i] <= 'Z') ? acct[i] + 32 : acct[i]);
    return siphash24(thr_key(t, K_ACCOUNT), low, n);
}

static uint64_t thr_place_key(const struct throttle *t, uint64_t account, const union net_addr *a)
{
    uint8_t b[8 + 16];
    memcpy(b, &account, 8);
    size_t n = net_addr_bytes(a, b + 8);
    return siphash24(thr_key(t, K_PLACE), b, 8 + (n == 16 ? 8 : n));
}

/* 128 bits of two keyed hashes of the account and the password: enough that
 * another password never passes for a remembered one, and nothing that
 * gives the password back without the secret. */
static void thr_pw_hash(const struct throttle *t, uint64_t account, const char *pass, size_t n,
                        uint8_t out[THR_PW_HASH_LEN])
{
    uint8_t buf[8 + 1024];
    n = FG_MIN(n, sizeof buf - 8);
    memcpy(buf, &account, 8);
    memcpy(buf + 8, pass, n);
    uint64_t h1 = siphash24(thr_key(t, K_PW1), buf, 8 + n);
    uint64_t h2 = siphash24(thr_key(t, K_PW2), buf, 8 + n);
    explicit_bzero(buf, 8 + n);
    memcpy(out, &h1, 8);
    memcpy(out + 8, &h2, 8);
}

/* The keys from ThrottleKeyFile, so that every instance of a fleet hashes
 * alike: each half of each key is SipHash, keyed by one of the file's first
 * two 16-byte blocks, of a label, the key's number and the whole file. */
static int thr_derive_keys(struct throttle *t, const uint8_t *file, size_t n)
{
    static const char label[] = "forestgate throttle keys";
    uint8_t *msg = malloc(sizeof label + 2 + n);
    if (!msg || n < THR_KEY_MIN) {
        free(msg);
        return FG_ERROR;
    }
    memcpy(msg, label, sizeof label);
    memcpy(msg + sizeof label + 2, file, n);
    for (unsigned k = 0; k < K_COUNT; k++) {
        for (unsigned half = 0; half < 2; half++) {
            msg[sizeof label] = (uint8_t)k;
            msg[sizeof label + 1] = (uint8_t)half;
            uint64_t h = siphash24(file + 16 * half, msg, sizeof label + 2 + n);
            memcpy(t->secret + k * SIPHASH_KEY_LEN + 8 * half, &h, 8);
        }
    }
    explicit_bzero(msg, sizeof label + 2 + n);
    free(msg);
    return FG_OK;
}

static int thr_keys(struct throttle *t)
{
    if (t->conf->key)
        return thr_derive_keys(t, t->conf->key, t->conf->key_len);
    if (getrandom(t->secret, K_COUNT * SIPHASH_KEY_LEN, 0) != K_COUNT * SIPHASH_KEY_LEN)
        return FG_ERROR;
    return FG_OK;
}

/* ---- life ---- */

int thr_init(struct throttle *t, const struct thr_conf *conf)
{
    memset(t, 0, sizeof *t);
    t->conf = conf;
    if (!conf->enabled)
        return FG_OK;
    t->secret = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (t->secret == MAP_FAILED) {
        t->secret = NULL;
        log_msg(LOG_ERROR, "throttle", "cannot map the throttle's key");
        return FG_ERROR;
    }
    madvise(t->secret, 4096, MADV_DONTDUMP);
    mlock(t->secret, 4096); /* best effort: never swapped, when allowed */
    if (thr_keys(t) != FG_OK) {
        log_msg(LOG_ERROR, "throttle", "cannot make the throttle's keys");
        thr_free(t);
        return FG_ERROR;
    }
    uint64_t day = 86400000ull;
    t->addrs = tt_new(conf->max_entries, 1000ull * FG_MAX(conf->addr_window, conf->addr_ban) + 1000,
                      sizeof(struct thr_rec), &t->stats);
    t->accounts = tt_new(conf->max_entries, 1000ull * conf->acct_window + 1000,
                         sizeof(struct thr_rec) + THR_BAD_MAX * THR_PW_HASH_LEN, &t->stats);
    t->familiar = tt_new(conf->max_entries, FG_MAX(conf->familiar_days * day, 1ull),
                         sizeof(struct thr_rec), &t->stats);
    if (!tt_ok(t->addrs) || !tt_ok(t->accounts) || !tt_ok(t->familiar)) {
        log_msg(LOG_ERROR, "throttle", "out of memory for the throttle's tables");
        thr_free(t);
        return FG_ERROR;
    }
    t->on = true;
    return FG_OK;
}

void thr_free(struct throttle *t)
{
    tt_free(t->addrs);
    tt_free(t->accounts);
    tt_free(t->familiar);
    if (t->secret) {
        explicit_bzero(t->secret, 4096);
        munmap(t->secret, 4096);
    }
    t->addrs = t->accounts = t->familiar = NULL;
    t->secret = NULL;
    t->on = false;
}

static void thr_count(struct throttle *t, enum thr_reason r)
{
    if (r != THR_PASS)
        atomic_fetch_add_explicit(&t->stats.reasons[r], 1, memory_order_relaxed);
}

/* ---- per address ---- */

static bool thr_exempt(const struct throttle *t, const union net_addr *a)
{
    return net_cidr_match_any(t->conf->exempt_nets, t->conf->nexempt, a);
}

/* The failures that still count: none once the window has passed since
 * the last one, as AD resets badPwdCount. */
static uint32_t thr_live_fails(const struct thr_rec *r, uint32_t window_s, uint64_t now)
{
    return now - r->touched_ms >= 1000ull * window_s ? 0 : r->fails;
}

static uint32_t thr_delay(const struct thr_conf *c, uint32_t fails)
{
    if (fails == 0 || c->addr_delay_ms == 0)
        return 0;
    uint64_t d = (uint64_t)c->addr_delay_ms << FG_MIN(fails - 1, 20u);
    return (uint32_t)FG_MIN(d, (uint64_t)c->addr_delay_max_ms);
}

enum thr_reason thr_addr_check(struct throttle *t, const union net_addr *a, uint64_t now,
                               uint32_t *delay_ms)
{
    enum thr_reason r = THR_PASS;
    *delay_ms = 0;
    if (!t->on)
        return THR_PASS;
    if (thr_exempt(t, a)) {
        thr_count(t, THR_EXEMPT);
        return THR_EXEMPT;
    }
    uint64_t key = thr_addr_key(t, a);
    struct thr_stripe *s = tt_lock(t->addrs, key);
    struct thr_rec *rec = tt_get(t->addrs, s, key, now, false);
    if (rec && rec->until_ms > now)
        r = THR_ADDR_BANNED;
    else if (rec &&
             (*delay_ms = thr_delay(t->conf, thr_live_fails(rec, t->conf->addr_window, now))))
        r = THR_ADDR_DELAY;
    tt_unlock(s);
    thr_count(t, r);
    return r;
}

bool thr_addr_failed(struct throttle *t, const union net_addr *a, uint64_t now)
{
    const struct thr_conf *c = t->conf;
    bool banned = false;
    if (!t->on || thr_exempt(t, a))
        return false;
    uint64_t key = thr_addr_key(t, a);
    struct thr_stripe *s = tt_lock(t->addrs, key);
    struct thr_rec *rec = tt_get(t->addrs, s, key, now, true);
    if (rec) {
        rec->fails = thr_live_fails(rec, c->addr_window, now) + 1;
        tt_touch(s, rec, now);
        if (c->addr_threshold && rec->fails >= c->addr_threshold && rec->until_ms <= now) {
            rec->until_ms = now + 1000ull * c->addr_ban;
            banned = true;
        }
    }
    tt_unlock(s);
    if (t->fleet)
        t->fleet_ops->addr_failed(t->fleet, key);
    atomic_fetch_add_explicit(&t->stats.addr_failures, 1, memory_order_relaxed);
    if (banned)
        atomic_fetch_add_explicit(&t->stats.bans, 1, memory_order_relaxed);
    return banned;
}

/* The fleet counted more failures than this instance saw: its count and
 * its ban hold here too. */
void thr_addr_learn(struct throttle *t, uint64_t key, uint32_t fails, uint64_t ban_ms, uint64_t now)
{
    if (!t->on)
        return;
    struct thr_stripe *s = tt_lock(t->addrs, key);
    struct thr_rec *rec = tt_get(t->addrs, s, key, now, true);
    if (rec) {
        rec->fails = FG_MAX(thr_live_fails(rec, t->conf->addr_window, now), fails);
        tt_touch(s, rec, now);
        if (ban_ms && rec->until_ms < now + ban_ms)
            rec->until_ms = now + ban_ms;
    }
    tt_unlock(s);
}

bool thr_addr_banned(struct throttle *t, const union net_addr *a, uint64_t now)
{
    if (!t->on || thr_exempt(t, a))
        return false;
    uint64_t key = thr_addr_key(t, a);
    struct thr_stripe *s = tt_lock(t->addrs, key);
    struct thr_rec *rec = tt_get(t->addrs, s, key, now, false);
    bool banned = rec && rec->until_ms > now;
    tt_unlock(s);
    if (banned)
        thr_count(t, THR_ADDR_BANNED);
    return banned;
}

/* ---- per account ---- */

static bool thr_familiar(struct throttle *t, uint64_t place, uint64_t now)
{
    if (t->conf->familiar_days == 0)
        return false;
    struct thr_stripe *s = tt_lock(t->familiar, place);
    bool known = tt_get(t->familiar, s, place, now, false) != NULL;
    tt_unlock(s);
    return known;
}

static bool thr_known_bad(const struct thr_rec *r, const uint8_t pw[THR_PW_HASH_LEN])
{
    for (unsigned i = 0; i < r->nbad; i++)
        if (memcmp(r->bad[i], pw, THR_PW_HASH_LEN) == 0)
            return true;
    return false;
}

/* The decision under the account's lock; reserves the bind when it passes. */
static enum thr_reason thr_account_decide(struct throttle *t, struct thr_rec *r, bool familiar,
                                          const struct thr_ticket *tk, uint64_t now)
{
    const struct thr_conf *c = t->conf;
    if (thr_live_fails(r, c->acct_window, now) == 0 && r->fails) {
        r->fails = r->fails_unfamiliar = 0;
        r->nbad = r->badpos = 0;
    }
    if (c->bad_history && thr_known_bad(r, tk->pw))
        return THR_REPEAT_PASSWORD;
    if (c->acct_threshold == 0)
        return THR_PASS;
    if (r->fails + r->inflight >= c->acct_familiar_threshold)
        return THR_ACCOUNT_FAMILIAR;
    if (!familiar && r->fails_unfamiliar + r->inflight >= c->acct_threshold)
        return THR_ACCOUNT_LOCKED;
    return THR_PASS;
}

/* This instance's record of the account: with decide, its decision; else
 * only the bookkeeping, for the fleet decided. A bind that passes is
 * reserved. */
static enum thr_reason thr_account_local(struct throttle *t, struct thr_ticket *tk, bool familiar,
                                         bool decide, uint64_t now)
{
    struct thr_stripe *s = tt_lock(t->accounts, tk->account);
    struct thr_rec *r = tt_get(t->accounts, s, tk->account, now, true);
    enum thr_reason why = r && decide ? thr_account_decide(t, r, familiar, tk, now) : THR_PASS;
    if (r && why == THR_PASS) {
        r->inflight++;
        tk->counted = true;
    }
    tt_unlock(s);
    return why;
}

/*
 * With a fleet store that answers, the fleet decides: its counts hold this
 * instance's and the others', its familiar places too, and a success on
 * any instance resets them. This instance keeps its own record alongside,
 * for when the store does not answer: then it decides alone.
 */
enum thr_reason thr_account_check(struct throttle *t, const char *account, size_t account_len,
                                  const union net_addr *a, const char *pass, size_t pass_len,
                                  uint64_t now, struct thr_ticket *tk)
{
    memset(tk, 0, sizeof *tk);
    if (!t->on)
        return THR_PASS;
    if (thr_exempt(t, a)) {
        tk->exempt = true;
        thr_count(t, THR_EXEMPT);
        return THR_EXEMPT;
    }
    tk->account = thr_account_key(t, account, account_len);
    tk->place = thr_place_key(t, tk->account, a);
    thr_pw_hash(t, tk->account, pass, pass_len, tk->pw);
    bool familiar = thr_familiar(t, tk->place, now);
    enum thr_reason why;
    if (t->fleet && t->fleet_ops->account_check(t->fleet, tk, familiar, &why)) {
        tk->remote = why == THR_PASS;
        if (why == THR_PASS)
            thr_account_local(t, tk, familiar, false, now);
    } else {
        why = thr_account_local(t, tk, familiar, true, now);
    }
    thr_count(t, why);
    if (why != THR_PASS)
        explicit_bzero(tk, sizeof *tk);
    return why;
}

static void thr_remember_bad(const struct thr_conf *c, struct thr_rec *r,
                             const uint8_t pw[THR_PW_HASH_LEN])
{
    unsigned hist = FG_MIN(c->bad_history, (uint32_t)THR_BAD_MAX);
    if (hist == 0)
        return;
    memcpy(r->bad[r->badpos], pw, THR_PW_HASH_LEN);
    r->badpos = (uint8_t)((r->badpos + 1) % hist);
    if (r->nbad < hist)
        r->nbad++;
}

/* A success resets the account's count, as AD resets badPwdCount, and
 * makes the place familiar. */
static void thr_account_ok(struct throttle *t, struct thr_ticket *tk, uint64_t now)
{
    if (t->conf->familiar_days) {
        struct thr_stripe *s = tt_lock(t->familiar, tk->place);
        struct thr_rec *f = tt_get(t->familiar, s, tk->place, now, true);
        if (f)
            tt_touch(s, f, now);
        tt_unlock(s);
    }
}

void thr_account_done(struct throttle *t, struct thr_ticket *tk, enum thr_outcome o, uint64_t now)
{
    if (!t->on || (!tk->counted && !tk->remote))
        return;
    if (tk->remote && t->fleet)
        t->fleet_ops->account_done(t->fleet, tk, o);
    if (!tk->counted) {
        explicit_bzero(tk, sizeof *tk);
        return;
    }
    bool familiar = o == THR_BIND_FAILED && (tk->familiar || thr_familiar(t, tk->place, now));
    struct thr_stripe *s = tt_lock(t->accounts, tk->account);
    struct thr_rec *r = tt_get(t->accounts, s, tk->account, now, false);
    if (r) {
        if (r->inflight)
            r->inflight--;
        if (o == THR_BIND_OK) {
            r->fails = r->fails_unfamiliar = 0;
            r->nbad = r->badpos = 0;
        } else if (o == THR_BIND_FAILED) {
            r->fails = thr_live_fails(r, t->conf->acct_window, now) + 1;
            if (!familiar)
                r->fails_unfamiliar++;
            thr_remember_bad(t->conf, r, tk->pw);
            tt_touch(s, r, now);
        }
    }
    tt_unlock(s);
    if (o == THR_BIND_OK)
        thr_account_ok(t, tk, now);
    if (o == THR_BIND_FAILED)
        atomic_fetch_add_explicit(&t->stats.account_failures, 1, memory_order_relaxed);
    explicit_bzero(tk, sizeof *tk);
}

/* ---- operating it ---- */

/* Forgets a stripe's records; an account's binds under way keep their
 * reservations, so that a flush during a spray lets in no more binds than
 * the threshold allows. */
static void tt_flush_stripe(const struct thr_table *tt, struct thr_stripe *s)
{
    struct fg_list *n = s->lru.next;
    while (n != &s->lru) {
        struct thr_rec *r = FG_CONTAINER_OF(n, struct thr_rec, lru);
        n = n->next;
        if (r->inflight == 0) {
            tt_unlink(tt, s, r);
            continue;
        }
        r->fails = r->fails_unfamiliar = 0;
        r->until_ms = 0;
        r->nbad = r->badpos = 0;
    }
}

static void tt_flush(struct thr_table *tt)
{
    for (unsigned i = 0; i < THR_STRIPES; i++) {
        pthread_mutex_lock(&tt->stripes[i]->lock);
        tt_flush_stripe(tt, tt->stripes[i]);
        pthread_mutex_unlock(&tt->stripes[i]->lock);
    }
}

/* Familiar places stay: they are the real users' way in. */
void thr_flush_local(struct throttle *t)
{
    if (!t->on)
        return;
    tt_flush(t->addrs);
    tt_flush(t->accounts);
}

void thr_flush(struct throttle *t)
{
    thr_flush_local(t);
    if (t->on && t->fleet)
        t->fleet_ops->flush(t->fleet);
}

void thr_counts(struct throttle *t, uint64_t *addrs, uint64_t *accounts, uint64_t *familiar)
{
    *addrs = *accounts = *familiar = 0;
    if (!t->on)
        return;
    *addrs = tt_count(t->addrs);
    *accounts = tt_count(t->accounts);
    *familiar = tt_count(t->familiar);
}

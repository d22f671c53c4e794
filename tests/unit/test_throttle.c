/*
 * The throttle (directory/throttle.h), with time given by the test: the
 * address delay doubling to its cap, the ban and its end, the window that
 * forgets; smart lockout -- unfamiliar addresses stopped at one threshold,
 * familiar ones at the other, a success resetting the count, a repeated
 * wrong password neither bound nor counted, binds under way counted so that
 * parallel attempts cannot overshoot; exempt networks; IPv6 per /64;
 * eviction bounded by MaxEntries; then a run of several threads checking
 * that no more binds pass than the threshold allows; and, with a mock in
 * place of the fleet's store (Redis, tested for real in
 * tests/integration/test_throttle_store.py), who decides when it answers
 * and when it does not, and the keys ThrottleKeyFile gives.
 */
#include "../../directory/throttle.h"
#include "harness.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

static union net_addr ip(const char *s)
{
    union net_addr a;
    memset(&a, 0, sizeof a);
    if (inet_pton(AF_INET, s, &a.v4.sin_addr) == 1) {
        a.v4.sin_family = AF_INET;
    } else {
        a.v6.sin6_family = AF_INET6;
        inet_pton(AF_INET6, s, &a.v6.sin6_addr);
    }
    return a;
}

static struct thr_conf conf;

static void setup(struct throttle *t)
{
    CHECK_INT(thr_init(t, &conf), FG_OK);
}

/* One logon attempt at the account throttle: the decision, and when it
 * binds, the outcome ok says. */
static enum thr_reason attempt(struct throttle *t, const char *acct, const char *from,
                               const char *pw, bool ok, uint64_t now)
{
    struct thr_ticket tk;
    union net_addr a = ip(from);
    enum thr_reason r = thr_account_check(t, acct, strlen(acct), &a, pw, strlen(pw), now, &tk);
    if (r == THR_PASS || r == THR_EXEMPT)
        thr_account_done(t, &tk, ok ? THR_BIND_OK : THR_BIND_FAILED, now);
    return r;
}

static void test_addr_delay_and_ban(void)
{
    struct throttle t;
    uint32_t d;
    union net_addr a = ip("192.0.2.1"), b = ip("192.0.2.2");
    conf.addr_threshold = 5;
    setup(&t);
    CHECK_INT(thr_addr_check(&t, &a, 1000, &d), THR_PASS);
    CHECK_INT(d, 0);
    uint32_t want[] = {500, 1000, 2000, 4000};
    for (unsigned i = 0; i < 4; i++) {
        CHECK(!thr_addr_failed(&t, &a, 1000 + i));
        CHECK_INT(thr_addr_check(&t, &a, 1000 + i, &d), THR_ADDR_DELAY);
        CHECK_INT(d, want[i]);
    }
    CHECK_INT(thr_addr_check(&t, &b, 1000, &d), THR_PASS); /* its neighbour is not touched */
    CHECK(thr_addr_failed(&t, &a, 2000));                  /* the fifth: refused */
    CHECK(thr_addr_banned(&t, &a, 2001));
    CHECK_INT(thr_addr_check(&t, &a, 2001, &d), THR_ADDR_BANNED);
    CHECK(!thr_addr_failed(&t, &a, 2002)); /* a ban starts once */
    CHECK_INT(atomic_load(&t.stats.bans), 1);
    /* The ban ends after AddressBanTime; the window has passed too. */
    uint64_t later = 2002 + 1000ull * conf.addr_ban;
    CHECK(!thr_addr_banned(&t, &a, later));
    CHECK_INT(thr_addr_check(&t, &a, later, &d), THR_PASS);
    thr_free(&t);
    conf.addr_threshold = 30;
}

static void test_addr_cap_and_window(void)
{
    struct throttle t;
    uint32_t d;
    union net_addr a = ip("198.51.100.9");
    conf.addr_threshold = 0; /* never refuse */
    setup(&t);
    for (unsigned i = 0; i < 40; i++)
        thr_addr_failed(&t, &a, 5000);
    CHECK_INT(thr_addr_check(&t, &a, 5000, &d), THR_ADDR_DELAY);
    CHECK_INT(d, conf.addr_delay_max_ms);
    CHECK(!thr_addr_banned(&t, &a, 5000));
    /* A window after the last failure, the address starts again. */
    CHECK_INT(thr_addr_check(&t, &a, 5000 + 1000ull * conf.addr_window, &d), THR_PASS);
    thr_free(&t);
    conf.addr_threshold = 30;
}

static void test_ipv6_prefix(void)
{
    struct throttle t;
    uint32_t d;
    union net_addr a = ip("2001:db8:1:2::1"), same = ip("2001:db8:1:2:ffff::9"),
                   other = ip("2001:db8:1:3::1"), mapped = ip("::ffff:192.0.2.7"),
                   v4 = ip("192.0.2.7");
    setup(&t);
    thr_addr_failed(&t, &a, 100);
    CHECK_INT(thr_addr_check(&t, &same, 100, &d), THR_ADDR_DELAY);
    CHECK_INT(thr_addr_check(&t, &other, 100, &d), THR_PASS);
    thr_addr_failed(&t, &mapped, 100);
    CHECK_INT(thr_addr_check(&t, &v4, 100, &d), THR_ADDR_DELAY);
    thr_free(&t);
}

static void test_exempt(void)
{
    struct throttle t;
    uint32_t d;
    char why[128];
    union net_addr in = ip("10.1.2.3"), out = ip("11.0.0.1");
    conf.nexempt = (unsigned)net_cidr_parse_list("10.0.0.0/8, 2001:db8::/32", conf.exempt_nets,
                                                 THR_MAX_NETS, why, sizeof why);
    CHECK_INT(conf.nexempt, 2);
    setup(&t);
    for (int i = 0; i < 100; i++)
        thr_addr_failed(&t, &in, 100);
    CHECK_INT(thr_addr_check(&t, &in, 100, &d), THR_EXEMPT);
    CHECK(!thr_addr_banned(&t, &in, 100));
    for (int i = 0; i < 20; i++)
        CHECK_INT(attempt(&t, "cn=a", "10.9.9.9", "wrong", false, 100), THR_EXEMPT);
    /* Exempt failures are not counted against the account either. */
    CHECK_INT(attempt(&t, "cn=a", "11.0.0.1", "wrong", false, 100), THR_PASS);
    CHECK_INT(thr_addr_check(&t, &out, 100, &d), THR_PASS);
    thr_free(&t);
    conf.nexempt = 0;
}

/* The heart: unfamiliar guesses stop at AccountFailureThreshold; the user,
 * from where they logged on before, binds on up to the higher one. */
static void test_smart_lockout(void)
{
    struct throttle t;
    char pw[32];
    setup(&t);
    const char *acct = "CN=Alice,OU=Users,DC=example,DC=com";
    CHECK_INT(attempt(&t, acct, "203.0.113.5", "right", true, 10), THR_PASS); /* familiar now */
    for (int i = 0; i < 5; i++) {
        snprintf(pw, sizeof pw, "guess%d", i);
        CHECK_INT(attempt(&t, acct, "198.51.100.1", pw, false, 20 + i), THR_PASS);
    }
    /* The sixth unfamiliar guess is answered without a bind, from any
     * unfamiliar address, in any case of the DN. */
    CHECK_INT(attempt(&t, acct, "198.51.100.2", "guess9", false, 30), THR_ACCOUNT_LOCKED);
    CHECK_INT(attempt(&t, "cn=alice,ou=users,dc=example,dc=com", "198.51.100.3", "x", false, 31),
              THR_ACCOUNT_LOCKED);
    /* Even the right password from an unfamiliar place: that is the price. */
    CHECK_INT(attempt(&t, acct, "198.51.100.4", "right", true, 32), THR_ACCOUNT_LOCKED);
    /* The familiar place binds: wrong passwords up to the higher threshold... */
    CHECK_INT(attempt(&t, acct, "203.0.113.5", "typo1", false, 40), THR_PASS);
    CHECK_INT(attempt(&t, acct, "203.0.113.5", "typo2", false, 41), THR_PASS);
    CHECK_INT(attempt(&t, acct, "203.0.113.5", "typo3", false, 42), THR_PASS);
    CHECK_INT(attempt(&t, acct, "203.0.113.5", "typo4", false, 43), THR_ACCOUNT_FAMILIAR);
    CHECK_INT(atomic_load(&t.stats.account_failures), 8);
    /* Another account is untouched. */
    CHECK_INT(attempt(&t, "cn=bob", "198.51.100.1", "guess0", false, 44), THR_PASS);
    /* The window after the last failure, everything starts again. */
    uint64_t later = 43 + 1000ull * conf.acct_window;
    CHECK_INT(attempt(&t, acct, "198.51.100.2", "guess9", false, later), THR_PASS);
    thr_free(&t);
}

static void test_success_resets(void)
{
    struct throttle t;
    setup(&t);
    for (int i = 0; i < 4; i++)
        CHECK_INT(attempt(&t, "cn=c", "192.0.2.50", i % 2 ? "a" : "b", false, 10 + i),
                  i < 2 ? THR_PASS : THR_REPEAT_PASSWORD);
    CHECK_INT(attempt(&t, "cn=c", "192.0.2.50", "c", false, 20), THR_PASS);
    CHECK_INT(attempt(&t, "cn=c", "192.0.2.50", "right", true, 21), THR_PASS);
    /* Counted from zero again: five more unfamiliar failures pass. */
    for (int i = 0; i < 5; i++) {
        char pw[8];
        snprintf(pw, sizeof pw, "n%d", i);
        CHECK_INT(attempt(&t, "cn=c", "192.0.2.99", pw, false, 30 + i), THR_PASS);
    }
    CHECK_INT(attempt(&t, "cn=c", "192.0.2.99", "n9", false, 40), THR_ACCOUNT_LOCKED);
    thr_free(&t);
}

/* A device with an old password saved retries it: one bind, one count. */
static void test_repeat_password(void)
{
    struct throttle t;
    setup(&t);
    CHECK_INT(attempt(&t, "cn=d", "192.0.2.60", "old-pw", false, 10), THR_PASS);
    for (int i = 0; i < 50; i++)
        CHECK_INT(attempt(&t, "cn=d", "192.0.2.60", "old-pw", false, 11 + i), THR_REPEAT_PASSWORD);
    CHECK_INT(atomic_load(&t.stats.account_failures), 1);
    /* Only the last BadPasswordHistory wrong ones are remembered. */
    CHECK_INT(attempt(&t, "cn=d", "192.0.2.60", "p2", false, 70), THR_PASS);
    CHECK_INT(attempt(&t, "cn=d", "192.0.2.60", "p3", false, 71), THR_PASS);
    CHECK_INT(attempt(&t, "cn=d", "192.0.2.60", "p4", false, 72), THR_PASS);
    CHECK_INT(attempt(&t, "cn=d", "192.0.2.60", "old-pw", false, 73), THR_PASS);
    /* The same password for another account is another hash. */
    CHECK_INT(attempt(&t, "cn=e", "192.0.2.60", "p4", false, 74), THR_PASS);
    thr_free(&t);
}

/* Binds under way count: five parallel guesses pass, the sixth waits for
 * none of them and is refused. */
static void test_inflight(void)
{
    struct throttle t;
    struct thr_ticket tk[6];
    union net_addr a = ip("192.0.2.70");
    char pw[8];
    setup(&t);
    for (int i = 0; i < 6; i++) {
        snprintf(pw, sizeof pw, "g%d", i);
        enum thr_reason r = thr_account_check(&t, "cn=f", 4, &a, pw, strlen(pw), 10, &tk[i]);
        CHECK_INT(r, i < 5 ? THR_PASS : THR_ACCOUNT_LOCKED);
    }
    /* Unanswered binds give their place back. */
    for (int i = 0; i < 5; i++)
        thr_account_done(&t, &tk[i], THR_BIND_NONE, 20);
    thr_account_done(&t, &tk[0], THR_BIND_FAILED, 20); /* twice: nothing more */
    CHECK_INT(attempt(&t, "cn=f", "192.0.2.70", "h", false, 30), THR_PASS);
    CHECK_INT(atomic_load(&t.stats.account_failures), 1);
    thr_free(&t);
}

static void test_flush_and_eviction(void)
{
    struct throttle t;
    uint32_t d;
    union net_addr a = ip("192.0.2.80");
    uint64_t na, nacc, nf;
    conf.max_entries = THR_STRIPES * 2; /* two records per stripe */
    setup(&t);
    for (int i = 0; i < 5; i++)
        attempt(&t, "cn=g", "192.0.2.80", i ? "x" : "y", false, 10 + i);
    thr_addr_failed(&t, &a, 10);
    thr_flush(&t);
    CHECK_INT(thr_addr_check(&t, &a, 20, &d), THR_PASS);
    CHECK_INT(attempt(&t, "cn=g", "192.0.2.81", "z", false, 20), THR_PASS);
    /* A flood of names is bounded, and familiar places are kept apart. */
    attempt(&t, "cn=h", "192.0.2.82", "right", true, 30);
    char name[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(name, sizeof name, "cn=spray%d", i);
        attempt(&t, name, "198.51.100.200", "x", false, 40);
    }
    thr_counts(&t, &na, &nacc, &nf);
    CHECK(nacc <= conf.max_entries);
    CHECK_INT(nf, 1);
    CHECK(atomic_load(&t.stats.evictions) > 0);
    thr_free(&t);
    conf.max_entries = 100000;
}

static void test_disabled(void)
{
    struct throttle t;
    uint32_t d;
    union net_addr a = ip("192.0.2.90");
    conf.enabled = false;
    setup(&t);
    for (int i = 0; i < 100; i++) {
        thr_addr_failed(&t, &a, 10);
        CHECK_INT(attempt(&t, "cn=i", "192.0.2.90", "x", false, 10), THR_PASS);
    }
    CHECK_INT(thr_addr_check(&t, &a, 10, &d), THR_PASS);
    thr_free(&t);
    conf.enabled = true;
}

static void test_cidr_parse(void)
{
    struct net_cidr n[4];
    char why[128];
    CHECK_INT(net_cidr_parse_list("127.0.0.1, ::1,10.0.0.0/8", n, 4, why, sizeof why), 3);
    CHECK_INT(n[0].bits, 32);
    CHECK_INT(n[1].bits, 128);
    CHECK_INT(net_cidr_parse_list("10.0.0.0/33", n, 4, why, sizeof why), -1);
    CHECK(strstr(why, "10.0.0.0/33") != NULL);
    CHECK_INT(net_cidr_parse_list("host.example", n, 4, why, sizeof why), -1);
    CHECK_INT(net_cidr_parse_list("1.2.3.4/", n, 4, why, sizeof why), -1);
    CHECK_INT(net_cidr_parse_list("1.1.1.1,2.2.2.2,3.3.3.3,4.4.4.4,5.5.5.5", n, 4, why, sizeof why),
              -1);
    CHECK_INT(net_cidr_parse_list("", n, 4, why, sizeof why), 0);
    CHECK_INT(net_cidr_parse_list("192.168.0.0/17", n, 4, why, sizeof why), 1);
    union net_addr in = ip("192.168.127.255"), out = ip("192.168.128.0");
    CHECK(net_cidr_match_any(n, 1, &in));
    CHECK(!net_cidr_match_any(n, 1, &out));
}

/* ---- threads ---- */

#define SPRAY_THREADS 4

static struct throttle spray_t;
static atomic_uint spray_binds;

static void *spray_main(void *arg)
{
    char from[32], pw[32];
    unsigned id = (unsigned)(uintptr_t)arg;
    for (unsigned i = 0; i < 20000; i++) {
        struct thr_ticket tk;
        snprintf(from, sizeof from, "198.18.%u.%u", id, i % 250);
        snprintf(pw, sizeof pw, "pw-%u-%u", id, i);
        union net_addr a = ip(from);
        if (thr_account_check(&spray_t, "cn=target", 9, &a, pw, strlen(pw), 1000, &tk) ==
            THR_PASS) {
            atomic_fetch_add(&spray_binds, 1);
            thr_account_done(&spray_t, &tk, THR_BIND_FAILED, 1000);
        }
    }
    return NULL;
}

static void test_threads(void)
{
    pthread_t th[SPRAY_THREADS];
    setup(&spray_t);
    for (uintptr_t i = 0; i < SPRAY_THREADS; i++)
        pthread_create(&th[i], NULL, spray_main, (void *)i);
    for (unsigned i = 0; i < SPRAY_THREADS; i++)
        pthread_join(th[i], NULL);
    /* 80,000 guesses from 1,000 addresses on 4 threads: exactly the
     * threshold's worth of binds. */
    CHECK_INT(atomic_load(&spray_binds), conf.acct_threshold);
    thr_free(&spray_t);
}

/* A mock fleet store: records what the throttle asks, answers as told. */
struct mock_fleet {
    bool answers;        /* false: as a Redis that is down */
    enum thr_reason why; /* its decision */
    bool familiar;
    unsigned checks, dones, failures, flushes;
    enum thr_outcome last;
    uint64_t account, place;
};

static bool mock_check(void *store, struct thr_ticket *tk, bool familiar, enum thr_reason *why)
{
    struct mock_fleet *m = store;
    m->checks++;
    m->account = tk->account;
    m->place = tk->place;
    tk->familiar = familiar || m->familiar;
    *why = m->why;
    return m->answers;
}

static void mock_done(void *store, const struct thr_ticket *tk, enum thr_outcome o)
{
    struct mock_fleet *m = store;
    (void)tk;
    m->dones++;
    m->last = o;
}

static void mock_failed(void *store, uint64_t key)
{
    (void)key;
    ((struct mock_fleet *)store)->failures++;
}

static void mock_flush(void *store)
{
    ((struct mock_fleet *)store)->flushes++;
}

static const struct thr_fleet_ops mock_ops = {mock_check, mock_done, mock_failed, mock_flush};

/* The fleet decides while it answers; this instance, alone, when it does
 * not; outcomes go to the fleet only for binds it reserved. */
static void test_fleet(void)
{
    struct throttle t;
    struct mock_fleet m = {.answers = true, .why = THR_PASS};
    union net_addr a = ip("192.0.2.77");
    conf.addr_threshold = 0;
    setup(&t);
    t.fleet = &m;
    t.fleet_ops = &mock_ops;
    /* Ten failures pass: the fleet says so, though this instance counts them. */
    for (int i = 0; i < 10; i++) {
        char pw[16];
        snprintf(pw, sizeof pw, "wrong%d", i);
        CHECK_INT(attempt(&t, "fleet", "192.0.2.78", pw, false, 100 + i), THR_PASS);
    }
    CHECK_INT(m.checks, 10);
    CHECK_INT(m.dones, 10);
    CHECK_INT(m.last, THR_BIND_FAILED);
    /* The fleet refuses: nothing to report back. */
    m.why = THR_ACCOUNT_LOCKED;
    CHECK_INT(attempt(&t, "fleet", "192.0.2.78", "again", false, 200), THR_ACCOUNT_LOCKED);
    CHECK_INT(m.dones, 10);
    /* Down: this instance's own count (10 failures) decides. */
    m.answers = false;
    m.why = THR_PASS;
    CHECK_INT(attempt(&t, "fleet", "192.0.2.78", "more", false, 300), THR_ACCOUNT_FAMILIAR);
    CHECK_INT(m.dones, 10);
    /* Address failures are handed on; flush asks the fleet too. */
    thr_addr_failed(&t, &a, 400);
    CHECK_INT(m.failures, 1);
    thr_flush(&t);
    CHECK_INT(m.flushes, 1);
    thr_flush_local(&t);
    CHECK_INT(m.flushes, 1);
    thr_free(&t);
}

/* ThrottleKeyFile: the same file gives the same keys (the fleet agrees on
 * every record), another file other keys; too short a file is refused. */
static void test_key_file(void)
{
    uint8_t k1[32], k2[32];
    struct throttle t1, t2, t3;
    struct mock_fleet m1 = {.answers = true}, m2 = {.answers = true}, m3 = {.answers = true};
    struct thr_conf c1 = conf, c2 = conf;
    memset(k1, 0x5a, sizeof k1);
    memset(k2, 0xa5, sizeof k2);
    c1.key = k1;
    c1.key_len = sizeof k1;
    c2.key = k2;
    c2.key_len = sizeof k2;
    CHECK_INT(thr_init(&t1, &c1), FG_OK);
    CHECK_INT(thr_init(&t2, &c1), FG_OK);
    CHECK_INT(thr_init(&t3, &c2), FG_OK);
    struct throttle *ts[3] = {&t1, &t2, &t3};
    struct mock_fleet *ms[3] = {&m1, &m2, &m3};
    for (int i = 0; i < 3; i++) {
        ts[i]->fleet = ms[i];
        ts[i]->fleet_ops = &mock_ops;
        attempt(ts[i], "Some.One", "198.51.100.4", "pw", true, 10);
    }
    CHECK(m1.account == m2.account && m1.place == m2.place);
    CHECK(m1.account != m3.account && m1.place != m3.place);
    for (int i = 0; i < 3; i++)
        thr_free(ts[i]);
    c1.key_len = THR_KEY_MIN - 1;
    CHECK_INT(thr_init(&t1, &c1), FG_ERROR);
}

int main(void)
{
    thr_conf_defaults(&conf);
    test_cidr_parse();
    test_addr_delay_and_ban();
    test_addr_cap_and_window();
    test_ipv6_prefix();
    test_exempt();
    test_smart_lockout();
    test_success_resets();
    test_repeat_password();
    test_inflight();
    test_flush_and_eviction();
    test_disabled();
    test_threads();
    test_fleet();
    test_key_file();
    return th_finish("test_throttle");
}

/*
 * The connection limits (core/limits.c): which addresses and names count as
 * one, exact limits, a release for every acquire, the overflow counter, and
 * threads acquiring and releasing at once, the count never past the limit.
 *
 *   test_limits [SECONDS]   the threaded run lasts SECONDS (default 1)
 */
#include "../../core/limits.h"
#include "harness.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

static union net_addr addr(const char *ip)
{
    union net_addr a;
    memset(&a, 0, sizeof a);
    if (inet_pton(AF_INET, ip, &a.v4.sin_addr) == 1) {
        a.v4.sin_family = AF_INET;
    } else if (inet_pton(AF_INET6, ip, &a.v6.sin6_addr) == 1) {
        a.v6.sin6_family = AF_INET6;
    } else {
        th_fail(__FILE__, __LINE__, "bad address in a test: %s", ip);
    }
    return a;
}

/* ---- which addresses count as one ---- */

static const struct {
    const char *a, *b;
    unsigned prefix; /* IPv6PrefixLength */
    bool same;
} ip_cases[] = {
        {"192.0.2.1", "192.0.2.1", 64, true},
        {"192.0.2.1", "192.0.2.2", 64, false},       /* IPv4: each address alone (/32) */
        {"192.0.2.1", "::ffff:192.0.2.1", 64, true}, /* IPv4-mapped IPv6 is IPv4 */
        {"::ffff:192.0.2.1", "::ffff:192.0.2.2", 64, false},
        {"127.0.0.1", "127.0.0.2", 64, false},
        {"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", 64, true}, /* one /64 */
        {"2001:db8:1:2::1", "2001:db8:1:3::1", 64, false},                 /* the next /64 */
        {"2001:db8:1:2::1", "2001:db8:1:3::1", 48, true},                  /* one /48 */
        {"2001:db8:1:2::1", "2001:db8:2:2::1", 48, false},
        {"2001:db8:1:2::1", "2001:db8:1:2::2", 128, false}, /* whole addresses */
        {"2001:db8:1:2::1", "2001:db8:1:2::1", 128, true},
        {"2001:db8:1:2::1", "2001:db8:1:2:8000::1", 65, false}, /* a prefix inside a byte */
        {"2001:db8:1:2::1", "2001:db8:1:2:7fff::1", 65, true},
        {"2001:db8:1:2::1", "2001:db8:1:2:0100::1", 63, true},
        {"2001:db9::1", "2001:db8::1", 32, false}, /* the shortest prefix */
        {"2001:db8:ffff::1", "2001:db8::1", 32, true},
        {"::1", "::1", 64, true},
        {"::1", "127.0.0.1", 64, false}, /* loopback v6 is not loopback v4 */
        {"::ffff:10.0.0.1", "2001:db8::1", 64, false},
};

static void test_which_addresses_count_as_one(void)
{
    for (size_t i = 0; i < FG_ARRAY_SIZE(ip_cases); i++) {
        struct limits l;
        struct limits_hold ha = {0}, hb = {0};
        union net_addr a = addr(ip_cases[i].a), b = addr(ip_cases[i].b);
        CHECK_INT(limits_init(&l, 100), FG_OK);
        limits_set_v6_prefix(&l, ip_cases[i].prefix);
        limits_set(&l, LIMITS_PER_IP, FG_PROTO_IMAP, 1);
        CHECK(limits_ip_acquire(&l, FG_PROTO_IMAP, &a, &ha));
        bool admitted = limits_ip_acquire(&l, FG_PROTO_IMAP, &b, &hb);
        CHECKF(admitted == !ip_cases[i].same, "%s and %s under /%u: %s", ip_cases[i].a,
               ip_cases[i].b, ip_cases[i].prefix,
               ip_cases[i].same ? "should count as one" : "should count apart");
        CHECK_INT(limits_ip_count(&l, FG_PROTO_IMAP, &b), ip_cases[i].same ? 1 : admitted);
        limits_release(&l, &ha);
        limits_release(&l, &hb);
        CHECK_INT(limits_ip_count(&l, FG_PROTO_IMAP, &a), 0);
        CHECK_INT(atomic_load(&l.held[LIMITS_PER_IP]), 0);
        limits_free(&l);
    }
}

/* The port is not the address; each protocol counts apart; something that
 * is not an IP address is not counted, and holds nothing. */
static void test_ports_protocols_and_no_address(void)
{
    struct limits l;
    struct limits_hold h[4] = {{0}};
    CHECK_INT(limits_init(&l, 100), FG_OK);
    limits_set(&l, LIMITS_PER_IP, FG_PROTO_IMAP, 1);
    limits_set(&l, LIMITS_PER_IP, FG_PROTO_POP3, 1);
    union net_addr a = addr("198.51.100.7"), b = a;
    a.v4.sin_port = htons(40000);
    b.v4.sin_port = htons(40001);
    CHECK(limits_ip_acquire(&l, FG_PROTO_IMAP, &a, &h[0]));
    CHECK(!limits_ip_acquire(&l, FG_PROTO_IMAP, &b, &h[1]));
    CHECK(!h[1].held);
    CHECK(limits_ip_acquire(&l, FG_PROTO_POP3, &b, &h[2]));
    union net_addr none;
    memset(&none, 0, sizeof none);
    CHECK(limits_ip_acquire(&l, FG_PROTO_IMAP, &none, &h[3]));
    CHECK(!h[3].held);
    CHECK_INT(atomic_load(&l.held[LIMITS_PER_IP]), 2);
    for (int i = 0; i < 4; i++)
        limits_release(&l, &h[i]);
    CHECK_INT(atomic_load(&l.held[LIMITS_PER_IP]), 0);
    limits_free(&l);
}

/* ---- exact limits, balance, run-time changes ---- */

static void test_limit_is_exact_and_release_frees_one(void)
{
    struct limits l;
    struct limits_hold h[6] = {{0}};
    union net_addr a = addr("203.0.113.9");
    CHECK_INT(limits_init(&l, 100), FG_OK);
    limits_set(&l, LIMITS_PER_IP, FG_PROTO_POP3, 5);
    for (int i = 0; i < 5; i++)
        CHECK(limits_ip_acquire(&l, FG_PROTO_POP3, &a, &h[i]));
    CHECK(!limits_ip_acquire(&l, FG_PROTO_POP3, &a, &h[5]));
    CHECK_INT(limits_ip_count(&l, FG_PROTO_POP3, &a), 5);
    limits_release(&l, &h[2]);
    limits_release(&l, &h[2]); /* a second release does nothing */
    CHECK_INT(limits_ip_count(&l, FG_PROTO_POP3, &a), 4);
    CHECK(limits_ip_acquire(&l, FG_PROTO_POP3, &a, &h[5]));
    CHECK(!limits_ip_acquire(&l, FG_PROTO_POP3, &a, &h[2]));
    /* A hold that holds is not counted twice. */
    CHECK(limits_ip_acquire(&l, FG_PROTO_POP3, &a, &h[5]));
    CHECK_INT(limits_ip_count(&l, FG_PROTO_POP3, &a), 5);
    for (int i = 0; i < 6; i++)
        limits_release(&l, &h[i]);
    CHECK_INT(limits_ip_count(&l, FG_PROTO_POP3, &a), 0);
    limits_free(&l);
}

/* A lower limit refuses from then on and closes nothing; a changed prefix
 * makes new keys, and leaves the old holds releasing what they counted. */
static void test_limits_change_at_run_time(void)
{
    struct limits l;
    struct limits_hold h[4] = {{0}};
    union net_addr a = addr("2001:db8:aa:1::1"), b = addr("2001:db8:aa:1::2");
    CHECK_INT(limits_init(&l, 100), FG_OK);
    CHECK_INT(limits_get(&l, LIMITS_PER_IP, FG_PROTO_IMAP), LIMITS_NONE);
    CHECK(limits_ip_acquire(&l, FG_PROTO_IMAP, &a, &h[0]));
    CHECK(limits_ip_acquire(&l, FG_PROTO_IMAP, &b, &h[1]));
    limits_set(&l, LIMITS_PER_IP, FG_PROTO_IMAP, 1);
    CHECK(!limits_ip_acquire(&l, FG_PROTO_IMAP, &a, &h[2]));
    /* Whole addresses from now on: b is a key of its own, with a count of
     * its own; the two earlier connections stay on their /64 until they end. */
    limits_set_v6_prefix(&l, 128);
    CHECK(limits_ip_acquire(&l, FG_PROTO_IMAP, &b, &h[2]));
    CHECK(!limits_ip_acquire(&l, FG_PROTO_IMAP, &b, &h[3]));
    limits_release(&l, &h[0]);
    limits_release(&l, &h[1]);
    CHECK_INT(atomic_load(&l.held[LIMITS_PER_IP]), 1);
    CHECK(limits_ip_acquire(&l, FG_PROTO_IMAP, &a, &h[3]));
    limits_release(&l, &h[2]);
    limits_release(&l, &h[3]);
    CHECK_INT(atomic_load(&l.held[LIMITS_PER_IP]), 0);
    /* Out-of-range values are clamped. */
    limits_set(&l, LIMITS_PER_IP, FG_PROTO_IMAP, 0);
    CHECK_INT(limits_get(&l, LIMITS_PER_IP, FG_PROTO_IMAP), 1);
    limits_set_v6_prefix(&l, 8);
    CHECK_INT(atomic_load(&l.v6_prefix), 32);
    limits_free(&l);
}

static void test_max_connections_per_protocol(void)
{
    struct limits l;
    CHECK_INT(limits_init(&l, 10), FG_OK);
    limits_set(&l, LIMITS_CONNS, FG_PROTO_IMAP, 2);
    CHECK(limits_conn_acquire(&l, FG_PROTO_IMAP));
    CHECK(limits_conn_acquire(&l, FG_PROTO_IMAP));
    CHECK(!limits_conn_acquire(&l, FG_PROTO_IMAP));
    CHECK(limits_conn_acquire(&l, FG_PROTO_POP3)); /* POP3 has none */
    limits_conn_release(&l, FG_PROTO_IMAP);
    CHECK(limits_conn_acquire(&l, FG_PROTO_IMAP));
    CHECK_INT(atomic_load(&l.conns[FG_PROTO_IMAP]), 2);
    limits_free(&l);
}

/* ---- mailboxes ---- */

static void test_mailbox_names_any_case(void)
{
    struct limits l;
    struct limits_hold h[5] = {{0}};
    CHECK_INT(limits_init(&l, 100), FG_OK);
    limits_set(&l, LIMITS_PER_USER, FG_PROTO_IMAP, 2);
    CHECK(!limits_user_full(&l, FG_PROTO_IMAP, "TestAlias", 9));
    CHECK(limits_user_acquire(&l, FG_PROTO_IMAP, "testalias", 9, &h[0]));
    CHECK(limits_user_acquire(&l, FG_PROTO_IMAP, "TESTALIAS", 9, &h[1]));
    CHECK(limits_user_full(&l, FG_PROTO_IMAP, "TestAlias", 9));
    CHECK(!limits_user_acquire(&l, FG_PROTO_IMAP, "TestAlias", 9, &h[2]));
    CHECK(limits_user_acquire(&l, FG_PROTO_IMAP, "testalias2", 10, &h[2])); /* another */
    CHECK(limits_user_acquire(&l, FG_PROTO_POP3, "testalias", 9, &h[3]));   /* POP3 apart */
    /* An address and a mailbox with the same bytes are different keys. */
    CHECK_INT(limits_user_count(&l, FG_PROTO_IMAP, "testalias", 9), 2);
    limits_release(&l, &h[0]);
    CHECK_INT(limits_user_count(&l, FG_PROTO_IMAP, "TESTALIAS", 9), 1);
    CHECK(limits_user_acquire(&l, FG_PROTO_IMAP, "testAlias", 9, &h[4]));
    for (int i = 0; i < 5; i++)
        limits_release(&l, &h[i]);
    CHECK_INT(atomic_load(&l.held[LIMITS_PER_USER]), 0);
    limits_free(&l);
}

/* ---- a full window: the stripe's overflow counter ---- */

static uint32_t overflow_sum(const struct limits *l)
{
    uint32_t n = 0;
    for (unsigned i = 0; i < LIMITS_STRIPES; i++)
        n += l->stripes[i].overflow[LIMITS_PER_USER][FG_PROTO_IMAP];
    return n;
}

/*
 * Far more keys than the table has entries: once a stripe's entries are
 * taken, its keys share its overflow counter. Over-counting, never under:
 * the overflow counter stops at the limit, every key of a stripe sees it,
 * every release balances, and once all are released keys get entries of
 * their own again.
 */
static void test_overflow_over_counts_never_under(void)
{
    enum { KEYS = 40000, LIMIT = 5 };
    struct limits l;
    static struct limits_hold h[KEYS];
    CHECK_INT(limits_init(&l, 1), FG_OK); /* the smallest table: a window per stripe */
    uint32_t entries = LIMITS_STRIPES * l.stripe_size;
    CHECK_INT(l.stripe_size, LIMITS_WINDOW);
    limits_set(&l, LIMITS_PER_USER, FG_PROTO_IMAP, LIMIT);
    uint32_t admitted = 0;
    for (unsigned i = 0; i < KEYS; i++) {
        char name[32];
        int n = snprintf(name, sizeof name, "user%u", i);
        memset(&h[i], 0, sizeof h[i]);
        admitted += limits_user_acquire(&l, FG_PROTO_IMAP, name, (size_t)n, &h[i]);
    }
    /* Every stripe full, and its overflow counter at the limit. */
    CHECK_INT(overflow_sum(&l), LIMITS_STRIPES * LIMIT);
    CHECK_INT(atomic_load(&l.overflowed), LIMITS_STRIPES * LIMIT);
    CHECK_INT(admitted, entries + LIMITS_STRIPES * LIMIT);
    CHECK_INT(atomic_load(&l.held[LIMITS_PER_USER]), admitted);
    /* A key with an entry of its own is counted with its stripe's overflow. */
    CHECK(h[0].held && h[0].entry != LIMITS_OVERFLOW);
    CHECK(limits_user_full(&l, FG_PROTO_IMAP, "user0", 5));
    CHECK_INT(limits_user_count(&l, FG_PROTO_IMAP, "user0", 5), 1 + LIMIT);
    for (unsigned i = 0; i < KEYS; i++)
        limits_release(&l, &h[i]);
    CHECK_INT(overflow_sum(&l), 0);
    CHECK_INT(atomic_load(&l.held[LIMITS_PER_USER]), 0);
    CHECK_INT(limits_user_count(&l, FG_PROTO_IMAP, "user1", 5), 0);
    struct limits_hold one = {0};
    CHECK(limits_user_acquire(&l, FG_PROTO_IMAP, "user1", 5, &one));
    CHECK(one.entry != LIMITS_OVERFLOW);
    limits_release(&l, &one);
    limits_free(&l);
}

/* The table grows with the slots, four entries each. */
static void test_table_size(void)
{
    struct limits l;
    CHECK_INT(limits_init(&l, 100000), FG_OK);
    CHECK_INT((uint64_t)LIMITS_STRIPES * l.stripe_size, 1u << 19);
    limits_free(&l);
}

/* ---- threads ---- */

#define STRESS_THREADS 4
#define STRESS_LIMIT   7
#define STRESS_HOLDS   5 /* per thread: 4 x 5 = 20 want in, 7 may */

struct stress {
    struct limits *l;
    unsigned seconds;
    unsigned id;
    _Atomic uint32_t *in; /* holds of the shared address and mailbox, counted by the test */
    _Atomic uint32_t *in_user;
    _Atomic uint32_t *peak;
    _Atomic uint32_t *peak_user;
    uint64_t rounds, refused;
};

static void stress_peak(_Atomic uint32_t *in, _Atomic uint32_t *peak)
{
    uint32_t now = atomic_fetch_add(in, 1) + 1, p = atomic_load(peak);
    while (now > p && !atomic_compare_exchange_weak(peak, &p, now))
        ;
}

/* Each thread holds up to STRESS_HOLDS of one address and one mailbox, and
 * takes and gives them back at random, with a churn of other keys that
 * share stripes and entries with them. */
static void *stress_run(void *arg)
{
    struct stress *st = arg;
    struct limits_hold ip[STRESS_HOLDS] = {{0}}, user[STRESS_HOLDS] = {{0}}, other = {0};
    union net_addr a = addr("2001:db8:77::1");
    unsigned seed = st->id * 7919u + 1;
    time_t end = time(NULL) + (time_t)st->seconds;

    while (time(NULL) < end) {
        for (int k = 0; k < 1000; k++, st->rounds++) {
            unsigned r = (unsigned)rand_r(&seed), i = r % STRESS_HOLDS;
            a.v6.sin6_addr.s6_addr[15] = (uint8_t)r; /* one /64: the same client */
            if (ip[i].held) {
                atomic_fetch_sub(st->in, 1); /* before the release: never seen past it */
                limits_release(st->l, &ip[i]);
            } else if (limits_ip_acquire(st->l, FG_PROTO_IMAP, &a, &ip[i])) {
                stress_peak(st->in, st->peak);
            } else {
                st->refused++;
            }
            if (user[i].held) {
                atomic_fetch_sub(st->in_user, 1);
                limits_release(st->l, &user[i]);
            } else if (limits_user_acquire(st->l, FG_PROTO_IMAP, r & 1 ? "Shared" : "sHARED", 6,
                                           &user[i])) {
                stress_peak(st->in_user, st->peak_user);
            }
            char name[16];
            int n = snprintf(name, sizeof name, "u%u", r % 5000);
            limits_user_acquire(st->l, FG_PROTO_IMAP, name, (size_t)n, &other);
            limits_release(st->l, &other);
        }
    }
    for (int i = 0; i < STRESS_HOLDS; i++) {
        if (ip[i].held)
            atomic_fetch_sub(st->in, 1);
        if (user[i].held)
            atomic_fetch_sub(st->in_user, 1);
        limits_release(st->l, &ip[i]);
        limits_release(st->l, &user[i]);
    }
    return NULL;
}

static void test_threads_never_pass_the_limit(unsigned seconds)
{
    struct limits l;
    pthread_t th[STRESS_THREADS];
    struct stress st[STRESS_THREADS];
    _Atomic uint32_t in = 0, in_user = 0, peak = 0, peak_user = 0;
    uint64_t rounds = 0, refused = 0;

    CHECK_INT(limits_init(&l, 64), FG_OK);
    limits_set(&l, LIMITS_PER_IP, FG_PROTO_IMAP, STRESS_LIMIT);
    limits_set(&l, LIMITS_PER_USER, FG_PROTO_IMAP, STRESS_LIMIT);
    for (unsigned i = 0; i < STRESS_THREADS; i++) {
        st[i] = (struct stress){&l, seconds, i, &in, &in_user, &peak, &peak_user, 0, 0};
        pthread_create(&th[i], NULL, stress_run, &st[i]);
    }
    for (unsigned i = 0; i < STRESS_THREADS; i++) {
        pthread_join(th[i], NULL);
        rounds += st[i].rounds;
        refused += st[i].refused;
    }
    union net_addr a = addr("2001:db8:77::1");
    CHECKF(atomic_load(&peak) <= STRESS_LIMIT, "address: %u held at once, limit %d",
           atomic_load(&peak), STRESS_LIMIT);
    CHECKF(atomic_load(&peak_user) <= STRESS_LIMIT, "mailbox: %u held at once, limit %d",
           atomic_load(&peak_user), STRESS_LIMIT);
    CHECK(atomic_load(&peak) == STRESS_LIMIT && refused > 0); /* the limit was reached */
    CHECK_INT(limits_ip_count(&l, FG_PROTO_IMAP, &a), 0);
    CHECK_INT(limits_user_count(&l, FG_PROTO_IMAP, "shared", 6), 0);
    CHECK_INT(atomic_load(&l.held[LIMITS_PER_IP]), 0);
    CHECK_INT(atomic_load(&l.held[LIMITS_PER_USER]), 0);
    printf("test_limits: %u threads, %llu rounds in %u s, %llu refusals at the limit\n",
           STRESS_THREADS, (unsigned long long)rounds, seconds, (unsigned long long)refused);
    limits_free(&l);
}

int main(int argc, char **argv)
{
    unsigned seconds = argc > 1 ? (unsigned)atoi(argv[1]) : 1;
    test_which_addresses_count_as_one();
    test_ports_protocols_and_no_address();
    test_limit_is_exact_and_release_frees_one();
    test_limits_change_at_run_time();
    test_max_connections_per_protocol();
    test_mailbox_names_any_case();
    test_overflow_over_counts_never_under();
    test_table_size();
    test_threads_never_pass_the_limit(seconds ? seconds : 1);
    return th_finish("test_limits");
}

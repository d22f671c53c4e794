/*
 * The route cache (directory/route_cache.h): what goes in comes out, expiry,
 * negative entries, eviction of the oldest, the credential part, forget and
 * flush; then a stress run -- readers, inserters, replacers, forgetters and
 * a flusher on several threads for a few seconds -- in which every copy a
 * reader takes must be of one consistent entry. Run under ThreadSanitizer
 * too (scripts/test.sh), where liburcu's ordering is annotated.
 *
 *   test_route_cache [SECONDS]     (the stress run's length; default 2)
 */
#include "../../directory/resolve.h"
#include "../../directory/route_cache.h"
#include "harness.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct backend_policy policy = {.port = {143, 110}};

static size_t key_of(const char *name, char *k)
{
    return route_key(name, strlen(name), k);
}

static void target_of(struct backend_target *t, const char *host, const char *ip)
{
    memset(t, 0, sizeof *t);
    t->policy = &policy;
    t->nhosts = 1;
    t->naddrs = 1;
    snprintf(t->hosts[0], sizeof t->hosts[0], "%s", host);
    t->addrs[0].v4.sin_family = AF_INET;
    inet_pton(AF_INET, ip, &t->addrs[0].v4.sin_addr);
}

static void test_round_trip(void)
{
    struct route_cache rc;
    struct rc_snap s;
    struct backend_target own, t, shared;
    char k[ROUTE_KEY_MAX];
    CHECK_INT(rc_init(&rc, 100, 0), FG_OK);
    uint64_t now = 1000000;
    size_t n = key_of("UCLABOR\\tuser", k);
    uint64_t h = rc_hash(&rc, k, n);
    target_of(&t, "mbx1.uclabor.de", "127.0.0.1");
    struct rc_value v = {.kind = RC_ROUTE,
                         .forest = 1,
                         .proto_disabled = 2,
                         .admin = true,
                         .account = "CN=Test User,DC=uclabor,DC=de",
                         .login = "testalias",
                         .database = "DB01",
                         .target = &t,
                         .ttl_ms = 5000};
    CHECK_INT(rc_lookup(&rc, k, n, h, now, &s, &own), RC_MISS);
    rc_put(&rc, k, n, h, &v, now);
    memset(&t, 0, sizeof t); /* copied, not kept by pointer */
    CHECK_INT(rc_lookup(&rc, k, n, h, now + 1, &s, &own), RC_HIT);
    CHECK(strcmp(s.account, "CN=Test User,DC=uclabor,DC=de") == 0);
    CHECK(strcmp(s.login, "testalias") == 0 && strcmp(s.database, "DB01") == 0);
    CHECK(s.kind == RC_ROUTE && s.forest == 1 && s.proto_disabled == 2 && s.admin);
    CHECK(!s.has_cred && s.target == &own && own.naddrs == 1 && own.policy == &policy);
    CHECK(strcmp(own.hosts[0], "mbx1.uclabor.de") == 0);
    CHECK(own.addrs[0].v4.sin_addr.s_addr == htonl(0x7f000001));
    /* Another spelling is the same key. */
    char k2[ROUTE_KEY_MAX];
    size_t n2 = key_of("uclabor/TUSER", k2);
    CHECK_INT(rc_lookup(&rc, k2, n2, rc_hash(&rc, k2, n2), now + 1, &s, &own), RC_HIT);
    /* Past the TTL: stale, kept only for serve-stale. */
    CHECK_INT(rc_lookup(&rc, k, n, h, now + 5000, &s, &own), RC_STALE);
    /* A configuration target is kept by pointer. */
    target_of(&shared, "db02", "127.0.0.2");
    v.target = &shared;
    v.target_shared = true;
    rc_put(&rc, k, n, h, &v, now);
    CHECK_INT(atomic_load(&rc.entries), 1);
    CHECK_INT(rc_lookup(&rc, k, n, h, now + 1, &s, &own), RC_HIT);
    CHECK(s.target == &shared);
    /* Negative: no route, and gone at its TTL. */
    char kn[ROUTE_KEY_MAX];
    size_t nn = key_of("nosuch", kn);
    uint64_t hn = rc_hash(&rc, kn, nn);
    struct rc_value neg = {.kind = RC_NEGATIVE, .why = RW_NOT_FOUND, .ttl_ms = 1000};
    rc_put(&rc, kn, nn, hn, &neg, now);
    CHECK_INT(rc_lookup(&rc, kn, nn, hn, now + 999, &s, &own), RC_HIT);
    CHECK(s.kind == RC_NEGATIVE && s.why == RW_NOT_FOUND && s.target == NULL);
    CHECK_INT(rc_lookup(&rc, kn, nn, hn, now + 1000, &s, &own), RC_MISS);
    CHECK_INT(rc_forget(&rc, kn, nn, hn), 1);
    CHECK_INT(rc_forget(&rc, kn, nn, hn), 0);
    CHECK_INT(rc_flush(&rc), 1);
    CHECK_INT(rc_lookup(&rc, k, n, h, now, &s, &own), RC_MISS);
    rc_destroy(&rc);
}

static void test_credentials(void)
{
    struct route_cache rc;
    struct rc_snap s;
    struct backend_target own, t;
    uint8_t good[RC_CRED_LEN], bad[RC_CRED_LEN], again[RC_CRED_LEN], other[RC_CRED_LEN];
    char k[ROUTE_KEY_MAX], k2[ROUTE_KEY_MAX];
    CHECK_INT(rc_init(&rc, 100, 0), FG_OK);
    uint64_t now = 5000;
    size_t n = key_of("tuser", k), n2 = key_of("other", k2);
    uint64_t h = rc_hash(&rc, k, n);
    rc_cred_hash(&rc, k, n, "Secret-1", 8, good);
    rc_cred_hash(&rc, k, n, "Secret-1", 8, again);
    rc_cred_hash(&rc, k, n, "Secret-2", 8, bad);
    rc_cred_hash(&rc, k2, n2, "Secret-1", 8, other);
    CHECK(memcmp(good, again, RC_CRED_LEN) == 0);
    CHECK(memcmp(good, bad, RC_CRED_LEN) != 0);
    CHECK(memcmp(good, other, RC_CRED_LEN) != 0); /* salted with the name */
    target_of(&t, "h", "127.0.0.1");
    struct rc_value v = {.kind = RC_ROUTE,
                         .account = "CN=a",
                         .login = "a",
                         .target = &t,
                         .ttl_ms = 10000,
                         .cred = good,
                         .cred_ttl_ms = 2000};
    rc_put(&rc, k, n, h, &v, now);
    CHECK(rc_cred_match(&rc, k, n, h, good, now + 1, false));
    CHECK(!rc_cred_match(&rc, k, n, h, bad, now + 1, false));
    CHECK(!rc_cred_match(&rc, k, n, h, good, now + 2000, false)); /* its own TTL */
    CHECK(rc_cred_match(&rc, k, n, h, good, now + 2000, true));   /* serve-stale */
    /* A new password replaces the hash; the route keeps its expiry. */
    rc_cred_set(&rc, k, n, h, bad, 2000, now + 100);
    CHECK(rc_cred_match(&rc, k, n, h, bad, now + 101, false));
    CHECK(!rc_cred_match(&rc, k, n, h, good, now + 101, false));
    CHECK_INT(rc_lookup(&rc, k, n, h, now + 101, &s, &own), RC_HIT);
    CHECK(s.has_cred && s.expires_ms == now + 10000 && strcmp(s.account, "CN=a") == 0);
    /* A failed bind drops it. */
    rc_cred_set(&rc, k, n, h, NULL, 0, now + 200);
    CHECK(!rc_cred_match(&rc, k, n, h, bad, now + 201, true));
    CHECK_INT(rc_lookup(&rc, k, n, h, now + 201, &s, &own), RC_HIT);
    CHECK(!s.has_cred);
    CHECK_INT(atomic_load(&rc.entries), 1);
    /* show cache: names and routes, never the hash. */
    rc_cred_set(&rc, k, n, h, good, 2000, now);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    struct dir_topology topo = {.nforests = 1, .forests = {{.name = "uclabor"}}};
    rc_show(&rc, &topo, "", now, f);
    fclose(f);
    CHECKF(th_contains(text, len, "name=tuser form=user kind=route account=\"CN=a\""), "%s", text);
    CHECK(th_contains(text, len, "credential=yes") && th_contains(text, len, "1 entry"));
    for (size_t i = 0; i + 4 <= RC_CRED_LEN; i++) {
        char hex[9];
        snprintf(hex, sizeof hex, "%02x%02x%02x%02x", good[i], good[i + 1], good[i + 2],
                 good[i + 3]);
        CHECK(!th_contains(text, len, hex) && memmem(text, len, good + i, 4) == NULL);
    }
    free(text);
    rc_destroy(&rc);
}

/* Past the bound, the oldest goes first; a replaced entry counts once. */
static void test_eviction(void)
{
    struct route_cache rc;
    struct rc_snap s;
    struct backend_target own, t;
    char k[ROUTE_KEY_MAX];
    CHECK_INT(rc_init(&rc, 3, 0), FG_OK);
    target_of(&t, "h", "127.0.0.1");
    struct rc_value v = {
            .kind = RC_ROUTE, .account = "CN=a", .login = "a", .target = &t, .ttl_ms = 100000};
    for (int i = 0; i < 5; i++) {
        char name[16];
        snprintf(name, sizeof name, "user%d", i);
        size_t n = key_of(name, k);
        rc_put(&rc, k, n, rc_hash(&rc, k, n), &v, 1000 + (uint64_t)i);
        if (i == 2) /* user0 again: now the youngest, and still one entry */
            rc_put(&rc, k, key_of("user0", k), rc_hash(&rc, k, key_of("user0", k)), &v, 1003);
    }
    CHECK_INT(atomic_load(&rc.entries), 3);
    CHECK_INT(atomic_load(&rc.stats.evictions), 2);
    static const char *const kept[] = {"user0", "user3", "user4"};
    static const char *const gone[] = {"user1", "user2"};
    for (int i = 0; i < 3; i++) {
        size_t n = key_of(kept[i], k);
        CHECKF(rc_lookup(&rc, k, n, rc_hash(&rc, k, n), 1010, &s, &own) == RC_HIT, "%s", kept[i]);
    }
    for (int i = 0; i < 2; i++) {
        size_t n = key_of(gone[i], k);
        CHECKF(rc_lookup(&rc, k, n, rc_hash(&rc, k, n), 1010, &s, &own) == RC_MISS, "%s", gone[i]);
    }
    rc_destroy(&rc);
}

/* ---- the stress run ---- */

#define ST_KEYS 400

struct stress {
    struct route_cache rc;
    atomic_bool stop;
    _Atomic uint64_t lookups, hits, torn, puts;
    struct backend_target target;
    char keys[ST_KEYS][ROUTE_KEY_MAX];
    size_t lens[ST_KEYS];
    uint64_t hashes[ST_KEYS];
};

static struct stress st;

static unsigned st_rand(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return *seed >> 8;
}

/* Every field of an entry names its key and version: a copy that mixes two
 * entries shows. */
static void *st_reader(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    struct rc_snap s;
    struct backend_target own;
    rc_thread_register();
    while (!atomic_load_explicit(&st.stop, memory_order_relaxed)) {
        unsigned i = st_rand(&seed) % ST_KEYS;
        enum rc_found f =
                rc_lookup(&st.rc, st.keys[i], st.lens[i], st.hashes[i], now_ms(), &s, &own);
        atomic_fetch_add_explicit(&st.lookups, 1, memory_order_relaxed);
        if (f == RC_MISS || s.kind != RC_ROUTE)
            continue;
        atomic_fetch_add_explicit(&st.hits, 1, memory_order_relaxed);
        char want[DIR_DN_MAX];
        unsigned ver = (unsigned)strtoul(s.login + strcspn(s.login, ":") + 1, NULL, 10);
        snprintf(want, sizeof want, "CN=%.*s,v=%u", (int)st.lens[i] - 1, st.keys[i] + 1, ver);
        if (strcmp(s.account, want) != 0 || s.forest != ver % 7 || own.naddrs != 1 ||
            strcmp(own.hosts[0], "mbx.example") != 0)
            atomic_fetch_add_explicit(&st.torn, 1, memory_order_relaxed);
    }
    rc_thread_unregister();
    return NULL;
}

static void *st_writer(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg, ver = 0;
    uint8_t cred[RC_CRED_LEN] = {1, 2, 3};
    rc_thread_register();
    while (!atomic_load_explicit(&st.stop, memory_order_relaxed)) {
        unsigned i = st_rand(&seed) % ST_KEYS, op = st_rand(&seed) % 100;
        char account[DIR_DN_MAX], login[64];
        ver++;
        snprintf(account, sizeof account, "CN=%.*s,v=%u", (int)st.lens[i] - 1, st.keys[i] + 1, ver);
        snprintf(login, sizeof login, "%.*s:%u", 20, st.keys[i] + 1, ver);
        struct rc_value v = {.kind = op < 10 ? RC_NEGATIVE : RC_ROUTE,
                             .forest = (uint8_t)(ver % 7),
                             .account = account,
                             .login = login,
                             .database = "DB01",
                             .target = &st.target,
                             .ttl_ms = 1 + op % 20,
                             .cred_ttl_ms = 5};
        if (op < 70) {
            rc_put(&st.rc, st.keys[i], st.lens[i], st.hashes[i], &v, now_ms());
            atomic_fetch_add_explicit(&st.puts, 1, memory_order_relaxed);
        } else if (op < 85) {
            rc_cred_set(&st.rc, st.keys[i], st.lens[i], st.hashes[i], op & 1 ? cred : NULL, 5,
                        now_ms());
        } else if (op < 99) {
            rc_forget(&st.rc, st.keys[i], st.lens[i], st.hashes[i]);
        } else if (st_rand(&seed) % 50 == 0) {
            rc_flush(&st.rc);
        }
    }
    rc_thread_unregister();
    return NULL;
}

static void test_stress(unsigned seconds)
{
    pthread_t th[6];
    CHECK_INT(rc_init(&st.rc, 300, 3), FG_OK);
    target_of(&st.target, "mbx.example", "127.0.0.9");
    for (unsigned i = 0; i < ST_KEYS; i++) {
        char name[32];
        snprintf(name, sizeof name, i % 2 ? "USER%u" : "DOM\\user%u", i);
        st.lens[i] = key_of(name, st.keys[i]);
        st.hashes[i] = rc_hash(&st.rc, st.keys[i], st.lens[i]);
    }
    for (unsigned i = 0; i < 6; i++)
        pthread_create(&th[i], NULL, i < 4 ? st_reader : st_writer, (void *)(uintptr_t)(i + 1));
    sleep(seconds);
    atomic_store(&st.stop, true);
    for (unsigned i = 0; i < 6; i++)
        pthread_join(th[i], NULL);
    printf("stress: %llu lookups (%llu hits), %llu inserts, %u entries at the end, %llu evicted\n",
           (unsigned long long)st.lookups, (unsigned long long)st.hits, (unsigned long long)st.puts,
           atomic_load(&st.rc.entries), (unsigned long long)atomic_load(&st.rc.stats.evictions));
    CHECK_INT(atomic_load(&st.torn), 0);
    CHECK(st.hits > 0 && st.puts > 0);
    CHECK(atomic_load(&st.rc.entries) <= 300);
    /* The count matches the table. */
    unsigned left = rc_flush(&st.rc);
    CHECK_INT(atomic_load(&st.rc.entries), 0);
    CHECK(left <= 300);
    rc_destroy(&st.rc);
}

int main(int argc, char **argv)
{
    unsigned seconds = argc > 1 ? (unsigned)atoi(argv[1]) : 2;
    rc_thread_register();
    printf("bytes per entry: %zu + the strings (key, account DN, login, database) + "
           "%zu per backend address the directory named\n",
           route_cache_entry_size(0), sizeof(union net_addr));
    test_round_trip();
    test_credentials();
    test_eviction();
    test_stress(seconds ? seconds : 1);
    rc_thread_unregister();
    return th_finish("test_route_cache");
}

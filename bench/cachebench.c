/*
 * forestgate-cachebench: what one route cache lookup costs a worker.
 *
 * R reader threads (the workers) look up random names among N cached ones,
 * each with the copy a logon takes (rc_lookup), while one writer thread (a
 * directory thread) replaces entries as fast as it can, or at a set rate.
 * Prints ns per lookup per reader, and the writer's rate, for R = 1 and 2.
 *
 *   forestgate-cachebench [--entries N] [--seconds S] [--write-rate PER_S]
 *
 * On a machine with two cores, two readers and a writer share them: the
 * figure then includes the scheduler's share, which the README says.
 */
#include "../directory/route_cache.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct cb {
    struct route_cache rc;
    unsigned n;
    char (*keys)[ROUTE_KEY_MAX];
    size_t *lens;
    uint64_t *hashes;
    struct backend_target target;
    struct backend_policy policy;
    _Atomic int stop;
    unsigned write_rate;
};

/* Resident bytes of the process (for the bytes each entry really costs:
 * the allocation's size class and the table's buckets included). */
static long cb_rss(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * sysconf(_SC_PAGESIZE);
}

static uint64_t cb_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct cb_reader {
    struct cb *cb;
    unsigned seed;
    uint64_t lookups, ns, cpu_ns;
};

static uint64_t cb_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *cb_read(void *arg)
{
    struct cb_reader *r = arg;
    struct cb *cb = r->cb;
    struct rc_snap s;
    struct backend_target own;
    rc_thread_register();
    uint64_t t0 = cb_ns(), c0 = cb_cpu_ns();
    while (!atomic_load_explicit(&cb->stop, memory_order_relaxed)) {
        for (int k = 0; k < 256; k++) {
            r->seed = r->seed * 1103515245u + 12345u;
            unsigned i = (r->seed >> 8) % cb->n;
            rc_lookup(&cb->rc, cb->keys[i], cb->lens[i], cb->hashes[i], 1, &s, &own);
        }
        r->lookups += 256;
    }
    r->ns = cb_ns() - t0;
    r->cpu_ns = cb_cpu_ns() - c0;
    rc_thread_unregister();
    return NULL;
}

static uint64_t cb_writes;

static void cb_put(struct cb *cb, unsigned i, unsigned ver)
{
    char account[128];
    snprintf(account, sizeof account, "CN=User %u,OU=Staff,DC=example,DC=com;v=%u", i, ver);
    struct rc_value v = {.kind = RC_ROUTE,
                         .account = account,
                         .login = cb->keys[i] + 1,
                         .database = "DB01",
                         .target = &cb->target,
                         .ttl_ms = 300000};
    rc_put(&cb->rc, cb->keys[i], cb->lens[i], cb->hashes[i], &v, 1);
}

static void *cb_write(void *arg)
{
    struct cb *cb = arg;
    unsigned seed = 7, ver = 0;
    uint64_t t0 = cb_ns();
    rc_thread_register();
    while (!atomic_load_explicit(&cb->stop, memory_order_relaxed)) {
        seed = seed * 1103515245u + 12345u;
        cb_put(cb, (seed >> 8) % cb->n, ++ver);
        cb_writes++;
        if (cb->write_rate) {
            uint64_t due = t0 + cb_writes * 1000000000ull / cb->write_rate, now = cb_ns();
            if (due > now)
                usleep((useconds_t)((due - now) / 1000));
        }
    }
    rc_thread_unregister();
    return NULL;
}

static void cb_run(struct cb *cb, unsigned readers, unsigned seconds)
{
    pthread_t th[8], wt;
    struct cb_reader r[8];
    cb_writes = 0;
    atomic_store(&cb->stop, 0);
    pthread_create(&wt, NULL, cb_write, cb);
    for (unsigned i = 0; i < readers; i++) {
        r[i] = (struct cb_reader){.cb = cb, .seed = i + 1};
        pthread_create(&th[i], NULL, cb_read, &r[i]);
    }
    sleep(seconds);
    atomic_store(&cb->stop, 1);
    for (unsigned i = 0; i < readers; i++)
        pthread_join(th[i], NULL);
    pthread_join(wt, NULL);
    uint64_t lookups = 0;
    double worst = 0, cpu = 0;
    for (unsigned i = 0; i < readers; i++) {
        double ns = (double)r[i].ns / (double)r[i].lookups;
        double c = (double)r[i].cpu_ns / (double)r[i].lookups;
        worst = ns > worst ? ns : worst;
        cpu = c > cpu ? c : cpu;
        lookups += r[i].lookups;
    }
    /* CPU ns is the lookup's own cost; wall ns adds the time a reader waited
     * for a core, which on a machine with fewer cores than threads is most. */
    printf("readers=%u lookups=%llu cpu_ns_per_lookup=%.1f wall_ns_per_lookup=%.1f "
           "writer_puts_per_s=%.0f entries=%u\n",
           readers, (unsigned long long)lookups, cpu, worst, (double)cb_writes / seconds,
           atomic_load(&cb->rc.entries));
}

int main(int argc, char **argv)
{
    static struct cb cb;
    unsigned seconds = 3;
    static const struct option opts[] = {{"entries", required_argument, NULL, 'n'},
                                         {"seconds", required_argument, NULL, 's'},
                                         {"write-rate", required_argument, NULL, 'w'},
                                         {NULL, 0, NULL, 0}};
    int o;
    cb.n = 10000;
    while ((o = getopt_long(argc, argv, "n:s:w:", opts, NULL)) != -1) {
        if (o == 'n')
            cb.n = (unsigned)atoi(optarg);
        else if (o == 's')
            seconds = (unsigned)atoi(optarg);
        else if (o == 'w')
            cb.write_rate = (unsigned)atoi(optarg);
        else {
            fprintf(stderr, "usage: %s [--entries N] [--seconds S] [--write-rate PER_S]\n",
                    argv[0]);
            return 2;
        }
    }
    if (cb.n == 0 || seconds == 0 || rc_init(&cb.rc, cb.n, 0) != FG_OK) {
        fprintf(stderr, "cachebench: bad arguments, or no memory\n");
        return 1;
    }
    cb.keys = calloc(cb.n, sizeof *cb.keys);
    cb.lens = calloc(cb.n, sizeof *cb.lens);
    cb.hashes = calloc(cb.n, sizeof *cb.hashes);
    cb.policy.port[0] = 143;
    cb.target.policy = &cb.policy;
    cb.target.nhosts = cb.target.naddrs = 1;
    snprintf(cb.target.hosts[0], sizeof cb.target.hosts[0], "mbx01.example.com");
    cb.target.addrs[0].v4.sin_family = AF_INET;
    inet_pton(AF_INET, "192.0.2.10", &cb.target.addrs[0].v4.sin_addr);
    rc_thread_register();
    /* The benchmark's own arrays are touched first: not counted below. */
    memset(cb.keys, 0, cb.n * sizeof *cb.keys);
    memset(cb.lens, 0, cb.n * sizeof *cb.lens);
    memset(cb.hashes, 0, cb.n * sizeof *cb.hashes);
    long rss0 = cb_rss();
    for (unsigned i = 0; i < cb.n; i++) {
        char name[64];
        snprintf(name, sizeof name, "EXAMPLE\\user%05u", i);
        cb.lens[i] = route_key(name, strlen(name), cb.keys[i]);
        cb.hashes[i] = rc_hash(&cb.rc, cb.keys[i], cb.lens[i]);
        cb_put(&cb, i, 0);
    }
    long grown = cb_rss() - rss0;
    printf("entries=%u seconds=%u write_rate=%u/s (0: as fast as it can)\n", cb.n, seconds,
           cb.write_rate);
    printf("resident bytes per entry: %.0f (name EXAMPLE\\userNNNNN, a 51-byte DN, "
           "a [databases] target)\n",
           (double)grown / cb.n);
    cb_run(&cb, 1, seconds);
    cb_run(&cb, 2, seconds);
    rc_destroy(&cb.rc);
    rc_thread_unregister();
    free(cb.keys);
    free(cb.lens);
    free(cb.hashes);
    return 0;
}

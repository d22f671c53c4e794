/*
 * forestgate-refpoints: physical reference points of this machine.
 *
 * The proxy's own figures (logins/s, MB/s relayed, TLS handshakes/s) mean little
 * alone: they are read against what the machine can do at best. This program
 * measures those ceilings with the same building blocks the proxy uses:
 *
 *   - one TCP stream over 127.0.0.1 (what a single relayed session can reach);
 *   - wolfCrypt AES-GCM / ChaCha20-Poly1305 on 16 KiB buffers (one TLS record);
 *   - wolfCrypt ECDSA P-256 sign and verify (the cost of a handshake's signature).
 *
 * It prints one JSON object on stdout and a human summary on stderr. Every
 * figure is single-threaded on purpose: a reference point per core, which the
 * reader multiplies by the workers in use.
 *
 * The wolfSSL headers must be those of the library linked: the Aes and ecc_key
 * structures change size with the build options (AES-NI adds fields), so the
 * program is compiled again, not just relinked, when the library is swapped.
 */

#include <wolfssl/options.h>

#include <wolfssl/ssl.h>
#include <wolfssl/version.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/chacha20_poly1305.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/random.h>
#include <wolfssl/wolfcrypt/wc_port.h>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* What this build of wolfCrypt can measure; a lean build leaves figures out. */
#ifdef HAVE_AESGCM
#define REF_HAVE_GCM 1
#endif
#if defined(HAVE_CHACHA) && defined(HAVE_POLY1305)
#define REF_HAVE_CHACHA 1
#endif
#if defined(HAVE_ECC) && defined(HAVE_ECC_SIGN) && defined(HAVE_ECC_VERIFY)
#define REF_HAVE_ECDSA 1
#endif
#if defined(REF_HAVE_GCM) || defined(REF_HAVE_CHACHA)
#define REF_HAVE_RECORD 1
#endif

#ifndef FG_WOLFSSL_BUILD
#define FG_WOLFSSL_BUILD "system libwolfssl (Debian package)"
#endif

#define REF_PROG         "forestgate-refpoints"
#define REF_TCP_CHUNK    (256 * 1024)
#define REF_TCP_WARMUP_S 0.3
#define REF_RECORD       (16 * 1024) /* TLS maximum plaintext record */
#define REF_AAD_LEN      5           /* TLS 1.3 additional data: the record header */
#define REF_TAG_LEN      16
#define REF_IV_LEN       12
#define REF_BATCH        16 /* operations between two clock reads */
#define REF_MAX_SECONDS  3600.0

enum ref_group {
    REF_TCP = 1 << 0,
    REF_AES = 1 << 1, /* the symmetric record ciphers: AES-GCM and ChaCha20-Poly1305 */
    REF_ECDSA = 1 << 2,
    REF_ALL = REF_TCP | REF_AES | REF_ECDSA,
};

struct ref_opts {
    double seconds;
    unsigned groups;
};

/* A figure below zero was not measured (not selected, not built in, or failed). */
struct ref_results {
    double tcp_mbps;
    double aes128_mbps;
    double aes256_mbps;
    double chacha_mbps;
    double sign_per_s;
    double verify_per_s;
    int aesni_used; /* the key schedule chose AES-NI: 1, 0, or -1 when unknown */
};

/* One benchmarked operation: returns 0 or a wolfCrypt error code. */
typedef int (*ref_op_fn)(void *ctx);

static double ref_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#if defined(REF_HAVE_RECORD) || defined(REF_HAVE_ECDSA)
/*
 * Runs op in batches until seconds have passed; *ops_r gets the count and the
 * return is the elapsed time, or -1 after the first failing call (reported).
 * Reading the clock once per batch keeps its cost out of cheap operations.
 */
static double ref_run(ref_op_fn op, void *ctx, double seconds, const char *what, long *ops_r)
{
    double start = ref_now(), now = start;
    long ops = 0;

    while (now - start < seconds) {
        for (int i = 0; i < REF_BATCH; i++) {
            int rc = op(ctx);
            if (rc != 0) {
                fprintf(stderr, "%s: %s failed: %d (%s)\n", REF_PROG, what, rc,
                        wc_GetErrorString(rc));
                return -1;
            }
        }
        ops += REF_BATCH;
        now = ref_now();
    }
    *ops_r = ops;
    return now - start;
}
#endif

/* ---- TCP over loopback ------------------------------------------------- */

struct ref_tcp {
    int fd;
    atomic_bool stop;
};

/*
 * The sender writes until told to stop, then half-closes so that the receiver
 * reads to a clean EOF: no socket is closed under a thread still using it.
 */
static void *ref_tcp_sender(void *arg)
{
    struct ref_tcp *t = arg;
    char *chunk = calloc(1, REF_TCP_CHUNK);

    while (chunk && !atomic_load(&t->stop)) {
        ssize_t n = send(t->fd, chunk, REF_TCP_CHUNK, MSG_NOSIGNAL);
        if (n < 0 && errno != EINTR)
            break;
    }
    free(chunk);
    shutdown(t->fd, SHUT_WR);
    return NULL;
}

/* Fills fds_r with a connected pair over 127.0.0.1; returns 0 or -1 (reported). */
static int ref_tcp_pair(int fds_r[2])
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = -1;

    fds_r[0] = fds_r[1] = -1;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1) < 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &len) < 0)
        goto out;
    fds_r[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fds_r[0] < 0 || connect(fds_r[0], (struct sockaddr *)&sa, sizeof(sa)) < 0)
        goto out;
    fds_r[1] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fds_r[1] >= 0)
        rc = 0;
out:
    if (rc < 0) {
        perror(REF_PROG ": loopback socket pair");
        if (fds_r[0] >= 0)
            close(fds_r[0]);
    }
    if (lfd >= 0)
        close(lfd);
    return rc;
}

/*
 * Receives until the measured window is over, counting only what arrives after
 * the warm-up (slow start, page faults of the buffers). Returns MB/s or -1.
 */
static double ref_tcp_receive(int fd, double seconds)
{
    char *buf = malloc(REF_TCP_CHUNK);
    double start = ref_now() + REF_TCP_WARMUP_S, now = 0;
    long long bytes = 0;

    if (!buf)
        return -1;
    for (;;) {
        ssize_t n = recv(fd, buf, REF_TCP_CHUNK, 0);
        if (n <= 0 && !(n < 0 && errno == EINTR))
            break;
        now = ref_now();
        if (now >= start && n > 0)
            bytes += n;
        if (now - start >= seconds)
            break;
    }
    free(buf);
    if (now - start < seconds) {
        fprintf(stderr, "%s: loopback stream ended early\n", REF_PROG);
        return -1;
    }
    return (double)bytes / (now - start) / 1e6;
}

/* Drains the stream to EOF once the sender has seen stop. */
static void ref_tcp_drain(int fd)
{
    char buf[65536];

    while (recv(fd, buf, sizeof(buf), 0) > 0)
        continue;
}

/*
 * One stream, blocking sockets, the kernel's default buffer sizes (no
 * SO_SNDBUF/SO_RCVBUF, so autotuning applies, as for the proxy's sockets).
 */
static double ref_tcp_measure(double seconds)
{
    struct ref_tcp t = {.stop = false};
    pthread_t tid;
    int fds[2];
    double mbps;

    if (ref_tcp_pair(fds) < 0)
        return -1;
    t.fd = fds[0];
    if (pthread_create(&tid, NULL, ref_tcp_sender, &t) != 0) {
        fprintf(stderr, "%s: cannot start the sender thread\n", REF_PROG);
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    mbps = ref_tcp_receive(fds[1], seconds);
    atomic_store(&t.stop, true);
    ref_tcp_drain(fds[1]);
    pthread_join(tid, NULL);
    close(fds[0]);
    close(fds[1]);
    return mbps;
}

/* ---- Record ciphers ---------------------------------------------------- */

#ifdef REF_HAVE_RECORD
/* Plaintext, ciphertext and nonce of one record; the nonce moves as in TLS. */
struct ref_record {
    unsigned char *in;
    unsigned char *out;
    unsigned char iv[REF_IV_LEN];
    unsigned char aad[REF_AAD_LEN];
    unsigned char tag[REF_TAG_LEN];
    unsigned char key[32];
    void *cipher;
};

/* Allocates the record buffers; returns 0 or -1. */
static int ref_record_init(struct ref_record *r)
{
    memset(r, 0, sizeof(*r));
    r->in = aligned_alloc(64, REF_RECORD);
    r->out = aligned_alloc(64, REF_RECORD);
    if (!r->in || !r->out)
        return -1;
    for (int i = 0; i < REF_RECORD; i++)
        r->in[i] = (unsigned char)i;
    for (size_t i = 0; i < sizeof(r->key); i++)
        r->key[i] = (unsigned char)(0xa5 ^ i);
    return 0;
}

static void ref_record_free(struct ref_record *r)
{
    free(r->in);
    free(r->out);
}

/* A fresh nonce per record, as TLS XORs the sequence number into it. */
static void ref_record_next_iv(struct ref_record *r)
{
    for (int i = REF_IV_LEN - 1; i >= 0 && ++r->iv[i] == 0; i--)
        continue;
}

static double ref_mbps(double elapsed, long ops)
{
    return elapsed > 0 ? (double)ops * REF_RECORD / elapsed / 1e6 : -1;
}
#endif

#ifdef REF_HAVE_GCM
static int ref_aes_gcm_op(void *ctx)
{
    struct ref_record *r = ctx;

    ref_record_next_iv(r);
    return wc_AesGcmEncrypt(r->cipher, r->out, r->in, REF_RECORD, r->iv, REF_IV_LEN, r->tag,
                            REF_TAG_LEN, r->aad, REF_AAD_LEN);
}

/*
 * AES-GCM encryption MB/s with a key of key_len bytes, or -1 (reported);
 * *aesni_used_r learns whether AES-NI was used, when the build can tell.
 */
static double ref_aes_gcm_measure(int key_len, double seconds, int *aesni_used_r)
{
    struct ref_record r;
    Aes aes;
    double elapsed = -1;
    long ops = 0;

    if (ref_record_init(&r) < 0 || wc_AesInit(&aes, NULL, INVALID_DEVID) != 0) {
        ref_record_free(&r);
        return -1;
    }
    r.cipher = &aes;
    if (wc_AesGcmSetKey(&aes, r.key, (word32)key_len) == 0)
        elapsed = ref_run(ref_aes_gcm_op, &r, seconds, "wc_AesGcmEncrypt", &ops);
    else
        fprintf(stderr, "%s: wc_AesGcmSetKey(%d bytes) failed\n", REF_PROG, key_len);
#ifdef WOLFSSL_AESNI
    /* An AES-NI build still falls back to C on a CPU without the instructions. */
    *aesni_used_r = aes.use_aesni != 0;
#else
    *aesni_used_r = 0;
#endif
    wc_AesFree(&aes);
    ref_record_free(&r);
    return ref_mbps(elapsed, ops);
}
#endif

#ifdef REF_HAVE_CHACHA
/* The one-shot call sets the key up each time, as wolfSSL does per record. */
static int ref_chacha_op(void *ctx)
{
    struct ref_record *r = ctx;

    ref_record_next_iv(r);
    return wc_ChaCha20Poly1305_Encrypt(r->key, r->iv, r->aad, REF_AAD_LEN, r->in, REF_RECORD,
                                       r->out, r->tag);
}

static double ref_chacha_measure(double seconds)
{
    struct ref_record r;
    double elapsed = -1;
    long ops = 0;

    if (ref_record_init(&r) == 0)
        elapsed = ref_run(ref_chacha_op, &r, seconds, "wc_ChaCha20Poly1305_Encrypt", &ops);
    ref_record_free(&r);
    return ref_mbps(elapsed, ops);
}
#endif

static void ref_ciphers_measure(double seconds, struct ref_results *res)
{
#ifdef REF_HAVE_GCM
    res->aes128_mbps = ref_aes_gcm_measure(16, seconds, &res->aesni_used);
    res->aes256_mbps = ref_aes_gcm_measure(32, seconds, &res->aesni_used);
#endif
#ifdef REF_HAVE_CHACHA
    res->chacha_mbps = ref_chacha_measure(seconds);
#endif
    (void)seconds;
    (void)res;
}

/* ---- ECDSA P-256 ------------------------------------------------------- */

#ifdef REF_HAVE_ECDSA
struct ref_ecdsa {
    ecc_key key;
    WC_RNG rng;
    unsigned char digest[32]; /* a SHA-256 sized hash, as in a TLS 1.3 CertificateVerify */
    unsigned char sig[ECC_MAX_SIG_SIZE];
    word32 sig_len;
};

static int ref_sign_op(void *ctx)
{
    struct ref_ecdsa *e = ctx;

    e->sig_len = sizeof(e->sig);
    return wc_ecc_sign_hash(e->digest, sizeof(e->digest), e->sig, &e->sig_len, &e->rng, &e->key);
}

/* A signature that does not verify is an error too: the figure would be wrong. */
static int ref_verify_op(void *ctx)
{
    struct ref_ecdsa *e = ctx;
    int ok = 0;
    int rc = wc_ecc_verify_hash(e->sig, e->sig_len, e->digest, sizeof(e->digest), &ok, &e->key);

    return rc != 0 ? rc : ok == 1 ? 0 : SIG_VERIFY_E;
}

/* Sets up an RNG and a fresh P-256 key pair; returns 0 or -1 (reported). */
static int ref_ecdsa_init(struct ref_ecdsa *e)
{
    memset(e, 0, sizeof(*e));
    for (size_t i = 0; i < sizeof(e->digest); i++)
        e->digest[i] = (unsigned char)(i * 7);
    if (wc_InitRng(&e->rng) != 0) {
        fprintf(stderr, "%s: wc_InitRng failed\n", REF_PROG);
        return -1;
    }
    if (wc_ecc_init(&e->key) != 0) {
        wc_FreeRng(&e->rng);
        return -1;
    }
    int rc = wc_ecc_make_key_ex(&e->rng, 32, &e->key, ECC_SECP256R1);
    if (rc != 0) {
        fprintf(stderr, "%s: wc_ecc_make_key_ex(P-256) failed: %d\n", REF_PROG, rc);
        wc_ecc_free(&e->key);
        wc_FreeRng(&e->rng);
        return -1;
    }
    return 0;
}

/* Signs, then verifies the last signature, for seconds each. */
static void ref_ecdsa_measure(double seconds, struct ref_results *res)
{
    struct ref_ecdsa *e = malloc(sizeof(*e));
    double elapsed;
    long ops = 0;

    if (!e || ref_ecdsa_init(e) < 0) {
        free(e);
        return;
    }
    elapsed = ref_run(ref_sign_op, e, seconds, "wc_ecc_sign_hash", &ops);
    if (elapsed > 0) {
        res->sign_per_s = (double)ops / elapsed;
        elapsed = ref_run(ref_verify_op, e, seconds, "wc_ecc_verify_hash", &ops);
        if (elapsed > 0)
            res->verify_per_s = (double)ops / elapsed;
    }
    wc_ecc_free(&e->key);
    wc_FreeRng(&e->rng);
    free(e);
}
#else
static void ref_ecdsa_measure(double seconds, struct ref_results *res)
{
    (void)seconds;
    (void)res;
}
#endif

/* ---- The machine and the library --------------------------------------- */

/* Copies the first "model name" of /proc/cpuinfo into buf; "unknown" if none. */
static void ref_cpu_model(char *buf, size_t size)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];

    snprintf(buf, size, "unknown");
    while (f && fgets(line, sizeof(line), f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) != 0 || !colon)
            continue;
        colon += strspn(colon + 1, " \t") + 1;
        colon[strcspn(colon, "\n")] = '\0';
        snprintf(buf, size, "%s", colon);
        break;
    }
    if (f)
        fclose(f);
}

/*
 * Whether the library uses AES-NI, as its options.h says: 1, 0, or -1 when the
 * headers are not the linked library's (their version differs), so that the
 * answer cannot be trusted.
 */
static int ref_wolfssl_aesni(void)
{
    if (wolfSSL_lib_version_hex() != LIBWOLFSSL_VERSION_HEX)
        return -1;
#ifdef WOLFSSL_AESNI
    return 1;
#else
    return 0;
#endif
}

/* The shared object the dynamic linker actually loaded wolfSSL from. */
static const char *ref_wolfssl_path(void)
{
    Dl_info info;

    if (dladdr((void *)wolfSSL_lib_version, &info) && info.dli_fname)
        return info.dli_fname;
    return NULL;
}

/* Build options that change the figures, as the headers in use declare them. */
static const char *const ref_features[] = {
#ifdef REF_HAVE_CHACHA
        "CHACHA20_POLY1305", /* tells a reader whether its figure can be expected */
#endif
#ifdef WOLFSSL_AESNI
        "AESNI",
#endif
#ifdef USE_INTEL_SPEEDUP
        "INTELASM",
#endif
#ifdef HAVE_INTEL_AVX2
        "AVX2",
#endif
#ifdef WOLFSSL_HAVE_SP_ECC
        "SP_ECC",
#endif
#ifdef WOLFSSL_SP_X86_64_ASM
        "SP_X86_64_ASM",
#endif
#ifdef WOLFSSL_SP_MATH_ALL
        "SP_MATH_ALL",
#endif
#ifdef FP_ECC
        "FP_ECC", /* cached tables for fixed points: verify with one key gets faster */
#endif
#ifdef ECC_TIMING_RESISTANT
        "ECC_TIMING_RESISTANT",
#endif
#ifdef GCM_TABLE_4BIT
        "GCM_TABLE_4BIT",
#endif
#ifdef GCM_TABLE
        "GCM_TABLE",
#endif
#ifdef GCM_SMALL
        "GCM_SMALL",
#endif
#ifdef GCM_WORD32
        "GCM_WORD32",
#endif
        NULL,
};

/* ---- Output ------------------------------------------------------------ */

/* Prints s as a JSON string, or null when there is none. */
static void ref_json_string(const char *s)
{
    if (!s) {
        printf("null");
        return;
    }
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static const char *ref_json_bool(int v)
{
    return v < 0 ? "null" : v ? "true" : "false";
}

/* Prints "key": value for a measured figure; skips the ones below zero. */
static void ref_json_figure(const char *key, double v)
{
    if (v >= 0)
        printf(",\n  \"%s\": %.1f", key, v);
}

static void ref_json_print(const struct ref_opts *o, const struct ref_results *r)
{
    char cpu[256];
    int aesni = ref_wolfssl_aesni();

    ref_cpu_model(cpu, sizeof(cpu));
    printf("{\n  \"cpu_model\": ");
    ref_json_string(cpu);
    printf(",\n  \"cpus\": %ld", sysconf(_SC_NPROCESSORS_ONLN));
    printf(",\n  \"seconds\": %g", o->seconds);
    printf(",\n  \"wolfssl_version\": ");
    ref_json_string(wolfSSL_lib_version());
    printf(",\n  \"wolfssl_build\": ");
    ref_json_string(FG_WOLFSSL_BUILD);
    printf(",\n  \"wolfssl_library\": ");
    ref_json_string(ref_wolfssl_path());
    printf(",\n  \"wolfssl_aesni\": %s", ref_json_bool(aesni));
    if (o->groups & REF_AES)
        printf(",\n  \"wolfssl_aesni_used\": %s", ref_json_bool(r->aesni_used));
    printf(",\n  \"wolfssl_features\": [");
    for (int i = 0; ref_features[i]; i++) {
        printf(i ? ", " : "");
        ref_json_string(ref_features[i]);
    }
    printf("]");
    ref_json_figure("loopback_tcp_mb_per_s", r->tcp_mbps);
    ref_json_figure("aes_128_gcm_mb_per_s", r->aes128_mbps);
    ref_json_figure("aes_256_gcm_mb_per_s", r->aes256_mbps);
    ref_json_figure("chacha20_poly1305_mb_per_s", r->chacha_mbps);
    ref_json_figure("ecdsa_p256_sign_per_s", r->sign_per_s);
    ref_json_figure("ecdsa_p256_verify_per_s", r->verify_per_s);
    printf("\n}\n");
}

/* Prints a measured figure for people; nothing when it was not measured. */
static void ref_human_figure(const char *what, double v, const char *unit)
{
    if (v >= 0)
        fprintf(stderr, "  %-28s %12.1f %s\n", what, v, unit);
}

static void ref_human_print(const struct ref_results *r)
{
    const char *path = ref_wolfssl_path();

    fprintf(stderr, "%s: wolfSSL %s, %s\n  loaded from %s, AES-NI %s\n", REF_PROG,
            wolfSSL_lib_version(), FG_WOLFSSL_BUILD, path ? path : "?",
            ref_json_bool(ref_wolfssl_aesni()));
    ref_human_figure("loopback TCP, one stream", r->tcp_mbps, "MB/s");
    ref_human_figure("AES-128-GCM, 16 KiB", r->aes128_mbps, "MB/s");
    ref_human_figure("AES-256-GCM, 16 KiB", r->aes256_mbps, "MB/s");
    ref_human_figure("ChaCha20-Poly1305, 16 KiB", r->chacha_mbps, "MB/s");
    ref_human_figure("ECDSA P-256 sign", r->sign_per_s, "/s");
    ref_human_figure("ECDSA P-256 verify", r->verify_per_s, "/s");
}

/* ---- Command line ------------------------------------------------------ */

static void ref_usage(FILE *f)
{
    fprintf(f,
            "usage: %s [--seconds S] [--only tcp|aes|ecdsa[,...]]...\n"
            "\n"
            "Measures the machine's reference points and prints them as JSON on stdout\n"
            "(a summary goes to stderr). Each figure uses one core.\n"
            "\n"
            "  --seconds S   measuring time per figure, default 3 (TCP adds a 0.3 s warm-up)\n"
            "  --only LIST   measure only these groups (repeatable, or comma separated):\n"
            "                tcp    one TCP stream over 127.0.0.1, 256 KiB send()/recv(),\n"
            "                       blocking sockets, default socket buffer sizes\n"
            "                aes    AES-128/256-GCM and ChaCha20-Poly1305 encryption on\n"
            "                       16 KiB records (wolfCrypt)\n"
            "                ecdsa  ECDSA P-256 sign and verify of a 32-byte digest\n"
            "  --help        this text\n"
            "\n"
            "Exit: 0 when every selected figure was measured, 1 when one failed,\n"
            "2 on bad options. MB/s are 10^6 bytes per second.\n",
            REF_PROG);
}

static int ref_bad_option(const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", REF_PROG);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry '%s --help'.\n", REF_PROG);
    return -1;
}

/* Adds the groups named in a comma list to *groups; returns 0 or -1 (reported). */
static int ref_parse_only(const char *list, unsigned *groups)
{
    static const struct {
        const char *name;
        unsigned group;
    } names[] = {{"tcp", REF_TCP}, {"aes", REF_AES}, {"ecdsa", REF_ECDSA}};
    const char *p = list;

    for (;;) {
        size_t len = strcspn(p, ",");
        size_t i;
        for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            if (strlen(names[i].name) == len && strncmp(p, names[i].name, len) == 0)
                break;
        }
        if (i == sizeof(names) / sizeof(names[0]))
            return ref_bad_option("--only: '%s' is not one of tcp, aes, ecdsa", list);
        *groups |= names[i].group;
        if (p[len] == '\0')
            return 0;
        p += len + 1;
    }
}

static int ref_parse_seconds(const char *s, double *seconds_r)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v <= 0 || v > REF_MAX_SECONDS)
        return ref_bad_option("--seconds: '%s' is not a duration in (0, 3600] seconds", s);
    *seconds_r = v;
    return 0;
}

/* Whether arg is the option name, alone ("--name V") or joined ("--name=V"). */
static int ref_is_option(const char *arg, const char *name)
{
    size_t len = strlen(name);

    return strncmp(arg, name, len) == 0 && (arg[len] == '\0' || arg[len] == '=');
}

/* The value of the option at argv[*i], advancing *i past it; NULL if missing (reported). */
static const char *ref_option_value(int argc, char **argv, int *i)
{
    const char *eq = strchr(argv[*i], '=');

    if (eq)
        return eq + 1;
    if (*i + 1 >= argc) {
        ref_bad_option("%s needs a value", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

/* Returns 0, 1 for --help, or -1 on a bad option (reported). */
static int ref_parse_args(int argc, char **argv, struct ref_opts *o)
{
    o->seconds = 3;
    o->groups = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return 1;
        if (ref_is_option(a, "--seconds")) {
            if (!(v = ref_option_value(argc, argv, &i)) || ref_parse_seconds(v, &o->seconds) < 0)
                return -1;
        } else if (ref_is_option(a, "--only")) {
            if (!(v = ref_option_value(argc, argv, &i)) || ref_parse_only(v, &o->groups) < 0)
                return -1;
        } else {
            return ref_bad_option("unknown option '%s'", a);
        }
    }
    if (o->groups == 0)
        o->groups = REF_ALL;
    return 0;
}

/* Whether every figure of the selected groups that this build can measure was measured. */
static int ref_complete(const struct ref_opts *o, const struct ref_results *r)
{
    int ok = 1;

    if (o->groups & REF_TCP)
        ok &= r->tcp_mbps >= 0;
#ifdef REF_HAVE_GCM
    if (o->groups & REF_AES)
        ok &= r->aes128_mbps >= 0 && r->aes256_mbps >= 0;
#endif
#ifdef REF_HAVE_CHACHA
    if (o->groups & REF_AES)
        ok &= r->chacha_mbps >= 0;
#endif
#ifdef REF_HAVE_ECDSA
    if (o->groups & REF_ECDSA)
        ok &= r->sign_per_s >= 0 && r->verify_per_s >= 0;
#endif
    return ok;
}

int main(int argc, char **argv)
{
    struct ref_opts o;
    struct ref_results r = {-1, -1, -1, -1, -1, -1, -1};
    int rc = ref_parse_args(argc, argv, &o);

    if (rc != 0) {
        if (rc > 0)
            ref_usage(stdout);
        return rc > 0 ? 0 : 2;
    }
    if (wolfCrypt_Init() != 0) {
        fprintf(stderr, "%s: wolfCrypt_Init failed\n", REF_PROG);
        return 1;
    }
    if (o.groups & REF_TCP)
        r.tcp_mbps = ref_tcp_measure(o.seconds);
    if (o.groups & REF_AES)
        ref_ciphers_measure(o.seconds, &r);
    if (o.groups & REF_ECDSA)
        ref_ecdsa_measure(o.seconds, &r);
    ref_json_print(&o, &r);
    ref_human_print(&r);
    wolfCrypt_Cleanup();
    return ref_complete(&o, &r) ? 0 : 1;
}

/*
 * forestgate: POP3/IMAP4 front end. The main thread reads the configuration,
 * starts the workers, then only waits for signals and stats-socket clients.
 */
#include "../directory/thrstore.h"
#include "../tls/tls.h"
#include "ctl.h"
#include "metrics_http.h"
#include "notify.h"
#include "privdrop.h"
#include "stats.h"
#include "statsrv.h"
#include "wcmd.h"
#include "worker.h"

#include <errno.h>
#include <getopt.h>
#include <liburing.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#ifndef FG_VERSION
#define FG_VERSION "dev"
#endif

#ifdef FG_JEMALLOC
/*
 * jemalloc returns freed pages only on allocator activity unless a
 * background thread does it: an idle gateway would keep the pages its TLS
 * handshakes used (about 5 kB more per idle TLS session, measured). The
 * MALLOC_CONF environment variable still overrides this.
 */
const char *malloc_conf = "background_thread:true,dirty_decay_ms:5000,muzzy_decay_ms:0";
#endif

static void main_usage(FILE *out)
{
    fprintf(out, "Usage: forestgate -c FILE [--check-config[=full]]\n"
                 "       forestgate ctl [-s SOCKET | -c FILE] COMMAND...   (forestgate ctl -h)\n"
                 "       forestgate --version | --help\n\n"
                 "  -c, --config FILE    configuration file (INI)\n"
                 "  -t, --check-config   check the configuration and the files it names\n"
                 "                       (certificates, passwords, LDIF), print its errors,\n"
                 "                       exit; nothing leaves the machine\n"
                 "      --check-config=full  the same, and look host names up and ask LDAP\n"
                 "                       forests for their domains, as start-up does\n"
                 "  -v, --version        print the version and the libraries in use\n"
                 "  -h, --help           print this help\n\n"
                 "forestgate runs in the foreground and logs to stderr, or to EventLogFile.\n"
                 "SIGTERM or SIGINT stops it; SIGUSR1 drains it (stops accepting, exits\n"
                 "when the sessions have ended or after 60 s); SIGHUP reloads the TLS\n"
                 "certificates and reopens the log files.\n");
}

static void main_version(void)
{
    printf("forestgate %s\n", FG_VERSION);
    printf("liburing %s, jemalloc %s\n", FG_LIBURING_VERSION,
#ifdef FG_JEMALLOC
           "yes"
#else
           "no (system malloc)"
#endif
    );
    /* The library linked, not only the headers: a different .so would show. */
    printf("TLS library: %s, loaded %s\n", FG_WOLFSSL_BUILD, wolfSSL_lib_version());
}

/* A slow wolfSSL is a deployment mistake worth a line at every start. */
static void main_warn_wolfssl(void)
{
#ifndef FG_WOLFSSL_FAST
    log_msg(LOG_WARN, "tls", "linked with %s; build with scripts/build.sh for the fast one",
            FG_WOLFSSL_BUILD);
#endif
}

/*
 * Connection slots per worker, from the open-files limit: a session holds two
 * sockets; listeners, pipes and a margin are set aside first.
 */
static uint32_t main_slots(const struct fg_config *cfg, unsigned nworkers)
{
    struct rlimit rl;
    unsigned listeners = 0;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    for (int p = 0; p < FG_PROTO_COUNT; p++)
        listeners += cfg->proto[p].enabled ? cfg->proto[p].plain.n + cfg->proto[p].tls.n : 0;
    uint64_t reserve = 64 + (uint64_t)nworkers * (listeners + 2 * cfg->relay_pipes + 4);
    uint64_t nofile = rl.rlim_cur == RLIM_INFINITY ? (1u << 22) : rl.rlim_cur;
    if (nofile <= reserve + 32)
        return 0;
    uint64_t per = (nofile - reserve) / 2 / nworkers;
    return (uint32_t)FG_MIN(per, (uint64_t)1 << 20);
}

/* The event log (EventLogFile) and the protocol logs, written from here
 * on by the log writer thread. */
static int main_open_logs(const struct fg_config *cfg)
{
    if (log_files_start(&cfg->log_roll, cfg->event_log) != FG_OK)
        return FG_ERROR;
    for (int p = 0; p < FG_PROTO_COUNT; p++) {
        if (!cfg->proto[p].enabled || !cfg->proto[p].protocol_log)
            continue;
        if (plog_enable(p, cfg->log_dir) != FG_OK) {
            log_msg(LOG_ERROR, "config", "cannot open the protocol log in %s: %s", cfg->log_dir,
                    strerror(errno));
            return FG_ERROR;
        }
    }
    return FG_OK;
}

/* The certificates loaded by the configuration become the ones in force. */
static int main_tls_start(struct fg_config *cfg, struct fg_tls *tls)
{
    for (int p = 0; p < FG_PROTO_COUNT; p++) {
        if (!cfg->proto[p].tls_server)
            continue;
        if (!(tls->store[p] = tls_store_new(cfg->proto[p].tls_server)))
            return FG_ERROR;
        cfg->proto[p].tls_server = NULL; /* the store owns it now */
    }
    return FG_OK;
}

static void main_tls_stop(struct fg_tls *tls)
{
    for (int p = 0; p < FG_PROTO_COUNT; p++) {
        tls_store_free(tls->store[p]);
        tls->store[p] = NULL;
    }
}

/*
 * SIGHUP and "reload": reads every certificate again. Sessions keep the
 * certificates they started with; a protocol whose new set fails to load
 * keeps its old one and the log says why. out (or NULL) gets the same.
 */
static void main_tls_reload(const struct fg_config *cfg, struct fg_tls *tls, FILE *out)
{
    static const char *const names[FG_PROTO_COUNT] = {"imap", "pop3"};
    for (int p = 0; p < FG_PROTO_COUNT; p++) {
        char err[PATH_MAX + 200];
        if (!tls->store[p])
            continue;
        struct tls_server *s = config_load_certs(cfg, p, err, sizeof err);
        if (!s) {
            log_msg(LOG_ERROR, "tls_reload", "%s: %s; keeping the certificates in use", names[p],
                    err);
            if (out)
                fprintf(out, "error: %s: %s; keeping the certificates in use\n", names[p], err);
            continue;
        }
        tls_store_set(tls->store[p], s);
        log_msg(LOG_INFO, "tls_reload", "%s: certificates reloaded (%s)", names[p],
                cfg->proto[p].cert_names);
        if (out)
            fprintf(out, "%s: certificates reloaded (%s)\n", names[p], cfg->proto[p].cert_names);
    }
}

/* The connection limits, as configured; the stats socket may change them later. */
static int main_limits(const struct fg_config *cfg, struct limits *l, uint32_t slots)
{
    if (limits_init(l, slots) != FG_OK) {
        log_msg(LOG_ERROR, "limits", "out of memory for the connection limits' table");
        return FG_ERROR;
    }
    for (int p = 0; p < FG_PROTO_COUNT; p++) {
        const struct proto_conf *pc = &cfg->proto[p];
        limits_set(l, LIMITS_CONNS, (enum fg_proto)p, pc->max_connections);
        limits_set(l, LIMITS_PER_IP, (enum fg_proto)p, pc->max_per_ip);
        limits_set(l, LIMITS_PER_USER, (enum fg_proto)p, pc->max_per_user);
    }
    limits_set_v6_prefix(l, cfg->ipv6_prefix);
    return FG_OK;
}

/* The main thread's life after start-up: signals, the stats socket, a drain. */
struct main_ctx {
    struct evloop loop;
    struct ev_handler sig;
    struct ev_tick drain_tick;
    const struct fg_config *cfg;
    struct fg_tls *tls;
    struct worker *ws;
    unsigned nworkers;
    uint64_t drain_deadline_ms; /* 0: not draining */
    struct wcmd *usr1_drain;    /* the drain SIGUSR1 started: freed at exit */
};

#define MAIN_DRAIN_DEFAULT_S 60
#define MAIN_DRAIN_MAX_S     86400

static uint32_t main_connections(const struct main_ctx *m)
{
    uint32_t n = 0;
    for (unsigned i = 0; i < m->nworkers; i++)
        n += atomic_load(&m->ws[i].stats.conns);
    return n;
}

/* SIGHUP, and the stats socket's "reload". */
static void main_reload(void *ctx, FILE *out)
{
    struct main_ctx *m = ctx;
    notify_reloading();
    main_tls_reload(m->cfg, m->tls, out);
    log_reopen();
    notify_ready();
    if (out)
        fprintf(out, "reloaded\n");
}

/* Drains: exits when the last connection has ended, or at the deadline,
 * when the workers' stop tells the ones left BYE. */
static void main_drain_tick(struct ev_tick *t, uint64_t now)
{
    struct main_ctx *m = FG_CONTAINER_OF(t, struct main_ctx, drain_tick);
    uint32_t left = main_connections(m);
    if (left == 0) {
        log_msg(LOG_INFO, "drained", "the last connection ended; stopping");
        ev_stop(&m->loop);
    } else if (now >= m->drain_deadline_ms) {
        log_msg(LOG_INFO, "drain_deadline", "%u connection(s) left at the deadline; stopping",
                left);
        ev_stop(&m->loop);
    }
}

/* "drain [SECONDS]": stop accepting now, exit when the sessions have ended
 * or the deadline passes. A second drain may bring the deadline closer. */
static struct wcmd *main_drain(void *ctx, const char *arg, int done_fd, FILE *out)
{
    struct main_ctx *m = ctx;
    char *end;
    unsigned long secs = MAIN_DRAIN_DEFAULT_S;
    if (*arg) {
        errno = 0;
        secs = strtoul(arg, &end, 10);
        if (errno || *end || end == arg || *arg == '-' || secs > MAIN_DRAIN_MAX_S) {
            fprintf(out, "error: drain takes a number of seconds from 0 to %u, not \"%s\"\n",
                    MAIN_DRAIN_MAX_S, arg);
            return NULL;
        }
    }
    uint64_t deadline = ev_now_ms() + secs * 1000;
    if (m->drain_deadline_ms) {
        if (deadline < m->drain_deadline_ms)
            m->drain_deadline_ms = deadline;
        fprintf(out, "already draining: %u connection(s) left, stopping in %llu s at the latest\n",
                main_connections(m),
                (unsigned long long)(m->drain_deadline_ms - ev_now_ms() + 999) / 1000);
        return NULL;
    }
    struct wcmd *cmd = wcmd_new(WCMD_STOP_ACCEPTING, m->nworkers, done_fd);
    if (!cmd) {
        fprintf(out, "error: out of memory\n");
        return NULL;
    }
    wcmd_post(m->ws, cmd);
    notify_stopping();
    m->drain_deadline_ms = deadline;
    ev_tick_add(&m->loop, &m->drain_tick);
    uint32_t left = main_connections(m);
    log_msg(LOG_INFO, "drain", "no longer accepting; %u connection(s) have %lu s to end", left,
            secs);
    fprintf(out, "draining: no longer accepting; %u connection(s) have %lu s to end\n", left, secs);
    return cmd; /* answered once every worker has closed its listeners */
}

/* SIGUSR1: a drain with the default deadline, as HAProxy's soft stop. The
 * answer a stats client would get goes to the log (main_drain logs it). */
static void main_usr1(struct main_ctx *m)
{
    char *text = NULL;
    size_t n = 0;
    FILE *out = open_memstream(&text, &n);
    if (!out)
        return;
    struct wcmd *cmd = main_drain(m, "", -1, out);
    fclose(out);
    if (!cmd && text && m->drain_deadline_ms)
        log_msg(LOG_INFO, "drain", "SIGUSR1 while draining: %.*s", (int)strcspn(text, "\n"), text);
    if (cmd)
        m->usr1_drain = cmd;
    free(text);
}

static void main_on_signal(struct ev_handler *h, uint32_t events)
{
    struct main_ctx *m = FG_CONTAINER_OF(h, struct main_ctx, sig);
    struct signalfd_siginfo si;
    (void)events;
    if (read(h->fd, &si, sizeof si) != sizeof si)
        return;
    if (si.ssi_signo == SIGHUP) {
        main_reload(m, NULL);
        return;
    }
    if (si.ssi_signo == SIGUSR1) {
        main_usr1(m);
        return;
    }
    notify_stopping();
    log_msg(LOG_INFO, "stopping", "signal %s received", strsignal((int)si.ssi_signo));
    ev_stop(&m->loop);
}

/* Serves signals and the stats socket until a stop or the end of a drain. */
static int main_wait(struct main_ctx *m, int sfd, struct stats *st)
{
    struct statsrv sv = {.listen.fd = -1, .done.fd = -1};
    struct metrics_http mh = {0};
    const struct statsrv_hooks hooks = {.reload = main_reload, .drain = main_drain, .ctx = m};
    int rc = FG_ERROR;

    if (ev_init(&m->loop) != FG_OK) {
        log_msg(LOG_ERROR, "main", "cannot create the event loop: %s", strerror(errno));
        return FG_ERROR;
    }
    m->sig = (struct ev_handler){.fd = sfd, .fn = main_on_signal};
    m->drain_tick = (struct ev_tick){.fn = main_drain_tick};
    fg_list_init(&m->drain_tick.node);
    if (ev_add(&m->loop, &m->sig, EPOLLIN) != FG_OK ||
        (m->cfg->stats_socket[0] &&
         statsrv_open(&sv, st, &m->loop, m->cfg->stats_socket, &hooks) != FG_OK) ||
        metrics_http_open(&mh, &m->loop, &m->cfg->metrics, st) != FG_OK)
        goto out;
    /* Every port, log and socket is open: root is no longer needed. */
    if (privdrop_apply(m->cfg) != FG_OK)
        goto out;
    main_warn_wolfssl();
    log_msg(LOG_INFO, "started", "forestgate %s: %u workers, %u connection slots each", FG_VERSION,
            m->nworkers, m->ws[0].nslots);
    notify_ready();
    ev_run(&m->loop);
    rc = FG_OK;
out:
    /* The workers stop before the commands they may still hold are freed. */
    for (unsigned i = 0; i < m->nworkers; i++)
        worker_stop(&m->ws[i]);
    for (unsigned i = 0; i < m->nworkers; i++)
        worker_join(&m->ws[i]);
    metrics_http_close(&mh);
    statsrv_close(&sv);
    ev_tick_del(&m->drain_tick);
    wcmd_free(m->usr1_drain); /* after the workers' join */
    ev_free(&m->loop);
    return rc;
}

static int main_run(struct fg_config *cfg)
{
    unsigned n = cfg->workers ? cfg->workers : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
    uint32_t slots = main_slots(cfg, n);
    struct fg_shared shared = {0};
    struct limits limits;
    struct bhost_table bhosts;
    struct fg_tls tls = {0};
    struct dir dir;
    struct throttle thr = {0};
    struct stats st = {.cfg = cfg, .nworkers = n, .slots = slots * n};
    sigset_t set;
    int rc = 1;

    if (slots == 0) {
        log_msg(LOG_ERROR, "limits", "the open-files limit is too low for %u workers", n);
        return 1;
    }
    /* Workers inherit this mask: only the main thread takes signals. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    struct worker *ws = calloc(n, sizeof *ws);
    /* A probe of a host that was down takes at most ConnectTimeout: the
     * others skip the host that long, and a second more. */
    const struct backend_conf *bc = &cfg->backend;
    if (main_limits(cfg, &limits, slots * n) != FG_OK)
        goto out_limits;
    shared.limits = &limits;
    st.limits = &limits;
    if (bhost_table_init(&bhosts, bc->backoff * 1000, bc->backoff_max * 1000,
                         bc->connect_timeout * 1000 + 1000) != FG_OK)
        goto out_bhosts;
    shared.bhosts = &bhosts;
    st.bhosts = &bhosts;
    if (sfd < 0 || !ws || main_open_logs(cfg) != FG_OK || main_tls_start(cfg, &tls) != FG_OK)
        goto out;
    /* A bind's reservation in the fleet's store outlives any bind. */
    if (thr_init(&thr, &cfg->throttle) != FG_OK ||
        ts_attach(&thr, cfg->dir.request_timeout + 5) != FG_OK)
        goto out;
    dir_init(&dir, &cfg->dir, &cfg->backend.target, &cfg->backend.policy);
    dir.thr = &thr;
    dir.krb = cfg->dir.krb;
    if (dir_start(&dir) != FG_OK) {
        dir_stop(&dir);
        goto out;
    }
    st.workers = ws;
    st.dir = &dir;
    unsigned started = 0;
    for (; started < n; started++) {
        if (worker_init(&ws[started], started, cfg, &shared, &dir, &tls, slots) != FG_OK ||
            worker_start(&ws[started]) != FG_OK) {
            started++;
            goto stop;
        }
    }
    struct main_ctx m = {.cfg = cfg, .tls = &tls, .ws = ws, .nworkers = n};
    if (main_wait(&m, sfd, &st) == FG_OK)
        rc = 0;
stop:
    for (unsigned i = 0; i < started; i++)
        worker_stop(&ws[i]);
    for (unsigned i = 0; i < started; i++)
        worker_join(&ws[i]);
    for (unsigned i = 0; i < started; i++)
        worker_free(&ws[i]);
    /* After the workers: every request they made has been answered. */
    dir_stop(&dir);
    if (rc == 0)
        log_msg(LOG_INFO, "stopped", "all connections closed");
out:
    bhost_table_free(&bhosts);
out_bhosts:
    limits_free(&limits);
out_limits:
    main_tls_stop(&tls);
    ts_detach(&thr);
    thr_free(&thr);
    free(ws);
    if (sfd >= 0)
        close(sfd);
    log_files_stop(); /* last: it writes what is still queued */
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
            {"config", required_argument, NULL, 'c'},
            {"check-config", optional_argument, NULL, 't'},
            {"version", no_argument, NULL, 'v'},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    bool check = false;
    unsigned flags = CONFIG_START;
    int opt;

    if (argc > 1 && strcmp(argv[1], "ctl") == 0) /* the stats socket's client */
        return ctl_main(argc - 1, argv + 1);
    while ((opt = getopt_long(argc, argv, "c:tvh", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            check = true;
            flags = CONFIG_CHECK;
            if (optarg && strcmp(optarg, "full") == 0) {
                flags = CONFIG_START;
            } else if (optarg) {
                fprintf(stderr, "forestgate: --check-config=%s: expected --check-config=full\n",
                        optarg);
                return 2;
            }
            break;
        case 'v':
            main_version();
            return 0;
        case 'h':
            main_usage(stdout);
            return 0;
        default:
            main_usage(stderr);
            return 2;
        }
    }
    if (!path || optind != argc) {
        main_usage(stderr);
        return 2;
    }
    static struct fg_config cfg;
    if (tls_init() != FG_OK) {
        fprintf(stderr, "forestgate: cannot initialise wolfSSL\n");
        return 1;
    }
    int errors = config_load(&cfg, path, stderr, flags);
    if (errors > 0) {
        fprintf(stderr, "%s: %d error%s\n", path, errors, errors == 1 ? "" : "s");
        config_free(&cfg);
        tls_cleanup();
        return 1;
    }
    if (check) {
        printf("%s: configuration OK%s\n", path,
               flags & CONFIG_NETWORK ? ""
                                      : " (host names and LDAP domains not checked: "
                                        "--check-config=full checks them)");
        config_free(&cfg);
        tls_cleanup();
        return 0;
    }
    log_level = cfg.log_level;
    dir_thread_register(); /* the stats socket's cache commands, and the cache's teardown */
    int rc = main_run(&cfg);
    dir_thread_unregister();
    config_free(&cfg);
    tls_cleanup();
    return rc;
}

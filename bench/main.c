/*
 * forestgate-bench: the load generator of forestgate, and (--serve) a MOCK
 * IMAP/POP3 backend to measure a proxy without measuring a mail server.
 * This file reads the command line and runs one or the other.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "client.h"
#include "fgb.h"
#include "report.h"

#define MAX_CONNS   1000000
#define MAX_THREADS 256
#define MAX_USERS   10000000

static void usage(FILE *f)
{
    fprintf(f,
            "usage: forestgate-bench [OPTIONS]                 load generator\n"
            "       forestgate-bench --serve imap|pop3 --port P [SERVE OPTIONS]   MOCK backend\n"
            "\n"
            "Load generator:\n"
            "  --proto imap|pop3        protocol (default imap)\n"
            "  --host H                 server address or name (default 127.0.0.1)\n"
            "  --port P                 server port (default 143 / 110)\n"
            "  --tls, --starttls        TLS from the start / after STARTTLS or STLS (TLS 1.2+,\n"
            "                           the certificate is not checked)\n"
            "  --tls-resume             each session resumes its previous login's TLS session\n"
            "  --sni NAME               server name to send in the ClientHello\n"
            "  --scenario S             login | fetch | idle | mixed (default login)\n"
            "      login: connect, greeting, login, logout, repeat; reports logins/s\n"
            "      fetch: log in once, then UID FETCH n BODY.PEEK[] / RETR n in a loop\n"
            "      idle:  hold --conns sessions logged in and idle\n"
            "      mixed: short POP3 polls (login, STAT, UIDL, QUIT) beside IMAP\n"
            "             sessions that stay (login, SELECT, FETCH FLAGS, NOOPs, LOGOUT)\n"
            "  --conns N                concurrent sessions (default 10)\n"
            "  --rate R                 open loop: R logins/s scheduled (login scenario);\n"
            "                           latency counts from the scheduled time\n"
            "  --duration S             seconds measured (default 10); then log out and stop\n"
            "                           (Ctrl-C or SIGTERM ends the run early, with results)\n"
            "  --warmup S               seconds run before measuring (default 0)\n"
            "  --threads T              event loops (default 1)\n"
            "  --timeout S              no progress for S seconds is an error (default 10)\n"
            "  --ramp N                 logins in flight per thread at most (default 256)\n"
            "  --users FILE|PATTERN     FILE: lines 'user' or 'user:password';\n"
            "                           PATTERN: %%d becomes 1..--user-count (default user%%d)\n"
            "  --user-count N           users of a PATTERN (default 1)\n"
            "  --password-pattern P     %%d = the user's number, %%u = the user name (default "
            "pass)\n"
            "  --auth login|plain       IMAP LOGIN or AUTHENTICATE PLAIN, POP3 USER/PASS or\n"
            "                           AUTH PLAIN (default login)\n"
            "  --imap-port P, --pop3-port P   ports of the mixed scenario (default 143, 110)\n"
            "  --mix pop3=W,imap=W      shares of the sessions in mixed (default pop3=80,imap=20)\n"
            "  --stay S, --noop S       mixed: an IMAP session stays S s (default 30), with a\n"
            "                           NOOP every S s (default 5)\n"
            "  --ready-file PATH        written with the count once all sessions are logged in\n"
            "  --json PATH              the result as JSON ('-' = stdout)\n"
            "  --quiet                  no progress line\n"
            "\n"
            "MOCK backend (accepts any login but an empty password):\n"
            "  --serve imap|pop3 --port P [--host H] [--threads N] [--messages N]\n"
            "  [--msg-size BYTES] [--duration S]   (default 10 messages of 102400 bytes)\n"
            "  --serve-writes dovecot|bulk   a message in writes cut as Dovecot 2.3 cuts them\n"
            "                           (default), or all queued output per sendmsg\n"
            "\n"
            "  --version, --help\n");
}

/* One error line, then exit status 2: scripts show the line and test the status. */
static int bad(const char *fmt, const char *arg)
{
    fprintf(stderr, "forestgate-bench: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see forestgate-bench --help)\n");
    return 2;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

static int parse_proto(const char *s, enum fgb_proto *p)
{
    if (strcmp(s, "imap") == 0)
        *p = FGB_IMAP;
    else if (strcmp(s, "pop3") == 0)
        *p = FGB_POP3;
    else
        return -1;
    return 0;
}

/* Replaces %d with n and %u with user (if given) in pattern; "%%" is a '%'. */
static char *expand(const char *pattern, unsigned long n, const char *user)
{
    /* Each two-byte escape grows into at most a 20-digit number or the user
     * name: room for the worst case, so no write can overrun. */
    size_t len = strlen(pattern), ulen = user ? strlen(user) : 0;
    char *out = malloc(len + (len / 2) * (20 + ulen) + 1), *o = out;
    if (!out)
        return NULL;
    for (const char *p = pattern; *p; p++) {
        if (p[0] == '%' && p[1] == 'd') {
            o += sprintf(o, "%lu", n);
            p++;
        } else if (p[0] == '%' && p[1] == 'u' && user) {
            memcpy(o, user, ulen);
            o += ulen;
            p++;
        } else if (p[0] == '%' && p[1] == '%') {
            *o++ = '%';
            p++;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
    return out;
}

static void users_free(struct fgb_user *u, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(u[i].name);
        if (u[i].pass)
            explicit_bzero(u[i].pass, strlen(u[i].pass));
        free(u[i].pass);
    }
    free(u);
}

/* Reads users from a file: "user" or "user:password" per line; # comments. */
static int users_from_file(const char *path, const char *pw_pattern, struct fgb_opts *o)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "forestgate-bench: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[1024];
    size_t cap = 0;
    unsigned long lineno = 0;
    int rc = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        size_t len = strcspn(line, "\r\n");
        if (line[len] == 0 && !feof(f)) {
            fprintf(stderr, "forestgate-bench: %s:%lu: line too long\n", path, lineno);
            rc = -1;
            break;
        }
        line[len] = 0;
        if (len == 0 || line[0] == '#')
            continue;
        if (o->nusers == cap) {
            cap = cap ? cap * 2 : 64;
            struct fgb_user *nu = realloc(o->users, cap * sizeof(*nu));
            if (!nu) {
                rc = -1;
                break;
            }
            o->users = nu;
        }
        char *colon = strchr(line, ':');
        if (colon)
            *colon = 0;
        struct fgb_user *u = &o->users[o->nusers++];
        u->name = strdup(line);
        u->pass = colon ? strdup(colon + 1) : expand(pw_pattern, o->nusers, line);
        if (!u->name || !u->pass) {
            rc = -1;
            break;
        }
    }
    explicit_bzero(line, sizeof(line));
    fclose(f);
    if (rc == 0 && o->nusers == 0) {
        fprintf(stderr, "forestgate-bench: %s: no users in the file\n", path);
        rc = -1;
    }
    return rc;
}

static int users_from_pattern(const char *pattern, long count, const char *pw_pattern,
                              struct fgb_opts *o)
{
    o->users = calloc((size_t)count, sizeof(*o->users));
    if (!o->users)
        return -1;
    for (long i = 0; i < count; i++) {
        struct fgb_user *u = &o->users[o->nusers++];
        u->name = expand(pattern, (unsigned long)i + 1, NULL);
        u->pass = u->name ? expand(pw_pattern, (unsigned long)i + 1, u->name) : NULL;
        if (!u->name || !u->pass)
            return -1;
    }
    return 0;
}

static int resolve(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    int e = getaddrinfo(host, service, &hints, &res);
    if (e != 0) {
        fprintf(stderr, "forestgate-bench: %s: %s\n", host, gai_strerror(e));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* "pop3=80,imap=20" */
static int parse_mix(const char *s, struct fgb_opts *o)
{
    char buf[64];
    if (strlen(s) >= sizeof(buf))
        return -1;
    strcpy(buf, s);
    o->mix_pop3 = o->mix_imap = 0;
    for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        long w;
        char *eq = strchr(tok, '=');
        if (!eq || parse_long(eq + 1, 0, 1000000, &w) < 0)
            return -1;
        *eq = 0;
        if (strcmp(tok, "pop3") == 0)
            o->mix_pop3 = (int)w;
        else if (strcmp(tok, "imap") == 0)
            o->mix_imap = (int)w;
        else
            return -1;
    }
    return o->mix_pop3 + o->mix_imap > 0 ? 0 : -1;
}

struct cli {
    struct fgb_opts o;
    struct fgb_serve_opts so;
    int serve;
    const char *users;
    const char *pw_pattern;
    long user_count;
    int port_set;
};

/* getopt_long's value of each option: above 255, clear of any short option. */
enum {
    O_PROTO = 256,
    O_SERVE,
    O_SERVE_WRITES,
    O_HOST,
    O_PORT,
    O_IMAP_PORT,
    O_POP3_PORT,
    O_SCENARIO,
    O_CONNS,
    O_THREADS,
    O_RAMP,
    O_RATE,
    O_DURATION,
    O_WARMUP,
    O_TIMEOUT,
    O_STAY,
    O_NOOP,
    O_USERS,
    O_USER_COUNT,
    O_PW_PATTERN,
    O_AUTH,
    O_MIX,
    O_SNI,
    O_READY_FILE,
    O_JSON,
    O_MESSAGES,
    O_MSG_SIZE,
    O_TLS,
    O_STARTTLS,
    O_TLS_RESUME,
    O_QUIET,
    O_VERSION,
    O_HELP = 'h',
};

static const struct option long_opts[] = {
        {"proto", required_argument, NULL, O_PROTO},
        {"serve", required_argument, NULL, O_SERVE},
        {"serve-writes", required_argument, NULL, O_SERVE_WRITES},
        {"host", required_argument, NULL, O_HOST},
        {"port", required_argument, NULL, O_PORT},
        {"imap-port", required_argument, NULL, O_IMAP_PORT},
        {"pop3-port", required_argument, NULL, O_POP3_PORT},
        {"scenario", required_argument, NULL, O_SCENARIO},
        {"conns", required_argument, NULL, O_CONNS},
        {"threads", required_argument, NULL, O_THREADS},
        {"ramp", required_argument, NULL, O_RAMP},
        {"rate", required_argument, NULL, O_RATE},
        {"duration", required_argument, NULL, O_DURATION},
        {"warmup", required_argument, NULL, O_WARMUP},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"stay", required_argument, NULL, O_STAY},
        {"noop", required_argument, NULL, O_NOOP},
        {"users", required_argument, NULL, O_USERS},
        {"user-count", required_argument, NULL, O_USER_COUNT},
        {"password-pattern", required_argument, NULL, O_PW_PATTERN},
        {"auth", required_argument, NULL, O_AUTH},
        {"mix", required_argument, NULL, O_MIX},
        {"sni", required_argument, NULL, O_SNI},
        {"ready-file", required_argument, NULL, O_READY_FILE},
        {"json", required_argument, NULL, O_JSON},
        {"messages", required_argument, NULL, O_MESSAGES},
        {"msg-size", required_argument, NULL, O_MSG_SIZE},
        {"tls", no_argument, NULL, O_TLS},
        {"starttls", no_argument, NULL, O_STARTTLS},
        {"tls-resume", no_argument, NULL, O_TLS_RESUME},
        {"quiet", no_argument, NULL, O_QUIET},
        {"version", no_argument, NULL, O_VERSION},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
};

/* The long name of an option, for error lines. */
static const char *opt_name(int id)
{
    for (const struct option *p = long_opts; p->name; p++)
        if (p->val == id)
            return p->name;
    return "?";
}

static int bad_value(int id)
{
    return bad("bad value for --%s", opt_name(id));
}

/* An integer option's value, in [lo, hi], into *dst. Returns 0 or 2. */
static int arg_int(int id, const char *val, long lo, long hi, int *dst)
{
    long l;
    if (parse_long(val, lo, hi, &l) < 0)
        return bad_value(id);
    *dst = (int)l;
    return 0;
}

static int arg_double(int id, const char *val, double lo, double hi, double *dst)
{
    return parse_double(val, lo, hi, dst) < 0 ? bad_value(id) : 0;
}

/* The options that take a whole number. Returns 0, 2 on error, or -1 if id is not one. */
static int take_int(struct cli *c, int id, const char *val)
{
    struct fgb_opts *o = &c->o;
    long l;
    int rc;
    switch (id) {
    case O_PORT:
        /* One --port serves both modes: the server to load, or the mock's own. */
        c->port_set = 1;
        rc = arg_int(id, val, 1, 65535, &o->port);
        c->so.port = o->port;
        return rc;
    case O_IMAP_PORT:
        return arg_int(id, val, 1, 65535, &o->imap_port);
    case O_POP3_PORT:
        return arg_int(id, val, 1, 65535, &o->pop3_port);
    case O_CONNS:
        return arg_int(id, val, 1, MAX_CONNS, &o->conns);
    case O_THREADS:
        rc = arg_int(id, val, 1, MAX_THREADS, &o->threads);
        c->so.threads = o->threads;
        return rc;
    case O_RAMP:
        return arg_int(id, val, 1, MAX_CONNS, &o->ramp);
    case O_MESSAGES:
        return arg_int(id, val, 1, 1000000, &c->so.messages);
    case O_USER_COUNT:
        return parse_long(val, 1, MAX_USERS, &c->user_count) < 0 ? bad_value(id) : 0;
    case O_MSG_SIZE:
        if (parse_long(val, 1, 1L << 30, &l) < 0)
            return bad_value(id);
        c->so.msg_size = (size_t)l;
        return 0;
    }
    return -1;
}

/* The options that take seconds or a rate. Returns 0, 2 on error, or -1 if id is not one. */
static int take_double(struct cli *c, int id, const char *val)
{
    struct fgb_opts *o = &c->o;
    int rc;
    switch (id) {
    case O_RATE:
        return arg_double(id, val, 0, 1e7, &o->rate);
    case O_DURATION:
        /* The mock's duration defaults to 0 (until a signal), the client's to 10 s. */
        rc = arg_double(id, val, 0.01, 86400, &o->duration);
        c->so.duration = o->duration;
        return rc;
    case O_WARMUP:
        return arg_double(id, val, 0, 3600, &o->warmup);
    case O_TIMEOUT:
        return arg_double(id, val, 0.01, 3600, &o->timeout);
    case O_STAY:
        return arg_double(id, val, 0, 86400, &o->stay_s);
    case O_NOOP:
        return arg_double(id, val, 0.001, 3600, &o->noop_s);
    }
    return -1;
}

static int take_scenario(struct fgb_opts *o, const char *val)
{
    for (int i = 0; i <= SC_MIXED; i++)
        if (strcmp(val, fgb_scenario_names[i]) == 0) {
            o->scenario = (enum fgb_scenario)i;
            return 0;
        }
    return bad("--scenario must be login, fetch, idle or mixed, not '%s'", val);
}

/* The options that take a word or a path. Returns 0, 2 on error, or -1 if id is not one. */
static int take_text(struct cli *c, int id, const char *val)
{
    struct fgb_opts *o = &c->o;
    switch (id) {
    case O_PROTO:
        return parse_proto(val, &o->proto) ? bad("--proto must be imap or pop3, not '%s'", val) : 0;
    case O_SERVE:
        c->serve = 1;
        return parse_proto(val, &c->so.proto) ? bad("--serve must be imap or pop3, not '%s'", val)
                                              : 0;
    case O_SERVE_WRITES:
        if (strcmp(val, "dovecot") != 0 && strcmp(val, "bulk") != 0)
            return bad("--serve-writes must be dovecot or bulk, not '%s'", val);
        c->so.writes = strcmp(val, "bulk") == 0 ? FGB_WRITES_BULK : FGB_WRITES_DOVECOT;
        return 0;
    case O_SCENARIO:
        return take_scenario(o, val);
    case O_AUTH:
        if (strcmp(val, "login") != 0 && strcmp(val, "plain") != 0)
            return bad("--auth must be login or plain, not '%s'", val);
        o->auth_plain = strcmp(val, "plain") == 0;
        return 0;
    case O_MIX:
        return parse_mix(val, o)
                       ? bad("--mix wants pop3=W,imap=W with whole weights, not '%s'", val)
                       : 0;
    case O_SNI:
        if (strlen(val) > 255)
            return bad("--sni: a host name of at most 255 bytes, not '%s'", val);
        o->sni = val;
        return 0;
    case O_HOST:
        o->host = c->so.host = val;
        return 0;
    case O_USERS:
        c->users = val;
        return 0;
    case O_PW_PATTERN:
        c->pw_pattern = val;
        return 0;
    case O_READY_FILE:
        o->ready_file = val;
        return 0;
    case O_JSON:
        o->json = val;
        return 0;
    }
    return -1;
}

/* The options without a value. Returns 0, or 1 to stop with exit 0 (--help, --version). */
static int take_flag(struct cli *c, int id)
{
    switch (id) {
    case O_TLS:
        c->o.tls = 1;
        return 0;
    case O_STARTTLS:
        c->o.starttls = 1;
        return 0;
    case O_TLS_RESUME:
        c->o.tls_resume = 1;
        return 0;
    case O_QUIET:
        c->o.quiet = c->so.quiet = 1;
        return 0;
    case O_VERSION:
        printf("forestgate-bench %s\n", FG_VERSION);
        return 1;
    case O_HELP:
        usage(stdout);
        return 1;
    }
    return 2; /* not reached: getopt_long returns only the ids of long_opts */
}

/* What getopt_long refused: an option unknown, ambiguous, or given a value it does not take. */
static int bad_option(int id, const char *arg)
{
    char short_opt[3] = {'-', (char)id, 0};
    if (id >= O_PROTO)
        return bad("--%s takes no value", opt_name(id));
    return bad("unknown option '%s'", id > 0 ? short_opt : arg);
}

/* Takes one option. Returns 0, 1 to stop with exit 0, or 2 after an error line. */
static int take(struct cli *c, int id, const char *val)
{
    int rc = take_int(c, id, val);
    if (rc < 0)
        rc = take_double(c, id, val);
    if (rc < 0)
        rc = take_text(c, id, val);
    return rc < 0 ? take_flag(c, id) : rc;
}

/*
 * Reads the command line. Long options take "--opt value" or "--opt=value",
 * as getopt_long reads them; the leading ':' makes a missing value its own
 * case, and '+' stops at the first word that is not an option, which is an
 * error here. Returns 0, 1 to stop with exit 0, or 2 after one error line.
 */
static int parse_args(struct cli *c, int argc, char **argv)
{
    opterr = 0; /* getopt's own messages would come beside ours */
    for (;;) {
        int id = getopt_long(argc, argv, "+:h", long_opts, NULL), rc;
        if (id == -1)
            break;
        if (id == ':')
            rc = bad("--%s needs a value", opt_name(optopt));
        else if (id == '?')
            rc = bad_option(optopt, argv[optind - 1]);
        else
            rc = take(c, id, optarg);
        if (rc)
            return rc;
    }
    return optind < argc ? bad("unknown option '%s'", argv[optind]) : 0;
}

static void defaults(struct cli *c)
{
    memset(c, 0, sizeof(*c));
    c->o.proto = FGB_IMAP;
    c->o.host = c->so.host = "127.0.0.1";
    c->o.conns = 10;
    c->o.threads = c->so.threads = 1;
    c->o.duration = 10;
    c->o.timeout = 10;
    c->o.ramp = 256;
    c->o.mix_pop3 = 80;
    c->o.mix_imap = 20;
    c->o.stay_s = 30;
    c->o.noop_s = 5;
    c->o.imap_port = 143;
    c->o.pop3_port = 110;
    c->so.messages = 10;
    c->so.msg_size = 102400;
    c->users = "user%d";
    c->pw_pattern = "pass";
    c->user_count = 1;
}

/* Checks what depends on several options; resolves addresses. Returns 0 or 2. */
static int finish(struct cli *c)
{
    struct fgb_opts *o = &c->o;
    if (c->serve)
        return c->port_set ? 0 : bad("%s needs --port", "--serve");
    if (o->tls && o->starttls)
        return bad("%s: choose one of --tls and --starttls", "--tls");
    if ((o->tls_resume || o->sni) && !o->tls && !o->starttls)
        return bad("%s needs --tls or --starttls", o->tls_resume ? "--tls-resume" : "--sni");
    if (o->rate > 0 && o->scenario != SC_LOGIN)
        return bad("--rate applies to the login scenario, not %s", fgb_scenario_names[o->scenario]);
    if (o->threads > o->conns)
        o->threads = o->conns;
    if (!c->port_set)
        o->port = o->proto == FGB_IMAP ? 143 : 110;
    if (o->scenario == SC_MIXED) {
        if (resolve(o->host, o->imap_port, &o->addr[FGB_IMAP], &o->addrlen[FGB_IMAP]) < 0 ||
            resolve(o->host, o->pop3_port, &o->addr[FGB_POP3], &o->addrlen[FGB_POP3]) < 0)
            return 2;
    } else if (resolve(o->host, o->port, &o->addr[o->proto], &o->addrlen[o->proto]) < 0) {
        return 2;
    }
    struct stat st;
    int rc = stat(c->users, &st) == 0 && S_ISREG(st.st_mode)
                     ? users_from_file(c->users, c->pw_pattern, o)
                     : users_from_pattern(c->users, c->user_count, c->pw_pattern, o);
    if (rc < 0)
        return bad("cannot set up the users from '%s'", c->users);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (rlim_t)o->conns + 64 > rl.rlim_cur) {
        fprintf(stderr,
                "forestgate-bench: %d sessions need more descriptors than the limit of "
                "%llu (ulimit -n)\n",
                o->conns, (unsigned long long)rl.rlim_cur);
        return 2;
    }
    return 0;
}

static void on_interrupt(int sig)
{
    (void)sig;
    fgb_interrupted = 1;
}

static int run_client(struct cli *c)
{
    struct fgb_result res;
    /* The first Ctrl-C ends the run early with its results; a second kills. */
    struct sigaction sa = {.sa_handler = on_interrupt, .sa_flags = SA_RESETHAND};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (fgb_client_run(&c->o, &res) < 0) {
        fprintf(stderr, "forestgate-bench: cannot start the threads: %s\n", strerror(errno));
        return 1;
    }
    if (fgb_interrupted)
        fprintf(stderr, "forestgate-bench: interrupted; results of the %.1f s measured\n",
                res.measured_s);
    report_table(stderr, &c->o, &res);
    int rc = 0;
    if (c->o.json && report_json(c->o.json, &c->o, &res) < 0)
        rc = 1;
    uint64_t ops = 0;
    for (int k = 0; k < K_N; k++)
        ops += res.k[k].ops;
    if (ops == 0) {
        fprintf(stderr, "forestgate-bench: no operation succeeded\n");
        rc = 1;
    }
    return rc;
}

int main(int argc, char **argv)
{
    struct cli c;
    defaults(&c);
    int rc = parse_args(&c, argc, argv);
    if (rc)
        return rc == 1 ? 0 : rc;
    rc = finish(&c);
    if (rc == 0) {
        signal(SIGPIPE, SIG_IGN);
        rc = c.serve ? fgb_serve(&c.so) : run_client(&c);
    }
    users_free(c.o.users, c.o.nusers);
    return rc;
}

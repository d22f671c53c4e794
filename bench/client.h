/*
 * The load generator's engine: sessions driven by one epoll loop per thread,
 * each thread owning a slice of the sessions and its own statistics, merged
 * only at the end. The main thread prints progress once per second.
 *
 * All socket I/O of a session goes through sess_recv()/sess_send_raw() so
 * that a TLS transport (implicit or after STARTTLS/STLS) can slot in there
 * without touching the protocol state machines.
 */
#ifndef FGB_CLIENT_H
#define FGB_CLIENT_H

#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>

#include "fgb.h"
#include "hist.h"

enum fgb_scenario { SC_LOGIN, SC_FETCH, SC_IDLE, SC_MIXED };

/* Kinds of error, each counted apart. */
enum fgb_err {
    E_CONNECT,  /* connect() failed or was refused */
    E_GREETING, /* no +OK / * OK greeting */
    E_LOGIN,    /* the login was refused */
    E_COMMAND,  /* a command after login got NO/BAD/-ERR */
    E_PROTOCOL, /* a response we could not parse */
    E_CLOSED,   /* the server closed the connection unexpectedly */
    E_TIMEOUT,  /* no progress for --timeout seconds */
    E_SIZE,     /* a message's bytes differ from its announced size */
    E_TLS,      /* the TLS handshake or STARTTLS/STLS failed */
    E_N
};

/* What an operation is: the scenario's own, or one of mixed's two session kinds. */
enum fgb_kind { K_MAIN, K_POP3_POLL, K_IMAP_STAY, K_N };

struct fgb_user {
    char *name;
    char *pass;
};

struct fgb_opts {
    enum fgb_proto proto;
    enum fgb_scenario scenario;
    const char *host;
    int port;          /* of --proto */
    int imap_port;     /* mixed */
    int pop3_port;     /* mixed */
    int tls, starttls; /* implicit TLS; STARTTLS (IMAP) / STLS (POP3) after the greeting */
    int tls_resume;    /* each session resumes the TLS session of its previous login */
    const char *sni;   /* server name sent in the ClientHello, if any */
    int conns, threads;
    double rate, duration, warmup, timeout;
    int auth_plain;
    int mix_pop3, mix_imap;           /* shares of --conns in mixed */
    double stay_s, noop_s;            /* mixed: how long an IMAP session stays, NOOP interval */
    int ramp;                         /* logins in flight per thread, at most */
    uint32_t fetch_first, fetch_last; /* fetch: only these messages, in turn (0: all) */
    const char *ready_file, *json;
    int quiet;
    struct fgb_user *users;
    size_t nusers;
    /* Resolved addresses, by protocol. */
    struct sockaddr_storage addr[2];
    socklen_t addrlen[2];
};

struct fgb_kstats {
    uint64_t ops;   /* written by its thread, read by the progress line */
    uint64_t bytes; /* message bytes received */
    uint64_t errors[E_N];
    struct hist lat;
};

struct fgb_result {
    struct fgb_kstats k[K_N];
    uint64_t opened, failed, peak_open, peak_logged_in, sched_missed;
    uint64_t tls_handshakes, tls_resumed;
    double measured_s; /* length of the measurement window actually run */
};

extern const char *const fgb_err_names[E_N];
extern const char *const fgb_kind_names[K_N];
extern const char *const fgb_scenario_names[];

/* Set by SIGINT/SIGTERM: the run ends early, with its results. */
extern volatile sig_atomic_t fgb_interrupted;

/* Runs the load as o says; fills *res. Returns 0, or -1 if the threads could not start. */
int fgb_client_run(const struct fgb_opts *o, struct fgb_result *res);

#endif

/*
 * forestgate ctl [-s SOCKET | -c CONFIG] [-t SECONDS] COMMAND...
 *
 * The stats socket answers one line per connection and closes (so socat
 * works as well): the words are joined into that line, the answer is copied
 * to stdout as it arrives. Exit status: 0; 1 when the answer is an error
 * (it starts with "Unknown command", or a line of it starts with "error:",
 * as reload's line for a protocol whose certificates failed does) or does
 * not come in time; 2 for a usage error or a socket that cannot be reached.
 */
#include "ctl.h"

#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Seconds without a byte of answer before giving up. Every command is
 * answered at once (drain too: it answers, then forestgate drains). */
#define CTL_TIMEOUT_S 10

static void ctl_usage(FILE *out)
{
    fprintf(out,
            "Usage: forestgate ctl [-s SOCKET | -c CONFIG] [-t SECONDS] COMMAND...\n"
            "       forestgate ctl [-s SOCKET | -c CONFIG] watch [-i SECONDS] [-n COUNT]\n\n"
            "  -s SOCKET   the stats socket\n"
            "  -c CONFIG   read the socket's path from StatsSocket in CONFIG's [global]\n"
            "              (default: " CTL_DEFAULT_CONFIG " when it is readable,\n"
            "              else " CTL_DEFAULT_SOCKET ")\n"
            "  -t SECONDS  wait at most this long for each part of the answer\n"
            "              (default %d); 0 waits for ever\n\n"
            "COMMAND is sent as one line; \"forestgate ctl help\" lists the commands.\n"
            "watch draws a live view each second (-i) until q or Ctrl-C; with stdout\n"
            "not a terminal it prints a plain snapshot each interval instead.\n",
            CTL_TIMEOUT_S);
}

/* ---- the socket's path ---- */

struct ctl_ini {
    char *path;
    size_t size;
    bool found;
};

static int ctl_ini_key(void *arg, const char *section, const char *name, const char *value)
{
    struct ctl_ini *c = arg;
    if (strcasecmp(section, "global") == 0 && strcasecmp(name, "StatsSocket") == 0) {
        snprintf(c->path, c->size, "%s", value);
        c->found = value[0] != 0;
    }
    return 1;
}

/* StatsSocket from a configuration file, read with the parser forestgate
 * uses (libinih), so comments and case match. Only that key is read: the
 * rest of the file (certificates, the directory) is none of the client's
 * business. Returns 0, or 2 (after saying why unless quiet). */
static int ctl_path_from_config(const char *config, char *out, size_t size, bool quiet)
{
    struct ctl_ini c = {out, size, false};
    if (ini_parse(config, ctl_ini_key, &c) < 0) {
        if (!quiet)
            fprintf(stderr, "forestgate ctl: cannot read %s: %s\n", config, strerror(errno));
        return 2;
    }
    if (!c.found) {
        if (!quiet)
            fprintf(stderr, "forestgate ctl: %s sets no StatsSocket in [global]\n", config);
        return 2;
    }
    return 0;
}

/* -s, else -c's StatsSocket, else the default configuration's when it can
 * be read, else the default socket. Returns 0 or 2. */
static int ctl_socket_path(const char *sock, const char *config, char *out, size_t size)
{
    if (sock) {
        snprintf(out, size, "%s", sock);
        return 0;
    }
    if (config)
        return ctl_path_from_config(config, out, size, false);
    if (ctl_path_from_config(CTL_DEFAULT_CONFIG, out, size, true) == 0)
        return 0;
    snprintf(out, size, "%s", CTL_DEFAULT_SOCKET);
    return 0;
}

/* ---- one command ---- */

/* Waits for events on fd; false on timeout (timeout_ms 0: none). */
static bool ctl_wait(int fd, short events, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    int rc;
    while ((rc = poll(&p, 1, timeout_ms > 0 ? timeout_ms : -1)) < 0 && errno == EINTR)
        ;
    return rc > 0;
}

static enum ctl_result ctl_connect(const char *path, int *fd_r, int *err_r)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sun.sun_path) {
        *err_r = ENAMETOOLONG;
        return CTL_NO_CONNECT;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    /* Non-blocking: a Unix connect then never waits for a full backlog. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        *err_r = errno;
        if (fd >= 0)
            close(fd);
        return CTL_NO_CONNECT;
    }
    *fd_r = fd;
    return CTL_ANSWERED;
}

static enum ctl_result ctl_send(int fd, const char *line, int timeout_ms, int *err_r)
{
    size_t len = strlen(line), off = 0;
    char *msg = malloc(len + 1);
    if (!msg) {
        *err_r = ENOMEM;
        return CTL_BROKEN;
    }
    memcpy(msg, line, len);
    msg[len++] = '\n';
    enum ctl_result rc = CTL_ANSWERED;
    while (off < len && rc == CTL_ANSWERED) {
        ssize_t n = send(fd, msg + off, len - off, MSG_NOSIGNAL);
        if (n >= 0) {
            off += (size_t)n;
        } else if (errno == EAGAIN) {
            if (!ctl_wait(fd, POLLOUT, timeout_ms))
                rc = CTL_TIMEOUT;
        } else if (errno != EINTR) {
            *err_r = errno;
            rc = CTL_BROKEN;
        }
    }
    free(msg);
    return rc;
}

static enum ctl_result ctl_receive(int fd, int timeout_ms, ctl_sink *sink, void *arg, int *err_r)
{
    char buf[16384];
    bool any = false;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0) {
            sink(buf, (size_t)n, arg);
            any = true;
        } else if (n == 0) {
            return any ? CTL_ANSWERED : CTL_EMPTY;
        } else if (errno == EAGAIN) {
            if (!ctl_wait(fd, POLLIN, timeout_ms))
                return CTL_TIMEOUT;
        } else if (errno != EINTR) {
            *err_r = errno;
            return CTL_BROKEN;
        }
    }
}

enum ctl_result ctl_ask(const char *path, const char *line, int timeout_ms, ctl_sink *sink,
                        void *arg, int *err_r)
{
    int fd = -1;
    enum ctl_result rc = ctl_connect(path, &fd, err_r);
    if (rc != CTL_ANSWERED)
        return rc;
    rc = ctl_send(fd, line, timeout_ms, err_r);
    if (rc == CTL_ANSWERED)
        rc = ctl_receive(fd, timeout_ms, sink, arg, err_r);
    close(fd);
    return rc;
}

/* ---- the command line ---- */

/* The answer goes to stdout as it comes; on the way, whether it is an
 * error: its first bytes, and each line's start matched against "error:"
 * across the chunks' edges. */
struct ctl_copy {
    char head[16];
    size_t nhead;
    size_t matched; /* bytes of "error:" matched at the line's start; SIZE_MAX: not */
    bool error_line;
};

static const char ctl_error_prefix[] = "error:";

static void ctl_copy_out(const char *data, size_t len, void *arg)
{
    struct ctl_copy *c = arg;
    size_t take = len < sizeof c->head - c->nhead ? len : sizeof c->head - c->nhead;
    memcpy(c->head + c->nhead, data, take);
    c->nhead += take;
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\n')
            c->matched = 0;
        else if (c->matched < sizeof ctl_error_prefix - 1 &&
                 data[i] == ctl_error_prefix[c->matched])
            c->error_line |= ++c->matched == sizeof ctl_error_prefix - 1;
        else
            c->matched = SIZE_MAX;
    }
    fwrite(data, 1, len, stdout);
    fflush(stdout);
}

static bool ctl_is_error(const struct ctl_copy *c)
{
    static const char unknown[] = "Unknown command";
    return c->error_line ||
           (c->nhead >= sizeof unknown - 1 && memcmp(c->head, unknown, sizeof unknown - 1) == 0);
}

/* The words joined by single spaces; NULL (after saying why) when a word
 * holds a line break, which would make a second command. */
static char *ctl_join(int argc, char **argv)
{
    size_t len = 1;
    for (int i = 0; i < argc; i++) {
        if (strpbrk(argv[i], "\r\n")) {
            fprintf(stderr, "forestgate ctl: a command is one line: no line breaks\n");
            return NULL;
        }
        len += strlen(argv[i]) + 1;
    }
    char *line = calloc(1, len);
    for (int i = 0; line && i < argc; i++) {
        if (i > 0)
            strcat(line, " ");
        strcat(line, argv[i]);
    }
    return line;
}

/* What went wrong, on stderr; the exit status. */
static int ctl_report(enum ctl_result rc, const char *path, int err, int timeout_s)
{
    switch (rc) {
    case CTL_NO_CONNECT:
        fprintf(stderr, "forestgate ctl: cannot connect to %s: %s\n", path, strerror(err));
        return 2;
    case CTL_TIMEOUT:
        fprintf(stderr, "forestgate ctl: no answer from %s within %d s\n", path, timeout_s);
        return 1;
    case CTL_EMPTY:
        fprintf(stderr, "forestgate ctl: %s closed the connection without an answer\n", path);
        return 1;
    case CTL_BROKEN:
        fprintf(stderr, "forestgate ctl: %s: %s\n", path, strerror(err));
        return 1;
    case CTL_ANSWERED:
        break;
    }
    return 0;
}

static int ctl_command(const char *path, int argc, char **argv, int timeout_s)
{
    struct ctl_copy copy = {0};
    int err = 0;
    char *line = ctl_join(argc, argv);
    if (!line)
        return 2;
    if (timeout_s < 0)
        timeout_s = CTL_TIMEOUT_S;
    enum ctl_result rc = ctl_ask(path, line, timeout_s * 1000, ctl_copy_out, &copy, &err);
    bool help = strcmp(line, "help") == 0;
    free(line);
    if (rc != CTL_ANSWERED)
        return ctl_report(rc, path, err, timeout_s);
    if (help) /* the one command the server does not know about */
        printf("watch [-i SECONDS] [-n COUNT]  a live view (forestgate ctl only)\n");
    return ctl_is_error(&copy) ? 1 : 0;
}

int ctl_main(int argc, char **argv)
{
    const char *sock = NULL, *config = NULL;
    char path[4096], *end;
    int opt, timeout_s = -1;

    optind = 0; /* glibc: start afresh; "+" stops at the command's first word */
    while ((opt = getopt(argc, argv, "+s:c:t:h")) != -1) {
        switch (opt) {
        case 's':
            sock = optarg;
            break;
        case 'c':
            config = optarg;
            break;
        case 't':
            timeout_s = (int)strtol(optarg, &end, 10);
            if (*end || end == optarg || timeout_s < 0 || timeout_s > 86400) {
                fprintf(stderr, "forestgate ctl: -t %s: expected seconds, 0 to 86400\n", optarg);
                return 2;
            }
            break;
        case 'h':
            ctl_usage(stdout);
            return 0;
        default:
            ctl_usage(stderr);
            return 2;
        }
    }
    if (optind >= argc || (sock && config)) {
        ctl_usage(stderr);
        return 2;
    }
    if (ctl_socket_path(sock, config, path, sizeof path) != 0)
        return 2;
    if (strcmp(argv[optind], "watch") == 0)
        return ctl_watch(path, argc - optind, argv + optind);
    return ctl_command(path, argc - optind, argv + optind, timeout_s);
}

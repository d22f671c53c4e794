/*
 * forestgate ctl watch [-i SECONDS] [-n COUNT]
 *
 * Each interval: a new connection, "show info", and the screen drawn from it
 * and the answer before (ctl_view.c). On a terminal the screen is redrawn in
 * place with plain ANSI escapes, on the alternate screen so that the
 * person's scrollback is left as it was; keys are read raw (no echo, no line
 * buffering, no signal keys, so Ctrl-C and Ctrl-Z arrive as bytes and the
 * terminal is never left raw by a stop). q, Ctrl-C or Ctrl-D end it, and so
 * do SIGINT, SIGTERM and SIGHUP: each restores the terminal. With stdout not
 * a terminal (a pipe, a log file), each interval prints a plain snapshot
 * with a time stamp and no escapes.
 *
 * A socket that is gone or silent shows "forestgate is not answering" and
 * is tried again each interval; the rates start again with the next answer.
 */
#include "ctl.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define CTL_ANSWER_MAX (1u << 20)
#define CTL_SCREEN_MAX 16384

struct ctl_watch {
    const char *path;
    double interval;      /* seconds */
    long count;           /* screens left; -1: no end */
    bool tty;             /* stdout is a terminal: redraw in place */
    bool keys;            /* stdin is a terminal in raw mode */
    struct termios saved; /* stdin's settings, restored at the end */
    int sfd;              /* signalfd: SIGINT, SIGTERM, SIGHUP, SIGWINCH */
    sigset_t oldmask;
    struct ctl_snap snaps[2];
    int cur;        /* index of the newest answer in snaps */
    bool have_prev; /* snaps[!cur] holds the answer before */
    double prev_t;  /* when it was taken */
    char *screen;   /* the last screen drawn, for a redraw on SIGWINCH */
};

/* A "show info" answer, collected whole. */
struct ctl_answer {
    char *buf;
    size_t len, size;
};

static void ctl_collect(const char *data, size_t len, void *arg)
{
    struct ctl_answer *a = arg;
    if (a->len + len > CTL_ANSWER_MAX)
        len = CTL_ANSWER_MAX - a->len;
    if (a->len + len > a->size) {
        size_t size = a->size ? a->size : 8192;
        while (size < a->len + len)
            size *= 2;
        char *b = realloc(a->buf, size);
        if (!b)
            return;
        a->buf = b;
        a->size = size;
    }
    memcpy(a->buf + a->len, data, len);
    a->len += len;
}

static double ctl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void ctl_term_size(unsigned *rows, unsigned *cols)
{
    struct winsize ws;
    *rows = 24;
    *cols = 80;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
        *rows = ws.ws_row;
        *cols = ws.ws_col;
    }
}

/* ---- the terminal ---- */

static void ctl_write(const char *s, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDOUT_FILENO, s, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        s += n;
        len -= (size_t)n;
    }
}

/* Signals are taken from a signalfd, so the loop sees them between draws,
 * never in the middle of one. */
static int ctl_signals(struct ctl_watch *w)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGWINCH);
    if (sigprocmask(SIG_BLOCK, &set, &w->oldmask) < 0)
        return -1;
    w->sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    return w->sfd < 0 ? -1 : 0;
}

static void ctl_term_enter(struct ctl_watch *w)
{
    if (w->keys) {
        struct termios raw = w->saved;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO | ISIG | IEXTEN);
        raw.c_cc[VMIN] = 1;
        raw.c_cc[VTIME] = 0;
        tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    }
    if (w->tty) /* the alternate screen, the cursor hidden */
        ctl_write("\033[?1049h\033[?25l", 14);
}

static void ctl_term_leave(struct ctl_watch *w)
{
    if (w->tty)
        ctl_write("\033[?25h\033[?1049l", 14);
    if (w->keys)
        tcsetattr(STDIN_FILENO, TCSANOW, &w->saved);
}

/* The screen, from the top left corner: each line cut to the width and
 * cleared to its end, no more lines than the terminal has (no scrolling),
 * the rest of the screen cleared. */
static void ctl_draw_tty(const char *text)
{
    unsigned rows, cols, row = 0;
    size_t cap = 4 * strlen(text) + 16, len = 0; /* "\n" and "\033[K" a line */
    char *out = malloc(cap);
    if (!out)
        return;
    ctl_term_size(&rows, &cols);
    memcpy(out, "\033[H", 3);
    len = 3;
    for (const char *p = text; *p && row < rows; row++) {
        size_t n = strcspn(p, "\n");
        size_t show = n < cols ? n : cols;
        if (row > 0)
            out[len++] = '\n';
        memcpy(out + len, p, show);
        len += show;
        memcpy(out + len, "\033[K", 3);
        len += 3;
        p += n + (p[n] == '\n');
    }
    memcpy(out + len, "\033[J", 3);
    len += 3;
    ctl_write(out, len);
    free(out);
}

/* One plain snapshot for a pipe or a file: a time stamp, the text, a blank
 * line. */
static void ctl_draw_plain(const char *text)
{
    char stamp[64];
    time_t t = time(NULL);
    struct tm tm;
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S%z", localtime_r(&t, &tm));
    printf("---- %s\n%s\n", stamp, text);
    fflush(stdout);
}

/* ---- one screen ---- */

/* Why there is no screen: the failure, or an answer that is not show
 * info's, which is one line ("error: too many stats clients at once; try
 * again"). Control bytes become '?': it is drawn on a terminal. */
static void ctl_why(enum ctl_result rc, int err, const struct ctl_answer *a, char *out, size_t size)
{
    if (rc == CTL_ANSWERED && !a->buf) {
        snprintf(out, size, "out of memory");
    } else if (rc == CTL_ANSWERED) {
        const char *nl = memchr(a->buf, '\n', a->len);
        snprintf(out, size, "%.*s", (int)(nl ? (size_t)(nl - a->buf) : a->len), a->buf);
    } else {
        snprintf(out, size, "%s",
                 rc == CTL_TIMEOUT ? "no answer in time"
                 : rc == CTL_EMPTY ? "closed without an answer"
                                   : strerror(err));
    }
    for (char *c = out; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '?';
}

/* Asks once and composes the screen into w->screen. */
static void ctl_refresh(struct ctl_watch *w)
{
    struct ctl_answer a = {0};
    char clock[16];
    unsigned rows, cols;
    int err = 0;
    /* A forestgate that is stopped (SIGSTOP) or stuck answers nothing: wait
     * no longer than an interval, and at least a second. */
    int timeout_ms = (int)fmax(1000.0, w->interval * 1000.0);
    double t = ctl_now();
    enum ctl_result rc = ctl_ask(w->path, "show info", timeout_ms, ctl_collect, &a, &err);
    time_t now = time(NULL);
    struct tm tm;
    strftime(clock, sizeof clock, "%H:%M:%S", localtime_r(&now, &tm));
    ctl_term_size(&rows, &cols);
    size_t len = (size_t)snprintf(w->screen, CTL_SCREEN_MAX, "%s   every %g s   %s%s\n", w->path,
                                  w->interval, clock, w->keys ? "   q quits" : "");
    if (len >= CTL_SCREEN_MAX)
        len = CTL_SCREEN_MAX - 1; /* a path of 16 kB: cut, never past the end */
    struct ctl_snap *cur = &w->snaps[!w->cur];
    if (rc == CTL_ANSWERED)
        ctl_snap_parse(cur, a.buf, a.len);
    if (rc == CTL_ANSWERED && ctl_snap_get(cur, "version")) {
        ctl_view_render(cur, w->have_prev ? &w->snaps[w->cur] : NULL, t - w->prev_t,
                        w->tty ? cols : 100, w->screen + len, CTL_SCREEN_MAX - len);
        w->cur = !w->cur;
        w->have_prev = true;
        w->prev_t = t;
    } else {
        char why[160];
        ctl_why(rc, err, &a, why, sizeof why);
        snprintf(w->screen + len, CTL_SCREEN_MAX - len,
                 "\nforestgate is not answering (%s: %s); trying again every %g s\n", w->path, why,
                 w->interval);
        w->have_prev = false;
    }
    free(a.buf);
}

static void ctl_draw(const struct ctl_watch *w)
{
    if (w->tty)
        ctl_draw_tty(w->screen);
    else
        ctl_draw_plain(w->screen);
}

/* ---- the loop ---- */

/* Reads what is typed; true when it says quit. */
static bool ctl_keys(struct ctl_watch *w)
{
    char buf[64];
    ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
    if (n == 0)
        w->keys = false; /* stdin closed: stop listening to it */
    for (ssize_t i = 0; i < n; i++)
        if (buf[i] == 'q' || buf[i] == 'Q' || buf[i] == 3 || buf[i] == 4)
            return true;
    return false;
}

/* Handles the signals that arrived; true when one says stop. */
static bool ctl_signal(struct ctl_watch *w)
{
    struct signalfd_siginfo si;
    bool stop = false;
    while (read(w->sfd, &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGWINCH && w->tty)
            ctl_draw(w);
        else if (si.ssi_signo != SIGWINCH)
            stop = true;
    }
    return stop;
}

/* Waits until the next screen is due; false when it is time to stop. */
static bool ctl_wait_next(struct ctl_watch *w, double due)
{
    for (;;) {
        double left = due - ctl_now();
        if (left <= 0)
            return true;
        struct pollfd p[2] = {{.fd = w->sfd, .events = POLLIN},
                              {.fd = STDIN_FILENO, .events = POLLIN}};
        int rc = poll(p, w->keys ? 2 : 1, (int)ceil(left * 1000.0));
        if (rc < 0 && errno != EINTR)
            return false;
        if (rc > 0 && (p[0].revents & POLLIN) && ctl_signal(w))
            return false;
        if (rc > 0 && w->keys && (p[1].revents & (POLLIN | POLLHUP)) && ctl_keys(w))
            return false;
    }
}

static void ctl_loop(struct ctl_watch *w)
{
    double due = ctl_now();
    while (w->count != 0) {
        ctl_refresh(w);
        ctl_draw(w);
        if (w->count > 0)
            w->count--;
        due += w->interval;
        /* After a long pause (a stopped terminal), the next screen is due now. */
        if (due < ctl_now())
            due = ctl_now();
        if (w->count != 0 && !ctl_wait_next(w, due))
            return;
    }
}

static int ctl_watch_options(struct ctl_watch *w, int argc, char **argv)
{
    char *end;
    int opt;
    optind = 0;
    while ((opt = getopt(argc, argv, "+i:n:")) != -1) {
        if (opt == 'i') {
            w->interval = strtod(optarg, &end);
            if (*end || end == optarg || !(w->interval >= 0.1 && w->interval <= 3600)) {
                fprintf(stderr, "forestgate ctl watch: -i %s: expected seconds, 0.1 to 3600\n",
                        optarg);
                return 2;
            }
        } else if (opt == 'n') {
            w->count = strtol(optarg, &end, 10);
            if (*end || end == optarg || w->count < 1) {
                fprintf(stderr, "forestgate ctl watch: -n %s: expected a count of 1 or more\n",
                        optarg);
                return 2;
            }
        } else {
            fprintf(stderr, "Usage: forestgate ctl watch [-i SECONDS] [-n COUNT]\n");
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "Usage: forestgate ctl watch [-i SECONDS] [-n COUNT]\n");
        return 2;
    }
    return 0;
}

int ctl_watch(const char *path, int argc, char **argv)
{
    struct ctl_watch *w = calloc(1, sizeof *w);
    int rc = 2;
    if (!w || !(w->screen = calloc(1, CTL_SCREEN_MAX)))
        goto out;
    w->path = path;
    w->interval = 1;
    w->count = -1;
    w->sfd = -1;
    if ((rc = ctl_watch_options(w, argc, argv)) != 0)
        goto out;
    w->tty = isatty(STDOUT_FILENO);
    w->keys = w->tty && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &w->saved) == 0;
    if (ctl_signals(w) < 0) {
        fprintf(stderr, "forestgate ctl watch: signals: %s\n", strerror(errno));
        rc = 1;
        goto out;
    }
    ctl_term_enter(w);
    ctl_loop(w);
    ctl_term_leave(w);
    sigprocmask(SIG_SETMASK, &w->oldmask, NULL);
    rc = 0;
out:
    if (w && w->sfd >= 0)
        close(w->sfd);
    if (w)
        free(w->screen);
    free(w);
    return rc;
}

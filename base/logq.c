/*
 * The log files' queues and their writer thread.
 *
 * Each log has a byte ring. A worker takes the ring's mutex only to copy
 * its line in (lines stay whole, in the order they were queued); a line
 * that does not fit is counted as dropped, never waited for. One writer
 * thread copies whole lines out in chunks, writes them, rolls files over
 * (by period, by size), removes old rolled files and reopens files on
 * request. Files are opened O_NONBLOCK, so a FIFO or a pipe that takes
 * nothing leaves the writer waiting in poll(), not stuck in write().
 *
 * Waking the writer costs a worker nothing while the writer is busy: it
 * sleeps only after saying so (lw.sleeping) and checking the queues again;
 * a producer that sees it asleep writes its eventfd.
 */
#include "log.h"
#include "logfile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOGQ_CHUNK        (64 * 1024) /* bytes the writer takes out at a time */
#define LOGQ_RETRY_MS     1000        /* after a failed open or write */
#define LOGQ_GIVE_UP_MS   2000        /* at exit, for a file that takes nothing */
#define LOGQ_MAX_OLD      100000      /* rolled files retention looks at, per log */
#define LOGQ_DEFAULT_SIZE (1u << 20)  /* a queue set up before log_files_start (tests) */

struct logq {
    pthread_mutex_t lock;
    char *ring;
    uint64_t size;
    _Atomic uint64_t head; /* bytes ever queued; set under lock */
    uint64_t tail;         /* bytes ever taken out; set under lock by the writer */
    _Atomic uint64_t written, dropped, rollovers;
    _Atomic uint64_t queued, lost; /* lines taken in; of those, dropped after all */
    _Atomic bool on;               /* set up: once on, until log_files_stop */
    /* The writer's alone. */
    int fd;
    bool own_fd;  /* a file of ours (not stderr) */
    bool regular; /* a regular file: rolls over */
    char path[PATH_MAX];
    struct logf_name nm;
    uint64_t fsize;
    time_t fperiod; /* the period of the file's lines; -1: empty */
    char *chunk;
    size_t chunk_n, chunk_off;
    uint64_t retry_at; /* monotonic ms: no write or open before */
    time_t next_clean;
};

static struct logq lq[LOG_FILE_COUNT] = {
        [0 ... LOG_FILE_COUNT - 1] = {.lock = PTHREAD_MUTEX_INITIALIZER, .fd = -1}};

static struct {
    pthread_t thread;
    int efd;
    struct log_roll_conf rc;
    uint32_t period;
    atomic_bool running, sleeping, stop, reopen;
} lw = {.efd = -1};

static const char *const logq_names[LOG_FILE_COUNT] = {"event", "imap_protocol", "pop3_protocol"};

static uint64_t logq_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t logq_lines(const char *s, size_t n)
{
    uint64_t k = 0;
    for (const char *p = s, *e = s + n; (p = memchr(p, '\n', (size_t)(e - p))); p++)
        k++;
    return k;
}

void logq_push(enum log_file which, const char *line, size_t n)
{
    struct logq *q = &lq[which];
    if (!atomic_load_explicit(&lw.running, memory_order_acquire)) {
        if (which == LOG_FILE_EVENT) {
            ssize_t FG_UNUSED rc = write(STDERR_FILENO, line, n);
        }
        return;
    }
    if (!atomic_load(&q->on))
        return;
    pthread_mutex_lock(&q->lock);
    uint64_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
    if (n > q->size - (head - q->tail)) {
        pthread_mutex_unlock(&q->lock);
        atomic_fetch_add_explicit(&q->dropped, 1, memory_order_relaxed);
        return;
    }
    size_t at = (size_t)(head % q->size), first = FG_MIN(n, (size_t)(q->size - at));
    memcpy(q->ring + at, line, first);
    memcpy(q->ring, line + first, n - first);
    atomic_store(&q->head, head + n);
    /* Under the lock: a plain increment, no read-modify-write across cores. */
    atomic_store_explicit(&q->queued, atomic_load_explicit(&q->queued, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    pthread_mutex_unlock(&q->lock);
    if (atomic_load(&lw.sleeping) && atomic_exchange(&lw.sleeping, false)) {
        uint64_t one = 1;
        ssize_t FG_UNUSED rc = write(lw.efd, &one, sizeof one);
    }
}

/* ---- the writer's files ---- */

static int logq_open(struct logq *q)
{
    struct stat st;
    q->fd = open(q->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0640);
    if (q->fd < 0)
        return FG_ERROR;
    q->own_fd = true;
    q->regular = fstat(q->fd, &st) == 0 && S_ISREG(st.st_mode);
    q->fsize = q->regular ? (uint64_t)st.st_size : 0;
    /* A file left by a previous run holds the lines of its last write's period. */
    q->fperiod = q->fsize ? logf_period_start(st.st_mtime, lw.period) : -1;
    return FG_OK;
}

static void logq_close(struct logq *q)
{
    if (q->own_fd && q->fd >= 0)
        close(q->fd);
    q->fd = -1;
}

/* Reads the log's folder and removes what LogFileMaxAge and
 * LogDirectorySizeQuota say is too old or too much. */
static void logq_clean(struct logq *q, time_t now)
{
    q->next_clean = now + 3600;
    if (!q->regular || (!lw.rc.max_age && !lw.rc.dir_quota))
        return;
    DIR *d = opendir(q->nm.dir);
    if (!d)
        return;
    struct logf_old *f = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < LOGQ_MAX_OLD) {
        struct stat st;
        if (!logf_is_rolled(&q->nm, e->d_name) || strlen(e->d_name) >= sizeof f->name ||
            fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (n == cap) {
            struct logf_old *g = realloc(f, (cap = cap ? cap * 2 : 64) * sizeof *f);
            if (!g)
                break;
            f = g;
        }
        snprintf(f[n].name, sizeof f[n].name, "%s", e->d_name);
        f[n].mtime = st.st_mtime;
        f[n].size = (uint64_t)st.st_size;
        n++;
    }
    if (logf_pick(f, n, now, lw.rc.max_age, lw.rc.dir_quota, q->fsize) > 0)
        for (size_t i = 0; i < n; i++)
            if (f[i].remove)
                unlinkat(dirfd(d), f[i].name, 0);
    closedir(d);
    free(f);
}

/* Renames the file to its rolled name and starts a new one. The rename
 * never replaces a file: a taken name moves on to the next number. */
static void logq_roll(struct logq *q, time_t now)
{
    char stamp[32], name[300], to[PATH_MAX + 300];
    logf_stamp(stamp, sizeof stamp, q->fperiod >= 0 ? q->fperiod : now, lw.period);
    for (unsigned seq = 1; seq < 100000; seq++) {
        if (logf_rolled_name(name, sizeof name, &q->nm, stamp, seq) != FG_OK)
            break;
        snprintf(to, sizeof to, "%s/%s", q->nm.dir, name);
        if (renameat2(AT_FDCWD, q->path, AT_FDCWD, to, RENAME_NOREPLACE) == 0 || errno != EEXIST)
            break;
    }
    logq_close(q);
    atomic_fetch_add_explicit(&q->rollovers, 1, memory_order_relaxed);
    if (logq_open(q) != FG_OK)
        q->retry_at = logq_ms() + LOGQ_RETRY_MS;
    logq_clean(q, now);
}

/* How many bytes of s (whole lines) go into the current file, rolling it
 * over first when its period has passed or the next line would pass
 * LogPerFileSizeQuota. */
static size_t logq_fit(struct logq *q, const char *s, size_t n, time_t now)
{
    if (!q->regular)
        return n;
    if (q->fsize > 0 && q->fperiod != logf_period_start(now, lw.period))
        logq_roll(q, now);
    uint64_t quota = lw.rc.file_quota;
    if (!quota || q->fd < 0)
        return n;
    const char *nl = memchr(s, '\n', n);
    size_t first = nl ? (size_t)(nl - s) + 1 : n;
    if (q->fsize > 0 && q->fsize + first > quota) {
        logq_roll(q, now);
        if (q->fd < 0)
            return n;
    }
    if (q->fsize + n <= quota)
        return n;
    /* The whole lines that fit; one line at least. */
    size_t fit = first;
    for (const char *p = s + first; p < s + n && (nl = memchr(p, '\n', (size_t)(s + n - p)));
         p = nl + 1) {
        if (q->fsize + (size_t)(nl - s) + 1 > quota)
            break;
        fit = (size_t)(nl - s) + 1;
    }
    return fit;
}

/* Takes the next whole lines out of the ring; false when it is empty. */
static bool logq_take(struct logq *q)
{
    pthread_mutex_lock(&q->lock);
    uint64_t head = atomic_load_explicit(&q->head, memory_order_relaxed), tail = q->tail;
    pthread_mutex_unlock(&q->lock);
    if (head == tail)
        return false;
    /* The bytes between tail and head are the writer's to read until it
     * moves tail: producers write only past head. */
    size_t n = (size_t)FG_MIN(head - tail, (uint64_t)LOGQ_CHUNK);
    size_t at = (size_t)(tail % q->size), first = FG_MIN(n, (size_t)(q->size - at));
    memcpy(q->chunk, q->ring + at, first);
    memcpy(q->chunk + first, q->ring, n - first);
    const char *nl = memrchr(q->chunk, '\n', n);
    n = nl ? (size_t)(nl - q->chunk) + 1 : n;
    pthread_mutex_lock(&q->lock);
    q->tail = tail + n;
    pthread_mutex_unlock(&q->lock);
    q->chunk_n = n;
    q->chunk_off = 0;
    return true;
}

/* The lines of the chunk that were not written, and will not be. */
static void logq_drop_chunk(struct logq *q)
{
    uint64_t k = logq_lines(q->chunk + q->chunk_off, q->chunk_n - q->chunk_off);
    atomic_fetch_add_explicit(&q->lost, k, memory_order_relaxed);
    atomic_fetch_add_explicit(&q->dropped, k, memory_order_relaxed);
    q->chunk_n = q->chunk_off = 0;
}

enum logq_state { LQ_IDLE, LQ_BUSY, LQ_BLOCKED };

/* Writes what one log has queued, as far as its file takes it. */
static enum logq_state logq_drain(struct logq *q, uint64_t now_ms)
{
    if (now_ms < q->retry_at)
        return LQ_BLOCKED;
    if (q->fd < 0 && logq_open(q) != FG_OK) {
        q->retry_at = now_ms + LOGQ_RETRY_MS;
        return LQ_BLOCKED;
    }
    for (int rounds = 0; rounds < 64; rounds++) {
        if (q->chunk_off == q->chunk_n && !logq_take(q))
            return LQ_IDLE;
        const char *s = q->chunk + q->chunk_off;
        time_t now = time(NULL);
        size_t n = logq_fit(q, s, q->chunk_n - q->chunk_off, now);
        if (q->fd < 0)
            return LQ_BLOCKED;
        ssize_t k = write(q->fd, s, n);
        if (k < 0 && (errno == EAGAIN || errno == EINTR))
            return LQ_BLOCKED;
        if (k <= 0) {
            /* A full disk or a failing one: these lines are lost; try again later. */
            logq_drop_chunk(q);
            q->retry_at = now_ms + LOGQ_RETRY_MS;
            return LQ_BLOCKED;
        }
        atomic_fetch_add_explicit(&q->written, logq_lines(s, (size_t)k), memory_order_relaxed);
        q->chunk_off += (size_t)k;
        q->fsize += (uint64_t)k;
        if (q->fperiod < 0 && k > 0)
            q->fperiod = logf_period_start(now, lw.period);
    }
    return LQ_BUSY;
}

static bool logq_pending(const struct logq *q)
{
    return atomic_load(&q->on) && (q->chunk_off < q->chunk_n || atomic_load(&q->head) != q->tail);
}

static void logq_reopen_all(void)
{
    time_t now = time(NULL);
    for (int i = 0; i < LOG_FILE_COUNT; i++) {
        struct logq *q = &lq[i];
        if (!atomic_load(&q->on) || !q->path[0])
            continue;
        logq_close(q);
        q->retry_at = 0;
        if (logq_open(q) == FG_OK)
            logq_clean(q, now);
    }
}

/* Sleeps until a producer or log_reopen wakes it, a blocked file takes
 * bytes again, or timeout_ms pass. */
static void logq_sleep(int timeout_ms)
{
    struct pollfd pfd[1 + LOG_FILE_COUNT] = {{.fd = lw.efd, .events = POLLIN}};
    nfds_t n = 1;
    atomic_store(&lw.sleeping, true);
    uint64_t now_ms = logq_ms();
    for (int i = 0; i < LOG_FILE_COUNT; i++) {
        const struct logq *q = &lq[i];
        if (!atomic_load(&q->on) || q->fd < 0 || now_ms < q->retry_at)
            continue;
        if (q->chunk_off < q->chunk_n)
            pfd[n++] = (struct pollfd){.fd = q->fd, .events = POLLOUT};
        else if (logq_pending(q))
            timeout_ms = 0; /* queued while the writer was getting ready to sleep */
    }
    if (atomic_load(&lw.reopen) || atomic_load(&lw.stop))
        timeout_ms = 0;
    poll(pfd, n, timeout_ms);
    uint64_t v;
    ssize_t FG_UNUSED rc = read(lw.efd, &v, sizeof v);
    atomic_store(&lw.sleeping, false);
}

/* At exit: what is queued, unless a file took nothing for LOGQ_GIVE_UP_MS. */
static void logq_flush(void)
{
    uint64_t last = logq_ms();
    for (;;) {
        bool left = false, moved = false;
        for (int i = 0; i < LOG_FILE_COUNT; i++) {
            struct logq *q = &lq[i];
            if (!logq_pending(q))
                continue;
            uint64_t before = atomic_load(&q->written);
            q->retry_at = FG_MIN(q->retry_at, logq_ms() + 100);
            logq_drain(q, logq_ms());
            moved |= atomic_load(&q->written) != before;
            left |= logq_pending(q);
        }
        if (!left)
            return;
        if (moved)
            last = logq_ms();
        else if (logq_ms() - last > LOGQ_GIVE_UP_MS)
            break;
        else
            logq_sleep(100);
    }
    for (int i = 0; i < LOG_FILE_COUNT; i++) {
        struct logq *q = &lq[i];
        if (!atomic_load(&q->on))
            continue;
        logq_drop_chunk(q);
        uint64_t head = atomic_load(&q->head);
        while (q->tail != head && logq_take(q))
            logq_drop_chunk(q);
    }
}

static void *logq_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&lw.stop)) {
        if (atomic_exchange(&lw.reopen, false))
            logq_reopen_all();
        bool busy = false;
        int timeout = 3600 * 1000;
        uint64_t now_ms = logq_ms();
        time_t now = time(NULL);
        for (int i = 0; i < LOG_FILE_COUNT; i++) {
            struct logq *q = &lq[i];
            if (!atomic_load(&q->on))
                continue;
            enum logq_state s = logq_drain(q, now_ms);
            busy |= s == LQ_BUSY;
            if (s == LQ_BLOCKED)
                timeout = FG_MIN(timeout, q->retry_at > now_ms ? (int)(q->retry_at - now_ms)
                                                               : LOGQ_RETRY_MS);
            if (now >= q->next_clean)
                logq_clean(q, now);
        }
        if (!busy)
            logq_sleep(timeout);
    }
    logq_flush();
    return NULL;
}

/* ---- set-up ---- */

/* Allocates a log's queue and opens its file (path NULL: stderr); FG_ERROR
 * with errno set. The writer sees the log once it is on, set last. */
static int logq_init(enum log_file which, const char *path)
{
    struct logq *q = &lq[which];
    q->size = lw.rc.queue_size ? lw.rc.queue_size : LOGQ_DEFAULT_SIZE;
    q->ring = malloc(q->size);
    q->chunk = malloc(LOGQ_CHUNK);
    q->fperiod = -1;
    if (!q->ring || !q->chunk) {
        errno = ENOMEM;
        goto fail;
    }
    if (!path) {
        q->fd = STDERR_FILENO;
    } else {
        if (snprintf(q->path, sizeof q->path, "%s", path) >= (int)sizeof q->path ||
            logf_split(path, &q->nm) != FG_OK) {
            errno = ENAMETOOLONG;
            goto fail;
        }
        if (logq_open(q) != FG_OK)
            goto fail;
        logq_clean(q, time(NULL));
    }
    atomic_store_explicit(&q->on, true, memory_order_release);
    return FG_OK;
fail:
    free(q->ring);
    free(q->chunk);
    q->ring = q->chunk = NULL;
    return FG_ERROR;
}

static void logq_free(struct logq *q)
{
    logq_close(q);
    free(q->ring);
    free(q->chunk);
    q->ring = q->chunk = NULL;
    atomic_store(&q->on, false);
}

int log_files_start(const struct log_roll_conf *rc, const char *event_path)
{
    lw.rc = *rc;
    lw.period = rc->roll_seconds ? rc->roll_seconds : rc->roll == LOG_ROLL_HOURLY ? 3600 : 86400;
    lw.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (lw.efd < 0) {
        log_msg(LOG_ERROR, "log", "cannot start the log writer: %s", strerror(errno));
        return FG_ERROR;
    }
    if (logq_init(LOG_FILE_EVENT, event_path && *event_path ? event_path : NULL) != FG_OK) {
        log_msg(LOG_ERROR, "log", "cannot open EventLogFile %s: %s", event_path, strerror(errno));
        goto fail;
    }
    /* The writer takes no signal: SIGPIPE from a closed pipe stays pending
     * and write() says EPIPE. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int err = pthread_create(&lw.thread, NULL, logq_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
        log_msg(LOG_ERROR, "log", "cannot start the log writer: %s", strerror(err));
        goto fail;
    }
    atomic_store_explicit(&lw.running, true, memory_order_release);
    return FG_OK;
fail:
    logq_free(&lq[LOG_FILE_EVENT]);
    close(lw.efd);
    lw.efd = -1;
    return FG_ERROR;
}

int plog_enable(int p, const char *dir)
{
    static const char *const files[FG_PROTO_COUNT] = {
            [FG_PROTO_IMAP] = "imap-protocol.log", [FG_PROTO_POP3] = "pop3-protocol.log"};
    struct logq *q = &lq[LOG_FILE_IMAP + p];
    char path[PATH_MAX];
    if (!atomic_load(&q->on)) {
        if (snprintf(path, sizeof path, "%s/%s", dir, files[p]) >= (int)sizeof path) {
            errno = ENAMETOOLONG;
            return FG_ERROR;
        }
        if (logq_init(LOG_FILE_IMAP + p, path) != FG_OK)
            return FG_ERROR;
    }
    /* Release: a worker that sees the flag finds the queue set up. */
    atomic_store_explicit(&plog_on[p], true, memory_order_release);
    return FG_OK;
}

void plog_disable(int p)
{
    atomic_store_explicit(&plog_on[p], false, memory_order_relaxed);
}

void log_files_stop(void)
{
    if (!atomic_load(&lw.running))
        return;
    for (int p = 0; p < FG_PROTO_COUNT; p++)
        plog_disable(p);
    /* From here the event log goes to stderr at once; the writer empties
     * the queues of what came before. */
    atomic_store_explicit(&lw.running, false, memory_order_release);
    atomic_store(&lw.stop, true);
    uint64_t one = 1;
    ssize_t FG_UNUSED rc = write(lw.efd, &one, sizeof one);
    pthread_join(lw.thread, NULL);
    for (int i = 0; i < LOG_FILE_COUNT; i++)
        logq_free(&lq[i]);
    close(lw.efd);
    lw.efd = -1;
}

void log_reopen(void)
{
    if (!atomic_load(&lw.running))
        return;
    atomic_store(&lw.reopen, true);
    uint64_t one = 1;
    ssize_t FG_UNUSED rc = write(lw.efd, &one, sizeof one);
}

void log_counters(enum log_file which, struct log_counters *out)
{
    const struct logq *q = &lq[which];
    /* Written and lost before queued: a line counted in neither is still
     * queued, so queued is never read below what is waiting. */
    uint64_t lost = atomic_load(&q->lost);
    out->written = atomic_load(&q->written);
    out->dropped = atomic_load_explicit(&q->dropped, memory_order_relaxed);
    out->rollovers = atomic_load_explicit(&q->rollovers, memory_order_relaxed);
    uint64_t queued = atomic_load(&q->queued);
    out->queued = queued >= out->written + lost ? queued - out->written - lost : 0;
}

const char *log_file_name(enum log_file which)
{
    return logq_names[which];
}

void log_counters_print(FILE *out)
{
    for (int i = 0; i < LOG_FILE_COUNT; i++) {
        struct log_counters c;
        log_counters((enum log_file)i, &c);
        fprintf(out,
                "log_%s_written_total: %llu\nlog_%s_dropped_total: %llu\n"
                "log_%s_rollovers_total: %llu\nlog_%s_queued: %llu\n",
                logq_names[i], (unsigned long long)c.written, logq_names[i],
                (unsigned long long)c.dropped, logq_names[i], (unsigned long long)c.rollovers,
                logq_names[i], (unsigned long long)c.queued);
    }
}

/*
 * Event log: one logfmt line per event on stderr (key=value, values quoted
 * when needed). Values that come from clients are escaped, so a crafted user
 * name cannot forge a log line. Passwords are never given to the logger.
 *
 * Protocol logs (ProtocolLogEnabled) go to LogFileLocation, one file per
 * protocol. EventLogFile sends the event log to a file; files roll over
 * and old ones are removed (base/logq.c, base/logfile.c).
 */
#ifndef FG_LOG_H
#define FG_LOG_H

#include "common.h"
#include "login.h"

#include <stdatomic.h>
#include <stdio.h>

enum log_level {
    LOG_ERROR,
    LOG_WARN,
    LOG_INFO,
    LOG_DEBUG,
};

struct log_line {
    char buf[2048];
    size_t n;
    bool skip; /* below the log level */
};

/* LogLevel: an atomic, as the stats socket's set changes it while every
 * thread logs (core/tune.c). */
extern _Atomic enum log_level log_level;

#define log_enabled(level) ((level) <= atomic_load_explicit(&log_level, memory_order_relaxed))

/* Starts a line: ts=... level=... event=... */
void log_begin(struct log_line *l, enum log_level level, const char *event);

/*
 * Adds key=value, quoted when logfmt needs it (an empty value, a space or a
 * control byte, '"', '=', '\'). Inside, '"' and '\' get a backslash and
 * control bytes become \xHH, so the line stays one line and reads back to
 * the bytes given; other bytes (UTF-8) pass as they are. A value too long
 * for the line is cut before the first escape that does not fit whole; a
 * field whose key does not fit is left out.
 */
void log_str(struct log_line *l, const char *key, const char *v, size_t n);

static inline void log_cstr(struct log_line *l, const char *key, const char *v)
{
    log_str(l, key, v, __builtin_strlen(v));
}

/* Adds key=value with a printf-formatted value the caller knows to be safe. */
void log_fmt(struct log_line *l, const char *key, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Queues the line whole (or, before log_files_start, writes it to stderr
 * with one write(2)), so lines from workers never interleave. */
void log_end(struct log_line *l);

/* A line with just an event and a message. */
void log_msg(enum log_level level, const char *event, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Protocol logging on, by protocol: ProtocolLogEnabled, which the stats
 * socket's set may turn off and on again (core/tune.c). */
extern _Atomic bool plog_on[FG_PROTO_COUNT];

/* Queues "ts session dir line" for a protocol's log. */
void plog_write(enum fg_proto p, const char *session, const char *dir, const char *line, size_t n);

/*
 * The log files (base/logq.c). Once log_files_start has run, a line is
 * copied into its log's bounded queue and a writer thread writes it, so a
 * worker never waits for a disk; a line that finds its queue full is
 * dropped and counted. Before, the event log is written to stderr at once,
 * which start-up errors need.
 */
enum log_file {
    LOG_FILE_EVENT,
    LOG_FILE_IMAP, /* LOG_FILE_IMAP + enum fg_proto */
    LOG_FILE_POP3,
    LOG_FILE_COUNT,
};

enum log_roll {
    LOG_ROLL_HOURLY,
    LOG_ROLL_DAILY,
};

/* When files roll over and how long rolled files stay. */
struct log_roll_conf {
    uint8_t roll;          /* LogFileRollOverSettings: enum log_roll */
    uint32_t roll_seconds; /* LogFileRollOverSeconds (tests): overrides roll when set */
    uint64_t file_quota;   /* LogPerFileSizeQuota, bytes; 0: no limit */
    uint32_t max_age;      /* LogFileMaxAge, seconds; 0: no limit */
    uint64_t dir_quota;    /* LogDirectorySizeQuota, bytes per log; 0: no limit */
    uint64_t queue_size;   /* LogQueueSize, bytes per log */
};

struct log_counters {
    uint64_t written;   /* lines written */
    uint64_t dropped;   /* lines lost: queue full, or the file could not take them */
    uint64_t rollovers; /* files rolled over */
    uint64_t queued;    /* lines waiting in the queue now */
};

/* Opens the event log (event_path NULL or "": it stays on stderr) and
 * starts the writer; protocol logs are added by plog_enable. FG_ERROR,
 * logged, when the file cannot be opened. */
int log_files_start(const struct log_roll_conf *rc, const char *event_path);

/* Writes what is queued (giving up on a file that takes nothing for two
 * seconds), stops the writer and closes the files; later lines go to
 * stderr at once. */
void log_files_stop(void);

/* Reopens every log file by its path (after logrotate renamed it); the
 * writer does it, soon after. Any thread. */
void log_reopen(void);

void log_counters(enum log_file which, struct log_counters *out);

/* "event", "imap_protocol", "pop3_protocol". */
const char *log_file_name(enum log_file which);

/* The counters as "log_event_written_total: N" lines (and the gauge
 * "log_event_queued: N"), for show info. */
void log_counters_print(FILE *out);

/* base/logq.c's entry for log.c's lines: queues a whole line for its log,
 * or counts it dropped when the queue is full. Before the writer runs, an
 * event line goes to stderr at once and a protocol line nowhere. */
void logq_push(enum log_file which, const char *line, size_t n);

/* Turns protocol p's log on, opening its file (dir/imap-protocol.log,
 * pop3-protocol.log) and its queue the first time. FG_OK, or FG_ERROR with
 * errno set (the log stays off). Main thread only. */
int plog_enable(int p, const char *dir);
void plog_disable(int p);

/* Whether protocol p's lines are wanted now. */
static inline bool plog_enabled(int p)
{
    return atomic_load_explicit(&plog_on[p], memory_order_acquire);
}

#endif

/*
 * Event log: one logfmt line per event on stderr (key=value, values quoted
 * when needed). Values that come from clients are escaped, so a crafted user
 * name cannot forge a log line. Passwords are never given to the logger.
 *
 * Protocol logs (ProtocolLogEnabled) go to LogFileLocation, one file per
 * protocol.
 */
#ifndef FG_LOG_H
#define FG_LOG_H

#include "common.h"
#include "login.h"

#include <stdatomic.h>

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

/* Writes the line with one write(2), so lines from workers never interleave. */
void log_end(struct log_line *l);

/* A line with just an event and a message. */
void log_msg(enum log_level level, const char *event, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Protocol log files, by protocol; -1 until opened. Shared by all workers:
 * O_APPEND writes of whole lines do not interleave. A file, once open,
 * stays open until the process ends (a worker may be writing to it);
 * ProtocolLogEnabled is the flag beside it, which the stats socket's set
 * may turn off and on again (core/tune.c). */
extern _Atomic int plog_fds[FG_PROTO_COUNT];
extern _Atomic bool plog_on[FG_PROTO_COUNT];

/* Opens the protocol log of one protocol for appending; returns the fd, or
 * FG_ERROR with errno set. */
int plog_open(const char *dir, const char *proto);

/* Turns protocol p's log on, opening its file in dir first if it is not
 * open yet. FG_OK, or FG_ERROR with errno set (the log stays off). Main
 * thread only. */
int plog_enable(int p, const char *dir);
void plog_disable(int p);

/* Protocol p's log file while its log is on, else -1. */
static inline int plog_fd(int p)
{
    if (!atomic_load_explicit(&plog_on[p], memory_order_acquire))
        return -1;
    return atomic_load_explicit(&plog_fds[p], memory_order_relaxed);
}

/* Appends "ts session dir line" to a protocol log. */
void plog_write(int fd, const char *session, const char *dir, const char *line, size_t n);

#endif

/*
 * The log files' pure parts: sizes and rolled-file names as settings and
 * the directory give them, and which rolled files retention removes. No
 * I/O: base/logq.c does the writing, and the unit tests call these alone.
 *
 * A log is written at its own path (imap-protocol.log); a rollover renames
 * it to STEM-STAMP-N.EXT (imap-protocol-20261203-1.log), STAMP being the UTC
 * period the file covers (20261203 daily, 20261203T08 hourly, 20261203T081502
 * with a test's roll-over in seconds) and N the first free number from 1.
 */
#ifndef FG_LOGFILE_H
#define FG_LOGFILE_H

#include "common.h"

#include <limits.h>
#include <sys/types.h>

/* A log's path in parts: "/var/log/fg/imap-protocol.log" is the folder
 * "/var/log/fg", the stem "imap-protocol" and the extension ".log". */
struct logf_name {
    char dir[PATH_MAX];
    char stem[256];
    char ext[32]; /* "" when the name has none */
};

/* Splits a path; FG_ERROR when a part does not fit. */
int logf_split(const char *path, struct logf_name *out);

/* "10485760", "10MB", "10 MB", "512KB", "1GB" (Exchange's units, powers of
 * 1024; B, KB, MB, GB, TB, any case) into bytes; Exchange's "Unlimited" is 0. */
int logf_parse_size(const char *v, uint64_t *out);

/* The first second of the period of `period` seconds that holds t (UTC). */
time_t logf_period_start(time_t t, uint32_t period);

/* The stamp of the period that starts at start: YYYYMMDD for a day or more,
 * YYYYMMDDTHH for an hour or more, else YYYYMMDDTHHMMSS. */
void logf_stamp(char *dst, size_t n, time_t start, uint32_t period);

/* "STEM-STAMP-SEQ.EXT" (the name only); FG_ERROR when it does not fit. */
int logf_rolled_name(char *dst, size_t n, const struct logf_name *nm, const char *stamp,
                     unsigned seq);

/* Whether a file name in the log's folder is one of its rolled files. */
bool logf_is_rolled(const struct logf_name *nm, const char *file);

/* A rolled file, as retention sees it. */
struct logf_old {
    char name[300];
    time_t mtime;
    uint64_t size;
    bool remove; /* set by logf_pick */
};

/*
 * Marks the rolled files to remove: those last written more than max_age
 * seconds before now (0: no limit), then, oldest first, as many as it takes
 * to bring them and the current file (live bytes) within quota bytes (0: no
 * limit). Sorts f by mtime, oldest first. Returns how many are marked.
 */
size_t logf_pick(struct logf_old *f, size_t n, time_t now, uint32_t max_age, uint64_t quota,
                 uint64_t live);

#endif

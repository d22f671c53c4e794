/*
 * The stats socket's commands that the main thread answers at once from
 * shared counters: "show info", "show settings", "show backends", the cache
 * and throttle commands, "set" (tune.h), "help". The server, and the
 * commands that need the workers or the main loop, are in statsrv.c.
 */
#ifndef FG_STATS_H
#define FG_STATS_H

#include "../base/log.h"
#include "../directory/dir.h"
#include "bhost.h"
#include "limits.h"
#include "worker.h"

struct stats {
    struct fg_config *cfg; /* set changes the settings that can change at run time (tune.c) */
    struct worker *workers;
    unsigned nworkers;
    uint32_t slots;
    struct dir *dir;            /* NULL: no directory pool */
    struct bhost_table *bhosts; /* the backend hosts' health */
    struct limits *limits;      /* the connection limits' counts */
};

/* Writes the answer to one command into out. */
void stats_command(const struct stats *st, const char *cmd, FILE *out);

#endif

/*
 * The stats socket: a Unix socket that answers one command per connection,
 * in the manner of HAProxy's. Commands: "show info", "show settings",
 * "show backends", "set" (tune.h), "help".
 */
#ifndef FG_STATS_H
#define FG_STATS_H

#include "../base/log.h"
#include "../directory/dir.h"
#include "bhost.h"
#include "limits.h"
#include "worker.h"

struct stats {
    int fd;
    struct fg_config *cfg; /* set changes the settings that can change at run time (tune.c) */
    struct worker *workers;
    unsigned nworkers;
    uint32_t slots;
    struct dir *dir;            /* NULL: no directory pool */
    struct bhost_table *bhosts; /* the backend hosts' health */
    struct limits *limits;      /* the connection limits' counts */
};

/* Opens the socket; returns FG_OK, or FG_ERROR after logging why. */
int stats_open(struct stats *st, const char *path);

/* Serves one client that connected (the listening socket is readable).
 * FG_OK, or FG_AGAIN when it could not be accepted for want of descriptors
 * or memory: it waits in the backlog, and the socket stays readable, so the
 * caller waits a while before polling it again. */
int stats_serve(struct stats *st);

void stats_close(struct stats *st, const char *path);

/* Writes the answer to one command into out. */
void stats_command(const struct stats *st, const char *cmd, FILE *out);

#endif

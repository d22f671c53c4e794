/*
 * Commands from the stats socket to the workers: list sessions, kick them,
 * drain. A connection belongs to one worker and only that worker may touch
 * it, so the main thread never reads the slot tables: it posts one part of
 * the command to each worker's mailbox and goes on serving. Each worker runs
 * its part between two batches of completions, writes its answer into the
 * part, and the last one to finish wakes the main thread through done_fd.
 * Nothing waits on anything.
 */
#ifndef FG_WCMD_H
#define FG_WCMD_H

#include "ring.h"

#include <stdio.h>

enum wcmd_type {
    WCMD_SESSIONS,      /* arg: "", "user NAME", "client ADDR", "backend HOST" */
    WCMD_KICK_USER,     /* arg: a login name or mailbox */
    WCMD_KICK_SESSION,  /* arg: a session ID */
    WCMD_STOP_ACCEPTING /* drain: close the listeners; sessions go on */
};

struct wcmd;

/* One worker's share of a command, and its answer. */
struct wcmd_part {
    struct fg_list node; /* in the worker's mailbox */
    struct wcmd *cmd;
    char *out; /* the worker's lines (malloc'd), NULL when none */
    size_t len;
    unsigned count; /* sessions listed or kicked */
};

struct wcmd {
    enum wcmd_type type;
    char key[16];  /* the filter's kind: user, client, backend */
    char arg[256]; /* its value, or the name or ID */
    _Atomic unsigned pending;
    int done_fd;           /* an eventfd of the main thread's */
    struct fg_list orphan; /* the main thread's, once its client has gone */
    unsigned nparts;
    struct wcmd_part parts[];
};

/* Parses "show sessions [user|client|backend X]", "kick user NAME" and "kick
 * session ID" into a command for n workers; NULL with *err set when the
 * command is malformed, or (with *err NULL) when memory runs out. */
struct wcmd *wcmd_parse(const char *line, unsigned n, int done_fd, const char **err);

/* A command of the given type with no argument. */
struct wcmd *wcmd_new(enum wcmd_type type, unsigned n, int done_fd);

/* Posts part i to workers[i], for every worker. */
void wcmd_post(struct worker *workers, struct wcmd *c);

/* Whether every worker has answered; the parts are then the main thread's. */
bool wcmd_done(struct wcmd *c);

/* Writes the answers, in worker order, after a header for SESSIONS. */
void wcmd_answer(const struct wcmd *c, FILE *out);

void wcmd_free(struct wcmd *c);

/* On the worker: takes every part in its mailbox, in order, into *parts. */
void wcmd_take_mail(struct worker *w, struct fg_list *parts);

/* On the worker: runs a SESSIONS or KICK part. */
void wcmd_run(struct worker *w, struct wcmd_part *p);

/* On the worker: its part is answered; the last wakes the main thread. */
void wcmd_part_done(struct wcmd_part *p);

#endif

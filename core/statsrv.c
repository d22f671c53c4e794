#include "statsrv.h"

#include "tune.h"
#include "wcmd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

enum sc_phase {
    SC_READ,  /* waiting for the command line */
    SC_WAIT,  /* the workers are answering */
    SC_WRITE, /* sending the answer */
};

struct statsrv_client {
    struct ev_handler h;
    struct statsrv *sv;
    struct fg_list node;
    enum sc_phase phase;
    uint64_t deadline_ms;
    struct wcmd *cmd; /* SC_WAIT */
    char *out;        /* the answer */
    size_t len, off;
    size_t n;       /* bytes in line */
    bool out_armed; /* EPOLLOUT is what the loop watches */
    char line[STATSRV_LINE_MAX];
};

static void statsrv_client_free(struct statsrv_client *c)
{
    struct statsrv *sv = c->sv;
    ev_del(sv->loop, &c->h);
    close(c->h.fd);
    fg_list_del(&c->node);
    sv->nclients--;
    /* A worker may still write into it: freed once all have answered. */
    if (c->cmd)
        fg_list_add_tail(&sv->orphans, &c->cmd->orphan);
    free(c->out);
    free(c);
}

/* The answer is ready in out: send what the socket takes now. */
static void statsrv_send(struct statsrv_client *c)
{
    while (c->off < c->len) {
        ssize_t k = send(c->h.fd, c->out + c->off, c->len - c->off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->out_armed) {
                c->phase = SC_WRITE;
                c->out_armed = true;
                ev_mod(c->sv->loop, &c->h, EPOLLOUT);
            }
            c->deadline_ms = ev_now_ms() + STATSRV_WRITE_MS;
            return;
        }
        if (k <= 0)
            break;
        c->off += (size_t)k;
    }
    statsrv_client_free(c);
}

/* Takes the answer written into a memory stream and starts sending it. */
static void statsrv_reply(struct statsrv_client *c, FILE *mem)
{
    if (!mem || fclose(mem) != 0) {
        free(c->out);
        c->out = strdup("error: out of memory\n");
        c->len = c->out ? strlen(c->out) : 0;
    }
    c->off = 0;
    statsrv_send(c);
}

/* The answer waits for cmd, which the workers are running. */
static void statsrv_wait(struct statsrv_client *c, struct wcmd *cmd)
{
    c->cmd = cmd;
    c->phase = SC_WAIT;
    ev_mod(c->sv->loop, &c->h, 0);
}

/* Commands the workers answer: posted now, answered in statsrv_on_done. */
static bool statsrv_worker_command(struct statsrv_client *c, FILE **mem)
{
    struct statsrv *sv = c->sv;
    const char *err;
    struct wcmd *cmd = wcmd_parse(c->line, sv->st->nworkers, sv->done.fd, &err);
    if (!cmd && err && strcmp(err, "not a worker command") == 0)
        return false;
    if (!cmd) {
        fprintf(*mem, "error: %s\n", err ? err : "out of memory");
        return true;
    }
    if (cmd->type != WCMD_SESSIONS)
        log_msg(LOG_INFO, "kick", "the stats socket kicks %s %s", cmd->key, cmd->arg);
    fclose(*mem);
    *mem = NULL;
    free(c->out);
    c->out = NULL;
    c->len = 0;
    statsrv_wait(c, cmd);
    wcmd_post(sv->st->workers, cmd);
    return true;
}

/* "show settings [SECTION [NAME]]": the sections whose header matches. */
static void statsrv_settings(struct statsrv *sv, const char *arg, FILE *out)
{
    char *all = NULL, want[160];
    size_t n = 0;
    FILE *m = open_memstream(&all, &n);
    if (!m) {
        fprintf(out, "error: out of memory\n");
        return;
    }
    config_dump(sv->st->cfg, m);
    fclose(m);
    /* "forest Corp" is the section [forest:Corp]. */
    snprintf(want, sizeof want, "%s", arg);
    char *sp = strchr(want, ' ');
    if (sp)
        *sp = ':';
    bool on = false, any = false;
    for (char *line = strtok(all, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '[') {
            size_t k = strlen(want);
            on = strncasecmp(line + 1, want, k) == 0 &&
                 (line[1 + k] == ']' || (!sp && line[1 + k] == ':'));
            any |= on;
        }
        if (on)
            fprintf(out, "%s\n", line);
    }
    if (!any)
        fprintf(out, "error: no section [%s]; the sections are those of show settings\n", want);
    free(all);
}

static void statsrv_execute(struct statsrv_client *c)
{
    struct statsrv *sv = c->sv;
    const char *cmd = c->line;
    FILE *mem = open_memstream(&c->out, &c->len);
    if (!mem) {
        statsrv_reply(c, NULL);
        return;
    }
    if (statsrv_worker_command(c, &mem)) {
        if (mem)
            statsrv_reply(c, mem);
        return;
    }
    if (strcmp(cmd, "reload") == 0 && sv->hooks.reload)
        sv->hooks.reload(sv->hooks.ctx, mem);
    else if ((strcmp(cmd, "drain") == 0 || strncmp(cmd, "drain ", 6) == 0) && sv->hooks.drain) {
        struct wcmd *w =
                sv->hooks.drain(sv->hooks.ctx, cmd + 5 + strspn(cmd + 5, " "), sv->done.fd, mem);
        if (w) {
            if (fclose(mem) != 0) {
                free(c->out);
                c->out = NULL;
                c->len = 0;
            }
            statsrv_wait(c, w);
            return;
        }
    } else if (strncmp(cmd, "set", 3) == 0 && (cmd[3] == 0 || cmd[3] == ' '))
        tune_command(sv->st, cmd + 3, mem);
    else if (strncmp(cmd, "show settings ", 14) == 0 && cmd[14 + strspn(cmd + 14, " ")])
        statsrv_settings(sv, cmd + 14 + strspn(cmd + 14, " "), mem);
    else
        stats_command(sv->st, cmd, mem);
    statsrv_reply(c, mem);
}

/* Bytes of the command line; it ends with LF, or with the client's EOF. */
static void statsrv_on_read(struct statsrv_client *c)
{
    for (;;) {
        ssize_t k = recv(c->h.fd, c->line + c->n, sizeof c->line - 1 - c->n, MSG_DONTWAIT);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (k < 0) {
            statsrv_client_free(c);
            return;
        }
        char *lf = memchr(c->line + c->n, '\n', (size_t)k);
        c->n += (size_t)k;
        if (lf || k == 0) {
            c->line[lf ? (size_t)(lf - c->line) : c->n] = 0;
            c->line[strcspn(c->line, "\r")] = 0;
            if (k == 0 && c->n == 0) {
                statsrv_client_free(c);
                return;
            }
            statsrv_execute(c);
            return;
        }
        if (c->n == sizeof c->line - 1) {
            c->out = strdup("error: command too long\n");
            c->len = c->out ? strlen(c->out) : 0;
            c->off = 0;
            statsrv_send(c);
            return;
        }
    }
}

static void statsrv_on_client(struct ev_handler *h, uint32_t events)
{
    struct statsrv_client *c = FG_CONTAINER_OF(h, struct statsrv_client, h);
    if (c->phase == SC_READ)
        statsrv_on_read(c);
    else if (c->phase == SC_WAIT && (events & (EPOLLERR | EPOLLHUP)))
        statsrv_client_free(c); /* gone before the workers answered */
    else if (c->phase == SC_WRITE && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
        statsrv_send(c);
}

/* Past the client limit, a client hears why and goes. */
static void statsrv_refuse(int fd)
{
    static const char msg[] = "error: too many stats clients at once; try again\n";
    ssize_t FG_UNUSED rc = send(fd, msg, sizeof msg - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    close(fd);
}

static void statsrv_on_accept(struct ev_handler *h, uint32_t events)
{
    struct statsrv *sv = FG_CONTAINER_OF(h, struct statsrv, listen);
    (void)events;
    for (;;) {
        int fd = accept4(h->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            /* Out of descriptors: the client waits in the backlog, and the
             * listener rests a second rather than spin. */
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS) {
                ev_mod(sv->loop, h, 0);
                sv->paused_until_ms = ev_now_ms() + 1000;
            }
            return;
        }
        if (sv->nclients >= STATSRV_MAX_CLIENTS) {
            statsrv_refuse(fd);
            continue;
        }
        struct statsrv_client *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->h = (struct ev_handler){.fd = fd, .fn = statsrv_on_client};
        c->sv = sv;
        c->deadline_ms = ev_now_ms() + STATSRV_READ_MS;
        if (ev_add(sv->loop, &c->h, EPOLLIN) != FG_OK) {
            close(fd);
            free(c);
            continue;
        }
        fg_list_add_tail(&sv->clients, &c->node);
        sv->nclients++;
    }
}

/* A worker answered the last part of some command. */
static void statsrv_on_done(struct ev_handler *h, uint32_t events)
{
    struct statsrv *sv = FG_CONTAINER_OF(h, struct statsrv, done);
    uint64_t v;
    (void)events;
    ssize_t FG_UNUSED rc = read(h->fd, &v, sizeof v);
    struct fg_list *n, *next;
    for (n = sv->clients.next; n != &sv->clients; n = next) {
        next = n->next; /* statsrv_send may free the client */
        struct statsrv_client *c = FG_CONTAINER_OF(n, struct statsrv_client, node);
        if (c->phase != SC_WAIT || !wcmd_done(c->cmd))
            continue;
        /* What the command's caller wrote before it was posted comes first. */
        char *before = c->out;
        size_t blen = c->len;
        c->out = NULL;
        FILE *mem = open_memstream(&c->out, &c->len);
        if (mem) {
            if (before)
                fwrite(before, 1, blen, mem);
            wcmd_answer(c->cmd, mem);
        }
        free(before);
        wcmd_free(c->cmd);
        c->cmd = NULL;
        statsrv_reply(c, mem);
    }
    for (n = sv->orphans.next; n != &sv->orphans; n = next) {
        next = n->next;
        struct wcmd *cmd = FG_CONTAINER_OF(n, struct wcmd, orphan);
        if (wcmd_done(cmd)) {
            fg_list_del(n);
            wcmd_free(cmd);
        }
    }
}

static void statsrv_on_tick(struct ev_tick *t, uint64_t now)
{
    struct statsrv *sv = FG_CONTAINER_OF(t, struct statsrv, tick);
    if (sv->paused_until_ms && now >= sv->paused_until_ms) {
        sv->paused_until_ms = 0;
        ev_mod(sv->loop, &sv->listen, EPOLLIN);
    }
    struct fg_list *n, *next;
    for (n = sv->clients.next; n != &sv->clients; n = next) {
        next = n->next;
        struct statsrv_client *c = FG_CONTAINER_OF(n, struct statsrv_client, node);
        if (c->phase != SC_WAIT && now >= c->deadline_ms)
            statsrv_client_free(c);
    }
}

static int statsrv_listen(const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sun.sun_path) {
        log_msg(LOG_ERROR, "stats", "StatsSocket path too long: %s", path);
        return -1;
    }
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    mode_t old = umask(077); /* the socket shows settings and kicks users: owner only */
    int rc = fd < 0 ? -1 : bind(fd, (struct sockaddr *)&sun, sizeof sun);
    umask(old);
    if (rc < 0 || listen(fd, 64) < 0) {
        log_msg(LOG_ERROR, "stats", "cannot listen on %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

int statsrv_open(struct statsrv *sv, struct stats *st, struct evloop *loop, const char *path,
                 const struct statsrv_hooks *hooks)
{
    memset(sv, 0, sizeof *sv);
    sv->st = st;
    sv->loop = loop;
    sv->hooks = *hooks;
    fg_list_init(&sv->clients);
    fg_list_init(&sv->orphans);
    fg_list_init(&sv->tick.node);
    snprintf(sv->path, sizeof sv->path, "%s", path);
    sv->listen = (struct ev_handler){.fd = statsrv_listen(path), .fn = statsrv_on_accept};
    sv->done = (struct ev_handler){.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK),
                                   .fn = statsrv_on_done};
    if (sv->listen.fd < 0 || sv->done.fd < 0 || ev_add(loop, &sv->listen, EPOLLIN) != FG_OK ||
        ev_add(loop, &sv->done, EPOLLIN) != FG_OK) {
        if (sv->listen.fd >= 0)
            log_msg(LOG_ERROR, "stats", "cannot serve %s: %s", path, strerror(errno));
        statsrv_close(sv);
        return FG_ERROR;
    }
    sv->tick.fn = statsrv_on_tick;
    ev_tick_add(loop, &sv->tick);
    return FG_OK;
}

void statsrv_close(struct statsrv *sv)
{
    while (!fg_list_empty(&sv->clients)) {
        struct statsrv_client *c = FG_CONTAINER_OF(sv->clients.next, struct statsrv_client, node);
        wcmd_free(c->cmd); /* the workers have stopped */
        c->cmd = NULL;
        statsrv_client_free(c);
    }
    while (!fg_list_empty(&sv->orphans)) {
        struct wcmd *cmd = FG_CONTAINER_OF(sv->orphans.next, struct wcmd, orphan);
        fg_list_del(&cmd->orphan);
        wcmd_free(cmd);
    }
    ev_tick_del(&sv->tick);
    if (sv->listen.fd >= 0) {
        ev_del(sv->loop, &sv->listen);
        close(sv->listen.fd);
        unlink(sv->path);
    }
    if (sv->done.fd >= 0) {
        ev_del(sv->loop, &sv->done);
        close(sv->done.fd);
    }
    sv->listen.fd = sv->done.fd = -1;
}

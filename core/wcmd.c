#include "wcmd.h"

#include "client.h"
#include "conn.h"
#include "relay.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct wcmd *wcmd_new(enum wcmd_type type, unsigned n, int done_fd)
{
    struct wcmd *c = calloc(1, sizeof *c + n * sizeof c->parts[0]);
    if (!c)
        return NULL;
    c->type = type;
    c->nparts = n;
    c->done_fd = done_fd;
    fg_list_init(&c->orphan);
    atomic_init(&c->pending, n);
    for (unsigned i = 0; i < n; i++) {
        c->parts[i].cmd = c;
        fg_list_init(&c->parts[i].node);
    }
    return c;
}

/* "WORD VALUE": the value is the rest of the line, spaces trimmed. */
static bool wcmd_split(const char *s, char *key, size_t kn, char *val, size_t vn)
{
    s += strspn(s, " ");
    size_t k = strcspn(s, " ");
    if (k == 0 || k >= kn)
        return false;
    memcpy(key, s, k);
    key[k] = 0;
    s += k;
    s += strspn(s, " ");
    size_t v = strlen(s);
    while (v > 0 && s[v - 1] == ' ')
        v--;
    if (v == 0 || v >= vn)
        return false;
    memcpy(val, s, v);
    val[v] = 0;
    return true;
}

struct wcmd *wcmd_parse(const char *line, unsigned n, int done_fd, const char **err)
{
    char key[16], val[256];
    enum wcmd_type type;
    *err = NULL;
    if (strncmp(line, "show sessions", 13) == 0 && (line[13] == 0 || line[13] == ' ')) {
        type = WCMD_SESSIONS;
        line += 13;
        if (line[strspn(line, " ")] == 0) {
            key[0] = val[0] = 0;
        } else if (!wcmd_split(line, key, sizeof key, val, sizeof val) ||
                   (strcmp(key, "user") != 0 && strcmp(key, "client") != 0 &&
                    strcmp(key, "backend") != 0)) {
            *err = "usage: show sessions [user NAME | client ADDRESS | backend HOST]";
            return NULL;
        }
    } else if (strncmp(line, "kick ", 5) == 0) {
        if (!wcmd_split(line + 5, key, sizeof key, val, sizeof val) ||
            (strcmp(key, "user") != 0 && strcmp(key, "session") != 0)) {
            *err = "usage: kick user NAME | kick session ID";
            return NULL;
        }
        type = strcmp(key, "user") == 0 ? WCMD_KICK_USER : WCMD_KICK_SESSION;
    } else {
        *err = "not a worker command";
        return NULL;
    }
    struct wcmd *c = wcmd_new(type, n, done_fd);
    if (c) {
        snprintf(c->key, sizeof c->key, "%s", key);
        snprintf(c->arg, sizeof c->arg, "%s", val);
    }
    return c;
}

void wcmd_post(struct worker *workers, struct wcmd *c)
{
    uint64_t one = 1;
    for (unsigned i = 0; i < c->nparts; i++) {
        struct worker *w = &workers[i];
        pthread_mutex_lock(&w->mail_lock);
        fg_list_add_tail(&w->mail, &c->parts[i].node);
        pthread_mutex_unlock(&w->mail_lock);
        ssize_t FG_UNUSED rc = write(w->stop_fd, &one, sizeof one);
    }
}

bool wcmd_done(struct wcmd *c)
{
    return atomic_load_explicit(&c->pending, memory_order_acquire) == 0;
}

void wcmd_free(struct wcmd *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i < c->nparts; i++)
        free(c->parts[i].out);
    free(c);
}

void wcmd_answer(const struct wcmd *c, FILE *out)
{
    unsigned total = 0;
    if (c->type == WCMD_SESSIONS)
        fprintf(out, "# id proto phase client user mailbox backend tls age_s "
                     "bytes_in bytes_out worker\n");
    for (unsigned i = 0; i < c->nparts; i++) {
        total += c->parts[i].count;
        if (c->parts[i].out)
            fwrite(c->parts[i].out, 1, c->parts[i].len, out);
    }
    if (c->type == WCMD_KICK_USER || c->type == WCMD_KICK_SESSION)
        fprintf(out, "kicked %u session%s\n", total, total == 1 ? "" : "s");
}

void wcmd_take_mail(struct worker *w, struct fg_list *parts)
{
    pthread_mutex_lock(&w->mail_lock);
    while (!fg_list_empty(&w->mail)) {
        struct fg_list *n = w->mail.next;
        fg_list_del(n);
        fg_list_add_tail(parts, n);
    }
    pthread_mutex_unlock(&w->mail_lock);
}

void wcmd_part_done(struct wcmd_part *p)
{
    struct wcmd *c = p->cmd;
    int fd = c->done_fd;
    uint64_t one = 1;
    /* After the decrement the main thread may free c: fd was read before. */
    if (atomic_fetch_sub_explicit(&c->pending, 1, memory_order_acq_rel) == 1 && fd >= 0) {
        ssize_t FG_UNUSED rc = write(fd, &one, sizeof one);
    }
}

static const char *wcmd_phase(const struct conn *c)
{
    static const char *const names[] = {
            [CONN_FREE] = "free",       [CONN_PREAUTH] = "preauth", [CONN_LOGIN] = "login",
            [CONN_BACKEND] = "backend", [CONN_RELAY] = "relay",     [CONN_CLOSING] = "closing",
    };
    return c->state < FG_ARRAY_SIZE(names) ? names[c->state] : "?";
}

/* The name the client gave: the session's once logged in, else the one the
 * login under way carries, else none. */
static const char *wcmd_user(const struct conn *c)
{
    if (c->user)
        return c->user;
    if (c->s && c->s->cred && c->s->cred->user_len > 0)
        return c->s->cred->user;
    return NULL;
}

static bool wcmd_matches(const struct conn *c, const struct wcmd *cmd, const char *client,
                         const char *backend)
{
    const char *u = wcmd_user(c);
    switch (cmd->type) {
    case WCMD_KICK_SESSION:
        return strcmp(c->sid, cmd->arg) == 0;
    case WCMD_KICK_USER:
        return (u && strcasecmp(u, cmd->arg) == 0) ||
               (c->mailbox && strcasecmp(c->mailbox, cmd->arg) == 0);
    default:
        break;
    }
    if (cmd->key[0] == 0)
        return true;
    if (strcmp(cmd->key, "user") == 0)
        return (u && strcasecmp(u, cmd->arg) == 0) ||
               (c->mailbox && strcasecmp(c->mailbox, cmd->arg) == 0);
    if (strcmp(cmd->key, "client") == 0)
        return strcmp(client, cmd->arg) == 0;
    return backend[0] &&
           (strcmp(backend, cmd->arg) == 0 || (c->bh && strcasecmp(c->bh->name, cmd->arg) == 0));
}

/* A value for a whitespace-separated column: "-" when empty; a name with a
 * space or a control byte (a client chose it) is shown with '?' there. */
static void wcmd_col(FILE *out, const char *v)
{
    if (!v || !*v) {
        fputs(" -", out);
        return;
    }
    fputc(' ', out);
    for (; *v; v++)
        fputc((unsigned char)*v <= ' ' || *v == 0x7f ? '?' : *v, out);
}

static void wcmd_session_line(struct worker *w, const struct conn *c, FILE *out, const char *client,
                              const char *backend)
{
    fprintf(out, "%s %s %s", c->sid, c->proto == FG_PROTO_IMAP ? "imap" : "pop3", wcmd_phase(c));
    wcmd_col(out, client);
    wcmd_col(out, wcmd_user(c));
    wcmd_col(out, c->mailbox);
    wcmd_col(out, backend);
    fprintf(out, " %s %u %llu %llu %u\n",
            c->tls ? (c->btls ? "client+backend" : "client") : (c->btls ? "backend" : "none"),
            w->now - c->started, (unsigned long long)c->relayed[0],
            (unsigned long long)c->relayed[1], w->id);
}

static void wcmd_visit(struct worker *w, struct conn *c, struct wcmd_part *p, FILE *out)
{
    char client[64], backend[64] = "";
    net_addr_ip(&c->peer, client, sizeof client);
    if (c->state == CONN_RELAY || (c->state == CONN_BACKEND && c->baddr.sa.sa_family))
        net_addr_str(&c->baddr, backend, sizeof backend);
    if (!wcmd_matches(c, p->cmd, client, backend))
        return;
    p->count++;
    if (p->cmd->type == WCMD_SESSIONS) {
        wcmd_session_line(w, c, out, client, backend);
        return;
    }
    struct log_line l;
    conn_log_begin(&l, c, LOG_INFO, "kicked");
    log_end(&l);
    if (c->state == CONN_RELAY)
        relay_bye(w, c, conn_bye_line(c->proto, SESS_BYE_KICKED), "kicked");
    else
        client_shutdown(w, c, SESS_BYE_KICKED, "kicked");
}

void wcmd_run(struct worker *w, struct wcmd_part *p)
{
    FILE *out = open_memstream(&p->out, &p->len);
    if (!out)
        return;
    for (uint32_t s = 0; s < w->nslots; s++) {
        struct conn *c = &w->conns[s];
        if (c->state != CONN_FREE && c->state != CONN_CLOSING)
            wcmd_visit(w, c, p, out);
    }
    fclose(out);
}

/*
 * The log files' pure parts (base/logfile.c): sizes with Exchange's units,
 * the parts of a path, period stamps, rolled names and which names are
 * rolled files, and which rolled files retention removes. Then the queue
 * and its writer (base/logq.c) from several threads at once: every line
 * arrives whole, each thread's in order, across size roll-overs.
 */
#include "../../base/log.h"
#include "../../base/logfile.h"
#include "harness.h"

#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_sizes(void)
{
    static const struct {
        const char *in;
        uint64_t want;
    } ok[] = {
            {"0", 0},
            {"10485760", 10485760},
            {"10MB", 10485760},
            {"10 MB", 10485760},
            {"10 mb", 10485760},
            {"512KB", 524288},
            {"1GB", 1073741824},
            {"4GB", 4294967296ull},
            {"1TB", 1099511627776ull},
            {"7B", 7},
            {"Unlimited", 0},
            {"unlimited", 0},
    };
    static const char *const bad[] = {"",          "MB",  "-1",   "1.5MB", "10 XB",
                                      "10MBx",     " 10", "10 M", "1e6",   "99999999999999999999",
                                      "20000000TB"};
    for (size_t i = 0; i < FG_ARRAY_SIZE(ok); i++) {
        uint64_t v = 1;
        CHECKF(logf_parse_size(ok[i].in, &v) == FG_OK && v == ok[i].want, "\"%s\": %llu", ok[i].in,
               (unsigned long long)v);
    }
    for (size_t i = 0; i < FG_ARRAY_SIZE(bad); i++) {
        uint64_t v;
        CHECKF(logf_parse_size(bad[i], &v) == FG_ERROR, "\"%s\" accepted", bad[i]);
    }
}

static void test_names(void)
{
    struct logf_name nm;
    CHECK(logf_split("/var/log/fg/imap-protocol.log", &nm) == FG_OK);
    CHECK(strcmp(nm.dir, "/var/log/fg") == 0 && strcmp(nm.stem, "imap-protocol") == 0 &&
          strcmp(nm.ext, ".log") == 0);
    CHECK(logf_split("/events", &nm) == FG_OK);
    CHECK(strcmp(nm.dir, "/") == 0 && strcmp(nm.stem, "events") == 0 && nm.ext[0] == 0);
    CHECK(logf_split("fg.log", &nm) == FG_OK);
    CHECK(strcmp(nm.dir, ".") == 0 && strcmp(nm.stem, "fg") == 0);
    CHECK(logf_split("/var/log/.hidden", &nm) == FG_OK);
    CHECK(strcmp(nm.stem, ".hidden") == 0 && nm.ext[0] == 0);
    CHECK(logf_split("/var/log/", &nm) == FG_ERROR);

    /* 2026-12-03 08:15:02 UTC */
    time_t t = 1796285702;
    char s[32], name[300];
    CHECK_INT(logf_period_start(t, 86400), 1796256000);
    CHECK_INT(logf_period_start(t, 3600), 1796284800);
    logf_stamp(s, sizeof s, logf_period_start(t, 86400), 86400);
    CHECK(strcmp(s, "20261203") == 0);
    logf_stamp(s, sizeof s, logf_period_start(t, 3600), 3600);
    CHECK(strcmp(s, "20261203T08") == 0);
    logf_stamp(s, sizeof s, t, 2);
    CHECK(strcmp(s, "20261203T081502") == 0);

    CHECK(logf_split("/var/log/fg/imap-protocol.log", &nm) == FG_OK);
    CHECK(logf_rolled_name(name, sizeof name, &nm, "20261203T08", 12) == FG_OK);
    CHECK(strcmp(name, "imap-protocol-20261203T08-12.log") == 0);
    CHECK(logf_is_rolled(&nm, name));
    CHECK(logf_is_rolled(&nm, "imap-protocol-20261203-1.log"));
    CHECK(logf_is_rolled(&nm, "imap-protocol-20261203T081502-3.log"));
    static const char *const not_rolled[] = {
            "imap-protocol.log",
            "imap-protocol-20261203.log",
            "imap-protocol-2026120-1.log",
            "imap-protocol-20261203-0.log",
            "imap-protocol-20261203-1.txt",
            "imap-protocol-20261203T8-1.log",
            "imap-protocol-20261203T0815-1.log",
            "pop3-protocol-20261203-1.log",
            "imap-protocol-20261203-1.log.gz",
            "imap-protocol-x20261203-1.log",
            "imap-protocol-20261203--1.log",
            "imap-protocol-20261203-1a.log",
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(not_rolled); i++)
        CHECKF(!logf_is_rolled(&nm, not_rolled[i]), "%s taken as rolled", not_rolled[i]);
}

static size_t pick(struct logf_old *f, size_t n, uint32_t age, uint64_t quota, uint64_t live,
                   char *removed, size_t cap)
{
    size_t k = logf_pick(f, n, 1000000, age, quota, live);
    removed[0] = 0;
    for (size_t i = 0; i < n; i++)
        if (f[i].remove)
            snprintf(removed + strlen(removed), cap - strlen(removed), "%.8s ", f[i].name);
    return k;
}

static void test_pick(void)
{
    /* Given newest first: logf_pick sorts them oldest first. */
    struct logf_old base[] = {
            {"d", 999000, 100, false},
            {"c", 990000, 100, false},
            {"b", 900000, 100, false},
            {"a", 100000, 100, false},
    };
    struct logf_old f[4];
    char out[64];

    memcpy(f, base, sizeof f);
    CHECK_INT(pick(f, 4, 0, 0, 0, out, sizeof out), 0);
    memcpy(f, base, sizeof f);
    CHECK_INT(pick(f, 4, 50000, 0, 0, out, sizeof out), 2);
    CHECK(strcmp(out, "a b ") == 0);
    /* 250 bytes: the current file's 50 and the two newest. */
    memcpy(f, base, sizeof f);
    CHECK_INT(pick(f, 4, 0, 250, 50, out, sizeof out), 2);
    CHECK(strcmp(out, "a b ") == 0);
    /* Age first, then the quota counts what is left. */
    memcpy(f, base, sizeof f);
    CHECK_INT(pick(f, 4, 500000, 150, 0, out, sizeof out), 3);
    CHECK(strcmp(out, "a b c ") == 0);
    /* A current file past the quota alone: every rolled file goes. */
    memcpy(f, base, sizeof f);
    CHECK_INT(pick(f, 4, 0, 100, 500, out, sizeof out), 4);
    CHECK_INT(logf_pick(f, 0, 0, 1, 1, 1), 0);
}

/* ---- the queue and its writer ---- */

#define TQ_THREADS 4
#define TQ_LINES   3000

static void *tq_thread(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < TQ_LINES; i++)
        log_msg(LOG_INFO, "t", "thread %d line %d", id, i);
    return NULL;
}

/* Reads every file of the folder that starts with "ev" into one string,
 * rolled files first (numbered), the current one last. */
static char *tq_read_all(const char *dir, int *files)
{
    char path[600];
    size_t cap = 1 << 22, n = 0;
    char *all = malloc(cap);
    *files = 0;
    for (int seq = 1;; seq++) {
        DIR *d = opendir(dir);
        struct dirent *e;
        char suffix[32];
        snprintf(suffix, sizeof suffix, "-%d.log", seq);
        bool found = false;
        while ((e = readdir(d))) {
            size_t l = strlen(e->d_name), sl = strlen(suffix);
            if (strncmp(e->d_name, "ev-", 3) == 0 && l > sl &&
                strcmp(e->d_name + l - sl, suffix) == 0) {
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                found = true;
                break;
            }
        }
        closedir(d);
        if (!found)
            snprintf(path, sizeof path, "%s/ev.log", dir);
        FILE *fp = fopen(path, "r");
        if (fp) {
            n += fread(all + n, 1, cap - n - 1, fp);
            fclose(fp);
        }
        if (!found)
            break;
        ++*files;
    }
    all[n] = 0;
    return all;
}

static void test_queue(void)
{
    char dir[] = "/tmp/fg-ut-logq-XXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/ev.log", dir);
    struct log_roll_conf rc = {
            .roll = LOG_ROLL_DAILY, .file_quota = 64 * 1024, .queue_size = 8u << 20};
    CHECK(log_files_start(&rc, path) == FG_OK);
    pthread_t th[TQ_THREADS];
    for (int i = 0; i < TQ_THREADS; i++)
        pthread_create(&th[i], NULL, tq_thread, (void *)(intptr_t)i);
    for (int i = 0; i < TQ_THREADS; i++)
        pthread_join(th[i], NULL);
    struct log_counters c;
    log_files_stop();
    log_counters(LOG_FILE_EVENT, &c);
    CHECK_INT(c.dropped, 0);
    CHECK_INT(c.written, TQ_THREADS * TQ_LINES);
    int files;
    char *all = tq_read_all(dir, &files);
    CHECK_INT(files, c.rollovers);
    CHECK(files >= 4);
    int next[TQ_THREADS] = {0}, lines = 0;
    for (char *save = NULL, *l = strtok_r(all, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        int id, i;
        const char *m = strstr(l, "msg=\"thread ");
        CHECKF(strncmp(l, "ts=", 3) == 0 && m &&
                       sscanf(m, "msg=\"thread %d line %d\"", &id, &i) == 2,
               "%s", l);
        if (m && id >= 0 && id < TQ_THREADS) {
            CHECKF(i == next[id], "thread %d: line %d after %d", id, i, next[id] - 1);
            next[id] = i + 1;
        }
        lines++;
    }
    CHECK_INT(lines, TQ_THREADS * TQ_LINES);
    free(all);
    char cmd[100];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

int main(void)
{
    test_sizes();
    test_names();
    test_pick();
    test_queue();
    return th_finish("test_logfile");
}

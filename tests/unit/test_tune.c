/* The stats socket's set: finding the setting, reading the value as the file
 * would, making it live, and the reasons for refusals (core/tune.c). */
#include "../../core/tune.h"
#include "harness.h"

#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

static char dir[] = "/tmp/fg-test-tune-XXXXXX";

static const char config_text[] = "[global]\n"
                                  "Workers = 1\n"
                                  "[imap]\n"
                                  "UnencryptedOrTLSBindings = 127.0.0.1:1143\n"
                                  "LoginType = PlainTextLogin\n"
                                  "MaxConnectionFromSingleIP = 16\n"
                                  "[pop3]\n"
                                  "UnencryptedOrTLSBindings = 127.0.0.1:1110\n"
                                  "LoginType = PlainTextLogin\n"
                                  "[backend]\n"
                                  "DefaultServer = 127.0.0.1\n";

static struct fg_config cfg;
static struct limits lim;
static struct bhost_table bh;
static struct stats st;

/* The answer to one command, without its newline; the caller frees it. */
static char *run(const char *cmd)
{
    char *text = NULL;
    size_t n = 0;
    FILE *out = open_memstream(&text, &n);
    /* The stats server sends "set ..." to tune_command, the rest here. */
    if (strncmp(cmd, "set", 3) == 0 && (cmd[3] == 0 || cmd[3] == ' '))
        tune_command(&st, cmd + 3, out);
    else
        stats_command(&st, cmd, out);
    fclose(out);
    if (n > 0 && text[n - 1] == '\n')
        text[--n] = 0;
    CHECKF(!strchr(text, '\n'), "\"%s\" answered more than one line: %s", cmd, text);
    return text;
}

#define CHECK_ANSWER(cmd, expected)                                                                \
    do {                                                                                           \
        char *got = run(cmd);                                                                      \
        CHECKF(strcmp(got, expected) == 0, "%s\n  got      %s\n  expected %s", cmd, got,           \
               expected);                                                                          \
        free(got);                                                                                 \
    } while (0)

static void setup(void)
{
    char path[64];
    snprintf(path, sizeof path, "%s/t.ini", dir);
    FILE *f = fopen(path, "w");
    fputs(config_text, f);
    fclose(f);
    CHECK_INT(config_load(&cfg, path, stderr, 0), 0);
    snprintf(cfg.log_dir, sizeof cfg.log_dir, "%s", dir); /* the protocol logs go here */
    CHECK_INT(limits_init(&lim, 64), FG_OK);
    for (int p = 0; p < FG_PROTO_COUNT; p++) {
        limits_set(&lim, LIMITS_CONNS, (enum fg_proto)p, cfg.proto[p].max_connections);
        limits_set(&lim, LIMITS_PER_IP, (enum fg_proto)p, cfg.proto[p].max_per_ip);
        limits_set(&lim, LIMITS_PER_USER, (enum fg_proto)p, cfg.proto[p].max_per_user);
    }
    CHECK_INT(bhost_table_init(&bh, 2000, 60000, 6000), FG_OK);
    st = (struct stats){.cfg = &cfg, .limits = &lim, .bhosts = &bh};
}

/* The file's parser, one value at a time: its units, ranges and words. */
static void test_parse_scalar(void)
{
    char why[300], s[64];
    uint32_t v = 0;
    CHECK_INT(config_parse_scalar("imap", "maxconnections", "42", &v, why, sizeof why), FG_OK);
    CHECK_INT(v, 42);
    CHECK_INT(config_parse_scalar("imap", "AuthenticatedConnectionTimeout", "1.00:00:00", &v, why,
                                  sizeof why),
              FG_OK);
    CHECK_INT(v, 86400);
    config_scalar_str("imap", "AuthenticatedConnectionTimeout", v, s, sizeof s);
    CHECK(strcmp(s, "1.00:00:00") == 0);
    CHECK_INT(config_parse_scalar("global", "LogLevel", "DEBUG", &v, why, sizeof why), FG_OK);
    CHECK_INT(v, LOG_DEBUG);
    config_scalar_str("global", "LogLevel", LOG_WARN, s, sizeof s);
    CHECK(strcmp(s, "warning") == 0);
    CHECK_INT(config_parse_scalar("pop3", "ProtocolLogEnabled", "$true", &v, why, sizeof why),
              FG_OK);
    CHECK_INT(v, 1);
    CHECK_INT(config_parse_scalar("directory", "FailedLogonDelayMs", "10001", &v, why, sizeof why),
              FG_ERROR);
    CHECK(strcmp(why, "FailedLogonDelayMs: expected a number from 0 to 10000, got \"10001\"") == 0);
    CHECK_INT(config_parse_scalar("imap", "PreAuthenticatedConnectionTimeout", "00:61:00", &v, why,
                                  sizeof why),
              FG_ERROR);
    CHECK(strstr(why, "expected a time hh:mm:ss from 10 to 3600 seconds") != NULL);
    CHECK_INT(config_parse_scalar("imap", "MaxConnections", ";5", &v, why, sizeof why), FG_ERROR);
    CHECK(strstr(why, "cannot begin with ';'") != NULL);
    /* Lists and strings are not values set takes. */
    CHECK_INT(config_parse_scalar("imap", "SSLBindings", "127.0.0.1:993", &v, why, sizeof why),
              FG_ERROR);
    CHECK_INT(config_parse_scalar("nosuch", "MaxConnections", "1", &v, why, sizeof why), FG_ERROR);
}

static void test_limits_and_timeouts_go_live(void)
{
    CHECK_ANSWER("set imap.MaxConnectionFromSingleIP 3",
                 "imap.MaxConnectionFromSingleIP = 3 (was 16)");
    CHECK_INT(limits_get(&lim, LIMITS_PER_IP, FG_PROTO_IMAP), 3);
    CHECK_INT(cfg.proto[FG_PROTO_IMAP].max_per_ip, 3);
    CHECK_INT(limits_get(&lim, LIMITS_PER_IP, FG_PROTO_POP3), INT32_MAX);
    CHECK_ANSWER("set   POP3.maxconnections   7  ", "pop3.MaxConnections = 7 (was 2147483647)");
    CHECK_INT(limits_get(&lim, LIMITS_CONNS, FG_PROTO_POP3), 7);
    CHECK_ANSWER("set pop3.PreAuthenticatedConnectionTimeout 00:00:30",
                 "pop3.PreAuthenticatedConnectionTimeout = 00:00:30 (was 00:01:00)");
    CHECK_INT(atomic_load(&cfg.proto[FG_PROTO_POP3].preauth_timeout), 30);
    CHECK_INT(atomic_load(&cfg.proto[FG_PROTO_IMAP].preauth_timeout), 60);
    CHECK_ANSWER("set ConnectTimeout 00:00:09", "backend.ConnectTimeout = 00:00:09 (was 00:00:05)");
    CHECK_INT(atomic_load(&cfg.backend.connect_timeout), 9);
    CHECK_INT(atomic_load(&bh.probe_hold_ms), 10000);
}

/* This process's open descriptors. */
static int tt_fd_count(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    while (d && readdir(d))
        n++;
    if (d)
        closedir(d);
    return n;
}

static void test_log_level_and_protocol_log(void)
{
    enum log_level saved = log_level;
    CHECK_ANSWER("set LogLevel warning", "global.LogLevel = warning (was info)");
    CHECK_INT(log_level, LOG_WARN);
    CHECK_INT(cfg.log_level, LOG_WARN);
    log_level = saved;
    CHECK(!plog_enabled(FG_PROTO_IMAP));
    CHECK_ANSWER("set imap.ProtocolLogEnabled yes", "imap.ProtocolLogEnabled = true (was false)");
    CHECK(plog_enabled(FG_PROTO_IMAP));
    char path[64];
    snprintf(path, sizeof path, "%s/imap-protocol.log", dir);
    CHECK(access(path, W_OK) == 0);
    CHECK_ANSWER("set imap.ProtocolLogEnabled no", "imap.ProtocolLogEnabled = false (was true)");
    CHECK(!plog_enabled(FG_PROTO_IMAP));
    /* On again: the same file, not a second descriptor. */
    int fds = tt_fd_count();
    CHECK_ANSWER("set imap.ProtocolLogEnabled 1", "imap.ProtocolLogEnabled = true (was false)");
    CHECK(plog_enabled(FG_PROTO_IMAP));
    CHECK_INT(tt_fd_count(), fds);
    plog_disable(FG_PROTO_IMAP);
    unlink(path);
}

static void test_refusals(void)
{
    CHECK_ANSWER("set MaxConnections 3", "error: MaxConnections is in [imap] and [pop3]: say "
                                         "imap.MaxConnections or pop3.MaxConnections");
    CHECK_ANSWER("set imap.Banner hello",
                 "error: Banner cannot change at run time: change it in [imap] in the file and "
                 "restart");
    CHECK_ANSWER("set backend.Tls implicit",
                 "error: Tls cannot change at run time: change it in [backend] in the file and "
                 "restart");
    CHECK_ANSWER("set forest:corp.example.Uri ldap://x",
                 "error: Uri cannot change at run time: change it in [forest:corp.example] in "
                 "the file and restart");
    CHECK_ANSWER("set forest:corp.Nope 1", "error: unknown setting \"Nope\" in [forest:corp]");
    CHECK_ANSWER("set .LogLevel debug",
                 "error: \".LogLevel\" is not a setting: Section.Name or Name");
    CHECK_ANSWER("set imap. 3", "error: \"imap.\" is not a setting: Section.Name or Name");
    CHECK_ANSWER("set directory.NegativeCacheTTL 00:01:00",
                 "error: directory.NegativeCacheTTL: the route cache is off (no directory, or "
                 "RouteCacheTTL = 00:00:00 at start): turning it on needs a restart");
    CHECK_ANSWER("set imap.LogLevel debug", "error: unknown setting \"LogLevel\" in [imap]");
    /* Nothing changed. */
    CHECK_INT(limits_get(&lim, LIMITS_CONNS, FG_PROTO_IMAP), INT32_MAX);
    CHECK_INT(cfg.log_level, LOG_WARN);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    setup();
    test_parse_scalar();
    test_limits_and_timeouts_go_live();
    test_log_level_and_protocol_log();
    test_refusals();
    limits_free(&lim);
    bhost_table_free(&bh);
    config_free(&cfg);
    rmdir(dir);
    return th_finish("test_tune");
}

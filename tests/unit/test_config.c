/* Configuration: the issue's file is accepted; every bad input names file:line. */
#include "../../core/config.h"
#include "harness.h"

#include <stdlib.h>
#include <unistd.h>

static char dir[] = "/tmp/fg-test-config-XXXXXX";

static const char *write_file(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

/* Loads text as a configuration; returns the error count and the messages. */
static int load(struct fg_config *cfg, const char *text, char **msgs)
{
    size_t n;
    FILE *err = open_memstream(msgs, &n);
    int errors = config_load(cfg, write_file("t.ini", text), err);
    fclose(err);
    return errors;
}

static const char issue_config[] = "[global]\n"
                                   "Workers = 2\n"
                                   "[imap]\n"
                                   "UnencryptedOrTLSBindings = 127.0.0.1:1143, [::1]:1143\n"
                                   "LoginType = PlainTextLogin\n"
                                   "Banner = The forestgate IMAP4 service is ready.\n"
                                   "PreAuthenticatedConnectionTimeout = 00:01:00\n"
                                   "AuthenticatedConnectionTimeout = 00:30:00\n"
                                   "MaxCommandSize = 10240\n"
                                   "ProtocolLogEnabled = false\n"
                                   "ProxyTargetPort = 10143\n"
                                   "[pop3]\n"
                                   "UnencryptedOrTLSBindings = 127.0.0.1:1110\n"
                                   "LoginType = PlainTextLogin\n"
                                   "ProxyTargetPort = 10110\n"
                                   "[backend]\n"
                                   "DefaultServer = 127.0.0.1\n"
                                   "LoginMode = PassThrough\n"
                                   "ConnectTimeout = 00:00:05\n";

static void test_issue_config_is_accepted(void)
{
    struct fg_config cfg;
    char *msgs;
    CHECK_INT(load(&cfg, issue_config, &msgs), 0);
    CHECK_MEM(msgs, strlen(msgs), "");
    CHECK_INT(cfg.workers, 2);
    CHECK_INT(cfg.proto[FG_PROTO_IMAP].plain.n, 2);
    CHECK_INT(cfg.proto[FG_PROTO_IMAP].sess.login_type, LOGIN_TYPE_PLAIN_TEXT_LOGIN);
    CHECK_INT(cfg.proto[FG_PROTO_IMAP].preauth_timeout, 60);
    CHECK_INT(cfg.proto[FG_PROTO_IMAP].auth_timeout, 1800);
    CHECK_INT(cfg.proto[FG_PROTO_IMAP].target_port, 10143);
    CHECK_INT(cfg.proto[FG_PROTO_POP3].sess.max_command, 512); /* Exchange's POP3 default */
    CHECK_INT(cfg.proto[FG_PROTO_POP3].preauth_timeout, 60);
    CHECK_INT(cfg.backend.connect_timeout, 5);
    CHECK_INT(cfg.backend.target.naddrs, 1);
    CHECK(cfg.backend.forward);
    CHECK_MEM(cfg.proto[FG_PROTO_POP3].sess.banner, strlen(cfg.proto[FG_PROTO_POP3].sess.banner),
              "The forestgate POP3 service is ready.");
    free(msgs);
    config_free(&cfg);
}

struct bad_case {
    const char *text;
    const char *message; /* must appear in the output, with its file:line */
};

static const struct bad_case bad[] = {
        {"[global]\nWorkers = many\n", "t.ini:2: Workers: expected a number from 0 to 256"},
        {"[global]\nWorkers = 257\n", "t.ini:2: Workers: expected a number"},
        {"[global]\nColour = blue\n", "t.ini:2: unknown setting \"Colour\" in [global]"},
        {"[imap4]\nBanner = x\n", "t.ini:1: unknown section [imap4]"},
        {"Workers = 1\n", "t.ini:1: setting \"Workers\" outside of any section"},
        {"[imap]\nLoginType = Plaintext\n", "t.ini:2: LoginType: expected PlainTextLogin"},
        {"[imap]\nUnencryptedOrTLSBindings = 1.2.3.4\n", "t.ini:2: binding \"1.2.3.4\""},
        {"[imap]\nUnencryptedOrTLSBindings = ::1:143\n", "t.ini:2: binding \"::1:143\""},
        {"[imap]\nUnencryptedOrTLSBindings = 127.0.0.1:0\n", "invalid port"},
        {"[imap]\nUnencryptedOrTLSBindings = 127.0.0.1:1143, 127.0.0.1:1143\n",
         "t.ini:2: binding 127.0.0.1:1143 is used twice"},
        {"[imap]\nPreAuthenticatedConnectionTimeout = 60\n",
         "t.ini:2: PreAuthenticatedConnectionTimeout: expected a time hh:mm:ss"},
        {"[imap]\nPreAuthenticatedConnectionTimeout = 00:00:05\n", "from 10 to 3600 seconds"},
        {"[imap]\nAuthenticatedConnectionTimeout = 00:61:00\n", "t.ini:2: Authenticated"},
        {"[imap]\nMaxCommandSize = 10\n", "t.ini:2: MaxCommandSize: expected a number from 40"},
        {"[imap]\nProtocolLogEnabled = maybe\n", "t.ini:2: ProtocolLogEnabled: expected true or"},
        {"[imap]\nBanner = a\nBanner = b\n", "t.ini:3: Banner is already set on line 2"},
        {"[imap]\n[imap]\n", "t.ini:2: section [imap] already started on line 1"},
        {"[imap]\nthis is not ini\n", "t.ini:2: syntax error"},
        {"[backend]\nLoginMode = Proxy\n", "t.ini:2: LoginMode: expected PassThrough or"},
        {"[imap]\n[backend]\nDefaultServer = no-such-host.invalid\n",
         "t.ini:3: DefaultServer no-such-host.invalid:"},
        {"[imap]\n[backend]\nLoginMode = PassThrough\n", "t.ini:2: [backend] DefaultServer is"},
        {"[imap]\n[backend]\nDefaultServer = 127.0.0.1\nLoginMode = MasterUser\n",
         "t.ini:4: LoginMode = MasterUser needs MasterUser"},
        {"[imap]\n[backend]\nDefaultServer = 127.0.0.1\nLoginMode = MasterUser\n"
         "MasterUser = m\nMasterPasswordFile = /nonexistent/pw\nAllowUncheckedMasterLogin = true\n",
         "t.ini:6: MasterPasswordFile /nonexistent/pw: No such file"},
        {"[imap]\n[backend]\nDefaultServer = 127.0.0.1\n", "t.ini:1: warning: LoginType = "
                                                           "SecureLogin"},
        {"[global]\n", "neither [imap] nor [pop3] is configured"},
        {"[global]\nLogFileLocation = /nonexistent\n[imap]\nProtocolLogEnabled = true\n"
         "LoginType = PlainTextLogin\n[backend]\nDefaultServer = 127.0.0.1\n",
         "t.ini:2: LogFileLocation /nonexistent is not a writable folder"},
};

static void test_bad_inputs_name_file_and_line(void)
{
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct fg_config cfg;
        char *msgs;
        int errors = load(&cfg, bad[i].text, &msgs);
        bool warning_only = strstr(bad[i].message, "warning") != NULL;
        th_checks++;
        if ((warning_only ? errors != 0 : errors == 0) || !strstr(msgs, bad[i].message))
            th_fail(__FILE__, __LINE__, "case %zu: %d errors, output:\n%s\nexpected: %s", i, errors,
                    msgs, bad[i].message);
        free(msgs);
        config_free(&cfg);
    }
}

static void test_long_line_is_refused(void)
{
    char text[600];
    struct fg_config cfg;
    char *msgs;
    int n = snprintf(text, sizeof text, "[imap]\nBanner = ");
    memset(text + n, 'x', 300);
    snprintf(text + n + 300, sizeof text - (size_t)n - 300, "\n[backend]\n");
    CHECK(load(&cfg, text, &msgs) > 0);
    CHECK(strstr(msgs, "t.ini:2: line longer than") != NULL);
    free(msgs);
    config_free(&cfg);
}

static void test_master_password_file(void)
{
    struct fg_config cfg;
    char *msgs, text[512];
    write_file("pw", "s3cr et\n");
    snprintf(text, sizeof text,
             "[pop3]\nLoginType = PlainTextLogin\n[backend]\nDefaultServer = localhost\n"
             "LoginMode = MasterUser\nMasterUser = proxy\nMasterPasswordFile = %s/pw\n"
             "AllowUncheckedMasterLogin = yes\nConnectTimeout = 1.00:00:00\n",
             dir);
    /* 1 day is over ConnectTimeout's maximum. */
    CHECK(load(&cfg, text, &msgs) == 1);
    CHECK(strstr(msgs, "t.ini:9: ConnectTimeout") != NULL);
    free(msgs);
    config_free(&cfg);
    char *nl = strrchr(text, 'C');
    strcpy(nl, "ConnectTimeout = 00:02:00\n");
    CHECK_INT(load(&cfg, text, &msgs), 0);
    CHECK_MEM(cfg.backend.master_pass, cfg.backend.master_pass_len, "s3cr et");
    CHECK_INT(cfg.backend.mode, BACKEND_LOGIN_MASTER);
    CHECK_INT(cfg.backend.connect_timeout, 120);
    CHECK(cfg.backend.target.naddrs >= 1);
    /* [pop3] without bindings gets Exchange's defaults. */
    CHECK_INT(cfg.proto[FG_PROTO_POP3].plain.n, 2);
    CHECK(!cfg.proto[FG_PROTO_IMAP].enabled);
    free(msgs);
    config_free(&cfg);
    CHECK(cfg.backend.master_pass == NULL);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    test_issue_config_is_accepted();
    test_bad_inputs_name_file_and_line();
    test_long_line_is_refused();
    test_master_password_file();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    int FG_UNUSED rc = system(cmd);
    return th_finish("test_config");
}

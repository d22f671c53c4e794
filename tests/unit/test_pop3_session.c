/*
 * The POP3 client session in the AUTHORIZATION state, driven through
 * pop3_sess_ops as the core drives it: client bytes go into s->in, input()
 * answers into the output buffer, and a SESS_LOGIN ends with login_done().
 */

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define BANNER  "Forestgate POP3 service ready."
#define MAX_CMD 512
#define FX_OPS  pop3_sess_ops
#include "sess_fixture.h"

/* True when the multi-line reply in the output has the line l. */
static bool out_has_line(const struct fx *f, const char *l)
{
    char want[64];
    snprintf(want, sizeof want, "\r\n%s\r\n", l);
    return out_has(f, want);
}

/* USER then PASS; returns what PASS returned. */
static enum sess_action fx_userpass(struct fx *f, const char *user_line, const char *pass_line)
{
    CHECK_INT(fx_cmd(f, user_line), SESS_AGAIN);
    CHECK_OUT(f, "+OK\r\n");
    return fx_cmd(f, pass_line);
}

/* ---- greeting and CAPA ------------------------------------------------------ */

static void test_greeting_has_banner_and_no_apop_timestamp(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    f.s->ops->greeting(f.s);
    CHECK_OUT(&f, "+OK " BANNER "\r\n");
    CHECK_LACKS(&f, "<");
    fx_close(&f);
}

static void check_capa(uint8_t lt, bool tls, bool user, bool sasl_plain)
{
    static const char *const always[] = {"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE",
                                         "PIPELINING"};
    struct fx f;
    fx_open_max(&f, lt, tls, MAX_CMD);
    CHECK_INT(fx_cmd(&f, "CAPA\r\n"), SESS_AGAIN);
    CHECKF(out_starts(&f, "+OK") && out_has(&f, "\r\n.\r\n") &&
                   memcmp(buf_head(&f.out) + buf_avail(&f.out) - 5, "\r\n.\r\n", 5) == 0,
           "CAPA reply \"%.*s\" is not a terminated multi-line reply", OUT(&f));
    for (size_t i = 0; i < FG_ARRAY_SIZE(always); i++)
        CHECKF(out_has_line(&f, always[i]), "CAPA lacks %s: \"%.*s\"", always[i], OUT(&f));
    CHECKF(out_has_line(&f, "USER") == user, "login_type %d tls %d: USER should be %s", lt, tls,
           user ? "listed" : "absent");
    CHECKF(out_has_line(&f, "SASL PLAIN") == sasl_plain,
           "login_type %d tls %d: SASL PLAIN should be %s", lt, tls,
           sasl_plain ? "listed" : "absent");
    fx_close(&f);
}

static void test_capa_plain_text_login_lists_user_and_sasl_plain(void)
{
    check_capa(LT_LOGIN, false, true, true);
}

static void test_capa_plain_text_auth_lists_only_sasl_plain(void)
{
    check_capa(LT_AUTH, false, false, true);
}

static void test_capa_secure_login_lists_neither(void)
{
    check_capa(LT_SECURE, false, false, false);
}

static void test_capa_tls_lists_both_for_every_login_type(void)
{
    check_capa(LT_LOGIN, true, true, true);
    check_capa(LT_AUTH, true, true, true);
    check_capa(LT_SECURE, true, true, true);
}

/* ---- USER / PASS ------------------------------------------------------------- */

static void test_user_pass_gives_exact_credentials(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_userpass(&f, "USER alice\r\n", "PASS secret\r\n"), SESS_LOGIN);
    CHECK_OUT(&f, "");
    CHECK_CRED(&f, "alice", "secret");
    CHECK_INT(buf_avail(&f.s->in), 0);
    fx_close(&f);
}

static void test_pass_takes_everything_after_first_space(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_userpass(&f, "user alice\r\n", "pass  a b c \r\n"), SESS_LOGIN);
    CHECK_CRED(&f, "alice", " a b c ");
    fx_close(&f);
}

static void test_pass_without_user_is_err(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "PASS secret\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "-ERR");
    CHECK(f.s->cred == NULL);
    fx_close(&f);
}

static void test_user_needed_again_after_failed_login(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_userpass(&f, "USER alice\r\n", "PASS secret\r\n"), SESS_LOGIN);
    fx_done(&f, LOGIN_FAILED, NULL);
    CHECK_INT(fx_cmd(&f, "PASS guess2\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "-ERR");
    CHECK(f.s->cred == NULL);
    fx_close(&f);
}

/* ---- AUTH PLAIN -------------------------------------------------------------- */

static void test_auth_plain_initial_response(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "AUTH PLAIN " B64_ALICE "\r\n"), SESS_LOGIN);
    CHECK_OUT(&f, "");
    CHECK_CRED(&f, "alice", "secret");
    fx_close(&f);
}

static void test_auth_plain_initial_response_keeps_authzid(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "auth plain " B64_ALICE_AUTHZ "\r\n"), SESS_LOGIN);
    CHECK_CRED(&f, "alice", "secret");
    if (f.s->cred)
        CHECK_MEM(f.s->cred->authzid, f.s->cred->authzid_len, "admin");
    fx_close(&f);
}

static void test_auth_plain_with_continuation(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "AUTH PLAIN\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "+");
    CHECK_INT(out_lines(&f), 1);
    CHECK_LACKS(&f, "OK");
    CHECK_INT(fx_cmd(&f, B64_ALICE "\r\n"), SESS_LOGIN);
    CHECK_OUT(&f, "");
    CHECK_CRED(&f, "alice", "secret");
    fx_close(&f);
}

static void test_auth_star_cancels_with_err(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "AUTH PLAIN\r\n"), SESS_AGAIN);
    CHECK_INT(fx_cmd(&f, "*\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "-ERR");
    CHECK(f.s->cred == NULL);
    CHECK_INT(fx_cmd(&f, "CAPA\r\n"), SESS_AGAIN); /* a command again, not a SASL line */
    CHECK_PREFIX(&f, "+OK");
    fx_close(&f);
}

static void test_auth_without_argument_lists_plain(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "AUTH\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "+OK");
    CHECK(out_has_line(&f, "PLAIN"));
    CHECKF(buf_avail(&f.out) >= 5 &&
                   memcmp(buf_head(&f.out) + buf_avail(&f.out) - 5, "\r\n.\r\n", 5) == 0,
           "AUTH listing \"%.*s\" is not terminated", OUT(&f));
    fx_close(&f);
}

static void test_auth_empty_response_fails_with_auth_code(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "AUTH PLAIN =\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "-ERR [AUTH]");
    CHECK(f.s->cred == NULL);
    fx_close(&f);
}

static void test_auth_invalid_base64_is_err(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "AUTH PLAIN AGFsaWNlAHNlY3JldA\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "-ERR");
    CHECK_INT(fx_cmd(&f, "AUTH PLAIN\r\n"), SESS_AGAIN);
    CHECK_INT(fx_cmd(&f, "AGFs!WNlAHNlY3JldA==\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "-ERR");
    CHECK(f.s->cred == NULL);
    fx_close(&f);
}

static void test_auth_unsupported_mechanism_is_err(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "AUTH CRAM-MD5\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "-ERR");
    CHECK_INT(out_lines(&f), 1);
    fx_close(&f);
}

/* 4096 base64 characters decode to 3072 bytes: refused, without overflowing. */
static int huge_response_child(bool continuation)
{
    struct fx f;
    static unsigned char raw[3072];
    static char b64[4200], line[4300];
    memset(raw, 'x', sizeof raw);
    memcpy(raw, "\0alice\0", 7);
    b64_encode(raw, sizeof raw, b64);
    fx_open_max(&f, LT_LOGIN, false, 8192); /* MaxCommandSize may go up to 65536 */
    if (continuation) {
        fx_cmd(&f, "AUTH PLAIN\r\n");
        snprintf(line, sizeof line, "%s\r\n", b64);
    } else {
        snprintf(line, sizeof line, "AUTH PLAIN %s\r\n", b64);
    }
    enum sess_action act = fx_cmd(&f, line);
    int ok = act == SESS_AGAIN && out_starts(&f, "-ERR");
    fx_close(&f);
    return ok;
}

static void check_huge_response(bool continuation)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0)
        _exit(huge_response_child(continuation) ? 0 : 3);
    CHECK(pid > 0);
    int st = 0;
    waitpid(pid, &st, 0);
    bool sig = WIFSIGNALED(st);
    CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0,
           "4096-char AUTH response (%s): child %s %d; 3 = wrong reply, a signal or a "
           "sanitizer exit = memory error (pop3_sasl_response bounds n by 2 * sizeof raw, "
           "but 4096 base64 chars decode to 3072 > 2048 bytes)",
           continuation ? "continuation" : "initial response",
           sig ? "killed by signal" : "exited with", sig ? WTERMSIG(st) : WEXITSTATUS(st));
}

static void test_auth_huge_response_refused_without_overflow(void)
{
    check_huge_response(false);
    check_huge_response(true);
}

/* ---- login_done --------------------------------------------------------------- */

static void test_login_done_maps_status_to_reply(void)
{
    static const struct {
        enum login_status st;
        const char *reply;
    } cases[] = {
            {LOGIN_OK, "+OK"},
            {LOGIN_FAILED, "-ERR [AUTH]"},
            {LOGIN_UNAVAILABLE, "-ERR [SYS/TEMP]"},
            {LOGIN_IN_USE, "-ERR [IN-USE]"},
            {LOGIN_TOO_MANY, "-ERR [IN-USE] Too many connections for this user."},
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(cases); i++) {
        struct fx f;
        fx_open(&f, LT_LOGIN);
        CHECK_INT(fx_userpass(&f, "USER alice\r\n", "PASS secret\r\n"), SESS_LOGIN);
        fx_done(&f, cases[i].st, NULL);
        CHECKF(out_starts(&f, cases[i].reply), "status %d: got \"%.*s\", expected \"%s...\"",
               cases[i].st, OUT(&f), cases[i].reply);
        CHECK_INT(out_lines(&f), 1);
        CHECK(f.s->cred == NULL);
        fx_close(&f);
    }
}

/* ---- other commands, errors, limits ---------------------------------------- */

static void test_quit_replies_ok_and_closes(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "QUIT\r\n"), SESS_CLOSE);
    CHECK_PREFIX(&f, "+OK");
    CHECK_INT(out_lines(&f), 1);
    fx_close(&f);
}

static void test_stat_before_login_is_err(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "STAT\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "-ERR");
    CHECK_INT(out_lines(&f), 1);
    fx_close(&f);
}

static void test_unknown_command_is_err(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "FROB x\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "-ERR");
    CHECK_INT(out_lines(&f), 1);
    fx_close(&f);
}

static void test_five_invalid_commands_in_a_row_close(void)
{
    static const char *const bad[] = {"FROB\r\n", "STAT\r\n", "PASS x\r\n", "USER\r\n"};
    struct fx f;
    fx_open(&f, LT_LOGIN);
    for (size_t i = 0; i < FG_ARRAY_SIZE(bad); i++) {
        CHECK_INT(fx_cmd(&f, bad[i]), SESS_AGAIN);
        CHECK_PREFIX(&f, "-ERR");
    }
    CHECK_INT(fx_cmd(&f, "RETR 1\r\n"), SESS_CLOSE);
    CHECK_PREFIX(&f, "-ERR");
    fx_close(&f);
}

static void test_valid_command_resets_invalid_count(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    for (int i = 0; i < 4; i++)
        CHECK_INT(fx_cmd(&f, "FROB\r\n"), SESS_AGAIN);
    CHECK_INT(fx_cmd(&f, "CAPA\r\n"), SESS_AGAIN);
    for (int i = 0; i < 4; i++)
        CHECK_INT(fx_cmd(&f, "FROB\r\n"), SESS_AGAIN);
    CHECK_INT(fx_cmd(&f, "FROB\r\n"), SESS_CLOSE);
    fx_close(&f);
}

static void test_nul_in_line_is_err(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(FEED(&f, "USER al\0ice\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "-ERR");
    CHECK_INT(FEED(&f, "PASS sec\0ret\r\n"), SESS_AGAIN); /* no USER was accepted */
    CHECK_PREFIX(&f, "-ERR");
    CHECK(f.s->cred == NULL);
    CHECK_INT(fx_cmd(&f, "USER alice\r\n"), SESS_AGAIN);
    CHECK_OUT(&f, "+OK\r\n");
    CHECK_INT(FEED(&f, "PASS sec\0ret\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "-ERR");
    CHECK(f.s->cred == NULL);
    fx_close(&f);
}

static void test_line_over_max_command_closes(void)
{
    struct fx f;
    char line[200];
    fx_open_max(&f, LT_LOGIN, false, 64);
    memset(line, 'A', 100);
    CHECK_INT(fx_feed(&f, line, 100), SESS_CLOSE);
    CHECK_PREFIX(&f, "-ERR");
    fx_close(&f);

    fx_open_max(&f, LT_LOGIN, false, 64);
    snprintf(line, sizeof line, "USER %0100d\r\n", 0);
    CHECK_INT(fx_cmd(&f, line), SESS_CLOSE);
    CHECK_PREFIX(&f, "-ERR");
    CHECK_LACKS(&f, "+OK");
    fx_close(&f);
}

static void test_pipelined_command_after_pass_waits_for_login_done(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "USER u\r\nPASS p\r\nSTAT\r\n"), SESS_LOGIN);
    CHECK_OUT(&f, "+OK\r\n");
    CHECK_CRED(&f, "u", "p");
    CHECK_MEM(buf_head(&f.s->in), buf_avail(&f.s->in), "STAT\r\n");
    CHECK_INT(f.s->ops->input(f.s), SESS_AGAIN); /* STAT is not answered before login_done */
    CHECK_INT(buf_avail(&f.s->in), 6);
    fx_done(&f, LOGIN_FAILED, NULL);
    CHECK_PREFIX(&f, "-ERR [AUTH]");
    CHECK_INT(fx_feed(&f, "", 0), SESS_AGAIN);
    CHECK_PREFIX(&f, "-ERR");
    CHECK_INT(buf_avail(&f.s->in), 0);
    fx_close(&f);
}

/* ---- LoginType ---------------------------------------------------------------- */

static void test_user_refused_with_auth_code_under_secure_login(void)
{
    struct fx f;
    fx_open(&f, LT_SECURE);
    CHECK_INT(fx_cmd(&f, "USER alice\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "-ERR [AUTH]");
    CHECK_INT(fx_cmd(&f, "PASS secret\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "-ERR [AUTH]");
    CHECK(f.s->cred == NULL);
    fx_close(&f);
}

static void test_user_refused_under_plain_text_auth(void)
{
    struct fx f;
    fx_open(&f, LT_AUTH);
    CHECK_INT(fx_cmd(&f, "USER alice\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "-ERR [AUTH]");
    CHECK_INT(fx_cmd(&f, "PASS secret\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "-ERR");
    CHECK(f.s->cred == NULL);
    fx_close(&f);
}

static void test_auth_refused_under_secure_login(void)
{
    struct fx f;
    fx_open(&f, LT_SECURE);
    CHECK_INT(fx_cmd(&f, "AUTH PLAIN " B64_ALICE "\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "-ERR [AUTH]");
    CHECK_INT(fx_cmd(&f, "AUTH PLAIN\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "-ERR [AUTH]"); /* no "+": the password is never asked for */
    CHECK(f.s->cred == NULL);
    fx_close(&f);
}

static void test_auth_allowed_under_plain_text_auth(void)
{
    struct fx f;
    fx_open(&f, LT_AUTH);
    CHECK_INT(fx_cmd(&f, "AUTH PLAIN " B64_ALICE "\r\n"), SESS_LOGIN);
    CHECK_CRED(&f, "alice", "secret");
    fx_close(&f);
}

static void test_user_pass_allowed_under_secure_login_with_tls(void)
{
    struct fx f;
    fx_open_max(&f, LT_SECURE, true, MAX_CMD);
    CHECK_INT(fx_userpass(&f, "USER alice\r\n", "PASS secret\r\n"), SESS_LOGIN);
    CHECK_CRED(&f, "alice", "secret");
    fx_close(&f);
}

/* ---- protocol log ----------------------------------------------------------- */

struct plog_cap {
    char text[16384];
    size_t len;
    int client_lines;
};

static void plog_capture(void *ctx, const char *dir, const char *line, size_t n)
{
    struct plog_cap *c = ctx;
    c->client_lines += dir[0] == 'C';
    int k = snprintf(c->text + c->len, sizeof c->text - c->len, "%s %.*s\n", dir, (int)n, line);
    if (k > 0)
        c->len = FG_MIN(c->len + (size_t)k, sizeof c->text - 1);
}

/* Runs a script with a protocol log and checks that no secret shows in it. */
static void check_plog(uint8_t lt, const char *script, size_t n, int min_client_lines)
{
    struct plog_cap cap = {.len = 0};
    struct fx f;
    fx_open(&f, lt);
    f.s->plog = plog_capture;
    f.s->plog_ctx = &cap;
    if (fx_feed(&f, script, n) == SESS_LOGIN)
        fx_done(&f, LOGIN_FAILED, NULL);
    CHECKF(!th_contains(cap.text, cap.len, SECRET), "log shows the password:\n%s", cap.text);
    CHECKF(!th_contains(cap.text, cap.len, B64_SECRET), "log shows the SASL response:\n%s",
           cap.text);
    CHECKF(cap.client_lines >= min_client_lines, "only %d client lines logged:\n%s",
           cap.client_lines, cap.text);
    fx_close(&f);
}

static void test_plog_never_shows_pass_or_auth_response(void)
{
    static const char *const scripts[] = {
            "USER alice\r\nPASS " SECRET "\r\n",
            "user alice\r\npass " SECRET "\r\n",
            "AUTH PLAIN " B64_SECRET "\r\n",
            "AUTH PLAIN\r\n" B64_SECRET "\r\n",
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(scripts); i++)
        check_plog(LT_LOGIN, scripts[i], strlen(scripts[i]), 1);
    check_plog(LT_SECURE, scripts[0], strlen(scripts[0]), 2);
}

static void test_plog_never_shows_pass_line_holding_nul(void)
{
    static const char pass[] = "USER alice\r\nPASS " SECRET "\0\r\n";
    static const char auth[] = "AUTH PLAIN " B64_SECRET "\0\r\n";
    check_plog(LT_LOGIN, pass, sizeof pass - 1, 2);
    check_plog(LT_LOGIN, auth, sizeof auth - 1, 1);
}

/* ---- byte-at-a-time --------------------------------------------------------- */

static void test_byte_at_a_time_user_pass_matches_bulk(void)
{
    check_bytewise("CAPA\r\nSTAT\r\nAUTH\r\nUSER alice\r\nPASS  a b \r\n", SESS_LOGIN,
                   "\r\nPIPELINING\r\n");
}

static void test_byte_at_a_time_auth_matches_bulk(void)
{
    check_bytewise("AUTH PLAIN\r\n*\r\nAUTH PLAIN\r\n" B64_ALICE "\r\n", SESS_LOGIN, "-ERR");
}

static void test_byte_at_a_time_invalid_commands_match_bulk(void)
{
    check_bytewise("FROB\r\nSTAT\nPASS x\r\nUSER\r\nLIST\r\n", SESS_CLOSE, "-ERR");
}

static void test_bye_lines_are_err(void)
{
    static const enum sess_bye whys[] = {SESS_BYE_TIMEOUT, SESS_BYE_SHUTDOWN, SESS_BYE_OVERLOAD,
                                         SESS_BYE_PER_IP};
    for (size_t i = 0; i < FG_ARRAY_SIZE(whys); i++) {
        struct fx f;
        fx_open(&f, LT_LOGIN);
        sess_bye(f.s, whys[i]);
        CHECKF(out_starts(&f, "-ERR "), "bye %d: got \"%.*s\"", whys[i], OUT(&f));
        CHECK_INT(out_lines(&f), 1);
        fx_close(&f);
    }
    /* The refusals of the connection limits: a temporary failure (RFC 3206). */
    CHECK(strcmp(pop3_sess_ops.bye[SESS_BYE_OVERLOAD], "-ERR [SYS/TEMP] Too many connections.") ==
          0);
    CHECK(strncmp(pop3_sess_ops.bye[SESS_BYE_PER_IP], "-ERR [SYS/TEMP] ", 16) == 0);
}

/* ---- STLS and the LoginType x TLS matrix ------------------------------------ */

/* A session whose server has a certificate (conf.starttls) or not. */
static void fx_open_tls(struct fx *f, uint8_t lt, bool tls, bool starttls)
{
    fx_open_max(f, lt, tls, MAX_CMD);
    f->conf.starttls = starttls;
}

/* A refusal for want of TLS: one "-ERR [AUTH] ...TLS..." line. */
static void check_tls_refusal(const struct fx *f, const char *what, uint8_t lt, bool tls)
{
    CHECKF(out_starts(f, "-ERR [AUTH] ") && out_has(f, "TLS") && out_lines(f) == 1,
           "%s (login_type %d tls %d): got \"%.*s\", expected one \"-ERR [AUTH] ...TLS...\" line",
           what, lt, tls, OUT(f));
    CHECKF(f->s->cred == NULL, "%s (login_type %d tls %d): credentials after a refusal", what, lt,
           tls);
}

/* CAPA and the replies to USER/PASS, AUTH PLAIN and AUTH agree for every
 * LoginType, with and without TLS and a certificate. */
static void check_login_matrix(uint8_t lt, bool tls, bool cert)
{
    bool user_ok = tls || lt == LT_LOGIN;
    bool auth_ok = tls || lt != LT_SECURE;
    struct fx f;

    check_capa(lt, tls, user_ok, auth_ok); /* without a certificate */
    fx_open_tls(&f, lt, tls, cert);
    CHECK_INT(fx_cmd(&f, "CAPA\r\n"), SESS_AGAIN);
    CHECKF(out_has_line(&f, "USER") == user_ok, "login_type %d tls %d cert %d: USER should be %s",
           lt, tls, cert, user_ok ? "listed" : "absent");
    CHECKF(out_has_line(&f, "SASL PLAIN") == auth_ok,
           "login_type %d tls %d cert %d: SASL PLAIN should be %s", lt, tls, cert,
           auth_ok ? "listed" : "absent");
    CHECKF(out_has_line(&f, "STLS") == (cert && !tls),
           "login_type %d tls %d cert %d: STLS should be %s in \"%.*s\"", lt, tls, cert,
           cert && !tls ? "listed" : "absent", OUT(&f));

    /* USER / PASS */
    CHECK_INT(fx_cmd(&f, "USER alice\r\n"), SESS_AGAIN);
    if (user_ok) {
        CHECK_OUT(&f, "+OK\r\n");
        CHECK_INT(fx_cmd(&f, "PASS secret\r\n"), SESS_LOGIN);
        CHECK_OUT(&f, "");
        CHECK_CRED(&f, "alice", "secret");
        fx_done(&f, LOGIN_FAILED, NULL);
    } else {
        check_tls_refusal(&f, "USER", lt, tls);
        CHECK_INT(fx_cmd(&f, "PASS secret\r\n"), SESS_AGAIN);
        check_tls_refusal(&f, "PASS", lt, tls);
    }

    /* AUTH PLAIN with an initial response */
    enum sess_action act = fx_cmd(&f, "AUTH PLAIN " B64_ALICE "\r\n");
    CHECKF(act == (auth_ok ? SESS_LOGIN : SESS_AGAIN),
           "AUTH PLAIN (login_type %d tls %d cert %d): action %d", lt, tls, cert, act);
    if (auth_ok) {
        CHECK_OUT(&f, "");
        CHECK_CRED(&f, "alice", "secret");
        fx_done(&f, LOGIN_FAILED, NULL);
    } else {
        check_tls_refusal(&f, "AUTH PLAIN", lt, tls);
    }

    /* AUTH PLAIN without one: the "+" asks for the password */
    CHECK_INT(fx_cmd(&f, "AUTH PLAIN\r\n"), SESS_AGAIN);
    if (auth_ok) {
        CHECK_OUT(&f, "+ \r\n");
        CHECK_INT(fx_cmd(&f, B64_ALICE "\r\n"), SESS_LOGIN);
        CHECK_CRED(&f, "alice", "secret");
        fx_done(&f, LOGIN_FAILED, NULL);
    } else {
        check_tls_refusal(&f, "AUTH PLAIN (no response)", lt, tls);
    }

    /* AUTH alone lists PLAIN only where it may be used */
    CHECK_INT(fx_cmd(&f, "AUTH\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "+OK");
    CHECKF(out_has_line(&f, "PLAIN") == auth_ok,
           "AUTH (login_type %d tls %d cert %d): PLAIN should be %s in \"%.*s\"", lt, tls, cert,
           auth_ok ? "listed" : "absent", OUT(&f));
    fx_close(&f);
}

static void test_login_type_tls_matrix_capa_and_replies_agree(void)
{
    static const uint8_t types[] = {LT_LOGIN, LT_AUTH, LT_SECURE};
    for (size_t i = 0; i < FG_ARRAY_SIZE(types); i++)
        for (int tls = 0; tls < 2; tls++)
            for (int cert = 0; cert < 2; cert++)
                check_login_matrix(types[i], tls, cert);
}

static void test_stls_replies_ok_and_asks_for_handshake(void)
{
    struct fx f;
    fx_open_tls(&f, LT_SECURE, false, true);
    CHECK_INT(fx_cmd(&f, "STLS\r\n"), SESS_STARTTLS);
    CHECK_OUT(&f, "+OK Begin TLS negotiation.\r\n");
    CHECK_INT(buf_avail(&f.s->in), 0);
    CHECK(f.s->cred == NULL);
    fx_close(&f);

    fx_open_tls(&f, LT_LOGIN, false, true); /* command names are case-insensitive */
    CHECK_INT(fx_cmd(&f, "stls\r\n"), SESS_STARTTLS);
    CHECK_OUT(&f, "+OK Begin TLS negotiation.\r\n");
    fx_close(&f);
}

/*
 * Clear-text bytes pipelined after STLS must never run as commands inside
 * TLS (CVE-2011-0411): the injected USER/PASS get no reply and give no
 * credentials, and CAPA changes once the core sets s->tls.
 */
static void check_stls_drops_injected(uint8_t lt, const char *script)
{
    struct fx f;
    fx_open_tls(&f, lt, false, true);
    enum sess_action act = fx_cmd(&f, script);
    CHECKF(act == SESS_STARTTLS, "login_type %d, \"%s\": action %d", lt, script, act);
    CHECK_OUT(&f, "+OK Begin TLS negotiation.\r\n");
    CHECKF(buf_avail(&f.s->in) == 0, "login_type %d: %u bytes left in s->in after STLS", lt,
           buf_avail(&f.s->in));
    CHECK(f.s->cred == NULL);
    f.s->tls = true;
    CHECK_INT(fx_feed(&f, "", 0), SESS_AGAIN);
    CHECK_OUT(&f, "");

    CHECK_INT(fx_cmd(&f, "CAPA\r\n"), SESS_AGAIN);
    CHECKF(!out_has_line(&f, "STLS") && out_has_line(&f, "USER") && out_has_line(&f, "SASL PLAIN"),
           "login_type %d: CAPA after STLS \"%.*s\" should list USER and SASL PLAIN, not STLS", lt,
           OUT(&f));
    /* The injected USER was never seen: PASS alone gets nowhere. */
    CHECK_INT(fx_cmd(&f, "PASS p\r\n"), SESS_AGAIN);
    CHECK_OUT(&f, "-ERR No user name given: send USER first.\r\n");
    CHECK(f.s->cred == NULL);
    CHECK_INT(fx_userpass(&f, "USER alice\r\n", "PASS secret\r\n"), SESS_LOGIN);
    CHECK_CRED(&f, "alice", "secret");
    fx_done(&f, LOGIN_OK, NULL);
    CHECK_OUT(&f, "+OK Logged in.\r\n");
    fx_close(&f);
}

static void test_stls_drops_pipelined_commands(void)
{
    static const uint8_t types[] = {LT_LOGIN, LT_AUTH, LT_SECURE};
    static const char *const scripts[] = {
            "STLS\r\nUSER u\r\nPASS p\r\n", "STLS\r\nAUTH PLAIN " B64_ALICE "\r\n",
            "STLS\r\nUSER u\r\nPASS p", /* no line end yet */
            "STLS\nUSER u\nPASS p\n",   /* bare LFs */
            "STLS\r\nUSER u\r\nQUIT\r\n",
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(types); i++)
        for (size_t k = 0; k < FG_ARRAY_SIZE(scripts); k++)
            check_stls_drops_injected(types[i], scripts[k]);
}

/* A USER given in clear text does not carry over into TLS. */
static void test_stls_forgets_user_given_before(void)
{
    struct fx f;
    fx_open_tls(&f, LT_LOGIN, false, true);
    CHECK_INT(fx_cmd(&f, "USER alice\r\n"), SESS_AGAIN);
    CHECK_OUT(&f, "+OK\r\n");
    CHECK_INT(fx_cmd(&f, "STLS\r\n"), SESS_STARTTLS);
    CHECK_OUT(&f, "+OK Begin TLS negotiation.\r\n");
    f.s->tls = true;
    CHECK_INT(fx_cmd(&f, "PASS secret\r\n"), SESS_AGAIN);
    CHECK_OUT(&f, "-ERR No user name given: send USER first.\r\n");
    CHECK(f.s->cred == NULL);
    fx_close(&f);
}

static void test_stls_after_pipelined_commands_answers_them_first(void)
{
    struct fx f;
    fx_open_tls(&f, LT_SECURE, false, true);
    CHECK_INT(fx_cmd(&f, "STAT\r\nSTLS\r\nUSER u\r\n"), SESS_STARTTLS);
    CHECK_PREFIX(&f, "-ERR ");
    CHECK_INT(out_lines(&f), 2);
    CHECK_HAS(&f, "\r\n+OK Begin TLS negotiation.\r\n");
    CHECK_INT(buf_avail(&f.s->in), 0);
    fx_close(&f);
}

static void test_stls_refusals(void)
{
    struct fx f;
    /* an argument */
    fx_open_tls(&f, LT_SECURE, false, true);
    CHECK_INT(fx_cmd(&f, "STLS now\r\nCAPA\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "-ERR ");
    CHECK_HAS(&f, "\r\n+OK Capability list follows\r\n"); /* what follows is still read */
    CHECK(out_has_line(&f, "STLS"));
    fx_close(&f);

    /* already inside TLS, with or without a certificate configured */
    for (int cert = 0; cert < 2; cert++) {
        fx_open_tls(&f, LT_SECURE, true, cert);
        CHECK_INT(fx_cmd(&f, "STLS\r\nUSER alice\r\n"), SESS_AGAIN);
        CHECK_OUT(&f, "-ERR Command not permitted when TLS active.\r\n+OK\r\n");
        fx_close(&f);
    }

    /* no certificate: not offered, not available */
    fx_open_tls(&f, LT_LOGIN, false, false);
    CHECK_INT(fx_cmd(&f, "STLS\r\nUSER u\r\nPASS p\r\n"), SESS_LOGIN);
    CHECK_PREFIX(&f, "-ERR ");
    CHECK_HAS(&f, "\r\n+OK\r\n");
    CHECK_LACKS(&f, "Begin TLS");
    CHECK_CRED(&f, "u", "p");
    fx_close(&f);
}

static void test_stls_twice_is_refused(void)
{
    struct fx f;
    fx_open_tls(&f, LT_SECURE, false, true);
    CHECK_INT(fx_cmd(&f, "STLS\r\n"), SESS_STARTTLS);
    f.s->tls = true;
    CHECK_INT(fx_cmd(&f, "STLS\r\n"), SESS_AGAIN);
    CHECK_OUT(&f, "-ERR Command not permitted when TLS active.\r\n");
    fx_close(&f);
}

/* "STLS" as the line answering AUTH PLAIN's "+" is a SASL response. */
static void test_stls_during_sasl_exchange_is_not_a_command(void)
{
    struct fx f;
    fx_open_tls(&f, LT_AUTH, false, true);
    CHECK_INT(fx_cmd(&f, "AUTH PLAIN\r\n"), SESS_AGAIN);
    CHECK_OUT(&f, "+ \r\n");
    CHECK(fx_cmd(&f, "STLS\r\n") != SESS_STARTTLS);
    CHECK_PREFIX(&f, "-ERR");
    CHECK(f.s->cred == NULL);
    fx_close(&f);
}

static void test_stls_byte_at_a_time(void)
{
    static const char line[] = "STLS\r\n";
    struct fx f;
    int early = 0;
    fx_open_tls(&f, LT_SECURE, false, true);
    enum sess_action act = SESS_AGAIN;
    for (size_t i = 0; i < sizeof line - 1; i++) {
        buf_append(&f.s->in, line + i, 1);
        act = f.s->ops->input(f.s);
        early += act != SESS_AGAIN && i + 2 < sizeof line;
    }
    CHECK_INT(act, SESS_STARTTLS);
    CHECK_INT(early, 0);
    CHECK_OUT(&f, "+OK Begin TLS negotiation.\r\n");
    CHECK_INT(buf_avail(&f.s->in), 0);
    fx_close(&f);
}

int main(void)
{
    test_greeting_has_banner_and_no_apop_timestamp();
    test_capa_plain_text_login_lists_user_and_sasl_plain();
    test_capa_plain_text_auth_lists_only_sasl_plain();
    test_capa_secure_login_lists_neither();
    test_capa_tls_lists_both_for_every_login_type();
    test_user_pass_gives_exact_credentials();
    test_pass_takes_everything_after_first_space();
    test_pass_without_user_is_err();
    test_user_needed_again_after_failed_login();
    test_auth_plain_initial_response();
    test_auth_plain_initial_response_keeps_authzid();
    test_auth_plain_with_continuation();
    test_auth_star_cancels_with_err();
    test_auth_without_argument_lists_plain();
    test_auth_empty_response_fails_with_auth_code();
    test_auth_invalid_base64_is_err();
    test_auth_unsupported_mechanism_is_err();
    test_auth_huge_response_refused_without_overflow();
    test_login_done_maps_status_to_reply();
    test_quit_replies_ok_and_closes();
    test_stat_before_login_is_err();
    test_unknown_command_is_err();
    test_five_invalid_commands_in_a_row_close();
    test_valid_command_resets_invalid_count();
    test_nul_in_line_is_err();
    test_line_over_max_command_closes();
    test_pipelined_command_after_pass_waits_for_login_done();
    test_user_refused_with_auth_code_under_secure_login();
    test_user_refused_under_plain_text_auth();
    test_auth_refused_under_secure_login();
    test_auth_allowed_under_plain_text_auth();
    test_user_pass_allowed_under_secure_login_with_tls();
    test_plog_never_shows_pass_or_auth_response();
    test_plog_never_shows_pass_line_holding_nul();
    test_byte_at_a_time_user_pass_matches_bulk();
    test_byte_at_a_time_auth_matches_bulk();
    test_byte_at_a_time_invalid_commands_match_bulk();
    test_bye_lines_are_err();
    test_login_type_tls_matrix_capa_and_replies_agree();
    test_stls_replies_ok_and_asks_for_handshake();
    test_stls_drops_pipelined_commands();
    test_stls_forgets_user_given_before();
    test_stls_after_pipelined_commands_answers_them_first();
    test_stls_refusals();
    test_stls_twice_is_refused();
    test_stls_during_sasl_exchange_is_not_a_command();
    test_stls_byte_at_a_time();
    return th_finish("test_pop3_session");
}

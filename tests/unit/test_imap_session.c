/*
 * The IMAP client session before login, driven through imap_sess_ops exactly
 * as the core drives it: client bytes go into s->in, input() answers into the
 * output buffer, and a SESS_LOGIN is finished with login_done().
 */

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define BANNER  "Forestgate IMAP4 service ready."
#define MAX_CMD 10240
#define FX_OPS  imap_sess_ops
#include "sess_fixture.h"

/* True when the space-separated list caps (n bytes) holds the word w. */
static bool cap_has(const char *caps, size_t n, const char *w)
{
    size_t k = strlen(w);
    for (size_t i = 0; i + k <= n; i++) {
        bool start = i == 0 || caps[i - 1] == ' ';
        bool end = i + k == n || caps[i + k] == ' ';
        if (start && end && memcmp(caps + i, w, k) == 0)
            return true;
    }
    return false;
}

/* The capability list inside the greeting's [CAPABILITY ...], or NULL. */
static const char *greeting_caps(const struct fx *f, size_t *n)
{
    static const char pre[] = "* OK [CAPABILITY ";
    const char *p = buf_head(&f->out);
    size_t avail = buf_avail(&f->out);
    if (avail < sizeof pre || memcmp(p, pre, sizeof pre - 1) != 0)
        return NULL;
    const char *close = memchr(p, ']', avail);
    if (!close)
        return NULL;
    *n = (size_t)(close - p) - (sizeof pre - 1);
    return p + sizeof pre - 1;
}

/* ---- greeting and capabilities ---------------------------------------- */

static void test_greeting_has_capability_code_and_banner(void)
{
    struct fx f;
    size_t n = 0;
    fx_open(&f, LT_LOGIN);
    f.s->ops->greeting(f.s);
    const char *caps = greeting_caps(&f, &n);
    CHECKF(caps != NULL, "greeting \"%.*s\" has no [CAPABILITY ...]", OUT(&f));
    if (caps) {
        CHECK(cap_has(caps, n, "IMAP4rev1"));
        CHECK(cap_has(caps, n, "LITERAL+")); /* the parser takes {n+}: RFC 7888 says advertise */
        CHECK(cap_has(caps, n, "SASL-IR"));
        CHECK(cap_has(caps, n, "ID"));
    }
    CHECKF(th_contains(buf_head(&f.out), buf_avail(&f.out), "] " BANNER "\r\n"),
           "greeting \"%.*s\" should end with the banner", OUT(&f));
    CHECK_INT(out_lines(&f), 1);
    fx_close(&f);
}

/* The greeting's capabilities for a LoginType and TLS state. */
static void check_caps(uint8_t lt, bool tls, bool logindisabled, bool auth_plain)
{
    struct fx f;
    size_t n = 0;
    fx_open_max(&f, lt, tls, MAX_CMD);
    f.s->ops->greeting(f.s);
    const char *caps = greeting_caps(&f, &n);
    CHECKF(caps != NULL, "login_type %d tls %d: greeting \"%.*s\"", lt, tls, OUT(&f));
    if (caps) {
        CHECKF(cap_has(caps, n, "LOGINDISABLED") == logindisabled,
               "login_type %d tls %d: LOGINDISABLED should be %s in \"%.*s\"", lt, tls,
               logindisabled ? "present" : "absent", (int)n, caps);
        CHECKF(cap_has(caps, n, "AUTH=PLAIN") == auth_plain,
               "login_type %d tls %d: AUTH=PLAIN should be %s in \"%.*s\"", lt, tls,
               auth_plain ? "present" : "absent", (int)n, caps);
    }
    fx_close(&f);
}

static void test_caps_plain_text_login_offers_login_and_auth_plain(void)
{
    check_caps(LT_LOGIN, false, false, true);
}

static void test_caps_plain_text_auth_disables_login_keeps_auth_plain(void)
{
    check_caps(LT_AUTH, false, true, true);
}

static void test_caps_secure_login_disables_login_and_auth_plain(void)
{
    check_caps(LT_SECURE, false, true, false);
}

static void test_caps_tls_allows_login_and_auth_plain_for_every_login_type(void)
{
    check_caps(LT_LOGIN, true, false, true);
    check_caps(LT_AUTH, true, false, true);
    check_caps(LT_SECURE, true, false, true);
}

static void test_capability_command_lists_greeting_caps(void)
{
    static const uint8_t types[] = {LT_LOGIN, LT_AUTH, LT_SECURE};
    for (size_t i = 0; i < FG_ARRAY_SIZE(types); i++) {
        struct fx f;
        char want[300];
        size_t n = 0;
        fx_open(&f, types[i]);
        f.s->ops->greeting(f.s);
        const char *caps = greeting_caps(&f, &n);
        snprintf(want, sizeof want, "* CAPABILITY %.*s\r\nc1 OK ", caps ? (int)n : 0,
                 caps ? caps : "");
        CHECK_INT(fx_cmd(&f, "c1 CAPABILITY\r\n"), SESS_AGAIN);
        CHECK_PREFIX(&f, want);
        CHECK_INT(out_lines(&f), 2);
        fx_close(&f);
    }
}

/* ---- NOOP, LOGOUT, ID ----------------------------------------------------- */

static void test_noop_replies_tagged_ok(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "n1 NOOP\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "n1 OK ");
    CHECK_INT(out_lines(&f), 1);
    CHECK_INT(fx_cmd(&f, "n2 noop\r\n"), SESS_AGAIN); /* command names are case-insensitive */
    CHECK_PREFIX(&f, "n2 OK ");
    fx_close(&f);
}

static void test_logout_sends_bye_then_tagged_ok_and_closes(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "z9 LOGOUT\r\n"), SESS_CLOSE);
    CHECK_PREFIX(&f, "* BYE ");
    CHECK_HAS(&f, "\r\nz9 OK ");
    CHECK_INT(out_lines(&f), 2);
    fx_close(&f);
}

static void test_id_list_replied_and_client_fields_kept(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "i1 ID (\"name\" \"Thunderbird\" \"version\" \"115.0\")\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "* ID (");
    CHECK_HAS(&f, ")\r\ni1 OK ");
    CHECK_INT(out_lines(&f), 2);
    CHECK_MEM(f.s->client_id, strlen(f.s->client_id), "name=Thunderbird version=115.0");
    fx_close(&f);
}

static void test_id_nil_replied_with_ok(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "i2 ID NIL\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "* ID (");
    CHECK_HAS(&f, "\r\ni2 OK ");
    CHECK_INT(strlen(f.s->client_id), 0);
    fx_close(&f);
}

static void test_id_with_odd_field_count_is_bad(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "i3 ID (\"name\" \"x\" \"version\")\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "i3 BAD ");
    CHECK_LACKS(&f, "* ID");
    fx_close(&f);
}

/* An ID command with the given number of field/value pairs. */
static void id_with_pairs(char *dst, size_t n, unsigned pairs)
{
    size_t o = (size_t)snprintf(dst, n, "i4 ID (");
    for (unsigned i = 0; i < pairs; i++)
        o += (size_t)snprintf(dst + o, n - o, "%s\"f%u\" \"v\"", i ? " " : "", i);
    snprintf(dst + o, n - o, ")\r\n");
}

static void test_id_with_more_than_30_pairs_is_bad(void)
{
    struct fx f;
    char cmd[1024];
    fx_open(&f, LT_LOGIN);
    id_with_pairs(cmd, sizeof cmd, 31);
    CHECK_INT(fx_cmd(&f, cmd), SESS_AGAIN);
    CHECK_PREFIX(&f, "i4 BAD ");
    id_with_pairs(cmd, sizeof cmd, 30); /* the limit itself is fine */
    CHECK_INT(fx_cmd(&f, cmd), SESS_AGAIN);
    CHECK_PREFIX(&f, "* ID (");
    fx_close(&f);
}

static void test_id_with_oversized_field_or_value_is_bad(void)
{
    struct fx f;
    char cmd[1200];
    fx_open(&f, LT_LOGIN);
    /* field names are at most 30 octets */
    CHECK_INT(fx_cmd(&f, "i5 ID (\"abcdefghijklmnopqrstuvwxyz12345\" \"v\")\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "i5 BAD ");
    /* values are at most 1024 octets */
    snprintf(cmd, sizeof cmd, "i6 ID (\"name\" \"%01025d\")\r\n", 0);
    CHECK_INT(fx_cmd(&f, cmd), SESS_AGAIN);
    CHECK_PREFIX(&f, "i6 BAD ");
    fx_close(&f);
}

static void test_id_never_keeps_control_bytes(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "i7 ID (\"name\" {6+}\r\nx\r\ny\tz)\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "* ID (");
    CHECK(strchr(f.s->client_id, '\r') == NULL);
    CHECK(strchr(f.s->client_id, '\n') == NULL);
    CHECK(strchr(f.s->client_id, '\t') == NULL);
    CHECK(strncmp(f.s->client_id, "name=x", 6) == 0);
    fx_close(&f);
}

/* ---- LOGIN ----------------------------------------------------------------- */

static void test_login_atoms_give_exact_credentials(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "l1 LOGIN alice secret\r\n"), SESS_LOGIN);
    CHECK_OUT(&f, "");
    CHECK_CRED(&f, "alice", "secret");
    CHECK_INT(buf_avail(&f.s->in), 0);
    fx_close(&f);
}

static void test_login_quoted_strings_are_unescaped(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "l2 LOGIN \"al ice\" \"p\\\"w\\\\d (x)\"\r\n"), SESS_LOGIN);
    CHECK_OUT(&f, "");
    CHECK_CRED(&f, "al ice", "p\"w\\d (x)");
    fx_close(&f);
}

static void test_login_sync_literal_sends_continuation_first(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "l3 LOGIN alice {6}\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "+ ");
    CHECK_INT(out_lines(&f), 1);
    CHECK(f.s->cred == NULL);
    CHECK_INT(fx_cmd(&f, "s3cr t\r\n"), SESS_LOGIN);
    CHECK_OUT(&f, "");
    CHECK_CRED(&f, "alice", "s3cr t");
    fx_close(&f);
}

static void test_login_nonsync_literals_need_no_continuation(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "l4 LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n"), SESS_LOGIN);
    CHECK_OUT(&f, "");
    CHECK_CRED(&f, "alice", "secret");
    fx_close(&f);
}

static void test_login_literal_keeps_crlf_spaces_and_8bit(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "l5 LOGIN \"j\xc3\xbcrgen\" {9+}\r\n p\r\nw\xe2\x82\xac \r\n"),
              SESS_LOGIN);
    CHECK_CRED(&f, "j\xc3\xbcrgen", " p\r\nw\xe2\x82\xac ");
    fx_close(&f);
}

static void test_login_ok_reply_uses_pending_tag_and_backend_caps(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "tag7 LOGIN alice secret\r\n"), SESS_LOGIN);
    fx_done(&f, LOGIN_OK, "IMAP4rev1 IDLE MOVE");
    CHECK_OUT(&f, "tag7 OK [CAPABILITY IMAP4rev1 IDLE MOVE] LOGIN completed.\r\n");
    CHECK(f.s->cred == NULL);
    fx_close(&f);
}

static void test_login_ok_without_caps_has_no_empty_code(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "t8 LOGIN alice secret\r\n"), SESS_LOGIN);
    fx_done(&f, LOGIN_OK, NULL);
    CHECK_PREFIX(&f, "t8 OK ");
    CHECK_LACKS(&f, "[CAPABILITY");
    fx_close(&f);
}

static void test_login_failures_carry_rfc5530_codes(void)
{
    static const struct {
        enum login_status st;
        const char *reply;
    } cases[] = {
            {LOGIN_FAILED, "t9 NO [AUTHENTICATIONFAILED] "},
            {LOGIN_DENIED, "t9 NO [AUTHORIZATIONFAILED] "},
            {LOGIN_EXPIRED, "t9 NO [EXPIRED] "},
            {LOGIN_UNAVAILABLE, "t9 NO [UNAVAILABLE] "},
            {LOGIN_TOO_MANY, "t9 NO [UNAVAILABLE] Too many connections for this user."},
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(cases); i++) {
        struct fx f;
        fx_open(&f, LT_LOGIN);
        CHECK_INT(fx_cmd(&f, "t9 LOGIN alice secret\r\n"), SESS_LOGIN);
        fx_done(&f, cases[i].st, "IMAP4rev1");
        CHECKF(out_starts(&f, cases[i].reply), "status %d: got \"%.*s\", expected \"%s...\"",
               cases[i].st, OUT(&f), cases[i].reply);
        CHECK_INT(out_lines(&f), 1);
        CHECK(f.s->cred == NULL);
        fx_close(&f);
    }
}

static void test_login_overlong_user_refused_without_login(void)
{
    struct fx f;
    char cmd[600];
    fx_open(&f, LT_LOGIN);
    snprintf(cmd, sizeof cmd, "l6 LOGIN %0300d secret\r\n", 0);
    CHECK_INT(fx_cmd(&f, cmd), SESS_AGAIN);
    CHECK_PREFIX(&f, "l6 NO ");
    CHECK(f.s->cred == NULL);
    fx_close(&f);
}

/* ---- AUTHENTICATE PLAIN ---------------------------------------------------- */

static void test_authenticate_plain_sasl_ir(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "a1 AUTHENTICATE PLAIN " B64_ALICE "\r\n"), SESS_LOGIN);
    CHECK_OUT(&f, "");
    CHECK_CRED(&f, "alice", "secret");
    if (f.s->cred)
        CHECK_INT(f.s->cred->authzid_len, 0);
    fx_done(&f, LOGIN_OK, "IMAP4rev1");
    CHECK_PREFIX(&f, "a1 OK [CAPABILITY IMAP4rev1] ");
    fx_close(&f);
}

static void test_authenticate_plain_sasl_ir_keeps_authzid(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "a2 authenticate plain " B64_ALICE_AUTHZ "\r\n"), SESS_LOGIN);
    CHECK_CRED(&f, "alice", "secret");
    if (f.s->cred)
        CHECK_MEM(f.s->cred->authzid, f.s->cred->authzid_len, "admin");
    fx_close(&f);
}

static void test_authenticate_plain_with_continuation(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "a3 AUTHENTICATE PLAIN\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "+");
    CHECK_INT(out_lines(&f), 1);
    CHECK_LACKS(&f, "a3 ");
    CHECK_INT(fx_cmd(&f, B64_ALICE "\r\n"), SESS_LOGIN);
    CHECK_OUT(&f, "");
    CHECK_CRED(&f, "alice", "secret");
    fx_done(&f, LOGIN_FAILED, NULL);
    CHECK_PREFIX(&f, "a3 NO [AUTHENTICATIONFAILED] ");
    fx_close(&f);
}

static void test_authenticate_star_cancels_with_tagged_bad(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "a4 AUTHENTICATE PLAIN\r\n"), SESS_AGAIN);
    CHECK_INT(fx_cmd(&f, "*\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "a4 BAD ");
    CHECK(f.s->cred == NULL);
    /* back to reading commands, not SASL lines */
    CHECK_INT(fx_cmd(&f, "a5 NOOP\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "a5 OK ");
    fx_close(&f);
}

static void test_authenticate_empty_response_fails(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "a6 AUTHENTICATE PLAIN =\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "a6 NO ");
    CHECK(f.s->cred == NULL);
    CHECK_INT(fx_cmd(&f, "a7 AUTHENTICATE PLAIN\r\n"), SESS_AGAIN);
    CHECK_INT(fx_cmd(&f, "=\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "a7 NO ");
    CHECK(f.s->cred == NULL);
    fx_close(&f);
}

static void test_authenticate_invalid_base64_is_bad(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "a8 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "a8 BAD ");
    CHECK_INT(fx_cmd(&f, "a9 AUTHENTICATE PLAIN\r\n"), SESS_AGAIN);
    CHECK_INT(fx_cmd(&f, "AGFs!WNlAHNlY3JldA==\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "a9 BAD ");
    CHECK(f.s->cred == NULL);
    fx_close(&f);
}

static void test_authenticate_unsupported_mechanism_is_no(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "b1 AUTHENTICATE CRAM-MD5\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "b1 NO ");
    CHECK_INT(out_lines(&f), 1);
    CHECK_INT(fx_cmd(&f, "b2 NOOP\r\n"), SESS_AGAIN); /* no SASL exchange was started */
    CHECK_PREFIX(&f, "b2 OK ");
    fx_close(&f);
}

/*
 * A SASL response of 4096 base64 characters decodes to 3072 bytes; the session
 * must refuse it (the fields exceed the credential limits) without writing
 * past any buffer. Run in a child so that a crash is reported, not fatal.
 */
static int huge_response_child(bool continuation)
{
    struct fx f;
    static unsigned char raw[3072];
    static char b64[4200], line[4300];
    memset(raw, 'x', sizeof raw);
    memcpy(raw, "\0alice\0", 7);
    b64_encode(raw, sizeof raw, b64);
    fx_open(&f, LT_LOGIN);
    enum sess_action act;
    if (continuation) {
        fx_cmd(&f, "h1 AUTHENTICATE PLAIN\r\n");
        snprintf(line, sizeof line, "%s\r\n", b64);
    } else {
        snprintf(line, sizeof line, "h1 AUTHENTICATE PLAIN %s\r\n", b64);
    }
    act = fx_cmd(&f, line);
    int ok = act == SESS_AGAIN && (out_starts(&f, "h1 NO ") || out_starts(&f, "h1 BAD "));
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
           "4096-char AUTHENTICATE response (%s): child %s %d; 3 = wrong reply, a signal or a "
           "sanitizer exit = memory error (imap_sasl_response bounds n by 2 * sizeof raw, "
           "but 4096 base64 chars decode to 3072 > 2048 bytes)",
           continuation ? "continuation" : "SASL-IR", sig ? "killed by signal" : "exited with",
           sig ? WTERMSIG(st) : WEXITSTATUS(st));
}

static void test_authenticate_huge_response_refused_without_overflow(void)
{
    check_huge_response(false);
    check_huge_response(true);
}

/* ---- LoginType ------------------------------------------------------------- */

static void test_login_refused_with_privacyrequired_under_secure_login(void)
{
    struct fx f;
    fx_open(&f, LT_SECURE);
    CHECK_INT(fx_cmd(&f, "p1 LOGIN alice secret\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "p1 NO [PRIVACYREQUIRED] ");
    CHECK(f.s->cred == NULL);
    fx_close(&f);
}

static void test_login_refused_with_privacyrequired_under_plain_text_auth(void)
{
    struct fx f;
    fx_open(&f, LT_AUTH);
    CHECK_INT(fx_cmd(&f, "p2 LOGIN alice secret\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "p2 NO [PRIVACYREQUIRED] ");
    CHECK(f.s->cred == NULL);
    fx_close(&f);
}

static void test_login_allowed_under_secure_login_with_tls(void)
{
    struct fx f;
    fx_open_max(&f, LT_SECURE, true, MAX_CMD);
    CHECK_INT(fx_cmd(&f, "p3 LOGIN alice secret\r\n"), SESS_LOGIN);
    CHECK_CRED(&f, "alice", "secret");
    fx_close(&f);
}

static void test_authenticate_refused_with_privacyrequired_under_secure_login(void)
{
    struct fx f;
    fx_open(&f, LT_SECURE);
    CHECK_INT(fx_cmd(&f, "p4 AUTHENTICATE PLAIN " B64_ALICE "\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "p4 NO [PRIVACYREQUIRED] ");
    CHECK(f.s->cred == NULL);
    CHECK_INT(fx_cmd(&f, "p5 AUTHENTICATE PLAIN\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "p5 NO [PRIVACYREQUIRED] "); /* no "+": the password is never asked for */
    CHECK_INT(out_lines(&f), 1);
    fx_close(&f);
}

static void test_authenticate_allowed_under_plain_text_auth(void)
{
    struct fx f;
    fx_open(&f, LT_AUTH);
    CHECK_INT(fx_cmd(&f, "p6 AUTHENTICATE PLAIN " B64_ALICE "\r\n"), SESS_LOGIN);
    CHECK_CRED(&f, "alice", "secret");
    fx_close(&f);
}

/* ---- NUL, state, invalid commands ------------------------------------------- */

static void test_nul_in_literal_password_refused(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(FEED(&f, "n1 LOGIN alice {7+}\r\nsec\0ret\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "n1 BAD ");
    CHECK(f.s->cred == NULL);
    CHECK_INT(fx_cmd(&f, "n2 LOGIN alice {7}\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "+ ");
    CHECK_INT(FEED(&f, "sec\0ret\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "n2 BAD ");
    CHECK(f.s->cred == NULL);
    CHECK_INT(fx_cmd(&f, "n3 NOOP\r\n"), SESS_AGAIN); /* the literal's bytes were skipped */
    CHECK_OUT(&f, "n3 OK NOOP completed.\r\n");
    fx_close(&f);
}

static void test_select_before_login_is_invalid_state(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "s1 SELECT INBOX\r\n"), SESS_AGAIN);
    CHECK_OUT(&f, "s1 BAD Command received in Invalid state.\r\n");
    fx_close(&f);
}

static void test_unknown_command_is_bad(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "u1 FROBNICATE x\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "u1 BAD ");
    CHECK_INT(out_lines(&f), 1);
    fx_close(&f);
}

static void test_invalid_tag_is_never_echoed(void)
{
    static const char *const lines[] = {"+ NOOP\r\n", "a*b NOOP\r\n", "a%b NOOP\r\n", "(x NOOP\r\n",
                                        "\"q\" NOOP\r\n"};
    for (size_t i = 0; i < FG_ARRAY_SIZE(lines); i++) {
        struct fx f;
        fx_open(&f, LT_LOGIN);
        CHECK_INT(fx_cmd(&f, lines[i]), SESS_AGAIN);
        CHECKF(out_starts(&f, "* BAD "), "line %zu: got \"%.*s\", expected \"* BAD ...\"", i,
               OUT(&f));
        CHECK_INT(out_lines(&f), 1);
        fx_close(&f);
    }
}

static void test_five_invalid_commands_in_a_row_close(void)
{
    static const char *const bad[] = {"+ NOOP\r\n", "x1 FROB\r\n", "x2 SELECT INBOX\r\n",
                                      "x3 NOOP extra\r\n"};
    struct fx f;
    fx_open(&f, LT_LOGIN);
    for (size_t i = 0; i < FG_ARRAY_SIZE(bad); i++) {
        CHECK_INT(fx_cmd(&f, bad[i]), SESS_AGAIN);
        CHECK_LACKS(&f, "* BYE");
    }
    CHECK_INT(fx_cmd(&f, "x4 (((\r\n"), SESS_CLOSE);
    CHECK_HAS(&f, "* BYE ");
    fx_close(&f);
}

static void test_valid_command_resets_invalid_count(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    for (int i = 0; i < 4; i++)
        CHECK_INT(fx_cmd(&f, "x FROB\r\n"), SESS_AGAIN);
    CHECK_INT(fx_cmd(&f, "v NOOP\r\n"), SESS_AGAIN);
    for (int i = 0; i < 4; i++) {
        CHECK_INT(fx_cmd(&f, "x FROB\r\n"), SESS_AGAIN);
        CHECK_LACKS(&f, "* BYE");
    }
    CHECK_INT(fx_cmd(&f, "x FROB\r\n"), SESS_CLOSE); /* five in a row again */
    CHECK_HAS(&f, "* BYE ");
    fx_close(&f);
}

/* ---- size limits ------------------------------------------------------------- */

static void check_bad_then_bye(const struct fx *f)
{
    const char *p = buf_head(&f->out);
    size_t n = buf_avail(&f->out);
    CHECKF(n >= 6 && memcmp(p, "* BAD ", 6) == 0, "got \"%.*s\", expected \"* BAD ...\"", (int)n,
           p);
    CHECKF(th_contains(p, n, "\r\n* BYE "), "got \"%.*s\", expected a \"* BYE\" after the BAD",
           (int)n, p);
}

static void test_line_over_max_command_closes(void)
{
    struct fx f;
    char line[200];
    fx_open_max(&f, LT_LOGIN, false, 64);
    snprintf(line, sizeof line, "a1 NOOP %0100d\r\n", 0);
    CHECK_INT(fx_cmd(&f, line), SESS_CLOSE);
    check_bad_then_bye(&f);
    fx_close(&f);

    fx_open_max(&f, LT_LOGIN, false, 64); /* no line end at all */
    memset(line, 'A', 100);
    CHECK_INT(fx_feed(&f, line, 100), SESS_CLOSE);
    check_bad_then_bye(&f);
    fx_close(&f);
}

static void test_sync_literal_over_max_command_is_bad_and_session_continues(void)
{
    struct fx f;
    fx_open_max(&f, LT_LOGIN, false, 64);
    CHECK_INT(fx_cmd(&f, "k1 LOGIN alice {100}\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "k1 BAD ");
    CHECK_LACKS(&f, "+ ");
    CHECK_INT(out_lines(&f), 1);
    CHECK_INT(fx_cmd(&f, "k2 NOOP\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "k2 OK ");
    fx_close(&f);
}

static void test_nonsync_literal_over_max_command_closes(void)
{
    struct fx f;
    fx_open_max(&f, LT_LOGIN, false, 64);
    CHECK_INT(fx_cmd(&f, "k3 LOGIN alice {100+}\r\n"), SESS_CLOSE);
    CHECK_HAS(&f, "* BYE ");
    CHECK(f.s->cred == NULL);
    fx_close(&f);
}

/* ---- pipelining and byte-at-a-time ----------------------------------------- */

static void test_pipelined_command_after_login_waits_for_login_done(void)
{
    struct fx f;
    fx_open(&f, LT_LOGIN);
    CHECK_INT(fx_cmd(&f, "a NOOP\r\nb LOGIN u p\r\nc NOOP\r\n"), SESS_LOGIN);
    CHECK_PREFIX(&f, "a OK ");
    CHECK_INT(out_lines(&f), 1);
    CHECK_CRED(&f, "u", "p");
    CHECK_MEM(buf_head(&f.s->in), buf_avail(&f.s->in), "c NOOP\r\n");
    CHECK_INT(f.s->ops->input(f.s), SESS_AGAIN); /* still waiting: c is not answered */
    CHECK_INT(buf_avail(&f.s->in), 8);
    fx_done(&f, LOGIN_FAILED, NULL);
    CHECK_PREFIX(&f, "b NO [AUTHENTICATIONFAILED] ");
    CHECK_INT(fx_feed(&f, "", 0), SESS_AGAIN);
    CHECK_OUT(&f, "c OK NOOP completed.\r\n");
    fx_close(&f);
}

static void test_byte_at_a_time_login_matches_bulk(void)
{
    check_bytewise("a CAPABILITY\r\nb ID (\"name\" \"x\")\r\nc SELECT INBOX\r\n+ bad\r\n"
                   "d LOGIN {5}\r\nalice \"p\\\"ss w\"\r\n",
                   SESS_LOGIN, "\r\nc BAD ");
}

static void test_byte_at_a_time_authenticate_matches_bulk(void)
{
    check_bytewise("a NOOP\r\nb AUTHENTICATE PLAIN\r\n*\r\nc AUTHENTICATE PLAIN\r\n" B64_ALICE
                   "\r\n",
                   SESS_LOGIN, "\r\nb BAD ");
}

static void test_byte_at_a_time_invalid_commands_match_bulk(void)
{
    check_bytewise("a FROB\r\nb FROB\r\n* NOOP\r\nd LOGIN {99999}\r\ne (\r\n", SESS_CLOSE,
                   "* BYE ");
}

/* ---- protocol log ------------------------------------------------------------ */

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

static void test_plog_never_shows_password_or_sasl_response(void)
{
    static const struct {
        uint8_t lt;
        const char *script;
        bool logs_client; /* the session writes some client line to the log */
    } cases[] = {
            {LT_LOGIN, "a LOGIN alice " SECRET "\r\n", true},
            {LT_LOGIN, "a NOOP\r\nb login alice \"" SECRET "\"\r\n", true},
            {LT_LOGIN, "a LOGIN alice {11}\r\n" SECRET "\r\n", true},
            {LT_LOGIN, "a LOGIN alice {11+}\r\n" SECRET "\r\n", true},
            {LT_SECURE, "a LOGIN alice " SECRET "\r\n", true},
            {LT_LOGIN, "a LOGIN alice " SECRET " extra\r\n", false},
            {LT_LOGIN, "a LOGIN alice " SECRET " (\r\n", false},
            {LT_LOGIN, "a AUTHENTICATE PLAIN " B64_SECRET "\r\n", true},
            {LT_LOGIN, "a AUTHENTICATE PLAIN\r\n" B64_SECRET "\r\n", true},
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(cases); i++) {
        struct plog_cap cap = {.len = 0};
        struct fx f;
        fx_open(&f, cases[i].lt);
        f.s->plog = plog_capture;
        f.s->plog_ctx = &cap;
        if (fx_cmd(&f, cases[i].script) == SESS_LOGIN)
            fx_done(&f, LOGIN_FAILED, NULL);
        CHECKF(!th_contains(cap.text, cap.len, SECRET), "case %zu: log shows the password:\n%s", i,
               cap.text);
        CHECKF(!th_contains(cap.text, cap.len, B64_SECRET),
               "case %zu: log shows the SASL response:\n%s", i, cap.text);
        CHECKF(cap.len > 0 && (!cases[i].logs_client || cap.client_lines > 0),
               "case %zu: nothing logged (%d client lines):\n%s", i, cap.client_lines, cap.text);
        fx_close(&f);
    }
}

/* ---- bye -------------------------------------------------------------------- */

static void test_bye_lines_for_timeout_and_shutdown(void)
{
    static const enum sess_bye whys[] = {SESS_BYE_TIMEOUT, SESS_BYE_SHUTDOWN, SESS_BYE_OVERLOAD,
                                         SESS_BYE_PER_IP};
    for (size_t i = 0; i < FG_ARRAY_SIZE(whys); i++) {
        struct fx f;
        fx_open(&f, LT_LOGIN);
        sess_bye(f.s, whys[i]);
        CHECKF(out_starts(&f, "* BYE "), "bye %d: got \"%.*s\"", whys[i], OUT(&f));
        CHECK_INT(out_lines(&f), 1);
        fx_close(&f);
    }
    const char *ov = imap_sess_ops.bye[SESS_BYE_OVERLOAD];
    CHECK(strcmp(ov, "* BYE [UNAVAILABLE] Too many connections.") == 0);
    CHECK(strncmp(imap_sess_ops.bye[SESS_BYE_PER_IP], "* BYE [UNAVAILABLE] ", 20) == 0);
}

static void test_long_backend_capability_list_is_passed_whole(void)
{
    struct fx f;
    char caps[4000];
    size_t o = 0;
    while (o < sizeof caps - 40)
        o += (size_t)snprintf(caps + o, sizeof caps - o, "X-EXTENSION-%04zu ", o);
    caps[o - 1] = 0;
    fx_open(&f, LOGIN_TYPE_PLAIN_TEXT_LOGIN);
    CHECK_INT(fx_cmd(&f, "a LOGIN u p\r\n"), SESS_LOGIN);
    fx_done(&f, LOGIN_OK, caps);
    /* One line: "a OK [CAPABILITY <all of it>] LOGIN completed." */
    CHECK(out_starts(&f, "a OK [CAPABILITY X-EXTENSION-0000 "));
    CHECK(out_has(&f, caps));
    CHECK(out_has(&f, "] LOGIN completed.\r\n"));
    CHECK_INT(out_lines(&f), 1);
    fx_close(&f);
}

/* ---- STARTTLS and the LoginType x TLS matrix ---------------------------------- */

/* A session whose server has a certificate (conf.starttls) or not. */
static void fx_open_tls(struct fx *f, uint8_t lt, bool tls, bool starttls)
{
    fx_open_max(f, lt, tls, MAX_CMD);
    f->conf.starttls = starttls;
}

/* The list in the output's "* CAPABILITY ..." line, or NULL. */
static const char *capability_caps(const struct fx *f, size_t *n)
{
    static const char pre[] = "* CAPABILITY ";
    const char *p = buf_head(&f->out);
    size_t avail = buf_avail(&f->out);
    if (avail < sizeof pre || memcmp(p, pre, sizeof pre - 1) != 0)
        return NULL;
    const char *cr = memchr(p, '\r', avail);
    if (!cr)
        return NULL;
    *n = (size_t)(cr - p) - (sizeof pre - 1);
    return p + sizeof pre - 1;
}

struct caps_want {
    bool starttls, logindisabled, auth_plain;
};

static void check_caps_list(const char *what, const char *caps, size_t n, const struct caps_want *w,
                            uint8_t lt, bool tls, bool cert)
{
    CHECKF(caps != NULL, "%s (login_type %d tls %d cert %d): no capability list", what, lt, tls,
           cert);
    if (!caps)
        return;
    CHECKF(cap_has(caps, n, "IMAP4rev1"), "%s: \"%.*s\" lacks IMAP4rev1", what, (int)n, caps);
    CHECKF(cap_has(caps, n, "STARTTLS") == w->starttls,
           "%s (login_type %d tls %d cert %d): STARTTLS should be %s in \"%.*s\"", what, lt, tls,
           cert, w->starttls ? "present" : "absent", (int)n, caps);
    CHECKF(cap_has(caps, n, "LOGINDISABLED") == w->logindisabled,
           "%s (login_type %d tls %d cert %d): LOGINDISABLED should be %s in \"%.*s\"", what, lt,
           tls, cert, w->logindisabled ? "present" : "absent", (int)n, caps);
    CHECKF(cap_has(caps, n, "AUTH=PLAIN") == w->auth_plain,
           "%s (login_type %d tls %d cert %d): AUTH=PLAIN should be %s in \"%.*s\"", what, lt, tls,
           cert, w->auth_plain ? "present" : "absent", (int)n, caps);
}

/* A refusal for want of TLS: one tagged NO [PRIVACYREQUIRED] line that says so. */
static void check_privacy_refusal(const struct fx *f, const char *tag, uint8_t lt, bool tls)
{
    char want[64];
    snprintf(want, sizeof want, "%s NO [PRIVACYREQUIRED] ", tag);
    CHECKF(out_starts(f, want) && out_has(f, "TLS") && out_lines(f) == 1,
           "login_type %d tls %d: got \"%.*s\", expected one \"%s...TLS...\" line", lt, tls, OUT(f),
           want);
    CHECKF(f->s->cred == NULL, "login_type %d tls %d: credentials kept after a refusal", lt, tls);
}

/* The advertised capabilities and the replies to LOGIN and AUTHENTICATE
 * agree, for every LoginType, with and without TLS and a certificate. */
static void check_login_matrix(uint8_t lt, bool tls, bool cert)
{
    bool login_ok = tls || lt == LT_LOGIN;
    bool auth_ok = tls || lt != LT_SECURE;
    struct caps_want w = {cert && !tls, !login_ok, auth_ok};
    struct fx f;
    size_t n = 0;

    fx_open_tls(&f, lt, tls, cert);
    f.s->ops->greeting(f.s);
    const char *caps = greeting_caps(&f, &n);
    check_caps_list("greeting", caps, n, &w, lt, tls, cert);
    CHECK_INT(fx_cmd(&f, "c1 CAPABILITY\r\n"), SESS_AGAIN);
    caps = capability_caps(&f, &n);
    check_caps_list("CAPABILITY", caps, n, &w, lt, tls, cert);
    CHECK_HAS(&f, "\r\nc1 OK ");

    /* LOGIN */
    enum sess_action act = fx_cmd(&f, "l1 LOGIN alice secret\r\n");
    CHECKF(act == (login_ok ? SESS_LOGIN : SESS_AGAIN),
           "LOGIN (login_type %d tls %d cert %d): action %d", lt, tls, cert, act);
    if (login_ok) {
        CHECK_OUT(&f, "");
        CHECK_CRED(&f, "alice", "secret");
        fx_done(&f, LOGIN_FAILED, NULL);
    } else {
        check_privacy_refusal(&f, "l1", lt, tls);
    }

    /* AUTHENTICATE PLAIN with an initial response */
    act = fx_cmd(&f, "a1 AUTHENTICATE PLAIN " B64_ALICE "\r\n");
    CHECKF(act == (auth_ok ? SESS_LOGIN : SESS_AGAIN),
           "AUTHENTICATE (login_type %d tls %d cert %d): action %d", lt, tls, cert, act);
    if (auth_ok) {
        CHECK_OUT(&f, "");
        CHECK_CRED(&f, "alice", "secret");
        fx_done(&f, LOGIN_FAILED, NULL);
    } else {
        check_privacy_refusal(&f, "a1", lt, tls);
    }

    /* AUTHENTICATE PLAIN without one: the "+" asks for the password */
    act = fx_cmd(&f, "a2 AUTHENTICATE PLAIN\r\n");
    CHECK_INT(act, SESS_AGAIN);
    if (auth_ok) {
        CHECK_OUT(&f, "+ \r\n");
        CHECK_INT(fx_cmd(&f, B64_ALICE "\r\n"), SESS_LOGIN);
        CHECK_CRED(&f, "alice", "secret");
        fx_done(&f, LOGIN_FAILED, NULL);
    } else {
        check_privacy_refusal(&f, "a2", lt, tls);
    }
    fx_close(&f);
}

static void test_login_type_tls_matrix_caps_and_replies_agree(void)
{
    static const uint8_t types[] = {LT_LOGIN, LT_AUTH, LT_SECURE};
    for (size_t i = 0; i < FG_ARRAY_SIZE(types); i++)
        for (int tls = 0; tls < 2; tls++)
            for (int cert = 0; cert < 2; cert++)
                check_login_matrix(types[i], tls, cert);
}

static void test_starttls_replies_ok_and_asks_for_handshake(void)
{
    struct fx f;
    fx_open_tls(&f, LT_SECURE, false, true);
    CHECK_INT(fx_cmd(&f, "s1 STARTTLS\r\n"), SESS_STARTTLS);
    CHECK_OUT(&f, "s1 OK Begin TLS negotiation now.\r\n");
    CHECK_INT(buf_avail(&f.s->in), 0);
    CHECK(f.s->cred == NULL);
    fx_close(&f);

    fx_open_tls(&f, LT_LOGIN, false, true); /* command names are case-insensitive */
    CHECK_INT(fx_cmd(&f, "s2 starttls\r\n"), SESS_STARTTLS);
    CHECK_OUT(&f, "s2 OK Begin TLS negotiation now.\r\n");
    fx_close(&f);
}

/*
 * Clear-text bytes pipelined after STARTTLS must never run as commands
 * inside TLS (CVE-2011-0411): the injected LOGIN gets no reply and no
 * credentials, and the capabilities change once the core sets s->tls.
 */
static void check_starttls_drops_injected(uint8_t lt, const char *script)
{
    struct fx f;
    size_t n = 0;
    fx_open_tls(&f, lt, false, true);
    enum sess_action act = fx_cmd(&f, script);
    CHECKF(act == SESS_STARTTLS, "login_type %d, \"%s\": action %d", lt, script, act);
    CHECK_OUT(&f, "a OK Begin TLS negotiation now.\r\n");
    CHECK_LACKS(&f, "b ");
    CHECKF(buf_avail(&f.s->in) == 0, "login_type %d: %u bytes left in s->in after STARTTLS", lt,
           buf_avail(&f.s->in));
    CHECK(f.s->cred == NULL);
    /* The core calls input() again only after the handshake: nothing is pending. */
    f.s->tls = true;
    CHECK_INT(fx_feed(&f, "", 0), SESS_AGAIN);
    CHECK_OUT(&f, "");
    CHECK(f.s->cred == NULL);

    struct caps_want w = {false, false, true};
    CHECK_INT(fx_cmd(&f, "c CAPABILITY\r\n"), SESS_AGAIN);
    const char *caps = capability_caps(&f, &n);
    check_caps_list("CAPABILITY after STARTTLS", caps, n, &w, lt, true, true);
    CHECK_HAS(&f, "\r\nc OK ");
    CHECK_INT(out_lines(&f), 2);
    /* The login the client really sends inside TLS goes through. */
    CHECK_INT(fx_cmd(&f, "d LOGIN alice secret\r\n"), SESS_LOGIN);
    CHECK_CRED(&f, "alice", "secret");
    fx_done(&f, LOGIN_OK, "IMAP4rev1");
    CHECK_PREFIX(&f, "d OK ");
    fx_close(&f);
}

static void test_starttls_drops_pipelined_commands(void)
{
    static const uint8_t types[] = {LT_LOGIN, LT_AUTH, LT_SECURE};
    static const char *const scripts[] = {
            "a STARTTLS\r\nb LOGIN u p\r\n",
            "a STARTTLS\r\nb AUTHENTICATE PLAIN " B64_ALICE "\r\n",
            "a STARTTLS\r\nb LOGIN {1+}\r\nu {1+}\r\np\r\n",
            "a STARTTLS\r\nb LOGIN u {1}\r\n",      /* would ask for a "+" */
            "a STARTTLS\r\nb LOGIN u p",            /* no line end yet */
            "a STARTTLS\nb LOGIN u p\n",            /* bare LFs */
            "a STARTTLS\r\nb NOOP\r\nb LOGOUT\r\n", /* a LOGOUT would close */
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(types); i++)
        for (size_t k = 0; k < FG_ARRAY_SIZE(scripts); k++)
            check_starttls_drops_injected(types[i], scripts[k]);
}

static void test_starttls_after_pipelined_commands_answers_them_first(void)
{
    struct fx f;
    fx_open_tls(&f, LT_SECURE, false, true);
    CHECK_INT(fx_cmd(&f, "a NOOP\r\nb STARTTLS\r\nc LOGIN u p\r\n"), SESS_STARTTLS);
    CHECK_OUT(&f, "a OK NOOP completed.\r\nb OK Begin TLS negotiation now.\r\n");
    CHECK_INT(buf_avail(&f.s->in), 0);
    CHECK(f.s->cred == NULL);
    fx_close(&f);
}

static void test_starttls_refusals(void)
{
    struct fx f;
    /* arguments */
    fx_open_tls(&f, LT_SECURE, false, true);
    CHECK_INT(fx_cmd(&f, "s1 STARTTLS now\r\n"), SESS_AGAIN);
    CHECK_PREFIX(&f, "s1 BAD ");
    CHECK_INT(out_lines(&f), 1);
    CHECK_INT(fx_cmd(&f, "s2 NOOP\r\n"), SESS_AGAIN); /* still in clear text, still talking */
    CHECK_OUT(&f, "s2 OK NOOP completed.\r\n");
    fx_close(&f);

    /* already inside TLS, with or without a certificate configured */
    for (int cert = 0; cert < 2; cert++) {
        fx_open_tls(&f, LT_SECURE, true, cert);
        CHECK_INT(fx_cmd(&f, "s3 STARTTLS\r\ns4 NOOP\r\n"), SESS_AGAIN);
        CHECK_OUT(&f, "s3 BAD TLS is already active.\r\ns4 OK NOOP completed.\r\n");
        fx_close(&f);
    }

    /* no certificate: not offered, not available; what follows is kept */
    fx_open_tls(&f, LT_LOGIN, false, false);
    CHECK_INT(fx_cmd(&f, "s5 STARTTLS\r\ns6 LOGIN u p\r\n"), SESS_LOGIN);
    CHECK_OUT(&f, "s5 BAD STARTTLS is not available on this server.\r\n");
    CHECK_CRED(&f, "u", "p");
    fx_close(&f);
}

/* A second STARTTLS after the handshake is refused, not re-negotiated. */
static void test_starttls_twice_is_bad(void)
{
    struct fx f;
    fx_open_tls(&f, LT_SECURE, false, true);
    CHECK_INT(fx_cmd(&f, "a STARTTLS\r\n"), SESS_STARTTLS);
    f.s->tls = true;
    CHECK_INT(fx_cmd(&f, "b STARTTLS\r\n"), SESS_AGAIN);
    CHECK_OUT(&f, "b BAD TLS is already active.\r\n");
    fx_close(&f);
}

/* "STARTTLS" as the line answering AUTHENTICATE's "+" is a SASL response. */
static void test_starttls_during_sasl_exchange_is_not_a_command(void)
{
    struct fx f;
    fx_open_tls(&f, LT_AUTH, false, true);
    CHECK_INT(fx_cmd(&f, "a AUTHENTICATE PLAIN\r\n"), SESS_AGAIN);
    CHECK_OUT(&f, "+ \r\n");
    enum sess_action act = fx_cmd(&f, "STARTTLS\r\n");
    CHECK(act != SESS_STARTTLS);
    CHECK_PREFIX(&f, "a ");
    CHECK_LACKS(&f, "Begin TLS");
    CHECK(f.s->cred == NULL);
    fx_close(&f);
}

/* The STARTTLS reply is the same fed whole or a byte at a time, and the
 * action comes only with the last byte of the line. */
static void test_starttls_byte_at_a_time(void)
{
    static const char line[] = "t1 STARTTLS\r\n";
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
    CHECK_OUT(&f, "t1 OK Begin TLS negotiation now.\r\n");
    CHECK_INT(buf_avail(&f.s->in), 0);
    fx_close(&f);
}

int main(void)
{
    test_greeting_has_capability_code_and_banner();
    test_caps_plain_text_login_offers_login_and_auth_plain();
    test_caps_plain_text_auth_disables_login_keeps_auth_plain();
    test_caps_secure_login_disables_login_and_auth_plain();
    test_caps_tls_allows_login_and_auth_plain_for_every_login_type();
    test_capability_command_lists_greeting_caps();
    test_noop_replies_tagged_ok();
    test_logout_sends_bye_then_tagged_ok_and_closes();
    test_id_list_replied_and_client_fields_kept();
    test_id_nil_replied_with_ok();
    test_id_with_odd_field_count_is_bad();
    test_id_with_more_than_30_pairs_is_bad();
    test_id_with_oversized_field_or_value_is_bad();
    test_id_never_keeps_control_bytes();
    test_login_atoms_give_exact_credentials();
    test_login_quoted_strings_are_unescaped();
    test_login_sync_literal_sends_continuation_first();
    test_login_nonsync_literals_need_no_continuation();
    test_login_literal_keeps_crlf_spaces_and_8bit();
    test_login_ok_reply_uses_pending_tag_and_backend_caps();
    test_login_ok_without_caps_has_no_empty_code();
    test_login_failures_carry_rfc5530_codes();
    test_login_overlong_user_refused_without_login();
    test_authenticate_plain_sasl_ir();
    test_authenticate_plain_sasl_ir_keeps_authzid();
    test_authenticate_plain_with_continuation();
    test_authenticate_star_cancels_with_tagged_bad();
    test_authenticate_empty_response_fails();
    test_authenticate_invalid_base64_is_bad();
    test_authenticate_unsupported_mechanism_is_no();
    test_authenticate_huge_response_refused_without_overflow();
    test_login_refused_with_privacyrequired_under_secure_login();
    test_login_refused_with_privacyrequired_under_plain_text_auth();
    test_login_allowed_under_secure_login_with_tls();
    test_authenticate_refused_with_privacyrequired_under_secure_login();
    test_authenticate_allowed_under_plain_text_auth();
    test_nul_in_literal_password_refused();
    test_select_before_login_is_invalid_state();
    test_unknown_command_is_bad();
    test_invalid_tag_is_never_echoed();
    test_five_invalid_commands_in_a_row_close();
    test_valid_command_resets_invalid_count();
    test_line_over_max_command_closes();
    test_sync_literal_over_max_command_is_bad_and_session_continues();
    test_nonsync_literal_over_max_command_closes();
    test_pipelined_command_after_login_waits_for_login_done();
    test_byte_at_a_time_login_matches_bulk();
    test_byte_at_a_time_authenticate_matches_bulk();
    test_byte_at_a_time_invalid_commands_match_bulk();
    test_plog_never_shows_password_or_sasl_response();
    test_bye_lines_for_timeout_and_shutdown();
    test_long_backend_capability_list_is_passed_whole();
    test_login_type_tls_matrix_caps_and_replies_agree();
    test_starttls_replies_ok_and_asks_for_handshake();
    test_starttls_drops_pipelined_commands();
    test_starttls_after_pipelined_commands_answers_them_first();
    test_starttls_refusals();
    test_starttls_twice_is_bad();
    test_starttls_during_sasl_exchange_is_not_a_command();
    test_starttls_byte_at_a_time();
    return th_finish("test_imap_session");
}

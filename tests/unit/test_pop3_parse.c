/* POP3 line parser, whole and byte at a time, ending at a guard page. */
#include "../../proto/pop3_parse.h"
#include "harness.h"

struct line_case {
    const char *name;
    const char *in;
    size_t len;
    int rc;
    uint32_t line_len;
    const char *cmd, *arg;
    bool nul;
};

static const struct line_case cases[] = {
        {"keyword only", "QUIT\r\n", 6, POP3_PARSE_DONE, 6, "QUIT", "", false},
        {"bare LF", "CAPA\n", 5, POP3_PARSE_DONE, 5, "CAPA", "", false},
        {"argument", "USER alice\r\n", 12, POP3_PARSE_DONE, 12, "USER", "alice", false},
        {"PASS keeps spaces", "PASS  a b \r\n", 12, POP3_PARSE_DONE, 12, "PASS", " a b ", false},
        {"NUL is reported", "PASS a\0b\r\n", 10, POP3_PARSE_DONE, 10, "PASS", "a\0b", true},
        {"no line end yet", "USER al", 7, POP3_PARSE_AGAIN, 0, NULL, NULL, false},
        {"line over the limit", "USER aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 52,
         POP3_PARSE_TOO_LONG, 0, NULL, NULL, false},
        {"second line left alone", "NOOP\r\nQUIT\r\n", 12, POP3_PARSE_DONE, 6, "NOOP", "", false},
};

static void check(const struct line_case *tc, size_t step, bool guard)
{
    char *buf = guard ? th_guard_copy(tc->in, tc->len) : (char *)tc->in;
    struct pop3_parser p;
    struct pop3_cmd cmd;
    int rc = POP3_PARSE_AGAIN;

    pop3_parser_init(&p, 40);
    for (size_t n = step ? step : tc->len; rc == POP3_PARSE_AGAIN;) {
        rc = pop3_parse_line(&p, buf, n, &cmd);
        if (n == tc->len)
            break;
        n = n + step < tc->len ? n + step : tc->len;
    }
    if (rc != tc->rc)
        th_fail(__FILE__, __LINE__, "%s (step %zu): rc %d", tc->name, step, rc);
    th_checks++;
    if (tc->rc == POP3_PARSE_DONE) {
        CHECK_INT(cmd.line_len, tc->line_len);
        CHECK_MEM(buf, cmd.name_len, tc->cmd);
        th_checks++;
        if (cmd.arg_len != (tc->nul ? 3 : strlen(tc->arg)) ||
            memcmp(buf + cmd.arg_off, tc->arg, cmd.arg_len) != 0)
            th_fail(__FILE__, __LINE__, "%s: argument", tc->name);
        CHECK_INT(cmd.has_nul, tc->nul);
        CHECK_INT(p.pos, 0);
    }
    if (guard)
        th_guard_free(buf, tc->len);
}

int main(void)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check(&cases[i], 0, false);
        check(&cases[i], 1, false);
        check(&cases[i], 0, true);
        check(&cases[i], 1, true);
    }
    return th_finish("test_pop3_parse");
}

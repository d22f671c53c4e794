/*
 * IMAP command parser and response scanner: every case runs three ways, all
 * at once, one byte at a time, and with the input ending at a guard page.
 */
#include "../../proto/imap_parse.h"
#include "harness.h"

#include <stdlib.h>

#define MAX_LEN 200

struct want_arg {
    enum imap_arg_type type;
    const char *val; /* NULL: do not compare the bytes */
};

struct parse_case {
    const char *name;
    const char *in;
    size_t in_len; /* 0: strlen(in) */
    int rc;        /* final result */
    int err;
    int continues; /* "+" continuations asked for */
    size_t consumed;
    unsigned nargs;
    struct want_arg args[8];
};

#define A(v)                                                                                       \
    {                                                                                              \
        IMAP_ARG_ATOM, v                                                                           \
    }
#define Q(v)                                                                                       \
    {                                                                                              \
        IMAP_ARG_QUOTED, v                                                                         \
    }
#define L(v)                                                                                       \
    {                                                                                              \
        IMAP_ARG_LITERAL, v                                                                        \
    }
#define LB                                                                                         \
    {                                                                                              \
        IMAP_ARG_LIST, NULL                                                                        \
    }
#define LE                                                                                         \
    {                                                                                              \
        IMAP_ARG_LIST_END, NULL                                                                    \
    }

static const struct parse_case cases[] = {
        {"simple command", "a NOOP\r\n", 0, IMAP_PARSE_DONE, 0, 0, 8, 2, {A("a"), A("NOOP")}},
        {"bare LF ends a line", "a noop\n", 0, IMAP_PARSE_DONE, 0, 0, 7, 2, {A("a"), A("noop")}},
        {"login with atoms",
         "a1 LOGIN user pass\r\n",
         0,
         IMAP_PARSE_DONE,
         0,
         0,
         20,
         4,
         {A("a1"), A("LOGIN"), A("user"), A("pass")}},
        {"DOMAIN\\user unquoted, as Exchange takes it",
         "a LOGIN UCLABOR\\tuser\\other p\\w\r\n",
         0,
         IMAP_PARSE_DONE,
         0,
         0,
         33,
         4,
         {A("a"), A("LOGIN"), A("UCLABOR\\tuser\\other"), A("p\\w")}},
        {"quoted strings unescape \\\" and \\\\",
         "a LOGIN \"us\\\"er\" \"p\\\\a ss\"\r\n",
         0,
         IMAP_PARSE_DONE,
         0,
         0,
         28,
         4,
         {A("a"), A("LOGIN"), Q("us\"er"), Q("p\\a ss")}},
        {"8-bit bytes in a quoted string",
         "a LOGIN \"j\xc3\xb6rg\" x\r\n",
         0,
         IMAP_PARSE_DONE,
         0,
         0,
         19,
         4,
         {A("a"), A("LOGIN"), Q("j\xc3\xb6rg"), A("x")}},
        {"sync and non-sync literals",
         "a LOGIN {4}\r\nuser {5+}\r\np ass\r\n",
         0,
         IMAP_PARSE_DONE,
         0,
         1,
         31,
         4,
         {A("a"), A("LOGIN"), L("user"), L("p ass")}},
        {"literal header with bare LF",
         "a LOGIN {2}\nab c\n",
         0,
         IMAP_PARSE_DONE,
         0,
         1,
         17,
         4,
         {A("a"), A("LOGIN"), L("ab"), A("c")}},
        {"empty literal and empty quoted",
         "a LOGIN {0}\r\n \"\"\r\n",
         0,
         IMAP_PARSE_DONE,
         0,
         1,
         18,
         4,
         {A("a"), A("LOGIN"), L(""), Q("")}},
        {"literal holding CRLF and quotes",
         "a LOGIN u {6+}\r\n\"\r\n\\{}\r\n",
         0,
         IMAP_PARSE_DONE,
         0,
         0,
         24,
         4,
         {A("a"), A("LOGIN"), A("u"), L("\"\r\n\\{}")}},
        {"list with NIL",
         "a ID (\"name\" \"x\" \"os\" NIL)\r\n",
         0,
         IMAP_PARSE_DONE,
         0,
         0,
         28,
         8,
         {A("a"), A("ID"), LB, Q("name"), Q("x"), Q("os"), A("NIL"), LE}},
        {"empty list", "a ID ()\r\n", 0, IMAP_PARSE_DONE, 0, 0, 9, 4, {A("a"), A("ID"), LB, LE}},
        {"] is an astring char",
         "a LOGIN us]er p\r\n",
         0,
         IMAP_PARSE_DONE,
         0,
         0,
         17,
         4,
         {A("a"), A("LOGIN"), A("us]er"), A("p")}},
        {"trailing space tolerated",
         "a NOOP \r\n",
         0,
         IMAP_PARSE_DONE,
         0,
         0,
         9,
         2,
         {A("a"), A("NOOP")}},
        {"tag with + is invalid", "+ NOOP\r\n", 0, IMAP_PARSE_ERROR, IMAP_ERR_TAG, 0, 8, 0, {}},
        {"tag with * is invalid", "a*b NOOP\r\n", 0, IMAP_PARSE_ERROR, IMAP_ERR_TAG, 0, 10, 0, {}},
        {"empty line", "\r\n", 0, IMAP_PARSE_ERROR, IMAP_ERR_SYNTAX, 0, 2, 0, {}},
        {"tag without command", "abc\r\n", 0, IMAP_PARSE_ERROR, IMAP_ERR_SYNTAX, 0, 5, 0, {}},
        {"tag then empty command",
         "a \r\n",
         0,
         IMAP_PARSE_ERROR,
         IMAP_ERR_SYNTAX,
         0,
         4,
         1,
         {A("a")}},
        {"CR inside the tag ends the line",
         "a\rb NOOP\r\n",
         0,
         IMAP_PARSE_ERROR,
         IMAP_ERR_SYNTAX,
         0,
         10,
         0,
         {}},
        {"tag longer than 64",
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa N\r\n",
         0,
         IMAP_PARSE_ERROR,
         IMAP_ERR_TAG,
         0,
         69,
         0,
         {}},
        {"double space",
         "a NOOP  x\r\n",
         0,
         IMAP_PARSE_ERROR,
         IMAP_ERR_SYNTAX,
         0,
         11,
         2,
         {A("a"), A("NOOP")}},
        {"unterminated quoted",
         "a LOGIN \"abc\r\n",
         0,
         IMAP_PARSE_ERROR,
         IMAP_ERR_SYNTAX,
         0,
         14,
         2,
         {A("a"), A("LOGIN")}},
        {"bad escape in quoted",
         "a LOGIN \"a\\b\" x\r\n",
         0,
         IMAP_PARSE_ERROR,
         IMAP_ERR_SYNTAX,
         0,
         17,
         2,
         {A("a"), A("LOGIN")}},
        {"NUL in quoted",
         "a LOGIN \"a\0b\" x\r\n",
         17,
         IMAP_PARSE_ERROR,
         IMAP_ERR_NUL,
         0,
         17,
         2,
         {A("a"), A("LOGIN")}},
        {"NUL in literal",
         "a LOGIN u {3}\r\na\0b\r\n",
         20,
         IMAP_PARSE_ERROR,
         IMAP_ERR_NUL,
         1,
         20,
         0,
         {}},
        {"unbalanced list",
         "a ID (\"a\" \"b\"\r\n",
         0,
         IMAP_PARSE_ERROR,
         IMAP_ERR_SYNTAX,
         0,
         15,
         0,
         {}},
        {"stray close paren", "a NOOP )\r\n", 0, IMAP_PARSE_ERROR, IMAP_ERR_SYNTAX, 0, 10, 0, {}},
        {"lists nested too deep",
         "a X (((((x)))))\r\n",
         0,
         IMAP_PARSE_ERROR,
         IMAP_ERR_ARGS,
         0,
         17,
         0,
         {}},
        {"literal size with a letter",
         "a LOGIN {4x}\r\n",
         0,
         IMAP_PARSE_ERROR,
         IMAP_ERR_SYNTAX,
         0,
         14,
         0,
         {}},
        {"literal size of 11 digits",
         "a LOGIN {12345678901}\r\n",
         0,
         IMAP_PARSE_ERROR,
         IMAP_ERR_SYNTAX,
         0,
         23,
         0,
         {}},
        {"literal header without CRLF",
         "a LOGIN {4} x\r\n",
         0,
         IMAP_PARSE_ERROR,
         IMAP_ERR_SYNTAX,
         0,
         15,
         0,
         {}},
        {"sync literal over the limit is refused at once",
         "a LOGIN {500}\r\n",
         0,
         IMAP_PARSE_ERROR,
         IMAP_ERR_LITERAL,
         0,
         15,
         2,
         {A("a"), A("LOGIN")}},
        {"non-sync literal over the limit is fatal",
         "a LOGIN {500+}\r\n",
         0,
         IMAP_PARSE_ERROR,
         IMAP_ERR_LITERAL_NS,
         0,
         16,
         0,
         {}},
        {"sync literal after an error is answered at once",
         "a LOGIN b\" {5}\r\n",
         0,
         IMAP_PARSE_ERROR,
         IMAP_ERR_SYNTAX,
         0,
         16,
         0,
         {}},
        {"non-sync literal data after an error is skipped, not parsed",
         "a LOGIN b\" {8+}\r\nb LOGOUT\r\nc NOOP\r\n",
         0,
         IMAP_PARSE_ERROR,
         IMAP_ERR_SYNTAX,
         0,
         27,
         3,
         {A("a"), A("LOGIN"), A("b")}},
};

/* Runs the parser over in[0..len) given in steps of `step` bytes. */
static int run(const struct parse_case *tc, char *buf, size_t len, size_t step,
               struct imap_parser *p, int *continues)
{
    int rc = IMAP_PARSE_AGAIN;
    size_t avail = 0;

    imap_parser_init(p, MAX_LEN);
    *continues = 0;
    while (avail < len || rc == IMAP_PARSE_CONTINUE) {
        if (rc != IMAP_PARSE_CONTINUE)
            avail = step ? (avail + step < len ? avail + step : len) : len;
        rc = imap_parse_command(p, buf, avail);
        if (rc == IMAP_PARSE_CONTINUE)
            (*continues)++;
        else if (rc != IMAP_PARSE_AGAIN)
            break;
    }
    (void)tc;
    return rc;
}

static void check_case(const struct parse_case *tc, size_t step, bool guard)
{
    size_t len = tc->in_len ? tc->in_len : strlen(tc->in);
    char *buf = guard ? th_guard_copy(tc->in, len) : malloc(len);
    struct imap_parser p;
    int continues;

    if (!guard)
        memcpy(buf, tc->in, len);
    int rc = run(tc, buf, len, step, &p, &continues);
    if (rc != tc->rc || continues != tc->continues ||
        (tc->rc == IMAP_PARSE_ERROR && p.err != tc->err))
        th_fail(__FILE__, __LINE__, "%s (step %zu): rc %d err %d continues %d", tc->name, step, rc,
                p.err, continues);
    th_checks++;
    CHECK_INT(p.pos, tc->consumed);
    if (tc->rc == IMAP_PARSE_DONE || tc->nargs > 0) {
        CHECK_INT(p.nargs, tc->nargs);
        for (unsigned i = 0; i < tc->nargs && i < p.nargs; i++) {
            CHECK_INT(p.args[i].type, tc->args[i].type);
            if (tc->args[i].val)
                CHECK_MEM(buf + p.args[i].off, p.args[i].len, tc->args[i].val);
        }
    }
    if (guard)
        th_guard_free(buf, len);
    else
        free(buf);
}

static void test_command_table(void)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_case(&cases[i], 0, false);
        check_case(&cases[i], 1, false);
        check_case(&cases[i], 3, false);
        check_case(&cases[i], 0, true);
        check_case(&cases[i], 1, true);
    }
}

static void test_line_over_limit_is_fatal(void)
{
    char line[MAX_LEN + 50];
    struct imap_parser p;
    memset(line, 'a', sizeof line);
    line[1] = ' ';
    imap_parser_init(&p, MAX_LEN);
    CHECK_INT(imap_parse_command(&p, line, 100), IMAP_PARSE_AGAIN);
    CHECK_INT(imap_parse_command(&p, line, sizeof line), IMAP_PARSE_ERROR);
    CHECK_INT(p.err, IMAP_ERR_TOO_LONG);
    CHECK(imap_parse_fatal(&p));
}

static void test_exact_limit_is_accepted(void)
{
    char line[MAX_LEN];
    struct imap_parser p;
    memset(line, 'x', sizeof line);
    memcpy(line, "a NOOP ", 7);
    line[MAX_LEN - 2] = '\r';
    line[MAX_LEN - 1] = '\n';
    imap_parser_init(&p, MAX_LEN);
    CHECK_INT(imap_parse_command(&p, line, sizeof line), IMAP_PARSE_DONE);
    CHECK_INT(p.pos, MAX_LEN);
}

static void test_pipelined_commands_parse_one_at_a_time(void)
{
    char buf[] = "a NOOP\r\nb LOGIN x y\r\n";
    struct imap_parser p;
    imap_parser_init(&p, MAX_LEN);
    CHECK_INT(imap_parse_command(&p, buf, sizeof buf - 1), IMAP_PARSE_DONE);
    CHECK_INT(p.pos, 8);
    size_t first = p.pos;
    imap_parser_reset(&p);
    CHECK_INT(imap_parse_command(&p, buf + first, sizeof buf - 1 - first), IMAP_PARSE_DONE);
    CHECK_INT(p.nargs, 4);
    CHECK_MEM(buf + first + p.args[3].off, p.args[3].len, "y");
}

static void test_line_mode_reads_a_raw_line(void)
{
    char buf[] = "AHVzZXIAcGFzcw==\r\nnext";
    struct imap_parser p;
    imap_parser_init(&p, MAX_LEN);
    imap_parser_expect_line(&p);
    for (size_t n = 1; n < 18; n++)
        CHECK_INT(imap_parse_command(&p, buf, n), IMAP_PARSE_AGAIN);
    CHECK_INT(imap_parse_command(&p, buf, sizeof buf - 1), IMAP_PARSE_DONE);
    CHECK_INT(p.pos, 18);
    CHECK_MEM(buf + p.args[0].off, p.args[0].len, "AHVzZXIAcGFzcw==");
    char nul[] = "a\0b\r\n";
    imap_parser_expect_line(&p);
    CHECK_INT(imap_parse_command(&p, nul, 5), IMAP_PARSE_ERROR);
    CHECK_INT(p.err, IMAP_ERR_NUL);
}

static void test_too_many_args(void)
{
    char buf[400];
    size_t o = (size_t)snprintf(buf, sizeof buf, "a X");
    for (int i = 0; i < IMAP_MAX_ARGS; i++)
        o += (size_t)snprintf(buf + o, sizeof buf - o, " x");
    o += (size_t)snprintf(buf + o, sizeof buf - o, "\r\n");
    struct imap_parser p;
    imap_parser_init(&p, sizeof buf);
    CHECK_INT(imap_parse_command(&p, buf, o), IMAP_PARSE_ERROR);
    CHECK_INT(p.err, IMAP_ERR_ARGS);
    CHECK_INT(p.pos, o);
}

static void test_response_scanner(void)
{
    const char *r = "* ID (\"name\" {7}\r\nDovecot)\r\nF1 OK done\r\n";
    struct imap_resp_scanner s;
    uint32_t n;
    size_t len = strlen(r);

    for (size_t step = 1; step <= len; step++) {
        imap_resp_init(&s, 1000);
        int rc = FG_AGAIN;
        for (size_t avail = step; rc == FG_AGAIN; avail = avail + step < len ? avail + step : len)
            rc = imap_resp_scan(&s, r, avail, &n);
        CHECK_INT(rc, FG_OK);
        CHECK_INT(n, 28);
    }
    imap_resp_init(&s, 10);
    CHECK_INT(imap_resp_scan(&s, "* OK 0123456789 long\r\n", 22, &n), FG_ERROR);
    imap_resp_init(&s, 100);
    CHECK_INT(imap_resp_scan(&s, "* OK {huge}\r\n", 13, &n), FG_OK);
    CHECK_INT(n, 13);
}

static void test_astring_kind(void)
{
    CHECK_INT(imap_astring_kind("secret", 6), IMAP_ASTRING_ATOM);
    CHECK_INT(imap_astring_kind("", 0), IMAP_ASTRING_QUOTED);
    const char *specials = "()%*\"\\] {";
    for (const char *c = specials; *c; c++)
        CHECK_INT(imap_astring_kind(c, 1), IMAP_ASTRING_QUOTED);
    const char *atoms = "+/&=?[}!#$'-.:;<>@^_`|~";
    for (const char *c = atoms; *c; c++)
        CHECK_INT(imap_astring_kind(c, 1), IMAP_ASTRING_ATOM);
    CHECK_INT(imap_astring_kind("p\xc3\xa4ss", 5), IMAP_ASTRING_LITERAL);
    CHECK_INT(imap_astring_kind("a\tb", 3), IMAP_ASTRING_LITERAL);
    CHECK_INT(imap_astring_kind("a\x7f", 2), IMAP_ASTRING_LITERAL);
    char q[16];
    CHECK_MEM(q, imap_quote("a\"b\\c", 5, q), "\"a\\\"b\\\\c\"");
}

int main(void)
{
    test_command_table();
    test_line_over_limit_is_fatal();
    test_exact_limit_is_accepted();
    test_pipelined_commands_parse_one_at_a_time();
    test_line_mode_reads_a_raw_line();
    test_too_many_args();
    test_response_scanner();
    test_astring_kind();
    return th_finish("test_imap_parse");
}

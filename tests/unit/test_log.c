/*
 * The event log's escaper (base/log.c), the one thing between a client's
 * bytes and the log line. For every byte value: the line stays one line (no
 * raw control byte), the value is quoted exactly when logfmt needs it
 * (empty, space or below, '"', '=', '\', DEL), and the escape decodes back to
 * the very bytes given ('"' and '\' get a backslash, control bytes \xHH,
 * everything else passes as it is). A value longer than the line is cut at a
 * whole character, never inside an escape, and never past the buffer.
 */
#include "../../base/log.h"
#include "harness.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#define LINE_MAX_BYTES sizeof(((struct log_line *)0)->buf)

/* The rules of log.c, written out independently: a byte needs quotes... */
static bool tl_needs_quotes(unsigned char c)
{
    return c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f;
}

/* ...and is written as this. */
static size_t tl_escape(unsigned char c, char out[5])
{
    if (c == '"' || c == '\\')
        return (size_t)snprintf(out, 5, "\\%c", c);
    if (c < 0x20 || c == 0x7f)
        return (size_t)snprintf(out, 5, "\\x%02x", c);
    out[0] = (char)c;
    out[1] = 0;
    return 1;
}

static int tl_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/*
 * Decodes the value of the field " key=..." that starts at p (n bytes to the
 * line's end) into out. Returns the bytes decoded, or -1 when the field is
 * not well formed: a missing key, an unknown or cut escape, an unclosed
 * quote, a byte that should have been escaped, or anything after the value.
 */
static long tl_decode(const char *p, size_t n, const char *key, char *out, bool *quoted_r)
{
    size_t k = strlen(key), i, o = 0;
    if (n < k + 2 || p[0] != ' ' || memcmp(p + 1, key, k) != 0 || p[k + 1] != '=')
        return -1;
    i = k + 2;
    *quoted_r = i < n && p[i] == '"';
    if (!*quoted_r) {
        for (; i < n; i++) {
            unsigned char c = (unsigned char)p[i];
            if (tl_needs_quotes(c))
                return -1;
            out[o++] = (char)c;
        }
        return (long)o;
    }
    for (i++; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '"')
            return i + 1 == n ? (long)o : -1;
        if (c < 0x20 || c == 0x7f)
            return -1;
        if (c != '\\') {
            out[o++] = (char)c;
            continue;
        }
        if (i + 1 < n && (p[i + 1] == '"' || p[i + 1] == '\\')) {
            out[o++] = p[++i];
        } else if (i + 3 < n && p[i + 1] == 'x' && tl_hex(p[i + 2]) >= 0 && tl_hex(p[i + 3]) >= 0) {
            out[o++] = (char)(tl_hex(p[i + 2]) * 16 + tl_hex(p[i + 3]));
            i += 3;
        } else {
            return -1;
        }
    }
    return -1; /* no closing quote */
}

/* True when the line holds no byte that would break it or a terminal. */
static bool tl_one_line(const struct log_line *l)
{
    for (size_t i = 0; i < l->n; i++) {
        unsigned char c = (unsigned char)l->buf[i];
        if (c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

static void tl_begin(struct log_line *l)
{
    log_begin(l, LOG_ERROR, "test");
}

/* Logs v as field "k" and checks the exact text, one line, and the way back. */
static void tl_check(const char *v, size_t n, const char *want)
{
    struct log_line l;
    char back[256];
    bool quoted;
    tl_begin(&l);
    size_t start = l.n;
    log_str(&l, "k", v, n);
    const char *field = l.buf + start;
    size_t len = l.n - start;
    CHECKF(len == strlen(want) && memcmp(field, want, len) == 0, "%s: got [%.*s]", want, (int)len,
           field);
    CHECKF(tl_one_line(&l), "%s: a raw control byte", want);
    long got = tl_decode(field, len, "k", back, &quoted);
    CHECKF(got == (long)n && memcmp(back, v, n) == 0, "%s: does not decode back", want);
}

static void test_every_byte(void)
{
    for (unsigned b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        char esc[5], want[32], in[3] = {'a', (char)c, 'z'};
        tl_escape(c, esc);
        const char *q = tl_needs_quotes(c) ? "\"" : "";
        snprintf(want, sizeof want, " k=%s%s%s", q, esc, q);
        tl_check((const char *)&c, 1, want);
        snprintf(want, sizeof want, " k=%sa%sz%s", q, esc, q);
        tl_check(in, 3, want);
    }
    /* The rules above, spelled out for the bytes that matter most. */
    tl_check("", 0, " k=\"\"");
    tl_check(" ", 1, " k=\" \"");
    tl_check("=", 1, " k=\"=\"");
    tl_check("\"", 1, " k=\"\\\"\"");
    tl_check("\\", 1, " k=\"\\\\\"");
    tl_check("\r", 1, " k=\"\\x0d\"");
    tl_check("\n", 1, " k=\"\\x0a\"");
    tl_check("\0", 1, " k=\"\\x00\"");
    tl_check("\x7f", 1, " k=\"\\x7f\"");
    tl_check("\x80", 1, " k=\x80");
    tl_check("\xff", 1, " k=\xff");
}

/* Every two-byte value decodes back to itself: no two values share a text. */
static void test_every_pair(void)
{
    int bad = 0;
    for (unsigned a = 0; a < 256; a++) {
        for (unsigned b = 0; b < 256; b++) {
            struct log_line l;
            char v[2] = {(char)a, (char)b}, back[16];
            bool quoted;
            tl_begin(&l);
            size_t start = l.n;
            log_str(&l, "k", v, 2);
            long got = tl_decode(l.buf + start, l.n - start, "k", back, &quoted);
            if (got != 2 || memcmp(back, v, 2) != 0 || !tl_one_line(&l) ||
                quoted != (tl_needs_quotes((unsigned char)a) || tl_needs_quotes((unsigned char)b)))
                bad++;
        }
    }
    CHECK_INT(bad, 0);
}

static void test_crafted(void)
{
    /* A user name that tries to end the line and forge another. */
    const char forge[] = "bob\r\nts=2024-01-01T00:00:00.000Z level=info event=login_ok user=admin";
    char want[256];
    snprintf(want, sizeof want, " k=\"bob\\x0d\\x0a%s\"", forge + 5);
    tl_check(forge, sizeof forge - 1, want);
    /* A value that looks like an escape is escaped itself. */
    tl_check("\\x41", 4, " k=\"\\\\x41\"");
    tl_check("say \"hi\"", 8, " k=\"say \\\"hi\\\"\"");
    tl_check("a=b", 3, " k=\"a=b\"");
    tl_check("key=\"v\" x", 9, " k=\"key=\\\"v\\\" x\"");
    /* UTF-8 passes as it is, unquoted. */
    tl_check("p\xc3\xa4ss", 5, " k=p\xc3\xa4ss");
    tl_check("alice@example.com", 17, " k=alice@example.com");
    tl_check("\x1b[31m", 5, " k=\"\\x1b[31m\"");
}

/*
 * A value too long for the line, from every fill of the line near its end,
 * is cut at a whole character: the field still decodes (closed quote, no
 * half escape) to a prefix of the value, and room is left for the newline.
 * A field whose key and quotes do not fit is left out whole.
 */
static void check_long(char fill_byte, size_t vlen)
{
    char *v = malloc(vlen), *back = malloc(LINE_MAX_BYTES);
    char filler[LINE_MAX_BYTES];
    size_t head = tl_needs_quotes((unsigned char)fill_byte) ? 4 : 3; /* ' k=' and a quote */
    memset(v, fill_byte, vlen);
    memset(filler, 'f', sizeof filler);
    for (size_t room = 3; room < 90; room++) {
        struct log_line l;
        bool quoted;
        tl_begin(&l);
        /* Fill the line (unquoted, so it is cut at the same limit) up to
         * `room` bytes before its end. */
        log_str(&l, "f", filler, LINE_MAX_BYTES - room - l.n - 3);
        size_t start = l.n;
        CHECK_INT(start, LINE_MAX_BYTES - room);
        log_str(&l, "k", v, vlen);
        CHECKF(l.n + 2 <= LINE_MAX_BYTES, "byte %#x room %zu: n %zu leaves no room", fill_byte,
               room, l.n);
        CHECK(tl_one_line(&l));
        CHECKF((l.n > start) == (start + head + 2 < LINE_MAX_BYTES), "byte %#x room %zu: field %s",
               fill_byte, room, l.n > start ? "kept" : "left out");
        if (l.n == start)
            continue;
        long got = tl_decode(l.buf + start, l.n - start, "k", back, &quoted);
        CHECKF(got >= 0 && memcmp(back, v, (size_t)got) == 0,
               "byte %#x room %zu: [%.*s] is not a cut of the value", fill_byte, room,
               (int)(l.n - start), l.buf + start);
        /* Cut where the next whole escape would not fit, not sooner. */
        char esc[5];
        size_t k = tl_escape((unsigned char)fill_byte, esc);
        CHECKF(got < 0 || (size_t)got == vlen || l.n - quoted + k + 2 >= LINE_MAX_BYTES,
               "byte %#x room %zu: cut too soon", fill_byte, room);
    }
    free(v);
    free(back);
}

static void test_long(void)
{
    const char fills[] = {'a', ' ', '"', '\\', '\x01', '\n', '\x7f', (char)0xc3};
    for (size_t i = 0; i < sizeof fills; i++) {
        check_long(fills[i], LINE_MAX_BYTES * 3);
        check_long(fills[i], LINE_MAX_BYTES - 30);
    }
    /* Fields keep coming after the line is full: none goes past the end. */
    struct log_line l;
    char big[LINE_MAX_BYTES];
    memset(big, '"', sizeof big);
    tl_begin(&l);
    for (int i = 0; i < 20; i++) {
        log_str(&l, "some_key_name", big, sizeof big);
        log_fmt(&l, "n", "%d", i);
        CHECK(l.n + 2 <= LINE_MAX_BYTES);
    }
    CHECK(tl_one_line(&l));
}

static void test_levels(void)
{
    struct log_line l;
    enum log_level saved = log_level;
    log_level = LOG_INFO;
    log_begin(&l, LOG_DEBUG, "quiet");
    CHECK(l.skip);
    log_str(&l, "k", "v", 1);
    CHECK_INT(l.n, 0);
    log_begin(&l, LOG_WARN, "loud");
    CHECK(!l.skip);
    CHECK(strncmp(l.buf, "ts=", 3) == 0);
    CHECK(th_contains(l.buf, l.n, " level=warning event=loud"));
    CHECK(tl_one_line(&l));
    log_level = saved;
}

/* log_end writes the line and its newline with one write, on stderr. */
static void test_end(void)
{
    struct log_line l;
    int fds[2], saved = dup(STDERR_FILENO);
    char out[LINE_MAX_BYTES + 16];
    if (pipe(fds) != 0 || saved < 0) {
        th_fail(__FILE__, __LINE__, "pipe");
        return;
    }
    dup2(fds[1], STDERR_FILENO);
    tl_begin(&l);
    log_str(&l, "user", "a\nb", 3);
    size_t n = l.n;
    char want[LINE_MAX_BYTES];
    memcpy(want, l.buf, n);
    log_end(&l);
    log_msg(LOG_ERROR, "msg_test", "line one\nline two %s", "\r\n");
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fds[1]);
    ssize_t got = read(fds[0], out, sizeof out);
    close(fds[0]);
    CHECK(got > (ssize_t)n && memcmp(out, want, n) == 0 && out[n] == '\n');
    /* log_msg's message is a value like any other: its newlines are escaped. */
    const char *second = out + n + 1;
    size_t rest = got > (ssize_t)n ? (size_t)got - n - 1 : 0;
    CHECK(th_contains(second, rest, " msg=\"line one\\x0aline two \\x0d\\x0a\"\n"));
    CHECK(rest > 0 && memchr(second, '\n', rest) == second + rest - 1);
}

int main(void)
{
    test_every_byte();
    test_every_pair();
    test_crafted();
    test_long();
    test_levels();
    test_end();
    return th_finish("test_log");
}

/*
 * Growable buffers and the send queue (base/buf.c): growth across many
 * appends with the bytes intact, reuse of the read space, consumed bytes
 * wiped, printf of any length, the size limit, and the send queue's rule
 * that the in-flight bytes never move while a send owns them.
 */
#include "../../base/buf.h"
#include "harness.h"

#include <stdint.h>
#include <stdlib.h>
#include <wchar.h>

/* True when n bytes at p are all zero. */
static bool tb_zero(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

static bool tb_pow2_cap(const struct buf *b)
{
    return b->cap >= 256 && (b->cap & (b->cap - 1)) == 0;
}

static void test_reserve(void)
{
    struct buf b = {0};
    CHECK_INT(buf_reserve(&b, 0), FG_OK); /* nothing asked, nothing allocated */
    CHECK(b.data == NULL);
    CHECK_INT(buf_reserve(&b, 1), FG_OK);
    CHECK_INT(b.cap, 256);
    CHECK_INT(buf_reserve(&b, 256), FG_OK);
    CHECK_INT(b.cap, 256);
    CHECK_INT(buf_reserve(&b, 257), FG_OK);
    CHECK_INT(b.cap, 512);
    CHECK_INT(buf_reserve(&b, 5000), FG_OK);
    CHECK_INT(b.cap, 8192);
    CHECK_INT(b.len, 0);
    buf_free(&b);
}

static void test_append_growth(void)
{
    struct buf b = {0};
    int bad = 0;
    /* A byte at a time, then in uneven chunks, across many doublings. */
    for (uint32_t i = 0; i < 100000; i++) {
        char c = (char)(i * 7);
        if (buf_append(&b, &c, 1) != FG_OK || !tb_pow2_cap(&b) || b.len > b.cap)
            bad++;
    }
    CHECK_INT(bad, 0);
    CHECK_INT(b.len, 100000);
    for (uint32_t i = 0; i < 100000; i++)
        bad += b.data[i] != (char)(i * 7);
    CHECK_INT(bad, 0);

    char chunk[1000];
    for (size_t i = 0; i < sizeof chunk; i++)
        chunk[i] = (char)i;
    for (size_t n = 1; n <= sizeof chunk; n += 37)
        CHECK_INT(buf_append(&b, chunk, n), FG_OK);
    size_t off = 100000;
    for (size_t n = 1; n <= sizeof chunk; n += 37) {
        bad += memcmp(b.data + off, chunk, n) != 0;
        off += n;
    }
    CHECK_INT(bad, 0);
    CHECK_INT(b.len, off);
    CHECK_INT(buf_append(&b, NULL, 0), FG_OK); /* zero bytes: no pointer read */
    CHECK_INT(b.len, off);
    buf_free(&b);
}

static void test_puts(void)
{
    struct buf b = {0};
    CHECK_INT(buf_puts(&b, "* OK "), FG_OK);
    CHECK_INT(buf_puts(&b, ""), FG_OK);
    CHECK_INT(buf_puts(&b, "ready\r\n"), FG_OK);
    CHECK_MEM(buf_head(&b), buf_avail(&b), "* OK ready\r\n");
    buf_free(&b);
}

static int tb_vprintf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int tb_vprintf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

static void test_printf(void)
{
    struct buf b = {0};
    CHECK_INT(buf_printf(&b, "%s %u %c", "a1", 42u, 'x'), FG_OK);
    CHECK_MEM(buf_head(&b), buf_avail(&b), "a1 42 x");
    buf_free(&b);

    /* Around the 512-byte stack buffer, and far past it: two paths, one result. */
    size_t sizes[] = {0, 1, 510, 511, 512, 513, 1023, 4096, 70000};
    char *s = malloc(70001), *want = malloc(70100);
    for (size_t i = 0; i < 70000; i++)
        s[i] = (char)('a' + i % 26);
    for (size_t k = 0; k < FG_ARRAY_SIZE(sizes); k++) {
        size_t n = sizes[k];
        s[n] = 0;
        snprintf(want, 70100, "<%s>%d", s, 7);
        CHECK_INT(buf_puts(&b, "pre:"), FG_OK);
        CHECK_INT(buf_printf(&b, "<%s>%d", s, 7), FG_OK);
        CHECKF(buf_avail(&b) == 4 + strlen(want) && memcmp(buf_head(&b), "pre:", 4) == 0 &&
                       memcmp(buf_head(&b) + 4, want, strlen(want)) == 0,
               "printf of %zu bytes", n);
        buf_consume(&b, buf_avail(&b));
        CHECK_INT(tb_vprintf(&b, "%s|%s", s, "end"), FG_OK);
        CHECK_INT(buf_avail(&b), n + 4);
        CHECK(memcmp(buf_head(&b) + n, "|end", 4) == 0);
        buf_free(&b);
        s[n] = (char)('a' + n % 26);
    }
    free(s);
    free(want);

    /* A format vsnprintf refuses (a wide character the C locale cannot
     * encode): FG_ERROR, and the buffer is left as it was. */
    CHECK_INT(buf_puts(&b, "kept"), FG_OK);
    CHECK_INT(buf_printf(&b, "%lc", (wint_t)0x20ac), FG_ERROR);
    CHECK_MEM(buf_head(&b), buf_avail(&b), "kept");
    buf_free(&b);
}

static void test_consume(void)
{
    struct buf b = {0};
    CHECK_INT(buf_puts(&b, "PASS secret\r\nNOOP\r\n"), FG_OK);
    char *data = b.data;
    buf_consume(&b, 0);
    CHECK_INT(b.off, 0);
    /* Part: the read bytes are wiped (they held a password), the rest stays. */
    buf_consume(&b, 13);
    CHECK_INT(b.off, 13);
    CHECK(tb_zero(b.data, 13));
    CHECK_MEM(buf_head(&b), buf_avail(&b), "NOOP\r\n");
    /* All: the buffer is rewound and keeps its memory. */
    buf_consume(&b, buf_avail(&b));
    CHECK_INT(b.off, 0);
    CHECK_INT(b.len, 0);
    CHECK(b.data == data && b.cap == 256);
    CHECK(tb_zero(b.data, 19));
    buf_consume(&b, 0);

    /* Read space is reused before growing: the unread tail moves to the
     * front and what it left behind is wiped. */
    char fill[200];
    memset(fill, 'x', sizeof fill);
    CHECK_INT(buf_append(&b, fill, sizeof fill), FG_OK);
    buf_consume(&b, 150);
    CHECK_INT(buf_append(&b, "0123456789", 10), FG_OK); /* fits at the end */
    CHECK_INT(b.off, 150);
    CHECK_INT(buf_reserve(&b, 100), FG_OK); /* 46 left at the end, 206 with the read space */
    CHECK(b.data == data && b.cap == 256);
    CHECK_INT(b.off, 0);
    CHECK_INT(b.len, 60);
    CHECK(memcmp(b.data, fill, 50) == 0 && memcmp(b.data + 50, "0123456789", 10) == 0);
    CHECK(tb_zero(b.data + 60, 150));
    /* Growth keeps only the unread bytes, from offset 0. */
    buf_consume(&b, 20);
    CHECK_INT(buf_reserve(&b, 1000), FG_OK);
    CHECK_INT(b.off, 0);
    CHECK_INT(b.len, 40);
    CHECK_INT(b.cap, 2048);
    CHECK(memcmp(b.data, fill, 30) == 0 && memcmp(b.data + 30, "0123456789", 10) == 0);
    buf_free(&b);
}

static void test_free_trim(void)
{
    struct buf b = {0};
    buf_free(&b); /* an empty buffer */
    CHECK_INT(buf_puts(&b, "x"), FG_OK);
    buf_trim(&b); /* holds a byte: kept */
    CHECK(b.data != NULL);
    buf_consume(&b, 1);
    buf_trim(&b);
    CHECK(b.data == NULL && b.cap == 0 && b.len == 0 && b.off == 0);
    CHECK_INT(buf_puts(&b, "again"), FG_OK); /* usable after */
    CHECK_MEM(buf_head(&b), buf_avail(&b), "again");
    buf_free(&b);
    buf_free(&b); /* twice is fine */
    CHECK(b.data == NULL && b.cap == 0);
}

/* The limit: a buffer never grows past 2 GiB; asking fails and leaves it whole. */
static void test_limit(void)
{
    struct buf b = {0};
    CHECK_INT(buf_reserve(&b, (size_t)UINT32_MAX / 2 + 1), FG_ERROR);
    CHECK_INT(buf_reserve(&b, UINT32_MAX), FG_ERROR);
    CHECK_INT(buf_reserve(&b, SIZE_MAX), FG_ERROR);
    CHECK(b.data == NULL);
    CHECK_INT(buf_puts(&b, "abc"), FG_OK);
    /* With bytes unread, a size near SIZE_MAX must not wrap past the check. */
    CHECK_INT(buf_reserve(&b, SIZE_MAX), FG_ERROR);
    CHECK_INT(buf_reserve(&b, SIZE_MAX - 1), FG_ERROR);
    CHECK_INT(buf_reserve(&b, (size_t)UINT32_MAX / 2 - 2), FG_ERROR);
    CHECK_INT(buf_append(&b, "x", SIZE_MAX), FG_ERROR); /* refused before any read */
    CHECK_MEM(buf_head(&b), buf_avail(&b), "abc");
    CHECK_INT(b.cap, 256);
    buf_free(&b);
}

static void test_sendq(void)
{
    struct sendq sq = {0};
    const char *p;
    uint32_t n;
    CHECK(sendq_idle(&sq));
    CHECK(!sendq_start(&sq, &p, &n)); /* nothing queued */

    CHECK_INT(buf_puts(&sq.q, "first"), FG_OK);
    CHECK(!sendq_idle(&sq));
    CHECK(sendq_start(&sq, &p, &n));
    CHECK(sq.busy);
    CHECK_MEM(p, n, "first");
    CHECK_INT(buf_avail(&sq.q), 0);
    CHECK(!sendq_start(&sq, &p, &n)); /* one send at a time */

    /* Bytes queued while a send is in flight, even enough to grow the
     * queue many times, never move the in-flight bytes. */
    const char *fly = p;
    char big[1000];
    memset(big, 'q', sizeof big);
    for (int i = 0; i < 100; i++)
        CHECK_INT(buf_append(&sq.q, big, sizeof big), FG_OK);
    CHECK(buf_head(&sq.fly) == fly);
    CHECK(!sendq_start(&sq, &p, &n));

    /* A short send: the rest goes again, from where it stopped. */
    CHECK(sendq_done(&sq, 2, &p, &n));
    CHECK_MEM(p, n, "rst");
    CHECK(sq.busy);
    CHECK(!sendq_done(&sq, 3, &p, &n));
    CHECK(!sq.busy);
    CHECK(sq.fly.data != NULL); /* a small buffer is kept for the next reply */
    CHECK(!sendq_idle(&sq));

    /* The queued 100 000 bytes go next, in one buffer; once sent, so big
     * a buffer is let go. */
    CHECK(sendq_start(&sq, &p, &n));
    CHECK_INT(n, 100000);
    CHECK(p[0] == 'q' && p[n - 1] == 'q');
    CHECK(sq.q.data != NULL && sq.q.cap == 256); /* the old small buffer, swapped in */
    uint32_t sent = 0;
    while (sendq_done(&sq, 30000 < n ? 30000 : n, &p, &n))
        sent += 30000;
    CHECK_INT(sent, 90000);
    CHECK(!sq.busy);
    CHECK(sq.fly.data == NULL);
    CHECK(sendq_idle(&sq));

    CHECK_INT(buf_puts(&sq.q, "last"), FG_OK);
    CHECK(sendq_start(&sq, &p, &n));
    sendq_free(&sq); /* with a send in flight: all is let go */
    CHECK(!sq.busy && sq.q.data == NULL && sq.fly.data == NULL);
    CHECK(sendq_idle(&sq));
}

int main(void)
{
    test_reserve();
    test_append_growth();
    test_puts();
    test_printf();
    test_consume();
    test_free_trim();
    test_limit();
    test_sendq();
    return th_finish("test_buf");
}

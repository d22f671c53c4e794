#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int buf_reserve(struct buf *b, size_t n)
{
    if ((size_t)b->cap - b->len >= n)
        return FG_OK;
    /* Reuse the read space first: move the unread tail to the front. */
    uint32_t avail = buf_avail(b);
    if (b->off > 0 && (size_t)b->cap - avail >= n) {
        memmove(b->data, b->data + b->off, avail);
        explicit_bzero(b->data + avail, b->len - avail);
        b->off = 0;
        b->len = avail;
        return FG_OK;
    }
    /* At most 2 GiB, so that cap doubles within uint32_t. Written so that
     * no n, however large (a caller's length that wrapped), can overflow
     * the sum and slip past. */
    if (n > UINT32_MAX / 2 || avail > UINT32_MAX / 2 - n)
        return FG_ERROR;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < (size_t)avail + n)
        cap *= 2;
    char *p = malloc(cap);
    if (!p)
        return FG_ERROR;
    if (b->data) {
        memcpy(p, b->data + b->off, avail);
        explicit_bzero(b->data, b->cap);
        free(b->data);
    }
    b->data = p;
    b->cap = (uint32_t)cap;
    b->off = 0;
    b->len = avail;
    return FG_OK;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    if (n == 0)
        return FG_OK;
    if (buf_reserve(b, n) != FG_OK)
        return FG_ERROR;
    memcpy(b->data + b->len, p, n);
    b->len += (uint32_t)n;
    return FG_OK;
}

int buf_puts(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    char tmp[512];
    va_list again;

    va_copy(again, ap);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    if (n < 0 || (size_t)n < sizeof tmp) {
        va_end(again);
        int rc = n < 0 ? FG_ERROR : buf_append(b, tmp, (size_t)n);
        explicit_bzero(tmp, sizeof tmp); /* it may have held a password */
        return rc;
    }
    explicit_bzero(tmp, sizeof tmp);
    if (buf_reserve(b, (size_t)n + 1) != FG_OK) {
        va_end(again);
        return FG_ERROR;
    }
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, again);
    va_end(again);
    b->len += (uint32_t)n;
    return FG_OK;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void buf_consume(struct buf *b, size_t n)
{
    if (n == 0)
        return;
    /* Consumed bytes may be a password; they do not outlive their use. */
    explicit_bzero(b->data + b->off, n);
    b->off += (uint32_t)n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}

void buf_free(struct buf *b)
{
    if (b->data) {
        explicit_bzero(b->data, b->cap);
        free(b->data);
    }
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

bool sendq_start(struct sendq *sq, const char **p_r, uint32_t *n_r)
{
    if (sq->busy || buf_avail(&sq->q) == 0)
        return false;
    /* Swap: the queue becomes the in-flight buffer, the old one is reused. */
    struct buf t = sq->fly;
    sq->fly = sq->q;
    sq->q = t;
    sq->busy = true;
    *p_r = buf_head(&sq->fly);
    *n_r = buf_avail(&sq->fly);
    return true;
}

bool sendq_done(struct sendq *sq, uint32_t n, const char **p_r, uint32_t *n_r)
{
    buf_consume(&sq->fly, n);
    if (buf_avail(&sq->fly) > 0) {
        *p_r = buf_head(&sq->fly);
        *n_r = buf_avail(&sq->fly);
        return true;
    }
    sq->busy = false;
    /* Keep one small buffer around for the next reply; drop big ones. */
    if (sq->fly.cap > 4096)
        buf_free(&sq->fly);
    return false;
}

void sendq_free(struct sendq *sq)
{
    buf_free(&sq->q);
    buf_free(&sq->fly);
    sq->busy = false;
}

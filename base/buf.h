/*
 * Growable byte buffers with a read offset.
 *
 * Every buffer may hold secrets (credentials pass through client input and
 * backend output), so memory is wiped before it is freed or moved: growth
 * never uses realloc, which could leave a copy behind.
 */
#ifndef FG_BUF_H
#define FG_BUF_H

#include "common.h"

#include <stdarg.h>

struct buf {
    char *data;
    uint32_t off; /* first unread byte */
    uint32_t len; /* end of data */
    uint32_t cap;
};

/* Unread bytes. */
static inline uint32_t buf_avail(const struct buf *b)
{
    return b->len - b->off;
}

static inline char *buf_head(const struct buf *b)
{
    return b->data + b->off;
}

/* Ensures room for n more bytes. Returns FG_OK or FG_ERROR (out of memory). */
int buf_reserve(struct buf *b, size_t n);

/* Appends n bytes. Returns FG_OK or FG_ERROR. */
int buf_append(struct buf *b, const void *p, size_t n);

/* Appends a C string. */
int buf_puts(struct buf *b, const char *s);

/* Appends printf-formatted text, of any length. */
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* Marks n bytes read; an emptied buffer is rewound (and its old bytes wiped). */
void buf_consume(struct buf *b, size_t n);

/* Wipes the contents and releases the memory. The buffer stays usable. */
void buf_free(struct buf *b);

/* Releases the memory of an empty buffer, so idle connections pin nothing. */
static inline void buf_trim(struct buf *b)
{
    if (b->data && buf_avail(b) == 0)
        buf_free(b);
}

/*
 * A send queue: bytes are appended to `q` while `fly` is owned by an
 * in-flight send, whose memory the kernel may still read and so must not move.
 */
struct sendq {
    struct buf q;
    struct buf fly;
    bool busy;
};

/*
 * Starts a send if none is in flight and bytes are queued.
 * Returns true and sets p_r and n_r to the bytes to send, or false.
 */
bool sendq_start(struct sendq *sq, const char **p_r, uint32_t *n_r);

/*
 * Records that n bytes of the in-flight send went out. Returns true when part
 * of the in-flight bytes remain, with p_r and n_r set to them (the caller
 * resubmits); false when the in-flight buffer is done.
 */
bool sendq_done(struct sendq *sq, uint32_t n, const char **p_r, uint32_t *n_r);

static inline bool sendq_idle(const struct sendq *sq)
{
    return !sq->busy && buf_avail(&sq->q) == 0;
}

void sendq_free(struct sendq *sq);

#endif

/*
 * What the libFuzzer targets share, header-only: the input read as a stream
 * of fields, piece sizes for feeding a resumable parser, exact-size copies,
 * and fences around a struct buf's unused bytes.
 *
 * Exact sizes matter: libFuzzer's own copy of the input ends where the input
 * ends, but a parser handed the first k bytes of it could read byte k
 * unnoticed. Every piece a harness hands over is therefore either a fresh
 * heap block of exactly the bytes that have "arrived", or a stream whose
 * bytes stay poisoned until they arrive (struct fz_stream), so ASan reports a
 * read past them.
 */
#ifndef FG_FUZZ_UTIL_H
#define FG_FUZZ_UTIL_H

#include <sanitizer/asan_interface.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Aborts with a message: libFuzzer keeps the input as a crash. */
#define FZ_CHECK(cond)                                                                             \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The input as fields; past its end every field reads as zero. */
struct fz {
    const uint8_t *p;
    size_t n, pos;
};

static inline uint8_t fz_u8(struct fz *f)
{
    return f->pos < f->n ? f->p[f->pos++] : 0;
}

static inline uint16_t fz_u16(struct fz *f)
{
    uint16_t hi = fz_u8(f);
    return (uint16_t)(hi << 8 | fz_u8(f));
}

/* Up to want bytes at *p_r; returns how many there were. */
static inline size_t fz_bytes(struct fz *f, size_t want, const uint8_t **p_r)
{
    size_t n = f->n - f->pos < want ? f->n - f->pos : want;
    *p_r = f->p + f->pos;
    f->pos += n;
    return n;
}

/* Piece sizes from a small generator seeded by the input, so that a crash
 * replays exactly: mostly short pieces (a byte at a time is where resumable
 * parsers break), sometimes up to max. */
struct fz_rng {
    uint32_t s;
};

static inline void fz_rng_seed(struct fz_rng *r, const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    r->s = h ? h : 1;
}

static inline uint32_t fz_rng_next(struct fz_rng *r)
{
    uint32_t x = r->s; /* xorshift32 */
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return r->s = x;
}

static inline size_t fz_piece(struct fz_rng *r, size_t max)
{
    uint32_t v = fz_rng_next(r);
    if ((v & 3) == 0)
        return 1;
    return (v >> 2) % max + 1;
}

/* A heap block of exactly n bytes (none at all when n is 0). */
static inline void *fz_alloc(size_t n)
{
    void *c = malloc(n);
    if (!c)
        abort();
    return c;
}

/* A heap copy of exactly n bytes. */
static inline char *fz_dup(const void *p, size_t n)
{
    char *c = fz_alloc(n);
    if (n)
        memcpy(c, p, n);
    return c;
}

/*
 * A stream that arrives piece by piece: one heap copy of it, every byte
 * unaddressable (ASan) until fz_arrive hands it over, and again once
 * fz_consumed says the parser is done with it. Cheaper than a fresh block
 * per piece, and as strict: ASan poisons to the byte.
 */
struct fz_stream {
    char *p;
    size_t n;
};

static inline void fz_stream_open(struct fz_stream *s, const void *data, size_t n)
{
    s->p = fz_dup(data, n);
    s->n = n;
    ASAN_POISON_MEMORY_REGION(s->p, n);
}

static inline void fz_arrive(struct fz_stream *s, size_t off, size_t n)
{
    ASAN_UNPOISON_MEMORY_REGION(s->p + off, n);
}

/* The next piece arrives: up to max_piece more bytes after off + *have, as
 * rng draws it, or all that is left without rng. Returns the readable bytes
 * from off. */
static inline size_t fz_arrive_next(struct fz_stream *s, size_t off, size_t *have,
                                    struct fz_rng *rng, uint32_t max_piece)
{
    size_t left = s->n - off;
    size_t want = rng ? *have + fz_piece(rng, max_piece) : left;
    want = want < left ? want : left;
    if (want > *have) {
        fz_arrive(s, off + *have, want - *have);
        *have = want;
    }
    return *have;
}

static inline void fz_consumed(struct fz_stream *s, size_t off, size_t n)
{
    ASAN_POISON_MEMORY_REGION(s->p + off, n);
}

static inline void fz_stream_close(struct fz_stream *s)
{
    ASAN_UNPOISON_MEMORY_REGION(s->p, s->n);
    free(s->p);
}

/* 64-bit FNV-1a, to compare what two runs saw without keeping it. */
static inline uint64_t fz_hash(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    if (h == 0)
        h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* Fences a struct buf (base/buf.h) while a parser reads it: the consumed
 * bytes before the read offset and the spare room after the data become
 * unaddressable, so reading either is an ASan report. Unfence before the
 * buffer is appended to, consumed by the harness or freed. */
#define FZ_BUF_FENCE(b)                                                                            \
    do {                                                                                           \
        if ((b)->data) {                                                                           \
            ASAN_POISON_MEMORY_REGION((b)->data, (b)->off);                                        \
            ASAN_POISON_MEMORY_REGION((b)->data + (b)->len, (b)->cap - (b)->len);                  \
        }                                                                                          \
    } while (0)

#define FZ_BUF_UNFENCE(b)                                                                          \
    do {                                                                                           \
        if ((b)->data)                                                                             \
            ASAN_UNPOISON_MEMORY_REGION((b)->data, (b)->cap);                                      \
    } while (0)

#endif

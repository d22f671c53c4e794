/*
 * Small shared vocabulary: return codes, branch hints, an intrusive list.
 * Everything here is header-only so the pure parsers in proto/ can use it
 * without linking core/.
 */
#ifndef FG_COMMON_H
#define FG_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define FG_LIKELY(x)                       __builtin_expect(!!(x), 1)
#define FG_UNLIKELY(x)                     __builtin_expect(!!(x), 0)
#define FG_ARRAY_SIZE(a)                   (sizeof(a) / sizeof((a)[0]))
#define FG_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define FG_MIN(a, b)                       ((a) < (b) ? (a) : (b))
#define FG_MAX(a, b)                       ((a) > (b) ? (a) : (b))
#define FG_UNUSED                          __attribute__((unused))

/* One vocabulary of return codes, shared by every module. */
enum {
    FG_OK = 0,     /* done, success */
    FG_ERROR = -1, /* failed; the caller reports or closes */
    FG_AGAIN = -2, /* need more input or resources; call again later */
    FG_DONE = -3,  /* the peer ended the stream cleanly (a TLS close_notify); not an error */
};

/* Doubly linked intrusive list; a node that is not on a list points to itself. */
struct fg_list {
    struct fg_list *prev, *next;
};

static inline void fg_list_init(struct fg_list *l)
{
    l->prev = l->next = l;
}

static inline bool fg_list_empty(const struct fg_list *l)
{
    return l->next == l;
}

static inline void fg_list_del(struct fg_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

static inline void fg_list_add_tail(struct fg_list *head, struct fg_list *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

/* ASCII case-insensitive comparison of a byte slice against a C string. */
/* Milliseconds of CLOCK_MONOTONIC, for durations in logs. */
static inline uint32_t fg_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)(ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

static inline bool fg_ieq(const char *s, size_t n, const char *lit)
{
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char a = (unsigned char)s[i], b = (unsigned char)lit[i];
        if (b == 0)
            return false;
        if (a >= 'a' && a <= 'z')
            a -= 32;
        if (b >= 'a' && b <= 'z')
            b -= 32;
        if (a != b)
            return false;
    }
    return lit[n] == 0;
}

#endif

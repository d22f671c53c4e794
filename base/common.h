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

/* FG_TSAN: built with ThreadSanitizer (GCC says so one way, clang another). */
#if defined(__SANITIZE_THREAD__)
#define FG_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FG_TSAN 1
#endif
#endif

/*
 * One vocabulary of return codes, shared by every module. A function that
 * fails for a system reason returns FG_ERROR with errno set (or a reason in
 * a string it was given): a -errno value never leaves the file that made it.
 * A count-returning function (ssize_t) uses these negatives the same way.
 */
enum {
    FG_OK = 0,     /* done, success */
    FG_ERROR = -1, /* failed; the caller reports or closes */
    FG_AGAIN = -2, /* need more input or resources; call again later */
    FG_DONE = -3,  /* nothing more: the peer ended its stream cleanly (EOF, a TLS
                      close_notify); not a failure */
};

/*
 * Doubly linked intrusive list. A head is a struct fg_list that points at
 * itself when empty; a node is a struct fg_list inside the element, found
 * again with FG_CONTAINER_OF. A node that is on no list points to itself
 * (fg_list_init, fg_list_del), so deleting it again is harmless.
 */
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

/* Links n in after pos (a node, or the head). n must be on no list. */
static inline void fg_list_add_after(struct fg_list *pos, struct fg_list *n)
{
    n->prev = pos;
    n->next = pos->next;
    pos->next->prev = n;
    pos->next = n;
}

/* n becomes the first node: a LIFO stack. */
static inline void fg_list_add_head(struct fg_list *head, struct fg_list *n)
{
    fg_list_add_after(head, n);
}

/* n becomes the last node: a FIFO queue. */
static inline void fg_list_add_tail(struct fg_list *head, struct fg_list *n)
{
    fg_list_add_after(head->prev, n);
}

/*
 * Keeps a list sorted: n goes after the last node it is not before(), so
 * nodes that compare equal stay in the order they came. The walk starts at
 * the tail, as keys that grow with time (due times) nearly always go last.
 */
static inline void fg_list_add_sorted(struct fg_list *head, struct fg_list *n,
                                      bool (*before)(const struct fg_list *a,
                                                     const struct fg_list *b))
{
    struct fg_list *pos = head->prev;
    while (pos != head && before(n, pos))
        pos = pos->prev;
    fg_list_add_after(pos, n);
}

/* The first node, or NULL when the list is empty. */
static inline struct fg_list *fg_list_first(const struct fg_list *head)
{
    return fg_list_empty(head) ? NULL : head->next;
}

/* Unlinks and returns the first node, or NULL when the list is empty. */
static inline struct fg_list *fg_list_pop(struct fg_list *head)
{
    struct fg_list *n = fg_list_first(head);
    if (n)
        fg_list_del(n);
    return n;
}

/* Moves every node of from, in order, to the end of to; from is left empty.
 * Taking a shared queue whole under its lock, then working through it
 * unlocked, needs only this. */
static inline void fg_list_splice_tail(struct fg_list *to, struct fg_list *from)
{
    if (fg_list_empty(from))
        return;
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    fg_list_init(from);
}

/* The element holding the first node, or NULL. head is evaluated twice. */
#define FG_LIST_FIRST(head, type, member)                                                          \
    (fg_list_empty(head) ? (type *)NULL : FG_CONTAINER_OF((head)->next, type, member))

/* Visits every node; the body must not unlink pos (use the _safe form). */
#define fg_list_for_each(pos, head) for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)

/* Visits every node; the body may unlink (and free) pos, not other nodes. */
#define fg_list_for_each_safe(pos, tmp, head)                                                      \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);                               \
         (pos) = (tmp), (tmp) = (pos)->next)

/* Milliseconds of CLOCK_MONOTONIC, for durations in logs. */
static inline uint32_t fg_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)(ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

/* Milliseconds of CLOCK_MONOTONIC, for deadlines that must not wrap. */
static inline uint64_t fg_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ASCII case-insensitive comparison of a byte slice against a C string. */
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

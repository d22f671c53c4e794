/*
 * A minimal unit-test harness: CHECK macros that count and report failures
 * with file:line, and buffers placed right before an inaccessible page so
 * that any read past the end faults (picohttpparser's trick).
 */
#ifndef FG_TEST_HARNESS_H
#define FG_TEST_HARNESS_H

#include <stddef.h>
#include <stdio.h>
#include <string.h>

extern int th_checks, th_failures;

void th_fail(const char *file, int line, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        th_checks++;                                                                               \
        if (!(cond))                                                                               \
            th_fail(__FILE__, __LINE__, "%s", #cond);                                              \
    } while (0)

#define CHECK_INT(a, b)                                                                            \
    do {                                                                                           \
        long long th_a = (long long)(a), th_b = (long long)(b);                                    \
        th_checks++;                                                                               \
        if (th_a != th_b)                                                                          \
            th_fail(__FILE__, __LINE__, "%s == %lld, expected %lld", #a, th_a, th_b);              \
    } while (0)

/* A CHECK with a printf-style message. */
#define CHECKF(cond, ...)                                                                          \
    do {                                                                                           \
        th_checks++;                                                                               \
        if (!(cond))                                                                               \
            th_fail(__FILE__, __LINE__, __VA_ARGS__);                                              \
    } while (0)

/* Compares n bytes at p with a C string. */
#define CHECK_MEM(p, n, s)                                                                         \
    do {                                                                                           \
        size_t th_n = (size_t)(n);                                                                 \
        const char *th_s = (s);                                                                    \
        th_checks++;                                                                               \
        if (th_n != strlen(th_s) || (th_n > 0 && memcmp((p), th_s, th_n) != 0))                    \
            th_fail(__FILE__, __LINE__, "%s: got \"%.*s\", expected \"%s\"", #p, (int)th_n,        \
                    (const char *)(p), th_s);                                                      \
    } while (0)

/* True when haystack (n bytes) contains the C string needle. */
int th_contains(const char *hay, size_t n, const char *needle);

/* Copies n bytes so that the last one sits just before a PROT_NONE page. */
char *th_guard_copy(const void *data, size_t n);
void th_guard_free(char *p, size_t n);

/* Prints the summary; returns the process exit code. */
int th_finish(const char *name);

#endif

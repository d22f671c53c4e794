#include "harness.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int th_checks, th_failures;

void th_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    th_failures++;
    fprintf(stderr, "%s:%d: FAIL: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int th_contains(const char *hay, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    if (k == 0)
        return 1;
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(hay + i, needle, k) == 0)
            return 1;
    return 0;
}

char *th_guard_copy(const void *data, size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = (n + page - 1) / page + 1;
    char *base =
            mmap(NULL, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        abort();
    mprotect(base + (pages - 1) * page, page, PROT_NONE);
    char *p = base + (pages - 1) * page - n;
    memcpy(p, data, n);
    return p;
}

void th_guard_free(char *p, size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = (n + page - 1) / page + 1;
    char *base = p + n - (pages - 1) * page;
    munmap(base, pages * page);
}

int th_finish(const char *name)
{
    printf("%s: %d checks, %d failures\n", name, th_checks, th_failures);
    return th_failures == 0 ? 0 : 1;
}

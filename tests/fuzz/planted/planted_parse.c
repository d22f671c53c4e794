/*
 * DELIBERATELY BROKEN: a one-byte read past the input, planted for the fuzz
 * stage of scripts/test.sh, which must find it within seconds.
 *
 * It is built like every fuzzed library (-fsanitize=fuzzer-no-link,address,
 * undefined, in its own static library) and proves both halves of that:
 *  - the magic "FGPL" is compared a byte at a time, so libFuzzer gets past it
 *    only by the coverage edges of this file (blind, 1 input in 2^32);
 *  - the bad read is of libFuzzer's own exact-size copy of the input, which
 *    only ASan's instrumentation of this file's loads can see.
 * Never link it into anything else.
 */
#include "planted_parse.h"

int planted_parse(const char *buf, size_t n)
{
    static const char magic[] = "FGPL";
    size_t i, len = 0;

    for (i = 0; i < 4; i++)
        if (i >= n || buf[i] != magic[i])
            return -1;
    if (i >= n || buf[i] != '{')
        return -1;
    for (i++; i < n && i < 9 && buf[i] >= '0' && buf[i] <= '9'; i++)
        len = len * 10 + (size_t)(buf[i] - '0');
    if (i == 5 || i >= n || buf[i] != '}')
        return -1;
    i++;
    if (len > n - i)
        return -1;
    i += len;
    if (buf[i] == '\r') /* the planted bug: no i < n check */
        i++;
    return (int)i;
}

#include "base64.h"

#include <stdbool.h>

static const char b64_alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static const char b64url_alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Encodes with alphabet a; pad: '=' to a multiple of four, as RFC 4648
 * section 4 wants, or nothing (section 5's URL form, as identifiers use). */
static size_t b64_encode(const char *a, bool pad, const uint8_t *src, size_t n, char *dst)
{
    char *start = dst;
    size_t i = 0;
    for (; n - i >= 3; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];
        *dst++ = a[v >> 18];
        *dst++ = a[(v >> 12) & 63];
        *dst++ = a[(v >> 6) & 63];
        *dst++ = a[v & 63];
    }
    if (n - i > 0) {
        uint32_t v = (uint32_t)src[i] << 16 | (n - i == 2 ? (uint32_t)src[i + 1] << 8 : 0);
        *dst++ = a[v >> 18];
        *dst++ = a[(v >> 12) & 63];
        if (n - i == 2)
            *dst++ = a[(v >> 6) & 63];
        else if (pad)
            *dst++ = '=';
        if (pad)
            *dst++ = '=';
    }
    return (size_t)(dst - start);
}

void base64_encode(const uint8_t *src, size_t n, char *dst)
{
    b64_encode(b64_alphabet, true, src, n, dst);
}

size_t base64url_encode(const uint8_t *src, size_t n, char *dst)
{
    return b64_encode(b64url_alphabet, false, src, n, dst);
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long base64_decode(const char *src, size_t n, uint8_t *dst)
{
    if (n % 4 != 0)
        return -1;
    size_t out = 0;
    for (size_t i = 0; i < n; i += 4) {
        int pad = 0;
        uint32_t v = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)src[i + k];
            int d;
            if (c == '=') {
                /* Padding only in the last quantum, only in its last two places. */
                if (i + 4 != n || k < 2)
                    return -1;
                pad++;
                d = 0;
            } else {
                if (pad)
                    return -1;
                d = b64_value(c);
                if (d < 0)
                    return -1;
            }
            v = v << 6 | (uint32_t)d;
        }
        /* Canonical form: the bits hidden by padding must be zero. */
        if ((pad == 1 && (v & 0xff)) || (pad == 2 && (v & 0xffff)))
            return -1;
        dst[out++] = (uint8_t)(v >> 16);
        if (pad < 2)
            dst[out++] = (uint8_t)(v >> 8);
        if (pad < 1)
            dst[out++] = (uint8_t)v;
    }
    return (long)out;
}

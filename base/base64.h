/* Base64 (RFC 4648 section 4), strict: the alphabet, padding and length are checked. */
#ifndef FG_BASE64_H
#define FG_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Bytes needed to encode n bytes, without a terminating NUL. */
static inline size_t base64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

/* Bytes at most produced by decoding n characters. */
static inline size_t base64_decoded_max(size_t n)
{
    return n / 4 * 3;
}

/* Encodes n bytes of src into dst, which has base64_encoded_len(n) bytes. */
void base64_encode(const uint8_t *src, size_t n, char *dst);

/* Encodes n bytes in the URL alphabet ('-' and '_'), without padding (RFC
 * 4648 section 5): safe in IMAP atoms, POP3 arguments and file names.
 * dst has base64_encoded_len(n) bytes; returns the length written. */
size_t base64url_encode(const uint8_t *src, size_t n, char *dst);

/*
 * Decodes n characters of src into dst (room for base64_decoded_max(n)).
 * Returns the decoded length, or -1 when src is not canonical base64.
 */
long base64_decode(const char *src, size_t n, uint8_t *dst);

#endif

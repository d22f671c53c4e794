/*
 * SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed 64-bit hash for tables
 * whose keys a client chooses. With a random key per process, a client who
 * sends names cannot aim them at one bucket.
 */
#ifndef FG_SIPHASH_H
#define FG_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

#define SIPHASH_KEY_LEN 16

uint64_t siphash24(const uint8_t key[SIPHASH_KEY_LEN], const void *data, size_t n);

#endif

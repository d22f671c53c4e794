/*
 * A parser with a planted bug, for the fuzz stage to find: the proof that
 * the fuzzers' libraries are instrumented. See planted_parse.c.
 */
#ifndef FG_PLANTED_PARSE_H
#define FG_PLANTED_PARSE_H

#include <stddef.h>

/* Parses "FGPL{n}" followed by n bytes and an optional CR. Returns the
 * bytes taken, or -1. */
int planted_parse(const char *buf, size_t n);

#endif

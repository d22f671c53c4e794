/*
 * An HTTP/1.0 and HTTP/1.1 request head, for the metrics listener
 * (core/metrics_http.c): "GET /metrics HTTP/1.1", headers, a blank line.
 *
 * Pure and resumable like the protocol parsers: the caller feeds bytes as
 * they arrive, any split, and each byte is examined once; the parser never
 * reads a socket or allocates. Headers are checked for shape and skipped:
 * a scrape needs none of them. The whole head is capped at HTTP_HEAD_MAX
 * bytes, and the path kept at HTTP_PATH_MAX (longer: not a path we serve).
 */
#ifndef FG_HTTP_PARSE_H
#define FG_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_HEAD_MAX   4096
#define HTTP_PATH_MAX   64
#define HTTP_METHOD_MAX 16

enum http_rc {
    HTTP_DONE,  /* the head is complete: method, path and version are set */
    HTTP_AGAIN, /* every byte so far fits a request: feed more */
    HTTP_ERROR, /* not a request we read: answer p->status (400 or 431) */
};

enum http_method { HTTP_GET, HTTP_HEAD, HTTP_OTHER };

struct http_parse {
    uint8_t state;
    uint8_t method; /* enum http_method */
    uint8_t minor;  /* HTTP/1.minor */
    bool path_long; /* longer than HTTP_PATH_MAX: kept truncated */
    uint16_t status;
    uint16_t used; /* bytes of the head so far */
    uint8_t mlen, plen, vlen;
    char mbuf[HTTP_METHOD_MAX];
    char path[HTTP_PATH_MAX + 1];
};

void http_parse_init(struct http_parse *p);

/*
 * Examines data[0..n). HTTP_DONE with *used_r the bytes the head took (what
 * follows is a body or a pipelined request, which the caller ignores),
 * HTTP_AGAIN when all n were taken, HTTP_ERROR with p->status.
 */
enum http_rc http_parse_feed(struct http_parse *p, const char *data, size_t n, size_t *used_r);

/* The path without its query string: "/metrics?x=1" is "/metrics". */
bool http_parse_path_is(const struct http_parse *p, const char *path);

#endif

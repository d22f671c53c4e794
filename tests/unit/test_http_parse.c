/*
 * The metrics listener's request head parser: every case fed whole and byte
 * at a time from a guard page, with bytes after the head left alone.
 */
#include "../../proto/http_parse.h"
#include "harness.h"

#include <stdlib.h>

struct http_case {
    const char *name;
    const char *text;
    enum http_rc rc;
    enum http_method method;
    const char *path; /* HTTP_DONE */
    bool is_metrics;  /* http_parse_path_is(p, "/metrics") */
    size_t used;      /* HTTP_DONE: the head's length (0: the whole text) */
    uint16_t status;  /* HTTP_ERROR */
};

static const struct http_case cases[] = {
        {"GET 1.1", "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n", HTTP_DONE, HTTP_GET,
         "/metrics", true},
        {"GET 1.0 no headers", "GET /metrics HTTP/1.0\r\n\r\n", HTTP_DONE, HTTP_GET, "/metrics",
         true},
        {"bare LF", "GET /metrics HTTP/1.1\nHost: x\n\n", HTTP_DONE, HTTP_GET, "/metrics", true},
        {"query string", "GET /metrics?name[]=x HTTP/1.1\r\n\r\n", HTTP_DONE, HTTP_GET,
         "/metrics?name[]=x", true},
        {"HEAD", "HEAD /metrics HTTP/1.1\r\n\r\n", HTTP_DONE, HTTP_HEAD, "/metrics", true},
        {"POST", "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", HTTP_DONE, HTTP_OTHER,
         "/metrics", true},
        {"other path", "GET / HTTP/1.1\r\n\r\n", HTTP_DONE, HTTP_GET, "/", false},
        {"prefix path", "GET /metricsx HTTP/1.1\r\n\r\n", HTTP_DONE, HTTP_GET, "/metricsx", false},
        {"body after the head", "GET /metrics HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n", HTTP_DONE,
         HTTP_GET, "/metrics", true, 25},
        {"empty header value", "GET /metrics HTTP/1.1\r\nX-Empty:\r\n\r\n", HTTP_DONE, HTTP_GET,
         "/metrics", true},
        {"incomplete head", "GET /metrics HTTP/1.1\r\nHost: x\r\n", HTTP_AGAIN},
        {"incomplete line", "GET /metr", HTTP_AGAIN},
        {"only CR at the end", "GET /metrics HTTP/1.1\r\n\r", HTTP_AGAIN},
        {"HTTP/0.9", "GET /metrics\r\n\r\n", HTTP_ERROR, .status = 400},
        {"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", HTTP_ERROR, .status = 400},
        {"version 1.2", "GET /metrics HTTP/1.2\r\n\r\n", HTTP_ERROR, .status = 400},
        {"lower-case version", "GET /metrics http/1.1\r\n\r\n", HTTP_ERROR, .status = 400},
        {"two spaces", "GET  /metrics HTTP/1.1\r\n\r\n", HTTP_ERROR, .status = 400},
        {"leading space", " GET /metrics HTTP/1.1\r\n\r\n", HTTP_ERROR, .status = 400},
        {"binary", "\x16\x03\x01\x02\x00\x01", HTTP_ERROR, .status = 400},
        {"IMAP", "a1 LOGIN user pass\r\n", HTTP_ERROR, .status = 400},
        {"CR without LF", "GET /metrics HTTP/1.1\rX", HTTP_ERROR, .status = 400},
        {"header without colon", "GET /metrics HTTP/1.1\r\nHost\r\n\r\n", HTTP_ERROR,
         .status = 400},
        {"header folding", "GET /metrics HTTP/1.1\r\nA: b\r\n c\r\n\r\n", HTTP_ERROR,
         .status = 400},
        {"control in value", "GET /metrics HTTP/1.1\r\nA: b\x01\r\n\r\n", HTTP_ERROR,
         .status = 400},
        {"long method", "GETGETGETGETGETGETGET /metrics HTTP/1.1\r\n\r\n", HTTP_ERROR,
         .status = 400},
};

static void check_case(const struct http_case *k, size_t step)
{
    size_t n = strlen(k->text), off = 0, used = 0;
    char *buf = th_guard_copy(k->text, n);
    struct http_parse p;
    enum http_rc rc = HTTP_AGAIN;

    http_parse_init(&p);
    while (off < n && rc == HTTP_AGAIN) {
        size_t chunk = step && step < n - off ? step : n - off;
        rc = http_parse_feed(&p, buf + off, chunk, &used);
        off += used;
    }
    CHECKF(rc == k->rc, "%s (step %zu): rc %d, expected %d", k->name, step, rc, k->rc);
    if (rc == HTTP_DONE && k->rc == HTTP_DONE) {
        CHECKF(off == (k->used ? k->used : n), "%s: used %zu", k->name, off);
        CHECKF(p.method == k->method, "%s: method %d", k->name, p.method);
        CHECKF(strcmp(p.path, k->path) == 0, "%s: path %s", k->name, p.path);
        CHECKF(http_parse_path_is(&p, "/metrics") == k->is_metrics, "%s: path_is", k->name);
    }
    if (rc == HTTP_ERROR && k->rc == HTTP_ERROR)
        CHECKF(p.status == k->status, "%s: status %u", k->name, p.status);
    th_guard_free(buf, n);
}

/* An endless header is cut off at HTTP_HEAD_MAX with 431, fed any way. */
static void test_cap(void)
{
    static char big[HTTP_HEAD_MAX + 100];
    struct http_parse p;
    size_t used;
    memset(big, 'a', sizeof big);
    memcpy(big, "GET /metrics HTTP/1.1\r\nX: ", 26);
    http_parse_init(&p);
    CHECK_INT(http_parse_feed(&p, big, sizeof big, &used), HTTP_ERROR);
    CHECK_INT(p.status, 431);
    http_parse_init(&p);
    enum http_rc rc = HTTP_AGAIN;
    for (size_t i = 0; i < sizeof big && rc == HTTP_AGAIN; i++)
        rc = http_parse_feed(&p, big + i, 1, &used);
    CHECK_INT(rc, HTTP_ERROR);
    CHECK_INT(p.used, HTTP_HEAD_MAX);
}

/* A path longer than HTTP_PATH_MAX is no path we serve (and not truncated into one). */
static void test_long_path(void)
{
    char req[256];
    struct http_parse p;
    size_t used;
    snprintf(req, sizeof req, "GET /metrics%0100d HTTP/1.1\r\n\r\n", 0);
    http_parse_init(&p);
    CHECK_INT(http_parse_feed(&p, req, strlen(req), &used), HTTP_DONE);
    CHECK(p.path_long);
    CHECK(!http_parse_path_is(&p, "/metrics"));
}

int main(void)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_case(&cases[i], 0);
        check_case(&cases[i], 1);
        check_case(&cases[i], 3);
    }
    test_cap();
    test_long_path();
    return th_finish("test_http_parse");
}

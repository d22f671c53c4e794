/*
 * ctl watch's screen (core/ctl_view.c) without a terminal: "show info"
 * parsed, rates from two answers and the seconds between them, rows shown
 * only for the keys present, fields wrapped to the width, the whole layout.
 */
#include "../../core/ctl.h"
#include "harness.h"

#include <stdlib.h>

static struct ctl_snap snap_a, snap_b;
static char screen[8192];

static void parse(struct ctl_snap *s, const char *text)
{
    ctl_snap_parse(s, text, strlen(text));
}

/* The line of screen that starts with title, without its '\n'; "" if none. */
static const char *line_of(const char *title)
{
    static char line[512];
    size_t n = strlen(title);
    line[0] = 0;
    for (const char *p = screen; *p;) {
        size_t len = strcspn(p, "\n");
        if (len >= n && memcmp(p, title, n) == 0 && (p[n] == ' ' || p[n] == '\n' || !p[n])) {
            snprintf(line, sizeof line, "%.*s", (int)len, p);
            return line;
        }
        p += len + (p[len] == '\n');
    }
    return line;
}

static void test_parse(void)
{
    struct ctl_snap *s = &snap_a;
    const char text[] = "version: 1.2\r\nno colon here\n:empty key\nkey_without_space:1\n"
                        "evil: a\033[2Jb\nrelay: 7\nlast: 9";
    CHECK_INT(ctl_snap_parse(s, text, sizeof text - 1), 4);
    CHECK(strcmp(ctl_snap_get(s, "version"), "1.2") == 0); /* the \r is dropped */
    CHECK(strcmp(ctl_snap_get(s, "evil"), "a?[2Jb") == 0); /* no escape reaches a terminal */
    CHECK(ctl_snap_get(s, "key_without_space") == NULL);
    CHECK(ctl_snap_get(s, "missing") == NULL);
    double v = 0;
    CHECK(ctl_snap_num(s, "relay", &v) && v == 7);
    CHECK(ctl_snap_num(s, "last", &v) && v == 9); /* a last line without '\n' */
    CHECK(!ctl_snap_num(s, "evil", &v));

    /* More lines than a snapshot holds: the first CTL_SNAP_MAX are kept. */
    size_t cap = (CTL_SNAP_MAX + 10) * 24, len = 0;
    char *big = malloc(cap);
    for (int i = 0; i < CTL_SNAP_MAX + 10; i++)
        len += (size_t)snprintf(big + len, cap - len, "k%d: %d\n", i, i);
    CHECK_INT(ctl_snap_parse(s, big, len), CTL_SNAP_MAX);
    CHECK(ctl_snap_get(s, "k0") != NULL);
    CHECK(ctl_snap_get(s, "k319") != NULL);
    CHECK(ctl_snap_get(s, "k320") == NULL);
    free(big);
}

static const char info_before[] =
        "version: 0.1.0\nworkers: 2\nslots: 100\nconnections: 3\npreauth: 1\nlogin: 0\n"
        "relay: 2\nclosing: 0\nbackend_connections: 2\npipes_busy: 1\naccepted_total: 40\n"
        "refused_total: 0\ntimeouts_total: 0\nlogins_ok_total: 10\nlogins_failed_total: 4\n"
        "backend_errors_total: 0\nrefused_max_connections_total: 0\nrefused_per_ip_total: 0\n"
        "refused_per_user_total: 0\nrelayed_client_to_backend_bytes: 1000\n"
        "relayed_backend_to_client_bytes: 2000\ntls_handshakes_total: 5\n"
        "tls_resumed_total: 1\ntls_failed_total: 0\nbackend_tls_handshakes_total: 0\n"
        "backend_hosts: 3\nbackend_hosts_down: 0\nbackend_skipped_total: 0\n";

/* Two seconds later. */
static const char info_after[] =
        "version: 0.1.0\nworkers: 2\nslots: 100\nconnections: 5\npreauth: 0\nlogin: 1\n"
        "relay: 4\nclosing: 0\nbackend_connections: 5\npipes_busy: 0\naccepted_total: 50\n"
        "refused_total: 6\ntimeouts_total: 1\nlogins_ok_total: 30\nlogins_failed_total: 5\n"
        "backend_errors_total: 0\nrefused_max_connections_total: 1\nrefused_per_ip_total: 2\n"
        "refused_per_user_total: 3\nrelayed_client_to_backend_bytes: 1001000\n"
        "relayed_backend_to_client_bytes: 5002000\ntls_handshakes_total: 9\n"
        "tls_resumed_total: 3\ntls_failed_total: 0\nbackend_tls_handshakes_total: 0\n"
        "backend_hosts: 3\nbackend_hosts_down: 1\nbackend_skipped_total: 2\n";

/* The whole screen, as a person sees it in 80 columns. */
static void test_layout(void)
{
    parse(&snap_a, info_before);
    parse(&snap_b, info_after);
    size_t len = ctl_view_render(&snap_b, &snap_a, 2.0, 80, screen, sizeof screen);
    CHECK_INT(len, strlen(screen));
    const char *want =
            "forestgate 0.1.0   workers 2   slots 100\n"
            "\n"
            "connections    now 5   preauth 0   login 1   relay 4   closing 0   to backends 5\n"
            "connections/s  accepted 5.0   refused 3.0   timed out 0.5\n"
            "logons/s       ok 10.0   failed 0.5   refused by limits 3.0   backend errors 0.0\n"
            "logons total   ok 30   failed 5\n"
            "relay MB/s     client>backend 0.50   backend>client 2.50   pipes busy 0\n"
            "TLS/s          handshakes 2.0   resumed 1.0   failed 0.0   to backends 0.0\n"
            "backend hosts  known 3   down 1   skipped/s 1.0\n";
    CHECKF(strcmp(screen, want) == 0, "screen:\n%s\nwanted:\n%s", screen, want);
}

/* The first screen has no answer before it: rates are "-", the rest shows. */
static void test_first_screen(void)
{
    parse(&snap_b, info_after);
    ctl_view_render(&snap_b, NULL, 0, 80, screen, sizeof screen);
    CHECK(strcmp(line_of("logons/s"),
                 "logons/s       ok -   failed -   refused by limits -   backend errors -") == 0);
    CHECK(strcmp(line_of("logons total"), "logons total   ok 30   failed 5") == 0);
    CHECK(strcmp(line_of("relay MB/s"),
                 "relay MB/s     client>backend -   backend>client -   pipes busy 0") == 0);
    /* dt 0 is no interval either. */
    parse(&snap_a, info_before);
    ctl_view_render(&snap_b, &snap_a, 0, 80, screen, sizeof screen);
    CHECK(th_contains(screen, strlen(screen), "ok -"));
}

/* A counter lower than before (forestgate restarted): no negative rate. */
static void test_counter_went_back(void)
{
    parse(&snap_a, info_after);
    parse(&snap_b, info_before);
    ctl_view_render(&snap_b, &snap_a, 1.0, 80, screen, sizeof screen);
    CHECK(strstr(line_of("logons/s"), "ok -") != NULL);
    CHECK(!th_contains(screen, strlen(screen), "-1"));
}

/* Rows appear with their keys: no directory row without a directory; its
 * latency once show info has the sum and count; the throttle's store as text. */
static void test_rows_follow_keys(void)
{
    parse(&snap_a, info_before);
    parse(&snap_b, info_after);
    ctl_view_render(&snap_b, &snap_a, 1.0, 200, screen, sizeof screen);
    CHECK(!th_contains(screen, strlen(screen), "directory"));
    CHECK(!th_contains(screen, strlen(screen), "throttle"));
    CHECK(!th_contains(screen, strlen(screen), "latency"));

    parse(&snap_a, "directory_in_flight: 0\ndirectory_requests_total: 100\n"
                   "directory_timeouts_total: 0\n");
    parse(&snap_b, "directory_in_flight: 3\ndirectory_requests_total: 150\n"
                   "directory_timeouts_total: 0\nthrottle_store: redis\nthrottle_addresses: 7\n");
    ctl_view_render(&snap_b, &snap_a, 2.0, 200, screen, sizeof screen);
    CHECK(strcmp(line_of("directory"),
                 "directory      requests/s 25.0   in flight 3   timeouts/s 0.0") == 0);
    CHECK(strcmp(line_of("throttle"), "throttle       addresses 7   store redis") == 0);
    CHECK(!th_contains(screen, strlen(screen), "connections"));

    parse(&snap_a, "directory_requests_total: 100\ndirectory_latency_seconds_sum: 1.0\n"
                   "directory_latency_seconds_count: 100\n");
    parse(&snap_b, "directory_requests_total: 200\ndirectory_latency_seconds_sum: 1.5\n"
                   "directory_latency_seconds_count: 200\n");
    ctl_view_render(&snap_b, &snap_a, 1.0, 200, screen, sizeof screen);
    CHECK(strcmp(line_of("directory"), "directory      requests/s 100.0   latency ms 5.0") == 0);
    CHECK(!th_contains(screen, strlen(screen), "log lines"));
    /* Nothing timed in the interval: no mean. */
    ctl_view_render(&snap_b, &snap_b, 1.0, 200, screen, sizeof screen);
    CHECK(strcmp(line_of("directory"), "directory      requests/s 0.0   latency ms -") == 0);
}

/* The log files' lines, summed over the three files. */
static void test_log_row(void)
{
    parse(&snap_a, "log_event_written_total: 10\nlog_event_dropped_total: 0\n"
                   "log_imap_protocol_written_total: 100\nlog_imap_protocol_dropped_total: 0\n"
                   "log_pop3_protocol_written_total: 0\nlog_pop3_protocol_dropped_total: 0\n");
    parse(&snap_b, "log_event_written_total: 20\nlog_event_dropped_total: 1\n"
                   "log_imap_protocol_written_total: 200\nlog_imap_protocol_dropped_total: 4\n"
                   "log_pop3_protocol_written_total: 10\nlog_pop3_protocol_dropped_total: 0\n");
    ctl_view_render(&snap_b, &snap_a, 2.0, 80, screen, sizeof screen);
    CHECK(strcmp(line_of("log lines"), "log lines      written/s 60.0   dropped 5") == 0);
}

/* Relay MB/s: a trickle of bytes shows, none is 0.00. */
static void test_trickle(void)
{
    parse(&snap_a, "relayed_client_to_backend_bytes: 1000\n"
                   "relayed_backend_to_client_bytes: 1000\n");
    parse(&snap_b, "relayed_client_to_backend_bytes: 1300\n"
                   "relayed_backend_to_client_bytes: 1000\n");
    ctl_view_render(&snap_b, &snap_a, 1.0, 80, screen, sizeof screen);
    CHECK(strcmp(line_of("relay MB/s"),
                 "relay MB/s     client>backend 0.0003   backend>client 0.00") == 0);
}

/* A narrow terminal: fields go on to the next line under the first field,
 * and no line is wider than the width. */
static void test_wrap(void)
{
    parse(&snap_a, info_before);
    parse(&snap_b, info_after);
    ctl_view_render(&snap_b, &snap_a, 2.0, 50, screen, sizeof screen);
    CHECK(strstr(screen, "connections    now 5   preauth 0   login 1\n"
                         "               relay 4   closing 0   to backends 5\n") != NULL);
    for (const char *p = screen; *p;) {
        size_t len = strcspn(p, "\n");
        CHECKF(len <= 50, "line wider than 50: %.*s", (int)len, p);
        p += len + (p[len] == '\n');
    }
}

/* A small buffer: the text is cut, terminated, and its length told. */
static void test_small_buffer(void)
{
    char small[40];
    parse(&snap_b, info_after);
    size_t len = ctl_view_render(&snap_b, NULL, 0, 80, small, sizeof small);
    CHECK_INT(len, sizeof small - 1);
    CHECK_INT(strlen(small), sizeof small - 1);
    CHECK(memcmp(small, "forestgate 0.1.0", 16) == 0);
    CHECK_INT(ctl_view_render(&snap_b, NULL, 0, 80, small, 0), 0);
}

int main(void)
{
    test_parse();
    test_layout();
    test_first_screen();
    test_counter_went_back();
    test_rows_follow_keys();
    test_log_row();
    test_trickle();
    test_wrap();
    test_small_buffer();
    return th_finish("test_ctl_view");
}

/*
 * PROXY protocol v1 and v2: every case fed whole and byte at a time, ending
 * at a guard page, with bytes after the header that must stay unconsumed;
 * the v2 encoder round-tripped through the parser.
 */
#include "../../proto/proxy_proto.h"
#include "harness.h"

#include <arpa/inet.h>
#include <stdlib.h>

#define SIG "0D0A0D0A000D0A515549540A"

struct pp_case {
    const char *name;
    const char *text; /* v1: the bytes as they are */
    const char *hex;  /* v2: hex digits, spaces ignored */
    bool fix_len;     /* v2: bytes 14-15 = the length after byte 16 */
    int crc_at;       /* v2: offset of a CRC32C value to fill in; -crc_at: fill in a wrong one */
    enum pp_rc rc;
    const char *why;       /* PP_ERROR: part of the reason */
    size_t err_by;         /* PP_ERROR: the reason comes by this many bytes (0: any) */
    const char *src, *dst; /* PP_DONE, not local: as net_addr_str writes them */
    bool local;
    const char *authority, *ssl_version, *ssl_cipher, *ssl_cn;
    uint8_t unique_id_len;
    bool has_crc;
};

/* A v2 header for 127.0.0.1:4000 -> 127.0.0.2:143, then TLVs. */
#define V2_TCP4 SIG "21 11 0000 7F000001 7F000002 0FA0 008F"
#define V2_TCP6                                                                                    \
    SIG "21 21 0000 20010DB8000000000000000000000001 20010DB8000000000000000000000002 C350 03E1"

static const struct pp_case cases[] = {
        /* ---- v1 ---- */
        {"v1 TCP4", "PROXY TCP4 192.0.2.1 198.51.100.2 56324 143\r\n", .rc = PP_DONE,
         .src = "192.0.2.1:56324", .dst = "198.51.100.2:143"},
        {"v1 TCP6", "PROXY TCP6 2001:db8::1 2001:db8::2 65535 993\r\n", .rc = PP_DONE,
         .src = "[2001:db8::1]:65535", .dst = "[2001:db8::2]:993"},
        {"v1 port 0", "PROXY TCP4 192.0.2.1 192.0.2.2 0 0\r\n", .rc = PP_DONE, .src = "192.0.2.1:0",
         .dst = "192.0.2.2:0"},
        {"v1 longest",
         "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
         "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
         .rc = PP_DONE, .src = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
         .dst = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"},
        {"v1 UNKNOWN", "PROXY UNKNOWN\r\n", .rc = PP_DONE, .local = true},
        {"v1 UNKNOWN with addresses", "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", .rc = PP_DONE,
         .local = true},
        {"v1 incomplete", "PROXY TCP4 192.0.2.1 198.51.100.2 56324 14", .rc = PP_AGAIN},
        {"v1 only CR", "PROXY TCP4 192.0.2.1 198.51.100.2 56324 143\r", .rc = PP_AGAIN},
        {"v1 one byte", "P", .rc = PP_AGAIN},
        {"v1 UNKNOWN, 107 bytes",
         "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
         "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
         .rc = PP_DONE, .local = true},
        {"v1 108 bytes",
         "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
         "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 655350\r\n",
         .rc = PP_ERROR, .why = "within 107", .err_by = 107},
        {"v1 no CRLF at all",
         "PROXY UNKNOWN aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         .rc = PP_ERROR, .why = "within 107", .err_by = 107},
        {"v1 LF without CR", "PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n", .rc = PP_ERROR,
         .why = "CRLF"},
        {"v1 CR then junk", "PROXY TCP4 192.0.2.1 198.51.100.2 1 2\rX\n", .rc = PP_ERROR,
         .why = "CR not followed"},
        {"v1 lower case", "proxy TCP4 192.0.2.1 198.51.100.2 1 2\r\n", .rc = PP_ERROR,
         .why = "not a PROXY protocol header", .err_by = 1},
        {"v1 bad keyword", "PROXZ TCP4 192.0.2.1 198.51.100.2 1 2\r\n", .rc = PP_ERROR,
         .why = "PROXY ", .err_by = 5},
        {"v1 no space after PROXY", "PROXYTCP4 192.0.2.1 198.51.100.2 1 2\r\n", .rc = PP_ERROR,
         .err_by = 6},
        {"v1 TCP5", "PROXY TCP5 192.0.2.1 198.51.100.2 1 2\r\n", .rc = PP_ERROR, .why = "protocol"},
        {"v1 UDP4", "PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n", .rc = PP_ERROR, .why = "protocol"},
        {"v1 UNKNOWNX", "PROXY UNKNOWNX\r\n", .rc = PP_ERROR, .why = "protocol"},
        {"v1 two spaces", "PROXY TCP4 192.0.2.1  198.51.100.2 1 2\r\n", .rc = PP_ERROR,
         .why = "single spaces"},
        {"v1 trailing space", "PROXY TCP4 192.0.2.1 198.51.100.2 1 2 \r\n", .rc = PP_ERROR,
         .why = "single spaces"},
        {"v1 missing port", "PROXY TCP4 192.0.2.1 198.51.100.2 1\r\n", .rc = PP_ERROR,
         .why = "fields"},
        {"v1 extra field", "PROXY TCP4 192.0.2.1 198.51.100.2 1 2 3\r\n", .rc = PP_ERROR,
         .why = "fields"},
        {"v1 tab", "PROXY TCP4 192.0.2.1\t198.51.100.2 1 2\r\n", .rc = PP_ERROR, .why = "printable",
         .err_by = 21},
        {"v1 NUL", "PROXY TCP4 192.0.2.1\0 198.51.100.2 1 2\r\n", .rc = PP_ERROR,
         .why = "printable", .err_by = 21},
        {"v1 IPv6 in TCP4", "PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n", .rc = PP_ERROR,
         .why = "bad source address"},
        {"v1 IPv4 in TCP6", "PROXY TCP6 2001:db8::1 192.0.2.2 1 2\r\n", .rc = PP_ERROR,
         .why = "bad destination address"},
        {"v1 octet over 255", "PROXY TCP4 192.0.2.256 192.0.2.2 1 2\r\n", .rc = PP_ERROR,
         .why = "bad source address"},
        {"v1 leading zero octet", "PROXY TCP4 192.0.2.01 192.0.2.2 1 2\r\n", .rc = PP_ERROR,
         .why = "bad source address"},
        {"v1 three octets", "PROXY TCP4 192.0.2 192.0.2.2 1 2\r\n", .rc = PP_ERROR,
         .why = "bad source address"},
        {"v1 host name", "PROXY TCP4 localhost 192.0.2.2 1 2\r\n", .rc = PP_ERROR,
         .why = "bad source address"},
        {"v1 port over 65535", "PROXY TCP4 192.0.2.1 192.0.2.2 65536 2\r\n", .rc = PP_ERROR,
         .why = "bad source port"},
        {"v1 port plus", "PROXY TCP4 192.0.2.1 192.0.2.2 +1 2\r\n", .rc = PP_ERROR,
         .why = "bad source port"},
        {"v1 port minus", "PROXY TCP4 192.0.2.1 192.0.2.2 1 -2\r\n", .rc = PP_ERROR,
         .why = "bad destination port"},
        {"v1 port leading zero", "PROXY TCP4 192.0.2.1 192.0.2.2 01 2\r\n", .rc = PP_ERROR,
         .why = "bad source port"},
        {"v1 port junk", "PROXY TCP4 192.0.2.1 192.0.2.2 1 2x\r\n", .rc = PP_ERROR,
         .why = "bad destination port"},
        {"v1 port six digits", "PROXY TCP4 192.0.2.1 192.0.2.2 000001 2\r\n", .rc = PP_ERROR,
         .why = "bad source port"},
        {"v1 empty", "PROXY \r\n", .rc = PP_ERROR, .why = "protocol"},

        /* ---- neither ---- */
        {"IMAP command", "a001 CAPABILITY\r\n", .rc = PP_ERROR,
         .why = "not a PROXY protocol header", .err_by = 1},
        {"TLS ClientHello", NULL, "16030100a5010000a10303", .rc = PP_ERROR,
         .why = "not a PROXY protocol header", .err_by = 1},
        {"HTTP", "GET / HTTP/1.0\r\n\r\n", .rc = PP_ERROR, .err_by = 1},

        /* ---- v2 ---- */
        {"v2 TCP4", NULL, V2_TCP4, true, .rc = PP_DONE, .src = "127.0.0.1:4000",
         .dst = "127.0.0.2:143"},
        {"v2 TCP6", NULL, V2_TCP6, true, .rc = PP_DONE, .src = "[2001:db8::1]:50000",
         .dst = "[2001:db8::2]:993"},
        {"v2 LOCAL, UNSPEC", NULL, SIG "20 00 0000", .rc = PP_DONE, .local = true},
        {"v2 LOCAL with an address block", NULL, SIG "20 11 000C 7F000001 7F000002 0FA0 008F",
         .rc = PP_DONE, .local = true},
        {"v2 LOCAL ignores its family", NULL, SIG "20 FF 0002 0102", .rc = PP_DONE, .local = true},
        {"v2 AF_UNIX keeps the socket's address", NULL,
         SIG "21 31 00D8"
             "2F746D702F61000000000000000000000000000000000000000000000000000000000000"
             "000000000000000000000000000000000000000000000000000000000000000000000000"
             "000000000000000000000000000000000000000000000000000000000000000000000000"
             "2F746D702F62000000000000000000000000000000000000000000000000000000000000"
             "000000000000000000000000000000000000000000000000000000000000000000000000"
             "000000000000000000000000000000000000000000000000000000000000000000000000",
         .rc = PP_DONE, .local = true},
        {"v2 TLVs: AUTHORITY, NOOP, UNIQUE_ID, SSL, unknown", NULL,
         V2_TCP4
         " 02 0010 6D61696C2E6578616D706C652E6F7267"               /* mail.example.org */
         " 04 0003 000000"                                         /* NOOP */
         " 05 0004 DEADBEEF"                                       /* UNIQUE_ID */
         " 20 0028 01 00000000"                                    /* SSL: client, verify */
         "   21 0007 544C5376312E33"                               /* TLSv1.3 */
         "   23 0016 544C535F4145535F3132385F47434D5F534841323536" /* TLS_AES_128_GCM_SHA256 */
         " E0 0002 ABCD",                                          /* a type to come */
         true, .rc = PP_DONE, .src = "127.0.0.1:4000", .dst = "127.0.0.2:143",
         .authority = "mail.example.org", .ssl_version = "TLSv1.3",
         .ssl_cipher = "TLS_AES_128_GCM_SHA256", .unique_id_len = 4},
        {"v2 SSL with a CN", NULL,
         V2_TCP4 " 20 0011 03 00000000 22 0009 616C6963652E636F6D", /* alice.com */
         true, .rc = PP_DONE, .src = "127.0.0.1:4000", .dst = "127.0.0.2:143",
         .ssl_cn = "alice.com"},
        {"v2 CRC32C", NULL, V2_TCP4 " 03 0004 00000000 02 0001 61", true, 31, .rc = PP_DONE,
         .src = "127.0.0.1:4000", .dst = "127.0.0.2:143", .authority = "a", .has_crc = true},
        {"v2 CRC32C on TCP6", NULL, V2_TCP6 " 04 0000 03 0004 00000000", true, 58, .rc = PP_DONE,
         .src = "[2001:db8::1]:50000", .dst = "[2001:db8::2]:993", .has_crc = true},
        {"v2 bad CRC32C", NULL, V2_TCP4 " 03 0004 00000000 02 0001 61", true, -31, .rc = PP_ERROR,
         .why = "CRC32C mismatch"},
        {"v2 CRC32C of 3 bytes", NULL, V2_TCP4 " 03 0003 000000", true, .rc = PP_ERROR,
         .why = "not 4 bytes"},
        {"v2 two CRC32C", NULL, V2_TCP4 " 03 0004 00000000 03 0004 00000000", true, .rc = PP_ERROR,
         .why = "two CRC32C"},
        {"v2 incomplete signature", NULL, "0D0A0D0A000D0A5155", .rc = PP_AGAIN},
        {"v2 incomplete addresses", NULL, SIG "21 11 000C 7F000001 7F00", .rc = PP_AGAIN},
        {"v2 incomplete TLV", NULL, SIG "21 11 0013 7F000001 7F000002 0FA0 008F 02 0004 61",
         .rc = PP_AGAIN},
        {"v2 bad signature", NULL, "0D0A0D0A000D0A515549540B 21 11 000C", .rc = PP_ERROR,
         .why = "bad signature", .err_by = 12},
        {"v2 CR LF then junk", NULL, "0D0A41", .rc = PP_ERROR, .why = "bad signature", .err_by = 3},
        {"v2 version 1", NULL, SIG "11 11 000C 7F000001 7F000002 0FA0 008F", .rc = PP_ERROR,
         .why = "version", .err_by = 13},
        {"v2 version 3", NULL, SIG "31 11 000C 7F000001 7F000002 0FA0 008F", .rc = PP_ERROR,
         .why = "version", .err_by = 13},
        {"v2 command 2", NULL, SIG "22 11 000C 7F000001 7F000002 0FA0 008F", .rc = PP_ERROR,
         .why = "command", .err_by = 13},
        {"v2 PROXY with UNSPEC", NULL, SIG "21 00 0000", .rc = PP_ERROR, .why = "unspecified",
         .err_by = 14},
        {"v2 family 4", NULL, SIG "21 41 000C 7F000001 7F000002 0FA0 008F", .rc = PP_ERROR,
         .why = "family", .err_by = 14},
        {"v2 DGRAM", NULL, SIG "21 12 000C 7F000001 7F000002 0FA0 008F", .rc = PP_ERROR,
         .why = "STREAM", .err_by = 14},
        {"v2 transport UNSPEC", NULL, SIG "21 10 000C 7F000001 7F000002 0FA0 008F", .rc = PP_ERROR,
         .why = "STREAM", .err_by = 14},
        {"v2 INET too short", NULL, SIG "21 11 000B 7F000001 7F000002 0FA0 00", .rc = PP_ERROR,
         .why = "too short", .err_by = 16},
        {"v2 INET6 with INET's length", NULL, SIG "21 21 000C 7F000001 7F000002 0FA0 008F",
         .rc = PP_ERROR, .why = "too short", .err_by = 16},
        {"v2 oversized", NULL, SIG "21 11 05F1 7F000001", .rc = PP_ERROR, .why = "1536",
         .err_by = 16},
        {"v2 length 65535", NULL, SIG "21 11 FFFF", .rc = PP_ERROR, .why = "1536", .err_by = 16},
        {"v2 TLV header cut short", NULL, V2_TCP4 " 02 00", true, .rc = PP_ERROR,
         .why = "TLV overruns"},
        {"v2 TLV overruns the length", NULL, V2_TCP4 " 02 0005 6162", true, .rc = PP_ERROR,
         .why = "TLV overruns"},
        {"v2 empty AUTHORITY", NULL, V2_TCP4 " 02 0000", true, .rc = PP_ERROR, .why = "AUTHORITY"},
        {"v2 AUTHORITY with NUL", NULL, V2_TCP4 " 02 0003 610062", true, .rc = PP_ERROR,
         .why = "AUTHORITY"},
        {"v2 two AUTHORITY", NULL, V2_TCP4 " 02 0001 61 02 0001 62", true, .rc = PP_ERROR,
         .why = "two AUTHORITY"},
        {"v2 SSL too short", NULL, V2_TCP4 " 20 0004 01000000", true, .rc = PP_ERROR,
         .why = "SSL TLV shorter"},
        {"v2 SSL sub-TLV overruns", NULL, V2_TCP4 " 20 0009 01 00000000 21 0005 54", true,
         .rc = PP_ERROR, .why = "sub-TLV overruns"},
        {"v2 SSL sub-TLV overruns the SSL TLV, not the header", NULL,
         V2_TCP4 " 20 0009 01 00000000 21 0003 54 04 0002 4C53", true, .rc = PP_ERROR,
         .why = "sub-TLV overruns"},
        {"v2 two SSL", NULL, V2_TCP4 " 20 0005 0100000000 20 0005 0100000000", true, .rc = PP_ERROR,
         .why = "two SSL"},
        {"v2 empty UNIQUE_ID", NULL, V2_TCP4 " 05 0000", true, .rc = PP_ERROR, .why = "UNIQUE_ID"},
};

static size_t hex_decode(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;
    for (const char *s = hex; *s;) {
        if (*s == ' ') {
            s++;
            continue;
        }
        unsigned v;
        if (n == cap || sscanf(s, "%2x", &v) != 1)
            abort();
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

/* The case's header bytes, with its length and CRC filled in. */
static size_t case_bytes(const struct pp_case *tc, uint8_t *out, size_t cap)
{
    if (tc->text) {
        size_t n = strlen(tc->text);
        if (strcmp(tc->name, "v1 NUL") == 0) /* the NUL is part of the case */
            n += 1 + strlen(tc->text + n + 1);
        memcpy(out, tc->text, n);
        return n;
    }
    size_t n = hex_decode(tc->hex, out, cap);
    if (tc->fix_len) {
        out[14] = (uint8_t)((n - 16) >> 8);
        out[15] = (uint8_t)(n - 16);
    }
    if (tc->crc_at) {
        int at = abs(tc->crc_at);
        memset(out + at, 0, 4);
        uint32_t crc = pp_crc32c(0, out, n) ^ (tc->crc_at < 0 ? 1 : 0);
        for (int i = 0; i < 4; i++)
            out[at + i] = (uint8_t)(crc >> (24 - 8 * i));
    }
    return n;
}

/* Feeds buf in steps of step bytes (0: whole); the bytes after the header
 * are there from the start. Returns the final result; *fed is how many bytes
 * the parser had when it answered. */
static enum pp_rc feed(struct pp_parser *p, const uint8_t *buf, size_t n, size_t step,
                       struct pp_header *h, size_t *fed)
{
    enum pp_rc rc = PP_AGAIN;
    size_t have = step ? 0 : n;
    pp_init(p);
    for (;;) {
        if (step)
            have = have + step < n ? have + step : n;
        rc = pp_parse(p, buf, have, h);
        if (rc != PP_AGAIN || have == n)
            break;
    }
    *fed = have;
    return rc;
}

static void check_header(const struct pp_case *tc, const struct pp_header *h, size_t hlen)
{
    char s[64];
    CHECKF(h->len == hlen, "%s: consumed %u, header is %zu", tc->name, h->len, hlen);
    CHECKF(h->local == tc->local, "%s: local %d", tc->name, h->local);
    if (!tc->local) {
        net_addr_str(&h->src, s, sizeof s);
        CHECKF(strcmp(s, tc->src) == 0, "%s: src %s", tc->name, s);
        net_addr_str(&h->dst, s, sizeof s);
        CHECKF(strcmp(s, tc->dst) == 0, "%s: dst %s", tc->name, s);
    }
    CHECKF(strcmp(h->authority, tc->authority ? tc->authority : "") == 0, "%s: authority %s",
           tc->name, h->authority);
    CHECKF(strcmp(h->ssl_version, tc->ssl_version ? tc->ssl_version : "") == 0, "%s: version %s",
           tc->name, h->ssl_version);
    CHECKF(strcmp(h->ssl_cipher, tc->ssl_cipher ? tc->ssl_cipher : "") == 0, "%s: cipher %s",
           tc->name, h->ssl_cipher);
    CHECKF(strcmp(h->ssl_cn, tc->ssl_cn ? tc->ssl_cn : "") == 0, "%s: cn %s", tc->name, h->ssl_cn);
    CHECKF(h->unique_id_len == tc->unique_id_len, "%s: unique id %u", tc->name, h->unique_id_len);
    CHECKF(h->has_crc == tc->has_crc, "%s: crc %d", tc->name, h->has_crc);
}

/* One case, with tail bytes after it, fed in steps of step. */
static void run_case(const struct pp_case *tc, const char *tail, size_t step)
{
    uint8_t raw[2048];
    size_t hlen = case_bytes(tc, raw, sizeof raw);
    size_t n = hlen;
    if (tc->rc != PP_AGAIN) { /* an incomplete header must stay incomplete */
        memcpy(raw + n, tail, strlen(tail));
        n += strlen(tail);
    }
    char *buf = th_guard_copy(raw, n);
    struct pp_parser p;
    struct pp_header h;
    size_t fed;
    enum pp_rc rc = feed(&p, (const uint8_t *)buf, n, step, &h, &fed);

    CHECKF(rc == tc->rc, "%s (step %zu): rc %d, expected %d (%s)", tc->name, step, rc, tc->rc,
           p.why ? p.why : "");
    if (rc == PP_DONE && tc->rc == PP_DONE) {
        check_header(tc, &h, hlen);
        CHECKF(step != 1 || fed == hlen, "%s: answered after %zu bytes, header %zu", tc->name, fed,
               hlen);
    }
    if (rc == PP_ERROR && tc->rc == PP_ERROR) {
        CHECKF(p.why && (!tc->why || strstr(p.why, tc->why)), "%s: why \"%s\"", tc->name,
               p.why ? p.why : "(none)");
        CHECKF(step != 1 || !tc->err_by || fed <= tc->err_by, "%s: error after %zu bytes", tc->name,
               fed);
    }
    th_guard_free(buf, n);
}

static void test_cases(void)
{
    static const char *const tails[] = {"", "a1 CAPABILITY\r\n", "\x16\x03\x01\x00\xa5\x01"};
    for (size_t i = 0; i < FG_ARRAY_SIZE(cases); i++)
        for (size_t t = 0; t < FG_ARRAY_SIZE(tails); t++) {
            run_case(&cases[i], tails[t], 0);
            run_case(&cases[i], tails[t], 1);
            run_case(&cases[i], tails[t], 7);
        }
}

/* The same parser, a second header: pp_init starts afresh. */
static void test_reuse(void)
{
    struct pp_parser p;
    struct pp_header h;
    const char *a = "PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n";
    pp_init(&p);
    CHECK(pp_parse(&p, (const uint8_t *)a, strlen(a), &h) == PP_DONE);
    pp_init(&p);
    CHECK(pp_parse(&p, (const uint8_t *)"x", 1, &h) == PP_ERROR);
    pp_init(&p);
    CHECK(pp_parse(&p, (const uint8_t *)a, 0, &h) == PP_AGAIN);
    CHECK(pp_parse(&p, (const uint8_t *)a, strlen(a), &h) == PP_DONE);
    CHECK_INT(h.len, strlen(a));
}

static void test_crc32c(void)
{
    /* The check value of CRC-32C (RFC 3720, B.4). */
    CHECK(pp_crc32c(0, (const uint8_t *)"123456789", 9) == 0xE3069283u);
    uint32_t c = pp_crc32c(0, (const uint8_t *)"1234", 4);
    CHECK(pp_crc32c(c, (const uint8_t *)"56789", 5) == 0xE3069283u);
    uint8_t zeros[32] = {0};
    CHECK(pp_crc32c(0, zeros, 32) == 0x8A9136AAu);
}

static void addr(union net_addr *a, const char *binding)
{
    const char *why;
    if (net_parse_binding(binding, a, &why) != FG_OK)
        abort();
}

/* Encoded, then parsed: the same addresses come back, and the parser takes
 * exactly the encoder's bytes. */
static void round_trip(const char *src, const char *dst, const char *want_src, const char *want_dst)
{
    union net_addr s, d;
    uint8_t out[128];
    struct pp_parser p;
    struct pp_header h;
    char got[64];
    addr(&s, src);
    addr(&d, dst);
    size_t n = pp_encode_v2(out, sizeof out, &s, &d);
    CHECKF(n == 28 || n == 52, "%s: %zu bytes", src, n);
    memcpy(out + n, "a1 NOOP\r\n", 9);
    pp_init(&p);
    CHECKF(pp_parse(&p, out, n + 9, &h) == PP_DONE, "%s: %s", src, p.why);
    CHECK_INT(h.len, n);
    CHECK(!h.local);
    net_addr_str(&h.src, got, sizeof got);
    CHECKF(strcmp(got, want_src) == 0, "src %s, expected %s", got, want_src);
    net_addr_str(&h.dst, got, sizeof got);
    CHECKF(strcmp(got, want_dst) == 0, "dst %s, expected %s", got, want_dst);
    /* Fed byte at a time as well. */
    pp_init(&p);
    enum pp_rc rc = PP_AGAIN;
    size_t k = 0;
    while (rc == PP_AGAIN && k < n + 9)
        rc = pp_parse(&p, out, ++k, &h);
    CHECK(rc == PP_DONE && k == n && h.len == n);
}

static void test_encode(void)
{
    round_trip("203.0.113.7:50123", "127.0.0.1:10143", "203.0.113.7:50123", "127.0.0.1:10143");
    round_trip("[2001:db8::7]:1", "[::1]:993", "[2001:db8::7]:1", "[::1]:993");
    /* A mixed pair goes as IPv6, the IPv4 side mapped (net_addr_str shows
     * a mapped address as IPv4). */
    round_trip("[2001:db8::7]:2", "127.0.0.1:143", "[2001:db8::7]:2", "127.0.0.1:143");
    round_trip("198.51.100.1:3", "[::1]:143", "198.51.100.1:3", "[::1]:143");

    /* Unknown addresses: a LOCAL header, which keeps the socket's. */
    union net_addr none = {.sa = {.sa_family = AF_UNSPEC}}, d;
    uint8_t out[64];
    struct pp_parser p;
    struct pp_header h;
    addr(&d, "127.0.0.1:143");
    size_t n = pp_encode_v2(out, sizeof out, &none, &d);
    CHECK_INT(n, 16);
    pp_init(&p);
    CHECK(pp_parse(&p, out, n, &h) == PP_DONE && h.local && h.len == 16);
    /* Too little room: nothing written. */
    CHECK_INT(pp_encode_v2(out, 27, &d, &d), 0);
    CHECK_INT(pp_encode_v2(out, 28, &d, &d), 28);
}

int main(void)
{
    test_cases();
    test_reuse();
    test_crc32c();
    test_encode();
    return th_finish("test_proxy_proto");
}

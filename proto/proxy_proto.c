/*
 * The PROXY protocol parser and v2 encoder. See proxy_proto.h.
 *
 * Both versions are checked byte by byte as the bytes arrive, so that a
 * client that is not a load balancer is refused on its first wrong byte:
 * v1's "PROXY " and its character set, v2's signature, version, command and
 * family. The fields themselves are parsed once, when the header is whole:
 * v1's line once its CRLF is in, v2's addresses and TLVs once its length is.
 */
#include "proxy_proto.h"

#include <arpa/inet.h>
#include <string.h>

static const uint8_t pp_v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                      0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char pp_v1_sig[] = "PROXY ";

/* v2's command (low nibble of byte 12) and family (byte 13). */
enum {
    PP2_CMD_LOCAL = 0x0,
    PP2_CMD_PROXY = 0x1,
    PP2_AF_UNSPEC = 0x0,
    PP2_AF_INET = 0x1,
    PP2_AF_INET6 = 0x2,
    PP2_AF_UNIX = 0x3,
    PP2_STREAM = 0x1,
};

/* The address block's length for a v2 family. */
static const uint16_t pp_addr_len[4] = {0, 12, 36, 216};

static enum pp_rc pp_fail(struct pp_parser *p, const char *why)
{
    p->why = why;
    return PP_ERROR;
}

static uint16_t pp_be16(const uint8_t *b)
{
    return (uint16_t)(b[0] << 8 | b[1]);
}

static uint32_t pp_be32(const uint8_t *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

uint32_t pp_crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
    /* Bit by bit: a header is checked once per connection, at most 1.5 KB. */
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1)));
    }
    return ~crc;
}

/* ---- v1 ---- */

/* A port: 1 to 5 decimal digits, no sign, no leading zero, at most 65535. */
static bool pp_v1_port(const char *s, size_t n, uint16_t *port)
{
    uint32_t v = 0;
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *port = (uint16_t)v;
    return true;
}

/* An address of family af, as inet_pton reads it (which refuses leading
 * zeros in IPv4 and anything but the address). */
static bool pp_v1_addr(int af, const char *s, size_t n, union net_addr *a)
{
    char tmp[INET6_ADDRSTRLEN];
    if (n == 0 || n >= sizeof tmp)
        return false;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    memset(a, 0, sizeof *a);
    a->sa.sa_family = (sa_family_t)af;
    return inet_pton(af, tmp, af == AF_INET ? (void *)&a->v4.sin_addr : (void *)&a->v6.sin6_addr) ==
           1;
}

/* Splits "SRC DST SPORT DPORT" at single spaces into exactly 4 fields. */
static bool pp_v1_fields(const char *s, size_t n, const char *f[4], size_t fl[4])
{
    unsigned k = 0;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != ' ')
            continue;
        if (i == start || k == 4)
            return false; /* an empty field (two spaces, or one at an end), or a fifth */
        f[k] = s + start;
        fl[k++] = i - start;
        start = i + 1;
    }
    return k == 4;
}

/* The whole line after "PROXY ", without its CRLF. */
static enum pp_rc pp_v1_line(struct pp_parser *p, const char *s, size_t n, struct pp_header *h)
{
    const char *f[4];
    size_t fl[4];
    uint16_t sport, dport;

    if (n >= 7 && memcmp(s, "UNKNOWN", 7) == 0 && (n == 7 || s[7] == ' ')) {
        h->local = true; /* the rest of the line is to be ignored */
        return PP_DONE;
    }
    int af = n >= 5 && memcmp(s, "TCP4 ", 5) == 0   ? AF_INET
             : n >= 5 && memcmp(s, "TCP6 ", 5) == 0 ? AF_INET6
                                                    : AF_UNSPEC;
    if (af == AF_UNSPEC)
        return pp_fail(p, "v1 header: protocol is not TCP4, TCP6 or UNKNOWN");
    if (!pp_v1_fields(s + 5, n - 5, f, fl))
        return pp_fail(p, "v1 header: expected 4 fields after the protocol, single spaces");
    if (!pp_v1_addr(af, f[0], fl[0], &h->src))
        return pp_fail(p, "v1 header: bad source address");
    if (!pp_v1_addr(af, f[1], fl[1], &h->dst))
        return pp_fail(p, "v1 header: bad destination address");
    if (!pp_v1_port(f[2], fl[2], &sport))
        return pp_fail(p, "v1 header: bad source port");
    if (!pp_v1_port(f[3], fl[3], &dport))
        return pp_fail(p, "v1 header: bad destination port");
    net_addr_set_port(&h->src, sport);
    net_addr_set_port(&h->dst, dport);
    return PP_DONE;
}

/* Examines the bytes not seen yet; parses the line once its CRLF is in. */
static enum pp_rc pp_v1(struct pp_parser *p, const uint8_t *buf, size_t len, struct pp_header *h)
{
    for (; p->pos < len; p->pos++) {
        uint8_t c = buf[p->pos];
        if (p->pos < sizeof pp_v1_sig - 1) {
            if (c != (uint8_t)pp_v1_sig[p->pos])
                return pp_fail(p, "v1 header: does not start with \"PROXY \"");
            continue;
        }
        bool cr = buf[p->pos - 1] == '\r';
        if (c == '\n') {
            if (!cr)
                return pp_fail(p, "v1 header: line ends without CRLF");
            memset(h, 0, sizeof *h);
            h->len = (uint16_t)(p->pos + 1);
            h->version = 1;
            return pp_v1_line(p, (const char *)buf + 6, p->pos - 7, h);
        }
        if (cr)
            return pp_fail(p, "v1 header: CR not followed by LF");
        if (c != '\r' && (c < 0x20 || c > 0x7e))
            return pp_fail(p, "v1 header: a byte that is not printable ASCII");
        if (p->pos + 1 >= PP_V1_MAX)
            return pp_fail(p, "v1 header: no CRLF within 107 bytes");
    }
    return PP_AGAIN;
}

/* ---- v2 ---- */

/* Copies a TLV's string value; false when too long or holding a NUL. */
static bool pp_str(char *dst, size_t cap, const uint8_t *v, size_t n)
{
    if (n >= cap || memchr(v, 0, n))
        return false;
    memcpy(dst, v, n);
    dst[n] = 0;
    return true;
}

/* PP2_TYPE_SSL: client, verify, then sub-TLVs inside its own length. */
static enum pp_rc pp_v2_ssl(struct pp_parser *p, const uint8_t *v, size_t n, struct pp_header *h)
{
    if (h->has_ssl)
        return pp_fail(p, "v2 header: two SSL TLVs");
    if (n < 5)
        return pp_fail(p, "v2 header: SSL TLV shorter than 5 bytes");
    h->has_ssl = true;
    h->ssl_client = v[0];
    h->ssl_verify = pp_be32(v + 1);
    for (size_t off = 5; off < n;) {
        if (n - off < 3 || pp_be16(v + off + 1) > n - off - 3)
            return pp_fail(p, "v2 header: SSL sub-TLV overruns its TLV");
        uint8_t type = v[off];
        size_t sl = pp_be16(v + off + 1);
        const uint8_t *sv = v + off + 3;
        bool ok = true;
        if (type == PP2_SUBTYPE_SSL_VERSION)
            ok = pp_str(h->ssl_version, sizeof h->ssl_version, sv, sl);
        else if (type == PP2_SUBTYPE_SSL_CIPHER)
            ok = pp_str(h->ssl_cipher, sizeof h->ssl_cipher, sv, sl);
        else if (type == PP2_SUBTYPE_SSL_CN)
            ok = pp_str(h->ssl_cn, sizeof h->ssl_cn, sv, sl);
        if (!ok)
            return pp_fail(p, "v2 header: SSL sub-TLV too long or holding a NUL byte");
        off += 3 + sl;
    }
    return PP_DONE;
}

/* One TLV at buf + off (its value within the header, checked by the
 * caller). *crc_off is set to a CRC32C value's offset. */
static enum pp_rc pp_v2_tlv(struct pp_parser *p, const uint8_t *buf, size_t off,
                            struct pp_header *h, size_t *crc_off)
{
    uint8_t type = buf[off];
    size_t n = pp_be16(buf + off + 1);
    const uint8_t *v = buf + off + 3;

    switch (type) {
    case PP2_TYPE_AUTHORITY:
        if (h->authority[0])
            return pp_fail(p, "v2 header: two AUTHORITY TLVs");
        if (n == 0 || !pp_str(h->authority, sizeof h->authority, v, n))
            return pp_fail(p, "v2 header: AUTHORITY empty, longer than 255 bytes or holding a NUL");
        return PP_DONE;
    case PP2_TYPE_CRC32C:
        if (*crc_off)
            return pp_fail(p, "v2 header: two CRC32C TLVs");
        if (n != 4)
            return pp_fail(p, "v2 header: CRC32C TLV is not 4 bytes");
        *crc_off = off + 3;
        return PP_DONE;
    case PP2_TYPE_UNIQUE_ID:
        if (h->unique_id_len)
            return pp_fail(p, "v2 header: two UNIQUE_ID TLVs");
        if (n == 0 || n > PP_UNIQUE_ID_MAX)
            return pp_fail(p, "v2 header: UNIQUE_ID empty or longer than 128 bytes");
        memcpy(h->unique_id, v, n);
        h->unique_id_len = (uint8_t)n;
        return PP_DONE;
    case PP2_TYPE_SSL:
        return pp_v2_ssl(p, v, n, h);
    default:
        return PP_DONE; /* NOOP, ALPN, NETNS and types to come: skipped */
    }
}

/* The TLVs from off to the header's end, then the CRC32C if one came. */
static enum pp_rc pp_v2_tlvs(struct pp_parser *p, const uint8_t *buf, size_t off,
                             struct pp_header *h)
{
    size_t end = p->need, crc_off = 0;
    while (off < end) {
        if (end - off < 3 || pp_be16(buf + off + 1) > end - off - 3)
            return pp_fail(p, "v2 header: TLV overruns the header");
        if (pp_v2_tlv(p, buf, off, h, &crc_off) != PP_DONE)
            return PP_ERROR;
        off += 3 + (size_t)pp_be16(buf + off + 1);
    }
    if (!crc_off)
        return PP_DONE;
    /* The checksum covers the whole header with its own field as zeros. */
    static const uint8_t zero[4];
    uint32_t crc = pp_crc32c(0, buf, crc_off);
    crc = pp_crc32c(crc, zero, 4);
    crc = pp_crc32c(crc, buf + crc_off + 4, end - crc_off - 4);
    if (crc != pp_be32(buf + crc_off))
        return pp_fail(p, "v2 header: CRC32C mismatch");
    h->has_crc = true;
    return PP_DONE;
}

/* The whole header is in: addresses, then TLVs. */
static enum pp_rc pp_v2_body(struct pp_parser *p, const uint8_t *buf, struct pp_header *h)
{
    uint8_t fam = buf[13] >> 4;
    const uint8_t *a = buf + PP_V2_HDR;

    memset(h, 0, sizeof *h);
    h->len = p->need;
    h->version = 2;
    if ((buf[12] & 0x0f) == PP2_CMD_LOCAL) {
        h->local = true; /* the protocol block is to be skipped, TLVs and all */
        return PP_DONE;
    }
    if (fam == PP2_AF_INET) {
        h->src.v4.sin_family = h->dst.v4.sin_family = AF_INET;
        memcpy(&h->src.v4.sin_addr, a, 4);
        memcpy(&h->dst.v4.sin_addr, a + 4, 4);
        memcpy(&h->src.v4.sin_port, a + 8, 2);
        memcpy(&h->dst.v4.sin_port, a + 10, 2);
    } else if (fam == PP2_AF_INET6) {
        h->src.v6.sin6_family = h->dst.v6.sin6_family = AF_INET6;
        memcpy(&h->src.v6.sin6_addr, a, 16);
        memcpy(&h->dst.v6.sin6_addr, a + 16, 16);
        memcpy(&h->src.v6.sin6_port, a + 32, 2);
        memcpy(&h->dst.v6.sin6_port, a + 34, 2);
    } else {
        h->local = true; /* AF_UNIX: no address to stand for the client */
    }
    return pp_v2_tlvs(p, buf, PP_V2_HDR + (size_t)pp_addr_len[fam], h);
}

/* Byte 12, version and command; byte 13, family and transport. */
static enum pp_rc pp_v2_check(struct pp_parser *p, const uint8_t *buf, size_t i)
{
    if (i == 12) {
        if (buf[12] >> 4 != 2)
            return pp_fail(p, "v2 header: version is not 2");
        if ((buf[12] & 0x0f) > PP2_CMD_PROXY)
            return pp_fail(p, "v2 header: command is neither LOCAL nor PROXY");
        return PP_AGAIN;
    }
    if ((buf[12] & 0x0f) == PP2_CMD_LOCAL)
        return PP_AGAIN; /* LOCAL: the family is to be ignored */
    uint8_t fam = buf[13] >> 4, proto = buf[13] & 0x0f;
    if (fam == PP2_AF_UNSPEC)
        return pp_fail(p, "v2 header: PROXY command with an unspecified family");
    if (fam > PP2_AF_UNIX)
        return pp_fail(p, "v2 header: unknown address family");
    if (proto != PP2_STREAM)
        return pp_fail(p, "v2 header: transport is not STREAM");
    return PP_AGAIN;
}

static enum pp_rc pp_v2(struct pp_parser *p, const uint8_t *buf, size_t len, struct pp_header *h)
{
    for (; p->pos < len && p->pos < PP_V2_HDR; p->pos++) {
        size_t i = p->pos;
        if (i < sizeof pp_v2_sig && buf[i] != pp_v2_sig[i])
            return pp_fail(p, "v2 header: bad signature");
        if ((i == 12 || i == 13) && pp_v2_check(p, buf, i) == PP_ERROR)
            return PP_ERROR;
    }
    if (p->pos < PP_V2_HDR)
        return PP_AGAIN;
    if (!p->need) {
        size_t need = PP_V2_HDR + (size_t)pp_be16(buf + 14);
        if (need > PP_V2_MAX)
            return pp_fail(p, "v2 header: longer than 1536 bytes");
        uint8_t fam = buf[13] >> 4;
        if ((buf[12] & 0x0f) == PP2_CMD_PROXY && need < PP_V2_HDR + (size_t)pp_addr_len[fam])
            return pp_fail(p, "v2 header: too short for its address family");
        p->need = (uint16_t)need;
    }
    if (len < p->need)
        return PP_AGAIN;
    p->pos = p->need;
    return pp_v2_body(p, buf, h);
}

enum pp_rc pp_parse(struct pp_parser *p, const uint8_t *buf, size_t len, struct pp_header *h)
{
    if (p->version == 0) {
        if (len == 0)
            return PP_AGAIN;
        if (buf[0] != 'P' && buf[0] != pp_v2_sig[0])
            return pp_fail(p, "not a PROXY protocol header");
        p->version = buf[0] == 'P' ? 1 : 2;
    }
    return p->version == 1 ? pp_v1(p, buf, len, h) : pp_v2(p, buf, len, h);
}

/* ---- the encoder ---- */

/* An IPv4 address as IPv4-mapped IPv6, or the IPv6 address as it is. */
static void pp_v6_bytes(const union net_addr *a, uint8_t out[16])
{
    if (a->sa.sa_family == AF_INET6) {
        memcpy(out, &a->v6.sin6_addr, 16);
        return;
    }
    memset(out, 0, 10);
    out[10] = out[11] = 0xff;
    memcpy(out + 12, &a->v4.sin_addr, 4);
}

size_t pp_encode_v2(uint8_t *out, size_t cap, const union net_addr *src, const union net_addr *dst)
{
    bool known = (src->sa.sa_family == AF_INET || src->sa.sa_family == AF_INET6) &&
                 (dst->sa.sa_family == AF_INET || dst->sa.sa_family == AF_INET6);
    bool v4 = known && src->sa.sa_family == AF_INET && dst->sa.sa_family == AF_INET;
    uint16_t alen = !known ? 0 : v4 ? 12 : 36;

    if (cap < PP_V2_HDR + (size_t)alen)
        return 0;
    memcpy(out, pp_v2_sig, sizeof pp_v2_sig);
    out[12] = known ? 0x21 : 0x20; /* version 2, PROXY or LOCAL */
    out[13] = !known ? 0x00 : v4 ? 0x11 : 0x21;
    out[14] = 0;
    out[15] = (uint8_t)alen;
    uint8_t *a = out + PP_V2_HDR;
    if (v4) {
        memcpy(a, &src->v4.sin_addr, 4);
        memcpy(a + 4, &dst->v4.sin_addr, 4);
        memcpy(a + 8, &src->v4.sin_port, 2);
        memcpy(a + 10, &dst->v4.sin_port, 2);
    } else if (known) {
        pp_v6_bytes(src, a);
        pp_v6_bytes(dst, a + 16);
        uint16_t sp = htons(net_addr_port(src)), dp = htons(net_addr_port(dst));
        memcpy(a + 32, &sp, 2);
        memcpy(a + 34, &dp, 2);
    }
    return PP_V2_HDR + (size_t)alen;
}

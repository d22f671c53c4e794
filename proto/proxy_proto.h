/*
 * The PROXY protocol, versions 1 and 2 (HAProxy's proxy-protocol.txt): the
 * header a load balancer sends before anything else on a connection, naming
 * the client it relays for.
 *
 * The parser is pure and resumable, like the protocol parsers: the caller
 * hands it the bytes received so far, from the header's first byte, and
 * calls again with more when it answers PP_AGAIN; bytes already examined are
 * not examined again, and the parser never reads a socket or allocates.
 * It tells v1 from v2 by the first byte, and answers PP_ERROR as soon as a
 * byte cannot belong to a header, so garbage is refused at once rather than
 * at the timeout. On PP_DONE, h->len says how many bytes the header took:
 * what follows (a TLS ClientHello, a pipelined command) belongs to the
 * session and is not touched.
 *
 * The encoder writes a v2 header, for forestgate's own connections to a
 * backend that expects one.
 */
#ifndef FG_PROXY_PROTO_H
#define FG_PROXY_PROTO_H

#include "../base/net.h"

#define PP_V1_MAX        107  /* "PROXY TCP6 <39> <39> 65535 65535\r\n" */
#define PP_V2_HDR        16   /* signature, version and command, family, length */
#define PP_V2_MAX        1536 /* the whole v2 header, TLVs included: larger is refused */
#define PP_AUTHORITY_MAX 255  /* a DNS host name */
#define PP_UNIQUE_ID_MAX 128  /* proxy-protocol.txt: "MUST NOT exceed 128 bytes" */
#define PP_SSL_STR_MAX   63   /* SSL version, cipher */
#define PP_SSL_CN_MAX    255

/* v2's TLV types (section 2.2). */
enum pp2_type {
    PP2_TYPE_ALPN = 0x01,
    PP2_TYPE_AUTHORITY = 0x02,
    PP2_TYPE_CRC32C = 0x03,
    PP2_TYPE_NOOP = 0x04,
    PP2_TYPE_UNIQUE_ID = 0x05,
    PP2_TYPE_SSL = 0x20,
    PP2_SUBTYPE_SSL_VERSION = 0x21,
    PP2_SUBTYPE_SSL_CN = 0x22,
    PP2_SUBTYPE_SSL_CIPHER = 0x23,
    PP2_SUBTYPE_SSL_SIG_ALG = 0x24,
    PP2_SUBTYPE_SSL_KEY_ALG = 0x25,
    PP2_TYPE_NETNS = 0x30,
};

/* PP2_TYPE_SSL's client field. */
enum pp2_client {
    PP2_CLIENT_SSL = 0x01,       /* the client connected over TLS */
    PP2_CLIENT_CERT_CONN = 0x02, /* it sent a certificate on this connection */
    PP2_CLIENT_CERT_SESS = 0x04, /* it sent one on this TLS session */
};

enum pp_rc {
    PP_DONE,  /* a header is complete: see struct pp_header */
    PP_AGAIN, /* every byte so far may start a header: call again with more */
    PP_ERROR, /* not a valid header: p->why says why */
};

/* Where a parse is; set up with pp_init. */
struct pp_parser {
    uint16_t pos;    /* bytes examined */
    uint16_t need;   /* v2: the header's whole length, once known */
    uint8_t version; /* 0 until the first byte decides, then 1 or 2 */
    const char *why; /* after PP_ERROR: a static reason for the log */
};

/* A parsed header. The strings are NUL-terminated; empty when absent. */
struct pp_header {
    uint16_t len; /* bytes the header took: the caller consumes exactly these */
    uint8_t version;
    bool local;              /* v2 LOCAL, v1 UNKNOWN, v2 AF_UNIX: keep the socket's own addresses */
    union net_addr src, dst; /* the client, and the address it connected to (unless local) */
    bool has_crc;            /* a PP2_TYPE_CRC32C was present and matched */
    bool has_ssl;            /* a PP2_TYPE_SSL was present */
    uint8_t ssl_client;      /* enum pp2_client bits */
    uint32_t ssl_verify;     /* 0: the client's certificate verified */
    char ssl_version[PP_SSL_STR_MAX + 1];
    char ssl_cipher[PP_SSL_STR_MAX + 1];
    char ssl_cn[PP_SSL_CN_MAX + 1];
    char authority[PP_AUTHORITY_MAX + 1];
    uint8_t unique_id[PP_UNIQUE_ID_MAX];
    uint8_t unique_id_len;
};

static inline void pp_init(struct pp_parser *p)
{
    p->pos = 0;
    p->need = 0;
    p->version = 0;
    p->why = NULL;
}

/*
 * Parses buf[0 .. len), the bytes received so far from the header's start
 * (the same bytes as before, and more). PP_DONE fills *h (written only
 * then); PP_AGAIN asks for more; PP_ERROR sets p->why. After PP_DONE or PP_ERROR, pp_init before
 * another parse.
 */
enum pp_rc pp_parse(struct pp_parser *p, const uint8_t *buf, size_t len, struct pp_header *h);

/*
 * Writes a v2 PROXY header for a TCP connection from src to dst into out:
 * AF_INET when both are IPv4, AF_INET6 otherwise (an IPv4 address becomes
 * IPv4-mapped), and LOCAL when either is neither. Returns the bytes written
 * (at most PP_V2_HDR + 36), or 0 when cap is too small.
 */
size_t pp_encode_v2(uint8_t *out, size_t cap, const union net_addr *src, const union net_addr *dst);

/* CRC-32C (Castagnoli), as PP2_TYPE_CRC32C uses it: crc is 0 to start, or a
 * previous result to go on. */
uint32_t pp_crc32c(uint32_t crc, const uint8_t *p, size_t n);

#endif

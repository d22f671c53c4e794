/*
 * libFuzzer target: the LDAP filter escaper (directory/ldap_filter.c), which
 * stands between a typed name (or a SID) and the directory's search filter.
 *
 * The first byte picks the room given to the escaper, the rest is the value.
 * The escaped value must hold no unescaped * ( ) \ nor a NUL, nor any byte
 * outside printable ASCII; and the filter (cn=ESCAPED), read by a reference
 * RFC 4515 reader written here, must be one equality match whose value is
 * exactly the input. A value that does not fit is refused whole (0), never
 * cut, and the escaper writes nothing past the room it was given.
 */
#include "../../directory/ldap_filter.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool attr_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == ';' || c == '.';
}

/*
 * Reads f (n bytes) as RFC 4515's  filter = "(" item ")". Returns true when
 * it is one equality match (attr=value, value without an unescaped '*', which
 * would make it a presence or substring match), with the value unescaped
 * into val. A '(' ')' or NUL in the value, a bad escape, or anything after
 * the closing ')' fails.
 */
static bool reference_equality(const char *f, size_t n, uint8_t *val, size_t *vn)
{
    size_t i = 1, o = 0;
    if (n < 4 || f[0] != '(' || f[n - 1] != ')')
        return false;
    while (i < n && attr_char(f[i]))
        i++;
    if (i == 1 || f[i] != '=') /* "~=", ">=", "<=", ":=" are other matches */
        return false;
    for (i++; i < n - 1; i++) {
        char c = f[i];
        if (c == '*' || c == '(' || c == ')' || c == 0)
            return false;
        if (c == '\\') {
            if (i + 2 >= n - 1 || hex_value(f[i + 1]) < 0 || hex_value(f[i + 2]) < 0)
                return false;
            val[o++] = (uint8_t)(hex_value(f[i + 1]) << 4 | hex_value(f[i + 2]));
            i += 2;
        } else {
            val[o++] = (uint8_t)c;
        }
    }
    *vn = o;
    return true;
}

/* Every byte printable ASCII, every '\' the start of two hex digits. */
static void check_escaped(const char *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)e[i];
        FZ_CHECK(c >= 0x21 && c <= 0x7e && c != '*' && c != '(' && c != ')');
        if (c == '\\') {
            FZ_CHECK(i + 2 < n && hex_value(e[i + 1]) >= 0 && hex_value(e[i + 2]) >= 0);
            i += 2;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *v = data + 1;
    size_t n = size - 1, full = 3 * n + 1;

    /* With all the room it can need: the reference. */
    char *big = fz_alloc(full);
    size_t len = ldap_filter_escape(v, n, big, full);
    FZ_CHECK(len < full && big[len] == 0);
    FZ_CHECK(n == 0 || len >= n);
    check_escaped(big, len);

    char *filter = fz_alloc(len + 5);
    memcpy(filter, "(cn=", 4);
    memcpy(filter + 4, big, len);
    filter[len + 4] = ')';
    uint8_t *val = fz_alloc(len + 1);
    size_t vn = 0;
    FZ_CHECK(reference_equality(filter, len + 5, val, &vn));
    FZ_CHECK(vn == n && memcmp(val, v, n) == 0);
    free(val);
    free(filter);

    /* With the room the first byte gives: all of it, or nothing. */
    size_t cap = data[0] == 0xff ? len + 1 : (size_t)data[0] % (len + 2);
    char *out = fz_alloc(cap);
    size_t got = ldap_filter_escape(v, n, out, cap);
    if (len + 1 <= cap)
        FZ_CHECK(got == len && memcmp(out, big, len + 1) == 0);
    else
        FZ_CHECK(got == 0);
    free(out);
    free(big);
    return 0;
}

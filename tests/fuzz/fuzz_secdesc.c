/*
 * libFuzzer target: the mailbox security descriptor's reader
 * (directory/secdesc.c), which reads bytes any LDAP server may send.
 *
 * The first byte splits the input: that many bytes (mod the size) are the
 * token, the rest the descriptor. sd_check must stay inside both (ASan) and
 * agree with a second reading: a reference written here, straight from
 * [MS-DTYP] 2.4.6 with no shared code, that walks the same ACEs and says
 * which decides. The token's SIDs are also looked up one by one.
 */
#include "../../directory/secdesc.h"
#include "fuzz_util.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static bool ref_in_token(const uint8_t *t, size_t tl, const uint8_t *sid, size_t n)
{
    for (size_t off = 0; off + 8 <= tl;) {
        if (t[off] != 1 || t[off + 1] > 15)
            return false;
        size_t k = 8 + 4u * t[off + 1];
        if (off + k > tl)
            return false;
        if (k == n && memcmp(t + off, sid, n) == 0)
            return true;
        off += k;
    }
    return false;
}

/* The reference: -1 malformed, 0 none, 1 allowed, 2 denied. */
static int ref_check(const uint8_t *sd, size_t len, const uint8_t *t, size_t tl)
{
    if (len < 20 || sd[0] != 1)
        return -1;
    unsigned control = sd[2] | sd[3] << 8;
    if (!(control & 0x8000))
        return -1;
    size_t dacl = le32(sd + 16);
    if (!(control & 4) || dacl == 0)
        return 0;
    if (dacl < 20 || dacl + 8 > len)
        return -1;
    size_t acl_size = sd[dacl + 2] | sd[dacl + 3] << 8, count = sd[dacl + 4] | sd[dacl + 5] << 8;
    if ((sd[dacl] != 2 && sd[dacl] != 4) || acl_size < 8 || dacl + acl_size > len)
        return -1;
    const uint8_t *acl = sd + dacl;
    size_t off = 8;
    for (size_t i = 0; i < count; i++) {
        if (off + 4 > acl_size)
            return -1;
        size_t ace_size = acl[off + 2] | acl[off + 3] << 8;
        if (ace_size < 4 || off + ace_size > acl_size)
            return -1;
        const uint8_t *a = acl + off;
        unsigned type = a[0];
        off += ace_size;
        if (type != 0 && type != 1 && type != 5 && type != 6)
            continue;
        if (ace_size < 8)
            return -1;
        uint32_t mask = le32(a + 4);
        size_t p = 8;
        bool prop = false;
        if (type >= 5) {
            if (ace_size < 12)
                return -1;
            uint32_t of = le32(a + 8);
            p = 12 + ((of & 1) ? 16 : 0) + ((of & 2) ? 16 : 0);
            prop = of & 1;
            if (p > ace_size)
                return -1;
        }
        if (p + 8 > ace_size || a[p] != 1 || a[p + 1] > 15 || p + 8 + 4u * a[p + 1] > ace_size)
            return -1;
        size_t sid_len = 8 + 4u * a[p + 1];
        if ((a[1] & 8) || prop || !(mask & 0x10000001u) || !ref_in_token(t, tl, a + p, sid_len))
            continue;
        return type == 0 || type == 5 ? 1 : 2;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t tl = size > 1 ? data[0] % size : 0;
    if (tl > size - 1)
        tl = size - 1;
    const uint8_t *token = data + 1, *sd = data + 1 + tl;
    size_t len = size - 1 - tl;
    /* copies so that ASan sees each end exactly */
    uint8_t *t = (uint8_t *)fz_dup(token, tl), *s = (uint8_t *)fz_dup(sd, len);
    enum sd_access got = sd_check(s, len, t, tl, SD_RIGHT_FULL_ACCESS);
    int want = ref_check(s, len, t, tl);
    static const enum sd_access map[] = {SD_NONE, SD_ALLOWED, SD_DENIED};
    FZ_CHECK(want < 0 ? got == SD_MALFORMED : got == map[want]);
    for (size_t off = 0, n; (n = sd_sid_len(t + off, tl - off)) > 0; off += n)
        FZ_CHECK(sd_token_has(t, tl, t + off, n));
    free(t);
    free(s);
    return 0;
}

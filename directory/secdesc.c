/*
 * Security descriptors: see secdesc.h. Layouts from [MS-DTYP] 2.4.6
 * (SECURITY_DESCRIPTOR, self-relative), 2.4.5 (ACL), 2.4.4 (ACEs), 2.4.2.2
 * (SID). Integers are little-endian.
 */
#include "secdesc.h"

#include <string.h>

#define SD_HEADER_LEN      20
#define SD_SELF_RELATIVE   0x8000u
#define SD_DACL_PRESENT    0x0004u
#define ACL_HEADER_LEN     8
#define ACE_HEADER_LEN     4
#define ACE_INHERIT_ONLY   0x08u
#define ACE_ALLOWED        0x00u
#define ACE_DENIED         0x01u
#define ACE_ALLOWED_OBJECT 0x05u
#define ACE_DENIED_OBJECT  0x06u
#define ACE_OBJECT_TYPE    0x1u /* object ACE: ObjectType present */
#define ACE_INHERITED_TYPE 0x2u /* object ACE: InheritedObjectType present */
#define GENERIC_ALL        0x10000000u

static uint16_t sd_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t sd_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

size_t sd_sid_len(const uint8_t *p, size_t avail)
{
    if (avail < 8 || p[0] != 1 || p[1] > 15)
        return 0;
    size_t n = 8 + 4 * (size_t)p[1];
    return n <= avail ? n : 0;
}

bool sd_token_has(const uint8_t *token, size_t token_len, const uint8_t *sid, size_t sid_len)
{
    size_t off = 0, n;
    while ((n = sd_sid_len(token + off, token_len - off)) > 0) {
        if (n == sid_len && memcmp(token + off, sid, n) == 0)
            return true;
        off += n;
    }
    return false;
}

/* One ACE's say on the right: SD_NONE when it does not count for the token,
 * SD_MALFORMED when its body does not parse. */
static enum sd_access sd_ace(const uint8_t *ace, size_t size, const uint8_t *token,
                             size_t token_len, uint32_t right)
{
    uint8_t type = ace[0], flags = ace[1];
    size_t off = ACE_HEADER_LEN;
    if (type != ACE_ALLOWED && type != ACE_DENIED && type != ACE_ALLOWED_OBJECT &&
        type != ACE_DENIED_OBJECT)
        return SD_NONE; /* audit, alarm, callback, label: no say on access here */
    if (size < off + 4)
        return SD_MALFORMED;
    uint32_t mask = sd_u32(ace + off);
    off += 4;
    bool object = type == ACE_ALLOWED_OBJECT || type == ACE_DENIED_OBJECT;
    bool per_property = false;
    if (object) {
        if (size < off + 4)
            return SD_MALFORMED;
        uint32_t oflags = sd_u32(ace + off);
        off += 4;
        per_property = oflags & ACE_OBJECT_TYPE;
        off += (oflags & ACE_OBJECT_TYPE ? 16 : 0) + (oflags & ACE_INHERITED_TYPE ? 16 : 0);
        if (size < off)
            return SD_MALFORMED;
    }
    size_t sid_len = sd_sid_len(ace + off, size - off);
    if (sid_len == 0)
        return SD_MALFORMED;
    if ((flags & ACE_INHERIT_ONLY) || per_property || !(mask & (right | GENERIC_ALL)) ||
        !sd_token_has(token, token_len, ace + off, sid_len))
        return SD_NONE;
    return type == ACE_ALLOWED || type == ACE_ALLOWED_OBJECT ? SD_ALLOWED : SD_DENIED;
}

enum sd_access sd_check(const uint8_t *sd, size_t len, const uint8_t *token, size_t token_len,
                        uint32_t right)
{
    if (!sd || len < SD_HEADER_LEN || sd[0] != 1)
        return SD_MALFORMED;
    uint16_t control = sd_u16(sd + 2);
    uint32_t dacl = sd_u32(sd + 16);
    if (!(control & SD_SELF_RELATIVE))
        return SD_MALFORMED; /* an absolute descriptor holds pointers, not offsets */
    if (!(control & SD_DACL_PRESENT) || dacl == 0)
        return SD_NONE;
    if (dacl < SD_HEADER_LEN || dacl > len || len - dacl < ACL_HEADER_LEN)
        return SD_MALFORMED;
    const uint8_t *acl = sd + dacl;
    uint16_t acl_size = sd_u16(acl + 2), count = sd_u16(acl + 4);
    if ((acl[0] != 2 && acl[0] != 4) || acl_size < ACL_HEADER_LEN || acl_size > len - dacl)
        return SD_MALFORMED;
    size_t off = ACL_HEADER_LEN;
    for (unsigned i = 0; i < count; i++) {
        if (acl_size - off < ACE_HEADER_LEN)
            return SD_MALFORMED;
        uint16_t size = sd_u16(acl + off + 2);
        if (size < ACE_HEADER_LEN || size > acl_size - off)
            return SD_MALFORMED;
        enum sd_access a = sd_ace(acl + off, size, token, token_len, right);
        if (a != SD_NONE)
            return a;
        off += size;
    }
    return SD_NONE;
}

/*
 * Full Access from a mailbox's security descriptor (directory/secdesc.c).
 *
 * The descriptors are Samba's: each was written by Samba's own SDDL reader
 * and NDR encoder (samba.dcerpc.security.descriptor.from_sddl, ndr_pack;
 * Samba 4.17) from the SDDL beside it, the form a Samba or Windows DC
 * stores. Each is read whole, through a guard page (a read past its end
 * faults), then cut at every length and with every byte flipped: nothing
 * reads outside, and a damaged descriptor never grants what it did not.
 */
#include "../../directory/secdesc.h"
#include "harness.h"

#include <stdlib.h>
#include <string.h>

#define DOM "S-1-5-21-1004336348-1177238915-682003330"

struct vec {
    const char *name, *sddl, *hex;
};

/* U = DOM-1103, G = DOM-1201, D = DOM-1202 */
static const struct vec V[] = {
        {"exchange", "O:SYG:SYD:(A;CI;CCRC;;;PS)(A;CI;CCRC;;;U)",
         "010004801400000020000000000000002c0000000101000000000005120000000101000000000005120000000"
         "400400002000000000214000100020001010000000000050a0000000002240001000200010500000000000515"
         "000000dcf4dc3b833d2b46828ba6284f040000"},
        {"deny_first", "O:SYG:SYD:(D;;CC;;;D)(A;;CCRC;;;G)",
         "010004801400000020000000000000002c0000000101000000000005120000000101000000000005120000000"
         "4005000020000000100240001000000010500000000000515000000dcf4dc3b833d2b46828ba628b204000000"
         "00240001000200010500000000000515000000dcf4dc3b833d2b46828ba628b1040000"},
        {"inherited_deny_after_allow", "O:SYG:SYD:(A;;CC;;;U)(D;ID;CC;;;U)",
         "010004801400000020000000000000002c0000000101000000000005120000000101000000000005120000000"
         "4005000020000000000240001000000010500000000000515000000dcf4dc3b833d2b46828ba6284f04000001"
         "10240001000000010500000000000515000000dcf4dc3b833d2b46828ba6284f040000"},
        {"inherit_only", "O:SYG:SYD:(A;IO;CC;;;U)",
         "010004801400000020000000000000002c0000000101000000000005120000000101000000000005120000000"
         "4002c00010000000008240001000000010500000000000515000000dcf4dc3b833d2b46828ba6284f040000"},
        {"object_type", "O:SYG:SYD:(OA;;CC;bf967aba-0de6-11d0-a285-00aa003049e2;;U)",
         "010004801400000020000000000000002c0000000101000000000005120000000101000000000005120000000"
         "400400001000000050038000100000001000000ba7a96bfe60dd011a28500aa003049e2010500000000000515"
         "000000dcf4dc3b833d2b46828ba6284f040000"},
        {"object_inherited_type", "O:SYG:SYD:(OA;;CC;;bf967aba-0de6-11d0-a285-00aa003049e2;U)",
         "010004801400000020000000000000002c0000000101000000000005120000000101000000000005120000000"
         "400400001000000050038000100000002000000ba7a96bfe60dd011a28500aa003049e2010500000000000515"
         "000000dcf4dc3b833d2b46828ba6284f040000"},
        {"generic_all", "O:SYG:SYD:(A;;GA;;;U)",
         "010004801400000020000000000000002c0000000101000000000005120000000101000000000005120000000"
         "4002c00010000000000240000000010010500000000000515000000dcf4dc3b833d2b46828ba6284f040000"},
        {"read_control_only", "O:SYG:SYD:(A;;RC;;;U)",
         "010004801400000020000000000000002c0000000101000000000005120000000101000000000005120000000"
         "4002c00010000000000240000000200010500000000000515000000dcf4dc3b833d2b46828ba6284f040000"},
        {"no_dacl", "O:SYG:SY",
         "010000801400000020000000000000000000000001010000000000051200000001010000000000051200000"
         "0"},
        {"everyone", "O:SYG:SYD:(A;;CC;;;WD)",
         "010004801400000020000000000000002c0000000101000000000005120000000101000000000005120000000"
         "4001c00010000000000140001000000010100000000000100000000"},
        {"audit_then_allow", "O:SYG:SYD:(A;;CC;;;U)S:(AU;SA;CC;;;WD)",
         "0100148014000000200000002c000000480000000101000000000005120000000101000000000005120000000"
         "4"
         "001c0001000000024014000100000001010000000000010000000004002c00010000000000240001000000010"
         "5"
         "00000000000515000000dcf4dc3b833d2b46828ba6284f040000"},
};

static const struct vec *vec(const char *name)
{
    for (size_t i = 0; i < sizeof V / sizeof V[0]; i++)
        if (strcmp(V[i].name, name) == 0)
            return &V[i];
    abort();
}

static size_t unhex(const char *h, uint8_t *out)
{
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned b;
        sscanf(h + 2 * i, "%2x", &b);
        out[i] = (uint8_t)b;
    }
    return n;
}

/* Appends the binary form of a SID string ("S-1-5-21-...") to a token. */
static size_t add_sid(uint8_t *token, size_t len, const char *text)
{
    uint8_t *p = token + len;
    unsigned long long auth;
    const char *s = text + 4; /* past "S-1-" */
    char *end;
    auth = strtoull(s, &end, 10);
    unsigned n = 0;
    uint32_t subs[15];
    while (*end == '-' && n < 15) {
        subs[n++] = (uint32_t)strtoul(end + 1, &end, 10);
    }
    p[0] = 1;
    p[1] = (uint8_t)n;
    for (int i = 0; i < 6; i++)
        p[2 + i] = (uint8_t)(auth >> (8 * (5 - i)));
    for (unsigned i = 0; i < n; i++)
        for (int k = 0; k < 4; k++)
            p[8 + 4 * i + k] = (uint8_t)(subs[i] >> (8 * k));
    return len + 8 + 4 * n;
}

static enum sd_access check(const char *name, const char *const *sids)
{
    uint8_t sd[512], token[512];
    size_t n = unhex(vec(name)->hex, sd), tl = 0;
    for (; *sids; sids++)
        tl = add_sid(token, tl, *sids);
    char *g = th_guard_copy(sd, n);
    enum sd_access a = sd_check((const uint8_t *)g, n, token, tl, SD_RIGHT_FULL_ACCESS);
    th_guard_free(g, n);
    return a;
}

#define T(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_decisions(void)
{
    const char *U = DOM "-1103", *G = DOM "-1201", *D = DOM "-1202", *X = DOM "-1300";
    CHECK_INT(check("exchange", T(U)), SD_ALLOWED);
    CHECK_INT(check("exchange", T(X)), SD_NONE);
    CHECK_INT(check("exchange", T("S-1-5-10")), SD_ALLOWED); /* SELF: the mailbox's own */
    /* a deny for the account takes away what its group is given */
    CHECK_INT(check("deny_first", T(G)), SD_ALLOWED);
    CHECK_INT(check("deny_first", T(G, D)), SD_DENIED);
    CHECK_INT(check("deny_first", T(D)), SD_DENIED);
    /* Windows' order: an explicit allow before an inherited deny stands */
    CHECK_INT(check("inherited_deny_after_allow", T(U)), SD_ALLOWED);
    CHECK_INT(check("inherit_only", T(U)), SD_NONE);
    CHECK_INT(check("object_type", T(U)), SD_NONE); /* one property's right, not the mailbox */
    CHECK_INT(check("object_inherited_type", T(U)), SD_ALLOWED);
    CHECK_INT(check("generic_all", T(U)), SD_ALLOWED);
    CHECK_INT(check("read_control_only", T(U)), SD_NONE);
    CHECK_INT(check("no_dacl", T(U)), SD_NONE);
    CHECK_INT(check("everyone", T(X, "S-1-1-0")), SD_ALLOWED);
    CHECK_INT(check("everyone", T(X)), SD_NONE);
    CHECK_INT(check("audit_then_allow", T(U)), SD_ALLOWED); /* a SACL has no say */
    /* an empty token is nobody */
    uint8_t sd[512];
    size_t n = unhex(vec("everyone")->hex, sd);
    CHECK_INT(sd_check(sd, n, NULL, 0, SD_RIGHT_FULL_ACCESS), SD_NONE);
    CHECK_INT(sd_check(NULL, 0, NULL, 0, SD_RIGHT_FULL_ACCESS), SD_MALFORMED);
}

/* Cut short anywhere, a descriptor is malformed (or, before its DACL's
 * offset is reached, still malformed): it never grants. */
static void test_truncated(void)
{
    uint8_t token[64];
    size_t tl = add_sid(token, 0, DOM "-1103");
    tl = add_sid(token, tl, "S-1-1-0");
    for (size_t v = 0; v < sizeof V / sizeof V[0]; v++) {
        uint8_t sd[512];
        size_t n = unhex(V[v].hex, sd);
        for (size_t cut = 0; cut < n; cut++) {
            char *g = th_guard_copy(sd, cut);
            enum sd_access a = sd_check((const uint8_t *)g, cut, token, tl, SD_RIGHT_FULL_ACCESS);
            th_guard_free(g, cut);
            CHECKF(a == SD_MALFORMED || (a == SD_NONE && strcmp(V[v].name, "no_dacl") == 0),
                   "%s cut at %zu: %d", V[v].name, cut, a);
        }
    }
}

/* Every byte flipped in every way: reads stay inside (the guard page), and
 * an answer is one of the four. */
static void test_flipped(void)
{
    uint8_t token[64];
    size_t tl = add_sid(token, 0, DOM "-1103");
    for (size_t v = 0; v < sizeof V / sizeof V[0]; v++) {
        uint8_t sd[512];
        size_t n = unhex(V[v].hex, sd);
        for (size_t i = 0; i < n; i++) {
            for (unsigned x = 1; x < 256; x <<= 1) {
                sd[i] ^= (uint8_t)x;
                char *g = th_guard_copy(sd, n);
                enum sd_access a = sd_check((const uint8_t *)g, n, token, tl, SD_RIGHT_FULL_ACCESS);
                th_guard_free(g, n);
                CHECK(a <= SD_MALFORMED);
                sd[i] ^= (uint8_t)x;
            }
        }
    }
}

static void test_sids(void)
{
    uint8_t t[128];
    size_t tl = add_sid(t, 0, DOM "-1103");
    tl = add_sid(t, tl, "S-1-5-11");
    CHECK_INT(sd_sid_len(t, tl), 28);
    CHECK_INT(sd_sid_len(t, 27), 0);
    CHECK_INT(sd_sid_len(t + 28, tl - 28), 12);
    uint8_t other[32];
    size_t ol = add_sid(other, 0, "S-1-5-11");
    CHECK(sd_token_has(t, tl, other, ol));
    ol = add_sid(other, 0, "S-1-5-12");
    CHECK(!sd_token_has(t, tl, other, ol));
    /* a SID cut in the middle of a token ends it */
    CHECK(!sd_token_has(t, tl - 1, t + 28, 12));
    uint8_t bad[8] = {2, 0, 0, 0, 0, 0, 0, 5}; /* revision 2 */
    CHECK_INT(sd_sid_len(bad, sizeof bad), 0);
}

int main(void)
{
    test_decisions();
    test_truncated();
    test_flipped();
    test_sids();
    return th_finish("test_secdesc");
}

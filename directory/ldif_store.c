/* The LDIF store: see ldif_store.h. */
#include "ldif_store.h"
#include "secdesc.h"

#include "../base/base64.h"

#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/sha.h>
#include <wolfssl/wolfcrypt/sha512.h>

#define UAC_DISABLED 0x2

/* ---- parsing ---- */

struct ldif_parse {
    struct ldif_store *st;
    struct ldif_entry *cur; /* the entry being read, or NULL between entries */
    size_t cap;
    char *err;
    size_t errlen;
};

static int lp_error(struct ldif_parse *lp, unsigned line, const char *why)
{
    snprintf(lp->err, lp->errlen, "line %u: %s", line, why);
    return FG_ERROR;
}

static struct ldif_entry *lp_new_entry(struct ldif_parse *lp, const char *dn, size_t n)
{
    struct ldif_store *st = lp->st;
    if (st->n == lp->cap) {
        size_t cap = lp->cap ? lp->cap * 2 : 64;
        struct ldif_entry *e = realloc(st->e, cap * sizeof *e);
        if (!e)
            return NULL;
        st->e = e;
        lp->cap = cap;
    }
    struct ldif_entry *e = &st->e[st->n];
    memset(e, 0, sizeof *e);
    if (!(e->dn = strndup(dn, n)))
        return NULL;
    st->n++;
    return e;
}

static int lp_add_value(struct ldif_entry *e, const char *name, size_t nn, const char *v, size_t vn)
{
    struct ldif_attr *a = NULL;
    for (unsigned i = 0; i < e->nattrs && !a; i++)
        if (strlen(e->attrs[i].name) == nn && strncasecmp(e->attrs[i].name, name, nn) == 0)
            a = &e->attrs[i];
    if (!a) {
        struct ldif_attr *na = realloc(e->attrs, (e->nattrs + 1) * sizeof *na);
        if (!na)
            return FG_ERROR;
        e->attrs = na;
        a = &e->attrs[e->nattrs];
        memset(a, 0, sizeof *a);
        if (!(a->name = strndup(name, nn)))
            return FG_ERROR;
        e->nattrs++;
    }
    struct ldif_value *nv = realloc(a->vals, (a->nvals + 1) * sizeof *nv);
    if (!nv)
        return FG_ERROR;
    a->vals = nv;
    char *p = malloc(vn + 1);
    if (!p)
        return FG_ERROR;
    memcpy(p, v, vn);
    p[vn] = 0;
    a->vals[a->nvals++] = (struct ldif_value){p, vn};
    return FG_OK;
}

static bool lp_name_ok(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '.'))
            return false;
    return true;
}

/* One logical (unfolded) line. */
static int lp_line(struct ldif_parse *lp, const char *s, size_t n, unsigned line)
{
    if (s[0] == '#')
        return FG_OK;
    const char *colon = memchr(s, ':', n);
    if (!colon)
        return lp_error(lp, line, "expected \"attribute: value\"");
    size_t nn = (size_t)(colon - s);
    const char *semi = memchr(s, ';', nn);
    size_t base = semi ? (size_t)(semi - s) : nn; /* options (;binary) are dropped */
    if (!lp_name_ok(s, base))
        return lp_error(lp, line, "bad attribute name");
    const char *v = colon + 1, *end = s + n;
    bool b64 = v < end && *v == ':';
    if (v < end && *v == '<')
        return lp_error(lp, line, "URL values (:<) are not supported");
    v += b64;
    while (v < end && *v == ' ')
        v++;
    size_t vn = (size_t)(end - v);
    uint8_t *dec = NULL;
    if (b64) {
        dec = malloc(base64_decoded_max(vn) + 1);
        long dn = dec ? base64_decode(v, vn, dec) : -1;
        if (dn < 0) {
            free(dec);
            return lp_error(lp, line, "bad base64 value");
        }
        v = (const char *)dec;
        vn = (size_t)dn;
    }
    int rc = FG_OK;
    if (fg_ieq(s, base, "version") && !lp->cur && lp->st->n == 0) {
        /* "version: 1" before the first entry */
    } else if (fg_ieq(s, base, "changetype")) {
        rc = lp_error(lp, line, "change records are not supported: give content records");
    } else if (!lp->cur) {
        if (!fg_ieq(s, base, "dn"))
            rc = lp_error(lp, line, "an entry must start with \"dn:\"");
        else if (!(lp->cur = lp_new_entry(lp, v, vn)))
            rc = lp_error(lp, line, "out of memory");
    } else if (fg_ieq(s, base, "dn")) {
        rc = lp_error(lp, line, "\"dn:\" inside an entry: separate entries with a blank line");
    } else if (lp_add_value(lp->cur, s, base, v, vn) != FG_OK) {
        rc = lp_error(lp, line, "out of memory");
    }
    free(dec);
    return rc;
}

/* The password a bind as nobody is checked against: a {CRYPT} one if the
 * file has any (the slowest scheme), else the first. */
static void lp_pick_dummy(struct ldif_store *st)
{
    for (size_t i = 0; i < st->n; i++) {
        const struct ldif_attr *pw = ldif_attr(&st->e[i], "userPassword");
        for (unsigned v = 0; pw && v < pw->nvals; v++) {
            if (!st->dummy)
                st->dummy = &pw->vals[v];
            if (strncasecmp(pw->vals[v].p, "{CRYPT}", 7) == 0) {
                st->dummy = &pw->vals[v];
                return;
            }
        }
    }
}

int ldif_parse(struct ldif_store *st, const char *buf, size_t n, char *err, size_t errlen)
{
    struct ldif_parse lp = {.st = st, .err = err, .errlen = errlen};
    char *lb = NULL;
    size_t ln = 0, lcap = 0;
    unsigned line = 0, lstart = 0;
    bool have = false;
    int rc = FG_OK;

    memset(st, 0, sizeof *st);
    for (size_t pos = 0; pos < n && rc == FG_OK;) {
        const char *p = buf + pos, *nl = memchr(p, '\n', n - pos);
        size_t len = nl ? (size_t)(nl - p) : n - pos;
        pos += len + (nl != NULL);
        line++;
        if (len > 0 && p[len - 1] == '\r')
            len--;
        if (len > 0 && p[0] == ' ') { /* a folded line goes on the one before */
            if (!have) {
                rc = lp_error(&lp, line, "a continuation line with no line before it");
                break;
            }
            p++;
            len--;
        } else {
            if (have)
                rc = lp_line(&lp, lb, ln, lstart);
            have = false;
            ln = 0;
            if (len == 0) {
                lp.cur = NULL; /* a blank line ends the entry */
                continue;
            }
            have = true;
            lstart = line;
        }
        if (rc == FG_OK && ln + len + 1 > lcap) {
            lcap = (ln + len + 1) * 2;
            char *nb = realloc(lb, lcap);
            if (!nb) {
                rc = lp_error(&lp, line, "out of memory");
                break;
            }
            lb = nb;
        }
        if (rc == FG_OK) {
            memcpy(lb + ln, p, len);
            ln += len;
            lb[ln] = 0;
        }
    }
    if (rc == FG_OK && have)
        rc = lp_line(&lp, lb, ln, lstart);
    free(lb);
    if (rc != FG_OK)
        ldif_free(st);
    else
        lp_pick_dummy(st);
    return rc;
}

int ldif_load(struct ldif_store *st, const char *path, char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return FG_ERROR;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, cap);
            if (!nb)
                break;
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    bool bad = ferror(f) || !buf;
    fclose(f);
    char why[256];
    int rc = bad ? FG_ERROR : ldif_parse(st, buf, n, why, sizeof why);
    if (rc != FG_OK)
        snprintf(err, errlen, "%s:%s", path, bad ? " cannot read" : why + 5); /* "line N: .." */
    free(buf);
    return rc;
}

void ldif_free(struct ldif_store *st)
{
    for (size_t i = 0; i < st->n; i++) {
        struct ldif_entry *e = &st->e[i];
        for (unsigned a = 0; a < e->nattrs; a++) {
            for (unsigned v = 0; v < e->attrs[a].nvals; v++)
                free(e->attrs[a].vals[v].p);
            free(e->attrs[a].vals);
            free(e->attrs[a].name);
        }
        free(e->attrs);
        free(e->dn);
    }
    free(st->e);
    memset(st, 0, sizeof *st);
}

const struct ldif_attr *ldif_attr(const struct ldif_entry *e, const char *attr)
{
    for (unsigned i = 0; i < e->nattrs; i++)
        if (strcasecmp(e->attrs[i].name, attr) == 0)
            return &e->attrs[i];
    return NULL;
}

/* ---- passwords ---- */

static bool lp_ct_eq(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= a[i] ^ b[i];
    return d == 0;
}

/* {SSHA}/{SHA}/{SSHA512}/{SHA512}: base64(digest || salt). */
static bool lp_digest_ok(const char *b64, size_t n, bool sha512, const char *pass, size_t pn)
{
    uint8_t raw[512], got[WC_SHA512_DIGEST_SIZE];
    size_t dlen = sha512 ? WC_SHA512_DIGEST_SIZE : WC_SHA_DIGEST_SIZE;
    long rn = base64_decoded_max(n) <= sizeof raw ? base64_decode(b64, n, raw) : -1;
    if (rn < (long)dlen)
        return false;
    if (sha512) {
        wc_Sha512 h;
        wc_InitSha512(&h);
        wc_Sha512Update(&h, (const byte *)pass, (word32)pn);
        wc_Sha512Update(&h, raw + dlen, (word32)((size_t)rn - dlen));
        wc_Sha512Final(&h, got);
        wc_Sha512Free(&h);
    } else {
        wc_Sha h;
        wc_InitSha(&h);
        wc_ShaUpdate(&h, (const byte *)pass, (word32)pn);
        wc_ShaUpdate(&h, raw + dlen, (word32)((size_t)rn - dlen));
        wc_ShaFinal(&h, got);
        wc_ShaFree(&h);
    }
    bool ok = lp_ct_eq(got, raw, dlen);
    explicit_bzero(got, sizeof got);
    return ok;
}

static bool lp_crypt_ok(const char *hash, size_t n, const char *pass, size_t pn)
{
    char pw[1024], setting[512];
    struct crypt_data cd;
    if (pn >= sizeof pw || n >= sizeof setting || memchr(pass, 0, pn))
        return false;
    memcpy(pw, pass, pn);
    pw[pn] = 0;
    memcpy(setting, hash, n);
    setting[n] = 0;
    memset(&cd, 0, sizeof cd);
    /* crypt_rn (libxcrypt): crypt_r's result, but NULL on failure instead of
     * a "*" string -- and not intercepted by the sanitizers, whose crypt_r
     * wrapper cannot find the real one in a statically ordered link. */
    const char *out = crypt_rn(pw, setting, &cd, (int)sizeof cd);
    bool ok = out && out[0] != '*' && strlen(out) == n &&
              lp_ct_eq((const uint8_t *)out, (const uint8_t *)hash, n);
    explicit_bzero(pw, sizeof pw);
    explicit_bzero(&cd, sizeof cd);
    return ok;
}

bool ldif_password_ok(const char *stored, size_t n, const char *pass, size_t pn)
{
    static const struct {
        const char *scheme;
        int kind; /* 0 sha1, 1 sha512, 2 crypt */
    } schemes[] = {{"{SSHA}", 0}, {"{SHA}", 0}, {"{SSHA512}", 1}, {"{SHA512}", 1}, {"{CRYPT}", 2}};
    if (pn == 0)
        return false; /* never: an empty password is an anonymous bind */
    for (size_t i = 0; i < FG_ARRAY_SIZE(schemes); i++) {
        size_t sl = strlen(schemes[i].scheme);
        if (n <= sl || strncasecmp(stored, schemes[i].scheme, sl) != 0)
            continue;
        if (schemes[i].kind == 2)
            return lp_crypt_ok(stored + sl, n - sl, pass, pn);
        return lp_digest_ok(stored + sl, n - sl, schemes[i].kind == 1, pass, pn);
    }
    return false; /* clear text or an unknown scheme: never matches */
}

/* ---- the store operations ---- */

static bool lp_has_value(const struct ldif_entry *e, const char *attr, const char *v, size_t n,
                         bool icase)
{
    const struct ldif_attr *a = ldif_attr(e, attr);
    for (unsigned i = 0; a && i < a->nvals; i++)
        if (a->vals[i].n == n &&
            (icase ? strncasecmp(a->vals[i].p, v, n) == 0 : memcmp(a->vals[i].p, v, n) == 0))
            return true;
    return false;
}

static const struct ldif_value *lp_first(const struct ldif_entry *e, const char *attr)
{
    const struct ldif_attr *a = ldif_attr(e, attr);
    return a && a->nvals > 0 ? &a->vals[0] : NULL;
}

static bool lp_is_user(const struct ldif_entry *e)
{
    return lp_has_value(e, "objectClass", "user", 4, true);
}

static uint32_t lp_uac(const struct ldif_entry *e)
{
    const struct ldif_value *v = lp_first(e, "userAccountControl");
    return v ? (uint32_t)strtoul(v->p, NULL, 10) : 0x200;
}

static uint8_t lp_proto_disabled(const struct ldif_entry *e)
{
    const struct ldif_attr *a = ldif_attr(e, "protocolSettings");
    uint8_t bits = 0;
    for (unsigned i = 0; a && i < a->nvals; i++)
        bits |= resolve_protocol_disabled(a->vals[i].p, a->vals[i].n);
    return bits;
}

static void lp_copy(char *dst, size_t cap, const struct ldif_value *v)
{
    size_t n = v && v->n < cap ? v->n : 0;
    if (n)
        memcpy(dst, v->p, n);
    dst[n] = 0;
}

/* rights_of: with SOP_FIND_ALIAS, whose full access to look for in
 * op->delegate_attr. */
static void lp_fill(const struct ldif_entry *e, int forest, const char *rights_of,
                    const struct store_op *op, struct dir_entry *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->dn, sizeof out->dn, "%s", e->dn);
    const struct ldif_value *v = lp_first(e, "objectSid");
    if (v && v->n <= DIR_SID_MAX) {
        memcpy(out->sid, v->p, v->n);
        out->sid_len = (uint8_t)v->n;
    }
    v = lp_first(e, "msExchMasterAccountSid");
    if (v && v->n <= DIR_SID_MAX) {
        memcpy(out->master_sid, v->p, v->n);
        out->master_sid_len = (uint8_t)v->n;
    }
    out->forest = (uint8_t)forest;
    out->uac = lp_uac(e);
    v = lp_first(e, "adminCount");
    out->admin = v && strcmp(v->p, "1") == 0;
    v = lp_first(e, "homeMDB");
    out->has_mailbox = v != NULL;
    lp_copy(out->home_mdb, sizeof out->home_mdb, v);
    lp_copy(out->alias, sizeof out->alias, lp_first(e, "mailNickname"));
    lp_copy(out->login, sizeof out->login,
            lp_first(e, op->login_attr ? op->login_attr : "mailNickname"));
    out->proto_disabled = lp_proto_disabled(e);
    if (rights_of && rights_of[0])
        out->delegate_ok =
                lp_has_value(e, op->delegate_attr ? op->delegate_attr : "msExchDelegateListLink",
                             rights_of, strlen(rights_of), true);
    if (op->kind == SOP_FIND_ALIAS && op->token) {
        v = lp_first(e, "msExchMailboxSecurityDescriptor");
        out->sd_access = v ? (uint8_t)sd_check((const uint8_t *)v->p, v->n, op->token,
                                               op->token_len, SD_RIGHT_FULL_ACCESS)
                           : SD_NONE;
    }
}

static bool lp_match(const struct ldif_entry *e, const struct dir_forest *fo,
                     const struct store_op *op)
{
    int d = resolve_domain_of(fo, e->dn);
    if (d < 0 || !lp_is_user(e))
        return false;
    char smtp[300];
    switch (op->kind) {
    case SOP_FIND_SAM:
        return (op->domain < 0 || d == op->domain) && !(lp_uac(e) & UAC_DISABLED) &&
               lp_has_value(e, "sAMAccountName", op->key, op->key_len, true);
    case SOP_FIND_UPN:
        return lp_has_value(e, "userPrincipalName", op->key, op->key_len, true);
    case SOP_FIND_SMTP:
        if (op->key_len + 5 >= sizeof smtp)
            return false;
        memcpy(smtp, "smtp:", 5);
        memcpy(smtp + 5, op->key, op->key_len);
        return lp_has_value(e, "proxyAddresses", smtp, op->key_len + 5, true);
    case SOP_FIND_LINKED:
        return lp_first(e, "homeMDB") &&
               lp_has_value(e, "msExchMasterAccountSid", (const char *)op->sid, op->sid_len, false);
    case SOP_FIND_ALIAS:
        return lp_first(e, "homeMDB") &&
               lp_has_value(e, "mailNickname", op->key, op->key_len, true);
    case SOP_FIND_SID:
        return lp_has_value(e, "objectSid", (const char *)op->sid, op->sid_len, false);
    default:
        return false;
    }
}

static const struct ldif_entry *lp_by_dn(const struct ldif_store *st, const char *dn)
{
    for (size_t i = 0; i < st->n; i++)
        if (strcasecmp(st->e[i].dn, dn) == 0)
            return &st->e[i];
    return NULL;
}

/* The bind: a password matches one userPassword; pwdLastSet 0 is AD's
 * "must change password" (data 773). */
static void lp_bind(const struct ldif_store *st, const struct store_op *op,
                    struct store_result *res)
{
    const struct ldif_entry *e = op->dn[0] ? lp_by_dn(st, op->dn) : NULL;
    const struct ldif_attr *pw = e ? ldif_attr(e, "userPassword") : NULL;
    bool ok = false;
    if (!e && st->dummy) { /* nobody: spend the time a real check takes */
        bool FG_UNUSED same = ldif_password_ok(st->dummy->p, st->dummy->n, op->pass, op->pass_len);
        res->status = STORE_BIND_FAILED;
        return;
    }
    for (unsigned i = 0; pw && i < pw->nvals && !ok; i++)
        ok = ldif_password_ok(pw->vals[i].p, pw->vals[i].n, op->pass, op->pass_len);
    const struct ldif_value *last = e ? lp_first(e, "pwdLastSet") : NULL;
    if (!ok || (lp_uac(e) & UAC_DISABLED))
        res->status = STORE_BIND_FAILED;
    else if (last && strcmp(last->p, "0") == 0)
        res->status = STORE_BIND_EXPIRED;
}

static void lp_database(const struct ldif_store *st, const struct store_op *op,
                        struct store_result *res)
{
    const struct ldif_entry *db = lp_by_dn(st, op->dn);
    const struct ldif_attr *srv = db ? ldif_attr(db, "msExchOwningServer") : NULL;
    for (unsigned i = 0; srv && i < srv->nvals && res->nhosts < DIR_MAX_HOSTS; i++) {
        const struct ldif_entry *s = lp_by_dn(st, srv->vals[i].p);
        const struct ldif_value *h = s ? lp_first(s, "dNSHostName") : NULL;
        if (h && h->n <= DIR_HOST_MAX)
            lp_copy(res->hosts[res->nhosts++], DIR_HOST_MAX + 1, h);
    }
}

/* tokenGroups: AD computes them; an LDIF forest stores them on the account. */
static void lp_token_groups(const struct ldif_store *st, const struct store_op *op,
                            struct store_result *res)
{
    const struct ldif_entry *e = lp_by_dn(st, op->dn);
    const struct ldif_attr *g = e ? ldif_attr(e, "tokenGroups") : NULL;
    for (unsigned i = 0; g && i < g->nvals; i++)
        if (!store_token_append(op, res, (const uint8_t *)g->vals[i].p, g->vals[i].n))
            return;
}

void ldif_store_run(const struct ldif_store *st, const struct dir_forest *forest, int forest_index,
                    const struct store_op *op, struct store_result *res)
{
    memset(res, 0, sizeof *res);
    res->status = STORE_OK;
    if (op->kind == SOP_BIND) {
        lp_bind(st, op, res);
        return;
    }
    if (op->kind == SOP_DATABASE) {
        lp_database(st, op, res);
        return;
    }
    if (op->kind == SOP_TOKEN_GROUPS) {
        lp_token_groups(st, op, res);
        return;
    }
    /* Like an LDAP search with size limit 2: two are enough to say "not one". */
    for (size_t i = 0; i < st->n && res->n < 2; i++)
        if (lp_match(&st->e[i], forest, op))
            lp_fill(&st->e[i], forest_index, op->kind == SOP_FIND_ALIAS ? op->dn : NULL, op,
                    &res->e[res->n++]);
}

/*
 * libFuzzer target: the LDIF reader and store (directory/ldif_store.c).
 *
 * The input is an LDIF file, given to ldif_parse in a block of exactly its
 * size. What it accepts must be well formed: entries with a DN, attribute
 * names of letters, digits and '-', each name once per entry, values
 * NUL-terminated. The same file with CRLF line ends must read the same.
 * Then the store answers the resolver's searches for the names, addresses,
 * aliases, SIDs and databases the file itself holds, and checks its password
 * hashes. {CRYPT} hashes are left out: their cost is the file's to choose
 * (rounds=), and the file is the administrator's. Inputs that start with a
 * comment are also read through ldif_load, from a file.
 */
#include "../../directory/ldif_store.h"
#include "fuzz_util.h"

#include <stdio.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool name_ok(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '.'))
            return false;
    return true;
}

static void check_store(const struct ldif_store *st)
{
    for (size_t i = 0; i < st->n; i++) {
        const struct ldif_entry *e = &st->e[i];
        FZ_CHECK(e->dn != NULL);
        for (unsigned a = 0; a < e->nattrs; a++) {
            const struct ldif_attr *at = &e->attrs[a];
            FZ_CHECK(name_ok(at->name) && at->nvals > 0);
            FZ_CHECK(strcasecmp(at->name, "dn") != 0 && strcasecmp(at->name, "changetype") != 0);
            FZ_CHECK(ldif_attr(e, at->name) == at); /* each name once */
            for (unsigned v = 0; v < at->nvals; v++)
                FZ_CHECK(at->vals[v].p[at->vals[v].n] == 0);
        }
    }
}

/* Both parses must have read the same entries. */
static void check_same(const struct ldif_store *a, const struct ldif_store *b)
{
    FZ_CHECK(a->n == b->n);
    for (size_t i = 0; i < a->n; i++) {
        const struct ldif_entry *x = &a->e[i], *y = &b->e[i];
        FZ_CHECK(strcmp(x->dn, y->dn) == 0 && x->nattrs == y->nattrs);
        for (unsigned k = 0; k < x->nattrs; k++) {
            FZ_CHECK(strcmp(x->attrs[k].name, y->attrs[k].name) == 0);
            FZ_CHECK(x->attrs[k].nvals == y->attrs[k].nvals);
            for (unsigned v = 0; v < x->attrs[k].nvals; v++) {
                const struct ldif_value *p = &x->attrs[k].vals[v], *q = &y->attrs[k].vals[v];
                FZ_CHECK(p->n == q->n && memcmp(p->p, q->p, p->n) == 0);
            }
        }
    }
}

static bool crypt_hash(const struct ldif_value *v)
{
    return v->n >= 7 && strncasecmp(v->p, "{CRYPT}", 7) == 0;
}

static void run_op(const struct ldif_store *st, const struct dir_forest *fo, struct store_op *op)
{
    static struct store_result res;
    op->login_attr = "mailNickname";
    op->delegate_attr = "msExchDelegateListLink";
    ldif_store_run(st, fo, 0, op, &res);
    FZ_CHECK(res.n <= 2 && res.nhosts <= DIR_MAX_HOSTS);
    for (unsigned i = 0; i < res.n; i++) {
        FZ_CHECK(memchr(res.e[i].dn, 0, sizeof res.e[i].dn) && res.e[i].forest == 0);
        FZ_CHECK(res.e[i].sid_len <= DIR_SID_MAX && res.e[i].master_sid_len <= DIR_SID_MAX);
        FZ_CHECK(memchr(res.e[i].login, 0, sizeof res.e[i].login));
        FZ_CHECK(memchr(res.e[i].alias, 0, sizeof res.e[i].alias));
    }
    for (unsigned h = 0; h < res.nhosts; h++)
        FZ_CHECK(memchr(res.hosts[h], 0, sizeof res.hosts[h]));
}

/* A search for the first value of attr, as the resolver would ask it. */
static void search(const struct ldif_store *st, const struct dir_forest *fo,
                   const struct ldif_entry *e, const char *attr, enum store_op_kind kind)
{
    const struct ldif_attr *a = ldif_attr(e, attr);
    if (!a)
        return;
    const struct ldif_value *v = &a->vals[0];
    struct store_op op = {.kind = kind, .domain = -1, .key = v->p, .key_len = v->n, .dn = e->dn};
    if (kind == SOP_FIND_SMTP) {
        if (v->n < 5 || strncasecmp(v->p, "smtp:", 5) != 0)
            return;
        op.key += 5;
        op.key_len -= 5;
    }
    if (kind == SOP_FIND_SID || kind == SOP_FIND_LINKED) {
        op.sid = (const uint8_t *)v->p;
        op.sid_len = v->n;
    }
    if (kind == SOP_DATABASE)
        op.dn = v->p;
    run_op(st, fo, &op);
    if (kind == SOP_FIND_SAM) {
        op.domain = 1;
        run_op(st, fo, &op);
    }
}

/* Password checks, and a bind when no {CRYPT} hash can be reached. */
static void passwords(const struct ldif_store *st, const struct dir_forest *fo,
                      const struct ldif_entry *e)
{
    const struct ldif_attr *pw = ldif_attr(e, "userPassword");
    bool any_crypt = st->dummy && crypt_hash(st->dummy);
    for (unsigned v = 0; pw && v < pw->nvals; v++) {
        if (crypt_hash(&pw->vals[v])) {
            any_crypt = true;
            continue;
        }
        ldif_password_ok(pw->vals[v].p, pw->vals[v].n, "secret", 6);
        ldif_password_ok(pw->vals[v].p, pw->vals[v].n, pw->vals[v].p, pw->vals[v].n);
    }
    if (any_crypt)
        return;
    struct store_op op = {.kind = SOP_BIND, .dn = e->dn, .pass = "secret", .pass_len = 6};
    run_op(st, fo, &op);
    op.dn = ""; /* nobody: checked against the dummy */
    run_op(st, fo, &op);
}

static void query(const struct ldif_store *st)
{
    static struct dir_forest fo = {
            .name = "uclabor",
            .organization = true,
            .ndomains = 2,
            .domains = {{"UCLABOR", "uclabor.de", "DC=uclabor,DC=de"},
                        {"CHILD", "child.uclabor.de", "DC=child,DC=uclabor,DC=de"}},
    };
    for (size_t i = 0; i < st->n && i < 8; i++) {
        const struct ldif_entry *e = &st->e[i];
        search(st, &fo, e, "sAMAccountName", SOP_FIND_SAM);
        search(st, &fo, e, "userPrincipalName", SOP_FIND_UPN);
        search(st, &fo, e, "proxyAddresses", SOP_FIND_SMTP);
        search(st, &fo, e, "mailNickname", SOP_FIND_ALIAS);
        search(st, &fo, e, "objectSid", SOP_FIND_SID);
        search(st, &fo, e, "msExchMasterAccountSid", SOP_FIND_LINKED);
        search(st, &fo, e, "homeMDB", SOP_DATABASE);
        passwords(st, &fo, e);
    }
}

/* The same file with CRLF line ends: must read the same, or fail alike. */
static void crlf_twin(const uint8_t *data, size_t size, int rc, const struct ldif_store *st,
                      const char *err)
{
    size_t n = 0;
    if (memchr(data, '\r', size))
        return;
    char *twin = fz_alloc(2 * size);
    for (size_t i = 0; i < size; i++) {
        if (data[i] == '\n')
            twin[n++] = '\r';
        twin[n++] = (char)data[i];
    }
    char *buf = fz_dup(twin, n);
    struct ldif_store st2;
    char err2[256];
    int rc2 = ldif_parse(&st2, buf, n, err2, sizeof err2);
    FZ_CHECK(rc == rc2);
    if (rc == FG_OK)
        check_same(st, &st2);
    else
        FZ_CHECK(strcmp(err, err2) == 0);
    ldif_free(&st2);
    free(buf);
    free(twin);
}

/* ldif_load, the file entry point, must read a file as ldif_parse reads the
 * bytes, and name the file in its error. Through a memfd, for inputs that
 * start with a comment (so the fuzzer chooses, and most runs make no
 * system calls). */
static void via_file(const uint8_t *data, size_t size, int rc, const struct ldif_store *st,
                     const char *err)
{
    int fd = memfd_create("fuzz.ldif", 0);
    FZ_CHECK(fd >= 0);
    for (size_t off = 0; off < size;) {
        ssize_t w = write(fd, data + off, size - off);
        FZ_CHECK(w > 0);
        off += (size_t)w;
    }
    char path[64], err2[512], want[512];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    struct ldif_store st2;
    int rc2 = ldif_load(&st2, path, err2, sizeof err2);
    FZ_CHECK(rc2 == rc);
    if (rc == FG_OK) {
        check_same(st, &st2);
    } else {
        snprintf(want, sizeof want, "%s:%s", path, err + 5); /* "line N: ..." */
        FZ_CHECK(strcmp(err2, want) == 0);
    }
    ldif_free(&st2);
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = fz_dup(data, size);
    struct ldif_store st;
    char err[256] = "";
    int rc = ldif_parse(&st, buf, size, err, sizeof err);

    if (rc == FG_OK) {
        check_store(&st);
        query(&st);
    } else {
        FZ_CHECK(rc == FG_ERROR && strncmp(err, "line ", 5) == 0 && st.n == 0 && !st.e);
    }
    crlf_twin(data, size, rc, &st, err);
    if (size > 0 && data[0] == '#')
        via_file(data, size, rc, &st, err);
    ldif_free(&st);
    free(buf);
    return 0;
}

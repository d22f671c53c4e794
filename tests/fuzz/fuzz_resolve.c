/*
 * libFuzzer target: the resolver (directory/resolve.c) over a store double.
 *
 * The input sets the policy switches, the forests (one to four, any of them
 * the organisation), the typed name and the password; the rest of it is what
 * the store answers, operation by operation: unavailable or not, how many
 * entries, and each entry's DN, flags, SIDs, alias and database. So the
 * fuzzer plays the directory, and a hostile or broken one at that.
 *
 * Checked: every operation asked for is well formed (a forest that exists,
 * a key inside the typed name, the password passed whole to a bind); the
 * resolution ends within a bounded number of operations; and the outcome
 * holds together: an OK comes only after a successful bind as the account,
 * never after a bind as nobody, and carries a mailbox, its servers, and none
 * of the refusals (disabled, admin, protocol off).
 */
#include "../../directory/resolve.h"
#include "fuzz_util.h"

#include <stdio.h>
#include <strings.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct dir_forest templates[4] = {
        {.name = "corp",
         .ndomains = 2,
         .domains = {{"UCLABOR", "uclabor.de", "DC=uclabor,DC=de"},
                     {"CHILD", "child.uclabor.de", "DC=child,DC=uclabor,DC=de"}}},
        {.name = "acct",
         .ndomains = 1,
         .domains = {{"ACCT", "acct.example", "DC=acct,DC=example"}}},
        {.name = "res",
         .ndomains = 2,
         .domains = {{"RES", "res.example", "DC=res,DC=example"},
                     {"SUB", "sub.res.example", "DC=sub,DC=res,DC=example"}}},
        {.name = "legacy", .ndomains = 1, .domains = {{"LEG", "leg.local", "DC=leg,DC=local"}}},
};

/* What the harness saw of the conversation. */
struct seen {
    unsigned ops;
    bool bind_ok, bind_nobody, unavailable, groups_asked;
    enum store_status last_bind;
    char bound_dn[DIR_DN_MAX];
};

/* A string from the input: one of a few meaningful ones, or raw bytes. */
static void pick_raw(struct fz *f, char *out, size_t cap)
{
    const uint8_t *p;
    size_t n = fz_bytes(f, fz_u8(f) % cap, &p);
    memcpy(out, p, n);
    out[n] = 0;
}

static void pick_dn(struct fz *f, const struct dir_topology *t, char *out)
{
    uint8_t c = fz_u8(f);
    if (c >= 0xf0) {
        pick_raw(f, out, 64);
        return;
    }
    unsigned fi = c % t->nforests, user = (c >> 2) % 4;
    const struct dir_forest *fo = &t->forests[fi];
    const struct dir_domain *d = &fo->domains[(c >> 4) % fo->ndomains];
    snprintf(out, DIR_DN_MAX, "CN=u%u,CN=Users,%s", user, d->base);
}

static void pick_sid(struct fz *f, uint8_t *sid, uint8_t *len)
{
    static const uint8_t base[] = {1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0};
    uint8_t c = fz_u8(f);
    if (c >= 0xf0) {
        const uint8_t *p;
        *len = (uint8_t)fz_bytes(f, fz_u8(f) % (DIR_SID_MAX + 1), &p);
        memcpy(sid, p, *len);
        return;
    }
    memcpy(sid, base, sizeof base);
    sid[sizeof base] = c % 4; /* few SIDs, so that some match */
    *len = sizeof base + 1;
}

static void fill_entry(struct fz *f, const struct resolution *rs, struct dir_entry *e)
{
    static const char *const aliases[] = {"u0", "u1", "testalias", "other"};
    uint8_t flags = fz_u8(f);

    memset(e, 0, sizeof *e);
    e->forest = (uint8_t)rs->op.forest; /* as the stores do: the forest searched */
    e->uac = (flags & 1) ? 0x202 : 0x200;
    e->admin = flags & 2;
    e->has_mailbox = flags & 4;
    e->delegate_ok = flags & 8;
    e->proto_disabled = (flags >> 4) & 3;
    pick_dn(f, rs->topo, e->dn);
    if (flags & 0x40)
        pick_sid(f, e->sid, &e->sid_len);
    if (flags & 0x80)
        pick_sid(f, e->master_sid, &e->master_sid_len);
    uint8_t c = fz_u8(f);
    if (e->has_mailbox && c < 0xf0)
        snprintf(e->home_mdb, sizeof e->home_mdb, "CN=DB0%u,CN=Databases,DC=uclabor,DC=de", c % 3);
    else if (e->has_mailbox)
        pick_raw(f, e->home_mdb, 64);
    snprintf(e->alias, sizeof e->alias, "%s", aliases[c % 4]);
    snprintf(e->login, sizeof e->login, "%s", e->alias);
    if (rs->op.kind == SOP_FIND_ALIAS && rs->op.token)
        e->sd_access = (uint8_t)(fz_u8(f) % 4); /* enum sd_access */
}

/* The store's answer to rs->op, read off the input. */
static void answer(struct fz *f, struct resolution *rs, struct seen *sn)
{
    struct store_result *res = &rs->res;
    uint8_t s = fz_u8(f);

    memset(res, 0, sizeof *res);
    res->status = (s & 3) == 1 ? STORE_UNAVAILABLE : STORE_OK;
    sn->unavailable |= res->status == STORE_UNAVAILABLE;
    if (rs->op.kind == SOP_BIND) {
        static const enum store_status bind[] = {
                STORE_OK,           STORE_UNAVAILABLE,          STORE_BIND_FAILED,
                STORE_BIND_EXPIRED, STORE_BIND_ACCOUNT_EXPIRED, STORE_BIND_LOCKED,
                STORE_OK,           STORE_BIND_DISABLED};
        res->status = bind[s & 7];
        /* The store's contract: a bind as "" (nobody) fails. */
        if (rs->op.dn[0] == 0 && res->status != STORE_UNAVAILABLE)
            res->status = STORE_BIND_FAILED;
        sn->last_bind = res->status;
        sn->bind_nobody |= rs->op.dn[0] == 0;
        sn->bind_ok = res->status == STORE_OK && rs->op.dn[0] != 0;
        snprintf(sn->bound_dn, sizeof sn->bound_dn, "%s", rs->op.dn);
    } else if (rs->op.kind == SOP_TOKEN_GROUPS) {
        /* SIDs or not, any bytes up to the room given; or "too many" */
        size_t n = FG_MIN((size_t)fz_u8(f), rs->op.token_cap);
        for (size_t i = 0; i < n; i++)
            rs->op.token_out[i] = fz_u8(f);
        res->token_len = n;
        res->token_overflow = (s & 0x20) != 0;
        sn->groups_asked = true;
    } else if (rs->op.kind == SOP_DATABASE) {
        res->nhosts = (s >> 2) % (DIR_MAX_HOSTS + 1);
        for (unsigned h = 0; h < res->nhosts; h++)
            snprintf(res->hosts[h], sizeof res->hosts[h], "mbx%u.uclabor.de", h);
    } else {
        res->n = (s >> 2) % 3;
        for (unsigned i = 0; i < res->n; i++)
            fill_entry(f, rs, &res->e[i]);
    }
}

static bool key_in_name(const struct resolution *rs)
{
    const struct store_op *op = &rs->op;
    return op->key >= rs->name && op->key_len > 0 && op->key_len <= rs->name_len &&
           op->key + op->key_len <= rs->name + rs->name_len;
}

static void check_op(const struct resolution *rs)
{
    const struct store_op *op = &rs->op;
    const struct dir_topology *t = rs->topo;

    FZ_CHECK(op->forest >= 0 && (unsigned)op->forest < t->nforests);
    FZ_CHECK(op->login_attr && op->delegate_attr);
    switch (op->kind) {
    case SOP_FIND_SAM:
        FZ_CHECK(op->domain >= -1 && op->domain < (int)t->forests[op->forest].ndomains);
        FZ_CHECK(key_in_name(rs));
        break;
    case SOP_FIND_UPN:
    case SOP_FIND_SMTP:
        FZ_CHECK(key_in_name(rs) && memchr(op->key, '@', op->key_len));
        break;
    case SOP_FIND_ALIAS:
        FZ_CHECK(key_in_name(rs) && op->dn && strnlen(op->dn, DIR_DN_MAX) < DIR_DN_MAX);
        break;
    case SOP_FIND_LINKED:
    case SOP_FIND_SID:
        FZ_CHECK(op->sid_len <= DIR_SID_MAX);
        break;
    case SOP_BIND:
        FZ_CHECK(op->dn && strnlen(op->dn, DIR_DN_MAX) < DIR_DN_MAX);
        /* the password, whole, and never an empty one: that is an anonymous bind */
        FZ_CHECK(op->pass == rs->pass && op->pass_len == rs->pass_len && op->pass_len > 0);
        break;
    case SOP_DATABASE:
        FZ_CHECK(op->dn && strnlen(op->dn, DIR_DN_MAX) < DIR_DN_MAX);
        break;
    case SOP_TOKEN_GROUPS:
        /* the account's own forest, and room that lies inside the resolution's token */
        FZ_CHECK(op->dn == rs->account.dn && op->forest == rs->account.forest);
        FZ_CHECK(op->token_out >= rs->token && op->token_cap > 0 &&
                 op->token_out + op->token_cap == rs->token + sizeof rs->token);
        FZ_CHECK(rs->conf->delegate_check != DELEGATE_LIST && rs->ln.alias.len > 0);
        break;
    default:
        FZ_CHECK(false);
    }
    FZ_CHECK(!rs->principal || (op->kind != SOP_BIND && op->kind != SOP_FIND_SMTP));
    bool org_only = op->kind == SOP_FIND_SMTP || op->kind == SOP_FIND_LINKED ||
                    op->kind == SOP_FIND_ALIAS || op->kind == SOP_DATABASE;
    FZ_CHECK(!org_only || op->forest == (int)t->org);
    FZ_CHECK(op->kind != SOP_FIND_SID || op->forest != (int)t->org); /* account forests */
}

static void check_outcome(const struct resolution *rs, const struct seen *sn)
{
    FZ_CHECK(rs->status <= LOGIN_UNAVAILABLE && rs->why < RW_COUNT);
    FZ_CHECK(resolve_why_text(rs->why) != NULL && rs->ops == sn->ops);
    FZ_CHECK((rs->status == LOGIN_OK) == (rs->why == RW_NONE));
    FZ_CHECK(rs->why != RW_UNAVAILABLE || rs->status == LOGIN_UNAVAILABLE);
    FZ_CHECK(rs->status != LOGIN_UNAVAILABLE || sn->unavailable ||
             rs->why == RW_NO_DATABASE_SERVER);
    FZ_CHECK(rs->status != LOGIN_EXPIRED || sn->last_bind == STORE_BIND_EXPIRED);
    FZ_CHECK(rs->why != RW_BAD_PASSWORD || sn->last_bind == STORE_BIND_FAILED);
    /* AD's other refusals end as failures, told only in the audit */
    FZ_CHECK(rs->why != RW_LOCKED_OUT ||
             (sn->last_bind == STORE_BIND_LOCKED && rs->status == LOGIN_FAILED));
    FZ_CHECK(rs->why != RW_ACCOUNT_EXPIRED ||
             (sn->last_bind == STORE_BIND_ACCOUNT_EXPIRED && rs->status == LOGIN_FAILED));
    FZ_CHECK(!store_bind_refused(sn->last_bind) || rs->status != LOGIN_OK);
    FZ_CHECK(rs->why != RW_TOO_MANY_GROUPS || (sn->groups_asked && rs->status == LOGIN_DENIED));
    if (rs->status != LOGIN_OK)
        return;
    struct logon_name ln;
    enum logon_form form = logon_name_split(rs->name, rs->name_len, &ln);
    if (rs->principal) {
        /* the ticket was the proof: a UPN form, and no bind at all */
        FZ_CHECK(form == LN_UPN || form == LN_UPN_ALIAS);
        FZ_CHECK(!sn->bind_ok && !sn->bind_nobody);
    } else {
        FZ_CHECK(rs->pass_len > 0 && form != LN_INVALID);
        FZ_CHECK(!logon_name_is_anonymous(rs->name, &ln));
        FZ_CHECK(sn->bind_ok && !sn->bind_nobody && strcmp(sn->bound_dn, rs->account.dn) == 0);
    }
    FZ_CHECK(!(rs->account.uac & 2)); /* a disabled account never logs on */
    FZ_CHECK(!rs->account.admin || rs->conf->allow_admin);
    FZ_CHECK(rs->mailbox.has_mailbox && !(rs->mailbox.proto_disabled & (1u << rs->proto)));
    FZ_CHECK(rs->nhosts >= 1 && rs->nhosts <= DIR_MAX_HOSTS);
    char db[64];
    FZ_CHECK(resolve_database_name(rs->mailbox.home_mdb, db, sizeof db) < sizeof db);
}

static void setup(struct fz *f, struct dir_topology *t, struct resolve_conf *conf)
{
    uint8_t c = fz_u8(f), tb = fz_u8(f);
    conf->allow_smtp_login = c & 1;
    conf->allow_admin = c & 2;
    conf->allow_delegates = c & 4;
    conf->login_attr = (c & 8) ? "uid" : NULL;
    conf->delegate_attr = (c & 16) ? "fgFullAccess" : NULL;
    conf->delegate_check = (uint8_t)((c >> 5) % 3);
    memset(t, 0, sizeof *t);
    t->nforests = 1 + tb % 4;
    t->org = (tb >> 2) % t->nforests;
    for (unsigned i = 0; i < t->nforests; i++)
        t->forests[i] = templates[i];
    t->forests[t->org].organization = true;
    t->forests[t->org].default_domain = (tb >> 4) % t->forests[t->org].ndomains;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct dir_topology topo;
    static struct resolution rs;
    struct resolve_conf conf;
    struct fz f = {data, size, 0};
    struct seen sn = {0};
    const uint8_t *p;

    setup(&f, &topo, &conf);
    /* bit 0: the protocol; bit 1: a Kerberos principal (no password, no
     * bind); bit 2: an enterprise principal */
    uint8_t mode = fz_u8(&f);
    enum fg_proto proto = (mode & 1) ? FG_PROTO_POP3 : FG_PROTO_IMAP;
    size_t name_len = fz_bytes(&f, fz_u16(&f) % 300, &p);
    char *name = fz_dup(p, name_len);
    size_t pass_len = fz_bytes(&f, fz_u8(&f) % 16, &p);
    char *pass = fz_dup(p, pass_len);

    if (mode & 2)
        resolve_init_principal(&rs, &topo, &conf, name, name_len, (mode & 4) != 0, proto);
    else
        resolve_init(&rs, &topo, &conf, name, name_len, pass, pass_len, proto);
    /* Each forest is searched a few times at most, plus a fixed tail. */
    unsigned bound = 4 * topo.nforests + 8;
    while (resolve_next(&rs) == RESOLVE_OP) {
        FZ_CHECK(++sn.ops <= bound);
        check_op(&rs);
        answer(&f, &rs, &sn);
    }
    check_outcome(&rs, &sn);
    FZ_CHECK(logon_form_name(rs.ln.form) != NULL);
    FZ_CHECK(resolve_protocol_disabled(pass, pass_len) <
             1u << FG_PROTO_COUNT); /* a store's helper */
    enum login_status st = rs.status;
    FZ_CHECK(resolve_next(&rs) == RESOLVE_DONE && rs.status == st);
    free(pass);
    free(name);
    return 0;
}

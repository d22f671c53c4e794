/*
 * The resolver against docs/login-rules.md section 8 (the worked examples), run on a store double:
 * a (A name that finds no account still costs a password check -- the "bind" at the end of every
 * miss -- so it answers no faster than a wrong password.)
 *
 * table of entries answered in memory, operation by operation, exactly as
 * the store interface specifies. (The LDIF and LDAP stores are tested
 * against the same cases end to end.) Each case also checks which store
 * operations were asked for, so "no lookup made" is proven, not assumed.
 */
#include "../../directory/resolve.h"
#include "../../directory/secdesc.h"
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

struct fx {
    int forest, domain;
    const char *dn, *sam, *upn, *password;
    uint32_t uac;
    bool admin;
    const char *mdb, *alias;
    uint8_t proto_off;
    const char *sid, *master_sid;
    const char *delegates[3];
    const char *smtp;
    const uint8_t *sd; /* msExchMailboxSecurityDescriptor */
    size_t sd_len;
    const uint8_t *groups; /* tokenGroups */
    size_t groups_len;
};

/* Setup A: one forest, UCLABOR / uclabor.de, and a child domain. */
static const struct fx setup_a[] = {
        {0,
         0,
         "CN=tuser,DC=uclabor,DC=de",
         "tuser",
         "tuser.upn@upn.uclabor.de",
         "pw-t",
         512,
         false,
         "CN=DB01,CN=Databases",
         "testalias",
         0,
         "S-T",
         NULL,
         {NULL},
         "testalias@uclabor.de"},
        {0,
         0,
         "CN=other,DC=uclabor,DC=de",
         "other",
         "other@uclabor.de",
         "pw-o",
         512,
         false,
         "CN=DB02,CN=Databases",
         "other",
         0,
         "S-O",
         NULL,
         {"CN=tuser,DC=uclabor,DC=de"},
         NULL},
        {0,
         0,
         "CN=Administrator,DC=uclabor,DC=de",
         "administrator",
         NULL,
         "pw-a",
         512,
         true,
         "CN=DB01,CN=Databases",
         "administrator",
         0,
         "S-A",
         NULL,
         {NULL},
         NULL},
        {0,
         0,
         "CN=noimap,DC=uclabor,DC=de",
         "noimap",
         NULL,
         "pw-n",
         512,
         false,
         "CN=DB01,CN=Databases",
         "noimap",
         1 << FG_PROTO_IMAP,
         "S-N",
         NULL,
         {NULL},
         NULL},
        {0,
         0,
         "CN=nobox,DC=uclabor,DC=de",
         "nobox",
         NULL,
         "pw-x",
         512,
         false,
         NULL,
         NULL,
         0,
         "S-X",
         NULL,
         {NULL},
         NULL},
        {0,
         0,
         "CN=off,DC=uclabor,DC=de",
         "off",
         "off@uclabor.de",
         "pw-f",
         514,
         false,
         "CN=DB01,CN=Databases",
         "off",
         0,
         "S-F",
         NULL,
         {NULL},
         NULL},
        {0,
         0,
         "CN=old,DC=uclabor,DC=de",
         "old",
         NULL,
         "expired",
         512,
         false,
         "CN=DB01,CN=Databases",
         "old",
         0,
         "S-E",
         NULL,
         {NULL},
         NULL},
        {0,
         0,
         "CN=lost,DC=uclabor,DC=de",
         "lost",
         NULL,
         "pw-l",
         512,
         false,
         "CN=DB09,CN=Databases",
         "lost",
         0,
         "S-L",
         NULL,
         {NULL},
         NULL},
        {0,
         1,
         "CN=childonly,DC=child,DC=uclabor,DC=de",
         "childonly",
         "childonly@child.uclabor.de",
         "pw-c",
         512,
         false,
         "CN=DB02,CN=Databases",
         "childonly",
         0,
         "S-C",
         NULL,
         {NULL},
         NULL},
};

/* Setup B: resource forest RES (with a child domain) and account forest ACC
 * (with a second domain ACC2). Entries flagged by `variant` switch on. */
static struct fx setup_b[] = {
        {0,
         0,
         "CN=linked,DC=res,DC=example",
         "linked",
         NULL,
         "pw-linked-user",
         514,
         false,
         "CN=DB02,CN=Databases",
         "linked",
         0,
         "S-RL",
         "S-ACC-AUSER",
         {NULL},
         "linked@res.example"},
        {1,
         0,
         "CN=auser,DC=acc,DC=example",
         "auser",
         "auser@acc.example",
         "pw-au",
         512,
         false,
         NULL,
         NULL,
         0,
         "S-ACC-AUSER",
         NULL,
         {NULL},
         NULL},
        /* RES's own auser: disabled unless a case enables it */
        {0,
         0,
         "CN=auser,DC=res,DC=example",
         "auser",
         NULL,
         "pw-res-auser",
         514,
         false,
         "CN=DB01,CN=Databases",
         "resauser",
         0,
         "S-RA",
         NULL,
         {NULL},
         NULL},
        {1,
         0,
         "CN=dupuser,DC=acc,DC=example",
         "dupuser",
         "dup1@acc.example",
         "pw-d",
         512,
         false,
         NULL,
         NULL,
         0,
         "S-D1",
         NULL,
         {NULL},
         NULL},
        {1,
         1,
         "CN=dupuser,DC=eu,DC=acc,DC=example",
         "dupuser",
         "dup2@acc.example",
         "pw-d",
         512,
         false,
         NULL,
         NULL,
         0,
         "S-D2",
         NULL,
         {NULL},
         NULL},
};

static const struct fx *cur;
static size_t ncur;

/* Setup S: Full Access from security descriptors. The mailbox "team"
 * allows Full Access to group MGR (S-1-5-21-1-2-3-1201) and denies it to
 * group DENY (...-1202), in that canonical order (deny first); its
 * delegate list names tuser's and dmbx's own mailboxes. */
#define SUB(x) (x) & 0xff, (x) >> 8, 0, 0
#define DOM3   1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0
static const uint8_t sid_mgr[] = {DOM3, SUB(1201)}, sid_deny[] = {DOM3, SUB(1202)};
static const uint8_t sd_team[] = {
        1, 0, 0x04, 0x80, 0, 0, 0, 0, 0,    0,         0, 0, 0, 0, 0, 0, 20, 0, 0, 0, /* header */
        2, 0, 80,   0,    2, 0, 0, 0,                                                 /* ACL */
        1, 0, 36,   0,    1, 0, 0, 0, DOM3, SUB(1202), /* deny Full Access to DENY */
        0, 0, 36,   0,    1, 0, 0, 0, DOM3, SUB(1201), /* allow Full Access to MGR */
};
static const uint8_t groups_mgr[] = {DOM3, SUB(1201)};
static const uint8_t groups_both[] = {DOM3, SUB(1201), DOM3, SUB(1202)};
static const uint8_t groups_deny[] = {DOM3, SUB(1202)};
static uint8_t groups_many[DIR_TOKEN_MAX]; /* more than any token holds */

#define FX_USER(name_, box_, alias_, grp_, len_)                                                   \
    {                                                                                              \
        .dn = "CN=" name_ ",DC=uclabor,DC=de", .sam = name_, .password = "pw-" name_, .uac = 512,  \
        .mdb = box_, .alias = alias_, .sid = "S-" name_, .groups = grp_, .groups_len = len_        \
    }
static const struct fx setup_s[] = {
        FX_USER("tuser", "CN=DB01,CN=Databases", "testalias", NULL, 0),
        FX_USER("helper", NULL, NULL, groups_mgr, sizeof groups_mgr),
        FX_USER("blocked", NULL, NULL, groups_both, sizeof groups_both),
        FX_USER("dmbx", "CN=DB01,CN=Databases", "dmbx", groups_deny, sizeof groups_deny),
        FX_USER("many", NULL, NULL, groups_many, sizeof groups_many),
        {.dn = "CN=team,DC=uclabor,DC=de",
         .sam = "team",
         .password = "-",
         .uac = 514,
         .mdb = "CN=DB02,CN=Databases",
         .alias = "team",
         .sid = "S-team",
         .delegates = {"CN=tuser,DC=uclabor,DC=de", "CN=dmbx,DC=uclabor,DC=de"},
         .sd = sd_team,
         .sd_len = sizeof sd_team},
};
static bool b_res_auser_enabled, b_linked_has_upn;

static uint32_t fx_uac(const struct fx *f)
{
    if (cur == setup_b && f == &setup_b[2] && b_res_auser_enabled)
        return 512;
    return f->uac;
}

static const char *fx_upn(const struct fx *f)
{
    if (cur == setup_b && f == &setup_b[0] && b_linked_has_upn)
        return "auser@acc.example";
    return f->upn;
}

static bool eqn(const char *a, const char *key, size_t n)
{
    return a && strlen(a) == n && strncasecmp(a, key, n) == 0;
}

static void fx_fill(const struct fx *f, struct dir_entry *e, const char *rights_of)
{
    memset(e, 0, sizeof *e);
    snprintf(e->dn, sizeof e->dn, "%s", f->dn);
    e->sid_len = (uint8_t)strlen(f->sid);
    memcpy(e->sid, f->sid, e->sid_len);
    if (f->master_sid) {
        e->master_sid_len = (uint8_t)strlen(f->master_sid);
        memcpy(e->master_sid, f->master_sid, e->master_sid_len);
    }
    e->forest = (uint8_t)f->forest;
    e->uac = fx_uac(f);
    e->admin = f->admin;
    e->has_mailbox = f->mdb != NULL;
    e->proto_disabled = f->proto_off;
    if (f->alias)
        snprintf(e->alias, sizeof e->alias, "%s", f->alias);
    if (f->mdb)
        snprintf(e->home_mdb, sizeof e->home_mdb, "%s", f->mdb);
    for (int i = 0; rights_of && i < 3 && f->delegates[i]; i++)
        e->delegate_ok |= strcasecmp(f->delegates[i], rights_of) == 0;
}

static bool fx_match(const struct fx *f, const struct store_op *op)
{
    bool org = f->forest == 0;
    switch (op->kind) {
    case SOP_FIND_SAM:
        return f->forest == op->forest && (op->domain < 0 || f->domain == op->domain) &&
               eqn(f->sam, op->key, op->key_len) && !(fx_uac(f) & 2);
    case SOP_FIND_UPN:
        return f->forest == op->forest && eqn(fx_upn(f), op->key, op->key_len);
    case SOP_FIND_SMTP:
        return org && eqn(f->smtp, op->key, op->key_len);
    case SOP_FIND_LINKED:
        return org && f->master_sid && f->mdb && strlen(f->master_sid) == op->sid_len &&
               memcmp(f->master_sid, op->sid, op->sid_len) == 0;
    case SOP_FIND_ALIAS:
        return org && f->mdb && eqn(f->alias, op->key, op->key_len);
    case SOP_FIND_SID:
        return f->forest == op->forest && strlen(f->sid) == op->sid_len &&
               memcmp(f->sid, op->sid, op->sid_len) == 0;
    default:
        return false;
    }
}

static bool store_down;
static char oplog[512];

static void run_op(const struct store_op *op, struct store_result *res)
{
    static const char *const names[] = {"sam",   "upn", "smtp", "bind",  "linked",
                                        "alias", "db",  "sid",  "groups"};
    size_t o = strlen(oplog);
    snprintf(oplog + o, sizeof oplog - o, "%s%s", o ? " " : "", names[op->kind]);
    if (store_down) {
        res->status = STORE_UNAVAILABLE;
        return;
    }
    res->status = STORE_OK;
    if (op->kind == SOP_BIND) {
        res->status = STORE_BIND_FAILED;
        for (size_t i = 0; i < ncur; i++)
            if (strcmp(cur[i].dn, op->dn) == 0 && strlen(cur[i].password) == op->pass_len &&
                memcmp(cur[i].password, op->pass, op->pass_len) == 0)
                res->status =
                        strcmp(cur[i].password, "expired") == 0 ? STORE_BIND_EXPIRED : STORE_OK;
        return;
    }
    if (op->kind == SOP_TOKEN_GROUPS) {
        for (size_t i = 0; i < ncur; i++) {
            if (strcmp(cur[i].dn, op->dn) != 0 || !cur[i].groups)
                continue;
            res->token_overflow = cur[i].groups_len > op->token_cap;
            res->token_len = res->token_overflow ? 0 : cur[i].groups_len;
            memcpy(op->token_out, cur[i].groups, res->token_len);
        }
        return;
    }
    if (op->kind == SOP_DATABASE) {
        if (strstr(op->dn, "DB01"))
            snprintf(res->hosts[res->nhosts++], DIR_HOST_MAX, "mbx1.example");
        if (strstr(op->dn, "DB02"))
            snprintf(res->hosts[res->nhosts++], DIR_HOST_MAX, "mbx2.example");
        return;
    }
    for (size_t i = 0; i < ncur && res->n < 2; i++) {
        if (!fx_match(&cur[i], op))
            continue;
        struct dir_entry *e = &res->e[res->n++];
        fx_fill(&cur[i], e, op->kind == SOP_FIND_ALIAS ? op->dn : NULL);
        if (op->kind == SOP_FIND_ALIAS && op->token && cur[i].sd)
            e->sd_access = (uint8_t)sd_check(cur[i].sd, cur[i].sd_len, op->token, op->token_len,
                                             SD_RIGHT_FULL_ACCESS);
    }
}

static struct dir_topology topo_a, topo_b;

static void add_domain(struct dir_forest *f, const char *nb, const char *dns, const char *base)
{
    struct dir_domain *d = &f->domains[f->ndomains++];
    snprintf(d->netbios, sizeof d->netbios, "%s", nb);
    snprintf(d->dns, sizeof d->dns, "%s", dns);
    snprintf(d->base, sizeof d->base, "%s", base);
}

static void topologies(void)
{
    topo_a.nforests = 1;
    topo_a.forests[0].organization = true;
    add_domain(&topo_a.forests[0], "UCLABOR", "uclabor.de", "DC=uclabor,DC=de");
    add_domain(&topo_a.forests[0], "CHILD", "child.uclabor.de", "DC=child,DC=uclabor,DC=de");
    topo_b.nforests = 2;
    topo_b.forests[0].organization = true;
    add_domain(&topo_b.forests[0], "RES", "res.example", "DC=res,DC=example");
    add_domain(&topo_b.forests[0], "RESKID", "kid.res.example", "DC=kid,DC=res,DC=example");
    add_domain(&topo_b.forests[1], "ACC", "acc.example", "DC=acc,DC=example");
    add_domain(&topo_b.forests[1], "ACC2", "eu.acc.example", "DC=eu,DC=acc,DC=example");
}

/* Runs one resolution to its end; returns it for checks. */
static struct resolution *resolve(char setup, const char *name, const char *pass,
                                  enum fg_proto proto, const struct resolve_conf *conf)
{
    static struct resolution rs;
    /* MasterUser, as in the field tests: delegates may log on. */
    static const struct resolve_conf dflt = {.allow_delegates = true,
                                             .delegate_check = DELEGATE_LIST};
    cur = setup == 'A' ? setup_a : setup == 'S' ? setup_s : setup_b;
    ncur = setup == 'A'   ? FG_ARRAY_SIZE(setup_a)
           : setup == 'S' ? FG_ARRAY_SIZE(setup_s)
                          : FG_ARRAY_SIZE(setup_b);
    oplog[0] = 0;
    resolve_init(&rs, setup == 'B' ? &topo_b : &topo_a, conf ? conf : &dflt, name, strlen(name),
                 pass, strlen(pass), proto);
    int guard = 0;
    while (resolve_next(&rs) == RESOLVE_OP && guard++ < 20)
        run_op(&rs.op, &rs.res);
    CHECKF(guard < 20, "%s: the resolver did not finish", name);
    return &rs;
}

struct rcase {
    char setup;
    const char *typed, *pass;
    enum login_status st;
    const char *mailbox; /* alias of the mailbox opened, or NULL */
    enum resolve_why why;
    const char *ops; /* the store operations asked for, in order */
};

static const struct rcase cases_a[] = {
        {'A', "tuser", "pw-t", LOGIN_OK, "testalias", RW_NONE, "sam bind db"},
        {'A', "UCLABOR\\tuser", "pw-t", LOGIN_OK, "testalias", RW_NONE, "sam bind db"},
        {'A', "UCLABOR/tuser", "pw-t", LOGIN_OK, "testalias", RW_NONE, "sam bind db"},
        {'A', "uclabor.de\\tuser", "pw-t", LOGIN_OK, "testalias", RW_NONE, "sam bind db"},
        {'A', "uclabor\\TUSER", "pw-t", LOGIN_OK, "testalias", RW_NONE, "sam bind db"},
        {'A', "UCLABOR\\tuser\\other", "pw-t", LOGIN_OK, "other", RW_NONE, "sam bind alias db"},
        {'A', "UCLABOR\\tuser\\testalias", "pw-t", LOGIN_OK, "testalias", RW_NONE,
         "sam bind alias db"},
        {'A', "tuser.upn@upn.uclabor.de", "pw-t", LOGIN_OK, "testalias", RW_NONE, "upn bind db"},
        {'A', "tuser.upn@upn.uclabor.de\\other", "pw-t", LOGIN_OK, "other", RW_NONE,
         "upn bind alias db"},
        {'A', "UCLABOR\\tuser.upn@upn.uclabor.de", "pw-t", LOGIN_OK, "testalias", RW_NONE,
         "upn bind db"},
        {'A', "UCLABOR\\tuser.upn@upn.uclabor.de\\other", "pw-t", LOGIN_FAILED, NULL,
         RW_INVALID_NAME, ""},
        {'A', "UCLABOR\\tuser.upn@upn.uclabor.de\\tuser.upn@upn.uclabor.de", "pw-t", LOGIN_FAILED,
         NULL, RW_INVALID_NAME, ""},
        {'A', "testalias", "pw-t", LOGIN_FAILED, NULL, RW_NOT_FOUND, "sam bind"},
        {'A', "testalias@uclabor.de", "pw-t", LOGIN_FAILED, NULL, RW_NOT_FOUND, "upn bind"},
        {'A', "anonymous", "x", LOGIN_FAILED, NULL, RW_ANONYMOUS, ""},
        {'A', "Guest", "x", LOGIN_FAILED, NULL, RW_ANONYMOUS, ""},
        {'A', "UCLABOR\\guest", "x", LOGIN_FAILED, NULL, RW_ANONYMOUS, ""},
        {'A', "administrator", "pw-a", LOGIN_FAILED, NULL, RW_ADMIN, "sam bind"},
        {'A', "UCLABOR\\tuser\\nosuchalias", "pw-t", LOGIN_FAILED, NULL, RW_NO_SUCH_ALIAS,
         "sam bind alias"},
        /* beyond the field table */
        {'A', "tuser", "wrong", LOGIN_FAILED, NULL, RW_BAD_PASSWORD, "sam bind"},
        {'A', "tuser", "", LOGIN_FAILED, NULL, RW_EMPTY_PASSWORD, ""},
        {'A', "nosuchuser", "pw", LOGIN_FAILED, NULL, RW_NOT_FOUND, "sam bind"},
        {'A', "NODOM\\tuser", "pw-t", LOGIN_FAILED, NULL, RW_UNKNOWN_DOMAIN, "bind"},
        {'A', "childonly", "pw-c", LOGIN_FAILED, NULL, RW_NOT_FOUND, "sam bind"},
        {'A', "CHILD\\childonly", "pw-c", LOGIN_OK, "childonly", RW_NONE, "sam bind db"},
        {'A', "child.uclabor.de\\childonly", "pw-c", LOGIN_OK, "childonly", RW_NONE, "sam bind db"},
        {'A', "CHILD\\tuser", "pw-t", LOGIN_FAILED, NULL, RW_NOT_FOUND, "sam bind"},
        {'A', "CHILD\\tuser.upn@upn.uclabor.de", "pw-t", LOGIN_FAILED, NULL, RW_WRONG_DOMAIN,
         "upn bind"},
        /* domain\upn: the account lies in exactly that domain, not in one below it */
        {'A', "child.uclabor.de\\tuser.upn@upn.uclabor.de", "pw-t", LOGIN_FAILED, NULL,
         RW_WRONG_DOMAIN, "upn bind"},
        {'A', "UCLABOR\\childonly@child.uclabor.de", "pw-c", LOGIN_FAILED, NULL, RW_WRONG_DOMAIN,
         "upn bind"},
        {'A', "uclabor.de\\childonly@child.uclabor.de", "pw-c", LOGIN_FAILED, NULL, RW_WRONG_DOMAIN,
         "upn bind"},
        {'A', "CHILD\\childonly@child.uclabor.de", "pw-c", LOGIN_OK, "childonly", RW_NONE,
         "upn bind db"},
        {'A', "child.uclabor.de\\childonly@child.uclabor.de", "pw-c", LOGIN_OK, "childonly",
         RW_NONE, "upn bind db"},
        {'A', "off", "pw-f", LOGIN_FAILED, NULL, RW_NOT_FOUND, "sam bind"},
        {'A', "off@uclabor.de", "pw-f", LOGIN_FAILED, NULL, RW_DISABLED, "upn bind"},
        {'A', "old", "expired", LOGIN_EXPIRED, NULL, RW_EXPIRED, "sam bind"},
        {'A', "nobox", "pw-x", LOGIN_FAILED, NULL, RW_NO_MAILBOX, "sam bind linked"},
        {'A', "noimap", "pw-n", LOGIN_DENIED, NULL, RW_PROTOCOL_DISABLED, "sam bind"},
        {'A', "lost", "pw-l", LOGIN_UNAVAILABLE, NULL, RW_NO_DATABASE_SERVER, "sam bind db"},
        {'A', "UCLABOR\\other\\testalias", "pw-o", LOGIN_DENIED, NULL, RW_NO_RIGHTS,
         "sam bind alias"},
        {'A', "UCLABOR\\nobox\\other", "pw-x", LOGIN_DENIED, NULL, RW_NO_RIGHTS,
         "sam bind linked alias"},
        {'A', "x@y@z", "pw", LOGIN_FAILED, NULL, RW_INVALID_NAME, ""},
};

static const struct rcase cases_b[] = {
        {'B', "ACC\\auser", "pw-au", LOGIN_OK, "linked", RW_NONE, "sam bind linked db"},
        {'B', "ACC\\auser\\linked", "pw-au", LOGIN_OK, "linked", RW_NONE,
         "sam bind linked alias db"},
        {'B', "auser@acc.example", "pw-au", LOGIN_OK, "linked", RW_NONE, "upn upn bind linked db"},
        {'B', "auser@acc.example\\linked", "pw-au", LOGIN_OK, "linked", RW_NONE,
         "upn upn bind linked alias db"},
        {'B', "linked@res.example", "pw-au", LOGIN_FAILED, NULL, RW_NOT_FOUND, "upn upn bind"},
        {'B', "auser", "pw-au", LOGIN_OK, "linked", RW_NONE, "sam sam bind linked db"},
        {'B', "ACC\\auser", "wrong", LOGIN_FAILED, NULL, RW_BAD_PASSWORD, "sam bind"},
        {'B', "dupuser", "pw-d", LOGIN_FAILED, NULL, RW_AMBIGUOUS, "sam sam bind"},
        {'B', "ACC2\\dupuser", "pw-d", LOGIN_FAILED, NULL, RW_NO_MAILBOX, "sam bind linked"},
};

static void check_case(const struct rcase *c, const struct resolve_conf *conf)
{
    struct resolution *rs = resolve(c->setup, c->typed, c->pass, FG_PROTO_IMAP, conf);
    CHECKF(rs->status == c->st && rs->why == c->why, "%c %s: status %d why %s, expected %d %s",
           c->setup, c->typed, rs->status, resolve_why_text(rs->why), c->st,
           resolve_why_text(c->why));
    CHECKF(strcmp(oplog, c->ops) == 0, "%c %s: ops \"%s\", expected \"%s\"", c->setup, c->typed,
           oplog, c->ops);
    if (c->mailbox)
        CHECKF(strcmp(rs->mailbox.alias, c->mailbox) == 0 && rs->nhosts >= 1,
               "%c %s: mailbox %s, expected %s", c->setup, c->typed, rs->mailbox.alias, c->mailbox);
}

static void test_setup_a(void)
{
    for (size_t i = 0; i < FG_ARRAY_SIZE(cases_a); i++)
        check_case(&cases_a[i], NULL);
    /* The database routes: DB01 -> mbx1, DB02 -> mbx2. */
    struct resolution *rs = resolve('A', "UCLABOR\\tuser\\other", "pw-t", FG_PROTO_POP3, NULL);
    CHECK(rs->status == LOGIN_OK && strcmp(rs->hosts[0], "mbx2.example") == 0);
    rs = resolve('A', "tuser", "pw-t", FG_PROTO_POP3, NULL);
    CHECK(rs->status == LOGIN_OK && strcmp(rs->hosts[0], "mbx1.example") == 0);
    /* IMAP4 off does not stop POP3 */
    rs = resolve('A', "noimap", "pw-n", FG_PROTO_POP3, NULL);
    CHECK_INT(rs->status, LOGIN_OK);
    /* AllowAdminLogon */
    struct resolve_conf admins = {
            .allow_admin = true, .allow_delegates = true, .delegate_check = DELEGATE_LIST};
    rs = resolve('A', "administrator", "pw-a", FG_PROTO_IMAP, &admins);
    CHECK_INT(rs->status, LOGIN_OK);
    /* the directory down: unavailable, never "failed" */
    store_down = true;
    rs = resolve('A', "tuser", "pw-t", FG_PROTO_IMAP, NULL);
    CHECK(rs->status == LOGIN_UNAVAILABLE && rs->why == RW_UNAVAILABLE);
    store_down = false;
}

static void test_setup_b(void)
{
    for (size_t i = 0; i < FG_ARRAY_SIZE(cases_b); i++)
        check_case(&cases_b[i], NULL);
    /* RES's auser, once enabled, is found first: its password is checked. */
    b_res_auser_enabled = true;
    check_case(
            &(struct rcase){'B', "auser", "pw-au", LOGIN_FAILED, NULL, RW_BAD_PASSWORD, "sam bind"},
            NULL);
    check_case(&(struct rcase){'B', "auser", "pw-res-auser", LOGIN_OK, "resauser", RW_NONE,
                               "sam bind db"},
               NULL);
    b_res_auser_enabled = false;
    /* Two accounts bear the UPN: fails, whichever password. */
    b_linked_has_upn = true;
    check_case(&(struct rcase){'B', "auser@acc.example", "pw-au", LOGIN_FAILED, NULL, RW_AMBIGUOUS,
                               "upn upn bind"},
               NULL);
    b_linked_has_upn = false;
    /* AllowSmtpAddressLogin: the linked mailbox's address logs on as its master. */
    struct resolve_conf smtp = {
            .allow_smtp_login = true, .allow_delegates = true, .delegate_check = DELEGATE_LIST};
    check_case(&(struct rcase){'B', "linked@res.example", "pw-au", LOGIN_OK, "linked", RW_NONE,
                               "upn upn smtp sid bind linked db"},
               &smtp);
    check_case(&(struct rcase){'B', "nobody@res.example", "pw", LOGIN_FAILED, NULL, RW_NOT_FOUND,
                               "upn upn smtp bind"},
               &smtp);
}

/* LoginMode = PassThrough: the backend gets the client's own password, which
 * opens the client's own mailbox only. A delegate logon is refused after the
 * password check and before any database is read; the own mailbox named by
 * its alias still works. */
static void test_passthrough_delegates(void)
{
    static const struct resolve_conf pt = {.allow_delegates = false,
                                           .delegate_check = DELEGATE_LIST};
    static const struct rcase cases[] = {
            {'A', "UCLABOR\\tuser\\other", "pw-t", LOGIN_DENIED, NULL, RW_DELEGATE_NEEDS_MASTER,
             "sam bind alias"},
            {'A', "tuser.upn@upn.uclabor.de\\other", "pw-t", LOGIN_DENIED, NULL,
             RW_DELEGATE_NEEDS_MASTER, "upn bind alias"},
            {'A', "UCLABOR\\tuser\\other", "wrong", LOGIN_FAILED, NULL, RW_BAD_PASSWORD,
             "sam bind"},
            {'A', "UCLABOR\\other\\testalias", "pw-o", LOGIN_DENIED, NULL, RW_NO_RIGHTS,
             "sam bind alias"},
            {'A', "UCLABOR\\tuser\\testalias", "pw-t", LOGIN_OK, "testalias", RW_NONE,
             "sam bind alias db"},
            {'A', "tuser", "pw-t", LOGIN_OK, "testalias", RW_NONE, "sam bind db"},
            {'B', "ACC\\auser\\linked", "pw-au", LOGIN_OK, "linked", RW_NONE,
             "sam bind linked alias db"},
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(cases); i++)
        check_case(&cases[i], &pt);
    CHECK(strcmp(resolve_why_text(RW_DELEGATE_NEEDS_MASTER),
                 "delegate logons need LoginMode MasterUser") == 0);
}

/* A warm resolution (a route from the cache): one bind as the cached
 * account, or none when the credential cache knows the password, then the
 * route's own checks; the outcomes of a wrong or expired password are a
 * cold resolution's. */
static void test_warm(void)
{
    static const struct resolve_conf master = {.allow_delegates = true,
                                               .delegate_check = DELEGATE_LIST};
    static const struct resolve_conf admins = {
            .allow_delegates = true, .allow_admin = true, .delegate_check = DELEGATE_LIST};
    static const struct {
        const char *pass;
        bool admin, known;
        uint8_t off;
        enum fg_proto proto;
        const struct resolve_conf *conf;
        enum login_status st;
        enum resolve_why why;
        const char *ops;
    } rows[] = {
            {"pw-t", false, false, 0, FG_PROTO_IMAP, &master, LOGIN_OK, RW_NONE, "bind"},
            {"wrong", false, false, 0, FG_PROTO_IMAP, &master, LOGIN_FAILED, RW_BAD_PASSWORD,
             "bind"},
            {"whatever", false, true, 0, FG_PROTO_IMAP, &master, LOGIN_OK, RW_NONE, ""},
            {"", false, true, 0, FG_PROTO_IMAP, &master, LOGIN_FAILED, RW_EMPTY_PASSWORD, ""},
            {"pw-t", false, false, 1u << FG_PROTO_IMAP, FG_PROTO_IMAP, &master, LOGIN_DENIED,
             RW_PROTOCOL_DISABLED, "bind"},
            {"pw-t", false, false, 1u << FG_PROTO_IMAP, FG_PROTO_POP3, &master, LOGIN_OK, RW_NONE,
             "bind"},
            {"wrong", false, false, 1u << FG_PROTO_IMAP, FG_PROTO_IMAP, &master, LOGIN_FAILED,
             RW_BAD_PASSWORD, "bind"}, /* nothing told before the password is right */
            {"pw-t", true, false, 0, FG_PROTO_IMAP, &master, LOGIN_FAILED, RW_ADMIN, "bind"},
            {"pw-t", true, true, 0, FG_PROTO_IMAP, &admins, LOGIN_OK, RW_NONE, ""},
    };
    static struct resolution rs;
    cur = setup_a;
    ncur = FG_ARRAY_SIZE(setup_a);
    for (size_t i = 0; i < FG_ARRAY_SIZE(rows); i++) {
        const char *dn = setup_a[0].dn;
        oplog[0] = 0;
        resolve_init_warm(&rs, &topo_a, rows[i].conf, "UCLABOR\\tuser", 13, rows[i].pass,
                          strlen(rows[i].pass), rows[i].proto, dn, 0, rows[i].admin, rows[i].off,
                          rows[i].known);
        int guard = 0;
        while (resolve_next(&rs) == RESOLVE_OP && guard++ < 5) {
            CHECK(rs.op.kind == SOP_BIND && strcmp(rs.op.dn, dn) == 0);
            run_op(&rs.op, &rs.res);
        }
        CHECKF(rs.status == rows[i].st && rs.why == rows[i].why && strcmp(oplog, rows[i].ops) == 0,
               "warm row %zu: status %d why %d ops \"%s\"", i, rs.status, rs.why, oplog);
        CHECK(rs.ln.form == LN_DOMAIN_USER); /* split again, for the audit line */
    }
    /* expired: AD's 532/773 on the warm bind too */
    oplog[0] = 0;
    resolve_init_warm(&rs, &topo_a, &master, "x", 1, "expired", 7, FG_PROTO_IMAP, "CN=nobody", 0,
                      false, 0, false);
    while (resolve_next(&rs) == RESOLVE_OP) {
        rs.res.status = STORE_BIND_EXPIRED;
    }
    CHECK(rs.status == LOGIN_EXPIRED && rs.why == RW_EXPIRED);
    CHECK(resolve_why_not_found(RW_NOT_FOUND) && resolve_why_not_found(RW_UNKNOWN_DOMAIN) &&
          resolve_why_not_found(RW_WRONG_DOMAIN));
    CHECK(!resolve_why_not_found(RW_BAD_PASSWORD) && !resolve_why_not_found(RW_AMBIGUOUS) &&
          !resolve_why_not_found(RW_DISABLED) && !resolve_why_not_found(RW_UNAVAILABLE));
}

/* resolve_domain_of: the deepest naming context, never a parent's. */
static void test_domain_of(void)
{
    const struct dir_forest *fo = &topo_a.forests[0];
    CHECK_INT(resolve_domain_of(fo, "CN=x,DC=uclabor,DC=de"), 0);
    CHECK_INT(resolve_domain_of(fo, "CN=x,OU=y,DC=child,DC=uclabor,DC=de"), 1);
    CHECK_INT(resolve_domain_of(fo, "cn=x,dc=CHILD,dc=uclabor,dc=de"), 1);
    CHECK_INT(resolve_domain_of(fo, "DC=child,DC=uclabor,DC=de"), 1);
    CHECK_INT(resolve_domain_of(fo, "CN=x,DC=notchild,DC=uclabor,DC=de"), 0);
    CHECK_INT(resolve_domain_of(fo, "CN=x,DC=example"), -1);
    CHECK(resolve_dn_under("CN=x,DC=child,DC=uclabor,DC=de", "DC=uclabor,DC=de"));
}

static void test_helpers(void)
{
    char db[64];
    CHECK_INT(resolve_database_name("CN=DB01,CN=Databases,CN=x", db, sizeof db), 4);
    CHECK(strcmp(db, "DB01") == 0);
    int f, d;
    CHECK(resolve_find_domain(&topo_b, "eu.ACC.example", 14, &f, &d) && f == 1 && d == 1);
    CHECK(!resolve_find_domain(&topo_b, "acc", 3, &f, &d) || (f == 1 && d == 0));
    CHECK(!resolve_find_domain(&topo_b, "ac", 2, &f, &d));
    for (int w = 0; w < RW_COUNT; w++)
        CHECK(resolve_why_text((enum resolve_why)w) != NULL);
}

/* DelegateCheck: Full Access by the mailbox's security descriptor (the
 * default, Exchange's), by the delegate list, or by either with the
 * descriptor's deny winning. The token (the account and its tokenGroups) is
 * asked for only when the alias names another's mailbox. */
static void test_delegate_check(void)
{
    static const struct resolve_conf sd = {.allow_delegates = true},
                                     list = {.allow_delegates = true,
                                             .delegate_check = DELEGATE_LIST},
                                     both = {.allow_delegates = true,
                                             .delegate_check = DELEGATE_BOTH};
    static const struct {
        const struct resolve_conf *conf;
        struct rcase c;
    } rows[] = {
            {&sd,
             {'S', "UCLABOR\\helper\\team", "pw-helper", LOGIN_OK, "team", RW_NONE,
              "sam bind linked groups alias db"}},
            {&sd,
             {'S', "UCLABOR\\blocked\\team", "pw-blocked", LOGIN_DENIED, NULL, RW_NO_RIGHTS,
              "sam bind linked groups alias"}},
            {&sd,
             {'S', "UCLABOR\\tuser\\team", "pw-tuser", LOGIN_DENIED, NULL, RW_NO_RIGHTS,
              "sam bind groups alias"}},
            {&sd,
             {'S', "UCLABOR\\tuser\\testalias", "pw-tuser", LOGIN_OK, "testalias", RW_NONE,
              "sam bind alias db"}},
            {&sd,
             {'S', "UCLABOR\\many\\team", "pw-many", LOGIN_DENIED, NULL, RW_TOO_MANY_GROUPS,
              "sam bind linked groups"}},
            {&sd,
             {'S', "UCLABOR\\helper\\team", "wrong", LOGIN_FAILED, NULL, RW_BAD_PASSWORD,
              "sam bind"}},
            {&list,
             {'S', "UCLABOR\\helper\\team", "pw-helper", LOGIN_DENIED, NULL, RW_NO_RIGHTS,
              "sam bind linked alias"}},
            {&list,
             {'S', "UCLABOR\\tuser\\team", "pw-tuser", LOGIN_OK, "team", RW_NONE,
              "sam bind alias db"}},
            {&list,
             {'S', "UCLABOR\\dmbx\\team", "pw-dmbx", LOGIN_OK, "team", RW_NONE,
              "sam bind alias db"}},
            {&both,
             {'S', "UCLABOR\\tuser\\team", "pw-tuser", LOGIN_OK, "team", RW_NONE,
              "sam bind groups alias db"}},
            {&both,
             {'S', "UCLABOR\\helper\\team", "pw-helper", LOGIN_OK, "team", RW_NONE,
              "sam bind linked groups alias db"}},
            {&both,
             {'S', "UCLABOR\\dmbx\\team", "pw-dmbx", LOGIN_DENIED, NULL, RW_NO_RIGHTS,
              "sam bind groups alias"}},
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(rows); i++)
        check_case(&rows[i].c, rows[i].conf);
    /* the token holds the account's SID (when binary), Everyone and
     * Authenticated Users before its groups */
    struct resolution *rs = resolve('S', "UCLABOR\\helper\\team", "pw-helper", FG_PROTO_IMAP, &sd);
    static const uint8_t everyone[] = {1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0};
    CHECK(rs->status == LOGIN_OK && sd_token_has(rs->token, rs->token_len, everyone, 12) &&
          sd_token_has(rs->token, rs->token_len, sid_mgr, sizeof sid_mgr) &&
          !sd_token_has(rs->token, rs->token_len, sid_deny, sizeof sid_deny));
}

/* Kerberos principals (resolve_init_principal): the ticket was the proof,
 * so no bind is asked for, not even the dummy bind of a miss; the realm's
 * domain's sAMAccountName first, then the UPN, as the KDC looks clients up;
 * an enterprise principal by its UPN only. */
static struct resolution *resolve_principal(char setup, const char *name, bool enterprise)
{
    static struct resolution rs;
    static const struct resolve_conf dflt = {.allow_delegates = true,
                                             .delegate_check = DELEGATE_LIST};
    cur = setup == 'A' ? setup_a : setup_b;
    ncur = setup == 'A' ? FG_ARRAY_SIZE(setup_a) : FG_ARRAY_SIZE(setup_b);
    oplog[0] = 0;
    resolve_init_principal(&rs, setup == 'B' ? &topo_b : &topo_a, &dflt, name, strlen(name),
                           enterprise, FG_PROTO_IMAP);
    int guard = 0;
    while (resolve_next(&rs) == RESOLVE_OP && guard++ < 20)
        run_op(&rs.op, &rs.res);
    CHECKF(guard < 20, "%s: the resolver did not finish", name);
    return &rs;
}

static void test_principal(void)
{
    static const struct {
        struct rcase c;
        bool enterprise;
    } rows[] = {
            {{'A', "tuser@UCLABOR.DE", "", LOGIN_OK, "testalias", RW_NONE, "sam db"}, false},
            {{'A', "TUSER@uclabor.de", "", LOGIN_OK, "testalias", RW_NONE, "sam db"}, false},
            /* not a sAMAccountName: the UPN, as the KDC tries next */
            {{'A', "tuser.upn@upn.uclabor.de", "", LOGIN_OK, "testalias", RW_NONE, "upn db"}, true},
            {{'A', "other@UCLABOR.DE", "", LOGIN_OK, "other", RW_NONE, "sam db"}, false},
            {{'A', "tuser@UCLABOR.DE\\other", "", LOGIN_OK, "other", RW_NONE, "sam alias db"},
             false},
            {{'A', "other@UCLABOR.DE\\testalias", "", LOGIN_DENIED, NULL, RW_NO_RIGHTS,
              "sam alias"},
             false},
            /* a miss asks for no bind: nothing to hide by timing */
            {{'A', "nobody@UCLABOR.DE", "", LOGIN_FAILED, NULL, RW_NOT_FOUND, "sam upn"}, false},
            {{'A', "tuser@ELSEWHERE.EXAMPLE", "", LOGIN_FAILED, NULL, RW_NOT_FOUND, "upn"}, false},
            /* a ticket outlives a disabled account: found by its UPN, refused */
            {{'A', "off@uclabor.de", "", LOGIN_FAILED, NULL, RW_DISABLED, "sam upn"}, false},
            {{'A', "administrator@UCLABOR.DE", "", LOGIN_FAILED, NULL, RW_ADMIN, "sam"}, false},
            {{'A', "nobox@UCLABOR.DE", "", LOGIN_FAILED, NULL, RW_NO_MAILBOX, "sam linked"}, false},
            {{'A', "UCLABOR\\tuser", "", LOGIN_FAILED, NULL, RW_INVALID_NAME, ""}, false},
            /* the account forest's realm: the linked mailbox */
            {{'B', "auser@ACC.EXAMPLE", "", LOGIN_OK, "linked", RW_NONE, "sam linked db"}, false},
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(rows); i++) {
        const struct rcase *c = &rows[i].c;
        struct resolution *rs = resolve_principal(c->setup, c->typed, rows[i].enterprise);
        CHECKF(rs->status == c->st && rs->why == c->why, "principal %s: status %d why %s", c->typed,
               rs->status, resolve_why_text(rs->why));
        CHECKF(strcmp(oplog, c->ops) == 0, "principal %s: ops \"%s\", expected \"%s\"", c->typed,
               oplog, c->ops);
        if (c->mailbox)
            CHECKF(strcmp(rs->mailbox.alias, c->mailbox) == 0, "principal %s: mailbox %s", c->typed,
                   rs->mailbox.alias);
    }
}

int main(void)
{
    topologies();
    test_principal();
    test_delegate_check();
    test_setup_a();
    test_setup_b();
    test_helpers();
    test_passthrough_delegates();
    test_domain_of();
    test_warm();
    return th_finish("test_resolve");
}

/*
 * The resolver: see resolve.h. Each state handles the answer to the store
 * operation it asked for and either asks for the next one or ends.
 */
#include "resolve.h"
#include "secdesc.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define UAC_DISABLED 0x2

enum rs_state {
    S_START,
    S_SAM,  /* plain name: the organisation's default domain, then account forests */
    S_DSAM, /* domain\user */
    S_KSAM, /* a Kerberos principal: sAMAccountName in the realm's domain, then its UPN */
    S_UPN,  /* every forest, counting matches */
    S_SMTP, /* AllowSmtpAddressLogin */
    S_SID,  /* a linked mailbox's master account, forest by forest */
    S_BIND,
    S_LINKED, /* the account's own mailbox, linked by SID */
    S_GROUPS, /* the account's tokenGroups, for a mailbox's security descriptor */
    S_ALIAS,
    S_DB,
    S_DUMMY,     /* a bind that cannot succeed, so that a miss costs what a wrong password does */
    S_WARM,      /* a cached route: bind, unless the password is known */
    S_WARM_BIND, /* a cached route: the bind's answer */
    S_DONE,
};

void resolve_init(struct resolution *rs, const struct dir_topology *topo,
                  const struct resolve_conf *conf, const char *name, size_t name_len,
                  const char *pass, size_t pass_len, enum fg_proto proto)
{
    memset(rs, 0, sizeof *rs);
    rs->topo = topo;
    rs->conf = conf;
    rs->name = name;
    rs->name_len = name_len;
    rs->pass = pass;
    rs->pass_len = pass_len;
    rs->proto = proto;
    rs->domain_forest = rs->domain_index = -1;
}

void resolve_init_warm(struct resolution *rs, const struct dir_topology *topo,
                       const struct resolve_conf *conf, const char *name, size_t name_len,
                       const char *pass, size_t pass_len, enum fg_proto proto, const char *account,
                       int forest, bool admin, uint8_t proto_disabled, bool pass_known)
{
    resolve_init(rs, topo, conf, name, name_len, pass, pass_len, proto);
    logon_name_split(name, name_len, &rs->ln);
    snprintf(rs->account.dn, sizeof rs->account.dn, "%s", account);
    rs->account.forest = (uint8_t)forest;
    rs->account.admin = admin;
    rs->mailbox.proto_disabled = proto_disabled;
    rs->mailbox.has_mailbox = true;
    rs->state = S_WARM;
    rs->pass_known = pass_known;
}

void resolve_init_principal(struct resolution *rs, const struct dir_topology *topo,
                            const struct resolve_conf *conf, const char *name, size_t name_len,
                            bool enterprise, enum fg_proto proto)
{
    resolve_init(rs, topo, conf, name, name_len, NULL, 0, proto);
    rs->principal = true;
    rs->enterprise = enterprise;
}

bool resolve_why_not_found(enum resolve_why why)
{
    return why == RW_NOT_FOUND || why == RW_UNKNOWN_DOMAIN || why == RW_WRONG_DOMAIN;
}

static enum resolve_step rs_done(struct resolution *rs, enum login_status st, enum resolve_why why)
{
    rs->status = st;
    rs->why = why;
    rs->state = S_DONE;
    return RESOLVE_DONE;
}

static enum resolve_step rs_fail(struct resolution *rs, enum resolve_why why)
{
    return rs_done(rs, LOGIN_FAILED, why);
}

static enum resolve_step rs_ask(struct resolution *rs, enum rs_state next, enum store_op_kind kind,
                                int forest);

/*
 * The lookup found no account to bind as (unknown, ambiguous, disabled):
 * the store still checks the password, against nobody, before the failure is
 * told -- an unknown name must not answer faster than a wrong password.
 */
static enum resolve_step rs_miss(struct resolution *rs, enum resolve_why why)
{
    if (rs->principal) /* the ticket proved who asks: nothing to hide by timing */
        return rs_fail(rs, why);
    enum resolve_step r = rs_ask(rs, S_DUMMY, SOP_BIND, rs->op.forest);
    rs->why = why;
    rs->op.dn = "";
    rs->op.pass = rs->pass;
    rs->op.pass_len = rs->pass_len;
    return r;
}

/* Asks for an operation; the caller fills in what the kind needs. */
static enum resolve_step rs_ask(struct resolution *rs, enum rs_state next, enum store_op_kind kind,
                                int forest)
{
    memset(&rs->op, 0, sizeof rs->op);
    memset(&rs->res, 0, sizeof rs->res);
    rs->op.kind = kind;
    rs->op.forest = forest;
    rs->op.domain = -1;
    rs->op.login_attr = rs->conf->login_attr ? rs->conf->login_attr : "mailNickname";
    rs->op.delegate_attr =
            rs->conf->delegate_attr ? rs->conf->delegate_attr : "msExchDelegateListLink";
    rs->state = (uint8_t)next;
    rs->ops++;
    return RESOLVE_OP;
}

/* The k-th forest in search order: the organisation forest first. */
static int rs_forest_at(const struct resolution *rs, unsigned k)
{
    unsigned org = rs->topo->org;
    if (k == 0)
        return (int)org;
    return (int)(k <= org ? k - 1 : k);
}

static const char *rs_part(const struct resolution *rs, struct ln_part p)
{
    return rs->name + p.off;
}

static enum resolve_step rs_find_sam(struct resolution *rs, enum rs_state next, int forest,
                                     int domain)
{
    enum resolve_step r = rs_ask(rs, next, SOP_FIND_SAM, forest);
    rs->op.domain = domain;
    rs->op.key = rs_part(rs, rs->ln.user);
    rs->op.key_len = rs->ln.user.len;
    return r;
}

static enum resolve_step rs_find_upn(struct resolution *rs)
{
    enum resolve_step r = rs_ask(rs, S_UPN, SOP_FIND_UPN, rs_forest_at(rs, rs->scope));
    rs->op.key = rs_part(rs, rs->ln.upn);
    rs->op.key_len = rs->ln.upn.len;
    return r;
}

static bool rs_dn_eq(const char *a, const char *b)
{
    return a[0] && strcasecmp(a, b) == 0;
}

bool resolve_dn_under(const char *dn, const char *base)
{
    size_t n = strlen(dn), m = strlen(base);
    if (m == 0 || n < m || strcasecmp(dn + n - m, base) != 0)
        return false;
    return n == m || dn[n - m - 1] == ',';
}

int resolve_domain_of(const struct dir_forest *fo, const char *dn)
{
    int best = -1;
    size_t best_len = 0;
    for (unsigned d = 0; d < fo->ndomains; d++) {
        size_t m = strlen(fo->domains[d].base);
        if (m > best_len && resolve_dn_under(dn, fo->domains[d].base)) {
            best = (int)d;
            best_len = m;
        }
    }
    return best;
}

/* Asks for a bind as the account, with the password typed. */
static enum resolve_step rs_ask_bind(struct resolution *rs, enum rs_state next)
{
    enum resolve_step r = rs_ask(rs, next, SOP_BIND, rs->account.forest);
    rs->op.dn = rs->account.dn;
    rs->op.pass = rs->pass;
    rs->op.pass_len = rs->pass_len;
    return r;
}

/* The bind did not succeed: how the logon ends. */
static enum resolve_step rs_bind_refused(struct resolution *rs)
{
    switch (rs->res.status) {
    case STORE_BIND_EXPIRED:
        return rs_done(rs, LOGIN_EXPIRED, RW_EXPIRED);
    case STORE_BIND_FAILED:
        return rs_fail(rs, RW_BAD_PASSWORD);
    /* The client hears a wrong password; the audit line, the truth. */
    case STORE_BIND_DISABLED:
        return rs_fail(rs, RW_DISABLED);
    case STORE_BIND_ACCOUNT_EXPIRED:
        return rs_fail(rs, RW_ACCOUNT_EXPIRED);
    case STORE_BIND_LOCKED:
        return rs_fail(rs, RW_LOCKED_OUT);
    default:
        return rs_done(rs, LOGIN_UNAVAILABLE, RW_UNAVAILABLE);
    }
}

static enum resolve_step rs_on_bind(struct resolution *rs);

static enum resolve_step rs_bind(struct resolution *rs)
{
    if (rs->account.uac & UAC_DISABLED)
        return rs_miss(rs, RW_DISABLED);
    if (rs->principal) { /* the ticket was the proof: as if the bind succeeded */
        memset(&rs->res, 0, sizeof rs->res);
        rs->state = S_BIND;
        return rs_on_bind(rs);
    }
    return rs_ask_bind(rs, S_BIND);
}

/* A principal user@realm: the realm's domain's sAMAccountName first. */
static enum resolve_step rs_begin_principal(struct resolution *rs)
{
    const char *upn = rs_part(rs, rs->ln.upn);
    const char *at = memchr(upn, '@', rs->ln.upn.len);
    size_t user = at ? (size_t)(at - upn) : 0;
    if (rs->ln.form != LN_UPN && rs->ln.form != LN_UPN_ALIAS)
        return rs_fail(rs, RW_INVALID_NAME);
    if (!rs->enterprise && user > 0 &&
        resolve_find_domain(rs->topo, at + 1, rs->ln.upn.len - user - 1, &rs->domain_forest,
                            &rs->domain_index)) {
        enum resolve_step r = rs_ask(rs, S_KSAM, SOP_FIND_SAM, rs->domain_forest);
        rs->op.domain = rs->domain_index;
        rs->op.key = upn;
        rs->op.key_len = user;
        return r;
    }
    return rs_find_upn(rs);
}

static enum resolve_step rs_begin(struct resolution *rs)
{
    if (rs->principal) {
        if (logon_name_split(rs->name, rs->name_len, &rs->ln) == LN_INVALID)
            return rs_fail(rs, RW_INVALID_NAME);
        return rs_begin_principal(rs);
    }
    if (rs->pass_len == 0)
        return rs_fail(rs, RW_EMPTY_PASSWORD); /* an anonymous bind would succeed */
    if (logon_name_split(rs->name, rs->name_len, &rs->ln) == LN_INVALID)
        return rs_fail(rs, RW_INVALID_NAME);
    if (logon_name_is_anonymous(rs->name, &rs->ln))
        return rs_fail(rs, RW_ANONYMOUS);
    if (rs->ln.domain.len > 0 &&
        !resolve_find_domain(rs->topo, rs_part(rs, rs->ln.domain), rs->ln.domain.len,
                             &rs->domain_forest, &rs->domain_index)) {
        /* As any name that finds nobody: checked against nobody first. */
        rs->op.forest = (int)rs->topo->org;
        return rs_miss(rs, RW_UNKNOWN_DOMAIN);
    }
    switch (rs->ln.form) {
    case LN_USER: {
        const struct dir_forest *org = &rs->topo->forests[rs->topo->org];
        return rs_find_sam(rs, S_SAM, (int)rs->topo->org, (int)org->default_domain);
    }
    case LN_DOMAIN_USER:
    case LN_DOMAIN_USER_ALIAS:
        return rs_find_sam(rs, S_DSAM, rs->domain_forest, rs->domain_index);
    default: /* the UPN forms */
        return rs_find_upn(rs);
    }
}

/* A store that cannot answer makes the login unavailable, never "failed". */
static bool rs_down(const struct resolution *rs)
{
    return rs->res.status == STORE_UNAVAILABLE;
}

static enum resolve_step rs_on_sam(struct resolution *rs)
{
    if (rs_down(rs))
        return rs_done(rs, LOGIN_UNAVAILABLE, RW_UNAVAILABLE);
    if (rs->res.n >= 2)
        return rs_miss(rs, RW_AMBIGUOUS); /* never guess inside one scope */
    if (rs->res.n == 1) {
        rs->account = rs->res.e[0];
        return rs_bind(rs);
    }
    if (rs->state == S_KSAM) /* not a sAMAccountName: the KDC tries the UPN next */
        return rs_find_upn(rs);
    /* Not in this scope: the next account forest, searched as a whole. */
    if (rs->state == S_DSAM || ++rs->scope >= rs->topo->nforests)
        return rs_miss(rs, RW_NOT_FOUND);
    return rs_find_sam(rs, S_SAM, rs_forest_at(rs, rs->scope), -1);
}

static enum resolve_step rs_on_upn(struct resolution *rs)
{
    if (rs_down(rs))
        return rs_done(rs, LOGIN_UNAVAILABLE, RW_UNAVAILABLE);
    if (rs->res.n > 0 && rs->found == 0)
        rs->account = rs->res.e[0];
    rs->found = (uint8_t)(rs->found + rs->res.n);
    if (rs->found >= 2)
        return rs_miss(rs, RW_AMBIGUOUS); /* a UPN must be unique across all forests */
    if (++rs->scope < rs->topo->nforests)
        return rs_find_upn(rs);
    if (rs->found == 0) {
        if (rs->conf->allow_smtp_login && rs->ln.form == LN_UPN && !rs->principal) {
            enum resolve_step r = rs_ask(rs, S_SMTP, SOP_FIND_SMTP, (int)rs->topo->org);
            rs->op.key = rs_part(rs, rs->ln.upn);
            rs->op.key_len = rs->ln.upn.len;
            return r;
        }
        return rs_miss(rs, RW_NOT_FOUND);
    }
    /* The account must lie in the named domain itself: a child domain's
     * DN ends with its parent's base too, so "under the base" is not enough. */
    if (rs->ln.form == LN_DOMAIN_UPN && (rs->account.forest != rs->domain_forest ||
                                         resolve_domain_of(&rs->topo->forests[rs->domain_forest],
                                                           rs->account.dn) != rs->domain_index))
        return rs_miss(rs, RW_WRONG_DOMAIN);
    return rs_bind(rs);
}

static enum resolve_step rs_find_sid(struct resolution *rs)
{
    /* A linked mailbox's owner lives in an account forest. */
    while (rs->scope < rs->topo->nforests && rs_forest_at(rs, rs->scope) == (int)rs->topo->org)
        rs->scope++;
    if (rs->scope >= rs->topo->nforests)
        return rs_miss(rs, RW_NOT_FOUND);
    enum resolve_step r = rs_ask(rs, S_SID, SOP_FIND_SID, rs_forest_at(rs, rs->scope));
    rs->op.sid = rs->mailbox.master_sid;
    rs->op.sid_len = rs->mailbox.master_sid_len;
    return r;
}

/* AllowSmtpAddressLogin: the address names a mailbox; its account logs on. */
static enum resolve_step rs_on_smtp(struct resolution *rs)
{
    if (rs_down(rs))
        return rs_done(rs, LOGIN_UNAVAILABLE, RW_UNAVAILABLE);
    if (rs->res.n != 1)
        return rs_miss(rs, rs->res.n ? RW_AMBIGUOUS : RW_NOT_FOUND);
    rs->mailbox = rs->res.e[0];
    if (rs->mailbox.master_sid_len == 0 || !(rs->mailbox.uac & UAC_DISABLED)) {
        rs->account = rs->mailbox;
        return rs_bind(rs);
    }
    rs->scope = 0;
    return rs_find_sid(rs);
}

static enum resolve_step rs_on_sid(struct resolution *rs)
{
    if (rs_down(rs))
        return rs_done(rs, LOGIN_UNAVAILABLE, RW_UNAVAILABLE);
    if (rs->res.n >= 2)
        return rs_miss(rs, RW_AMBIGUOUS);
    if (rs->res.n == 1) {
        rs->account = rs->res.e[0];
        return rs_bind(rs);
    }
    rs->scope++;
    return rs_find_sid(rs);
}

/* The mailbox is chosen: is this protocol allowed on it, and where is it? */
static enum resolve_step rs_checks(struct resolution *rs)
{
    if (rs->mailbox.proto_disabled & (1u << rs->proto))
        return rs_done(rs, LOGIN_DENIED, RW_PROTOCOL_DISABLED);
    if (!rs->mailbox.has_mailbox)
        return rs_fail(rs, RW_NO_MAILBOX);
    enum resolve_step r = rs_ask(rs, S_DB, SOP_DATABASE, (int)rs->topo->org);
    rs->op.dn = rs->mailbox.home_mdb;
    return r;
}

static enum resolve_step rs_ask_alias(struct resolution *rs)
{
    enum resolve_step r = rs_ask(rs, S_ALIAS, SOP_FIND_ALIAS, (int)rs->topo->org);
    rs->op.key = rs_part(rs, rs->ln.alias);
    rs->op.key_len = rs->ln.alias.len;
    rs->op.dn = rs->mailbox.dn; /* "" without an own mailbox: nobody's rights */
    if (rs->token_len) {
        rs->op.token = rs->token;
        rs->op.token_len = rs->token_len;
    }
    return r;
}

/* The descriptor is read only for another's mailbox: an alias that names
 * the account's own mailbox needs no token. */
static bool rs_wants_token(const struct resolution *rs, const struct dir_entry *own)
{
    if (rs->conf->delegate_check == DELEGATE_LIST)
        return false;
    return !own || strlen(own->alias) != rs->ln.alias.len ||
           strncasecmp(own->alias, rs_part(rs, rs->ln.alias), rs->ln.alias.len) != 0;
}

/* The token starts with the account's SID and the two groups every logon
 * holds, Everyone (S-1-1-0) and Authenticated Users (S-1-5-11); AD's
 * tokenGroups follow. */
static enum resolve_step rs_ask_groups(struct resolution *rs)
{
    static const uint8_t everyone[] = {1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0};
    static const uint8_t authenticated[] = {1, 1, 0, 0, 0, 0, 0, 5, 11, 0, 0, 0};
    size_t n = 0;
    if (sd_sid_len(rs->account.sid, rs->account.sid_len) == rs->account.sid_len) {
        memcpy(rs->token, rs->account.sid, rs->account.sid_len);
        n = rs->account.sid_len;
    }
    memcpy(rs->token + n, everyone, sizeof everyone);
    n += sizeof everyone;
    memcpy(rs->token + n, authenticated, sizeof authenticated);
    rs->token_len = n + sizeof authenticated;
    enum resolve_step r = rs_ask(rs, S_GROUPS, SOP_TOKEN_GROUPS, rs->account.forest);
    rs->op.dn = rs->account.dn;
    rs->op.token_out = rs->token + rs->token_len;
    rs->op.token_cap = sizeof rs->token - rs->token_len;
    return r;
}

static enum resolve_step rs_on_groups(struct resolution *rs)
{
    if (rs_down(rs))
        return rs_done(rs, LOGIN_UNAVAILABLE, RW_UNAVAILABLE);
    /* A deny for a group left out could not be seen: judge nothing. */
    if (rs->res.token_overflow)
        return rs_done(rs, LOGIN_DENIED, RW_TOO_MANY_GROUPS);
    rs->token_len += FG_MIN(rs->res.token_len, sizeof rs->token - rs->token_len);
    return rs_ask_alias(rs);
}

/* Full Access to target, another's mailbox, as DelegateCheck reads it. */
static bool rs_full_access(const struct resolution *rs, const struct dir_entry *target)
{
    bool listed = rs->mailbox.dn[0] && target->delegate_ok;
    switch (rs->conf->delegate_check) {
    case DELEGATE_LIST:
        return listed;
    case DELEGATE_BOTH:
        return target->sd_access == SD_ALLOWED || (listed && target->sd_access != SD_DENIED);
    default:
        return target->sd_access == SD_ALLOWED;
    }
}

/* The account's own mailbox is known (or known to be none). */
static enum resolve_step rs_after_own(struct resolution *rs, const struct dir_entry *own)
{
    if (rs->ln.alias.len == 0) {
        if (!own)
            return rs_fail(rs, RW_NO_MAILBOX);
        rs->mailbox = *own;
        return rs_checks(rs);
    }
    if (own)
        rs->mailbox = *own; /* kept to compare with the alias's mailbox */
    else
        memset(&rs->mailbox, 0, sizeof rs->mailbox);
    if (rs_wants_token(rs, own))
        return rs_ask_groups(rs);
    return rs_ask_alias(rs);
}

static enum resolve_step rs_on_bind(struct resolution *rs)
{
    if (rs->res.status != STORE_OK)
        return rs_bind_refused(rs);
    /* Refusals that only someone holding the password may learn of. */
    if (rs->account.admin && !rs->conf->allow_admin)
        return rs_fail(rs, RW_ADMIN);
    if (rs->account.forest == rs->topo->org && rs->account.has_mailbox)
        return rs_after_own(rs, &rs->account);
    enum resolve_step r = rs_ask(rs, S_LINKED, SOP_FIND_LINKED, (int)rs->topo->org);
    rs->op.sid = rs->account.sid;
    rs->op.sid_len = rs->account.sid_len;
    return r;
}

static enum resolve_step rs_on_linked(struct resolution *rs)
{
    if (rs_down(rs))
        return rs_done(rs, LOGIN_UNAVAILABLE, RW_UNAVAILABLE);
    if (rs->res.n >= 2)
        return rs_fail(rs, RW_MAILBOX_AMBIGUOUS);
    if (rs->account.sid_len == 0 || rs->res.n == 0)
        return rs_after_own(rs, NULL);
    struct dir_entry own = rs->res.e[0];
    return rs_after_own(rs, &own);
}

static enum resolve_step rs_on_alias(struct resolution *rs)
{
    if (rs_down(rs))
        return rs_done(rs, LOGIN_UNAVAILABLE, RW_UNAVAILABLE);
    if (rs->res.n == 0)
        return rs_fail(rs, RW_NO_SUCH_ALIAS);
    if (rs->res.n >= 2)
        return rs_fail(rs, RW_MAILBOX_AMBIGUOUS);
    const struct dir_entry *target = &rs->res.e[0];
    bool own = rs_dn_eq(rs->mailbox.dn, target->dn);
    if (!own && !rs_full_access(rs, target))
        return rs_done(rs, LOGIN_DENIED, RW_NO_RIGHTS);
    /* PassThrough logs in with the client's own password, which opens only
     * the client's own mailbox: refused here, before any backend is asked. */
    if (!own && !rs->conf->allow_delegates)
        return rs_done(rs, LOGIN_DENIED, RW_DELEGATE_NEEDS_MASTER);
    rs->mailbox = *target;
    return rs_checks(rs);
}

/* A cached route: the checks the route carries, once the password is right. */
static enum resolve_step rs_warm_checks(struct resolution *rs)
{
    if (rs->account.admin && !rs->conf->allow_admin)
        return rs_fail(rs, RW_ADMIN);
    if (rs->mailbox.proto_disabled & (1u << rs->proto))
        return rs_done(rs, LOGIN_DENIED, RW_PROTOCOL_DISABLED);
    return rs_done(rs, LOGIN_OK, RW_NONE);
}

static enum resolve_step rs_warm(struct resolution *rs)
{
    if (rs->pass_len == 0)
        return rs_fail(rs, RW_EMPTY_PASSWORD);
    if (rs->pass_known) /* the credential cache matched */
        return rs_warm_checks(rs);
    return rs_ask_bind(rs, S_WARM_BIND);
}

static enum resolve_step rs_on_warm_bind(struct resolution *rs)
{
    return rs->res.status == STORE_OK ? rs_warm_checks(rs) : rs_bind_refused(rs);
}

static enum resolve_step rs_on_db(struct resolution *rs)
{
    if (rs_down(rs))
        return rs_done(rs, LOGIN_UNAVAILABLE, RW_UNAVAILABLE);
    if (rs->res.nhosts == 0)
        return rs_done(rs, LOGIN_UNAVAILABLE, RW_NO_DATABASE_SERVER);
    rs->nhosts = FG_MIN(rs->res.nhosts, (unsigned)DIR_MAX_HOSTS);
    memcpy(rs->hosts, rs->res.hosts, sizeof rs->hosts);
    return rs_done(rs, LOGIN_OK, RW_NONE);
}

enum resolve_step resolve_next(struct resolution *rs)
{
    switch (rs->state) {
    case S_START:
        return rs_begin(rs);
    case S_SAM:
    case S_DSAM:
    case S_KSAM:
        return rs_on_sam(rs);
    case S_UPN:
        return rs_on_upn(rs);
    case S_SMTP:
        return rs_on_smtp(rs);
    case S_SID:
        return rs_on_sid(rs);
    case S_BIND:
        return rs_on_bind(rs);
    case S_LINKED:
        return rs_on_linked(rs);
    case S_GROUPS:
        return rs_on_groups(rs);
    case S_ALIAS:
        return rs_on_alias(rs);
    case S_DB:
        return rs_on_db(rs);
    case S_WARM:
        return rs_warm(rs);
    case S_WARM_BIND:
        return rs_on_warm_bind(rs);
    case S_DUMMY:
        /* Whatever the store said, the failure stands. */
        return rs_done(rs, rs_down(rs) ? LOGIN_UNAVAILABLE : LOGIN_FAILED, rs->why);
    default:
        return RESOLVE_DONE;
    }
}

bool store_token_append(const struct store_op *op, struct store_result *res, const uint8_t *v,
                        size_t n)
{
    if (sd_sid_len(v, n) != n)
        return true; /* not a SID: no group */
    if (n > op->token_cap - res->token_len) {
        res->token_overflow = true;
        return false;
    }
    memcpy(op->token_out + res->token_len, v, n);
    res->token_len += n;
    return true;
}

bool resolve_find_domain(const struct dir_topology *topo, const char *name, size_t n, int *forest_r,
                         int *domain_r)
{
    for (unsigned f = 0; f < topo->nforests; f++) {
        const struct dir_forest *fo = &topo->forests[f];
        for (unsigned d = 0; d < fo->ndomains; d++) {
            const struct dir_domain *dm = &fo->domains[d];
            if ((n == strlen(dm->netbios) && strncasecmp(name, dm->netbios, n) == 0) ||
                (n == strlen(dm->dns) && strncasecmp(name, dm->dns, n) == 0)) {
                *forest_r = (int)f;
                *domain_r = (int)d;
                return true;
            }
        }
    }
    return false;
}

size_t resolve_database_name(const char *dn, char *out, size_t n)
{
    const char *eq = strchr(dn, '=');
    size_t len = 0;
    if (eq) {
        const char *v = eq + 1;
        while (v[len] && v[len] != ',')
            len++;
        if (len >= n)
            len = 0;
        memcpy(out, v, len);
    }
    out[len] = 0;
    return len;
}

const char *resolve_why_text(enum resolve_why why)
{
    static const char *const text[RW_COUNT] = {
            [RW_NONE] = "ok",
            [RW_INVALID_NAME] = "the name has no valid form",
            [RW_ANONYMOUS] = "anonymous and guest never log on",
            [RW_EMPTY_PASSWORD] = "empty password",
            [RW_UNKNOWN_DOMAIN] = "wasn't found in Active Directory (unknown domain)",
            [RW_NOT_FOUND] = "wasn't found in Active Directory.",
            [RW_AMBIGUOUS] = "is ambiguous: more than one account bears it",
            [RW_DISABLED] = "the account is disabled",
            [RW_WRONG_DOMAIN] = "wasn't found in Active Directory (not in that domain)",
            [RW_BAD_PASSWORD] = "wrong password",
            [RW_EXPIRED] = "the password has expired or must be changed",
            [RW_ACCOUNT_EXPIRED] = "the account has expired (accountExpires)",
            [RW_LOCKED_OUT] = "the account is locked out",
            [RW_ADMIN] = "administrators may not log on (AllowAdminLogon)",
            [RW_NO_MAILBOX] = "the account has no mailbox",
            [RW_MAILBOX_AMBIGUOUS] = "more than one mailbox matches",
            [RW_NO_SUCH_ALIAS] = "no mailbox has that alias",
            [RW_NO_RIGHTS] = "no full access to that mailbox",
            [RW_TOO_MANY_GROUPS] = "the account is in more groups than a token holds here",
            [RW_DELEGATE_NEEDS_MASTER] = "delegate logons need LoginMode MasterUser",
            [RW_PROTOCOL_DISABLED] = "the protocol is disabled for the mailbox (protocolSettings)",
            [RW_NO_DATABASE_SERVER] = "the mailbox's database has no reachable server",
            [RW_UNAVAILABLE] = "the directory is unavailable",
            [RW_THROTTLED] = "refused by the throttle, without asking the directory",
            [RW_KERBEROS] = "Kerberos: the ticket was refused",
    };
    return text[why];
}

uint8_t resolve_protocol_disabled(const char *v, size_t n)
{
    static const char *const off[FG_PROTO_COUNT] = {"IMAP4\xc2\xa7"
                                                    "0",
                                                    "POP3\xc2\xa7"
                                                    "0"};
    uint8_t bits = 0;
    for (int p = 0; p < FG_PROTO_COUNT; p++) {
        size_t k = strlen(off[p]);
        if (n >= k && strncasecmp(v, off[p], k) == 0)
            bits |= (uint8_t)(1u << p);
    }
    return bits;
}

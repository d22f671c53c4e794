/*
 * The resolver: docs/login-rules.md sections 2 to 4, written once.
 *
 * It is a pure, resumable state machine. resolve_next() either asks for one
 * store operation (find accounts by sAMAccountName or UPN, check a password,
 * find a mailbox by master SID or alias, read a database's servers) or ends
 * with an outcome. The caller runs the operation on whichever store serves
 * the forest -- the LDIF file in memory answers at once, LDAP answers later
 * on a directory thread -- puts the answer in rs->res and calls resolve_next()
 * again. So the rules never wait, never touch a socket, and run the same
 * under the directory pool, in the LDIF store and in unit tests.
 */
#ifndef FG_RESOLVE_H
#define FG_RESOLVE_H

#include "../base/cred.h"
#include "../base/login.h"
#include "logon_name.h"

#define DIR_MAX_FORESTS 8
#define DIR_MAX_DOMAINS 8 /* per forest */
#define DIR_DN_MAX      512
#define DIR_SID_MAX     68 /* revision, count, authority and 15 subauthorities */
#define DIR_ALIAS_MAX   64
#define DIR_LOGIN_MAX   255
#define DIR_HOST_MAX    255
#define DIR_MAX_HOSTS   4
/* An access token: the account's SID, Everyone, Authenticated Users and its
 * tokenGroups, for a mailbox's security descriptor. 8 KiB holds about 290
 * domain SIDs; an account in more groups is refused Full Access (see
 * RW_TOO_MANY_GROUPS) rather than judged on part of its groups. */
#define DIR_TOKEN_MAX 8192

/* ---- what the resolver knows of the forests (configured or discovered) ---- */

struct dir_domain {
    char netbios[16];
    char dns[256];
    char base[DIR_DN_MAX]; /* its naming context */
};

struct dir_forest {
    char name[64];
    bool organization; /* Role = Organization; exactly one */
    unsigned ndomains;
    struct dir_domain domains[DIR_MAX_DOMAINS];
    unsigned default_domain; /* organisation forest: where a plain name is searched */
};

struct dir_topology {
    unsigned nforests;
    struct dir_forest forests[DIR_MAX_FORESTS];
    unsigned org; /* index of the organisation forest */
};

/* The policy switches of [directory]. */
struct resolve_conf {
    bool allow_smtp_login;     /* AllowSmtpAddressLogin */
    bool allow_admin;          /* AllowAdminLogon */
    bool allow_delegates;      /* LoginMode = MasterUser: the backend can open another's mailbox */
    const char *login_attr;    /* BackendLoginAttribute; NULL: mailNickname */
    const char *delegate_attr; /* DelegateAttribute; NULL: msExchDelegateListLink */
    uint8_t delegate_check;    /* DelegateCheck: enum delegate_check */
};

/* DelegateCheck: where Full Access to another's mailbox is read. */
enum delegate_check {
    DELEGATE_SD,   /* the mailbox's msExchMailboxSecurityDescriptor, as Exchange does */
    DELEGATE_LIST, /* DelegateAttribute (msExchDelegateListLink): auto-mapping's back link */
    DELEGATE_BOTH, /* either grants; a deny in the descriptor still wins */
};

/* ---- the store interface ---- */

enum store_op_kind {
    SOP_FIND_SAM,     /* enabled accounts: sAMAccountName = key (domain < 0: whole forest) */
    SOP_FIND_UPN,     /* accounts, disabled ones too: userPrincipalName = key, whole forest */
    SOP_FIND_SMTP,    /* organisation forest: proxyAddresses = smtp:key */
    SOP_BIND,         /* simple bind as dn with the password, in the forest; dn "" is
                         nobody: check the password against no account at the cost of
                         a real check, and fail */
    SOP_FIND_LINKED,  /* organisation forest: mailboxes whose msExchMasterAccountSid = sid */
    SOP_FIND_ALIAS,   /* organisation forest: mailboxes whose mailNickname = key; for each,
                         delegate_ok says whether dn is in its delegate_attr, and
                         sd_access what its security descriptor gives token */
    SOP_DATABASE,     /* the servers of database dn (homeMDB): their dNSHostName */
    SOP_FIND_SID,     /* accounts whose objectSid = sid, whole forest */
    SOP_TOKEN_GROUPS, /* the account dn's tokenGroups (AD computes them, nested groups too),
                         appended to token_out: res.token_len, res.token_overflow */
};

struct store_op {
    enum store_op_kind kind;
    int forest;
    int domain; /* SOP_FIND_SAM: a domain of the forest, or -1 for all */
    const char *key;
    size_t key_len;
    const uint8_t *sid;
    size_t sid_len;
    const char *dn; /* SOP_BIND: who; SOP_FIND_ALIAS: whose rights; SOP_DATABASE: which */
    const char *pass;
    size_t pass_len;
    const char *login_attr;    /* searches: the attribute that fills dir_entry.login */
    const char *delegate_attr; /* SOP_FIND_ALIAS: the attribute that lists full access */
    const uint8_t *token;      /* SOP_FIND_ALIAS: whose Full Access the descriptor is asked; */
    size_t token_len;          /*   NULL: not asked */
    uint8_t *token_out;        /* SOP_TOKEN_GROUPS: where the groups' SIDs go */
    size_t token_cap;
};

/* An account or mailbox as the resolver needs it. */
struct dir_entry {
    char dn[DIR_DN_MAX];
    uint8_t sid[DIR_SID_MAX];
    uint8_t sid_len;
    uint8_t forest;
    uint32_t uac;                  /* userAccountControl */
    bool admin;                    /* adminCount = 1 */
    bool has_mailbox;              /* homeMDB is set */
    bool delegate_ok;              /* SOP_FIND_ALIAS only */
    uint8_t sd_access;             /* SOP_FIND_ALIAS with a token: enum sd_access */
    uint8_t proto_disabled;        /* 1 << fg_proto, from protocolSettings */
    char alias[DIR_ALIAS_MAX + 1]; /* mailNickname */
    char login[DIR_LOGIN_MAX + 1]; /* BackendLoginAttribute: the backend login name */
    char home_mdb[DIR_DN_MAX];
    uint8_t master_sid[DIR_SID_MAX]; /* msExchMasterAccountSid: a linked mailbox's owner */
    uint8_t master_sid_len;
};

enum store_status {
    STORE_OK,
    STORE_UNAVAILABLE,  /* server down, timed out: [UNAVAILABLE] */
    STORE_BIND_FAILED,  /* SOP_BIND: wrong password (AD's data 52e) or any other refusal */
    STORE_BIND_EXPIRED, /* SOP_BIND: AD's data 532 / 773: the password was right */
    /* SOP_BIND refusals the client sees as a wrong password, the audit by name: */
    STORE_BIND_DISABLED,        /* data 533 */
    STORE_BIND_ACCOUNT_EXPIRED, /* data 701 */
    STORE_BIND_LOCKED,          /* data 775 */
};

/* A bind refused as the client must see a wrong password: counted by the
 * throttle, dropping a remembered credential. */
static inline bool store_bind_refused(enum store_status s)
{
    return s == STORE_BIND_FAILED || s == STORE_BIND_DISABLED || s == STORE_BIND_ACCOUNT_EXPIRED ||
           s == STORE_BIND_LOCKED;
}

struct store_result {
    enum store_status status;
    unsigned n; /* entries found, counted up to 2 (searches use size limit 2) */
    struct dir_entry e[2];
    unsigned nhosts; /* SOP_DATABASE */
    char hosts[DIR_MAX_HOSTS][DIR_HOST_MAX + 1];
    size_t token_len;    /* SOP_TOKEN_GROUPS: bytes written to op.token_out */
    bool token_overflow; /* SOP_TOKEN_GROUPS: some groups did not fit */
};

/* SOP_TOKEN_GROUPS, for the stores: appends one tokenGroups value to
 * op->token_out. A value that is no SID is passed over; one that does not
 * fit sets res->token_overflow and returns false: stop, the token is cut. */
bool store_token_append(const struct store_op *op, struct store_result *res, const uint8_t *v,
                        size_t n);

/* ---- a resolution ---- */

enum resolve_step {
    RESOLVE_OP,   /* run rs->op, fill rs->res, call resolve_next again */
    RESOLVE_DONE, /* rs->status, rs->why and, when OK, the mailbox are set */
};

/* Why a login failed, for the event log (docs/login-rules.md section 6 lists them). */
enum resolve_why {
    RW_NONE,
    RW_INVALID_NAME,
    RW_ANONYMOUS,
    RW_EMPTY_PASSWORD,
    RW_UNKNOWN_DOMAIN,
    RW_NOT_FOUND,
    RW_AMBIGUOUS,
    RW_DISABLED,
    RW_WRONG_DOMAIN, /* domain\upn: the UPN's account lies in another domain (a child too) */
    RW_BAD_PASSWORD,
    RW_EXPIRED,
    RW_ACCOUNT_EXPIRED, /* AD's data 701 */
    RW_LOCKED_OUT,      /* AD's data 775 */
    RW_ADMIN,
    RW_NO_MAILBOX,
    RW_MAILBOX_AMBIGUOUS,
    RW_NO_SUCH_ALIAS,
    RW_NO_RIGHTS,
    RW_TOO_MANY_GROUPS,       /* the token did not fit: Full Access by descriptor not judged */
    RW_DELEGATE_NEEDS_MASTER, /* full access, but PassThrough cannot open another's mailbox */
    RW_PROTOCOL_DISABLED,
    RW_NO_DATABASE_SERVER,
    RW_UNAVAILABLE,
    RW_THROTTLED, /* the password was not checked: the throttle (throttle.h) refused */
    RW_KERBEROS,  /* the GSSAPI exchange failed: a bad, expired or replayed ticket (krb.h) */
    RW_COUNT,
};

struct resolution {
    /* in */
    const struct dir_topology *topo;
    const struct resolve_conf *conf;
    const char *name;
    size_t name_len;
    const char *pass;
    size_t pass_len;
    enum fg_proto proto;
    /* the store's conversation */
    struct store_op op;
    struct store_result res;
    /* out */
    enum login_status status;
    enum resolve_why why;
    struct logon_name ln;
    struct dir_entry account;
    struct dir_entry mailbox;
    unsigned nhosts;
    char hosts[DIR_MAX_HOSTS][DIR_HOST_MAX + 1];
    unsigned ops; /* store operations asked for, for the audit line */
    /* private */
    uint8_t state;
    uint8_t scope;   /* search scopes tried so far */
    uint8_t found;   /* UPN matches across forests */
    bool pass_known; /* warm: the credential cache matched */
    bool principal;  /* a Kerberos principal: proven, no bind (resolve_init_principal) */
    bool enterprise; /* an enterprise principal: a UPN, searched as one */
    int domain_forest, domain_index; /* the typed domain, once known */
    size_t token_len;                /* the account's access token, for DelegateCheck */
    uint8_t token[DIR_TOKEN_MAX];
};

/* Prepares a resolution; the strings must outlive it. */
void resolve_init(struct resolution *rs, const struct dir_topology *topo,
                  const struct resolve_conf *conf, const char *name, size_t name_len,
                  const char *pass, size_t pass_len, enum fg_proto proto);

/*
 * Prepares a warm resolution: the route cache already knows the account and
 * its mailbox (route_cache.h), so only the password is checked -- one bind
 * as account, or none when pass_known (the credential cache matched) --
 * and then what the route carries: AllowAdminLogon and the protocol. The
 * name is split again, for the audit line.
 */
void resolve_init_warm(struct resolution *rs, const struct dir_topology *topo,
                       const struct resolve_conf *conf, const char *name, size_t name_len,
                       const char *pass, size_t pass_len, enum fg_proto proto, const char *account,
                       int forest, bool admin, uint8_t proto_disabled, bool pass_known);

/*
 * Prepares the resolution of a Kerberos principal that a ticket proved
 * (krb.h): name is krb_map_principal's, "user@realm" or "user@realm\alias".
 * The account is the sAMAccountName user in the domain whose DNS name is
 * the realm, else the one whose UPN is user@realm, as the KDC looks a
 * client up (MS-KILE 3.3.5.6.1.1); an enterprise principal's by its UPN
 * only. It must be enabled now: a ticket outlives a disabled account. Then
 * the rules go on as after a password's bind: no bind, no dummy bind.
 */
void resolve_init_principal(struct resolution *rs, const struct dir_topology *topo,
                            const struct resolve_conf *conf, const char *name, size_t name_len,
                            bool enterprise, enum fg_proto proto);

/* True when why means the name found no account: the negative cache keeps
 * those (never a wrong password). */
bool resolve_why_not_found(enum resolve_why why);

/* Advances: RESOLVE_OP with rs->op to run, or RESOLVE_DONE. */
enum resolve_step resolve_next(struct resolution *rs);

/* The event-log text for why (the wording of docs/login-rules.md section 6). */
const char *resolve_why_text(enum resolve_why why);

/* Finds a typed domain (NetBIOS or DNS name, any case) in the topology.
 * Returns true with *forest_r and *domain_r set. */
bool resolve_find_domain(const struct dir_topology *topo, const char *name, size_t n, int *forest_r,
                         int *domain_r);

/* True when dn lies in the naming context base (ends with ",base" or is it),
 * compared without case. A child domain's DN lies under its parent's base
 * too: to ask which domain holds a DN, use resolve_domain_of. */
bool resolve_dn_under(const char *dn, const char *base);

/* The domain of forest fo that holds dn: the one with the deepest base dn lies
 * under (so an account of CHILD is CHILD's, never its parent's). -1: none. */
int resolve_domain_of(const struct dir_forest *fo, const char *dn);

/* One protocolSettings value: "IMAP4\xc2\xa70..." or "POP3\xc2\xa70..." (\xc2\xa7 is
 * the section sign) disables that protocol. Returns 1 << fg_proto bits. */
uint8_t resolve_protocol_disabled(const char *v, size_t n);

/* The database's name: the first RDN's value of a homeMDB DN ("DB01"). */
size_t resolve_database_name(const char *dn, char *out, size_t n);

#endif

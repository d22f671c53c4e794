/*
 * The LDIF store: the parser (folding, base64, comments, errors with line
 * numbers), the local password schemes, and the resolver's section-6 cases
 * of setup A run through the store -- the same rules the LDAP store serves.
 */
#include "../../directory/ldif_store.h"
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>

/* objectSid S-1-5-21-1-2-3-1105 and -1106, as LDIF base64. */
#define SID_T "AQUAAAAAAAUVAAAAAQAAAAIAAAADAAAAUQQAAA=="
#define SID_O "AQUAAAAAAAUVAAAAAQAAAAIAAAADAAAAUgQAAA=="

static const char setup_a[] =
        "version: 1\n"
        "# setup A of docs/login-rules.md section 8\n"
        "\n"
        "dn: DC=uclabor,DC=de\n"
        "objectClass: domainDNS\n"
        "\n"
        "dn: CN=tuser,CN=Users,DC=uclabor,DC=de\n"
        "objectClass: top\n"
        "objectClass: user\n"
        "sAMAccountName: tuser\n"
        "userPrincipalName: tuser.upn@upn.uclabor.de\n"
        "objectSid:: " SID_T "\n"
        "userAccountControl: 512\n"
        "mailNickname: testalias\n"
        "homeMDB: CN=DB01,CN=Databases,CN=Exchange,CN=Configuration,DC=uclabor,DC=de\n"
        "proxyAddresses: SMTP:testalias@uclabor.de\n"
        "userPassword: {SSHA}qNpx/NlhpNhmML008VCA8FpEbChzYWx0c2FsdA==\n"
        "\n"
        "dn: CN=other,CN=Users,DC=uclabor,DC=de\n"
        "objectClass: user\n"
        "sAMAccountName: other\n"
        "objectSid:: " SID_O "\n"
        "userAccountControl: 512\n"
        "mailNickname: other\n"
        "homeMDB: CN=DB02,CN=Databases,CN=Exchange,CN=Configuration,DC=uclabor,DC=de\n"
        "msExchDelegateListLink: cn=TUSER,cn=users,dc=uclabor,dc=de\n"
        "fgFullAccess: CN=childonly,CN=Users,DC=child,DC=uclabor,DC=de\n"
        "userPassword: {SSHA512}bP85dTv9QmrjJ0cMfr+CH66P/AmjtR24bVM/uxkbhCucFAhtJ68dzuBYKZAp9\n"
        " EuVYeIX6k6/YSIDIBqcmA0WgjAxMjM0NTY3ODlhYmNkZWY=\n"
        "\n"
        "dn: CN=Administrator,CN=Users,DC=uclabor,DC=de\n"
        "objectClass: user\n"
        "sAMAccountName: administrator\n"
        "adminCount: 1\n"
        "mailNickname: administrator\n"
        "homeMDB: CN=DB01,CN=Databases,CN=Exchange,CN=Configuration,DC=uclabor,DC=de\n"
        "userPassword: {CRYPT}$6$abcdefgh$LgaJiaVmXHN05qFOgF1m23R0TEHxe4gRhjRIvzSWGxTF2FWNJDAqG4"
        "jd.swXUq5FsSXUOQXPRUj7CkVrV7Hh70\n"
        "\n"
        "dn: CN=noimap,CN=Users,DC=uclabor,DC=de\n"
        "objectClass: user\n"
        "sAMAccountName: noimap\n"
        "mailNickname: noimap\n"
        "homeMDB: CN=DB01,CN=Databases,CN=Exchange,CN=Configuration,DC=uclabor,DC=de\n"
        "protocolSettings: IMAP4\xc2\xa7"
        "0\xc2\xa7"
        "1\xc2\xa7"
        "4\n"
        "userPassword: {CRYPT}$5$abcdefgh$u9VQH3utA2QhwdPWjrOWKtHYth06/s635iunA1cYQp1\n"
        "\n"
        "dn: CN=mustchange,CN=Users,DC=uclabor,DC=de\n"
        "objectClass: user\n"
        "sAMAccountName: mustchange\n"
        "pwdLastSet: 0\n"
        "mailNickname: mustchange\n"
        "homeMDB: CN=DB01,CN=Databases,CN=Exchange,CN=Configuration,DC=uclabor,DC=de\n"
        "userPassword: {SSHA}qNpx/NlhpNhmML008VCA8FpEbChzYWx0c2FsdA==\n"
        "\n"
        "dn: CN=childonly,CN=Users,DC=child,DC=uclabor,DC=de\n"
        "objectClass: user\n"
        "sAMAccountName: childonly\n"
        "userPrincipalName: childonly@child.uclabor.de\n"
        "mailNickname: childonly\n"
        "homeMDB: CN=DB02,CN=Databases,CN=Exchange,CN=Configuration,DC=uclabor,DC=de\n"
        "userPassword: {SSHA}qNpx/NlhpNhmML008VCA8FpEbChzYWx0c2FsdA==\n"
        "\n"
        "dn: CN=DB01,CN=Databases,CN=Exchange,CN=Configuration,DC=uclabor,DC=de\n"
        "objectClass: msExchMDB\n"
        "msExchOwningServer: CN=MBX1,CN=Servers,CN=Exchange,CN=Configuration,DC=uclabor,DC=de\n"
        "\n"
        "dn: CN=DB02,CN=Databases,CN=Exchange,CN=Configuration,DC=uclabor,DC=de\n"
        "objectClass: msExchMDB\n"
        "msExchOwningServer: CN=MBX2,CN=Servers,CN=Exchange,CN=Configuration,DC=uclabor,DC=de\n"
        "\n"
        "dn: CN=MBX1,CN=Servers,CN=Exchange,CN=Configuration,DC=uclabor,DC=de\n"
        "objectClass: msExchExchangeServer\n"
        "dNSHostName: mbx1.uclabor.de\n"
        "\n"
        "dn: CN=MBX2,CN=Servers,CN=Exchange,CN=Configuration,DC=uclabor,DC=de\n"
        "objectClass: msExchExchangeServer\n"
        "dNSHostName: mbx2.uclabor.de\n";

static struct ldif_store st;
static struct dir_topology topo;

static void setup(void)
{
    char err[200];
    CHECKF(ldif_parse(&st, setup_a, sizeof setup_a - 1, err, sizeof err) == FG_OK, "%s", err);
    struct dir_forest *f = &topo.forests[0];
    topo.nforests = 1;
    f->organization = true;
    snprintf(f->domains[0].netbios, 16, "UCLABOR");
    snprintf(f->domains[0].dns, 256, "uclabor.de");
    snprintf(f->domains[0].base, DIR_DN_MAX, "DC=uclabor,DC=de");
    snprintf(f->domains[1].netbios, 16, "CHILD");
    snprintf(f->domains[1].dns, 256, "child.uclabor.de");
    snprintf(f->domains[1].base, DIR_DN_MAX, "DC=child,DC=uclabor,DC=de");
    f->ndomains = 2;
}

static void test_parse(void)
{
    CHECK_INT(st.n, 11);
    const struct ldif_entry *e = &st.e[1];
    CHECK(strcmp(e->dn, "CN=tuser,CN=Users,DC=uclabor,DC=de") == 0);
    const struct ldif_attr *sid = ldif_attr(e, "OBJECTSID");
    CHECK(sid && sid->nvals == 1 && sid->vals[0].n == 28);
    CHECK(sid && memcmp(sid->vals[0].p, "\x01\x05\0\0\0\0\0\x05\x15", 9) == 0);
    const struct ldif_attr *oc = ldif_attr(e, "objectclass");
    CHECK(oc && oc->nvals == 2);
    /* a folded line is one value */
    const struct ldif_attr *pw = ldif_attr(&st.e[2], "userPassword");
    CHECK(pw && pw->nvals == 1 && pw->vals[0].n == 9 + 108);
}

static void check_parse_error(const char *ldif, const char *want)
{
    struct ldif_store s;
    char err[200] = "";
    CHECKF(ldif_parse(&s, ldif, strlen(ldif), err, sizeof err) == FG_ERROR &&
                   strstr(err, want) != NULL,
           "\"%s\": error \"%s\", expected \"%s\"", ldif, err, want);
    CHECK(s.n == 0 && s.e == NULL);
}

static void test_parse_errors(void)
{
    check_parse_error("cn: x\n", "line 1: an entry must start with \"dn:\"");
    check_parse_error("dn: a\ncn x\n", "line 2: expected \"attribute: value\"");
    check_parse_error("dn: a\ncn: x\ndn: b\n", "line 3: \"dn:\" inside an entry");
    check_parse_error("dn: a\nchangetype: add\n", "line 2: change records");
    check_parse_error("dn: a\njpegPhoto:< file:///x\n", "line 2: URL values");
    check_parse_error("dn: a\nobjectSid:: !!!\n", "line 2: bad base64");
    check_parse_error(" folded\n", "line 1: a continuation line");
    check_parse_error("dn: a\n\n\nc(n: x\n", "line 4: bad attribute name");
    /* CRLF, options, empty values and a trailing entry without a newline */
    struct ldif_store s;
    char err[200];
    const char *ok = "dn: a\r\ncn;lang-de: x\r\ndescription:\r\n\r\ndn: b\r\ncn: y";
    CHECK(ldif_parse(&s, ok, strlen(ok), err, sizeof err) == FG_OK && s.n == 2);
    CHECK(s.n == 2 && ldif_attr(&s.e[0], "cn") && ldif_attr(&s.e[0], "description") &&
          ldif_attr(&s.e[0], "description")->vals[0].n == 0);
    ldif_free(&s);
}

static void test_passwords(void)
{
    static const struct {
        const char *stored, *pass;
        bool ok;
    } cases[] = {
            {"{SSHA}qNpx/NlhpNhmML008VCA8FpEbChzYWx0c2FsdA==", "pw-t", true},
            {"{SSHA}qNpx/NlhpNhmML008VCA8FpEbChzYWx0c2FsdA==", "pw-T", false},
            {"{ssha}qNpx/NlhpNhmML008VCA8FpEbChzYWx0c2FsdA==", "pw-t", true},
            {"{SSHA}E0spKd9prQVeRxVRTa6PQqH0WUdzYWx0c2FsdA==", "passwörd €", false},
            {"{SSHA}E0spKd9prQVeRxVRTa6PQqH0WUdzYWx0c2FsdA==", "pässwörd €", true},
            {"{SSHA512}bP85dTv9QmrjJ0cMfr+CH66P/AmjtR24bVM/uxkbhCucFAhtJ68dzuBYKZAp9EuVYeIX6k6/"
             "YSIDIBqcmA0WgjAxMjM0NTY3ODlhYmNkZWY=",
             "pw-o", true},
            {"{CRYPT}$6$abcdefgh$LgaJiaVmXHN05qFOgF1m23R0TEHxe4gRhjRIvzSWGxTF2FWNJDAqG4jd."
             "swXUq5FsSXUOQXPRUj7CkVrV7Hh70",
             "pw-c", true},
            {"{CRYPT}$6$abcdefgh$LgaJiaVmXHN05qFOgF1m23R0TEHxe4gRhjRIvzSWGxTF2FWNJDAqG4jd."
             "swXUq5FsSXUOQXPRUj7CkVrV7Hh70",
             "pw-d", false},
            {"{CRYPT}$5$abcdefgh$u9VQH3utA2QhwdPWjrOWKtHYth06/s635iunA1cYQp1", "pw c", true},
            {"{CRYPT}*", "x", false},
            {"secret", "secret", false}, /* clear text is never accepted */
            {"{MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ==", "secret", false},
            {"{SSHA}", "x", false},
            {"{SSHA}AAAA", "x", false},
            {"{SSHA}qNpx/NlhpNhmML008VCA8FpEbChzYWx0c2FsdA==", "", false},
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(cases); i++)
        CHECKF(ldif_password_ok(cases[i].stored, strlen(cases[i].stored), cases[i].pass,
                                strlen(cases[i].pass)) == cases[i].ok,
               "%s / %s", cases[i].stored, cases[i].pass);
    /* A NUL inside the password never truncates it. */
    CHECK(!ldif_password_ok("{SSHA}qNpx/NlhpNhmML008VCA8FpEbChzYWx0c2FsdA==", 46, "pw-t\0x", 6));
}

/* A bind as nobody never succeeds, even with a password some account has,
 * and it is checked against the file's slowest scheme. */
static void test_bind_as_nobody(void)
{
    struct store_op op = {.kind = SOP_BIND, .dn = "", .pass = "pw-c", .pass_len = 4};
    struct store_result res;
    CHECK(st.dummy && strncmp(st.dummy->p, "{CRYPT}", 7) == 0);
    ldif_store_run(&st, &topo.forests[0], 0, &op, &res);
    CHECK_INT(res.status, STORE_BIND_FAILED);
    op.dn = "CN=nobody,DC=uclabor,DC=de";
    ldif_store_run(&st, &topo.forests[0], 0, &op, &res);
    CHECK_INT(res.status, STORE_BIND_FAILED);
    op.dn = "cn=administrator,cn=users,dc=uclabor,dc=de"; /* DNs compare without case */
    ldif_store_run(&st, &topo.forests[0], 0, &op, &res);
    CHECK_INT(res.status, STORE_OK);
}

static struct resolution *run_with(const struct resolve_conf *conf, const char *name,
                                   const char *pass, enum fg_proto proto)
{
    static struct resolution rs;
    resolve_init(&rs, &topo, conf, name, strlen(name), pass, strlen(pass), proto);
    for (int guard = 0; resolve_next(&rs) == RESOLVE_OP && guard < 20; guard++)
        ldif_store_run(&st, &topo.forests[rs.op.forest], rs.op.forest, &rs.op, &rs.res);
    return &rs;
}

static struct resolution *run(const char *name, const char *pass, enum fg_proto proto)
{
    static const struct resolve_conf conf = {.allow_delegates = true,
                                             .delegate_check = DELEGATE_LIST};
    return run_with(&conf, name, pass, proto);
}

static void test_resolve_through_the_store(void)
{
    static const struct {
        const char *typed, *pass;
        enum login_status st;
        const char *host;
    } cases[] = {
            {"tuser", "pw-t", LOGIN_OK, "mbx1.uclabor.de"},
            {"UCLABOR\\tuser", "pw-t", LOGIN_OK, "mbx1.uclabor.de"},
            {"uclabor.de/TUSER", "pw-t", LOGIN_OK, "mbx1.uclabor.de"},
            {"UCLABOR\\tuser\\other", "pw-t", LOGIN_OK, "mbx2.uclabor.de"},
            {"tuser.upn@upn.uclabor.de\\other", "pw-t", LOGIN_OK, "mbx2.uclabor.de"},
            {"UCLABOR\\tuser.upn@upn.uclabor.de", "pw-t", LOGIN_OK, "mbx1.uclabor.de"},
            {"UCLABOR\\tuser\\testalias", "pw-t", LOGIN_OK, "mbx1.uclabor.de"},
            {"UCLABOR\\other\\testalias", "pw-o", LOGIN_DENIED, NULL},
            {"other", "pw-o", LOGIN_OK, "mbx2.uclabor.de"},
            {"tuser", "wrong", LOGIN_FAILED, NULL},
            {"testalias", "pw-t", LOGIN_FAILED, NULL},
            {"testalias@uclabor.de", "pw-t", LOGIN_FAILED, NULL},
            {"administrator", "pw-c", LOGIN_FAILED, NULL},
            {"noimap", "pw c", LOGIN_DENIED, NULL},
            {"mustchange", "pw-t", LOGIN_EXPIRED, NULL},
            {"mustchange", "pw-x", LOGIN_FAILED, NULL},
            {"childonly", "pw-t", LOGIN_FAILED, NULL},
            {"CHILD\\childonly", "pw-t", LOGIN_OK, "mbx2.uclabor.de"},
            {"UCLABOR\\childonly", "pw-t", LOGIN_FAILED, NULL},
            /* domain\upn: exactly that domain, not its parent nor its child */
            {"CHILD\\childonly@child.uclabor.de", "pw-t", LOGIN_OK, "mbx2.uclabor.de"},
            {"UCLABOR\\childonly@child.uclabor.de", "pw-t", LOGIN_FAILED, NULL},
            {"uclabor.de\\childonly@child.uclabor.de", "pw-t", LOGIN_FAILED, NULL},
            {"CHILD\\tuser.upn@upn.uclabor.de", "pw-t", LOGIN_FAILED, NULL},
            /* the default DelegateAttribute, msExchDelegateListLink */
            {"CHILD\\childonly\\other", "pw-t", LOGIN_DENIED, NULL},
            {"*", "pw-t", LOGIN_FAILED, NULL},
            {"t*", "pw-t", LOGIN_FAILED, NULL},
            {"x)(|(sAMAccountName=*)", "pw-t", LOGIN_FAILED, NULL},
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(cases); i++) {
        struct resolution *rs = run(cases[i].typed, cases[i].pass, FG_PROTO_IMAP);
        CHECKF(rs->status == cases[i].st, "%s: status %d (%s), expected %d", cases[i].typed,
               rs->status, resolve_why_text(rs->why), cases[i].st);
        if (cases[i].host)
            CHECKF(rs->nhosts == 1 && strcmp(rs->hosts[0], cases[i].host) == 0, "%s: host %s",
                   cases[i].typed, rs->nhosts ? rs->hosts[0] : "none");
    }
    CHECK_INT(run("noimap", "pw c", FG_PROTO_POP3)->status, LOGIN_OK);
}

/* BackendLoginAttribute: the backend login name comes from that attribute
 * of the mailbox (not of the account that logged on). */
static void test_backend_login_attribute(void)
{
    static const struct resolve_conf conf = {.login_attr = "sAMAccountName",
                                             .allow_delegates = true,
                                             .delegate_check = DELEGATE_LIST};
    struct resolution *rs = run_with(&conf, "UCLABOR\\tuser\\other", "pw-t", FG_PROTO_IMAP);
    CHECK_INT(rs->status, LOGIN_OK);
    CHECK(strcmp(rs->mailbox.alias, "other") == 0 && strcmp(rs->mailbox.login, "other") == 0);
    CHECK(strcmp(run("tuser", "pw-t", FG_PROTO_IMAP)->mailbox.login, "testalias") == 0);
    rs = run_with(&conf, "tuser", "pw-t", FG_PROTO_IMAP);
    CHECK(strcmp(rs->mailbox.login, "tuser") == 0 && strcmp(rs->mailbox.alias, "testalias") == 0);
}

/* DelegateAttribute: full access is read from the attribute it names. */
static void test_delegate_attribute(void)
{
    static const struct resolve_conf conf = {.delegate_attr = "fgFullAccess",
                                             .allow_delegates = true,
                                             .delegate_check = DELEGATE_LIST};
    struct resolution *rs = run_with(&conf, "CHILD\\childonly\\other", "pw-t", FG_PROTO_IMAP);
    CHECKF(rs->status == LOGIN_OK && strcmp(rs->mailbox.alias, "other") == 0, "status %d (%s)",
           rs->status, resolve_why_text(rs->why));
    rs = run_with(&conf, "UCLABOR\\tuser\\other", "pw-t", FG_PROTO_IMAP);
    CHECKF(rs->status == LOGIN_DENIED && rs->why == RW_NO_RIGHTS, "status %d (%s)", rs->status,
           resolve_why_text(rs->why));
}

int main(void)
{
    setup();
    test_parse();
    test_parse_errors();
    test_passwords();
    test_bind_as_nobody();
    test_resolve_through_the_store();
    test_backend_login_attribute();
    test_delegate_attribute();
    ldif_free(&st);
    return th_finish("test_ldif_store");
}

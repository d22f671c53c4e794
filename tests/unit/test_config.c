/* Configuration: the issue's file is accepted; every bad input names file:line. */
#include "../../core/config.h"
#include "../../tls/tls.h"
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/fg-test-config-XXXXXX";

static const char *write_file(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

/* Loads text as a configuration with flags; returns the error count and
 * the messages. */
static int load_with(struct fg_config *cfg, const char *text, char **msgs, unsigned flags)
{
    size_t n;
    FILE *err = open_memstream(msgs, &n);
    int errors = config_load(cfg, write_file("t.ini", text), err, flags);
    fclose(err);
    return errors;
}

/* As start-up loads it: host names are looked up and LDAP forests asked for
 * their domains (the cases below use .invalid names and closed ports). */
static int load(struct fg_config *cfg, const char *text, char **msgs)
{
    return load_with(cfg, text, msgs, CONFIG_START);
}

static const char issue_config[] = "[global]\n"
                                   "Workers = 2\n"
                                   "[imap]\n"
                                   "UnencryptedOrTLSBindings = 127.0.0.1:1143, [::1]:1143\n"
                                   "LoginType = PlainTextLogin\n"
                                   "Banner = The forestgate IMAP4 service is ready.\n"
                                   "PreAuthenticatedConnectionTimeout = 00:01:00\n"
                                   "AuthenticatedConnectionTimeout = 00:30:00\n"
                                   "MaxCommandSize = 10240\n"
                                   "ProtocolLogEnabled = false\n"
                                   "ProxyTargetPort = 10143\n"
                                   "[pop3]\n"
                                   "UnencryptedOrTLSBindings = 127.0.0.1:1110\n"
                                   "LoginType = PlainTextLogin\n"
                                   "ProxyTargetPort = 10110\n"
                                   "[backend]\n"
                                   "DefaultServer = 127.0.0.1\n"
                                   "LoginMode = PassThrough\n"
                                   "ConnectTimeout = 00:00:05\n";

static void test_issue_config_is_accepted(void)
{
    struct fg_config cfg;
    char *msgs;
    CHECK_INT(load(&cfg, issue_config, &msgs), 0);
    CHECK_MEM(msgs, strlen(msgs), "");
    CHECK_INT(cfg.workers, 2);
    CHECK_INT(cfg.proto[FG_PROTO_IMAP].plain.n, 2);
    CHECK_INT(cfg.proto[FG_PROTO_IMAP].sess.login_type, LOGIN_TYPE_PLAIN_TEXT_LOGIN);
    CHECK_INT(cfg.proto[FG_PROTO_IMAP].preauth_timeout, 60);
    CHECK_INT(cfg.proto[FG_PROTO_IMAP].auth_timeout, 1800);
    CHECK_INT(cfg.proto[FG_PROTO_IMAP].target_port, 10143);
    CHECK_INT(cfg.proto[FG_PROTO_POP3].sess.max_command, 512); /* Exchange's POP3 default */
    CHECK_INT(cfg.proto[FG_PROTO_POP3].preauth_timeout, 60);
    CHECK_INT(cfg.backend.connect_timeout, 5);
    CHECK_INT(cfg.backend.target.naddrs, 1);
    CHECK(cfg.backend.forward);
    CHECK_MEM(cfg.proto[FG_PROTO_POP3].sess.banner, strlen(cfg.proto[FG_PROTO_POP3].sess.banner),
              "The forestgate POP3 service is ready.");
    free(msgs);
    config_free(&cfg);
}

struct bad_case {
    const char *text;
    const char *message; /* must appear in the output, with its file:line */
};

static const struct bad_case bad[] = {
        {"[global]\nWorkers = many\n", "t.ini:2: Workers: expected a number from 0 to 256"},
        {"[global]\nWorkers = 257\n", "t.ini:2: Workers: expected a number"},
        {"[global]\nColour = blue\n", "t.ini:2: unknown setting \"Colour\" in [global]"},
        /* Found by fuzz_config: it would not read back the same from the dump. */
        {"[imap]\nBanner =;-)\n", "t.ini:2: Banner: a value cannot begin with ';'"},
        {"[imap4]\nBanner = x\n", "t.ini:1: unknown section [imap4]"},
        {"Workers = 1\n", "t.ini:1: setting \"Workers\" outside of any section"},
        {"[imap]\nLoginType = Plaintext\n", "t.ini:2: LoginType: expected PlainTextLogin"},
        {"[imap]\nUnencryptedOrTLSBindings = 1.2.3.4\n", "t.ini:2: binding \"1.2.3.4\""},
        {"[imap]\nUnencryptedOrTLSBindings = ::1:143\n", "t.ini:2: binding \"::1:143\""},
        {"[imap]\nUnencryptedOrTLSBindings = 127.0.0.1:0\n", "invalid port"},
        {"[imap]\nUnencryptedOrTLSBindings = 127.0.0.1:1143, 127.0.0.1:1143\n",
         "t.ini:2: binding 127.0.0.1:1143 is used twice"},
        {"[imap]\nPreAuthenticatedConnectionTimeout = 60\n",
         "t.ini:2: PreAuthenticatedConnectionTimeout: expected a time hh:mm:ss"},
        {"[imap]\nPreAuthenticatedConnectionTimeout = 00:00:05\n", "from 10 to 3600 seconds"},
        {"[imap]\nAuthenticatedConnectionTimeout = 00:61:00\n", "t.ini:2: Authenticated"},
        {"[imap]\nMaxCommandSize = 10\n", "t.ini:2: MaxCommandSize: expected a number from 40"},
        {"[imap]\nProtocolLogEnabled = maybe\n", "t.ini:2: ProtocolLogEnabled: expected true or"},
        {"[imap]\nBanner = a\nBanner = b\n", "t.ini:3: Banner is already set on line 2"},
        {"[imap]\n[imap]\n", "t.ini:2: section [imap] already started on line 1"},
        {"[imap]\nthis is not ini\n", "t.ini:2: syntax error"},
        {"[backend]\nLoginMode = Proxy\n", "t.ini:2: LoginMode: expected PassThrough or"},
        {"[imap]\n[backend]\nDefaultServer = no-such-host.invalid\n",
         "t.ini:3: DefaultServer no-such-host.invalid:"},
        {"[imap]\n[backend]\nLoginMode = PassThrough\n", "t.ini:2: [backend] DefaultServer is"},
        {"[imap]\n[backend]\nDefaultServer = 127.0.0.1\nLoginMode = MasterUser\n",
         "t.ini:4: LoginMode = MasterUser needs MasterUser"},
        {"[imap]\n[backend]\nDefaultServer = 127.0.0.1\nLoginMode = MasterUser\n"
         "MasterUser = m\nMasterPasswordFile = /nonexistent/pw\nAllowUncheckedMasterLogin = true\n",
         "t.ini:6: MasterPasswordFile /nonexistent/pw: No such file"},
        {"[imap]\n[backend]\nDefaultServer = 127.0.0.1\n", "t.ini:1: warning: LoginType = "
                                                           "SecureLogin"},
        {"[global]\n", "neither [imap] nor [pop3] is configured"},
        {"[global]\nLogFileLocation = /nonexistent\n[imap]\nProtocolLogEnabled = true\n"
         "LoginType = PlainTextLogin\n[backend]\nDefaultServer = 127.0.0.1\n",
         "t.ini:2: LogFileLocation /nonexistent is not a writable folder"},
        {"[imap]\nLoginType = PlainTextLogin\nSSLBindings = 127.0.0.1:1993\n[backend]\n"
         "DefaultServer = 127.0.0.1\n",
         "t.ini:3: SSLBindings needs a certificate: set X509CertificateName"},
        {"[imap]\nSSLBindings = 127.0.0.1\n", "t.ini:2: binding \"127.0.0.1\""},
        {"[imap]\nUnencryptedOrTLSBindings = 127.0.0.1:1143\nSSLBindings = 127.0.0.1:1143\n",
         "t.ini:3: binding 127.0.0.1:1143 is used twice"},
        {"[imap]\nSSLBindings = [::1]:1993, [::1]:1993\n",
         "t.ini:2: binding [::1]:1993 is used twice"},
        {"[imap]\nUnencryptedOrTLSBindings = 127.0.0.1:2000\n[pop3]\nSSLBindings = "
         "127.0.0.1:2000\n",
         "t.ini:4: binding 127.0.0.1:2000 is used twice"},
        {"[imap]\nSSLBindings = 127.0.0.1:2001\n[pop3]\nUnencryptedOrTLSBindings = "
         "127.0.0.1:2001\n",
         "t.ini:4: binding 127.0.0.1:2001 is used twice"},
        {"[imap]\nUnencryptedOrTLSBindings =\nSSLBindings =\n", "t.ini:2: [imap] has no bindings"},
        {"[imap]\nX509CertificateName =\n", "t.ini:2: X509CertificateName: empty value"},
        {"[imap]\nX509CertificateName = ../../etc/ssl/private/x\n",
         "t.ini:2: X509CertificateName: \"../../etc/ssl/private/x\" is not a host name"},
        {"[imap]\nX509CertificateName = mail/example\n", "t.ini:2: X509CertificateName: \"mail/"},
        {"[imap]\nX509CertificateName = .hidden\n", "t.ini:2: X509CertificateName: \".hidden\" is"},
        {"[imap]\nX509CertificateName = *.example.org, a..b/c\n",
         "t.ini:2: X509CertificateName: \"a..b/c\""},
        {"[imap]\nX509CertificateName = , ,\n", "t.ini:2: X509CertificateName: no name given"},
        {"[imap]\nX509CertificateName = a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q\n",
         "t.ini:2: X509CertificateName: more than 16 names"},
        {"[imap]\n[backend]\nDefaultServer = 127.0.0.1\nTls = yes\n",
         "t.ini:4: Tls: expected none, starttls or implicit, got \"yes\""},
        {"[imap]\n[backend]\nDefaultServer = 127.0.0.1\nTls = starttls\n",
         "t.ini:4: Tls = starttls needs TlsCaFile"},
        {"[imap]\n[backend]\nDefaultServer = 127.0.0.1\nTls = implicit\n",
         "t.ini:4: Tls = implicit needs TlsCaFile"},
        {"[imap]\n[backend]\nDefaultServer = 127.0.0.1\nTls = implicit\nTlsCaFile = "
         "/nonexistent/ca.pem\n",
         "t.ini:5: /nonexistent/ca.pem: cannot load the CA certificates"},
        {"[imap]\n[backend]\nDefaultServer = 127.0.0.1\nTlsCaFile =\n",
         "t.ini:4: TlsCaFile: empty value"},
        /* The connection limits: Exchange's ranges, 1 to 2147483647. */
        {"[imap]\nMaxConnectionFromSingleIP = 0\n",
         "t.ini:2: MaxConnectionFromSingleIP: expected a number from 1 to 2147483647, got \"0\""},
        {"[pop3]\nMaxConnectionFromSingleIP = 2147483648\n",
         "t.ini:2: MaxConnectionFromSingleIP: expected a number from 1 to 2147483647"},
        {"[imap]\nMaxConnectionFromSingleIP = -1\n",
         "t.ini:2: MaxConnectionFromSingleIP: expected"},
        {"[imap]\nMaxConnectionFromSingleIP = ten\n",
         "t.ini:2: MaxConnectionFromSingleIP: expected"},
        {"[imap]\nMaxConnectionsPerUser = 0\n",
         "t.ini:2: MaxConnectionsPerUser: expected a number from 1 to 2147483647, got \"0\""},
        {"[pop3]\nBanner = x\nMaxConnectionsPerUser = 99999999999\n",
         "t.ini:3: MaxConnectionsPerUser: expected a number from 1 to 2147483647"},
        {"[imap]\nMaxConnectionsPerUser = 3\nMaxConnectionsPerUser = 4\n",
         "t.ini:3: MaxConnectionsPerUser is already set on line 2"},
        {"[global]\nIPv6PrefixLength = 31\n",
         "t.ini:2: IPv6PrefixLength: expected a number from 32 to 128, got \"31\""},
        {"[global]\nIPv6PrefixLength = 129\n", "t.ini:2: IPv6PrefixLength: expected a number"},
        {"[global]\nIPv6PrefixLength = /64\n", "t.ini:2: IPv6PrefixLength: expected a number"},
        {"[imap]\nIPv6PrefixLength = 64\n",
         "t.ini:2: unknown setting \"IPv6PrefixLength\" in [imap]"},
        /* The PROXY protocol. */
        {"[imap]\nUnencryptedOrTLSBindings = 127.0.0.1:1143\nProxyProtocolBindings = "
         "127.0.0.1:1144\nTrustedProxies = 127.0.0.1\n",
         "t.ini:3: ProxyProtocolBindings: 127.0.0.1:1144 is not one of [imap]'s"},
        {"[imap]\nUnencryptedOrTLSBindings = 127.0.0.1:1143\n[pop3]\nUnencryptedOrTLSBindings = "
         "127.0.0.1:1110\nProxyProtocolBindings = 127.0.0.1:1143\nTrustedProxies = ::1\n",
         "t.ini:5: ProxyProtocolBindings: 127.0.0.1:1143 is not one of [pop3]'s"},
        {"[imap]\nUnencryptedOrTLSBindings = 127.0.0.1:1143\nProxyProtocolBindings = "
         "127.0.0.1:1143\n",
         "t.ini:3: ProxyProtocolBindings needs TrustedProxies"},
        {"[imap]\nProxyProtocolBindings = 127.0.0.1\n", "t.ini:2: binding \"127.0.0.1\""},
        {"[imap]\nTrustedProxies = 10.0.0.1/8\n",
         "t.ini:2: TrustedProxies: \"10.0.0.1/8\": address has bits set past the prefix"},
        {"[imap]\nTrustedProxies = 127.0.0.1, 10.0.0.0/33\n",
         "t.ini:2: TrustedProxies: \"10.0.0.0/33\": invalid prefix length (0 to 32)"},
        {"[imap]\nTrustedProxies = ::1/129\n", "invalid prefix length (0 to 128)"},
        {"[imap]\nTrustedProxies = 10.0.0.0/\n", "t.ini:2: TrustedProxies: \"10.0.0.0/\""},
        {"[imap]\nTrustedProxies = 10.0.0.0/+8\n", "t.ini:2: TrustedProxies: \"10.0.0.0/+8\""},
        {"[imap]\nTrustedProxies = lb.example\n",
         "t.ini:2: TrustedProxies: \"lb.example\": invalid IPv4 address"},
        {"[imap]\nTrustedProxies = [::1]\n", "t.ini:2: TrustedProxies: \"[::1]\": invalid IPv6"},
        {"[imap]\nProxyProtocolTimeout = 5\n", "t.ini:2: ProxyProtocolTimeout: expected a time"},
        {"[imap]\nProxyProtocolTimeout = 00:00:00\n", "from 1 to 300 seconds"},
        {"[imap]\nUnencryptedOrTLSBindings = 127.0.0.1:1143\nTrustedProxies = 127.0.0.1\n"
         "LoginType = PlainTextLogin\n[backend]\nDefaultServer = 127.0.0.1\n",
         "t.ini:3: warning: TrustedProxies without ProxyProtocolBindings"},
        {"[imap]\n[backend]\nDefaultServer = 127.0.0.1\nSendProxyProtocol = v1\n",
         "t.ini:4: SendProxyProtocol: expected no or v2, got \"v1\""},
        /* SourceAddresses: addresses without ports. */
        {"[backend]\nSourceAddresses = 10.0.0.1, 10.0.0.300\n",
         "t.ini:2: SourceAddresses: \"10.0.0.300\": not an IPv4 or IPv6 address"},
        {"[backend]\nSourceAddresses = 10.0.0.1:25\n",
         "t.ini:2: SourceAddresses: \"10.0.0.1:25\": not an IPv4 or IPv6 address"},
        {"[backend]\nSourceAddresses = 10.0.0.0/24\n", "t.ini:2: SourceAddresses: \"10.0.0.0/24\""},
        {"[backend]\nSourceAddresses = 0.0.0.0\n",
         "t.ini:2: SourceAddresses: \"0.0.0.0\": the unspecified address binds nothing"},
        {"[backend]\nSourceAddresses = [::]\n", "the unspecified address binds nothing"},
        {"[backend]\nSourceAddresses = 10.0.0.1 10.0.0.2,10.0.0.1\n",
         "t.ini:2: SourceAddresses: \"10.0.0.1\": listed twice"},
        {"[backend]\nSourceAddresses = mail.example\n",
         "t.ini:2: SourceAddresses: \"mail.example\": not an IPv4 or IPv6 address"},
};

static char *dump_of(const struct fg_config *cfg);

/* ProxyProtocolBindings, TrustedProxies, ProxyProtocolTimeout and
 * SendProxyProtocol as the reader keeps them and show settings prints them. */
static void test_proxy_protocol_settings(void)
{
    struct fg_config cfg;
    char *msgs;
    const char *text = "[imap]\nUnencryptedOrTLSBindings = 127.0.0.1:1143, [::1]:1143\n"
                       "LoginType = PlainTextLogin\nProxyProtocolBindings = [::1]:1143\n"
                       "TrustedProxies = 127.0.0.1, 10.0.0.0/8 ,::1, fd00::/8, 192.0.2.128/25\n"
                       "ProxyProtocolTimeout = 00:00:03\n"
                       "[pop3]\nUnencryptedOrTLSBindings = 127.0.0.1:1110\n"
                       "LoginType = PlainTextLogin\n"
                       "[backend]\nDefaultServer = 127.0.0.1\nSendProxyProtocol = v2\n";
    CHECK_INT(load(&cfg, text, &msgs), 0);
    CHECK_MEM(msgs, strlen(msgs), "");
    const struct proto_conf *imap = &cfg.proto[FG_PROTO_IMAP], *pop3 = &cfg.proto[FG_PROTO_POP3];
    CHECK_INT(imap->proxy.n, 1);
    CHECK_INT(imap->trusted.n, 5);
    CHECK_INT(imap->proxy_timeout, 3);
    CHECK_INT(pop3->proxy.n, 0);
    CHECK_INT(pop3->proxy_timeout, 5); /* the default */
    CHECK_INT(cfg.backend.policy.send_proxy, BACKEND_PROXY_V2);
    CHECK(config_is_proxy_binding(&cfg, FG_PROTO_IMAP, &imap->plain.a[1]));
    CHECK(!config_is_proxy_binding(&cfg, FG_PROTO_IMAP, &imap->plain.a[0]));
    CHECK(!config_is_proxy_binding(&cfg, FG_PROTO_POP3, &pop3->plain.a[0]));

    static const struct {
        const char *addr;
        bool trusted;
    } peers[] = {
            {"127.0.0.1:5", true},
            {"127.0.0.2:5", false},
            {"10.200.3.4:5", true},
            {"11.0.0.1:5", false},
            {"[::1]:5", true},
            {"[::2]:5", false},
            {"[fd12::9]:5", true},
            {"[fe80::1]:5", false},
            {"192.0.2.200:5", true},
            {"192.0.2.127:5", false},
            {"[::ffff:10.1.2.3]:5", true},
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(peers); i++) {
        union net_addr a;
        const char *why;
        CHECK(net_parse_binding(peers[i].addr, &a, &why) == FG_OK);
        CHECKF(config_cidrs_match(&imap->trusted, &a) == peers[i].trusted, "%s", peers[i].addr);
    }

    char *dump = dump_of(&cfg);
    CHECKF(strstr(dump, "ProxyProtocolBindings = [::1]:1143\n") &&
                   strstr(dump, "TrustedProxies = 127.0.0.1, 10.0.0.0/8, ::1, fd00::/8, "
                                "192.0.2.128/25\n") &&
                   strstr(dump, "ProxyProtocolTimeout = 00:00:03\n") &&
                   strstr(dump, "SendProxyProtocol = v2\n"),
           "%s", dump);
    free(msgs);
    struct fg_config cfg2;
    CHECK_INT(load(&cfg2, dump, &msgs), 0);
    char *again = dump_of(&cfg2);
    CHECKF(strcmp(dump, again) == 0, "first:\n%s\nsecond:\n%s", dump, again);
    free(again);
    free(dump);
    free(msgs);
    config_free(&cfg2);
    config_free(&cfg);
}

static void test_bad_inputs_name_file_and_line(void)
{
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct fg_config cfg;
        char *msgs;
        int errors = load(&cfg, bad[i].text, &msgs);
        bool warning_only = strstr(bad[i].message, "warning") != NULL;
        th_checks++;
        if ((warning_only ? errors != 0 : errors == 0) || !strstr(msgs, bad[i].message))
            th_fail(__FILE__, __LINE__, "case %zu: %d errors, output:\n%s\nexpected: %s", i, errors,
                    msgs, bad[i].message);
        free(msgs);
        config_free(&cfg);
    }
}

/* Exchange's defaults, and values at both ends of the ranges. */
static void test_connection_limits(void)
{
    struct fg_config cfg;
    char *msgs;
    CHECK_INT(load(&cfg, issue_config, &msgs), 0);
    for (int p = 0; p < FG_PROTO_COUNT; p++) {
        CHECK_INT(cfg.proto[p].max_connections, 2147483647);
        CHECK_INT(cfg.proto[p].max_per_ip, 2147483647);
        CHECK_INT(cfg.proto[p].max_per_user, 16);
    }
    CHECK_INT(cfg.ipv6_prefix, 64);
    free(msgs);
    config_free(&cfg);
    CHECK_INT(load(&cfg,
                   "[global]\nIPv6PrefixLength = 128\n[imap]\nLoginType = PlainTextLogin\n"
                   "MaxConnectionFromSingleIP = 1\nMaxConnectionsPerUser = 2147483647\n"
                   "[pop3]\nLoginType = PlainTextLogin\nMaxConnectionFromSingleIP = 2147483647\n"
                   "maxconnectionsperuser = 1\n[backend]\nDefaultServer = 127.0.0.1\n",
                   &msgs),
              0);
    CHECK_MEM(msgs, strlen(msgs), "");
    CHECK_INT(cfg.ipv6_prefix, 128);
    CHECK_INT(cfg.proto[FG_PROTO_IMAP].max_per_ip, 1);
    CHECK_INT(cfg.proto[FG_PROTO_IMAP].max_per_user, 2147483647);
    CHECK_INT(cfg.proto[FG_PROTO_POP3].max_per_ip, 2147483647);
    CHECK_INT(cfg.proto[FG_PROTO_POP3].max_per_user, 1);
    free(msgs);
    config_free(&cfg);
    CHECK_INT(load(&cfg,
                   "[global]\nIPv6PrefixLength = 32\n[imap]\n[backend]\nDefaultServer = "
                   "127.0.0.1\n",
                   &msgs),
              0);
    CHECK_INT(cfg.ipv6_prefix, 32);
    free(msgs);
    config_free(&cfg);
}

static void test_long_line_is_refused(void)
{
    char text[600];
    struct fg_config cfg;
    char *msgs;
    int n = snprintf(text, sizeof text, "[imap]\nBanner = ");
    memset(text + n, 'x', 300);
    snprintf(text + n + 300, sizeof text - (size_t)n - 300, "\n[backend]\n");
    CHECK(load(&cfg, text, &msgs) > 0);
    CHECK(strstr(msgs, "t.ini:2: line longer than") != NULL);
    free(msgs);
    config_free(&cfg);
}

static void test_master_password_file(void)
{
    struct fg_config cfg;
    char *msgs, text[512];
    write_file("pw", "s3cr et\n");
    snprintf(text, sizeof text,
             "[pop3]\nLoginType = PlainTextLogin\n[backend]\nDefaultServer = localhost\n"
             "LoginMode = MasterUser\nMasterUser = proxy\nMasterPasswordFile = %s/pw\n"
             "AllowUncheckedMasterLogin = yes\nConnectTimeout = 1.00:00:00\n",
             dir);
    /* 1 day is over ConnectTimeout's maximum. */
    CHECK(load(&cfg, text, &msgs) == 1);
    CHECK(strstr(msgs, "t.ini:9: ConnectTimeout") != NULL);
    free(msgs);
    config_free(&cfg);
    char *nl = strrchr(text, 'C');
    strcpy(nl, "ConnectTimeout = 00:02:00\n");
    CHECK_INT(load(&cfg, text, &msgs), 0);
    CHECK_MEM(cfg.backend.master_pass, cfg.backend.master_pass_len, "s3cr et");
    CHECK_INT(cfg.backend.mode, BACKEND_LOGIN_MASTER);
    CHECK_INT(cfg.backend.connect_timeout, 120);
    CHECK(cfg.backend.target.naddrs >= 1);
    /* [pop3] without bindings gets Exchange's defaults. */
    CHECK_INT(cfg.proto[FG_PROTO_POP3].plain.n, 2);
    CHECK(!cfg.proto[FG_PROTO_IMAP].enabled);
    free(msgs);
    config_free(&cfg);
    CHECK(cfg.backend.master_pass == NULL);
}

/* A password file is one line of 1 to CRED_PASS_MAX bytes, read whole. */
static void test_password_file_shapes(void)
{
    static char big[CRED_PASS_MAX + 8];
    static const struct {
        const char *text;
        size_t n;         /* 0: text is a string */
        const char *want; /* NULL: refused */
    } cases[] = {
            {"pw\r\n", 0, "pw"},
            {"no newline", 0, "no newline"},
            {"", 0, NULL},
            {"\n", 0, NULL},
            {"two\nlines\n", 0, NULL},
            {"nul\0in it\n", 11, NULL},
            {big, CRED_PASS_MAX, big},      /* the longest */
            {big, CRED_PASS_MAX + 1, NULL}, /* one byte more */
            {big, sizeof big, NULL},        /* more than is read at once */
    };
    memset(big, 'x', sizeof big);
    for (size_t i = 0; i < FG_ARRAY_SIZE(cases); i++) {
        struct fg_config cfg;
        char *msgs, path[300], text[512];
        size_t n = cases[i].n ? cases[i].n : strlen(cases[i].text);
        snprintf(path, sizeof path, "%s/pw%zu", dir, i);
        FILE *f = fopen(path, "w");
        CHECK(f && fwrite(cases[i].text, 1, n, f) == n);
        fclose(f);
        snprintf(text, sizeof text,
                 "[pop3]\n[backend]\nDefaultServer = localhost\nLoginMode = MasterUser\n"
                 "MasterUser = proxy\nMasterPasswordFile = %s\nAllowUncheckedMasterLogin = yes\n",
                 path);
        int errors = load(&cfg, text, &msgs);
        if (cases[i].want) {
            size_t len = cases[i].want == big ? CRED_PASS_MAX : strlen(cases[i].want);
            CHECKF(errors == 0, "case %zu: %s", i, msgs);
            CHECKF(cfg.backend.master_pass_len == len &&
                           memcmp(cfg.backend.master_pass, cases[i].want, len) == 0,
                   "case %zu: %zu bytes", i, cfg.backend.master_pass_len);
        } else {
            CHECKF(errors == 1 && strstr(msgs, "expected one line of 1 to 1024 bytes"),
                   "case %zu: %s", i, msgs);
        }
        free(msgs);
        config_free(&cfg);
    }
    /* A file that cannot be read: the system's reason. */
    struct fg_config cfg;
    char *msgs, text[512];
    snprintf(text, sizeof text,
             "[pop3]\n[backend]\nDefaultServer = localhost\nLoginMode = MasterUser\n"
             "MasterUser = proxy\nMasterPasswordFile = %s\nAllowUncheckedMasterLogin = yes\n",
             dir);
    CHECK(load(&cfg, text, &msgs) == 1);
    CHECKF(strstr(msgs, "t.ini:6: MasterPasswordFile") && strstr(msgs, "Is a directory"), "%s",
           msgs);
    free(msgs);
    config_free(&cfg);
}

/* ThrottleKeyFile: THR_KEY_MIN to 4096 bytes, read whole, readable by no
 * other user. */
static void test_throttle_key_file_shapes(void)
{
    static uint8_t bytes[5000];
    static const struct {
        size_t n;
        mode_t mode;
        bool ok;
    } cases[] = {
            {32, 0600, true},    {31, 0600, false},   {4096, 0640, true},
            {4097, 0600, false}, {5000, 0600, false}, {64, 0644, false},
    };
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (uint8_t)(i * 7 + 1);
    for (size_t i = 0; i < FG_ARRAY_SIZE(cases); i++) {
        struct fg_config cfg;
        char *msgs, path[300], text[512];
        snprintf(path, sizeof path, "%s/key%zu", dir, i);
        FILE *f = fopen(path, "w");
        CHECK(f && fwrite(bytes, 1, cases[i].n, f) == cases[i].n);
        fclose(f);
        chmod(path, cases[i].mode);
        snprintf(text, sizeof text,
                 "[pop3]\n[backend]\nDefaultServer = localhost\n[throttle]\n"
                 "ThrottleKeyFile = %s\n",
                 path);
        int errors = load(&cfg, text, &msgs);
        if (cases[i].ok) {
            CHECKF(errors == 0, "case %zu: %s", i, msgs);
            CHECKF(cfg.throttle.key_len == cases[i].n &&
                           memcmp(cfg.throttle.key, bytes, cases[i].n) == 0,
                   "case %zu: %zu bytes", i, cfg.throttle.key_len);
        } else {
            CHECKF(errors == 1 && strstr(msgs, "t.ini:5: ThrottleKeyFile"), "case %zu: %s", i,
                   msgs);
        }
        free(msgs);
        config_free(&cfg);
    }
    struct fg_config cfg;
    char *msgs, text[512];
    snprintf(text, sizeof text,
             "[pop3]\n[backend]\nDefaultServer = localhost\n[throttle]\n"
             "ThrottleKeyFile = %s/nonexistent\n",
             dir);
    CHECK(load(&cfg, text, &msgs) == 1);
    CHECKF(strstr(msgs, "No such file"), "%s", msgs);
    free(msgs);
    config_free(&cfg);
}

/* ---- TLS: certificates, bindings, the backend -------------------------------- */

static char cert_dir[300];

/* Makes a self-signed ECDSA P-256 certificate NAME.crt / NAME.key in cert_dir. */
static int make_cert(const char *file, const char *cn)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 "
             "-subj '/CN=%s' -addext 'subjectAltName=DNS:%s' -keyout '%s/%s.key' "
             "-out '%s/%s.crt' 2>/dev/null",
             cn, cn, cert_dir, file, cert_dir, file);
    return system(cmd);
}

/*
 * The certificate directory: mail.example and *.example.org (good), mismatch
 * (mail.example's certificate with another key), nokey (no key file),
 * garbage (neither file is PEM).
 */
static bool make_cert_dir(void)
{
    char cmd[1000];
    snprintf(cert_dir, sizeof cert_dir, "%s/certs", dir);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", cert_dir);
    if (system(cmd) != 0 || make_cert("mail.example", "mail.example") != 0 ||
        make_cert("*.example.org", "*.example.org") != 0 || make_cert("other", "other.example"))
        return false;
    snprintf(cmd, sizeof cmd,
             "cd '%s' && cp mail.example.crt mismatch.crt && cp other.key mismatch.key && "
             "cp mail.example.crt nokey.crt && echo 'not a certificate' > garbage.crt && "
             "echo 'not a key' > garbage.key",
             cert_dir);
    return system(cmd) == 0;
}

/* Loads text with every "@D" replaced by the certificate directory. */
/* text with every "@D" replaced by the certificates' folder. */
static void expand_d(const char *text, char *out, size_t n)
{
    size_t o = 0;
    for (const char *p = text; *p && o + sizeof cert_dir < n; p++) {
        if (p[0] == '@' && p[1] == 'D') {
            o += (size_t)snprintf(out + o, n - o, "%s", cert_dir);
            p++;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = 0;
}

static int load_certs(struct fg_config *cfg, const char *text, char **msgs)
{
    char out[4096];
    expand_d(text, out, sizeof out);
    return load(cfg, out, msgs);
}

static void check_binding(const struct bindings *b, unsigned i, const char *want)
{
    char s[64] = "(none)";
    if (i < b->n)
        net_addr_str(&b->a[i], s, sizeof s);
    CHECKF(strcmp(s, want) == 0, "binding %u: got %s, expected %s", i, s, want);
}

static void test_certificate_gives_starttls_and_default_tls_bindings(void)
{
    static const char text[] = "[global]\nCertificateDirectory = @D\n"
                               "[imap]\nX509CertificateName = mail.example\n"
                               "[pop3]\nX509CertificateName = mail.example, *.example.org\n"
                               "[backend]\nDefaultServer = 127.0.0.1\n";
    static const char *const ports[FG_PROTO_COUNT][2] = {{"143", "993"}, {"110", "995"}};
    struct fg_config cfg;
    char *msgs;
    CHECK_INT(load_certs(&cfg, text, &msgs), 0);
    /* SecureLogin is the default; with a certificate clients can log in: no warning */
    CHECKF(msgs[0] == 0, "messages:\n%s", msgs);
    for (int p = 0; p < FG_PROTO_COUNT; p++) {
        const struct proto_conf *pc = &cfg.proto[p];
        char want[32];
        CHECK(pc->tls_server != NULL);
        CHECK(pc->sess.starttls);
        CHECK_INT(pc->sess.login_type, LOGIN_TYPE_SECURE);
        CHECK_INT(pc->plain.n, 2);
        CHECK_INT(pc->tls.n, 2);
        snprintf(want, sizeof want, "0.0.0.0:%s", ports[p][0]);
        check_binding(&pc->plain, 0, want);
        snprintf(want, sizeof want, "[::]:%s", ports[p][0]);
        check_binding(&pc->plain, 1, want);
        snprintf(want, sizeof want, "0.0.0.0:%s", ports[p][1]);
        check_binding(&pc->tls, 0, want);
        snprintf(want, sizeof want, "[::]:%s", ports[p][1]);
        check_binding(&pc->tls, 1, want);
    }
    CHECK_INT(cfg.backend.policy.tls, BACKEND_TLS_NONE);
    CHECK(cfg.backend.policy.tls_cl == NULL);

    char *dump;
    size_t n;
    FILE *f = open_memstream(&dump, &n);
    config_dump(&cfg, f);
    fclose(f);
    CHECKF(strstr(dump, "SSLBindings = 0.0.0.0:993, [::]:993\n") &&
                   strstr(dump, "X509CertificateName = mail.example, *.example.org\n") &&
                   strstr(dump, "Tls = none\n"),
           "dump:\n%s", dump);
    free(dump);

    /* SIGHUP reloads the same names; a reload that fails says why. */
    char err[PATH_MAX + 200];
    struct tls_server *ts = config_load_certs(&cfg, FG_PROTO_POP3, err, sizeof err);
    CHECKF(ts != NULL, "reload: %s", err);
    tls_server_free(ts);
    snprintf(cfg.cert_dir, sizeof cfg.cert_dir, "%s/gone", dir);
    ts = config_load_certs(&cfg, FG_PROTO_IMAP, err, sizeof err);
    CHECK(ts == NULL);
    CHECKF(ts == NULL && strstr(err, "/gone/mail.example.crt"), "reload error: %s", err);
    tls_server_free(ts);
    free(msgs);
    config_free(&cfg);
    CHECK(cfg.proto[FG_PROTO_IMAP].tls_server == NULL);
    CHECK(cfg.proto[FG_PROTO_POP3].tls_server == NULL);
}

static void test_no_certificate_means_no_tls(void)
{
    struct fg_config cfg;
    char *msgs;
    CHECK_INT(load(&cfg, "[imap]\n[pop3]\n[backend]\nDefaultServer = 127.0.0.1\n", &msgs), 0);
    for (int p = 0; p < FG_PROTO_COUNT; p++) {
        CHECK(cfg.proto[p].tls_server == NULL);
        CHECK(!cfg.proto[p].sess.starttls);
        CHECK_INT(cfg.proto[p].plain.n, 2);
        CHECK_INT(cfg.proto[p].tls.n, 0);
    }
    /* the SecureLogin warning, once per protocol, at its section */
    CHECKF(strstr(msgs, "t.ini:1: warning: LoginType = SecureLogin") &&
                   strstr(msgs, "t.ini:2: warning: LoginType = SecureLogin") &&
                   strstr(msgs, "clients cannot log in"),
           "messages:\n%s", msgs);
    free(msgs);
    config_free(&cfg);
}

/* Setting one kind of binding leaves the other empty. */
static void test_explicit_bindings_replace_both_defaults(void)
{
    static const struct {
        const char *imap; /* the [imap] settings */
        unsigned plain, tls;
    } cases[] = {
            {"SSLBindings = 127.0.0.1:1993\n", 0, 1},
            {"UnencryptedOrTLSBindings = 127.0.0.1:1143\n", 1, 0},
            {"UnencryptedOrTLSBindings =\nSSLBindings = 127.0.0.1:1993, [::1]:1993\n", 0, 2},
            {"UnencryptedOrTLSBindings = 127.0.0.1:1143\nSSLBindings = 127.0.0.1:1993\n", 1, 1},
            {"UnencryptedOrTLSBindings = 127.0.0.1:1143\nSSLBindings =\n", 1, 0},
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(cases); i++) {
        struct fg_config cfg;
        char *msgs, text[512];
        snprintf(text, sizeof text,
                 "[global]\nCertificateDirectory = @D\n[imap]\nX509CertificateName = "
                 "mail.example\n%s[backend]\nDefaultServer = 127.0.0.1\n",
                 cases[i].imap);
        int errors = load_certs(&cfg, text, &msgs);
        CHECKF(errors == 0, "case %zu: %d errors:\n%s", i, errors, msgs);
        CHECKF(cfg.proto[FG_PROTO_IMAP].plain.n == cases[i].plain &&
                       cfg.proto[FG_PROTO_IMAP].tls.n == cases[i].tls,
               "case %zu: %u plain and %u TLS bindings, expected %u and %u", i,
               cfg.proto[FG_PROTO_IMAP].plain.n, cfg.proto[FG_PROTO_IMAP].tls.n, cases[i].plain,
               cases[i].tls);
        CHECK(cfg.proto[FG_PROTO_IMAP].sess.starttls);
        free(msgs);
        config_free(&cfg);
    }
}

/* A certificate that cannot be loaded: one error, at X509CertificateName's line. */
static void test_bad_certificates_name_line_and_file(void)
{
    static const struct {
        const char *names;
        const char *file; /* named in the message, after the directory */
        const char *why;
    } cases[] = {
            {"nosuch", "/nosuch.crt", "certificate"},
            {"mail.example, nosuch", "/nosuch.crt", "certificate"},
            {"garbage", "/garbage.crt", "certificate"},
            {"nokey", "/nokey.", "private key"},
            {"mismatch", "/mismatch.", "does not match"},
            {"*.example.net", "/*.example.net.crt", "certificate"},
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(cases); i++) {
        struct fg_config cfg;
        char *msgs, text[512], want[600];
        snprintf(text, sizeof text,
                 "[global]\nCertificateDirectory = @D\n[imap]\nLoginType = PlainTextLogin\n"
                 "X509CertificateName = %s\n[backend]\nDefaultServer = 127.0.0.1\n",
                 cases[i].names);
        int errors = load_certs(&cfg, text, &msgs);
        snprintf(want, sizeof want, "t.ini:5: %s%s", cert_dir, cases[i].file);
        bool named = strstr(msgs, want) != NULL;
        CHECKF(errors == 1 && named && strstr(msgs, cases[i].why),
               "\"%s\": %d errors, output:\n%s\nexpected %s... %s", cases[i].names, errors, msgs,
               want, cases[i].why);
        CHECK(cfg.proto[FG_PROTO_IMAP].tls_server == NULL);
        CHECK(!cfg.proto[FG_PROTO_IMAP].sess.starttls);
        free(msgs);
        config_free(&cfg);
    }
}

/* The key file is the one to name when the key is what is missing. */
static void test_missing_key_names_the_key_file(void)
{
    struct fg_config cfg;
    char *msgs, want[400];
    CHECK(load_certs(&cfg,
                     "[global]\nCertificateDirectory = @D\n[imap]\nX509CertificateName = nokey\n"
                     "[backend]\nDefaultServer = 127.0.0.1\n",
                     &msgs) == 1);
    snprintf(want, sizeof want, "%s/nokey.key", cert_dir);
    CHECKF(strstr(msgs, want) != NULL, "output:\n%s\nshould name %s", msgs, want);
    free(msgs);
    config_free(&cfg);
}

/* Only a leading "*." makes a wildcard: "*mail.example" or "*" is no host name. */
static void test_wildcard_must_be_star_dot(void)
{
    static const char *const names[] = {"*mail.example", "*", "*-x.example"};
    for (size_t i = 0; i < FG_ARRAY_SIZE(names); i++) {
        struct fg_config cfg;
        char *msgs, text[256], want[128];
        snprintf(text, sizeof text, "[imap]\nX509CertificateName = %s\n", names[i]);
        load(&cfg, text, &msgs);
        snprintf(want, sizeof want, "t.ini:2: X509CertificateName: \"%s\" is not a host name",
                 names[i]);
        CHECKF(strstr(msgs, want) != NULL, "output:\n%s\nexpected %s", msgs, want);
        free(msgs);
        config_free(&cfg);
    }
}

/* TLS bindings clash across protocols, defaults included. */
static void test_tls_bindings_used_twice_across_protocols(void)
{
    static const struct {
        const char *text;
        const char *message;
    } cases[] = {
            /* [imap]'s default 993 against [pop3]'s explicit one */
            {"[global]\nCertificateDirectory = @D\n[imap]\nX509CertificateName = mail.example\n"
             "[pop3]\nLoginType = PlainTextLogin\nUnencryptedOrTLSBindings = 0.0.0.0:993\n"
             "[backend]\nDefaultServer = 127.0.0.1\n",
             "t.ini:7: binding 0.0.0.0:993 is used twice"},
            {"[global]\nCertificateDirectory = @D\n[imap]\nX509CertificateName = mail.example\n"
             "[pop3]\nX509CertificateName = mail.example\nSSLBindings = [::]:993\n"
             "[backend]\nDefaultServer = 127.0.0.1\n",
             "t.ini:7: binding [::]:993 is used twice"},
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(cases); i++) {
        struct fg_config cfg;
        char *msgs;
        int errors = load_certs(&cfg, cases[i].text, &msgs);
        CHECKF(errors == 1 && strstr(msgs, cases[i].message), "case %zu: %d errors:\n%s", i, errors,
               msgs);
        free(msgs);
        config_free(&cfg);
    }
}

/* A clash with a default binding still names a line: the section's. */
static void test_clash_with_default_tls_binding_has_a_line(void)
{
    struct fg_config cfg;
    char *msgs;
    int errors = load_certs(&cfg,
                            "[global]\nCertificateDirectory = @D\n[imap]\nLoginType = "
                            "PlainTextLogin\nUnencryptedOrTLSBindings = 0.0.0.0:995\n"
                            "[pop3]\nX509CertificateName = mail.example\n"
                            "[backend]\nDefaultServer = 127.0.0.1\n",
                            &msgs);
    const char *m = strstr(msgs, "binding 0.0.0.0:995 is used twice");
    CHECKF(errors == 1 && m, "%d errors:\n%s", errors, msgs);
    /* "t.ini:N: binding ...", as the header promises for every problem */
    CHECKF(m && m - msgs >= 8 && m[-1] == ' ' && m[-2] == ':' && m[-3] >= '0' && m[-3] <= '9',
           "the clash is reported without a line number:\n%s", msgs);
    free(msgs);
    config_free(&cfg);
}

static void test_backend_tls(void)
{
    static const struct {
        const char *backend; /* the [backend] settings after DefaultServer */
        uint8_t tls;
        const char *tls_name;
        uint16_t imap_port, pop3_port;
    } cases[] = {
            {"Tls = none\n", BACKEND_TLS_NONE, "localhost", 143, 110},
            {"Tls = starttls\nTlsCaFile = @D/mail.example.crt\n", BACKEND_TLS_STARTTLS, "localhost",
             143, 110},
            {"Tls = STARTTLS\nTlsCaFile = @D/mail.example.crt\nTlsServerName = imap.example\n",
             BACKEND_TLS_STARTTLS, "imap.example", 143, 110},
            {"Tls = implicit\nTlsCaFile = @D/mail.example.crt\n", BACKEND_TLS_IMPLICIT, "localhost",
             993, 995},
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(cases); i++) {
        struct fg_config cfg;
        char *msgs, text[512];
        snprintf(text, sizeof text,
                 "[imap]\nLoginType = PlainTextLogin\n[pop3]\nLoginType = PlainTextLogin\n"
                 "[backend]\nDefaultServer = localhost\n%s",
                 cases[i].backend);
        int errors = load_certs(&cfg, text, &msgs);
        const struct backend_target *t = &cfg.backend.target;
        const struct backend_policy *pol = t->policy;
        CHECKF(errors == 0, "case %zu: %d errors:\n%s", i, errors, msgs);
        CHECKF(pol == &cfg.backend.policy && pol->tls == cases[i].tls &&
                       (pol->tls_cl != NULL) == (cases[i].tls != 0),
               "case %zu: tls %d, client %p", i, pol->tls, (void *)pol->tls_cl);
        CHECKF(strcmp(backend_tls_name(t, 0), cases[i].tls_name) == 0, "case %zu: TLS name \"%s\"",
               i, backend_tls_name(t, 0));
        CHECK_INT(cfg.proto[FG_PROTO_IMAP].target_port, cases[i].imap_port);
        CHECK_INT(cfg.proto[FG_PROTO_POP3].target_port, cases[i].pop3_port);
        CHECK_INT(pol->port[FG_PROTO_IMAP], cases[i].imap_port);
        CHECK_INT(pol->port[FG_PROTO_POP3], cases[i].pop3_port);
        free(msgs);
        config_free(&cfg);
        CHECK(cfg.backend.policy.tls_cl == NULL);
    }

    /* implicit TLS with ProxyTargetPort set: that port stays */
    struct fg_config cfg;
    char *msgs;
    CHECK_INT(load_certs(&cfg,
                         "[imap]\nLoginType = PlainTextLogin\nProxyTargetPort = 10993\n"
                         "[pop3]\nLoginType = PlainTextLogin\n[backend]\nTls = implicit\n"
                         "TlsCaFile = @D/mail.example.crt\nDefaultServer = 127.0.0.1\n",
                         &msgs),
              0);
    CHECK_INT(cfg.proto[FG_PROTO_IMAP].target_port, 10993);
    CHECK_INT(cfg.proto[FG_PROTO_POP3].target_port, 995);
    CHECKF(strcmp(backend_tls_name(&cfg.backend.target, 0), "127.0.0.1") == 0, "TLS name \"%s\"",
           backend_tls_name(&cfg.backend.target, 0));
    free(msgs);
    config_free(&cfg);

    /* a CA file that is not PEM: an error at TlsCaFile's line, naming it */
    char want[400];
    CHECK_INT(load_certs(&cfg,
                         "[imap]\nLoginType = PlainTextLogin\n[backend]\nDefaultServer = "
                         "127.0.0.1\nTls = starttls\nTlsCaFile = @D/garbage.crt\n",
                         &msgs),
              1);
    snprintf(want, sizeof want, "t.ini:6: %s/garbage.crt: ", cert_dir);
    CHECKF(strstr(msgs, want) != NULL, "output:\n%s\nexpected %s", msgs, want);
    CHECK(cfg.backend.policy.tls_cl == NULL);
    free(msgs);
    config_free(&cfg);
}

/* ---- [database:NAME]: one database's TLS and ports ---- */

static void test_database_sections(void)
{
    struct fg_config cfg;
    char *msgs;
    write_file("acc.ldif", "dn: DC=acc,DC=example\nobjectClass: domainDNS\n");
    CHECK_INT(load_certs(&cfg,
                         "[imap]\nLoginType = PlainTextLogin\nProxyTargetPort = 10143\n"
                         "[pop3]\nLoginType = PlainTextLogin\n"
                         "[backend]\nLoginMode = MasterUser\nMasterUser = m\n"
                         "MasterPasswordFile = @D/../master.pw\nTls = starttls\n"
                         "TlsCaFile = @D/mail.example.crt\n"
                         "[forest:a]\nRole = Organization\nLdif = @D/../acc.ldif\n"
                         "Domains = A:a.example:DC=acc,DC=example\n"
                         "[database:db01]\nTls = implicit\nTlsServerName = mbx.example\n"
                         "[databases]\nDB01 = 127.0.0.2, localhost\nDB02 = 127.0.0.3\n"
                         "[database:Mailbox Database 7]\nTls = none\nPop3Port = 1110\n",
                         &msgs),
              0);
    /* DB02's host is an address that its certificate is checked against:
     * said once; DB01's address is covered by its TlsServerName. */
    CHECKF(strstr(msgs, "t.ini:21: warning: 127.0.0.3 is an address: its certificate must carry "
                        "the name \"127.0.0.3\"") &&
                   !strchr(strchr(msgs, '\n') + 1, '\n'),
           "%s", msgs);
    const struct dir_conf *dc = &cfg.dir;
    CHECK_INT(dc->ndatabases, 3);
    const struct database_conf *d1 = &dc->databases[0], *d2 = &dc->databases[1],
                               *d7 = &dc->databases[2];
    /* DB01: its own implicit TLS, its own name, and the implicit TLS ports */
    CHECK(d1->mapped && d1->custom && d1->target.policy == &d1->policy);
    CHECK(d1->policy.tls == BACKEND_TLS_IMPLICIT && d1->policy.tls_cl != NULL);
    CHECK(d1->policy.tls_cl != cfg.backend.policy.tls_cl);
    CHECK_INT(d1->policy.port[FG_PROTO_IMAP], 993);
    CHECK_INT(d1->policy.port[FG_PROTO_POP3], 995);
    CHECK(strcmp(backend_tls_name(&d1->target, 0), "mbx.example") == 0);
    /* two hosts; each address knows its host */
    CHECK(d1->target.nhosts == 2 && d1->target.naddrs >= 2);
    CHECK(strcmp(d1->target.hosts[1], "localhost") == 0 && d1->target.addr_host[1] == 1);
    /* DB02: no section, [backend]'s STARTTLS and ProxyTargetPort; the name is the host's */
    CHECK(d2->mapped && !d2->custom && d2->policy.tls == BACKEND_TLS_STARTTLS);
    CHECK_INT(d2->policy.port[FG_PROTO_IMAP], 10143);
    CHECK_INT(d2->policy.port[FG_PROTO_POP3], 110);
    CHECK(strcmp(backend_tls_name(&d2->target, 0), "127.0.0.3") == 0);
    /* A section alone: for the hosts the directory names; clear text, its own POP3 port */
    CHECK(!d7->mapped && d7->custom && d7->target.naddrs == 0);
    CHECK(d7->policy.tls == BACKEND_TLS_NONE && d7->policy.tls_cl == NULL);
    CHECK_INT(d7->policy.port[FG_PROTO_IMAP], 10143);
    CHECK_INT(d7->policy.port[FG_PROTO_POP3], 1110);
    CHECK(dir_database_policy(&cfg.dir, &cfg.backend.policy, "MAILBOX DATABASE 7") == &d7->policy);
    CHECK(dir_database_policy(&cfg.dir, &cfg.backend.policy, "DB99") == &cfg.backend.policy);
    CHECK(cfg.backend.policy.tls == BACKEND_TLS_STARTTLS);
    free(msgs);
    config_free(&cfg);
    CHECK(cfg.dir.databases[0].policy.tls_cl == NULL);

    static const struct {
        const char *text, *want;
    } errs[] = {
            {"[database:DB01]\nTls = implicit\n",
             "t.ini:7: Tls = implicit needs TlsCaFile, the CA certificates"},
            {"[database:DB01]\nTls = starttls\nTlsCaFile = @D/../garbage.crt\n",
             "t.ini:8: @D/../garbage.crt: cannot load the CA certificates"},
            {"[database:DB01]\n[database:db01]\n",
             "t.ini:7: section [database:db01] already started on line 6"},
            {"[database:DB01]\nHosts = x\n",
             "t.ini:7: unknown setting \"Hosts\" in [database:DB01]"},
            {"[database:DB01]\nImapPort = 0\n",
             "t.ini:7: ImapPort: expected a number from 1 to 65535"},
            {"[database:]\n", "t.ini:6: database \"\": a name is 1 to 63 characters"},
            {"[backend]\nFailoverBackoff = 00:01:00\nFailoverBackoffMax = 00:00:10\n",
             "t.ini:8: FailoverBackoffMax is shorter than FailoverBackoff"},
    };
    write_file("garbage.crt", "not a certificate\n");
    for (size_t i = 0; i < FG_ARRAY_SIZE(errs); i++) {
        char text[1024], want[512];
        snprintf(text, sizeof text,
                 "[imap]\nLoginType = PlainTextLogin\n[forest:a]\nRole = Organization\n"
                 "Ldif = @D/../acc.ldif\n%s",
                 errs[i].text);
        int n = load_certs(&cfg, text, &msgs);
        expand_d(errs[i].want, want, sizeof want);
        CHECKF(n >= 1 && strstr(msgs, want), "case %zu: %d errors:\n%s\nexpected: %s", i, n, msgs,
               want);
        free(msgs);
        config_free(&cfg);
    }
}

/* Cache settings that do not do what they seem to are warned about, and
 * bad values are errors with file:line. */
static void test_cache_settings(void)
{
    struct fg_config cfg;
    char *msgs;
    static const char *const head = "[imap]\nLoginType = PlainTextLogin\n[forest:a]\n"
                                    "Role = Organization\nLdif = @D/../acc.ldif\n"
                                    "Domains = A:a.example:DC=acc,DC=example\n[directory]\n";
    static const struct {
        const char *text, *want;
        int errors;
    } rows[] = {
            {"RouteCacheTTL = 00:00:00\nCredentialCacheTTL = 00:01:00\n",
             "t.ini:9: warning: CredentialCacheTTL does nothing with RouteCacheTTL = 00:00:00", 0},
            {"RouteCacheTTL = 00:01:00\nCredentialCacheTTL = 00:10:00\n",
             "t.ini:9: warning: CredentialCacheTTL is longer than RouteCacheTTL", 0},
            {"FailedLogonDelayMs = 0\n",
             "t.ini:8: warning: FailedLogonDelayMs = 0 with NegativeCacheTTL", 0},
            {"RouteCacheTTL = 00:00:00\nServeStaleOnDirectoryFailure = yes\n",
             "t.ini:9: warning: ServeStaleOnDirectoryFailure does nothing", 0},
            {"RouteCacheTTL = 5m\n", "t.ini:8: RouteCacheTTL: expected a time hh:mm:ss", 1},
            {"RouteCacheMaxEntries = 0\n", "t.ini:8: RouteCacheMaxEntries: expected a number", 1},
            {"NegativeCacheTTL = 2.00:00:00\n", "t.ini:8: NegativeCacheTTL: expected a time", 1},
            {"ServeStaleOnDirectoryFailure = maybe\n", "t.ini:8: ServeStaleOnDirectoryFailure", 1},
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(rows); i++) {
        char text[1024];
        snprintf(text, sizeof text, "%s%s", head, rows[i].text);
        int n = load_certs(&cfg, text, &msgs);
        CHECKF(n == rows[i].errors && strstr(msgs, rows[i].want), "case %zu: %d errors:\n%s", i, n,
               msgs);
        free(msgs);
        config_free(&cfg);
    }
    /* The defaults: a 5-minute route cache, 1-minute negative entries, no
     * credential cache, and nothing to warn about. */
    CHECK_INT(load_certs(&cfg, head, &msgs), 0);
    CHECKF(!strstr(msgs, "Cache") && !strstr(msgs, "ServeStale"), "%s", msgs);
    CHECK(cfg.dir.route_ttl == 300 && cfg.dir.negative_ttl == 60 && cfg.dir.cred_ttl == 0);
    CHECK(cfg.dir.route_max == 100000 && !cfg.dir.serve_stale);
    free(msgs);
    config_free(&cfg);
}

/* [throttle]: defaults below AD's usual lockout threshold, the networks
 * parsed, and thresholds that contradict each other refused with a line. */
static void test_throttle_settings(void)
{
    struct fg_config cfg;
    char *msgs;
    static const char *const head = "[imap]\nLoginType = PlainTextLogin\n[forest:a]\n"
                                    "Role = Organization\nLdif = @D/../acc.ldif\n"
                                    "Domains = A:a.example:DC=acc,DC=example\n[throttle]\n";
    static const struct {
        const char *text, *want;
    } rows[] = {
            {"ExemptNetworks = 10.0.0.0/8, mail.example\n",
             "t.ini:8: ExemptNetworks: 'mail.example': invalid IPv4 address"},
            {"ExemptNetworks = 10.0.0.0/33\n", "t.ini:8: ExemptNetworks: '10.0.0.0/33'"},
            {"AccountFailureThreshold = 9\nFamiliarAccountFailureThreshold = 4\n",
             "t.ini:9: FamiliarAccountFailureThreshold (4) is below AccountFailureThreshold (9)"},
            {"AddressFailureDelayMs = 1000\nAddressFailureDelayMaxMs = 10\n",
             "t.ini:9: AddressFailureDelayMaxMs is shorter than AddressFailureDelayMs"},
            {"AccountFailureWindow = 30m\n", "t.ini:8: AccountFailureWindow: expected a time"},
            {"BadPasswordHistory = 9\n",
             "t.ini:8: BadPasswordHistory: expected a number from 0 to 8"},
            {"MaxEntries = 10\n", "t.ini:8: MaxEntries: expected a number"},
            {"Enabled = sometimes\n", "t.ini:8: Enabled"},
            {"Lockout = 5\n", "t.ini:8: unknown setting \"Lockout\" in [throttle]"},
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(rows); i++) {
        char text[1024];
        snprintf(text, sizeof text, "%s%s", head, rows[i].text);
        int n = load_certs(&cfg, text, &msgs);
        CHECKF(n == 1 && strstr(msgs, rows[i].want), "case %zu: %d errors:\n%s", i, n, msgs);
        free(msgs);
        config_free(&cfg);
    }
    CHECK_INT(load_certs(&cfg,
                         "[imap]\nLoginType = PlainTextLogin\n[forest:a]\n"
                         "Role = Organization\nLdif = @D/../acc.ldif\n"
                         "Domains = A:a.example:DC=acc,DC=example\n",
                         &msgs),
              0);
    const struct thr_conf *t = &cfg.throttle;
    CHECK(t->enabled && t->acct_threshold == 5 && t->acct_familiar_threshold == 8);
    CHECK(t->acct_window == 1800 && t->addr_threshold == 30 && t->nexempt == 0);
    free(msgs);
    config_free(&cfg);
    CHECK_INT(load_certs(&cfg,
                         "[imap]\nLoginType = PlainTextLogin\n[forest:a]\n"
                         "Role = Organization\nLdif = @D/../acc.ldif\n"
                         "Domains = A:a.example:DC=acc,DC=example\n[throttle]\n"
                         "ExemptNetworks = 10.0.0.0/8,2001:db8::/32 , 192.0.2.1\n",
                         &msgs),
              0);
    CHECK_INT(cfg.throttle.nexempt, 3);
    free(msgs);
    config_free(&cfg);
}

/* Loud warnings: the master password in clear to another machine, and
 * certificates that are not checked. */
static void test_backend_warnings(void)
{
    struct fg_config cfg;
    char *msgs;
    CHECK_INT(load_certs(&cfg,
                         "[imap]\nLoginType = PlainTextLogin\n[backend]\nLoginMode = MasterUser\n"
                         "MasterUser = m\nMasterPasswordFile = @D/../master.pw\n"
                         "[forest:a]\nRole = Organization\nLdif = @D/../acc.ldif\n"
                         "Domains = A:a.example:DC=acc,DC=example\n"
                         "[databases]\nDB01 = 127.0.0.2, 10.9.8.7\nDB02 = 192.0.2.1\n"
                         "[database:DB02]\nTls = implicit\nTlsVerify = false\n",
                         &msgs),
              0);
    /* one line for the clear-text hosts (not the loopback one, not DB02, which has TLS) */
    CHECKF(strstr(msgs, "t.ini:4: warning: LoginMode = MasterUser with Tls = none: the master "
                        "password crosses the network in clear text to 10.9.8.7 (10.9.8.7); ") &&
                   !strstr(msgs, "127.0.0.2 (") && !strstr(msgs, "192.0.2.1 ("),
           "%s", msgs);
    CHECKF(strstr(msgs, "t.ini:16: warning: TlsVerify = false: backend certificates are not "
                        "checked"),
           "%s", msgs);
    CHECK(cfg.dir.databases[1].policy.tls_cl != NULL);
    free(msgs);
    config_free(&cfg);
    /* loopback only: nothing to say */
    CHECK_INT(load_certs(&cfg,
                         "[imap]\nLoginType = PlainTextLogin\n[backend]\nLoginMode = MasterUser\n"
                         "MasterUser = m\nMasterPasswordFile = @D/../master.pw\n"
                         "DefaultServer = 127.0.0.1\n[forest:a]\nRole = Organization\n"
                         "Ldif = @D/../acc.ldif\nDomains = A:a.example:DC=acc,DC=example\n",
                         &msgs),
              0);
    CHECKF(msgs[0] == 0, "%s", msgs);
    free(msgs);
    config_free(&cfg);
}

/* show settings: every key the parser knows appears, in the file's format, and
 * what it prints loads again to the same settings. */
static bool dump_has_key(const char *dump, const char *kind, const char *key)
{
    bool in = false;
    size_t kl = strlen(kind);
    for (const char *l = dump; *l; l = strchr(l, '\n') + 1) {
        size_t n = strcspn(l, "\n");
        if (l[0] == '[')
            in = kind[kl - 1] == ':' ? strncasecmp(l + 1, kind, kl) == 0
                                     : n == kl + 2 && strncasecmp(l + 1, kind, kl) == 0;
        const char *k = l[0] == '#' ? l + 2 : l;
        if (in && strncmp(k, key, strlen(key)) == 0 && strncmp(k + strlen(key), " =", 2) == 0)
            return true;
        if (!l[n])
            break;
    }
    return false;
}

static char *dump_of(const struct fg_config *cfg)
{
    char *dump;
    size_t n;
    FILE *f = open_memstream(&dump, &n);
    config_dump(cfg, f);
    fclose(f);
    return dump;
}

static void test_dump_has_every_key_and_loads_again(void)
{
    struct fg_config cfg;
    char *msgs;
    write_file("bind.pw", "service-secret\n");
    CHECK_INT(
            load_certs(&cfg,
                       "[global]\nCertificateDirectory = @D\nStatsSocket = /tmp/x.sock\n"
                       "[imap]\nX509CertificateName = mail.example\nLoginType = PlainTextLogin\n"
                       "AuthenticatedConnectionTimeout = 1.00:00:00\n"
                       "[pop3]\nSSLBindings = 127.0.0.1:1995\nX509CertificateName = mail.example\n"
                       "[backend]\nLoginMode = MasterUser\nMasterUser = m\n"
                       "MasterPasswordFile = @D/../master.pw\nTls = implicit\n"
                       "TlsCaFile = @D/mail.example.crt\n"
                       "SourceAddresses = 10.0.0.1 [2001:db8::1],10.0.0.2\n"
                       "[directory]\nSearchOrder = acc\n"
                       "[forest:org]\nRole = Organization\nLdif = @D/../acc.ldif\n"
                       "Domains = A:a.example:DC=acc,DC=example\n"
                       "[forest:acc]\nRole = Account\nUri = ldap://127.0.0.1:1\nBindDn = CN=s\n"
                       "BindPasswordFile = @D/../bind.pw\nDomains = B:b.example:DC=b\n"
                       "[databases]\nDB01 = 127.0.0.2\n[database:DB01]\nTls = none\n",
                       &msgs),
            0);
    char *dump = dump_of(&cfg);
    for (unsigned k = 0; config_section_kind(k); k++)
        for (unsigned i = 0; config_key_name(k, i); i++)
            CHECKF(dump_has_key(dump, config_section_kind(k), config_key_name(k, i)),
                   "[%s] %s is not in the dump:\n%s", config_section_kind(k), config_key_name(k, i),
                   dump);
    /* secrets only as their files */
    CHECK(!strstr(dump, "service-secret") && strstr(dump, "BindPasswordFile = "));
    CHECK(strstr(dump, "AuthenticatedConnectionTimeout = 1.00:00:00\n") != NULL);
    CHECK(strstr(dump, "ImapPort = 143\nPop3Port = 110\n") != NULL);
    CHECK(strstr(dump, "[imap]\n") && strstr(dump, "ProxyTargetPort = 993\n"));
    CHECK(strstr(dump, "MaxConnectionFromSingleIP = 2147483647\nMaxConnectionsPerUser = 16\n"));
    CHECK(strstr(dump, "IPv6PrefixLength = 64\n") != NULL);
    CHECK(strstr(dump, "SourceAddresses = 10.0.0.1, 2001:db8::1, 10.0.0.2\n") != NULL);
    free(msgs);
    /* The dump is a configuration that gives the same dump. */
    char *again;
    struct fg_config cfg2;
    int n = load(&cfg2, dump, &msgs);
    CHECKF(n == 0, "the dump does not load: %s\n%s", msgs, dump);
    again = dump_of(&cfg2);
    CHECKF(strcmp(dump, again) == 0, "first:\n%s\nsecond:\n%s", dump, again);
    free(again);
    free(msgs);
    free(dump);
    config_free(&cfg2);
    config_free(&cfg);
}

/* ---- the directory: [directory], [forest:NAME], [databases] ---- */

static const char dir_ldif[] =
        "dn: CN=UCLABOR,CN=Partitions,CN=Configuration,DC=uclabor,DC=de\n"
        "objectClass: crossRef\nnETBIOSName: UCLABOR\ndnsRoot: uclabor.de\n"
        "nCName: DC=uclabor,DC=de\nsystemFlags: 3\n\n"
        "dn: CN=CHILD,CN=Partitions,CN=Configuration,DC=uclabor,DC=de\n"
        "objectClass: crossRef\nnETBIOSName: CHILD\ndnsRoot: child.uclabor.de\n"
        "nCName: DC=child,DC=uclabor,DC=de\nsystemFlags: 3\n\n"
        "dn: CN=App,CN=Partitions,CN=Configuration,DC=uclabor,DC=de\n"
        "objectClass: crossRef\nnETBIOSName: APP\ndnsRoot: app.uclabor.de\n"
        "nCName: DC=app,DC=uclabor,DC=de\nsystemFlags: 1\n";

static void test_directory_sections(void)
{
    struct fg_config cfg;
    char *msgs, text[2048];
    char ldif[300];
    snprintf(ldif, sizeof ldif, "%s", write_file("org.ldif", dir_ldif));
    write_file("acc.ldif", "dn: DC=acc,DC=example\nobjectClass: domainDNS\n");
    snprintf(text, sizeof text,
             "[imap]\nUnencryptedOrTLSBindings = 127.0.0.1:1143\nLoginType = PlainTextLogin\n"
             "[backend]\nLoginMode = PassThrough\n"
             "[directory]\nDirectoryThreads = 3\nSearchOrder = acc2, acc\n"
             "AllowAdminLogon = true\n"
             "[forest:acc]\nRole = Account\nLdif = %s/acc.ldif\n"
             "Domains = ACC:acc.example:DC=acc,DC=example; ACC2 : eu.acc.example : "
             "DC=eu,DC=acc,DC=example\n"
             "[forest:res]\nRole = Organization\nLdif = %s\nDefaultDomain = child.uclabor.de\n"
             "[forest:acc2]\nRole = Account\nLdif = %s/acc.ldif\nDomains = X:x.example:DC=x\n"
             "[databases]\nDB01 = 127.0.0.2, 127.0.0.3\nDB02 = ::1\n",
             dir, ldif, dir);
    CHECK_INT(load(&cfg, text, &msgs), 0);
    /* PassThrough cannot open another's mailbox: said once, as a warning */
    CHECKF(strstr(msgs, "t.ini:5: warning: LoginMode = PassThrough: delegate logons") &&
                   !strchr(strchr(msgs, '\n') + 1, '\n'),
           "%s", msgs);
    const struct dir_conf *dc = &cfg.dir;
    CHECK(dc->enabled && dc->threads == 3 && dc->rules.allow_admin && !dc->rules.allow_smtp_login);
    CHECK_INT(dc->failed_delay_ms, 1000); /* the default */
    CHECK_INT(dc->request_timeout, 10);
    /* organisation first, then SearchOrder */
    CHECK_INT(dc->topo.nforests, 3);
    CHECK(strcmp(dc->topo.forests[0].name, "res") == 0 && dc->topo.forests[0].organization);
    CHECK(strcmp(dc->topo.forests[1].name, "acc2") == 0);
    CHECK(strcmp(dc->topo.forests[2].name, "acc") == 0);
    /* domains discovered from crossRefs (systemFlags bit 2 only), and given */
    CHECK_INT(dc->topo.forests[0].ndomains, 2);
    CHECK(strcmp(dc->topo.forests[0].domains[1].dns, "child.uclabor.de") == 0);
    CHECK_INT(dc->topo.forests[0].default_domain, 1);
    CHECK_INT(dc->topo.forests[2].ndomains, 2);
    CHECK(strcmp(dc->topo.forests[2].domains[1].netbios, "ACC2") == 0 &&
          strcmp(dc->topo.forests[2].domains[1].base, "DC=eu,DC=acc,DC=example") == 0);
    CHECK_INT(dc->ndatabases, 2);
    CHECK_INT(dc->databases[0].target.naddrs, 2);
    /* without a directory DefaultServer is required; with one it is not */
    CHECK(cfg.backend.target.naddrs == 0);
    free(msgs);
    config_free(&cfg);
}

static void test_directory_errors(void)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
            {"[imap]\n[directory]\nDirectoryThreads = 2\n",
             "t.ini:2: [directory], [databases] and [database:NAME] need at least one "
             "[forest:NAME]"},
            {"[imap]\n[database:DB01]\nTls = none\n",
             "t.ini:2: [directory], [databases] and [database:NAME] need at least one "
             "[forest:NAME]"},
            {"[imap]\n[forest:a]\nLdif = %s/acc.ldif\nDomains = A:a.example:DC=a\n",
             "t.ini:2: [forest:a] needs Role = Organization or Account"},
            {"[imap]\n[forest:a]\nRole = Account\nLdif = %s/acc.ldif\nDomains = A:a:DC=a\n",
             "exactly one forest must have Role = Organization; 0 do"},
            {"[imap]\n[forest:a]\nRole = Organization\nDomains = A:a:DC=a\n",
             "t.ini:2: [forest:a] needs Uri (LDAP servers) or Ldif (a file)"},
            {"[imap]\n[forest:a]\nRole = Organization\nLdif = %s/nope.ldif\n",
             "t.ini:4: %s/nope.ldif: No such file or directory"},
            {"[imap]\n[forest:a]\nRole = Organization\nLdif = %s/bad.ldif\n",
             "t.ini:4: %s/bad.ldif:3: an entry must start with \"dn:\""},
            {"[imap]\n[forest:a]\nRole = Organization\nLdif = %s/acc.ldif\n",
             "t.ini:2: [forest:a] has no domain"},
            {"[imap]\n[forest:a]\nRole = Organization\nLdif = %s/acc.ldif\nDomains = A-a\n",
             "t.ini:5: Domains: \"A-a\": expected NETBIOS:dns.name:base DN"},
            {"[imap]\n[forest:a]\nRole = Organization\nLdif = %s/acc.ldif\n"
             "Domains = TOOLONGNETBIOSNAME:a:DC=a\n",
             "expected NETBIOS (1 to 15 characters)"},
            {"[imap]\n[forest:a]\nRole = Boss\n",
             "t.ini:3: Role: expected Organization or Account"},
            {"[imap]\n[forest:a b]\n", "t.ini:2: [forest:a b]: a forest's name is"},
            {"[imap]\n[forest:a]\nRole = Organization\n[forest:a]\n",
             "t.ini:4: section [forest:a] already started on line 2"},
            {"[imap]\n[forest:a]\nRole = Organization\nLdif = %s/acc.ldif\n"
             "Domains = A:a:DC=a\nDefaultDomain = B\n",
             "t.ini:6: DefaultDomain B: not a domain of this forest"},
            {"[imap]\n[forest:a]\nRole = Organization\nUri = ldap://127.0.0.1/\n",
             "t.ini:2: [forest:a]: Uri needs BindDn, the account that searches"},
            {"[imap]\n[forest:a]\nRole = Organization\nUri = ldap://127.0.0.1/\nBindDn = CN=s\n",
             "t.ini:2: [forest:a]: Uri needs BindPasswordFile"},
            {"[imap]\n[forest:a]\nRole = Organization\nUri = http://127.0.0.1/\nBindDn = CN=s\n"
             "BindPasswordFile = %s/bind.pw\nDomains = A:a:DC=a\n",
             "t.ini:4: Uri: http://127.0.0.1/ is not an LDAP URI"},
            {"[imap]\n[forest:a]\nRole = Organization\nUri = ldap://127.0.0.1 ldapi:///\n"
             "BindDn = CN=s\nBindPasswordFile = %s/bind.pw\nDomains = A:a:DC=a\n",
             "t.ini:4: Uri: ldapi:///: needs ldap:// or ldaps:// and a host"},
            {"[imap]\n[forest:a]\nRole = Organization\nUri = ldap://127.0.0.1\nBindDn = CN=s\n"
             "BindPasswordFile = %s/no-such.pw\nDomains = A:a:DC=a\n",
             "t.ini:6: BindPasswordFile %s/no-such.pw: No such file or directory"},
            {"[imap]\n[forest:a]\nRole = Organization\nUri = ldap://127.0.0.1\nBindDn = CN=s\n"
             "BindPasswordFile = %s/bind.pw\nDomains = A:a:DC=a\nLdapCaFile = %s/no-ca.pem\n",
             "t.ini:8: LdapCaFile %s/no-ca.pem: No such file or directory"},
            {"[imap]\n[forest:a]\nRole = Organization\nUri = ldaps://a ldap://b\nBindDn = CN=s\n"
             "BindPasswordFile = %s/bind.pw\nDomains = A:a:DC=a\nLdapTls = ldaps\n",
             "t.ini:8: LdapTls = ldaps needs ldaps:// URIs, not ldap://b"},
            {"[imap]\n[forest:a]\nRole = Organization\nUri = ldaps://a\nBindDn = CN=s\n"
             "BindPasswordFile = %s/bind.pw\nDomains = A:a:DC=a\nLdapTls = starttls\n",
             "t.ini:8: LdapTls = starttls needs ldap:// URIs: ldaps://a is TLS already"},
            /* No Domains: discovered over LDAP at start-up; nobody listens on port 1. */
            {"[imap]\n[forest:a]\nRole = Organization\nUri = ldap://127.0.0.1:1\nBindDn = CN=s\n"
             "BindPasswordFile = %s/bind.pw\n",
             "t.ini:2: [forest:a]: cannot discover the domains (no server answered: Can't contact "
             "LDAP server"},
            {"[imap]\n[directory]\nSearchOrder = zz\n[forest:a]\nRole = Organization\n"
             "Ldif = %s/acc.ldif\nDomains = A:a:DC=a\n",
             "t.ini:3: SearchOrder: no [forest:zz]"},
            {"[imap]\n[directory]\nFailedLogonDelayMs = 20000\n[forest:a]\nRole = Organization\n"
             "Ldif = %s/acc.ldif\nDomains = A:a:DC=a\n",
             "t.ini:3: FailedLogonDelayMs"},
            {"[imap]\n[forest:a]\nRole = Organization\nLdif = %s/acc.ldif\nDomains = A:a:DC=a\n"
             "[databases]\nDB01 = no-such-host.invalid\nDB01 = 127.0.0.1\n",
             "t.ini:8: database DB01 is already mapped on line 7"},
            {"[imap]\n[forest:a]\nRole = Organization\nLdif = %s/acc.ldif\nDomains = A:a:DC=a\n"
             "[databases]\nDB01 = no-such-host.invalid\n",
             "t.ini:7: DB01 no-such-host.invalid:"},
    };
    write_file("bad.ldif", "dn: a\n\ncn: x\n");
    write_file("bind.pw", "service-secret\n");
    for (size_t i = 0; i < FG_ARRAY_SIZE(cases); i++) {
        struct fg_config cfg;
        char *msgs, text[1024], want[512];
        snprintf(text, sizeof text, cases[i].text, dir, dir);
        snprintf(want, sizeof want, cases[i].want, dir, dir);
        int n = load(&cfg, text, &msgs);
        CHECKF(n >= 1 && strstr(msgs, want), "case %zu: errors %d, messages:\n%s\nexpected: %s", i,
               n, msgs, want);
        free(msgs);
        config_free(&cfg);
    }
}

/*
 * --check-config's loading (CONFIG_CHECK) reads the files the settings name
 * but never leaves the machine: a host name is not looked up, an LDAP forest
 * without Domains is not asked for them (a listening socket given as its
 * server sees no connection), while an address is still taken. With
 * CONFIG_START the same names are looked up and fail.
 */
static void test_check_config_stays_off_the_network(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(ls >= 0 && bind(ls, (struct sockaddr *)&a, sizeof a) == 0 && listen(ls, 8) == 0 &&
          getsockname(ls, (struct sockaddr *)&a, &len) == 0);
    char text[1024], *msgs;
    write_file("bind.pw", "service-secret\n");
    snprintf(text, sizeof text,
             "[imap]\n[backend]\nDefaultServer = no-such-host.invalid\n[forest:a]\n"
             "Role = Organization\nUri = ldap://127.0.0.1:%u\nBindDn = CN=s\n"
             "BindPasswordFile = %s/bind.pw\nDefaultDomain = a.example\n"
             "[databases]\nDB01 = 127.0.0.2, mail.invalid\n",
             ntohs(a.sin_port), dir);
    struct fg_config cfg;
    CHECK_INT(load_with(&cfg, text, &msgs, CONFIG_CHECK), 0);
    CHECKF(!strstr(msgs, "no-such-host") && !strstr(msgs, "mail.invalid"), "%s", msgs);
    CHECK_INT(cfg.backend.target.naddrs, 0);
    CHECK_INT(cfg.dir.databases[0].target.naddrs, 1); /* 127.0.0.2, without a lookup */
    CHECK_MEM(cfg.dir.forests[0].bind_pass, cfg.dir.forests[0].bind_pass_len, "service-secret");
    struct pollfd pfd = {.fd = ls, .events = POLLIN};
    CHECKF(poll(&pfd, 1, 200) == 0, "the LDAP server was contacted");
    free(msgs);
    config_free(&cfg);
    /* Start-up looks the names up: .invalid never resolves. */
    snprintf(text, sizeof text, "[imap]\n[backend]\nDefaultServer = no-such-host.invalid\n");
    CHECK(load(&cfg, text, &msgs) == 1 && strstr(msgs, "t.ini:3: DefaultServer no-such-host"));
    free(msgs);
    config_free(&cfg);
    close(ls);
}

int main(void)
{
    if (!mkdtemp(dir) || tls_init() != FG_OK)
        return 1;
    test_issue_config_is_accepted();
    test_bad_inputs_name_file_and_line();
    test_connection_limits();
    test_proxy_protocol_settings();
    test_long_line_is_refused();
    test_master_password_file();
    test_password_file_shapes();
    test_throttle_key_file_shapes();
    test_no_certificate_means_no_tls();
    test_directory_sections();
    test_directory_errors();
    test_check_config_stays_off_the_network();
    th_checks++;
    if (!make_cert_dir()) {
        th_fail(__FILE__, __LINE__, "cannot make test certificates with openssl in %s", dir);
    } else {
        test_certificate_gives_starttls_and_default_tls_bindings();
        test_explicit_bindings_replace_both_defaults();
        test_bad_certificates_name_line_and_file();
        test_missing_key_names_the_key_file();
        test_tls_bindings_used_twice_across_protocols();
        test_wildcard_must_be_star_dot();
        test_clash_with_default_tls_binding_has_a_line();
        test_backend_tls();
        write_file("master.pw", "master-secret\n");
        test_database_sections();
        test_backend_warnings();
        test_cache_settings();
        test_throttle_settings();
        test_dump_has_every_key_and_loads_again();
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    int FG_UNUSED rc = system(cmd);
    tls_cleanup();
    return th_finish("test_config");
}

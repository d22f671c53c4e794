"""Kerberos logons: IMAP AUTHENTICATE GSSAPI and POP3 AUTH GSSAPI (RFC 4752)
against a real KDC, Samba AD's, in front of real Dovecots.

A Samba DC holds setup A's forest (tests/lib/samba.py). forestgate's service
account gets the service principals imap/HOST and pop/HOST (samba-tool spn
add) and its keys are exported to a keytab (samba-tool domain exportkeytab),
which [directory] KerberosKeytab names. Clients get their tickets from
Samba's KDC with kinit, into a credential cache of their own, and log on
with Python's gssapi (python3-gssapi) through imaplib and poplib, and with
curl, which speaks SASL GSSAPI itself.

Covered: a valid ticket opens the principal's mailbox (the master-user login
at Dovecot); the principal by sAMAccountName@REALM, by a UPN that differs
from it, and as an enterprise name; an authorization id that names a
mailbox with Full Access, and one without; a principal with no mailbox, or
with the protocol disabled; a disabled account whose ticket is still valid;
an expired ticket; a ticket for the other protocol's service, or for a
service the keytab has no key for; a replayed token; a client that asks for
a security layer forestgate did not offer; bad base64 and cancellation; the
settings' errors. Needs root and samba-ad-dc: without them it fails.

    /usr/bin/python3 -m pytest -q tests/integration/test_kerberos.py
"""

import base64
import imaplib
import os
import poplib
import shutil
import socket
import subprocess
import time

import pytest

from tests.integration import test_directory_ldap as ldap_suite
from tests.integration import test_directory_ldif as ldif_suite
from tests.ldap.fixtures import setup_a
from tests.lib.forestgate import binary
from tests.lib.samba import SambaDC, load_forest, require_samba

LdapForest, ldap_gateway, stop_ok = ldap_suite.LdapForest, ldap_suite.ldap_gateway, ldap_suite.stop_ok
last_login = ldap_suite.last_login

ADDR = "127.0.0.67"           # this suite's DC: .61-.66 are the Samba suite's and dirbench's
HOST = "mail.uclabor.de"      # the service principals' host: imap/HOST, pop/HOST
ELSEWHERE = "other.uclabor.de"  # imap/ELSEWHERE: another account's SPN, not in the keytab
A = setup_a()
REALM = A.root.dns.upper()

gssapi = None  # imported by require_gssapi()


def require_gssapi():
    """python3-gssapi is a test dependency (scripts/deps.sh): fail, don't skip."""
    global gssapi
    import gssapi as g
    gssapi = g
    return g


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def kdc(workroot):
    """Samba's DC for setup A, with forestgate's service principals."""
    require_samba()
    require_gssapi()
    d = os.path.join(workroot, "kerberos")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    dc = SambaDC(os.path.join(d, "dc"), A.root.dns, A.root.netbios, ADDR,
                 admin_password=A.passwords.get("administrator", "Fixture-Admin-Pw1"),
                 domain_sid=A.root.sid)
    dc.provision()
    load_forest(dc, A)
    svc = A.accounts["svc"]
    # Without AES in msDS-SupportedEncryptionTypes the keytab gets only RC4.
    dc.replace(svc.dn, "msDS-SupportedEncryptionTypes", ["24"])
    for spn in (f"imap/{HOST}", f"pop/{HOST}"):
        dc.tool("spn", "add", spn, svc.sam)
    dc.tool("spn", "add", f"imap/{ELSEWHERE}", A.accounts["shared"].sam)
    kt = os.path.join(d, "forestgate.keytab")
    for name in ("imap", "pop"):
        dc._run(["samba-tool", "domain", "exportkeytab", kt, f"--principal={name}/{HOST}",
                 "-s", dc.conf], "exportkeytab")
    # A keytab with only the pop/ key, and one with none of forestgate's.
    kt_pop = os.path.join(d, "pop-only.keytab")
    dc._run(["samba-tool", "domain", "exportkeytab", kt_pop, f"--principal=pop/{HOST}",
             "-s", dc.conf], "exportkeytab")
    conf = os.path.join(d, "krb5.conf")
    with open(conf, "w") as f:
        f.write(krb5_conf())
    dc.start()
    dc.keytab, dc.keytab_pop, dc.krb5_conf, dc.kdir = kt, kt_pop, conf, d
    yield dc
    dc.stop()


def krb5_conf(extra=""):
    return f"""[libdefaults]
    default_realm = {REALM}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    udp_preference_limit = 1
[realms]
    {REALM} = {{
        kdc = {ADDR}
    }}
{extra}[domain_realm]
    .{A.root.dns} = {REALM}
    {A.root.dns} = {REALM}
"""


@pytest.fixture(scope="module")
def mbx(workroot):
    with ldif_suite.mailboxes(workroot, "krb", A) as ports:
        yield ports


def gateway(workroot, kdc, mbx, name, directory=None, imap=None, pop3=None, start=True):
    ip, pp = mbx
    dom = f"{A.root.netbios}:{A.root.dns}:{A.root.base_dn}"
    settings = {"KerberosKeytab": kdc.keytab}
    settings.update(directory or {})
    fg = ldap_gateway(workroot, name,
                      [LdapForest("uclabor", "Organization", A, [kdc.uri], domains=dom)],
                      ip, pp, directory=settings, start=False)
    fg.sections["imap"]["EnableGSSAPIAndNTLMAuth"] = "true"
    fg.sections["pop3"]["EnableGSSAPIAndNTLMAuth"] = "true"
    fg.sections["imap"].update(imap or {})
    fg.sections["pop3"].update(pop3 or {})
    # Its own Kerberos configuration, a clock skew of 1 s (the default is
    # 5 minutes: an expired ticket is refused that long after), and its own
    # replay cache.
    conf = os.path.join(fg.workdir, "krb5.conf")
    with open(conf, "w") as f:
        f.write("[libdefaults]\n    clockskew = 1\n")
    rc = os.path.join(fg.workdir, "rcache")
    os.makedirs(rc, exist_ok=True)
    fg.env.update({"KRB5_CONFIG": conf, "KRB5RCACHEDIR": rc})
    return fg.start() if start else fg


@pytest.fixture(scope="module")
def fg(workroot, kdc, mbx):
    g = gateway(workroot, kdc, mbx, "fg-krb")
    yield g
    stop_ok(g)


@pytest.fixture(scope="module")
def short_token(kdc):
    """A client's first token, made at once from a 20-second service ticket
    (kinit -S: Samba's KDC gives no ticket-granting ticket of under two
    minutes a service ticket), for test_expired_ticket_is_refused at the end
    of the module: (when it has expired, the token)."""
    with tickets(kdc, "other", "short", "-l", "20s", "-S", f"imap/{HOST}"):
        tok = GssClient("imap")(b"")
    return time.monotonic() + 22, tok


# ---------------------------------------------------------------- clients
class Tickets:
    """A credential cache of its own, filled by kinit from Samba's KDC."""

    def __init__(self, kdc, name, tag, conf=None):
        self.kdc = kdc
        self.ccache = os.path.join(kdc.kdir, f"cc-{tag}")
        self.env = dict(os.environ, KRB5_CONFIG=conf or kdc.krb5_conf,
                        KRB5CCNAME=f"FILE:{self.ccache}")
        self.name = name

    def kinit(self, password, *opts):
        r = subprocess.run(["kinit", *opts, self.name], input=password + "\n", env=self.env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"kinit {self.name}: {r.stderr}"
        return self

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in ("KRB5_CONFIG", "KRB5CCNAME")}
        os.environ["KRB5_CONFIG"] = self.env["KRB5_CONFIG"]
        os.environ["KRB5CCNAME"] = self.env["KRB5CCNAME"]
        return self

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def tickets(kdc, key, tag=None, *opts, principal=None, conf=None):
    a = A.accounts[key]
    return Tickets(kdc, principal or f"{a.sam}@{REALM}", tag or key,
                   conf).kinit(A.passwords[key], *opts)


class GssClient:
    """The client's side of RFC 4752, as a SASL callback: the context's
    tokens, then the answer to the server's wrapped offer."""

    def __init__(self, service, authzid=b"", layer=1, host=HOST):
        name = gssapi.Name(f"{service}@{host}", gssapi.NameType.hostbased_service)
        self.ctx = gssapi.SecurityContext(name=name, usage="initiate",
                                          flags=[gssapi.RequirementFlag.mutual_authentication,
                                                 gssapi.RequirementFlag.integrity])
        self.authzid, self.layer = authzid, layer
        self.first = None     # the first token, for the replay test
        self.offer = None

    def __call__(self, challenge):
        if not self.ctx.complete:
            tok = self.ctx.step(challenge or None)
            if self.first is None:
                self.first = tok
            return tok or b""
        if not challenge:
            return b""
        self.offer = self.ctx.unwrap(challenge).message
        return self.ctx.wrap(bytes([self.layer, 0, 0, 0]) + self.authzid, False).message


def imap_gss(fg, client):
    c = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=15)
    try:
        typ, data = c.authenticate("GSSAPI", client)
        return c, typ, data
    except imaplib.IMAP4.error as e:
        c.shutdown()
        return None, "NO", [str(e).encode()]


def imap_ok(fg, client):
    c, typ, data = imap_gss(fg, client)
    assert typ == "OK", data
    return c


def pop_gss(fg, client):
    """POP3 AUTH GSSAPI by hand: poplib has no SASL."""
    p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=15)
    p._putcmd("AUTH GSSAPI")
    while True:
        line = p._getline()[0]
        if line != b"+" and not line.startswith(b"+ "):
            return p, line
        ch = base64.b64decode(line[1:].strip())
        p._putcmd(base64.b64encode(client(ch)).decode())


def fetch_one(c):
    typ, _ = c.select("INBOX")
    assert typ == "OK"
    typ, data = c.fetch("1", "(BODY[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    return data[0][1].decode()


def login_event(fg, n_before):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ev = fg.events("login")
        if len(ev) > n_before:
            return last_login(fg)
        time.sleep(0.05)
    raise AssertionError("no login line")


# ---------------------------------------------------------------- the tests
def test_capabilities_offer_gssapi(fg, short_token):
    c = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
    assert "AUTH=GSSAPI" in c.capabilities
    c.logout()
    p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=10)
    assert b"SASL PLAIN GSSAPI" in p.capa().get("SASL", []) or "GSSAPI" in p.capa()["SASL"]
    p.quit()


def test_imap_valid_ticket_opens_own_mailbox(fg, kdc):
    with tickets(kdc, "tuser", "imap-ok"):
        n = len(fg.events("login"))
        c = imap_ok(fg, GssClient("imap"))
        assert "testalias" in fetch_one(c)
        c.logout()
    ev = login_event(fg, n)
    assert ev["result"] == "ok"
    assert ev["principal"] == f"tuser@{REALM}"
    assert ev["mailbox"] == "testalias"
    assert ev["account"].lower() == A.accounts["tuser"].dn.lower()


def test_pop3_valid_ticket(fg, kdc):
    with tickets(kdc, "other", "pop-ok"):
        p, line = pop_gss(fg, GssClient("pop"))
        assert line.startswith(b"+OK"), line
        count, _ = p.stat()
        assert count >= 1
        assert b"other" in b"\n".join(p.retr(1)[1]).lower()
        p.quit()
    ev = last_login(fg)
    assert ev["result"] == "ok" and ev["principal"] == f"other@{REALM}"
    assert ev["mailbox"] == "other"


def refused(fg, client, proto="imap"):
    """Logs on with client; returns the reply and the audit line."""
    n = len(fg.events("login"))
    if proto == "imap":
        c, typ, data = imap_gss(fg, client)
        assert typ != "OK", "logged on"
        reply = data[0].decode()
    else:
        p, line = pop_gss(fg, client)
        p.close()
        reply = line.decode()
    return reply, login_event(fg, n)


def test_upn_that_differs_from_the_account_name(fg, kdc):
    """hmueller's UPN is hans.mueller@uclabor.de: a ticket asked for by it
    finds the account by the UPN, as the KDC did."""
    with tickets(kdc, "hmueller", "upn", principal=f"hans.mueller@{REALM}"):
        c = imap_ok(fg, GssClient("imap"))
        c.logout()
    ev = last_login(fg)
    assert ev["result"] == "ok" and ev["mailbox"] == "hmueller"
    assert ev["account"].lower() == A.accounts["hmueller"].dn.lower()


def test_enterprise_principal(fg, kdc):
    """kinit -E: the UPN tuser.upn@upn.uclabor.de, another suffix, as an
    enterprise name (RFC 6806); searched by UPN only."""
    with tickets(kdc, "tuser", "enterprise", "-E", principal="tuser.upn@upn.uclabor.de"):
        c = imap_ok(fg, GssClient("imap"))
        c.logout()
    ev = last_login(fg)
    assert ev["result"] == "ok" and ev["mailbox"] == "testalias", ev
    assert ev["account"].lower() == A.accounts["tuser"].dn.lower()


def test_authzid_names_a_mailbox_with_full_access(fg, kdc):
    """helper, in Mailbox Managers through Helpdesk, has Full Access to
    shared by its security descriptor; denied is refused by a deny ACE."""
    with tickets(kdc, "helper", "helper"):
        c = imap_ok(fg, GssClient("imap", authzid=b"shared"))
        assert "shared" in fetch_one(c)
        c.logout()
    ev = last_login(fg)
    assert ev["result"] == "ok" and ev["mailbox"] == "shared"
    assert ev["split_alias"] == "shared"
    with tickets(kdc, "denied", "denied"):
        reply, ev = refused(fg, GssClient("imap", authzid=b"shared"))
    assert "[AUTHORIZATIONFAILED]" in reply
    assert ev["result"] == "denied" and ev["reason"] == "no full access to that mailbox"


def test_authzid_that_is_the_principal_opens_its_own_mailbox(fg, kdc):
    with tickets(kdc, "other", "own"):
        for authzid in (b"other", f"other@{REALM}".encode()):
            c = imap_ok(fg, GssClient("imap", authzid=authzid))
            c.logout()
            assert last_login(fg)["mailbox"] == "other"


def test_principal_without_a_mailbox_is_refused(fg, kdc):
    with tickets(kdc, "nombx", "nombx"):
        reply, ev = refused(fg, GssClient("imap"))
        assert "[AUTHENTICATIONFAILED]" in reply
        assert ev["reason"] == "the account has no mailbox"
        reply, ev = refused(fg, GssClient("pop"), "pop3")
        assert reply.startswith("-ERR [AUTH]")


def test_protocol_disabled_for_the_mailbox(fg, kdc):
    with tickets(kdc, "noimap", "noimap"):
        reply, ev = refused(fg, GssClient("imap"))
        assert "[AUTHORIZATIONFAILED]" in reply
        assert ev["reason"].startswith("the protocol is disabled")
        p, line = pop_gss(fg, GssClient("pop"))
        assert line.startswith(b"+OK"), line
        p.quit()


def test_ticket_of_an_account_disabled_since_is_refused(fg, kdc):
    """A ticket outlives the account: the directory is asked at each logon."""
    a = A.accounts["nopop"]
    with tickets(kdc, "nopop", "disabled-later") as t:
        # The service ticket first: the KDC issues none to a disabled account.
        r = subprocess.run(["kvno", f"imap/{HOST}"], env=t.env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        kdc.set_enabled(a.dn, False)
        try:
            reply, ev = refused(fg, GssClient("imap"))
        finally:
            kdc.set_enabled(a.dn, True)
        assert "[AUTHENTICATIONFAILED]" in reply
        assert ev["reason"] == "the account is disabled"
        c = imap_ok(fg, GssClient("imap"))
        c.logout()


def test_ticket_for_another_service_is_refused(fg, kdc):
    """pop/HOST's ticket on IMAP (the same keys: one account holds both
    SPNs), and the DC's own ldap/ ticket, whose key forestgate lacks."""
    with tickets(kdc, "other", "wrong-service"):
        reply, ev = refused(fg, GssClient("pop"))
        assert "[AUTHENTICATIONFAILED]" in reply
        assert ev["reason"].startswith("Kerberos:"), ev
        reply, ev = refused(fg, GssClient("imap"), "pop3")
        assert reply.startswith("-ERR [AUTH]")
        assert ev["reason"].startswith("Kerberos:"), ev
        # imap/ on another host, an SPN of another account: no key for it.
        reply, ev = refused(fg, GssClient("imap", host=ELSEWHERE))
        assert "[AUTHENTICATIONFAILED]" in reply
        assert ev["reason"].startswith("Kerberos:"), ev


class Raw:
    """A raw IMAP connection; close() closes the socket, which its file
    object would otherwise keep open."""

    def __init__(self, fg):
        self.s = socket.create_connection(("127.0.0.1", fg.imap_port), timeout=10)
        self.f = self.s.makefile("rwb")
        self.f.readline()

    def write(self, b):
        self.f.write(b)

    def flush(self):
        self.f.flush()

    def readline(self):
        return self.f.readline()

    def close(self):
        self.f.close()
        self.s.close()


def raw_imap(fg):
    r = Raw(fg)
    return r, r


def say(f, line):
    f.write(line + b"\r\n")
    f.flush()
    return f.readline()


def test_replayed_token_is_refused(fg, kdc):
    with tickets(kdc, "other", "replay"):
        client = GssClient("imap")
        c = imap_ok(fg, client)
        c.logout()
    n = len(fg.events("login"))
    s, f = raw_imap(fg)
    reply = say(f, b"a AUTHENTICATE GSSAPI " + base64.b64encode(client.first))
    s.close()
    assert reply.startswith(b"a NO [AUTHENTICATIONFAILED]"), reply
    ev = login_event(fg, n)
    assert "replay" in ev["reason"].lower(), ev


@pytest.mark.parametrize("layer", [0, 2, 4, 6])
def test_security_layer_other_than_none_is_refused(fg, kdc, layer):
    """forestgate offers layer "none" only (RFC 4752 section 3.3)."""
    with tickets(kdc, "other", f"layer{layer}"):
        client = GssClient("imap", layer=layer)
        reply, ev = refused(fg, client)
    assert client.offer == bytes([1, 0, 0, 0])
    assert "[AUTHENTICATIONFAILED]" in reply
    assert "security layer" in ev["reason"], ev


def test_bad_base64_and_cancel_then_a_good_logon(fg, kdc):
    s, f = raw_imap(fg)
    assert say(f, b"a AUTHENTICATE GSSAPI") == b"+ \r\n"
    assert say(f, b"!!!!").startswith(b"a BAD Invalid base64")
    assert say(f, b"b AUTHENTICATE GSSAPI") == b"+ \r\n"
    assert say(f, b"*").startswith(b"b BAD AUTHENTICATE cancelled")
    # A cancel in the middle: the AP-REP was sent, the context half done.
    with tickets(kdc, "other", "cancel"):
        client = GssClient("imap")
        assert say(f, b"c AUTHENTICATE GSSAPI " + base64.b64encode(client(b""))).startswith(b"+ ")
        assert say(f, b"*").startswith(b"c BAD AUTHENTICATE cancelled")
        client = GssClient("imap")
        line = say(f, b"d AUTHENTICATE GSSAPI " + base64.b64encode(client(b"")))
        while line.startswith(b"+"):
            line = say(f, base64.b64encode(client(base64.b64decode(line[1:].strip()))))
    s.close()
    assert line.startswith(b"d OK"), line


def test_client_leaving_mid_exchange_leaves_nothing(fg, kdc):
    """Clients that go after the AP-REP: no descriptor or slot is left."""
    before, conns = fg.fd_count(), fg.stats()["connections"]
    with tickets(kdc, "other", "vanish"):
        for _ in range(20):
            s, f = raw_imap(fg)
            say(f, b"a AUTHENTICATE GSSAPI " + base64.b64encode(GssClient("imap")(b"")))
            s.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (fg.stats()["connections"] > conns or
                                           fg.fd_count() > before):
        time.sleep(0.1)
    assert fg.stats()["connections"] == conns, fg.ask("show sessions")
    assert fg.fd_count() <= before


def test_concurrent_logons(fg, kdc):
    """Tickets checked on both directory threads at once: the acceptor and
    MIT's replay cache are shared, and no logon is taken for a replay."""
    import concurrent.futures

    def one(_):
        c, typ, data = imap_gss(fg, GssClient("imap"))
        if c is not None:
            c.logout()
        return typ

    n = len(fg.events("login"))
    with tickets(kdc, "other", "concurrent"):
        imap_ok(fg, GssClient("imap")).logout()   # the service ticket, cached once
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, range(48)))
    assert results.count("OK") == 48, results
    lines = fg.events("login")[n:]
    assert len(lines) == 49 and all(e["result"] == "ok" for e in lines)


def test_curl_logs_on_with_gssapi(fg, kdc):
    """A second real client: curl's own SASL GSSAPI."""
    with tickets(kdc, "other", "curl") as t:
        r = subprocess.run(["curl", "-sS", "--max-time", "20", "--login-options", "AUTH=GSSAPI",
                            "-u", ":", "--resolve", f"{HOST}:{fg.imap_port}:127.0.0.1",
                            f"imap://{HOST}:{fg.imap_port}/INBOX;UID=1"],
                           env=t.env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "the mailbox of other" in r.stdout
    ev = last_login(fg)
    assert ev["result"] == "ok" and ev["principal"] == f"other@{REALM}"


def check_config(fg, edit):
    """forestgate --check-config on fg's settings after edit(sections):
    (exit status, stderr, the file's lines)."""
    edit(fg.sections)
    path = os.path.join(fg.workdir, "check.ini")
    text = fg.config_text()
    with open(path, "w") as f:
        f.write(text)
    r = subprocess.run([fg.bin or binary(), "-c", path, "--check-config"], capture_output=True,
                       text=True, timeout=30)
    return r.returncode, r.stderr, path, text.splitlines()


def line_of(lines, prefix, section=None):
    """The 1-based line of the first setting starting with prefix (after
    [section], if given)."""
    start = lines.index(f"[{section}]") if section else 0
    return next(i + 1 for i, l in enumerate(lines) if i >= start and l.startswith(prefix))


def test_settings_errors(workroot, kdc, mbx):
    """Each mistake is named with file:line, and forestgate does not start."""
    def fresh(name):
        return gateway(workroot, kdc, mbx, name, start=False)

    rc, err, path, lines = check_config(fresh("cfg-ok"), lambda s: None)
    assert rc == 0, err
    # no keytab
    rc, err, path, lines = check_config(fresh("cfg-nokt"),
                                        lambda s: s["directory"].pop("KerberosKeytab"))
    n = line_of(lines, "EnableGSSAPIAndNTLMAuth", "imap")
    assert rc == 1 and f"{path}:{n}: EnableGSSAPIAndNTLMAuth needs [directory] KerberosKeytab" in err
    # a keytab that is not there
    rc, err, path, lines = check_config(
        fresh("cfg-missing"), lambda s: s["directory"].update(KerberosKeytab="/nonexistent.kt"))
    n = line_of(lines, "KerberosKeytab")
    assert rc == 1 and f"{path}:{n}: KerberosKeytab /nonexistent.kt: " in err, err
    # a file that is no keytab
    junk = os.path.join(workroot, "junk.keytab")
    with open(junk, "w") as f:
        f.write("not a keytab\n")
    rc, err, path, lines = check_config(
        fresh("cfg-junk"), lambda s: s["directory"].update(KerberosKeytab=junk))
    assert rc == 1 and f"{path}:{n}: KerberosKeytab {junk}: " in err, err
    # pop/ keys only, while [imap] offers GSSAPI
    rc, err, path, lines = check_config(
        fresh("cfg-poponly"), lambda s: s["directory"].update(KerberosKeytab=kdc.keytab_pop))
    assert rc == 1 and f"holds no key for imap/HOST, which [imap] EnableGSSAPIAndNTLMAuth needs" \
        in err, err
    assert "[pop3]" not in err
    # PassThrough: no password to pass through
    rc, err, path, lines = check_config(
        fresh("cfg-pass"), lambda s: s["backend"].update(LoginMode="PassThrough"))
    n = line_of(lines, "EnableGSSAPIAndNTLMAuth", "pop3")
    assert rc == 1 and f"{path}:{n}: EnableGSSAPIAndNTLMAuth needs [backend] LoginMode = " \
        "MasterUser" in err, err
    # a bad boolean
    rc, err, path, lines = check_config(
        fresh("cfg-bool"), lambda s: s["imap"].update(EnableGSSAPIAndNTLMAuth="perhaps"))
    n = line_of(lines, "EnableGSSAPIAndNTLMAuth", "imap")
    assert rc == 1 and f"{path}:{n}: EnableGSSAPIAndNTLMAuth" in err, err


def test_not_offered_where_not_enabled(workroot, kdc, mbx):
    """GSSAPI is offered per protocol: [pop3] without it neither lists it
    nor takes it. LoginType rules it as it rules PLAIN: SecureLogin in
    clear text offers neither."""
    g = gateway(workroot, kdc, mbx, "fg-krb-imap-only", pop3={"EnableGSSAPIAndNTLMAuth": "false"},
                imap={"LoginType": "SecureLogin"})
    try:
        s, f = raw_imap(g)
        caps = say(f, b"a CAPABILITY")
        assert b"AUTH=GSSAPI" not in caps and b"AUTH=PLAIN" not in caps, caps
        f.readline()
        assert say(f, b"b AUTHENTICATE GSSAPI").startswith(b"b NO [PRIVACYREQUIRED]")
        s.close()
        g.stop()
        g.sections["imap"]["LoginType"] = "PlainTextLogin"
        g.start()
        p = poplib.POP3("127.0.0.1", g.pop3_port, timeout=10)
        assert p.capa()["SASL"] == ["PLAIN"]
        p._putcmd("AUTH GSSAPI")
        assert p._getline()[0] == b"-ERR Unsupported authentication mechanism."
        p.quit()
        c = imaplib.IMAP4("127.0.0.1", g.imap_port, timeout=10)
        assert "AUTH=GSSAPI" in c.capabilities
        c.logout()
    finally:
        stop_ok(g)


def test_expired_ticket_is_refused(fg, short_token):
    """The token of a 20-second ticket, presented once the ticket has
    expired; sent by hand, as a client library will not use an expired
    ticket. forestgate's clock skew is 1 s here, so the authenticator is
    stale too: MIT's acceptor names whichever it checks first."""
    due, first = short_token
    time.sleep(max(0.0, due - time.monotonic()))
    n = len(fg.events("login"))
    s, f = raw_imap(fg)
    reply = say(f, b"a AUTHENTICATE GSSAPI " + base64.b64encode(first))
    s.close()
    assert reply.startswith(b"a NO [AUTHENTICATIONFAILED]"), reply
    ev = login_event(fg, n)
    assert ev["result"] == "failed" and ev["reason"].startswith("Kerberos:"), ev
    assert "expired" in ev["reason"].lower() or "skew" in ev["reason"].lower(), ev

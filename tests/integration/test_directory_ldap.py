"""The directory end to end with the LDAP store: docs/login-rules.md section 8 through
forestgate against real slapd instances (tests/lib/slapd.py, AD-like forests
from tests/ldap/fixtures.py), with imaplib and poplib, routed by database to
two real Dovecot servers (127.0.0.1 holds DB01, 127.0.0.2 holds DB02).

The login outcomes must be those of the LDIF store: every row of
test_directory_ldif.py's SETUP_A and SETUP_B tables is tried through an LDAP
forestgate and an LDIF forestgate in front of the same Dovecots, and the two
answers and audit lines must agree (and match the table). Beyond the table:
LDAP filter injection (checked in slapd's own log), run-time changes in the
directory (no cache), failover between two DCs under load, a frozen DC
(SIGSTOP) against RequestTimeout, AD's expired-password bind diagnostics
(through tests/lib/mock_ad_bind.py, a MOCK in front of slapd), clients
vanishing mid-request, and no password in the log.

    /usr/bin/python3 -m pytest -q tests/integration/test_directory_ldap.py
"""

import imaplib
import os
import poplib
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field

import pytest

from tests.integration import test_directory_ldif as ldif_suite
from tests.ldap.fixtures import setup_a, setup_b, ssha
from tests.lib.forestgate import Forestgate, Raw, free_port, vanish_mid_login
from tests.lib.mock_ad_bind import MockAdBindProxy, ad_diagnostic, dn_norm
from tests.lib.slapd import Slapd, escape_filter_value

MASTER, MASTER_PW = ldif_suite.MASTER, ldif_suite.MASTER_PW
SETUP_A, SETUP_B = ldif_suite.SETUP_A, ldif_suite.SETUP_B
imap_login, pop3_login = ldif_suite.imap_login, ldif_suite.pop3_login

A = setup_a()
B = setup_b()
THREADS = 2          # DirectoryThreads of every gateway here
BIND_CONNS = 4       # LDS_MAX_BIND_CONNS: bind connections per thread and forest
WRONG_PASSWORDS = ["wrong-password", "Wr0ng-Secret-77", "not-the-password"]
GATEWAYS = []        # every forestgate started here: its log is checked for passwords


# ----------------------------------------------------------------- helpers
@dataclass
class LdapForest:
    """One [forest:NAME] section served over LDAP."""
    name: str
    role: str
    forest: object
    uris: list
    domains: object = True       # True: from the fixture; False: discover; str: as given
    base_dn: bool = True
    extra: dict = field(default_factory=dict)


def domains_setting(forest, only=None):
    return "; ".join(f"{d.netbios}:{d.dns}:{d.base_dn}" for d in forest.domains.values()
                     if only is None or d.netbios in only)


def ldap_gateway(workroot, name, forests, imap_port, pop3_port, directory=None, start=True):
    """A forestgate whose forests are served by LDAP servers (Uri)."""
    d = os.path.join(workroot, name)
    os.makedirs(d, exist_ok=True)
    pwfile = os.path.join(d, "master.pw")
    with open(pwfile, "w") as f:
        f.write(MASTER_PW + "\n")
    settings = {
        "backend": {"LoginMode": "MasterUser", "MasterUser": MASTER,
                    "MasterPasswordFile": pwfile},
        # No failed-logon delay here: it is tested on its own (test_directory_ldif.py).
        # No route cache: this suite checks the resolver's work on every logon
        # (test_route_cache.py checks the cache).
        "directory": {"DirectoryThreads": str(THREADS), "RequestTimeout": "00:00:05",
                      "FailedLogonDelayMs": "0", "RouteCacheTTL": "00:00:00"},
        "databases": {"DB01": "127.0.0.1", "DB02": "127.0.0.2"},
    }
    settings["directory"].update(directory or {})
    for lf in forests:
        bp = os.path.join(d, f"{lf.name}.bindpw")
        fd = os.open(bp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(lf.forest.bind_password + "\n")
        sec = {"Role": lf.role, "Uri": " ".join(lf.uris), "BindDn": lf.forest.bind_dn,
               "BindPasswordFile": bp}
        if lf.base_dn:
            sec["BaseDn"] = lf.forest.base_dn
        if lf.domains is True:
            sec["Domains"] = domains_setting(lf.forest)
        elif lf.domains:
            sec["Domains"] = lf.domains
        sec.update(lf.extra)
        settings[f"forest:{lf.name}"] = sec
    fg = Forestgate(d, imap_backend_port=imap_port, pop3_backend_port=pop3_port,
                    settings=settings, workers=2)
    fg.sections["backend"].pop("DefaultServer", None)
    GATEWAYS.append(fg)
    return fg.start() if start else fg


def stop_ok(fg):
    """Stops forestgate; fails with its exit status and log tail unless it
    exited with 0 (a crash, a sanitizer report)."""
    try:
        rc = fg.stop()
    except AssertionError as e:     # did not stop in time: hung
        rc = str(e)
    tail = "\n".join(fg.log_text().splitlines()[-40:])
    assert rc == 0, f"forestgate {fg.workdir}: {rc}; log tail:\n{tail}"


def unlog(v):
    """A logfmt value as forestgate wrote it, unescaped (\\\\, \\", \\xNN)."""
    if v is None:
        return None
    return re.sub(r'\\x([0-9a-fA-F]{2})|\\(.)',
                  lambda m: chr(int(m.group(1), 16)) if m.group(1) else m.group(2), v)


def last_login(fg):
    return {k: unlog(v) for k, v in fg.events("login")[-1].items()}



def login(fg, proto, name, password):
    """(ok, reply, body, the login event unescaped)."""
    ok, err, body = (imap_login if proto == "imap" else pop3_login)(fg, name, password)
    return ok, err, body, last_login(fg)


def imap_quick(fg, name, password, timeout=15):
    """LOGIN and LOGOUT only: (ok, reply)."""
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=timeout)
    try:
        if any(c in name for c in ' ()*%{"'):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        m.login(name, password)
        return True, ""
    except imaplib.IMAP4.error as e:
        return False, str(e)
    finally:
        try:
            m.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def outcome(ok, err, body, ev):
    """What must agree between the LDAP and the LDIF store."""
    return {"ok": ok, "reply": err, "body": body, "result": ev.get("result"),
            "form": ev.get("form"), "reason": ev.get("reason"), "mailbox": ev.get("mailbox"),
            "backend": ev.get("backend"), "forest": ev.get("forest"),
            "account": dn_norm(ev.get("account") or "")}


def expect_mailbox(ok, err, body, ev, alias, db):
    assert ok, (err, ev)
    assert f"the mailbox of {alias} on {db}" in body
    assert ev["mailbox"] == alias
    assert ev["backend"].startswith("127.0.0.1:" if db == "DB01" else "127.0.0.2:"), ev


def expect_refused(ok, err, ev, proto, code="AUTHENTICATIONFAILED"):
    assert not ok, (err, ev)
    if proto == "imap":
        assert f"[{code}]" in err, (err, ev)
    else:
        pop = {"AUTHENTICATIONFAILED": "[AUTH]", "AUTHORIZATIONFAILED": "[AUTH]",
               "EXPIRED": "[AUTH]", "UNAVAILABLE": "[SYS/TEMP]"}[code]
        assert pop in err, (err, ev)


def tcp_peers(pid):
    """(local port, remote port) of every TCP socket the process holds."""
    inodes = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            c = row.split()
            inodes[c[9]] = (int(c[1].rsplit(":", 1)[1], 16), int(c[2].rsplit(":", 1)[1], 16))
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", link)
        if m and m.group(1) in inodes:
            out.append(inodes[m.group(1)])
    return out


def fd_census(fg, ldap_ports):
    """(descriptors other than LDAP connections, LDAP connections)."""
    ldap = sum(1 for _, rport in tcp_peers(fg.proc.pid) if rport in ldap_ports)
    return fg.fd_count() - ldap, ldap


def wait_login_ok(fg, name, password, timeout):
    """Tries a login every 0.2 s until one works; returns the seconds it took."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        try:
            ok, last = imap_quick(fg, name, password, timeout=5)
        except OSError as e:        # no answer at all: forestgate hangs
            ok, last = False, f"socket: {e}"
        if ok:
            return time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError(f"no login within {timeout}s; last {last!r}, {fg.events('login')[-1:]}")


def slapd_filters(dc, mark):
    """The filters of the searches slapd logged since mark, as it logs them
    (special characters escaped as \\XX, upper case)."""
    return re.findall(r' SRCH base="[^"]*" scope=\d+ deref=\d+ filter="(.*)"$',
                      dc.log_since(mark), re.M)


def slapd_ops(dc, mark):
    """The SRCH and BIND requests slapd logged since mark."""
    return re.findall(r" op=\d+ (?:SRCH base=.*|BIND dn=.*)$", dc.log_since(mark), re.M)


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ldaproot(workroot):
    d = os.path.join(workroot, "ldap")
    os.makedirs(d, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def mbx_a(workroot):
    servers, ip, pp = ldif_suite.mailbox_servers(workroot, "ldap-a", A)
    yield ip, pp
    for dc in servers.values():
        dc.stop()


@pytest.fixture(scope="module")
def mbx_b(workroot):
    servers, ip, pp = ldif_suite.mailbox_servers(workroot, "ldap-b", B.res)
    yield ip, pp
    for dc in servers.values():
        dc.stop()


@pytest.fixture(scope="module")
def dc_a(ldaproot):
    dc = Slapd.for_forest(os.path.join(ldaproot, "a"), A).start()
    yield dc
    dc.stop()


@pytest.fixture(scope="module")
def env_a(workroot, mbx_a, dc_a):
    """Setup A over LDAP with Domains and BaseDn configured, and the same
    forest from its LDIF, both in front of the same Dovecots."""
    ip, pp = mbx_a
    fg = ldap_gateway(workroot, "fg-ldap-a",
                      [LdapForest("uclabor", "Organization", A, [dc_a.uri])], ip, pp)
    ref = ldif_suite.gateway(workroot, "fg-ldif-a", [("uclabor", "Organization", A)], ip, pp)
    GATEWAYS.append(ref)
    yield fg, ref, dc_a
    stop_ok(fg)
    stop_ok(ref)


@pytest.fixture(scope="module")
def env_b(workroot, ldaproot, mbx_b):
    """Setup B over LDAP: a slapd for RES, one for ACC; neither Domains nor
    BaseDn configured (discovered from crossRef objects and the rootDSE)."""
    ip, pp = mbx_b
    res = Slapd.for_forest(os.path.join(ldaproot, "res"), B.res).start()
    acc = Slapd.for_forest(os.path.join(ldaproot, "acc"), B.acc).start()
    fg = ldap_gateway(workroot, "fg-ldap-b",
                      [LdapForest("acc", "Account", B.acc, [acc.uri], domains=False,
                                  base_dn=False),
                       LdapForest("res", "Organization", B.res, [res.uri], domains=False,
                                  base_dn=False)], ip, pp)
    ref = ldif_suite.gateway(workroot, "fg-ldif-b", [("acc", "Account", B.acc),
                                                      ("res", "Organization", B.res)], ip, pp)
    GATEWAYS.append(ref)
    yield fg, ref, res, acc
    stop_ok(fg)
    stop_ok(ref)
    res.stop()
    acc.stop()


# ----------------------------------------------------- section 6, setup A
@pytest.mark.parametrize("proto", ["imap", "pop3"])
@pytest.mark.parametrize("typed,key,alias,db", SETUP_A, ids=[c[0] for c in SETUP_A])
def test_setup_a(env_a, typed, key, alias, db, proto):
    fg, ref, _ = env_a
    got = login(fg, proto, typed, A.passwords[key])
    ok, err, body, ev = got
    if alias is None:
        expect_refused(ok, err, ev, proto)
        assert ev["result"] == "failed", ev
    else:
        expect_mailbox(ok, err, body, ev, alias, db)
        assert ev["forest"] == "uclabor" and int(ev["dir_ops"]) > 0, ev
    assert outcome(*got) == outcome(*login(ref, proto, typed, A.passwords[key]))


@pytest.mark.parametrize("proto", ["imap", "pop3"])
@pytest.mark.parametrize("typed,key,alias,db,code", ldif_suite.FULL_ACCESS_A,
                         ids=[c[0] for c in ldif_suite.FULL_ACCESS_A])
def test_full_access_a(env_a, typed, key, alias, db, code, proto):
    """Full Access from the mailbox's security descriptor, the account's
    tokenGroups read with a base search: as the LDIF store decides."""
    fg, ref, _ = env_a
    got = login(fg, proto, typed, A.passwords[key])
    ok, err, body, ev = got
    if alias is None:
        expect_refused(ok, err, ev, proto, code)
    else:
        expect_mailbox(ok, err, body, ev, alias, db)
    assert outcome(*got) == outcome(*login(ref, proto, typed, A.passwords[key]))


def test_wrong_password_and_not_found_look_the_same(env_a):
    fg, _, _ = env_a
    ok1, err1, _, ev1 = login(fg, "imap", "tuser", WRONG_PASSWORDS[0])
    ok2, err2, _, ev2 = login(fg, "imap", "nosuchuser", WRONG_PASSWORDS[0])
    assert not ok1 and not ok2 and err1 == err2 and "AUTHENTICATIONFAILED" in err1
    assert ev1["reason"] == "wrong password"
    assert dn_norm(ev1["account"]) == dn_norm(A.accounts["tuser"].dn)
    assert ev2["reason"] == "User nosuchuser wasn't found in Active Directory."
    assert ev2["form"] == "user" and "account" not in ev2
    p1 = pop3_login(fg, "tuser", WRONG_PASSWORDS[1])
    p2 = pop3_login(fg, "nosuchuser", WRONG_PASSWORDS[1])
    assert not p1[0] and not p2[0] and p1[1] == p2[1] and "[AUTH]" in p1[1]


def test_protocol_disabled_per_protocol(env_a):
    fg, _, _ = env_a
    ok, err, _, ev = login(fg, "imap", "noimap", A.passwords["noimap"])
    expect_refused(ok, err, ev, "imap", "AUTHORIZATIONFAILED")
    assert "protocolSettings" in ev["reason"]
    expect_mailbox(*login(fg, "pop3", "noimap", A.passwords["noimap"]), "noimap", "DB01")
    ok, err, _, ev = login(fg, "pop3", "nopop", A.passwords["nopop"])
    expect_refused(ok, err, ev, "pop3", "AUTHORIZATIONFAILED")
    assert "protocolSettings" in ev["reason"]
    expect_mailbox(*login(fg, "imap", "nopop", A.passwords["nopop"]), "nopop", "DB02")


def test_admin_refused_after_its_password(env_a):
    fg, _, _ = env_a
    ok, err, _, ev = login(fg, "imap", "administrator", A.passwords["administrator"])
    assert not ok and "AllowAdminLogon" in ev["reason"], (err, ev)
    ok, err, _, ev = login(fg, "imap", "administrator", WRONG_PASSWORDS[2])
    assert not ok and ev["reason"] == "wrong password", (err, ev)


def test_child_domain_names(env_a):
    """A plain name is searched in the default domain only: CHILD's accounts
    need CHILD\\name; CHILD\\tuser is another account than UCLABOR\\tuser."""
    fg, _, dc = env_a
    ok, err, _, ev = login(fg, "imap", "childonly", A.passwords["childonly"])
    assert not ok and ev["reason"] == "User childonly wasn't found in Active Directory.", ev
    for typed in ["CHILD\\childonly", "child.uclabor.de\\childonly", "childonly@child.uclabor.de"]:
        expect_mailbox(*login(fg, "imap", typed, A.passwords["childonly"]), "childonly", "DB02")
    ok, err, _, ev = login(fg, "imap", "tuser", A.passwords["childtuser"])
    assert not ok and ev["reason"] == "wrong password", ev
    assert dn_norm(ev["account"]) == dn_norm(A.accounts["tuser"].dn)
    ok, err, _, ev = login(fg, "imap", "CHILD\\tuser", A.passwords["childtuser"])
    assert not ok and ev["reason"] == "the account has no mailbox", ev
    assert dn_norm(ev["account"]) == dn_norm(A.accounts["childtuser"].dn)
    # slapd saw the password check as a bind of that account's own DN
    assert re.search(r'BIND dn="cn=Child Tuser,cn=Users,dc=child,dc=uclabor,dc=de" mech=SIMPLE',
                     dc.log_text(), re.I)


def test_configured_domains_are_the_ones_used(workroot, mbx_a, dc_a):
    """Domains given: only those are known (no discovery behind the
    configuration's back). AllowAdminLogon = true lets the administrator in."""
    ip, pp = mbx_a
    fg = ldap_gateway(workroot, "fg-ldap-a-rootonly",
                      [LdapForest("uclabor", "Organization", A, [dc_a.uri],
                                  domains=domains_setting(A, only={"UCLABOR"}))], ip, pp,
                      directory={"AllowAdminLogon": "true"})
    try:
        mark = dc_a.log_mark()
        ok, err, _, ev = login(fg, "imap", "CHILD\\childonly", A.passwords["childonly"])
        expect_refused(ok, err, ev, "imap")
        assert not re.search(r'base="dc=child', dc_a.log_since(mark), re.I)
        expect_mailbox(*login(fg, "imap", "UCLABOR\\tuser", A.passwords["tuser"]),
                       "testalias", "DB01")
        expect_mailbox(*login(fg, "imap", "administrator", A.passwords["administrator"]),
                       "Administrator", "DB01")
    finally:
        stop_ok(fg)


def test_discovered_domains_setup_a(workroot, mbx_a, dc_a):
    """No Domains: UCLABOR and CHILD come from the crossRef objects."""
    ip, pp = mbx_a
    fg = ldap_gateway(workroot, "fg-ldap-a-discovered",
                      [LdapForest("uclabor", "Organization", A, [dc_a.uri], domains=False)],
                      ip, pp)
    try:
        for typed, key, alias, db in [("CHILD\\childonly", "childonly", "childonly", "DB02"),
                                      ("child.uclabor.de\\childonly", "childonly", "childonly",
                                       "DB02"),
                                      ("uclabor.de\\tuser\\other", "tuser", "other", "DB02"),
                                      ("UCLABOR/tuser", "tuser", "testalias", "DB01"),
                                      ("tuser", "tuser", "testalias", "DB01")]:
            expect_mailbox(*login(fg, "imap", typed, A.passwords[key]), alias, db)
        ok, _, _, ev = login(fg, "imap", "childonly", A.passwords["childonly"])
        assert not ok and "wasn't found" in ev["reason"], ev
    finally:
        stop_ok(fg)


def test_unknown_domain_is_not_found(env_a):
    """docs/login-rules.md section 2: an unknown domain is "not found", and the
    event log says so in the words of a name that was not found."""
    fg, ref, _ = env_a
    for typed in ["NOSUCH\\tuser", "nosuch.example\\tuser\\other",
                  "NOSUCH\\tuser.upn@upn.uclabor.de"]:
        got = login(fg, "imap", typed, A.passwords["tuser"])
        ok, err, _, ev = got
        expect_refused(ok, err, ev, "imap")
        assert ev["reason"] == f"User {typed} wasn't found in Active Directory.", ev
        assert outcome(*got) == outcome(*login(ref, "imap", typed, A.passwords["tuser"]))


# ------------------------------------------------------------ injection
INJECTIONS = ["*", "a*", "t*", "x)(|(uid=*)", "x)(|(sAMAccountName=*)", "*)(objectClass=*",
              "tuser)(|(sAMAccountName=*", "tuser.upn@*", "*@upn.uclabor.de", "UCLABOR\\t*",
              "UCLABOR\\*", "child.uclabor.de\\childonl*"]


def test_ldap_injection_names_are_not_found(env_a):
    """Filter metacharacters in a name are data: the searches slapd sees
    carry them escaped, nothing matches, nobody logs in -- even where an
    unescaped filter would find exactly one account (t*, tuser.upn@*)."""
    fg, _, dc = env_a
    for name in INJECTIONS:
        mark = dc.log_mark()
        for proto in ("imap", "pop3"):
            ok, err, _, ev = login(fg, proto, name, A.passwords["tuser"])
            expect_refused(ok, err, ev, proto)
            assert ev["reason"] == f"User {name} wasn't found in Active Directory.", ev
            assert "account" not in ev, ev
        value = name.split("\\")[-1]
        escaped = escape_filter_value(value)
        escaped = re.sub(r"\\([0-9a-f]{2})", lambda m: "\\" + m.group(1).upper(), escaped)
        filters = slapd_filters(dc, mark)
        assert any(escaped.lower() in f.lower() for f in filters), (name, escaped, filters)


def test_ldap_injection_in_the_alias_part(env_a):
    fg, _, dc = env_a
    mark = dc.log_mark()
    for typed in ["UCLABOR\\tuser\\oth*", "UCLABOR\\tuser\\*", "tuser.upn@upn.uclabor.de\\o*"]:
        ok, err, _, ev = login(fg, "imap", typed, A.passwords["tuser"])
        expect_refused(ok, err, ev, "imap")
        assert ev["reason"] == "no mailbox has that alias", ev
    filters = slapd_filters(dc, mark)
    assert any("oth\\2A" in f for f in filters), filters


def test_names_refused_before_any_search(env_a):
    """Invalid names and NUL bytes never reach the directory: no search,
    no bind in slapd's log."""
    fg, _, dc = env_a
    mark = dc.log_mark()
    for name in ["\\", "a\\", "\\a", "a\\\\b", "UCLABOR\\tuser\\other\\x", "a@b@c"]:
        for proto in ("imap", "pop3"):
            ok, err, _, ev = login(fg, proto, name, A.passwords["tuser"])
            expect_refused(ok, err, ev, proto)
    with Raw(fg.imap_port) as r:
        r.line()
        r.send(b'a LOGIN "x\x00y" pw\r\n')
        assert r.line().startswith(b"a BAD")
        r.send(b"b LOGIN {3}\r\n")
        r.line()
        r.send(b"x\x00y pw\r\n")
        assert r.line().startswith(b"b BAD")
        r.send(b"c LOGIN {3+}\r\nt\x00* " + A.passwords["tuser"].encode() + b"\r\n")
        assert r.line().startswith(b"c BAD")
    with Raw(fg.pop3_port) as r:
        r.line()
        r.send(b"USER t\x00*\r\n")
        assert r.line().startswith(b"-ERR")
        r.send(b"PASS " + A.passwords["tuser"].encode() + b"\r\n")
        assert r.line().startswith(b"-ERR")
    time.sleep(0.2)
    assert slapd_ops(dc, mark) == []


# ----------------------------------------------------- section 6, setup B
@pytest.mark.parametrize("proto", ["imap", "pop3"])
@pytest.mark.parametrize("typed,key,alias,db", SETUP_B, ids=[c[0] for c in SETUP_B])
def test_setup_b(env_b, typed, key, alias, db, proto):
    fg, ref, _, _ = env_b
    forest = B.acc if key in B.acc.accounts else B.res
    got = login(fg, proto, typed, forest.passwords[key])
    ok, err, body, ev = got
    if alias is None:
        expect_refused(ok, err, ev, proto)
    else:
        expect_mailbox(ok, err, body, ev, alias, db)
    assert outcome(*got) == outcome(*login(ref, proto, typed, forest.passwords[key]))


@pytest.mark.parametrize("typed,key,alias,db,code", ldif_suite.FULL_ACCESS_B,
                         ids=[c[0] for c in ldif_suite.FULL_ACCESS_B])
def test_full_access_b(env_b, typed, key, alias, db, code):
    fg, ref, _, _ = env_b
    got = login(fg, "imap", typed, B.acc.passwords[key])
    ok, err, body, ev = got
    if alias is None:
        expect_refused(ok, err, ev, "imap", code)
    else:
        expect_mailbox(ok, err, body, ev, alias, db)
    assert outcome(*got) == outcome(*login(ref, "imap", typed, B.acc.passwords[key]))


def test_setup_b_audit_names_the_account_forest(env_b):
    fg, _, _, _ = env_b
    ok, _, _, ev = login(fg, "imap", "ACC\\auser", B.acc.passwords["auser"])
    assert ok and ev["forest"] == "acc" and ev["form"] == "domain\\user", ev
    assert dn_norm(ev["account"]) == dn_norm(B.acc.accounts["auser"].dn)


def test_same_sam_in_both_account_domains(env_b):
    """ACC\\dupuser and ACC2\\dupuser: the plain name is ambiguous in the
    account forest (searched as a whole); each domain form finds its own."""
    fg, _, _, _ = env_b
    ok, err, _, ev = login(fg, "imap", "dupuser", B.acc.passwords["dupuser"])
    expect_refused(ok, err, ev, "imap")
    assert "ambiguous" in ev["reason"], ev
    expect_mailbox(*login(fg, "imap", "ACC\\dupuser", B.acc.passwords["dupuser"]),
                   "dupacc", "DB01")
    expect_mailbox(*login(fg, "imap", "ACC2\\dupuser", B.acc.passwords["dupuser2"]),
                   "dupeu", "DB02")
    ok, _, _, ev = login(fg, "imap", "ACC2\\dupuser", B.acc.passwords["dupuser"])
    assert not ok and ev["reason"] == "wrong password", ev
    expect_mailbox(*login(fg, "imap", "euuser", B.acc.passwords["euuser"]), "eulinked", "DB02")


def test_setup_b_refusals(env_b):
    fg, ref, _, _ = env_b
    for typed, key, why in [("twolinks", "twolinks", "more than one mailbox"),
                            ("nolink", "nolink", "no mailbox"),
                            ("accadmin", "accadmin", "AllowAdminLogon"),
                            ("accdis", "accdis", "wasn't found"),
                            ("accdis@acc.example", "accdis", "disabled"),
                            ("devuser", "devuser", "wasn't found")]:
        forest = B.acc if key in B.acc.accounts else B.res
        got = login(fg, "imap", typed, forest.passwords[key])
        ok, err, _, ev = got
        assert not ok and why in ev["reason"], (typed, err, ev)
        assert outcome(*got) == outcome(*login(ref, "imap", typed, forest.passwords[key]))


# ---------------------------------------------- setup B, changed at run time
def test_enabling_the_res_auser(env_b):
    """RES\\auser (disabled) is skipped; enabled, it wins the plain name: its
    password is checked, not ACC\\auser's. No cache: effective at once."""
    fg, _, res, _ = env_b
    dn = B.res.accounts["auser"].dn
    expect_mailbox(*login(fg, "imap", "auser", B.acc.passwords["auser"]), "linked", "DB01")
    res.set_enabled(dn, True)
    try:
        mark = res.log_mark()
        ok, err, _, ev = login(fg, "imap", "auser", B.acc.passwords["auser"])
        expect_refused(ok, err, ev, "imap")
        assert ev["reason"] == "wrong password" and ev["forest"] == "res", ev
        assert dn_norm(ev["account"]) == dn_norm(dn)
        assert re.search(r'BIND dn="cn=auser \(RES\),cn=users,dc=res,dc=example"',
                         res.log_since(mark), re.I)
        ok, err, _, ev = login(fg, "pop3", "auser", B.res.passwords["auser"])
        expect_refused(ok, err, ev, "pop3")
        assert ev["reason"] == "the account has no mailbox", ev
        expect_mailbox(*login(fg, "imap", "ACC\\auser", B.acc.passwords["auser"]),
                       "linked", "DB01")
    finally:
        res.set_enabled(dn, False)
    expect_mailbox(*login(fg, "pop3", "auser", B.acc.passwords["auser"]), "linked", "DB01")


def test_upn_given_to_a_second_account(env_b):
    """The linked mailbox user gets UPN auser@acc.example: two accounts bear
    it, in two forests, so the UPN no longer logs on."""
    fg, _, res, _ = env_b
    dn = B.res.accounts["linked"].dn
    res.replace(dn, "userPrincipalName", "auser@acc.example")
    try:
        for typed in ["auser@acc.example", "auser@acc.example\\linked", "ACC\\auser@acc.example"]:
            ok, err, _, ev = login(fg, "imap", typed, B.acc.passwords["auser"])
            expect_refused(ok, err, ev, "imap")
            assert "ambiguous" in ev["reason"], (typed, ev)
        expect_mailbox(*login(fg, "imap", "ACC\\auser", B.acc.passwords["auser"]),
                       "linked", "DB01")
    finally:
        res.replace(dn, "userPrincipalName", "linked@res.example")
    expect_mailbox(*login(fg, "imap", "auser@acc.example", B.acc.passwords["auser"]),
                   "linked", "DB01")


def test_disabling_the_account_forest_user(env_b):
    fg, _, _, acc = env_b
    dn = B.acc.accounts["auser"].dn
    acc.set_enabled(dn, False)
    try:
        ok, _, _, ev = login(fg, "imap", "ACC\\auser", B.acc.passwords["auser"])
        assert not ok and "wasn't found" in ev["reason"], ev
        ok, _, _, ev = login(fg, "imap", "auser@acc.example", B.acc.passwords["auser"])
        assert not ok and ev["reason"] == "the account is disabled", ev
        ok, _, _, ev = login(fg, "imap", "auser", B.acc.passwords["auser"])
        assert not ok and "wasn't found" in ev["reason"], ev
    finally:
        acc.set_enabled(dn, True)
    expect_mailbox(*login(fg, "imap", "ACC\\auser", B.acc.passwords["auser"]), "linked", "DB01")


def test_password_change_takes_effect_at_once(env_b):
    fg, _, _, acc = env_b
    dn = B.acc.accounts["auser"].dn
    new = "Changed-Auser-Pw9"
    acc.replace(dn, "userPassword", ssha(new))
    try:
        ok, _, _, ev = login(fg, "imap", "ACC\\auser", B.acc.passwords["auser"])
        assert not ok and ev["reason"] == "wrong password", ev
        expect_mailbox(*login(fg, "imap", "ACC\\auser", new), "linked", "DB01")
    finally:
        acc.replace(dn, "userPassword", ssha(B.acc.passwords["auser"]))
    expect_mailbox(*login(fg, "imap", "ACC\\auser", B.acc.passwords["auser"]), "linked", "DB01")
    ok, _, _, ev = login(fg, "imap", "ACC\\auser", new)
    assert not ok and ev["reason"] == "wrong password", ev


# ------------------------------------------------------------- vanishing
def test_clients_vanishing_during_the_directory_request(env_a):
    """LOGIN, then gone before slapd has answered: nothing is left behind,
    and the LDAP connections do not pile up."""
    fg, _, dc = env_a
    assert imap_quick(fg, "tuser", A.passwords["tuser"])[0]
    assert not imap_quick(fg, "tuser", WRONG_PASSWORDS[0])[0]
    base, base_ldap = fd_census(fg, {dc.port})
    for i in range(200):
        vanish_mid_login(fg.imap_port,
                         f"a LOGIN tuser {A.passwords['tuser']}\r\n".encode() if i % 2 else
                         b"a LOGIN UCLABOR\\tuser\\other wrong\r\n", reset=i % 3 == 0)
    st = fg.wait_idle()
    assert st["connections"] == 0 and st["backend_connections"] == 0
    rest, ldap = fd_census(fg, {dc.port})
    assert rest == base, (rest, base)
    assert ldap <= max(base_ldap, THREADS * (1 + BIND_CONNS)), (ldap, base_ldap)
    assert imap_quick(fg, "tuser", A.passwords["tuser"])[0]


# -------------------------------------------------------------- failover
class LoginLoad:
    """Threads logging in and out in a loop; every attempt is recorded."""

    def __init__(self, fg, logins, threads=4):
        self.fg, self.logins, self.n = fg, logins, threads
        self.results = []          # (monotonic time, ok, name, reply)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = []

    def _run(self, k):
        i = k
        while not self._stop.is_set():
            name, pw = self.logins[i % len(self.logins)]
            i += 1
            try:
                ok, err = imap_quick(self.fg, name, pw, timeout=20)
            except OSError as e:
                ok, err = False, f"socket: {e}"
            with self._lock:
                self.results.append((time.monotonic(), ok, name, err))

    def start(self):
        for k in range(self.n):
            t = threading.Thread(target=self._run, args=(k,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def since(self, t0):
        with self._lock:
            return [r for r in self.results if r[0] >= t0]


def test_failover_between_two_dcs_under_load(workroot, ldaproot, mbx_a):
    """Two DCs of forest A; the first is killed mid-load, then comes back and
    the second is killed: every login still succeeds."""
    ip, pp = mbx_a
    dc1 = Slapd.for_forest(os.path.join(ldaproot, "fo1"), A, host_name="dc1.uclabor.de").start()
    dc2 = Slapd.for_forest(os.path.join(ldaproot, "fo2"), A, host_name="dc2.uclabor.de").start()
    fg = ldap_gateway(workroot, "fg-ldap-failover",
                      [LdapForest("uclabor", "Organization", A, [dc1.uri, dc2.uri])], ip, pp)
    load = LoginLoad(fg, [("tuser", A.passwords["tuser"]),
                          ("UCLABOR\\tuser\\other", A.passwords["tuser"]),
                          ("tuser.upn@upn.uclabor.de", A.passwords["tuser"]),
                          ("CHILD\\childonly", A.passwords["childonly"])])
    try:
        load.start()
        time.sleep(1.0)
        m2 = dc2.log_mark()
        t_kill1 = time.monotonic()
        dc1.kill()
        time.sleep(2.5)
        after1 = load.since(t_kill1)
        # dc2 took over: it saw the users' binds
        assert re.search(r'BIND dn="cn=test user,ou=staff,dc=uclabor,dc=de"',
                         dc2.log_since(m2), re.I)
        dc1.start()
        # the first DC's back-off (at most 8 s) ends before the second goes
        time.sleep(9.0)
        m1 = dc1.log_mark()
        t_kill2 = time.monotonic()
        dc2.kill()
        time.sleep(2.5)
        load.stop()
        after2 = load.since(t_kill2)
        assert re.search(r'BIND dn="cn=test user,ou=staff,dc=uclabor,dc=de"',
                         dc1.log_since(m1), re.I)
    finally:
        load.stop()
        try:
            stop_ok(fg)
        finally:
            dc1.stop()
            dc2.stop()
    failed = [r for r in load.results if not r[1]]
    print(f"failover: {len(load.results)} logins, {len(after1)} after the first kill, "
          f"{len(after2)} after the second, {len(failed)} failed")
    assert len(after1) >= 20 and len(after2) >= 20, (len(after1), len(after2))
    assert failed == [], (len(failed), len(load.results), failed[:10])


def test_dcs_crashing_in_turn(workroot, ldaproot, mbx_a):
    """Two DCs killed and restarted in turn every 1.5 s under a load of UPN
    logins (one search per domain, so several requests per operation) and
    of a name that exists nowhere: forestgate survives (no crash, no
    sanitizer report); a right password is never answered as a failed
    logon (only [UNAVAILABLE] while no DC is usable); logins work again
    once the storm is over."""
    ip, pp = mbx_a
    dc1 = Slapd.for_forest(os.path.join(ldaproot, "turn1"), A, host_name="dc1.uclabor.de").start()
    dc2 = Slapd.for_forest(os.path.join(ldaproot, "turn2"), A, host_name="dc2.uclabor.de").start()
    fg = ldap_gateway(workroot, "fg-ldap-turns",
                      [LdapForest("uclabor", "Organization", A, [dc1.uri, dc2.uri])], ip, pp)
    pw = A.passwords["tuser"]
    load = LoginLoad(fg, [("tuser.upn@upn.uclabor.de", pw),
                          ("tuser.upn@upn.uclabor.de\\other", pw),
                          ("nosuch@upn.uclabor.de", WRONG_PASSWORDS[1])], threads=6)
    try:
        load.start()
        for i in range(6):
            time.sleep(1.3)
            (dc1 if i % 2 == 0 else dc2).kill()
            time.sleep(0.2)
            (dc1 if i % 2 == 0 else dc2).start()
            if fg.proc.poll() is not None:
                break
        load.stop()
        tail = "\n".join(fg.log_text().splitlines()[-30:])
        assert fg.proc.poll() is None, f"forestgate died ({fg.proc.returncode}):\n{tail}"
        wait_login_ok(fg, "tuser.upn@upn.uclabor.de", pw, timeout=10)
    finally:
        load.stop()
        try:
            stop_ok(fg)
        finally:
            dc1.stop()
            dc2.stop()
    right = [r for r in load.results if r[2].startswith("tuser")]
    wrong = [r for r in load.results if r[2].startswith("nosuch")]
    assert sum(1 for r in right if r[1]) >= 50, len(right)
    refused = [r for r in right if not r[1] and "[UNAVAILABLE]" not in r[3]]
    assert refused == [], (len(refused), refused[:5])
    assert not any(r[1] for r in wrong)
    odd = [r for r in wrong if "[AUTHENTICATIONFAILED]" not in r[3] and "[UNAVAILABLE]" not in r[3]]
    assert odd == [], odd[:5]


def test_first_uri_down_at_start_up(workroot, mbx_a, dc_a):
    """A refused first URI: discovery and logins go to the second."""
    ip, pp = mbx_a
    dead = f"ldap://127.0.0.1:{free_port()}"
    fg = ldap_gateway(workroot, "fg-ldap-deadfirst",
                      [LdapForest("uclabor", "Organization", A, [dead, dc_a.uri],
                                  domains=False)], ip, pp)
    try:
        for _ in range(3):
            expect_mailbox(*login(fg, "imap", "CHILD\\childonly", A.passwords["childonly"]),
                           "childonly", "DB02")
            expect_mailbox(*login(fg, "pop3", "tuser", A.passwords["tuser"]),
                           "testalias", "DB01")
    finally:
        stop_ok(fg)


def test_every_uri_down(workroot, mbx_a):
    """No DC answers at all (refused): [UNAVAILABLE] / [SYS/TEMP], quickly."""
    ip, pp = mbx_a
    dead = [f"ldap://127.0.0.1:{free_port()}", f"ldap://127.0.0.1:{free_port()}"]
    fg = ldap_gateway(workroot, "fg-ldap-alldead",
                      [LdapForest("uclabor", "Organization", A, dead)], ip, pp,
                      directory={"RequestTimeout": "00:00:03"})
    try:
        for proto in ("imap", "pop3", "imap"):
            t0 = time.monotonic()
            ok, err, _, ev = login(fg, proto, "tuser", A.passwords["tuser"])
            assert time.monotonic() - t0 < 3 + 1.5
            expect_refused(ok, err, ev, proto, "UNAVAILABLE")
            assert ev["result"] == "unavailable" and "unavailable" in ev["reason"], ev
    finally:
        stop_ok(fg)


# ---------------------------------------------------------------- freeze
REQUEST_TIMEOUT = 3


@pytest.fixture(scope="module")
def env_freeze(workroot, ldaproot, mbx_a):
    """A single DC with RequestTimeout = 3 s, to be frozen with SIGSTOP."""
    ip, pp = mbx_a
    dc = Slapd.for_forest(os.path.join(ldaproot, "freeze"), A).start()
    fg = ldap_gateway(workroot, "fg-ldap-freeze",
                      [LdapForest("uclabor", "Organization", A, [dc.uri])], ip, pp,
                      directory={"RequestTimeout": f"00:00:0{REQUEST_TIMEOUT}"})
    yield fg, dc
    dc.resume()
    stop_ok(fg)
    dc.stop()


def test_frozen_directory(env_freeze):
    """(a) logins answer [UNAVAILABLE] / [SYS/TEMP] within RequestTimeout +
    1.5 s; (b) sessions logged in before keep relaying at normal speed
    meanwhile; (c) after SIGCONT logins work again within seconds."""
    fg, dc = env_freeze
    pw = A.passwords["tuser"]
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
    m.login("tuser", pw)
    m.select("INBOX")
    p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=10)
    p.user("UCLABOR\\tuser\\other")
    p.pass_(pw)
    answers = {}

    def attempt(proto, name):
        t0 = time.monotonic()
        ok, err, _ = (imap_login if proto == "imap" else pop3_login)(fg, name, pw)
        answers[proto] = (time.monotonic() - t0, time.monotonic(), ok, err)

    dc.pause()
    try:
        t_pause = time.monotonic()
        threads = [threading.Thread(target=attempt, args=("imap", "tuser")),
                   threading.Thread(target=attempt, args=("pop3", "UCLABOR\\tuser"))]
        for t in threads:
            t.start()
        trips = []
        for _ in range(20):
            t0 = time.monotonic()
            assert m.noop()[0] == "OK"
            typ, data = m.fetch("1", "(FLAGS BODY.PEEK[TEXT])")
            assert typ == "OK" and b"the mailbox of testalias on DB01" in data[0][1]
            assert p.noop().startswith(b"+OK") and p.stat()[0] == 1
            trips.append((time.monotonic(), time.monotonic() - t0))
            time.sleep(0.05)
        for t in threads:
            t.join(REQUEST_TIMEOUT + 10)
        # (a)
        for proto, code in (("imap", "[UNAVAILABLE]"), ("pop3", "[SYS/TEMP]")):
            took, _, ok, err = answers[proto]
            assert not ok and code in err, (proto, err)
            assert took <= REQUEST_TIMEOUT + 1.5, (proto, took)
        evs = [{k: unlog(v) for k, v in e.items()} for e in fg.events("login")[-2:]]
        for ev in evs:
            assert ev["result"] == "unavailable", ev
            assert ev["reason"] == "the directory is unavailable", ev
            assert int(ev["dir_ms"]) <= (REQUEST_TIMEOUT + 1.5) * 1000, ev
        print(f"frozen DC: IMAP answered in {answers['imap'][0]:.2f} s, POP3 in "
              f"{answers['pop3'][0]:.2f} s; relay round trips max {max(d for _, d in trips):.3f} s")
        # (b): every round trip fast, and several while the logins were pending
        assert max(d for _, d in trips) < 0.5, trips
        first_answer = min(a[1] for a in answers.values())
        assert sum(1 for t, _ in trips if t < first_answer) >= 5, (trips, first_answer - t_pause)
        # more logins while frozen still answer in time
        t0 = time.monotonic()
        ok, err = imap_quick(fg, "tuser", pw)
        assert not ok and "[UNAVAILABLE]" in err and time.monotonic() - t0 <= REQUEST_TIMEOUT + 1.5
    except BaseException:
        # The sessions end with the failure: the next test starts idle.
        m.shutdown()
        p.close()
        raise
    finally:
        dc.resume()
    # (c)
    took = wait_login_ok(fg, "tuser", pw, timeout=10)
    print(f"logins work again {took:.2f} s after SIGCONT")
    for _ in range(3):
        expect_mailbox(*login(fg, "imap", "UCLABOR\\tuser\\other", pw), "other", "DB02")
    assert m.noop()[0] == "OK"
    m.logout()
    p.quit()


def test_clients_vanishing_during_a_freeze(env_freeze):
    """Requests in flight while the DC is frozen, their clients gone: once
    the requests have timed out, nothing is left behind."""
    fg, dc = env_freeze
    pw = A.passwords["tuser"]
    wait_login_ok(fg, "tuser", pw, timeout=10)
    assert not imap_quick(fg, "tuser", WRONG_PASSWORDS[0])[0]
    base, base_ldap = fd_census(fg, {dc.port})
    dc.pause()
    try:
        for i in range(60):
            if i % 4:
                vanish_mid_login(fg.imap_port, f"a LOGIN tuser {pw}\r\n".encode(),
                                 reset=i % 3 == 0)
            else:
                vanish_mid_login(fg.pop3_port, f"USER tuser\r\nPASS {pw}\r\n".encode(),
                                 reset=i % 3 == 0)
        time.sleep(REQUEST_TIMEOUT + 0.5)
        st = fg.wait_idle()
        assert st["connections"] == 0 and st["backend_connections"] == 0
    finally:
        dc.resume()
    wait_login_ok(fg, "tuser", pw, timeout=10)
    assert not imap_quick(fg, "tuser", WRONG_PASSWORDS[0])[0]
    st = fg.wait_idle()
    assert st["connections"] == 0 and st["backend_connections"] == 0
    rest, ldap = fd_census(fg, {dc.port})
    assert rest == base, (rest, base)
    assert ldap <= max(base_ldap, THREADS * (1 + BIND_CONNS)), (ldap, base_ldap)


# -------------------------------------------------- expired (MOCK of AD)
EXPIRED = {"tuser": "773", "other": "532", "nopop": "52e"}


@pytest.fixture(scope="module")
def env_expired(workroot, mbx_a, dc_a):
    """forestgate -> MockAdBindProxy -> slapd: binds of chosen accounts get
    AD's 49 with data 773 / 532 / 52e."""
    ip, pp = mbx_a
    proxy = MockAdBindProxy("127.0.0.1", dc_a.port,
                            {A.accounts[k].dn: code for k, code in EXPIRED.items()}).start()
    fg = ldap_gateway(workroot, "fg-ldap-expired",
                      [LdapForest("uclabor", "Organization", A, [proxy.uri])], ip, pp)
    yield fg, proxy
    stop_ok(fg)
    proxy.stop()


def _ldapwhoami(uri, dn, password):
    r = subprocess.run(["ldapwhoami", "-x", "-H", uri, "-D", dn, "-w", password,
                        "-o", "nettimeout=5"], capture_output=True, text=True, timeout=15)
    return r.returncode, r.stdout + r.stderr


def test_mock_ad_bind_proxy_itself(dc_a):
    """The MOCK answers chosen binds with AD's text (short and long BER
    lengths), passes everything else through to slapd."""
    long_dn = "CN=" + "x" * 300 + ",CN=Users,DC=uclabor,DC=de"
    t, o = A.accounts["tuser"], A.accounts["other"]
    with MockAdBindProxy("127.0.0.1", dc_a.port, {t.dn: "773", long_dn: "532"}) as proxy:
        rc, out = _ldapwhoami(proxy.uri, t.dn, t.password)
        assert rc == 49 and ad_diagnostic("773") in out, out
        # as slapd writes the DN (lower-case types, \2C escapes): the same DN
        rc, out = _ldapwhoami(proxy.uri, t.dn.lower(), "anything")
        assert rc == 49 and "data 773" in out, out
        rc, out = _ldapwhoami(proxy.uri, long_dn, "x")
        assert rc == 49 and "data 532" in out, out
        rc, out = _ldapwhoami(proxy.uri, o.dn, o.password)
        assert rc == 0 and "dn:cn=other mailbox" in out.lower(), out
        rc, out = _ldapwhoami(proxy.uri, o.dn, "wrong")
        assert rc == 49 and "data" not in out, out
        # a search whose answer needs long-form lengths goes through whole
        r = subprocess.run(["ldapsearch", "-x", "-LLL", "-H", proxy.uri, "-D", A.bind_dn,
                            "-w", A.bind_password, "-b", A.base_dn, "(objectClass=user)", "*"],
                           capture_output=True, text=True, timeout=15)
        users = sum(1 for a in A.accounts.values() if a.domain is A.root)
        assert r.returncode == 0 and len(re.findall(r"^dn::? ", r.stdout, re.M)) == users, r.stderr
        assert [dn for dn, _ in proxy.answered] == [t.dn, t.dn.lower(), long_dn]
        assert proxy.errors == []


@pytest.mark.parametrize("key,proto", [("tuser", "imap"), ("tuser", "pop3"), ("other", "imap"),
                                       ("other", "pop3"), ("nopop", "imap")])
def test_expired_password(env_expired, key, proto):
    fg, proxy = env_expired
    n = len(proxy.answered)
    ok, err, _, ev = login(fg, proto, key, A.passwords[key])
    assert proxy.answered[n:] and dn_norm(proxy.answered[-1][0]) == dn_norm(A.accounts[key].dn)
    if EXPIRED[key] == "52e":
        expect_refused(ok, err, ev, proto)
        assert ev["result"] == "failed" and ev["reason"] == "wrong password", ev
    else:
        expect_refused(ok, err, ev, proto, "EXPIRED")
        assert ev["result"] == "expired", ev
        assert ev["reason"] == "the password has expired or must be changed", ev


def test_expired_only_for_the_accounts_concerned(env_expired):
    fg, proxy = env_expired
    expect_mailbox(*login(fg, "imap", "CHILD\\childonly", A.passwords["childonly"]),
                   "childonly", "DB02")
    expect_mailbox(*login(fg, "pop3", "noimap", A.passwords["noimap"]), "noimap", "DB01")
    ok, err, _, ev = login(fg, "imap", "UCLABOR\\noimap", WRONG_PASSWORDS[1])
    assert not ok and "AUTHENTICATIONFAILED" in err and ev["reason"] == "wrong password", ev
    proxy.set_answer(A.accounts["tuser"].dn, None)
    try:
        expect_mailbox(*login(fg, "imap", "tuser", A.passwords["tuser"]), "testalias", "DB01")
    finally:
        proxy.set_answer(A.accounts["tuser"].dn, EXPIRED["tuser"])
    assert proxy.errors == []


# ------------------------------------------------------------------ TLS
def _openssl(d, *args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)


def _make_ca(d, name):
    _openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-days", "30", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt")
    return os.path.join(d, f"{name}.crt")


def _make_cert(d, ca, name, san):
    _openssl(d, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", f"{name}.key")
    _openssl(d, "req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out", f"{name}.csr")
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(f"subjectAltName={san}\n")
    _openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "30", "-extfile", f"{name}.ext", "-out", f"{name}.crt")
    return os.path.join(d, f"{name}.crt"), os.path.join(d, f"{name}.key")


@pytest.fixture(scope="module")
def ldap_tls(ldaproot):
    """A private CA, a DC of forest A whose certificate names 127.0.0.1, a
    DC whose certificate names another host, and a CA that signed neither."""
    d = os.path.join(ldaproot, "pki")
    os.makedirs(d, exist_ok=True)
    ca = _make_ca(d, "ldapca")
    other_ca = _make_ca(d, "otherca")
    good = _make_cert(d, "ldapca", "dc1.uclabor.de", "IP:127.0.0.1,DNS:dc1.uclabor.de")
    wrong = _make_cert(d, "ldapca", "elsewhere.example", "DNS:elsewhere.example")
    dc = Slapd.for_forest(os.path.join(ldaproot, "tls"), A, tls=good).start()
    dc_wrong = Slapd.for_forest(os.path.join(ldaproot, "tlswrong"), A, tls=wrong).start()
    yield {"ca": ca, "other_ca": other_ca, "dc": dc, "dc_wrong": dc_wrong}
    dc.stop()
    dc_wrong.stop()


def slapd_bind_ssf(dc, mark):
    """(bound DN, ssf) of every simple bind slapd logged since mark."""
    return [(m.group(1), int(m.group(2))) for m in re.finditer(
        r' BIND dn="([^"]*)" mech=SIMPLE bind_ssf=\d+ ssf=(\d+)', dc.log_since(mark))]


@pytest.mark.parametrize("mode", ["starttls", "ldaps"])
def test_ldap_over_tls(workroot, mbx_a, ldap_tls, mode):
    """LdapTls = starttls / ldaps with LdapCaFile: domains discovered and
    every bind -- the service account's and the users' -- encrypted."""
    ip, pp = mbx_a
    dc = ldap_tls["dc"]
    mark = dc.log_mark()
    uri = dc.uri if mode == "starttls" else dc.ldaps_uri
    fg = ldap_gateway(workroot, f"fg-ldap-{mode}",
                      [LdapForest("uclabor", "Organization", A, [uri], domains=False,
                                  extra={"LdapTls": mode, "LdapCaFile": ldap_tls["ca"]})],
                      ip, pp)
    try:
        expect_mailbox(*login(fg, "imap", "tuser", A.passwords["tuser"]), "testalias", "DB01")
        expect_mailbox(*login(fg, "pop3", "CHILD\\childonly", A.passwords["childonly"]),
                       "childonly", "DB02")
        ok, _, _, ev = login(fg, "imap", "UCLABOR\\tuser\\other", WRONG_PASSWORDS[0])
        assert not ok and ev["reason"] == "wrong password", ev
        # show settings: the forest's LDAP settings, the secret only as its file
        shown = fg.stats("show settings")["text"]
        sec = fg.sections["forest:uclabor"]
        for key in ("Uri", "BindDn", "BindPasswordFile", "BaseDn", "LdapTls", "LdapCaFile"):
            assert f"\n{key} = {sec[key]}\n" in shown, (key, shown)
        assert "Domains = UCLABOR:uclabor.de:DC=uclabor,DC=de; CHILD:" in shown
        assert A.bind_password not in shown
    finally:
        stop_ok(fg)
    binds = slapd_bind_ssf(dc, mark)
    dns = {dn_norm(dn) for dn, _ in binds}
    assert {dn_norm(A.bind_dn), dn_norm(A.accounts["tuser"].dn),
            dn_norm(A.accounts["childonly"].dn)} <= dns, binds
    assert all(ssf >= 128 for _, ssf in binds), binds


@pytest.mark.parametrize("mode", ["starttls", "ldaps"])
@pytest.mark.parametrize("case", ["wrong CA", "wrong name"])
def test_ldap_tls_unverified_server(workroot, mbx_a, ldap_tls, mode, case):
    """A certificate that does not verify: [UNAVAILABLE] / [SYS/TEMP], and
    no password -- neither the service account's nor the user's -- is sent."""
    ip, pp = mbx_a
    dc = ldap_tls["dc_wrong" if case == "wrong name" else "dc"]
    ca = ldap_tls["other_ca" if case == "wrong CA" else "ca"]
    mark = dc.log_mark()
    uri = dc.uri if mode == "starttls" else dc.ldaps_uri
    fg = ldap_gateway(workroot, f"fg-ldap-{mode}-{case.replace(' ', '')}",
                      [LdapForest("uclabor", "Organization", A, [uri],
                                  extra={"LdapTls": mode, "LdapCaFile": ca})], ip, pp,
                      directory={"RequestTimeout": "00:00:03"})
    try:
        for proto in ("imap", "pop3"):
            t0 = time.monotonic()
            ok, err, _, ev = login(fg, proto, "tuser", A.passwords["tuser"])
            assert time.monotonic() - t0 <= 3 + 1.5
            expect_refused(ok, err, ev, proto, "UNAVAILABLE")
            assert ev["result"] == "unavailable" and ev["reason"] == "the directory is unavailable"
        # The administrator is told the likely causes, with the server's URI.
        down = fg.events("ldap_down")
        assert down and uri in down[-1]["msg"]
        assert "certificate does not chain to LdapCaFile" in down[-1]["msg"], down[-1]
    finally:
        stop_ok(fg)
    assert slapd_ops(dc, mark) == []


# ------------------------------------------------------------- passwords
def test_no_password_in_any_log():
    """Run last: no user's, service account's or master password, and no
    wrong password typed here, appears in a forestgate log."""
    secrets = set(WRONG_PASSWORDS) | {MASTER_PW, "Changed-Auser-Pw9"}
    for forest in (A, B.res, B.acc):
        secrets |= set(forest.passwords.values())
    assert GATEWAYS, "no forestgate ran"
    for fg in GATEWAYS:
        text = fg.log_text()
        assert text, fg.log_path
        leaked = [s for s in secrets if s in text]
        assert leaked == [], (fg.log_path, leaked)

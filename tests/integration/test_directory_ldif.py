"""The directory end to end with the LDIF store: docs/login-rules.md section 8 through
forestgate, with imaplib and poplib, against two real Dovecot mailbox servers
on different loopback addresses (127.0.0.1 holds DB01, 127.0.0.2 holds DB02),
so the route by database is proven by where each login lands.

The forests are the fixtures of tests/ldap/fixtures.py (setup A: UCLABOR with
a child domain; setup B: the resource forest RES and the account forest ACC),
served from their LDIF. forestgate logs in to Dovecot as a master user, so the
passwords checked are the directory's."""

import contextlib
import imaplib
import os
import poplib
import subprocess

import pytest

from tests.ldap.fixtures import setup_a, setup_b
from tests.lib.dovecot import Dovecot
from tests.lib.forestgate import Forestgate, binary, free_port, vanish_mid_login

MASTER, MASTER_PW = "fgmaster", "master-secret-1"


def mailbox_servers(workroot, name, forest, tls=None, ports=None,
                    hosts=(("DB01", "127.0.0.1"), ("DB02", "127.0.0.2"))):
    """Two Dovecots on the same ports: DB01's mailboxes on .1, DB02's on .2.
    tls: {db: (cert, key)} for Dovecots that speak TLS (STARTTLS on the
    plain ports, implicit TLS on the TLS ports); ports: more Dovecot
    arguments for every one (imaps_port, pop3s_port)."""
    imap_port, pop3_port = free_port(), free_port()
    servers = {}
    for db, host in hosts:
        users = {a.alias: "unused-pw" for a in forest.accounts.values()
                 if a.alias and a.database == db[:4]}
        dc = Dovecot(os.path.join(workroot, f"{name}-{db}"), users,
                     master_users={MASTER: MASTER_PW}, imap_port=imap_port,
                     pop3_port=pop3_port, listen_host=host, tls=(tls or {}).get(db),
                     **(ports or {}))
        dc.start()
        for alias in users:
            dc.deliver(alias, f"Subject: {alias}\r\n\r\nthe mailbox of {alias} on {db}\r\n"
                       .encode())
        servers[db] = dc
    return servers, imap_port, pop3_port


@contextlib.contextmanager
def mailboxes(workroot, name, forest):
    """mailbox_servers() for a with block: (IMAP port, POP3 port)."""
    servers, ip, pp = mailbox_servers(workroot, name, forest)
    try:
        yield ip, pp
    finally:
        for s in servers.values():
            s.stop()


DATABASES = {"DB01": "127.0.0.1", "DB02": "127.0.0.2"}


def gateway(workroot, name, forests, imap_port, pop3_port, order=None, delay_ms=0,
            extra=None, hosts=None, ldif=None, start=True, databases=DATABASES):
    """A forestgate with LDIF forests: (name, role, fixture forest). extra:
    settings merged over these (a section None drops it); hosts: names for
    forestgate alone (Forestgate's hosts); ldif: a function that edits each
    forest's LDIF text; databases: the [databases] section (None: none, so
    the directory names the hosts)."""
    d = os.path.join(workroot, name)
    os.makedirs(d, exist_ok=True)
    pwfile = os.path.join(d, "master.pw")
    with open(pwfile, "w") as f:
        f.write(MASTER_PW + "\n")
    settings = {
        "backend": {"LoginMode": "MasterUser", "MasterUser": MASTER,
                    "MasterPasswordFile": pwfile},
        # No route cache: this suite checks the resolver on every logon
        # (test_route_cache.py checks the cache).
        "directory": {"DirectoryThreads": "2", "FailedLogonDelayMs": str(delay_ms),
                      "RouteCacheTTL": "00:00:00"},
    }
    if databases:
        settings["databases"] = dict(databases)
    if order:
        settings["directory"]["SearchOrder"] = order
    for fname, role, forest in forests:
        path = os.path.join(d, f"{fname}.ldif")
        with open(path, "w") as f:
            f.write(ldif(forest.ldif()) if ldif else forest.ldif())
        settings[f"forest:{fname}"] = {"Role": role, "Ldif": path}
    for sec, values in (extra or {}).items():
        if values is None:
            settings.pop(sec, None)
        else:
            settings.setdefault(sec, {}).update(values)
    fg = Forestgate(d, imap_backend_port=imap_port, pop3_backend_port=pop3_port,
                    settings=settings, hosts=hosts)
    fg.sections["backend"].pop("DefaultServer", None)
    return fg.start() if start else fg


@pytest.fixture(scope="module")
def env_a(workroot):
    A = setup_a()
    servers, ip, pp = mailbox_servers(workroot, "dir-a", A)
    fg = gateway(workroot, "fg-dir-a", [("uclabor", "Organization", A)], ip, pp)
    yield A, fg
    assert fg.stop() == 0, fg.log_text()
    for dc in servers.values():
        dc.stop()


@pytest.fixture(scope="module")
def env_b(workroot):
    B = setup_b()
    servers, ip, pp = mailbox_servers(workroot, "dir-b", B.res)
    fg = gateway(workroot, "fg-dir-b", [("acc", "Account", B.acc),
                                         ("res", "Organization", B.res)], ip, pp)
    yield B, fg
    assert fg.stop() == 0, fg.log_text()
    for dc in servers.values():
        dc.stop()


def imap_login(fg, name, password):
    """Logs in; returns (ok, reply text, the body of message 1 or None)."""
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=15)
    m._encoding = "utf-8"  # passwords beyond ASCII, sent as quoted strings
    if any(c in name for c in ' ()*%{"'):  # imaplib sends the name as it is
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    try:
        m.login(name, password)
    except imaplib.IMAP4.error as e:
        m.logout()
        return False, str(e), None
    m.select("INBOX")
    _, data = m.fetch("1", "(BODY.PEEK[TEXT])")
    m.logout()
    return True, "", data[0][1].decode()


def pop3_login(fg, name, password):
    """USER/PASS; returns (ok, reply text, message 1 or None)."""
    p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=15)
    try:
        p.user(name)
        p.pass_(password)
    except poplib.error_proto as e:
        p.close()
        return False, str(e), None
    _, lines, _ = p.retr(1)
    p.quit()
    return True, "", b"\r\n".join(lines).decode()


# typed name, account key (its password), expected mailbox alias and database or None
SETUP_A = [
    ("tuser", "tuser", "testalias", "DB01"),
    ("UCLABOR\\tuser", "tuser", "testalias", "DB01"),
    ("UCLABOR/tuser", "tuser", "testalias", "DB01"),
    ("uclabor.de\\tuser", "tuser", "testalias", "DB01"),
    ("UCLABOR\\tuser\\other", "tuser", "other", "DB02"),
    ("UCLABOR\\tuser\\testalias", "tuser", "testalias", "DB01"),
    ("tuser.upn@upn.uclabor.de", "tuser", "testalias", "DB01"),
    ("tuser.upn@upn.uclabor.de\\other", "tuser", "other", "DB02"),
    ("UCLABOR\\tuser.upn@upn.uclabor.de", "tuser", "testalias", "DB01"),
    ("UCLABOR\\tuser.upn@upn.uclabor.de\\other", "tuser", None, None),
    ("UCLABOR\\tuser.upn@upn.uclabor.de\\tuser.upn@upn.uclabor.de", "tuser", None, None),
    ("testalias", "tuser", None, None),
    ("testalias@uclabor.de", "tuser", None, None),
    ("anonymous", "tuser", None, None),
    ("Guest", "tuser", None, None),
    ("UCLABOR\\guest", "tuser", None, None),
    ("administrator", "administrator", None, None),
    ("UCLABOR\\tuser\\nosuchalias", "tuser", None, None),
    # beyond the field table
    ("childonly", "childonly", None, None),
    ("CHILD\\childonly", "childonly", "childonly", "DB02"),
    ("CHILD\\tuser", "childtuser", None, None),
    ("disuser", "disuser", None, None),
    ("UCLABOR\\hmueller", "hmueller", "hmueller", "DB01"),
    # domain\upn: the account lies in exactly the named domain, not in its child
    ("CHILD\\childonly@child.uclabor.de", "childonly", "childonly", "DB02"),
    ("child.uclabor.de\\childonly@child.uclabor.de", "childonly", "childonly", "DB02"),
    ("UCLABOR\\childonly@child.uclabor.de", "childonly", None, None),
    ("uclabor.de\\childonly@child.uclabor.de", "childonly", None, None),
    ("CHILD\\tuser.upn@upn.uclabor.de", "tuser", None, None),
    ("child.uclabor.de\\tuser.upn@upn.uclabor.de", "tuser", None, None),
    ("UCLABOR\\tuser@child.uclabor.de", "childtuser", None, None),
    ("hans.mueller@uclabor.de", "hmueller", "hmueller", "DB01"),
    ("*", "tuser", None, None),
    ("t*", "tuser", None, None),
    ("x)(|(sAMAccountName=*)", "tuser", None, None),
    ("tu\\\\ser", "tuser", None, None),
]


@pytest.mark.parametrize("typed,key,alias,db", SETUP_A, ids=[c[0] for c in SETUP_A])
def test_setup_a(env_a, typed, key, alias, db):
    A, fg = env_a
    ok, err, body = imap_login(fg, typed, A.passwords[key])
    ev = fg.events("login")[-1]
    if alias is None:
        assert not ok and "AUTHENTICATIONFAILED" in err, (err, ev)
        assert ev["result"] == "failed"
        return
    assert ok, (err, ev)
    assert f"the mailbox of {alias} on {db}" in body
    assert ev["mailbox"] == alias
    assert ev["backend"].startswith("127.0.0.1:" if db == "DB01" else "127.0.0.2:")


def test_wrong_password_and_not_found_look_the_same(env_a):
    A, fg = env_a
    ok1, err1, _ = imap_login(fg, "tuser", "wrong-password")
    ok2, err2, _ = imap_login(fg, "nosuchuser", "wrong-password")
    assert not ok1 and not ok2 and err1 == err2
    evs = fg.events("login")[-2:]
    assert evs[0]["reason"] == "wrong password"
    assert evs[1]["reason"] == "User nosuchuser wasn't found in Active Directory."
    assert evs[1]["form"] == "user" and evs[0]["account"].lower().startswith("cn=test user")


def test_protocol_disabled_per_protocol(env_a):
    A, fg = env_a
    ok, err, _ = imap_login(fg, "noimap", A.passwords["noimap"])
    assert not ok and "AUTHORIZATIONFAILED" in err
    assert "protocolSettings" in fg.events("login")[-1]["reason"]
    p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=15)
    p.user("noimap")
    assert p.pass_(A.passwords["noimap"]).startswith(b"+OK")
    p.quit()
    p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=15)
    p.user("nopop")
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        p.pass_(A.passwords["nopop"])
    p.quit()


def test_admin_refused_after_its_password(env_a):
    A, fg = env_a
    imap_login(fg, "administrator", A.passwords["administrator"])
    assert "AllowAdminLogon" in fg.events("login")[-1]["reason"]
    imap_login(fg, "administrator", "not-the-password")
    assert fg.events("login")[-1]["reason"] == "wrong password"


# Full Access to another's mailbox (docs/login-rules.md section 4), read by
# default from the mailbox's security descriptor, as Exchange does: (typed,
# account key, mailbox alias or None, database, the refusal's IMAP code).
FULL_ACCESS_A = [
    ("UCLABOR\\tuser\\other", "tuser", "other", "DB02", None),
    ("UCLABOR\\helper\\shared", "helper", "shared", "DB02", None),      # nested groups
    ("helper@uclabor.de\\shared", "helper", "shared", "DB02", None),
    ("UCLABOR\\denied\\shared", "denied", None, None, "AUTHORIZATIONFAILED"),  # a deny ACE
    ("UCLABOR\\sdonly\\other", "sdonly", "other", "DB02", None),        # not auto-mapped
    ("UCLABOR\\sdonly\\shared", "sdonly", None, None, "AUTHORIZATIONFAILED"),
    ("UCLABOR\\helper\\other", "helper", None, None, "AUTHORIZATIONFAILED"),
    ("UCLABOR\\helper", "helper", None, None, "AUTHENTICATIONFAILED"),    # no mailbox of its own
]
FULL_ACCESS_B = [
    # the linked account's own SID, from the account forest, in a RES mailbox's descriptor
    ("ACC\\auser\\resuser", "auser", "resuser", "DB01", None),
    ("auser@acc.example\\resuser", "auser", "resuser", "DB01", None),
    ("ACC\\nolink\\resuser", "nolink", None, None, "AUTHORIZATIONFAILED"),
]
# DelegateCheck = delegate-list reads msExchDelegateListLink alone; both:
# either grants, and the descriptor's deny still wins.
DELEGATE_CHECK_A = {
    "delegate-list": {"UCLABOR\\tuser\\other": True, "UCLABOR\\sdonly\\other": False,
                      "UCLABOR\\helper\\shared": False, "UCLABOR\\tuser\\shared": True},
    "both": {"UCLABOR\\tuser\\other": True, "UCLABOR\\sdonly\\other": True,
             "UCLABOR\\helper\\shared": True, "UCLABOR\\denied\\shared": False},
}


@pytest.mark.parametrize("typed,key,alias,db,code", FULL_ACCESS_A, ids=[c[0] for c in FULL_ACCESS_A])
def test_full_access_a(env_a, typed, key, alias, db, code):
    A, fg = env_a
    ok, err, body = imap_login(fg, typed, A.passwords[key])
    ev = fg.events("login")[-1]
    if alias is None:
        assert not ok and code in err, (err, ev)
        return
    assert ok, (err, ev)
    assert f"the mailbox of {alias} on {db}" in body and ev["mailbox"] == alias


def test_delegate_check_modes(workroot, env_a):
    """DelegateCheck chooses where Full Access is read; the default is the
    security descriptor (every row of FULL_ACCESS_A above)."""
    A, fg0 = env_a
    ports = (int(fg0.sections["imap"]["ProxyTargetPort"]),
             int(fg0.sections["pop3"]["ProxyTargetPort"]))
    for mode, rows in DELEGATE_CHECK_A.items():
        fg = gateway(workroot, f"fg-dir-check-{mode}", [("uclabor", "Organization", A)], *ports,
                     extra={"directory": {"DelegateCheck": mode}})
        try:
            for typed, works in rows.items():
                key = typed.split("\\")[1]
                ok, err, _ = imap_login(fg, typed, A.passwords[key])
                ev = fg.events("login")[-1]
                assert ok == works, (mode, typed, err, ev)
                if not works:
                    assert "AUTHORIZATIONFAILED" in err
                    assert ev["reason"] == "no full access to that mailbox", ev
        finally:
            assert fg.stop() == 0


SETUP_B = [
    ("ACC\\auser", "auser", "linked", "DB01"),
    ("ACC\\auser\\linked", "auser", "linked", "DB01"),
    ("auser@acc.example", "auser", "linked", "DB01"),
    ("auser@acc.example\\linked", "auser", "linked", "DB01"),
    ("linked@res.example", "auser", None, None),
    ("auser", "auser", "linked", "DB01"),
    ("dupuser", "dupuser", None, None),
    ("ACC2\\euuser", "euuser", "eulinked", "DB02"),
    ("eu.acc.example\\euuser", "euuser", "eulinked", "DB02"),
    ("resuser", "resuser", "resuser", "DB01"),
    ("RESDEV\\devuser", "devuser", "devuser", "DB02"),
]


@pytest.mark.parametrize("typed,key,alias,db", SETUP_B, ids=[c[0] for c in SETUP_B])
def test_setup_b(env_b, typed, key, alias, db):
    B, fg = env_b
    forest = B.acc if key in B.acc.accounts else B.res
    ok, err, body = imap_login(fg, typed, forest.passwords[key])
    ev = fg.events("login")[-1]
    if alias is None:
        assert not ok and "AUTHENTICATIONFAILED" in err, (err, ev)
        return
    assert ok, (err, ev)
    assert f"the mailbox of {alias} on {db}" in body
    assert ev["mailbox"] == alias
    assert ev["backend"].startswith("127.0.0.1:" if db == "DB01" else "127.0.0.2:")


@pytest.mark.parametrize("typed,key,alias,db,code", FULL_ACCESS_B, ids=[c[0] for c in FULL_ACCESS_B])
def test_full_access_b(env_b, typed, key, alias, db, code):
    B, fg = env_b
    ok, err, body = imap_login(fg, typed, B.acc.passwords[key])
    ev = fg.events("login")[-1]
    if alias is None:
        assert not ok and code in err, (err, ev)
        return
    assert ok, (err, ev)
    assert f"the mailbox of {alias} on {db}" in body and ev["forest"] == "acc"


def test_setup_b_audit_names_the_account_forest(env_b):
    B, fg = env_b
    imap_login(fg, "ACC\\auser", B.acc.passwords["auser"])
    ev = fg.events("login")[-1]
    assert ev["forest"] == "acc" and ev["form"].replace("\\\\", "\\") == "domain\\user"
    assert ev["account"].lower() == B.acc.accounts["auser"].dn.lower()
    assert ev["split_domain"] == "ACC" and ev["split_user"] == "auser"
    assert "split_alias" not in ev and "split_upn" not in ev
    imap_login(fg, "auser@acc.example\\linked", B.acc.passwords["auser"])
    ev = fg.events("login")[-1]
    assert ev["split_upn"] == "auser@acc.example" and ev["split_alias"] == "linked", ev
    imap_login(fg, "dupuser", B.acc.passwords["dupuser"])
    assert "ambiguous" in fg.events("login")[-1]["reason"]


def test_clients_vanishing_during_the_directory_request(env_a):
    """LOGIN, then gone before the answer: the answer still arrives on the
    worker's ring, finds the slot closing, and nothing is left behind."""
    A, fg = env_a
    fg.wait_idle()  # the sessions of the tests before are gone on both legs
    base = fg.fd_count()
    for i in range(300):
        vanish_mid_login(fg.imap_port,
                         f"a LOGIN tuser {A.passwords['tuser']}\r\n".encode() if i % 2 else
                         b"a LOGIN UCLABOR\\tuser\\other wrong\r\n", reset=i % 3 == 0)
    st = fg.wait_idle()
    assert st["connections"] == 0 and st["backend_connections"] == 0
    assert fg.fd_count() == base
    ok, _, _ = imap_login(fg, "tuser", A.passwords["tuser"])
    assert ok


def test_failed_logons_answer_after_the_delay(workroot, env_a):
    """FailedLogonDelayMs: an unknown name and a wrong password are both
    answered the delay after the login began, so their timing tells nothing;
    a right password is not delayed; a client gone during the delay leaves
    nothing behind."""
    import time
    A, fg0 = env_a
    fg = gateway(workroot, "fg-dir-delay", [("uclabor", "Organization", A)],
                 int(fg0.sections["imap"]["ProxyTargetPort"]),
                 int(fg0.sections["pop3"]["ProxyTargetPort"]), delay_ms=400)
    try:
        took = {"unknown": [], "wrong": []}
        for i in range(4):
            for kind, name in (("unknown", f"nosuch{i}"), ("wrong", "tuser")):
                t0 = time.monotonic()
                ok, err, _ = imap_login(fg, name, "not-the-password")
                took[kind].append(time.monotonic() - t0)
                assert not ok and "AUTHENTICATIONFAILED" in err
        for kind, ts in took.items():
            assert all(0.4 <= t < 0.9 for t in ts), (kind, ts)
        t0 = time.monotonic()
        ok, _, _ = imap_login(fg, "tuser", A.passwords["tuser"])
        assert ok and time.monotonic() - t0 < 0.35
        # The baseline once that session is gone on forestgate's side too:
        # the client's logout returns before forestgate has closed both legs.
        fg.wait_idle()
        base = fg.fd_count()
        for _ in range(50):
            vanish_mid_login(fg.imap_port, b"a LOGIN nosuch wrong\r\n")
        time.sleep(0.6)
        st = fg.wait_idle()
        assert st["connections"] == 0 and st["directory_in_flight"] == 0
        assert fg.fd_count() == base
    finally:
        assert fg.stop() == 0


def test_delegate_attribute_is_read_from_the_ldif(workroot, env_a):
    """DelegateAttribute names where full access is listed, in the LDIF store
    as in the LDAP one: with the list moved to another attribute, the
    delegate logon works only when DelegateAttribute names it."""
    A, fg0 = env_a
    ports = (int(fg0.sections["imap"]["ProxyTargetPort"]),
             int(fg0.sections["pop3"]["ProxyTargetPort"]))

    def moved(text):
        assert "msExchDelegateListLink:" in text
        return text.replace("msExchDelegateListLink:", "fgFullAccess:")

    for attr, works in (("fgFullAccess", True), (None, False)):
        # The list alone: the mailbox's security descriptor would grant it too.
        extra = {"directory": {"DelegateCheck": "delegate-list"}}
        if attr:
            extra["directory"]["DelegateAttribute"] = attr
        fg = gateway(workroot, f"fg-dir-delegattr-{works}", [("uclabor", "Organization", A)],
                     *ports, ldif=moved, extra=extra)
        try:
            ok, err, body = imap_login(fg, "UCLABOR\\tuser\\other", A.passwords["tuser"])
            ev = fg.events("login")[-1]
            if works:
                assert ok and "the mailbox of other on DB02" in body, (err, ev)
            else:
                assert not ok and "AUTHORIZATIONFAILED" in err
                assert ev["reason"] == "no full access to that mailbox", ev
        finally:
            assert fg.stop() == 0


def test_passthrough_refuses_delegate_logons_before_any_backend(workroot, env_a):
    """LoginMode = PassThrough logs in with the client's own password, which
    cannot open another's mailbox: a delegate logon is refused after the
    password check, with its reason, and no backend hears of it;
    --check-config warns about the combination."""
    A, fg0 = env_a
    ports = (int(fg0.sections["imap"]["ProxyTargetPort"]),
             int(fg0.sections["pop3"]["ProxyTargetPort"]))
    fg = gateway(workroot, "fg-dir-passthrough", [("uclabor", "Organization", A)], *ports,
                 extra={"backend": {"LoginMode": "PassThrough"}})
    try:
        check = subprocess.run([binary(), "-c", fg.config_path, "--check-config"],
                               capture_output=True, text=True)
        assert check.returncode == 0 and "configuration OK" in check.stdout
        assert "warning: LoginMode = PassThrough: delegate logons" in check.stderr, check.stderr
        for typed in ("UCLABOR\\tuser\\other", "tuser.upn@upn.uclabor.de\\other"):
            ok, err, _ = imap_login(fg, typed, A.passwords["tuser"])
            ev = fg.events("login")[-1]
            assert not ok and "AUTHORIZATIONFAILED" in err, err
            assert ev["result"] == "denied", ev
            assert ev["reason"] == "delegate logons need LoginMode MasterUser", ev
        p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=15)
        p.user("UCLABOR\\tuser\\other")
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            p.pass_(A.passwords["tuser"])
        p.quit()
        # No backend was contacted: no backend host was ever named.
        hosts = fg.stats("show backends")["text"].splitlines()
        assert hosts == [hosts[0]] and hosts[0].startswith("# host"), hosts
        assert fg.stats()["backend_connections"] == 0
        # A wrong password is still a wrong password.
        ok, err, _ = imap_login(fg, "UCLABOR\\tuser\\other", "not-the-password")
        assert not ok and fg.events("login")[-1]["reason"] == "wrong password"
    finally:
        assert fg.stop() == 0

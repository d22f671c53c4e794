"""The login rules against real Active Directory: Samba AD domain controllers
(tests/lib/samba.py) with Exchange's schema attributes, in front of real
Dovecots, with imaplib and poplib.

Setups A and B of docs/login-rules.md section 8 are loaded into Samba DCs
(one per forest: UCLABOR, RES, ACC) as Samba's own users, so objectSid,
userAccountControl, pwdLastSet and adminCount are AD's. Every row of the
section-6 tables that Samba can hold is tried through a forestgate on Samba
and a forestgate on slapd (tests/lib/slapd.py, the AD imitation the other
suites use) with the same data, and the two outcomes must agree: reply,
result, reason, mailbox, backend, forest and account. The table of both is
written to WORKROOT/samba-vs-slapd.md.

Beyond the table: AD's own bind diagnostics for real (52e wrong password,
533 disabled, 701 account expired, 773 must change password, 532 password
expired, 775 locked out), each mapped to the client's reply and the audit's
reason, with a locked-out account answered exactly as a wrong password; Full
Access from mailbox security descriptors Samba encoded and tokenGroups it
computed; and failover under load between two DCs of one domain, the second
joined with samba-tool domain join.

Samba runs one domain per forest here (it cannot add a child domain to a
forest), so the rows of the child domains (CHILD, RESDEV, ACC2) stay with the
slapd suite (test_directory_ldap.py). Needs root and samba-ad-dc: without
them the suite fails and says why, it does not skip.

    /usr/bin/python3 -m pytest -q tests/integration/test_directory_samba.py
"""

import base64
import os
import re
import subprocess
import time

import pytest

from tests.integration import test_directory_ldap as ldap_suite
from tests.integration import test_directory_ldif as ldif_suite
from tests.ldap.fixtures import mailbox_sd, setup_a, setup_b, sid_text
from tests.lib.samba import SambaDC, diagnostic, load_forest, require_samba
from tests.lib.slapd import Slapd

LdapForest, ldap_gateway, stop_ok = ldap_suite.LdapForest, ldap_suite.ldap_gateway, ldap_suite.stop_ok
login, outcome = ldap_suite.login, ldap_suite.outcome
expect_mailbox, expect_refused = ldap_suite.expect_mailbox, ldap_suite.expect_refused

# Samba's LDAP and Kerberos ports are fixed: each DC has an address of its own.
ADDR_A, ADDR_RES, ADDR_ACC = "127.0.0.61", "127.0.0.62", "127.0.0.63"
ADDR_PAIR = ("127.0.0.65", "127.0.0.66")   # two DCs of one domain (.64: bench/dirbench)

# Fresh fixture objects: loading them into Samba writes Samba's RIDs into
# them, and the slapd forests built afterwards from the same objects carry
# the same SIDs.
A = setup_a()
B = setup_b()
LEFT_OUT = {}          # forest name -> fixture keys Samba does not hold
ROWS = []              # (setup, typed, proto, samba outcome, slapd outcome)

# Names that only mean something with a child domain of the fixtures.
CHILD_WORDS = ("child", "resdev", "dev.res.example", "acc2", "eu.acc.example")


def comparable(rows, left_out, also=()):
    """The rows of a section-6 table that Samba's forests can answer: no
    account of a child domain, no child domain named."""
    out = []
    for typed, key, alias, db in rows:
        if key in left_out or any(w in typed.lower() for w in CHILD_WORDS) or typed in also:
            continue
        out.append((typed, key, alias, db))
    return out


# "dupuser" is ambiguous only because ACC2 holds a second dupuser.
ROWS_A = comparable(ldif_suite.SETUP_A, {"childonly", "childtuser"})
ROWS_B = comparable(ldif_suite.SETUP_B, {"dupuser2", "euuser", "devuser"}, also=("dupuser",))


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def sambaroot(workroot):
    require_samba()
    d = os.path.join(workroot, "samba")
    os.makedirs(d, exist_ok=True)
    return d


def samba_for(root, forest, addr):
    dc = SambaDC(os.path.join(root, forest.netbios.lower()), forest.root.dns,
                 forest.root.netbios, addr,
                 admin_password=forest.passwords.get("administrator", "Fixture-Admin-Pw1"),
                 domain_sid=forest.root.sid)
    dc.provision().start()
    LEFT_OUT[forest.netbios] = load_forest(dc, forest)
    return dc


@pytest.fixture(scope="module")
def samba_a(sambaroot):
    dc = samba_for(sambaroot, A, ADDR_A)
    yield dc
    dc.stop()


@pytest.fixture(scope="module")
def samba_b(sambaroot):
    acc = samba_for(sambaroot, B.acc, ADDR_ACC)     # first: the masters' SIDs
    res = samba_for(sambaroot, B.res, ADDR_RES)
    yield res, acc
    res.stop()
    acc.stop()


@pytest.fixture(scope="module")
def mbx_a(workroot):
    with ldif_suite.mailboxes(workroot, "samba-a", A) as ports:
        yield ports


@pytest.fixture(scope="module")
def mbx_b(workroot):
    with ldif_suite.mailboxes(workroot, "samba-b", B.res) as ports:
        yield ports


@pytest.fixture(scope="module")
def env_a(workroot, sambaroot, samba_a, mbx_a):
    """Setup A: a forestgate on Samba and one on slapd, Domains and BaseDn
    configured (the root domain only), in front of the same Dovecots."""
    ip, pp = mbx_a
    dom = f"{A.root.netbios}:{A.root.dns}:{A.root.base_dn}"
    slapd = Slapd.for_forest(os.path.join(sambaroot, "slapd-a"), A).start()
    fg = ldap_gateway(workroot, "fg-samba-a",
                      [LdapForest("uclabor", "Organization", A, [samba_a.uri], domains=dom)],
                      ip, pp)
    ref = ldap_gateway(workroot, "fg-slapd-a",
                       [LdapForest("uclabor", "Organization", A, [slapd.uri], domains=dom)],
                       ip, pp)
    yield fg, ref, samba_a
    stop_ok(fg)
    stop_ok(ref)
    slapd.stop()


@pytest.fixture(scope="module")
def env_b(workroot, sambaroot, samba_b, mbx_b):
    """Setup B: domains and base DNs discovered from the DCs (rootDSE and
    CN=Partitions), on Samba and on slapd."""
    ip, pp = mbx_b
    res, acc = samba_b
    s_res = Slapd.for_forest(os.path.join(sambaroot, "slapd-res"), B.res).start()
    s_acc = Slapd.for_forest(os.path.join(sambaroot, "slapd-acc"), B.acc).start()

    def forests(res_uri, acc_uri):
        return [LdapForest("acc", "Account", B.acc, [acc_uri], domains=False, base_dn=False),
                LdapForest("res", "Organization", B.res, [res_uri], domains=False,
                           base_dn=False)]

    fg = ldap_gateway(workroot, "fg-samba-b", forests(res.uri, acc.uri), ip, pp)
    ref = ldap_gateway(workroot, "fg-slapd-b", forests(s_res.uri, s_acc.uri), ip, pp)
    yield fg, ref, res, acc
    stop_ok(fg)
    stop_ok(ref)
    s_res.stop()
    s_acc.stop()


def compare(setup, fg, ref, proto, typed, password):
    got = login(fg, proto, typed, password)
    want = login(ref, proto, typed, password)
    ROWS.append((setup, typed, proto, outcome(*got), outcome(*want)))
    assert outcome(*got) == outcome(*want), (typed, proto)
    return got


# ------------------------------------------------------- the environment
def test_samba_is_real_ad(samba_a):
    """The DC answers as AD does: its rootDSE, AD's own SIDs and account
    control, Exchange's attributes from the schema, a wrong password's
    diagnostic."""
    t = A.accounts["tuser"]
    res = samba_a.search(t.dn, "(objectClass=*)",
                         ["objectSid", "userAccountControl", "pwdLastSet", "homeMDB",
                          "msDS-User-Account-Control-Computed"], scope="base")
    assert samba_a.sid_of(t.dn) == t.sid and t.sid.startswith(A.root.sid + "-")
    assert int(res[0]["userAccountControl"][0]) == 512
    assert int(res[0]["pwdLastSet"][0]) > 0
    assert str(res[0]["homeMDB"][0]).lower() == t.home_mdb.lower()
    adm = samba_a.search(A.accounts["administrator"].dn, "(objectClass=*)", ["adminCount"],
                         scope="base")
    assert int(adm[0]["adminCount"][0]) == 1       # Samba's own, not the fixture's
    # the schema knows Exchange's attributes by Exchange's IDs
    sch = samba_a.search(samba_a.schema_dn, "(lDAPDisplayName=msExchMasterAccountSid)",
                         ["attributeID", "attributeSyntax"])
    assert str(sch[0]["attributeID"][0]) == "1.2.840.113556.1.4.7000.102.81"
    # msExchDelegateListLink is a linked attribute: AD keeps the back link
    back = samba_a.search(t.dn, "(objectClass=*)", ["msExchDelegateListBL"], scope="base")
    assert {str(v).lower() for v in back[0]["msExchDelegateListBL"]} == \
        {A.accounts["other"].dn.lower(), A.accounts["shared"].dn.lower()}
    assert diagnostic(samba_a.bind_error(t.dn, "wrong-password")) == "52e"
    assert samba_a.bind_error(t.dn, t.password) is None


# ----------------------------------------------------- section 6, setup A
@pytest.mark.parametrize("proto", ["imap", "pop3"])
@pytest.mark.parametrize("typed,key,alias,db", ROWS_A, ids=[c[0] for c in ROWS_A])
def test_setup_a(env_a, typed, key, alias, db, proto):
    fg, ref, _ = env_a
    ok, err, body, ev = compare("A", fg, ref, proto, typed, A.passwords[key])
    if alias is None:
        expect_refused(ok, err, ev, proto)
        assert ev["result"] == "failed", ev
    else:
        expect_mailbox(ok, err, body, ev, alias, db)
        assert ev["forest"] == "uclabor", ev


@pytest.mark.parametrize("key,proto,code", [("noimap", "imap", "AUTHORIZATIONFAILED"),
                                            ("nopop", "pop3", "AUTHORIZATIONFAILED"),
                                            ("administrator", "imap", "AUTHENTICATIONFAILED"),
                                            ("nombx", "imap", "AUTHENTICATIONFAILED"),
                                            ("disuser", "pop3", "AUTHENTICATIONFAILED")])
def test_setup_a_refusals(env_a, key, proto, code):
    """protocolSettings, adminCount (Samba's own on Administrator), no
    homeMDB, a disabled account: as on slapd."""
    fg, ref, _ = env_a
    ok, err, _, ev = compare("A", fg, ref, proto, key, A.passwords[key])
    expect_refused(ok, err, ev, proto, code)


def test_delegate_through_the_back_linked_attribute(env_a):
    """UCLABOR\\tuser\\other and \\shared: msExchDelegateListLink as a real
    linked attribute; a name that is not a delegate is refused."""
    fg, ref, _ = env_a
    expect_mailbox(*compare("A", fg, ref, "imap", "UCLABOR\\tuser\\shared",
                            A.passwords["tuser"]), "shared", "DB02")
    ok, err, _, ev = compare("A", fg, ref, "imap", "UCLABOR\\other\\testalias",
                             A.passwords["other"])
    expect_refused(ok, err, ev, "imap", "AUTHORIZATIONFAILED")


# ----------------------------------------------------- section 6, setup B
@pytest.mark.parametrize("proto", ["imap", "pop3"])
@pytest.mark.parametrize("typed,key,alias,db", ROWS_B, ids=[c[0] for c in ROWS_B])
def test_setup_b(env_b, typed, key, alias, db, proto):
    fg, ref, _, _ = env_b
    forest = B.acc if key in B.acc.accounts else B.res
    ok, err, body, ev = compare("B", fg, ref, proto, typed, forest.passwords[key])
    if alias is None:
        expect_refused(ok, err, ev, proto)
    else:
        expect_mailbox(ok, err, body, ev, alias, db)


def test_setup_b_linked_mailbox_by_the_accounts_real_sid(env_b):
    """The linked mailbox is found by msExchMasterAccountSid = the objectSid
    Samba gave ACC\\auser; the audit names the account forest."""
    fg, ref, res, acc = env_b
    a = B.acc.accounts["auser"]
    assert acc.sid_of(a.dn) == a.sid
    raw = res.search(B.res.accounts["linked"].dn, "(objectClass=*)",
                     ["msExchMasterAccountSid"], scope="base")[0]["msExchMasterAccountSid"][0]
    assert bytes(raw) == a.sid_bytes
    ok, err, body, ev = compare("B", fg, ref, "imap", "ACC\\auser", a.password)
    expect_mailbox(ok, err, body, ev, "linked", "DB01")
    assert ev["forest"] == "acc" and ev["account"].lower() == a.dn.lower(), ev


@pytest.mark.parametrize("typed,key", [("ACC\\accadmin", "accadmin"), ("ACC\\accdis", "accdis"),
                                       ("nolink", "nolink"), ("twolinks", "twolinks")])
def test_setup_b_refusals(env_b, typed, key):
    fg, ref, _, _ = env_b
    ok, err, _, ev = compare("B", fg, ref, "imap", typed, B.acc.passwords[key])
    expect_refused(ok, err, ev, "imap")


def test_setup_b_run_time_changes(env_b):
    """Enabling RES\\auser makes plain `auser` check its password, not
    ACC\\auser's; a UPN on two accounts fails: changed in Samba at run time."""
    fg, _, res, _ = env_b
    ra, la = B.res.accounts["auser"], B.res.accounts["linked"]
    res.set_enabled(ra.dn, True)
    try:
        ok, err, _, ev = login(fg, "imap", "auser", B.acc.passwords["auser"])
        expect_refused(ok, err, ev, "imap")
        assert ev["reason"] == "wrong password", ev
    finally:
        res.set_enabled(ra.dn, False)
    expect_mailbox(*login(fg, "imap", "auser", B.acc.passwords["auser"]), "linked", "DB01")
    res.replace(la.dn, "userPrincipalName", "auser@acc.example")
    try:
        ok, err, _, ev = login(fg, "imap", "auser@acc.example", B.acc.passwords["auser"])
        expect_refused(ok, err, ev, "imap")
    finally:
        res.replace(la.dn, "userPrincipalName", la.upn)


# ------------------------------------------------ Full Access, as stored
@pytest.mark.parametrize("proto", ["imap", "pop3"])
@pytest.mark.parametrize("typed,key,alias,db,code", ldif_suite.FULL_ACCESS_A,
                         ids=[c[0] for c in ldif_suite.FULL_ACCESS_A])
def test_full_access_a(env_a, typed, key, alias, db, code, proto):
    """msExchMailboxSecurityDescriptor written by Samba's SDDL encoder,
    tokenGroups computed by AD from nested groups: as on slapd."""
    fg, ref, _ = env_a
    ok, err, body, ev = compare("A", fg, ref, proto, typed, A.passwords[key])
    if alias is None:
        expect_refused(ok, err, ev, proto, code)
    else:
        expect_mailbox(ok, err, body, ev, alias, db)


@pytest.mark.parametrize("typed,key,alias,db,code", ldif_suite.FULL_ACCESS_B,
                         ids=[c[0] for c in ldif_suite.FULL_ACCESS_B])
def test_full_access_b(env_b, typed, key, alias, db, code):
    fg, ref, _, _ = env_b
    ok, err, body, ev = compare("B", fg, ref, "imap", typed, B.acc.passwords[key])
    if alias is None:
        expect_refused(ok, err, ev, "imap", code)
    else:
        expect_mailbox(ok, err, body, ev, alias, db)


def test_what_ad_computes_and_stores(env_a):
    """The lookup account reads tokenGroups (AD computes it: Helpdesk, and
    Mailbox Managers through it); the descriptor Samba stored is, byte for
    byte, the one the slapd fixture writes."""
    _, _, dc = env_a
    h = A.accounts["helper"]
    out = subprocess.run(["ldapsearch", "-x", "-LLL", "-H", dc.uri, "-D", A.bind_dn, "-w",
                          A.bind_password, "-b", h.dn, "-s", "base", "tokenGroups"],
                         capture_output=True, text=True, timeout=15)
    assert out.returncode == 0, out.stderr
    got = {sid_text(base64.b64decode(v)) for v in re.findall(r"^tokenGroups:: (\S+)", out.stdout,
                                                             re.M)}
    assert {A.groups["helpdesk"].sid, A.groups["managers"].sid} <= got, got
    assert got == set(A.token_groups(h)), (got, A.token_groups(h))
    for key in ("other", "shared", "tuser"):
        a = A.accounts[key]
        raw = dc.search(a.dn, "(objectClass=*)", ["msExchMailboxSecurityDescriptor"],
                        scope="base")[0]["msExchMailboxSecurityDescriptor"][0]
        assert bytes(raw) == mailbox_sd(*A.mailbox_grants(a)), key


# --------------------------------------------- AD's own bind diagnostics
DIAG_USERS = ["diag-acctexp", "diag-chg", "diag-pwexp", "diag-lock", "diag-dis"]


@pytest.fixture(scope="module")
def diag(env_a):
    """Accounts in the states AD reports with a diagnostic, made with Samba's
    own tools: setexpiry, pwdLastSet 0, a password set 43 days ago (the
    default maximum age is 42), a disabled one, and one to lock out."""
    fg, _, dc = env_a
    pw = {u: f"Diag-{u}-Pw1" for u in DIAG_USERS}
    for u in DIAG_USERS:
        dn = f"CN={u},CN=Users,{A.root.base_dn}"
        dc.add(dn, {"objectClass": "user", "sAMAccountName": u,
                    "userPrincipalName": f"{u}@{A.root.dns}"})
        dc.set_password(dn, pw[u], fake_time="-43d" if u == "diag-pwexp" else None)
        dc.replace(dn, "userAccountControl", "514" if u == "diag-dis" else "512")
    dc.tool("user", "setexpiry", "diag-acctexp", "--days=0")
    dc.replace(f"CN=diag-chg,CN=Users,{A.root.base_dn}", "pwdLastSet", "0")
    time.sleep(1.1)          # accountExpires "now" must lie in the past
    return fg, dc, pw


def dn_of(u):
    return f"CN={u},CN=Users,{A.root.base_dn}"


@pytest.mark.parametrize("user,code,result,reason", [
    ("diag-acctexp", "701", "failed", "the account has expired (accountExpires)"),
    ("diag-chg", "773", "expired", "the password has expired or must be changed"),
    ("diag-pwexp", "532", "expired", "the password has expired or must be changed"),
])
@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_bind_diagnostics(diag, proto, user, code, result, reason):
    fg, dc, pw = diag
    assert diagnostic(dc.bind_error(dn_of(user), pw[user])) == code   # Samba says it itself
    ok, err, _, ev = login(fg, proto, user, pw[user])
    expect_refused(ok, err, ev, proto, "EXPIRED" if result == "expired" else
                   "AUTHENTICATIONFAILED")
    assert ev["result"] == result and ev["reason"] == reason, ev
    # a wrong password is a wrong password, whatever the account's state
    ok, err, _, ev = login(fg, proto, user, "not-" + pw[user])
    expect_refused(ok, err, ev, proto)
    assert ev["reason"] == "wrong password", ev


def test_disabled_account(diag):
    """533 from Samba. forestgate's lookup passes over a disabled account
    (docs/login-rules.md section 2), so it never binds as one: the client
    hears a wrong password, the audit "not found". (The bind's mapping of
    533, for an account disabled between lookup and bind, is unit-tested.)"""
    fg, dc, pw = diag
    assert diagnostic(dc.bind_error(dn_of("diag-dis"), pw["diag-dis"])) == "533"
    ok, err, _, ev = login(fg, "imap", "diag-dis", pw["diag-dis"])
    expect_refused(ok, err, ev, "imap")
    assert ev["reason"] == "User diag-dis wasn't found in Active Directory.", ev


def test_locked_out_looks_like_a_wrong_password(diag):
    """The domain's lockout policy set low with samba-tool: after three wrong
    passwords AD answers 775, to the right password too. The client hears
    exactly what a wrong password gets; the audit line names the lockout."""
    fg, dc, pw = diag
    dc.tool("domain", "passwordsettings", "set", "--account-lockout-threshold=3",
            "--account-lockout-duration=30", "--reset-account-lockout-after=30")
    try:
        wrong = []
        for i in range(3):
            ok, err, _, ev = login(fg, "imap", "diag-lock", f"wrong-{i}")
            assert not ok and ev["reason"] == "wrong password", ev
            wrong.append(err)
        assert diagnostic(dc.bind_error(dn_of("diag-lock"), pw["diag-lock"])) == "775"
        for proto in ("imap", "pop3"):
            ok, err, _, ev = login(fg, proto, "diag-lock", pw["diag-lock"])
            expect_refused(ok, err, ev, proto)
            assert ev["result"] == "failed" and ev["reason"] == "the account is locked out", ev
            if proto == "imap":
                assert err == wrong[0]
            ok2, err2, _, ev2 = login(fg, proto, "tuser", "not-tusers-password")
            assert err == err2 and ev2["reason"] == "wrong password"
        # another account of the domain is not affected
        expect_mailbox(*login(fg, "imap", "tuser", A.passwords["tuser"]), "testalias", "DB01")
    finally:
        dc.tool("domain", "passwordsettings", "set", "--account-lockout-threshold=0")


# ------------------------------------------------------------- failover
@pytest.fixture(scope="module")
def samba_pair(sambaroot):
    """Two DCs of one domain: the second joined to the first with
    samba-tool domain join, holding the users and their password hashes by
    replication. Fixture objects of their own (Samba gives its own RIDs)."""
    F = setup_a()
    dc1 = SambaDC(os.path.join(sambaroot, "pair1"), F.root.dns, F.root.netbios, ADDR_PAIR[0],
                  admin_password=F.passwords["administrator"], domain_sid=F.root.sid,
                  host="pdc1", replication=True)
    dc1.provision().start()
    load_forest(dc1, F)
    dc2 = dc1.join(os.path.join(sambaroot, "pair2"), ADDR_PAIR[1], host="pdc2").start()
    yield F, dc1, dc2
    dc2.stop()
    dc1.stop()


def refuses(dc):
    """Nothing listens on the DC's LDAP port: it is really down."""
    import socket
    try:
        socket.create_connection((dc.address, 389), timeout=1).close()
        return False
    except OSError:
        return True


def test_failover_between_two_samba_dcs(workroot, mbx_a, samba_pair):
    """Logons under load while the first DC is killed, comes back, and the
    second is killed: every logon succeeds. Neither the route cache nor the
    credential cache is on, so each logon was a search and a bind answered
    by the DC still up (Samba keeps no lastLogon for a simple bind to show
    it)."""
    F, dc1, dc2 = samba_pair
    ip, pp = mbx_a
    dom = f"{F.root.netbios}:{F.root.dns}:{F.root.base_dn}"
    fg = ldap_gateway(workroot, "fg-samba-failover",
                      [LdapForest("uclabor", "Organization", F, [dc1.uri, dc2.uri],
                                  domains=dom)], ip, pp)
    t = F.accounts["tuser"]
    load = ldap_suite.LoginLoad(fg, [("tuser", t.password), ("UCLABOR\\tuser\\other", t.password),
                                     ("tuser.upn@upn.uclabor.de", t.password)])
    try:
        load.start()
        time.sleep(1.5)
        t_kill1 = time.monotonic()
        dc1.kill()
        time.sleep(3.0)
        after1 = load.since(t_kill1)
        assert refuses(dc1)
        dc1.start()
        time.sleep(9.0)     # the first DC's back-off (at most 8 s) ends
        t_kill2 = time.monotonic()
        dc2.kill()
        time.sleep(3.0)
        load.stop()
        after2 = load.since(t_kill2)
        assert refuses(dc2)
    finally:
        load.stop()
        stop_ok(fg)
    failed = [r for r in load.results if not r[1]]
    assert len(after1) >= 10 and len(after2) >= 10, (len(after1), len(after2))
    assert failed == [], (len(failed), len(load.results), failed[:10])


# ------------------------------------------------------------- the table
def test_comparison_table(workroot):
    """Every row tried against both; the table for the record."""
    assert len({(s, t, p) for s, t, p, _, _ in ROWS}) >= 2 * (len(ROWS_A) + len(ROWS_B))
    keys = ["ok", "reply", "result", "reason", "mailbox", "backend", "forest"]
    lines = ["| setup | typed | proto | " + " | ".join(keys) + " | slapd agrees |",
             "|---|---|---|" + "---|" * len(keys) + "---|"]
    for s, t, p, got, want in ROWS:
        cells = [str(got.get(k) or "").replace("|", "\\|") for k in keys]
        typed = t.replace("|", "\\|")
        lines.append(f"| {s} | `{typed}` | {p} | " + " | ".join(cells) +
                     f" | {'yes' if got == want else 'NO'} |")
    with open(os.path.join(workroot, "samba-vs-slapd.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    assert all(got == want for _, _, _, got, want in ROWS)

"""The route cache (issue 13) end to end: forestgate in front of a real slapd
(setup A of tests/ldap/fixtures.py, with accounts of its own for each test
here) and two real Dovecots (127.0.0.1 holds DB01, 127.0.0.2 holds DB02),
driven by imaplib, poplib and raw sockets.

What each logon cost is counted twice: at slapd (its stats log, one entry
per BIND or SRCH request, Slapd.requests_since) and by forestgate itself
(show info's counters on the StatsSocket, the audit line's cache= and
ldap_ops=). The settings, commands, counters and audit fields are those of
the issue's interface:

    [directory] RouteCacheTTL, NegativeCacheTTL, RouteCacheMaxEntries,
                CredentialCacheTTL, ServeStaleOnDirectoryFailure
    show cache [PREFIX], flush cache [NAME]
    show info:  route_cache_entries, route_cache_hits_total,
                route_cache_misses_total, route_cache_negative_hits_total,
                route_cache_coalesced_total, route_cache_evictions_total,
                route_cache_stale_retries_total, credential_cache_hits_total
    event=login cache=miss|hit|negative|credential|coalesced, stale_retry=1

Gateways (each in front of the same slapd and Dovecots, each test on
accounts no other test uses, so the tests do not depend on their order):
gw (route and negative cache, no credential cache), gw_cred (credential
cache on), gw_short (TTLs of 2 s and 1 s, a failed-logon delay), and
gateways of their own for the size bound and for a frozen slapd.

    /usr/bin/python3 -m pytest -q tests/integration/test_route_cache.py
"""

import hashlib
import imaplib
import os
import re
import threading
import time
from dataclasses import dataclass

import pytest

from tests.integration import test_directory_ldif as ldif_suite
from tests.integration.test_directory_ldap import (BIND_CONNS, THREADS, LdapForest,
                                                   expect_mailbox, expect_refused, fd_census,
                                                   ldap_gateway, login, stop_ok, unlog,
                                                   wait_login_ok)
from tests.ldap.fixtures import SECTION, Account, setup_a, ssha
from tests.lib.dovecot import Dovecot
from tests.lib.forestgate import Raw, vanish_mid_login
from tests.lib.slapd import Slapd, dn_equal

MINE = []                 # every forestgate started here: its log is checked for passwords
WRONG = "not-the-password-7"


# ------------------------------------------------------------- the forest
def pw(sam):
    return f"Cache-{sam}-Pw1"


def new_pw(sam):
    return f"Changed-{sam}-Pw2"


# sAMAccountName, database, more Account fields. All in UCLABOR, OU=Cache,
# CN = sAMAccountName (no spaces: DNs stay one token in show cache).
USERS = [
    ("cwarm", "DB01", {}), ("cspell", "DB02", {}), ("cpar1", "DB01", {}),
    ("cpar2", "DB01", {}), ("cwrongpw", "DB01", {}), ("cflush1", "DB01", {}),
    ("cflush2", "DB02", {}), ("cmove", "DB01", {}), ("cdis2", "DB01", {}),
    ("cnoimap", "DB01", {"protocol_settings": [f"IMAP4{SECTION}0{SECTION}1{SECTION}4"
                                               + SECTION * 6]}),
    ("cev1", "DB01", {}), ("cev2", "DB02", {}), ("cev3", "DB01", {}), ("cev4", "DB02", {}),
    ("cev5", "DB01", {}),
    ("ccred", "DB01", {}), ("ccred2", "DB02", {}), ("cpw1", "DB01", {}), ("cpw2", "DB02", {}),
    ("cttl", "DB01", {}), ("cchg", "DB02", {}), ("cdis", "DB02", {}), ("cpw3", "DB01", {}),
    ("cfz1", "DB01", {}), ("cfz2", "DB02", {}), ("cmove2", "DB03", {}),
    ("cst1", "DB01", {}), ("cst2", "DB02", {}),
    ("cpar3", "DB01", {}), ("cpar4", "DB02", {}), ("cpar5", "DB01", {}), ("cpar6", "DB02", {}),
    ("cref3", "DB01", {}), ("cref4", "DB02", {}), ("cref6", "DB02", {}), ("cplain", "DB01", {}),
    ("cnoimap2", "DB02", {"protocol_settings": [f"IMAP4{SECTION}0{SECTION}1{SECTION}4"
                                                + SECTION * 6]}),
]


def cache_forest():
    """Setup A, plus the accounts of USERS, each with a mailbox, and DB03
    (served by a Dovecot of its own on 127.0.0.3, see db03)."""
    f = setup_a()
    f.add_database("DB03", "MBX3")
    root = f.domains["UCLABOR"]
    for i, (sam, db, kw) in enumerate(USERS):
        f.add(Account(key=sam, domain=root, sam=sam, cn=sam, password=pw(sam), rid=1200 + i,
                      container="OU=Cache", upn=f"{sam}@uclabor.de", alias=sam, database=db,
                      proxy=[f"SMTP:{sam}@uclabor.de"], mail=f"{sam}@uclabor.de",
                      type_details=1, **kw))
    return f


def dom(sam):
    return f"UCLABOR\\{sam}"


# ---------------------------------------------------------------- helpers
class Cost:
    """What happened between its creation and take(): the LDAP requests
    slapd saw (the harness's own ldapmodify connections left out) and the
    change of every show info counter."""

    def __init__(self, fg, dc):
        self.fg, self.dc = fg, dc
        self.mark = dc.log_mark()
        self.before = fg.stats()

    def take(self):
        reqs = self.dc.requests_since(self.mark)
        self.after = self.fg.stats()
        self.searches = [v for _, kind, v in reqs if kind == "SRCH"]
        self.binds = [v for _, kind, v in reqs if kind == "BIND"]
        svc = self.fg.sections["forest:uclabor"]["BindDn"]
        self.user_binds = [dn for dn in self.binds if not dn_equal(dn, svc)]
        return self

    def d(self, key):
        """How much show info's key grew."""
        assert key in self.after, f"show info has no {key}: {sorted(self.after)}"
        return self.after[key] - self.before.get(key, 0)

    def binds_as(self, dn):
        return sum(1 for b in self.binds if dn_equal(b, dn))

    def __repr__(self):
        deltas = {k: self.d(k) for k in self.after
                  if isinstance(self.after[k], int) and self.d(k) and
                  ("cache" in k or "ldap" in k or "directory" in k)}
        return f"Cost(searches={self.searches}, binds={self.binds}, {deltas})"


@dataclass
class Attempt:
    ok: bool
    err: str
    body: str
    ev: dict
    cost: Cost


def attempt(fg, dc, proto, name, password):
    """One logon (imaplib or poplib; on success message 1 is read):
    what the client saw, the audit line, and its cost."""
    cost = Cost(fg, dc)
    ok, err, body, ev = login(fg, proto, name, password)
    return Attempt(ok, err, body, ev, cost.take())


def ok_at(a, alias, db, cache):
    """a logged on to alias's mailbox on db's Dovecot, with that cache= ."""
    expect_mailbox(a.ok, a.err, a.body, a.ev, alias, db)
    assert a.ev.get("cache") == cache, (a.ev, a.cost)


def no_ldap(a):
    assert a.cost.searches == [] and a.cost.binds == [], a.cost
    assert a.ev.get("ldap_ops", "0") == "0", a.ev
    assert a.cost.d("ldap_requests_total") == 0, a.cost


def one_bind(a, dn):
    """Exactly one LDAP request, a bind as dn: at slapd, on the audit line
    and in show info. (A connection that a directory thread opens binds as
    the service account first: slapd sees it, but it is no request of the
    logon, and ldap_requests_total does not count it.)"""
    assert a.cost.searches == [], a.cost
    assert len(a.cost.user_binds) == 1 and dn_equal(a.cost.user_binds[0], dn), a.cost
    assert a.ev.get("ldap_ops") == "1", a.ev
    assert a.cost.d("ldap_requests_total") == 1, a.cost


def cache_lines(fg, prefix=None):
    """show cache [PREFIX], one dict per entry (values unquoted)."""
    text = fg.stats("show cache" + (f" {prefix}" if prefix else ""))["text"]
    out = []
    for line in text.splitlines():
        if "name=" not in line or line.startswith("#"):
            continue
        ent = {}
        for m in re.finditer(r'(\w+)=("((?:[^"\\]|\\.)*)"|\S*)', line):
            ent.setdefault(m.group(1), unlog(m.group(3)) if m.group(3) is not None
                           else m.group(2))
        out.append(ent)
    return out


def flush(fg, name=None):
    """flush cache [NAME]: the number of entries it says it flushed."""
    text = fg.stats("flush cache" + (f" {name}" if name else ""))["text"].strip()
    m = re.fullmatch(r"flushed (\d+) (entry|entries)", text)
    assert m, text
    n = int(m.group(1))
    assert m.group(2) == ("entry" if n == 1 else "entries"), text
    return n


# --------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def forest():
    return cache_forest()


@pytest.fixture(scope="module")
def mbx(workroot, forest):
    """DB01's and DB02's Dovecots. cmove has a mailbox on both, each with a
    message that names its server, so a logon shows where it landed."""
    servers, ip, pp = ldif_suite.mailbox_servers(workroot, "cache-mbx", forest)
    servers["DB02"].add_user("cmove", "unused-pw")
    servers["DB02"].deliver("cmove", b"Subject: cmove\r\n\r\nthe mailbox of cmove on DB02\r\n")
    yield servers, ip, pp
    for s in servers.values():
        s.stop()


@pytest.fixture(scope="module")
def db03(workroot, mbx):
    """DB03's only server: a Dovecot on 127.0.0.3 (the others' ports) with
    cmove2's mailbox; test_route_with_every_host_down_heals stops it."""
    _, ip, pp = mbx
    d = Dovecot(os.path.join(workroot, "cache-mbx-DB03"), {"cmove2": "unused-pw"},
                master_users={ldif_suite.MASTER: ldif_suite.MASTER_PW}, imap_port=ip,
                pop3_port=pp, listen_host="127.0.0.3")
    d.start()
    d.deliver("cmove2", b"Subject: cmove2\r\n\r\nthe mailbox of cmove2 on DB03\r\n")
    yield d
    d.stop()


@pytest.fixture(scope="module")
def dc(workroot, forest):
    d = Slapd.for_forest(os.path.join(workroot, "cache-ldap"), forest).start()
    yield d
    d.stop()


def cache_gateway(workroot, name, forest, dc, mbx, **directory):
    """ldap_gateway, with the route cache at its default TTL unless the
    [directory] settings given say otherwise (ldap_gateway turns it off),
    and DB03 on 127.0.0.3."""
    _, ip, pp = mbx
    fg = ldap_gateway(workroot, name, [LdapForest("uclabor", "Organization", forest, [dc.uri])],
                      ip, pp, directory={"RouteCacheTTL": "00:05:00", **directory}, start=False)
    fg.sections["databases"]["DB03"] = "127.0.0.3"
    MINE.append(fg)
    return fg.start()


@pytest.fixture(scope="module")
def gw(workroot, forest, dc, mbx):
    """Route and negative cache on, credential cache off."""
    fg = cache_gateway(workroot, "fg-cache", forest, dc, mbx, RequestTimeout="00:00:06",
                       RouteCacheTTL="00:05:00", NegativeCacheTTL="00:05:00",
                       CredentialCacheTTL="00:00:00")
    yield fg, dc
    stop_ok(fg)


@pytest.fixture(scope="module")
def gw_cred(workroot, forest, dc, mbx):
    """The credential cache on."""
    fg = cache_gateway(workroot, "fg-cache-cred", forest, dc, mbx,
                       RouteCacheTTL="00:05:00", CredentialCacheTTL="00:05:00")
    yield fg, dc
    stop_ok(fg)


SHORT_DELAY = 0.3


@pytest.fixture(scope="module")
def gw_short(workroot, forest, dc, mbx):
    """Short TTLs (routes and negative entries 2 s, credentials 1 s) and a
    failed-logon delay."""
    fg = cache_gateway(workroot, "fg-cache-short", forest, dc, mbx,
                       RouteCacheTTL="00:00:02", NegativeCacheTTL="00:00:02",
                       CredentialCacheTTL="00:00:01",
                       FailedLogonDelayMs=str(int(SHORT_DELAY * 1000)))
    yield fg, dc
    stop_ok(fg)


# ------------------------------------------------------------ warm logons
def test_warm_logon_is_one_bind_and_no_search(gw, forest):
    fg, dc = gw
    name, dn = dom("cwarm"), forest.accounts["cwarm"].dn
    cold = attempt(fg, dc, "imap", name, pw("cwarm"))
    ok_at(cold, "cwarm", "DB01", "miss")
    assert cold.cost.searches, cold.cost
    assert cold.cost.binds_as(dn) == 1, cold.cost
    assert cold.cost.d("route_cache_misses_total") == 1, cold.cost
    assert cold.cost.d("route_cache_hits_total") == 0, cold.cost
    assert cold.cost.d("route_cache_entries") == 1, cold.cost
    for proto in ("imap", "pop3", "imap"):
        warm = attempt(fg, dc, proto, name, pw("cwarm"))
        ok_at(warm, "cwarm", "DB01", "hit")
        one_bind(warm, dn)
        assert warm.cost.d("route_cache_hits_total") == 1, warm.cost
        assert warm.cost.d("route_cache_misses_total") == 0, warm.cost
        assert warm.cost.d("credential_cache_hits_total") == 0, warm.cost
        assert warm.cost.d("route_cache_entries") == 0, warm.cost
    # a wrong password on the warm route is a real bind, refused
    bad = attempt(fg, dc, "imap", name, WRONG)
    expect_refused(bad.ok, bad.err, bad.ev, "imap")
    assert bad.ev["reason"] == "wrong password", bad.ev
    one_bind(bad, dn)
    ent = cache_lines(fg, "uclabor\\cwarm")
    assert len(ent) == 1 and ent[0]["name"] == "uclabor\\cwarm", ent
    assert ent[0]["kind"] == "route" and ent[0]["form"] == "domain\\user", ent
    assert ent[0]["database"] == "DB01" and ent[0]["mailbox"] == "cwarm", ent
    assert dn_equal(ent[0]["account"], dn) and ent[0]["forest"] == "uclabor", ent
    assert 0 < int(ent[0]["ttl"]) <= 300, ent


@pytest.mark.parametrize("env,sam,db", [("gw", "cnoimap", "DB01"),
                                         ("gw_cred", "cnoimap2", "DB02")])
def test_warm_route_still_enforces_protocol_settings(request, env, sam, db):
    """IMAP is off for the mailbox: POP3 caches its route (and, with the
    credential cache, its password); IMAP on that warm route, or with that
    cached password, is refused all the same, without a search."""
    fg, dc = request.getfixturevalue(env)
    warm = "credential" if env == "gw_cred" else "hit"
    name = dom(sam)
    pop = attempt(fg, dc, "pop3", name, pw(sam))
    ok_at(pop, sam, db, "miss")
    for _ in range(2):
        imap = attempt(fg, dc, "imap", name, pw(sam))
        expect_refused(imap.ok, imap.err, imap.ev, "imap", "AUTHORIZATIONFAILED")
        assert imap.ev["result"] == "denied" and "protocolSettings" in imap.ev["reason"], \
            imap.ev
        assert imap.ev.get("cache") in ("hit", "credential"), imap.ev
        assert imap.cost.searches == [], imap.cost
        assert imap.cost.d("route_cache_hits_total") + \
            imap.cost.d("credential_cache_hits_total") >= 1, imap.cost
    ok_at(attempt(fg, dc, "pop3", name, pw(sam)), sam, db, warm)


def test_disabled_account_refused_at_once_on_a_warm_route(gw, forest):
    """Without the credential cache a warm logon still binds: an account
    disabled in the directory is refused at the next logon, TTL or not."""
    fg, dc = gw
    name, dn = dom("cdis2"), forest.accounts["cdis2"].dn
    ok_at(attempt(fg, dc, "imap", name, pw("cdis2")), "cdis2", "DB01", "miss")
    dc.set_enabled(dn, False)
    try:
        a = attempt(fg, dc, "imap", name, pw("cdis2"))
        expect_refused(a.ok, a.err, a.ev, "imap")
        one_bind(a, dn)
    finally:
        dc.set_enabled(dn, True)
    a = attempt(fg, dc, "imap", name, pw("cdis2"))
    assert a.ok and "the mailbox of cdis2 on DB01" in a.body, (a.err, a.ev)


# --------------------------------------------------------- credential cache
def test_credential_cache_warm_logon_makes_no_ldap_operation(gw_cred, forest):
    fg, dc = gw_cred
    name, dn = dom("ccred"), forest.accounts["ccred"].dn
    cold = attempt(fg, dc, "imap", name, pw("ccred"))
    ok_at(cold, "ccred", "DB01", "miss")
    assert cold.cost.searches and cold.cost.binds_as(dn) == 1, cold.cost
    for proto in ("imap", "pop3"):
        warm = attempt(fg, dc, proto, name, pw("ccred"))
        ok_at(warm, "ccred", "DB01", "credential")
        no_ldap(warm)
        assert warm.cost.d("credential_cache_hits_total") == 1, warm.cost
    ent = cache_lines(fg, "uclabor\\ccred")
    assert len(ent) == 1 and ent[0]["credential"] == "yes", ent


def test_credential_cache_never_accepts_a_wrong_password(gw_cred, forest):
    fg, dc = gw_cred
    name, dn, right = dom("ccred2"), forest.accounts["ccred2"].dn, pw("ccred2")
    ok_at(attempt(fg, dc, "imap", name, right), "ccred2", "DB02", "miss")
    ok_at(attempt(fg, dc, "imap", name, right), "ccred2", "DB02", "credential")
    for wrong in [WRONG, right[:-1], right + "x", right.upper(), right.lower(), " " + right]:
        for proto in ("imap", "pop3"):
            a = attempt(fg, dc, proto, name, wrong)
            expect_refused(a.ok, a.err, a.ev, proto)
            assert a.ev["reason"] == "wrong password", (wrong, a.ev)
            assert a.cost.binds_as(dn) == 1, (wrong, a.cost)
            assert a.cost.d("credential_cache_hits_total") == 0, a.cost
    # a failed bind dropped the credential part: the right password binds
    # again (on the warm route: no search), then the credential is back
    a = attempt(fg, dc, "imap", name, right)
    ok_at(a, "ccred2", "DB02", "hit")
    one_bind(a, dn)
    no_ldap(attempt(fg, dc, "imap", name, right))


def test_changed_password_works_at_once_and_the_old_one_stops(gw_cred, forest):
    fg, dc = gw_cred
    name, dn = dom("cpw1"), forest.accounts["cpw1"].dn
    old, new = pw("cpw1"), new_pw("cpw1")
    ok_at(attempt(fg, dc, "imap", name, old), "cpw1", "DB01", "miss")
    ok_at(attempt(fg, dc, "imap", name, old), "cpw1", "DB01", "credential")
    dc.replace(dn, "userPassword", ssha(new))
    a = attempt(fg, dc, "imap", name, new)
    ok_at(a, "cpw1", "DB01", "hit")
    one_bind(a, dn)
    # the new password's hash replaced the old one's
    a = attempt(fg, dc, "imap", name, old)
    expect_refused(a.ok, a.err, a.ev, "imap")
    assert a.ev["reason"] == "wrong password", a.ev
    assert a.cost.binds_as(dn) == 1, a.cost
    a = attempt(fg, dc, "pop3", name, new)
    assert a.ok and "the mailbox of cpw1 on DB01" in a.body, (a.err, a.ev)
    a = attempt(fg, dc, "imap", name, new)
    ok_at(a, "cpw1", "DB01", "credential")
    no_ldap(a)


def test_flush_name_drops_the_old_password(gw_cred, forest):
    """Until CredentialCacheTTL the last password that bound is accepted
    without the directory, even after a change there; flush cache NAME
    (any spelling) ends that at once."""
    fg, dc = gw_cred
    name, dn = dom("cpw2"), forest.accounts["cpw2"].dn
    old, new = pw("cpw2"), new_pw("cpw2")
    ok_at(attempt(fg, dc, "imap", name, old), "cpw2", "DB02", "miss")
    dc.replace(dn, "userPassword", ssha(new))
    a = attempt(fg, dc, "imap", name, old)
    ok_at(a, "cpw2", "DB02", "credential")
    no_ldap(a)
    assert flush(fg, "uclabor/CPW2") == 1
    assert cache_lines(fg, "uclabor\\cpw2") == []
    a = attempt(fg, dc, "imap", name, old)
    expect_refused(a.ok, a.err, a.ev, "imap")
    assert a.ev["reason"] == "wrong password" and a.cost.binds_as(dn) == 1, (a.ev, a.cost)
    a = attempt(fg, dc, "imap", name, new)
    assert a.ok and "the mailbox of cpw2 on DB02" in a.body, (a.err, a.ev)


def test_credential_cache_with_authenticate_plain(gw_cred, forest):
    """AUTHENTICATE PLAIN takes the same paths as LOGIN: a credential hit
    for the right password, a real bind (refused) for a wrong one."""
    fg, dc = gw_cred
    name, dn, right = dom("cplain"), forest.accounts["cplain"].dn, pw("cplain")

    def plain(password):
        cost = Cost(fg, dc)
        m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=15)
        try:
            m.authenticate("PLAIN", lambda _: f"\0{name}\0{password}".encode())
            ok, err = True, ""
        except imaplib.IMAP4.error as e:
            ok, err = False, str(e)
        finally:
            m.logout()
        return ok, err, {k: unlog(v) for k, v in fg.events("login")[-1].items()}, cost.take()

    ok_at(attempt(fg, dc, "imap", name, right), "cplain", "DB01", "miss")
    ok, err, ev, cost = plain(right)
    assert ok and ev.get("cache") == "credential", (err, ev)
    assert cost.searches == [] and cost.binds == [], cost
    ok, err, ev, cost = plain(WRONG)
    assert not ok and "[AUTHENTICATIONFAILED]" in err and ev["reason"] == "wrong password", ev
    assert cost.binds_as(dn) == 1, cost


def test_credential_ttl_ends_the_old_password(gw_short, forest):
    """CredentialCacheTTL = 1 s: after it, the old password binds (on the
    route, still warm for RouteCacheTTL = 2 s) and is refused."""
    fg, dc = gw_short
    name, dn = dom("cpw3"), forest.accounts["cpw3"].dn
    old, new = pw("cpw3"), new_pw("cpw3")
    t0 = time.monotonic()
    ok_at(attempt(fg, dc, "imap", name, old), "cpw3", "DB01", "miss")
    dc.replace(dn, "userPassword", ssha(new))
    time.sleep(max(0.0, t0 + 1.3 - time.monotonic()))
    a = attempt(fg, dc, "imap", name, old)
    expect_refused(a.ok, a.err, a.ev, "imap")
    assert a.ev["reason"] == "wrong password" and a.cost.binds_as(dn) == 1, (a.ev, a.cost)
    assert a.cost.d("credential_cache_hits_total") == 0, a.cost
    a = attempt(fg, dc, "imap", name, new)
    assert a.ok and "the mailbox of cpw3 on DB01" in a.body, (a.err, a.ev)


# --------------------------------------------------------------- coalescing
def _raw_login(port, name, password, sent, results, i):
    """A client that sends LOGIN, says so (sent), and waits for the answer."""
    try:
        with Raw(port, timeout=30) as r:
            r.line()
            r.send(f"a LOGIN {name} {password}\r\n".encode())
            sent.release()
            line = r.until(b"a ")[-1]
            results[i] = line.decode(errors="replace").strip()
            if line.startswith(b"a OK"):
                r.send(b"b LOGOUT\r\n")
                r.until(b"b ")
    except Exception as e:       # noqa: BLE001 -- reported with the others
        results[i] = f"client error: {e!r}"
        sent.release()


def test_parallel_cold_logons_make_one_resolution(gw, forest):
    """50 logons of one cold name, all in flight at once (slapd frozen while
    they arrive), and 10 more whose clients vanish while they wait: one
    resolution's searches at slapd, one bind each, all 50 succeed, and
    nothing is left behind."""
    fg, dc = gw
    # What one resolution of a DOMAIN\user name costs: cpar1, cold.
    ref = attempt(fg, dc, "imap", dom("cpar1"), pw("cpar1"))
    ok_at(ref, "cpar1", "DB01", "miss")
    expected = [f.replace("cpar1", "cpar2") for f in ref.cost.searches]
    assert any("cpar2" in f for f in expected), ref.cost
    fg.wait_idle()
    base, base_ldap = fd_census(fg, {dc.port})

    name, dn, n = dom("cpar2"), forest.accounts["cpar2"].dn, 50
    results = [None] * n
    sent = threading.Semaphore(0)
    threads = [threading.Thread(target=_raw_login, args=(fg.imap_port, name, pw("cpar2"),
                                                         sent, results, i), daemon=True)
               for i in range(n)]
    n_events = len(fg.events("login"))
    cost = Cost(fg, dc)
    dc.pause()
    try:
        threads[0].start()                 # the first: its resolution is the one
        assert sent.acquire(timeout=5)
        time.sleep(0.3)
        for i in range(10):                # gone while they wait for it
            vanish_mid_login(fg.imap_port, f"v LOGIN {name} {pw('cpar2')}\r\n".encode(),
                             reset=i % 2 == 0)
        for t in threads[1:]:
            t.start()
        for _ in threads[1:]:
            assert sent.acquire(timeout=10), results
        time.sleep(0.3)
        in_flight = fg.stats()["directory_in_flight"]
    finally:
        dc.resume()
    for t in threads:
        t.join(30)
    cost.take()
    failed = [r for r in results if not (r or "").startswith("a OK")]
    assert failed == [], (len(failed), failed[:5])
    print(f"coalescing: {in_flight} requests in flight while slapd was frozen; {cost}")

    # slapd: the searches of exactly one resolution, one bind per logon
    # (10 more at most: the vanished clients')
    assert cost.searches == expected, cost
    assert n <= cost.binds_as(dn) <= n + 10, cost
    assert len(cost.user_binds) == cost.binds_as(dn), cost
    # forestgate counted the same
    assert len(cost.searches) + len(cost.user_binds) <= cost.d("ldap_requests_total") \
        <= len(cost.searches) + len(cost.binds), cost
    # (whether a waiter's look-up also counts as a miss is the code's choice)
    assert cost.d("route_cache_misses_total") >= 1, cost
    assert cost.d("route_cache_coalesced_total") >= n - 1, cost
    assert cost.d("directory_requests_total") >= n, cost
    evs = [{k: unlog(v) for k, v in e.items()} for e in fg.events("login")[n_events:]]
    oks = [e for e in evs if e.get("result") == "ok" and e.get("user") == name]
    assert len(oks) == n, (len(oks), evs[:3])
    caches = sorted(e.get("cache") for e in oks)
    assert caches == ["coalesced"] * (n - 1) + ["miss"], caches
    # nothing left behind
    st = fg.wait_idle()
    assert st["connections"] == 0 and st["backend_connections"] == 0, st
    assert st["directory_in_flight"] == 0, st
    rest, ldap = fd_census(fg, {dc.port})
    assert rest == base, (rest, base)
    assert ldap <= max(base_ldap, THREADS * (1 + BIND_CONNS)), (ldap, base_ldap)
    one_bind(attempt(fg, dc, "imap", name, pw("cpar2")), dn)


def burst(fg, dc, clients):
    """IMAP logons in flight at once: slapd is frozen while they arrive.
    clients: (name, password, gone); the first is sent alone, 0.3 s before
    the others, so its resolution is the one they wait for; a gone client
    sends LOGIN and closes at once. Returns (the tagged reply of each, or
    "gone"; the Cost)."""
    results = [None] * len(clients)
    sent = threading.Semaphore(0)
    threads = []
    cost = Cost(fg, dc)
    dc.pause()
    try:
        for i, (name, password, gone) in enumerate(clients):
            if gone:
                vanish_mid_login(fg.imap_port, f"v LOGIN {name} {password}\r\n".encode(),
                                 reset=i % 2 == 0)
                results[i] = "gone"
            else:
                t = threading.Thread(target=_raw_login, daemon=True,
                                     args=(fg.imap_port, name, password, sent, results, i))
                t.start()
                threads.append(t)
            if i == 0:
                if not gone:
                    assert sent.acquire(timeout=5)
                time.sleep(0.3)
        for _ in range(len(threads) - (0 if clients[0][2] else 1)):
            assert sent.acquire(timeout=10), results
        time.sleep(0.3)
    finally:
        dc.resume()
    for t in threads:
        t.join(30)
    return results, cost.take()


def one_resolution(fg, dc, ref, sam):
    """The searches of one cold resolution of DOMAIN\\sam: those of ref's,
    measured, with the name changed."""
    a = attempt(fg, dc, "imap", dom(ref), pw(ref))
    assert a.ok and a.ev.get("cache") == "miss" and a.cost.searches, (a.ev, a.cost)
    return [f.replace(ref, sam) for f in a.cost.searches]


@pytest.mark.parametrize("env,sam,ref", [("gw", "cpar3", "cref3"), ("gw_cred", "cpar4", "cref4")])
def test_coalesced_waiters_check_their_own_password(request, forest, env, sam, ref):
    """Waiting for a leader with the right password: 10 logons with the
    right password and 10 with wrong ones. Each waiter's own password is
    checked: the wrong ones are refused, the right ones log on; one
    resolution in all."""
    fg, dc = request.getfixturevalue(env)
    expected = one_resolution(fg, dc, ref, sam)
    name, right, dn = dom(sam), pw(sam), forest.accounts[sam].dn
    wrongs = [WRONG, right + "x", right[:-1], right.upper(), right.lower()] * 2
    clients = [(name, right, False)]
    for w in wrongs:
        clients += [(name, w, False), (name, right, False)]
    results, cost = burst(fg, dc, clients)
    print(f"{env}: {cost}")
    for (_, password, _), r in zip(clients, results):
        if password == right:
            assert r.startswith("a OK"), (password, r)
        else:
            assert r.startswith("a NO [AUTHENTICATIONFAILED]"), (password, r)
    assert cost.searches == expected, cost
    binds = cost.binds_as(dn)
    if env == "gw":
        assert binds == len(clients), cost
    else:       # the right ones may match the leader's credential
        assert len(wrongs) + 1 <= binds <= len(clients), cost


def test_coalesced_waiters_of_a_failed_leader(gw, forest):
    """The leader's password is wrong: it is refused, and the 10 right
    passwords that waited for its resolution still log on."""
    fg, dc = gw
    name, right = dom("cpar5"), pw("cpar5")
    clients = [(name, WRONG, False)] + [(name, right, False)] * 10
    results, cost = burst(fg, dc, clients)
    print(cost)
    assert results[0].startswith("a NO [AUTHENTICATIONFAILED]"), results[0]
    assert all(r.startswith("a OK") for r in results[1:]), results
    st = fg.wait_idle()
    assert st["connections"] == 0 and st["directory_in_flight"] == 0, st


def test_coalesced_waiters_of_a_vanished_leader(gw, forest):
    """The leader's client is gone before slapd answers: the 10 logons that
    waited for its resolution still log on, with one resolution."""
    fg, dc = gw
    expected = one_resolution(fg, dc, "cref6", "cpar6")
    name, right = dom("cpar6"), pw("cpar6")
    clients = [(name, right, True)] + [(name, right, False)] * 10
    results, cost = burst(fg, dc, clients)
    print(cost)
    assert all(r.startswith("a OK") for r in results[1:]), results
    assert cost.searches == expected, cost
    st = fg.wait_idle()
    assert st["connections"] == 0 and st["directory_in_flight"] == 0, st


# --------------------------------------------------------- negative entries
def test_negative_entry_stops_the_searches(gw, forest):
    """A name that found no account: the second attempt costs no LDAP
    operation at all, and is answered exactly as a wrong password."""
    fg, dc = gw
    wrong_imap = attempt(fg, dc, "imap", dom("cwrongpw"), WRONG)
    wrong_pop = attempt(fg, dc, "pop3", dom("cwrongpw"), WRONG)
    assert not wrong_imap.ok and not wrong_pop.ok
    for name in ["nosuchcache1", "NOSUCHDOM\\cwarm", "nosuch.cache@uclabor.de"]:
        first = attempt(fg, dc, "imap", name, WRONG)
        assert not first.ok and first.err == wrong_imap.err, (first.err, wrong_imap.err)
        assert first.ev.get("cache") == "miss", first.ev
        assert first.ev["reason"] == f"User {name} wasn't found in Active Directory.", first.ev
        if not name.startswith("NOSUCHDOM"):
            assert first.cost.searches, first.cost
        assert first.cost.binds, first.cost      # the bind as nobody: the same cost
        for proto, ref in (("imap", wrong_imap), ("pop3", wrong_pop), ("imap", wrong_imap)):
            a = attempt(fg, dc, proto, name, pw("cwarm"))
            assert not a.ok and a.err == ref.err, (proto, a.err, ref.err)
            assert a.ev.get("cache") == "negative" and a.ev["result"] == "failed", a.ev
            assert a.ev["reason"] == first.ev["reason"], a.ev
            no_ldap(a)
            assert a.cost.d("route_cache_negative_hits_total") == 1, a.cost
        ent = cache_lines(fg, name.lower().replace("/", "\\"))
        assert [e["kind"] for e in ent] == ["negative"], ent
    # flush cache NAME drops a negative entry too (any spelling)
    assert flush(fg, "NOSUCHCACHE1") == 1
    a = attempt(fg, dc, "imap", "nosuchcache1", WRONG)
    assert not a.ok and a.ev.get("cache") == "miss" and a.cost.searches, (a.ev, a.cost)
    # A wrong password is no reason for a negative entry: the account exists.
    assert wrong_imap.ev.get("cache") != "negative"
    again = attempt(fg, dc, "imap", dom("cwrongpw"), WRONG)
    assert not again.ok and again.ev.get("cache") != "negative", again.ev
    a = attempt(fg, dc, "imap", dom("cwrongpw"), pw("cwrongpw"))
    assert a.ok and "the mailbox of cwrongpw on DB01" in a.body, (a.err, a.ev)


# ------------------------------------------------------------------- TTLs
def test_ttl_expiry(gw_short, forest):
    """RouteCacheTTL = NegativeCacheTTL = 2 s: once they are over, the name
    is searched again. A negative hit waits FailedLogonDelayMs like any
    failed logon."""
    fg, dc = gw_short
    name, unknown = dom("cttl"), "nosuchttl"
    ok_at(attempt(fg, dc, "imap", name, pw("cttl")), "cttl", "DB01", "miss")
    first = attempt(fg, dc, "imap", unknown, WRONG)
    assert not first.ok and first.cost.searches, first.cost
    t_neg = time.monotonic()          # the negative entry was made before this
    warm = attempt(fg, dc, "imap", name, pw("cttl"))
    assert warm.ok and warm.ev.get("cache") in ("hit", "credential"), warm.ev
    assert warm.cost.searches == [], warm.cost
    t1 = time.monotonic()
    neg = attempt(fg, dc, "imap", unknown, WRONG)
    took = time.monotonic() - t1
    assert neg.ev.get("cache") == "negative", neg.ev
    no_ldap(neg)
    assert SHORT_DELAY <= took < SHORT_DELAY + 0.5, took
    ents = {e["name"]: e for e in cache_lines(fg)}
    assert 0 <= int(ents["uclabor\\cttl"]["ttl"]) <= 2, ents
    assert 0 <= int(ents["nosuchttl"]["ttl"]) <= 2, ents
    time.sleep(max(0.0, t_neg + 2.3 - time.monotonic()))
    a = attempt(fg, dc, "imap", name, pw("cttl"))
    ok_at(a, "cttl", "DB01", "miss")
    assert a.cost.searches and a.cost.d("route_cache_misses_total") == 1, a.cost
    a = attempt(fg, dc, "imap", unknown, WRONG)
    assert not a.ok and a.ev.get("cache") == "miss" and a.cost.searches, (a.ev, a.cost)


def test_account_change_seen_after_the_ttl(gw_short, forest):
    """IMAP switched off (protocolSettings) and an account disabled in the
    directory: after RouteCacheTTL the next logon sees both."""
    fg, dc = gw_short
    chg, dis = forest.accounts["cchg"], forest.accounts["cdis"]
    t0 = time.monotonic()
    ok_at(attempt(fg, dc, "imap", "cchg", pw("cchg")), "cchg", "DB02", "miss")
    ok_at(attempt(fg, dc, "imap", "cdis", pw("cdis")), "cdis", "DB02", "miss")
    dc.replace(chg.dn, "protocolSettings", f"IMAP4{SECTION}0{SECTION}1{SECTION}4" + SECTION * 6)
    dc.set_enabled(dis.dn, False)
    time.sleep(max(0.0, t0 + 2.4 - time.monotonic()))
    a = attempt(fg, dc, "imap", "cchg", pw("cchg"))
    expect_refused(a.ok, a.err, a.ev, "imap", "AUTHORIZATIONFAILED")
    assert "protocolSettings" in a.ev["reason"] and a.cost.searches, (a.ev, a.cost)
    a = attempt(fg, dc, "pop3", "cchg", pw("cchg"))
    assert a.ok and "the mailbox of cchg on DB02" in a.body, (a.err, a.ev)
    a = attempt(fg, dc, "imap", "cdis", pw("cdis"))
    expect_refused(a.ok, a.err, a.ev, "imap")
    assert a.ev["reason"] == "User cdis wasn't found in Active Directory.", a.ev


# ------------------------------------------------------------------ flush
def test_flush_cache(gw, forest):
    fg, dc = gw
    n1, n2 = dom("cflush1"), dom("cflush2")
    ok_at(attempt(fg, dc, "imap", n1, pw("cflush1")), "cflush1", "DB01", "miss")
    ok_at(attempt(fg, dc, "imap", n2, pw("cflush2")), "cflush2", "DB02", "miss")
    assert flush(fg, "uclabor/CFLUSH1") == 1          # any spelling of the name
    assert flush(fg, "uclabor/CFLUSH1") == 0
    assert flush(fg, "nosuchentry") == 0
    assert cache_lines(fg, "uclabor\\cflush1") == []
    a = attempt(fg, dc, "imap", n1, pw("cflush1"))
    ok_at(a, "cflush1", "DB01", "miss")
    assert a.cost.searches, a.cost
    a = attempt(fg, dc, "imap", n2, pw("cflush2"))
    ok_at(a, "cflush2", "DB02", "hit")
    assert a.cost.searches == [], a.cost
    # everything
    entries = fg.stats()["route_cache_entries"]
    assert entries >= 2 and len(cache_lines(fg)) == entries
    assert flush(fg) == entries
    assert fg.stats()["route_cache_entries"] == 0 and cache_lines(fg) == []
    a = attempt(fg, dc, "imap", n2, pw("cflush2"))
    ok_at(a, "cflush2", "DB02", "miss")
    assert a.cost.searches, a.cost


# --------------------------------------------------------------- eviction
def test_eviction_at_the_size_bound(workroot, forest, dc, mbx):
    fg = cache_gateway(workroot, "fg-cache-small", forest, dc, mbx,
                       RouteCacheMaxEntries="3", CredentialCacheTTL="00:00:00")
    try:
        names = ["cev1", "cev2", "cev3", "cev4", "cev5"]
        for sam in names:
            ok_at(attempt(fg, dc, "imap", dom(sam), pw(sam)), sam,
                  forest.accounts[sam].database, "miss")
        st = fg.stats()
        assert st["route_cache_entries"] <= 3, st
        assert st["route_cache_evictions_total"] >= 2, st
        shown = [e["name"] for e in cache_lines(fg)]
        assert len(shown) == st["route_cache_entries"], shown
        assert "uclabor\\cev1" not in shown and "uclabor\\cev5" in shown, shown
        a = attempt(fg, dc, "imap", dom("cev1"), pw("cev1"))     # the oldest: gone
        ok_at(a, "cev1", "DB01", "miss")
        assert a.cost.searches and a.cost.d("route_cache_evictions_total") >= 1, a.cost
        a = attempt(fg, dc, "imap", dom("cev5"), pw("cev5"))     # the newest: kept
        ok_at(a, "cev5", "DB01", "hit")
        assert a.cost.searches == [], a.cost
        assert fg.stats()["route_cache_entries"] <= 3
    finally:
        stop_ok(fg)


# -------------------------------------------------------------- the key
def test_key_spelling(gw, forest):
    """DOMAIN\\user and domain/USER are one entry; user, DOMAIN\\user and
    the UPN are three."""
    fg, dc = gw
    dn = forest.accounts["cspell"].dn
    ok_at(attempt(fg, dc, "imap", "UCLABOR\\cspell", pw("cspell")), "cspell", "DB02", "miss")
    for typed in ["uclabor/CSPELL", "Uclabor\\CSpell", "UCLABOR/cspell"]:
        a = attempt(fg, dc, "imap", typed, pw("cspell"))
        ok_at(a, "cspell", "DB02", "hit")
        one_bind(a, dn)
    assert [e["name"] for e in cache_lines(fg, "uclabor\\cspell")] == ["uclabor\\cspell"]
    for typed, form in [("cspell", "user"), ("cspell@uclabor.de", "upn")]:
        a = attempt(fg, dc, "imap", typed, pw("cspell"))
        ok_at(a, "cspell", "DB02", "miss")
        assert a.cost.searches, a.cost
        a = attempt(fg, dc, "pop3", typed.upper(), pw("cspell"))
        assert a.ok and a.ev.get("cache") == "hit" and a.cost.searches == [], (a.ev, a.cost)
    ents = {e["name"]: e["form"] for e in cache_lines(fg)
            if e["name"] in ("cspell", "uclabor\\cspell", "cspell@uclabor.de")}
    assert ents == {"cspell": "user", "uclabor\\cspell": "domain\\user",
                    "cspell@uclabor.de": "upn"}, ents


# ------------------------------------------------------------ stale routes
def test_moved_mailbox_heals_on_the_next_logon(gw, forest, mbx):
    """cmove's mailbox moves from DB01 to DB02 (homeMDB at slapd; DB01's
    Dovecot no longer knows it): the next logon's cached route is refused
    by DB01, dropped, resolved again, and the client lands on DB02 with OK."""
    fg, dc = gw
    servers, _, _ = mbx
    acc = forest.accounts["cmove"]
    ok_at(attempt(fg, dc, "imap", dom("cmove"), pw("cmove")), "cmove", "DB01", "miss")
    ok_at(attempt(fg, dc, "imap", dom("cmove"), pw("cmove")), "cmove", "DB01", "hit")
    dc.replace(acc.dn, "homeMDB", forest.databases["DB02"].dn)
    servers["DB01"].remove_user("cmove")
    a = attempt(fg, dc, "imap", dom("cmove"), pw("cmove"))
    ok_at(a, "cmove", "DB02", a.ev.get("cache"))
    assert a.ev.get("stale_retry") == "1", a.ev
    assert a.cost.d("route_cache_stale_retries_total") == 1, a.cost
    assert a.cost.searches, a.cost               # resolved again
    a = attempt(fg, dc, "pop3", dom("cmove"), pw("cmove"))
    assert a.ok and "the mailbox of cmove on DB02" in a.body, (a.err, a.ev)
    assert a.ev.get("cache") == "hit" and "stale_retry" not in a.ev, a.ev
    assert a.cost.searches == [] and a.cost.d("route_cache_stale_retries_total") == 0, a.cost
    ent = cache_lines(fg, "uclabor\\cmove")
    assert len(ent) == 1 and ent[0]["database"] == "DB02", ent
    assert "127.0.0.2" in ent[0]["hosts"], ent


def test_route_with_every_host_down_heals(gw, forest, mbx, db03):
    """cmove2's database DB03 has one server, which goes away while the
    mailbox moves to DB01: the cached route's every host is down, so it is
    dropped and resolved again, and the client lands on DB01 with OK."""
    fg, dc = gw
    servers, _, _ = mbx
    acc = forest.accounts["cmove2"]
    for cache in ("miss", "hit"):
        a = attempt(fg, dc, "imap", dom("cmove2"), pw("cmove2"))
        assert a.ok and "the mailbox of cmove2 on DB03" in a.body, (a.err, a.ev)
        assert a.ev["backend"].startswith("127.0.0.3:") and a.ev.get("cache") == cache, a.ev
    servers["DB01"].add_user("cmove2", "unused-pw")
    servers["DB01"].deliver("cmove2", b"Subject: cmove2\r\n\r\nthe mailbox of cmove2 on DB01\r\n")
    dc.replace(acc.dn, "homeMDB", forest.databases["DB01"].dn)
    db03.stop()
    a = attempt(fg, dc, "pop3", dom("cmove2"), pw("cmove2"))
    assert a.ok and "the mailbox of cmove2 on DB01" in a.body, (a.err, a.ev)
    assert a.ev["backend"].startswith("127.0.0.1:") and a.ev.get("stale_retry") == "1", a.ev
    assert a.cost.d("route_cache_stale_retries_total") == 1, a.cost
    assert a.cost.searches, a.cost
    a = attempt(fg, dc, "imap", dom("cmove2"), pw("cmove2"))
    ok_at(a, "cmove2", "DB01", "hit")
    assert "stale_retry" not in a.ev and a.cost.d("route_cache_stale_retries_total") == 0, a.ev


# --------------------------------------------------------- a frozen slapd
FROZEN_TIMEOUT = 3


@pytest.fixture(scope="module")
def env_frozen(workroot, forest, mbx):
    """A slapd of its own (to be SIGSTOPped), a gateway with the credential
    cache and one without, RequestTimeout = 3 s."""
    dcf = Slapd.for_forest(os.path.join(workroot, "cache-ldap-frozen"), cache_forest()).start()
    timeout = f"00:00:0{FROZEN_TIMEOUT}"
    cred = cache_gateway(workroot, "fg-cache-frozen-cred", forest, dcf, mbx,
                         RequestTimeout=timeout, CredentialCacheTTL="00:05:00")
    plain = cache_gateway(workroot, "fg-cache-frozen-plain", forest, dcf, mbx,
                          RequestTimeout=timeout, CredentialCacheTTL="00:00:00")
    yield cred, plain, dcf
    dcf.resume()
    stop_ok(cred)
    stop_ok(plain)
    dcf.stop()


def frozen_logins(dcf, cases):
    """Logs on every case {key: (fg, proto, name, password)} at once, each on
    a thread of its own, while slapd is stopped: {key: (seconds, ok, err,
    body, ev)}. (ev is the log's last login line: with logons at once, not
    necessarily this one's.)"""
    answers = {}

    def run(key, fg, proto, name, password):
        t0 = time.monotonic()
        ok, err, body, ev = login(fg, proto, name, password)
        answers[key] = (time.monotonic() - t0, ok, err, body, ev)

    dcf.pause()
    try:
        threads = [threading.Thread(target=run, args=(k, *v), daemon=True)
                   for k, v in cases.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(FROZEN_TIMEOUT + 10)
    finally:
        dcf.resume()
    assert set(answers) == set(cases), answers
    return answers


def test_frozen_directory(env_frozen):
    """Every slapd stopped: a cached user with the right password logs on
    through the credential cache; a wrong password, an uncached user, and a
    warm route without the credential cache get [UNAVAILABLE] within
    RequestTimeout."""
    cred, plain, dcf = env_frozen
    n1, n2 = dom("cfz1"), dom("cfz2")
    for fg in (cred, plain):
        ok_at(attempt(fg, dcf, "imap", n1, pw("cfz1")), "cfz1", "DB01", "miss")
    ok_at(attempt(cred, dcf, "imap", n1, pw("cfz1")), "cfz1", "DB01", "credential")
    cases = {"cached": (cred, "imap", n1, pw("cfz1")),
             "cached-pop3": (cred, "pop3", n1, pw("cfz1")),
             "wrong": (cred, "imap", n1, WRONG),
             "uncached": (cred, "imap", n2, pw("cfz2")),
             "no-cred": (plain, "imap", n1, pw("cfz1")),
             "no-cred-pop3": (plain, "pop3", n1, pw("cfz1"))}
    answers = frozen_logins(dcf, cases)
    print({k: (round(v[0], 2), v[1], v[2]) for k, v in answers.items()})
    for key in ("cached", "cached-pop3"):
        took, ok, err, body, ev = answers[key]
        assert ok and "the mailbox of cfz1 on DB01" in body, (key, err, ev)
        assert took < 1.0, (key, took)
    for key in ("wrong", "uncached", "no-cred", "no-cred-pop3"):
        took, ok, err, body, ev = answers[key]
        proto = cases[key][1]
        assert not ok and ("[UNAVAILABLE]" if proto == "imap" else "[SYS/TEMP]") in err, \
            (key, err, ev)
        assert took <= FROZEN_TIMEOUT + 1.5, (key, took)
    cred_lines = [e for e in cred.events("login")
                  if e.get("cache") == "credential" and e.get("result") == "ok"]
    assert len(cred_lines) >= 3, cred_lines
    # slapd, once thawed, never saw a bind of a password it was not asked about
    # thawed: both work again, and nothing is left behind
    for fg in (cred, plain):
        wait_login_ok(fg, n1, pw("cfz1"), timeout=10)
        st = fg.wait_idle()
        assert st["connections"] == 0 and st["directory_in_flight"] == 0, st


def test_serve_stale_on_directory_failure(workroot, forest, mbx, env_frozen):
    """ServeStaleOnDirectoryFailure: with every slapd stopped, a route past
    its TTL serves the logon when the password can still be checked -- here
    (LoginMode = MasterUser) against the route's credential hash, whatever
    its age -- after RequestTimeout. A wrong password, and a name never
    cached, still get [UNAVAILABLE]."""
    _, _, dcf = env_frozen
    fg = cache_gateway(workroot, "fg-cache-stale", forest, dcf, mbx,
                       RequestTimeout=f"00:00:0{FROZEN_TIMEOUT}", RouteCacheTTL="00:00:01",
                       CredentialCacheTTL="00:00:01", ServeStaleOnDirectoryFailure="yes")
    try:
        n1, n2 = dom("cst1"), dom("cst2")
        ok_at(attempt(fg, dcf, "imap", n1, pw("cst1")), "cst1", "DB01", "miss")
        time.sleep(1.5)     # the route and its credential hash are past their TTLs
        answers = frozen_logins(dcf, {"stale": (fg, "imap", n1, pw("cst1")),
                                      "wrong": (fg, "imap", n1, WRONG),
                                      "uncached": (fg, "imap", n2, pw("cst2"))})
        took, ok, err, body, ev = answers["stale"]
        assert ok and "the mailbox of cst1 on DB01" in body, (err, ev)
        assert took <= FROZEN_TIMEOUT + 1.5, took
        stale = [e for e in fg.events("login") if e.get("cache") == "stale"]
        assert len(stale) == 1 and stale[0].get("result") == "ok", fg.events("login")
        for key in ("wrong", "uncached"):
            took, ok, err, body, ev = answers[key]
            assert not ok and "[UNAVAILABLE]" in err, (key, err, ev)
        assert fg.stats()["route_cache_served_stale_total"] == 1
        # thawed: once the directory answers again (its servers' back-off
        # ends), logons resolve again and are not served stale
        deadline = time.monotonic() + 15
        while True:
            wait_login_ok(fg, n1, pw("cst1"), timeout=10)
            if fg.events("login")[-1].get("cache") in ("miss", "hit"):
                break
            assert time.monotonic() < deadline, fg.events("login")[-1]
            time.sleep(0.5)
    finally:
        stop_ok(fg)


# ---------------------------------------------------------------- secrets
# A run of hex digits or of base64 long enough to be a hash or a key: no
# name, DN, host or number that show cache prints has one.
HEX_RUN = re.compile(r"[0-9A-Fa-f]{16,}")
B64_RUN = re.compile(r"[A-Za-z0-9+/]{20,}")


def test_show_cache_shows_no_password_or_hash(gw_cred, gw, forest):
    """Run after the credential tests: entries with credential=yes exist."""
    secrets = set(forest.passwords.values()) | {new_pw(s) for s, _, _ in USERS} | {WRONG}
    digests = set()
    for s in secrets:
        b = s.encode()
        for h in (hashlib.sha1, hashlib.sha256, hashlib.sha512, hashlib.md5):
            digests.add(h(b).hexdigest())
    for fg, _ in (gw_cred, gw):
        if not cache_lines(fg, "uclabor\\ccred") and fg is gw_cred[0]:
            ok_at(attempt(fg, gw_cred[1], "imap", dom("ccred"), pw("ccred")), "ccred", "DB01",
                  "miss")
        text = fg.stats("show cache")["text"]
        assert text.strip(), "show cache is empty"
        if fg is gw_cred[0]:
            assert "credential=yes" in text, text
        leaked = [s for s in secrets | digests if s in text or s.lower() in text.lower()]
        assert leaked == [], leaked
        assert "{SSHA" not in text and "$argon2" not in text and "$6$" not in text
        assert HEX_RUN.findall(text) == [] and B64_RUN.findall(text) == [], text


def test_no_password_in_the_log():
    """Run last: no password of any account (old or new), no wrong password
    typed here, and no master password in any log of these gateways."""
    forest = cache_forest()
    secrets = set(forest.passwords.values()) | {new_pw(s) for s, _, _ in USERS}
    secrets |= {WRONG, ldif_suite.MASTER_PW}
    secrets -= {""}
    assert MINE, "no forestgate ran"
    for fg in MINE:
        text = fg.log_text()
        assert text, fg.log_path
        leaked = [s for s in secrets if s in text]
        assert leaked == [], (fg.log_path, leaked)

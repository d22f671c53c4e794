"""A fleet behind a real HAProxy: Debian's haproxy in mode tcp, roundrobin,
send-proxy-v2 to two forestgate instances whose bindings are PROXY bindings
trusted from haproxy's address, health checks that send a PROXY header of
their own and expect the greeting, and one Redis the instances share
(tests/lib/fleet.py, haproxy.py, redis.py). The backend is the real
Dovecot; clients are imaplib and poplib, from addresses of 127.0.0.0/8
other than haproxy's.

    make_fleet(settings)                       # in front of the shared Dovecot
    make_fleet(make_instance=directory_instances(workroot, directory,
                                                 throttle={...}, extra={...}))
    make_fleet(..., tls=(certdir, names), redis=False, n=3)   # Fleet's keywords

builds and starts one (each test its own): extra forestgate settings by
section for every instance, or instances that resolve logons in slapd (with
its lockout policy) and log on to the mailbox Dovecots with the throttle on,
as test_throttle.py runs them. fleet.redis is the shared store; when the
binary knows ThrottleStore, every instance names it and the same
ThrottleKeyFile (fleet.shared_store).

    /usr/bin/python3 -m pytest -q tests/integration/test_fleet.py
"""

import copy
import imaplib
import os
import poplib
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import PASSWORDS
from tests.lib.fleet import Fleet
from tests.lib.forestgate import Forestgate
from tests.lib.pki import make_ca, make_cert
from tests.lib.redis import Redis, RedisError

USER, PASSWORD = "alice", PASSWORDS["alice"]


# ------------------------------------------------------------ the clients
class SourceIMAP(imaplib.IMAP4):
    """imaplib from a chosen source address in 127.0.0.0/8."""

    def __init__(self, port, source):
        self._source = source
        super().__init__("127.0.0.1", port, timeout=15)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self._source, 0))

    @property
    def client(self):
        """The address forestgate should log: ours, not haproxy's."""
        return "%s:%d" % self.sock.getsockname()[:2]


class SourcePOP3(poplib.POP3):
    def __init__(self, port, source):
        self._source = source
        super().__init__("127.0.0.1", port, timeout=15)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self._source, 0))

    @property
    def client(self):
        return "%s:%d" % self.sock.getsockname()[:2]


def imap_logon(fleet, source="127.0.0.1"):
    """LOGIN, SELECT, LOGOUT through haproxy; the client's address."""
    m = SourceIMAP(fleet.ports["imap"], source)
    assert m.login(USER, PASSWORD)[0] == "OK"
    assert m.select("INBOX")[0] == "OK"
    client = m.client
    m.logout()
    return client


def pop3_logon(fleet, source="127.0.0.1"):
    p = SourcePOP3(fleet.ports["pop3"], source)
    p.user(USER)
    assert p.pass_(PASSWORD).startswith(b"+OK")
    p.stat()
    client = p.client
    p.quit()
    return client


def dovecot_login(dc, sid, proto="imap"):
    return dc.wait_for_log(r"%s-login: Info: Login: user=<\w+>.*session=<%s>"
                           % (proto, sid)).group(0)


def grew(before, after):
    return {k: after[k] - before[k] for k in after}


# --------------------------------------------------------------- fixtures
_counter = [0]


@pytest.fixture
def make_fleet(workroot, dovecot):
    """Builds and starts fleets; stops them after the test, failing on an
    instance that did not exit with 0. make(settings, make_instance, **Fleet's
    keywords): settings by section for every instance in front of the shared
    Dovecot; make_instance(name) instead makes each (directory_instances)."""
    fleets = []

    def make(settings=None, make_instance=None, **kw):
        _counter[0] += 1
        d = os.path.join(workroot, f"fleet{_counter[0]}")

        def in_front_of_dovecot(name):
            return Forestgate(os.path.join(d, name), dovecot.imap_port, dovecot.pop3_port,
                              settings=copy.deepcopy(settings))

        fleet = Fleet(d, make_instance or in_front_of_dovecot, **kw)
        fleets.append(fleet)
        return fleet.start()

    yield make
    problems = []
    for fleet in fleets:
        problems += fleet.stop()
    assert not problems, "\n".join(problems)


@pytest.fixture
def fleet(make_fleet):
    return make_fleet()


@pytest.fixture(scope="module")
def directory(workroot):
    """slapd with a lockout policy (ppolicy, AD's lockoutThreshold) and the
    two mailbox Dovecots, as test_throttle.py has them: (forest, slapd,
    (imap port, pop3 port), the Dovecots by database)."""
    from tests.integration import test_directory_ldif as ldif_suite
    from tests.integration.test_throttle import MAX_FAILURE, throttle_forest
    from tests.lib.slapd import Slapd
    forest = throttle_forest()
    dc = Slapd.for_forest(os.path.join(workroot, "fleet-ldap"), forest,
                          ppolicy=dict(max_failure=MAX_FAILURE, lockout_duration=600))
    dc.start()
    servers, ip, pp = ldif_suite.mailbox_servers(workroot, "fleet-mbx", forest)
    yield forest, dc, (ip, pp), servers
    for s in servers.values():
        s.stop()
    dc.stop()


def directory_instances(workroot, directory, throttle=None, extra=None):
    """make_instance for make_fleet: each instance resolves logons in the
    forest over LDAP and logs on to the mailbox servers as the master user,
    with the throttle on (test_throttle.py's gateways); throttle and extra
    (by section) are merged over that."""
    from tests.integration.test_directory_ldap import LdapForest, ldap_gateway
    forest, dc, (ip, pp), _ = directory
    _counter[0] += 1
    tag = _counter[0]

    def make(name):
        fg = ldap_gateway(workroot, f"fleet{tag}-{name}",
                          [LdapForest("uclabor", "Organization", forest, [dc.uri])], ip, pp,
                          directory={"RouteCacheTTL": "00:05:00",
                                     "NegativeCacheTTL": "00:01:00"}, start=False)
        fg.sections["throttle"] = {"Enabled": "yes", **(throttle or {})}
        for sec, vals in (extra or {}).items():
            fg.sections.setdefault(sec, {}).update(vals)
        return fg

    return make


@pytest.fixture(scope="module")
def certs(workroot):
    d = os.path.join(workroot, "fleet-pki")
    certdir = os.path.join(d, "certs")
    os.makedirs(certdir, exist_ok=True)
    ca = make_ca(d)
    make_cert(certdir, ca, "mail.test")
    make_cert(certdir, ca, "other.test")
    return certdir, ca + ".crt"


# ------------------------------------------------------------------ tests
def test_logons_spread_over_both_instances(fleet):
    """roundrobin: 20 IMAP and 6 POP3 logons land on both instances, and
    each instance logged on exactly what haproxy sent it."""
    for _ in range(20):
        imap_logon(fleet)
    got = fleet.logins_ok()
    assert sum(got.values()) == 20 and all(n > 0 for n in got.values()), got
    for _ in range(6):
        pop3_logon(fleet)
    pop3 = grew(got, fleet.logins_ok())
    assert sum(pop3.values()) == 6 and all(n > 0 for n in pop3.values()), pop3
    hp = fleet.haproxy
    for fg in fleet.instances:
        sent = sum(int(hp.servers(b)[fg.name]["stot"]) for b in ("imap", "pop3"))
        assert sent == fg.wait_idle()["logins_ok_total"], (fg.name, sent)
    # The checks passed the greeting each time, and never counted as a
    # refused PROXY header or a session.
    for fg in fleet.instances:
        st = fg.stats()
        assert st["proxy_refused_total"] == 0 and st["logins_failed_total"] == 0, st


def test_backend_sees_the_client_address(fleet, dovecot):
    """Clients from four addresses: each instance's audit line names the
    client (its own port too), with haproxy as proxy=, and Dovecot logs the
    client as rip= (forwarded by ID or XCLIENT), haproxy's address nowhere."""
    seen = set()
    for src, logon, proto in (("127.0.0.21", imap_logon, "imap"),
                              ("127.0.0.22", imap_logon, "imap"),
                              ("127.0.0.23", pop3_logon, "pop3"),
                              ("127.0.0.24", pop3_logon, "pop3")):
        client = logon(fleet, src)
        fg, ev = fleet.login_event(client)
        seen.add(fg.name)
        assert ev["result"] == "ok" and ev["proto"] == proto, ev
        assert ev["proxy"].startswith("127.0.0.1:"), ev
        line = dovecot_login(dovecot, ev["session"], proto)
        ip, port = client.split(":")
        assert f"rip={ip}," in line and f"rport={port}," in line, line
        assert "real_rip=127.0.0.1," in line, line
        bye = fg.wait_events("disconnect", lambda e: e["session"] == ev["session"])
        assert bye[0]["client"] == client
    assert seen == {"fg1", "fg2"}


def test_drain_moves_new_logons_and_keeps_open_sessions(fleet, dovecot):
    """set server .../fgX state drain: new logons all go to the other
    instance, a session open on the drained one goes on (SELECT, FETCH);
    once it has ended, stopping the instance costs nothing: the checks
    mark it DOWN and logons go on."""
    dovecot.deliver(USER, b"Subject: drain\r\n\r\nread while draining\r\n")
    hp = fleet.haproxy
    m = SourceIMAP(fleet.ports["imap"], "127.0.0.31")
    assert m.login(USER, PASSWORD)[0] == "OK"
    held, _ = fleet.login_event(m.client)
    other = next(fg for fg in fleet.instances if fg is not held)
    for backend in ("imap", "pop3"):
        hp.set_server_state(backend, held.name, "drain")
        assert hp.status(backend, held.name) == "DRAIN"
    before = fleet.logins_ok()
    for i in range(6):
        imap_logon(fleet, f"127.0.0.{32 + i}")
    for i in range(2):
        pop3_logon(fleet, f"127.0.0.{38 + i}")
    assert grew(before, fleet.logins_ok()) == {held.name: 0, other.name: 8}
    # The open session is not cut: it reads its mailbox after the drain.
    assert m.select("INBOX")[0] == "OK"
    typ, data = m.search(None, "SUBJECT", "drain")
    assert typ == "OK" and data[0], data
    typ, data = m.fetch(data[0].split()[-1], "(BODY.PEEK[TEXT])")
    assert typ == "OK" and data[0][1] == b"read while draining\r\n", data
    assert m.noop()[0] == "OK"
    assert m.logout()[0] == "BYE"
    # Drained: nothing left on it, in haproxy's count and its own.
    held.wait_idle()
    assert hp.servers("imap")[held.name]["scur"] == "0"
    assert held.stop() == 0
    for backend in ("imap", "pop3"):
        hp.wait_checked(backend, held.name, "DOWN")
    before = fleet.logins_ok()
    for i in range(4):
        imap_logon(fleet, f"127.0.0.{40 + i}")
    pop3_logon(fleet, "127.0.0.44")
    assert grew(before, fleet.logins_ok()) == {held.name: 0, other.name: 5}


def test_instance_stopped_in_the_rotation_then_back(fleet):
    """Stopped while haproxy still sends it logons (its checks held off, so
    haproxy cannot have noticed): each connection to it is refused and goes
    to the other instance at once (option redispatch), so no logon fails.
    Its checks then mark it DOWN; started again on its ports, it is checked
    UP and takes logons again: a rolling restart."""
    hp = fleet.haproxy
    fg1, fg2 = fleet["fg1"], fleet["fg2"]
    for backend in ("imap", "pop3"):
        assert hp.command(f"disable health {backend}/fg1").strip() == ""
    assert fg1.stop() == 0
    before = fg2.stats()["logins_ok_total"]
    for i in range(6):
        imap_logon(fleet, f"127.0.0.{50 + i}")
    for i in range(2):
        pop3_logon(fleet, f"127.0.0.{56 + i}")
    assert fg2.stats()["logins_ok_total"] - before == 8
    # haproxy did try the stopped one, and sent those logons on.
    for backend in ("imap", "pop3"):
        row = hp.servers(backend)["fg1"]
        assert int(row["wredis"]) > 0, row
        assert hp.command(f"enable health {backend}/fg1").strip() == ""
        hp.wait_checked(backend, "fg1", "DOWN")
    fg1.start()
    for backend in ("imap", "pop3"):
        hp.wait_checked(backend, "fg1", "UP")
    for i in range(4):
        imap_logon(fleet, f"127.0.0.{58 + i}")
    assert fg1.stats()["logins_ok_total"] > 0


def test_a_stopped_instance_refuses_at_once(make_fg):
    """Once forestgate has exited, its ports refuse connections. (Before
    its listeners were shut down at stop, the accept in flight kept the
    socket listening while the kernel tore the ring down, after the exit:
    a connection could be accepted there and then reset -- haproxy, having
    connected, would not send it to another instance, and the client saw
    EOF instead of a greeting.) The window was short: ten stops, each
    probed for a while."""
    fg = make_fg(start=False)
    accepted = []
    for cycle in range(10):
        fg.start()
        for port in (fg.imap_port, fg.pop3_port):
            with socket.create_connection(("127.0.0.1", port), 5) as s:
                assert s.recv(64).startswith((b"* OK", b"+OK"))
        assert fg.stop() == 0
        deadline = time.monotonic() + 0.15
        while time.monotonic() < deadline:
            for port in (fg.imap_port, fg.pop3_port):
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    accepted.append((cycle, port))
                except ConnectionRefusedError:
                    pass
    assert accepted == []


def test_tls_passes_through(make_fleet, certs):
    """IMAPS and POP3S through haproxy, which terminates nothing: the
    PROXY header, then the client's own ClientHello, whose SNI picks the
    certificate at the instance. haproxy has no SNI of its own to send
    (proxy-v2-options authority sends one only for TLS it terminated), so
    no PP2_TYPE_AUTHORITY arrives. The checks do a TLS handshake of their
    own after the header and expect the greeting inside it."""
    certdir, ca = certs
    fleet = make_fleet(tls=(certdir, ["mail.test", "other.test"]),
                       server_options="proxy-v2-options authority,crc32c")
    ctx = ssl.create_default_context(cafile=ca)
    for i, name in enumerate(("other.test", "mail.test")):
        with socket.create_connection(("127.0.0.1", fleet.ports["imaps"]), 15,
                                      source_address=(f"127.0.0.{61 + i}", 0)) as raw:
            s = ctx.wrap_socket(raw, server_hostname=name)
            cn = dict(x[0] for x in s.getpeercert()["subject"])["commonName"]
            assert cn == name
            client = "%s:%d" % s.getsockname()[:2]
            f = s.makefile("rb")
            assert f.readline().startswith(b"* OK")
            s.sendall(b"a LOGIN alice secret\r\nb LOGOUT\r\n")
            assert f.readline().startswith(b"a OK")
            f.close()
            s.close()
        _, ev = fleet.login_event(client)
        assert ev["tls"].startswith("TLSv1."), ev
        assert ev["proxy"].startswith("127.0.0.1:") and "pp_authority" not in ev, ev
    # No SNI (poplib names an address, which TLS does not carry): the
    # instance's first certificate.
    ctx.check_hostname = False
    p = poplib.POP3_SSL("127.0.0.1", fleet.ports["pop3s"], context=ctx, timeout=15)
    assert dict(x[0] for x in p.sock.getpeercert()["subject"])["commonName"] == "mail.test"
    p.user(USER)
    assert p.pass_(PASSWORD).startswith(b"+OK")
    p.quit()
    assert sum(fleet.logins_ok().values()) == 3
    for backend in ("imaps", "pop3s"):
        for row in fleet.haproxy.servers(backend).values():
            assert row["status"] == "UP" and row["check_status"].lstrip("* ") == "L7OK", row


def test_directory_fleet(make_fleet, workroot, directory):
    """Instances that resolve logons in the forest and log on to the
    mailbox servers as the master user, with the throttle on: a user's
    logons through haproxy reach the mailbox on DB01 with the client's
    address, whichever instance took them."""
    forest, _, _, servers = directory
    fleet = make_fleet(make_instance=directory_instances(workroot, directory))
    sam = "tcontrol"
    seen = set()
    for i in range(2):
        m = SourceIMAP(fleet.ports["imap"], f"127.0.0.{70 + i}")
        assert m.login(sam, forest.accounts[sam].password)[0] == "OK"
        m.select("INBOX")
        _, data = m.fetch("1", "(BODY.PEEK[TEXT])")
        assert f"the mailbox of {sam} on DB01".encode() in data[0][1]
        client = m.client
        m.logout()
        fg, ev = fleet.login_event(client)
        seen.add(fg.name)
        assert ev["backend"].startswith("127.0.0.1:"), ev  # DB01
        line = dovecot_login(servers["DB01"], ev["session"])
        assert f"rip=127.0.0.{70 + i}," in line, line
    assert seen == {"fg1", "fg2"}


def test_redis_fixture(workroot):
    """tests/lib/redis.py: a private redis-server, nothing saved; kill()
    and start() bring it back on its port, empty; pause() hangs it."""
    r = Redis(os.path.join(workroot, "redis-selftest"), unixsocket=True)
    r.start()
    try:
        assert r.command("SET", "k", b"\x00\xff") == "OK"
        assert r.command("GET", "k") == b"\x00\xff" and r.command("GET", "none") is None
        assert r.command("INCR", "n") == 1 and r.keys() == [b"k", b"n"]
        with pytest.raises(RedisError):
            r.command("NO-SUCH-COMMAND")
        assert os.path.exists(r.unixsocket)
        port = r.port
        r.kill()
        with pytest.raises(OSError):
            r.command("PING", timeout=1)
        r.start()
        assert r.port == port and r.dbsize() == 0
        r.pause()
        with pytest.raises(OSError):
            r.command("PING", timeout=0.5)
        r.resume()
        assert r.command("PING") == "PONG"
    finally:
        assert r.stop() == 0
    assert not [f for f in os.listdir(r.workdir) if f.endswith((".rdb", ".aof"))]


def test_a_spray_through_the_balancer_is_throttled_as_one(make_fleet, workroot, directory):
    """40 wrong passwords for one account from 40 addresses, which haproxy
    deals over both instances: with their shared ThrottleStore, slapd hears
    AccountFailureThreshold binds in all and the account stays open (two
    lone instances would make twice as many, and lock it: the control in
    test_throttle_store.py); the real user, from an address it logged on
    from before, logs on through either instance after."""
    from tests.integration.test_throttle import (ACCOUNT_ONLY, ACCT_THRESHOLD, FAILED, binds_as,
                                                 raw_imap, wrong)
    forest, dc, _, _ = directory
    fleet = make_fleet(make_instance=directory_instances(workroot, directory,
                                                         throttle=ACCOUNT_ONLY))
    assert fleet.shared_store
    for fg in fleet.instances:
        fg.wait_events("throttle_store_up")
    sam, home = "tspray", "127.0.0.90"
    dn = forest.accounts[sam].dn
    port = fleet.ports["imap"]
    for _ in range(2):  # the home address, familiar through both instances
        m = SourceIMAP(port, home)
        assert m.login(sam, forest.accounts[sam].password)[0] == "OK"
        m.logout()
    before = {fg.name: fg.stats() for fg in fleet.instances}
    mark = dc.log_mark()
    with ThreadPoolExecutor(8) as ex:
        answers = list(ex.map(lambda i: raw_imap(None, f"127.0.1.{i + 1}", sam,
                                                 wrong("fleet", i), port=port)[0], range(40)))
    binds = binds_as(dc, mark, dn)
    failures, locked = dc.lockout_state(dn)
    took = {fg.name: fg.stats()["throttle_account_unfamiliar_total"] -
            before[fg.name]["throttle_account_unfamiliar_total"] for fg in fleet.instances}
    print(f"through haproxy: 40 attempts, {binds} binds, locked {locked}, refused by {took}")
    assert answers == [FAILED] * 40
    assert binds == ACCT_THRESHOLD and locked is None
    assert sum(took.values()) == 40 - ACCT_THRESHOLD and all(took.values()), took
    for _ in range(2):
        m = SourceIMAP(port, home)
        assert m.login(sam, forest.accounts[sam].password)[0] == "OK"
        m.logout()

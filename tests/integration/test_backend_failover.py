"""Failover across a database's copies, as Exchange's Active Manager gives it:
two real Dovecot copies of DB01 ([databases] DB01 = 127.0.0.1, 127.0.0.2,
the same ports, the same mailboxes; each copy's message names the copy).

A copy that refuses, or accepts and never greets (a MOCK silent listener in
its place: no real server hangs on demand), is marked down: the logons that
follow go straight to the live copy without waiting out ConnectTimeout,
until the back-off ends; then one logon probes the dead copy again. The
tests count the connections the dead copy gets, never the time.
"""

import imaplib
import os
import poplib
import time

import pytest

from tests.integration.test_directory_ldif import gateway, imap_login, mailbox_servers
from tests.ldap.fixtures import setup_a
from tests.lib.mock import SilentServer
from tests.lib.pki import make_ca, make_cert

A = setup_a()
TUSER = A.passwords["tuser"]
COPIES = (("DB01a", "127.0.0.1"), ("DB01b", "127.0.0.2"))


class Copies:
    def __init__(self, workroot, name):
        self.dc, self.imap_port, self.pop3_port = mailbox_servers(workroot, name, A,
                                                                  hosts=COPIES)
        self.a, self.b = self.dc["DB01a"], self.dc["DB01b"]

    def stop(self):
        for dc in self.dc.values():
            dc.stop()


_n = [0]


@pytest.fixture
def copies(workroot):
    _n[0] += 1
    c = Copies(workroot, f"copies{_n[0]}")
    yield c
    c.stop()


def failover_gateway(workroot, copies, backoff, backoff_max="00:01:00"):
    _n[0] += 1
    fg = gateway(workroot, f"fg-failover-{_n[0]}", [("uclabor", "Organization", A)],
                 copies.imap_port, copies.pop3_port,
                 databases={"DB01": "127.0.0.1, 127.0.0.2", "DB02": "127.0.0.2"}, start=False)
    fg.sections["backend"].update({"ConnectTimeout": "00:00:02", "FailoverBackoff": backoff,
                                   "FailoverBackoffMax": backoff_max})
    return fg.start()


def login_lands_on(fg, copy):
    ok, err, body = imap_login(fg, "tuser", TUSER)
    assert ok, (err, fg.log_text()[-2000:])
    assert f"the mailbox of testalias on {copy}" in body, body


def host_line(fg, addr):
    """show backends' line of host addr (ip:port) as a dict."""
    lines = fg.stats("show backends")["text"].splitlines()
    cols = lines[0].lstrip("# ").split()
    for line in lines[1:]:
        f = line.split(maxsplit=len(cols) - 1)
        if f[1] == addr:
            return dict(zip(cols, f))
    raise AssertionError(f"{addr} not in show backends:\n" + "\n".join(lines))


def errors_for(fg, addr):
    return [e for e in fg.events("backend_error") if e["backend"] == addr]


def test_a_killed_copy_is_passed_by_until_its_back_off_ends(workroot, copies):
    fg = failover_gateway(workroot, copies, backoff="00:01:00")
    dead = f"127.0.0.1:{copies.imap_port}"
    try:
        login_lands_on(fg, "DB01a")
        copies.a.stop()
        for _ in range(10):
            login_lands_on(fg, "DB01b")
        # One connection to the dead copy: the first logon's; the nine after
        # it passed the copy by.
        assert len(errors_for(fg, dead)) == 1
        h = host_line(fg, dead)
        assert (h["state"], h["attempts"], h["failures"], h["skipped"]) == \
            ("down", "2", "1", "9"), h
        assert "refused" in h["last_error"].lower(), h
        downs = fg.events("backend_down")
        assert len(downs) == 1 and downs[0]["address"] == dead and downs[0]["host"] == "127.0.0.1"
        st = fg.stats()
        assert st["backend_hosts_down"] == 1 and st["backend_down_total"] == 1
        assert st["backend_skipped_total"] == 9 and st["logins_ok_total"] == 11
        assert host_line(fg, f"127.0.0.2:{copies.imap_port}")["state"] == "up"
    finally:
        assert fg.stop() == 0


def test_a_copy_that_never_greets_costs_one_timeout(workroot, copies):
    fg = failover_gateway(workroot, copies, backoff="00:01:00")
    copies.a.stop()
    silent = SilentServer("127.0.0.1", copies.imap_port)
    try:
        for _ in range(8):
            login_lands_on(fg, "DB01b")
        assert silent.accepted == 1  # the first logon waited ConnectTimeout; no other did
        down = fg.events("backend_down")
        assert len(down) == 1 and down[0]["reason"] == "backend connect or greeting timed out"
        h = host_line(fg, f"127.0.0.1:{copies.imap_port}")
        assert (h["state"], h["attempts"], h["skipped"]) == ("down", "1", "7"), h
        fg.wait_idle()
        assert silent.open_count() == 0  # its connection was given up
    finally:
        silent.close()
        assert fg.stop() == 0


def test_a_down_copy_is_probed_when_its_back_off_ends_and_comes_back(workroot, copies):
    """Back-off 1 s doubling to 4 s: after it, one logon probes the dead copy
    (refused again: the back-off doubles); once the copy is back, the next
    probe finds it up (event=backend_up) and logons go to it again."""
    fg = failover_gateway(workroot, copies, backoff="00:00:01", backoff_max="00:00:04")
    dead = f"127.0.0.1:{copies.imap_port}"
    try:
        copies.a.stop()
        login_lands_on(fg, "DB01b")
        assert host_line(fg, dead)["backoff_ms"] == "1000"
        time.sleep(1.2)
        login_lands_on(fg, "DB01b")  # the probe: refused
        h = host_line(fg, dead)
        assert (h["attempts"], h["failures"], h["backoff_ms"]) == ("2", "2", "2000"), h
        assert len(errors_for(fg, dead)) == 2
        copies.a.start()
        time.sleep(2.2)
        login_lands_on(fg, "DB01a")  # the probe: it greets
        up = fg.events("backend_up")
        assert len(up) == 1 and up[0]["address"] == dead, up
        login_lands_on(fg, "DB01a")
        h = host_line(fg, dead)
        assert (h["state"], h["attempts"], h["backoff_ms"]) == ("up", "4", "0"), h
        assert fg.stats()["backend_up_total"] == 1
    finally:
        assert fg.stop() == 0


def test_every_copy_down_answers_at_once(workroot, copies):
    fg = failover_gateway(workroot, copies, backoff="00:01:00")
    try:
        copies.stop()
        ok, err, _ = imap_login(fg, "tuser", TUSER)
        assert not ok and "UNAVAILABLE" in err
        assert fg.events("login")[-1]["reason"] == "no backend host reachable"
        assert len(fg.events("backend_error")) == 2
        # Both copies are down: the next logons are told at once, without a
        # connection to either.
        ok, err, _ = imap_login(fg, "tuser", TUSER)
        assert not ok and "UNAVAILABLE" in err
        assert fg.events("login")[-1]["reason"] == "every backend host of the route is down"
        p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=15)
        p.user("tuser")
        with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
            p.pass_(TUSER)
        p.quit()
        assert len(fg.events("backend_error")) == 4  # POP3's hosts are hosts of their own
        p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=15)
        p.user("tuser")
        with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
            p.pass_(TUSER)
        p.quit()
        assert len(fg.events("backend_error")) == 4
        st = fg.stats()
        assert st["backend_hosts_down"] == 4 and st["backend_skipped_total"] == 4
        fg.wait_idle()
    finally:
        assert fg.stop() == 0


def test_imap_login_is_served_while_a_copy_is_down(workroot, copies):
    """The same through imaplib's own session: SELECT and FETCH work on the
    copy that is up (a failover is invisible to the client)."""
    fg = failover_gateway(workroot, copies, backoff="00:01:00")
    try:
        copies.a.stop()
        m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=15)
        assert m.login("tuser", TUSER)[0] == "OK"
        assert m.select("INBOX")[0] == "OK"
        assert b"on DB01b" in m.fetch("1", "(BODY.PEEK[TEXT])")[1][0][1]
        m.logout()
    finally:
        assert fg.stop() == 0


def test_a_copy_that_fails_tls_is_passed_by(workroot):
    """Tls = starttls; the first copy has no TLS (it refuses STARTTLS), the
    second has a certificate for its name: the first is taken for down
    before any credential goes to it, and the second serves."""
    d = os.path.join(workroot, "failover-tls-pki")
    ca = make_ca(d)
    cert = make_cert(d, ca, "mbx2.uclabor.de")
    dc, ip, pp = mailbox_servers(workroot, "copies-tls", A, hosts=COPIES, tls={"DB01b": cert})
    _n[0] += 1
    fg = gateway(workroot, f"fg-failover-{_n[0]}", [("uclabor", "Organization", A)], ip, pp,
                 databases={"DB01": "mbx1.uclabor.de, mbx2.uclabor.de"}, start=False,
                 hosts={"mbx1.uclabor.de": "127.0.0.1", "mbx2.uclabor.de": "127.0.0.2"},
                 extra={"backend": {"Tls": "starttls", "TlsCaFile": ca + ".crt",
                                    "FailoverBackoff": "00:01:00"}})
    fg.start()
    try:
        mark = os.path.getsize(dc["DB01a"].log_path)
        for _ in range(3):
            login_lands_on(fg, "DB01b")
        down = fg.events("backend_down")
        assert len(down) == 1 and down[0]["host"] == "mbx1.uclabor.de", down
        assert "STARTTLS" in down[0]["reason"], down
        assert all(e["backend_tls"].startswith("TLSv1.") for e in fg.events("login"))
        h = host_line(fg, f"127.0.0.1:{ip}")
        assert (h["state"], h["attempts"], h["skipped"]) == ("down", "1", "2"), h
        with open(dc["DB01a"].log_path) as f:
            f.seek(mark)
            assert "Login:" not in f.read()  # no credential went to the copy in clear
    finally:
        assert fg.stop() == 0
        for c in dc.values():
            c.stop()

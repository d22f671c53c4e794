"""The backend side: unavailable backends, master users, client-address
forwarding, and clients that vanish in the middle of a login."""

import imaplib
import os
import poplib
import time

import pytest

from conftest import MASTER_PASSWORD, MASTER_USER
from tests.lib.forestgate import Raw, free_port
from tests.lib.mock import SilentServer


def test_backend_down_is_unavailable(make_fg):
    dead = free_port()
    fg = make_fg(imap_backend_port=dead, pop3_backend_port=dead)
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=15)
    with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
        m.login("alice", "secret")
    m.logout()
    p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=15)
    p.user("alice")
    with pytest.raises(poplib.error_proto, match=r"-ERR \[SYS/TEMP\]"):
        p.pass_("secret")
    p.quit()
    st = fg.wait_idle()
    assert st["backend_errors_total"] >= 2


def test_backend_without_greeting_times_out(make_fg):
    silent = SilentServer()
    try:
        fg = make_fg({"backend": {"ConnectTimeout": "00:00:01"}},
                     imap_backend_port=silent.port, pop3_backend_port=silent.port)
        c = Raw(fg.imap_port)
        c.line()
        t0 = time.monotonic()
        c.send(b"a LOGIN alice secret\r\n")
        line = c.line()
        elapsed = time.monotonic() - t0
        assert line.startswith(b"a NO [UNAVAILABLE]"), line
        assert 0.9 < elapsed < 5, elapsed
        # The session is still usable, and the silent connection was dropped.
        c.send(b"b NOOP\r\n")
        assert c.line().startswith(b"b OK")
        assert silent.open_count() == 0
    finally:
        silent.close()


def test_client_vanishing_mid_login_leaves_nothing(make_fg):
    silent = SilentServer()
    try:
        fg = make_fg({"backend": {"ConnectTimeout": "00:00:30"}},
                     imap_backend_port=silent.port, pop3_backend_port=silent.port)
        base_fds = fg.fd_count()
        clients = []
        for i in range(50):
            c = Raw(fg.imap_port if i % 2 else fg.pop3_port)
            c.line()
            c.send(b"a LOGIN alice secret\r\n" if i % 2 else b"USER alice\r\nPASS secret\r\n")
            clients.append(c)
        deadline = time.monotonic() + 10
        while fg.stats()["backend_connections"] < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fg.stats()["backend_connections"] == 50
        for c in clients:
            c.close()
        st = fg.wait_idle()
        assert st["login"] == 0 and st["preauth"] == 0
        assert fg.fd_count() == base_fds
        deadline = time.monotonic() + 5
        while silent.open_count() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert silent.open_count() == 0
    finally:
        silent.close()


def test_client_vanishing_right_after_login_command(fg):
    base_fds = fg.fd_count()
    for i in range(100):
        c = Raw(fg.imap_port)
        c.line()
        c.send(b"a LOGIN alice secret\r\n")
        if i % 3 == 0:
            time.sleep(0.002)
        c.close()
    fg.wait_idle()
    assert fg.fd_count() == base_fds


def test_master_user_mode(make_fg, workroot, dovecot):
    pw = os.path.join(workroot, "master.pw")
    with open(pw, "w") as f:
        f.write(MASTER_PASSWORD + "\n")
    fg = make_fg({"backend": {"LoginMode": "MasterUser", "MasterUser": MASTER_USER,
                              "MasterPasswordFile": pw, "AllowUncheckedMasterLogin": "true"}})
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=15)
    assert m.login("utf8", "whatever the client says")[0] == "OK"
    m.logout()
    p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=15)
    p.user("mixed")
    assert p.pass_("ignored").startswith(b"+OK")
    p.quit()
    log = dovecot.wait_for_log(r"pop3-login: Info: Login: user=<mixed>, auth_user=<%s>" % MASTER_USER)
    assert log
    assert "auth_user=<%s>" % MASTER_USER in dovecot.log_text()
    assert MASTER_PASSWORD not in fg.log_text()
    st = fg.wait_idle()
    assert st["logins_ok_total"] == 2


def test_client_address_forwarded_to_backend(fg, dovecot):
    c = Raw(fg.imap_port, source="127.0.0.5")
    c.line()
    c.send(b"a LOGIN alice secret\r\n")
    c.until(b"a OK")
    sid = fg.events("login")[-1]["session"]
    line = dovecot.wait_for_log(r"imap-login: Info: Login: user=<alice>.*session=<%s>" % sid).group(0)
    assert "rip=127.0.0.5" in line and f"lport={fg.imap_port}" in line
    c.close()
    p = Raw(fg.pop3_port, source="127.0.0.6")
    p.line()
    p.send(b"USER alice\r\nPASS secret\r\n")
    p.until(b"+OK Logged in")
    sid = fg.events("login")[-1]["session"]
    line = dovecot.wait_for_log(r"pop3-login: Info: Login: user=<alice>.*session=<%s>" % sid).group(0)
    assert "rip=127.0.0.6" in line


def test_preauth_timeout(make_fg):
    fg = make_fg({"imap": {"PreAuthenticatedConnectionTimeout": "00:00:10"},
                  "pop3": {"PreAuthenticatedConnectionTimeout": "00:00:10"}})
    c = Raw(fg.imap_port, timeout=30)
    c.line()
    p = Raw(fg.pop3_port, timeout=30)
    p.line()
    t0 = time.monotonic()
    assert c.line() == b"* BYE Disconnected for inactivity.\r\n"
    assert p.line() == b"-ERR Disconnected for inactivity.\r\n"
    assert 9.5 < time.monotonic() - t0 < 13
    assert c.closed() and p.closed()
    assert fg.wait_idle()["timeouts_total"] == 2


def test_authenticated_timeout_closes_idle_relay(make_fg):
    fg = make_fg({"imap": {"AuthenticatedConnectionTimeout": "00:00:30"}})
    c = Raw(fg.imap_port, timeout=60)
    c.line()
    c.send(b"a LOGIN alice secret\r\n")
    c.until(b"a OK")
    time.sleep(20)
    c.send(b"b NOOP\r\n")  # traffic restarts the clock
    c.until(b"b OK")
    t0 = time.monotonic()
    assert c.closed(timeout=45)
    assert 28 < time.monotonic() - t0 < 40
    fg.wait_idle()


def test_maxconnections_refuses_with_bye(make_fg):
    fg = make_fg({"imap": {"MaxConnections": "3"}})
    held = [Raw(fg.imap_port) for _ in range(3)]
    for h in held:
        h.line()
    extra = Raw(fg.imap_port)
    assert extra.line() == b"* BYE [UNAVAILABLE] Too many connections.\r\n"
    assert extra.closed()
    for h in held:
        h.close()
    fg.wait_idle()
    assert fg.stats()["refused_total"] == 1


def test_ipv6_listener_forwards_an_ipv6_client_address(make_fg, dovecot):
    fg = make_fg(start=False)
    fg.sections["imap"]["UnencryptedOrTLSBindings"] = \
        f"127.0.0.1:{fg.imap_port}, [::1]:{fg.imap_port}"
    fg.sections["pop3"]["UnencryptedOrTLSBindings"] = f"[::1]:{fg.pop3_port}"
    fg.start()
    c = Raw(fg.imap_port, host="::1")
    assert c.line().startswith(b"* OK")
    c.send(b"a LOGIN alice secret\r\n")
    c.until(b"a OK")
    ev = fg.events("login")[-1]
    assert ev["client"].startswith("[::1]:")
    line = dovecot.wait_for_log(r"imap-login: Info: Login: user=<alice>.*session=<%s>"
                                % ev["session"]).group(0)
    assert "rip=::1" in line
    p = Raw(fg.pop3_port, host="::1")
    p.line()
    p.send(b"USER alice\r\nPASS secret\r\n")
    p.until(b"+OK Logged in")
    sid = fg.events("login")[-1]["session"]
    line = dovecot.wait_for_log(r"pop3-login: Info: Login: user=<alice>.*session=<%s>" % sid)
    assert "rip=::1" in line.group(0)

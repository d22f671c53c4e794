"""The stats socket's `set SETTING VALUE` (issue 15), through the real socket.

Each change is checked where it acts, on a new session: a per-address limit
lowered refuses the next connection from that address; a pre-login timeout
shortened disconnects an idle client; ConnectTimeout shortened gives up on
a silent backend; LogLevel debug writes debug events and error stops the
info ones; ProtocolLogEnabled opens the protocol log and stops it again;
FailedLogonDelayMs and the cache TTLs act on the directory's next answer.
Each change shows in `show settings` and is logged (event=setting_changed).
What cannot change at run time, bad values and unknown names are refused
with the reason, and nothing changes.

    /usr/bin/python3 -m pytest -q tests/integration/test_set.py
"""

import imaplib
import os
import poplib
import re
import socket
import threading
import time

import pytest

from conftest import PASSWORDS
from test_directory_ldif import gateway, imap_login, mailbox_servers
from tests.ldap.fixtures import setup_a
from tests.lib.forestgate import Raw

IMAP_BYE_IP = b"* BYE [UNAVAILABLE] Too many connections from your address.\r\n"


def cmd(fg, line):
    """One stats socket command; its answer, without the newline."""
    return fg.stats(line)["text"].rstrip("\n")


def setting(fg, section, name):
    """The value show settings prints for [section] name."""
    cur = None
    for line in cmd(fg, "show settings").splitlines():
        if line.startswith("["):
            cur = line.strip("[]")
        elif cur == section and line.startswith(name + " = "):
            return line.split(" = ", 1)[1]
    raise AssertionError(f"no {name} in [{section}]")


def changed(fg, name):
    """The setting_changed events for one setting (Section.Name)."""
    return [e for e in fg.events("setting_changed") if e["setting"] == name]


def wait_stat(fg, key, value, timeout=10.0):
    deadline = time.monotonic() + timeout
    while (st := fg.stats())[key] != value:
        assert time.monotonic() < deadline, f"{key} is {st[key]}, not {value}"
        time.sleep(0.02)


def test_per_ip_limit_acts_on_the_next_connection(make_fg):
    fg = make_fg()
    held = Raw(fg.imap_port, source="127.0.0.1")
    assert held.line().startswith(b"* OK")
    assert cmd(fg, "set imap.MaxConnectionFromSingleIP 1") == \
        "imap.MaxConnectionFromSingleIP = 1 (was 2147483647)"
    # The connection already counted stays; the next from its address is refused.
    extra = Raw(fg.imap_port, source="127.0.0.1")
    assert extra.line() == IMAP_BYE_IP and extra.closed()
    other = Raw(fg.imap_port, source="127.0.0.2")
    assert other.line().startswith(b"* OK")
    held.send(b"a NOOP\r\n")
    assert held.line().startswith(b"a OK")
    # POP3 keeps its own limit.
    p = Raw(fg.pop3_port, source="127.0.0.1")
    assert p.line().startswith(b"+OK")
    assert setting(fg, "imap", "MaxConnectionFromSingleIP") == "1"
    assert setting(fg, "pop3", "MaxConnectionFromSingleIP") == "2147483647"
    ev = changed(fg, "imap.MaxConnectionFromSingleIP")
    assert [(e["old"], e["new"]) for e in ev] == [("2147483647", "1")], fg.log_text()
    # Raised again: admitted again.
    assert cmd(fg, "set imap.MaxConnectionFromSingleIP 2") == \
        "imap.MaxConnectionFromSingleIP = 2 (was 1)"
    again = Raw(fg.imap_port, source="127.0.0.1")
    assert again.line().startswith(b"* OK")
    assert fg.stats()["refused_per_ip_total"] == 1
    for c in (held, other, p, again):
        c.close()
    fg.wait_idle()


def test_max_connections_per_user_on_the_next_logon(make_fg):
    """Unqualified names are taken when one protocol is in use."""
    fg = make_fg({"pop3": None})
    assert cmd(fg, "set MaxConnectionsPerUser 1") == "imap.MaxConnectionsPerUser = 1 (was 16)"
    first = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
    first.login("alice", PASSWORDS["alice"])
    second = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
    with pytest.raises(imaplib.IMAP4.error):
        second.login("alice", PASSWORDS["alice"])
    second.logout()
    first.logout()
    assert fg.stats()["refused_per_user_total"] == 1
    fg.wait_idle()


def test_preauth_timeout_disconnects_a_new_idle_client(make_fg):
    fg = make_fg({"imap": {"PreAuthenticatedConnectionTimeout": "00:10:00"}})
    assert cmd(fg, "set imap.PreAuthenticatedConnectionTimeout 00:00:10") == \
        "imap.PreAuthenticatedConnectionTimeout = 00:00:10 (was 00:10:00)"
    t0 = time.monotonic()
    c = Raw(fg.imap_port, timeout=40)
    assert c.line().startswith(b"* OK")
    # With the file's ten minutes this would wait far past the socket's timeout.
    assert c.line() == b"* BYE Disconnected for inactivity.\r\n"
    assert time.monotonic() - t0 >= 9
    assert c.closed()
    assert setting(fg, "imap", "PreAuthenticatedConnectionTimeout") == "00:00:10"
    assert setting(fg, "pop3", "PreAuthenticatedConnectionTimeout") == "00:01:00"
    assert fg.stats()["timeouts_total"] == 1


def silent_backend():
    """A backend that accepts and never says a word: (socket, port)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s, s.getsockname()[1]


def test_connect_timeout_gives_up_on_a_silent_backend(make_fg):
    srv, port = silent_backend()
    try:
        fg = make_fg({"backend": {"ConnectTimeout": "00:01:00"}}, imap_backend_port=port)
        assert cmd(fg, "set ConnectTimeout 00:00:01") == \
            "backend.ConnectTimeout = 00:00:01 (was 00:01:00)"
        m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=20)
        with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
            m.login("alice", PASSWORDS["alice"])
        m.logout()
        fg.wait_events("backend_error", lambda e: "timed out" in e.get("reason", ""))
    finally:
        srv.close()


def test_log_level_debug_then_error(make_fg):
    fg = make_fg()
    Raw(fg.imap_port).close()
    wait_stat(fg, "connections", 0)
    assert not fg.events("disconnect")  # before a logon, debug: not at the file's info
    assert cmd(fg, "set LogLevel debug") == "global.LogLevel = debug (was info)"
    c = Raw(fg.imap_port)
    c.line()
    c.close()
    fg.wait_events("disconnect")
    assert setting(fg, "global", "LogLevel") == "debug"
    # Quieter: the change itself is still logged, then no info line.
    assert cmd(fg, "set LogLevel error") == "global.LogLevel = error (was debug)"
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
    m.login("alice", PASSWORDS["alice"])
    m.logout()
    fg.wait_idle()
    assert not fg.events("login")
    assert [(e["old"], e["new"]) for e in fg.events("setting_changed")] == \
        [("info", "debug"), ("debug", "error")]


def test_protocol_log_on_and_off(make_fg):
    fg = make_fg()
    path = os.path.join(fg.workdir, "pop3-protocol.log")
    assert not os.path.exists(path)
    assert cmd(fg, "set pop3.ProtocolLogEnabled true") == \
        "pop3.ProtocolLogEnabled = true (was false)"
    p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=10)
    p.user("alice")
    p.pass_(PASSWORDS["alice"])
    p.quit()
    fg.wait_idle()
    with open(path) as f:
        text = f.read()
    assert "USER alice" in text and PASSWORDS["alice"] not in text
    assert not os.path.exists(os.path.join(fg.workdir, "imap-protocol.log"))
    assert setting(fg, "pop3", "ProtocolLogEnabled") == "true"
    assert cmd(fg, "set pop3.ProtocolLogEnabled off") == \
        "pop3.ProtocolLogEnabled = false (was true)"
    p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=10)
    p.user("nobody-logged")
    p.quit()
    fg.wait_idle()
    with open(path) as f:
        assert f.read() == text


def test_protocol_log_refused_where_it_cannot_be_written(make_fg):
    fg = make_fg({"global": {"LogFileLocation": "/nonexistent/fg-logs"}})
    assert cmd(fg, "set imap.ProtocolLogEnabled true") == \
        "error: imap.ProtocolLogEnabled: cannot open the protocol log in LogFileLocation " \
        "/nonexistent/fg-logs: No such file or directory"
    assert setting(fg, "imap", "ProtocolLogEnabled") == "false"
    assert not fg.events("setting_changed")


REFUSED = [
    ("set imap.SSLBindings 127.0.0.1:993",
     "error: SSLBindings cannot change at run time: change it in [imap] in the file and restart"),
    ("set Workers 4",
     "error: Workers cannot change at run time (the workers start with the process): change "
     "it in the file and restart"),
    ("set directory.RequestTimeout 00:00:05",
     "error: RequestTimeout cannot change at run time (the LDAP connections' timeouts are set "
     "from it at start): change it in the file and restart"),
    ("set imap.MaxConnectionFromSingleIP 0",
     'error: imap.MaxConnectionFromSingleIP: expected a number from 1 to 2147483647, got "0"'),
    ("set pop3.PreAuthenticatedConnectionTimeout 30",
     "error: pop3.PreAuthenticatedConnectionTimeout: expected a time hh:mm:ss from 10 to 3600 "
     'seconds, got "30"'),
    ("set LogLevel loud",
     'error: global.LogLevel: expected error, warning, info or debug, got "loud"'),
    ("set imap.ProtocolLogEnabled maybe",
     'error: imap.ProtocolLogEnabled: expected true or false, got "maybe"'),
    ("set MaxConnections 5",
     "error: MaxConnections is in [imap] and [pop3]: say imap.MaxConnections or "
     "pop3.MaxConnections"),
    ("set NoSuchSetting 1", 'error: unknown setting "NoSuchSetting"'),
    ("set global.MaxConnections 5", 'error: unknown setting "MaxConnections" in [global]'),
    ("set smtp.MaxConnections 5", "error: unknown section [smtp]"),
    ("set RouteCacheTTL 00:01:00",
     "error: directory.RouteCacheTTL: the route cache is off (no directory, or RouteCacheTTL = "
     "00:00:00 at start): turning it on needs a restart"),
    ("set FailedLogonDelayMs 10",
     "error: directory.FailedLogonDelayMs: no directory is configured ([forest:NAME]): it would "
     "do nothing"),
]


def test_refusals_say_why_and_change_nothing(make_fg):
    fg = make_fg({"pop3": {"MaxConnectionFromSingleIP": "7"}})
    before = cmd(fg, "show settings")
    for line, answer in REFUSED:
        assert cmd(fg, line) == answer, line
    usage = cmd(fg, "set")
    assert usage.startswith("error: usage: set SETTING VALUE") and "\n" not in usage
    assert "imap|pop3.MaxConnectionFromSingleIP" in usage and "global.LogLevel" in usage
    assert cmd(fg, "set LogLevel").startswith("error: usage:")
    assert cmd(fg, "show settings") == before
    assert not fg.events("setting_changed")
    # A protocol that is not configured.
    fg2 = make_fg({"pop3": None})
    assert cmd(fg2, "set pop3.MaxConnections 3") == "error: [pop3] is not configured"
    assert "set SETTING VALUE" in cmd(fg2, "help")


# ---- the directory's settings: an LDIF forest in front of two Dovecots ----

@pytest.fixture(scope="module")
def dir_env(workroot):
    A = setup_a()
    servers, ip, pp = mailbox_servers(workroot, "set-dir", A)
    fg = gateway(workroot, "fg-set-dir", [("uclabor", "Organization", A)], ip, pp,
                 extra={"directory": {"RouteCacheTTL": "00:05:00",
                                      "NegativeCacheTTL": "00:05:00"}})
    yield A, fg
    assert fg.stop() == 0, fg.log_text()
    for dc in servers.values():
        dc.stop()


def cache_ttl(fg, name):
    """The ttl show cache gives name's entry."""
    text = cmd(fg, f"show cache {name}")
    m = re.search(r"name=" + re.escape(name) + r" .*ttl=(\d+)", text)
    assert m, text
    return int(m.group(1))


def test_cache_ttls_apply_to_the_next_entries(dir_env):
    A, fg = dir_env
    assert cmd(fg, "set RouteCacheTTL 00:00:20") == \
        "directory.RouteCacheTTL = 00:00:20 (was 00:05:00)"
    assert cmd(fg, "set directory.NegativeCacheTTL 00:00:15") == \
        "directory.NegativeCacheTTL = 00:00:15 (was 00:05:00)"
    ok, _, _ = imap_login(fg, "tuser", A.passwords["tuser"])
    assert ok
    assert 0 < cache_ttl(fg, "tuser") <= 20
    ok, _, _ = imap_login(fg, "nosuch-set", "whatever")
    assert not ok
    assert 0 < cache_ttl(fg, "nosuch-set") <= 15
    assert setting(fg, "directory", "RouteCacheTTL") == "00:00:20"
    assert setting(fg, "directory", "NegativeCacheTTL") == "00:00:15"
    assert cmd(fg, "set RouteCacheTTL 00:00:00") == \
        "error: directory.RouteCacheTTL: 00:00:00 turns the route cache off, which needs a " \
        "restart (flush cache empties it now)"
    assert [(e["old"], e["new"]) for e in changed(fg, "directory.RouteCacheTTL")] == \
        [("00:05:00", "00:00:20")]


def test_failed_logon_delay_on_the_next_failure(dir_env):
    A, fg = dir_env
    assert setting(fg, "directory", "FailedLogonDelayMs") == "0"
    assert cmd(fg, "set FailedLogonDelayMs 1500") == \
        "directory.FailedLogonDelayMs = 1500 (was 0)"
    t0 = time.monotonic()
    ok, err, _ = imap_login(fg, "tuser", "not-the-password")
    assert not ok and "AUTHENTICATIONFAILED" in err
    assert time.monotonic() - t0 >= 1.45
    assert cmd(fg, "set FailedLogonDelayMs 0") == "directory.FailedLogonDelayMs = 0 (was 1500)"
    assert setting(fg, "directory", "FailedLogonDelayMs") == "0"


def test_set_while_sessions_run(make_fg):
    """Limits and timeouts changed over and over while clients come and go:
    every session is served or refused whole (run under TSan: no race)."""
    fg = make_fg({"imap": {"MaxConnections": "1000"}})
    stop = threading.Event()
    errors = []

    def clients():
        while not stop.is_set():
            try:
                m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
                m.login("alice", PASSWORDS["alice"])
                m.logout()
            except imaplib.IMAP4.error as e:
                if "Too many connections" not in str(e):
                    errors.append(e)
            except OSError as e:
                errors.append(e)

    threads = [threading.Thread(target=clients) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(30):
            for line in (f"set imap.MaxConnections {1 + i % 3}",
                         f"set imap.AuthenticatedConnectionTimeout 00:0{1 + i % 5}:00",
                         f"set LogLevel {('info', 'debug')[i % 2]}",
                         f"set imap.ProtocolLogEnabled {('on', 'off')[i % 2]}"):
                assert not cmd(fg, line).startswith("error"), line
            time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert fg.stats()["logins_ok_total"] > 0
    fg.wait_idle()

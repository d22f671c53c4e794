"""The stats socket's operating commands, end to end, against the real
Dovecot behind forestgate, with imaplib and poplib as the clients:

- show sessions (and its filters), kick user / kick session;
- show backends, disable backend / enable backend;
- show settings SECTION; reload; a bad command gets one error line;
- drain under load: no session is cut before its end, no new one gets in,
  forestgate exits when the last one ends; and at the deadline the ones
  left hear BYE;
- slow and stuck stats clients hold up nothing: not a logon, not another
  stats client, not a signal.
"""

import imaplib
import poplib
import signal
import socket
import threading
import time

import pytest

from conftest import PASSWORDS


def cmd(fg, line: str) -> str:
    return fg.ask(line)


def imap(fg, user="alice"):
    c = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
    c.login(user, PASSWORDS[user])
    return c


def sessions(fg, filt: str = "") -> list[dict]:
    text = cmd(fg, ("show sessions " + filt).strip())
    lines = text.splitlines()
    assert lines[0].startswith("# id proto phase client user mailbox backend"), text
    keys = lines[0][2:].split()
    return [dict(zip(keys, l.split())) for l in lines[1:]]


def test_show_sessions_lists_and_filters(fg):
    a, p = imap(fg, "alice"), imap(fg, "plus")
    pre = socket.create_connection(("127.0.0.1", fg.imap_port))
    pre.recv(512)
    pop = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=10)
    pop.user("amp")
    pop.pass_(PASSWORDS["amp"])
    try:
        a.select("INBOX")
        rows = sessions(fg)
        by_user = {r["user"]: r for r in rows}
        assert set(by_user) == {"alice", "plus", "amp", "-"}, rows
        alice = by_user["alice"]
        assert alice["proto"] == "imap" and alice["phase"] == "relay"
        assert alice["mailbox"] == "alice" and alice["client"] == "127.0.0.1"
        assert alice["backend"] == f"127.0.0.1:{fg.sections['imap']['ProxyTargetPort']}"
        assert alice["tls"] == "none"
        assert int(alice["bytes_in"]) > 0 and int(alice["bytes_out"]) > 0
        assert by_user["amp"]["proto"] == "pop3"
        assert by_user["-"]["phase"] == "preauth" and by_user["-"]["backend"] == "-"
        assert [r["user"] for r in sessions(fg, "user ALICE")] == ["alice"]
        assert len(sessions(fg, "client 127.0.0.1")) == 4
        assert sessions(fg, "client 10.9.9.9") == []
        assert {r["user"] for r in sessions(fg, "backend 127.0.0.1:"
                                            + fg.sections["imap"]["ProxyTargetPort"])} \
            == {"alice", "plus"}
        bad = cmd(fg, "show sessions color blue")
        assert bad.startswith("error: usage: show sessions") and bad.count("\n") == 1
    finally:
        for c in (a, p):
            c.logout()
        pop.quit()
        pre.close()


def test_kick_user_and_session(fg):
    a, p = imap(fg, "alice"), imap(fg, "plus")
    pre = socket.create_connection(("127.0.0.1", fg.imap_port))
    pre.settimeout(5)
    assert pre.recv(512).startswith(b"* OK")
    try:
        assert cmd(fg, "kick user alice") == "kicked 1 session\n"
        # Dovecot's session was idle: alice hears the BYE, then the close.
        data = a.sock.recv(4096) + a.sock.recv(4096)
        assert data.startswith(b"* BYE Disconnected by an administrator."), data
        assert a.sock.recv(4096) == b""
        assert p.noop()[0] == "OK"  # the other session goes on
        sid = next(r["id"] for r in sessions(fg) if r["phase"] == "preauth")
        assert cmd(fg, f"kick session {sid}") == "kicked 1 session\n"
        assert pre.recv(512) == b"* BYE Disconnected by an administrator.\r\n"
        assert cmd(fg, "kick user nobody") == "kicked 0 sessions\n"
        assert cmd(fg, "kick everyone").startswith("error: usage: kick user NAME")
        kicked = fg.wait_events("disconnect", lambda e: e.get("reason") == "kicked")
        assert any(e.get("user") == "alice" for e in kicked)
        assert fg.wait_events("kicked")
    finally:
        p.logout()
        pre.close()
    fg.wait_idle()


def test_disable_and_enable_backend(fg):
    port = fg.sections["imap"]["ProxyTargetPort"]
    a = imap(fg, "alice")
    try:
        assert cmd(fg, "disable backend 127.0.0.1") == "disabled 1 backend host\n"
        table = cmd(fg, "show backends")
        assert f"127.0.0.1:{port} none disabled" in table, table
        # Its session goes on; a new one is refused for want of a backend.
        assert a.select("INBOX")[0] == "OK"
        with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
            imap(fg, "plus")
        assert cmd(fg, "enable backend 127.0.0.1:" + port) == "enabled 1 backend host\n"
        imap(fg, "plus").logout()
        assert cmd(fg, "disable backend mbx9.example").startswith("error: no backend host")
        assert cmd(fg, "disable backend").startswith("error: usage: disable backend HOST")
        assert fg.wait_events("backend_disabled") and fg.wait_events("backend_enabled")
    finally:
        a.logout()


def test_show_settings_section_reload_and_errors(fg):
    imap_only = cmd(fg, "show settings imap")
    assert imap_only.startswith("[imap]\n") and "[pop3]" not in imap_only
    assert "UnencryptedOrTLSBindings" in imap_only
    assert cmd(fg, "show settings nosuch").startswith("error: no section [nosuch]")
    assert "[pop3]" in cmd(fg, "show settings")
    assert cmd(fg, "reload").endswith("reloaded\n")
    bad = cmd(fg, "frobnicate now")
    assert bad == 'Unknown command "frobnicate now". Try "help".\n'
    assert cmd(fg, "drain soon") .startswith("error: drain takes a number of seconds")
    text = cmd(fg, "help")
    for c in ("show sessions", "kick user", "disable backend", "reload", "drain"):
        assert c in text


class Load:
    """Logged-in IMAP sessions that keep working (SELECT, FETCH) until told
    to stop; each records any failure."""

    def __init__(self, fg, n):
        self.fg, self.stop, self.errors, self.ops = fg, threading.Event(), [], [0] * n
        self.clients = [imap(fg, u) for u in list(PASSWORDS)[:n]]
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(n)]
        for t in self.threads:
            t.start()

    def run(self, i):
        c = self.clients[i]
        try:
            while not self.stop.is_set():
                assert c.select("INBOX")[0] == "OK"
                assert c.noop()[0] == "OK"
                self.ops[i] += 1
            c.logout()
        except Exception as e:  # noqa: BLE001 - any failure is the finding
            self.errors.append(repr(e))

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(20)


def test_drain_under_load_lets_sessions_end(fg):
    load = Load(fg, 6)
    try:
        answer = cmd(fg, "drain 120")
        assert answer.startswith("draining: no longer accepting; 6 connection(s)"), answer
        # No new client gets in, on either protocol.
        for port in (fg.imap_port, fg.pop3_port):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=5)
        before = sum(load.ops)
        deadline = time.monotonic() + 20
        while sum(load.ops) < before + 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sum(load.ops) >= before + 30, "sessions stalled while draining"
        assert fg.proc.poll() is None
        assert cmd(fg, "drain 100").startswith("already draining: 6 connection(s)")
    finally:
        load.finish()
    assert load.errors == []
    assert fg.proc.wait(20) == 0
    assert fg.events("drained") and not fg.events("drain_deadline")
    disconnects = fg.events("disconnect")
    assert not [e for e in disconnects if e.get("reason") == "server shutdown"]


def test_drain_deadline_says_bye(fg):
    a = imap(fg, "alice")
    pop = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=10)
    pop.user("plus")
    pop.pass_(PASSWORDS["plus"])
    assert cmd(fg, "drain 1").startswith("draining:")
    assert fg.proc.wait(20) == 0
    assert a.readline() == b"* BYE Server shutting down.\r\n"
    assert pop.file.readline() == b"-ERR [SYS/TEMP] Server shutting down.\r\n"
    assert fg.events("drain_deadline")


def test_stuck_stats_clients_hold_up_nothing(fg):
    # One client sends a byte at a time and never ends its line; others
    # connect and say nothing; one more sends its command and never reads.
    slow = socket.socket(socket.AF_UNIX)
    slow.connect(fg.stats_path)
    silent = []
    for _ in range(10):
        s = socket.socket(socket.AF_UNIX)
        s.connect(fg.stats_path)
        silent.append(s)
    deaf = socket.socket(socket.AF_UNIX)
    deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    deaf.connect(fg.stats_path)
    deaf.sendall(b"show settings\n")
    for ch in b"show in":
        slow.send(bytes([ch]))
        # Meanwhile everything else is served at once.
        assert cmd(fg, "show info").startswith("version:")
    imap(fg).logout()
    slow.send(b"fo\n")
    assert slow.recv(4096).startswith(b"version:")
    for s in silent + [slow, deaf]:
        s.close()
    # A flood of clients past the limit hears why; a signal still stops it.
    flood = []
    for _ in range(70):
        s = socket.socket(socket.AF_UNIX)
        s.connect(fg.stats_path)
        flood.append(s)
    refused = 0
    for s in flood[-6:]:
        s.settimeout(5)
        refused += s.recv(200).startswith(b"error: too many stats clients")
    assert refused >= 1
    assert fg.stop(signal.SIGTERM, timeout=10) == 0
    for s in flood:
        s.close()


def test_long_answer_to_a_slow_reader(make_fg):
    # More than a socket buffer of sessions: the answer waits for the reader
    # (EPOLLOUT) and arrives whole; meanwhile other commands are served.
    fg = make_fg({"imap": {"MaxConnectionFromSingleIP": "6000", "MaxConnections": "6000"}})
    conns = [socket.create_connection(("127.0.0.1", fg.imap_port)) for _ in range(5000)]
    try:
        deadline = time.monotonic() + 30
        while fg.stats()["connections"] < 5000 and time.monotonic() < deadline:
            time.sleep(0.1)
        slow = socket.socket(socket.AF_UNIX)
        slow.connect(fg.stats_path)
        slow.sendall(b"show sessions\n")
        time.sleep(0.5)
        assert cmd(fg, "show info").startswith("version:")
        data = b""
        slow.settimeout(10)
        while chunk := slow.recv(65536):
            data += chunk
        lines = data.decode().splitlines()
        assert len(data) > 256 * 1024
        assert len(lines) == 5001 and all(" preauth " in l for l in lines[1:])
    finally:
        for c in conns:
            c.close()
    fg.wait_idle(30)


def test_sigusr1_drains(fg):
    # HAProxy's soft stop: the same drain as the stats socket's, with its
    # default deadline.
    a = imap(fg, "alice")
    fg.proc.send_signal(signal.SIGUSR1)
    fg.wait_events("drain")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", fg.imap_port), timeout=5).close()
            time.sleep(0.05)
        except ConnectionRefusedError:
            break
    else:
        raise AssertionError("still accepting after SIGUSR1")
    assert a.select("INBOX")[0] == "OK"  # its session goes on
    assert fg.proc.poll() is None
    a.logout()
    assert fg.proc.wait(20) == 0
    assert fg.events("drained")

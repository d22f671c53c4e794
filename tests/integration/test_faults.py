"""Faults (issue 14): the backend killed in the middle of sessions, the
backend restarted, 2,000 slowloris clients, and a flood above every
connection limit at once.

The backend of the first two is a real Dovecot of the test's own
(tests/lib/dovecot.py) on fixed ports, killed (SIGKILL to all its processes:
a crash) or stopped, and started again where forestgate expects it; the
others use the session's Dovecot. Every test ends with no connection left,
the descriptor count back to its start and no sanitizer report.
"""

import imaplib
import os
import poplib
import threading
import time

import pytest

from conftest import PASSWORDS
from test_backend_failover import host_line
from test_limits import IMAP_BYE_IP, POP3_BYE_IP, wait_stat
from tests.lib.dovecot import Dovecot, free_port
from tests.lib.forestgate import Raw
from tests.lib.slowloris import Slowloris

PW = PASSWORDS["alice"]
SMALL = b"From: a@b\r\nSubject: small\r\n\r\nstill here\r\n"
# Larger than every buffer between Dovecot and a client that stopped
# reading: its socket's send buffer (4 MiB at most here), forestgate's
# receive buffer on that socket (autotuned, 32 MiB at most), a pipe
# (64 KiB), forestgate's send buffer to the client (4 MiB) and the client's
# fixed 64 KiB window. Killed while it is sent, it cannot have arrived whole.
BIG = b"From: a@b\r\nSubject: big\r\n\r\n" + b"".join(
    b"%07d the quick brown fox jumps over the lazy dog 0123456789abcdefghij\r\n" % i
    for i in range(48 * 1024 * 1024 // 80))

_n = [0]


@pytest.fixture
def doomed(workroot):
    """A Dovecot of the test's own, on fixed ports, that the test kills or
    stops; alice's mailbox holds SMALL (1) and BIG (2)."""
    _n[0] += 1
    dc = Dovecot(os.path.join(workroot, f"doomed{_n[0]}"), {"alice": PW},
                 imap_port=free_port(), pop3_port=free_port())
    dc.deliver("alice", SMALL)
    dc.deliver("alice", BIG)
    dc.start()
    yield dc
    dc.stop()


def gateway(make_fg, dc, settings=None):
    return make_fg(settings, imap_backend_port=dc.imap_port, pop3_backend_port=dc.pop3_port)


def imap_session(fg):
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=20)
    m.login("alice", PW)
    return m


def pop3_session(fg):
    p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=20)
    p.user("alice")
    p.pass_(PW)
    return p


def read_to_close(c: Raw, timeout: float = 30.0) -> bytes:
    """Everything the connection still brings, up to its close (in chunks
    joined once: tens of MiB)."""
    c.sock.settimeout(timeout)
    chunks, c.buf = [c.buf], b""
    while True:
        try:
            chunk = c.sock.recv(1 << 20)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


# ---- the backend killed mid-session ----

def start_big_fetch(fg, proto: str) -> tuple[Raw, bytes, bytes]:
    """A client that logs in, asks for BIG, reads 1 MiB of the answer and
    stops reading: (the client, what it read, the whole answer expected)."""
    port = fg.imap_port if proto == "imap" else fg.pop3_port
    c = Raw(port, timeout=30, rcvbuf=64 * 1024)
    c.line()
    if proto == "imap":
        c.send(b"a LOGIN alice %s\r\nb SELECT INBOX\r\n" % PW.encode())
        c.until(b"b OK")
        c.send(b"c FETCH 2 BODY[]\r\n")
    else:
        c.send(b"USER alice\r\nPASS %s\r\n" % PW.encode())
        c.until(b"+OK Logged in")
        c.send(b"RETR 2\r\n")
    head = c.read_exact(1 << 20)
    # The answer's first line is Dovecot's (FETCH's flags, RETR's octets).
    first = head[:head.index(b"\r\n") + 2]
    assert first.startswith(b"* 2 FETCH (") and first.endswith(b" {%d}\r\n" % len(BIG)) \
        if proto == "imap" else first.startswith(b"+OK"), first
    return c, head, first + BIG  # no line of BIG starts with a dot: RETR stuffs none


def test_backend_killed_mid_session(make_fg, doomed):
    """Dovecot crashes (SIGKILL to all its processes) under four sessions:
    one idle and one relaying a 48 MiB message, on each protocol. Each
    client gets what was relayed up to then, byte for byte, and then the
    close; forestgate adds nothing after login (it relays, and a dead
    backend has no last word), logs each disconnect with its reason, and
    keeps nothing."""
    fg = gateway(make_fg, doomed)
    base_fds = fg.fd_count()
    m = imap_session(fg)
    assert m.select("INBOX")[0] == "OK"
    p = pop3_session(fg)
    assert p.stat()[0] == 2
    fetches = [start_big_fetch(fg, proto) for proto in ("imap", "pop3")]
    wait_stat(fg, "relay", 4)
    time.sleep(0.5)  # every buffer on the way fills; Dovecot waits to write
    doomed.kill()

    for sock in (m.sock, p.sock):  # the idle sessions: the close, and nothing before it
        sock.settimeout(20)
        assert sock.recv(4096) == b""
    with pytest.raises(imaplib.IMAP4.abort):
        m.noop()
    with pytest.raises((poplib.error_proto, OSError, EOFError)):
        p.noop()
    for c, head, expected in fetches:
        got = head + read_to_close(c)
        assert len(head) < len(got) < len(expected), (len(got), len(expected))
        assert got == expected[:len(got)]  # intact up to the cut: no stray byte
        c.close()
    m.shutdown()
    p.close()

    st = fg.wait_idle()
    deadline = time.monotonic() + 10
    while len(gone := [e for e in fg.events("disconnect") if e.get("user") == "alice"]) < 4 \
            and time.monotonic() < deadline:
        time.sleep(0.05)  # a line is written after the close
    assert len(gone) == 4, gone
    # A crashed backend's sockets end with a FIN, or a reset when it died
    # with our bytes unread.
    assert all(e["reason"] in ("backend closed", "Connection reset by peer") for e in gone), gone
    assert sorted(e["proto"] for e in gone) == ["imap", "imap", "pop3", "pop3"]
    big = [e for e in gone if int(e["bytes"].split("/")[1]) > 1 << 20]
    assert len(big) == 2, gone
    assert st["pipes_busy"] == 0 and st["backend_connections"] == 0
    assert fg.fd_count() == base_fds
    assert fg.sanitizer_errors() == []


# ---- the backend restarted ----

def imap_try(fg) -> str:
    """A new connection's logon: "OK", or the NO's text."""
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=30)
    try:
        m.login("alice", PW)
    except imaplib.IMAP4.error as e:
        m.logout()
        return str(e)
    typ, data = m.select("INBOX")
    assert typ == "OK" and data == [b"2"], data
    m.logout()
    return "OK"


def pop3_try(fg) -> str:
    p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=30)
    p.user("alice")
    try:
        p.pass_(PW)
    except poplib.error_proto as e:
        p.quit()
        return str(e)
    assert p.stat()[0] == 2
    p.quit()
    return "OK"


def test_backend_restarted(make_fg, doomed):
    """Dovecot stops: its sessions are closed; new logons are refused at
    once, not after ConnectTimeout (20 s here), while forestgate passes the
    host by and probes it after each back-off (1 s doubling to 4 s).
    Dovecot starts again on the same ports: new logons work once a probe
    finds it, within one back-off, without touching forestgate."""
    fg = gateway(make_fg, doomed, {"backend": {"ConnectTimeout": "00:00:20",
                                               "FailoverBackoff": "00:00:01",
                                               "FailoverBackoffMax": "00:00:04"}})
    pid = fg.proc.pid
    base_fds = fg.fd_count()
    assert imap_try(fg) == "OK" and pop3_try(fg) == "OK"
    held = imap_session(fg)
    held.select("INBOX")

    doomed.stop()  # Dovecot ends its sessions without a word (shutdown_clients)
    held.sock.settimeout(20)
    assert held.sock.recv(4096) == b""  # and forestgate adds none
    held.shutdown()

    # Down: each logon is told at once, on either protocol; some of them
    # are the probes after each back-off, which find nothing listening.
    slowest, tries = 0.0, 0
    end = time.monotonic() + 4.5
    while time.monotonic() < end:
        for attempt, refusal in ((imap_try, "[UNAVAILABLE]"), (pop3_try, "-ERR [SYS/TEMP]")):
            t0 = time.monotonic()
            answer = attempt(fg)
            slowest = max(slowest, time.monotonic() - t0)
            assert refusal in answer, answer
            tries += 1
        time.sleep(0.2)
    assert slowest < 10, f"a refusal took {slowest:.1f} s: it waited for the backend"
    st = fg.stats()
    assert st["backend_hosts_down"] == 2 and st["backend_skipped_total"] > 0, st
    for port in (doomed.imap_port, doomed.pop3_port):
        h = host_line(fg, f"127.0.0.1:{port}")
        # The back-off grew with each failed probe, to its cap.
        assert h["state"] in ("down", "retry") and h["backoff_ms"] == "4000", h

    doomed.start()  # the same ports
    # What an operator does: try again until it works, for at most the
    # longest back-off and a margin.
    recovered = {}
    deadline = time.monotonic() + 4 + 15
    while len(recovered) < 2:
        assert time.monotonic() < deadline, f"not back after 19 s: {recovered}\n" + \
            fg.stats("show backends")["text"]
        for name, attempt in (("imap", imap_try), ("pop3", pop3_try)):
            if name not in recovered and attempt(fg) == "OK":
                recovered[name] = True
        time.sleep(0.5)
    ups = fg.wait_events("backend_up")
    assert sorted(e["address"] for e in ups) == sorted(
        f"127.0.0.1:{port}" for port in (doomed.imap_port, doomed.pop3_port)), ups
    for _ in range(5):  # back for good
        assert imap_try(fg) == "OK" and pop3_try(fg) == "OK"
    assert fg.proc.pid == pid and fg.proc.poll() is None
    st = fg.wait_idle()
    assert st["backend_hosts_down"] == 0
    assert fg.fd_count() == base_fds


# ---- slowloris ----

def test_slowloris_clients_are_reclaimed(make_fg):
    """2,000 clients (1,500 IMAP, 500 POP3) each trickle a byte of a command
    they never finish, every second. PreAuthenticatedConnectionTimeout
    (10 s here) counts from the last whole command (here the greeting):
    the trickle does not extend it, so every one of them is closed about
    10 s after its greeting with the inactivity BYE, while a client that
    sends a whole NOOP every 3 s keeps its connection. Meanwhile normal
    logons go through."""
    fg = make_fg({"imap": {"PreAuthenticatedConnectionTimeout": "00:00:10"},
                  "pop3": {"PreAuthenticatedConnectionTimeout": "00:00:10"}})
    base_fds = fg.fd_count()
    sources = [f"127.0.3.{i}" for i in range(1, 9)]
    loris = [Slowloris(fg.imap_port, 1500, "imap", sources=sources),
             Slowloris(fg.pop3_port, 500, "pop3", sources=sources)]
    polite = Raw(fg.imap_port, timeout=10)
    polite.line()
    polite_since = time.monotonic()
    for sl in loris:
        sl.start()
    try:
        for sl in loris:
            assert sl.wait(lambda n, sl=sl: n["greeted"] == sl.n, 60), sl.counts()
        assert fg.stats()["preauth"] >= 2001
        # Normal logons beside them.
        for _ in range(5):
            m = imap_session(fg)
            assert m.select("INBOX")[0] == "OK"
            m.logout()
            p = pop3_session(fg)
            p.stat()
            p.quit()
        assert fg.stats()["logins_ok_total"] == 10
        deadline, noops = time.monotonic() + 60, 0
        while any(sl.counts()["closed_by_server"] < sl.n for sl in loris):
            assert time.monotonic() < deadline, [sl.counts() for sl in loris]
            noops += 1
            polite.send(b"n%d NOOP\r\n" % noops)
            assert polite.line() == b"n%d OK NOOP completed.\r\n" % noops
            time.sleep(3)
    finally:
        counts = [sl.stop() for sl in loris]
    for sl, n in zip(loris, counts):
        assert n["opened"] == n["greeted"] == n["closed_by_server"] == sl.n, n
        bye = b"* BYE Disconnected for inactivity.\r\n" if sl.prefix.startswith(b"a ") \
            else b"-ERR Disconnected for inactivity.\r\n"
        for c in sl.all_conns():
            assert c.received.endswith(bye), c.received
            # It was still trickling when it was closed.
            assert c.sent >= 3, c.sent
    # Past the timeout counted from its greeting, the one that sent whole
    # commands is still served (how many NOOPs that took depends on how
    # long the slow clients took to connect: not asserted).
    while time.monotonic() - polite_since < 13:
        noops += 1
        polite.send(b"n%d NOOP\r\n" % noops)
        assert polite.line() == b"n%d OK NOOP completed.\r\n" % noops
        time.sleep(3)
    polite.send(b"a LOGIN alice %s\r\nb LOGOUT\r\n" % PW.encode())
    assert polite.until(b"a ")[-1].startswith(b"a OK")
    polite.until(b"b OK")
    polite.close()
    st = fg.wait_idle(30)
    assert st["connections"] == 0 and st["timeouts_total"] == 2000, st
    assert fg.fd_count() == base_fds


# ---- a flood above every limit ----

IMAP_BYE_MAX = b"* BYE [UNAVAILABLE] Too many connections.\r\n"
POP3_BYE_MAX = b"-ERR [SYS/TEMP] Too many connections.\r\n"
IMAP_NO_USER = b"a NO [UNAVAILABLE] Too many connections for this user.\r\n"
POP3_NO_USER = b"-ERR [IN-USE] Too many connections for this user.\r\n"


def in_parallel(fn, args: list) -> list:
    out = [None] * len(args)

    def run(i):
        try:
            out[i] = fn(args[i])
        except Exception as e:  # reported by the caller's assertions
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


class Flood:
    """Connections to one protocol from many addresses at once; the
    admitted are held until close_all()."""

    def __init__(self, fg, proto):
        self.proto = proto
        self.port = fg.imap_port if proto == "imap" else fg.pop3_port
        self.ok = b"* OK" if proto == "imap" else b"+OK"
        self.bye_max = IMAP_BYE_MAX if proto == "imap" else POP3_BYE_MAX
        self.bye_ip = IMAP_BYE_IP if proto == "imap" else POP3_BYE_IP
        self.held: list[tuple[str, Raw]] = []
        self.refused = {"max": 0, "ip": 0}

    def connect(self, sources: list[str]) -> None:
        def one(src):
            c = Raw(self.port, source=src, timeout=20)
            return src, c, c.line()

        for r in in_parallel(one, sources):
            assert not isinstance(r, Exception), r
            src, c, line = r
            if line.startswith(self.ok):
                self.held.append((src, c))
                continue
            assert line in (self.bye_max, self.bye_ip), line
            self.refused["max" if line == self.bye_max else "ip"] += 1
            assert c.closed()  # the refusal's line, then the close
            c.close()

    def logons(self) -> list[bytes]:
        """Every held connection logs in as alice at once: the answers."""
        def one(held):
            _, c = held
            if self.proto == "imap":
                c.send(b"a LOGIN alice %s\r\n" % PW.encode())
                return c.until(b"a ")[-1]
            c.send(b"USER alice\r\nPASS %s\r\n" % PW.encode())
            assert c.line().startswith(b"+OK")
            return c.line()

        return in_parallel(one, self.held)

    def close_all(self) -> None:
        for _, c in self.held:
            c.close()


def test_flood_above_every_limit(make_fg):
    """MaxConnections 12, MaxConnectionFromSingleIP 4, MaxConnectionsPerUser
    3, on both protocols. Ten connections from one address, then forty from
    eight others, all at once, then a logon as alice on every admitted one,
    all at once: each refused client gets its documented line and the
    close; show info counts each refusal as the clients saw it; afterwards
    every count is back to zero and a normal logon works."""
    limits = {"MaxConnections": "12", "MaxConnectionFromSingleIP": "4",
              "MaxConnectionsPerUser": "3"}
    fg = make_fg({"imap": dict(limits), "pop3": dict(limits)})
    base_fds = fg.fd_count()
    floods = [Flood(fg, "imap"), Flood(fg, "pop3")]
    answers = {}
    try:
        for f in floods:
            # One address over its limit, with room left under MaxConnections.
            f.connect(["127.0.4.1"] * 10)
            assert len(f.held) == 4 and f.refused == {"max": 0, "ip": 6}, f.refused
            # Eight more addresses, five each: past MaxConnections.
            f.connect([f"127.0.4.{2 + i % 8}" for i in range(40)])
            assert 4 <= len(f.held) <= 12 and f.refused["max"] >= 28, (len(f.held), f.refused)
            per_source = {}
            for src, _ in f.held:
                per_source[src] = per_source.get(src, 0) + 1
            assert max(per_source.values()) <= 4, per_source
            assert len(f.held) + sum(f.refused.values()) == 50
        st = fg.stats()
        assert st["connections"] == sum(len(f.held) for f in floods)
        for f in floods:
            answers[f.proto] = f.logons()
        st = fg.stats()
        assert st["counted_per_user"] == 6
    finally:
        for f in floods:
            f.close_all()
    imap_ok = [a for a in answers["imap"] if isinstance(a, bytes) and a.startswith(b"a OK")]
    pop3_ok = [a for a in answers["pop3"] if a == b"+OK Logged in.\r\n"]
    assert len(imap_ok) == 3 and len(pop3_ok) == 3, answers
    assert answers["imap"].count(IMAP_NO_USER) == len(floods[0].held) - 3, answers
    assert answers["pop3"].count(POP3_NO_USER) == len(floods[1].held) - 3, answers

    st = fg.wait_idle()
    seen_max = sum(f.refused["max"] for f in floods)
    seen_ip = sum(f.refused["ip"] for f in floods)
    seen_user = sum(len(f.held) - 3 for f in floods)
    assert (st["refused_max_connections_total"], st["refused_per_ip_total"],
            st["refused_per_user_total"], st["refused_total"]) == \
        (seen_max, seen_ip, seen_user, seen_max + seen_ip), st
    assert st["logins_ok_total"] == 6
    assert st["counted_per_ip"] == 0 and st["counted_per_user"] == 0
    assert fg.fd_count() == base_fds
    # Service goes on.
    m = imap_session(fg)
    assert m.select("INBOX")[0] == "OK"
    m.logout()
    p = pop3_session(fg)
    p.stat()
    p.quit()
    st = fg.wait_idle()
    assert st["refused_total"] == seen_max + seen_ip
    assert st["refused_per_user_total"] == seen_user

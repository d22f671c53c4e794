"""forestgate-bench --serve: the MOCK IMAP/POP3 backend that benchmarks put
behind forestgate instead of Dovecot.

Each test names what it proves. The mock runs as a subprocess on a free
loopback port; stopping it with SIGTERM must give exit code 0 and no sanitizer
report. No Dovecot is needed here.
"""

import base64
import imaplib
import os
import poplib
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from tests.lib.forestgate import ROOT, SANITIZER_RE, Forestgate, Raw, bench_binary, free_port
from tests.lib.mock import Mock


MSG_SIZE = 5000  # enough lines for the lone "." line (body line 50)
MESSAGES = 5


@pytest.fixture(scope="module")
def imap_mock(tmp_path_factory):
    m = Mock(tmp_path_factory.mktemp("mock-imap"), "imap")
    yield m
    assert m.stop() == 0, m.log_text()


@pytest.fixture(scope="module")
def pop3_mock(tmp_path_factory):
    m = Mock(tmp_path_factory.mktemp("mock-pop3"), "pop3")
    yield m
    assert m.stop() == 0, m.log_text()


def imap(mock) -> imaplib.IMAP4:
    return imaplib.IMAP4(mock.host, mock.port, timeout=10)


def raw(mock) -> Raw:
    r = Raw(mock.port, host=mock.host)
    assert b"MOCK" in r.line()
    return r


def plain(authzid: str, authcid: str, password: str) -> str:
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()


def read_literal_fetch(r: Raw) -> tuple[bytes, bytes]:
    """One "* n FETCH (... {size}" line and its literal; returns (line, literal)."""
    line = r.line()
    m = re.search(rb"\{(\d+)\}\r\n$", line)
    assert m, line
    return line, r.read_exact(int(m.group(1)))


def imap_body(mock, uid: int) -> bytes:
    m = imap(mock)
    m.login("alice", "secret")
    m.select("INBOX")
    typ, data = m.uid("FETCH", str(uid), "(BODY.PEEK[])")
    m.logout()
    assert typ == "OK"
    return data[0][1]


def check_message(body: bytes, n: int, size: int) -> None:
    assert len(body) == size
    head, _, text = body.partition(b"\r\n\r\n")
    assert b"Subject: mock message %d\r\n" % n in head + b"\r\n"
    assert body.endswith(b"\r\n")
    lines = body[:-2].split(b"\r\n")
    assert all(len(l) <= 76 and b"\r" not in l and b"\n" not in l for l in lines)
    assert any(l.startswith(b".") for l in text.split(b"\r\n"))


# ----------------------------------------------------------------- IMAP login


def test_start_line_names_the_mock(imap_mock):
    assert re.search(r"forestgate-bench: MOCK imap backend on 127\.0\.0\.1:%d, 1 thread, "
                     r"%d messages of %d bytes" % (imap_mock.port, MESSAGES, MSG_SIZE),
                     imap_mock.log_text())


def test_imap_greeting_and_capability(imap_mock):
    with Raw(imap_mock.port) as r:
        greeting = r.line()
        assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ") and b"MOCK" in greeting
        for cap in (b"LITERAL+", b"SASL-IR", b"ID", b"AUTH=PLAIN", b"AUTH=LOGIN", b"IDLE"):
            assert cap in greeting.split(b"]")[0].split()
        r.send(b"a capability\r\nb ID (\"name\" \"x\")\r\nc NOOP\r\n")
        assert r.until(b"a ")[-1].startswith(b"a OK")
        assert r.line() == b"* ID NIL\r\n"
        assert r.line().startswith(b"b OK")
        assert r.line().startswith(b"c OK")


def test_imap_login_atom_and_quoted(imap_mock):
    m = imap(imap_mock)
    typ, data = m.login("alice", 'with "quotes" and spaces')
    assert typ == "OK" and b"Logged in as alice" in data[0]
    typ, caps = m.capability()  # after login: no AUTH= any more
    assert typ == "OK" and b"IDLE" in caps[0].split() and b"AUTH=PLAIN" not in caps[0]
    m.logout()
    with raw(imap_mock) as r:
        r.send(b'a LOGIN "bob" "x\\"y\\\\z"\r\n')
        assert r.line().startswith(b"a OK [CAPABILITY IMAP4rev1 ")


def test_imap_login_sync_literals_wait_for_continuation(imap_mock):
    """nginx's mail proxy style: each {n} waits for a "+" before the bytes."""
    with raw(imap_mock) as r:
        r.send(b"a LOGIN {5}\r\n")
        assert r.line().startswith(b"+")
        r.send(b"alice {6}\r\n")
        assert r.line().startswith(b"+")
        r.send(b"secret\r\n")
        line = r.line()
        assert line.startswith(b"a OK [CAPABILITY") and b"alice" in line


def test_imap_login_nonsync_literals_get_no_continuation(imap_mock):
    with raw(imap_mock) as r:
        r.send(b"a LOGIN {5+}\r\nalice {6+}\r\nsecret\r\nb NOOP\r\n")
        assert r.line().startswith(b"a OK [CAPABILITY")
        assert r.line().startswith(b"b OK")


def test_imap_authenticate_plain_initial_response_and_continuation(imap_mock):
    with raw(imap_mock) as r:
        r.send(b"a AUTHENTICATE PLAIN %s\r\n" % plain("", "alice", "secret").encode())
        assert r.line().startswith(b"a OK [CAPABILITY")
    with raw(imap_mock) as r:
        r.send(b"a AUTHENTICATE PLAIN\r\n")
        assert r.line() == b"+ \r\n"
        r.send(plain("", "alice", "secret").encode() + b"\r\n")
        assert r.line().startswith(b"a OK [CAPABILITY")
    m = imap(imap_mock)
    assert m.authenticate("PLAIN", lambda _: b"\0carol\0pw")[0] == "OK"
    m.logout()


def test_imap_master_login_logs_in_as_authzid(imap_mock):
    with raw(imap_mock) as r:
        r.send(b"a AUTHENTICATE PLAIN %s\r\n" % plain("alice", "master", "mpw").encode())
        line = r.line()
        assert line.startswith(b"a OK") and b"Logged in as alice " in line


def test_imap_authenticate_login_and_cancel(imap_mock):
    with raw(imap_mock) as r:
        r.send(b"a AUTHENTICATE LOGIN\r\n")
        assert r.line() == b"+ VXNlcm5hbWU6\r\n"
        r.send(b"YWxpY2U=\r\n")
        assert r.line() == b"+ UGFzc3dvcmQ6\r\n"
        r.send(b"c2VjcmV0\r\n")
        assert r.line().startswith(b"a OK [CAPABILITY")
    with raw(imap_mock) as r:
        r.send(b"a AUTHENTICATE PLAIN\r\n")
        assert r.line() == b"+ \r\n"
        r.send(b"*\r\n")
        assert r.line().startswith(b"a BAD")
        r.send(b"b AUTHENTICATE LOGIN YWxpY2U=\r\n")
        assert r.line() == b"+ UGFzc3dvcmQ6\r\n"
        r.send(b"*\r\nc AUTHENTICATE CRAM-MD5\r\nd AUTHENTICATE PLAIN !!!!\r\n")
        assert r.line().startswith(b"b BAD")
        assert r.line().startswith(b"c NO")
        assert r.line().startswith(b"d BAD")


def test_imap_empty_password_is_refused(imap_mock):
    m = imap(imap_mock)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        m.login("alice", "")
    m.logout()
    with raw(imap_mock) as r:
        r.send(b"a AUTHENTICATE PLAIN %s\r\nb AUTHENTICATE PLAIN =\r\nc AUTHENTICATE LOGIN\r\n"
               % plain("", "alice", "").encode())
        assert r.line().startswith(b"a NO [AUTHENTICATIONFAILED]")
        assert r.line().startswith(b"b NO [AUTHENTICATIONFAILED]")
        assert r.line() == b"+ VXNlcm5hbWU6\r\n"
        r.send(b"YWxpY2U=\r\n=\r\nd SELECT INBOX\r\n")
        assert r.line() == b"+ UGFzc3dvcmQ6\r\n"
        assert r.line().startswith(b"c NO [AUTHENTICATIONFAILED]")
        assert r.line().startswith(b"d BAD")  # still not logged in


# ------------------------------------------------------------ IMAP mailbox


def test_imap_select_status_list(imap_mock):
    m = imap(imap_mock)
    m.login("alice", "secret")
    assert m.select("INBOX") == ("OK", [str(MESSAGES).encode()])
    assert m.response("UIDNEXT")[1] == [str(MESSAGES + 1).encode()]
    assert m.response("UIDVALIDITY")[1] == [b"1"]
    assert m.status("INBOX", "(MESSAGES UIDNEXT UNSEEN)") == \
        ("OK", [b"INBOX (MESSAGES %d UIDNEXT %d UNSEEN 0)" % (MESSAGES, MESSAGES + 1)])
    assert m.list() == ("OK", [b'() "/" INBOX'])
    assert m.select("Nowhere")[0] == "NO"
    assert m.select("inbox", readonly=True)[0] == "OK"
    assert m.noop()[0] == "OK" and m.check()[0] == "OK"
    assert m.search(None, "ALL") == ("OK", [b" ".join(b"%d" % i for i in range(1, MESSAGES + 1))])
    assert m.close()[0] == "OK"
    assert m.logout()[0] == "BYE"


def test_imap_uid_fetch_body_has_exactly_msg_size_bytes(imap_mock):
    m = imap(imap_mock)
    m.login("alice", "secret")
    m.select("INBOX")
    typ, data = m.uid("FETCH", "1:*", "(RFC822.SIZE BODY.PEEK[])")
    assert typ == "OK"
    parts = [d for d in data if isinstance(d, tuple)]
    assert len(parts) == MESSAGES
    for n, (head, body) in enumerate(parts, 1):
        want = rb"%d \(UID %d RFC822.SIZE %d BODY\[\] \{%d\}$" % (n, n, MSG_SIZE, MSG_SIZE)
        assert re.match(want, head), head
        check_message(body, n, MSG_SIZE)
    # Every message shares the body: only the header differs.
    assert len({p[1].partition(b"\r\n\r\n")[2] for p in parts}) == 1
    m.logout()


def test_imap_fetch_items_ranges_and_macros(imap_mock):
    with raw(imap_mock) as r:
        r.send(b"a LOGIN alice secret\r\nb SELECT INBOX\r\n")
        r.until(b"b OK")
        r.send(b"c FETCH 2,4:* (UID FLAGS)\r\n")
        assert r.until(b"c ") == [b"* 2 FETCH (UID 2 FLAGS ())\r\n",
                                  b"* 4 FETCH (UID 4 FLAGS ())\r\n",
                                  b"* 5 FETCH (UID 5 FLAGS ())\r\n", b"c OK Fetch completed.\r\n"]
        r.send(b"d UID FETCH 3 RFC822.SIZE\r\ne FETCH 99 UID\r\nf UID FETCH 9:* UID\r\n")
        assert r.until(b"f ") == [b"* 3 FETCH (UID 3 RFC822.SIZE %d)\r\n" % MSG_SIZE,
                                  b"d OK Fetch completed.\r\n", b"e OK Fetch completed.\r\n",
                                  b"* 5 FETCH (UID 5)\r\n", b"f OK Fetch completed.\r\n"]
        r.send(b"g FETCH 1 FAST\r\nh FETCH 1 ALL\r\n")
        assert r.line().startswith(b"* 1 FETCH (FLAGS () INTERNALDATE \"")
        assert r.line().startswith(b"g OK")
        line = r.line()
        assert b"ENVELOPE (\"Mon, 01 Jan 2024 00:00:00 +0000\" \"mock message 1\"" in line
        assert r.line().startswith(b"h OK")
        r.send(b"i FETCH 1 (BODY[HEADER] UID)\r\n")
        line, hdr = read_literal_fetch(r)
        assert line.startswith(b"* 1 FETCH (BODY[HEADER] {") and hdr.endswith(b"\r\n\r\n")
        assert r.line() == b" UID 1)\r\n"
        r.until(b"i OK")
        r.send(b"j FETCH 2 BODY.PEEK[]<6.20>\r\n")
        line, part = read_literal_fetch(r)
        assert b"BODY[]<6> {20}" in line and part == imap_body(imap_mock, 2)[6:26]
        r.until(b"j OK")
        r.send(b"k FETCH 1 RFC822\r\n")
        line, body = read_literal_fetch(r)
        assert line == b"* 1 FETCH (RFC822 {%d}\r\n" % MSG_SIZE
        check_message(body, 1, MSG_SIZE)
        assert r.line() == b")\r\n" and r.line().startswith(b"k OK")


def test_imap_idle_until_done(imap_mock):
    with raw(imap_mock) as r:
        r.send(b"a LOGIN alice secret\r\nb IDLE\r\n")
        r.until(b"a OK")
        assert r.line() == b"+ idling\r\n"
        r.send(b"DONE\r\nc LOGOUT\r\n")
        assert r.line().startswith(b"b OK")
        assert r.line().startswith(b"* BYE")
        assert r.line().startswith(b"c OK")
        assert r.closed()


def test_imap_bad_commands(imap_mock):
    with raw(imap_mock) as r:
        r.send(b"a SELECT INBOX\r\nb FROB\r\n+x NOOP\r\nc FETCH 1 UID\r\n\r\nd LOGIN alice\r\n")
        assert r.line().startswith(b"a BAD")
        assert r.line() == b"b BAD Unknown command.\r\n"
        assert r.line().startswith(b"* BAD")  # the tag is never echoed when invalid
        assert r.line().startswith(b"c BAD")
        assert r.line().startswith(b"d BAD")
        r.send(b"e LOGIN alice secret\r\nf FETCH 1 UID\r\ng SELECT INBOX\r\n")
        r.until(b"g OK")
        r.send(b"h FETCH 0 UID\r\ni FETCH 1: UID\r\nj FETCH 1 (UID FOO)\r\nk FETCH 1 (UID\r\n"
               b"l FETCH 1 BODY[MIME]\r\nm UID FROB 1\r\nn LOGIN a b\r\no NOOP\r\n")
        lines = r.until(b"o ")
        assert [l.split()[:2] for l in lines] == \
            [[bytes([t]), b"BAD"] for t in b"hijklmn"] + [[b"o", b"OK"]]


# ---------------------------------------------------------------------- POP3


def test_pop3_login_forms(pop3_mock):
    p = poplib.POP3(pop3_mock.host, pop3_mock.port, timeout=10)
    assert b"MOCK" in p.getwelcome()
    caps = p.capa()
    for cap in ("TOP", "USER", "UIDL", "PIPELINING", "XCLIENT"):
        assert cap in caps
    assert caps["SASL"] == ["PLAIN", "LOGIN"]
    p.user("alice")
    assert p.pass_("pass with spaces").startswith(b"+OK")
    p.quit()
    with raw(pop3_mock) as r:
        r.send(b"XCLIENT ADDR=192.0.2.1 PORT=4711\r\nAUTH PLAIN %s\r\nSTAT\r\n"
               % plain("alice", "master", "mpw").encode())
        assert r.line() == b"+OK\r\n"
        assert r.line().startswith(b"+OK Logged in as alice ")
        assert r.line() == b"+OK %d %d\r\n" % (MESSAGES, MESSAGES * MSG_SIZE)
    with raw(pop3_mock) as r:
        r.send(b"AUTH PLAIN\r\n")
        assert r.line() == b"+ \r\n"
        r.send(plain("", "bob", "pw").encode() + b"\r\nAUTH LOGIN\r\n")
        assert r.line().startswith(b"+OK Logged in as bob")
        assert r.line() == b"-ERR Already logged in.\r\n"
    with raw(pop3_mock) as r:
        r.send(b"AUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\nNOOP\r\n")
        assert r.line() == b"+ VXNlcm5hbWU6\r\n"
        assert r.line() == b"+ UGFzc3dvcmQ6\r\n"
        assert r.line().startswith(b"+OK Logged in as alice")
        assert r.line() == b"+OK\r\n"


def test_pop3_empty_password_is_refused(pop3_mock):
    p = poplib.POP3(pop3_mock.host, pop3_mock.port, timeout=10)
    p.user("alice")
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        p.pass_("")
    p.quit()
    with raw(pop3_mock) as r:
        r.send(b"AUTH PLAIN %s\r\nAUTH PLAIN =\r\nPASS x\r\nSTAT\r\nAUTH PLAIN\r\n*\r\n"
               % plain("", "alice", "").encode())
        assert r.line().startswith(b"-ERR [AUTH]")
        assert r.line().startswith(b"-ERR [AUTH]")
        assert r.line().startswith(b"-ERR No username")
        assert r.line().startswith(b"-ERR")
        assert r.line() == b"+ \r\n"
        assert r.line().startswith(b"-ERR Authentication aborted")


def test_pop3_retr_equals_imap_body_and_is_dot_stuffed(imap_mock, pop3_mock):
    p = poplib.POP3(pop3_mock.host, pop3_mock.port, timeout=10)
    p.user("alice")
    p.pass_("secret")
    for n in (1, MESSAGES):
        resp, lines, octets = p.retr(n)
        assert resp == b"+OK %d octets" % MSG_SIZE
        body = b"\r\n".join(lines) + b"\r\n"  # poplib has taken the dots off
        assert octets == MSG_SIZE and body == imap_body(imap_mock, n)
        assert any(l.startswith(b".") for l in lines) and b"." in lines
    p.quit()
    with raw(pop3_mock) as r:
        r.send(b"USER a\r\nPASS b\r\nRETR 1\r\n")
        r.until(b"+OK Logged in")
        wire = r.until(b".\r\n")
        assert wire[0] == b"+OK %d octets\r\n" % MSG_SIZE
        assert b"..\r\n" in wire and any(l.startswith(b"..mock") for l in wire)
        assert sum(map(len, wire[1:-1])) == MSG_SIZE + sum(l.startswith(b".") for l in wire[1:-1])


def test_pop3_stat_list_uidl_top_dele(pop3_mock):
    p = poplib.POP3(pop3_mock.host, pop3_mock.port, timeout=10)
    p.user("alice")
    p.pass_("secret")
    assert p.stat() == (MESSAGES, MESSAGES * MSG_SIZE)
    resp, listing, _ = p.list()
    assert listing == [b"%d %d" % (i, MSG_SIZE) for i in range(1, MESSAGES + 1)]
    assert p.list(2) == b"+OK 2 %d" % MSG_SIZE
    assert p.uidl()[1] == [b"%d mock%d" % (i, i) for i in range(1, MESSAGES + 1)]
    assert p.uidl(3) == b"+OK 3 mock3"
    full = p.retr(3)[1]
    head_len = full.index(b"") + 1
    assert p.top(3, 0)[1] == full[:head_len]
    assert p.top(3, 12)[1] == full[:head_len + 12]
    assert p.top(3, 10 ** 6)[1] == full
    assert p.dele(1).startswith(b"+OK") and p.rset().startswith(b"+OK")
    assert p.noop().startswith(b"+OK")
    for bad in (lambda: p.retr(MESSAGES + 1), lambda: p.list(0), lambda: p.top(1, -1),
                lambda: p._shortcmd("FROB")):
        with pytest.raises(poplib.error_proto):
            bad()
    assert p.quit().startswith(b"+OK")


def test_pop3_commands_need_login(pop3_mock):
    with raw(pop3_mock) as r:
        r.send(b"STAT\r\nRETR 1\r\nPASS x\r\nFROB\r\nQUIT\r\n")
        assert [r.line()[:4] for _ in range(5)] == [b"-ERR"] * 4 + [b"+OK "]
        assert r.closed()


# --------------------------------------------------------- I/O and framing


def test_pipelined_commands_are_answered_in_order(imap_mock, pop3_mock):
    n = 1500  # about 30 KB of commands: several reads, commands cut between them
    with raw(imap_mock) as r:
        cmds = [b"a LOGIN alice secret\r\nb SELECT INBOX\r\n"]
        for i in range(n):
            cmds.append(b"f%d UID FETCH %d BODY.PEEK[]\r\n" % (i, i % MESSAGES + 1) if i % 100 == 0
                        else b"t%d NOOP\r\n" % i)
        r.send(b"".join(cmds) + b"z LOGOUT\r\n")
        r.until(b"b OK")
        for i in range(n):
            if i % 100 == 0:
                line, body = read_literal_fetch(r)
                check_message(body, i % MESSAGES + 1, MSG_SIZE)
                assert r.line() == b")\r\n"
                assert r.line() == b"f%d OK Fetch completed.\r\n" % i
            else:
                assert r.line() == b"t%d OK NOOP completed.\r\n" % i
        assert r.line().startswith(b"* BYE") and r.line().startswith(b"z OK")
        assert r.closed()
    with raw(pop3_mock) as r:
        r.send(b"USER a\r\nPASS b\r\n" + b"RETR 2\r\nNOOP\r\n" * 40 + b"QUIT\r\n")
        r.line(), r.line()
        for _ in range(40):
            assert r.until(b".\r\n")[0] == b"+OK %d octets\r\n" % MSG_SIZE
            assert r.line() == b"+OK\r\n"
        assert r.line().startswith(b"+OK") and r.closed()


def slow_reader(port: int, commands: bytes) -> Raw:
    """A client with a small receive buffer that sends commands, lets the
    server back up, then reads in small pieces for a while."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # before connect: the window
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    r = Raw.__new__(Raw)
    r.sock, r.buf = s, b""
    r.line()
    r.send(commands)
    time.sleep(0.3)  # let the server fill every buffer and back up
    for _ in range(60):
        r.buf += s.recv(2048)
        time.sleep(0.003)
    return r


def test_slow_reader_gets_every_byte_of_a_1mb_message(make_mock):
    """Partial writes: the socket fills, the mock waits for EPOLLOUT, stops
    running the pipelined commands meanwhile, and resumes in order. The
    commands ask for more than a socket's send buffer can ever hold."""
    size = 1_000_000
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            wmem_max = int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        wmem_max = 4 << 20
    rounds = wmem_max // (2 * size) + 1
    im = make_mock("imap", messages=2, msg_size=size)
    pm = make_mock("pop3", messages=2, msg_size=size)
    r = slow_reader(im.port, b"a LOGIN alice secret\r\nb SELECT INBOX\r\n"
                    + b"".join(b"f%d UID FETCH 1:* BODY.PEEK[]\r\n" % k for k in range(rounds))
                    + b"e NOOP\r\n")
    r.until(b"b OK")
    bodies = {}
    for k in range(rounds):
        for n in (1, 2):
            line, body = read_literal_fetch(r)
            assert line == b"* %d FETCH (UID %d BODY[] {%d}\r\n" % (n, n, size)
            check_message(body, n, size)
            assert bodies.setdefault(n, body) == body
            assert r.line() == b")\r\n"
        assert r.line() == b"f%d OK Fetch completed.\r\n" % k
    assert r.line() == b"e OK NOOP completed.\r\n"
    r.close()
    r = slow_reader(pm.port, b"USER alice\r\nPASS secret\r\n" + b"RETR 1\r\nRETR 2\r\n" * rounds
                    + b"QUIT\r\n")
    r.until(b"+OK Logged in")
    for n in (1, 2) * rounds:
        assert r.line() == b"+OK %d octets\r\n" % size
        wire = r.until(b".\r\n")[:-1]
        assert b"".join(l[1:] if l.startswith(b".") else l for l in wire) == bodies[n]
    assert r.line().startswith(b"+OK") and r.closed()


def test_overlong_line_is_refused_and_closed(imap_mock, pop3_mock):
    with raw(imap_mock) as r:
        r.send(b"a NOOP " + b"x" * 8000 + b"\r\n")  # just under 8 KiB: fine
        assert r.line() == b"a OK NOOP completed.\r\n"
        r.send(b"b NOOP " + b"x" * 9000 + b"\r\n")
        assert r.line().startswith(b"* BYE Line too long")
        assert r.closed()
    with raw(imap_mock) as r:
        r.send(b"a LOGIN alice {9000}\r\n")  # the literal could never fit: no "+"
        assert r.line().startswith(b"* BYE")
        assert r.closed()
    with raw(pop3_mock) as r:
        r.send(b"USER " + b"u" * 9000 + b"\r\n")
        assert r.line().startswith(b"-ERR Line too long")
        assert r.closed()


def test_client_eof_after_commands_still_gets_the_replies(imap_mock):
    with socket.create_connection(("127.0.0.1", imap_mock.port), timeout=10) as s:
        s.sendall(b"a LOGIN alice secret\r\nb SELECT INBOX\r\nc FETCH 1 BODY.PEEK[]\r\n")
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.endswith(b"c OK Fetch completed.\r\n") and len(data) > MSG_SIZE


# ----------------------------------------------------- process and options


def test_duration_ends_the_mock_with_exit_0(tmp_path):
    m = Mock(tmp_path, "pop3", extra=("--duration", "0.5"))
    assert m.proc.wait(10) == 0
    assert m.stop() == 0


def test_sigint_stops_with_open_connections(tmp_path):
    m = Mock(tmp_path, "imap", extra=("--threads", "3"))
    conns = [raw(m) for _ in range(10)]
    conns[0].send(b"a LOGIN alice secret\r\nb IDLE\r\n")
    assert m.stop(signal.SIGINT) == 0
    for c in conns:
        c.close()


def test_threads_serve_concurrent_sessions(make_mock):
    m = make_mock("imap", extra=("--threads", "4"))
    errors = []

    def session():
        try:
            c = imap(m)
            c.login("alice", "secret")
            c.select("INBOX")
            assert c.uid("FETCH", "1", "(RFC822.SIZE)")[0] == "OK"
            c.logout()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=session) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_quiet_and_ipv6(make_mock, tmp_path):
    m = make_mock("pop3", extra=("--quiet",))
    assert "MOCK" not in m.log_text()
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    m6 = make_mock("imap", host="::1")
    with raw(m6) as r:
        r.send(b"a LOGOUT\r\n")
        assert r.until(b"a ")[-1].startswith(b"a OK")
    assert "MOCK imap backend on [::1]:%d" % m6.port in m6.log_text()


def test_bad_host_is_an_option_error(tmp_path):
    m = Mock(tmp_path, "imap", host="not-an-address", wait=False)
    assert m.proc.wait(10) == 2
    assert m.stop() == 2


def test_small_messages_are_clamped_and_tiny_bodies_still_start_with_a_dot(make_mock):
    m = make_mock("imap", messages=1, msg_size=10)
    assert re.search(r"1 messages of (\d+) bytes", m.log_text())
    size = int(re.search(r"1 messages of (\d+) bytes", m.log_text()).group(1))
    assert 200 <= size <= 260
    body = imap_body(m, 1)
    assert len(body) == size and body.partition(b"\r\n\r\n")[2].startswith(b".")


def test_out_of_descriptors_pauses_accepts_and_recovers(make_mock):
    m = make_mock("imap", nofile=32)
    held = []
    for _ in range(40):
        s = socket.create_connection(("127.0.0.1", m.port), timeout=2)
        held.append(s)
    time.sleep(0.5)
    assert "Too many open files" in m.log_text()
    warnings = m.log_text().count("accept:")
    for s in held[:20]:
        s.close()
    # The ones that waited in the backlog are greeted once descriptors are free.
    for s in held[-5:]:
        s.settimeout(5)
        assert b"MOCK" in s.recv(512)
    for s in held[20:]:
        s.close()
    with raw(m) as r:
        r.send(b"a NOOP\r\n")
        assert r.line().startswith(b"a OK")
    assert warnings <= 2


# ------------------------------------------------- behind a real forestgate


def test_mock_as_forestgate_backend(make_mock, tmp_path):
    im = make_mock("imap")
    pm = make_mock("pop3")
    fg = Forestgate(str(tmp_path / "fg"), imap_backend_port=im.port,
                    pop3_backend_port=pm.port).start()
    try:
        # 8-bit bytes: forestgate passes the password on as a literal.
        with Raw(fg.imap_port) as r:
            pw = "pässwörd €".encode()
            r.line()
            r.send(b"a LOGIN alice {%d}\r\n" % len(pw))
            assert r.line().startswith(b"+")
            r.send(pw + b"\r\nb LOGOUT\r\n")
            assert r.until(b"a ")[-1].startswith(b"a OK")
            assert r.until(b"b ")[-1].startswith(b"b OK")
        m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
        assert m.login("alice", 'with "quotes" and spaces')[0] == "OK"
        assert m.select("INBOX") == ("OK", [str(MESSAGES).encode()])
        typ, data = m.uid("FETCH", "2", "(RFC822.SIZE BODY.PEEK[])")
        assert typ == "OK" and len(data[0][1]) == MSG_SIZE
        imap_body2 = data[0][1]
        m.logout()
        p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=10)
        p.user("alice")
        assert p.pass_("secret").startswith(b"+OK")
        assert p.stat() == (MESSAGES, MESSAGES * MSG_SIZE)
        assert b"\r\n".join(p.retr(2)[1]) + b"\r\n" == imap_body2
        p.quit()
        m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
        with pytest.raises(imaplib.IMAP4.error):
            m.login("alice", "")
        m.logout()
        assert [e["result"] for e in fg.events("login")][:3] == ["ok", "ok", "ok"]
    finally:
        assert fg.stop() == 0


def test_mock_as_forestgate_backend_in_master_user_mode(make_mock, tmp_path):
    im = make_mock("imap")
    pm = make_mock("pop3")
    pw = tmp_path / "master.pw"
    pw.write_text("master-secret\n")
    fg = Forestgate(str(tmp_path / "fg"), imap_backend_port=im.port, pop3_backend_port=pm.port,
                    settings={"backend": {"LoginMode": "MasterUser", "MasterUser": "m",
                                          "MasterPasswordFile": str(pw),
                                          "AllowUncheckedMasterLogin": "true"}}).start()
    try:
        m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
        assert m.login("alice", "anything")[0] == "OK"
        m.select("INBOX")
        assert m.uid("FETCH", "1", "(BODY.PEEK[])")[0] == "OK"
        m.logout()
        p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=10)
        p.user("bob")
        assert p.pass_("anything").startswith(b"+OK")
        assert p.stat()[0] == MESSAGES
        p.quit()
        assert [e["result"] for e in fg.events("login")] == ["ok", "ok"]
    finally:
        assert fg.stop() == 0

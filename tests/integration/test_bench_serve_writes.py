"""forestgate-bench --serve-writes: the MOCK backend cuts a message into writes
as Dovecot 2.3 does (the default), or sends all it has queued (bulk).

Both modes must serve the same bytes; the Dovecot mode must end its writes
where Dovecot ended them when bench/dovecot-writes traced it (BENCHMARKS.md,
"How Dovecot writes"). The write pattern is read with strace from the mock's
side: a client cannot see write boundaries through TCP.
"""

import collections
import imaplib
import itertools
import poplib
import re
import signal
import subprocess
import time

MIB = 1 << 20
WRITE_RX = re.compile(r"^(?:\d+\s+)?(sendmsg|write|writev)\((\d+),.* = (\d+)$")
# Literal lengths around Dovecot's 8 KiB block: one write below it, blocks from it.
PARTIALS = [(0, 100), (0, 4096), (0, 8191), (0, 8192), (5, 8193), (100, 20000), (0, 70000)]


def imap_login(mock) -> imaplib.IMAP4:
    m = imaplib.IMAP4(mock.host, mock.port, timeout=10)
    m.login("alice", "secret")
    m.select("INBOX")
    return m


def imap_fetch(m: imaplib.IMAP4, uid: int, item: str) -> tuple[bytes, bytes]:
    typ, data = m.uid("FETCH", str(uid), f"({item})")
    assert typ == "OK", data
    return data[0]


def pop3_login(mock) -> poplib.POP3:
    p = poplib.POP3(mock.host, mock.port, timeout=10)
    p.user("alice")
    p.pass_("secret")
    return p


def test_dovecot_and_bulk_writes_serve_the_same_messages(make_mock):
    size = 3 * 8192 + 1234
    got = {}
    for mode in ("dovecot", "bulk"):
        extra = ("--serve-writes", mode)
        im = make_mock("imap", messages=2, msg_size=size, extra=extra)
        pm = make_mock("pop3", messages=2, msg_size=size, extra=extra)
        m = imap_login(im)
        full = imap_fetch(m, 2, "BODY.PEEK[]")
        assert full[0].endswith(b"BODY[] {%d}" % size) and len(full[1]) == size
        assert b"Subject: mock message 2\r\n" in full[1] and full[1].endswith(b"\r\n")
        parts = [imap_fetch(m, 1, f"BODY.PEEK[]<{o}.{n}>") for o, n in PARTIALS]
        text = imap_fetch(m, 1, "BODY.PEEK[TEXT]")
        m.logout()
        p = pop3_login(pm)
        resp, lines, octets = p.retr(2)
        top = p.top(1, 3)
        p.quit()
        assert resp == b"+OK %d octets" % size
        assert b"\r\n".join(lines) + b"\r\n" == full[1]  # poplib took the dots off
        got[mode] = (full, parts, text, lines, top)
    assert got["dovecot"] == got["bulk"]
    one = got["dovecot"][1][-1][1]  # message 1 from offset 0, whole
    for (o, n), (_, lit) in zip(PARTIALS, got["dovecot"][1]):
        assert lit == one[o:o + n]


class Strace:
    """strace -f on the mock for the length of a with block; .writes is the
    list of byte counts written to the busiest descriptor (the client's)."""

    def __init__(self, pid: int, path):
        self.pid, self.path = pid, str(path)

    def __enter__(self):
        self.proc = subprocess.Popen(
            ["strace", "-f", "-e", "trace=write,writev,sendmsg", "-o", self.path,
             "-p", str(self.pid)], stderr=subprocess.PIPE, text=True)
        assert "attached" in self.proc.stderr.readline()
        time.sleep(0.3)  # every thread of the mock
        return self

    def __exit__(self, *exc):
        time.sleep(0.2)
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(10)
        calls = []
        with open(self.path) as f:
            for line in f:
                m = WRITE_RX.match(line.strip())
                if m:
                    calls.append((int(m.group(2)), int(m.group(3))))
        fd = collections.Counter(fd for fd, _ in calls).most_common(1)[0][0]
        self.writes = [n for f, n in calls if f == fd]


def assert_cut_at(writes: list[int], pieces: list[int]) -> None:
    """The writes end wherever Dovecot's did (pieces), and no write spans
    two pieces. A full socket may split a piece into several writes."""
    assert sum(writes) == sum(pieces), (writes, pieces)
    ends = set(itertools.accumulate(writes))
    assert set(itertools.accumulate(pieces)) <= ends, (writes, pieces)


def test_imap_fetch_is_written_as_dovecot_writes_it(make_mock, tmp_path):
    mock = make_mock("imap", messages=2, msg_size=MIB)
    m = imap_login(mock)
    with Strace(mock.proc.pid, tmp_path / "big.strace") as big:
        head, body = imap_fetch(m, 2, "BODY.PEEK[]")
    with Strace(mock.proc.pid, tmp_path / "small.strace") as small:
        head4, body4 = imap_fetch(m, 1, "BODY.PEEK[]<0.4096>")
    m.logout()
    assert len(body) == MIB and len(body4) == 4096
    # The FETCH line alone, 128 blocks of 8 KiB, then ")" with the tagged reply.
    line = len(b"* 2 FETCH (UID 2 BODY[] {1048576}\r\n")
    tail = sum(big.writes) - line - MIB
    assert_cut_at(big.writes, [line] + [8192] * 128 + [tail])
    assert 3 + len(" OK Fetch completed.\r\n") < tail < 64
    # Below one block: the FETCH line, the literal and ")" in one write, then
    # the tagged reply.
    line4 = len(b"* 1 FETCH (UID 1 BODY[]<0> {4096}\r\n") + 4096 + 3
    tail4 = sum(small.writes) - line4
    assert_cut_at(small.writes, [line4, tail4])
    assert len(" OK Fetch completed.\r\n") < tail4 < 64


def test_pop3_retr_is_written_as_dovecot_writes_it(make_mock, tmp_path):
    mock = make_mock("pop3", messages=2, msg_size=MIB)
    p = pop3_login(mock)
    with Strace(mock.proc.pid, tmp_path / "retr.strace") as tr:
        resp, lines, octets = p.retr(2)
    p.quit()
    assert octets == MIB
    status = len(resp) + 2
    # The body on the wire is longer than the message: its dot lines are stuffed.
    stuffed = sum(len(l) + 2 for l in lines) + sum(l.startswith(b".") for l in lines)
    full, rest = divmod(stuffed, 4096)
    # The status line with the first 4 KiB, 4 KiB at a time, the end mark with the rest.
    assert_cut_at(tr.writes, [status + 4096] + [4096] * (full - 1) + [rest + 3])
    assert max(tr.writes) == status + 4096


def test_bulk_writes_keep_the_fetch_line_with_the_message(make_mock, tmp_path):
    mock = make_mock("imap", messages=2, msg_size=MIB, extra=("--serve-writes", "bulk"))
    m = imap_login(mock)
    with Strace(mock.proc.pid, tmp_path / "bulk.strace") as tr:
        imap_fetch(m, 2, "BODY.PEEK[]")
    m.logout()
    # One sendmsg for all; only a full socket buffer ends it sooner.
    assert tr.writes[0] > 8192 + 64 and len(tr.writes) < 128


def test_bad_serve_writes_is_an_option_error(tmp_path):
    from tests.lib.forestgate import bench_binary
    r = subprocess.run([bench_binary(), "--serve", "imap", "--port", "1", "--serve-writes",
                        "fast"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "--serve-writes must be dovecot or bulk, not 'fast'" in r.stderr

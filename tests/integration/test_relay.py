"""The clear relay's two ways (core/relay.c): a small chunk is taken by a
receive into a ring buffer and sent at once; a receive of a block or more
(4 KiB) hands the direction to splice until the source is drained.
Against a Dovecot of the module's own, so the counters see only these
sessions.
"""

import imaplib
import os
import poplib
import signal
import time

import pytest

from tests.lib.dovecot import Dovecot
from tests.lib.forestgate import Raw

USER, PW = "relay", "relay pw"
SMALL = b"From: a@b\r\nSubject: small\r\n\r\n" + b"".join(
    b"%02d a small message, one receive and one send each way\r\n" % i for i in range(50))
# 1 MiB and more: at 16 KiB a receive, 64 of them or more.
LARGE = b"From: a@b\r\nSubject: large\r\n\r\n" + b"".join(
    b"%06d relayed through a pipe, not a ring buffer, when it comes fast\r\n" % i
    for i in range(16 * 1024))


@pytest.fixture(scope="module")
def dc(workroot):
    d = Dovecot(os.path.join(workroot, "relay-dovecot"), {USER: PW})
    d.deliver(USER, SMALL)
    d.deliver(USER, LARGE)
    d.start()
    yield d
    d.stop()


def gateway(make_fg, dc):
    return make_fg({"global": {"Workers": "1"}}, imap_backend_port=dc.imap_port,
                   pop3_backend_port=dc.pop3_port)


def relay_counters(fg):
    s = fg.stats()
    return s["relay_received_total"], s["relayed_backend_to_client_bytes"]


def test_small_chunks_go_by_one_receive_and_one_send(make_fg, dc):
    fg = gateway(make_fg, dc)
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=20)
    m.login(USER, PW)
    m.select("INBOX", readonly=True)
    before, _ = relay_counters(fg)
    for _ in range(20):
        assert m.noop()[0] == "OK"
    # Each NOOP is a chunk each way: a build that waits with POLLIN and
    # splices counts none.
    after, _ = relay_counters(fg)
    assert after - before >= 40
    assert m.uid("FETCH", "1", "(BODY.PEEK[])")[1][0][1] == SMALL
    m.logout()


def test_a_large_transfer_is_spliced_once_a_receive_comes_full(make_fg, dc):
    fg = gateway(make_fg, dc)
    with Raw(fg.imap_port, timeout=30) as c:
        c.line()
        c.send(b'a LOGIN relay "relay pw"\r\nb SELECT INBOX\r\n')
        c.until(b"b OK")
        before, bytes_before = relay_counters(fg)
        # forestgate stopped while Dovecot writes: the message waits in the
        # backend socket, and the first receive after SIGCONT fills its buffer.
        os.kill(fg.proc.pid, signal.SIGSTOP)
        try:
            c.send(b"f UID FETCH 2 (BODY.PEEK[])\r\n")
            time.sleep(0.5)
        finally:
            os.kill(fg.proc.pid, signal.SIGCONT)
        head = c.line()
        assert head.startswith(b"* 2 FETCH") and head.rstrip().endswith(b"}"), head
        size = int(head[head.rindex(b"{") + 1:head.rindex(b"}")])
        assert c.read_exact(size) == LARGE
        assert c.until(b"f ")[-1].startswith(b"f OK")
        after, bytes_after = relay_counters(fg)
        assert bytes_after - bytes_before >= len(LARGE)
        # Receives alone take one per 16 KiB at least (72-75 measured).
        # With splice behind the first full one: the bytes that waited in
        # the socket (about 860 KiB here) go by splice, the rest in Dovecot's
        # 8 KiB writes as they come (5-21 measured).
        assert after - before < len(LARGE) // (16 * 1024) * 3 // 4, (after - before)
        c.send(b"z LOGOUT\r\n")
        assert c.closed()


def test_pop3_large_and_small_through_both_ways(make_fg, dc):
    fg = gateway(make_fg, dc)
    p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=30)
    p.user(USER)
    p.pass_(PW)
    for n, want in ((2, LARGE), (1, SMALL), (2, LARGE)):
        lines = p.retr(n)[1]
        assert b"\r\n".join(lines) + b"\r\n" == want
    p.quit()

"""Many sessions at once: all succeed, and every count returns to zero.

The backend is a Dovecot of this test's own, sized for the burst the way its
users size it for many sessions: each imap/pop3 process serves up to 100
sessions (client_limit, service_count = 0), and eight of each are started
before the burst (process_min_avail). With the shared Dovecot's one process
per session, 1,000 logins in one burst measured Dovecot's process spawning
(its log: "Timeout waiting for handshake response" from the stats writer),
not forestgate.
"""

import asyncio
import os

import pytest

from conftest import PASSWORDS
from tests.lib.dovecot import Dovecot

SESSIONS = 1000


async def imap_session(port, user, password, held, release):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert (await r.readline()).startswith(b"* OK")
        w.write(b'a LOGIN %s "%s"\r\n' % (user.encode(), password.encode()))
        line = await r.readline()
        while line.startswith(b"*"):
            line = await r.readline()
        assert line.startswith(b"a OK"), line
        held.append(1)
        await release.wait()
        w.write(b"b SELECT INBOX\r\nc LOGOUT\r\n")
        lines = []
        while not (lines and lines[-1].startswith(b"c ")):
            lines.append(await r.readline())
        assert any(l.startswith(b"b OK") for l in lines) and lines[-1].startswith(b"c OK")
        return True
    finally:
        w.close()


async def pop3_session(port, user, password, held, release):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert (await r.readline()).startswith(b"+OK")
        w.write(b"USER %s\r\nPASS %s\r\n" % (user.encode(), password.encode()))
        assert (await r.readline()).startswith(b"+OK")
        assert (await r.readline()).startswith(b"+OK Logged in")
        held.append(1)
        await release.wait()
        w.write(b"STAT\r\nQUIT\r\n")
        assert (await r.readline()).startswith(b"+OK")
        assert (await r.readline()).startswith(b"+OK")
        return True
    finally:
        w.close()


async def run_all(fg):
    held, release = [], asyncio.Event()
    tasks = []
    for i in range(SESSIONS):
        user = "alice" if i % 2 else "space"
        fn = imap_session if i % 2 else pop3_session
        port = fg.imap_port if i % 2 else fg.pop3_port
        tasks.append(asyncio.create_task(fn(port, user, PASSWORDS[user], held, release)))
    for _ in range(1200):
        if len(held) == SESSIONS or any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.05)
    during = fg.stats()
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return during, results


@pytest.fixture(scope="module")
def burst_dovecot(workroot):
    users = {u: PASSWORDS[u] for u in ("alice", "space")}
    dc = Dovecot(os.path.join(workroot, "dovecot-scale"), users, imap_client_limit=100,
                 process_limit=40, mail_procs_min=8)
    dc.start()
    yield dc
    dc.stop()


@pytest.fixture
def fg(make_fg, burst_dovecot):
    # Two users hold 500 sessions each: past Exchange's MaxConnectionsPerUser
    # default of 16.
    many = {"MaxConnectionsPerUser": str(SESSIONS)}
    return make_fg({"imap": dict(many), "pop3": dict(many)},
                   imap_backend_port=burst_dovecot.imap_port,
                   pop3_backend_port=burst_dovecot.pop3_port)


def test_thousand_parallel_sessions(fg):
    base_fds = fg.fd_count()
    during, results = asyncio.run(run_all(fg))
    failures = [r for r in results if r is not True]
    assert not failures, failures[:5]
    assert during["relay"] == SESSIONS and during["backend_connections"] == SESSIONS
    st = fg.wait_idle(timeout=30)
    assert st["logins_ok_total"] == SESSIONS
    assert st["logins_failed_total"] == 0
    assert st["relay"] == 0 and st["login"] == 0 and st["closing"] == 0
    assert fg.fd_count() == base_fds

"""BatchWaitMicroseconds: a worker with several busy sessions gathers
completions before it wakes; a lone session never waits; 0 turns it off.
Every case checks that the bytes relayed are still exact."""

import concurrent.futures
import imaplib
import platform
import subprocess
import time

from conftest import PASSWORDS
from tests.lib.forestgate import binary

USER = "equals"
# Linux 6.12 added io_uring's min_wait; below it the setting has no effect.
KERNEL_BATCHES = tuple(int(x) for x in platform.release().split("-")[0].split(".")[:2]) >= (6, 12)


def message() -> bytes:
    body = b"".join(b"batch %05d %s\r\n" % (i, b"b" * 60) for i in range(1000))
    return b"Subject: batch\r\n\r\n" + body


def fetch_many(fg, uid: bytes, msg: bytes, times: int) -> bool:
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=30)
    m.login(USER, PASSWORDS[USER])
    m.select("INBOX", readonly=True)
    ok = all(m.uid("FETCH", uid, "(BODY.PEEK[])")[1][0][1] == msg for _ in range(times))
    m.logout()
    return ok


def last_uid(fg) -> bytes:
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=30)
    m.login(USER, PASSWORDS[USER])
    m.select("INBOX", readonly=True)
    uid = m.uid("SEARCH", None, "ALL")[1][0].split()[-1]
    m.logout()
    return uid


def busy(fg, msg: bytes, sessions: int = 12, times: int = 40) -> dict:
    uid = last_uid(fg)
    before = fg.stats()
    with concurrent.futures.ThreadPoolExecutor(sessions) as ex:
        assert all(ex.map(lambda _: fetch_many(fg, uid, msg, times), range(sessions)))
    after = fg.stats()
    return {k: after[k] - before[k] for k in ("waits_total", "batched_waits_total")}


def test_busy_sessions_batch_their_waits_and_every_byte_arrives(make_fg, dovecot):
    msg = message()
    dovecot.deliver(USER, msg)
    fg = make_fg({"global": {"Workers": "1", "BatchWaitMicroseconds": "500"}})
    assert "BatchWaitMicroseconds = 500" in fg.ask("show settings")
    d = busy(fg, msg)
    assert d["waits_total"] > 0
    if KERNEL_BATCHES:
        assert d["batched_waits_total"] > 0, d
    else:
        assert d["batched_waits_total"] == 0 and "cannot batch waits" in fg.log_text()


def test_zero_turns_batching_off(make_fg, dovecot):
    msg = message()
    dovecot.deliver(USER, msg)
    fg = make_fg({"global": {"Workers": "1", "BatchWaitMicroseconds": "0"}})
    d = busy(fg, msg)
    assert d["waits_total"] > 0 and d["batched_waits_total"] == 0, d


def test_a_lone_session_never_waits_for_others(make_fg, dovecot):
    msg = message()
    dovecot.deliver(USER, msg)
    fg = make_fg({"global": {"Workers": "1", "BatchWaitMicroseconds": "1000"}})
    uid = last_uid(fg)
    before = fg.stats()
    assert fetch_many(fg, uid, msg, 60)
    after = fg.stats()
    assert after["waits_total"] > before["waits_total"]
    assert after["batched_waits_total"] == before["batched_waits_total"]


def noop_trickle(fg, seconds: float) -> bool:
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=30)
    m.login(USER, PASSWORDS[USER])
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if m.noop()[0] != "OK":
            return False
        time.sleep(0.005)
    m.logout()
    return True


def test_a_trickle_of_commands_does_not_batch(make_fg, dovecot):
    """Eight sessions, each a NOOP every 5 ms: every 10 ms window sees more
    than 4 busy sessions, but a wait of 200 us gathers one completion or
    none, and a few bytes. Batching them would only add a timer wake-up and latency to every
    command: after a window that shows it, waits stop batching for 20 windows
    and then try again, so only the tries batch."""
    fg = make_fg({"global": {"Workers": "1", "BatchWaitMicroseconds": "200"}})
    before = fg.stats()
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        assert all(ex.map(lambda _: noop_trickle(fg, 3.0), range(8)))
    after = fg.stats()
    cqes = int(after["completions_total"]) - int(before["completions_total"])
    waits = int(after["waits_total"]) - int(before["waits_total"])
    batched = int(after["batched_waits_total"]) - int(before["batched_waits_total"])
    assert cqes > 8 * 200, (cqes, waits)  # every NOOP and its reply are completions
    assert batched <= waits // 5, (cqes, waits, batched)


def test_out_of_range_is_a_configuration_error(tmp_path):
    path = tmp_path / "bad.ini"
    path.write_text("[global]\nBatchWaitMicroseconds = 5000\n[imap]\n"
                    "UnencryptedOrTLSBindings = 127.0.0.1:1143\n[backend]\n"
                    "DefaultServer = 127.0.0.1\n")
    r = subprocess.run([binary(), "-c", str(path), "--check-config"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1
    assert f"{path}:2: BatchWaitMicroseconds" in r.stderr, r.stderr

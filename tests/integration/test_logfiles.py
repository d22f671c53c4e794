"""The log files: EventLogFile, roll-over by size and by period, LogFileMaxAge
and LogDirectorySizeQuota, reopening after logrotate's rename (SIGHUP), lines
dropped (and counted) rather than a worker waiting for a log that takes
nothing, the settings' errors, and the fail2ban filter in contrib/ run by
Debian's fail2ban-regex against the lines a real run writes."""

import fcntl
import imaplib
import os
import re
import signal
import subprocess
import threading
import time

from tests.lib.forestgate import ROOT, Raw, binary, parse_logfmt

FILTER = os.path.join(ROOT, "contrib", "fail2ban", "filter.d", "forestgate.conf")
ROLLED = r"-(\d{8}(?:T\d{2}(?:\d{4})?)?)-(\d+)\.log$"


def logon(fg, password="secret", user="alice"):
    """One IMAP logon through forestgate; True when it succeeded."""
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
    try:
        m.login(user, password)
        m.logout()
        return True
    except imaplib.IMAP4.error:
        m.shutdown()
        return False


def wait_for(cond, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not (v := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout}s")
        time.sleep(0.05)
    return v


def read(path):
    with open(path, "rb") as f:
        return f.read().decode()


def rolled(folder, stem):
    """The log's rolled files, oldest first (by stamp, then number)."""
    out = []
    for name in os.listdir(folder):
        m = re.match(re.escape(stem) + ROLLED, name)
        if m:
            out.append((m.group(1), int(m.group(2)), name))
    return [os.path.join(folder, n) for _, _, n in sorted(out)]


def logins(text):
    return [parse_logfmt(l) for l in text.splitlines() if " event=login " in l]


def whole_lines(text):
    """Every line of a log file complete: ends with a newline, starts with
    its time (ts= in the event log)."""
    assert text == "" or text.endswith("\n"), text[-200:]
    for line in text.splitlines():
        assert re.match(r"(ts=)?\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", line), line


def test_event_log_file_takes_the_event_log(make_fg):
    fg = make_fg({}, start=False)
    path = fg.sections["global"]["EventLogFile"] = os.path.join(fg.workdir, "events.log")
    fg.start()
    assert logon(fg) and not logon(fg, "wrong")
    wait_for(lambda: len(logins(read(path))) == 2, "two login lines in EventLogFile")
    lines = logins(read(path))
    assert [e["result"] for e in lines] == ["ok", "failed"]
    assert "event=started" in read(path)
    # stderr has none of it: the file has the event log.
    assert "event=login" not in fg.log_text()
    st = fg.stats()
    assert st["log_event_written_total"] >= 3
    assert st["log_event_dropped_total"] == 0
    assert st["log_event_rollovers_total"] == 0
    assert st["log_event_queued"] == 0
    assert "wrong" not in read(path)


def test_rollover_by_size_keeps_lines_whole_and_in_order(make_fg):
    fg = make_fg({"global": {"LogPerFileSizeQuota": "2KB"},
                  "imap": {"ProtocolLogEnabled": "true"}})
    active = os.path.join(fg.workdir, "imap-protocol.log")
    for i in range(12):
        assert logon(fg)
    fg.wait_idle()
    wait_for(lambda: read(active).count("LOGIN completed") + sum(
        read(p).count("LOGIN completed") for p in rolled(fg.workdir, "imap-protocol")) == 12,
        "every logon in the protocol log")
    files = rolled(fg.workdir, "imap-protocol")
    assert len(files) >= 3, os.listdir(fg.workdir)
    # Named by the day the lines were written (UTC), numbered from 1.
    names = [re.fullmatch(r"imap-protocol-(\d{8})-(\d+)\.log", os.path.basename(p))
             for p in files]
    assert all(names), files
    days = sorted({m.group(1) for m in names})
    assert days[-1] in {time.strftime("%Y%m%d", time.gmtime(time.time() - d)) for d in (0, 60)}
    assert len(days) <= 2
    for day in days:
        assert sorted(int(m.group(2)) for m in names if m.group(1) == day) == \
            list(range(1, 1 + sum(m.group(1) == day for m in names)))
    text = ""
    for p in files + [active]:
        t = read(p)
        whole_lines(t)
        # Within the quota, unless one line alone is longer.
        assert len(t.encode()) <= 2048 or t.count("\n") == 1
        text += t
    # Together, in order: each session's lines in sequence, none lost.
    stamps = [l.split(" ", 1)[0] for l in text.splitlines()]
    assert stamps == sorted(stamps)
    assert text.count(" LOGIN alice <redacted>") == 12
    assert "secret" not in text
    st = fg.stats()
    assert st["log_imap_protocol_rollovers_total"] == len(files)
    assert st["log_imap_protocol_written_total"] == text.count("\n")
    assert st["log_imap_protocol_dropped_total"] == 0


def test_rollover_by_time(make_fg):
    fg = make_fg({"global": {"LogFileRollOverSeconds": "1"}}, start=False)
    path = fg.sections["global"]["EventLogFile"] = os.path.join(fg.workdir, "events.log")
    started = time.time()
    fg.start()
    assert not logon(fg, "first")
    wait_for(lambda: "result=failed" in read(path), "the first logon written")
    time.sleep(1.2)
    assert logon(fg)
    all_files = lambda: rolled(fg.workdir, "events") + [path]
    wait_for(lambda: any("result=ok" in read(p) for p in all_files()), "the second logon")
    files = rolled(fg.workdir, "events")
    assert files, os.listdir(fg.workdir)
    # A test's period in seconds: the stamp has them.
    assert all(re.search(r"-\d{8}T\d{6}-\d+\.log$", p) for p in files)
    where = {e["result"]: p for p in all_files() for e in logins(read(p))}
    assert where["failed"] != where["ok"]
    assert where["failed"] in files
    # Each name gives the second its file was started in (UTC), in order.
    stamps = [re.search(r"-(\d{8}T\d{6})-", p).group(1) for p in files]
    assert all(time.strftime("%Y%m%dT%H%M%S", time.gmtime(started - 1)) <= s <=
               time.strftime("%Y%m%dT%H%M%S", time.gmtime()) for s in stamps), stamps
    assert fg.stats()["log_event_rollovers_total"] == len(files)


def test_max_age_and_directory_quota_remove_only_old_rolled_files(make_fg):
    fg = make_fg({"imap": {"ProtocolLogEnabled": "true"},
                  "global": {"LogFileMaxAge": "2.00:00:00",
                             "LogDirectorySizeQuota": "12KB"}}, start=False)
    d = fg.workdir
    now = time.time()

    def make(name, age, size=5000):
        p = os.path.join(d, name)
        with open(p, "w") as f:
            f.write("x" * size)
        os.utime(p, (now - age, now - age))
        return p

    ancient = make("imap-protocol-20200101-1.log", 400 * 86400)
    older = make("imap-protocol-20261201-1.log", 86400 + 3600)
    newer = make("imap-protocol-20261202-1.log", 3600)
    newest = make("imap-protocol-20261202-2.log", 1800)
    # Not the log's rolled files: left alone, however old.
    keep = [make("imap-protocol-notes.log", 900 * 86400),
            make("imap-protocol-2020-1.log", 900 * 86400),
            make("pop3-protocol-20200101-1.log", 900 * 86400),
            make("other-20200101-1.log", 900 * 86400)]
    fg.start()
    # Past LogFileMaxAge: gone; then the oldest until 12 KB hold the rest.
    assert not os.path.exists(ancient)
    assert not os.path.exists(older)
    assert os.path.exists(newer) and os.path.exists(newest)
    assert all(os.path.exists(p) for p in keep)


def test_directory_quota_after_rollovers(make_fg):
    fg = make_fg({"imap": {"ProtocolLogEnabled": "true"},
                  "global": {"LogPerFileSizeQuota": "1KB", "LogDirectorySizeQuota": "3KB"}})
    for _ in range(10):
        assert logon(fg)
    fg.wait_idle()
    st = wait_for(lambda: (s := fg.stats())["log_imap_protocol_rollovers_total"] >= 5 and s,
                  "roll-overs")
    files = rolled(fg.workdir, "imap-protocol")
    assert 0 < len(files) < st["log_imap_protocol_rollovers_total"]
    assert sum(os.path.getsize(p) for p in files) <= 3 * 1024


def test_reopen_after_rename_on_sighup_and_reload(make_fg):
    fg = make_fg({}, start=False)
    path = fg.sections["global"]["EventLogFile"] = os.path.join(fg.workdir, "events.log")
    fg.start()
    assert not logon(fg, "before-rotation")
    wait_for(lambda: "result=failed" in read(path), "the first logon written")
    os.rename(path, path + ".1")
    fg.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: os.path.exists(path), "a new file after SIGHUP")
    assert logon(fg)
    wait_for(lambda: "result=ok" in read(path), "the second logon in the new file")
    old = read(path + ".1")
    whole_lines(old)
    assert "result=failed" in old and "result=ok" not in old
    assert "result=failed" not in read(path)
    # The stats socket's reload does the same.
    os.rename(path, path + ".2")
    assert "reloaded" in fg.stats("reload")["text"]
    wait_for(lambda: os.path.exists(path), "a new file after reload")
    assert not logon(fg, "after-reload")
    wait_for(lambda: "result=failed" in read(path), "the third logon in the newest file")
    assert "result=ok" in read(path + ".2") and "result=failed" not in read(path + ".2")


def test_lines_dropped_not_waited_for_when_the_log_takes_nothing(make_fg):
    """EventLogFile is a FIFO nobody reads: the writer cannot write, the
    queue fills, lines are dropped and counted, and logons go on."""
    fg = make_fg({"global": {"LogQueueSize": "16KB"}}, start=False)
    path = fg.sections["global"]["EventLogFile"] = os.path.join(fg.workdir, "events.fifo")
    os.mkfifo(path)
    # Held open for reading (so forestgate's open does not wait), never read.
    rfd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.fcntl(rfd, fcntl.F_SETPIPE_SZ, 4096)
        fg.start()
        n = 0
        while fg.stats()["log_event_dropped_total"] == 0:
            assert logon(fg)
            n += 1
            assert n < 500, fg.stats()
        st = fg.stats()
        assert st["log_event_dropped_total"] > 0 and st["logins_ok_total"] == n
        assert st["log_event_queued"] > 0  # a full queue, waiting for the FIFO
        # The metrics say the same.
        metrics = fg.stats("show metrics")["text"]
        dropped = re.search(r'^forestgate_log_lines_dropped_total\{log="event"\} (\d+)$',
                            metrics, re.M)
        assert dropped and int(dropped.group(1)) >= st["log_event_dropped_total"], metrics
        # Read it now: what was written is whole lines, and the writer
        # catches up with what it still holds.
        chunks = []
        stop = threading.Event()

        def drain():
            while not stop.is_set():
                try:
                    chunks.append(os.read(rfd, 65536))
                except BlockingIOError:
                    time.sleep(0.01)

        t = threading.Thread(target=drain)
        t.start()
        try:
            assert fg.stop() == 0
        finally:
            stop.set()
            t.join()
        # What forestgate wrote last may still be in the FIFO: the drain may
        # have stopped between its last read and forestgate's last write.
        while True:
            try:
                data = os.read(rfd, 65536)
            except BlockingIOError:
                break
            if not data:
                break
            chunks.append(data)
        text = b"".join(chunks).decode()
        whole_lines(text)
        # Written at exit, after the drops: the queue was emptied first.
        assert text.splitlines()[-1].split()[2] == "event=stopped"
        # Each logon made a login and a disconnect line; the dropped ones
        # (counted by then, or after) are missing.
        made = [l for l in text.splitlines() if " event=login " in l or " event=disconnect " in l]
        assert len(made) <= 2 * n - st["log_event_dropped_total"]
    finally:
        os.close(rfd)


def check(tmp_path, extra):
    path = tmp_path / "fg.ini"
    path.write_text("[global]\n" + extra + "[imap]\nUnencryptedOrTLSBindings = 127.0.0.1:1143\n"
                    "LoginType = PlainTextLogin\n[backend]\nDefaultServer = 127.0.0.1\n")
    return path, subprocess.run([binary(), "-c", str(path), "--check-config"],
                                capture_output=True, text=True, timeout=30)


def test_settings_errors_name_file_and_line(tmp_path):
    path, r = check(tmp_path, "LogFileRollOverSettings = Weekly\n"
                              "LogPerFileSizeQuota = 10 XB\n"
                              "LogFileMaxAge = 30 days\n"
                              "LogDirectorySizeQuota = -1\n"
                              "LogQueueSize = 1KB\n"
                              f"EventLogFile = {tmp_path}/missing/events.log\n"
                              "LogFileRollOverSeconds = 86401\n")
    assert r.returncode == 1
    assert f"{path}:2: LogFileRollOverSettings: expected Hourly or Daily" in r.stderr
    assert f"{path}:3: LogPerFileSizeQuota: expected a size" in r.stderr
    assert f"{path}:4: LogFileMaxAge: expected a time" in r.stderr
    assert f"{path}:5: LogDirectorySizeQuota: expected a size" in r.stderr
    assert f"{path}:6: LogQueueSize: expected a size from 16384" in r.stderr
    assert f"{path}:7: EventLogFile {tmp_path}/missing/events.log: {tmp_path}/missing is " \
           "not a writable folder" in r.stderr
    assert f"{path}:8: LogFileRollOverSeconds: expected a number from 0 to 86400" in r.stderr
    assert "7 errors" in r.stderr


def test_settings_accepted_and_shown(tmp_path, make_fg):
    path, r = check(tmp_path, "LogFileRollOverSettings = hourly\nLogPerFileSizeQuota = 10 MB\n"
                              "LogFileMaxAge = 7.00:00:00\nLogDirectorySizeQuota = Unlimited\n"
                              f"EventLogFile = {tmp_path}/events.log\n")
    assert r.returncode == 0, r.stderr
    fg = make_fg({"global": {"LogFileRollOverSettings": "Hourly",
                             "LogPerFileSizeQuota": "10 MB", "LogFileMaxAge": "7.00:00:00"}})
    shown = fg.stats("show settings")["text"]
    assert "LogFileRollOverSettings = Hourly" in shown
    assert "LogPerFileSizeQuota = 10485760" in shown
    assert "LogFileMaxAge = 7.00:00:00" in shown
    assert "LogDirectorySizeQuota = 0" in shown


def fail2ban(path, *args):
    return subprocess.run(["fail2ban-regex", *args, path, FILTER], capture_output=True,
                          text=True, timeout=60)


def test_fail2ban_filter_matches_failed_logons_only(make_fg, tmp_path):
    fg = make_fg({}, start=False)
    fg.sections["imap"]["UnencryptedOrTLSBindings"] += f", [::1]:{fg.imap_port}"
    path = fg.sections["global"]["EventLogFile"] = os.path.join(fg.workdir, "events.log")
    fg.start()

    def fail(source, host="127.0.0.1", user=b"alice"):
        with Raw(fg.imap_port, host=host, source=source) as c:
            c.line()
            c.send(b"a LOGIN " + user + b" wrong\r\n")
            assert c.until(b"a ")[-1].startswith(b"a NO")

    fail("127.0.0.2")
    fail("127.0.0.2")
    fail("::1", host="::1")
    # A name that tries to put another address and result on the line.
    fail("127.0.0.3", user=b'"x client=10.9.9.9 result=failed"')
    assert logon(fg)
    wait_for(lambda: len(logins(read(path))) == 5, "five login lines")
    r = fail2ban(path, "-o", "ip")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == ["127.0.0.2", "127.0.0.2", "127.0.0.3", "::1"], r.stdout
    # The successful logon's line alone matches nothing.
    ok = tmp_path / "ok.log"
    ok.write_text("".join(l + "\n" for l in read(path).splitlines() if "result=ok" in l))
    assert ok.read_text().count("\n") == 1
    r = fail2ban(str(ok))
    assert r.returncode == 0, r.stderr
    assert re.search(r"Lines: 1 lines, 0 ignored, 0 matched, 1 missed", r.stdout), r.stdout

"""forestgate ctl: the stats socket's client, and ctl watch as a person sees
it in a terminal (a real tmux pane, read with capture-pane).

Every command is also sent through socat, which the README shows: the
socket's protocol (one line in, the answer, close) must not need ctl.
"""

import imaplib
import os
import re
import socket
import subprocess
import threading
import time

import pytest

from tests.lib.forestgate import binary

USER, PASSWORD = "ctlwatch", "watch pw"
UPLOAD = b"From: a@b\r\nSubject: up\r\n\r\n" + b"u" * 100_000 + b"\r\n"


def ctl(*args, timeout=30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([binary(), "ctl", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def socat(path: str, line: str) -> str:
    return subprocess.run(["socat", "-t", "5", "-", f"UNIX-CONNECT:{path}"], input=line + "\n",
                          capture_output=True, text=True, timeout=30, check=True).stdout


def keys(text: str) -> list[str]:
    return [l.split(":", 1)[0] for l in text.splitlines() if ": " in l]


# ---- one command ----

def test_show_info_and_help(fg):
    r = ctl("-s", fg.stats_path, "show", "info")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    info = dict(l.split(": ", 1) for l in r.stdout.splitlines())
    assert info["version"] and info["connections"] == "0" and "logins_ok_total" in info
    # The same keys, in the same order, as socat gets.
    assert keys(r.stdout) == keys(socat(fg.stats_path, "show info"))

    r = ctl("-s", fg.stats_path, "help")
    assert r.returncode == 0
    server_help = socat(fg.stats_path, "help")
    assert "show info" in server_help
    # The server's list, then the one command only ctl has.
    assert r.stdout.startswith(server_help)
    assert r.stdout[len(server_help):].startswith("watch [-i SECONDS]")

    # Words are joined into the one line the socket reads.
    r = ctl("-s", fg.stats_path, "show", "settings")
    assert r.returncode == 0 and r.stdout == socat(fg.stats_path, "show settings")
    assert f"StatsSocket = {fg.stats_path}" in r.stdout


def test_unknown_command_is_one_error_line(fg):
    r = ctl("-s", fg.stats_path, "frobnicate", "the", "gateway")
    assert r.returncode == 1
    assert len(r.stdout.splitlines()) == 1
    assert r.stdout.startswith("Unknown command") or r.stdout.startswith("error:")
    assert "frobnicate the gateway" in r.stdout
    via_socat = socat(fg.stats_path, "frobnicate the gateway")
    assert via_socat == r.stdout


def test_server_commands_and_their_errors(fg):
    """The server's own error lines give exit status 1; drain answers at once
    and forestgate exits."""
    r = ctl("-s", fg.stats_path, "show", "sessions")
    assert r.returncode == 0 and r.stdout.startswith("# id ")
    for cmd in (["disable", "backend", "nosuch.example"], ["show", "settings", "nosuch"]):
        r = ctl("-s", fg.stats_path, *cmd)
        assert r.returncode == 1, r.stdout
        assert r.stdout.startswith("error:") and len(r.stdout.splitlines()) == 1
        assert r.stdout == socat(fg.stats_path, " ".join(cmd))
    r = ctl("-s", fg.stats_path, "drain", "5")
    assert r.returncode == 0 and r.stdout.startswith("draining")
    assert fg.proc.wait(30) == 0


def test_usage_errors(fg):
    assert ctl().returncode == 2  # no command
    assert ctl("-s", fg.stats_path).returncode == 2
    assert ctl("-s", fg.stats_path, "-c", fg.config_path, "help").returncode == 2
    assert ctl("-s", fg.stats_path, "-t", "soon", "help").returncode == 2
    r = ctl("-s", fg.stats_path, "show\ninfo")
    assert r.returncode == 2 and "one line" in r.stderr
    r = ctl("-s", fg.stats_path, "watch", "-i", "0")
    assert r.returncode == 2 and "-i 0" in r.stderr
    r = ctl("-h")
    assert r.returncode == 0 and "Usage: forestgate ctl" in r.stdout


def test_missing_socket_names_the_path(tmp_path):
    path = str(tmp_path / "nobody-here.sock")
    r = ctl("-s", path, "show", "info")
    assert r.returncode == 2
    assert r.stdout == ""
    assert path in r.stderr and "No such file or directory" in r.stderr
    # A socket file nobody listens on any more.
    dead = str(tmp_path / "dead.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(dead)
    s.close()
    r = ctl("-s", dead, "show", "info")
    assert r.returncode == 2 and dead in r.stderr and "Connection refused" in r.stderr


def test_config_names_the_socket(fg, tmp_path):
    r = ctl("-c", fg.config_path, "show", "info")
    assert r.returncode == 0, r.stderr
    assert "logins_ok_total: 0" in r.stdout
    # Read as forestgate reads it: any case, a comment after the value.
    other = tmp_path / "other.ini"
    other.write_text(f"[imap]\nBanner = hi\n[Global]\nstatssocket = {fg.stats_path} ; here\n")
    r = ctl("-c", str(other), "show", "info")
    assert r.returncode == 0 and "logins_ok_total: 0" in r.stdout
    none = tmp_path / "none.ini"
    none.write_text("[global]\nWorkers = 1\n")
    r = ctl("-c", str(none), "show", "info")
    assert r.returncode == 2 and str(none) in r.stderr and "StatsSocket" in r.stderr
    r = ctl("-c", str(tmp_path / "absent.ini"), "show", "info")
    assert r.returncode == 2 and "absent.ini" in r.stderr


class FakeServer:
    """A stats socket that answers each line with a fixed text (None: never)."""

    def __init__(self, path: str, answer: bytes | None, bytewise: bool = False):
        self.path, self.answer, self.bytewise = path, answer, bytewise
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(path)
        self.sock.listen(4)
        self.held = []
        self.lines = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            data = b""
            while not data.endswith(b"\n"):
                chunk = c.recv(4096)
                if not chunk:
                    break
                data += chunk
            self.lines.append(data)
            if self.answer is None:
                self.held.append(c)
                continue
            if self.bytewise:  # each byte its own read, so a match spans chunks
                for i in range(len(self.answer)):
                    c.sendall(self.answer[i:i + 1])
                    time.sleep(0.002)
            else:
                c.sendall(self.answer)
            c.close()

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


def test_error_answers_and_silence(tmp_path):
    srv = FakeServer(str(tmp_path / "err.sock"), b"error: no such backend host: mbx9\n")
    r = ctl("-s", srv.path, "disable", "backend", "mbx9")
    assert r.returncode == 1
    assert r.stdout == "error: no such backend host: mbx9\n"
    assert srv.lines == [b"disable backend mbx9\n"]
    srv.close()

    srv = FakeServer(str(tmp_path / "ok.sock"), b"backend mbx9 disabled\n")
    r = ctl("-s", srv.path, "disable", "backend", "mbx9")
    assert r.returncode == 0 and r.stdout == "backend mbx9 disabled\n"
    srv.close()

    # reload's answer: a line per protocol, one of them an error.
    reload = b"imap: certificates reloaded (a)\nerror: pop3: cannot read b.pem\nreloaded\n"
    srv = FakeServer(str(tmp_path / "reload.sock"), reload, bytewise=True)
    r = ctl("-s", srv.path, "reload")
    assert r.returncode == 1 and r.stdout == reload.decode()
    srv.close()
    # "error:" inside a line is data (a name), not an error.
    sessions = b"id proto user\n1 imap xerror:y\n2 imap error:z\n"
    srv = FakeServer(str(tmp_path / "sessions.sock"), sessions, bytewise=True)
    r = ctl("-s", srv.path, "show", "sessions")
    assert r.returncode == 0 and r.stdout == sessions.decode()
    srv.close()

    srv = FakeServer(str(tmp_path / "empty.sock"), b"")
    r = ctl("-s", srv.path, "show", "info")
    assert r.returncode == 1 and "without an answer" in r.stderr
    srv.close()

    # A server that never answers: ctl gives up after -t seconds.
    srv = FakeServer(str(tmp_path / "silent.sock"), None)
    r = ctl("-s", srv.path, "-t", "1", "show", "info")
    assert r.returncode == 1
    assert "no answer from" in r.stderr and srv.path in r.stderr
    srv.close()


def test_watch_shows_an_error_answer(tmp_path):
    """A server too busy for another client: its one line, not a blank screen."""
    srv = FakeServer(str(tmp_path / "busy.sock"),
                     b"error: too many stats clients at once; try again\n")
    r = ctl("-s", srv.path, "watch", "-n", "1", stdin=subprocess.DEVNULL)
    assert r.returncode == 0
    assert (f"forestgate is not answering ({srv.path}: error: too many stats clients at once; "
            "try again)") in r.stdout
    assert "logons" not in r.stdout
    srv.close()


def test_watch_plain_snapshots(fg):
    """stdout not a terminal: a snapshot per interval, no escapes."""
    r = ctl("-s", fg.stats_path, "watch", "-i", "0.5", "-n", "2", stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout
    shots = r.stdout.split("---- ")[1:]
    assert len(shots) == 2
    assert "logons total   ok 0   failed 0" in shots[0]
    assert re.search(r"^logons/s +ok -", shots[0], re.M)  # nothing to compare yet
    assert re.search(r"^logons/s +ok 0\.0", shots[1], re.M)
    assert "q quits" not in r.stdout


# ---- ctl watch in a terminal ----

class Tmux:
    """A private tmux server with one shell, driven like a person would."""

    def __init__(self, workdir: str):
        self.sock = os.path.join(workdir, "tmux.sock")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
        self.env.setdefault("TERM", "xterm")

    def tmux(self, *args) -> str:
        return subprocess.run(["tmux", "-S", self.sock, *args], capture_output=True, text=True,
                              env=self.env, timeout=10, check=True).stdout

    def start(self):
        self.tmux("new-session", "-d", "-s", "t", "-x", "120", "-y", "40",
                  "env PS1='ctl-test$ ' bash --norc --noprofile")

    def run(self, line: str):
        self.tmux("send-keys", "-t", "t", line, "Enter")

    def keys(self, *keys):
        self.tmux("send-keys", "-t", "t", *keys)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def wait(self, pred, timeout: float = 30.0, what: str = "") -> str:
        deadline = time.monotonic() + timeout
        while True:
            s = self.screen()
            try:
                if pred(s):
                    return s
            except (TypeError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"screen never showed {what}:\n{s}")
            time.sleep(0.2)

    def stop(self):
        subprocess.run(["tmux", "-S", self.sock, "kill-server"], capture_output=True,
                       env=self.env, timeout=10)


def row(screen: str, title: str) -> str:
    for line in screen.splitlines():
        if line.startswith(title + " "):
            return line
    return ""


def field(screen: str, title: str, label: str) -> float | None:
    """A number on the screen: the row's field; None for "-" or absent."""
    m = re.search(r"\s" + re.escape(label) + r" (\S+)", row(screen, title))
    if not m or m.group(1) == "-":
        return None
    return float(m.group(1))


@pytest.fixture
def tmux(tmp_path):
    t = Tmux(str(tmp_path))
    t.start()
    yield t
    t.stop()


def logon(fg, password=PASSWORD):
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
    try:
        m.login(USER, password)
        m.logout()
    except imaplib.IMAP4.error:
        m.shutdown()


def traffic(fg, stop: threading.Event, errors: list):
    """A session fetching its 1 MB message and appending 100 kB again and again,
    and logons beside it."""
    def fetch():
        try:
            m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
            m.login(USER, PASSWORD)
            m.select("INBOX", readonly=True)
            while not stop.is_set():
                typ, _ = m.fetch("1", "(BODY.PEEK[])")
                assert typ == "OK"
                typ, _ = m.append("INBOX", None, None, UPLOAD)
                assert typ == "OK"
            m.logout()
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    def logons():
        while not stop.is_set():
            logon(fg)
            time.sleep(0.05)

    threads = [threading.Thread(target=fetch), threading.Thread(target=logons)]
    for t in threads:
        t.start()
    return threads


def test_watch_in_tmux(make_fg, dovecot, tmux, tmp_path):
    dovecot.add_user(USER, PASSWORD)
    body = b"".join(b"line %06d %s\r\n" % (i, b"w" * 60) for i in range(15000))
    dovecot.deliver(USER, b"From: a@b\r\nTo: w@b\r\nSubject: watch\r\n\r\n" + body)
    fg = make_fg()
    before, after = tmp_path / "stty-before", tmp_path / "stty-after"
    tmux.run(f"stty -g > {before}; {binary()} ctl -s {fg.stats_path} watch; "
             "echo watch-exit=$?")
    s = tmux.wait(lambda s: "q quits" in s and row(s, "logons/s"), what="the first screen")
    assert fg.stats_path in s and "forestgate " in s
    assert field(s, "logons total", "ok") == 0
    assert field(s, "connections", "relay") == 0

    # Logons are counted, by result.
    for _ in range(3):
        logon(fg)
    logon(fg, password="wrong")
    s = tmux.wait(lambda s: field(s, "logons total", "ok") == 3
                  and field(s, "logons total", "failed") == 1, what="3 ok and 1 failed logons")

    # A session in relay shows while it is open.
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
    m.login(USER, PASSWORD)
    tmux.wait(lambda s: field(s, "connections", "relay") == 1, what="one session in relay")
    m.logout()
    tmux.wait(lambda s: field(s, "connections", "relay") == 0, what="no session in relay")

    # Rates while traffic flows: relay MB/s and logons/s above zero.
    stop, errors = threading.Event(), []
    threads = traffic(fg, stop, errors)
    try:
        busy = tmux.wait(lambda s: field(s, "relay MB/s", "backend>client") > 0
                         and field(s, "relay MB/s", "client>backend") > 0
                         and field(s, "logons/s", "ok") > 0, what="traffic's rates")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert field(busy, "connections", "relay") >= 1
    # The mean logon time over the interval, from show info's histogram sums.
    assert field(busy, "logons/s", "latency ms") > 0
    # It refreshes: once the traffic ends the rates fall back to zero and the
    # totals hold what was done.
    idle = tmux.wait(lambda s: field(s, "relay MB/s", "backend>client") == 0
                     and field(s, "logons/s", "ok") == 0
                     and field(s, "connections", "relay") == 0, what="the rates back at zero")
    assert idle != busy
    total = field(idle, "logons total", "ok")
    assert total > 4
    logon(fg)
    logon(fg)
    tmux.wait(lambda s: field(s, "logons total", "ok") == total + 2, what="two more logons")

    # forestgate stops: the screen says so and keeps trying; it is back once
    # forestgate is (with a new process's counters).
    fg.stop()
    s = tmux.wait(lambda s: "forestgate is not answering" in s, what="not answering")
    assert fg.stats_path in s and "q quits" in s
    fg.start()
    tmux.wait(lambda s: field(s, "logons total", "ok") == 0, what="the restarted forestgate")

    # q ends it; the shell's prompt is back and the terminal as it was.
    tmux.keys("q")
    s = tmux.wait(lambda s: "watch-exit=0" in s, what="watch's exit")
    assert s.rstrip().splitlines()[-1] == "ctl-test$"
    assert "q quits" not in s  # the alternate screen is gone
    tmux.run(f"stty -g > {after}")
    deadline = time.monotonic() + 10
    while not (after.exists() and after.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert after.read_text() == before.read_text()

    # Ctrl-C ends it the same way.
    tmux.run("clear")
    tmux.run(f"{binary()} ctl -s {fg.stats_path} watch; echo watch-exit=$?")
    tmux.wait(lambda s: "q quits" in s, what="watch again")
    tmux.keys("C-c")
    s = tmux.wait(lambda s: "watch-exit=0" in s, what="watch's exit after Ctrl-C")
    assert s.rstrip().splitlines()[-1] == "ctl-test$"


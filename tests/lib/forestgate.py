"""Start a real forestgate binary for integration tests and the demo.

The binary is FG_BIN from the environment, else build/forestgate. Its
configuration is generated from keyword settings; its stderr (the event log)
goes to a file that tests read. stop() returns the exit code and fails on any
sanitizer report, so every test that runs forestgate also checks for memory
errors when the binary was built with ASan/UBSan, and for data races when it
was built with ThreadSanitizer.
"""

import os
import re
import signal
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SANITIZER_RE = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|"
                          r"WARNING: ThreadSanitizer|"
                          r"SUMMARY: (Address|Undefined|Leak|Thread)Sanitizer")
# The sanitizers' options when the caller sets none. ThreadSanitizer goes on
# after a report (every race of a run shows, not only the first) and writes to
# stderr, the log that stop() reads; a report also makes the exit status 66.
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
    "UBSAN_OPTIONS": "print_stacktrace=1",
    # tests/tsan.supp: liburcu's own internals only (it is not instrumented).
    "TSAN_OPTIONS": "halt_on_error=0:second_deadlock_stack=1:suppressions="
                    + os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tsan.supp"),
}


def binary() -> str:
    return os.environ.get("FG_BIN", os.path.join(ROOT, "build", "forestgate"))


_KNOWS: dict[tuple[str, bytes], bool] = {}


def knows(path: str, setting: bytes) -> bool:
    """Whether the forestgate binary at path has a setting (its name is a
    string in the parser's tables): older builds (bench/compare's reference)
    refuse what they do not know."""
    key = (path, setting)
    if key not in _KNOWS:
        try:
            with open(path, "rb") as f:
                _KNOWS[key] = setting in f.read()
        except OSError:
            _KNOWS[key] = False
    return _KNOWS[key]


def bench_tool(name: str) -> str:
    """A bench/ program (forestgate-bench, forestgate-floor) beside FG_BIN (so
    the ASan run of scripts/test.sh tests the ASan build), else the release
    build's."""
    fg = os.environ.get("FG_BIN")
    if fg:
        near = os.path.join(os.path.dirname(fg), "bench", name)
        if os.path.exists(near):
            return near
    return os.path.join(ROOT, "build", "bench", name)


def bench_binary() -> str:
    """FGB_BIN, else forestgate-bench as bench_tool finds it."""
    return os.environ.get("FGB_BIN") or bench_tool("forestgate-bench")


def knows_setting(name: str, bin: str | None = None) -> bool:
    """Whether a forestgate binary knows a setting: the names are strings in
    its parser's tables. An older build (bench/compare's forestgate-ref)
    refuses a key it does not know."""
    try:
        with open(bin or binary(), "rb") as f:
            return name.encode() in f.read()
    except OSError:
        return False


# The benchmarks hold many sessions of few users, past Exchange's default of
# 16 per mailbox (MaxConnectionsPerUser); the peers they are compared with
# have no such limit.
UNLIMITED_PER_USER = {"MaxConnectionsPerUser": "2147483647"}


def unlimited_per_user(settings: dict, bin: str | None = None) -> dict:
    """settings with MaxConnectionsPerUser lifted in [imap] and [pop3], when
    the binary knows the setting."""
    if knows_setting("MaxConnectionsPerUser", bin):
        for proto in ("imap", "pop3"):
            settings.setdefault(proto, {}).update(UNLIMITED_PER_USER)
    return settings


def stop_process(proc: subprocess.Popen, sig: int, timeout: float, what: str) -> int:
    """Signals proc and waits; kills it and fails if it does not stop in time."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{what} did not stop within {timeout}s")
    return proc.returncode


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port of 127.0.0.1, free now and not handed out before by this
    process. The kernel can pick a port it just gave again, and forestgate
    and haproxy both listen with SO_REUSEPORT: a second listener on the port
    would not fail to bind but take half its connections."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def vanish_mid_login(port: int, data: bytes, reset: bool = False,
                     host: str = "127.0.0.1") -> None:
    """A client that connects, reads the greeting, sends data (a login) and is
    gone before the answer: closed, or reset (SO_LINGER 0) when reset."""
    s = socket.create_connection((host, port), timeout=5)
    s.recv(512)
    s.sendall(data)
    if reset:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    s.close()


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                # Read the greeting so the probe does not count as a bad client.
                s.settimeout(1)
                s.recv(512)
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Forestgate:
    """One forestgate process with its own configuration file."""

    def __init__(self, workdir: str, imap_backend_port: int | None = None,
                 pop3_backend_port: int | None = None, settings: dict | None = None,
                 workers: int = 2, backend: str = "127.0.0.1", new_session: bool = False,
                 hosts: dict[str, str] | None = None, bin: str | None = None,
                 env: dict[str, str] | None = None):
        self.workdir = workdir
        # Added to the environment forestgate starts with (NOTIFY_SOCKET).
        self.env = env or {}
        # Another build than FG_BIN's (bench/compare's forestgate-ref target).
        self.bin = bin
        os.makedirs(workdir, exist_ok=True)
        self.imap_port = free_port()
        self.pop3_port = free_port()
        self.stats_path = os.path.join(workdir, "stats.sock")
        self.config_path = os.path.join(workdir, "forestgate.ini")
        self.log_path = os.path.join(workdir, "forestgate.log")
        self.sections = {
            "global": {"Workers": str(workers), "StatsSocket": self.stats_path,
                       "LogFileLocation": workdir},
            "imap": {"UnencryptedOrTLSBindings": f"127.0.0.1:{self.imap_port}",
                     "LoginType": "PlainTextLogin",
                     "ProxyTargetPort": str(imap_backend_port or 1)},
            "pop3": {"UnencryptedOrTLSBindings": f"127.0.0.1:{self.pop3_port}",
                     "LoginType": "PlainTextLogin",
                     "ProxyTargetPort": str(pop3_backend_port or 1)},
            "backend": {"DefaultServer": backend, "LoginMode": "PassThrough",
                        "ConnectTimeout": "00:00:05"},
        }
        # The throttle is on by default, but most suites try wrong passwords
        # from one address on purpose: it would hold and then refuse them.
        # Its own suite (test_throttle.py) turns it on.
        if knows(bin or binary(), b"AccountFailureThreshold"):
            self.sections["throttle"] = {"Enabled": "no"}
        for section, values in (settings or {}).items():
            if values is None:
                self.sections.pop(section, None)
            else:
                self.sections.setdefault(section, {}).update(values)
        self.proc = None
        self._log = None
        # log_text() asks the stats socket whether the log writer is done;
        # a test that fills forestgate's descriptor table turns that off, or
        # its own stats clients would take and give back descriptors.
        self.log_settle = True
        # True: its own session, so a terminal's Ctrl-C reaches only the
        # caller, which then stops forestgate itself (bench/compare).
        self.new_session = new_session
        # Host names for forestgate alone ({"mbx1.uclabor.de": "127.0.0.1"}):
        # it runs in a mount namespace of its own (unshare -m) where
        # /etc/hosts is a copy with these lines added, so backend routes can
        # name hosts the way a real directory does, and certificates can be
        # checked against those names. Nothing else on the machine sees them.
        self.hosts = hosts

    def command(self) -> list[str]:
        cmd = [self.bin or binary(), "-c", self.config_path]
        if not self.hosts:
            return cmd
        path = os.path.join(self.workdir, "hosts")
        with open("/etc/hosts") as f:
            base = f.read()
        with open(path, "w") as f:
            f.write(base.rstrip("\n") + "\n")
            f.writelines(f"{ip} {name}\n" for name, ip in self.hosts.items())
        return ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"',
                path] + cmd

    def config_text(self) -> str:
        out = []
        for section, values in self.sections.items():
            out.append(f"[{section}]")
            out.extend(f"{k} = {v}" for k, v in values.items())
        return "\n".join(out) + "\n"

    def start(self, timeout: float = 10.0) -> "Forestgate":
        with open(self.config_path, "w") as f:
            f.write(self.config_text())
        self._log = open(self.log_path, "ab")
        env = dict(os.environ)
        for k, v in SANITIZER_ENV.items():
            env.setdefault(k, v)
        env.update(self.env)
        self.proc = subprocess.Popen(self.command(), stdout=self._log,
                                     stderr=self._log, env=env,
                                     start_new_session=self.new_session)
        deadline = time.monotonic() + timeout
        # The stats socket opens once every worker runs.
        while not self._stats_ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"forestgate exited with {self.proc.returncode}:\n"
                                   + self.log_text())
            if time.monotonic() > deadline:
                raise RuntimeError("forestgate did not start:\n" + self.log_text())
            time.sleep(0.02)
        return self

    def _stats_ready(self) -> bool:
        try:
            self.stats()
            return True
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if not self.proc:
            return 0
        rc = stop_process(self.proc, sig, timeout, "forestgate")
        self.proc = None
        self._log.close()
        errors = self.sanitizer_errors()
        assert not errors, "sanitizer reports:\n" + self.log_text()
        return rc

    def log_settled(self, timeout: float = 5.0) -> None:
        """Waits until the log writer thread has written every event line
        queued so far: a worker only queues its line (base/logq.c), so a
        line made before a reply may reach the file after it."""
        if not self.proc or self.proc.poll() is not None or not self.log_settle:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.stats().get("log_event_queued", 0) == 0:
                    return
            except OSError:
                return  # not up yet, or stopping: nothing to wait for
            time.sleep(0.01)

    def log_text(self) -> str:
        self.log_settled()
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def sanitizer_errors(self) -> list[str]:
        return [l for l in self.log_text().splitlines() if SANITIZER_RE.search(l)]

    def events(self, event: str) -> list[dict]:
        """The log lines of one event, parsed from logfmt."""
        out = []
        for line in self.log_text().splitlines():
            if f" event={event} " in line + " ":
                out.append(parse_logfmt(line))
        return out

    def wait_events(self, event: str, match=lambda e: True,
                    timeout: float = 10.0) -> list[dict]:
        """The lines of one event that match, once there is at least one.

        A line is written after the client has seen its reply (a disconnect
        line after the close), so a test that reads at once can race it."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events(event) if match(e)]
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching event={event} after {timeout}s:\n"
                                     + self.log_text()[-3000:])
            time.sleep(0.05)

    def ask(self, command: str) -> str:
        """One command on the stats socket; its whole answer."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.stats_path)
            s.sendall(command.encode() + b"\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return data.decode()

    def stats(self, command: str = "show info") -> dict:
        text = self.ask(command)
        if command != "show info":
            return {"text": text}
        return {k: (int(v) if v.strip().isdigit() else v.strip())
                for k, v in (l.split(":", 1) for l in text.splitlines() if ":" in l)}

    def fd_count(self) -> int:
        """Open descriptors, not counting the idle pipes kept for reuse."""
        pipes = self.stats()["pipes"]
        return len(os.listdir(f"/proc/{self.proc.pid}/fd")) - 2 * pipes

    def rss_kb(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def wait_idle(self, timeout: float = 10.0) -> dict:
        """Waits until no connection, backend socket or busy pipe is left."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats()
            if st["connections"] == 0 and st["backend_connections"] == 0 and \
                    st["pipes_busy"] == 0:
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"not idle after {timeout}s: {st}")
            time.sleep(0.05)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def parse_logfmt(line: str) -> dict:
    out = {}
    for m in re.finditer(r'(\w+)=("((?:[^"\\]|\\.)*)"|\S*)', line):
        out[m.group(1)] = m.group(3) if m.group(3) is not None else m.group(2)
    return out


class Raw:
    """A raw line-oriented client socket, for what imaplib cannot send."""

    def __init__(self, port: int, host: str = "127.0.0.1", source: str | None = None,
                 timeout: float = 10.0, rcvbuf: int | None = None):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.settimeout(timeout)
        if rcvbuf:  # before the connect: a fixed window, not the kernel's autotuned one
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; have %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"

    def until(self, prefix: bytes) -> list[bytes]:
        """Lines up to and including the first that starts with prefix."""
        lines = []
        while True:
            lines.append(self.line())
            if lines[-1].startswith(prefix):
                return lines

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def closed(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (after any pending lines)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

"""A private Redis (Debian's redis-server) for the throttle's fleet store:
its own folder, port and configuration, no persistence; stopped and started
again on the same port, as a restart is.

It speaks RESP through a small client of its own (command(), monitor()),
so the tests need no Python package for it.
"""

import os
import socket
import subprocess
import threading
import time

from tests.lib.forestgate import free_port


def _encode(*args) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _Reader:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("Redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("Redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b"-"):
            return rest.decode() if kind == b"+" else RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise ValueError(f"not RESP: {line!r}")


class _Monitor:
    """Every command Redis runs while it is open (MONITOR), as text."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(_encode("MONITOR"))
        self.reader = _Reader(self.sock)
        assert self.reader.reply() == "OK"
        self.lines, self.done = [], False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while not self.done:
                self.lines.append(self.reader.reply())
        except (OSError, EOFError):
            pass

    def close(self):
        time.sleep(0.2)  # the last commands' lines
        self.done = True
        self.sock.close()
        self.thread.join(5)

    def text(self) -> str:
        return "\n".join(str(l) for l in self.lines)


class RedisServer:
    def __init__(self, workdir: str, port: int | None = None):
        self.workdir = workdir
        self.port = port or free_port()
        self.proc = None
        os.makedirs(workdir, exist_ok=True)
        self.log_path = os.path.join(workdir, "redis.log")

    def start(self, timeout: float = 10.0) -> "RedisServer":
        conf = os.path.join(self.workdir, "redis.conf")
        with open(conf, "w") as f:
            f.write(f"port {self.port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\n"
                    f"dir {self.workdir}\nlogfile {self.log_path}\ndaemonize no\n"
                    "protected-mode no\n")
        self.proc = subprocess.Popen(["redis-server", conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:  # Redis does not greet: it answers PING once it serves
            try:
                if self.command("PING") == "PONG":
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: see {self.log_path}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stops it as an outage would: its data is gone when it starts again."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def command(self, *args):
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(_encode(*args))
            return _Reader(s).reply()

    def keys(self) -> list[bytes]:
        return self.command("KEYS", "*")

    def monitor(self):
        mon = _Monitor(self.port)

        class _Ctx:
            def __enter__(self_):
                return mon

            def __exit__(self_, *exc):
                mon.close()
        return _Ctx()

"""MOCK backends for tests: forestgate-bench --serve as a process, and a
silent server (accepts, never greets)."""

import os
import resource
import signal
import socket
import subprocess
import threading
import time

from tests.lib.forestgate import SANITIZER_ENV, SANITIZER_RE, bench_binary, free_port, stop_process


class Mock:
    """One forestgate-bench --serve process."""

    def __init__(self, workdir, proto="imap", messages=5, msg_size=5000, extra=(),
                 host="127.0.0.1", nofile=None, wait=True):
        self.proto, self.host, self.msg_size, self.messages = proto, host, msg_size, messages
        self.port = free_port()
        self.log_path = os.path.join(str(workdir), f"mock-{proto}-{self.port}.log")
        args = [bench_binary(), "--serve", proto, "--port", str(self.port), "--host", host,
                "--messages", str(messages), "--msg-size", str(msg_size), *extra]
        env = dict(os.environ)
        for k, v in SANITIZER_ENV.items():
            env.setdefault(k, v)
        limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))) \
            if nofile else None
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=self._log, env=env,
                                     preexec_fn=limit)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mock exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    s.settimeout(2)
                    assert s.recv(512)  # the greeting
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def log_text(self) -> str:
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=10.0) -> int:
        try:
            rc = stop_process(self.proc, sig, timeout, "the mock")
        finally:
            self._log.close()
        bad = [l for l in self.log_text().splitlines() if SANITIZER_RE.search(l)]
        assert not bad, "sanitizer reports:\n" + self.log_text()
        return rc


class SilentServer:
    """A MOCK backend that accepts connections and never says a word: the
    one kind of broken backend a real Dovecot cannot stand in for. On
    host:port (port 0: any free one); counts what it accepted."""

    def __init__(self, host="127.0.0.1", port=0):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    @property
    def accepted(self):
        return len(self.conns)

    def open_count(self):
        """Connections the proxy still holds open."""
        n = 0
        for c in self.conns:
            c.setblocking(False)
            try:
                if c.recv(1) != b"":
                    n += 1
            except BlockingIOError:
                n += 1
            except OSError:
                pass
        return n

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept: the port is free at once
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)
        for c in self.conns:
            c.close()

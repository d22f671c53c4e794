"""forestgate-floor, the least relay of bench/compare: real IMAP and POP3
sessions through it to the real Dovecot (both modes, a 1 MiB message compared
byte for byte), half-close passed on, backpressure, a refused backend, and
every descriptor given back."""

import hashlib
import imaplib
import os
import poplib
import socket
import subprocess
import threading
import time

import pytest

from tests.lib.dovecot import free_port, wire_bytes
from tests.lib.forestgate import SANITIZER_RE, bench_tool

USER, PASSWORD = "flooruser", "floor pw"
MODES = ["splice", "copy"]


def floor_binary() -> str:
    return bench_tool("forestgate-floor")


def message(size: int, seed: bytes) -> bytes:
    """size bytes of CRLF lines that differ from each other (a shifted or
    repeated chunk would not compare equal)."""
    head = b"From: floor@example.org\r\nSubject: floor\r\n\r\n"
    lines, n, i = [head], len(head), 0
    while n < size:
        line = hashlib.sha256(seed + b"%d" % i).hexdigest().encode() + b"\r\n"
        lines.append(line)
        n += len(line)
        i += 1
    return b"".join(lines)[: size - 2] + b"\r\n"


SMALL, LARGE = message(4096, b"s"), message(1 << 20, b"l")


@pytest.fixture(scope="module")
def mailbox(dovecot):
    dovecot.add_user(USER, PASSWORD)
    for m in (SMALL, LARGE):
        dovecot.deliver(USER, m)
    return dovecot


class Floor:
    def __init__(self, backend_port: int, mode: str):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [floor_binary(), "--listen", f"127.0.0.1:{self.port}",
             "--backend", f"127.0.0.1:{backend_port}", "--mode", mode],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # It says so once it listens (a probe connection would be relayed).
        line = self.proc.stderr.readline().decode(errors="replace")
        assert "relaying" in line, line + self.proc.stderr.read().decode(errors="replace")
        self.base_fds = self.fds()   # stdio, the listener, epoll: before any client

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def wait_fds(self, want: int) -> int:
        """Polls until the relay holds want descriptors (the pairs closed)."""
        deadline = time.monotonic() + 10
        while self.fds() > want and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.fds()

    def stop(self) -> str:
        assert self.proc.poll() is None, "forestgate-floor died"
        self.proc.terminate()
        self.proc.wait(10)
        err = self.proc.stderr.read().decode(errors="replace")
        assert not SANITIZER_RE.search(err), err
        return err


@pytest.fixture(params=MODES)
def floor_to_dovecot(request, mailbox):
    made = []

    def make(proto="imap"):
        port = mailbox.imap_port if proto == "imap" else mailbox.pop3_port
        f = Floor(port, request.param)
        made.append(f)
        return f

    yield make
    for f in made:
        f.stop()


def test_imap_session_through_the_floor(floor_to_dovecot):
    f = floor_to_dovecot("imap")
    m = imaplib.IMAP4("127.0.0.1", f.port, timeout=30)
    assert m.login(USER, PASSWORD)[0] == "OK"
    typ, data = m.select("INBOX", readonly=True)
    assert typ == "OK" and int(data[0]) == 2
    for n, want in ((1, SMALL), (2, LARGE)):
        typ, data = m.fetch(str(n), "(BODY.PEEK[])")
        assert typ == "OK"
        assert data[0][1] == wire_bytes(want), n    # byte for byte
    # Several sessions at once, interleaved on the one thread.
    others = [imaplib.IMAP4("127.0.0.1", f.port, timeout=30) for _ in range(5)]
    for o in others:
        o.login(USER, PASSWORD)
        o.select("INBOX", readonly=True)
    for o in others:
        assert o.fetch("2", "(BODY.PEEK[])")[1][0][1] == wire_bytes(LARGE)
        o.logout()
    m.logout()
    assert f.wait_fds(f.base_fds) == f.base_fds    # every pair closed, pipes too


def test_pop3_session_through_the_floor(floor_to_dovecot):
    f = floor_to_dovecot("pop3")
    p = poplib.POP3("127.0.0.1", f.port, timeout=30)
    p.user(USER)
    p.pass_(PASSWORD)
    assert p.stat()[0] == 2
    _, lines, _ = p.retr(2)
    assert b"\r\n".join(lines) + b"\r\n" == wire_bytes(LARGE)
    p.quit()
    assert f.wait_fds(f.base_fds) == f.base_fds


def serve_once(lsock: socket.socket, handler) -> threading.Thread:
    def run():
        c, _ = lsock.accept()
        with c:
            handler(c)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def read_all(s: socket.socket) -> bytes:
    chunks = []
    while True:
        b = s.recv(1 << 16)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


@pytest.mark.parametrize("mode", MODES)
def test_half_close_and_backpressure(mode):
    """The client sends 3 MiB and shuts its side: the backend sees the end of
    file only if the relay passes it on, and answers after it; then 16 MiB
    come back to a client with a small receive buffer that waits before
    reading, so the relay's writes fill up and must resume on EPOLLOUT."""
    lsock = socket.create_server(("127.0.0.1", 0))
    got = {}
    reply = message(16 << 20, b"r")

    def backend(c):
        got["data"] = read_all(c)            # ends only at the client's SHUT_WR
        c.sendall(hashlib.sha256(got["data"]).hexdigest().encode() + b"\n" + reply)
        # closing now ends the other direction

    t = serve_once(lsock, backend)
    f = Floor(lsock.getsockname()[1], mode)
    try:
        sent = message(3 << 20, b"c")
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        c.settimeout(30)
        c.connect(("127.0.0.1", f.port))
        c.sendall(sent)
        c.shutdown(socket.SHUT_WR)
        time.sleep(0.5)        # the backend's reply piles up in the relay meanwhile
        back = read_all(c)
        c.close()
        t.join(10)
        assert got["data"] == sent
        assert back == hashlib.sha256(sent).hexdigest().encode() + b"\n" + reply
        assert f.wait_fds(f.base_fds) == f.base_fds
    finally:
        lsock.close()
        f.stop()


@pytest.mark.parametrize("mode", MODES)
def test_refused_backend_closes_the_client(mode):
    dead = free_port()           # nothing listens there
    f = Floor(dead, mode)
    try:
        c = socket.create_connection(("127.0.0.1", f.port), timeout=10)
        assert c.recv(100) == b""    # closed, not left hanging
        c.close()
        assert f.wait_fds(f.base_fds) == f.base_fds
        assert f.proc.poll() is None
    finally:
        err = f.stop()
    assert "connect to the backend" in err

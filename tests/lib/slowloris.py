"""Slowloris clients: many connections that each send one byte of a command
they never finish, every `interval` seconds, to hold a place before login.

One thread (or one process, from the command line) drives them all with
selectors and non-blocking sockets. Each connection reads the greeting, then
trickles its command (IMAP `a LOGIN x...`, POP3 `USER x...`: no CRLF ever
comes) and records what the server said and when it closed. With
reconnect=True a connection the server closed is replaced, so that `n` stay
open, as an attacker would keep them (the benchmark); without it, each is
opened once (the test, which counts how many the server reclaims).

Standard library only; meant for /usr/bin/python3.

    python3 -m tests.lib.slowloris --port 1143 --n 2000 --proto imap \
        [--interval 1] [--reconnect] [--sources 127.0.0.1,127.0.0.2]

runs until SIGTERM or SIGINT, then prints its counts as JSON on stdout.
"""

from __future__ import annotations

import argparse
import collections
import errno
import json
import random
import selectors
import signal
import socket
import sys
import threading
import time

# The start of a command that never ends: after it, one "x" a tick.
PREFIX = {"imap": b"a LOGIN ", "pop3": b"USER "}


class _Conn:
    __slots__ = ("sock", "opened", "greeted", "sent", "received", "closed", "peer_closed")

    def __init__(self, sock: socket.socket, now: float):
        self.sock = sock
        self.opened = now
        self.greeted: float | None = None
        self.sent = 0  # bytes of the command sent so far
        self.received = b""
        self.closed: float | None = None
        self.peer_closed = False


class Slowloris:
    """n slow clients against port; start(), then stop() (or wait_closed())."""

    def __init__(self, port: int, n: int, proto: str = "imap", interval: float = 1.0,
                 host: str = "127.0.0.1", sources: list[str] | None = None,
                 reconnect: bool = False, open_rate: float = 2000.0):
        self.port, self.n, self.host = port, n, host
        self.prefix = PREFIX[proto]
        self.interval = interval
        self.sources = sources or ["127.0.0.1"]
        self.reconnect = reconnect
        self.open_rate = open_rate  # connections opened per second, at most
        self.sel = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.conns: list[_Conn] = []  # every connection ever opened
        self.live: set[_Conn] = set()
        self.due: collections.deque = collections.deque()  # (time, conn): next byte
        self.connect_errors = 0
        self.bytes_sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._opened = 0
        self._rnd = random.Random(port)

    # ---------------------------------------------------------------- counts
    def counts(self) -> dict:
        with self.lock:
            conns = list(self.conns)
        closed = [c for c in conns if c.peer_closed]
        return {"opened": len(conns), "open": sum(1 for c in conns if c.closed is None),
                "greeted": sum(1 for c in conns if c.greeted is not None),
                "closed_by_server": len(closed), "connect_errors": self.connect_errors,
                "bytes_sent": self.bytes_sent}

    def closed_by_server(self) -> list[_Conn]:
        with self.lock:
            return [c for c in self.conns if c.peer_closed]

    def all_conns(self) -> list[_Conn]:
        with self.lock:
            return list(self.conns)

    # --------------------------------------------------------------- control
    def start(self) -> "Slowloris":
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict:
        """Closes what is still open (the client's side) and returns counts."""
        self._stop.set()
        if self._thread:
            self._thread.join(30)
        return self.counts()

    def wait(self, pred, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not pred(self.counts()):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    # ------------------------------------------------------------------ loop
    def _open(self, now: float) -> None:
        src = self.sources[self._opened % len(self.sources)]
        self._opened += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.bind((src, 0))
            rc = s.connect_ex((self.host, self.port))
        except OSError:
            rc = -1
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            self.connect_errors += 1
            return
        c = _Conn(s, now)
        with self.lock:
            self.conns.append(c)
        self.live.add(c)
        self.sel.register(s, selectors.EVENT_READ, c)

    def _close(self, c: _Conn, now: float, by_peer: bool) -> None:
        if c.closed is not None:
            return
        c.closed, c.peer_closed = now, by_peer
        self.live.discard(c)
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def _read(self, c: _Conn, now: float) -> None:
        try:
            data = c.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset, refused
            self._close(c, now, by_peer=c.greeted is not None)
            if c.greeted is None:
                self.connect_errors += 1
            return
        if not data:
            self._close(c, now, by_peer=True)
            return
        c.received += data
        if c.greeted is None and b"\n" in c.received:
            c.greeted = now
            # Spread the first bytes over one interval: a steady trickle.
            self.due.append((now + self._rnd.uniform(0, self.interval), c))

    def _trickle(self, now: float) -> None:
        while self.due and self.due[0][0] <= now:
            _, c = self.due.popleft()
            if c.closed is not None:
                continue
            byte = self.prefix[c.sent:c.sent + 1] or b"x"
            try:
                c.sock.send(byte)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._close(c, now, by_peer=True)
                continue
            else:
                c.sent += 1
                self.bytes_sent += 1
            self.due.append((now + self.interval, c))

    def run(self) -> None:
        last, tokens = time.monotonic(), 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                # A token bucket: opening thousands at once would overflow the
                # listen backlog, and a dropped SYN waits a second.
                tokens = min(tokens + (now - last) * self.open_rate, self.open_rate / 10)
                last = now
                want = self.n - (len(self.live) if self.reconnect else self._opened)
                for _ in range(max(0, min(want, int(tokens)))):
                    self._open(now)
                    tokens -= 1
                wait = 0.05
                if self.due:
                    wait = min(wait, max(0.0, self.due[0][0] - now))
                for key, _ in self.sel.select(wait):
                    self._read(key.data, time.monotonic())
                self._trickle(time.monotonic())
        finally:
            now = time.monotonic()
            for c in list(self.live):
                self._close(c, now, by_peer=False)
            self.sel.close()


def main() -> int:
    a = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--n", type=int, default=2000)
    a.add_argument("--proto", choices=sorted(PREFIX), default="imap")
    a.add_argument("--interval", type=float, default=1.0)
    a.add_argument("--reconnect", action="store_true")
    a.add_argument("--sources", default="127.0.0.1")
    p = a.parse_args()
    sl = Slowloris(p.port, p.n, p.proto, p.interval, sources=p.sources.split(","),
                   reconnect=p.reconnect)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    sl.start()
    while not done.wait(1):
        pass
    print(json.dumps(sl.stop()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

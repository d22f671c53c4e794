"""Interim load generator (Python asyncio, several processes).

It measures forestgate against the same load sent straight to the backend,
until bench/'s C load generator (forestgate-bench, the next issue) replaces
it. Because both runs use this same client, the ratio between them is what
means something; the absolute numbers include this client's own cost.

Scenarios:
  login  connect, greeting, login, logout, repeat     -> logins/s
  fetch  log in once, then fetch message 1 in a loop  -> MB/s
  idle   open --conns sessions, log in, hold them     -> prints READY, waits

Output: one JSON object on stdout.
"""

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import time


async def expect(reader, tag: bytes) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line.startswith(tag):
            return line


async def imap_login(host, port, user, password):
    r, w = await asyncio.open_connection(host, port)
    await r.readline()
    w.write(b'a LOGIN %s "%s"\r\n' % (user.encode(), password.encode()))
    line = await expect(r, b"a ")
    if not line.startswith(b"a OK"):
        raise ConnectionError(line)
    return r, w


async def pop3_login(host, port, user, password):
    r, w = await asyncio.open_connection(host, port)
    await r.readline()
    w.write(b"USER %s\r\nPASS %s\r\n" % (user.encode(), password.encode()))
    await r.readline()
    line = await r.readline()
    if not line.startswith(b"+OK"):
        raise ConnectionError(line)
    return r, w


async def login_loop(a, stats, deadline):
    login = imap_login if a.proto == "imap" else pop3_login
    while time.monotonic() < deadline:
        try:
            r, w = await login(a.host, a.port, a.user, a.password)
            w.write(b"z LOGOUT\r\n" if a.proto == "imap" else b"QUIT\r\n")
            await r.read()
            w.close()
            stats["ops"] += 1
        except (ConnectionError, OSError):
            stats["errors"] += 1


async def fetch_loop(a, stats, deadline):
    login = imap_login if a.proto == "imap" else pop3_login
    r, w = await login(a.host, a.port, a.user, a.password)
    if a.proto == "imap":
        w.write(b"s SELECT INBOX\r\n")
        await expect(r, b"s ")
    n = 0
    while time.monotonic() < deadline:
        n += 1
        if a.proto == "imap":
            w.write(b"f%d UID FETCH 1 BODY.PEEK[]\r\n" % n)
            head = await expect(r, b"* ")
            size = int(head[head.rindex(b"{") + 1:head.rindex(b"}")])
            await r.readexactly(size)
            await expect(r, b"f%d " % n)
        else:
            w.write(b"RETR 1\r\n")
            await r.readline()
            size = 0
            while (line := await r.readline()) != b".\r\n":
                size += len(line)
        stats["ops"] += 1
        stats["bytes"] += size
    w.close()


async def idle_hold(a, stats, count, ready):
    login = imap_login if a.proto == "imap" else pop3_login
    conns = []
    sem = asyncio.Semaphore(100)  # do not stampede the backend's login processes

    async def one():
        async with sem:
            conns.append(await login(a.host, a.port, a.user, a.password))

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    stats["ops"] = len(conns)
    stats["errors"] = sum(1 for x in results if isinstance(x, Exception))
    ready.set()
    await asyncio.sleep(a.duration)
    for _, w in conns:
        w.close()


def worker(a, conns, queue, ready_event):
    stats = {"ops": 0, "errors": 0, "bytes": 0}

    async def main():
        if a.scenario == "idle":
            ev = asyncio.Event()
            task = asyncio.create_task(idle_hold(a, stats, conns, ev))
            await ev.wait()
            ready_event.set()
            await task
            return
        deadline = time.monotonic() + a.duration
        loop = login_loop if a.scenario == "login" else fetch_loop
        await asyncio.gather(*(loop(a, stats, deadline) for _ in range(conns)))

    asyncio.run(main())
    queue.put(stats)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--proto", choices=["imap", "pop3"], default="imap")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--scenario", choices=["login", "fetch", "idle"], default="login")
    p.add_argument("--conns", type=int, default=16)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--user", default="alice")
    p.add_argument("--password", default="secret")
    a = p.parse_args()

    queue, events, procs = mp.Queue(), [], []
    t0 = time.monotonic()
    for i in range(a.procs):
        share = a.conns // a.procs + (1 if i < a.conns % a.procs else 0)
        ev = mp.Event()
        events.append(ev)
        procs.append(mp.Process(target=worker, args=(a, share, queue, ev)))
        procs[-1].start()
    if a.scenario == "idle":
        for ev in events:
            ev.wait()
        print("READY", flush=True)
    results = [queue.get() for _ in procs]
    for proc in procs:
        proc.join()
    elapsed = time.monotonic() - t0
    total = {k: sum(r[k] for r in results) for k in results[0]}
    out = {"scenario": a.scenario, "proto": a.proto, "port": a.port, "conns": a.conns,
           "seconds": round(a.duration, 1), **total}
    if a.scenario == "login":
        out["logins_per_s"] = round(total["ops"] / a.duration, 1)
    elif a.scenario == "fetch":
        out["mb_per_s"] = round(total["bytes"] / a.duration / 1e6, 1)
        out["fetches_per_s"] = round(total["ops"] / a.duration, 1)
    out["wall_s"] = round(elapsed, 1)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main()

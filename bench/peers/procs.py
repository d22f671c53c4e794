"""Process groups, CPU and memory accounting from /proc, port probes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """n distinct free ports (held open together while picking)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def greeting(port: int, timeout: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        return s.recv(512)


def wait_greeting(port: int, want: bytes, timeout: float = 15.0,
                  alive=lambda: True) -> None:
    """Waits until port answers with a line starting with want."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"process exited while waiting for port {port}")
        try:
            g = greeting(port)
            if g.startswith(want):
                return
            last = f"greeting {g!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.05)
    raise RuntimeError(f"port {port} not ready after {timeout}s ({last})")


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
    return stat[stat.rfind(b")") + 2:].split()


def pids_in_group(pgid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        f = _stat_fields(int(name))
        if f and len(f) > 2 and f[0] != b"Z" and int(f[2]) == pgid:
            out.append(int(name))
    return sorted(out)


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (all their threads), plus cutime +
    cstime (children they reaped: processes that exited during a run are not
    lost; live children are in pids themselves)."""
    total = 0
    for pid in pids:
        f = _stat_fields(pid)
        if f and len(f) > 14:
            # after "pid (comm) ": state=0 ... utime=11 stime=12 cutime=13 cstime=14
            total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return total / CLK_TCK


def rss_kb(pids: list[int]) -> int:
    """Sum of VmRSS (shared pages counted once per process)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_KB
        except (OSError, IndexError, ValueError):
            pass
    return total


def pss_kb(pids: list[int]) -> int:
    """Sum of Pss (shared pages divided among the processes sharing them)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except (OSError, IndexError, ValueError):
            pass
    return total


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM,
               timeout: float = 10.0) -> None:
    """Signals the group leader, waits, then SIGKILLs whatever is left of its
    process group (the group was made with start_new_session=True)."""
    pgid = proc.pid
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while pids_in_group(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pids_in_group(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 5
        while pids_in_group(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def machine_cpu() -> dict:
    """Cumulative CPU seconds of the whole machine from /proc/stat (all cores)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    vals = {n: int(v) / CLK_TCK for n, v in zip(names, fields)}
    return vals


def machine_cpu_delta(before: dict, after: dict) -> dict:
    """Busy, idle and steal seconds between two machine_cpu() readings."""
    d = {k: after[k] - before[k] for k in before}
    busy = d["user"] + d["nice"] + d["system"] + d["irq"] + d["softirq"]
    return {"busy_s": round(busy, 2), "idle_s": round(d["idle"] + d["iowait"], 2),
            "steal_s": round(d.get("steal", 0.0), 2)}

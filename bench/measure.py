"""Measures forestgate against a real Dovecot, in one run, on this machine.

  /usr/bin/python3 bench/measure.py [--duration 10] [--idle 5000]

Starts a private Dovecot (tests/lib/dovecot.py) and forestgate in front of
it, then with bench/pyload.py, for IMAP and POP3:
  - logins/s through forestgate and straight to Dovecot;
  - 1 MB FETCH / RETR throughput through forestgate and straight to Dovecot;
  - forestgate's RSS per idle authenticated session at --idle sessions.
Prints a markdown table and writes the raw numbers to bench/results.json.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.lib.dovecot import Dovecot  # noqa: E402
from tests.lib.forestgate import Forestgate  # noqa: E402

PY = "/usr/bin/python3"
LOAD = os.path.join(ROOT, "bench", "pyload.py")


def load(port, proto, scenario, conns, duration, procs=2):
    out = subprocess.run([PY, LOAD, "--port", str(port), "--proto", proto, "--scenario",
                          scenario, "--conns", str(conns), "--duration", str(duration),
                          "--procs", str(procs)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_seconds(pid) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_fg(fg, port, proto, scenario, conns, duration):
    """Like load(), and adds forestgate's CPU seconds spent during the run."""
    before = cpu_seconds(fg.proc.pid)
    out = load(port, proto, scenario, conns, duration)
    out["forestgate_cpu_s"] = round(cpu_seconds(fg.proc.pid) - before, 2)
    return out


def message_1mb() -> bytes:
    body = b"".join(b"line %06d %s\r\n" % (i, b"z" * 60) for i in range(14500))
    return b"From: bench@example.org\r\nSubject: 1 MB\r\n\r\n" + body


def idle_rss(fg, port, sessions):
    """forestgate's RSS growth per session while `sessions` sit idle."""
    before = fg.rss_kb()
    proc = subprocess.Popen([PY, LOAD, "--port", str(port), "--scenario", "idle", "--conns",
                             str(sessions), "--duration", "20", "--procs", "2"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "READY"
    time.sleep(1)
    st = fg.stats()
    during = fg.rss_kb()
    proc.wait()
    return {"sessions": st["relay"], "rss_before_kb": before, "rss_idle_kb": during,
            "bytes_per_session": round((during - before) * 1024 / max(st["relay"], 1))}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--idle", type=int, default=5000)
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="fg-bench-", dir="/tmp")
    os.chmod(work, 0o755)
    results = {"machine": os.uname().release, "cpus": os.cpu_count()}
    dc = Dovecot(os.path.join(work, "dovecot"), {"alice": "secret"}, imap_client_limit=10,
                 process_limit=1000)
    dc.start()
    fg = Forestgate(os.path.join(work, "fg"), dc.imap_port, dc.pop3_port,
                    settings={"global": {"Workers": "0", "LogLevel": "warning"}})
    try:
        dc.deliver("alice", message_1mb())
        fg.start()
        for proto in ("imap", "pop3"):
            direct = dc.imap_port if proto == "imap" else dc.pop3_port
            front = fg.imap_port if proto == "imap" else fg.pop3_port
            results[f"{proto}_login_direct"] = load(direct, proto, "login", 32, a.duration)
            results[f"{proto}_login_forestgate"] = load_fg(fg, front, proto, "login", 32,
                                                           a.duration)
            results[f"{proto}_fetch_direct"] = load(direct, proto, "fetch", 4, a.duration)
            results[f"{proto}_fetch_forestgate"] = load_fg(fg, front, proto, "fetch", 4,
                                                           a.duration)
        results["idle"] = idle_rss(fg, fg.imap_port, a.idle)
    finally:
        fg.stop()
        dc.stop()
        shutil.rmtree(work, ignore_errors=True)
    with open(os.path.join(ROOT, "bench", "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print_table(results)


def print_table(r):
    notes = []
    print("| measure | straight to Dovecot | through forestgate | ratio |")
    print("|---|---|---|---|")
    for proto in ("imap", "pop3"):
        d, f = r[f"{proto}_login_direct"], r[f"{proto}_login_forestgate"]
        print(f"| {proto} logins/s (32 clients) | {d['logins_per_s']} | {f['logins_per_s']} | "
              f"{f['logins_per_s'] / d['logins_per_s']:.2f} |")
        cpu_login = f["forestgate_cpu_s"] / max(f["ops"], 1) * 1e6
        d, f = r[f"{proto}_fetch_direct"], r[f"{proto}_fetch_forestgate"]
        print(f"| {proto} 1 MB fetch MB/s (4 sessions) | {d['mb_per_s']} | {f['mb_per_s']} | "
              f"{f['mb_per_s'] / d['mb_per_s']:.2f} |")
        cpu_gb = f["forestgate_cpu_s"] / max(f["bytes"], 1) * 1e9
        notes.append(f"{proto}: forestgate used {cpu_login:.0f} us of CPU per login and "
                     f"{cpu_gb:.2f} s of CPU per GB relayed")
    print()
    for n in notes:
        print(n)
    i = r["idle"]
    print(f"\nIdle: {i['sessions']} authenticated IMAP sessions; forestgate RSS "
          f"{i['rss_before_kb']} kB -> {i['rss_idle_kb']} kB, {i['bytes_per_session']} bytes "
          f"per session.")


if __name__ == "__main__":
    main()

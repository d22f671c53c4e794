"""bench/spraybench and bench/slowbench, small and short, end to end: each
runs its phases against a real slapd or Dovecot and reports what issue 14's
figures rest on. The figures themselves are BENCHMARKS.md's runs S and W;
here only what a broken benchmark or a broken gateway would get wrong."""

import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(tmp_path, name, *args):
    out = tmp_path / name
    r = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "bench", name), *args,
                        "--out", str(out)], cwd=ROOT, env=dict(os.environ),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-6000:]}"
    return json.loads((out / f"{name}.json").read_text())


def clean(run):
    assert run["logons_per_s"] > 0, run
    assert not any(run["errors"].values()), run["errors"]


def test_spraybench_quick(tmp_path):
    targets = 4
    doc = run(tmp_path, "spraybench", "--users", "20", "--targets", str(targets), "--conns", "4",
              "--duration", "2", "--repeat", "1", "--spray-threads", "16",
              "--spray-addresses", "40")
    runs = {(r["throttle"], r["spray"]): r for r in doc["runs"]}
    assert set(runs) == {("off", False), ("off", True), ("on", False), ("on", True)}, runs.keys()
    for r in runs.values():
        clean(r)
    off, on = runs[("off", True)], runs[("on", True)]
    # Without the throttle every guess is a bind; with it, at most
    # AccountFailureThreshold (5) per sprayed account, however many guesses.
    assert off["spray_counts"]["attempts"] > 0
    assert off["target_binds"] == off["spray_counts"]["attempts"], off
    assert on["spray_counts"]["attempts"] > 5 * targets, on["spray_counts"]
    assert 0 < on["target_binds"] <= 5 * targets, on


def test_slowbench_quick(tmp_path):
    doc = run(tmp_path, "slowbench", "--users", "10", "--conns", "4", "--duration", "2",
              "--repeat", "1", "--slow", "200", "--interval", "0.5")
    runs = {r["slow"]: r for r in doc["runs"]}
    assert set(runs) == {False, True}
    for r in runs.values():
        clean(r)
    slow = runs[True]
    # The slow clients were there, all of them, while the logons were measured.
    assert slow["preauth_at_start"] >= 200 and slow["slow_counts"]["greeted"] == 200, slow
    assert slow["slow_counts"]["connect_errors"] == 0, slow

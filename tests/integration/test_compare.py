"""bench/compare --quick end to end on the mock backend: every target and
scenario runs, the JSON, the SVG and the markdown tables are complete."""

import json
import os
import subprocess
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGETS = ["direct", "forestgate", "nginx", "dovecot-proxy", "floor-splice", "floor-copy"]
FLOORS = ["floor-splice", "floor-copy"]
SCENARIOS = ["login-imap", "login-pop3", "fetch-imap-4k", "fetch-imap-1m", "fetch-pop3-4k",
             "fetch-pop3-1m", "idle-imap", "mixed"]
SVG_NS = "{http://www.w3.org/2000/svg}"


def test_compare_quick_mock(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ)     # FG_BIN, if set, is the forestgate compare runs
    r = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "bench", "compare"), "--quick",
                        "--backend", "mock", "--out", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-6000:]}"

    doc = json.loads((out / "compare-mock.json").read_text())
    assert doc["backend"] == "mock"
    for key in ("uname", "cpus", "nginx", "dovecot", "forestgate"):
        assert doc["machine"].get(key), key
    assert doc["targets"] == TARGETS and doc["params"]["nginx_proxy_buffer"] == "64k"
    for sc in SCENARIOS:
        assert set(doc["results"][sc]) == set(TARGETS) - (set(FLOORS) if sc == "idle-imap"
                                                          else set()), sc
        for t in doc["results"][sc]:
            rec = doc["results"][sc][t]
            b = rec["bench"]
            assert b is not None, (sc, t, rec.get("error"), rec.get("output_tail"))
            assert b["ops"] > 0, (sc, t, b)
            if sc.startswith(("login", "fetch")):
                assert b["errors_total"] == 0, (sc, t, b["errors"])
            if t != "direct":
                assert rec["proxy_cpu_s"] is not None and rec["proxy_cpu_s"] >= 0, (sc, t)
            assert isinstance(rec["time_wait_at_start"], int), (sc, t)
        for t in TARGETS[1:]:
            # The message mix: the -4k runs fetch only 4 KiB messages, the -1m
            # runs only the 1 MiB one; CPU per GB and per FETCH/RETR/login.
            for sc, size in (("fetch-imap-4k", 4096), ("fetch-imap-1m", 1 << 20),
                             ("fetch-pop3-4k", 4096), ("fetch-pop3-1m", 1 << 20)):
                rec = doc["results"][sc][t]
                assert rec["bench"]["bytes"] == rec["bench"]["ops"] * size, (sc, t)
                assert rec["proxy_cpu_s_per_gb"] is not None, (sc, t)
                assert rec["proxy_cpu_us_per_fetch"] == rec["proxy_cpu_us_per_op"], (sc, t)
            assert doc["results"]["login-imap"][t]["proxy_cpu_us_per_login"] is not None, t
            if t in FLOORS:
                continue
            idle = doc["results"]["idle-imap"][t]
            assert idle["sessions_ready"] == doc["params"]["idle_sessions"], (t, idle)
            assert idle["rss_per_session_kb"] > 0, (t, idle)

    tree = ET.parse(out / "compare-mock.svg")
    root = tree.getroot()
    assert root.tag == SVG_NS + "svg"
    for t in TARGETS:
        bars = root.findall(f".//{SVG_NS}rect[@data-target='{t}'][@class='bar']")
        lines = root.findall(f".//{SVG_NS}polyline[@data-target='{t}']")
        legend = root.findall(f".//{SVG_NS}rect[@data-target='{t}'][@class='legend-swatch']")
        # one bar per scenario (direct has none in idle: no proxy to measure;
        # the floor does not run it)
        assert len(bars) == len(SCENARIOS) - (t == "direct" or t in FLOORS), (t, len(bars))
        assert len(lines) == len(SCENARIOS) - (t in FLOORS), (t, len(lines))
        assert len(legend) == 1, t
    rows = root.findall(f".//{SVG_NS}g[@class='row']")
    assert [g.get("data-scenario") for g in rows] == SCENARIOS

    md = r.stdout
    assert "bench/compare --quick --backend mock" in md
    for title in ("IMAP login", "POP3 login", "IMAP fetch, 4 KiB", "IMAP fetch, 1 MiB",
                  "POP3 fetch, 4 KiB", "POP3 fetch, 1 MiB", "IMAP idle", "mixed"):
        assert f"**{title}" in md, title
    table_rows = [l for l in md.splitlines() if l.startswith("| ")]
    for t in TARGETS:
        assert sum(1 for l in table_rows if l.startswith(f"| {t} |")) == \
            len(SCENARIOS) - (t in FLOORS), t
    assert "auth_http" in md and "proxy_buffer 64k" in md
    # the CPU summary: a row per login and fetch scenario, the floor at 1.00× or more
    assert "| proxy CPU, µs per operation (÷ floor) |" in md
    assert "| IMAP fetch 1 MiB (FETCH BODY[]) |" in md
    assert "TIME_WAIT sockets at the start of the runs" in r.stdout


TLS_SCENARIOS = ["tls-login-imap", "tls-login-pop3", "tls-resume-imap", "tls-resume-pop3",
                 "tls-fetch-imap", "tls-fetch-pop3", "tls-idle-imap"]


def test_compare_quick_tls_mock(tmp_path):
    """--tls: forestgate and nginx with the same certificate; handshakes
    counted, resumption seen, fetch bytes and idle memory measured."""
    out = tmp_path / "out"
    r = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "bench", "compare"), "--quick",
                        "--tls", "--backend", "mock", "--out", str(out)],
                       cwd=ROOT, env=dict(os.environ), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-6000:]}"
    doc = json.loads((out / "compare-tls-mock.json").read_text())
    assert doc["scenarios"] == TLS_SCENARIOS and doc["targets"] == ["forestgate", "nginx"]
    for sc in TLS_SCENARIOS:
        for t in ("forestgate", "nginx"):
            rec = doc["results"][sc][t]
            b = rec["bench"]
            assert b is not None and b["ops"] > 0, (sc, t, rec.get("output_tail"))
            assert b["errors_total"] == 0, (sc, t, b["errors"])
            assert rec["tls_handshakes"] >= 1, (sc, t)
            if sc.startswith("tls-resume"):
                assert rec["tls_resumed_fraction"] > 0.5, (sc, t, rec["tls_resumed_fraction"])
        fg = doc["results"][sc]["forestgate"]["forestgate_tls"]
        assert fg["tls_failed"] == 0 and fg["tls_handshakes"] >= 1, (sc, fg)
    assert doc["results"]["tls-fetch-imap"]["forestgate"]["bench"]["bytes"] > 0
    assert doc["results"]["tls-idle-imap"]["forestgate"]["rss_per_session_kb"] > 0
    assert "forestgate ÷ nginx" in r.stdout


def test_compare_ref_target_measures_another_build(tmp_path):
    """forestgate-ref runs the --ref-bin build in the same rounds as FG_BIN's,
    and is refused without its binary."""
    fg = os.environ.get("FG_BIN", os.path.join(ROOT, "build", "forestgate"))
    base = ["/usr/bin/python3", os.path.join(ROOT, "bench", "compare"), "--quick",
            "--backend", "mock", "--scenarios", "login-imap", "--skip-deps",
            "--targets", "forestgate,forestgate-ref"]
    r = subprocess.run(base + ["--out", str(tmp_path / "x")], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and "forestgate-ref target needs --ref-bin" in r.stderr + r.stdout
    out = tmp_path / "out"
    r = subprocess.run(base + ["--ref-bin", fg, "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-6000:]}"
    doc = json.loads((out / "compare-mock.json").read_text())
    for t in ("forestgate", "forestgate-ref"):
        b = doc["results"]["login-imap"][t]["bench"]
        assert b and b["ops"] > 0 and b["errors_total"] == 0, (t, b)
    assert "| forestgate-ref |" in r.stdout


def test_compare_ref_set_and_paired_floor_ratios(tmp_path):
    """--ref-set puts a setting into forestgate-ref's configuration (a wrong one
    stops the run with forestgate's own file:line error); with --repeat, each
    target's CPU per operation is also given over the floor's within each
    round; --login-rate runs the logins in open loop."""
    base = ["/usr/bin/python3", os.path.join(ROOT, "bench", "compare"), "--quick",
            "--backend", "mock", "--scenarios", "login-imap", "--skip-deps"]
    r = subprocess.run(base + ["--targets", "forestgate,forestgate-ref", "--ref-set", "nodot=1",
                               "--out", str(tmp_path / "x")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "not SECTION.KEY=VALUE" in r.stderr
    r = subprocess.run(base + ["--targets", "forestgate,forestgate-ref",
                               "--ref-set", "global.NoSuchSetting=1", "--out", str(tmp_path / "y")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "NoSuchSetting" in r.stdout + r.stderr, r.stdout[-3000:]
    out = tmp_path / "out"
    # CPU is read in 4 ms ticks: 3 s at 100 logins/s give each round tens of
    # them (at --quick's 1 s and 40/s a round could read 0, and have no ratio).
    r = subprocess.run(base + ["--targets", "forestgate,floor-copy", "--repeat", "2",
                               "--duration", "3", "--login-rate", "100", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-6000:]}"
    doc = json.loads((out / "compare-mock.json").read_text())
    pr = doc["results"]["login-imap"]["forestgate"]["cpu_ratio_floor_paired"]
    assert pr["rounds"] == 2 and 0 < pr["low"] <= pr["median"] <= pr["high"], pr
    assert "per round" in r.stdout
    # --login-rate: open loop, the same schedule for every target.
    for t in ("forestgate", "floor-copy"):
        b = doc["results"]["login-imap"][t]["bench"]
        assert b["rate"] == 100 and b["errors_total"] == 0 and b["ops"] > 0, (t, b)
    assert "open loop, 100 logins/s scheduled" in r.stdout
    # The chart says so too, in the row's title.
    titles = "".join(ET.parse(out / "compare-mock.svg").getroot().itertext())
    assert "IMAP login (100 logins/s)" in titles and "closed loop" not in titles, titles[:2000]


def test_compare_from_json_redraws_older_files(tmp_path):
    """--from-json redraws a run's tables and chart without running anything,
    also from a file written before --login-rate existed (run GL's closed
    loop), whose params lack it."""
    res = os.path.join(ROOT, "bench", "results", "relay-floor", "logins-GL")
    for name, title in (("compare-dovecot-closed.json", "IMAP login (closed loop)"),
                        ("compare-dovecot-rate500.json", "IMAP login (500 logins/s)")):
        out = tmp_path / name
        r = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "bench", "compare"),
                            "--from-json", os.path.join(res, name), "--out", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "proxy CPU per login" in r.stdout
        titles = "".join(ET.parse(out / "compare-dovecot.svg").getroot().itertext())
        assert title in titles, (name, titles[:2000])

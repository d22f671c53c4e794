"""bench/dirbench --quick end to end: a real slapd with an AD-like forest,
forestgate resolving logons over LDAP, Dovecot's proxy with its LDAP passdb
against the same slapd, and the backend itself. Every logon form forestgate
takes is measured, and the LDAP operations are counted in slapd's log."""

import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_dirbench_quick(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ)  # FG_BIN / FGB_BIN, if set, are the binaries measured
    r = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "bench", "dirbench"), "--quick",
                        "--skip-deps", "--out", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-6000:]}"

    doc = json.loads((out / "dirbench-quick.json").read_text())
    assert not doc["target_errors"], doc["target_errors"]
    assert set(doc["verified"]) == {"direct", "forestgate", "dovecot-proxy"}
    res = doc["results"]
    for key in ("forestgate|user|imap", "forestgate|upn|imap", "dovecot-proxy|user|imap"):
        rec = res[key]
        b = rec["bench"]
        assert b is not None, (key, rec.get("error"), rec.get("output_tail"))
        assert b["ops"] > 0, (key, b)
        assert b["errors_total"] == 0, (key, b["errors"])
        # the logons reached slapd: a search and a bind each, at least
        assert rec["ldap_srch_per_logon"] >= 1 and rec["ldap_bind_per_logon"] >= 1, (key, rec)
    for form in ("user", "domain-user", "domain-user-alias", "upn", "upn-alias", "domain-upn"):
        rec = res[f"forestgate|{form}|imap"]
        assert rec["bench"]["ops"] > 0, form
        assert rec["proxy_log"]["logons_failed"] == 0, (form, rec["proxy_log"])
    assert res["direct|alias|imap"]["ldap_ops_per_logon"] == 0

    timing = doc["timing"]["forestgate"]
    for form in ("user", "upn"):
        t = timing[form]
        assert t["same_answer"], t["answers"]
        assert t["unknown"]["p50_us"] > 0 and t["wrong_password"]["p50_us"] > 0

    md = r.stdout
    for row in ("| forestgate | user |", "| forestgate | upn |", "| dovecot-proxy | user |",
                "| direct | alias |", "Unknown user vs wrong password"):
        assert row in md, row

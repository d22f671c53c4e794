"""bench/dirbench --quick end to end: a real slapd with an AD-like forest,
forestgate resolving logons over LDAP, Dovecot's proxy with its LDAP passdb
against the same slapd (its auth cache off and on), and the backend itself.
Every logon form forestgate takes is measured, and the LDAP operations are
counted in slapd's log. With a forestgate that has the route cache (issue
13), its warm-route and warm-credential targets are measured too."""

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
    has_cache = doc["machine"]["forestgate_route_cache"]
    assert set(doc["verified"]) == ({"direct", "forestgate", "dovecot-proxy",
                                     "dovecot-proxy-cache"}
                                    | ({"forestgate-warm", "forestgate-cred"} if has_cache
                                       else set()))
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

    # Dovecot's auth cache: the warm-up did the LDAP work (each user once),
    # the measured logons do less of it than the cache-less proxy's.
    users = doc["params"]["users"]
    for form in ("user", "upn"):
        bare, cached = res[f"dovecot-proxy|{form}|imap"], res[f"dovecot-proxy-cache|{form}|imap"]
        assert "warmup" not in bare
        w = cached["warmup"]
        assert w["logons"] == users and w["failed"] == 0, w
        assert w["ldap"]["srch"] >= 1, w
        assert cached["bench"]["ops"] > 0 and cached["bench"]["errors_total"] == 0, cached["bench"]
        assert bare["ldap_srch_per_logon"] >= 1, bare
        assert cached["ldap_srch_per_logon"] < bare["ldap_srch_per_logon"], (form, cached, bare)
        assert cached["ldap_ops_per_logon"] < bare["ldap_ops_per_logon"], (form, cached, bare)

    # forestgate's route and credential caches, against its cold route
    # (RouteCacheTTL = 00:00:00) in the same run.
    if has_cache:
        for form in ("user", "domain-user", "domain-user-alias", "upn", "upn-alias",
                     "domain-upn"):
            cold = res[f"forestgate|{form}|imap"]
            warm = res[f"forestgate-warm|{form}|imap"]
            cred = res[f"forestgate-cred|{form}|imap"]
            assert "warmup" not in cold
            for rec in (warm, cred):
                assert rec["warmup"]["failed"] == 0, (form, rec["warmup"])
                assert rec["bench"]["ops"] > 0 and rec["bench"]["errors_total"] == 0, form
                assert rec["proxy_log"]["logons_failed"] == 0, (form, rec["proxy_log"])
            assert "cache_values" not in cold["proxy_log"] or \
                set(cold["proxy_log"]["cache_values"]) <= {"miss"}, cold["proxy_log"]
            assert "hit" in warm["proxy_log"]["cache_values"], warm["proxy_log"]
            assert "credential" in cred["proxy_log"]["cache_values"], cred["proxy_log"]
            assert warm["ldap_srch_per_logon"] < cold["ldap_srch_per_logon"], (form, warm, cold)
            assert cred["ldap_ops_per_logon"] < warm["ldap_ops_per_logon"], (form, cred, warm)

    timing = doc["timing"]["forestgate"]
    for form in ("user", "upn"):
        t = timing[form]
        assert t["same_answer"], t["answers"]
        assert t["unknown"]["p50_us"] > 0 and t["wrong_password"]["p50_us"] > 0

    md = r.stdout
    for row in ("| forestgate | user |", "| forestgate | upn |", "| dovecot-proxy | user |",
                "| dovecot-proxy-cache | user |", "| IMAP | user | dovecot-proxy-cache |",
                "| direct | alias |", "Unknown user vs wrong password"):
        assert row in md, row


def test_dirbench_against_samba(tmp_path):
    """--directory samba: the same forest in a real AD DC (Samba), logons of
    every form through forestgate and Dovecot's LDAP proxy; no LDAP
    operation counts (Samba logs none), so none are claimed."""
    out = tmp_path / "out"
    r = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "bench", "dirbench"), "--quick",
                        "--skip-deps", "--directory", "samba", "--targets",
                        "forestgate,dovecot-proxy", "--forms", "user,domain-user-alias,upn",
                        "--out", str(out)],
                       cwd=ROOT, env=dict(os.environ), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-6000:]}"
    doc = json.loads((out / "dirbench-quick.json").read_text())
    assert not doc["target_errors"], doc["target_errors"]
    assert doc["params"]["directory"] == "samba" and "Samba AD DC" in doc["setup"]["directory"]
    for key in ("forestgate|user|imap", "forestgate|domain-user-alias|imap",
                "forestgate|upn|imap", "dovecot-proxy|user|imap"):
        rec = doc["results"][key]
        b = rec["bench"]
        assert b is not None and b["ops"] > 0 and b["errors_total"] == 0, (key, rec)
        assert rec["ldap"] is None and "ldap_ops_per_logon" not in rec
        assert rec["slapd_cpu_s"] > 0      # Samba's processes, all of them
    assert "samba CPU / logon" in (out / "dirbench-quick.md").read_text()


def test_krbbench_quick(tmp_path):
    """bench/krbbench --quick: Kerberos, password and direct logons, each
    without an error, and Samba's CPU per logon far below a bind's."""
    out = tmp_path / "out"
    r = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "bench", "krbbench"), "--quick",
                        "--out", str(out)],
                       cwd=ROOT, env=dict(os.environ), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-6000:]}"
    doc = json.loads((out / "krbbench-quick.json").read_text())
    med = doc["medians"]
    for t in ("direct", "plain", "gssapi"):
        assert med[t]["logons"] > 0 and med[t]["errors"] == 0, med[t]
    assert med["gssapi"]["cpu_us_forestgate"] > 0 and med["plain"]["cpu_us_samba"] > 0
    # A ticket asks Samba for searches, never a bind as the user.
    assert med["gssapi"]["cpu_us_samba"] < med["plain"]["cpu_us_samba"]
    assert "| gssapi |" in (out / "krbbench-quick.md").read_text()

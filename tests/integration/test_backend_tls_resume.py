"""Backend TLS resumption against a real Dovecot: forestgate keeps the
session each backend gave (a TLS 1.3 ticket, or a TLS 1.2 session) per
worker, per backend address and name, and offers it on its next connection
there. What a broken build would get wrong:

- every logon a full handshake (the resumption counter stays at 0);
- a session offered to another host or under another name;
- a backend that cannot take the session (restarted with a new certificate
  and new ticket keys), or whose certificate no longer verifies, costing a
  logon instead of a full handshake, or a failed one being resumed past.

The Dovecot here has one login process per service: each login process
keeps its own ticket keys, so with the default four a session resumes only
when the next connection reaches the same process."""

import imaplib
import json
import os
import poplib
import subprocess
import time

import pytest

from conftest import PASSWORDS
from tests.lib.dovecot import Dovecot
from tests.lib.forestgate import bench_binary, binary
from tests.lib.pki import make_ca, make_cert

USER, PASSWORD = "alice", PASSWORDS["alice"]


@pytest.fixture(scope="module")
def pki(workroot):
    d = os.path.join(workroot, "pki-resume")
    ca = make_ca(d)
    other = make_ca(d, "other-ca", "another CA")
    return {"dir": d, "ca": ca + ".crt", "ca_key": ca, "other_ca": other,
            "backend": make_cert(d, ca, "backend.test", alt_names=["alias.test"])}


def start_dovecot(workroot, name, cert, **kw):
    dc = Dovecot(os.path.join(workroot, name), {USER: PASSWORD}, tls=cert, login_procs=1, **kw)
    dc.start()
    dc.deliver(USER, b"Subject: r\r\n\r\nresumed\r\n")
    return dc


@pytest.fixture(scope="module")
def tls_dovecot(workroot, pki):
    dc = start_dovecot(workroot, "dovecot-resume", pki["backend"])
    yield dc
    dc.stop()


def backend_tls(pki, mode="implicit", name="backend.test"):
    return {"backend": {"Tls": mode, "TlsCaFile": pki["ca"], "TlsServerName": name}}


def gateway(make_fg, pki, dc, mode="implicit", name="backend.test", workers=1, **backend):
    imap = dc.imaps_port if mode == "implicit" else dc.imap_port
    pop3 = dc.pop3s_port if mode == "implicit" else dc.pop3_port
    settings = backend_tls(pki, mode, name)
    settings["backend"].update(FailoverBackoff="00:00:01", **backend)
    return make_fg(settings, workers=workers, imap_backend_port=imap, pop3_backend_port=pop3)


def wait_backend_retry(fg, timeout=10.0):
    """Until the host that failed is probed again (FailoverBackoff)."""
    deadline = time.monotonic() + timeout
    while "down" in fg.ask("show backends") and time.monotonic() < deadline:
        time.sleep(0.1)


def imap_logon(fg):
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=15)
    assert m.login(USER, PASSWORD)[0] == "OK"
    m.select("INBOX")
    assert b"resumed" in m.fetch("1", "(BODY.PEEK[])")[1][0][1]
    m.logout()


def pop3_logon(fg):
    p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=15)
    p.user(USER)
    assert p.pass_(PASSWORD).startswith(b"+OK")
    assert b"resumed" in b"\r\n".join(p.retr(1)[1])
    p.quit()


def counts(fg):
    st = fg.stats()
    return st["backend_tls_handshakes_total"], st["backend_tls_resumed_total"]


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_logons_in_a_row_resume(make_fg, pki, tls_dovecot, mode):
    """One full handshake per backend port (IMAP, POP3), then every logon
    resumes: with one worker, 4 logons per protocol are 2 full handshakes
    and 6 resumed ones."""
    fg = gateway(make_fg, pki, tls_dovecot, mode)
    for _ in range(4):
        imap_logon(fg)
        pop3_logon(fg)
    assert counts(fg) == (8, 6)
    logins = [e for e in fg.events("login") if e["result"] == "ok"]
    assert len(logins) == 8 and all(e["backend_tls"] == "TLSv1.3" for e in logins)
    # The metric says the same.
    assert fg.wait_idle()["backend_tls_resumed_total"] == 6


def test_each_worker_resumes_on_its_own(make_fg, pki, tls_dovecot):
    """Two workers: each keeps its own sessions, so at most one full
    handshake per worker and port."""
    fg = gateway(make_fg, pki, tls_dovecot, workers=2)
    for _ in range(6):
        imap_logon(fg)
    hs, resumed = counts(fg)
    assert hs == 6 and 4 <= resumed <= 5, (hs, resumed)


def test_tls_resume_false_offers_no_session(make_fg, pki, tls_dovecot):
    """TlsResume = false (for a backend that mishandles resumption): every
    logon a full handshake; show settings says so."""
    fg = gateway(make_fg, pki, tls_dovecot, TlsResume="false")
    for _ in range(3):
        imap_logon(fg)
    assert counts(fg) == (3, 0)
    assert "TlsResume = false" in fg.ask("show settings backend")


@pytest.mark.parametrize("ssl_options", ["", "no_ticket"])
def test_tls12_resumes_by_ticket_and_by_session_id(workroot, make_fg, pki, ssl_options):
    """A backend that speaks TLS 1.2 only (no TLS 1.3 suite): resumption by
    a TLS 1.2 ticket, and with Dovecot's no_ticket by session ID."""
    # Dovecot has no ssl_max_protocol: its OpenSSL is told by its own
    # configuration file, which the login processes get through
    # import_environment.
    cnf = os.path.join(workroot, f"openssl-tls12-{ssl_options or 'ticket'}.cnf")
    with open(cnf, "w") as f:
        f.write("openssl_conf = fg\n[fg]\nssl_conf = fg_ssl\n[fg_ssl]\n"
                "system_default = fg_sys\n[fg_sys]\nMaxProtocol = TLSv1.2\n")
    dc = start_dovecot(workroot, f"dovecot-tls12-{ssl_options or 'ticket'}", pki["backend"],
                       ssl_extra=(f"ssl_options = {ssl_options}\n"
                                  f"import_environment = TZ OPENSSL_CONF={cnf}\n"))
    try:
        fg = gateway(make_fg, pki, dc)
        for _ in range(3):
            imap_logon(fg)
        assert counts(fg) == (3, 2)
        logins = [e for e in fg.events("login") if e["result"] == "ok"]
        assert [e["backend_tls"] for e in logins] == ["TLSv1.2"] * 3
    finally:
        dc.stop()


def test_a_backend_that_declines_or_fails_verification(workroot, make_fg, pki):
    """The backend restarts with a new key (its login processes have new
    ticket keys: the session offered is declined): a full handshake, the
    new certificate verified, the logon made, and the next one resumes.
    Restarted with a certificate of another CA, the logon fails rather
    than resuming past the check; back with a good one, it succeeds."""
    d = os.path.join(workroot, "pki-resume-change")
    os.makedirs(os.path.join(d, "bad"))
    dc = start_dovecot(workroot, "dovecot-change", pki["backend"])
    try:
        fg = gateway(make_fg, pki, dc)
        imap_logon(fg)
        imap_logon(fg)
        assert counts(fg) == (2, 1)

        dc.stop()
        dc.tls = make_cert(d, pki["ca_key"], "backend.test")  # same name, new key
        dc.start()
        imap_logon(fg)
        assert counts(fg) == (3, 1)  # declined: a full handshake
        imap_logon(fg)
        assert counts(fg) == (4, 2)  # the new session resumes

        dc.stop()
        dc.tls = make_cert(os.path.join(d, "bad"), pki["other_ca"], "backend.test")
        dc.start()
        m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=15)
        with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
            m.login(USER, PASSWORD)
        m.logout()
        assert "TLS" in fg.events("backend_error")[-1]["reason"]
        assert counts(fg) == (4, 2)

        dc.stop()
        dc.tls = pki["backend"]
        dc.start()
        wait_backend_retry(fg)
        imap_logon(fg)
        imap_logon(fg)
        assert counts(fg) == (6, 3)
    finally:
        dc.stop()


def test_resumebench_measures_both(workroot):
    """bench/resumebench, briefly: a run that resumes and one that does not,
    without errors (its figures are for BENCHMARKS.md, not asserted)."""
    out = os.path.join(workroot, "resumebench.json")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([os.path.join(root, "bench", "resumebench"), "--duration", "1",
                        "--repeat", "1", "--conns", "2", "--json", out],
                       env={**os.environ, "FG_BIN": binary(), "FGB_BIN": bench_binary()},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ratio" in r.stdout
    with open(out) as f:
        runs = {run["resume"]: run for run in json.load(f)["runs"]}
    assert runs[True]["logons"] > 2 and runs[False]["logons"] > 2
    assert runs[True]["errors"] == 0 and runs[False]["errors"] == 0
    assert runs[True]["backend_resumed"] >= runs[True]["logons"] - 2
    assert runs[False]["backend_resumed"] == 0

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
import os
import poplib

import pytest

from conftest import PASSWORDS
from tests.lib.dovecot import Dovecot
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


def gateway(make_fg, pki, dc, mode="implicit", name="backend.test", workers=1):
    imap = dc.imaps_port if mode == "implicit" else dc.imap_port
    pop3 = dc.pop3s_port if mode == "implicit" else dc.pop3_port
    return make_fg(backend_tls(pki, mode, name), workers=workers, imap_backend_port=imap,
                   pop3_backend_port=pop3)


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

"""Backend routes end to end: TLS on every route, certificates checked against
each host's own name, per-database overrides, and what forestgate says about
it, against real Dovecot mailbox servers with certificates from a private CA.

The directory is setup A (tests/ldap/fixtures.py) from LDIF: DB01's server
is mbx1.uclabor.de, DB02's mbx2.uclabor.de (msExchOwningServer ->
dNSHostName). Those names exist for forestgate alone: it runs with its own
/etc/hosts (Forestgate's hosts, a mount namespace), where mbx1 is 127.0.0.1
and mbx2 127.0.0.2, and the two Dovecots hold certificates for those names.

Two MOCK backends stand in where no real server misbehaves on demand: a TLS
server that closes TLS cleanly (close_notify) before greeting, and one that
sends a corrupt record after the handshake (tests/lib/mock.py style: plain
Python, named as mocks).
"""

import imaplib
import os
import socket
import ssl
import threading

import pytest

from tests.integration.test_directory_ldif import (MASTER, gateway, imap_login, mailbox_servers,
                                                   pop3_login)
from tests.ldap.fixtures import setup_a
from tests.lib.forestgate import free_port
from tests.lib.pki import make_ca, make_cert

A = setup_a()
HOSTS = {"mbx1.uclabor.de": "127.0.0.1", "mbx2.uclabor.de": "127.0.0.2"}
TUSER = A.passwords["tuser"]


@pytest.fixture(scope="module")
def pki(workroot):
    d = os.path.join(workroot, "routes-pki")
    ca = make_ca(d)
    evil = make_ca(d, "evil", "not the organisation's CA")
    out = {"ca": ca + ".crt", "evil_ca": evil + ".crt"}
    for name in HOSTS:
        out[name] = make_cert(d, ca, name)
    return out


@pytest.fixture(scope="module")
def servers(workroot, pki):
    """DB01 on 127.0.0.1 (mbx1's certificate), DB02 on 127.0.0.2 (mbx2's);
    both on the same four ports."""
    imaps, pop3s = free_port(), free_port()
    tls = {"DB01": pki["mbx1.uclabor.de"], "DB02": pki["mbx2.uclabor.de"]}
    srv, ip, pp = mailbox_servers(workroot, "routes", A, tls=tls,
                                  ports=dict(imaps_port=imaps, pop3s_port=pop3s))
    yield {"dc": srv, "imap": ip, "pop3": pp, "imaps": imaps, "pop3s": pop3s}
    for dc in srv.values():
        dc.stop()


_n = [0]


def routes_gateway(workroot, servers, backend, extra=None, implicit=False, hosts=HOSTS,
                   databases=None, start=True):
    """forestgate with setup A's LDIF; backend: [backend] settings;
    ProxyTargetPort: the TLS ports when implicit, else the plain ones;
    databases: [databases] (default none: the directory names the hosts)."""
    _n[0] += 1
    ports = (servers["imaps"], servers["pop3s"]) if implicit else (servers["imap"],
                                                                    servers["pop3"])
    settings = {"backend": backend}
    settings.update(extra or {})
    fg = gateway(workroot, f"fg-routes-{_n[0]}", [("uclabor", "Organization", A)], *ports,
                 extra=settings, hosts=hosts, start=False, databases=databases)
    fg.sections["backend"]["ConnectTimeout"] = "00:00:02"
    return fg.start() if start else fg


def dovecot_logins(dc, mark, user):
    """Dovecot's login lines for user since mark (a log size)."""
    with open(dc.log_path, errors="replace") as f:
        f.seek(mark)
        return [l for l in f if "Login: user=<%s>" % user in l]


def log_marks(servers):
    return {db: os.path.getsize(dc.log_path) for db, dc in servers["dc"].items()}


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_directory_routes_speak_tls_by_each_hosts_own_name(workroot, servers, pki, mode):
    """No [databases]: the directory names the hosts (dNSHostName). Each is
    reached over TLS and its certificate checked against its own name, by
    IMAP and POP3; Dovecot sees every login arrive over TLS; the audit line
    and show info say so."""
    fg = routes_gateway(workroot, servers, {"Tls": mode, "TlsCaFile": pki["ca"]},
                        implicit=mode == "implicit")
    try:
        marks = log_marks(servers)
        for typed, alias, db in (("tuser", "testalias", "DB01"),
                                 ("UCLABOR\\tuser\\other", "other", "DB02")):
            ok, err, body = imap_login(fg, typed, TUSER)
            assert ok, (err, fg.log_text()[-3000:])
            assert f"the mailbox of {alias} on {db}" in body
            ok, err, body = pop3_login(fg, typed, TUSER)
            assert ok and f"the mailbox of {alias} on {db}" in body, err
            lines = dovecot_logins(servers["dc"][db], marks[db], alias)
            assert len(lines) == 2 and all("TLS" in l for l in lines), lines
        logins = [e for e in fg.events("login") if e["result"] == "ok"]
        assert len(logins) == 4 and all(e["backend_tls"].startswith("TLSv1.") for e in logins)
        assert {e["backend"].split(":")[0] for e in logins} == {"127.0.0.1", "127.0.0.2"}
        st = fg.stats()
        assert st["logins_backend_tls_total"] == 4 and st["logins_backend_clear_total"] == 0
        assert st["backend_tls_handshakes_total"] == 4
        hosts = fg.stats("show backends")["text"]
        assert "mbx1.uclabor.de 127.0.0.1:" in hosts and "mbx2.uclabor.de 127.0.0.2:" in hosts
        assert f" {mode} up " in hosts
    finally:
        assert fg.stop() == 0


def test_databases_route_checks_the_name_it_was_given(workroot, servers, pki):
    """[databases] hosts: a name is checked as written; an address is not the
    certificate's name, so it is refused, until [database:NAME]
    TlsServerName says which name to expect."""
    backend = {"Tls": "implicit", "TlsCaFile": pki["ca"]}
    dbs = {"DB01": "mbx1.uclabor.de", "DB02": "127.0.0.2"}
    fg = routes_gateway(workroot, servers, backend, implicit=True, databases=dbs)
    try:
        # start-up said what would happen
        assert 'warning: 127.0.0.2 is an address: its certificate must carry the name ' \
               '"127.0.0.2"' in fg.log_text()
        assert imap_login(fg, "tuser", TUSER)[0]
        marks = log_marks(servers)
        ok, err, _ = imap_login(fg, "UCLABOR\\tuser\\other", TUSER)
        assert not ok and "UNAVAILABLE" in err
        err_ev = [e for e in fg.events("backend_error") if e["backend"].startswith("127.0.0.2")]
        assert err_ev and err_ev[-1]["reason"].startswith("TLS to the backend failed: "), err_ev
        assert "closed TLS" not in err_ev[-1]["reason"]
        assert not dovecot_logins(servers["dc"]["DB02"], marks["DB02"], "other")
    finally:
        assert fg.stop() == 0
    fg = routes_gateway(workroot, servers, backend, implicit=True, databases=dbs,
                        extra={"database:DB02": {"TlsServerName": "mbx2.uclabor.de"}})
    try:
        ok, err, body = imap_login(fg, "UCLABOR\\tuser\\other", TUSER)
        assert ok and "the mailbox of other on DB02" in body, err
    finally:
        assert fg.stop() == 0


def test_a_certificate_from_another_ca_is_refused_before_the_password(workroot, servers, pki):
    fg = routes_gateway(workroot, servers, {"Tls": "starttls", "TlsCaFile": pki["evil_ca"]})
    try:
        marks = log_marks(servers)
        ok, err, _ = imap_login(fg, "tuser", TUSER)
        assert not ok and "UNAVAILABLE" in err
        ok, err, _ = pop3_login(fg, "tuser", TUSER)
        assert not ok and "SYS/TEMP" in err
        ev = fg.events("login")[-1]
        assert ev["result"] == "unavailable"
        reasons = [e["reason"] for e in fg.events("backend_error")]
        assert reasons and all(r.startswith("TLS to the backend failed: ") for r in reasons)
        # The master password never went out: Dovecot saw no login at all.
        assert not dovecot_logins(servers["dc"]["DB01"], marks["DB01"], "testalias")
        assert MASTER not in open(servers["dc"]["DB01"].log_path).read()[marks["DB01"]:]
        fg.wait_idle()
    finally:
        assert fg.stop() == 0


def test_a_database_overrides_the_backend_policy(workroot, servers, pki):
    """[backend] Tls = implicit; [database:DB02] Tls = none on the plain
    ports: DB02's logins go in clear (and say so), DB01's over TLS."""
    fg = routes_gateway(
            workroot, servers, {"Tls": "implicit", "TlsCaFile": pki["ca"]}, implicit=True,
            extra={"database:DB02": {"Tls": "none", "ImapPort": str(servers["imap"]),
                                     "Pop3Port": str(servers["pop3"])}})
    try:
        marks = log_marks(servers)
        assert imap_login(fg, "tuser", TUSER)[0]
        assert imap_login(fg, "UCLABOR\\tuser\\other", TUSER)[0]
        by_mailbox = {e["mailbox"]: e for e in fg.events("login") if e["result"] == "ok"}
        assert by_mailbox["testalias"]["backend_tls"].startswith("TLSv1.")
        assert by_mailbox["other"]["backend_tls"] == "none"
        assert by_mailbox["other"]["backend"] == f"127.0.0.2:{servers['imap']}"
        assert "TLS" not in dovecot_logins(servers["dc"]["DB02"], marks["DB02"], "other")[0]
        st = fg.stats()
        assert st["logins_backend_tls_total"] == 1 and st["logins_backend_clear_total"] == 1
        settings = fg.stats("show settings")["text"]
        assert "[database:DB02]\nTls = none\n" in settings
        assert f"ImapPort = {servers['imap']}\n" in settings
    finally:
        assert fg.stop() == 0


def test_master_password_in_clear_is_warned_about(workroot, servers):
    """MasterUser without TLS: once at start for a configured host off the
    machine, once at first use for a host the directory names."""
    fg = routes_gateway(workroot, servers, {}, databases={"DB01": "127.0.0.1",
                                                          "DB03": "192.0.2.7"},
                        hosts={"mbx1.uclabor.de": "127.0.0.1", "mbx2.uclabor.de": "192.0.2.8"})
    try:
        log = fg.log_text()
        assert "warning: LoginMode = MasterUser with Tls = none: the master password crosses " \
               "the network in clear text to 192.0.2.7 (192.0.2.7)" in log, log
        assert log.count("clear text") == 1
        assert imap_login(fg, "tuser", TUSER)[0]  # DB01: loopback, nothing to say
        assert not fg.events("backend_clear_text")
        ok, err, _ = imap_login(fg, "UCLABOR\\tuser\\other", TUSER)  # DB02 -> mbx2 -> 192.0.2.8
        assert not ok and "UNAVAILABLE" in err
        imap_login(fg, "UCLABOR\\tuser\\other", TUSER)
        warned = fg.events("backend_clear_text")
        assert len(warned) == 1 and "mbx2.uclabor.de" in warned[0]["msg"], warned
    finally:
        assert fg.stop() == 0


# ---- TLS close is not a TLS error ----

class MockTlsBackend:
    """MOCK backend: a TLS server on 127.0.0.1 with mbx1's certificate that,
    after the handshake, either closes TLS cleanly (close_notify) or sends a
    corrupt record. Counts its connections."""

    def __init__(self, pki, how):
        self.how = how
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(*pki["mbx1.uclabor.de"])
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            s = None
            try:
                s = self.ctx.wrap_socket(raw, server_side=True)  # takes raw's descriptor
                if self.how == "close_notify":
                    s.unwrap().close()
                    continue
                s.sendall(b"* OK mock\r\n")
                s.recv(1000)  # the first command: the greeting was taken
                # A record with a valid header and a body that no key
                # decrypts, under the TLS layer: the client's TLS must fail,
                # not take it for a close.
                os.write(s.fileno(), bytes([23, 3, 3, 0, 40]) + os.urandom(40))
                s.recv(100)
                s.close()
            except (OSError, ssl.SSLError):
                (s or raw).close()

    def close(self):
        self.sock.close()


def test_backend_tls_close_and_error_are_told_apart(make_fg, pki):
    """A backend that closes TLS cleanly before it greets is "the backend
    closed TLS" (and the host is taken for down); one whose TLS breaks after
    the greeting is a TLS failure with wolfSSL's reason, not a close."""
    for how in ("close_notify", "garbage"):
        mock = MockTlsBackend(pki, how)
        try:
            fg = make_fg({"backend": {"DefaultServer": "mbx1.uclabor.de", "Tls": "implicit",
                                      "TlsCaFile": pki["ca"]}},
                         imap_backend_port=mock.port, pop3_backend_port=mock.port, hosts=HOSTS)
            m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=15)
            with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
                m.login("alice", "secret")
            m.logout()
            login = fg.events("login")[-1]
            errs = fg.events("backend_error")
            if how == "close_notify":
                assert [e["reason"] for e in errs] == ["the backend closed TLS"], errs
                assert login["reason"] == "no backend host reachable"
                assert fg.events("backend_down")[0]["reason"] == "the backend closed TLS"
            else:
                assert not errs and login["reason"].startswith("TLS to the backend failed: ")
                assert "closed" not in login["reason"], login
            assert mock.accepted == 1
            fg.wait_idle()
        finally:
            mock.close()

"""The LDAP store over TLS: LdapTls = starttls, ldaps:// URIs, and a server
certificate that does not chain to LdapCaFile (refused: the directory is
unavailable, never used in clear). A real slapd (Debian's, GnuTLS) with a
private CA made here by openssl; real Dovecot behind forestgate."""

import os
import subprocess

import pytest

from tests.integration.test_directory_ldif import MASTER, MASTER_PW, imap_login, mailbox_servers
from tests.ldap.fixtures import setup_a
from tests.lib.forestgate import Forestgate, free_port
from tests.lib.slapd import Slapd


def make_pki(d):
    """A CA, a server certificate for 127.0.0.1 signed by it, and another CA."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    for ca in ("ca", "other"):
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN=test {ca}")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1")
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext")
    os.chmod(os.path.join(d, "srv.key"), 0o644)  # slapd may drop privileges
    return {k: os.path.join(d, f"{k}.pem") for k in ("ca", "other", "srv")} | {
        "key": os.path.join(d, "srv.key")}


class TlsSlapd(Slapd):
    """A Slapd with a certificate: StartTLS on its ldap:// port and a second
    ldaps:// port."""

    def __init__(self, *a, pki, **kw):
        super().__init__(*a, **kw)
        self.pki = pki
        self.ldaps_port = free_port()

    def _global_text(self) -> str:
        return super()._global_text() + "\n".join([
            f"TLSCACertificateFile {self._q(self.pki['ca'])}",
            f"TLSCertificateFile {self._q(self.pki['srv'])}",
            f"TLSCertificateKeyFile {self._q(self.pki['key'])}",
            ""])

    def _launch(self) -> None:
        self._log_file = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            [self._bin(), "-f", self.conf_path, "-h",
             f"ldap://{self.host}:{self.port}/ ldaps://{self.host}:{self.ldaps_port}/",
             "-d", str(self.log_level)],
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=self._log_file,
            cwd=self.workdir, start_new_session=True, close_fds=True)
        self._paused = False

    @staticmethod
    def _bin() -> str:
        from tests.lib import slapd
        return slapd.SLAPD_BIN


@pytest.fixture(scope="module")
def env(workroot):
    A = setup_a()
    d = os.path.join(workroot, "ldap-tls")
    os.makedirs(d, exist_ok=True)
    pki = make_pki(d)
    dc = TlsSlapd.for_forest(os.path.join(d, "dc"), A, pki=pki).start()
    servers, ip, pp = mailbox_servers(workroot, "ldap-tls-mbx", A)
    yield A, dc, pki, d, ip, pp
    dc.stop()
    for s in servers.values():
        s.stop()


def gateway(env, name, **forest):
    A, dc, pki, d, ip, pp = env
    fd = os.path.join(d, name)
    os.makedirs(fd, exist_ok=True)
    for fname, text in (("master.pw", MASTER_PW), ("bind.pw", A.bind_password)):
        with open(os.path.join(fd, fname), "w") as f:
            f.write(text + "\n")
    settings = {
        "backend": {"LoginMode": "MasterUser", "MasterUser": MASTER,
                    "MasterPasswordFile": os.path.join(fd, "master.pw")},
        "directory": {"DirectoryThreads": "1", "RequestTimeout": "00:00:04"},
        "databases": {"DB01": "127.0.0.1", "DB02": "127.0.0.2"},
        "forest:uclabor": {"Role": "Organization", "BindDn": A.bind_dn,
                           "BindPasswordFile": os.path.join(fd, "bind.pw"),
                           "Domains": "; ".join(f"{x.netbios}:{x.dns}:{x.base_dn}"
                                                for x in A.domains.values()), **forest},
    }
    fg = Forestgate(fd, imap_backend_port=ip, pop3_backend_port=pp, settings=settings)
    fg.sections["backend"].pop("DefaultServer", None)
    return fg.start()


@pytest.mark.parametrize("how", ["starttls", "ldaps"])
def test_logins_over_ldap_tls(env, how):
    A, dc, pki = env[0], env[1], env[2]
    if how == "starttls":
        fg = gateway(env, how, Uri=dc.uri, LdapTls="starttls", LdapCaFile=pki["ca"])
    else:
        fg = gateway(env, how, Uri=f"ldaps://127.0.0.1:{dc.ldaps_port}", LdapCaFile=pki["ca"])
    try:
        mark = dc.log_mark()
        ok, err, body = imap_login(fg, "UCLABOR\\tuser\\other", A.passwords["tuser"])
        assert ok, (err, fg.events("login")[-1])
        assert "the mailbox of other on DB02" in body
        ok, err, _ = imap_login(fg, "tuser", "wrong-password")
        assert not ok and "AUTHENTICATIONFAILED" in err
        log = dc.log_since(mark)
        # slapd saw TLS on the connections: StartTLS as an extended
        # operation, ldaps as a TLS accept; and no bind went in clear first.
        if how == "starttls":
            assert "EXT oid=1.3.6.1.4.1.1466.20037" in log, log[-2000:]
        assert "TLS established" in log or "tls_ssf" in log or "ssf=256" in log, log[-2000:]
    finally:
        assert fg.stop() == 0


@pytest.mark.parametrize("how", ["starttls", "ldaps"])
def test_untrusted_ldap_certificate_is_unavailable(env, how):
    """The server's certificate does not chain to LdapCaFile: no lookup is
    made in clear instead, the login gets [UNAVAILABLE], the log says why."""
    A, dc, pki = env[0], env[1], env[2]
    uri = dc.uri if how == "starttls" else f"ldaps://127.0.0.1:{dc.ldaps_port}"
    extra = {"LdapTls": "starttls"} if how == "starttls" else {}
    fg = gateway(env, f"bad-{how}", Uri=uri, LdapCaFile=pki["other"], **extra)
    try:
        ok, err, _ = imap_login(fg, "tuser", A.passwords["tuser"])
        assert not ok and "UNAVAILABLE" in err, err
        assert fg.events("login")[-1]["reason"] == "the directory is unavailable"
        down = fg.events("ldap_down")
        assert down and "127.0.0.1" in down[-1]["msg"], fg.log_text()[-2000:]
        assert "certificate does not chain to LdapCaFile" in down[-1]["msg"]
    finally:
        assert fg.stop() == 0

"""TLS through forestgate with real clients: implicit TLS (993/995),
STARTTLS/STLS, Exchange's LoginType, certificates by SNI, SIGHUP reload,
stalled and garbage handshakes, and TLS to a real Dovecot backend.

Certificates come from a private CA made by openssl for this module:
mail.test (ECDSA P-256, the default), other.test (RSA 2048), *.wild.test
(ECDSA) and backend.test (the TLS Dovecot's)."""

import base64
import imaplib
import json
import os
import poplib
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import PASSWORDS
from tests.lib.dovecot import Dovecot
from tests.lib.forestgate import Forestgate, bench_binary
from tests.lib.pki import make_ca, make_cert

USER, PASSWORD = "alice", PASSWORDS["alice"]
NAMES = ["mail.test", "other.test", "*.wild.test"]


@pytest.fixture(scope="module")
def pki(workroot):
    d = os.path.join(workroot, "pki")
    certs = os.path.join(d, "certs")
    os.makedirs(certs, exist_ok=True)
    ca = make_ca(d)
    make_cert(certs, ca, "mail.test")
    make_cert(certs, ca, "other.test", rsa=True)
    make_cert(certs, ca, "*.wild.test")
    backend = make_cert(d, ca, "backend.test")
    return {"dir": certs, "ca": ca + ".crt", "ca_key": ca, "backend": backend, "root": d}


def tls_settings(pki, imap_tls, pop3_tls, login_type="SecureLogin", names="mail.test"):
    return {
        "global": {"CertificateDirectory": pki["dir"]},
        "imap": {"SSLBindings": f"127.0.0.1:{imap_tls}", "X509CertificateName": names,
                 "LoginType": login_type},
        "pop3": {"SSLBindings": f"127.0.0.1:{pop3_tls}", "X509CertificateName": names,
                 "LoginType": login_type},
    }


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TlsFg:
    """forestgate with TLS listeners beside the plain ones."""

    def __init__(self, make_fg, pki, login_type="SecureLogin", names="mail.test", extra=None,
                 **kw):
        self.imaps_port, self.pop3s_port = free_port(), free_port()
        settings = tls_settings(pki, self.imaps_port, self.pop3s_port, login_type, names)
        for sec, vals in (extra or {}).items():
            settings.setdefault(sec, {}).update(vals)
        self.fg = make_fg(settings, **kw)
        self.pki = pki

    def __getattr__(self, name):
        return getattr(self.fg, name)


def client_ctx(pki, check_hostname=True):
    ctx = ssl.create_default_context(cafile=pki["ca"])
    ctx.check_hostname = check_hostname
    return ctx


@pytest.fixture
def tfg(make_fg, pki):
    return TlsFg(make_fg, pki)


def read_until(f, prefix: bytes) -> list[bytes]:
    lines = []
    while True:
        line = f.readline()
        assert line, f"closed before {prefix!r}: {lines}"
        lines.append(line)
        if line.startswith(prefix):
            return lines


# ---- real clients: imaplib, poplib ----

def test_imaps_imaplib_verifies_certificate_and_fetches(tfg, dovecot, pki):
    dovecot.deliver(USER, b"Subject: tls\r\n\r\nover TLS\r\n")
    m = imaplib.IMAP4_SSL("127.0.0.1", tfg.imaps_port, timeout=15,
                          ssl_context=client_ctx(pki, check_hostname=False))
    cert = m.sock.getpeercert()
    assert ("commonName", "mail.test") in cert["subject"][0]
    assert "AUTH=PLAIN" in m.capabilities and "STARTTLS" not in m.capabilities
    assert "LOGINDISABLED" not in m.capabilities
    assert m.login(USER, PASSWORD)[0] == "OK"
    typ, data = m.select("INBOX")
    n = int(data[0])
    typ, data = m.fetch(str(n), "(BODY.PEEK[])")
    assert typ == "OK" and b"over TLS" in data[0][1]
    m.logout()
    ev = tfg.events("login")[-1]
    assert ev["result"] == "ok" and ev["tls"] in ("TLSv1.3", "TLSv1.2")


def test_imap_starttls_imaplib_recomputes_capabilities(tfg, pki):
    m = imaplib.IMAP4("127.0.0.1", tfg.imap_port, timeout=15)
    # SecureLogin before TLS: no password mechanism at all.
    assert "STARTTLS" in m.capabilities and "LOGINDISABLED" in m.capabilities
    assert "AUTH=PLAIN" not in m.capabilities
    m.starttls(ssl_context=client_ctx(pki, check_hostname=False))
    assert "STARTTLS" not in m.capabilities and "LOGINDISABLED" not in m.capabilities
    assert "AUTH=PLAIN" in m.capabilities
    assert m.login(USER, PASSWORD)[0] == "OK"
    assert m.select("INBOX")[0] == "OK"
    m.logout()


def test_pop3s_and_stls_poplib(tfg, dovecot, pki):
    dovecot.deliver(USER, b"Subject: pop\r\n\r\npop over TLS\r\n")
    p = poplib.POP3_SSL("127.0.0.1", tfg.pop3s_port, timeout=15,
                        context=client_ctx(pki, check_hostname=False))
    caps = p.capa()
    assert "USER" in caps and "SASL" in caps and "STLS" not in caps
    p.user(USER)
    assert p.pass_(PASSWORD).startswith(b"+OK")
    count, _ = p.stat()
    body = b"\r\n".join(p.retr(count)[1])
    assert b"pop over TLS" in body
    p.quit()

    p = poplib.POP3("127.0.0.1", tfg.pop3_port, timeout=15)
    caps = p.capa()
    assert "STLS" in caps and "USER" not in caps and "SASL" not in caps
    p.stls(context=client_ctx(pki, check_hostname=False))
    caps = p.capa()
    assert "STLS" not in caps and "USER" in caps and caps.get("SASL") == ["PLAIN"]
    p.user(USER)
    assert p.pass_(PASSWORD).startswith(b"+OK")
    p.quit()


# ---- openssl s_client and curl ----

def s_client(args, script: bytes, pki, timeout=20) -> str:
    cmd = ["openssl", "s_client", "-quiet", "-ign_eof", "-CAfile", pki["ca"],
           "-verify_return_error", "-servername", "mail.test", *args]
    r = subprocess.run(cmd, input=script, capture_output=True, timeout=timeout)
    return r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_openssl_s_client_imap(tfg, pki, mode):
    port = tfg.imaps_port if mode == "implicit" else tfg.imap_port
    args = ["-connect", f"127.0.0.1:{port}"] + (["-starttls", "imap"] if mode == "starttls"
                                                 else [])
    out = s_client(args, f"a LOGIN {USER} {PASSWORD}\r\nb SELECT INBOX\r\nc LOGOUT\r\n".encode(),
                   pki)
    assert "verify return:1" in out or "Verify return code: 0" in out or "depth=0" in out, out
    assert "a OK" in out and "b OK" in out and "c OK" in out, out


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_openssl_s_client_pop3(tfg, pki, mode):
    port = tfg.pop3s_port if mode == "implicit" else tfg.pop3_port
    args = ["-connect", f"127.0.0.1:{port}"] + (["-starttls", "pop3"] if mode == "starttls"
                                                 else [])
    out = s_client(args, f"USER {USER}\r\nPASS {PASSWORD}\r\nSTAT\r\nQUIT\r\n".encode(), pki)
    assert "+OK Logged in." in out, out
    assert "+OK Logging out" in out or out.count("+OK") >= 4, out


def curl(args, pki, timeout=30):
    r = subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", pki["ca"], *args],
                       capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def test_curl_imaps_pop3s_and_ssl_reqd(tfg, dovecot, pki):
    dovecot.deliver(USER, b"Subject: curl\r\n\r\nfetched by curl\r\n")
    auth = ["-u", f"{USER}:{PASSWORD}"]
    res = lambda port: ["--resolve", f"mail.test:{port}:127.0.0.1"]  # noqa: E731
    # imaps:// with the certificate verified for mail.test.
    rc, out, err = curl(res(tfg.imaps_port) + auth +
                        [f"imaps://mail.test:{tfg.imaps_port}/INBOX?ALL"], pki)
    assert rc == 0 and "SEARCH" in out, err
    rc, out, err = curl(res(tfg.pop3s_port) + auth + [f"pop3s://mail.test:{tfg.pop3s_port}/"],
                        pki)
    assert rc == 0 and out.strip(), err
    # imap:// and pop3:// with --ssl-reqd: STARTTLS/STLS, then the login.
    rc, out, err = curl(res(tfg.imap_port) + auth + ["--ssl-reqd",
                        f"imap://mail.test:{tfg.imap_port}/INBOX?ALL"], pki)
    assert rc == 0 and "SEARCH" in out, err
    rc, out, err = curl(res(tfg.pop3_port) + auth + ["--ssl-reqd",
                        f"pop3://mail.test:{tfg.pop3_port}/"], pki)
    assert rc == 0 and out.strip(), err
    # Without TLS, SecureLogin leaves curl no way to log in.
    rc, out, err = curl(auth + [f"imap://127.0.0.1:{tfg.imap_port}/INBOX?ALL"], pki)
    assert rc != 0
    assert all(e["tls"] for e in tfg.events("login") if e["result"] == "ok")


# ---- STARTTLS injection ----

def raw_starttls(port, first: bytes, expect: bytes, pki):
    """Sends first in one packet, reads the clear-text answer, then does TLS."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = s.makefile("rb")
    f.readline()  # greeting
    s.sendall(first)
    line = f.readline()
    assert line.startswith(expect), line
    ctx = client_ctx(pki, check_hostname=False)
    t = ctx.wrap_socket(s, server_hostname="mail.test")
    return t, t.makefile("rb")


def test_imap_starttls_injection_is_dropped(tfg, pki):
    t, f = raw_starttls(tfg.imap_port, f"a STARTTLS\r\nb LOGIN {USER} {PASSWORD}\r\n".encode(),
                        b"a OK", pki)
    t.sendall(b"c CAPABILITY\r\n")
    lines = read_until(f, b"c ")
    assert lines[-1].startswith(b"c OK"), lines
    assert not any(l.startswith(b"b ") for l in lines), lines
    # The session is still before login: a command of the logged-in state
    # is refused, and no login was ever attempted.
    t.sendall(b"d SELECT INBOX\r\n")
    assert read_until(f, b"d ")[-1].startswith(b"d BAD"), "LOGIN ran from clear text"
    assert tfg.events("login") == []
    t.sendall(f"e LOGIN {USER} {PASSWORD}\r\n".encode())
    assert read_until(f, b"e ")[-1].startswith(b"e OK")
    t.close()


def test_pop3_stls_injection_is_dropped(tfg, pki):
    t, f = raw_starttls(tfg.pop3_port, f"STLS\r\nUSER {USER}\r\nPASS {PASSWORD}\r\n".encode(),
                        b"+OK", pki)
    t.sendall(b"CAPA\r\n")
    lines = read_until(f, b".")
    assert lines[0].startswith(b"+OK"), lines
    # The injected USER was never run: PASS alone has no user name.
    t.sendall(f"PASS {PASSWORD}\r\n".encode())
    assert f.readline().startswith(b"-ERR No user name"), "USER ran from clear text"
    assert tfg.events("login") == []
    t.sendall(f"USER {USER}\r\nPASS {PASSWORD}\r\n".encode())
    assert f.readline().startswith(b"+OK")
    assert f.readline().startswith(b"+OK Logged in.")
    t.close()


def test_starttls_inside_tls_is_refused(tfg, pki):
    ctx = client_ctx(pki, check_hostname=False)
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", tfg.imaps_port), timeout=10),
                         server_hostname="mail.test") as t:
        f = t.makefile("rb")
        assert f.readline().startswith(b"* OK")
        t.sendall(b"a STARTTLS\r\n")
        assert f.readline().startswith(b"a BAD")
        t.sendall(b"b NOOP\r\n")
        assert f.readline().startswith(b"b OK")
    # And a second STARTTLS after a first one.
    t, f = raw_starttls(tfg.imap_port, b"a STARTTLS\r\n", b"a OK", pki)
    t.sendall(b"b STARTTLS\r\n")
    assert f.readline().startswith(b"b BAD")
    t.close()
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", tfg.pop3s_port), timeout=10),
                         server_hostname="mail.test") as t:
        f = t.makefile("rb")
        assert f.readline().startswith(b"+OK")
        t.sendall(b"STLS\r\n")
        assert f.readline().startswith(b"-ERR")


# ---- LoginType: 3 types x plain/TLS x LOGIN / AUTHENTICATE / USER+PASS / AUTH ----

LOGIN_TYPES = ["PlainTextLogin", "PlainTextAuthentication", "SecureLogin"]
MECHS = ["imap-login", "imap-authenticate", "pop3-userpass", "pop3-auth"]


def allowed(login_type, tls, mech):
    if tls or login_type == "PlainTextLogin":
        return True
    if login_type == "PlainTextAuthentication":
        return mech in ("imap-authenticate", "pop3-auth")
    return False


@pytest.fixture(scope="module")
def lt_fgs(workroot, dovecot, pki):
    """One forestgate per LoginType, shared by the matrix."""
    fgs = {}
    for lt in LOGIN_TYPES:
        imaps, pop3s = free_port(), free_port()
        fg = Forestgate(os.path.join(workroot, f"lt-{lt}"), imap_backend_port=dovecot.imap_port,
                        pop3_backend_port=dovecot.pop3_port,
                        settings=tls_settings(pki, imaps, pop3s, lt))
        fg.imaps_port, fg.pop3s_port = imaps, pop3s
        fgs[lt] = fg.start()
    yield fgs
    for fg in fgs.values():
        assert fg.stop() == 0, fg.log_text()


def connect(fg, proto, tls, pki):
    port = {("imap", False): fg.imap_port, ("imap", True): fg.imaps_port,
            ("pop3", False): fg.pop3_port, ("pop3", True): fg.pop3s_port}[(proto, tls)]
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls:
        s = client_ctx(pki, check_hostname=False).wrap_socket(s, server_hostname="mail.test")
    f = s.makefile("rb")
    assert f.readline().startswith(b"* OK" if proto == "imap" else b"+OK")
    return s, f


@pytest.mark.parametrize("mech", MECHS)
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("login_type", LOGIN_TYPES)
def test_login_type_matrix(lt_fgs, pki, login_type, tls, mech):
    fg = lt_fgs[login_type]
    proto = mech.split("-")[0]
    ok = allowed(login_type, tls, mech)
    s, f = connect(fg, proto, tls, pki)
    plain_b64 = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
    if proto == "imap":
        s.sendall(b"c CAPABILITY\r\n")
        caps = read_until(f, b"c ")[0].decode()
        login_ok = allowed(login_type, tls, "imap-login")
        auth_ok = allowed(login_type, tls, "imap-authenticate")
        assert ("LOGINDISABLED" in caps) == (not login_ok), caps
        assert ("AUTH=PLAIN" in caps) == auth_ok, caps
        assert ("STARTTLS" in caps) == (not tls), caps
        if mech == "imap-login":
            s.sendall(f"a LOGIN {USER} {PASSWORD}\r\n".encode())
        else:
            s.sendall(b"a AUTHENTICATE PLAIN " + plain_b64 + b"\r\n")
        reply = read_until(f, b"a ")[-1]
        if ok:
            assert reply.startswith(b"a OK"), reply
        else:
            assert reply.startswith(b"a NO [PRIVACYREQUIRED]") and b"TLS" in reply, reply
    else:
        s.sendall(b"CAPA\r\n")
        caps = b"".join(read_until(f, b".")).decode()
        assert ("\r\nUSER\r\n" in caps) == allowed(login_type, tls, "pop3-userpass"), caps
        assert ("SASL PLAIN" in caps) == allowed(login_type, tls, "pop3-auth"), caps
        assert ("STLS" in caps) == (not tls), caps
        if mech == "pop3-userpass":
            s.sendall(f"USER {USER}\r\n".encode())
            first = f.readline()
            if not ok:
                assert first.startswith(b"-ERR [AUTH]") and b"TLS" in first, first
            s.sendall(f"PASS {PASSWORD}\r\n".encode())
            reply = f.readline()
        else:
            s.sendall(b"AUTH PLAIN " + plain_b64 + b"\r\n")
            reply = f.readline()
        if ok:
            assert reply.startswith(b"+OK"), reply
        else:
            assert reply.startswith(b"-ERR [AUTH]") and b"TLS" in reply, reply
    s.close()


# ---- SNI ----

def peer_cn(port, sni):
    ctx = ssl.create_default_context(cafile=PKI_CA[0])
    ctx.check_hostname = False
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                         server_hostname=sni) as t:
        subject = dict(x[0] for x in t.getpeercert()["subject"])
        return subject["commonName"], t.version()


PKI_CA = [None]


def test_sni_selects_the_certificate(make_fg, pki):
    PKI_CA[0] = pki["ca"]
    fg = TlsFg(make_fg, pki, names="mail.test, other.test, *.wild.test")
    assert peer_cn(fg.imaps_port, "mail.test")[0] == "mail.test"
    assert peer_cn(fg.imaps_port, "other.test")[0] == "other.test"    # RSA
    assert peer_cn(fg.imaps_port, "OTHER.test")[0] == "other.test"    # names ignore case
    assert peer_cn(fg.imaps_port, "a.wild.test")[0] == "*.wild.test"  # wildcard
    assert peer_cn(fg.imaps_port, "a.b.wild.test")[0] == "mail.test"  # one label only
    assert peer_cn(fg.imaps_port, "unknown.test")[0] == "mail.test"   # the default
    assert peer_cn(fg.pop3s_port, None)[0] == "mail.test"             # no SNI: the default
    # The RSA certificate works over TLS 1.2 as well.
    ctx = ssl.create_default_context(cafile=pki["ca"])
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", fg.imaps_port), timeout=10),
                         server_hostname="other.test") as t:
        assert t.version() == "TLSv1.2"
        assert t.makefile("rb").readline().startswith(b"* OK")


def test_tls_versions_and_ciphers_are_restricted(tfg, pki):
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            ctx.minimum_version = version
            ctx.maximum_version = version
            ctx.set_ciphers("ALL:@SECLEVEL=0")
        except (ValueError, ssl.SSLError):
            continue
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            with ctx.wrap_socket(socket.create_connection(("127.0.0.1", tfg.imaps_port),
                                                          timeout=10)) as t:
                t.recv(10)
    # TLS 1.2 without AEAD (CBC only) is refused too.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", tfg.imaps_port),
                                                      timeout=10)) as t:
            t.recv(10)


# ---- certificate reload ----

def fingerprint(port):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                         server_hostname="mail.test") as t:
        return t.getpeercert(binary_form=True)


def test_sighup_reload_under_load_drops_no_session(make_fg, pki, workroot):
    # A certificate directory of its own, so the module's stays intact.
    d = os.path.join(workroot, "reload-certs")
    shutil.copytree(pki["dir"], d)
    fg = TlsFg(make_fg, pki, extra={"global": {"CertificateDirectory": d}})
    before = fingerprint(fg.imaps_port)
    # A session that lives across every reload.
    m = imaplib.IMAP4_SSL("127.0.0.1", fg.imaps_port, timeout=15,
                          ssl_context=client_ctx(pki, check_hostname=False))
    m.login(USER, PASSWORD)
    m.select("INBOX")
    # Load: TLS logins and a TLS fetch loop, through the reloads.
    logins = subprocess.Popen(
        [bench_binary(), "--proto", "imap", "--port", str(fg.imaps_port), "--tls",
         "--scenario", "login", "--conns", "8", "--duration", "6", "--users", USER,
         "--password-pattern", PASSWORD, "--json", "-", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1)
    make_cert(d, pki["ca_key"], "mail.test")        # a new key and certificate
    fg.proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    after = fingerprint(fg.imaps_port)
    assert after != before
    # A broken certificate: the reload fails, the current one stays.
    with open(os.path.join(d, "mail.test.crt"), "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    fg.proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert fingerprint(fg.imaps_port) == after
    out, err = logins.communicate(timeout=60)
    res = json.loads(out)
    assert res["errors_total"] == 0, res["errors"]
    assert res["ops"] > 20
    # The old session is still alive and well.
    assert m.noop()[0] == "OK"
    assert m.select("INBOX")[0] == "OK"
    m.logout()
    reloads = fg.events("tls_reload")
    assert any(e["level"] == "info" for e in reloads), fg.log_text()
    bad = [e for e in reloads if e["level"] == "error"]
    assert bad and "mail.test.crt" in bad[-1]["msg"] and "keeping" in bad[-1]["msg"]


# ---- stalled, dribbling, garbage and vanishing handshakes ----

def client_hello() -> bytes:
    """A real ClientHello, as Python's ssl module would send it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="mail.test")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def closed_within(s, seconds) -> bool:
    s.settimeout(seconds)
    try:
        while s.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_stalled_handshakes_end_at_the_preauth_timeout(make_fg, pki):
    fg = TlsFg(make_fg, pki, extra={"imap": {"PreAuthenticatedConnectionTimeout": "00:00:10"},
                                     "pop3": {"PreAuthenticatedConnectionTimeout": "00:00:10"}})
    base_fds = fg.fd_count()
    hello = client_hello()
    silent = socket.create_connection(("127.0.0.1", fg.imaps_port))
    half = socket.create_connection(("127.0.0.1", fg.pop3s_port))
    half.sendall(hello[:20])
    after_starttls = socket.create_connection(("127.0.0.1", fg.imap_port))
    after_starttls.recv(512)
    after_starttls.sendall(b"a STARTTLS\r\n")
    assert after_starttls.recv(512).startswith(b"a OK")
    dribble = socket.create_connection(("127.0.0.1", fg.imaps_port))
    stop = threading.Event()

    def drip():  # a byte every half second: never finishes within the timeout
        for b in hello[:-1]:
            if stop.is_set():
                return
            try:
                dribble.sendall(bytes([b]))
            except OSError:
                return
            time.sleep(0.5)

    t = threading.Thread(target=drip)
    t.start()
    start = time.monotonic()
    try:
        for s in (silent, half, after_starttls, dribble):
            assert closed_within(s, 16 - (time.monotonic() - start))
    finally:
        stop.set()
        t.join()
    elapsed = time.monotonic() - start
    assert 8 <= elapsed < 16, elapsed
    st = fg.wait_idle()
    assert st["timeouts_total"] >= 4
    assert fg.fd_count() == base_fds
    for s in (silent, half, after_starttls, dribble):
        s.close()


def test_garbage_instead_of_client_hello_is_closed_cleanly(tfg):
    base_fds = tfg.fd_count()
    for garbage in (b"a LOGIN alice secret\r\n", b"GET / HTTP/1.0\r\n\r\n",
                    b"\x16\x03\x01\x00\x05hello", b"\x16\x03\x01\xff\xff" + b"\0" * 300,
                    b"\x80" * 100):
        for port in (tfg.imaps_port, tfg.pop3s_port):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(garbage)
            assert closed_within(s, 10)
            s.close()
    st = tfg.wait_idle()
    assert st["tls_failed_total"] >= 6, st
    assert tfg.fd_count() == base_fds
    assert tfg.events("tls_error")
    # It still serves.
    m = imaplib.IMAP4_SSL("127.0.0.1", tfg.imaps_port, timeout=15,
                          ssl_context=client_ctx(tfg.pki, check_hostname=False))
    assert m.login(USER, PASSWORD)[0] == "OK"
    m.logout()


def test_a_clean_tls_close_before_login_is_no_tls_error(make_fg, pki):
    """A client that ends TLS with close_notify before it logs in (implicit
    TLS and after STARTTLS, IMAP and POP3) has closed, as a FIN would say: no
    tls_error, no tls_failed count, and the session ends as "client closed"
    (logged at debug level before a login)."""
    tfg = TlsFg(make_fg, pki, extra={"global": {"LogLevel": "debug"}})
    ctx = client_ctx(pki)
    for port, greeting in ((tfg.imaps_port, b"* OK"), (tfg.pop3s_port, b"+OK")):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        s = ctx.wrap_socket(raw, server_hostname="mail.test")
        assert s.recv(512).startswith(greeting)
        s.unwrap().close()  # close_notify, then the socket
    m = imaplib.IMAP4("127.0.0.1", tfg.imap_port, timeout=10)
    m.starttls(ssl_context=client_ctx(pki, check_hostname=False))  # imaplib sends 127.0.0.1
    m.sock.unwrap().close()
    st = tfg.wait_idle()
    assert st["tls_failed_total"] == 0 and not tfg.events("tls_error"), tfg.log_text()
    closes = [e["reason"] for e in tfg.events("disconnect")]
    assert closes == ["client closed"] * 3, closes
    assert st["tls_handshakes_total"] == 3


def test_maxconnections_on_a_tls_binding_closes_without_a_word(make_fg, pki):
    """Past MaxConnections, a client of an SSLBindings address is closed
    before any TLS: there is no greeting to say BYE in (the README says so)."""
    tfg = TlsFg(make_fg, pki, extra={"imap": {"MaxConnections": "2"}})
    ctx = client_ctx(pki)
    held = [ctx.wrap_socket(socket.create_connection(("127.0.0.1", tfg.imaps_port), timeout=10),
                            server_hostname="mail.test") for _ in range(2)]
    for h in held:
        assert h.recv(512).startswith(b"* OK")
    extra = socket.create_connection(("127.0.0.1", tfg.imaps_port), timeout=10)
    assert extra.recv(512) == b""  # closed, nothing sent: not even a TLS alert
    extra.close()
    for h in held:
        h.close()
    st = tfg.wait_idle()
    assert st["refused_total"] == 1 and st["tls_handshakes_total"] == 2


def test_clients_vanishing_mid_handshake_leave_nothing(tfg):
    base_fds = tfg.fd_count()
    hello = client_hello()
    for i in range(200):
        s = socket.create_connection(("127.0.0.1", tfg.imaps_port if i % 2 else tfg.pop3s_port))
        s.sendall(hello[: (i * 7) % len(hello)])
        if i % 3 == 0:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # RST
        s.close()
    st = tfg.wait_idle()
    assert st["connections"] == 0
    assert tfg.fd_count() == base_fds


def test_stats_count_handshakes_and_resumptions(tfg):
    out = subprocess.run(
        [bench_binary(), "--proto", "pop3", "--port", str(tfg.pop3s_port), "--tls",
         "--tls-resume", "--scenario", "login", "--conns", "4", "--duration", "2", "--users",
         USER, "--password-pattern", PASSWORD, "--json", "-", "--quiet"],
        capture_output=True, timeout=60)
    res = json.loads(out.stdout)
    assert res["errors_total"] == 0
    assert res["tls"]["resumed"] > 0
    st = tfg.stats()
    assert st["tls_handshakes_total"] >= res["tls"]["handshakes"]
    assert st["tls_resumed_total"] >= res["tls"]["resumed"] > 0
    assert "built for speed" in st["tls_library"] or "system libwolfssl" in st["tls_library"]


# ---- TLS to the backend ----

@pytest.fixture(scope="module")
def tls_dovecot(workroot, pki):
    dc = Dovecot(os.path.join(workroot, "dovecot-tls"), {USER: PASSWORD}, tls=pki["backend"])
    dc.start()
    dc.deliver(USER, b"Subject: b\r\n\r\nbackend over TLS\r\n")
    yield dc
    dc.stop()


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_backend_over_tls(make_fg, pki, tls_dovecot, mode):
    imap_port = tls_dovecot.imaps_port if mode == "implicit" else tls_dovecot.imap_port
    pop3_port = tls_dovecot.pop3s_port if mode == "implicit" else tls_dovecot.pop3_port
    fg = make_fg({"backend": {"Tls": mode, "TlsCaFile": pki["ca"],
                              "TlsServerName": "backend.test"}},
                 imap_backend_port=imap_port, pop3_backend_port=pop3_port)
    mark = os.path.getsize(tls_dovecot.log_path)
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=15)
    assert m.login(USER, PASSWORD)[0] == "OK"
    typ, data = m.select("INBOX")
    typ, data = m.fetch("1", "(BODY.PEEK[])")
    assert b"backend over TLS" in data[0][1]
    m.logout()
    p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=15)
    p.user(USER)
    assert p.pass_(PASSWORD).startswith(b"+OK")
    assert b"backend over TLS" in b"\r\n".join(p.retr(1)[1])
    p.quit()
    logins = [e for e in fg.events("login") if e["result"] == "ok"]
    assert len(logins) == 2 and all(e["backend_tls"].startswith("TLSv1.") for e in logins)
    assert fg.stats()["backend_tls_handshakes_total"] == 2
    # Dovecot's own log marks both logins as made over TLS.
    with open(tls_dovecot.log_path, errors="replace") as f:
        f.seek(mark)
        dlog = [l for l in f if "Login: user=<alice>" in l]
    assert len(dlog) == 2 and all(", TLS" in l for l in dlog), dlog


def test_backend_certificate_must_match_the_name(make_fg, pki, tls_dovecot):
    fg = make_fg({"backend": {"Tls": "implicit", "TlsCaFile": pki["ca"],
                              "TlsServerName": "wrong.test"}},
                 imap_backend_port=tls_dovecot.imaps_port,
                 pop3_backend_port=tls_dovecot.pop3s_port)
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=15)
    with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
        m.login(USER, PASSWORD)
    m.logout()
    fail = fg.events("login")[-1]
    assert fail["result"] == "unavailable"
    errs = fg.events("backend_error")
    assert errs and "TLS" in errs[-1]["reason"], fg.log_text()
    fg.wait_idle()


def test_backend_tls_to_a_plain_server_fails_cleanly(make_fg, pki, dovecot):
    # The shared Dovecot has no TLS: implicit TLS to it cannot succeed.
    fg = make_fg({"backend": {"Tls": "implicit", "TlsCaFile": pki["ca"],
                              "TlsServerName": "backend.test"}},
                 imap_backend_port=dovecot.imap_port, pop3_backend_port=dovecot.pop3_port)
    p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=15)
    p.user(USER)
    with pytest.raises(poplib.error_proto, match="SYS/TEMP"):
        p.pass_(PASSWORD)
    p.quit()
    fg.wait_idle()


def test_key_update_mid_session(tfg, pki):
    """openssl s_client's K (KeyUpdate, answer requested) and k, during the
    relay: forestgate's TLS answers and the session goes on."""
    def feed(proc):
        for line, pause in ((f"a LOGIN {USER} {PASSWORD}\n", 1.0), ("K\n", 0.5),
                            ("b SELECT INBOX\n", 0.5), ("k\n", 0.5), ("c NOOP\n", 0.5),
                            ("d LOGOUT\n", 0.5)):
            proc.stdin.write(line.encode())
            proc.stdin.flush()
            time.sleep(pause)

    proc = subprocess.Popen(["openssl", "s_client", "-crlf", "-CAfile", pki["ca"],
                             "-servername", "mail.test", "-connect",
                             f"127.0.0.1:{tfg.imaps_port}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    feed(proc)
    out = proc.communicate(input=b"", timeout=20)[0].decode(errors="replace")
    assert out.count("KEYUPDATE") == 2, out
    for tag in "abcd":
        assert f"\n{tag} OK" in out, out

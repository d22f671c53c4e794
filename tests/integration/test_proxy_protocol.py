"""The PROXY protocol (v1 and v2) on ProxyProtocolBindings, with real
clients behind it: curl --haproxy-protocol through a relay standing for the
load balancer, imaplib and poplib over sockets that send a v2 header first
(IPv4 and IPv6 families, TLVs, CRC32C), TLS after the header on an SSL
binding (the AUTHORITY TLV choosing the certificate), the refusals
(untrusted balancer, malformed, incomplete, late, no header at all), a
PROXY header on an ordinary binding, and SendProxyProtocol = v2 to a real
Dovecot listening with haproxy = yes. The backends are real Dovecots, and
one test resolves its logon through the LDIF directory."""

import imaplib
import os
import poplib
import socket
import ssl
import struct
import subprocess
import threading
import time

import re

import pytest

from conftest import PASSWORDS
from tests.lib.dovecot import Dovecot
from tests.lib.forestgate import Raw, free_port
from tests.lib.pki import make_ca, make_cert

USER, PASSWORD = "alice", PASSWORDS["alice"]
SIG = bytes.fromhex("0D0A0D0A000D0A515549540A")
TRUSTED = "127.0.0.1, ::1"


# ---- PROXY headers, as a load balancer writes them ----

def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack(">H", len(value)) + value


def ssl_tlv(version: str, cipher: str) -> bytes:
    """PP2_TYPE_SSL: the client spoke TLS to the balancer, its certificate
    (none) verified; version and cipher as sub-TLVs."""
    return tlv(0x20, b"\x01" + b"\0\0\0\0" + tlv(0x21, version.encode())
               + tlv(0x23, cipher.encode()))


def v2(src=("203.0.113.7", 50123), dst=("192.0.2.1", 143), tlvs=b"", crc=False,
       local=False) -> bytes:
    """A v2 header; the family follows the addresses. crc: a CRC32C TLV."""
    if local:
        body, fam = tlvs, 0x00
    elif ":" in src[0]:
        fam = 0x21
        body = (socket.inet_pton(socket.AF_INET6, src[0]) + socket.inet_pton(socket.AF_INET6, dst[0])
                + struct.pack(">HH", src[1], dst[1]) + tlvs)
    else:
        fam = 0x11
        body = (socket.inet_pton(socket.AF_INET, src[0]) + socket.inet_pton(socket.AF_INET, dst[0])
                + struct.pack(">HH", src[1], dst[1]) + tlvs)
    if crc:
        body += tlv(0x03, b"\0\0\0\0")
    hdr = SIG + bytes([0x20 if local else 0x21, fam]) + struct.pack(">H", len(body)) + body
    if crc:
        hdr = hdr[:-4] + struct.pack(">I", crc32c(hdr))
    return hdr


def v1(src=("203.0.113.7", 50123), dst=("192.0.2.1", 143)) -> bytes:
    fam = "TCP6" if ":" in src[0] else "TCP4"
    return f"PROXY {fam} {src[0]} {dst[0]} {src[1]} {dst[1]}\r\n".encode()


def connect(port, header=b"", host="127.0.0.1", source=None, timeout=10):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(timeout)
    if source:
        s.bind((source, 0))
    s.connect((host, port))
    if header:
        s.sendall(header)
    return s


class ProxiedIMAP(imaplib.IMAP4):
    """imaplib on a socket that sends a PROXY header first."""

    def __init__(self, port, header, host="127.0.0.1"):
        self._header = header
        super().__init__(host, port, timeout=15)

    def _create_socket(self, timeout):
        return connect(self.port, self._header, self.host, timeout=timeout)


class ProxiedIMAPS(imaplib.IMAP4_SSL):
    """imaplib over TLS, the header before the ClientHello; sni None sends
    no server name."""

    def __init__(self, port, header, ctx, sni=None):
        self._header, self._sni = header, sni
        super().__init__("127.0.0.1", port, ssl_context=ctx, timeout=15)

    def _create_socket(self, timeout):
        sock = connect(self.port, self._header, timeout=timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self._sni)


class ProxiedPOP3(poplib.POP3):
    def __init__(self, port, header, host="127.0.0.1"):
        self._header = header
        super().__init__(host, port, timeout=15)

    def _create_socket(self, timeout):
        return connect(self.port, self._header, self.host, timeout=timeout)


def refused_without_a_byte(s, timeout=5.0) -> bool:
    """True when the server closes the connection without sending anything."""
    s.settimeout(timeout)
    try:
        data = s.recv(4096)
    except ConnectionResetError:
        data = b""
    except (socket.timeout, TimeoutError):
        return False
    finally:
        s.close()
    assert data == b"", data
    return True


def dovecot_login(dc, sid, proto="imap"):
    return dc.wait_for_log(r"%s-login: Info: Login: user=<\w+>.*session=<%s>"
                           % (proto, sid)).group(0)


def dovecot_login_from(dc, client, proto="imap"):
    """Dovecot's login line for a client address ("ip:port" or "[ip]:port"),
    when no session id was forwarded."""
    ip, port = client.rsplit(":", 1)
    return dc.wait_for_log(r"%s-login: Info: Login: user=<\w+>.*rip=%s, rport=%s,.*"
                           % (proto, re.escape(ip.strip("[]")), port)).group(0)


# ---- forestgate with PROXY bindings ----

@pytest.fixture
def pfg(make_fg):
    """Every binding expects a PROXY header, from 127.0.0.1 and ::1; the
    IMAP one also listens on [::1]."""
    fg = make_fg(start=False)
    fg.sections["imap"].update({
        "UnencryptedOrTLSBindings": f"127.0.0.1:{fg.imap_port}, [::1]:{fg.imap_port}",
        "ProxyProtocolBindings": f"127.0.0.1:{fg.imap_port}, [::1]:{fg.imap_port}",
        "TrustedProxies": TRUSTED, "ProxyProtocolTimeout": "00:00:02"})
    fg.sections["pop3"].update({
        "ProxyProtocolBindings": f"127.0.0.1:{fg.pop3_port}",
        "TrustedProxies": TRUSTED, "ProxyProtocolTimeout": "00:00:02"})
    return fg.start()


def test_show_settings_prints_the_proxy_settings(pfg):
    text = pfg.stats("show settings")["text"]
    assert f"ProxyProtocolBindings = 127.0.0.1:{pfg.imap_port}, [::1]:{pfg.imap_port}\n" in text
    assert "TrustedProxies = 127.0.0.1, ::1\n" in text
    assert "ProxyProtocolTimeout = 00:00:02\n" in text
    assert "SendProxyProtocol = no\n" in text


# ---- curl, through a relay that stands for the balancer ----

class Balancer:
    """A TCP relay on 127.0.0.1: each client's bytes go to the target from a
    connection of its own, unchanged both ways -- a balancer in TCP mode
    whose client (curl --haproxy-protocol) writes the PROXY header."""

    def __init__(self, target_port):
        self.target = target_port
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.upstream_ports = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.target))
            self.upstream_ports.append(u.getsockname()[1])
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            try:
                b.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self):
        self.lsock.close()


def test_curl_haproxy_protocol_through_a_balancer(pfg, dovecot):
    dovecot.deliver(USER, b"Subject: pp\r\n\r\nthrough the balancer\r\n")
    lb = Balancer(pfg.imap_port)
    try:
        # curl 7.88 has no --haproxy-clientip: it names its own address, so
        # it connects from 127.0.0.7, which the relay (on 127.0.0.1) is not.
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "20", "--haproxy-protocol", "--interface", "127.0.0.7",
             "-u", f"{USER}:{PASSWORD}", f"imap://127.0.0.1:{lb.port}/INBOX;MAILINDEX=1"],
            capture_output=True, timeout=30)
    finally:
        lb.close()
    assert out.returncode == 0, out.stderr
    assert b"Subject:" in out.stdout
    ev = [e for e in pfg.events("login") if e["result"] == "ok"][-1]
    assert ev["client"].startswith("127.0.0.7:"), ev
    assert ev["proxy"] == f"127.0.0.1:{lb.upstream_ports[-1]}", ev
    line = dovecot_login(dovecot, ev["session"])
    assert "rip=127.0.0.7," in line and f"rport={ev['client'].split(':')[1]}," in line
    assert pfg.wait_idle()["proxy_accepted_total"] == 1


# ---- v2 headers from Python, imaplib and poplib after them ----

def test_v2_ipv4_with_tlvs_imap(pfg, dovecot):
    tlvs = (tlv(0x02, b"mail.example.org") + tlv(0x04, b"\0\0") + tlv(0x05, b"req-4711")
            + ssl_tlv("TLSv1.3", "TLS_AES_256_GCM_SHA384") + tlv(0xE0, b"future"))
    m = ProxiedIMAP(pfg.imap_port, v2(("203.0.113.7", 50123), ("192.0.2.1", 993), tlvs, crc=True))
    assert m.login(USER, PASSWORD)[0] == "OK"
    assert m.select("INBOX")[0] == "OK"
    m.logout()
    ev = pfg.events("login")[-1]
    assert ev["result"] == "ok" and ev["client"] == "203.0.113.7:50123", ev
    assert ev["proxy"].startswith("127.0.0.1:")
    assert ev["pp_ssl"] == "TLSv1.3" and ev["pp_cipher"] == "TLS_AES_256_GCM_SHA384", ev
    assert ev["pp_authority"] == "mail.example.org"
    # The disconnect line carries them too: every line about the session.
    bye = pfg.wait_events("disconnect", lambda e: e["session"] == ev["session"])
    assert bye[0]["client"] == "203.0.113.7:50123"
    # ID forwarding sends the header's client on to the backend.
    line = dovecot_login(dovecot, ev["session"])
    assert "rip=203.0.113.7," in line and "rport=50123," in line


def test_v2_ipv6_family_pop3(pfg, dovecot):
    p = ProxiedPOP3(pfg.pop3_port, v2(("2001:db8::7", 4444), ("2001:db8::1", 110), crc=True))
    p.user(USER)
    assert p.pass_(PASSWORD).startswith(b"+OK")
    p.stat()
    p.quit()
    ev = pfg.events("login")[-1]
    assert ev["client"] == "[2001:db8::7]:4444" and ev["proxy"].startswith("127.0.0.1:"), ev
    assert "rip=2001:db8::7," in dovecot_login(dovecot, ev["session"], "pop3")


def test_v2_ipv4_family_over_an_ipv6_balancer(pfg, dovecot):
    m = ProxiedIMAP(pfg.imap_port, v2(("198.51.100.20", 1234), ("192.0.2.1", 143)), host="::1")
    assert m.login(USER, PASSWORD)[0] == "OK"
    m.logout()
    ev = pfg.events("login")[-1]
    assert ev["client"] == "198.51.100.20:1234" and ev["proxy"].startswith("[::1]:"), ev


def test_v1_tcp6_and_local_keep_or_replace_the_address(pfg):
    m = ProxiedIMAP(pfg.imap_port, v1(("2001:db8::9", 65535), ("2001:db8::1", 143)))
    assert m.login(USER, PASSWORD)[0] == "OK"
    m.logout()
    assert pfg.events("login")[-1]["client"] == "[2001:db8::9]:65535"
    # LOCAL (a balancer's own health check) and v1 UNKNOWN: the socket's
    # own address stands, and no proxy= is claimed.
    for header in (v2(local=True), b"PROXY UNKNOWN\r\n"):
        m = ProxiedIMAP(pfg.imap_port, header)
        assert m.login(USER, PASSWORD)[0] == "OK"
        m.logout()
        ev = pfg.events("login")[-1]
        assert ev["client"].startswith("127.0.0.1:") and "proxy" not in ev, ev
    assert pfg.wait_idle()["proxy_accepted_total"] == 3


def test_bytes_after_the_header_are_the_session_s(pfg):
    """The header and the first command in one segment: the command runs."""
    s = connect(pfg.imap_port, v2() + b"a1 CAPABILITY\r\na2 LOGIN alice secret\r\n")
    f = s.makefile("rb")
    assert f.readline().startswith(b"* OK")
    assert f.readline().startswith(b"* CAPABILITY")
    assert f.readline().startswith(b"a1 OK")
    assert f.readline().startswith(b"a2 OK")
    s.close()
    s = connect(pfg.pop3_port, v1() + b"CAPA\r\n")
    f = s.makefile("rb")
    assert f.readline().startswith(b"+OK")
    assert f.readline().startswith(b"+OK")  # CAPA's answer
    s.close()
    ev = pfg.events("login")[-1]
    assert ev["client"] == "203.0.113.7:50123"


def test_header_dribbled_byte_by_byte(pfg):
    s = connect(pfg.imap_port)
    for b in v2(("203.0.113.8", 8), tlvs=tlv(0x02, b"x.example"), crc=True) + b"a LOGIN alice secret\r\n":
        s.sendall(bytes([b]))
        time.sleep(0.002)
    f = s.makefile("rb")
    assert f.readline().startswith(b"* OK")
    assert f.readline().startswith(b"a OK")
    s.close()
    assert pfg.events("login")[-1]["client"] == "203.0.113.8:8"


# ---- refusals: closed without a byte, logged with a reason, counted ----

MALFORMED = [
    ("v1 bad port", b"PROXY TCP4 203.0.113.7 192.0.2.1 65536 143\r\n", "bad source port"),
    ("v1 address of the other family", b"PROXY TCP4 ::1 192.0.2.1 1 143\r\n", "bad source"),
    ("v1 two spaces", b"PROXY TCP4 203.0.113.7  192.0.2.1 1 143\r\n", "single spaces"),
    ("v1 LF alone", b"PROXY TCP4 203.0.113.7 192.0.2.1 1 143\n", "CRLF"),
    ("v1 too long", b"PROXY UNKNOWN " + b"x" * 120, "107"),
    ("v2 bad CRC32C", v2(crc=True)[:-1] + bytes([v2(crc=True)[-1] ^ 1]), "CRC32C"),
    ("v2 bad signature", SIG[:11] + b"\x0b" + v2()[12:], "signature"),
    ("v2 version 1", SIG + b"\x11\x11\x00\x0c" + b"\0" * 12, "version"),
    ("v2 UDP", SIG + b"\x21\x12\x00\x0c" + b"\0" * 12, "STREAM"),
    ("v2 oversized", SIG + b"\x21\x11\x10\x00" + b"\0" * 64, "1536"),
    ("v2 TLV overrunning", SIG + b"\x21\x11\x00\x0f" + b"\0" * 12 + b"\x02\x00\x09", "overruns"),
    ("an IMAP client that speaks first", b"a1 LOGIN alice secret\r\n", "not a PROXY"),
    ("a TLS ClientHello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "not a PROXY"),
]


@pytest.mark.parametrize("name,data,why", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_header_is_refused(pfg, name, data, why):
    s = connect(pfg.imap_port, data)
    assert refused_without_a_byte(s)
    ev = pfg.events("proxy_refused")
    assert len(ev) == 1 and ev[0]["reason"] == "malformed" and why in ev[0]["detail"], ev
    assert ev[0]["client"].startswith("127.0.0.1:")
    assert pfg.wait_idle()["proxy_refused_total"] == 1


def test_refusals_leave_no_descriptor_behind(make_fg, pki):
    fg = tls_pfg(make_fg, pki, timeout="00:00:01")
    base = fg.fd_count()
    socks = []
    for port in (fg.imap_port, fg.imaps_port, fg.pop3_port):
        for _, data, _ in MALFORMED:
            socks.append(connect(port, data))
        socks.append(connect(port, b"PROXY TCP4 1.2"))  # incomplete, then late
        socks.append(connect(port, source="127.0.0.2"))  # untrusted
        socks.append(connect(port))  # nothing at all, then late
    for s in socks:
        assert refused_without_a_byte(s, timeout=10)
    st = fg.wait_idle()
    n = 3 * (len(MALFORMED) + 3)
    assert st["proxy_refused_total"] == n and st["proxy_accepted_total"] == 0
    reasons = [e["reason"] for e in fg.events("proxy_refused")]
    assert reasons.count("malformed") == 3 * len(MALFORMED)
    assert reasons.count("untrusted") == 3 and reasons.count("timeout") == 6
    assert fg.fd_count() == base
    # And sessions that were accepted, on each kind of binding.
    for m in (ProxiedIMAP(fg.imap_port, v2()), ProxiedIMAPS(fg.imaps_port, v1(), client_ctx(pki))):
        assert m.login(USER, PASSWORD)[0] == "OK"
        m.logout()
    p = ProxiedPOP3(fg.pop3_port, v2(crc=True))
    p.user(USER)
    assert p.pass_(PASSWORD).startswith(b"+OK")
    p.quit()
    assert fg.wait_idle()["proxy_accepted_total"] == 3
    assert fg.fd_count() == base


def test_untrusted_balancer_is_closed_at_once(pfg):
    t0 = time.monotonic()
    s = connect(pfg.imap_port, v2(), source="127.0.0.2")
    assert refused_without_a_byte(s)
    assert time.monotonic() - t0 < 1.5
    ev = pfg.events("proxy_refused")[-1]
    assert ev["reason"] == "untrusted" and ev["client"].startswith("127.0.0.2:"), ev
    # A POP3 one too, sending nothing.
    assert refused_without_a_byte(connect(pfg.pop3_port, source="127.0.0.2"))
    st = pfg.wait_idle()
    assert st["proxy_refused_total"] == 2 and st["logins_ok_total"] == 0


def test_incomplete_header_ends_at_the_timeout(pfg):
    s = connect(pfg.imap_port, b"PROXY TCP4 203.0.113.7 192.0.2.1 ")
    t0 = time.monotonic()
    assert refused_without_a_byte(s, timeout=10)
    assert 1.5 < time.monotonic() - t0 < 4.5  # ProxyProtocolTimeout = 2 s, a 1 s tick
    ev = pfg.events("proxy_refused")[-1]
    assert ev["reason"] == "timeout" and ev["received"] == "33", ev
    # Dribbling does not stretch it: the time counts from the accept.
    s = connect(pfg.pop3_port)
    t0 = time.monotonic()
    for b in v2()[:20]:
        try:
            s.sendall(bytes([b]))
        except OSError:
            break
        time.sleep(0.25)
    assert refused_without_a_byte(s, timeout=10)
    assert time.monotonic() - t0 < 6
    assert pfg.wait_idle()["proxy_refused_total"] == 2


def test_plain_client_without_a_header(pfg):
    """An IMAP client waits for the greeting, which never comes."""
    with pytest.raises((imaplib.IMAP4.abort, OSError, EOFError)):
        imaplib.IMAP4("127.0.0.1", pfg.imap_port, timeout=10)
    ev = pfg.events("proxy_refused")[-1]
    assert ev["reason"] == "timeout" and ev["received"] == "0"
    # A balancer's TCP health check connects and closes: not a refusal.
    connect(pfg.pop3_port).close()
    st = pfg.wait_idle()
    assert st["proxy_refused_total"] == 1


# ---- ordinary bindings ----

def test_header_on_an_ordinary_binding_is_a_bad_command(fg):
    c = Raw(fg.imap_port)
    assert c.line().startswith(b"* OK")
    c.send(v1() + b"a LOGIN alice secret\r\n")
    assert c.line().startswith(b"PROXY BAD"), c.buf
    assert c.line().startswith(b"a OK")
    c.close()
    p = Raw(fg.pop3_port)
    assert p.line().startswith(b"+OK")
    p.send(v1())
    assert p.line().startswith(b"-ERR")
    p.close()
    # v2's binary header is no command either, and names nobody: IMAP
    # answers its lines with BAD until too many, and POP3 reads the "QUIT"
    # inside its signature (0D 0A 0D 0A 00 0D 0A "QUIT" 0A) as one.
    c = Raw(fg.imap_port)
    c.line()
    c.send(v2(("203.0.113.66", 1)) + b"\r\nb LOGIN alice secret\r\n")
    lines = c.until(b"* BYE")
    assert lines[0].startswith(b"* BAD") and lines[-1] == b"* BYE Too many invalid commands.\r\n"
    assert c.closed()
    p = Raw(fg.pop3_port)
    p.line()
    p.send(v2(("203.0.113.66", 1)))
    assert p.until(b"+OK")[-1] == b"+OK Logging out.\r\n"
    assert p.closed()
    evs = fg.events("login")
    assert len(evs) == 1 and all(e["client"].startswith("127.0.0.1:") and "proxy" not in e
                                 for e in evs), evs
    assert fg.wait_idle()["proxy_accepted_total"] == 0


def test_only_the_named_bindings_expect_a_header(make_fg):
    fg = make_fg(start=False)
    other = free_port()
    fg.sections["imap"].update({
        "UnencryptedOrTLSBindings": f"127.0.0.1:{fg.imap_port}, 127.0.0.1:{other}",
        "ProxyProtocolBindings": f"127.0.0.1:{other}", "TrustedProxies": TRUSTED})
    fg.start()
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
    assert m.login(USER, PASSWORD)[0] == "OK"
    m.logout()
    m = ProxiedIMAP(other, v2(("203.0.113.70", 70)))
    assert m.login(USER, PASSWORD)[0] == "OK"
    m.logout()
    assert [e["client"].split(":")[0] for e in fg.events("login")] == ["127.0.0.1", "203.0.113.70"]


# ---- SSL bindings: the header, then the TLS handshake ----

@pytest.fixture(scope="module")
def pki(workroot):
    d = os.path.join(workroot, "pki-proxy")
    certs = os.path.join(d, "certs")
    os.makedirs(certs, exist_ok=True)
    ca = make_ca(d)
    make_cert(certs, ca, "mail.test")
    make_cert(certs, ca, "other.test")
    backend = make_cert(d, ca, "backend.test")
    return {"dir": certs, "ca": ca + ".crt", "backend": backend}


def tls_pfg(make_fg, pki, timeout="00:00:02"):
    """IMAP on a plain and an SSL binding, both PROXY bindings; POP3's plain
    one too. Certificates: mail.test (the default) and other.test."""
    fg = make_fg(start=False)
    fg.imaps_port = free_port()
    fg.sections["global"]["CertificateDirectory"] = pki["dir"]
    fg.sections["imap"].update({
        "SSLBindings": f"127.0.0.1:{fg.imaps_port}",
        "X509CertificateName": "mail.test, other.test",
        "ProxyProtocolBindings": f"127.0.0.1:{fg.imap_port}, 127.0.0.1:{fg.imaps_port}",
        "TrustedProxies": TRUSTED, "ProxyProtocolTimeout": timeout})
    fg.sections["pop3"].update({"ProxyProtocolBindings": f"127.0.0.1:{fg.pop3_port}",
                                "TrustedProxies": TRUSTED, "ProxyProtocolTimeout": timeout})
    return fg.start()


def client_ctx(pki):
    ctx = ssl.create_default_context(cafile=pki["ca"])
    ctx.check_hostname = False
    return ctx


def peer_cn(m) -> str:
    return dict(x[0] for x in m.sock.getpeercert()["subject"])["commonName"]


@pytest.mark.parametrize("sni,authority,cn", [
    (None, None, "mail.test"),
    (None, "other.test", "other.test"),
    (None, "OTHER.test", "other.test"),
    ("mail.test", "other.test", "mail.test"),  # the ClientHello's own name wins
    (None, "unknown.test", "mail.test"),
    (None, "bad name!", "mail.test"),  # not a host name: only logged
])
def test_ssl_binding_header_then_tls(make_fg, pki, dovecot, sni, authority, cn):
    fg = tls_pfg(make_fg, pki)
    tlvs = tlv(0x02, authority.encode()) if authority else b""
    m = ProxiedIMAPS(fg.imaps_port, v2(("203.0.113.30", 3030), ("192.0.2.1", 993), tlvs),
                     client_ctx(pki), sni=sni)
    assert peer_cn(m) == cn
    assert m.login(USER, PASSWORD)[0] == "OK"
    m.logout()
    ev = fg.events("login")[-1]
    assert ev["client"] == "203.0.113.30:3030" and ev["tls"].startswith("TLSv1."), ev
    assert ev.get("pp_authority") == authority
    assert "rip=203.0.113.30," in dovecot_login(dovecot, ev["session"])
    assert fg.stats()["tls_handshakes_total"] == 1


class TlsAfterHeader:
    """TLS through memory BIOs, so the header and the ClientHello leave in
    one send: what follows the header must reach the handshake untouched."""

    def __init__(self, port, header, ctx):
        self.sock = connect(port, b"")
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=None)
        first = header
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(first + self.out.read())
                first = b""
                self._fill()
        self.sock.sendall(self.out.read())
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("closed")
        self.inc.write(data)

    def send(self, data):
        self.obj.write(data)
        self.sock.sendall(self.out.read())

    def line(self):
        while b"\n" not in self.buf:
            try:
                self.buf += self.obj.read(65536)
            except ssl.SSLWantReadError:
                self._fill()
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"


def test_header_and_client_hello_in_one_segment(make_fg, pki):
    fg = tls_pfg(make_fg, pki)
    t = TlsAfterHeader(fg.imaps_port, v1(("203.0.113.31", 31), ("192.0.2.1", 993)),
                       client_ctx(pki))
    assert t.line().startswith(b"* OK")
    t.send(b"a LOGIN alice secret\r\nb LOGOUT\r\n")
    assert t.line().startswith(b"a OK")
    t.sock.close()
    assert fg.events("login")[-1]["client"] == "203.0.113.31:31"


def test_ssl_binding_refusals_send_no_tls(make_fg, pki):
    fg = tls_pfg(make_fg, pki, timeout="00:00:01")
    # A ClientHello where the header belongs; half a header, then nothing.
    with pytest.raises((ssl.SSLError, OSError)):
        client_ctx(pki).wrap_socket(connect(fg.imaps_port), server_hostname="mail.test")
    assert refused_without_a_byte(connect(fg.imaps_port, b"PROXY TCP4 203"), timeout=10)
    st = fg.wait_idle()
    assert st["proxy_refused_total"] == 2 and st["tls_handshakes_total"] == 0
    assert [e["reason"] for e in fg.events("proxy_refused")] == ["malformed", "timeout"]


# ---- with the directory: the audit line of a resolved logon ----

def test_directory_logon_audit_line(workroot):
    from test_directory_ldif import gateway, mailbox_servers
    from tests.ldap.fixtures import setup_a
    A = setup_a()
    servers, ip, pp = mailbox_servers(workroot, "pp-dir", A, hosts=(("DB01", "127.0.0.1"),))
    fg = gateway(workroot, "pp-fg-dir", [("uclabor", "Organization", A)], ip, pp,
                 databases={"DB01": "127.0.0.1"}, start=False)
    fg.sections["imap"].update({"ProxyProtocolBindings": f"127.0.0.1:{fg.imap_port}",
                                "TrustedProxies": "127.0.0.0/8"})
    fg.start()
    try:
        m = ProxiedIMAP(fg.imap_port, v2(("198.51.100.77", 7777), tlvs=tlv(0x05, b"lb-42")))
        assert m.login("UCLABOR\\tuser", A.passwords["tuser"])[0] == "OK"
        m.logout()
        ev = fg.events("login")[-1]
        assert ev["result"] == "ok" and ev["account"] and ev["form"], ev
        assert ev["client"] == "198.51.100.77:7777" and ev["proxy"].startswith("127.0.0.1:")
        line = dovecot_login(servers["DB01"], ev["session"])
        assert "rip=198.51.100.77," in line
    finally:
        assert fg.stop() == 0, fg.log_text()
        for dc in servers.values():
            dc.stop()


# ---- SendProxyProtocol = v2 to a Dovecot listening with haproxy = yes ----

@pytest.fixture(scope="module")
def haproxy_dovecot(workroot, pki):
    dc = Dovecot(os.path.join(workroot, "dovecot-haproxy"), {USER: PASSWORD},
                 tls=pki["backend"], haproxy=True)
    dc.start()
    dc.deliver(USER, b"Subject: h\r\n\r\nbehind a PROXY header\r\n")
    yield dc
    dc.stop()


@pytest.mark.parametrize("tls", ["none", "implicit"])
def test_send_proxy_protocol_v2_to_dovecot(make_fg, pki, haproxy_dovecot, tls):
    dc = haproxy_dovecot
    backend = {"SendProxyProtocol": "v2", "ForwardClientAddress": "false", "Tls": tls}
    if tls == "implicit":
        backend.update({"TlsCaFile": pki["ca"], "TlsServerName": "backend.test"})
        ports = {"imap_backend_port": dc.haproxy_imaps_port,
                 "pop3_backend_port": dc.haproxy_pop3s_port}
    else:
        ports = {"imap_backend_port": dc.haproxy_imap_port,
                 "pop3_backend_port": dc.haproxy_pop3_port}
    fg = make_fg({"backend": backend}, **ports)
    c = Raw(fg.imap_port, source="127.0.0.5")
    c.line()
    c.send(b"a LOGIN alice secret\r\nb SELECT INBOX\r\nc FETCH 1 BODY[TEXT]\r\n")
    assert any(b"behind a PROXY header" in l for l in c.until(b"c OK"))
    c.close()
    ev = fg.events("login")[-1]
    # From the header alone: ForwardClientAddress is off (so no session id
    # either); the header's destination is forestgate's own address.
    assert ev["client"].startswith("127.0.0.5:")
    line = dovecot_login_from(dc, ev["client"])
    assert f"lip=127.0.0.1, lport={fg.imap_port}," in line and "real_rip=127.0.0.1," in line
    assert ev["backend_tls"] == "none" if tls == "none" else ev["backend_tls"].startswith("TLSv1.")
    p = Raw(fg.pop3_port, source="127.0.0.6")
    p.line()
    p.send(b"USER alice\r\nPASS secret\r\n")
    p.until(b"+OK Logged in")
    p.close()
    assert dovecot_login_from(dc, fg.events("login")[-1]["client"], "pop3")


def test_send_proxy_protocol_carries_a_proxied_client(make_fg, haproxy_dovecot):
    """Both ends: the balancer's client, through forestgate, is the client
    the backend sees. (With ForwardClientAddress as well, Dovecot ignores the
    ID: it judges login_trusted_networks by the header's client, which is
    not in it.)"""
    dc = haproxy_dovecot
    fg = make_fg({"backend": {"SendProxyProtocol": "v2", "ForwardClientAddress": "true"}},
                 imap_backend_port=dc.haproxy_imap_port, pop3_backend_port=dc.haproxy_pop3_port,
                 start=False)
    fg.sections["imap"].update({"ProxyProtocolBindings": f"127.0.0.1:{fg.imap_port}",
                                "TrustedProxies": TRUSTED})
    fg.start()
    m = ProxiedIMAP(fg.imap_port, v2(("2001:db8::55", 5555), ("2001:db8::1", 143)))
    assert m.login(USER, PASSWORD)[0] == "OK"
    m.logout()
    ev = fg.events("login")[-1]
    assert ev["client"] == "[2001:db8::55]:5555"
    assert "lip=::ffff:127.0.0.1," in dovecot_login_from(dc, ev["client"])


def test_limit_per_address_counts_the_named_client_not_the_balancer(make_fg):
    """MaxConnectionFromSingleIP = 2 behind a balancer: every connection comes
    from the balancer's address, but each client the headers name is counted
    on its own: three clients get in, a third connection of one is refused."""
    fg = make_fg(start=False)
    fg.sections["imap"].update({
        "ProxyProtocolBindings": f"127.0.0.1:{fg.imap_port}",
        "TrustedProxies": TRUSTED, "MaxConnectionFromSingleIP": "2"})
    fg.start()
    held = []
    try:
        for ip in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
            for _ in range(2):
                s = connect(fg.imap_port, v2(src=(ip, 40000)))
                assert s.recv(200).startswith(b"* OK"), ip
                held.append(s)
        s = connect(fg.imap_port, v2(src=("203.0.113.2", 40001)))
        line = s.recv(200)
        s.close()
        assert line.startswith(b"* BYE [UNAVAILABLE]"), line
        assert fg.stats()["refused_per_ip_total"] == 1
        assert fg.stats()["counted_per_ip"] == 6
    finally:
        for s in held:
            s.close()

"""Security properties that SECURITY.md cites and no other suite proves.

- STARTTLS on the backend leg, against a MOCK backend (a real Dovecot does
  not misbehave): replies it injects in clear text after its OK, in the same
  packet or the next, are never taken for replies made inside TLS, and a
  backend that refuses STARTTLS (or a man in the middle who strips it) gets
  no credential; against a real Dovecot without TLS too.
- The directory, against a real slapd, which like AD takes a DN with an empty
  password for an anonymous bind that succeeds: an empty password never
  reaches it; and FailedLogonDelayMs holds every failed logon, an unknown
  name, a wrong password, one the throttle answers and one the negative cache
  answers, with the same reply bytes for all.
- Line and literal bombs: a line that never ends is cut at MaxCommandSize
  (the sender is cut off, not read forever), literals count toward it, and
  literal sizes that overflow are refused.
- Secrets: no password, wrong or right, client's or master's, plain or as
  the PLAIN blob, in any file forestgate writes with ProtocolLogEnabled and
  LogLevel = debug; none in the memory a core dump would hold after logons
  in clear, over TLS, as master user and through the route cache's
  credential hashes; and the throttle's key in a page excluded from core
  dumps (VmFlags dd in /proc/PID/smaps).

    /usr/bin/python3 -m pytest -q tests/integration/test_security.py
"""

import base64
import imaplib
import os
import poplib
import re
import socket
import ssl
import threading
import time

import pytest

from tests.integration import test_directory_ldif as ldif_suite
from tests.integration.test_directory_ldap import A, LdapForest, ldap_gateway, stop_ok
from tests.lib.dovecot import Dovecot
from tests.lib.forestgate import Raw, free_port
from tests.lib.pki import make_ca, make_cert
from tests.lib.slapd import Slapd, dn_equal

# A private Dovecot's users: passwords no other text contains, so a leak
# cannot hide behind a common word; ASCII letters and digits around, so
# escaping in a log would not change the part searched for.
USERS = {"secuser": "Sec7-Pw-Uniq-Q9x", "secspace": "Zx81spacePw with spaces",
         "secutf8": "Ümlaut-Pw-K3y€"}
MASTER, MASTER_PW = "secmaster", "Mst-Pw-Uniq-77z"
WRONG = "Wr0ng-Pw-Uniq-55"
FAILED_IMAP = b"NO [AUTHENTICATIONFAILED]"
DELAY_MS = 500


# ------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def pki(workroot):
    d = os.path.join(workroot, "sec-pki")
    certs = os.path.join(d, "certs")
    os.makedirs(certs, exist_ok=True)
    ca = make_ca(d)
    make_cert(certs, ca, "mail.test")
    return {"root": d, "certs": certs, "ca": ca + ".crt",
            "backend": make_cert(d, ca, "backend.test")}


@pytest.fixture(scope="module")
def secdc(workroot, pki):
    """A Dovecot with TLS (STARTTLS on its plain ports) and a master user."""
    dc = Dovecot(os.path.join(workroot, "sec-dovecot"), dict(USERS),
                 master_users={MASTER: MASTER_PW}, tls=pki["backend"])
    dc.start()
    yield dc
    dc.stop()


def tls_settings(pki, extra=None):
    """TLS listeners beside the plain ones, STARTTLS to the backend, and
    every log there is: the protocol logs and LogLevel = debug."""
    imaps, pop3s = free_port(), free_port()
    s = {"global": {"CertificateDirectory": pki["certs"], "LogLevel": "debug"},
         "imap": {"SSLBindings": f"127.0.0.1:{imaps}", "X509CertificateName": "mail.test",
                  "ProtocolLogEnabled": "true"},
         "pop3": {"SSLBindings": f"127.0.0.1:{pop3s}", "X509CertificateName": "mail.test",
                  "ProtocolLogEnabled": "true"},
         "backend": {"Tls": "starttls", "TlsCaFile": pki["ca"], "TlsServerName": "backend.test"}}
    for sec, vals in (extra or {}).items():
        s.setdefault(sec, {}).update(vals)
    return s, imaps, pop3s


def secure_fg(make_fg, pki, secdc, master=False):
    extra = None
    if master:
        path = os.path.join(pki["root"], f"master-{free_port()}.pw")
        with open(path, "w") as f:
            f.write(MASTER_PW + "\n")
        extra = {"backend": {"LoginMode": "MasterUser", "MasterUser": MASTER,
                             "MasterPasswordFile": path, "AllowUncheckedMasterLogin": "true"}}
    settings, imaps, pop3s = tls_settings(pki, extra)
    fg = make_fg(settings, imap_backend_port=secdc.imap_port, pop3_backend_port=secdc.pop3_port)
    fg.imaps_port, fg.pop3s_port = imaps, pop3s
    fg.master_pw_file = extra["backend"]["MasterPasswordFile"] if master else None
    return fg


@pytest.fixture(scope="module")
def mbx(workroot):
    servers, ip, pp = ldif_suite.mailbox_servers(workroot, "sec-mbx", A)
    yield ip, pp
    for s in servers.values():
        s.stop()


@pytest.fixture(scope="module")
def slapd(workroot):
    d = Slapd.for_forest(os.path.join(workroot, "sec-ldap"), A).start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def dirgw(workroot, mbx, slapd):
    """forestgate in front of the slapd: FailedLogonDelayMs, the route and
    negative cache, the account throttle alone (no address hold, which
    would add its own wait), every log on."""
    ip, pp = mbx
    fg = ldap_gateway(workroot, "fg-sec-ldap", [LdapForest("uclabor", "Organization", A,
                                                            [slapd.uri])], ip, pp,
                      directory={"FailedLogonDelayMs": str(DELAY_MS), "RouteCacheTTL": "00:05:00",
                                 "NegativeCacheTTL": "00:05:00"}, start=False)
    fg.sections["throttle"] = {"Enabled": "yes", "AddressFailureDelayMs": "0",
                               "AddressFailureThreshold": "0", "AccountFailureThreshold": "2",
                               "FamiliarAccountFailureThreshold": "4"}
    fg.sections["global"]["LogLevel"] = "debug"
    for proto in ("imap", "pop3"):
        fg.sections[proto]["ProtocolLogEnabled"] = "true"
    fg.start()
    yield fg
    stop_ok(fg)


# -------------------------------------- STARTTLS on the backend leg
class MockStarttlsBackend:
    """MOCK backend (IMAP or POP3) that offers STARTTLS/STLS and then
    misbehaves as a man in the middle would, before TLS:

    - "same_packet": its OK comes with replies for the commands forestgate
      will send inside TLS (capabilities with LITERAL+ and ID, F0-F3 OK; POP3
      +OK lines and "+OK Logged in."), in one packet;
    - "next_packet": the same replies after the OK, once forestgate's
      ClientHello has come, before the handshake's answer;
    - "refuse": STARTTLS/STLS refused, as a stripping attacker answers.

    Inside TLS (a real handshake with backend.test's certificate) it answers
    honestly, and refuses every login: a client told it logged in was told
    so by the injected bytes. It records every byte received in clear text
    and every line received inside TLS."""

    def __init__(self, proto, pki, how):
        self.proto, self.how = proto, how
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(*pki["backend"])
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.clear, self.tls_lines, self.handshake_errors = b"", [], []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            raw, _ = self.sock.accept()
        except OSError:
            return
        raw.settimeout(10)
        try:
            self._serve(raw)
        except (OSError, ssl.SSLError) as e:
            self.handshake_errors.append(repr(e))
        finally:
            raw.close()

    def _clear_line(self, raw):
        """One line in clear text, a byte at a time: the ClientHello that
        follows must stay in the socket."""
        line = b""
        while not line.endswith(b"\n"):
            b = raw.recv(1)
            if not b:
                break
            line += b
        self.clear += line
        return line

    def _serve(self, raw):
        imap = self.proto == "imap"
        raw.sendall(b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] mock\r\n" if imap
                    else b"+OK mock ready\r\n")
        self._clear_line(raw)
        if self.how == "refuse":
            raw.sendall(b"S1 NO STARTTLS unavailable\r\n" if imap else b"-ERR no STLS here\r\n")
            while chunk := raw.recv(4096):     # whatever comes next, in clear
                self.clear += chunk
            return
        ok = b"S1 OK Begin TLS\r\n" if imap else b"+OK Begin TLS\r\n"
        injected = (b"* CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ID AUTH=PLAIN\r\nF0 OK\r\nF1 OK\r\n"
                    b"F2 OK [CAPABILITY IMAP4rev1] injected\r\nF3 OK\r\n" if imap
                    else b"+OK\r\n+OK\r\n+OK\r\n+OK Logged in.\r\n")
        if self.how == "same_packet":
            raw.sendall(ok + injected)
        else:
            raw.sendall(ok)
            raw.recv(1, socket.MSG_PEEK)    # forestgate's ClientHello: it is in TLS now
            raw.sendall(injected)
        t = self.ctx.wrap_socket(raw, server_side=True)
        f = t.makefile("rb")
        while line := f.readline():
            line = self._literals(t, f, line)
            self.tls_lines.append(line)
            if not self._answer(t, line):
                break
        t.close()

    @staticmethod
    def _literals(t, f, line):
        while m := re.search(rb"\{(\d+)(\+?)\}\r\n$", line):
            if not m.group(2):
                t.sendall(b"+ go\r\n")
            line += f.read(int(m.group(1))) + f.readline()
        return line

    def _answer(self, t, line):
        words = line.split()
        if self.proto == "pop3":
            cmd = words[0].upper() if words else b""
            if cmd in (b"PASS", b"AUTH"):
                t.sendall(b"-ERR [AUTH] mock refuses inside TLS\r\n")
            else:
                t.sendall(b"+OK\r\n")
            return cmd != b"QUIT"
        tag, cmd = words[0], words[1].upper() if len(words) > 1 else b""
        if cmd == b"CAPABILITY":
            t.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
        elif cmd in (b"LOGIN", b"AUTHENTICATE"):
            t.sendall(tag + b" NO [AUTHENTICATIONFAILED] mock refuses inside TLS\r\n")
        else:
            t.sendall(tag + b" OK\r\n")
        return cmd != b"LOGOUT"

    def close(self):
        self.sock.close()
        self.thread.join(15)


def backend_tls_fg(make_fg, pki, port):
    return make_fg({"backend": {"Tls": "starttls", "TlsCaFile": pki["ca"],
                                "TlsServerName": "backend.test"}},
                   imap_backend_port=port, pop3_backend_port=port)


def client_login(fg, proto, user="alice", password="secret"):
    """(ok, the error text) of one logon with imaplib or poplib."""
    if proto == "imap":
        m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=20)
        try:
            m.login(user, password)
            return True, ""
        except imaplib.IMAP4.error as e:
            return False, str(e)
        finally:
            m.logout()
    p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=20)
    try:
        p.user(user)
        p.pass_(password)
        return True, ""
    except poplib.error_proto as e:
        return False, str(e)
    finally:
        p.quit()


STARTTLS_LINE = {"imap": b"S1 STARTTLS\r\n", "pop3": b"STLS\r\n"}


@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_backend_starttls_drops_replies_injected_before_tls(make_fg, pki, proto):
    """Replies that came in clear text with the backend's OK (a login OK
    among them) are dropped: the dialogue starts again inside TLS, the
    capabilities are asked again there, and the login is refused, as the
    backend says inside TLS."""
    mock = MockStarttlsBackend(proto, pki, "same_packet")
    try:
        fg = backend_tls_fg(make_fg, pki, mock.port)
        ok, err = client_login(fg, proto)
        assert not ok, "a login OK injected in clear text was taken"
        assert ("AUTHENTICATIONFAILED" if proto == "imap" else "-ERR [AUTH]") in err, err
        ev = fg.wait_events("login")[-1]
        assert ev["result"] == "failed" and ev["backend_tls"].startswith("TLSv1."), ev
        assert "mock refuses inside TLS" in ev["reason"], ev
    finally:
        mock.close()
    assert mock.clear == STARTTLS_LINE[proto]        # nothing else crossed in clear
    sent = b"".join(mock.tls_lines)
    if proto == "imap":
        assert mock.tls_lines[0].startswith(b"F0 CAPABILITY"), mock.tls_lines
        # no LITERAL+ inside TLS: the password goes as a synchronising
        # literal or a string, not as {n+} the injected capabilities offered
        assert b"LOGIN alice" in sent and b"+}" not in sent and b" ID " not in sent, sent
    else:
        assert b"USER alice\r\n" in sent and b"PASS secret\r\n" in sent, mock.tls_lines


@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_backend_bytes_between_ok_and_handshake_end_the_logon(make_fg, pki, proto):
    """Bytes the backend sends after its OK but before the handshake are not
    a ServerHello: TLS fails, the logon ends unavailable, no credential was
    sent."""
    mock = MockStarttlsBackend(proto, pki, "next_packet")
    try:
        fg = backend_tls_fg(make_fg, pki, mock.port)
        ok, err = client_login(fg, proto)
        assert not ok and ("UNAVAILABLE" if proto == "imap" else "SYS/TEMP") in err, err
        assert fg.wait_events("login")[-1]["result"] == "unavailable"
        errs = fg.events("backend_error")
        assert errs and all("TLS" in e["reason"] for e in errs), errs
        fg.wait_idle()
    finally:
        mock.close()
    assert mock.handshake_errors, "the mock's handshake succeeded"
    assert mock.clear == STARTTLS_LINE[proto] and mock.tls_lines == []


@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_backend_refusing_starttls_gets_no_password(make_fg, pki, proto):
    """Stripping STARTTLS on the backend leg: the logon ends unavailable and
    not a byte more crosses in clear text, above all no credential."""
    mock = MockStarttlsBackend(proto, pki, "refuse")
    try:
        fg = backend_tls_fg(make_fg, pki, mock.port)
        ok, err = client_login(fg, proto)
        assert not ok and ("UNAVAILABLE" if proto == "imap" else "SYS/TEMP") in err, err
        ev = fg.wait_events("login")[-1]
        assert ev["result"] == "unavailable", ev
        assert "refused STARTTLS" in fg.log_text() or "refused STLS" in fg.log_text()
        fg.wait_idle()
    finally:
        mock.close()
    assert mock.clear == STARTTLS_LINE[proto], mock.clear
    assert mock.tls_lines == []


def test_backend_starttls_to_dovecot_without_tls(make_fg, pki, dovecot):
    """The same against a real Dovecot with ssl = no: STARTTLS refused,
    no login attempt in Dovecot's log."""
    fg = backend_tls_fg(make_fg, pki, dovecot.imap_port)
    fg_pop = backend_tls_fg(make_fg, pki, dovecot.pop3_port)
    with open(dovecot.log_path, "rb") as f:
        mark = len(f.read())
    for g, proto in ((fg, "imap"), (fg_pop, "pop3")):
        ok, err = client_login(g, proto)
        assert not ok and ("UNAVAILABLE" if proto == "imap" else "SYS/TEMP") in err, err
        assert g.wait_events("login")[-1]["result"] == "unavailable"
    with open(dovecot.log_path, "rb") as f:
        new = f.read()[mark:]
    assert b"user=<alice>" not in new, new.decode(errors="replace")


# --------------------------------------------------- the directory
def binds_as(dc, mark, dn):
    return sum(1 for _, kind, v in dc.requests_since(mark) if kind == "BIND" and dn_equal(v, dn))


def test_empty_password_never_reaches_the_directory(dirgw, slapd):
    """An empty password is refused before any LDAP operation, in every
    way a client can send one, and answered as a wrong password. The control:
    this slapd, as AD does, takes the same bind for an anonymous one."""
    dn = A.accounts["tuser"].dn
    assert slapd.whoami(dn, "") == "anonymous"
    mark = slapd.log_mark()
    plain = base64.b64encode(b"\0tuser\0").decode()
    with Raw(dirgw.imap_port) as c:
        c.line()
        for i, cmd in enumerate([b'LOGIN tuser ""', b"LOGIN tuser {0+}\r\n",
                                 b"AUTHENTICATE PLAIN " + plain.encode()]):
            c.send(b"a%d " % i + cmd + b"\r\n")
            line = c.until(b"a%d " % i)[-1]
            assert line.startswith(b"a%d " % i + FAILED_IMAP), line
        c.send(b"b AUTHENTICATE PLAIN\r\n")
        assert c.line().startswith(b"+")
        c.send(plain.encode() + b"\r\n")
        assert c.until(b"b ")[-1].startswith(b"b " + FAILED_IMAP)
    with Raw(dirgw.pop3_port) as c:
        c.line()
        for cmds in ([b"USER tuser", b"PASS "], [b"USER tuser", b"PASS"],
                     [b"AUTH PLAIN " + plain.encode()], [b"AUTH PLAIN", plain.encode()]):
            for cmd in cmds:
                c.send(cmd + b"\r\n")
                line = c.line()
            assert line.startswith(b"-ERR"), (cmds, line)
    time.sleep(0.3)
    assert binds_as(slapd, mark, dn) == 0
    assert not [r for r in slapd.requests_since(mark) if r[1] == "BIND"], \
        slapd.requests_since(mark)
    # a wrong password is answered in the same words, after a bind
    with Raw(dirgw.imap_port) as c:
        c.line()
        c.send(b"z LOGIN tuser " + WRONG.encode() + b"\r\n")
        assert c.until(b"z ")[-1].startswith(b"z " + FAILED_IMAP)
    assert binds_as(slapd, mark, dn) == 1


def timed_logon(fg, proto, src, name, password):
    """One logon from source address src: (the answer line, seconds from the
    command that carries the password to the answer, the client address)."""
    with Raw(fg.imap_port if proto == "imap" else fg.pop3_port, source=src, timeout=30) as r:
        client = "%s:%d" % r.sock.getsockname()[:2]
        r.line()
        if proto == "imap":
            t0 = time.monotonic()
            r.send(f"a LOGIN {name} {password}\r\n".encode())
            line = r.until(b"a ")[-1]
        else:
            r.send(f"USER {name}\r\n".encode())
            assert r.line().startswith(b"+OK")
            t0 = time.monotonic()
            r.send(f"PASS {password}\r\n".encode())
            line = r.line()
        return line, time.monotonic() - t0, client


def test_failed_logon_delay_hides_unknown_names(dirgw):
    """FailedLogonDelayMs against a real slapd: an unknown name and a known
    name with a wrong password, each until the account throttle answers it
    without a bind (and the unknown one from the negative cache), get the
    same reply bytes, and none is answered before the delay. (Only the
    lower bound is asserted: upper bounds flake on a loaded machine.)"""
    got = {}
    for name, first in (("hmueller", 200), ("nosuchsecurity", 210)):
        got[name] = []
        for i in range(4):
            proto = "imap" if i % 2 == 0 else "pop3"
            line, took, client = timed_logon(dirgw, proto, f"127.0.0.{first + i}", name,
                                             f"{WRONG}-{i}")
            got[name].append((proto, line, took, client))
    for proto in ("imap", "pop3"):
        lines = {line for n in got for p, line, _, _ in got[n] if p == proto}
        assert len(lines) == 1, lines
        assert lines.pop().startswith(b"a " + FAILED_IMAP if proto == "imap" else b"-ERR [AUTH]")
    for name, attempts in got.items():
        took = [round(t, 3) for _, _, t, _ in attempts]
        assert min(took) >= DELAY_MS / 1000, (name, took)
    events = {e["client"]: e for e in dirgw.events("login")}
    for name, attempts in got.items():
        evs = [events[c] for _, _, _, c in attempts]
        assert all(e["result"] == "failed" for e in evs), evs
        # past AccountFailureThreshold the throttle answers without a bind,
        # and still no sooner than the delay
        assert evs[-1].get("throttle") == "account_unfamiliar", (name, evs)
    assert any(e.get("cache") == "negative" for e in
               (events[c] for _, _, _, c in got["nosuchsecurity"])), got


# ----------------------------------------------- line and literal bombs
@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_never_ending_line_is_cut_off(make_fg, proto):
    """A line that never ends: refused once it passes MaxCommandSize and the
    connection closed, so the sender is cut off; forestgate neither waits
    for the end of the line nor reads on."""
    fg = make_fg()
    port = fg.imap_port if proto == "imap" else fg.pop3_port
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = s.makefile("rb")
    f.readline()
    sent, cut = [0], []

    def flood():
        chunk = b"a LOGIN " + b"x" * 65528 if proto == "imap" else b"USER " + b"x" * 65531
        try:
            for _ in range(1024):             # 64 MiB, far past any socket buffer
                s.sendall(chunk)
                sent[0] += len(chunk)
                chunk = b"x" * 65536
        except OSError as e:
            cut.append(e)

    t = threading.Thread(target=flood)
    t.start()
    line = f.readline()
    t.join(30)
    assert line.startswith(b"* BAD" if proto == "imap" else b"-ERR Command line too long"), line
    try:
        rest = f.read()           # then the close (IMAP says BYE first)
    except ConnectionResetError:  # the close reset what we were still sending
        rest = b""
    assert rest in (b"", b"* BYE Closing connection.\r\n"), rest
    assert cut, f"never cut off: {sent[0]} bytes sent"
    assert sent[0] < 64 << 20
    s.close()
    assert fg.wait_idle()["connections"] == 0


def test_literals_count_toward_max_command_size(make_fg):
    fg = make_fg({"imap": {"MaxCommandSize": "1024"}})
    # Two LITERAL+ arguments that fit alone and not together: closed.
    with Raw(fg.imap_port) as c:
        c.line()
        c.send(b"a LOGIN {600+}\r\n" + b"x" * 600 + b" {600+}\r\n" + b"y" * 600 + b"\r\n")
        assert c.line() == b"* BAD Literal too large.\r\n"
        assert c.closed()
    # A synchronising one past the rest of the room: BAD, no continuation,
    # and the connection serves on.
    with Raw(fg.imap_port) as c:
        c.line()
        c.send(b"b LOGIN {600}\r\n")
        assert c.line().startswith(b"+ ")
        c.send(b"x" * 600 + b" {600}\r\n")
        assert c.line() == b"b BAD Literal too large.\r\n"
        # a size whose digits overflow any integer: refused, nothing awaited
        c.send(b"c LOGIN {99999999999999999999}\r\nd NOOP\r\n")
        assert c.line().startswith(b"c BAD")
        assert c.line().startswith(b"d OK")
    # The rest of a line after a literal counts too, and so does a SASL
    # response line.
    with Raw(fg.imap_port) as c:
        c.line()
        c.send(b"e LOGIN {600}\r\n")
        c.line()
        c.send(b"x" * 600 + b" " + b"y" * 500 + b"\r\n")
        assert c.line() == b"* BAD Command too long.\r\n"
        assert c.closed()
    with Raw(fg.imap_port) as c:
        c.line()
        c.send(b"f AUTHENTICATE PLAIN\r\n")
        assert c.line().startswith(b"+")
        c.send(b"A" * 2000 + b"\r\n")
        assert c.line() == b"* BAD Command too long.\r\n"
        assert c.closed()
    assert fg.events("login") == []


# ------------------------------------------------------------- secrets
def plain_blob(authzid, authcid, password):
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()


def secrets_of(master=False):
    """Every secret the logons below send, as a client or forestgate may
    write it: the passwords (a distinctive part of each), the wrong one, the
    PLAIN blobs; with a master user, its password and its PLAIN blobs."""
    out = {WRONG, "Zx81spacePw", "Pw-K3y", "Sec7-Pw-Uniq-Q9x"}
    for u, p in USERS.items():
        out |= {plain_blob("", u, p), plain_blob("", u, WRONG)}
        if master:
            out |= {plain_blob(u, MASTER, MASTER_PW)}
    if master:
        out.add(MASTER_PW)
    return out


def logons(fg, pki):
    """Every way to send a password, in clear and over TLS, each on a
    connection of its own (after a login, what the client sends is mail,
    relayed); and a wrong password (Dovecot takes half a second to refuse
    one: only secuser's)."""
    ctx = ssl.create_default_context(cafile=pki["ca"])
    ctx.check_hostname = False
    for user, pw in USERS.items():
        for password in (pw, WRONG) if user == "secuser" else (pw,):
            for m in (imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=20),
                      imaplib.IMAP4_SSL("127.0.0.1", fg.imaps_port, ssl_context=ctx, timeout=20)):
                m._encoding = "utf-8"
                try:
                    m.login(user, password)
                except imaplib.IMAP4.error:
                    pass
                m.logout()
            for p in (poplib.POP3("127.0.0.1", fg.pop3_port, timeout=20),
                      poplib.POP3_SSL("127.0.0.1", fg.pop3s_port, context=ctx, timeout=20)):
                try:
                    p.user(user)
                    p.pass_(password)
                except poplib.error_proto:
                    pass
                p.quit()
        blob = plain_blob("", user, pw).encode()
        raw = pw.encode()
        for port, dialogue in (
                (fg.imap_port, [b"a AUTHENTICATE PLAIN " + blob]),               # SASL-IR
                (fg.imap_port, [b"b AUTHENTICATE PLAIN", blob]),                 # continuation
                (fg.imap_port, [b"c LOGIN " + user.encode() + b" {%d+}" % len(raw) + b"\r\n"
                                + raw]),                                         # a literal
                (fg.pop3_port, [b"AUTH PLAIN " + blob]),
                (fg.pop3_port, [b"AUTH PLAIN", blob])):
            with Raw(port) as c:
                c.line()
                for line in dialogue:
                    c.send(line + b"\r\n")
                    answer = c.line()
                assert answer.startswith((b"+OK", b"a OK", b"b OK", b"c OK")), answer
    fg.wait_idle()


def files_under(d, skip=()):
    for root, _, files in os.walk(d):
        for name in files:
            path = os.path.join(root, name)
            if path not in skip and not name.endswith((".sock", ".pw", ".bindpw")):
                yield path


def leaks_in_files(d, secrets):
    found = []
    for path in files_under(d):
        with open(path, "rb") as f:
            data = f.read()
        found += [(path, s) for s in secrets if s.encode() in data]
    return found


@pytest.mark.parametrize("master", [False, True], ids=["passthrough", "master"])
def test_no_password_in_any_log_file(make_fg, pki, secdc, master):
    fg = secure_fg(make_fg, pki, secdc, master)
    logons(fg, pki)
    files = list(files_under(fg.workdir))
    assert any(p.endswith("imap-protocol.log") for p in files), files
    assert any(p.endswith("pop3-protocol.log") for p in files), files
    with open(os.path.join(fg.workdir, "pop3-protocol.log")) as f:
        plog = f.read()
    assert " C PASS <redacted>" in plog and " C AUTH <redacted>" in plog, plog[-2000:]
    assert " B> <login command redacted>" in plog, plog[-2000:]
    oks = [e for e in fg.events("login") if e["result"] == "ok"]
    # 9 ways for 3 users; as master user the backend takes the wrong
    # password too (AllowUncheckedMasterLogin): 4 more
    assert len(oks) == 3 * 9 + (4 if master else 0), fg.log_text()[-3000:]
    assert leaks_in_files(fg.workdir, secrets_of(master)) == []


def test_no_password_in_the_directory_gateway_logs(dirgw):
    """Run after the directory tests above: the LDAP gateway's event and
    protocol logs hold none of the passwords it checked or sent."""
    secrets = {A.passwords["tuser"], MASTER_PW, WRONG, ldif_suite.MASTER_PW, A.bind_password}
    assert os.path.exists(os.path.join(dirgw.workdir, "imap-protocol.log"))
    assert leaks_in_files(dirgw.workdir, secrets) == []


def dumpable(pid):
    """(start, end) of every mapping a core dump holds: readable, without
    VmFlags dd (MADV_DONTDUMP), not the kernel's [vvar]/[vsyscall]."""
    out, cur = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", parts[0]):
                a, b = (int(x, 16) for x in parts[0].split("-"))
                cur = (a, b, parts[1], parts[5] if len(parts) > 5 else "")
            elif parts[0] == "VmFlags:":
                if "r" in cur[2] and "dd" not in parts[1:] and \
                        cur[3] not in ("[vvar]", "[vvar_vclock]", "[vsyscall]"):
                    out.append(cur[:2])
    return out


def memory_hits(pid, needles):
    """The needles found in the process's dumpable memory."""
    found = set()
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for a, b in dumpable(pid):
            try:
                mem.seek(a)
                data = mem.read(b - a)
            except OSError:
                continue
            found |= {n for n in needles if n in data}
    return found


def dd_bytes(pid):
    """Bytes of the mappings excluded from core dumps, and the anonymous
    writable ones among them, as [(size, flags)]."""
    total, anon, cur = 0, [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", parts[0]):
                a, b = (int(x, 16) for x in parts[0].split("-"))
                cur = (b - a, len(parts) <= 5)
            elif parts[0] == "VmFlags:" and "dd" in parts[1:]:
                total += cur[0]
                if cur[1] and "wr" in parts[1:] and cur[0] < 1 << 20:
                    anon.append((cur[0], parts[1:]))
    return total, anon


def test_no_password_in_dumpable_memory(make_fg, workroot, pki, secdc, mbx):
    """After logons in clear and over TLS, pass-through and as master user,
    and through the LDIF directory with the credential cache (which keeps a
    hash), no password, right or wrong, and no master password is left in
    the memory a core dump would hold: every copy was wiped, and the master
    password lives in a page excluded from dumps."""
    gws = [secure_fg(make_fg, pki, secdc), secure_fg(make_fg, pki, secdc, master=True)]
    for fg in gws:
        logons(fg, pki)
    ip, pp = mbx
    ldif = ldif_suite.gateway(workroot, "fg-sec-ldif", [("uclabor", "Organization", A)], ip, pp,
                              extra={"directory": {"RouteCacheTTL": "00:05:00",
                                                   "CredentialCacheTTL": "00:05:00"}})
    try:
        for _ in range(2):
            assert ldif_suite.imap_login(ldif, "tuser", A.passwords["tuser"])[0]
            assert ldif_suite.pop3_login(ldif, "tuser", A.passwords["tuser"])[0]
        assert not ldif_suite.imap_login(ldif, "tuser", WRONG)[0]
        assert any(e.get("cache") == "credential" for e in ldif.events("login")), \
            ldif.log_text()[-2000:]
        ldif.wait_idle()
        for fg, secrets in ((gws[0], secrets_of()), (gws[1], secrets_of(master=True)),
                            (ldif, {A.passwords["tuser"], WRONG, ldif_suite.MASTER_PW})):
            needles = {s.encode() for s in secrets}
            assert memory_hits(fg.proc.pid, needles) == set(), fg.workdir
        # the scan sees what is there: a gateway's own settings are found
        assert memory_hits(gws[0].proc.pid, {b"backend.test"}) == {b"backend.test"}
    finally:
        assert ldif.stop() == 0


def test_throttle_key_is_kept_out_of_core_dumps(make_fg):
    """The throttle's keys (SipHash keys of addresses, accounts, places and
    wrong passwords) live in one page marked MADV_DONTDUMP: with the
    throttle on, exactly that page more is excluded from core dumps."""
    off = make_fg({"throttle": {"Enabled": "no"}})
    on = make_fg({"throttle": {"Enabled": "yes"}})
    (total_off, anon_off), (total_on, anon_on) = dd_bytes(off.proc.pid), dd_bytes(on.proc.pid)
    assert total_on - total_off == 4096, (anon_off, anon_on)
    assert [a for a in anon_on if a not in anon_off and a[0] == 4096], (anon_off, anon_on)

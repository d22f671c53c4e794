"""MOCK: Active Directory's bind diagnostics in front of a real slapd.

slapd refuses a bad simple bind with a bare resultCode 49. Active Directory
adds a diagnosticMessage whose "data" sub-code says why, and forestgate must
tell two of them apart (docs/login-rules.md section 3)::

    80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 52e, v4563
    data 52e  wrong password            -> like any failed logon
    data 532  password expired          -> IMAP [EXPIRED], POP3 [AUTH]
    data 773  user must change password -> IMAP [EXPIRED], POP3 [AUTH]

MockAdBindProxy is a TCP proxy on 127.0.0.1 that forwards LDAP traffic
between a client and slapd unchanged, except that it answers a simple
BindRequest for a chosen DN itself: a BindResponse with resultCode 49
(invalidCredentials) and AD's diagnosticMessage with the chosen sub-code.
The request is then not forwarded. Everything else -- other binds, searches,
StartTLS (the bytes after it are not LDAP messages any more, see below) --
is passed through.

Both directions are cut into whole LDAP messages (BER: tag, short or long
definite length), so an answer the mock makes never lands inside one of
slapd's. After an ExtendedRequest (StartTLS) the proxy stops parsing that
connection and copies bytes both ways.

Standard library only::

    proxy = MockAdBindProxy("127.0.0.1", slapd.port, {tuser_dn: "773"}).start()
    ... Uri = proxy.uri ...
    proxy.answered      # [(dn, code), ...] binds the mock answered itself
    proxy.stop()
"""

from __future__ import annotations

import re
import socket
import threading

__all__ = ["MockAdBindProxy", "ad_diagnostic", "ber_length", "tlv", "read_message",
           "parse_message", "bind_request", "bind_response", "dn_norm", "BerError"]

INVALID_CREDENTIALS = 49
TAG_SEQUENCE = 0x30
TAG_INTEGER = 0x02
TAG_OCTET_STRING = 0x04
TAG_ENUMERATED = 0x0A
TAG_BIND_REQUEST = 0x60       # [APPLICATION 0] constructed
TAG_BIND_RESPONSE = 0x61      # [APPLICATION 1] constructed
TAG_EXTENDED_REQUEST = 0x77   # [APPLICATION 23] constructed
TAG_AUTH_SIMPLE = 0x80        # [0] primitive
MAX_MESSAGE = 16 << 20


class BerError(ValueError):
    """Not a BER encoding this mock understands."""


def ad_diagnostic(code: str) -> str:
    """AD's diagnosticMessage for a failed simple bind with sub-code ``code``
    (``52e``, ``532``, ``773``...)."""
    return (f"80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, "
            f"data {code}, v4563")


# ------------------------------------------------------------------ BER
def ber_length(n: int) -> bytes:
    """Definite length: short form below 128, else long form (0x80 | count,
    then the count big-endian bytes, no leading zero byte)."""
    if n < 0:
        raise BerError("negative length")
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + ber_length(len(value)) + value


def _int_value(n: int) -> bytes:
    return n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big", signed=True)


def _read_length(data: bytes, pos: int) -> tuple[int, int]:
    """(length, position after the length octets) or raises BerError;
    IndexError when data is too short."""
    first = data[pos]
    pos += 1
    if first < 0x80:
        return first, pos
    count = first & 0x7F
    if count == 0:
        raise BerError("indefinite length is not allowed in LDAP")
    if count > 4:
        raise BerError(f"length of {count} octets")
    if pos + count > len(data):
        raise IndexError
    return int.from_bytes(data[pos:pos + count], "big"), pos + count


def _split(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """One TLV at pos: (tag, value, position after it)."""
    if pos >= len(data):
        raise BerError("truncated")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise BerError("multi-byte tags are not used by LDAP")
    try:
        n, vpos = _read_length(data, pos + 1)
    except IndexError:
        raise BerError("truncated length") from None
    if vpos + n > len(data):
        raise BerError("truncated value")
    return tag, data[vpos:vpos + n], vpos + n


def _recv_exact(sock: socket.socket, n: int, buf: bytearray) -> bool:
    while len(buf) < n:
        chunk = sock.recv(max(65536, n - len(buf)))
        if not chunk:
            return False
        buf += chunk
    return True


def read_message(sock: socket.socket, buf: bytearray) -> bytes | None:
    """Reads one whole BER element (an LDAPMessage) from sock; ``buf`` keeps
    bytes read beyond it for the next call. None at end of stream."""
    if not _recv_exact(sock, 2, buf):
        return None
    first = buf[1]
    head = 2 + (first & 0x7F if first >= 0x80 else 0)
    if not _recv_exact(sock, head, buf):
        return None
    n, vpos = _read_length(bytes(buf[:head]), 1)
    if n > MAX_MESSAGE:
        raise BerError(f"message of {n} bytes")
    if not _recv_exact(sock, vpos + n, buf):
        return None
    msg = bytes(buf[:vpos + n])
    del buf[:vpos + n]
    return msg


def parse_message(msg: bytes) -> tuple[bytes, int, bytes]:
    """LDAPMessage ::= SEQUENCE { messageID, protocolOp, controls OPTIONAL }:
    (the messageID TLV as sent, the protocolOp's tag, its value)."""
    tag, body, end = _split(msg)
    if tag != TAG_SEQUENCE or end != len(msg):
        raise BerError("not an LDAPMessage")
    itag, _, p = _split(body)
    if itag != TAG_INTEGER:
        raise BerError("no messageID")
    msgid_tlv = body[:p]
    optag, opval, _ = _split(body, p)
    return msgid_tlv, optag, opval


def bind_request(msgid: int, dn: str, password: str | bytes, version: int = 3) -> bytes:
    """A simple BindRequest LDAPMessage (for tests of the mock itself)."""
    pw = password.encode() if isinstance(password, str) else password
    op = tlv(TAG_BIND_REQUEST, tlv(TAG_INTEGER, _int_value(version))
             + tlv(TAG_OCTET_STRING, dn.encode()) + tlv(TAG_AUTH_SIMPLE, pw))
    return tlv(TAG_SEQUENCE, tlv(TAG_INTEGER, _int_value(msgid)) + op)


def parse_bind_request(opval: bytes) -> tuple[int, str, int, bytes]:
    """BindRequest ::= [APPLICATION 0] SEQUENCE { version INTEGER, name
    OCTET STRING, authentication CHOICE { simple [0], sasl [3] } }:
    (version, name, the authentication's tag, its value)."""
    vtag, vval, p = _split(opval)
    if vtag != TAG_INTEGER:
        raise BerError("BindRequest without version")
    ntag, name, p = _split(opval, p)
    if ntag != TAG_OCTET_STRING:
        raise BerError("BindRequest without name")
    atag, aval, _ = _split(opval, p)
    return int.from_bytes(vval, "big", signed=True), name.decode("utf-8", "replace"), atag, aval


def bind_response(msgid_tlv: bytes, result_code: int, diagnostic: str,
                  matched_dn: str = "") -> bytes:
    """A BindResponse LDAPMessage: resultCode ENUMERATED, matchedDN,
    diagnosticMessage, reusing the request's messageID encoding."""
    op = tlv(TAG_BIND_RESPONSE, tlv(TAG_ENUMERATED, _int_value(result_code))
             + tlv(TAG_OCTET_STRING, matched_dn.encode())
             + tlv(TAG_OCTET_STRING, diagnostic.encode()))
    return tlv(TAG_SEQUENCE, msgid_tlv + op)


def parse_bind_response(msg: bytes) -> tuple[int, int, str, str]:
    """(messageID, resultCode, matchedDN, diagnosticMessage)."""
    msgid_tlv, optag, opval = parse_message(msg)
    if optag != TAG_BIND_RESPONSE:
        raise BerError(f"not a BindResponse: tag {optag:#x}")
    _, idval, _ = _split(msgid_tlv)
    _, code, p = _split(opval)
    _, matched, p = _split(opval, p)
    _, diag, _ = _split(opval, p)
    return (int.from_bytes(idval, "big"), int.from_bytes(code, "big"),
            matched.decode(), diag.decode())


# ------------------------------------------------------------------- DNs
def _unescape(value: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(value):
        c = value[i]
        if c == "\\" and re.fullmatch(r"[0-9A-Fa-f]{2}", value[i + 1:i + 3]):
            raw += bytes([int(value[i + 1:i + 3], 16)])
            i += 3
        elif c == "\\" and i + 1 < len(value):
            raw += value[i + 1].encode()
            i += 2
        else:
            raw += c.encode()
            i += 1
    return raw.decode("utf-8", "replace")


def dn_norm(dn: str) -> tuple:
    """A DN compared as AD does: attribute types and values without case,
    ``\\,`` and ``\\2C`` alike (slapd returns the second)."""
    rdns, cur, i = [], [], 0
    while i < len(dn):
        if dn[i] == "\\" and i + 1 < len(dn):
            cur.append(dn[i:i + 2])
            i += 2
            continue
        if dn[i] in ",;":
            rdns.append("".join(cur))
            cur = []
        else:
            cur.append(dn[i])
        i += 1
    rdns.append("".join(cur))
    out = []
    for r in rdns:
        typ, _, val = r.partition("=")
        if typ.strip():
            out.append((typ.strip().lower(), _unescape(val.strip()).lower()))
    return tuple(out)


# ----------------------------------------------------------------- proxy
class MockAdBindProxy:
    """MOCK (not AD): a TCP proxy to an LDAP server that answers simple binds
    for chosen DNs with AD's invalidCredentials and a "data <code>"
    diagnosticMessage. ``answers`` maps DN -> code ("773", "532", "52e");
    change it at run time with set_answer()."""

    def __init__(self, upstream_host: str, upstream_port: int,
                 answers: dict[str, str] | None = None, host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self._answers: dict[tuple, str] = {}
        self._lock = threading.Lock()
        self.answered: list[tuple[str, str]] = []   # (dn, code) answered by the mock
        self.forwarded_binds: list[str] = []        # DNs passed to the server
        self.connections = 0
        self.errors: list[str] = []
        self._listener: socket.socket | None = None
        self._socks: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        for dn, code in (answers or {}).items():
            self.set_answer(dn, code)

    # ---------------------------------------------------------- settings
    def set_answer(self, dn: str, code: str | None) -> None:
        """Answer binds as dn with "data <code>"; None: forward them again."""
        with self._lock:
            if code is None:
                self._answers.pop(dn_norm(dn), None)
            else:
                self._answers[dn_norm(dn)] = code

    def _answer_for(self, dn: str) -> str | None:
        with self._lock:
            return self._answers.get(dn_norm(dn))

    # -------------------------------------------------------- life cycle
    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    @property
    def uri(self) -> str:
        return f"ldap://{self.host}:{self.port}"

    def start(self) -> "MockAdBindProxy":
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self.host, 0))
        ls.listen(128)
        self._listener = ls
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stopping = True
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(5)

    def __enter__(self) -> "MockAdBindProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._socks.add(s)

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError as e:
                # The server is down: so is the proxy, as a DC would be.
                self.errors.append(f"upstream: {e}")
                client.close()
                continue
            self.connections += 1
            self._track(client)
            self._track(server)
            state = {"raw": False, "wlock": threading.Lock(), "closed": False}
            self._spawn(self._client_to_server, client, server, state)
            self._spawn(self._server_to_client, client, server, state)

    def _close_pair(self, client: socket.socket, server: socket.socket, state: dict) -> None:
        with state["wlock"]:
            if state["closed"]:
                return
            state["closed"] = True
        for s in (client, server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
            with self._lock:
                self._socks.discard(s)

    def _to_client(self, client: socket.socket, state: dict, data: bytes) -> None:
        with state["wlock"]:
            if not state["closed"]:
                client.sendall(data)

    def _client_to_server(self, client, server, state) -> None:
        buf = bytearray()
        try:
            while True:
                if state["raw"]:
                    data = bytes(buf) or client.recv(65536)
                    buf.clear()
                    if not data:
                        break
                    server.sendall(data)
                    continue
                msg = read_message(client, buf)
                if msg is None:
                    break
                msgid_tlv, optag, opval = parse_message(msg)
                if optag == TAG_BIND_REQUEST:
                    _, dn, atag, _ = parse_bind_request(opval)
                    code = self._answer_for(dn) if atag == TAG_AUTH_SIMPLE else None
                    if code is not None:
                        self.answered.append((dn, code))
                        self._to_client(client, state, bind_response(
                            msgid_tlv, INVALID_CREDENTIALS, ad_diagnostic(code)))
                        continue
                    self.forwarded_binds.append(dn)
                elif optag == TAG_EXTENDED_REQUEST:
                    state["raw"] = True     # StartTLS: no more plain LDAP after it
                server.sendall(msg)
        except (OSError, BerError) as e:
            if not self._stopping and not state["closed"]:
                self.errors.append(f"client side: {e}")
        finally:
            self._close_pair(client, server, state)

    def _server_to_client(self, client, server, state) -> None:
        buf = bytearray()
        try:
            while True:
                if state["raw"]:
                    data = bytes(buf) or server.recv(65536)
                    buf.clear()
                    if not data:
                        break
                    self._to_client(client, state, data)
                    continue
                msg = read_message(server, buf)
                if msg is None:
                    break
                self._to_client(client, state, msg)
        except (OSError, BerError) as e:
            if not self._stopping and not state["closed"]:
                self.errors.append(f"server side: {e}")
        finally:
            self._close_pair(client, server, state)

"""IMAP through forestgate to a real Dovecot, with real clients."""

import base64
import imaplib
import os
import subprocess
import time

import pytest

from conftest import PASSWORDS
from tests.lib.forestgate import Raw


def imap(fg):
    return imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=15)


def literal_login(port, user: bytes, password: bytes, plus: bool) -> list[bytes]:
    """LOGIN with both arguments as literals; returns the lines received."""
    c = Raw(port)
    c.line()
    marker = b"+" if plus else b""
    c.send(b"a LOGIN {%d%s}\r\n" % (len(user), marker))
    if not plus:
        assert c.line().startswith(b"+ ")
    c.send(user + b" {%d%s}\r\n" % (len(password), marker))
    if not plus:
        assert c.line().startswith(b"+ ")
    c.send(password + b"\r\n")
    lines = c.until(b"a ")
    c.send(b"b LOGOUT\r\n")
    lines += c.until(b"b ")
    c.close()
    return lines


@pytest.mark.parametrize("user", sorted(PASSWORDS))
def test_login_every_password_class_as_literal(fg, user):
    lines = literal_login(fg.imap_port, user.encode(), PASSWORDS[user].encode(), plus=True)
    assert lines[-3].startswith(b"a OK [CAPABILITY IMAP4rev1"), lines
    assert b"b OK" in lines[-1]


@pytest.mark.parametrize("user", [u for u, p in PASSWORDS.items() if p.isascii()])
def test_login_ascii_password_classes_with_imaplib(fg, user):
    m = imap(fg)
    typ, data = m.login(user, PASSWORDS[user])
    assert typ == "OK" and b"CAPABILITY" in data[0]
    assert m.select("INBOX")[0] == "OK"
    m.logout()


def test_login_sync_literals_get_continuations(fg):
    lines = literal_login(fg.imap_port, b"utf8", PASSWORDS["utf8"].encode(), plus=False)
    assert lines[-3].startswith(b"a OK"), lines


def test_wrong_password_is_authenticationfailed(fg):
    m = imap(fg)
    with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\]"):
        m.login("alice", "wrong")
    # The session survives a failed login and can try again.
    assert m.login("alice", "secret")[0] == "OK"
    m.logout()
    ev = [e for e in fg.events("login") if e["result"] == "failed"]
    assert ev and ev[0]["user"] == "alice" and "AUTHENTICATIONFAILED" in ev[0]["reason"]


def test_authenticate_plain_with_continuation(fg):
    m = imap(fg)
    typ, _ = m.authenticate("PLAIN", lambda _: b"\0alice\0secret")
    assert typ == "OK"
    assert m.select("INBOX")[0] == "OK"
    m.logout()


def test_authenticate_plain_with_sasl_ir(fg):
    c = Raw(fg.imap_port)
    assert b"SASL-IR" in c.line()
    ir = base64.b64encode(b"\0space\0" + PASSWORDS["space"].encode())
    c.send(b"a AUTHENTICATE PLAIN " + ir + b"\r\nb NOOP\r\n")
    ok = c.until(b"a ")[-1]
    assert ok.startswith(b"a OK [CAPABILITY IMAP4rev1") and b"AUTHENTICATE completed" in ok
    assert c.until(b"b ")[-1].startswith(b"b OK")


def test_authenticate_cancel_and_bad_mechanism(fg):
    c = Raw(fg.imap_port)
    c.line()
    c.send(b"a AUTHENTICATE PLAIN\r\n")
    assert c.line() == b"+ \r\n"
    c.send(b"*\r\n")
    assert c.line().startswith(b"a BAD")
    c.send(b"b AUTHENTICATE CRAM-MD5\r\n")
    assert c.line().startswith(b"b NO")
    c.send(b"c AUTHENTICATE PLAIN " + base64.b64encode(b"other\0alice\0secret") + b"\r\n")
    assert c.line().startswith(b"c NO [AUTHORIZATIONFAILED]")


def test_pipelined_commands_after_login_reach_the_backend(fg):
    c = Raw(fg.imap_port)
    c.line()
    c.send(b"a LOGIN alice secret\r\nb SELECT INBOX\r\nc NOOP\r\nd LOGOUT\r\n")
    lines = c.until(b"d ")
    tags = [l.split(b" ")[0] for l in lines if not l.startswith(b"*")]
    assert tags == [b"a", b"b", b"c", b"d"], lines
    assert all(b" OK " in l for l in lines if not l.startswith(b"*"))
    assert c.closed()


def test_pipelined_preauth_commands_answered_in_order(fg):
    c = Raw(fg.imap_port)
    c.line()
    c.send(b"a NOOP\r\nb CAPABILITY\r\nc LOGIN alice wrong\r\nd NOOP\r\n")
    lines = c.until(b"d ")
    tagged = [l for l in lines if not l.startswith(b"*")]
    assert [l[:4] for l in tagged] == [b"a OK", b"b OK", b"c NO", b"d OK"], lines


def test_id_is_answered_and_client_fields_logged(fg, dovecot):
    c = Raw(fg.imap_port)
    c.line()
    c.send(b'a ID ("name" "pytest" "x-originating-ip" "6.6.6.6")\r\n')
    assert c.line().startswith(b'* ID ("name" "forestgate"')
    assert c.line().startswith(b"a OK")
    c.send(b"b LOGIN alice secret\r\nc LOGOUT\r\n")
    c.until(b"c ")
    ok = [e for e in fg.events("login") if e["result"] == "ok"][0]
    assert "name=pytest" in ok["client_id"]
    # A client's own x-* fields are never forwarded: the backend saw ours.
    dovecot.wait_for_log(r"session=<%s>" % ok["session"])
    assert "6.6.6.6" not in dovecot.log_text()


def test_fetch_1mb_message_byte_exact(fg, dovecot):
    body = b"".join(b"line %06d %s\r\n" % (i, b"x" * 60) for i in range(14500))
    msg = b"From: a@b\r\nTo: big@b\r\nSubject: big\r\n\r\n" + body
    assert len(msg) > 1024 * 1024
    dovecot.deliver("brackets", msg)
    m = imap(fg)
    m.login("brackets", PASSWORDS["brackets"])
    m.select("INBOX", readonly=True)
    typ, data = m.uid("SEARCH", None, "ALL")
    uid = data[0].split()[-1]
    typ, data = m.uid("FETCH", uid, "(BODY.PEEK[])")
    assert typ == "OK"
    assert data[0][1] == msg
    m.logout()
    st = fg.wait_idle()
    assert st["relayed_backend_to_client_bytes"] > len(msg)


def test_command_before_login_is_refused(fg):
    c = Raw(fg.imap_port)
    c.line()
    c.send(b"a SELECT INBOX\r\nb FOO\r\n")
    assert c.line() == b"a BAD Command received in Invalid state.\r\n"
    assert c.line() == b"b BAD Unknown command.\r\n"


def test_invalid_tag_is_not_echoed(fg):
    c = Raw(fg.imap_port)
    c.line()
    c.send(b"<script> NOOP\r\n")
    line = c.line()
    assert line.startswith(b"* BAD") and b"script" not in line


def test_five_invalid_commands_disconnect(fg):
    c = Raw(fg.imap_port)
    c.line()
    c.send(b"a FOO\r\nb FOO\r\nc NOOP\r\nd FOO\r\ne FOO\r\nf FOO\r\ng FOO\r\nh FOO\r\n")
    lines = c.until(b"* BYE")
    assert lines[-1] == b"* BYE Too many invalid commands.\r\n"
    assert b"c OK" in b"".join(lines)  # the valid command reset the count
    assert c.closed()


def test_line_over_max_command_size_is_bad_then_closed(make_fg):
    fg = make_fg({"imap": {"MaxCommandSize": "1024"}})
    c = Raw(fg.imap_port)
    c.line()
    c.send(b"a LOGIN " + b"x" * 2000 + b" y\r\n")
    assert c.line().startswith(b"* BAD")
    assert c.closed()
    fg.wait_idle()


def test_literal_size_capped_before_login(make_fg):
    fg = make_fg({"imap": {"MaxCommandSize": "1024"}})
    c = Raw(fg.imap_port)
    c.line()
    c.send(b"a LOGIN {5000}\r\n")
    assert c.line() == b"a BAD Literal too large.\r\n"
    c.send(b"b NOOP\r\n")
    assert c.line().startswith(b"b OK")
    c.send(b"c LOGIN {5000+}\r\n")
    assert c.line().startswith(b"* BAD")
    assert c.closed()


def test_nul_in_credentials_is_refused(fg):
    c = Raw(fg.imap_port)
    c.line()
    c.send(b"a LOGIN alice {7+}\r\nsec\0ret\r\n")
    assert c.line().startswith(b"a BAD")
    c.send(b"b AUTHENTICATE PLAIN " + base64.b64encode(b"\0alice\0sec\0ret") + b"\r\n")
    assert c.line().startswith(b"b NO [AUTHENTICATIONFAILED]")
    assert fg.events("login") == []  # nothing reached the backend


def test_empty_password_never_reaches_the_backend(fg, dovecot):
    c = Raw(fg.imap_port)
    c.line()
    c.send(b'a LOGIN alice ""\r\n')
    assert c.line().startswith(b"a NO [AUTHENTICATIONFAILED]")
    ev = fg.events("login")
    assert ev and ev[0]["reason"] == "refused before the backend" and "backend" not in ev[0]


@pytest.mark.parametrize("login_type,caps,login_ok,auth_ok", [
    ("PlainTextLogin", [b"AUTH=PLAIN"], True, True),
    ("PlainTextAuthentication", [b"LOGINDISABLED", b"AUTH=PLAIN"], False, True),
    ("SecureLogin", [b"LOGINDISABLED"], False, False),
])
def test_login_type_without_tls(make_fg, login_type, caps, login_ok, auth_ok):
    fg = make_fg({"imap": {"LoginType": login_type}})
    c = Raw(fg.imap_port)
    greeting = c.line()
    for cap in caps:
        assert cap in greeting
    if not auth_ok:
        assert b"AUTH=PLAIN" not in greeting
    if login_ok:
        assert b"LOGINDISABLED" not in greeting
    c.send(b"a LOGIN alice wrong\r\n")
    line = c.line()
    assert (b"PRIVACYREQUIRED" in line) != login_ok, line
    c.send(b"b AUTHENTICATE PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n")
    line = c.until(b"b ")[-1]
    assert line.startswith(b"b OK") == auth_ok, line
    if not auth_ok:
        assert b"PRIVACYREQUIRED" in line and b"TLS" in line


def test_protocol_log_redacts_passwords(make_fg):
    fg = make_fg({"imap": {"ProtocolLogEnabled": "true"}})
    m = imap(fg)
    m.login("space", PASSWORDS["space"])
    m.logout()
    c = Raw(fg.imap_port)
    c.line()
    c.send(b"a AUTHENTICATE PLAIN\r\n")
    c.line()
    secret = base64.b64encode(b"\0quote\0" + PASSWORDS["quote"].encode())
    c.send(secret + b"\r\nb LOGOUT\r\n")
    c.until(b"b ")
    fg.wait_idle()
    plog = open(os.path.join(fg.workdir, "imap-protocol.log")).read()
    assert "LOGIN" in plog and "<redacted>" in plog and "F1 ID" in plog
    for text in (plog, fg.log_text()):
        assert PASSWORDS["space"] not in text and secret.decode() not in text
        assert PASSWORDS["quote"] not in text


def test_curl_imap_lists_and_fetches(fg, dovecot):
    dovecot.deliver("percent", b"Subject: curl\r\n\r\nhello from curl\r\n")
    url = f"imap://127.0.0.1:{fg.imap_port}/INBOX;UID=1"
    out = subprocess.run(["curl", "-sS", "--max-time", "20", "-u",
                          f"percent:{PASSWORDS['percent']}", url],
                         capture_output=True, check=True).stdout
    assert b"hello from curl" in out
    out = subprocess.run(["curl", "-sS", "--max-time", "20", "-u", "percent:nope",
                          f"imap://127.0.0.1:{fg.imap_port}/"], capture_output=True)
    assert out.returncode != 0


def test_stalled_reader_holds_up_no_other_session(make_fg, dovecot):
    """RelayPipes = 1: a client that stops reading keeps the only pipe busy;
    every other session is relayed through the copy path, byte-exact."""
    import concurrent.futures
    import socket
    body = b"".join(b"stall %06d %s\r\n" % (i, b"q" * 70) for i in range(14000))
    msg = b"Subject: stalled\r\n\r\n" + body
    dovecot.deliver("question", msg)
    fg = make_fg({"global": {"RelayPipes": "1", "Workers": "1"}})

    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", fg.imap_port))
    f = stalled.makefile("rb")
    f.readline()
    # Ten copies of the message: more than the kernel's socket buffers hold.
    stalled.sendall(b'a LOGIN question "why?"\r\nb SELECT INBOX\r\n' +
                    b"".join(b"f%d UID FETCH 1:* BODY.PEEK[]\r\n" % i for i in range(10)))
    time.sleep(1)  # the buffers fill; the pipe holds the next chunk
    assert fg.stats()["pipes_busy"] == 1

    def fetch(_):
        m = imap(fg)
        m.login("question", PASSWORDS["question"])
        m.select("INBOX", readonly=True)
        uid = m.uid("SEARCH", None, "ALL")[1][0].split()[-1]
        data = m.uid("FETCH", uid, "(BODY.PEEK[])")[1][0][1]
        m.logout()
        return data == msg

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        assert all(ex.map(fetch, range(16)))
    assert fg.stats()["relay_copies_total"] > 0
    # The stalled client reads at last and gets every byte too.
    for _ in range(10):
        line = f.readline()
        while not line.startswith(b"* 1 FETCH"):
            line = f.readline()
        size = int(line[line.rindex(b"{") + 1:line.rindex(b"}")])
        assert f.read(size) == msg
    f.close()  # the file object holds the socket open too
    stalled.close()
    st = fg.wait_idle()
    assert st["pipes"] <= 1 and st["pipes_busy"] == 0

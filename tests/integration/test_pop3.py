"""POP3 through forestgate to a real Dovecot, with real clients."""

import base64
import poplib
import subprocess

import pytest

from conftest import PASSWORDS
from tests.lib.forestgate import Raw


def pop(fg):
    return poplib.POP3("127.0.0.1", fg.pop3_port, timeout=15)


@pytest.mark.parametrize("user", sorted(PASSWORDS))
def test_user_pass_every_password_class(fg, user):
    p = pop(fg)
    assert p.getwelcome().startswith(b"+OK The forestgate POP3 service is ready.")
    p.user(user)
    # poplib sends the password as UTF-8 after "PASS ", spaces included.
    assert p.pass_(PASSWORDS[user]).startswith(b"+OK")
    assert p.stat()[0] >= 0
    p.quit()


@pytest.mark.parametrize("user", ["alice", "mixed", "lead", "utf8"])
def test_auth_plain_with_initial_response(fg, user):
    c = Raw(fg.pop3_port)
    c.line()
    ir = base64.b64encode(b"\0" + user.encode() + b"\0" + PASSWORDS[user].encode())
    c.send(b"AUTH PLAIN " + ir + b"\r\nSTAT\r\nQUIT\r\n")
    assert c.line().startswith(b"+OK Logged in.")
    assert c.line().startswith(b"+OK")  # STAT, answered by the backend
    assert c.line().startswith(b"+OK")
    assert c.closed()


def test_auth_plain_with_continuation_and_cancel(fg):
    c = Raw(fg.pop3_port)
    c.line()
    c.send(b"AUTH PLAIN\r\n")
    assert c.line() == b"+ \r\n"
    c.send(b"*\r\n")
    assert c.line().startswith(b"-ERR")
    c.send(b"AUTH PLAIN\r\n")
    assert c.line() == b"+ \r\n"
    c.send(base64.b64encode(b"\0alice\0secret") + b"\r\n")
    assert c.line().startswith(b"+OK Logged in.")


def test_capa_lists_the_required_tags(fg):
    p = pop(fg)
    caps = p.capa()
    for tag in ("USER", "SASL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "TOP", "UIDL"):
        assert tag in caps, caps
    assert caps["SASL"] == ["PLAIN"]
    assert b"<" not in p.getwelcome()  # no APOP timestamp
    p.quit()


def test_wrong_password_has_auth_code(fg):
    p = pop(fg)
    p.user("alice")
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\]"):
        p.pass_("nope")
    p.quit()


def test_pipelined_commands_answered_in_order(fg):
    c = Raw(fg.pop3_port)
    c.line()
    c.send(b"CAPA\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nNOOP\r\nQUIT\r\n")
    lines = c.until(b".\r\n")  # CAPA's list
    assert lines[0].startswith(b"+OK")
    rest = [c.line() for _ in range(5)]
    assert rest[0] == b"+OK\r\n"
    assert rest[1] == b"+OK Logged in.\r\n"
    assert all(l.startswith(b"+OK") for l in rest[2:]), rest
    assert c.closed()


def test_retr_1mb_message_byte_exact(fg, dovecot):
    # Lines that start with "." exercise dot-stuffing on the way.
    body = b"".join(b".line %06d %s\r\n" % (i, b"y" * 60) for i in range(14500))
    msg = b"From: a@b\r\nSubject: big pop\r\n\r\n" + body
    assert len(msg) > 1024 * 1024
    dovecot.deliver("equals", msg)
    p = pop(fg)
    p.user("equals")
    p.pass_(PASSWORDS["equals"])
    count = p.stat()[0]
    resp, lines, octets = p.retr(count)
    assert resp.startswith(b"+OK")
    assert b"\r\n".join(lines) + b"\r\n" == msg
    p.quit()


def test_commands_before_login_are_refused(fg):
    c = Raw(fg.pop3_port)
    c.line()
    c.send(b"STAT\r\nPASS x\r\nFOO\r\n")
    assert c.line().startswith(b"-ERR Command not valid in this state.")
    assert c.line().startswith(b"-ERR No user name given")
    assert c.line().startswith(b"-ERR Unknown command.")


def test_five_invalid_commands_disconnect(fg):
    c = Raw(fg.pop3_port)
    c.line()
    c.send(b"A\r\nB\r\nC\r\nD\r\nE\r\nF\r\n")
    lines = c.until(b"-ERR Too many")
    assert len(lines) == 6
    assert c.closed()


def test_long_line_is_refused_and_closed(fg):
    c = Raw(fg.pop3_port)
    c.line()
    c.send(b"USER " + b"u" * 600 + b"\r\n")
    assert c.line().startswith(b"-ERR Command line too long.")
    assert c.closed()


def test_nul_in_password_is_refused(fg):
    c = Raw(fg.pop3_port)
    c.line()
    c.send(b"USER alice\r\nPASS sec\0ret\r\n")
    assert c.line() == b"+OK\r\n"
    assert c.line().startswith(b"-ERR")
    assert fg.events("login") == []


@pytest.mark.parametrize("login_type,user,sasl", [
    ("PlainTextLogin", True, True),
    ("PlainTextAuthentication", False, True),
    ("SecureLogin", False, False),
])
def test_login_type_without_tls(make_fg, login_type, user, sasl):
    fg = make_fg({"pop3": {"LoginType": login_type}})
    p = pop(fg)
    caps = p.capa()
    assert ("USER" in caps) == user and ("SASL" in caps) == sasl
    c = Raw(fg.pop3_port)
    c.line()
    c.send(b"USER alice\r\n")
    line = c.line()
    assert line.startswith(b"+OK") == user, line
    if not user:
        assert line.startswith(b"-ERR [AUTH]") and b"TLS" in line
    c.send(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n")
    line = c.line()
    assert line.startswith(b"+OK") == sasl, line
    p.quit()


def test_curl_pop3_retrieves_a_message(fg, dovecot):
    dovecot.deliver("parens", b"Subject: curl pop\r\n\r\nhello over pop3\r\n")
    url = f"pop3://127.0.0.1:{fg.pop3_port}/1"
    out = subprocess.run(["curl", "-sS", "--max-time", "20", "-u",
                          f"parens:{PASSWORDS['parens']}", url],
                         capture_output=True, check=True).stdout
    assert b"hello over pop3" in out

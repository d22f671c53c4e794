"""The connection limits and the accept pause, end to end.

- MaxConnectionFromSingleIP: clients bound to 127.0.0.1 and 127.0.0.2 (all
  of 127.0.0.0/8 is loopback on Linux) and ::1; the refusal line in clear on
  a plain binding, a bare close on an SSL binding; the slot freed by a close.
- MaxConnectionsPerUser: through the directory (the LDIF forest of
  docs/login-rules.md's setup A, a real Dovecot as the backend, master-user
  logins), with imaplib and poplib: three spellings of one mailbox share one
  count, another mailbox has its own, a logout frees a slot, parallel
  logons are held exactly to the limit; and without a directory, where a
  wrong password at the limit is told it is wrong, nothing more.
- MaxConnections.
- A full descriptor table (forestgate started with a low RLIMIT_NOFILE and
  most of its table taken by descriptors it inherits): accepting pauses
  (event=accept_paused) without spinning, and resumes (event=accept_resumed)
  once descriptors are free.
- Clients that vanish mid-login give their counts back; descriptors return
  to their count before the test.
"""

import imaplib
import os
import poplib
import select
import socket
import threading
import time

import pytest

from conftest import PASSWORDS
from test_directory_ldif import gateway, mailbox_servers
from test_tls import TlsFg, client_ctx, pki  # noqa: F401 (pki: the fixture)
from tests.ldap.fixtures import setup_a
from tests.lib.forestgate import Forestgate, Raw, vanish_mid_login

IMAP_BYE_IP = b"* BYE [UNAVAILABLE] Too many connections from your address.\r\n"
POP3_BYE_IP = b"-ERR [SYS/TEMP] Too many connections from your address.\r\n"


def wait_stat(fg, key, value, timeout=10.0):
    """Waits until show info's key has value (counts are given back when a
    closed connection's last completion is in, a moment after the close)."""
    deadline = time.monotonic() + timeout
    while True:
        st = fg.stats()
        if st[key] == value:
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"{key} is {st[key]}, not {value}, after {timeout}s: {st}")
        time.sleep(0.02)


def greeted(port, source, host="127.0.0.1"):
    """A raw client from source: (Raw, its first line)."""
    c = Raw(port, host=host, source=source)
    return c, c.line()


# ---- MaxConnectionFromSingleIP ----

@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_per_ip_limit_refuses_in_clear_and_frees_on_close(make_fg, proto):
    fg = make_fg({proto: {"MaxConnectionFromSingleIP": "3"}})
    port = fg.imap_port if proto == "imap" else fg.pop3_port
    ok = b"* OK" if proto == "imap" else b"+OK"
    held = []
    for _ in range(3):
        c, line = greeted(port, "127.0.0.1")
        assert line.startswith(ok)
        held.append(c)
    extra, line = greeted(port, "127.0.0.1")
    assert line == (IMAP_BYE_IP if proto == "imap" else POP3_BYE_IP)
    assert extra.closed()
    # Another address is another client; the other protocol counts apart.
    other, line = greeted(port, "127.0.0.2")
    assert line.startswith(ok)
    other_port = fg.pop3_port if proto == "imap" else fg.imap_port
    c, line = greeted(other_port, "127.0.0.1")
    assert line.startswith(b"* OK" if proto == "pop3" else b"+OK")
    c.close()
    st = wait_stat(fg, "counted_per_ip", 4)
    assert st["refused_per_ip_total"] == 1 and st["refused_total"] == 1
    # A close gives its place back: the next connection from .1 is admitted.
    held.pop().close()
    wait_stat(fg, "counted_per_ip", 3)
    c, line = greeted(port, "127.0.0.1")
    assert line.startswith(ok)
    for h in held + [c, other]:
        h.close()
    st = fg.wait_idle()
    assert st["counted_per_ip"] == 0
    ev = [e for e in fg.events("refused") if "MaxConnectionFromSingleIP" in e.get("msg", "")]
    assert ev and "127.0.0.1" in ev[0]["msg"], fg.log_text()


def test_per_ip_limit_logs_in_through_the_admitted(make_fg):
    """The limit counts connections, not logins: the admitted log in as usual."""
    fg = make_fg({"imap": {"MaxConnectionFromSingleIP": "2"}})
    ms = [imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10) for _ in range(2)]
    for m in ms:
        m.login("alice", PASSWORDS["alice"])
    with pytest.raises(imaplib.IMAP4.error, match="Too many connections from your address"):
        imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
    for m in ms:
        m.logout()
    wait_stat(fg, "counted_per_ip", 0)
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
    m.login("alice", PASSWORDS["alice"])
    m.logout()
    fg.wait_idle()


def test_per_ip_limit_on_an_ssl_binding_closes_without_a_word(make_fg, pki):  # noqa: F811
    """As for MaxConnections: no clear-text line where TLS is expected, and no
    handshake for a client the limit refuses."""
    tfg = TlsFg(make_fg, pki, extra={"imap": {"MaxConnectionFromSingleIP": "1"}})
    ctx = client_ctx(pki)
    held = ctx.wrap_socket(socket.create_connection(("127.0.0.1", tfg.imaps_port), timeout=10),
                           server_hostname="mail.test")
    assert held.recv(512).startswith(b"* OK")
    extra = socket.create_connection(("127.0.0.1", tfg.imaps_port), timeout=10)
    assert extra.recv(512) == b""  # closed, nothing sent: not even a TLS alert
    extra.close()
    # The plain binding of the same protocol shares the address's count.
    c, line = greeted(tfg.imap_port, "127.0.0.1")
    assert line == IMAP_BYE_IP
    c.close()
    # Another address is served over TLS.
    s = socket.socket()
    s.settimeout(10)
    s.bind(("127.0.0.2", 0))
    s.connect(("127.0.0.1", tfg.imaps_port))
    other = ctx.wrap_socket(s, server_hostname="mail.test")
    assert other.recv(512).startswith(b"* OK")
    other.close()
    held.close()
    st = tfg.wait_idle()
    assert st["refused_per_ip_total"] == 2 and st["tls_handshakes_total"] == 2
    assert st["counted_per_ip"] == 0


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1)")
def test_per_ip_limit_counts_ipv6_apart_from_ipv4(make_fg):
    fg = make_fg({"imap": {"MaxConnectionFromSingleIP": "2"},
                  "global": {"IPv6PrefixLength": "64"}}, start=False)
    fg.sections["imap"]["UnencryptedOrTLSBindings"] = \
        f"127.0.0.1:{fg.imap_port}, [::1]:{fg.imap_port}"
    fg.start()
    held = [greeted(fg.imap_port, "::1", host="::1")[0] for _ in range(2)]
    c, line = greeted(fg.imap_port, "::1", host="::1")
    assert line == IMAP_BYE_IP
    c.close()
    v4 = [greeted(fg.imap_port, "127.0.0.1") for _ in range(2)]
    assert all(line.startswith(b"* OK") for _, line in v4)
    for h in held + [c for c, _ in v4]:
        h.close()
    st = fg.wait_idle()
    assert st["refused_per_ip_total"] == 1 and st["counted_per_ip"] == 0
    assert "IPv6PrefixLength = 64\n" in fg.stats("show settings")["text"]


def test_clients_vanishing_mid_login_give_their_counts_back(make_fg):
    fg = make_fg({"imap": {"MaxConnectionFromSingleIP": "2"},
                  "pop3": {"MaxConnectionFromSingleIP": "2"}})
    base_fds = fg.fd_count()
    for i in range(20):
        vanish_mid_login(fg.imap_port, b"a LOGIN alice %s\r\n" % PASSWORDS["alice"].encode(),
                         reset=i % 2 == 1)
        vanish_mid_login(fg.pop3_port, b"USER alice\r\nPASS %s\r\n" % PASSWORDS["alice"].encode(),
                         reset=i % 2 == 0)
    st = fg.wait_idle()
    assert st["counted_per_ip"] == 0 and st["counted_per_user"] == 0
    # Both places are free again.
    held = [greeted(fg.imap_port, "127.0.0.1") for _ in range(2)]
    assert all(line.startswith(b"* OK") for _, line in held)
    for c, _ in held:
        c.close()
    fg.wait_idle()
    assert fg.fd_count() == base_fds


# ---- MaxConnections ----

@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_max_connections_refuses_with_its_own_line(make_fg, proto):
    fg = make_fg({proto: {"MaxConnections": "2", "MaxConnectionFromSingleIP": "5"}})
    port = fg.imap_port if proto == "imap" else fg.pop3_port
    held = [greeted(port, src)[0] for src in ("127.0.0.1", "127.0.0.2")]
    c, line = greeted(port, "127.0.0.3")
    assert line == (b"* BYE [UNAVAILABLE] Too many connections.\r\n" if proto == "imap"
                    else b"-ERR [SYS/TEMP] Too many connections.\r\n")
    assert c.closed()
    for h in held:
        h.close()
    st = fg.wait_idle()
    assert st["refused_max_connections_total"] == 1 and st["refused_per_ip_total"] == 0
    text = fg.stats("show settings")["text"]
    assert "MaxConnections = 2\nMaxConnectionFromSingleIP = 5\nMaxConnectionsPerUser = 16\n" in text


# ---- MaxConnectionsPerUser, through the directory ----

@pytest.fixture(scope="module")
def dir_env(workroot):
    """Setup A's forest (tuser's mailbox is testalias on DB01, hmueller's is
    hmueller), two Dovecots, forestgate with MaxConnectionsPerUser = 3."""
    A = setup_a()
    servers, ip, pp = mailbox_servers(workroot, "limits-a", A)
    fg = gateway(workroot, "fg-limits-a", [("uclabor", "Organization", A)], ip, pp,
                 extra={"imap": {"MaxConnectionsPerUser": "3"},
                        "pop3": {"MaxConnectionsPerUser": "3"}})
    yield A, fg
    assert fg.stop() == 0, fg.log_text()
    for dc in servers.values():
        dc.stop()


# Clients a per-mailbox test opened: closed after it, passed or failed, so
# that one test's sessions never count against the next's.
OPENED = []


@pytest.fixture
def denv(dir_env):
    yield dir_env
    for c in OPENED:
        try:  # the socket: imaplib's close() would be IMAP's CLOSE
            (c.shutdown if isinstance(c, imaplib.IMAP4) else c.close)()
        except Exception:  # closed already, by the test
            pass
    OPENED.clear()
    wait_stat(dir_env[1], "counted_per_user", 0)


def raw(fg, **kw):
    c = Raw(fg.imap_port, **kw)
    OPENED.append(c)
    return c


def quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def imap_logon(fg, name, password):
    """(IMAP4 logged in, None), or (None, the refusal)."""
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=15)
    OPENED.append(m)
    m._encoding = "utf-8"  # passwords beyond ASCII, sent as quoted strings
    try:
        m.login(quoted(name), password)
    except imaplib.IMAP4.error as e:
        m.logout()
        return None, str(e)
    return m, None


def pop3_logon(fg, name, password):
    p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=15)
    OPENED.append(p)
    try:
        p.user(name)
        p.pass_(password)
    except poplib.error_proto as e:
        p.quit()
        return None, str(e)
    return p, None


TUSER_SPELLINGS = ["tuser", "UCLABOR\\tuser", "TUSER", "tuser.upn@upn.uclabor.de"]


def test_per_user_imap_spellings_share_one_count(denv):
    A, fg = denv
    pw = A.passwords["tuser"]
    held = []
    for name in TUSER_SPELLINGS[:3]:
        m, err = imap_logon(fg, name, pw)
        assert m, err
        held.append(m)
    for name in TUSER_SPELLINGS:
        m, err = imap_logon(fg, name, pw)
        assert m is None and "[UNAVAILABLE] Too many connections for this user" in err, err
    ev = fg.events("login")[-1]
    assert ev["result"] == "too-many" and ev["reason"] == "max_connections_per_user"
    assert ev["mailbox"] == "testalias"
    # Another mailbox has its own count; so has POP3.
    m, err = imap_logon(fg, "hmueller", A.passwords["hmueller"])
    assert m, err
    m.logout()
    p, err = pop3_logon(fg, "tuser", pw)
    assert p, err
    p.quit()
    st = wait_stat(fg, "counted_per_user", 3)
    assert st["refused_per_user_total"] == 4
    # A logout frees one place.
    held.pop().logout()
    wait_stat(fg, "counted_per_user", 2)
    m, err = imap_logon(fg, "tuser.upn@upn.uclabor.de", pw)
    assert m, err
    m.select("INBOX")
    typ, data = m.fetch("1", "(BODY.PEEK[TEXT])")
    assert typ == "OK" and b"the mailbox of testalias on DB01" in data[0][1]
    for m in held + [m]:
        m.logout()
    fg.wait_idle()
    assert fg.stats()["counted_per_user"] == 0


def test_per_user_pop3(denv):
    A, fg = denv
    pw = A.passwords["tuser"]
    before = fg.stats()["refused_per_user_total"]
    held = []
    for name in TUSER_SPELLINGS[:3]:
        p, err = pop3_logon(fg, name, pw)
        assert p, err
        held.append(p)
    p, err = pop3_logon(fg, "UCLABOR\\tuser", pw)
    assert p is None and "-ERR [IN-USE] Too many connections for this user." in err, err
    ev = fg.events("login")[-1]
    assert ev["result"] == "too-many" and ev["reason"] == "max_connections_per_user"
    # IMAP counts apart.
    m, err = imap_logon(fg, "tuser", pw)
    assert m, err
    m.logout()
    held.pop().quit()
    wait_stat(fg, "counted_per_user", 2)
    p, err = pop3_logon(fg, "tuser", pw)
    assert p, err
    assert p.stat()[0] >= 1
    for p in held + [p]:
        p.quit()
    st = fg.wait_idle()
    assert st["refused_per_user_total"] == before + 1 and st["counted_per_user"] == 0


def test_per_user_refused_client_may_try_again_on_its_connection(denv):
    """A refused logon leaves the connection open, as any failed login: once
    a place is free the same connection logs in."""
    A, fg = denv
    pw = A.passwords["tuser"]
    held = [imap_logon(fg, "tuser", pw)[0] for _ in range(3)]
    c = raw(fg)
    c.line()
    c.send(b'a LOGIN tuser "%s"\r\n' % pw.encode())
    assert c.until(b"a ")[-1] == b"a NO [UNAVAILABLE] Too many connections for this user.\r\n"
    held.pop().logout()
    wait_stat(fg, "counted_per_user", 2)
    c.send(b'b LOGIN tuser "%s"\r\n' % pw.encode())
    assert c.until(b"b ")[-1].startswith(b"b OK")
    c.send(b"c LOGOUT\r\n")
    c.until(b"c OK")
    c.close()
    for m in held:
        m.logout()
    fg.wait_idle()


def test_per_user_wrong_password_at_the_limit_is_only_wrong(denv):
    """The limit is told only to who proved the password."""
    A, fg = denv
    held = [imap_logon(fg, "tuser", A.passwords["tuser"])[0] for _ in range(3)]
    m, err = imap_logon(fg, "tuser", "not the password")
    assert m is None and "AUTHENTICATIONFAILED" in err, err
    assert fg.events("login")[-1]["result"] == "failed"
    for m in held:
        m.logout()
    fg.wait_idle()


def test_per_user_parallel_logons_are_held_exactly_to_the_limit(denv):
    """Eight logons of one mailbox at once, on two workers: three get in."""
    A, fg = denv
    pw = A.passwords["tuser"].encode()
    before = fg.stats()["refused_per_user_total"]
    clients = []
    for i in range(8):
        c = raw(fg, source=f"127.0.0.{1 + i % 3}")
        c.line()
        clients.append(c)
    answers = [None] * len(clients)

    names = [quoted(n).encode() for n in TUSER_SPELLINGS]

    def logon(i):
        clients[i].send(b'a LOGIN %s "%s"\r\n' % (names[i % len(names)], pw))
        answers[i] = clients[i].until(b"a ")[-1]

    threads = [threading.Thread(target=logon, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    oks = [a for a in answers if a and a.startswith(b"a OK")]
    refused = [a for a in answers if a == b"a NO [UNAVAILABLE] Too many connections for this user.\r\n"]
    assert len(oks) == 3 and len(refused) == 5, answers
    st = fg.stats()
    assert st["counted_per_user"] == 3 and st["refused_per_user_total"] == before + 5
    for c in clients:
        c.close()
    st = fg.wait_idle()
    assert st["counted_per_user"] == 0


def test_per_user_vanished_sessions_give_their_count_back(denv):
    """A client gone mid-login counted nothing; one gone after its login is
    given back at its close."""
    A, fg = denv
    pw = A.passwords["tuser"].encode()
    for i in range(6):
        vanish_mid_login(fg.imap_port, b'a LOGIN tuser "%s"\r\n' % pw, reset=i % 2 == 1)
        c = raw(fg)
        c.line()
        c.send(b'a LOGIN tuser "%s"\r\n' % pw)
        c.until(b"a OK")
        c.close()  # without LOGOUT
    st = fg.wait_idle()
    assert st["counted_per_user"] == 0
    held = [imap_logon(fg, "tuser", pw.decode())[0] for _ in range(3)]
    assert all(held)
    for m in held:
        m.logout()
    fg.wait_idle()


# ---- MaxConnectionsPerUser without a directory: the backend checks passwords ----

def test_per_user_without_a_directory(make_fg):
    fg = make_fg({"imap": {"MaxConnectionsPerUser": "2"}})
    held = []
    for name in ("alice", "alice"):  # the name typed is the mailbox
        m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
        m.login(name, PASSWORDS["alice"])
        held.append(m)
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        m.login("alice", "wrong")  # the backend says so: nothing about the limit
    with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\] Too many connections"):
        m.login("alice", PASSWORDS["alice"])
    m.logout()
    ev = fg.events("login")[-1]
    assert ev["result"] == "too-many" and ev["reason"] == "max_connections_per_user"
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
    m.login("space", PASSWORDS["space"])  # another user
    m.logout()
    for m in held:
        m.logout()
    st = fg.wait_idle()
    assert st["refused_per_user_total"] == 1 and st["counted_per_user"] == 0
    assert st["logins_failed_total"] == 2


# ---- a full descriptor table ----

def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Starts forestgate (argv[3:]) with RLIMIT_NOFILE = argv[1] and argv[2]
# descriptors open that it inherits and never uses: a table that its own
# count of slots (from the limit) does not know is mostly taken, as by a
# library's or a neighbour's descriptors.
CROWD = """
import os, resource, sys
limit, held = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
for _ in range(held):
    os.set_inheritable(os.open("/dev/null", os.O_RDONLY), True)
os.execv(sys.argv[3], sys.argv[3:])
"""


class CrowdedForestgate(Forestgate):
    def __init__(self, *args, limit: int, held: int, **kw):
        super().__init__(*args, **kw)
        self.crowd = [str(limit), str(held)]
        # A stats client would take a descriptor whenever one is free and
        # give it back, resuming and pausing the accepts: events are read
        # by polling the file instead (wait_events does).
        self.log_settle = False

    def command(self) -> list[str]:
        return ["/usr/bin/python3", "-c", CROWD] + self.crowd + super().command()


def test_full_descriptor_table_pauses_accepting_without_spinning(workroot, dovecot):
    # 256 descriptors, 216 of them taken: forestgate counts (256 - 72) / 2 =
    # 92 slots, but fewer than 40 descriptors are free.
    fg = CrowdedForestgate(os.path.join(workroot, "fg-emfile"), limit=256, held=216,
                           imap_backend_port=dovecot.imap_port,
                           pop3_backend_port=dovecot.pop3_port, workers=1,
                           settings={"global": {"RelayPipes": "1"}})
    fg.start()
    try:
        check_pause_and_resume(fg)
    finally:
        assert fg.stop() == 0, fg.log_text()


def check_pause_and_resume(fg):
    pid = fg.proc.pid
    base_fds = fg.fd_count()
    clients = [socket.create_connection(("127.0.0.1", fg.imap_port), timeout=10)
               for _ in range(80)]  # the kernel's backlog holds those not taken
    ev = fg.wait_events("accept_paused")
    assert len(ev) == 1 and ev[0]["listener"] == f"127.0.0.1:{fg.imap_port}", ev
    assert ev[0]["reason"] == "Too many open files", ev
    time.sleep(0.5)
    readable = select.select(clients, [], [], 0)[0]
    assert all(c.recv(512).startswith(b"* OK") for c in readable)
    assert 0 < len(readable) < 40, len(readable)  # the others wait in the backlog
    # Paused, not spinning: the process sleeps while the table is full.
    t0 = cpu_seconds(pid)
    time.sleep(2)
    used_cpu = cpu_seconds(pid) - t0
    assert used_cpu < 0.2, f"{used_cpu:.2f} s of CPU in 2 s while paused"
    assert not fg.events("accept_resumed")
    # Descriptors come free: the waiting clients are taken, accepting resumes.
    for c in clients:
        c.close()
    resumed = fg.wait_events("accept_resumed")
    assert int(resumed[0]["paused_ms"]) >= 2000, resumed
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
    m.login("alice", PASSWORDS["alice"])
    m.select("INBOX")
    m.logout()
    st = fg.wait_idle()
    assert st["accepted_total"] == 81
    # Logged once per pause: the waiting clients, taken at once, may fill the
    # table again for a moment, a second pause.
    assert st["accept_paused_total"] == len(fg.events("accept_paused")) <= 3
    assert len(fg.events("accept_resumed")) == st["accept_paused_total"]
    assert fg.fd_count() == base_fds

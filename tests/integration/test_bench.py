"""forestgate-bench, the load generator, against a real Dovecot and through forestgate.

Each test checks what the tool reports against what the servers saw or
what the data must be: a bench that miscounts, mis-encodes a password or
mis-parses a literal or a dot-stuffed line fails here.
"""

import json
import os
import socket
import subprocess
import threading
import time

import pytest

from tests.integration.conftest import PASSWORDS
from tests.lib.dovecot import Dovecot, wire_bytes
from tests.lib.forestgate import SANITIZER_RE, bench_binary
from tests.lib.mock import Mock

BENCH = bench_binary()
USER, PASSWORD = "benchuser", "bench pw \"q\" \\"


def message(n: int) -> bytes:
    """A message of about n bytes with lines that start with a dot."""
    lines = [b"From: bench@example.org", b"Subject: bench", b""]
    i = 0
    while sum(len(l) + 2 for l in lines) < n:
        lines.append(b".dotted line %06d" % i if i % 7 == 0 else b"line %06d %s" % (i, b"x" * 50))
        i += 1
    return b"\r\n".join(lines) + b"\r\n"


MESSAGES = [message(300_000), message(2_000), message(70_000)]


@pytest.fixture(scope="module")
def mailbox(dovecot):
    dovecot.add_user(USER, PASSWORD)
    for m in MESSAGES:
        dovecot.deliver(USER, m)
    return [len(wire_bytes(m)) for m in MESSAGES]


def bench(*args, timeout=60, check_rc=0, tmp_path=None):
    """Runs forestgate-bench with --json; returns (result dict or None, stderr)."""
    out = os.path.join(tmp_path, "out.json") if tmp_path else None
    cmd = [BENCH, "--quiet", *args] + (["--json", out] if out else [])
    start = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - start
    assert not SANITIZER_RE.search(p.stderr), p.stderr
    if check_rc is not None:
        assert p.returncode == check_rc, f"{cmd}: rc {p.returncode}\n{p.stderr}"
    result = None
    if out and os.path.exists(out):
        with open(out) as f:
            result = json.load(f)
        os.unlink(out)
    return result, p.stderr, took


def users_file(tmp_path, users: dict) -> str:
    path = os.path.join(tmp_path, "users")
    with open(path, "w", encoding="utf-8") as f:
        for u, p in users.items():
            f.write(f"{u}:{p}\n")
    return path


# Passwords a LOGIN line can carry as an atom, a quoted string or a LITERAL+.
ENCODABLE = {u: p for u, p in PASSWORDS.items() if "\n" not in p}


@pytest.mark.parametrize("auth", ["login", "plain"])
def test_imap_login_every_password_class(dovecot, tmp_path, auth):
    users = users_file(str(tmp_path), ENCODABLE)
    r, err, _ = bench("--port", str(dovecot.imap_port), "--users", users, "--auth", auth,
                      "--conns", "4", "--duration", "1.5", tmp_path=str(tmp_path))
    assert r["errors_total"] == 0, err
    assert r["ops"] >= len(ENCODABLE), r  # every user logged in at least once
    assert r["scenario"] == "login" and r["proto"] == "imap"
    lat = r["latency_us"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert r["connections"]["opened"] >= r["ops"]


@pytest.mark.parametrize("auth", ["login", "plain"])
def test_pop3_login(dovecot, tmp_path, auth):
    # USER/PASS carries the rest of the line: every printable password works.
    users = users_file(str(tmp_path), {u: p for u, p in ENCODABLE.items() if p.isascii()})
    r, err, _ = bench("--proto", "pop3", "--port", str(dovecot.pop3_port), "--users", users,
                      "--auth", auth, "--conns", "3", "--duration", "1.5", tmp_path=str(tmp_path))
    assert r["errors_total"] == 0, err
    assert r["ops"] > 0


def test_wrong_password_counts_login_errors(dovecot, tmp_path):
    r, err, took = bench("--port", str(dovecot.imap_port), "--users", "alice",
                         "--password-pattern", "wrong", "--conns", "2", "--duration", "1",
                         check_rc=1, tmp_path=str(tmp_path))
    assert r["ops"] == 0
    assert r["errors"]["login"] > 0
    assert "no operation succeeded" in err


@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_fetch_checks_every_byte_count(dovecot, mailbox, tmp_path, proto):
    port = dovecot.imap_port if proto == "imap" else dovecot.pop3_port
    r, err, _ = bench("--proto", proto, "--scenario", "fetch", "--port", str(port),
                      "--users", USER, "--password-pattern", PASSWORD, "--conns", "3",
                      "--duration", "1.5", tmp_path=str(tmp_path))
    assert r["errors_total"] == 0, err
    assert r["ops"] > 3
    # Each session cycles through the three messages from its own start, so
    # the bytes are sums of whole messages: at least the smallest per op.
    assert min(mailbox) * r["ops"] <= r["bytes"] <= max(mailbox) * r["ops"]
    assert r["mb_per_s"] > 0


@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_fetch_msgs_takes_only_the_messages_named(dovecot, mailbox, tmp_path, proto):
    """--fetch-msgs 2:3: only the second and third messages (no byte of the
    first, the largest); 2:2 only the second; 4:9 none (3 in the mailbox)."""
    port = dovecot.imap_port if proto == "imap" else dovecot.pop3_port
    base = ("--proto", proto, "--scenario", "fetch", "--port", str(port), "--users", USER,
            "--password-pattern", PASSWORD, "--duration", "1")
    r, err, _ = bench(*base, "--conns", "1", "--fetch-msgs", "2", tmp_path=str(tmp_path))
    assert r["errors_total"] == 0 and r["ops"] > 0, err
    assert r["bytes"] == mailbox[1] * r["ops"]
    r, err, _ = bench(*base, "--conns", "2", "--fetch-msgs", "2:3", tmp_path=str(tmp_path))
    assert r["errors_total"] == 0 and r["ops"] > 1, err
    assert min(mailbox[1:]) * r["ops"] <= r["bytes"] <= max(mailbox[1:]) * r["ops"]
    r, err, _ = bench(*base, "--conns", "1", "--fetch-msgs", "4:9", "--duration", "0.3",
                      check_rc=None, tmp_path=str(tmp_path))
    assert r["ops"] == 0 and "no message to fetch" in err


def test_fetch_through_forestgate(make_fg, dovecot, mailbox, tmp_path):
    fg = make_fg()
    for proto, port in (("imap", fg.imap_port), ("pop3", fg.pop3_port)):
        r, err, _ = bench("--proto", proto, "--scenario", "fetch", "--port", str(port),
                          "--users", USER, "--password-pattern", PASSWORD, "--conns", "2",
                          "--duration", "1", tmp_path=str(tmp_path))
        assert r["errors_total"] == 0, err
        assert min(mailbox) * r["ops"] <= r["bytes"] <= max(mailbox) * r["ops"]
    fg.wait_idle()


def test_idle_ready_file_matches_forestgate(make_fg, dovecot, tmp_path):
    fg = make_fg({"imap": {"MaxConnectionsPerUser": "40"}})  # 40 sessions of one user
    ready = os.path.join(str(tmp_path), "ready")
    users = users_file(str(tmp_path), {"alice": PASSWORDS["alice"]})
    p = subprocess.Popen([BENCH, "--quiet", "--scenario", "idle", "--port", str(fg.imap_port),
                          "--users", users, "--conns", "40", "--duration", "30",
                          "--ready-file", ready], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(ready):
            assert p.poll() is None and time.monotonic() < deadline, "never ready"
            time.sleep(0.05)
        assert open(ready).read().strip() == "40"
        assert fg.stats()["relay"] == 40  # forestgate holds the same 40 sessions
    finally:
        # SIGTERM ends the run early: the sessions log out, results come out.
        p.terminate()
        err = p.communicate(timeout=15)[1]
    assert p.returncode == 0, err
    assert "interrupted" in err and "40 logged in at most" in err
    assert not SANITIZER_RE.search(err), err
    fg.wait_idle()


def test_mixed_through_forestgate(make_fg, dovecot, mailbox, tmp_path):
    fg = make_fg()
    r, err, _ = bench("--scenario", "mixed", "--imap-port", str(fg.imap_port), "--pop3-port",
                      str(fg.pop3_port), "--users", USER, "--password-pattern", PASSWORD,
                      "--conns", "6", "--mix", "pop3=2,imap=1", "--stay", "0.6", "--noop", "0.2",
                      "--duration", "2", tmp_path=str(tmp_path))
    assert r["errors_total"] == 0, err
    kinds = r["kinds"]
    assert kinds["pop3_poll"]["ops"] > 0 and kinds["imap_stay"]["ops"] > 0
    assert r["ops"] == kinds["pop3_poll"]["ops"] + kinds["imap_stay"]["ops"]
    fg.wait_idle()


def test_open_loop_never_exceeds_the_schedule(dovecot, tmp_path):
    r, err, _ = bench("--port", str(dovecot.imap_port), "--users", "alice",
                      "--password-pattern", PASSWORDS["alice"], "--rate", "40", "--conns", "20",
                      "--duration", "1.5", tmp_path=str(tmp_path))
    assert r["errors_total"] == 0, err
    assert 0 < r["ops"] <= 40 * 1.5 + 1
    assert r["rate"] == 40


def test_server_down_is_bounded(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens
    r, err, took = bench("--port", str(port), "--conns", "5", "--duration", "1", check_rc=1,
                         tmp_path=str(tmp_path))
    assert r["errors"]["connect"] > 0 and r["ops"] == 0
    assert took < 15


def test_silent_server_times_out_and_stops(tmp_path):
    """A server that accepts and never greets: timeouts are counted, the tool stops by itself."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept)
    t.start()
    try:
        r, err, took = bench("--port", str(srv.getsockname()[1]), "--conns", "3", "--duration",
                             "1.5", "--timeout", "0.3", check_rc=1, tmp_path=str(tmp_path))
        assert r["errors"]["timeout"] > 0
        assert took < 15
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        srv.close()


@pytest.mark.parametrize("args,message", [
    (["--proto", "smtp"], "--proto must be imap or pop3"),
    (["--conns", "0"], "bad value for --conns"),
    (["--conns", "abc"], "bad value for --conns"),
    (["--duration"], "--duration needs a value"),
    (["--scenario", "bogus"], "--scenario must be"),
    (["--rate", "10", "--scenario", "fetch"], "--rate applies to the login scenario"),
    (["--mix", "pop3=x"], "--mix wants"),
    (["--fetch-msgs", "3:2"], "--fetch-msgs wants"),
    (["--tls", "--starttls"], "choose one of --tls and --starttls"),
    (["--tls-resume"], "--tls-resume needs --tls or --starttls"),
    (["--sni", "x.example"], "--sni needs --tls or --starttls"),
    (["--serve", "imap"], "needs --port"),
    (["--frobnicate"], "unknown option"),
])
def test_bad_options(args, message):
    p = subprocess.run([BENCH, *args], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2, p.stderr
    assert message in p.stderr


def test_empty_users_file(tmp_path):
    path = users_file(str(tmp_path), {})
    p = subprocess.run([BENCH, "--users", path, "--port", "1"], capture_output=True, text=True,
                       timeout=10)
    assert p.returncode == 2 and "no users in the file" in p.stderr


def test_help_and_version():
    p = subprocess.run([BENCH, "--help"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0 and "--scenario" in p.stdout and "MOCK" in p.stdout
    p = subprocess.run([BENCH, "--version"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0 and p.stdout.startswith("forestgate-bench ")


@pytest.fixture
def mock_imap(tmp_path):
    """The MOCK IMAP backend (forestgate-bench --serve imap) on a free port."""
    m = Mock(tmp_path, "imap", messages=4, msg_size=50000, extra=("--threads", "2", "--quiet"))
    yield m.port
    assert m.stop() == 0, m.log_text()


def test_thousands_of_sessions_on_one_thread(mock_imap, tmp_path):
    ready = os.path.join(str(tmp_path), "ready")
    r, err, _ = bench("--scenario", "idle", "--port", str(mock_imap), "--conns", "3000",
                      "--threads", "1", "--duration", "3", "--timeout", "20",
                      "--ready-file", ready, tmp_path=str(tmp_path))
    assert open(ready).read().strip() == "3000", err
    assert r["errors_total"] == 0 and r["connections"]["logged_in_peak"] == 3000, r


def test_user_patterns_with_long_numbers(mock_imap, tmp_path):
    # user1 .. user1500, and a pattern that repeats the number: every name
    # must expand whatever its length.
    for pattern in ("user%d", "%d.%d.%d@dept%d.example"):
        r, err, _ = bench("--scenario", "login", "--port", str(mock_imap), "--conns", "20",
                          "--users", pattern, "--user-count", "1500",
                          "--password-pattern", "pw-%u-%d", "--duration", "1",
                          tmp_path=str(tmp_path))
        assert r["errors_total"] == 0 and r["ops"] > 0, err


def test_threads_share_the_sessions(mock_imap, tmp_path):
    r, err, _ = bench("--scenario", "fetch", "--port", str(mock_imap), "--conns", "6",
                      "--threads", "3", "--duration", "1", tmp_path=str(tmp_path))
    assert r["threads"] == 3 and r["errors_total"] == 0, err
    assert r["connections"]["opened"] == 6  # each session logged in once and stayed
    assert r["bytes"] == r["ops"] * 50000   # every mock message is exactly --msg-size


@pytest.fixture(scope="module")
def tls_dovecot(workroot):
    """A real Dovecot with TLS: STARTTLS/STLS on the plain ports, implicit TLS on imaps/pop3s."""
    d = os.path.join(workroot, "dovecot-tls")
    os.makedirs(d, exist_ok=True)
    crt, key = os.path.join(d, "server.crt"), os.path.join(d, "server.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
                    "/CN=mail.example", "-keyout", key, "-out", crt],
                   check=True, capture_output=True)
    dc = Dovecot(os.path.join(d, "run"), {USER: PASSWORD}, tls=(crt, key), imap_client_limit=10)
    dc.start()
    for m in MESSAGES:
        dc.deliver(USER, m)
    yield dc
    dc.stop()


@pytest.mark.parametrize("proto,mode", [("imap", "--tls"), ("imap", "--starttls"),
                                        ("pop3", "--tls"), ("pop3", "--starttls")])
def test_tls_login(tls_dovecot, tmp_path, proto, mode):
    dc = tls_dovecot
    implicit = mode == "--tls"
    port = {("imap", True): dc.imaps_port, ("imap", False): dc.imap_port,
            ("pop3", True): dc.pop3s_port, ("pop3", False): dc.pop3_port}[(proto, implicit)]
    r, err, _ = bench("--proto", proto, mode, "--port", str(port), "--users", USER,
                      "--password-pattern", PASSWORD, "--conns", "3", "--duration", "1.5",
                      "--tls-resume", tmp_path=str(tmp_path))
    assert r["errors_total"] == 0, err
    assert r["ops"] > 0
    # Every login ran its own handshake; resumption is Dovecot's to grant.
    assert r["tls"]["handshakes"] >= r["ops"] - 3
    assert 0 <= r["tls"]["resumed"] <= r["tls"]["handshakes"]


@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_tls_fetch_checks_every_byte_count(tls_dovecot, tmp_path, proto):
    dc = tls_dovecot
    port = dc.imaps_port if proto == "imap" else dc.pop3s_port
    r, err, _ = bench("--proto", proto, "--tls", "--scenario", "fetch", "--port", str(port),
                      "--users", USER, "--password-pattern", PASSWORD, "--conns", "2",
                      "--duration", "1", tmp_path=str(tmp_path))
    assert r["errors_total"] == 0, err
    sizes = [len(wire_bytes(m)) for m in MESSAGES]
    assert r["ops"] > 0 and min(sizes) * r["ops"] <= r["bytes"] <= max(sizes) * r["ops"]
    assert r["tls"]["handshakes"] == 2


def test_tls_to_a_plain_server_is_a_tls_error(dovecot, tmp_path):
    r, err, _ = bench("--tls", "--port", str(dovecot.imap_port), "--users", "alice",
                      "--conns", "2", "--duration", "1", check_rc=1, tmp_path=str(tmp_path))
    assert r["errors"]["tls"] > 0 and r["ops"] == 0

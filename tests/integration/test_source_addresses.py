"""SourceAddresses, and the backend closing first.

Backend connections are spread over local addresses (README, [backend]
SourceAddresses); an address that is not on the host is logged once and
passed over. And where the protocol allows, the backend is made to close
first, so the TIME_WAIT lands on its side and not on one of forestgate's
ephemeral ports (core/bclose.h). Addresses in 127/8 bind without being added
to the host; each test uses its own, so what ss shows is its own traffic.
"""

import imaplib
import json
import poplib
import subprocess
import time

import pytest

from tests.lib.forestgate import binary

PW = "secret"


def ss(state: str) -> list[tuple[str, str]]:
    """(local, peer) of the TCP sockets in a state."""
    out = subprocess.run(["ss", "-Htn", "state", state], capture_output=True, text=True,
                         check=True).stdout
    return [tuple(l.split()[-2:]) for l in out.splitlines() if l.strip()]


def backend_conns(src: str, port: int) -> list[str]:
    """forestgate's established connections from src to the backend port:
    their local "ip:port"."""
    return [loc for loc, peer in ss("established")
            if loc.startswith(src + ":") and peer == f"127.0.0.1:{port}"]


def imap_session(fg):
    m = imaplib.IMAP4("127.0.0.1", fg.imap_port)
    m.login("alice", PW)
    return m


def wait_backend_conn(src: str, port: int, n: int = 1) -> list[str]:
    deadline = time.monotonic() + 5
    while len(found := backend_conns(src, port)) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def time_wait_side(local: str, backend: str) -> str:
    """Which end of the connection local <-> backend holds its TIME_WAIT,
    once one does: "forestgate" or "backend"."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for loc, peer in ss("time-wait"):
            if (loc, peer) == (local, backend):
                return "forestgate"
            if (loc, peer) == (backend, local):
                return "backend"
        time.sleep(0.05)
    raise AssertionError(f"no TIME_WAIT for {local} <-> {backend}")


def test_backend_connections_are_spread_over_the_addresses(make_fg, dovecot):
    fg = make_fg({"global": {"Workers": "1"},
                  "backend": {"SourceAddresses": "127.0.0.2, 127.0.0.3"}}, workers=1)
    assert "SourceAddresses = 127.0.0.2, 127.0.0.3\n" in fg.ask("show settings backend")
    sessions = [imap_session(fg) for _ in range(4)]
    pops = []
    for _ in range(2):
        p = poplib.POP3("127.0.0.1", fg.pop3_port)
        p.user("alice")
        p.pass_(PW)
        pops.append(p)
    try:
        # One worker: round-robin gives each address every other connection.
        for src in ("127.0.0.2", "127.0.0.3"):
            assert len(wait_backend_conn(src, dovecot.imap_port, 2)) == 2
            assert len(wait_backend_conn(src, dovecot.pop3_port, 1)) == 1
        # Dovecot sees them coming from there too.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            log = dovecot.log_text()
            if "real_rip=127.0.0.2," in log and "real_rip=127.0.0.3," in log:
                break
            time.sleep(0.05)
        assert "real_rip=127.0.0.2," in log and "real_rip=127.0.0.3," in log
    finally:
        for m in sessions:
            m.logout()
        for p in pops:
            p.quit()
    assert not fg.events("source_address_error")


def test_an_address_not_on_the_host_is_logged_once_and_passed_over(make_fg, dovecot):
    fg = make_fg({"backend": {"SourceAddresses": "192.0.2.1 127.0.0.5"}}, workers=1)
    for _ in range(3):
        m = imap_session(fg)
        assert wait_backend_conn("127.0.0.5", dovecot.imap_port) != []
        m.logout()
    p = poplib.POP3("127.0.0.1", fg.pop3_port)
    p.user("alice")
    p.pass_(PW)
    p.quit()
    errors = fg.wait_events("source_address_error")
    assert len(errors) == 1, errors  # not once per connection
    assert errors[0]["address"] == "192.0.2.1"
    assert errors[0]["reason"] == "Cannot assign requested address"
    assert len(fg.events("login")) == 4
    assert all(e["result"] == "ok" for e in fg.events("login"))


def test_an_unparsable_address_names_file_and_line(make_fg, tmp_path):
    fg = make_fg({"backend": {"SourceAddresses": "127.0.0.2, 127.0.0.300"}}, start=False)
    path = tmp_path / "bad.ini"
    text = fg.config_text()
    path.write_text(text)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if l.startswith("SourceAddresses"))
    r = subprocess.run([binary(), "-c", str(path), "--check-config"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0
    assert f'{path}:{line}: SourceAddresses: "127.0.0.300": not an IPv4 or IPv6 address' \
        in r.stderr, r.stderr


def close_imap_without_logout(fg, src, port):
    m = imap_session(fg)
    (local,) = wait_backend_conn(src, port)
    m.shutdown()
    return local


def close_pop3_after_quit(fg, src, port):
    p = poplib.POP3("127.0.0.1", fg.pop3_port)
    p.user("alice")
    p.pass_(PW)
    (local,) = wait_backend_conn(src, port)
    p.quit()
    return local


@pytest.mark.parametrize("how, src", [(close_imap_without_logout, "127.0.0.6"),
                                      (close_pop3_after_quit, "127.0.0.7")])
def test_the_backend_closes_first(make_fg, dovecot, how, src):
    """A client that leaves without LOGOUT: forestgate asks the backend to
    close (LOGOUT) rather than closing first itself. POP3 QUIT: forestgate
    closes only after the backend's FIN, even when the client is faster."""
    fg = make_fg({"backend": {"SourceAddresses": src}}, workers=1)
    port = dovecot.imap_port if how is close_imap_without_logout else dovecot.pop3_port
    local = how(fg, src, port)
    assert time_wait_side(local, f"127.0.0.1:{port}") == "backend"
    fg.wait_events("disconnect", lambda e: e.get("user") == "alice")


def ss_all() -> list[tuple[str, str, str]]:
    """(state, local, peer) of every TCP socket."""
    out = subprocess.run(["ss", "-Htan"], capture_output=True, text=True, check=True).stdout
    return [(f[0], f[-2], f[-1]) for f in (l.split() for l in out.splitlines()) if len(f) >= 5]


@pytest.mark.parametrize("proto, src", [("imap", "127.0.0.8"), ("pop3", "127.0.0.9")])
def test_a_failed_login_leaves_no_time_wait_on_forestgate(make_fg, dovecot, proto, src):
    """The backend connection of a refused login is ended by the backend
    (forestgate sends LOGOUT / QUIT, which commit nothing before the
    login): forestgate's end of it leaves no TIME_WAIT behind."""
    fg = make_fg({"backend": {"SourceAddresses": src}}, workers=1)
    backend = f"127.0.0.1:{dovecot.imap_port if proto == 'imap' else dovecot.pop3_port}"

    def fg_side(states):
        return {(loc, peer) for st, loc, peer in ss_all()
                if st in states and loc.startswith(src + ":") and peer == backend}

    before = fg_side({"TIME-WAIT"})  # a run of this test less than a minute ago
    if proto == "imap":
        client = imaplib.IMAP4("127.0.0.1", fg.imap_port)
        with pytest.raises(imaplib.IMAP4.error):
            client.login("alice", "wrong")
    else:
        client = poplib.POP3("127.0.0.1", fg.pop3_port)
        client.user("alice")
        with pytest.raises(poplib.error_proto):
            client.pass_("wrong")
    fg.wait_events("login", lambda e: e["result"] == "failed")
    # Once forestgate's socket is gone, a first close would have left it
    # in TIME-WAIT.
    deadline = time.monotonic() + 10
    while fg_side({"ESTAB", "FIN-WAIT-1", "FIN-WAIT-2", "CLOSE-WAIT", "LAST-ACK", "CLOSING"}):
        assert time.monotonic() < deadline, ss_all()
        time.sleep(0.05)
    assert fg_side({"TIME-WAIT"}) - before == set()
    (client.logout if proto == "imap" else client.quit)()


def test_portbench_quick(tmp_path):
    """bench/portbench, small and short, end to end: both runs log on at the
    rate asked, without failures or EADDRNOTAVAIL, and the backend holds the
    TIME_WAITs of the backend leg."""
    root = __file__.rsplit("/tests/", 1)[0]
    out = tmp_path / "portbench.json"
    r = subprocess.run(["/usr/bin/python3", f"{root}/bench/portbench", "--rate", "200",
                        "--duration", "3", "--sources", "2", "--conns", "50", "--threads", "1",
                        "--json", str(out)], cwd=root, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-4000:]}"
    runs = {x["run"]: x for x in json.loads(out.read_text())["runs"]}
    assert set(runs) == {"with", "without"}
    assert runs["with"]["source_addresses"] == ["127.0.0.21", "127.0.0.22"]
    for x in runs.values():
        assert x["logons"] >= 500, x
        assert x["client_errors_total"] == 0 and x["eaddrnotavail"] == 0, x
        assert x["forestgate"]["logins_failed_total"] == 0, x
        assert x["time_wait_end"]["backend"] > 0, x
    assert "| with (2 addresses) |" in r.stdout

"""The command line: --check-config, --version, --help, and clean stops."""

import signal
import socket
import subprocess

from tests.lib.forestgate import Raw, binary

ISSUE_CONFIG = """[global]
Workers = 2
[imap]
UnencryptedOrTLSBindings = 127.0.0.1:1143, [::1]:1143
LoginType = PlainTextLogin
Banner = The forestgate IMAP4 service is ready.
PreAuthenticatedConnectionTimeout = 00:01:00
AuthenticatedConnectionTimeout = 00:30:00
MaxCommandSize = 10240
ProtocolLogEnabled = false
ProxyTargetPort = 10143
[pop3]
UnencryptedOrTLSBindings = 127.0.0.1:1110
LoginType = PlainTextLogin
ProxyTargetPort = 10110
[backend]
DefaultServer = 127.0.0.1
LoginMode = PassThrough
ConnectTimeout = 00:00:05
"""


def run(*args):
    return subprocess.run([binary(), *args], capture_output=True, text=True, timeout=30)


def test_check_config_accepts_the_issue_file(tmp_path):
    path = tmp_path / "fg.ini"
    path.write_text(ISSUE_CONFIG)
    r = run("-c", str(path), "--check-config")
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stdout


def test_check_config_lists_every_error_with_file_and_line(tmp_path):
    path = tmp_path / "bad.ini"
    path.write_text(ISSUE_CONFIG.replace("Workers = 2", "Workers = two")
                    .replace("LoginMode = PassThrough", "LoginMode = Magic")
                    + "Bogus = 1\n")
    r = run("-c", str(path), "--check-config")
    assert r.returncode == 1
    assert f"{path}:2: Workers: expected a number" in r.stderr
    assert f"{path}:18: LoginMode: expected PassThrough or MasterUser" in r.stderr
    assert f"{path}:20: unknown setting \"Bogus\" in [backend]" in r.stderr
    assert "3 errors" in r.stderr


def test_delegate_check_names_its_choices(tmp_path):
    path = tmp_path / "bad.ini"
    text = ISSUE_CONFIG + "[directory]\nDelegateCheck = acl\n"
    path.write_text(text)
    r = run("-c", str(path), "--check-config")
    line = text.count("\n")
    assert r.returncode == 1
    assert (f"{path}:{line}: DelegateCheck: expected security-descriptor, delegate-list or both"
            in r.stderr), r.stderr


def test_missing_file_and_bad_arguments(tmp_path):
    r = run("-c", str(tmp_path / "nope.ini"), "--check-config")
    assert r.returncode == 1 and "cannot open" in r.stderr
    assert run().returncode == 2
    assert run("--frobnicate").returncode == 2


def test_version_and_help():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("forestgate ")
    assert "liburing" in r.stdout
    assert "TLS library: " in r.stdout
    r = run("--help")
    assert r.returncode == 0 and "--check-config" in r.stdout


def test_sigterm_and_sigint_stop_cleanly_with_sessions_open(make_fg):
    for sig in (signal.SIGTERM, signal.SIGINT):
        fg = make_fg()
        pre = Raw(fg.imap_port)
        pre.line()
        logged = Raw(fg.pop3_port)
        logged.line()
        logged.send(b"USER alice\r\nPASS secret\r\n")
        logged.until(b"+OK Logged in")
        assert fg.stop(sig) == 0
        assert pre.line() == b"* BYE Server shutting down.\r\n"
        assert pre.closed() and logged.closed()
        assert "event=stopped" in fg.log_text()


def test_port_in_use_is_reported(make_fg):
    clash = make_fg(start=False)
    # SO_REUSEPORT lets two forestgates of one user share a port; a port held
    # by a socket without it must make the start fail cleanly.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    clash.sections["imap"]["UnencryptedOrTLSBindings"] = f"127.0.0.1:{s.getsockname()[1]}"
    try:
        clash.start()
        raise AssertionError("started on a port in use")
    except RuntimeError as e:
        assert "cannot listen on 127.0.0.1" in str(e)
        assert "Address already in use" in str(e)
        assert clash.proc.wait() == 1
        clash.proc = None  # its failure was the point
    finally:
        s.close()


def test_stats_socket_commands(fg):
    text = fg.stats("show settings")["text"]
    assert "[backend]\nDefaultServer = 127.0.0.1\nLoginMode = PassThrough\n" in text
    assert f"UnencryptedOrTLSBindings = 127.0.0.1:{fg.imap_port}\n" in text
    # every key, the unset ones as comments: a secret only ever as its file
    assert "# MasterPasswordFile = (not set)\n" in text
    assert "# TlsServerName = (not set)\n" in text
    helptext = fg.stats("help")["text"]
    assert "show info" in helptext and "show backends" in helptext
    assert fg.stats("drop everything")["text"].startswith('Unknown command "drop everything"')
    info = fg.stats()
    assert info["workers"] == 2 and info["connections"] == 0 and info["slots"] > 1000


def test_wolfssl_build_is_named_and_a_slow_one_is_warned_about(make_fg):
    """--version names the wolfSSL linked; only the system (slow) one warns at start-up."""
    version = run("--version").stdout
    fast = "built for speed" in version
    fg = make_fg()
    # The stats socket names the same library as --version.
    assert f"TLS library: {fg.stats()['tls_library']}," in version
    warned = [e for e in fg.events("tls") if "scripts/build.sh" in e.get("msg", str(e))]
    assert bool(warned) != fast, (fast, fg.log_text())

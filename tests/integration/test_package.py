"""The systemd unit, the man pages and the Debian package.

The package test builds the .deb from this tree with dpkg-buildpackage
(scripts/package.sh), installs it on this machine with dpkg -i, checks what
it put where, starts the installed forestgate with the packaged
configuration as it is and then with only its backend and ports changed (to
log in through it to the test's Dovecot), and purges it.
"""

import glob
import imaplib
import os
import poplib
import pwd
import re
import signal
import socket
import ssl
import subprocess
import time

import pytest

from conftest import PASSWORDS
from test_service import NotifySocket, accepts_at_once, task_ids
from tests.lib.forestgate import ROOT, bench_binary, binary, free_port

UNIT = os.path.join(ROOT, "contrib", "systemd", "forestgate.service")
MAN = os.path.join(ROOT, "docs", "man")
PAGES = ["forestgate.8", "forestgate.ini.5", "forestgate-bench.1"]


def run(cmd, **kw):
    kw.setdefault("timeout", 120)
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


# ---- the unit ----

def test_unit_verifies_clean(tmp_path):
    """systemd-analyze verify on the unit (its programs pointed at this
    build; the man pages are checked below): no output at all."""
    text = open(UNIT).read()
    assert "Type=notify" in text and "ExecReload=/bin/kill -HUP $MAINPID" in text
    unit = tmp_path / "forestgate.service"
    # The unit wants absolute paths: CI's FG_BIN is relative to the tree.
    ours = text.replace("/usr/sbin/forestgate", os.path.abspath(binary()))
    unit.write_text(ours)
    r = run(["systemd-analyze", "verify", "--man=no", str(unit)])
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr

    # A mistake is caught: verify is not silent about everything.
    unit.write_text(ours.replace("Type=notify", "Type=notifyy"))
    r = run(["systemd-analyze", "verify", "--man=no", str(unit)])
    assert "notifyy" in r.stdout + r.stderr


def test_unit_allows_io_uring_and_nothing_more_than_binding():
    """@system-service leaves io_uring out: the unit must add it, or the
    workers' rings would fail under systemd."""
    r = run(["systemd-analyze", "syscall-filter", "@system-service"])
    assert "io_uring_setup" not in r.stdout  # why the unit names them
    text = open(UNIT).read()
    filt = re.search(r"^SystemCallFilter=(.*)$", text, re.M).group(1).split()
    assert {"@system-service", "io_uring_setup", "io_uring_enter", "io_uring_register"} <= set(filt)
    assert re.search(r"^CapabilityBoundingSet=CAP_NET_BIND_SERVICE$", text, re.M)
    assert re.search(r"^AmbientCapabilities=CAP_NET_BIND_SERVICE$", text, re.M)
    assert re.search(r"^LimitNOFILE=1048576$", text, re.M)
    assert re.search(r"^User=forestgate$", text, re.M)
    r = run(["systemd-analyze", "security", "--offline=true", UNIT])
    level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
    assert level and float(level.group(1)) < 3.0, r.stdout[-2000:]


# ---- the man pages ----

@pytest.mark.parametrize("page", PAGES)
def test_man_page_is_clean_roff(page):
    r = run(["groff", "-man", "-ww", "-z", os.path.join(MAN, page)])
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = run(["man", "-l", os.path.join(MAN, page)], env={**os.environ, "MANPAGER": "cat",
                                                          "MANWIDTH": "80"})
    assert r.returncode == 0 and "NAME" in r.stdout and "SEE ALSO" in r.stdout


def test_ini_page_matches_readme_and_every_setting():
    r = run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "man-ini.py"), "--check"])
    assert r.returncode == 0, r.stderr
    page = open(os.path.join(MAN, "forestgate.ini.5")).read().splitlines()
    entries = " ".join(page[i + 1] for i, l in enumerate(page) if l == ".TP")
    entries = re.sub(r"\\f[BIR]", "", entries)
    keys = set()
    for src in glob.glob(os.path.join(ROOT, "core", "config*.c")):
        keys |= set(re.findall(r'KEYD?\("(\w+)"', open(src).read()))
    assert len(keys) > 50
    missing = sorted(k for k in keys if not re.search(r"(?<![\w])" + k + r"(?![\w])", entries))
    assert not missing, f"settings without an entry in forestgate.ini(5): {missing}"


def test_forestgate_page_has_every_option_and_command():
    page = open(os.path.join(MAN, "forestgate.8")).read().replace("\\-", "-")
    usage = run([binary(), "--help"]).stdout
    for opt in set(re.findall(r"--[a-z-]+", usage)):
        assert opt in page, opt
    for cmd in ["show info", "show settings", "show sessions", "kick user", "kick session",
                "show backends", "disable backend", "enable backend", "set ", "reload", "drain",
                "watch", "show metrics", "show cache", "flush cache", "flush throttle",
                "SIGHUP", "SIGTERM", "READY=1", "forestgate ctl"]:
        assert cmd in page, cmd


def test_bench_page_has_every_option():
    usage = run([bench_binary(), "--help"]).stdout
    page = open(os.path.join(MAN, "forestgate-bench.1")).read().replace("\\-", "-")
    opts = set(re.findall(r"--[a-z][a-z-]+", usage))
    assert len(opts) > 20
    missing = sorted(o for o in opts if o not in page)
    assert not missing, missing


# ---- the package ----

def purge():
    if run(["dpkg-query", "-W", "-f=${Status}", "forestgate"]).stdout.startswith("install"):
        r = run(["dpkg", "-P", "forestgate"])
        assert r.returncode == 0, r.stdout + r.stderr


def drop_user():
    try:
        pwd.getpwnam("forestgate")
    except KeyError:
        return
    run(["deluser", "--system", "--quiet", "forestgate"])
    run(["delgroup", "--system", "--quiet", "forestgate"])


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Builds the package, installs it; purges it (and its user) after."""
    if os.geteuid() != 0:
        pytest.fail("installing the package needs root (CI runs as root)")
    deb = os.environ.get("FG_DEB")  # a .deb built before, while working on these tests
    if not deb:
        out = tmp_path_factory.mktemp("deb")
        # The unit tests ran in scripts/test.sh's unit stage already.
        env = {**os.environ, "DEB_BUILD_OPTIONS": "nocheck parallel=%d" % os.cpu_count()}
        start = time.monotonic()
        r = run([os.path.join(ROOT, "scripts", "package.sh"), str(out)], env=env, timeout=1200)
        assert r.returncode == 0, r.stderr[-4000:]
        print(f"\npackage built in {time.monotonic() - start:.0f} s")
        deb = r.stdout.strip().splitlines()[-1]
    purge()
    drop_user()
    r = run(["dpkg", "-i", deb])
    assert r.returncode == 0, r.stdout + r.stderr
    yield deb
    purge()
    drop_user()


def test_package_installs_what_it_should(installed):
    r = run(["dpkg-deb", "-c", installed])
    for path in ["./usr/sbin/forestgate", "./usr/bin/forestgate-bench",
                 "./lib/systemd/system/forestgate.service", "./etc/forestgate/forestgate.ini",
                 "./usr/share/man/man8/forestgate.8.gz", "./usr/share/man/man5/forestgate.ini.5.gz",
                 "./usr/share/man/man1/forestgate-bench.1.gz"]:
        assert path in r.stdout, path
    # The system user, with no shell and no home to log in to.
    pw = pwd.getpwnam("forestgate")
    assert pw.pw_uid < 1000 and pw.pw_shell.endswith(("nologin", "false"))
    assert os.stat("/var/log/forestgate").st_uid == pw.pw_uid
    key = os.stat("/etc/forestgate/tls/forestgate.key")
    assert key.st_mode & 0o777 == 0o640 and key.st_gid == pw.pw_gid
    # The ini is a conffile: an upgrade does not overwrite the admin's edits.
    r = run(["dpkg-query", "-W", "-f=${Conffiles}", "forestgate"])
    assert "/etc/forestgate/forestgate.ini" in r.stdout
    for page in ["forestgate", "forestgate.ini", "forestgate-bench"]:
        r = run(["man", "-w", page])
        assert r.returncode == 0 and r.stdout.startswith("/usr/share/man/"), page
    # The installed unit verifies with its installed programs and man pages.
    r = run(["systemd-analyze", "verify", "/lib/systemd/system/forestgate.service"])
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
    # The fast wolfSSL, as scripts/build.sh links it.
    r = run(["/usr/sbin/forestgate", "--version"])
    assert "built for speed" in r.stdout, r.stdout
    r = run(["/usr/sbin/forestgate", "-c", "/etc/forestgate/forestgate.ini", "--check-config"])
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stdout + r.stderr


def notify_socket() -> NotifySocket:
    """Abstract, as forestgate (switched to its user) must reach it without
    file permissions: systemd's own is world-writable."""
    return NotifySocket(f"@fg-pkg-notify-{os.getpid()}-{time.monotonic_ns()}")


def start_installed(config: str, ns: NotifySocket, log) -> subprocess.Popen:
    env = {**os.environ, "NOTIFY_SOCKET": ns.path}
    proc = subprocess.Popen(["/usr/sbin/forestgate", "-c", config], stdout=log, stderr=log,
                            env=env)
    try:
        msg, pid = ns.recv(timeout=20)
    except socket.timeout:
        proc.kill()
        raise
    assert msg.get("READY") == "1" and pid == proc.pid, msg
    return proc


def stop_installed(proc, ns):
    proc.send_signal(signal.SIGTERM)
    assert ns.recv()[0].get("STOPPING") == "1"
    assert proc.wait(20) == 0


def test_packaged_configuration_starts_as_it_is(installed, tmp_path):
    """Started by root with the packaged file untouched: it binds 143, 110,
    993 and 995, runs as forestgate, and offers STARTTLS with the certificate
    the package made."""
    ns = notify_socket()
    log = open(tmp_path / "log", "wb")
    proc = start_installed("/etc/forestgate/forestgate.ini", ns, log)
    try:
        fg_uid = pwd.getpwnam("forestgate").pw_uid
        assert all(ids[0] == [fg_uid] * 4 for ids in task_ids(proc.pid).values())
        for port in (143, 110):
            assert accepts_at_once(port), port
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c = imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=ctx, timeout=10)
        assert "AUTH=PLAIN" in c.capabilities
        c.logout()
        c = imaplib.IMAP4("127.0.0.1", 143, timeout=10)
        assert "LOGINDISABLED" in c.capabilities  # SecureLogin, as packaged
        c.starttls(ssl_context=ctx)
        c.logout()
        # The stats socket where forestgate ctl looks first.
        assert os.stat("/run/forestgate/stats.sock").st_uid == fg_uid
        with socket.socket(socket.AF_UNIX) as s:
            s.connect("/run/forestgate/stats.sock")
            s.sendall(b"show info\n")
            assert b"connections:" in s.recv(65536)
        proc.send_signal(signal.SIGHUP)
        assert ns.recv()[0].get("RELOADING") == "1"
        assert ns.recv()[0].get("READY") == "1"
        stop_installed(proc, ns)
        assert not os.path.exists("/run/forestgate/stats.sock")
    finally:
        if proc.poll() is None:
            proc.kill()
        ns.close()
        log.close()
    text = open(tmp_path / "log").read()
    assert "running as User forestgate" in text and "event=stopped" in text, text


def test_packaged_configuration_relays_logins(installed, tmp_path, dovecot):
    """The packaged file with only its ports and backend changed: logins go
    through to the test's Dovecot over STARTTLS and STLS."""
    imap_port, pop3_port = free_port(), free_port()
    text = open("/etc/forestgate/forestgate.ini").read()
    text = re.sub(r"^UnencryptedOrTLSBindings = 0\.0\.0\.0:143.*$",
                  f"UnencryptedOrTLSBindings = 127.0.0.1:{imap_port}", text, flags=re.M)
    text = re.sub(r"^UnencryptedOrTLSBindings = 0\.0\.0\.0:110.*$",
                  f"UnencryptedOrTLSBindings = 127.0.0.1:{pop3_port}", text, flags=re.M)
    text = re.sub(r"^SSLBindings = .*$", "SSLBindings =", text, flags=re.M)
    text = text.replace("ProxyTargetPort = 10143", f"ProxyTargetPort = {dovecot.imap_port}")
    text = text.replace("ProxyTargetPort = 10110", f"ProxyTargetPort = {dovecot.pop3_port}")
    text = text.replace("/run/forestgate/stats.sock", "/run/forestgate/test.sock")
    config = tmp_path / "forestgate.ini"
    config.write_text(text)
    ns = notify_socket()
    log = open(tmp_path / "log", "wb")
    proc = start_installed(str(config), ns, log)
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c = imaplib.IMAP4("127.0.0.1", imap_port, timeout=15)
        c.starttls(ssl_context=ctx)
        assert c.login("alice", PASSWORDS["alice"])[0] == "OK"
        assert c.select("INBOX")[0] == "OK"
        c.logout()
        p = poplib.POP3("127.0.0.1", pop3_port, timeout=15)
        p.stls(context=ctx)
        p.user("alice")
        assert p.pass_(PASSWORDS["alice"]).startswith(b"+OK")
        p.quit()
        stop_installed(proc, ns)
    finally:
        if proc.poll() is None:
            proc.kill()
        ns.close()
        log.close()
    assert "result=ok" in open(tmp_path / "log").read()

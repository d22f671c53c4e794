"""Running as a service: systemd's readiness messages (core/notify.c) and the
switch to an unprivileged User after binding (core/privdrop.c)."""

import glob
import imaplib
import os
import poplib
import pwd
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import PASSWORDS
from tests.lib.forestgate import binary


class NotifySocket:
    """What systemd listens on for a Type=notify service: a datagram socket,
    with the sender's credentials on each message."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if path.startswith("@"):
            self.sock.bind("\0" + path[1:])
        else:
            self.sock.bind(path)
        self.path = path

    def recv(self, timeout: float = 15.0) -> tuple[dict, int]:
        """One message as NAME=VALUE pairs, and the pid that sent it."""
        self.sock.settimeout(timeout)
        data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = 0
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        return dict(l.split("=", 1) for l in data.decode().splitlines()), pid

    def close(self):
        self.sock.close()


def accepts_at_once(port: int) -> bool:
    """A greeting on the first try: no retry that would hide an early READY."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            return s.recv(512).startswith((b"* OK", b"+OK"))
    except OSError:
        return False


def start_expecting_ready(fg, ns: NotifySocket) -> dict:
    """Starts forestgate in a thread and takes READY=1 the moment it comes:
    by then both protocols' ports must answer and the log say started."""
    t = threading.Thread(target=fg.start)
    t.start()
    try:
        msg, pid = ns.recv()
        ports_ok = accepts_at_once(fg.imap_port) and accepts_at_once(fg.pop3_port)
        started = " event=started " in fg.log_text()
    finally:
        t.join()
    assert msg.get("READY") == "1", msg
    assert pid == fg.proc.pid  # systemd's NotifyAccess=main takes only the main pid's
    assert ports_ok, "READY=1 came before the listeners answered"
    assert started, fg.log_text()
    return msg


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notify_ready_reload_stopping(make_fg, abstract):
    """READY, RELOADING/READY on SIGHUP and on the socket's reload, STOPPING
    on SIGTERM (path socket) or on a drain (abstract socket)."""
    fg = make_fg(start=False)
    path = f"@fg-notify-{os.getpid()}-{id(fg)}" if abstract else os.path.join(fg.workdir, "notify")
    ns = NotifySocket(path)
    fg.env["NOTIFY_SOCKET"] = path
    try:
        start_expecting_ready(fg, ns)

        fg.proc.send_signal(signal.SIGHUP)
        msg, _ = ns.recv()
        assert msg.get("RELOADING") == "1", msg
        # CLOCK_MONOTONIC, in microseconds: near this process's clock.
        now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert 0 < now_us - int(msg["MONOTONIC_USEC"]) < 60_000_000, msg
        msg, _ = ns.recv()
        assert msg.get("READY") == "1", msg
        assert accepts_at_once(fg.imap_port)

        # The stats socket's reload is SIGHUP's.
        assert "reloaded" in fg.stats("reload")["text"]
        assert ns.recv()[0].get("RELOADING") == "1"
        assert ns.recv()[0].get("READY") == "1"

        # Stopping: by signal, or by a drain (nothing to wait for here).
        if abstract:
            assert "draining" in fg.stats("drain 5")["text"]
        else:
            fg.proc.send_signal(signal.SIGTERM)
        msg, _ = ns.recv()
        assert msg.get("STOPPING") == "1", msg
        assert fg.proc.wait(20) == 0
        assert fg.stop() == 0
    finally:
        ns.close()


# ---- User: bind as root, then serve as an unprivileged user ----

def free_low_port() -> int:
    """A port below 1024 free on 127.0.0.1 (143 and 110 may be taken)."""
    for port in range(1023, 600, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise AssertionError("no free port below 1024")


def task_ids(pid: int) -> dict[str, tuple[list[int], list[int]]]:
    """Each thread's name, real/effective/saved/fs uids and gids."""
    out = {}
    for st in glob.glob(f"/proc/{pid}/task/*/status"):
        fields = {}
        with open(st) as f:
            for line in f:
                k, _, v = line.partition(":")
                fields[k] = v.split()
        tid = st.split("/")[4]
        out[f"{tid} {fields['Name'][0]}"] = ([int(x) for x in fields["Uid"]],
                                              [int(x) for x in fields["Gid"]])
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_user_binds_low_port_as_root_then_serves_as_nobody(make_fg):
    nobody = pwd.getpwnam("nobody")
    port = free_low_port()
    fg = make_fg(settings={"global": {"User": "nobody"},
                           "imap": {"UnencryptedOrTLSBindings": f"127.0.0.1:{port}"}},
                 start=False)
    fg.imap_port = port
    os.chown(fg.workdir, nobody.pw_uid, nobody.pw_gid)  # for the socket's unlink at exit
    fg.start()
    assert fg.events("privileges")[0]["msg"].startswith("running as User nobody")

    tasks = task_ids(fg.proc.pid)
    assert len(tasks) > 2  # the workers and the directory's threads, not only main
    want = ([nobody.pw_uid] * 4, [nobody.pw_gid] * 4)
    bad = {t: ids for t, ids in tasks.items() if ids != want}
    assert not bad, f"threads not switched to nobody: {bad}"
    with open(f"/proc/{fg.proc.pid}/status") as f:
        groups = next(l for l in f if l.startswith("Groups:")).split()[1:]
    assert "0" not in groups

    # The stats socket is the user's; the clients still get through.
    assert os.stat(fg.stats_path).st_uid == nobody.pw_uid
    assert fg.stats()["connections"] == 0
    settings = fg.stats("show settings")["text"]
    assert "User = nobody" in settings and "# Group = (not set)" in settings, settings
    c = imaplib.IMAP4("127.0.0.1", port, timeout=15)
    assert c.login("alice", PASSWORDS["alice"])[0] == "OK"
    assert c.select("INBOX")[0] == "OK"
    c.logout()
    p = poplib.POP3("127.0.0.1", fg.pop3_port, timeout=15)
    p.user("alice")
    assert p.pass_(PASSWORDS["alice"]).startswith(b"+OK")
    p.quit()
    # A thread started after the switch (io_uring's helpers) is nobody's too.
    bad = {t: ids for t, ids in task_ids(fg.proc.pid).items() if ids != want}
    assert not bad, f"threads not switched to nobody: {bad}"

    assert fg.stop() == 0
    assert not os.path.exists(fg.stats_path)  # unlinked by nobody at exit


def check(tmp_path, global_lines: str):
    path = tmp_path / "fg.ini"
    path.write_text("[global]\nWorkers = 1\n" + global_lines +
                    "[imap]\nUnencryptedOrTLSBindings = 127.0.0.1:1143\nLoginType = PlainTextLogin\n"
                    "[backend]\nDefaultServer = 127.0.0.1\n")
    r = subprocess.run([binary(), "-c", str(path), "--check-config"], capture_output=True,
                       text=True, timeout=30)
    return path, r


def test_bad_user_and_group_give_file_and_line(tmp_path):
    path, r = check(tmp_path, "User = no-such-user-fg\n")
    assert r.returncode == 1
    assert f"{path}:3: User no-such-user-fg: no such user" in r.stderr
    path, r = check(tmp_path, "User = nobody\nGroup = no-such-group-fg\n")
    assert r.returncode == 1
    assert f"{path}:4: Group no-such-group-fg: no such group" in r.stderr
    path, r = check(tmp_path, "Group = nogroup\n")
    assert r.returncode == 1 and f"{path}:3: Group needs User" in r.stderr
    path, r = check(tmp_path, "User = root\n")
    assert r.returncode == 1 and f"{path}:3: User root is root" in r.stderr
    path, r = check(tmp_path, "User = nobody\nGroup = nogroup\n")
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start as another user")
def test_user_set_but_started_unprivileged_as_someone_else_refuses(make_fg):
    """Started as nobody with User = daemon: no way to switch, so no serving."""
    fg = make_fg(settings={"global": {"User": "daemon"}}, start=False)
    os.chmod(fg.workdir, 0o777)
    with open(fg.config_path, "w") as f:
        f.write(fg.config_text())
    nobody = pwd.getpwnam("nobody")
    r = subprocess.run(["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                        "--clear-groups", binary(), "-c", fg.config_path],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r.stderr
    assert "User = daemon: only root can switch to it" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="starting as another user needs root")
def test_unprivileged_with_cap_net_bind_service_binds_low_port(make_fg):
    """The unit's way: started as the user, with CAP_NET_BIND_SERVICE as its
    one (ambient) capability; without it the same bind is refused."""
    nobody = pwd.getpwnam("nobody")
    port = free_low_port()
    fg = make_fg(settings={"imap": {"UnencryptedOrTLSBindings": f"127.0.0.1:{port}"}},
                 start=False)
    fg.imap_port = port
    os.chown(fg.workdir, nobody.pw_uid, nobody.pw_gid)
    as_nobody = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                 "--clear-groups"]
    plain = fg.command
    fg.command = lambda: as_nobody + ["--inh-caps=+net_bind_service",
                                      "--ambient-caps=+net_bind_service"] + plain()
    fg.start()
    with open(f"/proc/{fg.proc.pid}/status") as f:
        st = dict(l.split(":", 1) for l in f)
    assert st["Uid"].split() == [str(nobody.pw_uid)] * 4
    assert int(st["CapEff"], 16) == 1 << 10  # CAP_NET_BIND_SERVICE, nothing else
    c = imaplib.IMAP4("127.0.0.1", port, timeout=15)
    assert c.login("alice", PASSWORDS["alice"])[0] == "OK"
    c.logout()
    assert fg.stop() == 0

    # Without the capability, nobody cannot bind it.
    r = subprocess.run(as_nobody + [binary(), "-c", fg.config_path], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Permission denied" in r.stderr

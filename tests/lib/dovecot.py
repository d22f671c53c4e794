"""A private, throw-away Dovecot backend for integration tests and demos.

Starts a *real* Dovecot (``dovecot -F -c CONFFILE``) as a subprocess with
everything -- config, passwd files, base_dir (sockets, pid file), state_dir,
log files and the Maildirs -- inside one work folder, listening on
127.0.0.1 only.  Debian's system instance (/etc/dovecot, /run/dovecot,
/var/lib/dovecot) is neither used nor touched.

Standard library only; meant for /usr/bin/python3 (Debian 12, Python 3.11).

Usage::

    from tests.lib.dovecot import Dovecot
    with Dovecot("/tmp/x", {"alice": "secret"}, master_users={"master": "mpw"}) as dc:
        dc.deliver("alice", b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
        imaplib.IMAP4("127.0.0.1", dc.imap_port).login("alice", "secret")

Passwords
    Stored as ``{SSHA512}`` (salted SHA-512, computed in Python), so the
    passwd-file never sees the password itself: spaces, quotes,
    backslashes, ``: % { } $``, UTF-8, even non-UTF-8 bytes all work.
    ``str`` passwords are UTF-8 encoded, ``bytes`` are used as they are.
    Dovecot's auth itself rejects passwords containing NUL, 0x01, TAB, CR
    or LF ("password having illegal chars"); other control bytes are fine.
    (imaplib sends commands as ASCII: for a non-ASCII password set
    ``M.literal = pw_bytes`` and call ``M._simple_command("LOGIN", user)``,
    or use AUTHENTICATE PLAIN.)  Usernames are matched case-sensitively
    (``auth_username_format = %u``) and must not contain ``: * / % \\``,
    whitespace, control characters or NUL.

Master users
    ``master_users`` go into a separate ``master = yes`` passdb
    (``result_success = continue``, i.e. the target user must exist).  SASL
    PLAIN with authzid=<user>, authcid=<master>, password=<master password>
    logs in as <user>; so does LOGIN ``<user>*<master>`` (separator ``*``).

Client address forwarding
    ``login_trusted_networks`` = ``trusted_networks``, so IMAP
    ``ID ("x-originating-ip" ...)`` and POP3 ``XCLIENT ADDR=...`` sent from
    127.0.0.1 are honoured.  The login lines (see ``log_text()``) look like
    this (note the "Info: " level after the service name)::

        2026-01-01 12:00:00 imap-login: Info: Login: user=<alice>,
        auth_user=<master>, method=PLAIN, rip=127.0.0.5, rport=5555,
        lip=127.0.0.1, lport=143, real_rip=127.0.0.1, mpid=1234, secured,
        session=<abc123>

    (one line; auth_user is the SASL authcid, i.e. the master user for a
    master login).  The mail process then logs as
    ``imap(alice)<1234><abc123>: Info: Disconnected: Logged out ...``.
    Untrusted clients' ID fields are ignored; an untrusted POP3 XCLIENT
    is answered "+OK You are not from trusted IP - ignoring".

Auth failure slow-downs
    ``auth_failure_delay`` (seconds, default 0; Dovecot's own default is 2)
    delays each failed authentication.  Even with 0, Dovecot 2.3.19 sends
    failures from a queue flushed every 500 ms, so a failed login takes
    up to 0.5 s (the "nodelay" passdb field does not help: fields of a
    failed passdb lookup are dropped).  Separately, Dovecot 2.3 has an
    exponential per-client-IP "auth penalty" (2, 4, 8, 15 s after repeated
    failures, kept by anvil) that applies even to login_trusted_networks
    -- with forwarding, to the forwarded address.  It is switched off
    unless ``auth_penalty=True`` (``service anvil { unix_listener
    anvil-auth-penalty { mode = 0 } }``), because otherwise one
    wrong-password test slows every later login from 127.0.0.1.

Which uid mail runs as
    * as root: mail processes run as ``nobody:nogroup`` (Dovecot refuses
      uid 0), login processes as ``dovenull``, auth/stats/anvil as
      ``dovecot`` (both created by Debian's dovecot-core).  The homes
      (``WORKDIR/mail/<user>``) belong to nobody:nogroup; WORKDIR is made
      0755 and every folder above it must be world-searchable (``/tmp/...``
      is fine, ``/root/...`` is not -- start() says so).
    * as a normal user: everything runs as the current uid/gid
      (default_login_user = default_internal_user = current user, no
      chroot), which is Dovecot's documented "rootless" mode.

Line endings (deliver)
    deliver() stores the bytes exactly as given.  Dovecot sends a message
    in IMAP (FETCH BODY[]) and POP3 (RETR, before dot-stuffing) with every
    bare LF turned into CRLF; CRLF stays CRLF.  So deliver CRLF text to get
    byte-identical data back; for LF (or mixed) input, ``wire_bytes(msg)``
    gives what comes back.  POP3 additionally appends a CRLF before the
    terminating ``.`` if the message does not end with one.

Capacity
    Login services run in "high-performance" mode (service_count = 0,
    process_min_avail, large client_limit); imap/pop3 get
    ``process_limit`` processes with ``imap_client_limit`` sessions each, so
    the number of concurrent logged-in sessions per protocol is
    process_limit * imap_client_limit (e.g. 5,000 idle IMAP sessions need
    process_limit >= 5000 with the default imap_client_limit = 1, or
    imap_client_limit = 10 with process_limit >= 500).
    mail_max_userip_connections is effectively unlimited.  Measured on the
    2-core box: 5,000 idle IMAP sessions with imap_client_limit = 1 take
    ~22 s to log in and ~420 kB private memory per imap process (~590 kB
    per session system-wide); with imap_client_limit = 10 ~4 s and
    ~100 kB per session.  A login burst logs harmless warnings
    ("net_connect_unix(imap) succeeded only after retrying": Dovecot caps
    unix socket backlogs at 511).

Proxy mode
    ``proxy_to=(imap_port, pop3_port)`` makes the instance a pure proxy
    (as in Dovecot's "Proxying" wiki page): one static passdb
    ``proxy=y host=127.0.0.1 port=<imap_port or pop3_port> nopassword=y``
    (the port picked per protocol with ``%{if;%s;eq;imap;...}``), so every
    login is accepted by the proxy and checked by the backend with the
    password the client sent; ``auth_cache`` on; login processes
    ``service_count = 0``, ``client_limit = proxy_login_clients``,
    ``process_min_avail = proxy_login_procs``; no mail process is ever
    started.  ``users`` may be empty then.  ``info_log = False`` sends
    info-level lines (one per login and per disconnect) to /dev/null.

TLS
    ``tls=(cert_file, key_file)`` turns on ``ssl = yes``: STARTTLS and STLS
    on the plain ports, implicit TLS on ``imaps_port`` and ``pop3s_port``.

PROXY protocol
    ``haproxy=True`` adds listeners that expect a PROXY protocol header
    (``haproxy = yes``) from ``haproxy_trusted_networks`` (the same networks
    as ``trusted_networks``): ``haproxy_imap_port`` and ``haproxy_pop3_port``,
    and with ``tls`` also ``haproxy_imaps_port`` and ``haproxy_pop3s_port``
    (implicit TLS after the header).  The login line's ``rip=`` is then the
    header's source address.

Lifetime
    stop() (also __exit__ and an atexit hook) sends SIGTERM to the master,
    waits, then SIGKILLs the whole process group; kill() SIGKILLs the group
    at once (a crash).  With fixed ports (``imap_port``, ``pop3_port``) a
    stopped or killed instance starts again where its clients expect it.
    If the Python process itself is SIGKILLed, Dovecot keeps running: its
    pid is in BASE_DIR/master.pid (normally WORKDIR/run; a short
    /tmp/fgdc-* folder when WORKDIR is too long for 108-byte UNIX socket
    paths).
"""

from __future__ import annotations

import atexit
import base64
import grp
import hashlib
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from tests.lib import logfile

__all__ = ["Dovecot", "DovecotError", "free_port", "wire_bytes"]

DOVECOT_BIN = (shutil.which("dovecot", path="/usr/sbin:/usr/bin:/sbin:/bin")
               or "/usr/sbin/dovecot")

# Longest socket path Dovecot creates below base_dir is about
# "token-login/imap-urlauth" / "login/ipc-proxy"; sun_path is 108 bytes.
_MAX_BASE_DIR_LEN = 70
_SAFE_PATH_RE = re.compile(r"^[A-Za-z0-9._/+-]+$")
_BAD_USER_RE = re.compile(r"[:*/%\\\s\x00-\x1f\x7f]")
_FD_LIMIT_CAP = 19000           # stay below the 20000 open-files limit

_live: "set[Dovecot]" = set()     # running instances, stopped at exit
_instance_counter = itertools.count(1)


class DovecotError(RuntimeError):
    """Dovecot could not be configured, started or stopped."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wire_bytes(message: bytes) -> bytes:
    """What Dovecot returns for a message stored as ``message``: every bare
    LF becomes CRLF (IMAP FETCH BODY[] and POP3 RETR after un-dot-stuffing)."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", message)


def _ssha512(password: bytes) -> str:
    salt = os.urandom(16)
    digest = hashlib.sha512(password + salt).digest()
    return "{SSHA512}" + base64.b64encode(digest + salt).decode("ascii")


def _as_bytes(password) -> bytes:
    if isinstance(password, bytes):
        return password
    return str(password).encode("utf-8")


def _check_user(name: str) -> None:
    if not isinstance(name, str) or not name or _BAD_USER_RE.search(name):
        raise ValueError(f"unsupported user name for the test Dovecot: {name!r}")
    if name.startswith("."):
        raise ValueError(f"user name must not start with '.': {name!r}")


class Dovecot:
    """One private Dovecot instance (see the module docstring)."""

    def __init__(self, workdir: str, users: dict[str, str],
                 master_users: dict[str, str] | None = None,
                 imap_port: int | None = None, pop3_port: int | None = None,
                 trusted_networks: str = "127.0.0.0/8 ::1",
                 auth_failure_delay: int = 0,
                 imap_client_limit: int = 1, process_limit: int = 2000,
                 auth_penalty: bool = False,
                 proxy_to: tuple[int, int] | None = None,
                 proxy_login_procs: int = 2, proxy_login_clients: int = 10000,
                 proxy_host: str = "127.0.0.1", info_log: bool = True,
                 tls: tuple[str, str] | None = None, listen_host: str = "127.0.0.1",
                 imaps_port: int | None = None, pop3s_port: int | None = None,
                 mail_procs_min: int = 0, haproxy: bool = False,
                 login_procs: int | None = None, ssl_extra: str = ""):
        self.workdir = os.path.abspath(workdir)
        if not _SAFE_PATH_RE.match(self.workdir):
            raise ValueError("workdir may only contain [A-Za-z0-9._/+-] "
                             f"(it ends up in Dovecot config values): {self.workdir!r}")
        self.users: dict[str, str | bytes] = {}
        self.master_users: dict[str, str | bytes] = {}
        for name, pw in users.items():
            _check_user(name)
            self.users[name] = pw
        for name, pw in (master_users or {}).items():
            _check_user(name)
            self.master_users[name] = pw
        self._fixed_imap = imap_port
        self._fixed_pop3 = pop3_port
        self.imap_port, self.pop3_port = self._choose_ports()
        # tls=(cert, key): ssl = yes, STARTTLS/STLS on the plain ports, and
        # implicit TLS on imaps_port / pop3s_port.
        self.tls = tls
        # Another loopback address (127.0.0.2 ...) beside the default: two
        # instances on the same ports stand for two mailbox servers.
        self.listen_host = listen_host
        # Copies of one database on two addresses share these ports too.
        self.imaps_port = (imaps_port or free_port()) if tls else 0
        self.pop3s_port = (pop3s_port or free_port()) if tls else 0
        # haproxy=True: listeners behind a PROXY protocol header.
        self.haproxy = bool(haproxy)
        self.haproxy_imap_port = free_port() if haproxy else 0
        self.haproxy_pop3_port = free_port() if haproxy else 0
        self.haproxy_imaps_port = free_port() if haproxy and tls else 0
        self.haproxy_pop3s_port = free_port() if haproxy and tls else 0
        # imap/pop3 processes started before the first login (process_min_avail):
        # with imap_client_limit > 1, a burst of logins needs no spawning.
        self.mail_procs_min = int(mail_procs_min)
        self.trusted_networks = trusted_networks
        self.auth_failure_delay = int(auth_failure_delay)
        if imap_client_limit < 1 or process_limit < 1:
            raise ValueError("imap_client_limit and process_limit must be >= 1")
        self.imap_client_limit = int(imap_client_limit)
        self.process_limit = int(process_limit)
        self.auth_penalty = bool(auth_penalty)
        if proxy_to is not None:
            if len(proxy_to) != 2 or proxy_to[0] == proxy_to[1]:
                raise ValueError("proxy_to must be (imap_port, pop3_port), two different ports")
            proxy_to = (int(proxy_to[0]), int(proxy_to[1]))
        self.proxy_to = proxy_to
        self.proxy_login_procs = int(proxy_login_procs)
        self.proxy_login_clients = int(proxy_login_clients)
        self.proxy_host = proxy_host
        self.info_log = bool(info_log)
        # login_procs: login processes per service (default 4). One makes
        # TLS resumption certain: each login process has its own ticket keys
        # and session cache. ssl_extra: more ssl_* lines (tls only).
        self.login_procs = login_procs
        self.ssl_extra = ssl_extra

        self.conf_path = os.path.join(self.workdir, "dovecot.conf")
        self.passwd_path = os.path.join(self.workdir, "passwd")
        self.master_passwd_path = os.path.join(self.workdir, "passwd.masters")
        self.log_path = os.path.join(self.workdir, "dovecot.log")
        self.stderr_path = os.path.join(self.workdir, "dovecot.stderr")
        self.state_dir = os.path.join(self.workdir, "state")
        self.mail_root = os.path.join(self.workdir, "mail")
        self.base_dir = os.path.join(self.workdir, "run")
        self._own_base_dir = None       # short /tmp dir if workdir is too long

        self._proc: subprocess.Popen | None = None
        self._stderr_file = None
        self._lock = threading.Lock()
        self._seq = 0
        self._instance_no = next(_instance_counter)
        self._ids = self._pick_ids()

    # ------------------------------------------------------------------ ids
    def _pick_ids(self) -> dict:
        if os.geteuid() == 0:
            try:
                login = pwd.getpwnam("dovenull")
                internal = pwd.getpwnam("dovecot")
            except KeyError as e:
                raise DovecotError("users 'dovecot' and 'dovenull' are needed "
                                   "(apt-get install dovecot-core)") from e
            nobody = pwd.getpwnam("nobody")
            try:
                mail_gid = grp.getgrnam("nogroup").gr_gid
            except KeyError:
                mail_gid = nobody.pw_gid
            return dict(root=True, mail_uid=nobody.pw_uid, mail_gid=mail_gid,
                        login_user=login.pw_name, internal_user=internal.pw_name,
                        internal_group=grp.getgrgid(internal.pw_gid).gr_name,
                        internal_gid=internal.pw_gid)
        uid, gid = os.getuid(), os.getgid()
        try:
            me = pwd.getpwuid(uid).pw_name
            mygroup = grp.getgrgid(gid).gr_name
        except KeyError as e:
            raise DovecotError(f"uid {uid} / gid {gid} need names in passwd/group: "
                               "Dovecot looks its service users up by name") from e
        return dict(root=False, mail_uid=uid, mail_gid=gid, login_user=me,
                    internal_user=me, internal_group=mygroup, internal_gid=gid)

    @property
    def mail_uid(self) -> int:
        return self._ids["mail_uid"]

    @property
    def mail_gid(self) -> int:
        return self._ids["mail_gid"]

    def _choose_ports(self) -> tuple[int, int]:
        imap = self._fixed_imap
        pop3 = self._fixed_pop3
        while imap is None or pop3 is None or imap == pop3:
            if self._fixed_imap is None:
                imap = free_port()
            if self._fixed_pop3 is None:
                pop3 = free_port()
            if imap == pop3 and self._fixed_imap is not None and self._fixed_pop3 is not None:
                raise ValueError("imap_port and pop3_port must differ")
        return imap, pop3

    # --------------------------------------------------------------- files
    def home(self, user: str) -> str:
        return os.path.join(self.mail_root, user)

    def maildir(self, user: str) -> str:
        return os.path.join(self.home(user), "Maildir")

    def _chown(self, path: str) -> None:
        if self._ids["root"]:
            os.chown(path, self.mail_uid, self.mail_gid)

    def _mkdir_owned(self, path: str, mode: int = 0o700) -> None:
        """mkdir -p; folders below mail_root are created owned by the mail uid."""
        if os.path.isdir(path):
            return
        parent = os.path.dirname(path)
        if parent != path:
            self._mkdir_owned(parent, mode)
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            return
        if os.path.commonpath([path, self.mail_root]) == self.mail_root:
            self._chown(path)

    def _ensure_maildir(self, user: str) -> str:
        md = self.maildir(user)
        for sub in ("cur", "new", "tmp"):
            self._mkdir_owned(os.path.join(md, sub))
        return md

    def _write_file(self, path: str, text: str, mode: int, gid: int | None = None) -> None:
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        if gid is not None and self._ids["root"]:
            os.chown(tmp, 0, gid)
        os.replace(tmp, path)      # new inode: passwd-file notices the change

    def _write_passwd_files(self) -> None:
        # user:password:uid:gid:gecos:home:shell:extra-fields.  Each write
        # gets an mtime (whole seconds) different from the previous one, so
        # that Dovecot's "mtime or size changed" check always notices it.
        for path, users in ((self.passwd_path, self.users),
                            (self.master_passwd_path, self.master_users)):
            lines = [f"{u}:{_ssha512(_as_bytes(p))}::::::\n" for u, p in users.items()]
            try:
                old_mtime = int(os.stat(path).st_mtime)
            except FileNotFoundError:
                old_mtime = 0
            self._write_file(path, "".join(lines), 0o640, self._ids["internal_gid"])
            mtime = max(int(time.time()), old_mtime + 1)
            os.utime(path, (mtime, mtime))

    def add_user(self, user: str, password: str | bytes, master: bool = False) -> None:
        """Add a (master) user or change a password; works while running.

        Dovecot re-reads a passwd-file when its mtime or size changed, but
        checks at most once per second; so while running this writes the
        file with a fresh mtime and then waits (< 1.1 s) for the next
        second, after which the change is in effect."""
        _check_user(user)
        (self.master_users if master else self.users)[user] = password
        if not os.path.isfile(self.passwd_path):
            return          # not prepared yet: start() writes everything
        self._write_passwd_files()
        if not master:
            self._ensure_maildir(user)
        if self.running:
            time.sleep(1.02 - time.time() % 1.0)

    def remove_user(self, user: str) -> None:
        """Remove a user; works while running, as add_user does (its Maildir
        stays).  Its logins are refused from then on, master-user logins
        included: the master passdb needs the target user in the other."""
        del self.users[user]
        if not os.path.isfile(self.passwd_path):
            return
        self._write_passwd_files()
        if self.running:
            time.sleep(1.02 - time.time() % 1.0)

    def _check_ancestors(self) -> None:
        """As root the mail uid (nobody) and auth (dovecot) must reach WORKDIR."""
        if not self._ids["root"]:
            return
        path = os.path.dirname(self.workdir)
        while True:
            st = os.stat(path)
            if not st.st_mode & 0o001:
                raise DovecotError(
                    f"{path} is not searchable by others (mode {st.st_mode & 0o777:o}); "
                    f"the Dovecot mail uid (nobody) cannot reach {self.workdir}. "
                    "Use a work folder under /tmp.")
            if path == "/":
                return
            path = os.path.dirname(path)

    def _prepare(self) -> None:
        os.makedirs(self.workdir, exist_ok=True)
        if self._ids["root"]:
            os.chmod(self.workdir, 0o755)
        self._check_ancestors()
        os.makedirs(self.state_dir, exist_ok=True)
        os.chmod(self.state_dir, 0o750)
        if len(self.base_dir) > _MAX_BASE_DIR_LEN:
            # UNIX socket paths are limited to 108 bytes.
            if self._own_base_dir is None:
                self._own_base_dir = tempfile.mkdtemp(prefix="fgdc-", dir="/tmp")
                os.chmod(self._own_base_dir, 0o755)
            self.base_dir = self._own_base_dir
        os.makedirs(self.base_dir, exist_ok=True)
        os.chmod(self.base_dir, 0o755)
        self._mkdir_owned(self.mail_root, 0o755)
        if not os.path.isdir(self.mail_root) or os.stat(self.mail_root).st_uid != self.mail_uid:
            self._chown(self.mail_root)
        for user in self.users:
            self._ensure_maildir(user)
        self._write_passwd_files()
        self._write_file(self.conf_path, self.config_text(), 0o644)

    # -------------------------------------------------------------- config
    def _limits(self) -> dict:
        p = self.process_limit
        login_procs = 4          # per login service, each up to login_clients
        login_clients = 4000     # pre-login connections per login process
        # stats, anvil, log and auth get one connection per imap/pop3/login
        # process: their client_limit (= default_client_limit) must cover
        # 2 * process_limit plus the login processes.  Capped below the
        # 20000 open-files limit.
        client_limit = min(_FD_LIMIT_CAP, max(1000, 2 * p + 4 * login_procs + 200))
        if self.proxy_to is not None:
            # A proxied session holds two descriptors in its login process.
            login_procs = self.proxy_login_procs
            login_clients = self.proxy_login_clients
            client_limit = _FD_LIMIT_CAP
        if self.login_procs:
            login_procs = int(self.login_procs)
        return dict(login_procs=login_procs, login_clients=login_clients,
                    default_client_limit=client_limit, default_process_limit=100)

    def _ssl_text(self) -> str:
        if not self.tls:
            return "ssl = no"
        cert, key = self.tls
        return (f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}\nssl_min_protocol = TLSv1.2\n"
                + self.ssl_extra)

    def _passdb_text(self) -> str:
        if self.proxy_to is None:
            return f"""\
passdb {{
  driver = passwd-file
  args = scheme=SSHA512 username_format=%u {self.master_passwd_path}
  master = yes
  result_success = continue
}}
passdb {{
  driver = passwd-file
  args = scheme=SSHA512 username_format=%u {self.passwd_path}
}}
"""
        imap, pop3 = self.proxy_to
        # %s = the service (imap or pop3): one passdb, the port per protocol.
        return f"""\
auth_cache_size = 10M
auth_cache_ttl = 1 hours
passdb {{
  driver = static
  args = proxy=y host={self.proxy_host} port=%{{if;%s;eq;imap;{imap};{pop3}}} nopassword=y
}}
"""

    def _haproxy_listeners(self, proto: str) -> str:
        """The PROXY protocol listeners of one login service (haproxy=True)."""
        if not self.haproxy:
            return ""
        ports = {"imap": (self.haproxy_imap_port, self.haproxy_imaps_port),
                 "pop3": (self.haproxy_pop3_port, self.haproxy_pop3s_port)}[proto]
        out = ""
        for port, ssl in zip(ports, ("no", "yes")):
            if port:
                out += (f"  inet_listener {proto}_haproxy_{'tls' if ssl == 'yes' else 'plain'} {{\n"
                        f"    address = {self.listen_host}\n    port = {port}\n"
                        f"    ssl = {ssl}\n    haproxy = yes\n  }}\n")
        return out

    def config_text(self) -> str:
        ids = self._ids
        lim = self._limits()
        svc_count = 1 if self.imap_client_limit == 1 else 0
        # root: Dovecot's default chroots; not root: no chroot possible.
        nochroot = "" if ids["root"] else "  chroot =\n"
        uid, gid = ids["mail_uid"], ids["mail_gid"]
        big = 1000000
        # mode = 0 disables a unix listener; auth then silently runs without
        # the anvil-based auth penalty (ENOENT on connect is ignored).
        penalty = ("" if self.auth_penalty else
                   "  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n")
        return f"""\
# Generated by tests/lib/dovecot.py -- private test instance, do not edit.
protocols = imap pop3
listen = {self.listen_host}
base_dir = {self.base_dir}
state_dir = {self.state_dir}
instance_name = fgtest-{os.getpid()}-{self._instance_no}
shutdown_clients = yes

log_path = {self.log_path}
info_log_path = {self.log_path if self.info_log else "/dev/null"}
debug_log_path = {self.log_path}
log_timestamp = "%Y-%m-%d %H:%M:%S "
verbose_proctitle = yes
auth_verbose = yes
login_log_format_elements = user=<%u> auth_user=<%{{auth_user}}> method=%m rip=%r rport=%{{rport}} lip=%l lport=%{{lport}} real_rip=%{{real_rip}} mpid=%e %c session=<%{{session}}>

{self._ssl_text()}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = {self.auth_failure_delay} secs
auth_username_format = %u
auth_master_user_separator = *
login_trusted_networks = {self.trusted_networks}
{"haproxy_trusted_networks = " + self.trusted_networks if self.haproxy else ""}

default_login_user = {ids["login_user"]}
default_internal_user = {ids["internal_user"]}
default_internal_group = {ids["internal_group"]}
first_valid_uid = {min(uid, 500)}
last_valid_uid = 0
first_valid_gid = {min(gid, 1)}
last_valid_gid = 0

mail_location = maildir:~/Maildir
mail_fsync = never
mail_max_userip_connections = {big}

default_process_limit = {lim["default_process_limit"]}
default_client_limit = {lim["default_client_limit"]}
default_vsz_limit = {"1G" if self.proxy_to else "256M"}

{self._passdb_text()}userdb {{
  driver = static
  args = uid={uid} gid={gid} home={self.mail_root}/%u
}}

service imap-login {{
  inet_listener imap {{
    address = {self.listen_host}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = {self.listen_host}
    port = {self.imaps_port}
  }}
{self._haproxy_listeners("imap")}  service_count = 0
  process_min_avail = {lim["login_procs"]}
  process_limit = {lim["login_procs"] * 2}
  client_limit = {lim["login_clients"]}
  vsz_limit = 1G
{nochroot}}}
service pop3-login {{
  inet_listener pop3 {{
    address = {self.listen_host}
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    address = {self.listen_host}
    port = {self.pop3s_port}
  }}
{self._haproxy_listeners("pop3")}  service_count = 0
  process_min_avail = {lim["login_procs"]}
  process_limit = {lim["login_procs"] * 2}
  client_limit = {lim["login_clients"]}
  vsz_limit = 1G
{nochroot}}}
service imap {{
  process_limit = {self.process_limit}
  client_limit = {self.imap_client_limit}
  service_count = {svc_count}
  process_min_avail = {self.mail_procs_min}
}}
service pop3 {{
  process_limit = {self.process_limit}
  client_limit = {self.imap_client_limit}
  service_count = {svc_count}
  process_min_avail = {self.mail_procs_min}
}}
service imap-urlauth-login {{
{nochroot}}}
service anvil {{
{nochroot}{penalty}}}
"""

    # ----------------------------------------------------------- lifecycle
    def start(self, timeout: float = 15.0) -> None:
        """Write the config, start ``dovecot -F`` and wait until both ports
        greet.  Raises DovecotError (with the log tail) on failure."""
        if self._proc is not None:
            raise DovecotError("already started")
        attempts = 3 if self._fixed_imap is None and self._fixed_pop3 is None else 1
        for attempt in range(attempts):
            if attempt:
                self.imap_port, self.pop3_port = self._choose_ports()
            self._prepare()
            log_mark = self._log_size()
            self._launch()
            err = self._wait_ready(timeout)
            if err is None:
                _live.add(self)
                return
            new_log = self._read(self.log_path, log_mark) + self._read(self.stderr_path)
            self.stop()
            if "Address already in use" in new_log and attempt + 1 < attempts:
                continue
            raise DovecotError(f"dovecot did not start: {err}\n"
                               f"--- log tail ({self.log_path}) ---\n"
                               f"{self._tail(self.log_text(), 60)}")

    def _launch(self) -> None:
        self._stderr_file = open(self.stderr_path, "ab")
        self._proc = subprocess.Popen(
            [DOVECOT_BIN, "-F", "-c", self.conf_path],
            stdin=subprocess.DEVNULL, stdout=self._stderr_file, stderr=self._stderr_file,
            cwd=self.workdir, start_new_session=True, close_fds=True)

    def _wait_ready(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        pending = {self.imap_port: b"* OK", self.pop3_port: b"+OK"}
        last = "timeout"
        while time.monotonic() < deadline:
            rc = self._proc.poll()
            if rc is not None:
                return f"dovecot exited with status {rc}"
            for port, want in list(pending.items()):
                try:
                    with socket.create_connection((self.listen_host, port), timeout=1.0) as s:
                        s.settimeout(max(0.2, min(2.0, deadline - time.monotonic())))
                        greeting = s.recv(512)
                    if greeting.startswith(want):
                        del pending[port]
                    else:
                        last = f"unexpected greeting on port {port}: {greeting!r}"
                except OSError as e:
                    last = f"port {port}: {e}"
            if not pending:
                return None
            time.sleep(0.05)
        return f"not ready after {timeout}s ({last})"

    def pids(self) -> list[int]:
        """PIDs of this instance's processes (master and children)."""
        if self._proc is None:
            return []
        return _pids_in_group(self._proc.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, SIGKILL the process group after ``timeout``.
        Idempotent; the work folder is kept."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            pgid = proc.pid
            try:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout)
                    except subprocess.TimeoutExpired:
                        _killpg(pgid)
                        proc.wait(5)
                # Children (imap, login, ...) exit on their own once the
                # master is gone; give them a moment, then kill stragglers.
                deadline = time.monotonic() + 5
                while _pids_in_group(pgid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if _pids_in_group(pgid):
                    _killpg(pgid)
                    deadline = time.monotonic() + 5
                    while _pids_in_group(pgid) and time.monotonic() < deadline:
                        time.sleep(0.05)
            finally:
                self._proc = None
                if self._stderr_file is not None:
                    self._stderr_file.close()
                    self._stderr_file = None
                _live.discard(self)
                if self._own_base_dir is not None:
                    shutil.rmtree(self._own_base_dir, ignore_errors=True)
                    self._own_base_dir = None
                    self.base_dir = os.path.join(self.workdir, "run")

    def kill(self) -> None:
        """SIGKILL to every process of the instance at once, as a crash: no
        process says goodbye to its clients. start() works again after it."""
        with self._lock:
            if self._proc is not None:
                _killpg(self._proc.pid)
                self._proc.wait(10)
        self.stop()  # reaps what is left and releases the folder

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> "Dovecot":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----------------------------------------------------------------- logs
    _read = staticmethod(logfile.read_text)

    def _log_size(self) -> int:
        return logfile.size(self.log_path)

    @staticmethod
    def _tail(text: str, n: int) -> str:
        return "\n".join(text.splitlines()[-n:])

    def log_text(self) -> str:
        """Everything Dovecot logged (info, warnings, errors; one file),
        followed by anything it wrote to stdout/stderr."""
        text = self._read(self.log_path)
        extra = self._read(self.stderr_path)
        if extra.strip():
            text += "\n--- dovecot stdout/stderr ---\n" + extra
        return text

    def wait_for_log(self, pattern: str, timeout: float = 5.0) -> re.Match:
        """Poll the log until regex ``pattern`` matches (the log process
        writes asynchronously); raise AssertionError with the tail if not."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            m = rx.search(text)
            if m:
                return m
            if time.monotonic() >= deadline:
                raise AssertionError(f"log never matched {pattern!r}; tail:\n"
                                     + self._tail(text, 30))
            time.sleep(0.05)

    def warnings(self) -> list[str]:
        """Log lines at Warning/Error/Fatal/Panic level."""
        return [l for l in self._read(self.log_path).splitlines()
                if re.search(r"\b(Warning|Error|Fatal|Panic): ", l)]

    # ----------------------------------------------------------------- mail
    def deliver(self, user: str, message: bytes) -> str:
        """Put ``message`` into ``user``'s Maildir/new as one file, owned by
        the mail uid; works before and after start().  Returns its path.

        The bytes are stored unchanged.  IMAP FETCH BODY[] and POP3 RETR
        (after un-dot-stuffing) return them with bare LF turned into CRLF,
        so CRLF input comes back byte-identical; ``wire_bytes(message)`` is
        what comes back in general.  New messages are appended: FETCH n /
        RETR n follow delivery order (for a fresh mailbox, 1 = first)."""
        if user not in self.users:
            raise KeyError(f"unknown user {user!r}")
        if not isinstance(message, (bytes, bytearray)):
            raise TypeError("message must be bytes")
        message = bytes(message)
        os.makedirs(self.workdir, exist_ok=True)
        if not os.path.isdir(self.mail_root):
            self._mkdir_owned(self.mail_root, 0o755)
        md = self._ensure_maildir(user)
        with self._lock:
            self._seq += 1
            seq = self._seq
        now = time.time()
        host = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"
        # <secs>.M<usecs>P<pid>Q<seq>.<host>,S=<physical size>
        base = f"{int(now)}.M{int((now % 1) * 1e6)}P{os.getpid()}Q{seq}.{host},S={len(message)}"
        tmp = os.path.join(md, "tmp", base)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(message)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self._ids["root"]:
                os.fchown(fd, self.mail_uid, self.mail_gid)
        finally:
            os.close(fd)
        # Same mtime as the name, and a new message must not look like it
        # arrived in the future.
        os.utime(tmp, (now, now))
        dest = os.path.join(md, "new", base)
        os.rename(tmp, dest)
        return dest

    wire_bytes = staticmethod(wire_bytes)


def _pids_in_group(pgid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces/parens
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == pgid:
            out.append(int(name))
    return out


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@atexit.register
def _stop_all() -> None:
    for dc in list(_live):
        try:
            dc.stop()
        except Exception:
            pass

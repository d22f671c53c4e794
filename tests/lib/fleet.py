"""A fleet of forestgate instances behind a real HAProxy, sharing one Redis.

    clients (127.0.0.X) --> haproxy (mode tcp, roundrobin, send-proxy-v2)
                              --> fg1, fg2 ... (PROXY bindings, TrustedProxies
                                  127.0.0.1: haproxy's own address)
                                    --> the backends (Dovecot, the directory)
                              fg1, fg2 ... --> one private redis-server

The caller makes each instance (make_instance(name) -> an unstarted
Forestgate: in front of the shared Dovecot, or with a directory); the fleet
turns every one of its bindings into a PROXY binding trusted from
127.0.0.1, gives every one the same shared throttle store when the binary
knows it (``[throttle] ThrottleStore = redis://127.0.0.1:PORT`` and
``ThrottleKeyFile``, a file of random bytes written once for the fleet),
starts them, and starts haproxy in front once all are up, waiting until
every health check has passed. With ``tls`` (a certificate folder and its
names), each instance also gets an SSL binding per protocol, and haproxy an
``imaps``/``pop3s`` service that passes TLS through.

haproxy's servers are named as the instances (fg1, fg2 ...), its backends
as the services (imap, pop3, imaps, pop3s): ``fleet.haproxy.
set_server_state("imap", "fg1", "drain")``.
"""

from __future__ import annotations

import os
import time

from tests.lib.forestgate import Forestgate, binary, free_port, knows
from tests.lib.haproxy import Haproxy, Service
from tests.lib.redis import Redis

# haproxy connects to the instances from here (loopback's own address),
# clients come from the rest of 127.0.0.0/8.
BALANCER = "127.0.0.1"
GREETING = {"imap": "* OK", "pop3": "+OK"}


class Fleet:
    def __init__(self, workdir: str, make_instance, n: int = 2, redis: bool = True,
                 tls: tuple[str, list[str]] | None = None, server_options: str = "",
                 inter_ms: int = 300, key_bytes: int = 32):
        """make_instance(name): an unstarted Forestgate; tls: (the
        CertificateDirectory, the X509CertificateName list); server_options:
        more words on every haproxy server line (proxy-v2-options ...)."""
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.redis = Redis(os.path.join(workdir, "redis")) if redis else None
        self.key_file = os.path.join(workdir, "throttle.key")
        self.tls = tls
        self.instances: list[Forestgate] = []
        for i in range(1, n + 1):
            fg = make_instance(f"fg{i}")
            fg.name = f"fg{i}"
            self._behind_the_balancer(fg)
            self.instances.append(fg)
        if self.redis:
            fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(key_bytes))
            self.shared_store = knows(self.instances[0].bin or binary(), b"ThrottleStore")
            if self.shared_store:
                for fg in self.instances:
                    fg.sections.setdefault("throttle", {}).update(
                        {"ThrottleStore": self.redis.url, "ThrottleKeyFile": self.key_file})
        else:
            self.shared_store = False
        services = []
        for proto in ("imap", "pop3"):
            services.append(Service(proto, [(fg.name, fg.ports[proto]) for fg in self.instances],
                                    GREETING[proto], server_options=server_options))
            if tls:
                services.append(Service(proto + "s", [(fg.name, fg.ports[proto + "s"])
                                                      for fg in self.instances],
                                        GREETING[proto], check_ssl=True,
                                        server_options=server_options))
        self.haproxy = Haproxy(os.path.join(workdir, "haproxy"), services, inter_ms=inter_ms)
        self.ports = self.haproxy.ports

    def _behind_the_balancer(self, fg: Forestgate) -> None:
        fg.ports = {"imap": fg.imap_port, "pop3": fg.pop3_port}
        if self.tls:
            certdir, names = self.tls
            fg.sections["global"]["CertificateDirectory"] = certdir
            for proto in ("imap", "pop3"):
                fg.ports[proto + "s"] = free_port()
                fg.sections[proto].update({"SSLBindings": f"127.0.0.1:{fg.ports[proto + 's']}",
                                           "X509CertificateName": ", ".join(names)})
        for proto in ("imap", "pop3"):
            bindings = [f"127.0.0.1:{fg.ports[proto]}"]
            if self.tls:
                bindings.append(f"127.0.0.1:{fg.ports[proto + 's']}")
            fg.sections[proto].update({"ProxyProtocolBindings": ", ".join(bindings),
                                       "TrustedProxies": BALANCER})

    def __getitem__(self, name: str) -> Forestgate:
        return next(fg for fg in self.instances if fg.name == name)

    def start(self) -> "Fleet":
        if self.redis:
            self.redis.start()
        for fg in self.instances:
            fg.start()
        self.haproxy.start()
        return self

    def stop(self) -> list[str]:
        """Stops haproxy, the instances, Redis; the instances' exit codes
        other than 0 (with their log's tail), for the caller to assert."""
        problems = []
        self.haproxy.stop()
        for fg in self.instances:
            try:
                rc = fg.stop()
            except AssertionError as e:  # hung, or a sanitizer report
                rc = str(e)
            if rc != 0:
                tail = "\n".join(fg.log_text().splitlines()[-30:])
                problems.append(f"{fg.name} ({fg.workdir}): {rc}\n{tail}")
        if self.redis:
            self.redis.stop()
        return problems

    def logins_ok(self) -> dict[str, int]:
        """show info's logins_ok_total, by instance (0 for one stopped)."""
        return {fg.name: fg.stats()["logins_ok_total"] if fg.proc else 0
                for fg in self.instances}

    def login_event(self, client: str, timeout: float = 5.0) -> tuple[Forestgate, dict]:
        """The instance that logged client's ("ip:port") logon, and the line
        (written just after the client had its answer: awaited)."""
        deadline = time.monotonic() + timeout
        while True:
            for fg in self.instances:
                for ev in fg.events("login"):
                    if ev.get("client") == client:
                        return fg, ev
            if time.monotonic() > deadline:
                raise AssertionError(f"no instance logged a logon of {client}")
            time.sleep(0.05)


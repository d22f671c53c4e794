"""A private, throw-away OpenLDAP slapd that looks like an Active Directory
forest, for integration tests of forestgate's directory code.

One slapd process serves several naming contexts of one forest, as a domain
controller does: one back-mdb database per naming context (each domain, and
the configuration NC), *not* glued.  A subtree search based on
``DC=uclabor,DC=de`` therefore does not return the entries of the child domain
``DC=child,DC=uclabor,DC=de``, just as separate AD naming contexts; like AD
it returns search continuation references to the child domain and to the
configuration NC instead (``referrals=False`` turns them off).

Everything -- slapd.conf, the rootDSE file, the mdb databases, the log --
lives in one work folder; slapd listens on 127.0.0.1 only.  Debian's system
instance (/etc/ldap/slapd.d, /var/lib/ldap) is neither used nor touched.
Standard library plus the OpenLDAP command-line tools (slapd, ldap-utils);
meant for /usr/bin/python3.

Usage::

    from tests.ldap import fixtures
    from tests.lib.slapd import Slapd

    A = fixtures.setup_a()
    with Slapd.for_forest("/tmp/x/a", A) as dc:
        tuser = A.accounts["tuser"]
        dc.bind(tuser.dn, tuser.password)            # -> 0 (success)
        dc.search(A.base_dn, "(sAMAccountName=tuser)", ["objectSid"],
                  bind_dn=A.bind_dn, password=A.bind_password)
        dc.set_enabled(A.accounts["disuser"].dn, True)   # ldapmodify as admin

    # or generic:
    Slapd(workdir, ["DC=example,DC=org"], ldif=text, bind_dn=..., bind_password=...)

AD behaviour that the instance reproduces
    * anonymous bind works, anonymous search of the directory finds nothing
      (only the rootDSE and the subschema entry are readable anonymously);
    * every authenticated identity (the bind account, any user) reads every
      attribute, including objectSid; nobody reads userPassword;
    * a simple bind with a DN and an *empty* password is an unauthenticated
      (anonymous) bind and succeeds (``allow bind_anon_dn``), as in AD;
    * a bind as a disabled account (userAccountControl bit 0x2) fails with 49
      even with the right password (an ACL takes away ``auth`` on
      userPassword for such entries), and succeeds again once the account is
      enabled at run time;
    * the rootDSE carries defaultNamingContext, configurationNamingContext,
      rootDomainNamingContext, schemaNamingContext, dnsHostName,
      supportedCapabilities (1.2.840.113556.1.4.800) and isGlobalCatalogReady;
    * sizelimit 1000 (AD's MaxPageSize).

Differences from AD (see also tests/ldap/README.md)
    * returned DNs have lower-case attribute types (``cn=Test User,ou=Staff,
      dc=uclabor,dc=de``); compare DNs case-insensitively, as AD does;
    * bind failures carry no ``data 52e``-style diagnostic text;
    * ``(objectCategory=person)`` (the short form) and ``(objectSid=S-1-...)``
      (the string form) do not work; use objectClass and escaped bytes.

Global catalog
    ``global_catalog=True`` builds one database with the null suffix holding
    every naming context of the forest (placeholder entries such as ``DC=de``
    are added), so a subtree search based on ``""`` or on the forest root
    returns the entries of every domain, as a search on AD's port 3268 does.
    rootDSE isGlobalCatalogReady is TRUE then.  Use a second Slapd object
    for it (same forest, another port).

Failover
    Construct two Slapd objects with the same forest (or the same suffixes and
    LDIF) and different work folders: two processes with the same data on two
    ports.  ``pause()`` (SIGSTOP) makes one hang with its port still
    accepting connections; ``kill()`` makes it vanish; ``start()`` after
    ``stop()``/``kill()`` restarts it on the same port with the data kept.

Password policy (a lockout threshold)
    ``ppolicy=dict(max_failure=N, lockout_duration=S)`` loads slapd's ppolicy
    overlay on the database of the first suffix (the forest root domain) with
    a default policy entry there: N wrong passwords lock the account for S
    seconds (0: until the admin unlocks it), as AD's lockoutThreshold and
    lockoutDuration do; ``failure_count_interval`` (seconds, default 0:
    never) is AD's "reset account lockout counter after".  A locked account's
    bind fails with 49 even with the right password; ``lockout_state(dn)``
    reads pwdFailureTime and pwdAccountLockedTime, ``unlock(dn)`` clears them.

Logs
    slapd runs in the foreground with ``-d stats`` (log_level), so every
    connection, BIND, SRCH (base, scope, filter, attrs) and RESULT is written
    to WORKDIR/slapd.log: ``log_text()``, ``wait_for_log(regex)``.
"""

from __future__ import annotations

import atexit
import base64
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

from tests.lib import logfile

__all__ = ["Slapd", "SlapdError", "LdapError", "LdapTimeout", "Entry", "free_port",
           "ldif_entry", "parse_ldif", "split_dn", "dn_key", "escape_filter_bytes",
           "escape_filter_value", "AD_SCHEMA"]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AD_SCHEMA = os.path.join(ROOT, "tests", "ldap", "ad.schema")
SYSTEM_SCHEMAS = ["/etc/ldap/schema/core.schema", "/etc/ldap/schema/cosine.schema",
                  "/etc/ldap/schema/inetorgperson.schema"]
_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
SLAPD_BIN = shutil.which("slapd", path=_PATH) or "/usr/sbin/slapd"
SLAPADD_BIN = shutil.which("slapadd", path=_PATH) or "/usr/sbin/slapadd"
MODULE_PATH = "/usr/lib/ldap"


def _tool_path(tool: str) -> str:
    return shutil.which(tool) or shutil.which(tool, path=_PATH) or tool

# Attributes whose values are binary: search() returns them as bytes.
BINARY_ATTRS = {"objectsid", "objectguid", "msexchmasteraccountsid", "userpassword",
                "tokengroups", "msexchmailboxsecuritydescriptor"}

_live: "set[Slapd]" = set()
_instances = itertools.count(1)
_SAFE_PATH_RE = re.compile(r"^[A-Za-z0-9._/+-]+$")


class SlapdError(RuntimeError):
    """slapd could not be configured, loaded, started or stopped."""


class LdapError(RuntimeError):
    """An ldap-utils command failed; ``rc`` is its LDAP result code
    (49 invalid credentials, 32 no such object, 255 cannot connect...)."""

    def __init__(self, rc: int, cmd: str, stderr: str):
        super().__init__(f"{cmd} failed with {rc}: {stderr.strip()}")
        self.rc = rc
        self.stderr = stderr


class LdapTimeout(LdapError):
    """No answer within the timeout (e.g. while the server is paused)."""

    def __init__(self, cmd: str, timeout: float):
        super().__init__(-1, cmd, f"no answer within {timeout}s")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ DNs
def split_dn(dn: str) -> list[str]:
    """The RDNs of ``dn`` (RFC 4514 string), honouring backslash escapes:
    ``split_dn("CN=M\\\\, H,DC=x")`` -> ``["CN=M\\\\, H", "DC=x"]``."""
    out, cur, i = [], [], 0
    while i < len(dn):
        c = dn[i]
        if c == "\\" and i + 1 < len(dn):
            cur.append(dn[i:i + 2])
            i += 2
            continue
        if c in ",;":
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    if cur or out:
        out.append("".join(cur).strip())
    return [r for r in out if r != ""] if dn.strip() else []


def _rdn_key(rdn: str) -> str:
    typ, _, val = rdn.partition("=")
    return typ.strip().lower() + "=" + val.strip().lower()


def dn_key(dn: str) -> tuple:
    """A comparable, case-insensitive form of a DN (for AD-style names with
    CN/OU/DC; good enough for the test data, not a full RFC 4517 match)."""
    return tuple(_rdn_key(r) for r in split_dn(dn))


def dn_equal(a: str, b: str) -> bool:
    return dn_key(a) == dn_key(b)


def _is_under(dn: str, suffix: str) -> bool:
    d, s = dn_key(dn), dn_key(suffix)
    return len(s) == 0 or (len(d) >= len(s) and d[len(d) - len(s):] == s)


def _dns_of(dn: str) -> str:
    """DNS name from the DC= components of a DN."""
    return ".".join(r.split("=", 1)[1] for r in split_dn(dn) if r.lower().startswith("dc="))


# -------------------------------------------------------------- filters
def escape_filter_bytes(value: bytes) -> str:
    """Every byte as \\XX: the form AD clients use for objectSid in filters."""
    return "".join(f"\\{b:02x}" for b in value)


def escape_filter_value(value: str) -> str:
    """RFC 4515 escaping of a string value (NUL ( ) * \\)."""
    out = []
    for ch in value:
        if ch in "\\*()\x00":
            out.append(f"\\{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


# ----------------------------------------------------------------- LDIF
def _needs_b64(v: bytes) -> bool:
    if not v:
        return False
    if v[0] in b" :<" or v[-1:] == b" ":
        return True
    return any(b == 0 or b == 10 or b == 13 or b > 127 for b in v)


def ldif_entry(dn: str, attrs) -> str:
    """One LDIF record.  ``attrs`` is a dict or a list of (name, value) pairs;
    a value may be str, bytes, int or a list of those.  Values that are not
    SAFE-STRINGs (non-ASCII, binary, leading space...) are base64-encoded."""
    lines = []

    def put(name, value):
        if isinstance(value, bool):
            value = "TRUE" if value else "FALSE"
        if isinstance(value, int):
            value = str(value)
        raw = value if isinstance(value, (bytes, bytearray)) else str(value).encode("utf-8")
        if _needs_b64(raw):
            lines.append(f"{name}:: {base64.b64encode(raw).decode('ascii')}")
        else:
            lines.append(f"{name}: {raw.decode('ascii')}")

    put("dn", dn)
    items = attrs.items() if isinstance(attrs, dict) else attrs
    for name, value in items:
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            for v in value:
                put(name, v)
        else:
            put(name, value)
    return "\n".join(lines) + "\n"


class Entry(dict):
    """A search result: ``entry.dn`` plus attribute -> list of values, with
    case-insensitive attribute names.  Values are ``str`` (UTF-8), except
    for the binary attributes (objectSid, objectGUID, msExchMasterAccountSid)
    and values that are not UTF-8, which are ``bytes``."""

    def __init__(self, dn: str):
        super().__init__()
        self.dn = dn

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def __contains__(self, key):
        return super().__contains__(key.lower())

    def get(self, key, default=None):
        return super().get(key.lower(), default)

    def add(self, key, value):
        self.setdefault(key.lower(), []).append(value)

    def first(self, key, default=None):
        v = self.get(key)
        return v[0] if v else default

    def __repr__(self):
        return f"Entry({self.dn!r}, {dict(self)!r})"


def parse_ldif(text: str) -> tuple[list[Entry], list[str]]:
    """Parses ``ldapsearch -LLL -o ldif-wrap=no`` output (or any unwrapped
    LDIF content records): (entries, search continuation references)."""
    entries: list[Entry] = []
    refs: list[str] = []
    cur: Entry | None = None
    # Undo LDIF line folding (a line starting with one space continues).
    lines: list[str] = []
    for line in text.split("\n"):
        if line.startswith(" ") and lines:
            lines[-1] += line[1:]
        else:
            lines.append(line)
    for line in lines:
        if not line.strip():
            cur = None
            continue
        if line.startswith("#"):
            m = re.match(r"#\s*ref:?\s*(\S+)", line)
            if m:
                refs.append(m.group(1))
            continue
        if line.startswith("version:") and cur is None and not entries:
            continue
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        if rest.startswith(":"):
            raw = base64.b64decode(rest[1:].strip())
        else:
            raw = rest[1:].encode("utf-8") if rest.startswith(" ") else rest.encode("utf-8")
        lname = name.strip().lower()
        if lname == "dn" and cur is None:
            cur = Entry(raw.decode("utf-8", "replace"))
            entries.append(cur)
            continue
        if cur is None:
            continue
        if lname.split(";")[0] in BINARY_ATTRS:
            cur.add(name.strip(), raw)
        else:
            try:
                cur.add(name.strip(), raw.decode("utf-8"))
            except UnicodeDecodeError:
                cur.add(name.strip(), raw)
    return entries, refs


# ------------------------------------------------------------ the server
class Slapd:
    """One private slapd process (see the module docstring).

    workdir       folder for everything; created; kept after stop().
    suffixes      naming contexts, one mdb database each (order free: slapd
                  needs nested suffixes listed child first, this is done here).
    port          fixed port, or None for a free one.
    ldif          LDIF text (or list of texts) loaded with slapadd before the
                  first start; each record goes to the database of its
                  longest matching suffix.  Parents before children.
    bind_dn/bind_password
                  the lookup (service) account; only remembered here, the
                  entry must be in the LDIF.
    admin_dn/admin_password
                  rootdn of the database that holds admin_dn (default: the
                  first suffix) and, by an ACL, manager of all databases;
                  used by add/modify/delete/replace/set_enabled.
    root_dse      dict of extra rootDSE attributes (AD names), e.g.
                  defaultNamingContext.  isGlobalCatalogReady is set here.
    referrals     add AD-like continuation references for nested suffixes.
    global_catalog one null-suffix database with everything (see above).
    idle_timeout  slapd idletimeout in seconds (0 = none; AD uses 900).
    log_level     slapd -d level ("stats": one line per operation).
    tls           (certificate file, key file), PEM: StartTLS on the ldap://
                  port, and implicit TLS on a second port (``ldaps_port``,
                  ``ldaps_uri``), as AD's 389 and 636.  The certificate must
                  name 127.0.0.1 (subjectAltName IP) for clients that check it.
    ppolicy       dict(max_failure=N, lockout_duration=S[, failure_count_interval=I,
                  dn=DN]): a lockout policy (see "Password policy" above).
    """

    def __init__(self, workdir: str, suffixes: list[str], port: int | None = None,
                 ldif: str | list[str] | None = None,
                 bind_dn: str | None = None, bind_password: str | None = None,
                 admin_dn: str | None = None, admin_password: str = "fixture-admin-pw",
                 root_dse: dict | None = None, referrals: bool = True,
                 global_catalog: bool = False, idle_timeout: int = 0,
                 log_level: str = "stats", extra_schemas: list[str] | None = None,
                 tls: tuple[str, str] | None = None, ppolicy: dict | None = None):
        self.workdir = os.path.abspath(workdir)
        if not _SAFE_PATH_RE.match(self.workdir):
            raise ValueError(f"workdir may only contain [A-Za-z0-9._/+-]: {self.workdir!r}")
        if not suffixes:
            raise ValueError("at least one suffix is needed")
        self.suffixes = list(suffixes)
        self._fixed_port = port
        self.port = port or free_port()
        self.tls = tuple(tls) if tls else None
        self.ldaps_port = free_port() if tls else 0
        self.host = "127.0.0.1"
        if isinstance(ldif, (list, tuple)):
            ldif = "\n".join(ldif)
        self.ldif = ldif or ""
        self.bind_dn = bind_dn
        self.bind_password = bind_password
        self.admin_dn = admin_dn or f"CN=Manager,{self.suffixes[0]}"
        self.admin_password = admin_password
        self.root_dse = dict(root_dse or {})
        self.referrals = bool(referrals) and not global_catalog
        self.global_catalog = bool(global_catalog)
        self.idle_timeout = int(idle_timeout)
        self.log_level = log_level
        self.schemas = SYSTEM_SCHEMAS + [AD_SCHEMA] + list(extra_schemas or [])
        self.ppolicy = self._ppolicy_conf(ppolicy) if ppolicy else None

        self.conf_path = os.path.join(self.workdir, "slapd.conf")
        self.rootdse_path = os.path.join(self.workdir, "rootdse.ldif")
        self.log_path = os.path.join(self.workdir, "slapd.log")
        self.pid_path = os.path.join(self.workdir, "slapd.pid")
        self.db_root = os.path.join(self.workdir, "db")
        self.tmp_dir = os.path.join(self.workdir, "tmp")

        self._proc: subprocess.Popen | None = None
        self._log_file = None
        self._loaded = False
        self._paused = False
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._no = next(_instances)
        self.forest = None            # set by for_forest()
        self.host_name = self.root_dse.get("dnsHostName")
        self._databases = self._plan_databases()

    # ------------------------------------------------------------ factories
    @classmethod
    def for_forest(cls, workdir: str, forest, port: int | None = None,
                   host_name: str | None = None, global_catalog: bool = False,
                   **kw) -> "Slapd":
        """A DC (or, with global_catalog, a GC) of a tests.ldap.fixtures
        Forest: its suffixes, LDIF, rootDSE and bind account."""
        host_name = host_name or f"dc1.{forest.dns}"
        s = cls(workdir, forest.suffixes, port=port, ldif=forest.ldif(),
                bind_dn=forest.bind_dn, bind_password=forest.bind_password,
                admin_dn=forest.admin_dn, root_dse=forest.root_dse(host_name),
                global_catalog=global_catalog, **kw)
        s.forest = forest
        s.host_name = host_name
        return s

    # --------------------------------------------------------------- config
    def _plan_databases(self) -> list[dict]:
        if self.global_catalog:
            return [dict(suffix="", dir=os.path.join(self.db_root, "gc"))]
        # Most specific first: slapd refuses a suffix below one it already has.
        order = sorted(self.suffixes, key=lambda s: -len(dn_key(s)))
        return [dict(suffix=s, dir=os.path.join(self.db_root, f"nc{i}"))
                for i, s in enumerate(order)]

    def _db_for(self, dn: str) -> dict:
        best = None
        for db in self._databases:
            if _is_under(dn, db["suffix"]):
                if best is None or len(dn_key(db["suffix"])) > len(dn_key(best["suffix"])):
                    best = db
        if best is None:
            raise SlapdError(f"no naming context holds {dn!r} (suffixes: {self.suffixes})")
        return best

    @staticmethod
    def _q(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    def _global_text(self) -> str:
        admin = self._q(self.admin_dn)
        lines = ["# Generated by tests/lib/slapd.py -- private test instance, do not edit."]
        lines += [f"include {self._q(s)}" for s in self.schemas]
        lines += [
            f"modulepath {MODULE_PATH}",
            "moduleload back_mdb",
            *(["moduleload ppolicy"] if self.ppolicy else []),
            f"pidfile {self._q(self.pid_path)}",
            f"argsfile {self._q(os.path.join(self.workdir, 'slapd.args'))}",
            f"rootDSE {self._q(self.rootdse_path)}",
            # AD: DN + empty password = unauthenticated bind, which succeeds.
            "allow bind_anon_dn",
            "sizelimit 1000",
            "timelimit 120",
        ]
        if self.idle_timeout:
            lines.append(f"idletimeout {self.idle_timeout}")
        if self.tls:
            lines += [f"TLSCertificateFile {self._q(self.tls[0])}",
                      f"TLSCertificateKeyFile {self._q(self.tls[1])}"]
        lines += [
            "",
            "# AD-like access: rootDSE and schema for everyone, the directory",
            "# for authenticated identities, passwords for nobody.",
            'access to dn.base="" by * read',
            'access to dn.base="cn=Subschema" by * read',
            "# A disabled account (userAccountControl bit 2) cannot bind.",
            "access to attrs=userPassword filter=(userAccountControl:1.2.840.113556.1.4.803:=2)",
            f"    by dn.exact={admin} manage",
            "    by * none",
            "access to attrs=userPassword",
            f"    by dn.exact={admin} manage",
            "    by anonymous auth",
            "    by * none",
            "access to *",
            f"    by dn.exact={admin} manage",
            "    by users read",
            "    by * none",
            "",
        ]
        return "\n".join(lines) + "\n"

    def _db_text(self, db: dict) -> str:
        lines = [
            "database mdb",
            f"suffix {self._q(db['suffix'])}",
            f"directory {self._q(db['dir'])}",
            "maxsize 268435456",
            "dbnosync",
            "index objectClass eq",
            "index sAMAccountName,userPrincipalName,mailNickname,proxyAddresses eq",
            "index objectSid,msExchMasterAccountSid eq",
        ]
        try:
            holds_admin = self._db_for(self.admin_dn) is db
        except SlapdError:
            holds_admin = False
        if holds_admin:
            lines += [f"rootdn {self._q(self.admin_dn)}", f"rootpw {self._q(self.admin_password)}"]
        if self.ppolicy and db is self._ppolicy_db():
            if not holds_admin:
                # ppolicy writes pwdFailureTime and pwdAccountLockedTime as
                # the database's rootdn: one that nobody can bind as (no
                # rootpw, no entry), else the lockout is refused (rc=50).
                lines.append(f"rootdn {self._q('CN=ppolicy-internal,' + db['suffix'])}")
            # Last: the lines after "overlay" configure the overlay.
            lines += ["overlay ppolicy", f"ppolicy_default {self._q(self.ppolicy['dn'])}"]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------ password policy
    def _ppolicy_conf(self, pp: dict) -> dict:
        unknown = set(pp) - {"max_failure", "lockout_duration", "failure_count_interval", "dn"}
        if unknown or "max_failure" not in pp:
            raise ValueError(f"ppolicy: max_failure required; unknown keys {sorted(unknown)}")
        suffix = self.suffixes[0]
        return {"max_failure": int(pp["max_failure"]),
                "lockout_duration": int(pp.get("lockout_duration", 0)),
                "failure_count_interval": int(pp.get("failure_count_interval", 0)),
                "dn": pp.get("dn") or f"CN=Default Lockout Policy,{suffix}"}

    def _ppolicy_db(self) -> dict | None:
        return self._db_for(self.ppolicy["dn"]) if self.ppolicy else None

    def _ppolicy_record(self) -> str:
        """The policy entry: pwdPolicy is auxiliary, device (core.schema)
        its structural class."""
        pp = self.ppolicy
        return ldif_entry(pp["dn"], [
            ("objectClass", ["top", "device", "pwdPolicy"]),
            ("cn", split_dn(pp["dn"])[0].split("=", 1)[1]),
            ("pwdAttribute", "userPassword"),
            ("pwdLockout", True),
            ("pwdMaxFailure", pp["max_failure"]),
            ("pwdLockoutDuration", pp["lockout_duration"]),
            ("pwdFailureCountInterval", pp["failure_count_interval"]),
        ])

    def lockout_state(self, dn: str) -> tuple[int, str | None]:
        """(the number of pwdFailureTime values, pwdAccountLockedTime or
        None), read as the admin: ppolicy's operational attributes."""
        e = self.search(dn, "(objectClass=*)", ["pwdFailureTime", "pwdAccountLockedTime"],
                        scope="base", bind_dn=self.admin_dn, password=self.admin_password)
        return len(e[0].get("pwdFailureTime", [])), e[0].first("pwdAccountLockedTime")

    def unlock(self, dn: str) -> None:
        """Deletes pwdAccountLockedTime (ppolicy then drops pwdFailureTime too)."""
        failures, locked = self.lockout_state(dn)
        if locked is not None:
            self.modify(ldif_entry(dn, [("changetype", "modify"),
                                        ("delete", "pwdAccountLockedTime")]) + "-\n")

    def config_text(self) -> str:
        return self._global_text() + "\n".join(self._db_text(db) for db in self._databases)

    def _load_conf_text(self, db: dict) -> str:
        # slapadd sees only this one database, so a continuation reference
        # (e.g. DC=child,... in the parent's database) is not refused as
        # "belongs to database #N".
        return self._global_text() + self._db_text(db)

    def _root_dse_text(self) -> str:
        attrs = [("objectClass", "fgRootDSE")]
        dse = dict(self.root_dse)
        dse["isGlobalCatalogReady"] = self.global_catalog
        for k, v in dse.items():
            attrs.append((k, v))
        return ldif_entry("", attrs)

    # ------------------------------------------------------------- loading
    def _records(self) -> list[tuple[str, str]]:
        """(dn, record text) for every record of self.ldif."""
        out = []
        for block in re.split(r"\n\s*\n", self.ldif.replace("\r\n", "\n")):
            block = "\n".join(l for l in block.split("\n") if not l.startswith("#")).strip("\n")
            if not block.strip() or block.startswith("version:"):
                continue
            first = block.split("\n", 1)[0]
            if first.startswith("dn::"):
                dn = base64.b64decode(first[4:].strip()).decode("utf-8")
            elif first.startswith("dn:"):
                dn = first[3:].strip()
            else:
                raise SlapdError(f"LDIF record without dn: {first!r}")
            out.append((dn, block + "\n"))
        return out

    def _referral_records(self) -> dict[str, list[str]]:
        """AD-like continuation references: for each suffix below another
        one, an entry in the parent's database pointing at it."""
        out: dict[str, list[str]] = {}
        if not self.referrals:
            return out
        for child in self.suffixes:
            parents = [p for p in self.suffixes if p != child and _is_under(child, p)]
            if not parents:
                continue
            parent = max(parents, key=lambda p: len(dn_key(p)))
            rdn = split_dn(child)[0]
            typ, _, val = rdn.partition("=")
            host = _dns_of(child) if typ.strip().lower() == "dc" else _dns_of(parent)
            rec = ldif_entry(child, [("objectClass", ["referral", "extensibleObject"]),
                                     (typ.strip(), val.strip().replace("\\", "")),
                                     ("ref", f"ldap://{host}/{child}")])
            out.setdefault(parent, []).append(rec)
        return out

    def _gc_placeholders(self, dns: list[str]) -> list[str]:
        have = {dn_key(d) for d in dns}
        need = []
        for d in dns:
            rdns = split_dn(d)
            for i in range(len(rdns) - 1, 0, -1):
                anc = ",".join(rdns[i:])
                if dn_key(anc) not in have:
                    have.add(dn_key(anc))
                    typ, _, val = rdns[i].partition("=")
                    if typ.strip().lower() == "dc":
                        need.append(ldif_entry(anc, [("objectClass", ["top", "domainDNS"]),
                                                     ("dc", val.strip())]))
                    else:
                        need.append(ldif_entry(anc, [("objectClass", ["top", "container"]),
                                                     ("cn", val.strip())]))
        return need

    def _load(self) -> None:
        records = self._records()
        per_db: dict[str, list[str]] = {db["suffix"]: [] for db in self._databases}
        if self.global_catalog:
            recs = sorted(records, key=lambda r: len(dn_key(r[0])))
            per_db[""] = (self._gc_placeholders([dn for dn, _ in recs])
                          + [text for _, text in recs])
            per_db[""].sort(key=lambda t: len(dn_key(self._dn_of(t))))
        else:
            for dn, text in records:
                per_db[self._db_for(dn)["suffix"]].append(text)
            for parent, recs in self._referral_records().items():
                per_db[self._db_for(parent)["suffix"]].extend(recs)
            if self.ppolicy:
                per_db[self._ppolicy_db()["suffix"]].append(self._ppolicy_record())
        for db in self._databases:
            shutil.rmtree(db["dir"], ignore_errors=True)
            os.makedirs(db["dir"], mode=0o700)
            texts = per_db[db["suffix"]]
            if not texts:
                continue
            ldif_path = os.path.join(self.workdir, f"load-{os.path.basename(db['dir'])}.ldif")
            conf_path = os.path.join(self.workdir, f"load-{os.path.basename(db['dir'])}.conf")
            self._write(ldif_path, "\n".join(texts))
            self._write(conf_path, self._load_conf_text(db))
            r = subprocess.run([SLAPADD_BIN, "-f", conf_path, "-b", db["suffix"], "-q",
                                "-l", ldif_path], capture_output=True, text=True)
            if r.returncode != 0:
                raise SlapdError(f"slapadd into {db['suffix']!r} failed ({r.returncode}):\n"
                                 f"{r.stderr}{r.stdout}")
        self._loaded = True

    @staticmethod
    def _dn_of(record: str) -> str:
        first = record.split("\n", 1)[0]
        if first.startswith("dn::"):
            return base64.b64decode(first[4:].strip()).decode("utf-8")
        return first[3:].strip()

    @staticmethod
    def _write(path: str, text: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    def _prepare(self) -> None:
        os.makedirs(self.workdir, exist_ok=True)
        os.makedirs(self.tmp_dir, exist_ok=True)
        self._write(self.conf_path, self.config_text())
        self._write(self.rootdse_path, self._root_dse_text())
        if not self._loaded:
            self._load()

    # ------------------------------------------------------------ lifecycle
    @property
    def uri(self) -> str:
        return f"ldap://{self.host}:{self.port}"

    @property
    def ldaps_uri(self) -> str:
        """Implicit TLS (only with ``tls``)."""
        if not self.tls:
            raise SlapdError("no TLS: construct with tls=(cert, key)")
        return f"ldaps://{self.host}:{self.ldaps_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused

    def start(self, timeout: float = 15.0) -> "Slapd":
        """Write the config, slapadd the LDIF (first start only), start slapd
        and wait until it answers a rootDSE search.  Raises SlapdError with
        the log tail on failure."""
        if self._proc is not None:
            raise SlapdError("already started")
        self._prepare()
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            if attempt:
                self.port = free_port()
                if self.tls:
                    self.ldaps_port = free_port()
            mark = self._log_size()
            self._launch()
            err = self._wait_ready(timeout)
            if err is None:
                _live.add(self)
                return self
            new_log = self._read(self.log_path, mark)
            self.stop()
            if "Address already in use" in new_log and attempt + 1 < attempts:
                continue
            raise SlapdError(f"slapd did not start: {err}\n--- log tail ({self.log_path}) ---\n"
                             + "\n".join(new_log.splitlines()[-40:]))
        return self

    def _launch(self) -> None:
        self._log_file = open(self.log_path, "ab")
        listen = f"ldap://{self.host}:{self.port}/"
        if self.tls:
            listen += f" ldaps://{self.host}:{self.ldaps_port}/"
        self._proc = subprocess.Popen(
            [SLAPD_BIN, "-f", self.conf_path, "-h", listen, "-d", str(self.log_level)],
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=self._log_file,
            cwd=self.workdir, start_new_session=True, close_fds=True)
        self._paused = False

    def _wait_ready(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        last = "timeout"
        while time.monotonic() < deadline:
            rc = self._proc.poll()
            if rc is not None:
                return f"slapd exited with status {rc}"
            try:
                if self.answers(timeout=1.0):
                    return None
                last = "no answer"
            except OSError as e:
                last = str(e)
            time.sleep(0.02)
        return f"not ready after {timeout}s ({last})"

    # A searchRequest for the rootDSE: base "", scope base, (objectClass=*).
    _PROBE = bytes.fromhex("3025020101"            # LDAPMessage, messageID 1
                           "6320" "0400" "0a0100" "0a0100" "020100" "020100" "010100"
                           "870b") + b"objectClass" + b"\x30\x00"

    def answers(self, timeout: float = 1.0) -> bool:
        """True if slapd answers an anonymous rootDSE search within
        ``timeout`` seconds (False while paused or down)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as s:
                s.settimeout(timeout)
                s.sendall(self._PROBE)
                data = s.recv(4096)
                return data[:1] == b"\x30"
        except OSError:
            return False

    def pause(self, timeout: float = 5.0) -> None:
        """SIGSTOP: slapd hangs; the kernel still accepts TCP connections.
        Returns once every slapd thread is stopped: a stop takes effect
        asynchronously, and a thread that is still running could answer a
        request sent right after this returns."""
        if not self.running:
            raise SlapdError("not running")
        os.kill(self._proc.pid, signal.SIGSTOP)
        self._paused = True
        deadline = time.monotonic() + timeout
        while not self._all_stopped():
            if time.monotonic() > deadline:
                raise SlapdError(f"slapd did not stop within {timeout}s of SIGSTOP")
            time.sleep(0.005)

    def _all_stopped(self) -> bool:
        """True when every thread of slapd is in the stopped state (T or t)."""
        task_dir = f"/proc/{self._proc.pid}/task"
        try:
            tids = os.listdir(task_dir)
        except OSError:
            return False
        for tid in tids:
            try:
                with open(f"{task_dir}/{tid}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue  # a thread that ended
            if stat[stat.rfind(b")") + 2:][:1] not in (b"T", b"t"):
                return False
        return True

    def resume(self) -> None:
        """SIGCONT after pause()."""
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGCONT)
        self._paused = False

    def kill(self) -> None:
        """SIGKILL (a crashed DC).  start() brings it back, same port, same data."""
        self._terminate(signal.SIGKILL)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, SIGKILL after ``timeout``.  Idempotent; the work
        folder and the data are kept (start() again reuses them)."""
        self._terminate(signal.SIGTERM, timeout)

    def restart(self) -> "Slapd":
        self.stop()
        return self.start()

    def _terminate(self, sig: int, timeout: float = 10.0) -> None:
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            try:
                if proc.poll() is None:
                    if self._paused:
                        os.kill(proc.pid, signal.SIGCONT)
                    proc.send_signal(sig)
                    try:
                        proc.wait(timeout)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(5)
            finally:
                self._proc = None
                self._paused = False
                if self._log_file is not None:
                    self._log_file.close()
                    self._log_file = None
                _live.discard(self)

    def __enter__(self) -> "Slapd":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----------------------------------------------------------------- logs
    _read = staticmethod(logfile.read_text)

    def _log_size(self) -> int:
        return logfile.size(self.log_path)

    def log_text(self) -> str:
        """Everything slapd wrote (``-d stats``: ACCEPT, BIND, SRCH, RESULT...)."""
        return self._read(self.log_path)

    def log_mark(self) -> int:
        """Current log size; pass to log_since() to see only newer lines."""
        return self._log_size()

    def log_since(self, mark: int) -> str:
        return self._read(self.log_path, mark)

    # One line per request: a successful bind also logs a second BIND line
    # (mech=SIMPLE ...), a search a second SRCH line (attr=...); neither matches.
    _REQUEST_RE = re.compile(r' conn=(\d+) op=\d+ (?:BIND dn="([^"]*)" method=\d+|'
                             r'SRCH base="[^"]*" scope=\d+ deref=\d+ filter="([^"]*)")$', re.M)

    def requests_since(self, mark: int, with_admin: bool = False) -> list[tuple[int, str, str]]:
        """The BIND and SRCH requests slapd logged since mark, in order, one
        entry per request: (conn, "BIND", dn as slapd logs it) or (conn,
        "SRCH", filter).  Requests on connections that bound as admin_dn
        (this object's own modify(), replace(), set_enabled()...) are left
        out unless with_admin, so what remains is what the clients under
        test asked for."""
        out = [(int(m.group(1)), "BIND" if m.group(2) is not None else "SRCH",
                m.group(2) if m.group(2) is not None else m.group(3))
               for m in self._REQUEST_RE.finditer(self.log_since(mark))]
        if with_admin:
            return out
        admin = {conn for conn, kind, dn in out if kind == "BIND" and dn_equal(dn, self.admin_dn)}
        return [r for r in out if r[0] not in admin]

    def wait_for_log(self, pattern: str, timeout: float = 5.0, since: int = 0) -> re.Match:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self._read(self.log_path, since)
            m = rx.search(text)
            if m:
                return m
            if time.monotonic() >= deadline:
                raise AssertionError(f"slapd log never matched {pattern!r}; tail:\n"
                                     + "\n".join(text.splitlines()[-30:]))
            time.sleep(0.05)

    # ------------------------------------------------------- ldap-utils calls
    def _pwfile(self, password) -> str:
        os.makedirs(self.tmp_dir, exist_ok=True)
        path = os.path.join(self.tmp_dir, f"pw-{os.getpid()}-{next(self._seq)}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(password if isinstance(password, bytes) else str(password).encode("utf-8"))
        return path

    def run_tool(self, tool: str, args: list[str], bind_dn: str | None = None,
                 password=None, input: str | bytes | None = None,
                 timeout: float = 10.0, check: bool = True) -> subprocess.CompletedProcess:
        """Run an ldap-utils tool (ldapsearch, ldapwhoami, ldapmodify, ...)
        against this instance with a simple bind (anonymous if bind_dn is
        None).  The password goes through a file (-y), so any bytes work.
        Raises LdapTimeout after ``timeout`` s, LdapError on rc != 0 when
        ``check``."""
        cmd = [_tool_path(tool), "-x", "-H", self.uri, "-o", f"nettimeout={max(1, int(timeout))}"]
        pw = None
        if bind_dn is not None:
            pw = self._pwfile(password if password is not None else "")
            cmd += ["-D", bind_dn, "-y", pw]
        cmd += list(args)
        if isinstance(input, str):
            input = input.encode("utf-8")
        try:
            r = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LdapTimeout(tool, timeout) from None
        finally:
            if pw:
                os.unlink(pw)
        r.stdout = r.stdout.decode("utf-8", "replace")
        r.stderr = r.stderr.decode("utf-8", "replace")
        if check and r.returncode != 0:
            raise LdapError(r.returncode, tool, r.stderr)
        return r

    def search(self, base: str, filter: str = "(objectClass=*)", attrs: list[str] | None = None,
               scope: str = "sub", bind_dn: str | None = None, password=None,
               as_bind_account: bool = True, timeout: float = 10.0,
               with_refs: bool = False, size_limit: int | None = None):
        """ldapsearch; returns a list of Entry (or (entries, refs) with
        with_refs).  Binds as the bind account unless bind_dn is given or
        as_bind_account is False (anonymous).  Raises LdapError (rc 32 for
        a base that does not exist, 4 when size_limit is exceeded...)."""
        if bind_dn is None and as_bind_account and self.bind_dn:
            bind_dn, password = self.bind_dn, self.bind_password
        args = ["-LLL", "-o", "ldif-wrap=no", "-b", base, "-s", scope]
        if size_limit is not None:
            args += ["-z", str(size_limit)]
        args += [filter] + list(attrs or [])
        r = self.run_tool("ldapsearch", args, bind_dn, password, timeout=timeout)
        entries, refs = parse_ldif(r.stdout)
        return (entries, refs) if with_refs else entries

    def bind(self, dn: str, password, timeout: float = 10.0) -> int:
        """Simple bind as ``dn`` (ldapwhoami): the LDAP result code, 0 on
        success, 49 for invalid credentials (wrong password, disabled
        account, no such entry)."""
        r = self.run_tool("ldapwhoami", [], dn, password, timeout=timeout, check=False)
        if r.returncode == 0:
            return 0
        m = re.search(r"\((\d+)\)", r.stderr)
        return int(m.group(1)) if m else r.returncode

    def whoami(self, dn: str | None = None, password=None) -> str:
        """The authorization identity after a bind ("anonymous" or "dn:...")."""
        return self.run_tool("ldapwhoami", [], dn, password).stdout.strip()

    def _as_admin(self, tool: str, args: list[str], ldif: str | None = None):
        return self.run_tool(tool, args, self.admin_dn, self.admin_password, input=ldif)

    def modify(self, ldif: str) -> None:
        """ldapmodify as the admin: LDIF change records (``changetype:
        modify`` / ``add`` / ``delete`` / ``modrdn``)."""
        self._as_admin("ldapmodify", [], ldif)

    def add(self, ldif: str) -> None:
        """ldapadd as the admin (content records; see ldif_entry())."""
        self._as_admin("ldapadd", [], ldif)

    def delete(self, *dns: str) -> None:
        self._as_admin("ldapdelete", list(dns))

    def replace(self, dn: str, attr: str, *values) -> None:
        """Replace all values of ``attr`` (no values: delete the attribute)."""
        recs = [("changetype", "modify"), ("replace", attr)]
        recs += [(attr, v) for v in values]
        text = ldif_entry(dn, recs) + "-\n"
        self.modify(text)

    def set_enabled(self, dn: str, enabled: bool) -> int:
        """Clear or set the ACCOUNTDISABLE bit (0x2) of userAccountControl;
        returns the new value."""
        e = self.search(dn, "(objectClass=*)", ["userAccountControl"], scope="base",
                        bind_dn=self.admin_dn, password=self.admin_password)
        uac = int(e[0].first("userAccountControl", "512"))
        uac = (uac & ~2) if enabled else (uac | 2)
        self.replace(dn, "userAccountControl", uac)
        return uac

    def root_dse_entry(self, attrs: list[str] | None = None) -> Entry:
        """The rootDSE, read anonymously."""
        e = self.search("", "(objectClass=*)", attrs or ["*", "+"], scope="base",
                        as_bind_account=False)
        return e[0]


@atexit.register
def _stop_all() -> None:
    for s in list(_live):
        try:
            s.stop()
        except Exception:
            pass

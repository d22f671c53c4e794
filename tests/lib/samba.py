"""A private, throw-away Samba Active Directory domain controller for
forestgate's directory tests: the real AD that tests/lib/slapd.py imitates.

Each SambaDC provisions its own domain (one forest, one domain) in a work
folder with ``samba-tool domain provision`` and runs ``samba -i`` from there
on a loopback address of its own (127.0.0.X: Samba's LDAP and Kerberos ports
are fixed, so two DCs cannot share an address). Debian's system instance
(/etc/samba, /var/lib/samba) is neither used nor touched. Needs root (to add
the address) and Debian's samba-ad-dc and python3-samba; meant for
/usr/bin/python3.

Usage::

    from tests.ldap.fixtures import setup_a
    from tests.lib.samba import SambaDC, load_forest

    A = setup_a()
    dc = SambaDC("/tmp/x/a", A.root.dns, A.root.netbios, "127.0.0.11",
                 admin_password=A.passwords["administrator"], domain_sid=A.root.sid)
    dc.provision().start()
    load_forest(dc, A)          # the fixture's users, mailboxes and databases
    dc.uri                      # ldap://127.0.0.11
    dc.stop()

What is Samba's own, not the fixture's
    * the domain: provisioned with the fixture's domain SID, NetBIOS and DNS
      names, so SIDs keep the fixture's domain part;
    * users are created by Samba (``SamDB.add`` of a user object and
      ``setpassword``), so objectSid (the RID Samba allocates: load_forest()
      writes it back into the fixture's Account), userAccountControl,
      pwdLastSet, msDS-User-Account-Control-Computed and the password hashes
      are AD's; Administrator is the built-in RID 500 with Samba's adminCount;
    * bind failures carry AD's diagnostics: ``AcceptSecurityContext error,
      data 52e`` (wrong password), 533 (disabled), 701 (account expired), 773
      (must change password), 532 (password expired), 775 (locked out).

Exchange's schema
    tests/ldap/exchange-schema.ldif (Exchange's attribute and class IDs; see
    its header) is loaded at provision time with ``dsdb:schema update
    allowed``, so homeMDB, msExchMasterAccountSid, protocolSettings,
    msExchDelegateListLink (a real linked attribute, with its back link),
    msExchMailboxSecurityDescriptor and the database and server classes are
    attributes and classes of the schema, checked by Samba like any other.

Failover
    ``SambaDC(..., replication=True)`` also serves DCE/RPC and replication;
    ``dc.join(workdir, address)`` makes a second DC of the same domain with
    ``samba-tool domain join ... DC`` (about 6 s), holding every object and
    password hash by replication. ``kill()`` crashes a DC, ``start()`` brings
    it back on its data.

What Samba cannot do here (so the slapd suite keeps those cases)
    * a child domain: Samba 4.17 cannot add a domain to an existing forest
      (``samba-tool domain join`` offers DC, RODC and MEMBER of the same
      domain only); CHILD, RESDEV and ACC2 of the fixtures are left out of
      its forests;
    * lastLogon: Samba does not keep it for an LDAP simple bind;
    * ports: LDAP is always 389/636 (and 3268/3269 for the global catalog).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import time

__all__ = ["SambaDC", "SambaError", "load_forest", "require_samba", "ensure_address",
           "EXCHANGE_SCHEMA", "diagnostic"]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXCHANGE_SCHEMA = os.path.join(ROOT, "tests", "ldap", "exchange-schema.ldif")
_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_live: "set[SambaDC]" = set()


class SambaError(RuntimeError):
    """Samba could not be provisioned, configured, started or stopped."""


def _tool(name: str) -> str:
    return shutil.which(name) or shutil.which(name, path=_PATH) or name


def require_samba() -> None:
    """Raises SambaError with the reason when a Samba DC cannot run here: a
    suite that needs one fails with that reason instead of skipping."""
    for t in ("samba", "samba-tool", "ldbmodify", "faketime"):
        if not shutil.which(t, path=os.environ.get("PATH", "") + ":" + _PATH):
            raise SambaError(f"{t} is not installed (scripts/deps.sh test installs "
                             "samba-ad-dc, ldb-tools and faketime)")
    try:
        import samba  # noqa: F401  (python3-samba, for /usr/bin/python3)
    except ImportError as e:
        raise SambaError(f"python3-samba is missing for this interpreter: {e}") from e
    if os.geteuid() != 0:
        raise SambaError("a Samba DC needs an address of its own on lo, which takes root")


def ensure_address(addr: str) -> None:
    """Adds addr/32 to lo unless some interface has it already."""
    out = subprocess.run([_tool("ip"), "-o", "addr", "show"], capture_output=True, text=True)
    if re.search(rf"\binet {re.escape(addr)}/", out.stdout):
        return
    r = subprocess.run([_tool("ip"), "addr", "add", f"{addr}/32", "dev", "lo"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SambaError(f"ip addr add {addr}/32 dev lo: {r.stderr.strip()}")


def diagnostic(text: str) -> str | None:
    """The AD bind diagnostic code in an error text: '52e', '775'..."""
    m = re.search(r"AcceptSecurityContext error, data ([0-9a-f]+)", text or "")
    return m.group(1) if m else None


class SambaDC:
    """One Samba AD DC of a one-domain forest, in workdir, on address."""

    def __init__(self, workdir: str, dns: str, netbios: str, address: str,
                 admin_password: str, domain_sid: str | None = None, host: str = "dc1",
                 replication: bool = False):
        self.workdir = os.path.abspath(workdir)
        self.dns, self.netbios, self.address = dns.lower(), netbios.upper(), address
        self.admin_password = admin_password
        self.domain_sid = domain_sid
        self.host = host
        # A DC that another joins serves DCE/RPC (the join replicates over
        # DRSUAPI) and runs its replication service.
        self.services = "ldap, cldap, kdc" + (", rpc, drepl" if replication else "")
        self.base_dn = ",".join(f"DC={p}" for p in self.dns.split("."))
        self.config_dn = f"CN=Configuration,{self.base_dn}"
        self.schema_dn = f"CN=Schema,{self.config_dn}"
        self.conf = os.path.join(self.workdir, "etc", "smb.conf")
        self.sam = os.path.join(self.workdir, "private", "sam.ldb")
        self.log_path = os.path.join(self.workdir, "samba.log")
        self.proc: subprocess.Popen | None = None
        self._samdb = None

    uri = property(lambda self: f"ldap://{self.address}")
    ldaps_uri = property(lambda self: f"ldaps://{self.address}")
    fqdn = property(lambda self: f"{self.host}.{self.dns}")
    admin_dn = property(lambda self: f"CN=Administrator,CN=Users,{self.base_dn}")
    ca_file = property(lambda self: os.path.join(self.workdir, "private", "tls", "ca.pem"))

    # ------------------------------------------------------------ set-up
    def provision(self) -> "SambaDC":
        """A new domain in workdir (about 5 s), with Exchange's schema."""
        require_samba()
        ensure_address(self.address)
        if os.path.exists(self.workdir):
            shutil.rmtree(self.workdir)
        os.makedirs(os.path.join(self.workdir, "run"))
        cmd = [_tool("samba-tool"), "domain", "provision", "--server-role=dc",
               "--dns-backend=NONE", f"--targetdir={self.workdir}",
               f"--host-ip={self.address}", f"--realm={self.dns.upper()}",
               f"--domain={self.netbios}", f"--host-name={self.host}",
               f"--adminpass={self.admin_password}"]
        if self.domain_sid:
            cmd.append(f"--domain-sid={self.domain_sid}")
        for opt in self._options():
            cmd.append(f"--option={opt}")
        self._run(cmd, "provision", timeout=180)
        self._trim_conf()
        self.load_schema(EXCHANGE_SCHEMA)
        # Complexity off and no history, so the fixtures' passwords are taken
        # as they are; the rest of the policy (42-day maximum age, no
        # lockout) stays AD's default.
        self.tool("domain", "passwordsettings", "set", "--complexity=off",
                  "--history-length=0", "--min-pwd-age=0", "--min-pwd-length=0")
        return self

    def _options(self) -> list[str]:
        w = self.workdir
        return [f"server services = {self.services}", f"interfaces = {self.address}",
                "bind interfaces only = yes", f"log file = {w}/log.%m", "log level = 1",
                f"pid directory = {w}/run", f"ncalrpc dir = {w}/run/ncalrpc",
                f"winbindd socket directory = {w}/run/winbindd",
                "prefork children = 2"]

    def _trim_conf(self) -> None:
        """Drops the file shares provisioning writes: this DC serves LDAP
        and Kerberos only (its file server does not start in a container)."""
        with open(self.conf) as f:
            text = f.read()
        m = re.search(r"^\[(?!global\])", text, flags=re.M)
        if m:
            text = text[:m.start()]
        # Provisioning does not keep this one: forestgate binds with a
        # password over plain LDAP in most tests (LDAPS and StartTLS in others).
        text = text.rstrip("\n") + "\n\tldap server require strong auth = no\n"
        with open(self.conf, "w") as f:
            f.write(text)

    def join(self, workdir: str, address: str, host: str = "dc2") -> "SambaDC":
        """A second DC of this domain (samba-tool domain join ... DC), in
        workdir on address: it replicates every naming context, users and
        password hashes included, from this one (which must be running and
        made with replication=True). Not started. About 6 s."""
        dc = SambaDC(workdir, self.dns, self.netbios, address, self.admin_password,
                     self.domain_sid, host, replication=True)
        ensure_address(address)
        if os.path.exists(dc.workdir):
            shutil.rmtree(dc.workdir)
        os.makedirs(os.path.join(dc.workdir, "run"))
        cmd = [_tool("samba-tool"), "domain", "join", self.dns, "DC",
               f"--server={self.address}", f"-UAdministrator%{self.admin_password}",
               "--use-kerberos=off", f"--targetdir={dc.workdir}", "--dns-backend=NONE",
               f"--option=netbios name = {host.upper()}"]
        cmd += [f"--option={opt}" for opt in dc._options()]
        dc._run(cmd, "join", timeout=300)
        dc._trim_conf()
        return dc

    def load_schema(self, path: str) -> None:
        """Loads a schema LDIF (${SCHEMADN} replaced); "# --- commit" lines
        split it into transactions."""
        with open(path) as f:
            text = f.read().replace("${SCHEMADN}", self.schema_dn)
        for i, part in enumerate(re.split(r"^# --- commit.*$", text, flags=re.M)):
            p = os.path.join(self.workdir, f"schema-{i}.ldif")
            with open(p, "w") as f:
                f.write(part)
            self._run([_tool("ldbmodify"), "-H", self.sam,
                       "--option=dsdb:schema update allowed=true", p], f"schema part {i}")

    def tool(self, *args: str, fake_time: str | None = None) -> str:
        """samba-tool on this DC's database; fake_time ('-43d') runs it under
        faketime, so what it stamps (pwdLastSet) lies in the past."""
        cmd = [_tool("samba-tool"), *args, "-s", self.conf, "-H", self.sam]
        if fake_time:
            cmd = [_tool("faketime"), "-f", fake_time] + cmd
        return self._run(cmd, " ".join(args[:3]))

    def _run(self, cmd: list[str], what: str, timeout: float = 60) -> str:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise SambaError(f"samba {what} failed ({r.returncode}): "
                             f"{(r.stderr or r.stdout).strip()[-1500:]}")
        return r.stdout

    # --------------------------------------------------------- run time
    def start(self, timeout: float = 60.0) -> "SambaDC":
        ensure_address(self.address)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([_tool("samba"), "-i", "-s", self.conf], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()
        _live.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SambaError(f"samba exited with {self.proc.returncode}: "
                                 f"{self.log_text()[-2000:]}")
            if self._answers():
                return self
            time.sleep(0.2)
        self.stop()
        raise SambaError(f"samba did not answer LDAP on {self.address}:389 in {timeout}s")

    def _answers(self) -> bool:
        """An anonymous rootDSE search answered: the LDAP server is up."""
        try:
            with socket.create_connection((self.address, 389), timeout=1):
                pass
        except OSError:
            return False
        r = subprocess.run([_tool("ldapsearch"), "-x", "-H", self.uri, "-b", "", "-s", "base",
                            "-o", "nettimeout=2", "dnsHostName"], capture_output=True,
                           text=True, timeout=10)
        return r.returncode == 0 and "dnsHostName" in r.stdout

    def kill(self) -> None:
        """SIGKILL to every process: a DC that crashed. start() brings it
        back on the same data."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self.proc = None
        _live.discard(self)

    def pause(self) -> None:
        """SIGSTOP to every process: the ports accept, nothing answers."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5)
        # samba's children share its process group; none may outlive it.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None
        _live.discard(self)

    def log_text(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def __enter__(self) -> "SambaDC":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --------------------------------------------------------- the data
    def samdb(self):
        """A SamDB on this DC's own database (local, as the system), the way
        samba-tool edits a running DC."""
        if self._samdb is None:
            from samba.auth import system_session
            from samba.param import LoadParm
            from samba.samdb import SamDB
            lp = LoadParm()
            lp.load(self.conf)
            # global_schema=False: each DC's schema of its own. Samba's
            # bindings otherwise share the first one loaded in the process,
            # and another domain's attribute IDs for Exchange's attributes
            # (assigned when its schema was extended) would be written into
            # this one's replication metadata.
            self._samdb = SamDB(url=self.sam, session_info=system_session(), lp=lp,
                                global_schema=False)
        return self._samdb

    def add(self, dn: str, attrs: dict) -> None:
        msg = {"dn": dn}
        msg.update({k: v for k, v in attrs.items() if v is not None and v != []})
        self.samdb().add(msg)

    def replace(self, dn: str, attr: str, values) -> None:
        import ldb
        db = self.samdb()
        m = ldb.Message(ldb.Dn(db, dn))
        vals = values if isinstance(values, list) else [values]
        m[attr] = ldb.MessageElement([v if isinstance(v, bytes) else str(v) for v in vals],
                                     ldb.FLAG_MOD_REPLACE, attr)
        db.modify(m)

    def delete_attr(self, dn: str, attr: str) -> None:
        import ldb
        db = self.samdb()
        m = ldb.Message(ldb.Dn(db, dn))
        m[attr] = ldb.MessageElement([], ldb.FLAG_MOD_DELETE, attr)
        db.modify(m)

    def search(self, base: str, expression: str, attrs: list[str], scope: str = "sub"):
        import ldb
        sc = {"sub": ldb.SCOPE_SUBTREE, "base": ldb.SCOPE_BASE,
              "one": ldb.SCOPE_ONELEVEL}[scope]
        return self.samdb().search(base=base, expression=expression, attrs=attrs, scope=sc)

    def sid_of(self, dn: str) -> str:
        from samba.ndr import ndr_unpack
        from samba.dcerpc import security
        res = self.search(dn, "(objectClass=*)", ["objectSid"], scope="base")
        return str(ndr_unpack(security.dom_sid, res[0]["objectSid"][0]))

    def set_password(self, dn: str, password: str, fake_time: str | None = None) -> None:
        """Sets the password as an administrator's reset does; fake_time
        ('-43d') dates pwdLastSet in the past (an expired password)."""
        res = self.search(dn, "(objectClass=*)", ["sAMAccountName"], scope="base")
        filt = f"(sAMAccountName={_escape(str(res[0]['sAMAccountName'][0]))})"
        if fake_time:
            self.tool("user", "setpassword", f"--filter={filt}", f"--newpassword={password}",
                      fake_time=fake_time)
            return
        self.samdb().setpassword(filt, password, force_change_at_next_login=False)

    def set_enabled(self, dn: str, enabled: bool) -> None:
        res = self.search(dn, "(objectClass=*)", ["userAccountControl"], scope="base")
        uac = int(res[0]["userAccountControl"][0])
        uac = (uac & ~2) if enabled else (uac | 2)
        self.replace(dn, "userAccountControl", str(uac))

    def bind_error(self, dn: str, password: str) -> str | None:
        """A simple bind as dn: None when it works, else the server's
        diagnostic text (``... data 52e ...``)."""
        r = subprocess.run([_tool("ldapsearch"), "-x", "-H", self.uri, "-D", dn, "-w",
                            password, "-b", "", "-s", "base", "-o", "nettimeout=5",
                            "dnsHostName"], capture_output=True, text=True, timeout=15)
        return None if r.returncode == 0 else (r.stderr + r.stdout)


def _escape(value: str) -> str:
    import ldb
    return ldb.binary_encode(value)


# ------------------------------------------------------------ fixtures
def load_forest(dc: SambaDC, forest, skip_domains: tuple[str, ...] = ()) -> list[str]:
    """Creates the fixture forest's root-domain accounts, mailboxes,
    databases and servers in the DC, as Samba's own objects, and writes the
    RIDs Samba gave the accounts back into the fixture (so ``Account.sid``
    and the linked mailboxes' msExchMasterAccountSid stay true). Accounts of
    other (child) domains are left out: returns their keys. A linked
    mailbox's master account must be in a forest loaded before this one."""
    root = forest.root
    assert root.dns.lower() == dc.dns, (root.dns, dc.dns)
    left_out = []
    for ou, nb in forest._ous:
        if nb == root.netbios:
            dc.add(f"{ou},{root.base_dn}", {"objectClass": "organizationalUnit"})
    if forest.upn_suffixes:
        dc.replace(f"CN=Partitions,{dc.config_dn}", "uPNSuffixes", list(forest.upn_suffixes))
    _load_exchange_config(dc, forest)
    accounts = [a for a in forest.accounts.values()]
    for a in accounts:
        if a.domain.netbios != root.netbios:
            left_out.append(a.key)
            continue
        _load_account(dc, a)
    _load_groups(dc, forest)
    for a in accounts:
        if a.key not in left_out and a.has_mailbox:
            _load_mailbox(dc, forest, a)
    return left_out


def _load_groups(dc: SambaDC, forest) -> None:
    """Global security groups, nesting as the fixture says; AD computes
    each member's tokenGroups from them."""
    for g in forest.groups.values():
        dc.add(g.dn, {"objectClass": "group", "sAMAccountName": g.sam})
        dom, _, rid = dc.sid_of(g.dn).rpartition("-")
        assert dom == g.domain.sid
        g.rid = int(rid)
    for g in forest.groups.values():
        if g.members:
            dc.replace(g.dn, "member", [forest._member_dn(m) for m in g.members])


def _load_account(dc: SambaDC, a) -> None:
    if a.rid == 500:
        # The built-in Administrator: its password is the provisioned one.
        dc.set_password(a.dn, a.password)
    else:
        dc.add(a.dn, {"objectClass": "user", "sAMAccountName": a.sam,
                      "userPrincipalName": a.upn, "displayName": a.cn, "sn": a.sam,
                      "description": a.description or None})
        dc.set_password(a.dn, a.password)
        dc.replace(a.dn, "userAccountControl", str(a.uac))
        if a.admin_count:
            # Samba does not run AD's SDProp, which would set it for a member
            # of a protected group: set it as SDProp would.
            dc.replace(a.dn, "adminCount", str(a.admin_count))
    sid = dc.sid_of(a.dn)
    dom, _, rid = sid.rpartition("-")
    assert dom == a.domain.sid, (sid, a.domain.sid)
    a.rid = int(rid)


def _load_mailbox(dc: SambaDC, forest, a) -> None:
    attrs = {"mail": a.mail, "mailNickname": a.alias, "homeMDB": a.home_mdb,
             "proxyAddresses": a.proxy or None, "protocolSettings": a.protocol_settings or None,
             "msExchRecipientTypeDetails": str(a.type_details) if a.type_details else None,
             "msExchMasterAccountSid": a.master_sid_bytes,
             "msExchDelegateListLink": [forest.accounts[k].dn for k in a.delegate_keys] or None,
             "msExchMailboxSecurityDescriptor": _sd(forest, a)}
    for k, v in attrs.items():
        if v is not None:
            dc.replace(a.dn, k, v)


def _sd(forest, a) -> bytes:
    """The mailbox's security descriptor, written by Samba's own SDDL reader
    and NDR encoder from the fixture's SDDL."""
    from samba.dcerpc import security
    from samba.ndr import ndr_pack
    from tests.ldap.fixtures import mailbox_sddl
    sddl = mailbox_sddl(*forest.mailbox_grants(a))
    return ndr_pack(security.descriptor.from_sddl(sddl, security.dom_sid(forest.root.sid)))


def _load_exchange_config(dc: SambaDC, forest) -> None:
    """CN=Microsoft Exchange,CN=Services: the organisation, its
    administrative group, servers (dNSHostName: the backend) and mailbox
    databases (msExchOwningServer), with Exchange's classes."""
    if not forest.org_name:
        return
    svc = f"CN=Services,{dc.config_dn}"
    mx = f"CN=Microsoft Exchange,{svc}"
    ag = forest.admin_group_dn
    for dn, oc in [(mx, ["container", "msExchConfigurationContainer"]),
                   (forest.exchange_dn, ["container", "msExchOrganizationContainer"]),
                   (f"CN=Administrative Groups,{forest.exchange_dn}", "msExchAdminGroupContainer"),
                   (ag, "msExchAdminGroup"), (f"CN=Servers,{ag}", "msExchServersContainer"),
                   (f"CN=Databases,{ag}", "msExchContainer")]:
        dc.add(dn, {"objectClass": oc})
    seen = set()
    for db in forest.databases.values():
        if db.server_dn not in seen:
            seen.add(db.server_dn)
            dc.add(db.server_dn, {"objectClass": "msExchExchangeServer", "dNSHostName": db.host,
                                  "networkAddress": [f"ncacn_ip_tcp:{db.host}",
                                                     f"netbios:{db.server_name}"]})
        dc.add(db.dn, {"objectClass": "msExchPrivateMDB", "msExchOwningServer": db.server_dn})


@atexit.register
def _stop_all() -> None:
    for dc in list(_live):
        try:
            dc.stop()
        except Exception:
            pass

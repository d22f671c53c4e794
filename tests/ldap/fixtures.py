"""AD-like directory data for forestgate's tests (docs/login-rules.md section 8 (the worked examples)).

Pure data and LDIF generation, standard library only.  Serve it with
tests/lib/slapd.py::

    from tests.ldap.fixtures import setup_a, setup_b, sid_bytes
    from tests.lib.slapd import Slapd

    A = setup_a()
    dc = Slapd.for_forest("/tmp/x/a", A).start()
    A.accounts["tuser"].dn, A.passwords["tuser"], A.backend_hosts["DB01"]

    B = setup_b()                       # B.res (organisation), B.acc (account)
    res = Slapd.for_forest("/tmp/x/res", B.res).start()
    acc = Slapd.for_forest("/tmp/x/acc", B.acc).start()

Command line (for manual runs)::

    /usr/bin/python3 -m tests.ldap.fixtures ldif a|res|acc    # print the LDIF
    /usr/bin/python3 -m tests.ldap.fixtures serve a|b [DIR]   # run until ^C

Every Forest exports
    name, netbios, dns, base_dn          the forest root domain
    domains      {NETBIOS: Domain(netbios, dns, base_dn, sid, users_dn)}
    accounts     {key: Account}: dn, sam, upn, password, sid (text),
                 sid_bytes, sid_filter (\\01\\05...), uac, enabled, alias
                 (mailNickname), home_mdb (DN), database (name), proxy,
                 protocol_settings, delegates (DNs), master (Account),
                 domain (Domain), logon ("NETBIOS\\sam")
    passwords    {key: password}
    bind_dn, bind_password               the lookup account (key "svc")
    admin_dn                             slapd rootdn (Slapd.admin_password)
    config_dn, partitions_dn, schema_dn
    upn_suffixes                         uPNSuffixes on CN=Partitions
    databases    {name: Database(name, dn, server_name, server_dn, host)}
    backend_hosts {database name: host},  mdb_hosts {database DN: host}
    suffixes, ldif(), root_dse(host)     what Slapd.for_forest() uses
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import sys
import uuid
from dataclasses import dataclass, field

__all__ = ["sid_bytes", "sid_text", "sid_filter", "ssha", "rdn_escape", "Domain", "Account",
           "Database", "Forest", "Group", "mailbox_sd", "mailbox_sddl", "SetupB", "setup_a", "setup_b", "ADMIN_GROUP",
           "UAC_NORMAL", "UAC_DISABLED", "UAC_NORMAL_NOEXPIRE", "SECTION"]

SECTION = "\u00a7"                    # §, UTF-8 C2 A7 on the wire
UAC_NORMAL = 0x200                    # 512
UAC_DISABLED = 0x200 | 0x2            # 514
UAC_NORMAL_NOEXPIRE = 0x10200         # 66048: normal, password never expires
ADMIN_GROUP = "Exchange Administrative Group (FYDIBOHF23SPDLT)"
TYPE_USER_MAILBOX, TYPE_LINKED, TYPE_SHARED = 1, 2, 4
_GUID_NS = uuid.UUID("6f726573-7467-6174-652d-746573747321")


# ------------------------------------------------------------------ SIDs
def sid_bytes(text: str) -> bytes:
    """MS-DTYP 2.4.2.2: revision (1 byte), subauthority count (1 byte),
    identifier authority (6 bytes, big-endian), subauthorities (4 bytes
    each, little-endian).  ``sid_bytes("S-1-5-21-1-2-3-500")``."""
    m = re.fullmatch(r"[sS]-(\d+)-(\d+)((?:-\d+)*)", text.strip())
    if not m:
        raise ValueError(f"not a SID: {text!r}")
    rev, auth = int(m.group(1)), int(m.group(2))
    subs = [int(x) for x in m.group(3).split("-")[1:]]
    if rev != 1 or len(subs) > 15 or auth >= 1 << 48 or any(s >= 1 << 32 for s in subs):
        raise ValueError(f"bad SID: {text!r}")
    return (bytes([rev, len(subs)]) + auth.to_bytes(6, "big")
            + b"".join(struct.pack("<I", s) for s in subs))


def sid_text(raw: bytes) -> str:
    """Inverse of sid_bytes()."""
    if len(raw) < 8 or raw[0] != 1 or len(raw) != 8 + 4 * raw[1]:
        raise ValueError(f"not a binary SID: {raw.hex()}")
    auth = int.from_bytes(raw[2:8], "big")
    subs = struct.unpack(f"<{raw[1]}I", raw[8:])
    return "S-1-" + str(auth) + "".join(f"-{s}" for s in subs)


def sid_filter(sid) -> str:
    """The escaped-bytes form for filters: ``(objectSid=\\01\\05\\00...)``."""
    raw = sid_bytes(sid) if isinstance(sid, str) else sid
    return "".join(f"\\{b:02x}" for b in raw)


# ------------------------------------------------- security descriptors
SELF_SID = "S-1-5-10"          # PS: the mailbox itself
SYSTEM_SID = "S-1-5-18"        # SY
FULL_ACCESS = 0x1              # Exchange's MailboxRights.FullAccess (SDDL CC)
READ_CONTROL = 0x20000         # RC
ACE_FLAG_CI = 0x2              # CONTAINER_INHERIT


def _ace(kind: int, flags: int, mask: int, sid: str) -> bytes:
    raw = sid_bytes(sid)
    return struct.pack("<BBHI", kind, flags, 8 + len(raw), mask) + raw


def mailbox_sd(allow: list[str], deny: list[str] = ()) -> bytes:
    """A mailbox's msExchMailboxSecurityDescriptor as Exchange writes it:
    self-relative, owner and group SYSTEM, a DACL of Full Access (CC) and
    read permission (RC) for SELF and each SID of allow, after a deny of
    Full Access for each SID of deny (canonical order: denies first). The
    bytes are those Samba's SDDL encoder gives for mailbox_sddl() (checked
    against Samba in test_directory_samba.py)."""
    aces = [_ace(1, 0, FULL_ACCESS, s) for s in deny]
    aces += [_ace(0, ACE_FLAG_CI, FULL_ACCESS | READ_CONTROL, s) for s in [SELF_SID, *allow]]
    dacl = struct.pack("<BBHHH", 4, 0, 8 + sum(map(len, aces)), len(aces), 0) + b"".join(aces)
    owner = group = sid_bytes(SYSTEM_SID)
    # header: revision, sbz1, control (SELF_RELATIVE | DACL_PRESENT), then
    # the offsets of owner, group, SACL (none) and DACL, as Samba lays them
    off_owner = 20
    off_group = off_owner + len(owner)
    off_dacl = off_group + len(group)
    head = struct.pack("<BBHIIII", 1, 0, 0x8004, off_owner, off_group, 0, off_dacl)
    return head + owner + group + dacl


def mailbox_sddl(allow: list[str], deny: list[str] = ()) -> str:
    """mailbox_sd() in SDDL, for Samba's own encoder."""
    return ("O:SYG:SYD:" + "".join(f"(D;;CC;;;{s})" for s in deny) + "(A;CI;CCRC;;;PS)" +
            "".join(f"(A;CI;CCRC;;;{s})" for s in allow))


def ssha(password: str | bytes, salt: bytes | None = None) -> str:
    """userPassword value ``{SSHA}base64(sha1(password + salt) + salt)``."""
    pw = password if isinstance(password, bytes) else password.encode("utf-8")
    salt = salt if salt is not None else hashlib.sha256(b"salt:" + pw).digest()[:8]
    return "{SSHA}" + base64.b64encode(hashlib.sha1(pw + salt).digest() + salt).decode("ascii")


def rdn_escape(value: str) -> str:
    """RFC 4514 escaping of an attribute value inside a DN."""
    out = "".join("\\" + c if c in ',+"\\<>;=' else c for c in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def _guid(dn: str) -> bytes:
    return uuid.uuid5(_GUID_NS, dn.lower()).bytes_le


# ---------------------------------------------------------------- model
@dataclass
class Domain:
    netbios: str
    dns: str
    sid: str                      # domain SID, S-1-5-21-a-b-c
    base_dn: str = ""

    def __post_init__(self):
        if not self.base_dn:
            self.base_dn = ",".join(f"DC={p}" for p in self.dns.split("."))

    @property
    def users_dn(self) -> str:
        return f"CN=Users,{self.base_dn}"

    @property
    def sid_bytes(self) -> bytes:
        return sid_bytes(self.sid)


@dataclass
class Group:
    """A global security group; members are fixture keys of accounts or
    groups (nesting) of the same forest."""
    key: str
    domain: Domain
    sam: str
    rid: int
    members: list[str] = field(default_factory=list)
    container: str = "CN=Users"

    @property
    def dn(self) -> str:
        return f"CN={rdn_escape(self.sam)},{self.container},{self.domain.base_dn}"

    @property
    def sid(self) -> str:
        return f"{self.domain.sid}-{self.rid}"


@dataclass
class Database:
    name: str                     # DB01
    dn: str                       # the msExchPrivateMDB object (homeMDB value)
    server_name: str              # MBX1
    server_dn: str                # the msExchExchangeServer (msExchOwningServer)
    host: str                     # its dNSHostName: the backend to route to


@dataclass
class Account:
    key: str                      # unique within the forest: fixture name
    domain: Domain
    sam: str
    cn: str
    password: str
    rid: int
    container: str = "CN=Users"   # relative to the domain's base DN
    upn: str | None = None
    uac: int = UAC_NORMAL
    admin_count: int | None = None
    alias: str | None = None      # mailNickname
    database: str | None = None   # name of the homeMDB database
    home_mdb: str | None = None   # filled in by the Forest
    proxy: list[str] = field(default_factory=list)
    protocol_settings: list[str] = field(default_factory=list)
    delegate_keys: list[str] = field(default_factory=list)
    delegates: list[str] = field(default_factory=list)      # DNs, filled in
    master: "Account | None" = None                         # linked mailbox owner
    type_details: int | None = None
    mail: str | None = None
    description: str = ""
    # Full Access in the mailbox's security descriptor beyond delegate_keys:
    # Accounts or Groups (of any forest: a linked account's own SID)
    sd_grants: list = field(default_factory=list)
    sd_denies: list = field(default_factory=list)

    @property
    def dn(self) -> str:
        return f"CN={rdn_escape(self.cn)},{self.container},{self.domain.base_dn}"

    @property
    def sid(self) -> str:
        return f"{self.domain.sid}-{self.rid}"

    @property
    def sid_bytes(self) -> bytes:
        return sid_bytes(self.sid)

    @property
    def sid_filter(self) -> str:
        return sid_filter(self.sid)

    @property
    def enabled(self) -> bool:
        return not self.uac & 2

    @property
    def has_mailbox(self) -> bool:
        return self.database is not None

    @property
    def logon(self) -> str:
        return f"{self.domain.netbios}\\{self.sam}"

    @property
    def master_sid_bytes(self) -> bytes | None:
        return self.master.sid_bytes if self.master else None


class Forest:
    """One AD forest: a root domain, child domains, the configuration NC
    with CN=Partitions (crossRefs, uPNSuffixes) and, for an Exchange
    organisation, the mailbox databases and their servers."""

    def __init__(self, root: Domain, children: list[Domain] = (),
                 upn_suffixes: list[str] = (), org_name: str | None = None):
        self.root = root
        self.domains: dict[str, Domain] = {root.netbios: root}
        for d in children:
            self.domains[d.netbios] = d
        self.upn_suffixes = list(upn_suffixes)
        self.org_name = org_name
        self.accounts: dict[str, Account] = {}
        self.groups: dict[str, Group] = {}
        self.databases: dict[str, Database] = {}
        self._ous: list[str] = []

    # names of the forest root
    name = property(lambda self: self.root.netbios)
    netbios = property(lambda self: self.root.netbios)
    dns = property(lambda self: self.root.dns)
    base_dn = property(lambda self: self.root.base_dn)
    config_dn = property(lambda self: f"CN=Configuration,{self.root.base_dn}")
    partitions_dn = property(lambda self: f"CN=Partitions,{self.config_dn}")
    schema_dn = property(lambda self: f"CN=Schema,{self.config_dn}")
    admin_dn = property(lambda self: f"CN=fixture-admin,{self.config_dn}")

    @property
    def exchange_dn(self) -> str:
        return f"CN={rdn_escape(self.org_name)},CN=Microsoft Exchange,CN=Services,{self.config_dn}"

    @property
    def admin_group_dn(self) -> str:
        return f"CN={rdn_escape(ADMIN_GROUP)},CN=Administrative Groups,{self.exchange_dn}"

    @property
    def suffixes(self) -> list[str]:
        return [d.base_dn for d in self.domains.values()] + [self.config_dn]

    @property
    def passwords(self) -> dict[str, str]:
        return {k: a.password for k, a in self.accounts.items()}

    @property
    def bind_dn(self) -> str:
        return self.accounts["svc"].dn

    @property
    def bind_password(self) -> str:
        return self.accounts["svc"].password

    @property
    def backend_hosts(self) -> dict[str, str]:
        return {name: db.host for name, db in self.databases.items()}

    @property
    def mdb_hosts(self) -> dict[str, str]:
        return {db.dn: db.host for db in self.databases.values()}

    def domain(self, name: str) -> Domain:
        """By NetBIOS or DNS name, case-insensitively."""
        for d in self.domains.values():
            if name.lower() in (d.netbios.lower(), d.dns.lower()):
                return d
        raise KeyError(name)

    # ------------------------------------------------------------ building
    def add_database(self, name: str, server: str) -> Database:
        host = f"{server.lower()}.{self.dns}"
        db = Database(name=name, dn=f"CN={name},CN=Databases,{self.admin_group_dn}",
                      server_name=server,
                      server_dn=f"CN={server},CN=Servers,{self.admin_group_dn}", host=host)
        self.databases[name] = db
        return db

    def add(self, acc: Account) -> Account:
        if acc.key in self.accounts:
            raise ValueError(f"duplicate fixture key {acc.key}")
        if acc.domain.netbios not in self.domains:
            raise ValueError(f"{acc.key}: domain {acc.domain.netbios} is not in this forest")
        if acc.database is not None:
            acc.home_mdb = self.databases[acc.database].dn
        if acc.container.upper().startswith("OU=") and \
                (acc.container, acc.domain.netbios) not in self._ous:
            self._ous.append((acc.container, acc.domain.netbios))
        self.accounts[acc.key] = acc
        return acc

    def add_group(self, g: Group) -> Group:
        if g.key in self.groups or g.key in self.accounts:
            raise ValueError(f"duplicate fixture key {g.key}")
        self.groups[g.key] = g
        return g

    def token_groups(self, a: Account) -> list[str]:
        """The SIDs AD puts in the account's tokenGroups: Domain Users (its
        primary group), BUILTIN\\Users, and every group it is in, nested
        ones too."""
        out = [f"{a.domain.sid}-513", "S-1-5-32-545"]
        todo, seen = [a.key], set()
        while todo:
            k = todo.pop()
            for g in self.groups.values():
                if k in g.members and g.key not in seen:
                    seen.add(g.key)
                    out.append(g.sid)
                    todo.append(g.key)
        return out

    def mailbox_grants(self, a: Account) -> tuple[list[str], list[str]]:
        """(allowed SIDs, denied SIDs) of the mailbox's Full Access: its
        delegates, as Exchange lists them, and the grants beyond."""
        allow = [self.accounts[k].sid for k in a.delegate_keys] + [x.sid for x in a.sd_grants]
        return allow, [x.sid for x in a.sd_denies]

    def _resolve_delegates(self) -> None:
        for a in self.accounts.values():
            a.delegates = [self.accounts[k].dn for k in a.delegate_keys]

    # ---------------------------------------------------------------- LDIF
    def records(self) -> list[tuple[str, list]]:
        """(dn, [(attr, value), ...]) for every entry, parents first."""
        self._resolve_delegates()
        out: list[tuple[str, list]] = []
        for d in self.domains.values():
            out.append((d.base_dn, [
                ("objectClass", ["top", "domainDNS"]), ("dc", d.dns.split(".")[0]),
                ("objectSid", d.sid_bytes), ("objectGUID", _guid(d.base_dn)),
                ("msDS-Behavior-Version", 7)]))
            out.append((d.users_dn, [
                ("objectClass", ["top", "container"]), ("cn", "Users"),
                ("description", "Default container for upgraded user accounts"),
                ("objectGUID", _guid(d.users_dn))]))
            for ou, nb in self._ous:
                if nb == d.netbios:
                    dn = f"{ou},{d.base_dn}"
                    out.append((dn, [("objectClass", ["top", "organizationalUnit"]),
                                     ("ou", ou.split("=", 1)[1])]))
        for a in self.accounts.values():
            out.append((a.dn, self._account_attrs(a)))
        for g in self.groups.values():
            out.append((g.dn, [("objectClass", ["top", "group"]), ("cn", g.sam),
                               ("sAMAccountName", g.sam), ("objectSid", sid_bytes(g.sid)),
                               ("objectGUID", _guid(g.dn)),
                               ("member", [self._member_dn(m) for m in g.members] or None)]))
        out += self._config_records()
        return out

    def _account_attrs(self, a: Account) -> list:
        attrs = [
            ("objectClass", ["top", "person", "organizationalPerson", "user"]),
            ("cn", a.cn), ("sn", a.sam),
            ("displayName", a.cn), ("sAMAccountName", a.sam),
            ("userPrincipalName", a.upn),
            ("objectSid", a.sid_bytes), ("objectGUID", _guid(a.dn)),
            ("objectCategory", f"CN=Person,{self.schema_dn}"),
            ("userAccountControl", a.uac), ("msDS-User-Account-Control-Computed", 0),
            ("pwdLastSet", 133500000000000000),
            ("adminCount", a.admin_count),
            ("userPassword", ssha(a.password)),
            ("description", a.description or None),
            ("tokenGroups", [sid_bytes(s) for s in self.token_groups(a)]),
        ]
        if a.has_mailbox:
            attrs += [
                ("mail", a.mail), ("mailNickname", a.alias), ("homeMDB", a.home_mdb),
                ("proxyAddresses", a.proxy or None),
                ("protocolSettings", a.protocol_settings or None),
                ("msExchMasterAccountSid", a.master_sid_bytes),
                ("msExchDelegateListLink", a.delegates or None),
                ("msExchRecipientTypeDetails", a.type_details),
                ("msExchMailboxSecurityDescriptor", mailbox_sd(*self.mailbox_grants(a))),
            ]
        return attrs

    def _member_dn(self, key: str) -> str:
        return (self.accounts[key] if key in self.accounts else self.groups[key]).dn

    def _config_records(self) -> list[tuple[str, list]]:
        c, p = self.config_dn, self.partitions_dn
        out = [
            (c, [("objectClass", ["top", "container"]), ("cn", "Configuration"),
                 ("objectGUID", _guid(c))]),
            (p, [("objectClass", ["top", "crossRefContainer"]), ("cn", "Partitions"),
                 ("uPNSuffixes", self.upn_suffixes or None), ("systemFlags", -2147483648),
                 ("msDS-Behavior-Version", 7), ("objectGUID", _guid(p))]),
        ]
        # One crossRef per domain (systemFlags 3 = in forest + domain), plus
        # the non-domain NCs AD also lists (flag 2 not set), so that the
        # discovery filter (systemFlags:1.2.840.113556.1.4.803:=2) matters.
        for d in self.domains.values():
            dn = f"CN={d.netbios},{p}"
            out.append((dn, [("objectClass", ["top", "crossRef"]), ("cn", d.netbios),
                             ("nCName", d.base_dn), ("dnsRoot", d.dns),
                             ("nETBIOSName", d.netbios), ("systemFlags", 3),
                             ("objectGUID", _guid(dn))]))
        for cn, nc, root, flags in [
                ("Enterprise Configuration", c, self.dns, 1),
                ("Enterprise Schema", self.schema_dn, self.dns, 1),
                (f"{self.netbios}-ForestDnsZones", f"DC=ForestDnsZones,{self.base_dn}",
                 f"ForestDnsZones.{self.dns}", 5)]:
            dn = f"CN={cn},{p}"
            out.append((dn, [("objectClass", ["top", "crossRef"]), ("cn", cn),
                             ("nCName", nc), ("dnsRoot", root), ("systemFlags", flags),
                             ("objectGUID", _guid(dn))]))
        svc = f"CN=Services,{c}"
        out.append((svc, [("objectClass", ["top", "container"]), ("cn", "Services")]))
        if self.org_name:
            mx = f"CN=Microsoft Exchange,{svc}"
            ag = self.admin_group_dn
            for dn, oc in [(mx, "msExchContainer"), (self.exchange_dn, "msExchContainer"),
                           (f"CN=Administrative Groups,{self.exchange_dn}", "msExchContainer"),
                           (ag, "msExchContainer"), (f"CN=Databases,{ag}", "msExchContainer"),
                           (f"CN=Servers,{ag}", "msExchContainer")]:
                cn = dn.split(",", 1)[0][3:].replace("\\", "")
                out.append((dn, [("objectClass", ["top", oc]), ("cn", cn),
                                 ("objectGUID", _guid(dn))]))
            seen = set()
            for db in self.databases.values():
                if db.server_dn not in seen:
                    seen.add(db.server_dn)
                    out.append((db.server_dn, [
                        ("objectClass", ["top", "msExchExchangeServer"]), ("cn", db.server_name),
                        ("dNSHostName", db.host),
                        ("networkAddress", [f"ncacn_ip_tcp:{db.host}",
                                            f"netbios:{db.server_name}",
                                            f"ncalrpc:{db.server_name}"]),
                        ("objectGUID", _guid(db.server_dn))]))
            for db in self.databases.values():
                out.append((db.dn, [("objectClass", ["top", "msExchMDB", "msExchPrivateMDB"]),
                                    ("cn", db.name), ("msExchOwningServer", db.server_dn),
                                    ("objectGUID", _guid(db.dn))]))
        return out

    def ldif(self) -> str:
        from tests.lib.slapd import ldif_entry
        return "\n".join(ldif_entry(dn, attrs) for dn, attrs in self.records())

    def root_dse(self, host: str) -> dict:
        """AD rootDSE attributes of a DC ``host`` of this forest's root domain."""
        short = host.split(".")[0]
        return {
            "defaultNamingContext": self.base_dn,
            "configurationNamingContext": self.config_dn,
            "rootDomainNamingContext": self.base_dn,
            "schemaNamingContext": self.schema_dn,
            "dnsHostName": host,
            "ldapServiceName": f"{self.dns}:{short.lower()}$@{self.dns.upper()}",
            "supportedCapabilities": ["1.2.840.113556.1.4.800", "1.2.840.113556.1.4.1670",
                                      "1.2.840.113556.1.4.1791", "1.2.840.113556.1.4.1935"],
        }


def _mbx(forest: Forest, key: str, domain: Domain, sam: str, cn: str, password: str,
         rid: int, alias: str, database: str, **kw) -> Account:
    """A user with a mailbox: mail / SMTP proxy address from the alias."""
    smtp = kw.pop("smtp", f"{alias}@{forest.dns}")
    kw.setdefault("proxy", [f"SMTP:{smtp}"])
    kw.setdefault("mail", smtp)
    kw.setdefault("type_details", TYPE_USER_MAILBOX)
    return forest.add(Account(key=key, domain=domain, sam=sam, cn=cn, password=password,
                              rid=rid, alias=alias, database=database, **kw))


# ============================================================== setup A
def setup_a() -> Forest:
    """docs/login-rules.md section 8, setup A: one forest UCLABOR / uclabor.de with a
    child domain CHILD / child.uclabor.de.  Keys of ``accounts``:

    svc            UCLABOR\\svc-forestgate, the lookup (bind) account
    tuser          alias testalias, UPN tuser.upn@upn.uclabor.de, DB01,
                   SMTP:testalias@uclabor.de (+ smtp:test.user@uclabor.de)
    other          mailbox `other` (DB02); msExchDelegateListLink -> tuser
    administrator  Administrator (RID 500), adminCount=1, mailbox on DB01
    disuser        disabled (514) user with a mailbox
    noimap         protocolSettings IMAP4§0§1§4§§§§§§ (+ RemotePowerShell§1)
    nopop          protocolSettings POP3§0§1§4§§§§§§
    nombx          enabled user without homeMDB (no mailbox)
    shared         shared mailbox (disabled, type 4), delegate tuser
    hmueller       CN "Müller, Hans" (escaped comma, UTF-8 in the DN),
                   UPN hans.mueller@uclabor.de, a password with specials
    childonly      CHILD\\childonly only (plain `childonly` must not find it),
                   mailbox on DB02
    childtuser     CHILD\\tuser: same sAMAccountName as UCLABOR\\tuser, no
                   mailbox, its own password (plain `tuser` must not see it)
    helper         no mailbox; in group Helpdesk, which is in group Mailbox
                   Managers: Full Access to `shared` through nested groups
    denied         no mailbox; in Helpdesk too, but `shared` denies it
    sdonly         no mailbox; Full Access to `other` in its security
                   descriptor only (granted with auto-mapping off: not in
                   msExchDelegateListLink)
    groups: managers (Mailbox Managers, holds helpdesk), helpdesk (Helpdesk)
    Every mailbox has msExchMailboxSecurityDescriptor: SELF and its delegates
    (other, shared: tuser) with Full Access, plus the grants above.
    """
    root = Domain("UCLABOR", "uclabor.de", "S-1-5-21-1004336348-1177238915-682003330")
    child = Domain("CHILD", "child.uclabor.de", "S-1-5-21-2718281828-459045235-360287471")
    f = Forest(root, [child], upn_suffixes=["upn.uclabor.de"], org_name="First Organization")
    f.add_database("DB01", "MBX1")
    f.add_database("DB02", "MBX2")
    S = SECTION

    f.add(Account("svc", root, "svc-forestgate", "svc-forestgate", "Svc-Forestgate-A1", 1105,
                  upn="svc-forestgate@uclabor.de", uac=UAC_NORMAL_NOEXPIRE,
                  description="forestgate lookup account"))
    tuser = _mbx(f, "tuser", root, "tuser", "Test User", "Tuser-Pass1", 1106, "testalias", "DB01",
                 container="OU=Staff", upn="tuser.upn@upn.uclabor.de",
                 proxy=["SMTP:testalias@uclabor.de", "smtp:test.user@uclabor.de"])
    _mbx(f, "other", root, "other", "Other Mailbox", "Other-Pass2", 1107, "other", "DB02",
         container="OU=Staff", upn="other@uclabor.de", delegate_keys=[tuser.key])
    _mbx(f, "administrator", root, "Administrator", "Administrator", "Adm1n-Pass3", 500,
         "Administrator", "DB01", upn="Administrator@uclabor.de",
         uac=UAC_NORMAL_NOEXPIRE, admin_count=1)
    _mbx(f, "disuser", root, "disuser", "Disabled User", "Dis-Pass4", 1108, "disuser", "DB01",
         container="OU=Staff", upn="disuser@uclabor.de", uac=UAC_DISABLED)
    _mbx(f, "noimap", root, "noimap", "No Imap", "NoImap-Pass5", 1109, "noimap", "DB01",
         container="OU=Staff", upn="noimap@uclabor.de",
         protocol_settings=[f"IMAP4{S}0{S}1{S}4{S}{S}{S}{S}{S}{S}", f"RemotePowerShell{S}1"])
    _mbx(f, "nopop", root, "nopop", "No Pop", "NoPop-Pass6", 1110, "nopop", "DB02",
         container="OU=Staff", upn="nopop@uclabor.de",
         protocol_settings=[f"POP3{S}0{S}1{S}4{S}{S}{S}{S}{S}{S}"])
    f.add(Account("nombx", root, "nombx", "No Mailbox", "NoMbx-Pass7", 1111,
                  container="OU=Staff", upn="nombx@uclabor.de"))
    _mbx(f, "shared", root, "shared", "Shared Mailbox", "Shared-Pass8", 1112, "shared", "DB02",
         upn="shared@uclabor.de", uac=UAC_DISABLED, type_details=TYPE_SHARED,
         delegate_keys=[tuser.key])
    _mbx(f, "hmueller", root, "hmueller", "Müller, Hans", 'Pä$$ wört (x) * \\ "q"', 1113,
         "hmueller", "DB01", container="OU=Staff", upn="hans.mueller@uclabor.de",
         smtp="hans.mueller@uclabor.de")
    _mbx(f, "childonly", child, "childonly", "Child Only", "ChildOnly-Pass9", 1105, "childonly",
         "DB02", upn="childonly@child.uclabor.de", smtp="childonly@child.uclabor.de")
    f.add(Account("childtuser", child, "tuser", "Child Tuser", "ChildTuser-Pass10", 1106,
                  upn="tuser@child.uclabor.de"))
    helper = f.add(Account("helper", root, "helper", "Help Desk Helper", "Helper-Pass11", 1114,
                           container="OU=Staff", upn="helper@uclabor.de"))
    denied = f.add(Account("denied", root, "denied", "Denied Helper", "Denied-Pass12", 1115,
                           container="OU=Staff", upn="denied@uclabor.de"))
    sdonly = f.add(Account("sdonly", root, "sdonly", "Sd Only", "SdOnly-Pass13", 1116,
                           container="OU=Staff", upn="sdonly@uclabor.de"))
    helpdesk = f.add_group(Group("helpdesk", root, "Helpdesk", 1301,
                                 members=[helper.key, denied.key]))
    managers = f.add_group(Group("managers", root, "Mailbox Managers", 1300,
                                 members=[helpdesk.key]))
    f.accounts["shared"].sd_grants.append(managers)
    f.accounts["shared"].sd_denies.append(denied)
    f.accounts["other"].sd_grants.append(sdonly)
    return f


# ============================================================== setup B
@dataclass
class SetupB:
    """docs/login-rules.md section 8, setup B: ``res`` is the organisation (resource)
    forest, ``acc`` the account forest.  Each needs its own Slapd."""
    res: Forest
    acc: Forest

    @property
    def forests(self) -> list[Forest]:
        return [self.res, self.acc]


def setup_b() -> SetupB:
    """Resource forest RES / res.example (+ child RESDEV / dev.res.example)
    and account forest ACC / acc.example (+ ACC2 / eu.acc.example).

    res.accounts:
      svc          RES\\svc-forestgate (bind account of the RES forest)
      linked       disabled (514) mailbox `linked`, type 2, DB01,
                   msExchMasterAccountSid = ACC\\auser, SMTP:linked@res.example,
                   UPN linked@res.example (give it auser@acc.example at run
                   time for the "two accounts bear the UPN" row)
      auser        RES\\auser, DISABLED, no mailbox, its own password (enable
                   it at run time: slapd.set_enabled(dn, True))
      resuser      ordinary RES mailbox (DB01); its security descriptor gives
                   ACC\\auser (the account forest's SID) Full Access
      devuser      RESDEV\\devuser mailbox (DB02): plain `devuser` must fail
      dupacc       linked mailbox of ACC\\dupuser
      dupeu        linked mailbox of ACC2\\dupuser
      eulinked     linked mailbox of ACC2\\euuser
      twolink1/2   two linked mailboxes of ACC\\twolinks (ambiguous mailbox)
      accadminmbx  linked mailbox of ACC\\accadmin (adminCount=1 on the account)
      accdismbx    linked mailbox of ACC\\accdis (disabled account)
    acc.accounts:
      svc          ACC\\svc-forestgate (bind account of the ACC forest)
      auser        UPN auser@acc.example, enabled, no mailbox in ACC
      dupuser      ACC\\dupuser;  dupuser2: ACC2\\dupuser (same sAMAccountName:
                   plain `dupuser` is ambiguous in the account forest)
      euuser       ACC2\\euuser only (found by a plain name: the account
                   forest is searched as a whole)
      twolinks     owner of twolink1 and twolink2
      nolink       enabled, no linked mailbox anywhere
      accadmin     adminCount=1, has a linked mailbox
      accdis       disabled (514), has a linked mailbox
    """
    res_root = Domain("RES", "res.example", "S-1-5-21-3141592653-589793238-462643383")
    res_dev = Domain("RESDEV", "dev.res.example", "S-1-5-21-1618033988-749894848-204586834")
    acc_root = Domain("ACC", "acc.example", "S-1-5-21-1414213562-373095048-801688724")
    acc_eu = Domain("ACC2", "eu.acc.example", "S-1-5-21-1732050807-568877293-527446341")

    acc = Forest(acc_root, [acc_eu])
    acc.add(Account("svc", acc_root, "svc-forestgate", "svc-forestgate", "Svc-Forestgate-ACC",
                    1105, upn="svc-forestgate@acc.example", uac=UAC_NORMAL_NOEXPIRE))
    auser = acc.add(Account("auser", acc_root, "auser", "A User", "Auser-Acc-Pass1", 1106,
                            upn="auser@acc.example"))
    dup1 = acc.add(Account("dupuser", acc_root, "dupuser", "Dup User", "Dup-Acc-Pass2", 1107,
                           upn="dupuser@acc.example"))
    dup2 = acc.add(Account("dupuser2", acc_eu, "dupuser", "Dup User EU", "Dup-Eu-Pass3", 1105,
                           upn="dupuser@eu.acc.example"))
    euuser = acc.add(Account("euuser", acc_eu, "euuser", "Eu User", "EuUser-Pass4", 1106,
                             upn="euuser@eu.acc.example"))
    two = acc.add(Account("twolinks", acc_root, "twolinks", "Two Links", "TwoLinks-Pass5", 1108,
                          upn="twolinks@acc.example"))
    acc.add(Account("nolink", acc_root, "nolink", "No Link", "NoLink-Pass6", 1109,
                    upn="nolink@acc.example"))
    accadmin = acc.add(Account("accadmin", acc_root, "accadmin", "Acc Admin", "AccAdmin-Pass7",
                               1110, upn="accadmin@acc.example", admin_count=1))
    accdis = acc.add(Account("accdis", acc_root, "accdis", "Acc Disabled", "AccDis-Pass8", 1111,
                             upn="accdis@acc.example", uac=UAC_DISABLED))

    res = Forest(res_root, [res_dev], org_name="First Organization")
    res.add_database("DB01", "MBX1")
    res.add_database("DB02", "MBX2")
    res.add(Account("svc", res_root, "svc-forestgate", "svc-forestgate", "Svc-Forestgate-RES",
                    1105, upn="svc-forestgate@res.example", uac=UAC_NORMAL_NOEXPIRE))

    def linked(key, alias, rid, master, db="DB01", **kw):
        return _mbx(res, key, res_root, alias, f"{alias} (linked)", f"Linked-{alias}-Pw", rid,
                    alias, db, container="OU=Linked", upn=kw.pop("upn", f"{alias}@res.example"),
                    uac=UAC_DISABLED, master=master, type_details=TYPE_LINKED, **kw)

    linked("linked", "linked", 1106, auser)
    res.add(Account("auser", res_root, "auser", "auser (RES)", "Auser-Res-Pass1", 1107,
                    upn="auser.res@res.example", uac=UAC_DISABLED))
    _mbx(res, "resuser", res_root, "resuser", "Res User", "ResUser-Pass2", 1108, "resuser",
         "DB01", upn="resuser@res.example", sd_grants=[auser])
    _mbx(res, "devuser", res_dev, "devuser", "Dev User", "DevUser-Pass3", 1105, "devuser",
         "DB02", upn="devuser@dev.res.example")
    linked("dupacc", "dupacc", 1109, dup1)
    linked("dupeu", "dupeu", 1110, dup2, db="DB02")
    linked("eulinked", "eulinked", 1111, euuser, db="DB02")
    linked("twolink1", "twolink1", 1112, two)
    linked("twolink2", "twolink2", 1113, two, db="DB02")
    linked("accadminmbx", "accadminmbx", 1114, accadmin)
    linked("accdismbx", "accdismbx", 1115, accdis)
    return SetupB(res=res, acc=acc)


# ============================================================ command line
def _main(argv: list[str]) -> int:
    import os
    import tempfile
    import time
    if len(argv) >= 2 and argv[0] == "ldif":
        f = {"a": setup_a, "res": lambda: setup_b().res, "acc": lambda: setup_b().acc}[argv[1]]()
        sys.stdout.write(f.ldif())
        return 0
    if len(argv) >= 2 and argv[0] == "serve":
        from tests.lib.slapd import Slapd
        forests = [setup_a()] if argv[1] == "a" else setup_b().forests
        root = argv[2] if len(argv) > 2 else tempfile.mkdtemp(prefix="fg-ldap-", dir="/tmp")
        servers = []
        for f in forests:
            s = Slapd.for_forest(os.path.join(root, f.netbios.lower()), f).start()
            servers.append(s)
            print(f"{f.netbios}: {s.uri}  bind {f.bind_dn!r} / {f.bind_password!r}  "
                  f"admin {s.admin_dn!r} / {s.admin_password!r}  log {s.log_path}")
            for k, a in f.accounts.items():
                print(f"    {k:12} {a.logon:24} {a.upn or '':28} {a.password!r}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            for s in servers:
                s.stop()
        return 0
    print(__doc__.split("Command line (for manual runs)::")[1].split("Every Forest")[0])
    return 2


if __name__ == "__main__":
    sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(
        __import__("os").path.dirname(__import__("os").path.abspath(__file__)))))
    sys.exit(_main(sys.argv[1:]))

"""Self-test of the AD-like LDAP harness (tests/lib/slapd.py) and its data
(tests/ldap/): starts setup A and setup B once per module and checks, with the
OpenLDAP command-line tools, that the directory behaves as forestgate's
directory code expects from Active Directory.

    /usr/bin/python3 -m pytest -q tests/integration/test_slapd_fixture.py
"""

import os
import shutil
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.ldap.fixtures import SECTION, setup_a, setup_b, sid_bytes, sid_filter, sid_text  # noqa: E402
from tests.lib.slapd import LdapError, LdapTimeout, Slapd, dn_equal  # noqa: E402

pytestmark = pytest.mark.skipif(not shutil.which("slapd", path="/usr/sbin:/usr/bin")
                                or not shutil.which("ldapsearch"),
                                reason="slapd / ldap-utils not installed (scripts/deps.sh test)")

A = setup_a()
B = setup_b()
DISCOVERY = "(&(objectClass=crossRef)(nETBIOSName={})(systemFlags:1.2.840.113556.1.4.803:=2))"
ALL_DOMAINS = "(&(objectClass=crossRef)(systemFlags:1.2.840.113556.1.4.803:=2))"
DISABLED = "(&(objectClass=user)(userAccountControl:1.2.840.113556.1.4.803:=2))"


@pytest.fixture(scope="module")
def root():
    d = tempfile.mkdtemp(prefix="fg-slapd-", dir="/tmp")
    yield d
    if not os.environ.get("FG_KEEP"):
        shutil.rmtree(d, ignore_errors=True)


def _server(root, name, forest, **kw):
    return Slapd.for_forest(os.path.join(root, name), forest, **kw).start()


@pytest.fixture(scope="module")
def dc_a(root):
    s = _server(root, "a", A)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def dc_res(root):
    s = _server(root, "res", B.res)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def dc_acc(root):
    s = _server(root, "acc", B.acc)
    yield s
    s.stop()


def sam(dc, base, name):
    return dc.search(base, f"(&(objectClass=user)(sAMAccountName={name}))", ["sAMAccountName"])


# --------------------------------------------------------------- helpers
def test_sid_layout():
    raw = sid_bytes("S-1-5-21-1004336348-1177238915-682003330-1106")
    assert raw[:8] == bytes([1, 5, 0, 0, 0, 0, 0, 5])
    assert raw[8:12] == (21).to_bytes(4, "little")
    assert raw[-4:] == (1106).to_bytes(4, "little")
    assert len(raw) == 8 + 4 * 5
    assert sid_text(raw) == "S-1-5-21-1004336348-1177238915-682003330-1106"
    assert sid_filter("S-1-5-32-544") == "\\01\\02\\00\\00\\00\\00\\00\\05\\20\\00\\00\\00\\20\\02\\00\\00"


# --------------------------------------------------------------- setup A
def test_schema_and_root_dse(dc_a):
    # Anonymous, default attribute list (as AD returns its rootDSE).
    e = dc_a.search("", "(objectClass=*)", scope="base", as_bind_account=False)[0]
    assert e.first("defaultNamingContext") == A.base_dn
    assert e.first("configurationNamingContext") == A.config_dn
    assert e.first("rootDomainNamingContext") == A.base_dn
    assert e.first("dnsHostName") == "dc1.uclabor.de"
    assert "1.2.840.113556.1.4.800" in e["supportedCapabilities"]
    assert e.first("isGlobalCatalogReady") == "FALSE"
    nc = dc_a.root_dse_entry(["namingContexts"])["namingContexts"]
    assert sorted(x.lower() for x in nc) == sorted(x.lower() for x in A.suffixes)
    # The AD schema is loaded.
    sub = dc_a.search("cn=Subschema", "(objectClass=subschema)", ["attributeTypes", "objectClasses"],
                      scope="base", as_bind_account=False)[0]
    text = "\n".join(sub["attributeTypes"] + sub["objectClasses"])
    for name in ["sAMAccountName", "userPrincipalName", "objectSid", "userAccountControl",
                 "adminCount", "mailNickname", "homeMDB", "proxyAddresses", "protocolSettings",
                 "msExchMasterAccountSid", "msExchDelegateListLink", "msExchRecipientTypeDetails",
                 "msExchOwningServer", "dNSHostName", "nETBIOSName", "dnsRoot", "nCName",
                 "systemFlags", "uPNSuffixes", "'user'", "'crossRef'", "'crossRefContainer'",
                 "'msExchMDB'", "'msExchExchangeServer'", "'domainDNS'"]:
        assert name in text, name


def test_bind_account_reads_everything(dc_a):
    t = A.accounts["tuser"]
    e = dc_a.search(A.base_dn, "(sAMAccountName=tuser)", ["*"])
    assert len(e) == 1
    e = e[0]
    assert dn_equal(e.dn, t.dn)
    assert e.first("objectSid") == t.sid_bytes and isinstance(e.first("objectSid"), bytes)
    assert sid_text(e.first("objectSid")) == t.sid
    assert e.first("userPrincipalName") == "tuser.upn@upn.uclabor.de"
    assert e.first("mailNickname") == "testalias"
    assert e.first("userAccountControl") == "512"
    assert dn_equal(e.first("homeMDB"), A.databases["DB01"].dn)
    assert "SMTP:testalias@uclabor.de" in e["proxyAddresses"]
    assert "userPassword" not in e           # nobody reads passwords
    o = dc_a.search(A.base_dn, "(mailNickname=other)", ["msExchDelegateListLink"])[0]
    assert [dn_equal(x, t.dn) for x in o["msExchDelegateListLink"]] == [True]
    adm = dc_a.search(A.base_dn, "(sAMAccountName=administrator)", ["adminCount", "objectSid"])[0]
    assert adm.first("adminCount") == "1" and sid_text(adm.first("objectSid")).endswith("-500")
    # protocolSettings keeps § as UTF-8 C2 A7 on the wire.
    r = dc_a.run_tool("ldapsearch", ["-LLL", "-o", "ldif-wrap=no", "-b", A.base_dn,
                                     "(sAMAccountName=noimap)", "protocolSettings"],
                      A.bind_dn, A.bind_password)
    vals = dc_a.search(A.base_dn, "(sAMAccountName=noimap)", ["protocolSettings"])[0]["protocolSettings"]
    assert f"IMAP4{SECTION}0{SECTION}1{SECTION}4{SECTION * 6}" in vals
    assert "IMAP4\u00a70".encode("utf-8") == b"IMAP4\xc2\xa70" and "protocolSettings::" in r.stdout
    # Filter on the disabled-protocol prefix, with the § in the filter.
    hits = dc_a.search(A.base_dn, f"(protocolSettings=POP3{SECTION}0*)", ["sAMAccountName"])
    assert [h.first("sAMAccountName") for h in hits] == ["nopop"]


def test_names_are_case_insensitive(dc_a):
    for flt in ["(sAMAccountName=TUSER)", "(userPrincipalName=TUSER.UPN@UPN.Uclabor.DE)",
                "(proxyAddresses=smtp:TESTALIAS@uclabor.de)", "(mailNickname=TestAlias)"]:
        hits = dc_a.search(A.base_dn, flt, ["sAMAccountName"])
        assert [h.first("sAMAccountName") for h in hits] == ["tuser"], flt
    db = A.databases["DB01"].dn.upper()
    hits = dc_a.search(A.base_dn, f"(homeMDB={db.replace('(', chr(92) + '28').replace(')', chr(92) + '29')})",
                       ["sAMAccountName"])
    assert {h.first("sAMAccountName") for h in hits} == {
        a.sam for a in A.accounts.values() if a.database == "DB01" and a.domain is A.root}


def test_user_bind(dc_a):
    for key in ["tuser", "other", "hmueller", "nombx", "svc", "childonly", "childtuser"]:
        a = A.accounts[key]
        assert dc_a.bind(a.dn, a.password) == 0, key
        assert dc_a.bind(a.dn, a.password + "x") == 49, key
    # The DN as the server returns it (lower-case types, \2C) works as well.
    h = dc_a.search(A.base_dn, "(sAMAccountName=hmueller)", ["1.1"])[0]
    assert dc_a.bind(h.dn, A.passwords["hmueller"]) == 0
    assert dc_a.whoami(h.dn, A.passwords["hmueller"]).lower().startswith("dn:cn=m")
    # Disabled: the right password fails too (as in AD, where it is 49/533).
    d = A.accounts["disuser"]
    assert dc_a.bind(d.dn, d.password) == 49
    # Unknown DN: 49.
    assert dc_a.bind("CN=nobody,CN=Users," + A.base_dn, "x") == 49
    # DN + empty password: an unauthenticated bind that *succeeds*, as in AD.
    assert dc_a.bind(A.accounts["tuser"].dn, "") == 0
    assert dc_a.whoami(A.accounts["tuser"].dn, "") == "anonymous"


def test_anonymous_sees_nothing(dc_a):
    # AD answers an anonymous search with operationsError (1); OpenLDAP
    # hides the base entry instead: noSuchObject (32).  Either way, nothing.
    with pytest.raises(LdapError) as e:
        dc_a.search(A.base_dn, "(sAMAccountName=tuser)", as_bind_account=False)
    assert e.value.rc == 32


def test_bitand_finds_disabled(dc_a):
    hits = dc_a.search(A.base_dn, DISABLED, ["sAMAccountName"])
    want = {a.sam for a in A.accounts.values() if not a.enabled and a.domain is A.root}
    assert {h.first("sAMAccountName") for h in hits} == want == {"disuser", "shared"}
    enabled = dc_a.search(A.base_dn, "(&(objectClass=user)(sAMAccountName=disuser)"
                          "(!(userAccountControl:1.2.840.113556.1.4.803:=2)))", ["1.1"])
    assert enabled == []
    # The child domain's disabled users are not in the root's naming context.
    assert dc_a.search(A.domain("CHILD").base_dn, DISABLED, ["1.1"]) == []


def test_naming_contexts_are_not_glued(dc_a):
    entries, refs = dc_a.search(A.base_dn, "(sAMAccountName=childonly)", ["1.1"], with_refs=True)
    assert entries == []
    assert any("dc=child,dc=uclabor,dc=de" in r.lower() for r in refs)      # like AD
    hits = dc_a.search(A.base_dn, "(sAMAccountName=tuser)", ["1.1"])
    assert len(hits) == 1 and dn_equal(hits[0].dn, A.accounts["tuser"].dn)
    child = A.domain("CHILD")
    hits = dc_a.search(child.base_dn, "(sAMAccountName=childonly)", ["1.1"])
    assert len(hits) == 1 and dn_equal(hits[0].dn, A.accounts["childonly"].dn)
    hits = dc_a.search(child.base_dn, "(sAMAccountName=tuser)", ["1.1"])
    assert len(hits) == 1 and dn_equal(hits[0].dn, A.accounts["childtuser"].dn)
    # Without referrals the search result is the same, minus the references.
    nref = Slapd(os.path.join(os.path.dirname(dc_a.workdir), "a-noref"), A.suffixes,
                 ldif=A.ldif(), bind_dn=A.bind_dn, bind_password=A.bind_password,
                 admin_dn=A.admin_dn, root_dse=A.root_dse("dc2.uclabor.de"), referrals=False)
    with nref:
        entries, refs = nref.search(A.base_dn, "(objectClass=*)", ["1.1"], with_refs=True)
        assert refs == [] and len(entries) > 5
        assert not any("child" in e.dn.lower() or "configuration" in e.dn.lower() for e in entries)


def test_crossref_discovery(dc_a):
    hits = dc_a.search(A.partitions_dn, ALL_DOMAINS, ["nETBIOSName", "dnsRoot", "nCName"])
    got = {h.first("nETBIOSName"): (h.first("dnsRoot"), h.first("nCName")) for h in hits}
    assert got == {"UCLABOR": ("uclabor.de", "DC=uclabor,DC=de"),
                   "CHILD": ("child.uclabor.de", "DC=child,DC=uclabor,DC=de")}
    for typed in ["UCLABOR", "uclabor", "Child"]:
        hits = dc_a.search(A.partitions_dn, DISCOVERY.format(typed), ["nCName", "dnsRoot"])
        assert len(hits) == 1, typed
    # By DNS name.
    hits = dc_a.search(A.partitions_dn, "(&(objectClass=crossRef)(dnsRoot=Child.Uclabor.De)"
                       "(systemFlags:1.2.840.113556.1.4.803:=2))", ["nETBIOSName"])
    assert [h.first("nETBIOSName") for h in hits] == ["CHILD"]
    # Non-domain crossRefs exist but the flag filter drops them.
    assert len(dc_a.search(A.partitions_dn, "(objectClass=crossRef)", ["1.1"])) == 5
    p = dc_a.search(A.partitions_dn, "(objectClass=crossRefContainer)", ["uPNSuffixes"],
                    scope="base")[0]
    assert p["uPNSuffixes"] == ["upn.uclabor.de"]


def test_database_to_backend_host(dc_a):
    t = dc_a.search(A.base_dn, "(sAMAccountName=tuser)", ["homeMDB"])[0]
    db = dc_a.search(t.first("homeMDB"), "(objectClass=msExchMDB)", ["msExchOwningServer", "cn"],
                     scope="base")[0]
    srv = dc_a.search(db.first("msExchOwningServer"), "(objectClass=msExchExchangeServer)",
                      ["dNSHostName"], scope="base")[0]
    assert srv.first("dNSHostName") == A.backend_hosts[db.first("cn")] == "mbx1.uclabor.de"
    dbs = dc_a.search(A.config_dn, "(objectClass=msExchPrivateMDB)", ["cn"])
    assert sorted(d.first("cn") for d in dbs) == ["DB01", "DB02"]


def test_pause_resume(dc_a):
    dc_a.pause()
    try:
        assert not dc_a.answers(timeout=1.0)
        t0 = time.monotonic()
        with pytest.raises(LdapTimeout):
            dc_a.search(A.base_dn, "(sAMAccountName=tuser)", ["1.1"], timeout=1.0)
        assert time.monotonic() - t0 < 3
    finally:
        dc_a.resume()
    assert dc_a.answers(timeout=1.0)
    assert len(dc_a.search(A.base_dn, "(sAMAccountName=tuser)", ["1.1"], timeout=1.0)) == 1


def test_runtime_modify(dc_a):
    d = A.accounts["disuser"]
    try:
        assert dc_a.set_enabled(d.dn, True) == 512
        assert dc_a.bind(d.dn, d.password) == 0
        assert dc_a.search(A.base_dn, "(&(sAMAccountName=disuser)"
                           "(!(userAccountControl:1.2.840.113556.1.4.803:=2)))", ["1.1"])
    finally:
        assert dc_a.set_enabled(d.dn, False) == 514
    assert dc_a.bind(d.dn, d.password) == 49
    t = A.accounts["tuser"]
    try:
        dc_a.replace(t.dn, "userPrincipalName", "renamed@uclabor.de")
        assert dc_a.search(A.base_dn, "(userPrincipalName=renamed@uclabor.de)", ["1.1"])
    finally:
        dc_a.replace(t.dn, "userPrincipalName", t.upn)
    assert dc_a.search(A.base_dn, f"(userPrincipalName={t.upn})", ["1.1"])
    assert "MOD dn=" in dc_a.log_text() and "BIND dn=" in dc_a.log_text()


# --------------------------------------------------------------- setup B
def test_linked_mailbox_by_escaped_sid(dc_res, dc_acc):
    auser = B.acc.accounts["auser"]
    a = dc_acc.search(B.acc.base_dn, "(sAMAccountName=auser)", ["objectSid", "userPrincipalName"])
    assert len(a) == 1 and a[0].first("objectSid") == auser.sid_bytes
    esc = "".join(f"\\{b:02x}" for b in a[0].first("objectSid"))
    assert esc.startswith("\\01\\05\\00\\00\\00\\00\\00\\05\\15\\00\\00\\00")
    hits = dc_res.search(B.res.base_dn, f"(msExchMasterAccountSid={esc})",
                         ["mailNickname", "userAccountControl", "msExchRecipientTypeDetails",
                          "homeMDB", "proxyAddresses"])
    assert len(hits) == 1
    h = hits[0]
    assert dn_equal(h.dn, B.res.accounts["linked"].dn)
    assert h.first("mailNickname") == "linked" and h.first("userAccountControl") == "514"
    assert h.first("msExchRecipientTypeDetails") == "2"
    assert h["proxyAddresses"] == ["SMTP:linked@res.example"]
    # Upper-case hex escapes work too; two mailboxes for twolinks.
    two = B.acc.accounts["twolinks"].sid_filter.upper()
    assert len(dc_res.search(B.res.base_dn, f"(msExchMasterAccountSid={two})", ["1.1"])) == 2
    # objectSid search in the account forest.
    hits = dc_acc.search(B.acc.base_dn, f"(objectSid={auser.sid_filter})", ["sAMAccountName"])
    assert [x.first("sAMAccountName") for x in hits] == ["auser"]


def test_setup_b_domains(dc_res, dc_acc):
    for dc, forest, want in [(dc_res, B.res, {"RES", "RESDEV"}), (dc_acc, B.acc, {"ACC", "ACC2"})]:
        hits = dc.search(forest.partitions_dn, ALL_DOMAINS, ["nETBIOSName", "dnsRoot", "nCName"])
        assert {h.first("nETBIOSName") for h in hits} == want
        for h in hits:
            d = forest.domain(h.first("nETBIOSName"))
            assert h.first("dnsRoot") == d.dns and dn_equal(h.first("nCName"), d.base_dn)
    # dupuser: one per domain of the account forest, so ambiguous forest-wide.
    per = [sam(dc_acc, d.base_dn, "dupuser") for d in B.acc.domains.values()]
    assert [len(p) for p in per] == [1, 1]
    assert len(sam(dc_acc, B.acc.base_dn, "dupuser")) == 1        # not glued
    # RES\auser exists and is disabled; devuser only in RESDEV.
    r = dc_res.search(B.res.base_dn, "(sAMAccountName=auser)", ["userAccountControl"])
    assert [x.first("userAccountControl") for x in r] == ["514"]
    assert sam(dc_res, B.res.base_dn, "devuser") == []
    assert len(sam(dc_res, B.res.domain("RESDEV").base_dn, "devuser")) == 1
    # Binds go to each forest's own server.
    au = B.acc.accounts["auser"]
    assert dc_acc.bind(au.dn, au.password) == 0
    assert dc_res.bind(au.dn, au.password) == 49        # not in this forest
    assert dc_res.bind(B.res.bind_dn, B.res.bind_password) == 0
    assert dc_acc.bind(B.acc.bind_dn, B.acc.bind_password) == 0


def test_setup_b_runtime_variants(dc_res, dc_acc):
    ra = B.res.accounts["auser"]
    assert dc_res.bind(ra.dn, ra.password) == 49
    try:
        dc_res.set_enabled(ra.dn, True)
        assert dc_res.bind(ra.dn, ra.password) == 0
        hits = dc_res.search(B.res.base_dn, "(&(sAMAccountName=auser)"
                             "(!(userAccountControl:1.2.840.113556.1.4.803:=2)))", ["1.1"])
        assert len(hits) == 1
    finally:
        dc_res.set_enabled(ra.dn, False)
    lk = B.res.accounts["linked"]
    upn = "(userPrincipalName=auser@acc.example)"
    assert len(dc_res.search(B.res.base_dn, upn, ["1.1"])) == 0
    try:
        dc_res.replace(lk.dn, "userPrincipalName", "auser@acc.example")
        found = (dc_res.search(B.res.base_dn, upn, ["1.1"])
                 + dc_acc.search(B.acc.base_dn, upn, ["1.1"]))
        assert len(found) == 2
    finally:
        dc_res.replace(lk.dn, "userPrincipalName", lk.upn)
    assert len(dc_res.search(B.res.base_dn, upn, ["1.1"])) == 0


def test_failover_replica_and_global_catalog(root, dc_acc):
    # A second DC of the same forest: same data, other port.
    dc2 = Slapd.for_forest(os.path.join(root, "acc-dc2"), B.acc, host_name="dc2.acc.example")
    gc = Slapd.for_forest(os.path.join(root, "acc-gc"), B.acc, global_catalog=True,
                          host_name="dc1.acc.example")
    with dc2, gc:
        assert dc2.port != dc_acc.port
        a1 = dc_acc.search(B.acc.base_dn, "(sAMAccountName=auser)", ["objectSid"])
        a2 = dc2.search(B.acc.base_dn, "(sAMAccountName=auser)", ["objectSid"])
        assert a1[0].first("objectSid") == a2[0].first("objectSid")
        dc_acc.pause()
        try:
            assert not dc_acc.answers(0.5) and dc2.answers(0.5)
        finally:
            dc_acc.resume()
        # kill + start again: same port, same data.
        port = dc2.port
        dc2.kill()
        assert not dc2.answers(0.5)
        dc2.start()
        assert dc2.port == port and len(dc2.search(B.acc.base_dn, "(sAMAccountName=auser)")) == 1
        # The GC: one search over every domain of the forest.
        hits = gc.search("", "(&(objectClass=user)(sAMAccountName=dupuser))", ["1.1"])
        assert len(hits) == 2
        hits = gc.search(B.acc.base_dn, "(&(objectClass=user)(sAMAccountName=euuser))", ["1.1"])
        assert len(hits) == 1 and dn_equal(hits[0].dn, B.acc.accounts["euuser"].dn)
        assert gc.root_dse_entry()["isGlobalCatalogReady"] == ["TRUE"]
        eu = B.acc.accounts["euuser"]
        assert gc.bind(eu.dn, eu.password) == 0

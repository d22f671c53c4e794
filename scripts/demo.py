"""The demo: forestgate resolving Exchange-style logon names against a small
directory (an LDIF file: domain DEMO / demo.example, one forest), in front of
a Dovecot that holds the mailboxes and trusts forestgate as a master user.

Ports default to 1143 (IMAP), 1110 (POP3), 1993 (IMAP over TLS) and 1995
(POP3 over TLS) and can be changed with FG_DEMO_IMAP_PORT, FG_DEMO_POP3_PORT,
FG_DEMO_IMAPS_PORT and FG_DEMO_POP3S_PORT. The TLS certificate is a fresh
self-signed ECDSA P-256 one for localhost and 127.0.0.1. Everything lives in a
temporary folder that is removed on exit.
"""

import os
import base64
import hashlib
import signal
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.lib.dovecot import Dovecot  # noqa: E402
from tests.lib.forestgate import Forestgate, wait_port  # noqa: E402

USERS = {"alice": "alice-pw", "bob": "b0b pass wörd", "carol": 'c"a(r)o{l}+'}
MASTER, MASTER_PW = "fgmaster", "demo-master-pw"
BASE = "DC=demo,DC=example"
CONF = f"CN=Configuration,{BASE}"


def ssha(password: str) -> str:
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def sid(rid: int) -> bytes:
    """S-1-5-21-7-8-9-RID in binary (MS-DTYP 2.4.2.2)."""
    return (bytes([1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0]) +
            b"".join(x.to_bytes(4, "little") for x in (7, 8, 9, rid)))


def full_access_sd(*sids: bytes) -> bytes:
    """A mailbox's msExchMailboxSecurityDescriptor as Exchange writes it
    (self-relative, owner and group SYSTEM): Full Access and read permission
    (CC, RC) for SELF and for each SID given."""
    system, self_ = bytes([1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0]), bytes([1, 1, 0, 0, 0, 0, 0, 5,
                                                                          10, 0, 0, 0])
    aces = b"".join(bytes([0, 2]) + (8 + len(s)).to_bytes(2, "little") +
                    (0x20001).to_bytes(4, "little") + s for s in (self_, *sids))
    dacl = bytes([4, 0]) + (8 + len(aces)).to_bytes(2, "little") + \
        (1 + len(sids)).to_bytes(2, "little") + bytes(2) + aces
    head = bytes([1, 0, 0x04, 0x80]) + b"".join(o.to_bytes(4, "little") for o in (20, 32, 0, 44))
    return head + system + system + dacl


def demo_ldif() -> str:
    """The directory: DEMO\\alice, bob and carol with mailboxes in DB01; bob's
    mailbox gives alice full access (DEMO\\alice\\bob)."""
    out = [f"dn: CN=DEMO,CN=Partitions,{CONF}\nobjectClass: crossRef\nnETBIOSName: DEMO\n"
           f"dnsRoot: demo.example\nnCName: {BASE}\nsystemFlags: 3\n",
           f"dn: CN=DB01,CN=Databases,{CONF}\nobjectClass: msExchMDB\n"]
    for i, (user, pw) in enumerate(USERS.items()):
        b64 = base64.b64encode(sid(1100 + i)).decode()
        entry = (f"dn: CN={user},CN=Users,{BASE}\nobjectClass: user\nsAMAccountName: {user}\n"
                 f"userPrincipalName: {user}@demo.example\nobjectSid:: {b64}\n"
                 f"userAccountControl: 512\nmailNickname: {user}\n"
                 f"homeMDB: CN=DB01,CN=Databases,{CONF}\n"
                 f"proxyAddresses: SMTP:{user}@demo.example\nuserPassword: {ssha(pw)}\n")
        if user == "bob":
            # Full Access for alice where Exchange keeps it (DelegateCheck's
            # default), and the auto-mapping back link beside it.
            sd = base64.b64encode(full_access_sd(sid(1100))).decode()
            entry += (f"msExchMailboxSecurityDescriptor:: {sd}\n"
                      f"msExchDelegateListLink: CN=alice,CN=Users,{BASE}\n")
        out.append(entry)
    return "\n".join(out)


def follow(path, stop):
    """Copies forestgate's event log to the terminal as it grows."""
    with open(path, errors="replace") as f:
        while not stop.is_set():
            line = f.readline()
            if line:
                sys.stdout.write("  log | " + line)
                sys.stdout.flush()
            else:
                time.sleep(0.2)


def make_cert(d):
    """A self-signed certificate for localhost: d/localhost.crt and .key."""
    os.makedirs(d, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", os.path.join(d, "localhost.key"),
                    "-out", os.path.join(d, "localhost.crt")], check=True, capture_output=True)
    return os.path.join(d, "localhost.crt")


def main():
    imap_port = int(os.environ.get("FG_DEMO_IMAP_PORT", "1143"))
    pop3_port = int(os.environ.get("FG_DEMO_POP3_PORT", "1110"))
    imaps_port = int(os.environ.get("FG_DEMO_IMAPS_PORT", "1993"))
    pop3s_port = int(os.environ.get("FG_DEMO_POP3S_PORT", "1995"))
    work = tempfile.mkdtemp(prefix="forestgate-demo-", dir="/tmp")
    os.chmod(work, 0o755)
    cert = make_cert(os.path.join(work, "certs"))
    # The mailbox server: forestgate logs in as its master user, for the
    # mailbox the directory chose; the passwords are the directory's.
    dc = Dovecot(os.path.join(work, "dovecot"), {u: "unused-" + u for u in USERS},
                 master_users={MASTER: MASTER_PW})
    ldif = os.path.join(work, "demo.ldif")
    with open(ldif, "w") as f:
        f.write(demo_ldif())
    pwfile = os.path.join(work, "master.pw")
    with open(pwfile, "w") as f:
        f.write(MASTER_PW + "\n")
    fg = None
    stop = threading.Event()
    try:
        dc.start()
        for user in USERS:
            dc.deliver(user, (f"From: forestgate demo <demo@example.org>\r\nTo: {user}\r\n"
                              f"Subject: Welcome, {user}\r\n\r\nThis message reached you through "
                              f"forestgate.\r\n").encode())
        fg = Forestgate(os.path.join(work, "forestgate"), dc.imap_port, dc.pop3_port,
                        settings={"global": {"Workers": "0",
                                             "CertificateDirectory": os.path.dirname(cert)},
                                  "imap": {"UnencryptedOrTLSBindings": f"127.0.0.1:{imap_port}",
                                           "SSLBindings": f"127.0.0.1:{imaps_port}",
                                           "X509CertificateName": "localhost",
                                           "ProtocolLogEnabled": "true"},
                                  "pop3": {"UnencryptedOrTLSBindings": f"127.0.0.1:{pop3_port}",
                                           "SSLBindings": f"127.0.0.1:{pop3s_port}",
                                           "X509CertificateName": "localhost",
                                           "LoginType": "SecureLogin"},
                                  "backend": {"LoginMode": "MasterUser", "MasterUser": MASTER,
                                              "MasterPasswordFile": pwfile},
                                  "forest:demo": {"Role": "Organization", "Ldif": ldif},
                                  "databases": {"DB01": "127.0.0.1"}})
        fg.imap_port, fg.pop3_port = imap_port, pop3_port
        fg.start()
        wait_port(imap_port)
        print(f"""
forestgate is running in front of a private Dovecot ({work}).

  config:        {fg.config_path}
  stats socket:  {fg.stats_path}
                 python3 -c "import socket as s; c=s.socket(s.AF_UNIX); c.connect('{fg.stats_path}'); c.send(b'show info\\n'); print(c.recv(9999).decode())"
  protocol log:  {work}/forestgate/imap-protocol.log

Directory: {ldif} (domain DEMO / demo.example)
Users: {", ".join(f"{u} / {p}" for u, p in USERS.items())}
Any Exchange form of the name works: alice, DEMO\\alice, demo.example\\alice,
alice@demo.example, and DEMO\\alice\\bob opens bob's mailbox (alice has full
access to it); DEMO\\bob\\alice is refused.

IMAP with curl (list, then fetch message 1):
  curl -u alice:alice-pw imap://127.0.0.1:{imap_port}/
  curl -u alice:alice-pw 'imap://127.0.0.1:{imap_port}/INBOX;UID=1'
  curl -u 'DEMO\\alice\\bob:alice-pw' 'imap://127.0.0.1:{imap_port}/INBOX;UID=1'
Over TLS (the certificate is {cert}):
  curl --cacert {cert} -u alice:alice-pw 'imaps://127.0.0.1:{imaps_port}/INBOX;UID=1'
  curl --cacert {cert} -u alice:alice-pw --ssl-reqd 'imap://127.0.0.1:{imap_port}/INBOX;UID=1'
  curl --cacert {cert} -u alice:alice-pw pop3s://127.0.0.1:{pop3s_port}/1
  openssl s_client -quiet -CAfile {cert} -connect 127.0.0.1:{imaps_port}
  openssl s_client -quiet -CAfile {cert} -connect 127.0.0.1:{pop3_port} -starttls pop3
POP3 (LoginType = SecureLogin: a password only inside TLS):
  curl -u alice:alice-pw pop3://127.0.0.1:{pop3_port}/1                    (refused: TLS required)
  curl --cacert {cert} -u alice:alice-pw --ssl-reqd pop3://127.0.0.1:{pop3_port}/1
By hand (telnet for IMAP, which allows LOGIN in clear in this demo):
  telnet 127.0.0.1 {imap_port}
    a LOGIN alice alice-pw
    b SELECT INBOX
    c FETCH 1 BODY[]
    d LOGOUT
  openssl s_client -quiet -CAfile {cert} -connect 127.0.0.1:{pop3s_port}
    USER bob
    PASS b0b pass wörd
    RETR 1
    QUIT
Python:
  python3 -c "import imaplib; m=imaplib.IMAP4('127.0.0.1',{imap_port}); print(m.login('alice','alice-pw'))"

Ctrl-C stops forestgate and Dovecot.
""", flush=True)
        threading.Thread(target=follow, args=(fg.log_path, stop), daemon=True).start()
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        stop.set()
        if fg:
            fg.stop()
        dc.stop()
        shutil.rmtree(work, ignore_errors=True)
        print("demo stopped")


if __name__ == "__main__":
    # A background job may inherit SIGINT ignored, and an ignored signal is
    # discarded even while blocked: install a handler, then block and wait.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    main()

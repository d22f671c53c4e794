"""scripts/demo.py, the README's first command's main job: it starts, serves
its directory's users in every Exchange name form (clear text, STARTTLS and
implicit TLS), refuses what it should, and stops cleanly on Ctrl-C."""

import os
import re
import signal
import subprocess
import sys
import time

from tests.lib.forestgate import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def curl(*args):
    r = subprocess.run(["curl", "-sS", "--max-time", "15", *args], capture_output=True,
                       timeout=30)
    return r.returncode, r.stdout.decode(errors="replace")


def test_demo_serves_the_directory_users():
    ports = {k: free_port() for k in ("IMAP", "POP3", "IMAPS", "POP3S")}
    env = dict(os.environ, **{f"FG_DEMO_{k}_PORT": str(v) for k, v in ports.items()})
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "demo.py")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    out = b""
    try:
        deadline = time.monotonic() + 60
        while b"Ctrl-C stops" not in out and time.monotonic() < deadline:
            out += proc.stdout.read1(65536)
        text = out.decode(errors="replace")
        assert "Ctrl-C stops" in text, text
        cert = re.search(r"(/tmp/forestgate-demo-\S+/localhost\.crt)", text).group(1)
        imap, pop3 = ports["IMAP"], ports["POP3"]
        rc, body = curl("-u", "alice:alice-pw", f"imap://127.0.0.1:{imap}/INBOX;UID=1")
        assert rc == 0 and "Welcome, alice" in body
        rc, body = curl("-u", "DEMO\\alice\\bob:alice-pw", f"imap://127.0.0.1:{imap}/INBOX;UID=1")
        assert rc == 0 and "Welcome, bob" in body
        rc, body = curl("-u", "DEMO\\bob\\alice:b0b pass wörd",
                        f"imap://127.0.0.1:{imap}/INBOX;UID=1")
        assert rc != 0
        rc, body = curl("--cacert", cert, "-u", "carol@demo.example:c\"a(r)o{l}+",
                        f"imaps://127.0.0.1:{ports['IMAPS']}/INBOX;UID=1")
        assert rc == 0 and "Welcome, carol" in body
        # POP3 is SecureLogin in the demo: refused in clear, fine over STLS.
        rc, _ = curl("-u", "bob:b0b pass wörd", f"pop3://127.0.0.1:{pop3}/1")
        assert rc != 0
        rc, body = curl("--cacert", cert, "--ssl-reqd", "-u", "bob:b0b pass wörd",
                        f"pop3://127.0.0.1:{pop3}/1")
        assert rc == 0 and "Welcome, bob" in body
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, (out + rest).decode(errors="replace")
    assert b"demo stopped" in out + rest

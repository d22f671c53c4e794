"""Fixtures: one real Dovecot backend for the whole run, forestgate per test."""

import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.lib.dovecot import Dovecot  # noqa: E402
from tests.lib.forestgate import Forestgate  # noqa: E402
from tests.lib.mock import Mock  # noqa: E402

# Passwords of every class a client can send (RFC 3501 atoms, quoted strings and literals; SASL PLAIN; POP3 PASS), by user name.
PASSWORDS = {
    "alice": "secret",
    "plus": "a+b+c",
    "slash": "a/b/c",
    "amp": "a&b",
    "percent": "50%off",
    "parens": "(x)y",
    "equals": "a=b==",
    "question": "why?",
    "brackets": "[a]b]",
    "backslash": "back\\slash\\",
    "quote": 'say "hi"',
    "braces": "{5}{5+}",
    "space": "correct horse battery",
    "lead": " leading",
    "trail": "trailing ",
    "utf8": "pässwörd€",
    "emoji": "🔑key",
    "mixed": 'x+/&%()=?[]\\"{} é',
}
MASTER_USER, MASTER_PASSWORD = "proxymaster", "m@ster pw"


@pytest.fixture(scope="session")
def workroot():
    # /tmp keeps every parent folder world-searchable, as Dovecot needs.
    d = tempfile.mkdtemp(prefix="fg-it-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    if not os.environ.get("FG_KEEP"):
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot(workroot):
    dc = Dovecot(os.path.join(workroot, "dovecot"), dict(PASSWORDS),
                 master_users={MASTER_USER: MASTER_PASSWORD}, process_limit=3000)
    dc.start()
    yield dc
    dc.stop()


_counter = [0]


@pytest.fixture
def make_fg(workroot, dovecot):
    """Builds forestgate instances in front of the shared Dovecot; stops them after the test."""
    started = []

    def make(settings=None, start=True, **kw):
        """kw: Forestgate's (workers, hosts ...) and the backend ports."""
        _counter[0] += 1
        fg = Forestgate(os.path.join(workroot, f"fg{_counter[0]}"),
                        imap_backend_port=kw.pop("imap_backend_port", dovecot.imap_port),
                        pop3_backend_port=kw.pop("pop3_backend_port", dovecot.pop3_port),
                        settings=settings, **kw)
        started.append(fg)
        return fg.start() if start else fg

    yield make
    for fg in started:
        assert fg.stop() == 0, fg.log_text()


@pytest.fixture
def fg(make_fg):
    return make_fg()


@pytest.fixture
def make_mock(tmp_path):
    """Starts MOCK backends (forestgate-bench --serve); stops them after the test."""
    started = []

    def make(*args, **kw):
        m = Mock(tmp_path, *args, **kw)
        started.append(m)
        return m

    yield make
    for m in started:
        assert m.stop() == 0, m.log_text()

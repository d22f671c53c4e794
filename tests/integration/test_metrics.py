"""Prometheus metrics, end to end: GET /metrics on MetricsBinding and the
stats socket's "show metrics", with LDIF forests in front of two real
Dovecots (the fixtures of test_directory_ldif.py), imaplib and poplib as
the clients.

- both outputs pass Prometheus's own checker (promtool check metrics) and
  parse with prometheus_client's parser;
- the counters match known traffic: logons by protocol, result and name
  form, the latency histograms' counts, relayed bytes, the connections
  gauge by phase while sessions are open;
- HTTP: 404, 405, 400, 431, HEAD; a client that sends a byte a second (and
  fifty of them at once) holds up neither a scrape nor a logon, and is
  closed at its deadline;
- a bad MetricsBinding is refused with file:line: reason;
- contrib/grafana/forestgate.json is valid JSON whose queries name only
  metrics that a real /metrics output has.
"""

import http.client
import imaplib
import json
import os
import re
import socket
import subprocess
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration import test_directory_ldif as ldif_suite
from tests.ldap.fixtures import setup_a
from tests.lib.forestgate import binary, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UPN_ALIAS = "tuser.upn@upn.uclabor.de\\other"


@pytest.fixture(scope="module")
def env(workroot):
    A = setup_a()
    servers, ip, pp = ldif_suite.mailbox_servers(workroot, "metrics", A)
    port = free_port()
    fg = ldif_suite.gateway(workroot, "fg-metrics", [("uclabor", "Organization", A)], ip, pp,
                            extra={"global": {"MetricsBinding": f"127.0.0.1:{port}"}})
    fg.metrics_port = port
    yield A, fg
    assert fg.stop() == 0, fg.log_text()
    for dc in servers.values():
        dc.stop()


def scrape(fg, method="GET", path="/metrics"):
    c = http.client.HTTPConnection("127.0.0.1", fg.metrics_port, timeout=10)
    c.request(method, path)
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r, body


def samples(text: str) -> dict:
    """{(name, frozenset(labels)): value} through prometheus_client's parser."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def val(smp: dict, name: str, **labels) -> float:
    return smp[(name, frozenset(labels.items()))]


def promtool(text: str) -> None:
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_outputs_pass_promtool_and_the_client_parser(env):
    _, fg = env
    r, body = scrape(fg)
    assert r.status == 200
    assert r.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    assert int(r.getheader("Content-Length")) == len(body.encode())
    assert r.getheader("Connection") == "close"
    shown = fg.stats("show metrics")["text"]
    for text in (body, shown):
        promtool(text)
        smp = samples(text)
        build = [k for k in smp if k[0] == "forestgate_build_info"]
        assert len(build) == 1 and smp[build[0]] == 1
        assert dict(build[0][1])["version"] and dict(build[0][1])["tls_library"].startswith(
            "wolfSSL")
    # Every family is named, typed and helped, in both outputs alike.
    assert [l for l in body.splitlines() if l.startswith("#")] == \
        [l for l in shown.splitlines() if l.startswith("#")]


def test_counters_match_known_traffic(env):
    A, fg = env
    fg.wait_idle()
    before = samples(scrape(fg)[1])
    pw = A.passwords["tuser"]
    assert ldif_suite.imap_login(fg, "tuser", pw)[0]
    assert ldif_suite.imap_login(fg, "tuser", pw)[0]
    assert ldif_suite.imap_login(fg, UPN_ALIAS, pw)[0]
    assert not ldif_suite.imap_login(fg, "tuser", "wrong-password")[0]
    assert not ldif_suite.imap_login(fg, "nosuchuser", "wrong-password")[0]
    assert ldif_suite.pop3_login(fg, "UCLABOR\\tuser", pw)[0]
    fg.wait_idle()
    after = samples(fg.stats("show metrics")["text"])

    def delta(name, **labels):
        return val(after, name, **labels) - val(before, name, **labels)
    logons = "forestgate_logons_total"
    assert delta(logons, protocol="imap", result="ok", form="user") == 2
    assert delta(logons, protocol="imap", result="ok", form="upn_alias") == 1
    assert delta(logons, protocol="imap", result="failed", form="user") == 2
    assert delta(logons, protocol="pop3", result="ok", form="domain_user") == 1
    # Nothing else moved.
    moved = {k: after[k] - before.get(k, 0) for k in after
             if k[0] == logons and after[k] != before.get(k, 0)}
    assert sum(moved.values()) == 6, moved
    # The histograms count every attempt; a directory request per logon (no cache).
    for proto in ("imap", "pop3"):
        total = sum(v for (n, ls), v in after.items()
                    if n == logons and ("protocol", proto) in ls)
        assert val(after, "forestgate_logon_duration_seconds_count", protocol=proto) == total
        assert val(after, "forestgate_logon_duration_seconds_bucket", protocol=proto,
                   le="+Inf") == total
    assert delta("forestgate_directory_request_duration_seconds_count") == 6
    assert delta("forestgate_logon_duration_seconds_sum", protocol="imap") > 0
    assert delta("forestgate_connections_accepted_total", protocol="imap") == 5
    assert delta("forestgate_backend_connects_total") == 4


def test_relayed_bytes_and_connection_gauge(env):
    A, fg = env
    fg.wait_idle()
    before = samples(scrape(fg)[1])
    pw = A.passwords["tuser"]
    sessions = []
    for _ in range(3):
        m = imaplib.IMAP4("127.0.0.1", fg.imap_port, timeout=10)
        m.login("tuser", pw)
        sessions.append(m)
    idle = socket.create_connection(("127.0.0.1", fg.imap_port), timeout=10)
    assert idle.recv(1000).startswith(b"* OK")
    # 2,000 NOOPs in one write: their bytes each way are counted.
    payload = b"".join(b"n%d NOOP\r\n" % i for i in range(2000))
    sessions[0].send(payload)
    got = b""
    while b"n1999 OK" not in got:
        got += sessions[0].readline()
    smp = samples(scrape(fg)[1])
    assert val(smp, "forestgate_connections", protocol="imap", phase="relay") == 3
    assert val(smp, "forestgate_connections", protocol="imap", phase="preauth") == 1
    assert val(smp, "forestgate_connections", protocol="pop3", phase="relay") == 0
    c2b = val(smp, "forestgate_relayed_bytes_total", direction="client_to_backend") - \
        val(before, "forestgate_relayed_bytes_total", direction="client_to_backend")
    b2c = val(smp, "forestgate_relayed_bytes_total", direction="backend_to_client") - \
        val(before, "forestgate_relayed_bytes_total", direction="backend_to_client")
    assert c2b >= len(payload) and b2c >= len(got), (c2b, len(payload), b2c, len(got))
    for m in sessions:
        m.logout()
    idle.close()
    fg.wait_idle()
    smp = samples(scrape(fg)[1])
    assert all(v == 0 for (n, _), v in smp.items() if n == "forestgate_connections")


def raw(fg, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", fg.metrics_port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_http_errors(env):
    _, fg = env
    r, body = scrape(fg, path="/")
    assert r.status == 404 and "forestgate_" not in body
    r, _ = scrape(fg, path="/metricsx")
    assert r.status == 404
    r, _ = scrape(fg, method="POST")
    assert r.status == 405 and r.getheader("Allow") == "GET, HEAD"
    r, body = scrape(fg, method="HEAD")
    assert r.status == 200 and body == "" and int(r.getheader("Content-Length")) > 1000
    r, body = scrape(fg, path="/metrics?name[]=x")
    assert r.status == 200 and "forestgate_logons_total" in body
    assert raw(fg, b"a1 LOGIN user pass\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw(fg, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03").startswith(b"HTTP/1.1 400 ")
    big = b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 8000 + b"\r\n\r\n"
    assert raw(fg, big).startswith(b"HTTP/1.1 431 ")
    # HTTP/1.0, bare LFs: still a request.
    out = raw(fg, b"GET /metrics HTTP/1.0\n\n")
    assert out.startswith(b"HTTP/1.1 200 ") and b"forestgate_build_info" in out


def test_slow_clients_hold_up_neither_a_scrape_nor_a_logon(env):
    A, fg = env
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    slow = [socket.create_connection(("127.0.0.1", fg.metrics_port), timeout=20)
            for _ in range(50)]
    connected = time.monotonic()
    stop = threading.Event()

    def trickle():
        for ch in request[:4]:  # one byte a second, never the whole request
            for s in slow:
                s.send(bytes([ch]))
            if stop.wait(1.0):
                return
    t = threading.Thread(target=trickle)
    t.start()
    try:
        time.sleep(1.5)  # the slow clients are mid-request
        for _ in range(5):
            r, body = scrape(fg)
            assert r.status == 200 and "forestgate_build_info" in body
        assert fg.stats("show metrics")["text"].startswith("# HELP")
        assert ldif_suite.imap_login(fg, "tuser", A.passwords["tuser"])[0]
        # A server that waited for a slow client would have answered none of
        # the scrapes above within their 10 s (50 clients, 5 s each). And,
        # unless this machine took longer than the slow clients' deadline
        # to get here, every one of them is still waiting for its answer:
        # the scrapes and the logon were served meanwhile, not after them.
        if time.monotonic() - connected < 4.0:
            for s in slow:
                s.setblocking(False)
                with pytest.raises(BlockingIOError):
                    s.recv(1)
    finally:
        stop.set()
        t.join()
    # At the request deadline each is closed without an answer.
    for s in slow:
        s.settimeout(20)
        assert s.recv(100) == b""
        s.close()


def test_bad_metrics_binding_is_refused_with_file_and_line(tmp_path):
    path = tmp_path / "fg.ini"
    path.write_text("[global]\nWorkers = 1\nMetricsBinding = 127.0.0.1:notaport\n"
                    "[imap]\nUnencryptedOrTLSBindings = 127.0.0.1:1143\n")
    r = subprocess.run([binary(), "-c", str(path), "--check-config"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0
    assert f"{path}:3: binding \"127.0.0.1:notaport\":" in r.stderr, r.stderr


def test_grafana_dashboard_names_only_real_metrics(env):
    _, fg = env
    with open(os.path.join(ROOT, "contrib", "grafana", "forestgate.json")) as f:
        dash = json.load(f)
    exprs = []

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "expr" and isinstance(v, str):
                    exprs.append(v)
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(dash)
    assert len(exprs) >= 10
    names = {line.split("{")[0].split(" ")[0] for line in scrape(fg)[1].splitlines()
             if line and not line.startswith("#")}
    used = {n for e in exprs for n in re.findall(r"\bforestgate_[a-z0-9_]+", e)}
    assert used and used <= names, used - names

"""forestgate-refpoints: the machine's reference points, as JSON on stdout.

The binary is FGB_REFPOINTS from the environment, else build/bench/forestgate-refpoints.
A missing binary fails every test: a benchmark run without its reference points
would be read against nothing.
"""

import json
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SANITIZER_RE = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|"
                          r"SUMMARY: (Address|Undefined|Leak)Sanitizer")

TCP_KEYS = ["loopback_tcp_mb_per_s"]
AES_KEYS = ["aes_128_gcm_mb_per_s", "aes_256_gcm_mb_per_s"]
CHACHA_KEY = "chacha20_poly1305_mb_per_s"
ECDSA_KEYS = ["ecdsa_p256_sign_per_s", "ecdsa_p256_verify_per_s"]
FIGURES = TCP_KEYS + AES_KEYS + [CHACHA_KEY] + ECDSA_KEYS
STRINGS = ["cpu_model", "wolfssl_version", "wolfssl_build"]


def binary() -> str:
    path = os.environ.get("FGB_REFPOINTS",
                          os.path.join(ROOT, "build", "bench", "forestgate-refpoints"))
    if not os.access(path, os.X_OK):
        pytest.fail(f"forestgate-refpoints not found at {path}: build it "
                    f"(meson compile -C build) or set FGB_REFPOINTS", pytrace=False)
    return path


def run(*args, timeout=60):
    r = subprocess.run([binary(), *args], capture_output=True, text=True, timeout=timeout)
    assert not SANITIZER_RE.search(r.stderr), r.stderr
    return r


def measure(*args):
    r = run("--seconds", "0.2", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def is_positive_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def expected_figures(doc):
    # ChaCha20-Poly1305 is measured only when the linked wolfSSL has it.
    keys = list(FIGURES)
    if "CHACHA20_POLY1305" not in doc["wolfssl_features"]:
        keys.remove(CHACHA_KEY)
    return keys


def test_every_figure_is_a_positive_number():
    doc = measure()
    for key in expected_figures(doc):
        assert key in doc, f"{key} missing from {doc}"
        assert is_positive_number(doc[key]), f"{key} = {doc[key]!r}"
    assert isinstance(doc["cpus"], int) and doc["cpus"] > 0
    for key in STRINGS:
        assert isinstance(doc[key], str) and doc[key], f"{key} = {doc.get(key)!r}"
    assert doc["wolfssl_aesni"] in (True, False, None)
    assert doc["wolfssl_aesni_used"] in (True, False, None)
    assert isinstance(doc["wolfssl_features"], list)


def test_aes_ni_used_only_when_built_in():
    doc = measure("--only", "aes")
    if doc["wolfssl_aesni"] is False:
        assert doc["wolfssl_aesni_used"] is False
    # The fast build of scripts/wolfssl.sh must really take the AES-NI path.
    if "built for speed" in doc["wolfssl_build"]:
        assert doc["wolfssl_aesni"] is True and doc["wolfssl_aesni_used"] is True, doc


def test_human_summary_goes_to_stderr():
    r = run("--seconds", "0.2", "--only", "tcp")
    assert r.returncode == 0, r.stderr
    assert "loopback TCP" in r.stderr
    json.loads(r.stdout)  # stdout holds the JSON alone


@pytest.mark.parametrize("args, present", [
    (["--only", "tcp"], TCP_KEYS),
    (["--only", "ecdsa"], ECDSA_KEYS),
    (["--only", "tcp,ecdsa"], TCP_KEYS + ECDSA_KEYS),
    (["--only=aes", "--only", "tcp"], AES_KEYS + TCP_KEYS),
])
def test_only_selects_groups(args, present):
    doc = measure(*args)
    for key in present:
        assert is_positive_number(doc.get(key)), f"{key} = {doc.get(key)!r}"
    for key in set(FIGURES) - set(present) - {CHACHA_KEY}:
        assert key not in doc, f"{key} measured with {args}"


@pytest.mark.parametrize("args, says", [
    (["--bogus"], "unknown option '--bogus'"),
    (["--seconds"], "--seconds needs a value"),
    (["--seconds", "abc"], "'abc' is not a duration"),
    (["--seconds", "0"], "'0' is not a duration"),
    (["--seconds=-1"], "'-1' is not a duration"),
    (["--only", "udp"], "'udp' is not one of tcp, aes, ecdsa"),
    (["--only"], "--only needs a value"),
])
def test_bad_option_exits_2_with_a_message(args, says):
    r = run(*args, timeout=10)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert says in r.stderr
    assert "--help" in r.stderr
    assert r.stdout == ""


def test_help():
    r = run("--help", timeout=10)
    assert r.returncode == 0
    assert "usage: forestgate-refpoints" in r.stdout

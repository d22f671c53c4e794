"""The throttle's fleet store: two forestgate instances that share one real
Redis (ThrottleStore, ThrottleKeyFile) count a spray as one, in front of a
real slapd whose accounts lock (its ppolicy overlay stands in for AD's
lockoutThreshold, as in test_throttle.py) and real Dovecots.

    [throttle] ThrottleStore, ThrottleStorePrefix, ThrottleStoreTimeoutMs,
               ThrottleKeyFile
    event=throttle_store_down, event=throttle_store_up
    show info throttle_store, throttle_store_up, throttle_store_*_total

The control first: two instances that count alone let a spray split over
them bind twice AccountFailureThreshold times, which locks the account.
With the store they let AccountFailureThreshold binds through between
them, a place one instance saw succeed is familiar to the other, an
address's failures add up across both, a flush on one is a flush on both,
and Redis holds keyed hashes only. Redis stopped under a load of logons
costs no logon; the instances count alone meanwhile, say so, and share
again once it is back.

    /usr/bin/python3 -m pytest -q tests/integration/test_throttle_store.py
"""

import os
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.test_directory_ldap import stop_ok
from tests.integration.test_throttle import (ACCOUNT_ONLY, ACCT_THRESHOLD, FAILED, MAX_FAILURE,
                                             WRONGS, Delta, addr, binds_as, imap_user, logs_on,
                                             pw, raw_imap, throttle_forest, throttle_gateway,
                                             wrong)
from tests.integration.test_throttle import dc, mbx  # noqa: F401 (the fixtures)
from tests.integration import test_directory_ldif as ldif_suite
from tests.lib.forestgate import binary
from tests.lib.redis import Redis

USERS = ["fcontrol", "fspray", "ffam", "fload", "fload2", "fflush"]
ATTEMPTS = 40
ADDR_THRESHOLD = 6
STORE = {**ACCOUNT_ONLY, "AddressFailureThreshold": str(ADDR_THRESHOLD),
         "AddressFailureDelayMaxMs": "200",
         "AddressFailureWindow": "00:10:00", "AddressBanTime": "00:15:00"}
MINE = []


@pytest.fixture(scope="module")
def forest():
    return throttle_forest(USERS, first_rid=1500)


@pytest.fixture(scope="module")
def redis(workroot):
    r = Redis(os.path.join(workroot, "thr-redis"))
    r.start()
    yield r
    r.stop()


def key_file(workroot, name="throttle.key", data=None, mode=0o600):
    path = os.path.join(workroot, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32) if data is None else data)
    os.chmod(path, mode)
    return path


@pytest.fixture(scope="module")
def keyfile(workroot):
    return key_file(workroot)


def gateway(workroot, name, forest, dc, mbx, throttle):
    fg = throttle_gateway(workroot, name, forest, dc, mbx, throttle)
    MINE.append(fg)
    return fg


@pytest.fixture(scope="module")
def pair(workroot, forest, dc, mbx, redis, keyfile):
    """Two instances sharing the store."""
    store = {**STORE, "ThrottleStore": f"redis://127.0.0.1:{redis.port}",
             "ThrottleKeyFile": keyfile}
    fgs = [gateway(workroot, f"fg-fleet-{n}", forest, dc, mbx, store) for n in "ab"]
    for fg in fgs:
        fg.wait_events("throttle_store_up")
    yield fgs
    for fg in fgs:
        stop_ok(fg)


def spray(fgs, sam, first, tag):
    """ATTEMPTS wrong passwords for sam, each from its own address, dealt in
    turn to the instances, ten at a time: [answer]."""
    def one(i):
        answer, _, _ = raw_imap(fgs[i % len(fgs)], addr(first + i), sam, wrong(tag, i))
        return answer
    with ThreadPoolExecutor(10) as ex:
        return list(ex.map(one, range(ATTEMPTS)))


def test_two_instances_alone_let_a_split_spray_lock_the_account(workroot, forest, dc, mbx):
    """The control: without a store each instance lets its own
    AccountFailureThreshold through, and slapd locks the account."""
    fgs = [gateway(workroot, f"fg-alone-{n}", forest, dc, mbx, ACCOUNT_ONLY) for n in "ab"]
    try:
        dn = forest.accounts["fcontrol"].dn
        mark = dc.log_mark()
        answers = spray(fgs, "fcontrol", 10, "alone")
        binds = binds_as(dc, mark, dn)
        failures, locked = dc.lockout_state(dn)
        print(f"two instances alone: {ATTEMPTS} attempts, {binds} binds, locked {locked}")
        assert answers == [FAILED] * ATTEMPTS
        assert binds == 2 * ACCT_THRESHOLD and binds >= MAX_FAILURE
        assert locked
    finally:
        for fg in fgs:
            stop_ok(fg)


def test_a_split_spray_is_counted_as_one(pair, dc, forest, redis):
    """The same spray over two instances that share Redis: slapd hears
    AccountFailureThreshold binds in all, and the account stays open; Redis
    heard only hashes."""
    dn = forest.accounts["fspray"].dn
    mark, deltas = dc.log_mark(), [Delta(fg) for fg in pair]
    with redis.monitor() as mon:
        answers = spray(pair, "fspray", 60, "fleet")
    for d in deltas:
        d.take()
    binds = binds_as(dc, mark, dn)
    failures, locked = dc.lockout_state(dn)
    print(f"two instances, one store: {ATTEMPTS} attempts, {binds} binds, locked {locked}; "
          f"{deltas}")
    assert answers == [FAILED] * ATTEMPTS
    assert binds == ACCT_THRESHOLD
    assert locked is None and failures == binds
    assert sum(d["throttle_account_failures_total"] for d in deltas) == ACCT_THRESHOLD
    assert sum(d["throttle_account_unfamiliar_total"] for d in deltas) == \
        ATTEMPTS - ACCT_THRESHOLD
    # Both took part: the store, not one instance, held the count.
    assert all(d["throttle_account_unfamiliar_total"] > 0 for d in deltas), deltas
    # What the instances sent, without MONITOR's "[db address]" of each line.
    heard = re.sub(r"\[\d+ [^\]]*\]", "", mon.text())
    assert "eval" in heard.lower(), heard[:2000]
    for secret in ["fspray", dn, "uclabor", "127.0.0."] + [w for w in WRONGS if "fleet" in w]:
        assert secret.lower() not in heard.lower(), secret


def test_a_place_familiar_to_one_is_familiar_to_the_other(pair, dc, forest):
    """The real user logs on through instance a; a spray through b blocks
    unfamiliar places; the user, from the same address, then logs on
    through b, which never saw it succeed."""
    home = addr(200)
    logs_on(imap_user(pair[0], home, "ffam"), "ffam")
    answers = spray([pair[1]], "ffam", 100, "fam")
    assert answers == [FAILED] * ATTEMPTS
    assert raw_imap(pair[1], addr(150), "ffam", pw("ffam"))[0] == FAILED  # unfamiliar: blocked
    logs_on(imap_user(pair[1], home, "ffam"), "ffam")


def wait_learned(fgs, n, before):
    """Until each instance heard n more of the fleet's address counts: the
    store's channel is asynchronous, by design (a worker never waits)."""
    deadline = time.monotonic() + 5
    for fg, b in zip(fgs, before):
        while fg.stats()["throttle_store_learned_total"] < b + n:
            assert time.monotonic() < deadline, fg.stats()
            time.sleep(0.02)


def learned(fgs):
    return [fg.stats()["throttle_store_learned_total"] for fg in fgs]


def test_an_address_fails_across_the_fleet(pair):
    """ADDR_THRESHOLD failures from one address, dealt in turn to the two
    instances (neither sees the threshold itself), refuse it at both, at
    accept."""
    src, before = addr(230), learned(pair)
    for i in range(ADDR_THRESHOLD):
        answer, _, _ = raw_imap(pair[i % 2], src, f"nobody{i}", wrong("addr", i))
        assert answer == FAILED, (i, answer)
    wait_learned(pair, ADDR_THRESHOLD, before)
    for fg in pair:
        answer, _, _ = raw_imap(fg, src, "nobody", wrong("addr", 99))
        assert answer.startswith(b"* BYE [UNAVAILABLE]"), answer


def test_a_flush_on_one_is_a_flush_on_all(pair):
    src, before = addr(231), learned(pair)
    for i in range(ADDR_THRESHOLD):
        raw_imap(pair[i % 2], src, f"nobody{i}", wrong("flush", i))
    wait_learned(pair, ADDR_THRESHOLD, before)
    assert raw_imap(pair[1], src, "x", wrong("flush", 98))[0].startswith(b"* BYE")
    assert pair[0].stats("flush throttle")["text"].startswith("flushed the throttle")
    # The flush reaches b through the store's channel, a moment later.
    deadline = time.monotonic() + 5
    while raw_imap(pair[1], src, "x", wrong("flush", 97))[0].startswith(b"* BYE"):
        assert time.monotonic() < deadline, "instance b still refuses the address"
        time.sleep(0.1)


def test_redis_stopped_and_restarted_under_load(pair, redis, dc, forest):
    """Logons run on both instances while Redis stops and starts again: none
    fails; each says the store is down and then up; meanwhile each counts
    alone (a spray on one instance binds AccountFailureThreshold times); and
    afterwards the fleet shares again."""
    stop, results = threading.Event(), []

    def load(k):
        i = 0
        while not stop.is_set():
            fg, sam = pair[(k + i) % 2], USERS[3 + k]
            results.append(imap_user(fg, addr(210 + k), sam)[0])
            i += 1

    threads = [threading.Thread(target=load, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        redis.kill()
        for fg in pair:
            fg.wait_events("throttle_store_down")
        assert all(fg.stats()["throttle_store_up"] == 0 for fg in pair)
        # Alone meanwhile: instance a's own count still stops a spray.
        dn = forest.accounts["fcontrol"].dn
        dc.unlock(dn)
        mark = dc.log_mark()
        answers = spray([pair[0]], "fcontrol", 20, "down")
        assert answers == [FAILED] * ATTEMPTS
        assert binds_as(dc, mark, dn) == ACCT_THRESHOLD
        time.sleep(1)
        ups = [len(fg.events("throttle_store_up")) for fg in pair]
        redis.start()
        for fg, n in zip(pair, ups):
            fg.wait_events("throttle_store_up", timeout=10)
            deadline = time.monotonic() + 10
            while len(fg.events("throttle_store_up")) <= n:
                assert time.monotonic() < deadline, fg.log_text()[-2000:]
                time.sleep(0.1)
        time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    print(f"{len(results)} logons under load, {results.count(False)} failed")
    assert len(results) > 20 and all(results)
    # Sharing again: a failure through a reaches b.
    before = pair[1].stats()["throttle_store_learned_total"]
    raw_imap(pair[0], addr(232), "nobody", wrong("after", 0))
    deadline = time.monotonic() + 5
    while pair[1].stats()["throttle_store_learned_total"] == before:
        assert time.monotonic() < deadline, pair[1].stats()
        time.sleep(0.1)


def check(workroot, name, throttle):
    """forestgate --check-config on a file with this [throttle]: (rc, output)."""
    d = os.path.join(workroot, name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "forestgate.ini")
    lines = ["[imap]", "UnencryptedOrTLSBindings = 127.0.0.1:1143", "[backend]",
             "DefaultServer = 127.0.0.1", "[throttle]"] + [f"{k} = {v}" for k, v in throttle]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    p = subprocess.run([binary(), "-c", path, "--check-config"], capture_output=True, text=True,
                       timeout=30)
    return p.returncode, p.stdout + p.stderr, path


def test_bad_store_settings_are_named_with_file_and_line(workroot, keyfile):
    rc, out, path = check(workroot, "thr-cfg-nokey", [("ThrottleStore", "redis://127.0.0.1")])
    assert rc != 0 and f"{path}:6:" in out and "needs ThrottleKeyFile" in out, out
    rc, out, path = check(workroot, "thr-cfg-url", [("ThrottleStore", "http://x:s3cret@h"),
                                                    ("ThrottleKeyFile", keyfile)])
    assert rc != 0 and f"{path}:6:" in out and "not a redis:// URL" in out, out
    assert "s3cret" not in out
    rc, out, path = check(workroot, "thr-cfg-port", [("ThrottleStore", "redis://h:99999"),
                                                     ("ThrottleKeyFile", keyfile)])
    assert rc != 0 and "port" in out, out
    short = key_file(workroot, "short.key", b"x" * 31)
    rc, out, path = check(workroot, "thr-cfg-short", [("ThrottleKeyFile", short)])
    assert rc != 0 and f"{path}:6:" in out and "32 to 4096 random bytes" in out, out
    public = key_file(workroot, "public.key", mode=0o644)
    rc, out, path = check(workroot, "thr-cfg-public", [("ThrottleKeyFile", public)])
    assert rc != 0 and "others can read it" in out, out
    rc, out, path = check(workroot, "thr-cfg-prefix", [("ThrottleStorePrefix", "fg*")])
    assert rc != 0 and "ThrottleStorePrefix" in out, out
    rc, out, _ = check(workroot, "thr-cfg-ok",
                       [("ThrottleStore", "redis://:pw@127.0.0.1:6390/2"),
                        ("ThrottleKeyFile", keyfile)])
    assert rc == 0, out


def test_show_settings_hides_the_store_password(workroot, forest, dc, mbx, redis, keyfile):
    fg = gateway(workroot, "fg-fleet-pw", forest, dc, mbx,
                 {"ThrottleStore": f"redis://:Sec-ret-9@127.0.0.1:{redis.port}",
                  "ThrottleKeyFile": keyfile})
    try:
        text = fg.stats("show settings")["text"]
        assert "Sec-ret-9" not in text and "(credentials hidden)" in text, text
    finally:
        stop_ok(fg)


def test_no_secret_in_the_logs(forest):
    """Run last: no password, wrong or right, in any log of these gateways."""
    secrets = (set(forest.passwords.values()) | WRONGS | {ldif_suite.MASTER_PW, "Sec-ret-9"})
    secrets -= {""}
    assert MINE
    for fg in MINE:
        text = fg.log_text()
        leaked = [s for s in secrets if s in text]
        assert leaked == [], (fg.log_path, leaked)

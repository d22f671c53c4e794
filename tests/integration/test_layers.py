"""scripts/check-layers.py: the folders stay in layers.

The check runs on this tree, and on copies of it with one bad include
planted, each of which it must refuse with the file, the line and why."""

import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check-layers.py"
FOLDERS = ["base", "proto", "tls", "directory", "core", "bench", "tests"]


def run(root):
    return subprocess.run(["/usr/bin/python3", str(SCRIPT), str(root)], capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def tree(tmp_path):
    for f in FOLDERS:
        shutil.copytree(ROOT / f, tmp_path / f,
                        ignore=shutil.ignore_patterns("corpus*", "__pycache__", "*.pyc"))
    return tmp_path


def plant(path, include):
    text = path.read_text()
    first = text.index("#include")
    path.write_text(text[:first] + f'#include "{include}"\n' + text[first:])
    return text[:first].count("\n") + 1


def test_this_tree_is_layered():
    r = run(ROOT)
    assert r.returncode == 0, r.stdout
    assert "0  base/" in r.stdout and "1  proto/  tls/  directory/" in r.stdout
    assert "check-layers: 0 violation(s)" in r.stdout
    # No lower folder reaches core/.
    for low in ("base", "proto", "tls", "directory"):
        assert f"{low}/ -> core/" not in r.stdout


@pytest.mark.parametrize("file,include,way", [
    ("proto/imap_parse.c", "../core/conn.h", "points up the stack"),
    ("base/buf.c", "../proto/session.h", "points up the stack"),
    ("directory/resolve.h", "../proto/session.h", "points sideways, at a sibling"),
    ("tls/tls.c", "../directory/dir.h", "points sideways, at a sibling"),
    ("bench/client.c", "../core/config.h", "points sideways, at a sibling"),
    ("core/conn.c", "../tests/unit/harness.h", "points up the stack"),
])
def test_a_planted_bad_include_fails(tree, file, include, way):
    line = plant(tree / file, include)
    r = run(tree)
    assert r.returncode == 1, r.stdout
    assert f"{file}:{line}: " in r.stdout and way in r.stdout, r.stdout
    assert "check-layers: 1 violation(s)" in r.stdout


def test_an_include_outside_the_folders_fails(tree):
    line = plant(tree / "proto/pop3.c", "../../elsewhere/x.h")
    r = run(tree)
    assert r.returncode == 1
    assert f"proto/pop3.c:{line}: includes ../../elsewhere/x.h, outside the layered folders" in r.stdout


def test_modules_in_a_circle_fail(tree):
    """ring.c is the bottom of core/: including the connection's functions
    from it closes a circle (conn -> conn_types -> ring -> conn)."""
    plant(tree / "core/ring.c", "conn.h")
    r = run(tree)
    assert r.returncode == 1, r.stdout
    circle = [l for l in r.stdout.splitlines() if l.startswith("modules include each other")]
    assert len(circle) == 1, r.stdout
    assert "core/conn ->" in circle[0] and "core/ring" in circle[0], circle

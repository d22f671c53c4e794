#!/usr/bin/env python3
"""Keeps forestgate's folders in layers: every #include points down the stack.

  scripts/check-layers.py [ROOT]

The folders are the stages of a session, and each may include only its own
files and the layers below it:

  0  base/                      what every stage uses
  1  proto/  tls/  directory/   siblings: none includes another
  2  core/   bench/             core/ drives a connection; bench/ is a client
  3  tests/                     may include anything

An include that points up or sideways fails, and so does an include that
leaves the known folders. Inside a folder, modules (a .c and its .h) must not
include each other in a circle either: a circle of calls hides which module
drives which. The folder graph is printed, so a reviewer sees the shape at a
glance. Exit status: 0 clean, 1 a violation, 2 usage.
"""

from __future__ import annotations

import os
import re
import sys

LAYERS = [
    ["base"],
    ["proto", "tls", "directory"],
    ["core", "bench"],
    ["tests"],
]
RANK = {folder: i for i, layer in enumerate(LAYERS) for folder in layer}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def folder_of(root: str, path: str) -> str | None:
    rel = os.path.relpath(path, root)
    top = rel.split(os.sep, 1)[0]
    return top if top in RANK else None


def sources(root: str):
    for folder in RANK:
        for dirpath, _, names in os.walk(os.path.join(root, folder)):
            for name in sorted(names):
                if name.endswith((".c", ".h")):
                    yield os.path.join(dirpath, name)


def module_of(root: str, path: str) -> str:
    """A .c and its .h are one module; so is NAME_int.h, the header a module
    split over several files (core/config*.c) keeps for itself."""
    stem = os.path.splitext(os.path.relpath(path, root))[0]
    return stem[:-4] if stem.endswith("_int") else stem


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def check(root: str) -> tuple[list[str], dict[tuple[str, str], int]]:
    errors: list[str] = []
    edges: dict[tuple[str, str], int] = {}
    modules: dict[str, set[str]] = {}
    for path in sources(root):
        src = folder_of(root, path)
        with open(path, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                target = os.path.normpath(os.path.join(os.path.dirname(path), m.group(1)))
                dst = folder_of(root, target)
                where = f"{os.path.relpath(path, root)}:{lineno}"
                if dst is None:
                    errors.append(f"{where}: includes {m.group(1)}, outside the layered folders")
                    continue
                if dst != src:
                    edges[(src, dst)] = edges.get((src, dst), 0) + 1
                elif module_of(root, target) != module_of(root, path):
                    modules.setdefault(module_of(root, path), set()).add(module_of(root, target))
                if dst != src and RANK[dst] >= RANK[src]:
                    way = "up the stack" if RANK[dst] > RANK[src] else "sideways, at a sibling"
                    errors.append(f"{where}: {src}/ includes {dst}/ ({m.group(1)}): "
                                  f"points {way}")
    for comp in circles(modules):
        errors.append("modules include each other in a circle: " + " -> ".join(comp))
    return errors, edges


def main() -> int:
    if len(sys.argv) > 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    root = sys.argv[1] if len(sys.argv) == 2 else os.path.join(os.path.dirname(__file__), "..")
    root = os.path.abspath(root)
    print("allowed order, each layer including only those above it in this list:")
    for i, layer in enumerate(LAYERS):
        print(f"  {i}  " + "  ".join(f + "/" for f in layer))
    errors, edges = check(root)
    print("folder graph (includes across folders):")
    for (src, dst), n in sorted(edges.items(), key=lambda e: (RANK[e[0][0]], e[0])):
        print(f"  {src}/ -> {dst}/  ({n})")
    for e in errors:
        print(e)
    print(f"check-layers: {len(errors)} violation(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Builds the Debian package from this tree with Debian's tools:
#   scripts/package.sh [OUTDIR]      (default: build-deb)
# The tree's files (tracked, and new ones not ignored) are copied into
# OUTDIR/forestgate-VERSION/, so dpkg-buildpackage's build folder and its
# .deb files (written to the folder above the source, OUTDIR) stay out of the
# tree. .cache/ is shared, so the fast wolfSSL is built once for both.
# Prints the .deb's path.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$(realpath -m "${1:-build-deb}")
version=$(dpkg-parsechangelog -S Version)
src="$out/forestgate-$version"

for tool in dpkg-buildpackage dh; do
    command -v "$tool" >/dev/null || { echo "$tool missing: scripts/deps.sh build installs it" >&2; exit 1; }
done
rm -rf "$src"
mkdir -p "$src" "$root/.cache"
git ls-files -z --cached --others --exclude-standard |
    grep -zv '^\.cache$' | tar --null -T - -cf - | tar -xf - -C "$src"
ln -s "$(realpath "$root/.cache")" "$src/.cache"
(cd "$src" && dpkg-buildpackage -us -uc -b >"$out/build.log" 2>&1) ||
    { tail -40 "$out/build.log" >&2; echo "dpkg-buildpackage failed: $out/build.log" >&2; exit 1; }
arch=$(dpkg --print-architecture)
echo "$out/forestgate_${version}_${arch}.deb"

#!/usr/bin/env bash
# Builds wolfSSL for speed, once, into a cached prefix, and prints the prefix.
#
# Debian's libwolfssl is built without AES-NI and without assembly (AES-GCM
# about 120 MB/s here, against about 4,900 MB/s with them). This fetches the
# same source with `apt-get source wolfssl`, configures it with the flags
# below (the one place they are kept), builds a static library and installs
# it into .cache/wolfssl/<version>-<hash of the flags>/. A later run with the
# same version and flags prints the cached prefix at once.
#
# deb-src entries are derived from the machine's own apt sources (the same
# mirrors, suites and components, Types: deb-src) into a file of ours under
# /etc/apt/sources.list.d/; no host name is written into the project.
#
# Exit 0 with the prefix on stdout, or 1 with the reason on stderr: callers
# then fall back to the system library, loudly.
set -euo pipefail
cd "$(dirname "$0")/.."

FLAGS=(
    --enable-static --disable-shared
    --enable-aesni --enable-intelasm       # AES-NI, AVX for AES-GCM and SHA
    --enable-sp --enable-sp-asm            # fast P-256/P-384, RSA 2048/3072
    --enable-tls13 --disable-oldtls        # TLS 1.2 and 1.3 only
    --enable-aesgcm --enable-chacha --enable-poly1305 --enable-ecc --enable-curve25519
    --enable-session-ticket --enable-sni --enable-supportedcurves --enable-alpn
    --enable-harden                         # timing resistance, RSA blinding
    --disable-examples --disable-crypttests --disable-benchmark
)

say() { echo "wolfssl.sh: $*" >&2; }
fail() {
    say "$*"
    exit 1
}

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# The source package's version, as apt sees it (e.g. 5.5.4-2+deb12u1).
src_version() {
    apt-cache showsrc wolfssl 2>/dev/null | sed -n 's/^Version: //p' | sort -V | tail -1
}

# Adds deb-src twins of the machine's deb sources, once.
enable_deb_src() {
    local out=/etc/apt/sources.list.d/forestgate-deb-src.sources
    [ -e "$out" ] && return 0
    local tmp
    tmp=$(mktemp)
    # deb822 files: copy every stanza whose Types has deb, as deb-src.
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        awk 'BEGIN { RS = ""; ORS = "\n\n" }
             /(^|\n)Types:([^\n]* )?deb( |\n|$)/ { sub(/Types:[^\n]*/, "Types: deb-src"); print }' \
            "$f" >>"$tmp"
    done
    # One-line format: "deb [opts] URI suite components" -> deb-src.
    if [ -e /etc/apt/sources.list ]; then
        grep -E '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' >"$tmp.list" || true
        [ -s "$tmp.list" ] && $sudo cp "$tmp.list" /etc/apt/sources.list.d/forestgate-deb-src.list
        rm -f "$tmp.list"
    fi
    [ -s "$tmp" ] && $sudo cp "$tmp" "$out"
    rm -f "$tmp"
    $sudo apt-get update -qq >&2 || return 1
}

version=$(src_version || true)
if [ -z "$version" ]; then
    enable_deb_src || fail "cannot enable deb-src sources"
    version=$(src_version || true)
fi
[ -n "$version" ] || fail "apt knows no wolfssl source package"

hash=$(printf '%s\n' "${FLAGS[@]}" | sha256sum | cut -c1-12)
prefix="$PWD/.cache/wolfssl/${version//[^A-Za-z0-9.+-]/_}-$hash"
if [ -e "$prefix/.done" ]; then
    echo "$prefix"
    exit 0
fi

for tool in dpkg-source autoreconf make gcc; do
    command -v "$tool" >/dev/null || fail "$tool missing (scripts/deps.sh build installs it)"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
say "building wolfSSL $version for speed into $prefix (once; a few minutes)"
(cd "$work" && apt-get source -qq wolfssl >"$work/source.log" 2>&1) ||
    { tail -30 "$work/source.log" >&2; fail "apt-get source wolfssl failed"; }
src=$(find "$work" -maxdepth 1 -mindepth 1 -type d -name 'wolfssl-*' | head -1)
[ -n "$src" ] || fail "no source tree after apt-get source"
cd "$src"
[ -x configure ] || ./autogen.sh >"$work/autogen.log" 2>&1 ||
    { tail -30 "$work/autogen.log" >&2; fail "autogen.sh failed"; }
./configure --prefix="$prefix" "${FLAGS[@]}" >"$work/configure.log" 2>&1 ||
    { tail -30 "$work/configure.log" >&2; fail "configure failed"; }
make -j"$(nproc)" >"$work/make.log" 2>&1 || { tail -30 "$work/make.log" >&2; fail "make failed"; }
rm -rf "$prefix"
make install >"$work/install.log" 2>&1 || { tail -30 "$work/install.log" >&2; fail "make install failed"; }
printf '%s\n' "${FLAGS[@]}" >"$prefix/configure-flags"
touch "$prefix/.done"
echo "$prefix"

#!/usr/bin/env bash
# Configures (once) and builds one build folder: scripts/build.sh DIR [MESON-OPTIONS...]
#
# wolfSSL: links the fast build from scripts/wolfssl.sh (cached in .cache/);
# when that cannot be built, the system libwolfssl, with a loud warning here,
# at meson setup and at forestgate's start-up.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$1
shift

if prefix=$(scripts/wolfssl.sh); then
    pc="-Dpkg_config_path=$prefix/lib/pkgconfig"
else
    echo "WARNING: the fast wolfSSL could not be built (see above): falling back to" \
        "Debian's libwolfssl, built without AES-NI or assembly: TLS will be slow." >&2
    pc="-Dpkg_config_path="
fi

if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" "$pc" >/dev/null
else
    meson configure "$dir" "$pc" >/dev/null
fi
# Quiet when it builds; the compiler's own words when it does not.
if ! ninja -C "$dir" >"$dir/ninja.log" 2>&1; then
    grep -E -A8 "error|FAILED" "$dir/ninja.log" | head -60 >&2
    exit 1
fi

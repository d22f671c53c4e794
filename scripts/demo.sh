#!/usr/bin/env bash
# Builds forestgate and runs the demo: a private Dovecot backend with a few
# users, and forestgate in front of it on 127.0.0.1. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh demo
scripts/build.sh build -Dbuildtype=release
exec /usr/bin/python3 scripts/demo.py "$@"

#!/usr/bin/env bash
# Installs what forestgate needs on Debian 12, with apt-get, skipping what is
# already there. Usage: scripts/deps.sh build|test|demo|bench
set -euo pipefail

# libwolfssl-dev is the fallback; scripts/wolfssl.sh builds a faster one from
# Debian's source with dpkg-dev and the autotools.
# libkrb5-dev: MIT's GSSAPI and krb5, for Kerberos logons (directory/krb.c).
build_pkgs=(meson ninja-build pkgconf gcc make liburing-dev libjemalloc-dev libinih-dev libwolfssl-dev libldap-dev liburcu-dev libhiredis-dev
            libkrb5-dev dpkg-dev autoconf automake libtool)
# slapd + ldap-utils: tests/lib/slapd.py runs private AD-like OpenLDAP
# instances (its own slapd.conf and mdb folders; Debian's instance stays off).
# fail2ban: tests/integration/test_logfiles.py runs fail2ban-regex on contrib/fail2ban.
# prometheus (promtool) + python3-prometheus-client: tests/integration/test_metrics.py
# checks /metrics with Prometheus's own checker and parser.
# debhelper, systemd (systemd-analyze), man-db, groff-base, adduser:
# tests/integration/test_package.py builds, checks and installs the .deb.
# tmux + socat: tests/integration/test_ctl.py runs ctl watch in a tmux pane and
# sends the stats socket's commands through socat too.
# strace: tests/integration/test_bench_serve_writes.py checks where the mock
# backend cuts its writes.
# samba-ad-dc + python3-samba + ldb-tools + faketime: tests/lib/samba.py runs
# private Samba AD domain controllers (real AD: its diagnostics, SIDs,
# linked attributes); faketime dates a password in the past. krb5-user:
# kinit, kvno and klist, and python3-gssapi the client, for the Kerberos tests
# against Samba's KDC (tests/integration/test_kerberos.py).
test_pkgs=(clang libclang-rt-14-dev clang-format dovecot-imapd dovecot-pop3d python3 python3-pytest fail2ban
           curl openssl procps iproute2 slapd ldap-utils redis-server haproxy
           prometheus python3-prometheus-client debhelper systemd man-db groff-base adduser
           tmux socat strace samba-ad-dc python3-samba ldb-tools faketime krb5-user python3-gssapi)
demo_pkgs=(dovecot-imapd dovecot-pop3d python3 curl)
# bench/compare: the peers it measures forestgate against. nginx-light only
# when no nginx flavour (core, full, extras) is installed: they conflict.
# bench/dirbench: Dovecot's LDAP passdb (dovecot-ldap) and a private slapd.
# bench/dovecot-writes: strace.
bench_pkgs=(libnginx-mod-mail dovecot-imapd dovecot-pop3d dovecot-ldap python3 slapd ldap-utils strace)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || bench_pkgs+=(nginx-light)

case "${1:-build}" in
build) want=("${build_pkgs[@]}") ;;
test) want=("${build_pkgs[@]}" "${test_pkgs[@]}" "${bench_pkgs[@]}") ;; # test_compare runs the peers
demo) want=("${build_pkgs[@]}" "${demo_pkgs[@]}") ;;
bench) want=("${build_pkgs[@]}" "${bench_pkgs[@]}") ;;
*) echo "usage: $0 build|test|demo|bench" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
# The packages' own services are not wanted: the tests and the demo run
# private instances. policy-rc.d keeps apt from starting Debian's dovecot
# and slapd.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

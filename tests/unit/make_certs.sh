#!/bin/sh
# Test certificates for test_tls, made fresh at build time: make_certs.sh OUTDIR STAMP
# a.example: ECDSA P-256; b.example: RSA 2048. Self-signed, 30 days.
set -eu
out=$1
mkdir -p "$out"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /CN=a.example -addext subjectAltName=DNS:a.example \
    -keyout "$out/a.key" -out "$out/a.crt" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 30 \
    -subj /CN=b.example -addext subjectAltName=DNS:b.example \
    -keyout "$out/b.key" -out "$out/b.crt" 2>/dev/null
touch "$2"

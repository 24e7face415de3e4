#!/bin/bash
# demo-cert.sh DIR ADDRESS: a self-signed demo certificate for the proxy's TLS listener, made once.
# Prints "CERT KEY" (DIR/demo-cert.pem DIR/demo-key.pem). Used by scripts/run.sh when TLS_CERT and
# TLS_KEY are not given, and by the tests (tests/harness.py). A phone must be told to accept it
# (it is signed by nobody): fine for a demo on loopback, never for members' phones on a real
# network (README, SIP over TLS).
#
# Why these choices: an EC P-256 key is made in milliseconds and every TLS 1.2/1.3 phone speaks
# ECDSA; the address goes in subjectAltName because that, not the CN, is what a verifying client
# matches; 825 days is the longest validity Apple's TLS clients accept for a server certificate.
set -euo pipefail
dir=${1:?usage: demo-cert.sh DIR ADDRESS}
addr=${2:?usage: demo-cert.sh DIR ADDRESS}
cert="$dir/demo-cert.pem" key="$dir/demo-key.pem"
if [ ! -s "$cert" ] || [ ! -s "$key" ]; then
  mkdir -p "$dir"
  case $addr in
    *[!0-9.]*) san="DNS:$addr" ;;  # a host name (an IPv6 address would need IP: too; not used here)
    *) san="IP:$addr" ;;
  esac
  (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$key.tmp" -out "$cert.tmp" -days 825 -subj "/O=cowork-proxy demo/CN=$addr" \
    -addext "subjectAltName=$san" -addext "extendedKeyUsage=serverAuth" 2>/dev/null) ||
    { echo "demo-cert.sh: openssl could not make a certificate in $dir" >&2; exit 1; }
  mv "$key.tmp" "$key"
  mv "$cert.tmp" "$cert"
  chmod 644 "$cert"  # public; the key stays 0600
fi
echo "$cert $key"

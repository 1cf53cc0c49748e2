#!/bin/bash
# gen-cert.sh - make the self-signed development certificate etc/tls/{cert,key}.pem.
#
# Usage: gen-cert.sh [DIR]   (default: etc/tls beside this script's tree)
# Does nothing if both files exist. RSA 2048 so every test client (swaks with
# Net::SSLeay, curl, Python ssl, Postfix's tools) can use it. CN=localhost, with
# subjectAltNames for localhost, mx.example.test and 127.0.0.1. Development only:
# the key is unencrypted.
set -euo pipefail

dir=${1:-"$(cd "$(dirname "$0")/.." && pwd)/etc/tls"}
if [ -s "$dir/cert.pem" ] && [ -s "$dir/key.pem" ]; then
	exit 0
fi
mkdir -p "$dir"
umask 077
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
	-keyout "$dir/key.pem.tmp" -out "$dir/cert.pem.tmp" \
	-subj "/CN=localhost" \
	-addext "subjectAltName=DNS:localhost,DNS:mx.example.test,IP:127.0.0.1" \
	-addext "keyUsage=digitalSignature,keyEncipherment" \
	-addext "extendedKeyUsage=serverAuth" 2>/dev/null
chmod 600 "$dir/key.pem.tmp"
chmod 644 "$dir/cert.pem.tmp"
mv "$dir/key.pem.tmp" "$dir/key.pem"
mv "$dir/cert.pem.tmp" "$dir/cert.pem"
echo "gen-cert.sh: wrote $dir/cert.pem and $dir/key.pem (self-signed, CN=localhost)"

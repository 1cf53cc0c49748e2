#!/bin/bash
# check-tls.sh - audit ternd's TLS with Debian's testssl (package testssl.sh).
#
# Usage: check-tls.sh [TERND]   (default: $TERND, else build/ternd)
#
# Starts a private ternd (-c /dev/null, loopback ports, temp directories, DNS
# pointed at a dead port) with a fresh self-signed certificate from
# gen-cert.sh, then runs
#   testssl --quiet --color 0 --severity HIGH -t smtp 127.0.0.1:SMTP_PORT
#   testssl --quiet --color 0 --severity HIGH 127.0.0.1:SUBMISSIONS_PORT
# with JSON output and fails if any finding is HIGH or CRITICAL. Findings that
# only concern the test certificate itself (self-signed, 10-year validity, no
# CRL/OCSP URI: cert_chain_of_trust, cert_validityPeriod, cert_revocation,
# cert_trust and friends) are ignored: a private test CA is the point here.
# The ternd is stopped (SIGTERM) and the temp directory removed on exit
# (KEEP_TMP=1 keeps it: testssl output, JSON and ternd log). About 80 s.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
ternd=${1:-${TERND:-$repo/build/ternd}}
testssl=$(command -v testssl || command -v testssl.sh || true)
if [ -z "$testssl" ]; then
	echo "check-tls.sh: testssl not installed (apt-get install testssl.sh)" >&2
	exit 2
fi
[ -x "$ternd" ] || { echo "check-tls.sh: $ternd is not built" >&2; exit 2; }

tmp=$(mktemp -d /tmp/tern-check-tls.XXXXXX)
pid=
cleanup() {
	if [ -n "$pid" ]; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	[ -n "${KEEP_TMP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

"$repo/scripts/gen-cert.sh" "$tmp/tls" >/dev/null
cp "$repo/etc/users" "$tmp/users"
: >"$tmp/aliases"
mkdir -p "$tmp/run"
smtp=$(free_port)
subs=$(free_port)
sub=$(free_port)
"$ternd" -c /dev/null \
	-o hostname=mx.example.test \
	-o "smtp_listen=127.0.0.1:$smtp" \
	-o "submission_listen=127.0.0.1:$sub" \
	-o "submissions_listen=127.0.0.1:$subs" \
	-o "tls_cert=$tmp/tls/cert.pem" -o "tls_key=$tmp/tls/key.pem" \
	-o "local_domains=example.test" \
	-o "mail_dir=$tmp/mail" -o "queue_dir=$tmp/queue" \
	-o "users_file=$tmp/users" -o "aliases_file=$tmp/aliases" \
	-o "control_socket=$tmp/run/ternd.sock" \
	-o "dns_resolver=127.0.0.1:$(free_port)" \
	-o "run_user=$(id -un)" -o allow_root=yes \
	>"$tmp/ternd.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
	if (exec 3<>"/dev/tcp/127.0.0.1/$smtp") 2>/dev/null; then break; fi
	kill -0 "$pid" 2>/dev/null || { cat "$tmp/ternd.log" >&2; exit 2; }
	sleep 0.1
done

# Certificate-trust findings come from the self-signed test certificate.
ignore='^(cert_chain_of_trust|cert_trust|cert_validityPeriod|cert_revocation|cert_caIssuers|cert_crlDistributionPoints|cert_ocspURL|OCSP_stapling|cert_expirationStatus|cert_extlifeSpan)'
status=0
run() {
	local name=$1; shift
	local json="$tmp/$name.json"
	echo "== testssl $name: $*"
	"$testssl" --quiet --color 0 --severity HIGH --warnings off --jsonfile "$json" "$@" \
		>"$tmp/$name.out" 2>&1 || true
	if [ ! -s "$json" ]; then
		echo "check-tls.sh: testssl produced no JSON for $name" >&2
		cat "$tmp/$name.out" >&2
		status=1
		return
	fi
	local bad
	bad=$(/usr/bin/python3 - "$json" "$ignore" <<'EOF'
import json, re, sys
items = json.load(open(sys.argv[1]))
ign = re.compile(sys.argv[2])
for f in items:
    sev = f.get("severity", "")
    if sev in ("HIGH", "CRITICAL") and not ign.match(f.get("id", "")):
        print(f"{sev} {f.get('id')}: {f.get('finding')}")
    elif sev == "FATAL":
        print(f"FATAL {f.get('id')}: {f.get('finding')}")
EOF
	)
	if [ -n "$bad" ]; then
		echo "$bad"
		status=1
	else
		echo "   no HIGH or CRITICAL findings"
	fi
}
run smtp -t smtp "127.0.0.1:$smtp"
run submissions "127.0.0.1:$subs"
exit $status

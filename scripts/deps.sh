#!/bin/bash
# deps.sh - install the Debian 12 packages Tern needs to build, test and run.
#
# Usage: deps.sh [build]   ("build": only what `make` needs to compile)
#
# Fast path: when every package is already installed it does nothing (one
# dpkg-query). Otherwise, as root, it runs `apt-get update` once and installs
# only the missing packages, non-interactively, without starting any service
# (a temporary /usr/sbin/policy-rc.d refuses every start; Debian's postfix and
# dovecot would otherwise start listening on ports 25/143 of the machine).
# Not root and something missing: print the apt-get command and fail.
#
# Why each package: see README.md, "Dependencies".
set -euo pipefail

PACKAGES=(
	build-essential meson ninja-build pkg-config      # compiler and build
	clang libclang-rt-14-dev  # fuzz build: libFuzzer and sanitizer runtimes (a Recommends of clang)
	libevent-dev       # event loop (event core + pthreads)
	libcmocka-dev      # unit tests
	libssl-dev         # TLS (OpenSSL 3)
	libunbound-dev     # DNS (MX, SPF, DKIM, DMARC lookups)
	libcrypt-dev       # password hashes (libxcrypt: yescrypt, bcrypt, sha512-crypt)
	libpsl-dev         # public suffix list: DMARC organisational domains
	swaks curl         # SMTP clients for the integration tests
	libnet-ssleay-perl # swaks STARTTLS (a Recommends of swaks)
	dovecot-imapd      # reads the Maildirs in the integration tests
	python3 python3-pytest python3-dnslib python3-dkim  # test runner, fake DNS, DKIM checks
	python3-spf python3-yaml  # the RFC 7208 SPF test suite and its YAML
	openssl            # dev certificate
	nsd                # authoritative DNS for end-to-end tests
	postfix            # smtp-source/smtp-sink: benchmarks and a peer MTA in tests
	opendkim opendkim-tools  # a real milter (OpenDKIM) and opendkim-testmsg to verify our signatures
	python3-milter     # scripted milter for the milter tests
	testssl.sh         # TLS audit of the STARTTLS and implicit-TLS ports (make check-tls)
)

# The subset `make` needs to compile build/ternd and build/ternctl.
BUILD_PACKAGES=(build-essential meson ninja-build pkg-config
	libevent-dev libssl-dev libunbound-dev libcrypt-dev libpsl-dev)
if [ "${1:-}" = build ]; then
	PACKAGES=("${BUILD_PACKAGES[@]}")
elif [ $# -ne 0 ]; then
	echo "usage: deps.sh [build]" >&2
	exit 2
fi

# missing_packages - print the packages that are not fully installed
missing_packages() {
	local p status
	for p in "${PACKAGES[@]}"; do
		status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
		case "$status" in
		ii*) ;;
		*) echo "$p" ;;
		esac
	done
}

mapfile -t missing < <(missing_packages)
if [ "${#missing[@]}" -eq 0 ]; then
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "deps.sh: missing Debian packages: ${missing[*]}" >&2
	echo "deps.sh: run as root:  make deps   (or: apt-get install ${missing[*]})" >&2
	exit 1
fi

echo "deps.sh: installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive

# Never start services during the install. If the machine already has a
# policy-rc.d (Docker images do), leave it alone; otherwise install ours and
# remove it on exit, whatever happens.
ours=
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\n# installed by tern scripts/deps.sh for the duration of apt-get\nexit 101\n' \
		>/usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	ours=1
fi
cleanup() {
	if [ -n "$ours" ]; then
		rm -f /usr/sbin/policy-rc.d
	fi
}
trap cleanup EXIT

# Postfix asks what kind of mail server this is; we only want its tools.
if printf '%s\n' "${missing[@]}" | grep -qx postfix; then
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	echo "postfix postfix/mailname string localhost" | debconf-set-selections
fi

# apt-get update once, only when the package lists are absent or the install
# cannot find a package.
apt_install() {
	apt-get install -y -q --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}
if [ -z "$(ls -A /var/lib/apt/lists/ 2>/dev/null | grep -v -e '^lock$' -e '^partial$' || true)" ]; then
	apt-get update -q
	apt_install "${missing[@]}"
elif ! apt_install "${missing[@]}"; then
	apt-get update -q
	apt_install "${missing[@]}"
fi

# Belt and braces: if something started anyway (e.g. systemd ignored
# policy-rc.d), stop it; the tests run their own private instances.
for svc in postfix dovecot nsd; do
	if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
		systemctl stop "$svc" || true
		systemctl disable "$svc" >/dev/null 2>&1 || true
	elif [ -x "/etc/init.d/$svc" ]; then
		"/etc/init.d/$svc" stop >/dev/null 2>&1 || true
	fi
done

mapfile -t still < <(missing_packages)
if [ "${#still[@]}" -ne 0 ]; then
	echo "deps.sh: still missing after apt-get: ${still[*]}" >&2
	exit 1
fi
echo "deps.sh: all dependencies installed"

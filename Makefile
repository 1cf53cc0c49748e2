# Tern - entry points. The real build is Meson + Ninja; this file only strings
# the steps together so a fresh Debian 12 machine needs two commands:
#
#   make run    install what is missing, build, make a dev certificate, start
#               build/ternd -c etc/ternd.conf in the foreground
#   make test   install what is missing, then unit tests, short fuzz runs and
#               the integration tests, all under ASan + UBSan
#
# Other targets: make (build/ternd, build/ternctl), make deps, make fuzz
# (FUZZ_SECONDS=300 per target), make clean, make distclean.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := all

BUILD        ?= build
BUILD_ASAN   ?= build-asan
BUILD_FUZZ   ?= build-fuzz
FUZZ_SECONDS ?= 300
PYTHON       ?= /usr/bin/python3
PYTEST_ARGS  ?=

# Sanitizers: report leaks, stop at the first error, with a stack trace.
export ASAN_OPTIONS  ?= detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1

.PHONY: all deps build-deps run test unit fuzz fuzz-short integration check-config check-tls soak clean distclean bench

# --- build -------------------------------------------------------------------

all: build-deps
	@if [ ! -f $(BUILD)/build.ninja ]; then \
		rm -rf $(BUILD); \
		meson setup $(BUILD) -Dbuildtype=debugoptimized; \
	fi
	ninja -C $(BUILD)

# build-deps - compile-time packages only; as root installs them, otherwise
# says to run `make deps` (scripts/deps.sh prints the exact apt-get line).
build-deps:
	@scripts/deps.sh build

deps:
	@scripts/deps.sh

# --- run ---------------------------------------------------------------------

run: deps all
	@scripts/gen-cert.sh etc/tls
	@mkdir -p var/mail var/queue var/run
	@# As root ternd drops to run_user (default "tern"); give it a system
	@# account, the var/ tree it writes to, and read access to the TLS key
	@# (re-read on SIGHUP, after the privileges are gone).
	@if [ "$$(id -u)" -eq 0 ]; then \
		if ! getent passwd tern >/dev/null; then \
			useradd --system --no-create-home --home-dir /nonexistent \
				--shell /usr/sbin/nologin tern; \
		fi; \
		chown -R tern: var; \
		chgrp tern etc/tls/key.pem && chmod 640 etc/tls/key.pem; \
	fi
	@echo "ternd: SMTP on 127.0.0.1:2525, mail in var/mail/, Ctrl-C to stop"
	exec $(BUILD)/ternd -c etc/ternd.conf

check-config: all
	$(BUILD)/ternctl -c etc/ternd.conf check

# --- tests -------------------------------------------------------------------

# test - every stage runs even if one fails, so one broken unit test does
# not hide the integration results; the exit status is still non-zero.
# check-tls runs beside fuzz-short: the fuzzers stop after a fixed wall-clock
# time, so the TLS audit (mostly waiting on handshakes) adds no time to the
# suite; its output is printed when it ends.
test: deps
	@failed=""; \
	$(MAKE) --no-print-directory unit || failed="$$failed unit"; \
	( $(MAKE) --no-print-directory check-tls >$(BUILD_ASAN)/check-tls.log 2>&1; \
	  echo $$? >$(BUILD_ASAN)/check-tls.rc ) & tls=$$!; \
	$(MAKE) --no-print-directory fuzz-short || failed="$$failed fuzz-short"; \
	wait $$tls; cat $(BUILD_ASAN)/check-tls.log; \
	[ "$$(cat $(BUILD_ASAN)/check-tls.rc 2>/dev/null)" = 0 ] || failed="$$failed check-tls"; \
	$(MAKE) --no-print-directory integration || failed="$$failed integration"; \
	if [ -n "$$failed" ]; then echo "make test: FAILED:$$failed" >&2; exit 1; fi; \
	echo "make test: all passed"

$(BUILD_ASAN)/build.ninja:
	rm -rf $(BUILD_ASAN)
	meson setup $(BUILD_ASAN) -Dbuildtype=debugoptimized \
		-Db_sanitize=address,undefined -Db_lundef=false

# unit - cmocka tests under ASan + UBSan
unit: $(BUILD_ASAN)/build.ninja
	ninja -C $(BUILD_ASAN)
	meson test -C $(BUILD_ASAN) --print-errorlogs

# fuzz-short - every libFuzzer target for 12 s over its seed corpus (long
# runs: make fuzz); keeps make test under 10 minutes on 2 cores
fuzz-short:
	FUZZ_SECONDS=$${FUZZ_SHORT_SECONDS:-12} BUILD_FUZZ=$(BUILD_FUZZ) tests/run-fuzz.sh

fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) BUILD_FUZZ=$(BUILD_FUZZ) tests/run-fuzz.sh

# integration - the real ternd (sanitizer build) with real clients
integration: $(BUILD_ASAN)/build.ninja
	ninja -C $(BUILD_ASAN)
	TERND=$(BUILD_ASAN)/ternd TERNCTL=$(BUILD_ASAN)/ternctl \
		$(PYTHON) -m pytest -v -p no:cacheprovider tests/integration $(PYTEST_ARGS)

# check-tls - testssl against the STARTTLS and implicit-TLS ports; fails on
# any HIGH or CRITICAL finding about the server (about 80 s)
check-tls: $(BUILD_ASAN)/build.ninja
	ninja -C $(BUILD_ASAN) ternd ternctl
	scripts/check-tls.sh $(BUILD_ASAN)/ternd

# soak - 30 minutes of mixed traffic (SOAK_SECONDS) on the sanitizer build:
# memory and descriptors flat, nothing lost or duplicated, LeakSanitizer
# clean at exit. Not part of `make test`.
SOAK_SECONDS ?= 1800
soak: deps $(BUILD_ASAN)/build.ninja
	ninja -C $(BUILD_ASAN) ternd ternctl
	SOAK_SECONDS=$(SOAK_SECONDS) TERND=$(BUILD_ASAN)/ternd TERNCTL=$(BUILD_ASAN)/ternctl \
		$(PYTHON) tests/soak/soak.py

# --- cleaning ----------------------------------------------------------------

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ)

# distclean - also the dev mail, queue and certificate
distclean: clean
	rm -rf var etc/tls tests/fuzz/artifacts

# --- benchmark ---------------------------------------------------------------

# bench - Tern beside Postfix on the same load (not part of make test; as
# root, needs Debian's postfix package). Builds an optimised ternd in
# build-bench/ (release, no sanitizers); results in bench/results/.
.PHONY: bench
bench:
	bench/bench.sh

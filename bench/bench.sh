#!/bin/bash
# bench/bench.sh - `make bench`: build an optimised ternd (release, no
# sanitizers) in $BENCH_BUILD, then run bench/bench.py (Tern beside Postfix,
# see bench/README.md), then bench/conns.py (10,000 idle connections held
# by one ternd; its table is appended to bench/results/latest.md). Extra
# arguments go to bench.py, e.g. --profile or --callgrind (then conns.py
# does not run).
# Environment: BENCH_BUILD (default build-bench), BENCH_MSGS, BENCH_MSGS_1,
# BENCH_RUNS, BENCH_SHAPES, BENCH_TMP (see bench.py --help); BENCH_CONNS
# (default 10000; 0 skips conns.py).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BENCH_BUILD:-build-bench}

for bin in /usr/sbin/postfix /usr/sbin/smtp-source /usr/sbin/smtp-sink; do
	[ -x "$bin" ] || { echo "bench: $bin missing (apt-get install postfix)" >&2; exit 1; }
done
if [ "$(id -u)" -ne 0 ]; then
	echo "bench: must run as root (Postfix's master and ownership checks)" >&2
	exit 1
fi

if [ ! -f "$BUILD_DIR/build.ninja" ]; then
	rm -rf "$BUILD_DIR"
	meson setup "$BUILD_DIR" -Dbuildtype=release >/dev/null
fi
ninja -C "$BUILD_DIR" ternd ternctl

# bench.py cleans up after itself (try/finally, SIGTERM/SIGHUP handled);
# this trap is the backstop if the Python process itself is killed.
py=""
cleanup() {
	if [ -n "$py" ] && kill -0 "$py" 2>/dev/null; then
		kill -TERM "$py" 2>/dev/null || true
		wait "$py" 2>/dev/null || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

/usr/bin/python3 bench/bench.py --ternd "$BUILD_DIR/ternd" \
	--ternctl "$BUILD_DIR/ternctl" "$@" &
py=$!
wait "$py"
py=""

if [ "$#" -eq 0 ] && [ "${BENCH_CONNS:-10000}" != 0 ]; then
	/usr/bin/python3 bench/conns.py --ternd "$BUILD_DIR/ternd" \
		--ternctl "$BUILD_DIR/ternctl" --conns "${BENCH_CONNS:-10000}" &
	py=$!
	wait "$py"
fi

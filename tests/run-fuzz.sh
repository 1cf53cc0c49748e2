#!/bin/bash
# run-fuzz.sh - build the libFuzzer targets and run each for a short while.
#
# Environment:
#   FUZZ_SECONDS  seconds per target (default 20)
#   FUZZ_JOBS     targets run at once (default: number of CPUs)
#   BUILD_FUZZ    build directory (default build-fuzz)
#   FUZZ_ONLY     run only the targets whose name contains this string
#
# Build: CC=clang, -Dfuzz=true, ASan + UBSan. Each target fuzz_NAME starts from
# its seed corpus tests/fuzz/corpus/NAME/, copied into a temporary directory so
# the inputs libFuzzer finds do not pollute the repository. A crashing input is
# kept in tests/fuzz/artifacts/ (git-ignored); reproduce with
#   build-fuzz/tests/fuzz/fuzz_NAME tests/fuzz/artifacts/NAME-crash-...
# Exit status: 0 if no target crashed, leaked, timed out or failed to build.
set -euo pipefail

cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
FUZZ_JOBS=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}
BUILD_FUZZ=${BUILD_FUZZ:-build-fuzz}
FUZZ_ONLY=${FUZZ_ONLY:-}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

if [ ! -f "$BUILD_FUZZ/build.ninja" ]; then
	rm -rf "$BUILD_FUZZ"
	CC=clang meson setup "$BUILD_FUZZ" -Dbuildtype=debugoptimized -Dfuzz=true \
		-Db_sanitize=address,undefined -Db_lundef=false
fi
ninja -C "$BUILD_FUZZ"

mapfile -t targets < <(find "$BUILD_FUZZ" -type f -name 'fuzz_*' -perm -u+x \
	! -name '*.p' ! -name '*.o' | sort)
if [ -n "$FUZZ_ONLY" ]; then
	mapfile -t targets < <(printf '%s\n' "${targets[@]}" | grep -F -- "$FUZZ_ONLY" || true)
fi
if [ "${#targets[@]}" -eq 0 ] || [ -z "${targets[0]}" ]; then
	echo "run-fuzz.sh: no fuzz targets built"
	exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/tern-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p tests/fuzz/artifacts

# fuzz_one - run one target; its output goes to $work/NAME.log
fuzz_one() {
	local bin=$1 name corpus
	name=$(basename "$bin")
	name=${name#fuzz_}
	corpus="$work/corpus-$name"
	mkdir -p "$corpus"
	if [ -d "tests/fuzz/corpus/$name" ]; then
		cp -R "tests/fuzz/corpus/$name/." "$corpus/"
	else
		echo "run-fuzz.sh: warning: no seed corpus tests/fuzz/corpus/$name/" >"$work/$name.log"
	fi
	# -timeout: one input taking 10 s is a hang, i.e. a bug.
	"$bin" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="tests/fuzz/artifacts/$name-" \
		"$corpus" >>"$work/$name.log" 2>&1
}

# show_report - the sanitizer/libFuzzer report from a log, without the noise
show_report() {
	if grep -qE 'ERROR: |runtime error:|deadly signal|Timeout|out-of-memory' "$1"; then
		awk '/ERROR: |runtime error:|deadly signal|Timeout|out-of-memory/ { on = 1 }
		     on && n < 45 && !/^ *0x[0-9a-f]+: / { print; n++ }
		     /Test unit written to/ { print }' "$1"
	else
		tail -n 30 "$1"
	fi
}

echo "run-fuzz.sh: ${#targets[@]} targets, ${FUZZ_SECONDS}s each, $FUZZ_JOBS at a time"
declare -A pids=()
failed=()
# reap - wait for one running target and record its result
reap() {
	local pid name rc
	wait -n || true
	for name in "${!pids[@]}"; do
		pid=${pids[$name]}
		if ! kill -0 "$pid" 2>/dev/null; then
			rc=0
			wait "$pid" || rc=$?
			unset "pids[$name]"
			if [ "$rc" -ne 0 ]; then
				failed+=("$name")
				echo "FAIL fuzz_$name (exit $rc); its report:"
				show_report "$work/$name.log" | sed 's/^/    /'
			else
				echo "ok   fuzz_$name: $(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$work/$name.log" | grep -o '[0-9]*$' || echo '?') runs"
			fi
		fi
	done
}

for bin in "${targets[@]}"; do
	while [ "${#pids[@]}" -ge "$FUZZ_JOBS" ]; do
		reap
	done
	name=$(basename "$bin")
	name=${name#fuzz_}
	fuzz_one "$bin" &
	pids[$name]=$!
done
while [ "${#pids[@]}" -gt 0 ]; do
	reap
done

if [ "${#failed[@]}" -ne 0 ]; then
	echo "run-fuzz.sh: FAILED: ${failed[*]} (inputs in tests/fuzz/artifacts/)" >&2
	exit 1
fi
echo "run-fuzz.sh: all targets clean"

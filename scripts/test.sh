#!/usr/bin/env bash
# SPDX-License-Identifier: EPL-2.0
# test.sh: build and run every test, as CI does (.ci/run calls this).
#   1. install missing Debian packages (scripts/deps.sh);
#   2. build two trees: build/ (normal) and build-asan/ (-DCHAT_SANITIZE=ON);
#   3. run ctest in both: unit tests and integration tests (the real
#      mosquitto loading the plugin, PostgreSQL on free loopback ports; in
#      build-asan the broker runs with libasan/libubsan preloaded);
#   4. print ctest's summary of each tree and a last line "N passed, N failed".
# Exits non-zero when anything failed. Every process it starts is stopped,
# also on failure or interruption. Extra arguments go to ctest (e.g. -R auth).
# CHAT_TEST_TREES="build" limits the run to the normal tree; CHAT_JOBS and
# CHAT_CTEST_JOBS set the build and test parallelism.
set -uo pipefail
umask 022
exec </dev/null

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
PY=/usr/bin/python3
JOBS=${CHAT_JOBS:-$(nproc)}
# Integration tests mostly wait on the network and timers: run more of them
# than there are cores.
CTEST_JOBS=${CHAT_CTEST_JOBS:-$((JOBS * 2))}
TREES=${CHAT_TEST_TREES:-build build-asan}
START=$(date +%s)

ctest_pid=
cleanup() {
	# a still-running ctest (interrupted run): its whole process group
	if [ -n "$ctest_pid" ] && kill -0 "$ctest_pid" 2>/dev/null; then
		kill -TERM -- "-$ctest_pid" 2>/dev/null
		sleep 2
		kill -KILL -- "-$ctest_pid" 2>/dev/null
	fi
	# brokers, chat-rest and PostgreSQL clusters the harness recorded
	for t in $TREES; do
		st="$ROOT/$t/tests/integration-state"
		if [ -d "$st" ]; then
			"$PY" "$ROOT/tests/integration/chatstack.py" reap "$st" >/dev/null 2>&1 || true
		fi
	done
}
trap cleanup EXIT
trap 'echo "test.sh: interrupted" >&2; exit 130' INT
trap 'echo "test.sh: terminated" >&2; exit 143' TERM

echo "== dependencies"
if ! bash "$ROOT/scripts/deps.sh"; then
	echo "test.sh: dependencies missing (see above)" >&2
	echo "0 passed, 1 failed"
	exit 1
fi

total_pass=0
total_fail=0
summaries=()

for t in $TREES; do
	case "$t" in
		build-asan) san=ON ;;
		*) san=OFF ;;
	esac
	echo "== configure and build $t (CHAT_SANITIZE=$san)"
	mkdir -p "$ROOT/$t"
	if ! cmake -S "$ROOT" -B "$ROOT/$t" -DCHAT_SANITIZE=$san >"$ROOT/$t/configure.log" 2>&1; then
		cat "$ROOT/$t/configure.log"
		summaries+=("$t: cmake configure FAILED")
		total_fail=$((total_fail + 1))
		continue
	fi
	if ! cmake --build "$ROOT/$t" -j"$JOBS"; then
		summaries+=("$t: build FAILED")
		total_fail=$((total_fail + 1))
		continue
	fi

	echo "== ctest $t"
	log="$ROOT/$t/ctest.log"
	# own session, so an interruption can stop the tests and their brokers
	# shellcheck disable=SC2016  # expanded by the inner bash
	setsid bash -c 'set -o pipefail; ctest --test-dir "$1" --output-on-failure -j"$2" "${@:4}" 2>&1 | tee "$3"' \
		ctest "$ROOT/$t" "$CTEST_JOBS" "$log" "$@" &
	ctest_pid=$!
	wait "$ctest_pid"
	rc=$?
	ctest_pid=
	line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1)
	if [ -n "$line" ]; then
		failed=$(sed -E 's/^[0-9]+% tests passed, ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
		all=$(sed -E 's/^[0-9]+% tests passed, ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
		total_pass=$((total_pass + all - failed))
		total_fail=$((total_fail + failed))
		if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
			total_fail=$((total_fail + 1))
			line="$line (but ctest exited with $rc)"
		fi
		summaries+=("$t: $line")
	else
		summaries+=("$t: ctest produced no summary (exit $rc)")
		total_fail=$((total_fail + 1))
	fi
	tt=$(grep -E '^Total Test time' "$log" | tail -n 1)
	[ -n "$tt" ] && summaries+=("$t: $tt")
done

echo
echo "== summary ($(($(date +%s) - START)) s)"
for s in "${summaries[@]}"; do
	echo "$s"
done
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]

#!/bin/bash
# tests/run_all.sh - every test: unit tests (plain and under ASan/UBSan),
# then the integration tests. Ends with "N passed, N failed".
cd "$(dirname "$0")/.." || exit 1
passed=0
failed=0
failures=""

record() { # name status
	if [ "$2" = 0 ]; then
		passed=$((passed + 1))
		echo "ok   $1"
	else
		failed=$((failed + 1))
		failures="$failures $1"
		echo "FAIL $1"
	fi
}

for t in build/tests/test_* build/asan/tests/test_*; do
	[ -x "$t" ] || continue
	log=$(mktemp)
	timeout -k 5 120 "$t" >"$log" 2>&1
	st=$?
	[ $st = 0 ] || sed 's/^/    /' "$log"
	rm -f "$log"
	record "unit ${t#build/}" $st
done

# Style: the repository's .clang-format is the rule for C sources.
log=$(mktemp)
clang-format --dry-run --Werror src/*/*.c src/*/*.h src/main.c \
	tests/unit/*.c tests/tools/*.c tests/tools/*.h >"$log" 2>&1
st=$?
[ $st = 0 ] || head -20 "$log" | sed 's/^/    /'
rm -f "$log"
record "style (clang-format)" $st

tests/integration/run.sh
st=$?
while read -r line; do
	case "$line" in
	"ok "*) passed=$((passed + 1)) ;;
	"FAIL "*) failed=$((failed + 1)); failures="$failures ${line#FAIL }" ;;
	esac
done <build/integration-results.txt
[ $st = 0 ] || [ -s build/integration-results.txt ] || {
	failed=$((failed + 1))
	failures="$failures integration-runner"
}

[ -z "$failures" ] || echo "failed:$failures"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]

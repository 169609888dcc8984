# tests/integration/lib.sh - helpers for integration tests that boot the
# test guest under dvmm (and QEMU) and check what the guest reports.
# Every wait has a timeout; every process a test starts is killed at exit.

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DVMM=${DVMM:-$ROOT/build/dvmm}
GUEST=${GUEST:-$ROOT/build/guest/testguest.elf}
TMP=$(mktemp -d /tmp/dvmm-it.XXXXXX)
BG_PIDS=""
NETNS_LIST=""
. "$ROOT/scripts/netns.sh"

# make_netns TAG : a namespace with tap0 at 10.0.2.1/24; sets NS.
make_netns() {
	NS=dvmm-it-$$-$1
	netns_create "$NS" tap0 || fail "cannot create network namespace $NS" ||
		return 1
	NETNS_LIST="$NETNS_LIST $NS"
}

# What one test started: its background processes and namespaces.
cleanup_test() {
	for p in $BG_PIDS; do
		kill -KILL "$p" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	for n in $NETNS_LIST; do
		netns_delete "$n"
	done
	# a cluster launcher killed above leaves its directory: not the next
	# test's failure
	rm -rf "$TMP"/dvmm-cluster.*
	BG_PIDS="" NETNS_LIST=""
}

cleanup() {
	cleanup_test
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

fail() {
	echo "    $*" >&2
	return 1
}

# run_dvmm TIMEOUT OUTFILE ARGS... : run dvmm, stdout+stderr to OUTFILE,
# stdin from /dev/null; sets RC to its exit status (124 on timeout).
run_dvmm() {
	t=$1 out=$2
	shift 2
	RC=0
	timeout -k 5 "$t" $IN_NS "$DVMM" "$@" </dev/null >"$out" 2>&1 || RC=$?
	if [ "$RC" = 124 ] || [ "$RC" = 137 ]; then
		echo "    dvmm timed out after ${t}s; output:" >&2
		tail -20 "$out" | sed 's/^/      /' >&2
	fi
}

# expect_passes OUTFILE NAME... : every NAME has a PASS line, no FAIL line.
expect_passes() {
	f=$1
	shift
	for n in "$@"; do
		grep -q "^PASS $n\b" "$f" || {
			fail "no 'PASS $n' in output:"
			sed 's/^/      /' "$f" | tail -30 >&2
			return 1
		}
	done
	if grep -q '^FAIL' "$f"; then
		fail "guest reported failures:"
		grep '^FAIL' "$f" | sed 's/^/      /' >&2
		return 1
	fi
}

expect_rc() {
	[ "$RC" = "$1" ] && return 0
	fail "exit status $RC, expected $1"
	# what the guest and dvmm said about it, if the test kept an output
	[ -f "$TMP/out" ] &&
		grep -E '^(FAIL|dvmm:)' "$TMP/out" | head -8 | sed 's/^/      /' >&2
	return 1
}

# wait_for COND_CMD TIMEOUT_S WHAT : poll a condition every 50 ms.
wait_for() {
	cond=$1 limit=$2 what=$3
	i=0
	while ! eval "$cond"; do
		i=$((i + 1))
		[ $i -le $((limit * 20)) ] || {
			fail "timed out after ${limit}s waiting for $what"
			return 1
		}
		sleep 0.05
	done
}

# run_dvmm_ns NS TIMEOUT OUTFILE ARGS... : run_dvmm inside namespace NS.
run_dvmm_ns() {
	ns=$1
	shift
	IN_NS="ip netns exec $ns" run_dvmm "$@"
}

# start_dvmm_bg OUTFILE ARGS... : start dvmm in the background; sets BGPID.
start_dvmm_bg() {
	out=$1
	shift
	$IN_NS "$DVMM" "$@" </dev/null >"$out" 2>&1 &
	BGPID=$!
	BG_PIDS="$BG_PIDS $BGPID"
}

# wait_exit PID TIMEOUT_S : wait for a background process; sets RC.
wait_exit() {
	pid=$1 limit=$2
	wait_for "! kill -0 $pid 2>/dev/null" "$limit" "process $pid to exit" ||
		return 1
	RC=0
	wait "$pid" || RC=$?
}

# one_line FILE : the file holds exactly one line (a clear error message).
one_line() {
	n=$(wc -l <"$1")
	[ "$n" = 1 ] || {
		fail "expected one line of error output, got $n:"
		sed 's/^/      /' "$1" >&2
		return 1
	}
}

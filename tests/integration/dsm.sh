# tests/integration/dsm.sh - the guest-memory DSM without vCPUs:
# tests/tools/dsm_stress with 2 and 3 node processes on loopback (plain and
# under ASan/UBSan; homes interleaved and by range): exact counter
# totals, in-order ring items, a checksum over a region written by every
# thread of every node, no refused protocol message, and no process left
# behind. Sourced by run.sh.

# dsm_stress_run TOOL NODES [HOME_CHUNK] : run it, check its output and
# that it is gone.
dsm_stress_run() {
	tool=$1 nodes=$2 chunk=${3:-1}
	[ -x "$tool" ] || { fail "$tool not built (make tools)"; return 1; }
	RC=0
	timeout -k 5 50 "$tool" --nodes "$nodes" --threads 4 --iters 100000 \
		--items 20000 --timeout 40 --home-chunk "$chunk" --tag "$TMP" \
		</dev/null >"$TMP/dsm.out" 2>&1 || RC=$?
	wait_for "! pgrep -f -- '--tag $TMP' >/dev/null" 5 \
		"the dsm_stress processes to go" || return 1
	expect_rc 0 || { tail -20 "$TMP/dsm.out" >&2; return 1; }
	grep -q "^PASS dsm_stress nodes=$nodes " "$TMP/dsm.out" || {
		fail "no PASS line:"; tail -20 "$TMP/dsm.out" >&2; return 1; }
	for k in counters rings checksum; do
		n=$(grep -c "^PASS $k " "$TMP/dsm.out")
		[ "$n" = "$nodes" ] ||
			fail "$n of $nodes nodes passed $k" || return 1
	done
	n=$(grep -c '"protocol_errors":0,' "$TMP/dsm.out")
	[ "$n" = "$nodes" ] || fail "protocol errors reported" || return 1
	! grep -q 'Sanitizer' "$TMP/dsm.out" || {
		fail "sanitizer report:"; grep -A5 Sanitizer "$TMP/dsm.out" >&2
		return 1; }
}

t_dsm_stress_2nodes() { dsm_stress_run "$ROOT/build/tools/dsm_stress" 2; }
t_dsm_stress_3nodes() { dsm_stress_run "$ROOT/build/tools/dsm_stress" 3; }
# Homes by range: each node is home of one contiguous range of 20 pages.
t_dsm_stress_3nodes_ranges() {
	dsm_stress_run "$ROOT/build/tools/dsm_stress" 3 20
}
t_dsm_stress_asan_2nodes() {
	dsm_stress_run "$ROOT/build/asan/tools/dsm_stress" 2
}
t_dsm_stress_asan_3nodes() {
	dsm_stress_run "$ROOT/build/asan/tools/dsm_stress" 3
}

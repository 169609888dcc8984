# tests/integration/vtime.sh - one guest time on every node (issue 8): the
# guest's tsc test across nodes (TSC and kvmclock values passed between
# CPUs on different nodes never arrive "from the future"), LAPIC timers on
# every node, an injected 50 ms skew of one node's host TSC that the clock
# protocol measures and the guest never sees, the estimate in ctl stats.
# Sourced by run.sh.

# vtime_run NODES CPUS NETNS(yes|no) : tsc, timer and timerlat across the
# nodes; the stated timer tolerance is 50 ms late (2-core CI hosts run
# every node's threads; an idle host does ~0.3 ms).
vtime_run() {
	cluster_env
	ns=""
	[ "$3" = yes ] && ns=--netns
	start_dvmm_bg "$TMP/out" run --nodes "$1" $ns --cpus "$2" \
		--memory 256M --kernel "$GUEST" \
		--cmdline "tests=tsc,timer,timerlat tl_tol_us=50000"
	pid=$BGPID
	[ "$3" = yes ] && note_cluster_netns "$pid" "$1"
	wait_exit "$pid" 240 || return 1
	expect_rc 0 && expect_passes "$TMP/out" tsc timer timerlat || return 1
	cluster_gone "$pid"
}

t_vtime_2nodes() { vtime_run 2 2 no; }
t_vtime_3nodes() { vtime_run 3 3 no; }
t_vtime_2nodes_netns() { vtime_run 2 2 yes; }

# Node 1 sees its host TSC 50 ms ahead: the protocol measures it (ctl
# stats), the guest's tsc test across nodes still passes.
t_vtime_injected_skew() {
	cluster_env
	sock=$TMP/api.sock
	DVMM_TEST_TSC_SKEW=1:50000000 start_dvmm_bg "$TMP/out" run \
		--nodes 2 --cpus 2 --memory 256M --kernel "$GUEST" \
		--api "$sock" --cmdline "tests=tsc,timer,idle"
	pid=$BGPID
	wait_for "grep -q '^INFO tick 1' $TMP/out" 120 "guest ticks" ||
		return 1
	expect_passes "$TMP/out" tsc timer || return 1
	"$DVMM" ctl "$sock" stats >"$TMP/st" || fail "stats failed" ||
		return 1
	off=$(sed -n '/"vtime"/,/}/p' "$TMP/st" |
		grep -o '"offset_ns": -\?[0-9]*' | head -1 | grep -o -- '-\?[0-9]*$')
	err=$(sed -n '/"vtime"/,/}/p' "$TMP/st" |
		grep -o '"error_ns": [0-9]*' | head -1 | grep -o '[0-9]*$')
	[ -n "$off" ] && [ -n "$err" ] ||
		fail "no vtime estimate in stats: $(cat "$TMP/st")" || return 1
	# node 0's TSC minus node 1's view: -50 ms, within the error bound
	d=$((off + 50000000))
	[ "${d#-}" -le "$((err + 1000))" ] ||
		fail "estimated offset $off ns, error $err ns; expected -50 ms" ||
		return 1
	"$DVMM" ctl "$sock" stop >/dev/null || fail "stop failed" || return 1
	wait_exit "$pid" 20 && expect_rc 0 && cluster_gone "$pid"
}

# Guest time across a pause: the TSC never goes back, and the tsc test
# after resume still passes on every node.
t_vtime_pause_resume() {
	sock=$TMP/api.sock
	start_dvmm_bg "$TMP/out" run --irqchip user --cpus 2 --memory 64M \
		--kernel "$GUEST" --api "$sock" --cmdline "tests=idle"
	pid=$BGPID
	wait_for "grep -q '^INFO tick 1' $TMP/out" 60 "guest ticks" ||
		return 1
	"$DVMM" ctl "$sock" pause >/dev/null || fail "pause failed" ||
		return 1
	sleep 1 # the pause itself is what is tested: 1 s of host time
	"$DVMM" ctl "$sock" resume >/dev/null || fail "resume failed" ||
		return 1
	n=$(grep -c '^INFO tick' "$TMP/out")
	wait_for "[ \$(grep -c '^INFO tick' $TMP/out) -gt $((n + 1)) ]" 30 \
		"ticks after resume" || return 1
	! grep -q 'went back' "$TMP/out" ||
		fail "guest saw time go back: $(grep 'went back' "$TMP/out")" ||
		return 1
	"$DVMM" ctl "$sock" stop >/dev/null || fail "stop failed" || return 1
	wait_exit "$pid" 20 && expect_rc 0
}

# ctl pause/resume on a cluster: every node's vCPUs park (the answer comes
# only once they have), the guest stops ticking, and after resume its
# clocks go on without going back.
t_vtime_cluster_pause() {
	cluster_env
	sock=$TMP/api.sock
	start_dvmm_bg "$TMP/out" run --nodes 2 --cpus 2 --memory 64M \
		--kernel "$GUEST" --api "$sock" --cmdline "tests=idle"
	pid=$BGPID
	wait_for "grep -q '^INFO tick 2 ' $TMP/out" 60 "guest ticks" ||
		return 1
	"$DVMM" ctl "$sock" pause >"$TMP/p" 2>&1 ||
		fail "pause failed: $(cat "$TMP/p")" || return 1
	n=$(grep -c '^INFO tick' "$TMP/out")
	sleep 1 # paused for a second of host time: no tick may come
	[ "$(grep -c '^INFO tick' "$TMP/out")" -le $((n + 1)) ] ||
		fail "the guest kept ticking while paused" || return 1
	"$DVMM" ctl "$sock" resume >"$TMP/p" 2>&1 ||
		fail "resume failed: $(cat "$TMP/p")" || return 1
	n=$(grep -c '^INFO tick' "$TMP/out")
	wait_for "[ \$(grep -c '^INFO tick' $TMP/out) -gt $((n + 1)) ]" 30 \
		"ticks after resume" || return 1
	! grep -q 'went back' "$TMP/out" ||
		fail "guest saw time go back: $(grep 'went back' "$TMP/out")" ||
		return 1
	"$DVMM" ctl "$sock" stop >/dev/null || fail "stop failed" || return 1
	wait_exit "$pid" 20 && expect_rc 0 && cluster_gone "$pid"
}

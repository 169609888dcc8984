# tests/integration/migration.sh - live migration (issue 9), so far its
# foundation: a VM's KVM state (vCPUs, irqchip, PIT, kvmclock) captured
# from one VM, encoded, decoded and restored into a second VM that goes on
# running the guest from where the first stopped (build/tools/
# vmstate_selftest, plain and ASan/UBSan). Sourced by run.sh.

vmstate_selftest() { # binary
	"$1" >"$TMP/out" 2>&1 || RC=$?
	RC=${RC:-0}
	expect_rc 0 && grep -q '^vmstate selftest: ok' "$TMP/out" ||
		fail "output: $(tail -3 "$TMP/out")"
}

t_vmstate_selftest() { vmstate_selftest "$ROOT/build/tools/vmstate_selftest"; }
t_vmstate_selftest_asan() {
	vmstate_selftest "$ROOT/build/asan/tools/vmstate_selftest"
}

# migrate_env : a shared secret for both ends, mode 0600.
migrate_env() {
	head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/secret"
	chmod 600 "$TMP/secret"
	MIG_PORT=$(free_port)
}

# A ticking guest moves to a second dvmm process: the source ends with 0
# and one line, the destination's guest goes on ticking from where it was
# with its clocks never going back.
t_migrate_stop_and_copy() {
	migrate_env
	start_dvmm_bg "$TMP/dst" run --cpus 2 --memory 128M \
		--kernel "$GUEST" --incoming "tcp:127.0.0.1:$MIG_PORT" \
		--migration-secret "$TMP/secret" --api "$TMP/dst.sock" \
		--cmdline "tests=idle"
	dst=$BGPID
	start_dvmm_bg "$TMP/out" run --cpus 2 --memory 128M \
		--kernel "$GUEST" --api "$TMP/src.sock" \
		--migration-secret "$TMP/secret" --cmdline "tests=idle"
	src=$BGPID
	wait_for "grep -q '^INFO tick 3 ' $TMP/out" 60 "guest ticks" ||
		return 1
	"$DVMM" ctl "$TMP/src.sock" migrate "tcp:127.0.0.1:$MIG_PORT" \
		>"$TMP/m" 2>&1 || fail "migrate failed: $(cat "$TMP/m")" ||
		return 1
	grep -q '"downtime_ms"' "$TMP/m" || fail "no downtime: $(cat "$TMP/m")" ||
		return 1
	pid=$src
	wait_exit "$src" 20 && expect_rc 0 || return 1
	grep -q '^dvmm: the VM moved to tcp:127.0.0.1' "$TMP/out" ||
		fail "no 'moved' line from the source" || return 1
	last=$(grep -o '^INFO tick [0-9]*' "$TMP/out" | tail -1 | cut -d' ' -f3)
	wait_for "grep -q '^INFO tick $((last + 3)) ' $TMP/dst" 30 \
		"the guest ticking on the destination" || return 1
	! grep -q 'went back' "$TMP/dst" ||
		fail "time went back: $(grep 'went back' "$TMP/dst")" || return 1
	"$DVMM" ctl "$TMP/dst.sock" stop >/dev/null || fail "stop failed" ||
		return 1
	pid=$dst
	wait_exit "$dst" 20 && expect_rc 0
}

# Nothing listens, or the destination has another secret: the migration
# fails with one clear reason and the source's guest goes on.
t_migrate_failures() {
	migrate_env
	start_dvmm_bg "$TMP/out" run --memory 64M --kernel "$GUEST" \
		--api "$TMP/src.sock" --migration-secret "$TMP/secret" \
		--cmdline "tests=idle"
	src=$BGPID
	wait_for "grep -q '^INFO tick 2 ' $TMP/out" 60 "guest ticks" ||
		return 1
	! "$DVMM" ctl "$TMP/src.sock" migrate "tcp:127.0.0.1:$MIG_PORT" \
		>"$TMP/m" 2>&1 || fail "migrating to nothing succeeded" ||
		return 1
	grep -q 'cannot reach' "$TMP/m" || fail "reason: $(cat "$TMP/m")" ||
		return 1
	head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/other"
	chmod 600 "$TMP/other"
	start_dvmm_bg "$TMP/dst" run --memory 64M --kernel "$GUEST" \
		--incoming "tcp:127.0.0.1:$MIG_PORT" \
		--migration-secret "$TMP/other" --cmdline "tests=idle"
	dst=$BGPID
	wait_for "ss -ltn | grep -q ':$MIG_PORT '" 20 "the destination" ||
		return 1
	! "$DVMM" ctl "$TMP/src.sock" migrate "tcp:127.0.0.1:$MIG_PORT" \
		>"$TMP/m" 2>&1 || fail "a wrong secret was accepted" ||
		return 1
	grep -q 'secret' "$TMP/m" || fail "reason: $(cat "$TMP/m")" ||
		return 1
	# the destination refuses the stranger and goes on waiting
	wait_for "grep -q 'does not know the secret; still waiting' $TMP/dst" \
		20 "the destination's refusal" || return 1
	kill -0 "$dst" || fail "the destination gave up" || return 1
	n=$(grep -c '^INFO tick' "$TMP/out")
	wait_for "[ \$(grep -c '^INFO tick' $TMP/out) -gt $((n + 1)) ]" 30 \
		"the source's guest going on" || return 1
	"$DVMM" ctl "$TMP/src.sock" stop >/dev/null || fail "stop failed" ||
		return 1
	pid=$src
	wait_exit "$src" 20 && expect_rc 0
}

t_migrate_bad_options() {
	run_dvmm 20 "$TMP/out" run --kernel "$GUEST" --incoming tcp:127.0.0.1:1
	expect_rc 2 && one_line "$TMP/out" &&
		grep -q 'needs --migration-secret' "$TMP/out" || return 1
	run_dvmm 20 "$TMP/out" run --kernel "$GUEST" --incoming udp:x:1 \
		--migration-secret /nonexistent
	expect_rc 2 && one_line "$TMP/out" || return 1
	printf 'abcd\n' >"$TMP/short"
	chmod 600 "$TMP/short"
	run_dvmm 20 "$TMP/out" run --kernel "$GUEST" \
		--migration-secret "$TMP/short" --cmdline tests=boot
	expect_rc 1 && one_line "$TMP/out" && grep -q short "$TMP/out"
}

# mangled_migration MODE : the stream relayed through tcp_mangle, which
# corrupts one byte or cuts the connection 100 KiB in: the destination
# refuses what it got, the source's guest goes on.
mangled_migration() {
	migrate_env
	relay=$(free_port)
	start_dvmm_bg "$TMP/dst" run --memory 64M --kernel "$GUEST" \
		--incoming "tcp:127.0.0.1:$MIG_PORT" \
		--migration-secret "$TMP/secret" --cmdline "tests=idle"
	dst=$BGPID
	"$TOOLS/tcp_mangle" "$relay" "$MIG_PORT" "$1" 102400 >"$TMP/relay" 2>&1 &
	BG_PIDS="$BG_PIDS $!"
	start_dvmm_bg "$TMP/out" run --memory 64M --kernel "$GUEST" \
		--api "$TMP/src.sock" --migration-secret "$TMP/secret" \
		--cmdline "tests=idle"
	src=$BGPID
	wait_for "grep -q '^INFO tick 2 ' $TMP/out && grep -q ready $TMP/relay && ss -ltn | grep -q ':$MIG_PORT '" \
		60 "guest ticks, the relay and the destination" || return 1
	! "$DVMM" ctl "$TMP/src.sock" migrate "tcp:127.0.0.1:$relay" \
		>"$TMP/m" 2>&1 || fail "a $1 stream migrated" || return 1
	pid=$dst
	wait_exit "$dst" 30 && expect_rc 1 && one_line "$TMP/dst" || return 1
	[ "$1" = cut ] ||
		grep -Eq 'corrupted|bad migration record' "$TMP/dst" ||
		fail "destination: $(cat "$TMP/dst")" || return 1
	n=$(grep -c '^INFO tick' "$TMP/out")
	wait_for "[ \$(grep -c '^INFO tick' $TMP/out) -gt $((n + 1)) ]" 30 \
		"the source's guest going on" || return 1
	"$DVMM" ctl "$TMP/src.sock" stop >/dev/null || fail "stop failed" ||
		return 1
	pid=$src
	wait_exit "$src" 20 && expect_rc 0
}

t_migrate_corrupted_stream() { mangled_migration corrupt; }
t_migrate_cut_stream() { mangled_migration cut; }

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

# ---- migration with devices and workloads ----

# mig_start SRC_NS DST_NS DST_ADDR ARGS... : a destination waiting on
# DST_ADDR:MIG_PORT and a source, both `dvmm run ARGS` (namespaces may be
# empty); sets src, dst, MIG_URI.
mig_start() {
	sns=$1 dns=$2 daddr=$3
	shift 3
	migrate_env
	MIG_URI="tcp:$daddr:$MIG_PORT"
	IN_NS=${dns:+ip netns exec $dns} start_dvmm_bg "$TMP/dst" run "$@" \
		--incoming "$MIG_URI" --migration-secret "$TMP/secret" \
		--api "$TMP/dst.sock"
	dst=$BGPID
	IN_NS=${sns:+ip netns exec $sns} start_dvmm_bg "$TMP/out" run "$@" \
		--migration-secret "$TMP/secret" --api "$TMP/src.sock"
	src=$BGPID
}

# kicks SOCK : doorbells the first virtio device served so far.
kicks() {
	"$DVMM" ctl "$1" stats 2>/dev/null | grep -o '"kicks": [0-9]*' |
		head -1 | awk '{print $2}'
}

# mig_move [CTL OPTIONS] : migrate now; the source ends with 0, the
# result is in $TMP/m, the downtime in DOWNTIME (ms, integer).
mig_move() {
	"$DVMM" ctl "$TMP/src.sock" migrate "$MIG_URI" "$@" >"$TMP/m" 2>&1 ||
		fail "migrate failed: $(tail -3 "$TMP/m")" || return 1
	DOWNTIME=$(grep -o '"downtime_ms": [0-9.]*' "$TMP/m" | awk '{print int($2)}')
	pid=$src
	wait_exit "$src" 30 && expect_rc 0
}

# mig_finish TEST : the destination's guest passes TEST and exits 0.
mig_finish() {
	pid=$dst
	wait_exit "$dst" 120 && RC_DST=$RC && RC=$RC_DST && expect_rc 0 &&
		expect_passes "$TMP/dst" "$1" || {
		fail "destination: $(grep -E '^(FAIL|dvmm)' "$TMP/dst" | head -3)"
		return 1
	}
	! grep -q 'went back' "$TMP/dst" || fail "time went back"
}

# Continuous verified disk writes with flushes: requests in flight when
# the source stops complete there; the guest reads every block back on the
# destination and the image holds every acknowledged write.
t_migrate_blk_writes() {
	truncate -s 8M "$TMP/disk.img"
	mig_start "" "" 127.0.0.1 --memory 128M --kernel "$GUEST" \
		--disk "$TMP/disk.img" \
		--cmdline "tests=blkstream bs_secs=6 bs_seed=7"
	wait_for "[ \"\$(kicks $TMP/src.sock)\" -gt 50 ] 2>/dev/null" 60 \
		"disk writes under way" || return 1
	mig_move || return 1
	mig_finish blkstream || return 1
	w=$(grep -o 'INFO blkstream writes=[0-9]*' "$TMP/dst" | cut -d= -f2)
	b=$(grep -o 'INFO blkstream.* blocks=[0-9]*' "$TMP/dst" |
		grep -o 'blocks=[0-9]*' | cut -d= -f2)
	"$TOOLS/blkstream_check" "$TMP/disk.img" 7 "${b:-256}" "${w:-0}" \
		>"$TMP/chk" 2>&1 || fail "image: $(cat "$TMP/chk")"
}

# A UDP exchange through a tap with a host peer goes on from the
# destination; datagrams were lost only inside the longest gap, which is
# about the downtime.
t_migrate_udp() {
	make_netns mig-udp || return 1
	ip netns exec "$NS" "$TOOLS/udp_echo" $NET_HOST_ADDR $NET_PORT 200 \
		>"$TMP/echo" 2>&1 &
	BG_PIDS="$BG_PIDS $!"
	wait_for "grep -q ready $TMP/echo" 20 "the UDP echo server" || return 1
	mig_start "$NS" "$NS" 127.0.0.1 --memory 128M --kernel "$GUEST" \
		--net tap=tap0 --cmdline "tests=udpstream us_secs=6 net_ip=$NET_GUEST_ADDR net_peer=$NET_HOST_ADDR net_port=$NET_PORT"
	wait_for "[ \"\$(kicks $TMP/src.sock)\" -gt 100 ] 2>/dev/null" 60 \
		"datagrams going" || return 1
	mig_move || return 1
	mig_finish udpstream || return 1
	gap=$(grep -o 'max_gap_ms=[0-9]*' "$TMP/dst" | cut -d= -f2)
	[ "${gap:-99999}" -le $((DOWNTIME + 300)) ] ||
		fail "longest gap ${gap} ms, downtime ${DOWNTIME} ms"
}

# dirty_100mbs [RUN OPTIONS] : a guest dirtying 64 MiB at 100 MB/s moves;
# the pages it dirtied are resent and it finds every page right.
dirty_100mbs() {
	mig_start "" "" 127.0.0.1 --memory 256M --kernel "$GUEST" "$@" \
		--cmdline "tests=dirty dirty_mb=64 dirty_rate=100 dirty_secs=8"
	wait_for "grep -q '^INFO cpus' $TMP/out" 60 "the guest" || return 1
	mig_move || return 1
	# dirtied pages were tracked: resent in rounds or in the final copy
	grep -Eq '"rounds": [1-9]|"final_pages": [1-9]' "$TMP/m" ||
		fail "no dirty page resent: $(cat "$TMP/m")" || return 1
	mig_finish dirty
}

t_migrate_dirty_rate() { dirty_100mbs; }

# The guest dirties memory as fast as it can and the link is limited:
# auto-converge throttles the vCPUs until the rest fits; migrate-status
# shows the pre-copy on the way.
t_migrate_dirty_converge() {
	mig_start "" "" 127.0.0.1 --memory 256M --kernel "$GUEST" \
		--cmdline "tests=dirty dirty_mb=64 dirty_secs=20"
	wait_for "grep -q '^INFO cpus' $TMP/out" 60 "the guest" || return 1
	"$DVMM" ctl "$TMP/src.sock" migrate "$MIG_URI" --bandwidth 200 \
		--downtime 30 >"$TMP/m" 2>&1 &
	ctl=$!
	wait_for "$DVMM ctl $TMP/src.sock migrate-status 2>/dev/null | grep -q '\"status\": \"pre-copy\"'" \
		30 "migrate-status showing the pre-copy" || return 1
	wait "$ctl" || fail "migrate failed: $(tail -3 "$TMP/m")" || return 1
	grep -q '"max_throttle_pct": [1-9]' "$TMP/m" ||
		fail "never throttled: $(cat "$TMP/m")" || return 1
	pid=$src
	wait_exit "$src" 30 && expect_rc 0 && mig_finish dirty
}

# The destination dies in the middle of the pre-copy: the migration fails
# with a reason and the source's guest goes on (and passes).
t_migrate_dest_killed() {
	mig_start "" "" 127.0.0.1 --memory 128M --kernel "$GUEST" \
		--cmdline "tests=dirty,idle dirty_mb=32 dirty_secs=4"
	wait_for "grep -q '^INFO cpus' $TMP/out" 60 "the guest" || return 1
	"$DVMM" ctl "$TMP/src.sock" migrate "$MIG_URI" --bandwidth 4 \
		>"$TMP/m" 2>&1 &
	ctl=$!
	wait_for "$DVMM ctl $TMP/src.sock migrate-status 2>/dev/null | grep -q '\"status\": \"pre-copy\"'" \
		30 "the pre-copy" || return 1
	kill -KILL "$dst"
	wait "$dst" 2>/dev/null
	! wait "$ctl" || fail "the migration succeeded" || return 1
	grep -q 'cannot migrate the VM' "$TMP/m" ||
		fail "reason: $(tail -2 "$TMP/m")" || return 1
	wait_for "grep -q '^INFO tick 2 ' $TMP/out" 60 \
		"the source's guest going on" || return 1
	expect_passes "$TMP/out" dirty || return 1
	"$DVMM" ctl "$TMP/src.sock" stop >/dev/null || fail "stop failed" ||
		return 1
	pid=$src
	wait_exit "$src" 20 && expect_rc 0
}

# Source and destination in two network namespaces joined by a veth pair.
t_migrate_namespaces() {
	a=dvmm-it-$$-miga b=dvmm-it-$$-migb
	ip netns add "$a" && NETNS_LIST="$NETNS_LIST $a" &&
		ip netns add "$b" && NETNS_LIST="$NETNS_LIST $b" &&
		ip -n "$a" link add mig0 type veth peer name mig1 netns "$b" &&
		ip -n "$a" addr add 10.77.0.1/24 dev mig0 &&
		ip -n "$b" addr add 10.77.0.2/24 dev mig1 &&
		ip -n "$a" link set mig0 up && ip -n "$b" link set mig1 up &&
		ip -n "$a" link set lo up && ip -n "$b" link set lo up ||
		fail "cannot build the namespaces" || return 1
	mig_start "$a" "$b" 10.77.0.2 --memory 128M --kernel "$GUEST" \
		--cmdline "tests=dirty dirty_mb=32 dirty_rate=50 dirty_secs=4"
	wait_for "grep -q '^INFO cpus' $TMP/out" 60 "the guest" || return 1
	wait_for "ip netns exec $b ss -ltn | grep -q ':$MIG_PORT '" 20 \
		"the destination" || return 1
	mig_move || return 1
	mig_finish dirty
}

# KVM's dirty ring instead of the bitmap: the ring fills and is harvested
# while the guest dirties 100 MB/s; every page arrives.
t_migrate_dirty_ring() {
	run_dvmm 20 "$TMP/bad" run --kernel "$GUEST" --dirty-ring 1000
	expect_rc 2 && one_line "$TMP/bad" || return 1
	dirty_100mbs --dirty-ring 4096
}

# ---- post-copy ----

# A guest dirtying 64 MiB as fast as it can moves with --postcopy: one
# pre-copy pass, a short pause for the state, then the pages it still
# needs come on demand and in the background; it finds every page right.
t_migrate_postcopy_dirty() {
	mig_start "" "" 127.0.0.1 --memory 256M --kernel "$GUEST" \
		--cmdline "tests=dirty dirty_mb=64 dirty_secs=10"
	wait_for "grep -q '^INFO cpus' $TMP/out" 60 "the guest" || return 1
	sleep 1
	mig_move --postcopy || return 1
	grep -q '"postcopy": true' "$TMP/m" && grep -q '"postcopy_ms"' "$TMP/m" &&
		grep -q '"owed_pages": [1-9]' "$TMP/m" ||
		fail "no post-copy: $(cat "$TMP/m")" || return 1
	[ -n "$DOWNTIME" ] && [ "$DOWNTIME" -lt 1000 ] ||
		fail "downtime ${DOWNTIME:-missing} ms: $(cat "$TMP/m")" ||
		return 1
	mig_finish dirty
}

# Disk writes going on while the VM moves with --postcopy: the virtio-blk
# thread on the destination blocks in faults on missing pages like the
# vCPUs; the image holds every acknowledged write.
t_migrate_postcopy_blk() {
	truncate -s 8M "$TMP/disk.img"
	mig_start "" "" 127.0.0.1 --memory 128M --kernel "$GUEST" \
		--disk "$TMP/disk.img" \
		--cmdline "tests=blkstream bs_secs=6 bs_seed=7"
	wait_for "[ \"\$(kicks $TMP/src.sock)\" -gt 50 ] 2>/dev/null" 60 \
		"disk writes under way" || return 1
	mig_move --postcopy || return 1
	grep -q '"postcopy": true' "$TMP/m" ||
		fail "no post-copy: $(cat "$TMP/m")" || return 1
	mig_finish blkstream || return 1
	w=$(grep -o 'INFO blkstream writes=[0-9]*' "$TMP/dst" | cut -d= -f2)
	b=$(grep -o 'INFO blkstream.* blocks=[0-9]*' "$TMP/dst" |
		grep -o 'blocks=[0-9]*' | cut -d= -f2)
	"$TOOLS/blkstream_check" "$TMP/disk.img" 7 "${b:-256}" "${w:-0}" \
		>"$TMP/chk" 2>&1 || fail "image: $(cat "$TMP/chk")"
}

# The source dies (kill -9) in the post-copy, which a bandwidth limit
# makes last: the destination cannot go on and stops with one clear line
# and a non-zero status instead of hanging.
t_migrate_postcopy_source_killed() {
	mig_start "" "" 127.0.0.1 --memory 128M --kernel "$GUEST" \
		--cmdline "tests=dirty,idle dirty_mb=32 dirty_secs=4"
	wait_for "grep -q '^INFO cpus' $TMP/out" 60 "the guest" || return 1
	"$DVMM" ctl "$TMP/src.sock" migrate "$MIG_URI" --postcopy \
		--bandwidth 4 >"$TMP/m" 2>&1 &
	ctl=$!
	wait_for "$DVMM ctl $TMP/src.sock migrate-status 2>/dev/null | grep -q '\"status\": \"post-copy\"'" \
		60 "migrate-status showing the post-copy" || return 1
	"$DVMM" ctl "$TMP/src.sock" migrate-status >"$TMP/st" 2>&1
	grep -q '"pages_left": [1-9]' "$TMP/st" ||
		fail "status: $(cat "$TMP/st")" || return 1
	kill -KILL "$src"
	wait "$src" 2>/dev/null
	wait "$ctl" 2>/dev/null
	pid=$dst
	wait_exit "$dst" 30 || return 1
	[ "$RC" != 0 ] || fail "the destination ended with 0" || return 1
	grep -q '^dvmm: post-copy migration failed: .*cannot go on' \
		"$TMP/dst" || fail "destination: $(tail -3 "$TMP/dst")" ||
		return 1
	[ "$(grep -c '^dvmm:' "$TMP/dst")" = 1 ] ||
		fail "more than one line: $(grep '^dvmm:' "$TMP/dst")"
}

# A destination still waiting for its source ends on SIGTERM.
t_migrate_incoming_sigterm() {
	migrate_env
	start_dvmm_bg "$TMP/dst" run --memory 64M --kernel "$GUEST" \
		--incoming "tcp:127.0.0.1:$MIG_PORT" \
		--migration-secret "$TMP/secret"
	dst=$BGPID
	wait_for "ss -ltn | grep -q ':$MIG_PORT '" 20 "the destination" ||
		return 1
	kill -TERM "$dst"
	wait_exit "$dst" 20 || return 1
	grep -q 'stopped while waiting for a migration source' "$TMP/dst" ||
		fail "output: $(cat "$TMP/dst")"
}

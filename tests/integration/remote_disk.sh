# tests/integration/remote_disk.sh - remote device access: a destination
# with no copy of the disk image serves the guest's disk through the
# source host's file (`dvmm disk-serve`, --disk remote=tcp:...), and
# `dvmm ctl SOCK device-switch` moves it onto a local copy while the guest
# writes. Sourced by run.sh (after migration.sh: migrate_env, mig_move,
# mig_finish, kicks).

# rd_start SECS SEED [BLOCKS] : an 8 MiB image, a source VM writing to it with
# blkstream, a disk agent on it (waiting for its lock) and a destination
# whose disk is the agent's; sets src, dst, agent, MIG_URI.
rd_start() {
	migrate_env
	AGENT_PORT=$(free_port)
	MIG_URI="tcp:127.0.0.1:$MIG_PORT"
	truncate -s 8M "$TMP/disk.img"
	start_dvmm_bg "$TMP/dst" run --memory 128M --kernel "$GUEST" \
		--disk "remote=tcp:127.0.0.1:$AGENT_PORT" \
		--incoming "$MIG_URI" --migration-secret "$TMP/secret" \
		--api "$TMP/dst.sock"
	dst=$BGPID
	start_dvmm_bg "$TMP/out" run --memory 128M --kernel "$GUEST" \
		--disk "$TMP/disk.img" --migration-secret "$TMP/secret" \
		--api "$TMP/src.sock" \
		--cmdline "tests=blkstream bs_secs=$1 bs_seed=$2 bs_blocks=${3:-256}"
	src=$BGPID
	wait_for "[ \"\$(kicks $TMP/src.sock)\" -gt 50 ] 2>/dev/null" 60 \
		"disk writes under way" || return 1
	start_dvmm_bg "$TMP/agent" disk-serve "$TMP/disk.img" \
		--listen "tcp:127.0.0.1:$AGENT_PORT" --secret "$TMP/secret" \
		--once
	agent=$BGPID
	wait_for "grep -q 'waiting for .*lock' $TMP/agent" 20 \
		"the agent waiting for the image's lock" || return 1
}

# rd_check IMAGE SEED : the guest's last INFO line matches IMAGE.
rd_check() {
	w=$(grep -o 'INFO blkstream writes=[0-9]*' "$TMP/dst" | cut -d= -f2)
	b=$(grep -o 'INFO blkstream.* blocks=[0-9]*' "$TMP/dst" |
		grep -o 'blocks=[0-9]*' | cut -d= -f2)
	"$TOOLS/blkstream_check" "$1" "$2" "${b:-256}" "${w:-0}" \
		>"$TMP/chk" 2>&1 || fail "image $1: $(cat "$TMP/chk")" ||
		return 1
	! grep -q Sanitizer "$TMP/out" "$TMP/dst" "$TMP/agent" ||
		fail "sanitizer report"
}

# The VM moves; the agent takes the lock the source lets go of at the
# hand-over and the destination's guest goes on writing through it.
t_remote_disk_migrate() {
	rd_start 8 5 || return 1
	mig_move || return 1
	grep -q '^dvmm: serving ' "$TMP/agent" ||
		fail "the agent never served: $(cat "$TMP/agent")" || return 1
	mig_finish blkstream || return 1
	# --once: the agent ends when the destination has gone
	pid=$agent
	wait_exit "$agent" 20 && expect_rc 0 || return 1
	rd_check "$TMP/disk.img" 5
}

# The destination moves its disk onto a local copy while the guest writes;
# the copy holds every write (the agent's image is stale afterwards).
t_remote_disk_switch() {
	# writes over the whole disk: every region is dirtied during the copy
	rd_start 14 6 2048 || return 1
	mig_move || return 1
	sleep 1
	"$DVMM" ctl "$TMP/dst.sock" device-switch 0 "$TMP/local.img" \
		>"$TMP/sw" 2>&1 || fail "device-switch failed: $(cat "$TMP/sw")" ||
		return 1
	grep -q '"paused_ms"' "$TMP/sw" || fail "answer: $(cat "$TMP/sw")" ||
		return 1
	# the agent's client went: --once ends it while the guest still runs
	pid=$agent
	wait_exit "$agent" 20 && expect_rc 0 || return 1
	kill -0 "$dst" 2>/dev/null || fail "the destination died" || return 1
	mig_finish blkstream || return 1
	rd_check "$TMP/local.img" 6 || return 1
	# A second switch has nothing remote to leave.
	return 0
}

# Bad options and a wrong secret: one clear line each.
t_remote_disk_errors() {
	migrate_env
	port=$(free_port)
	truncate -s 1M "$TMP/disk.img"
	run_dvmm 20 "$TMP/out" run --kernel "$GUEST" \
		--disk "remote=tcp:127.0.0.1:$port"
	expect_rc 2 && one_line "$TMP/out" &&
		grep -q 'migration-secret' "$TMP/out" || return 1
	run_dvmm 20 "$TMP/out" run --kernel "$GUEST" --disk "remote=host:1" \
		--migration-secret "$TMP/secret"
	expect_rc 2 && one_line "$TMP/out" || return 1
	run_dvmm 20 "$TMP/out" disk-serve "$TMP/disk.img" --secret "$TMP/secret"
	expect_rc 2 && one_line "$TMP/out" && grep -q -- '--listen' "$TMP/out" ||
		return 1
	run_dvmm 20 "$TMP/out" disk-serve "$TMP/nonexistent.img" \
		--listen "tcp:127.0.0.1:$port" --secret "$TMP/secret"
	expect_rc 1 && one_line "$TMP/out" || return 1
	# Nothing listens: the VM gives up after its bounded wait.
	run_dvmm 40 "$TMP/out" run --kernel "$GUEST" \
		--disk "remote=tcp:127.0.0.1:$port" \
		--migration-secret "$TMP/secret"
	expect_rc 1 && one_line "$TMP/out" && grep -q 'disk agent' "$TMP/out" ||
		return 1
	# The agent and the VM disagree on the secret.
	head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/other"
	chmod 600 "$TMP/other"
	start_dvmm_bg "$TMP/agent" disk-serve "$TMP/disk.img" \
		--listen "tcp:127.0.0.1:$port" --secret "$TMP/other"
	agent=$BGPID
	wait_for "grep -q '^dvmm: serving' $TMP/agent" 20 "the agent" ||
		return 1
	run_dvmm 40 "$TMP/out" run --kernel "$GUEST" \
		--disk "remote=tcp:127.0.0.1:$port" \
		--migration-secret "$TMP/secret"
	expect_rc 1 && one_line "$TMP/out" && grep -q 'secret' "$TMP/out" ||
		return 1
	wait_for "grep -q 'does not know the secret' $TMP/agent" 10 \
		"the agent's refusal" || return 1
	# SIGTERM ends the agent (it had no client: --once does not apply)
	kill -TERM "$agent"
	pid=$agent
	wait_exit "$agent" 20 && expect_rc 0 || return 1
	# device-switch of a local disk, of no disk, without a path
	truncate -s 1M "$TMP/disk2.img"
	start_dvmm_bg "$TMP/vm" run --memory 64M --kernel "$GUEST" \
		--disk "$TMP/disk2.img" --api "$TMP/vm.sock" \
		--cmdline "tests=idle"
	vm=$BGPID
	wait_for "grep -qs '^INFO tick 1 ' $TMP/vm" 60 "the guest" || return 1
	! "$DVMM" ctl "$TMP/vm.sock" device-switch 0 "$TMP/copy.img" \
		>/dev/null 2>"$TMP/sw" || fail "switched a local disk" || return 1
	one_line "$TMP/sw" && grep -q 'not served by a disk agent' "$TMP/sw" ||
		return 1
	! "$DVMM" ctl "$TMP/vm.sock" device-switch 3 "$TMP/copy.img" \
		>/dev/null 2>"$TMP/sw" || fail "switched no disk" || return 1
	one_line "$TMP/sw" && grep -q "no disk '3'" "$TMP/sw" || return 1
	RC=0
	"$DVMM" ctl "$TMP/vm.sock" device-switch 0 >/dev/null 2>&1 || RC=$?
	expect_rc 2 || return 1
	"$DVMM" ctl "$TMP/vm.sock" stop >/dev/null || fail "stop failed" ||
		return 1
	pid=$vm
	wait_exit "$vm" 20 && expect_rc 0
}

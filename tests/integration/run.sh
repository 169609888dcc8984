#!/bin/bash
# tests/integration/run.sh - boot the test guest under dvmm (and QEMU) and
# check what it reports; bad input must give one clear line and a non-zero
# exit. Writes "ok NAME" / "FAIL NAME" lines to build/integration-results.txt.
. "$(dirname "$0")/lib.sh"
RESULTS=$ROOT/build/integration-results.txt
: >"$RESULTS"
ALL="boot,acpi,smp,timer,ipi,syscall,tsc,mem"
ALL_NAMES="boot acpi smp timer ipi syscall tsc mem"

boot_all() { # cpus memory
	run_dvmm 240 "$TMP/out" run --cpus "$1" --memory "$2" --kernel "$GUEST" \
		--cmdline "tests=$ALL cpus=$1 mem=$2"
	expect_rc 0 && expect_passes "$TMP/out" $ALL_NAMES || return 1
	grep -q "^INFO cpus=$1 " "$TMP/out" ||
		fail "INFO line does not report $1 cpus" || return 1
	grep -q '^PASS boot: .*(sorted)' "$TMP/out" ||
		fail "dvmm's memory map is not sorted"
}

t_boot_1cpu() { boot_all 1 256M; }
t_boot_2cpu() { boot_all 2 256M; }
t_boot_4cpu() { boot_all 4 128M; }

t_boot_asan_2cpu() {
	DVMM=$ROOT/build/asan/dvmm run_dvmm 240 "$TMP/out" run --cpus 2 \
		--memory 64M --kernel "$GUEST" \
		--cmdline "tests=boot,acpi,smp,ipi,syscall cpus=2 mem=64M"
	expect_rc 0 && expect_passes "$TMP/out" boot acpi smp ipi syscall &&
		! grep -q 'Sanitizer' "$TMP/out" || fail "sanitizer report"
}

t_high_memory() { # RAM above the 4 GiB boundary
	run_dvmm 240 "$TMP/out" run --cpus 1 --memory 3200M --kernel "$GUEST" \
		--cmdline "tests=boot,acpi mem=3200M"
	expect_rc 0 && expect_passes "$TMP/out" boot acpi
}

t_guest_failure_exit_status() {
	run_dvmm 60 "$TMP/out" run --kernel "$GUEST" \
		--cmdline "tests=boot,selftest-fail"
	expect_rc 1 && grep -q '^FAIL selftest-fail' "$TMP/out"
}

t_guest_exception_exit_status() {
	run_dvmm 60 "$TMP/out" run --kernel "$GUEST" --cmdline "tests=fault-user"
	expect_rc 3 && grep -q '^FAIL fault-user: exception 14' "$TMP/out" ||
		fail "output: $(cat "$TMP/out")"
}

t_unknown_port_logged_once() {
	run_dvmm 60 "$TMP/out" run --kernel "$GUEST" --cmdline "tests=badport"
	expect_rc 0 && expect_passes "$TMP/out" badport || return 1
	n=$(grep -c 'unassigned port 0x2f0' "$TMP/out")
	[ "$n" = 1 ] || fail "unknown port logged $n times, expected once"
}

t_reboot() {
	run_dvmm 120 "$TMP/out" run --kernel "$GUEST" --cmdline "tests=reboot"
	expect_rc 0 && grep -q '^INFO rebooting' "$TMP/out" &&
		expect_passes "$TMP/out" reboot
}

t_poweroff() {
	run_dvmm 60 "$TMP/out" run --kernel "$GUEST" --cmdline "tests=poweroff"
	expect_rc 0 && grep -q '^PASS poweroff' "$TMP/out"
}

t_console_file() {
	run_dvmm 60 "$TMP/err" run --kernel "$GUEST" \
		--console "file:$TMP/console" --cmdline "tests=boot"
	expect_rc 0 && expect_passes "$TMP/console" boot &&
		[ ! -s "$TMP/err" ] || fail "unexpected output on stdout/stderr"
}

t_no_kvm_device() {
	run_dvmm 20 "$TMP/out" run --kvm /nonexistent/kvm --kernel "$GUEST"
	expect_rc 1 && one_line "$TMP/out" &&
		grep -q '/nonexistent/kvm' "$TMP/out"
}

t_missing_kernel() {
	run_dvmm 20 "$TMP/out" run --kernel "$TMP/no-such-kernel"
	expect_rc 1 && one_line "$TMP/out" && grep -q 'no-such-kernel' "$TMP/out"
}

t_corrupt_kernels() {
	head -c 4096 /dev/urandom >"$TMP/random.elf"
	head -c 100 "$GUEST" >"$TMP/trunc.elf"
	printf '\177ELF' >"$TMP/magic.elf"
	: >"$TMP/empty.elf"
	for k in random trunc magic empty; do
		run_dvmm 20 "$TMP/out" run --kernel "$TMP/$k.elf"
		expect_rc 1 && one_line "$TMP/out" || {
			fail "for $k.elf"
			return 1
		}
	done
}

t_bad_options() {
	run_dvmm 20 "$TMP/out" run --kernel "$GUEST" --frobnicate
	expect_rc 2 && one_line "$TMP/out" && grep -q frobnicate "$TMP/out" ||
		return 1
	run_dvmm 20 "$TMP/out" run --kernel "$GUEST" --cpus 0
	expect_rc 2 && one_line "$TMP/out" || return 1
	run_dvmm 20 "$TMP/out" run --kernel "$GUEST" --memory lots
	expect_rc 2 && one_line "$TMP/out" || return 1
	run_dvmm 20 "$TMP/out" frobnicate
	expect_rc 2 && one_line "$TMP/out"
}

t_memory_too_large() {
	run_dvmm 20 "$TMP/out" run --kernel "$GUEST" --memory 64T
	expect_rc 1 && one_line "$TMP/out" && grep -q 'more than this host' \
		"$TMP/out"
}

# A guest that keeps running (tests=idle ticks forever) under the control
# socket: status, stats, pause stops its progress, resume restarts it, bad
# JSON is answered, stop ends the VM with status 0.
t_control_socket() {
	sock=$TMP/api.sock
	start_dvmm_bg "$TMP/out" run --cpus 2 --kernel "$GUEST" --api "$sock" \
		--rng --cmdline "tests=idle"
	pid=$BGPID
	wait_for "[ -S $sock ]" 30 "the control socket" || return 1
	wait_for "grep -q '^INFO tick 3' $TMP/out" 60 "guest ticks" || return 1
	"$DVMM" ctl "$sock" status >"$TMP/st" || fail "status failed" || return 1
	grep -q '"state": "running"' "$TMP/st" && grep -q '"vcpus": 2' "$TMP/st" ||
		fail "bad status: $(cat "$TMP/st")" || return 1
	"$DVMM" ctl "$sock" stats >"$TMP/sx" && grep -q '"io"' "$TMP/sx" &&
		grep -q '"name": "virtio-rng"' "$TMP/sx" ||
		fail "bad stats: $(cat "$TMP/sx")" || return 1
	"$DVMM" ctl "$sock" pause >/dev/null || fail "pause failed" || return 1
	"$DVMM" ctl "$sock" status | grep -q '"state": "paused"' ||
		fail "not paused" || return 1
	"$DVMM" ctl "$sock" pause >/dev/null 2>"$TMP/e" && fail "paused twice"
	grep -q 'already paused' "$TMP/e" || fail "second pause: $(cat "$TMP/e")" ||
		return 1
	# While paused the guest makes no progress (observed over 1 s).
	before=$(grep -c '^INFO tick' "$TMP/out")
	sleep 1
	after=$(grep -c '^INFO tick' "$TMP/out")
	[ "$before" = "$after" ] || fail "guest ticked while paused" || return 1
	"$DVMM" ctl "$sock" resume >/dev/null || fail "resume failed" || return 1
	wait_for "[ \$(grep -c '^INFO tick' $TMP/out) -gt $after ]" 30 \
		"a tick after resume" || return 1
	printf '{"cmd": nope\n' | timeout 10 nc -U -q 1 "$sock" >"$TMP/bad" || true
	grep -q '"ok": *false' "$TMP/bad" && grep -qi 'invalid json' "$TMP/bad" ||
		fail "bad JSON answer: $(cat "$TMP/bad")" || return 1
	"$DVMM" ctl "$sock" frob >/dev/null 2>&1 && fail "unknown cmd accepted"
	"$DVMM" ctl "$sock" stop >/dev/null || fail "stop failed" || return 1
	wait_exit "$pid" 30 || return 1
	expect_rc 0 && [ ! -e "$sock" ] || fail "socket left behind"
}

t_sigterm_stops_cleanly() {
	start_dvmm_bg "$TMP/out" run --kernel "$GUEST" --cmdline "tests=idle"
	pid=$BGPID
	wait_for "grep -q '^INFO tick 1' $TMP/out" 60 "guest ticks" || return 1
	kill -TERM "$pid"
	wait_exit "$pid" 30 && expect_rc 143
}

t_ctl_no_socket() {
	run_dvmm 20 "$TMP/out" ctl "$TMP/none.sock" status
	[ "$RC" != 0 ] && one_line "$TMP/out" && grep -q none.sock "$TMP/out"
}

t_qemu_runs_same_elf() {
	command -v qemu-system-x86_64 >/dev/null || fail "qemu missing" || return 1
	RC=0
	timeout -k 5 240 qemu-system-x86_64 -enable-kvm -cpu qemu64,+x2apic \
		-smp 2 -m 256 -display none -no-reboot -monitor none \
		-serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x4 \
		-kernel "$GUEST" -append "tests=boot,acpi,smp,timer,ipi,syscall,tsc cpus=2" \
		</dev/null >"$TMP/out" 2>&1 || RC=$?
	# isa-debug-exit reports (value << 1) | 1: 1 means the guest wrote 0.
	expect_rc 1 && expect_passes "$TMP/out" boot acpi smp timer ipi syscall tsc
}

# ---- virtio (issue 3) ----
TOOLS=$ROOT/build/tools

virtio_devices() { # doorbell-mode
	truncate -s 16M "$TMP/disk.img"
	run_dvmm 240 "$TMP/out" run --cpus 2 --memory 256M --kernel "$GUEST" \
		--disk "$TMP/disk.img" --rng --vconsole "file:$TMP/vcon" \
		--doorbell "$1" --cmdline "tests=pci,blk,rng,badring,vconsole blk_seed=7"
	expect_rc 0 && expect_passes "$TMP/out" pci blk rng badring vconsole ||
		return 1
	"$TOOLS/blkcheck" "$TMP/disk.img" 7 >"$TMP/chk" ||
		fail "image contents: $(cat "$TMP/chk")" || return 1
	grep -q 'virtio-console says hello' "$TMP/vcon" ||
		fail "virtio-console output missing" || return 1
	n=$(grep -c 'device needs reset' "$TMP/out")
	[ "$n" = 1 ] || fail "NEEDS_RESET logged $n times, expected once"
}

t_virtio_ioeventfd() { virtio_devices ioeventfd; }
t_virtio_poll() { virtio_devices poll; }

t_virtio_asan() {
	truncate -s 4M "$TMP/disk.img"
	DVMM=$ROOT/build/asan/dvmm run_dvmm 240 "$TMP/out" run --cpus 2 \
		--memory 128M --kernel "$GUEST" --disk "$TMP/disk.img" --rng \
		--cmdline "tests=pci,blk,rng,badring"
	expect_rc 0 && expect_passes "$TMP/out" pci blk rng badring &&
		! grep -q 'Sanitizer' "$TMP/out" || fail "sanitizer report"
}

t_blk_readonly() {
	head -c 4M /dev/urandom >"$TMP/ro.img"
	before=$(md5sum <"$TMP/ro.img")
	run_dvmm 120 "$TMP/out" run --kernel "$GUEST" \
		--disk "$TMP/ro.img,readonly" --cmdline "tests=blk"
	expect_rc 0 && grep -q '^PASS blk: read-only disk rejects writes' \
		"$TMP/out" || fail "output: $(tail -3 "$TMP/out")" || return 1
	[ "$(md5sum <"$TMP/ro.img")" = "$before" ] ||
		fail "read-only image was modified"
}

# The guest talks ARP, ICMP and UDP to a peer on the host side of a tap
# that lives in a namespace this test creates and removes.
net_test() { # doorbell-mode [extra dvmm options...]
	mode=$1
	shift
	make_netns "net-$mode" || return 1
	ip netns exec "$NS" "$TOOLS/udp_echo" $NET_HOST_ADDR $NET_PORT 200 \
		>"$TMP/echo" 2>&1 &
	BG_PIDS="$BG_PIDS $!"
	wait_for "grep -q ready $TMP/echo" 20 "the UDP echo server" || return 1
	run_dvmm_ns "$NS" 240 "$TMP/out" run --cpus 2 \
		--kernel "$GUEST" --net tap=tap0 --doorbell "$mode" "$@" \
		--cmdline "tests=pci,net net_ip=$NET_GUEST_ADDR net_peer=$NET_HOST_ADDR net_port=$NET_PORT"
	expect_rc 0 && expect_passes "$TMP/out" pci net || return 1
	grep -q '^echoed [1-9]' "$TMP/echo" ||
		fail "the host-side echo server saw no datagram" || return 1
	rx=$(ip -n "$NS" -s -j link show tap0 | grep -o '"rx":{[^}]*' |
		grep -o '"packets":[0-9]*' | cut -d: -f2)
	[ "${rx:-0}" -gt 0 ] || fail "tap0 counted no packets from the guest"
}

t_net_ioeventfd() { net_test ioeventfd; }
t_net_poll() { net_test poll; }

t_virtio_bad_options() {
	run_dvmm 20 "$TMP/out" run --kernel "$GUEST" --disk "$TMP/none.img"
	expect_rc 1 && one_line "$TMP/out" && grep -q none.img "$TMP/out" ||
		return 1
	head -c 1000 /dev/zero >"$TMP/odd.img"
	run_dvmm 20 "$TMP/out" run --kernel "$GUEST" --disk "$TMP/odd.img"
	expect_rc 1 && one_line "$TMP/out" && grep -q odd.img "$TMP/out" ||
		return 1
	run_dvmm 20 "$TMP/out" run --kernel "$GUEST" --doorbell sometimes
	expect_rc 2 && one_line "$TMP/out" || return 1
	run_dvmm 20 "$TMP/out" run --kernel "$GUEST" --net tap,mac=zz
	expect_rc 2 && one_line "$TMP/out"
}

. "$(dirname "$0")/cluster.sh"

. "$(dirname "$0")/multinode.sh"

. "$(dirname "$0")/vtime.sh"

. "$(dirname "$0")/migration.sh"

. "$(dirname "$0")/remote_disk.sh"

. "$(dirname "$0")/linux.sh"

. "$(dirname "$0")/dsm.sh"

. "$(dirname "$0")/globalnic.sh"

TESTS=${*:-$(declare -F | awk '{print $3}' | grep '^t_')}
st=0
for t in $TESTS; do
	start=$(date +%s.%N)
	# Each test runs in a subshell that cleans up after itself.
	if (trap cleanup_test EXIT; $t); then
		r=ok
	else
		r=FAIL
		st=1
	fi
	secs=$(echo "$(date +%s.%N) - $start" | bc)
	printf '%-4s %s (%.1fs)\n' "$r" "$t" "$secs"
	echo "$r $t" >>"$RESULTS"
done
exit $st

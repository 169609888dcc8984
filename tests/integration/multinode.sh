# tests/integration/multinode.sh - the userspace interrupt controllers
# (--irqchip user) on one node, and one VM whose vCPUs and devices are
# spread over 2 and 3 node processes (issue 7): the guest's whole suite,
# cache-line coherence, ping-pong, private pages without DSM traffic, the
# disk homed away from the vCPU that drives it. Sourced by run.sh.

USER_SUITE="boot,acpi,smp,timer,ipi,syscall,tsc,mem,pci,blk,rng,badring,vconsole,coherence,pingpong,private,spread"
USER_PASSES="boot acpi smp timer ipi syscall tsc mem pci blk rng badring vconsole coherence pingpong private spread"

# userchip_suite CPUS MEMORY DOORBELL [DVMM] : the suite on one node.
userchip_suite() {
	truncate -s 8M "$TMP/disk.img"
	DVMM=${4:-$DVMM} run_dvmm 240 "$TMP/out" run --irqchip user \
		--cpus "$1" --memory "$2" --kernel "$GUEST" \
		--disk "$TMP/disk.img" --rng --vconsole "file:$TMP/vcon" \
		--doorbell "$3" \
		--cmdline "tests=$USER_SUITE blk_seed=5 pp_rounds=200 nodes=1"
	expect_rc 0 && expect_passes "$TMP/out" $USER_PASSES || return 1
	! grep -q 'Sanitizer' "$TMP/out" || fail "sanitizer report" ||
		return 1
	"$TOOLS/blkcheck" "$TMP/disk.img" 5 >"$TMP/chk" ||
		fail "image contents: $(cat "$TMP/chk")"
}

t_userchip_2cpu() { userchip_suite 2 256M ioeventfd; }
t_userchip_4cpu_poll() { userchip_suite 4 128M poll; }
t_userchip_asan() { userchip_suite 2 128M ioeventfd "$ROOT/build/asan/dvmm"; }
t_userchip_net() { net_test ioeventfd --irqchip user; }

# The guest programs the IOAPIC and takes PIT interrupts through it only
# with the userspace controllers (KVM's IOAPIC page hangs here): the
# legacy path is covered by the unit tests; here the UART's IRQ 4 and the
# LAPIC timer keep a guest ticking until it is stopped.
t_userchip_ctl_stats() {
	sock=$TMP/api.sock
	start_dvmm_bg "$TMP/out" run --irqchip user --cpus 2 --memory 64M \
		--kernel "$GUEST" --api "$sock" --cmdline "tests=idle"
	pid=$BGPID
	wait_for "grep -q '^INFO tick 2' $TMP/out" 60 "guest ticks" ||
		return 1
	"$DVMM" ctl "$sock" stats >"$TMP/st" || fail "stats failed" ||
		return 1
	grep -q '"irq_window"' "$TMP/st" && grep -q '"hlt": [1-9]' "$TMP/st" ||
		fail "no userspace irqchip counters: $(cat "$TMP/st")" ||
		return 1
	"$DVMM" ctl "$sock" stop >/dev/null || fail "stop failed" || return 1
	wait_exit "$pid" 20 && expect_rc 0
}

# nodes_suite NODES CPUS NETNS(yes|no) [DVMM] : the issue's command (and
# spread, rng, vconsole) on NODES nodes: vCPU i on node i mod NODES, the
# disk on node 1, the rng and vconsole on the last node.
nodes_suite() {
	cluster_env
	ns=""
	[ "$3" = yes ] && ns=--netns
	truncate -s 8M "$TMP/disk.img"
	DVMM=${4:-$DVMM} start_dvmm_bg "$TMP/out" run --nodes "$1" $ns \
		--cpus "$2" --memory 256M --kernel "$GUEST" \
		--disk "$TMP/disk.img" --rng --vconsole "file:$TMP/vcon" \
		--cmdline "tests=boot,acpi,smp,timer,ipi,syscall,mem,pci,blk,coherence,pingpong,private,rng,vconsole,spread nodes=$1 blk_seed=9 pp_rounds=200"
	pid=$BGPID
	[ "$3" = yes ] && note_cluster_netns "$pid" "$1"
	wait_exit "$pid" 300 || return 1
	expect_rc 0 && expect_passes "$TMP/out" boot acpi smp timer ipi \
		syscall mem pci blk coherence pingpong private rng vconsole \
		spread || return 1
	! grep -q 'Sanitizer' "$TMP/out" || fail "sanitizer report" ||
		return 1
	"$TOOLS/blkcheck" "$TMP/disk.img" 9 >"$TMP/chk" ||
		fail "image contents: $(cat "$TMP/chk")" || return 1
	grep -q 'virtio-console says hello' "$TMP/vcon" ||
		fail "virtio-console output missing" || return 1
	cluster_gone "$pid"
}

t_nodes2() { nodes_suite 2 2 no; }
t_nodes3() { nodes_suite 3 3 no; }
t_nodes2_netns() { nodes_suite 2 2 yes; }
t_nodes3_4cpu() { nodes_suite 3 4 no; }
t_nodes2_asan() { nodes_suite 2 2 no "$ROOT/build/asan/dvmm"; }

# Poll-mode doorbells on the disk's home; the other node's kicks are
# forwarded. badring breaks and revives a device homed on another node.
t_nodes2_poll_badring() {
	cluster_env
	truncate -s 8M "$TMP/disk.img"
	start_dvmm_bg "$TMP/out" run --nodes 2 --cpus 2 --memory 128M \
		--kernel "$GUEST" --disk "$TMP/disk.img" --rng --doorbell poll \
		--cmdline "tests=pci,blk,rng,badring blk_seed=3"
	pid=$BGPID
	wait_exit "$pid" 240 || return 1
	expect_rc 0 && expect_passes "$TMP/out" pci blk rng badring ||
		return 1
	"$TOOLS/blkcheck" "$TMP/disk.img" 3 >"$TMP/chk" ||
		fail "image contents: $(cat "$TMP/chk")" || return 1
	cluster_gone "$pid"
}

t_nodes_bad_irqchip() {
	run_dvmm 20 "$TMP/out" run --nodes 2 --irqchip kernel \
		--kernel "$GUEST"
	expect_rc 2 && one_line "$TMP/out" &&
		grep -q 'needs --irqchip user' "$TMP/out" || return 1
	run_dvmm 20 "$TMP/out" run --irqchip maybe --kernel "$GUEST"
	expect_rc 2 && one_line "$TMP/out"
}

# The NIC on node 1, driven by the boot vCPU on node 0: ARP, ICMP and UDP
# to a host peer through a tap in the test's namespace.
t_nodes2_net() {
	cluster_env
	net_test ioeventfd --nodes 2
}

# tests/integration/globalnic.sh - the global NIC (issue 10): the guest
# uses the NICs of every node. Each node of `dvmm run --nodes N --netns`
# runs in its own network namespace (dvmm-PID-K); the NIC of a node is a
# tap dvmm makes there, and the test gives that tap an address and a UDP
# echo peer before it sets the link up: the guest waits for the link (it
# follows the tap), so nothing races. Per-node NICs, one multiqueue NIC
# whose pairs are served by every node, a single-node multiqueue NIC, and
# the guest's failover when a NIC's link goes down or its tap disappears.
# Sourced by run.sh.

GN_PORT=7777

# gn_peer LAUNCHER NODE TAP ADDR [MAC] : wait for TAP in node NODE's
# namespace, address it (and set its MAC), start a UDP echo peer there
# (its output in $TMP/echo-NODE-TAP), then set the link up.
gn_peer() {
	NETNS_PEER_PID=""
	netns_tap_peer "dvmm-$1-$2" "$3" "$4" "${5:--}" "$TMP/echo-$2-$3" \
		$GN_PORT 300
	r=$?
	BG_PIDS="$BG_PIDS $NETNS_PEER_PID"
	[ $r = 0 ] || fail "the peer on node $2; dvmm: $(tail -3 "$TMP/out")"
}

# gn_carried NODE TAP : the echo peer in node NODE's namespace, reachable
# only through that node's tap, echoed the guest's datagrams (the tap's own
# counters go with the namespace when the cluster ends).
gn_carried() {
	grep -q '^echoed [1-9]' "$TMP/echo-$1-$2" ||
		fail "the peer behind $2 on node $1 echoed nothing"
}

# gn_start NODES CPUS CMDLINE NET-OPTIONS... : the cluster in namespaces.
# The guest's console goes to $TMP/console, the nodes' log lines to
# $TMP/out (a node's line could otherwise land inside a guest's line).
gn_start() {
	cluster_env
	nodes=$1 cpus=$2 cmd=$3
	shift 3
	: >"$TMP/console"
	start_dvmm_bg "$TMP/out" run --nodes "$nodes" --netns --cpus "$cpus" \
		--memory 128M --kernel "$GUEST" --console "file:$TMP/console" \
		"$@" --cmdline "$cmd"
	pid=$BGPID
	note_cluster_netns "$pid" "$nodes"
}

gn_finish() { # launcher timeout
	wait_exit "$1" "$2" || return 1
	expect_rc 0 || return 1
	cluster_gone "$1"
}

# One NIC per node, the guest's net test on each from every vCPU.
gn_per_node() { # nodes
	gn_n=$1 ips="" peers="" nets=""
	for k in $(seq 0 $((gn_n - 1))); do
		ips="$ips${ips:+,}10.0.$((k + 2)).15"
		peers="$peers${peers:+,}10.0.$((k + 2)).1"
		nets="$nets --net node=$k,tap=gn$k"
	done
	gn_start "$gn_n" "$gn_n" "tests=net net_cpus=all net_link_wait_ms=60000 net_ip=$ips net_peer=$peers net_port=$GN_PORT" $nets
	for k in $(seq 0 $((gn_n - 1))); do
		gn_peer "$pid" "$k" "gn$k" "10.0.$((k + 2)).1" || return 1
	done
	gn_finish "$pid" 240 || return 1
	expect_passes "$TMP/console" net || return 1
	for k in $(seq 0 $((gn_n - 1))); do
		gn_carried "$k" "gn$k" || return 1
		for c in $(seq 0 $((gn_n - 1))); do
			grep -q "^INFO net$k cpu$c " "$TMP/console" ||
				fail "no net check of NIC $k from cpu $c" ||
				return 1
		done
	done
}

t_gnic_nodes2_per_node() { gn_per_node 2; }
t_gnic_nodes3_per_node() { gn_per_node 3; }

# One multiqueue NIC whose pair k is served by node k on its own tap; the
# taps share the guest-facing MAC and address (one interface, one peer
# address reached through every node's uplink).
gn_mq() { # nodes
	gn_n=$1 pairs=""
	for k in $(seq 0 $((gn_n - 1))); do
		pairs="$pairs${pairs:++}$k:mq$k"
	done
	gn_start "$gn_n" "$gn_n" "tests=net net_cpus=all net_link_wait_ms=60000 net_ip=10.0.2.15 net_peer=10.0.2.1 net_port=$GN_PORT" \
		--net "pairs=$pairs"
	for k in $(seq 0 $((gn_n - 1))); do
		gn_peer "$pid" "$k" "mq$k" 10.0.2.1 02:00:00:00:aa:01 ||
			return 1
	done
	gn_finish "$pid" 240 || return 1
	expect_passes "$TMP/console" net || return 1
	for k in $(seq 0 $((gn_n - 1))); do
		gn_carried "$k" "mq$k" || return 1
		grep -q "^INFO net0 pair$k tx=[1-9][0-9]* rx=[1-9]" "$TMP/console" ||
			fail "pair $k carried nothing in the guest" || return 1
	done
}

t_gnic_nodes2_mq() { gn_mq 2; }
t_gnic_nodes3_mq() { gn_mq 3; }

# Guest-side failover: traffic on NIC 0 (node 0) moves to NIC 1 (node 1)
# when NIC 0's tap goes down (how=down) or disappears (how=del).
gn_failover() { # how
	gn_start 2 2 "tests=netfail net_link_wait_ms=60000 net_ip=10.0.2.15,10.0.3.15 net_peer=10.0.2.1,10.0.3.1 net_port=$GN_PORT" \
		--net node=0,tap=fo0 --net node=1,tap=fo1
	gn_peer "$pid" 0 fo0 10.0.2.1 || return 1
	gn_peer "$pid" 1 fo1 10.0.3.1 || return 1
	wait_for "grep -q '^INFO netfail: sending on net0' $TMP/console" 120 \
		"the guest's traffic on net0" || return 1
	if [ "$1" = del ]; then
		ip -n "dvmm-$pid-0" link del fo0 || fail "cannot delete fo0" ||
			return 1
	else
		ip -n "dvmm-$pid-0" link set fo0 down || return 1
	fi
	gn_finish "$pid" 120 || return 1
	expect_passes "$TMP/console" netfail || return 1
	grep -q '^INFO netfail: net0 link down' "$TMP/console" ||
		fail "the guest did not see net0's link go down" || return 1
	grep -q 'fo0.*link down' "$TMP/out" ||
		fail "dvmm did not log fo0's link going down" || return 1
	gn_carried 1 fo1
}

t_gnic_failover_down() { gn_failover down; }
t_gnic_failover_deleted() { gn_failover del; }

# One node, one multi-queue tap, two pairs used by two vCPUs.
t_gnic_single_node_mq() {
	make_netns mq || return 1
	ip -n "$NS" link del tap0 &&
		ip -n "$NS" tuntap add dev tap0 mode tap multi_queue &&
		ip -n "$NS" addr add "$NET_HOST_ADDR/24" dev tap0 &&
		ip -n "$NS" link set tap0 up || fail "multi-queue tap" ||
		return 1
	ip netns exec "$NS" "$TOOLS/udp_echo" $NET_HOST_ADDR $NET_PORT 200 \
		>"$TMP/echo" 2>&1 &
	BG_PIDS="$BG_PIDS $!"
	wait_for "grep -q ready $TMP/echo" 20 "the UDP echo server" || return 1
	run_dvmm_ns "$NS" 240 "$TMP/out" run --cpus 2 --kernel "$GUEST" \
		--net tap=tap0,queues=2 \
		--cmdline "tests=net net_cpus=all net_ip=$NET_GUEST_ADDR net_peer=$NET_HOST_ADDR net_port=$NET_PORT"
	expect_rc 0 && expect_passes "$TMP/out" net || return 1
	for p in 0 1; do
		grep -q "^INFO net0 pair$p tx=[1-9][0-9]* rx=[1-9]" "$TMP/out" ||
			fail "pair $p carried nothing" || return 1
	done
}

t_gnic_bad_options() {
	run_dvmm 20 "$TMP/out" run --kernel "$GUEST" --nodes 2 \
		--net node=2,tap=x
	expect_rc 2 && one_line "$TMP/out" && grep -q 'node 2' "$TMP/out" ||
		return 1
	run_dvmm 20 "$TMP/out" run --kernel "$GUEST" --nodes 2 \
		--net pairs=0:a+1:b,tap=c
	expect_rc 2 && one_line "$TMP/out" && grep -q 'pairs=' "$TMP/out" ||
		return 1
	run_dvmm 20 "$TMP/out" run --kernel "$GUEST" --net tap=a,queues=9
	expect_rc 2 && one_line "$TMP/out" && grep -q 'queues' "$TMP/out" ||
		return 1
	run_dvmm 20 "$TMP/out" run --kernel "$GUEST" --net pairs=0:a+1:b
	expect_rc 2 && one_line "$TMP/out" && grep -q 'node 1' "$TMP/out"
}

# The multiqueue NIC over 2 nodes under ASan/UBSan.
t_gnic_nodes2_mq_asan() {
	DVMM=$ROOT/build/asan/dvmm gn_mq 2 || return 1
	! grep -q 'Sanitizer' "$TMP/out" || fail "sanitizer report"
}

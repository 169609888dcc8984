#!/bin/bash
# bench/globalnic.sh - the global NIC (issue 10): UDP throughput (packets/s
# and Mbit/s sent, echoes/s) per NIC and aggregated over 1, 2 and 3 nodes,
# with one NIC per node and with one multiqueue NIC whose pair k is served
# by node k; and the UDP round trip from every vCPU to every NIC, i.e. what
# a sending vCPU on another node than the NIC adds. Beside single-node dvmm
# and QEMU with one NIC, same guest, interleaved, median of RUNS runs.
# Every node's NIC is a tap in that node's network namespace (dvmm run
# --nodes N --netns) with a UDP echo peer behind it. Prints a markdown
# section.
cd "$(dirname "$0")/.." || exit 1
. bench/lib.sh
. scripts/netns.sh
RUNS=${RUNS:-3}
MS=${BENCH_MS:-1000}
NL=${NL_COUNT:-300}
TMPD=$(mktemp -d /tmp/dvmm-bench.XXXXXX)
NS=dvmm-gbench-$$
PEERS=""
cleanup() {
	for p in $PEERS; do kill "$p" 2>/dev/null; done
	netns_delete "$NS"
	rm -rf "$TMPD"
}
trap cleanup EXIT

PORT=7777
BASE="tests=netbench,netlat bench_ms=$MS nl_count=$NL net_port=$PORT net_link_wait_ms=60000"
QEMU="qemu-system-x86_64 -M q35 -enable-kvm -cpu qemu64,+x2apic -smp 1 -m 256 -display none -no-reboot -monitor none -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x4 -kernel $GUEST"

declare -A val # "config|line key|field" -> space-separated samples

# collect CONFIG OUTFILE : every "INFO bench NAME k=v..." line; the key is
# NAME plus its nic= and cpu= fields.
collect() {
	local cfg=$1 name rest k kv
	while read -r _ _ name rest; do
		k=$name
		for kv in $rest; do
			case $kv in nic=* | cpu=*) k="$k $kv" ;; esac
		done
		for kv in $rest; do
			val["$cfg|$k|${kv%%=*}"]+="${kv#*=} "
		done
	done < <(grep '^INFO bench ' "$2")
}

check_rc() { # config out rc want
	[ "$3" = "$4" ] && return 0
	echo "bench: $1 exited $3 (want $4):" >&2
	tail -5 "$2" >&2
	return 1
}

# One node (dvmm or QEMU) in $NS with tap0 and an echo peer.
run_single() { # config cmd append want
	local out=$TMPD/out rc=0
	timeout -k 5 300 ip netns exec "$NS" $2 \
		-$([ "${2%% *}" = build/dvmm ] && echo -cmdline || echo append) \
		"$3" </dev/null >"$out" 2>&1 || rc=$?
	check_rc "$1" "$out" "$rc" "$4" && collect "$1" "$out"
}

# A cluster of N nodes in namespaces; NIC k's tap TAPk on node k.
# kind: pernode (NIC k on node k, its own subnet) or mq (one NIC, pair k
# on node k, every tap with the same address and MAC).
run_cluster() { # config nodes kind
	local cfg=$1 n=$2 kind=$3 out=$TMPD/out rc=0 ips="" peers="" nets=""
	local pairs="" pid k dog
	for k in $(seq 0 $((n - 1))); do
		if [ "$kind" = pernode ]; then
			ips="$ips${ips:+,}10.0.$((k + 2)).15"
			peers="$peers${peers:+,}10.0.$((k + 2)).1"
			nets="$nets --net node=$k,tap=gb$k"
		else
			pairs="$pairs${pairs:++}$k:gb$k"
		fi
	done
	[ "$kind" = mq ] && ips=10.0.2.15 peers=10.0.2.1 nets="--net pairs=$pairs"
	TMPDIR=$TMPD build/dvmm run --nodes "$n" --netns --cpus "$n" \
		--memory 256M --kernel "$GUEST" $nets --cmdline \
		"$BASE nb_mode=all net_ip=$ips net_peer=$peers" \
		</dev/null >"$out" 2>&1 &
	pid=$!
	(sleep 300 && kill "$pid") 2>/dev/null &
	dog=$!
	for k in $(seq 0 $((n - 1))); do
		if [ "$kind" = pernode ]; then
			netns_tap_peer "dvmm-$pid-$k" "gb$k" "10.0.$((k + 2)).1" - \
				"$TMPD/echo$k" $PORT 600 || { kill "$pid"; wait "$pid"; return 1; }
		else
			netns_tap_peer "dvmm-$pid-$k" "gb$k" 10.0.2.1 \
				02:00:00:00:aa:01 "$TMPD/echo$k" $PORT 600 ||
				{ kill "$pid"; wait "$pid"; return 1; }
		fi
		PEERS="$PEERS $NETNS_PEER_PID"
	done
	wait "$pid" || rc=$?
	kill "$dog" 2>/dev/null
	for p in $PEERS; do kill "$p" 2>/dev/null; done
	PEERS=""
	check_rc "$cfg" "$out" "$rc" 0 && collect "$cfg" "$out"
}

SINGLE_ARGS="$BASE net_ip=$NET_GUEST_ADDR net_peer=$NET_HOST_ADDR"
DVMM1="build/dvmm run --cpus 1 --memory 256M --kernel $GUEST --net tap=tap0"
QEMU1="$QEMU -netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device virtio-net-pci,netdev=n0"

netns_create "$NS" tap0 || exit 1
ip netns exec "$NS" build/tools/udp_echo $NET_HOST_ADDR $PORT 3600 \
	>/dev/null 2>&1 &
PEERS="$!"
KEEP=$PEERS
for i in $(seq "$RUNS"); do
	PEERS=""
	run_single qemu "$QEMU1" "$SINGLE_ARGS" 1 || exit 1
	run_single dvmm1 "$DVMM1" "$SINGLE_ARGS" 0 || exit 1
	for n in 2 3; do
		run_cluster "pernode$n" "$n" pernode || exit 1
		run_cluster "mq$n" "$n" mq || exit 1
	done
	echo "bench: global NIC round $i/$RUNS" >&2
done
PEERS=$KEEP

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "-"; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.6g", m}'; }
get() { echo "${val[$1|$2|$3]}" | median; }
ratio_of() { # value reference higher-is-better(1|0)
	awk -v d="$1" -v q="$2" -v h="$3" 'BEGIN {
		if (d == "-" || q == "-" || d == 0 || q == 0) { print "-"; exit }
		if (h) printf "%.2f", d / q; else printf "%.2f", q / d }'
}

echo "## Global NIC: the NICs of every node (issue 10)"
echo
echo "UDP from the test guest's user-mode driver (guest/tests_net.c) to a"
echo "host echo peer behind each tap, $MS ms per payload size, median of $RUNS"
echo "runs. One node: 1 vCPU, 1 NIC (dvmm and QEMU). N nodes: \`dvmm run"
echo "--nodes N --netns --cpus N\`, vCPU k on node k, each node in its own"
echo "network namespace with its own tap and peer; *per-node NICs* is one"
echo "virtio-net per node (NIC k homed on node k), *multiqueue* one"
echo "virtio-net whose queue pair k is served by node k on node k's tap."
echo "With \`nb_mode=all\` every vCPU sends at once on its own node's NIC or"
echo "pair. All nodes share this 2-core host, so N nodes are N sets of"
echo "threads on the same 2 cores: the aggregate shows what the data path"
echo "costs, not what N real hosts would reach."
echo
echo "### Per NIC (each vCPU on its own node's NIC or pair)"
echo
echo "| configuration | NIC / pair | 64 B packets/s | 64 B echoes/s | 1400 B Mbit/s | 1400 B packets/s | 64 B pps vs QEMU |"
echo "|---|---|---|---|---|---|---|"
q64=$(get qemu net-udp64 tx_pps)
for cfg in qemu dvmm1; do
	p=$(get $cfg net-udp64 tx_pps)
	label=$([ $cfg = qemu ] && echo "QEMU 7.2, 1 node" || echo "dvmm, 1 node")
	echo "| $label | 0 | $p | $(get $cfg net-udp64 echo_pps) | $(get $cfg net-udp1400 tx_mbit_s) | $(get $cfg net-udp1400 tx_pps) | $(ratio_of "$p" "$q64" 1) |"
done
for n in 2 3; do
	for kind in pernode mq; do
		for k in $(seq 0 $((n - 1))); do
			nic=$([ $kind = mq ] && echo 0 || echo "$k")
			key="net-udp64 nic=$nic cpu=$k"
			p=$(get "$kind$n" "$key" tx_pps)
			label=$([ $kind = mq ] && echo "dvmm, $n nodes, multiqueue" || echo "dvmm, $n nodes, per-node NICs")
			echo "| $label | $([ $kind = mq ] && echo "pair $k" || echo "NIC $k") (node $k) | $p | $(get "$kind$n" "$key" echo_pps) | $(get "$kind$n" "net-udp1400 nic=$nic cpu=$k" tx_mbit_s) | $(get "$kind$n" "net-udp1400 nic=$nic cpu=$k" tx_pps) | $(ratio_of "$p" "$q64" 1) |"
		done
	done
done
echo
echo "### Aggregate over the nodes"
echo
echo "| configuration | 64 B packets/s | 64 B echoes/s | 1400 B Mbit/s | vs dvmm 1 node (64 B pps) | vs QEMU 1 NIC (64 B pps) |"
echo "|---|---|---|---|---|---|"
d64=$(get dvmm1 net-udp64 tx_pps)
echo "| QEMU 7.2, 1 node, 1 NIC | $q64 | $(get qemu net-udp64 echo_pps) | $(get qemu net-udp1400 tx_mbit_s) | $(ratio_of "$q64" "$d64" 1) | 1.00 |"
echo "| dvmm, 1 node, 1 NIC | $d64 | $(get dvmm1 net-udp64 echo_pps) | $(get dvmm1 net-udp1400 tx_mbit_s) | 1.00 | $(ratio_of "$d64" "$q64" 1) |"
for n in 2 3; do
	for kind in pernode mq; do
		a=$(get "$kind$n" net-agg64 tx_pps)
		label=$([ $kind = mq ] && echo "dvmm, $n nodes, 1 multiqueue NIC" || echo "dvmm, $n nodes, $n NICs")
		echo "| $label | $a | $(get "$kind$n" net-agg64 echo_pps) | $(get "$kind$n" net-agg1400 tx_mbit_s) | $(ratio_of "$a" "$d64" 1) | $(ratio_of "$a" "$q64" 1) |"
	done
done
echo
echo "### Round trip by where the sending vCPU is (netlat, $NL round trips each, µs)"
echo
echo "| configuration | NIC on node | vCPU on node | median | p99 | min | added by the remote vCPU (median) |"
echo "|---|---|---|---|---|---|---|"
for cfg in qemu dvmm1; do
	label=$([ $cfg = qemu ] && echo "QEMU 7.2, 1 node" || echo "dvmm, 1 node")
	echo "| $label | 0 | 0 | $(get $cfg "netlat nic=0 cpu=0" rtt_med_us) | $(get $cfg "netlat nic=0 cpu=0" rtt_p99_us) | $(get $cfg "netlat nic=0 cpu=0" rtt_min_us) | |"
done
for n in 2 3; do
	for k in $(seq 0 $((n - 1))); do
		loc=$(get "pernode$n" "netlat nic=$k cpu=$k" rtt_med_us)
		for c in $(seq 0 $((n - 1))); do
			m=$(get "pernode$n" "netlat nic=$k cpu=$c" rtt_med_us)
			add=$([ "$c" = "$k" ] && echo "" ||
				awk -v a="$m" -v b="$loc" 'BEGIN { if (a == "-" || b == "-") print "-"; else printf "%+.0f", a - b }')
			echo "| dvmm, $n nodes, per-node NICs | $k | $c | $m | $(get "pernode$n" "netlat nic=$k cpu=$c" rtt_p99_us) | $(get "pernode$n" "netlat nic=$k cpu=$c" rtt_min_us) | $add |"
		done
	done
done
for n in 2 3; do
	for c in $(seq 0 $((n - 1))); do
		echo "| dvmm, $n nodes, multiqueue (pair $c) | $c | $c | $(get "mq$n" "netlat nic=0 cpu=$c" rtt_med_us) | $(get "mq$n" "netlat nic=0 cpu=$c" rtt_p99_us) | $(get "mq$n" "netlat nic=0 cpu=$c" rtt_min_us) | |"
	done
done
echo
echo "Reading the tables: a vCPU using the NIC or pair of its own node keeps"
echo "the rings and buffers it writes on that node, where the NIC is served;"
echo "a vCPU on another node writes them on its node and the NIC's node"
echo "fetches them through the DSM (a page fault and a round trip over the"
echo "cluster transport per page, docs/dsm.md), and the pages travel back for"
echo "the next request: that is the added round trip in the last table. A"
echo "remote pair's interrupt goes through the device's home (one message"
echo "more, docs/globalnic.md)."
echo
echo "Commands (guest command line after \`--cmdline\` / \`-append\`; each"
echo "tap has an echo peer: \`build/tools/udp_echo ADDR $PORT SECS\` in its"
echo "namespace; for the clusters the taps are made by dvmm in dvmm-PID-K and"
echo "given their address, MAC and peer by the script before their link is"
echo "set up, see scripts/netns.sh netns_tap_peer):"
echo
echo '```'
echo "ip netns exec NS $QEMU1 -append \"$SINGLE_ARGS\""
echo "ip netns exec NS $DVMM1 --cmdline \"$SINGLE_ARGS\""
echo "build/dvmm run --nodes N --netns --cpus N --memory 256M --kernel $GUEST --net node=0,tap=gb0 ... --net node=N-1,tap=gbN-1 --cmdline \"$BASE nb_mode=all net_ip=10.0.2.15,...,10.0.N+1.15 net_peer=10.0.2.1,...,10.0.N+1.1\""
echo "build/dvmm run --nodes N --netns --cpus N --memory 256M --kernel $GUEST --net pairs=0:gb0+...+N-1:gbN-1 --cmdline \"$BASE nb_mode=all net_ip=10.0.2.15 net_peer=10.0.2.1\""
echo '```'
echo

#!/bin/bash
# bench/multinode.sh - one VM over several node processes (issue 7): boot to
# exit of the test guest on 1 node (KVM's in-kernel irqchip and dvmm's
# userspace one), 2 and 3 nodes; IPI round trip, MMIO read round trip, a
# doorbell kick and a virtio request round trip, and the cache-line
# ping-pong, each local (one node) beside cross-node. Medians of RUNS runs,
# configurations interleaved. Prints a markdown section.
cd "$(dirname "$0")/.." || exit 1
. bench/lib.sh
RUNS=${RUNS:-3}
DVMM=build/dvmm
TMPD=$(mktemp -d /tmp/dvmm-bench.XXXXXX)
trap 'rm -rf "$TMPD"' EXIT
MS=${BENCH_MS:-1000}
BENCH_TESTS="tests=pci,rng,ipibench,mmiobench,kickbench,pingpong bench_ms=$MS"

declare -A val # "config|name|key" -> samples

# cfg_args CONFIG : the dvmm options of a configuration.
cfg_args() {
	case $1 in
	kernel1) echo "--cpus 2" ;;
	user1) echo "--cpus 2 --irqchip user" ;;
	nodes2) echo "--nodes 2 --cpus 2" ;;
	nodes3) echo "--nodes 3 --cpus 3" ;;
	esac
}

# run_bench CONFIG : the guest benchmarks, parsed into val[].
run_bench() {
	local out=$TMPD/out rc=0
	timeout -k 5 300 $DVMM run $(cfg_args "$1") --memory 256M \
		--kernel $GUEST --rng --cmdline "$BENCH_TESTS" </dev/null \
		>"$out" 2>&1 || rc=$?
	if [ "$rc" != 0 ]; then
		echo "bench: $1 exited $rc:" >&2
		tail -5 "$out" >&2
		return 1
	fi
	while read -r _ _ name rest; do
		local cpu
		cpu=$(echo "$rest" | grep -o 'cpu=[0-9]*' | cut -d= -f2)
		[ -n "$cpu" ] && name="$name/cpu$cpu"
		for kv in $rest; do
			val["$1|$name|${kv%%=*}"]+="${kv#*=} "
		done
	done < <(grep '^INFO bench ' "$out")
}

# run_boot CONFIG : microseconds from start to exit, tests=boot.
run_boot() {
	local us
	us=$(time_once "$DVMM run $(cfg_args "$1") --memory 256M --kernel $GUEST --cmdline tests=boot" 0) ||
		return 1
	val["$1|boot|us"]+="$us "
}

CONFIGS="kernel1 user1 nodes2 nodes3"
for i in $(seq "$RUNS"); do
	for c in $CONFIGS; do
		run_boot "$c" || exit 1
		run_bench "$c" || exit 1
	done
	echo "bench: multinode round $i/$RUNS" >&2
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "-"; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.6g", m}'; }
get() { echo "${val[$1|$2|$3]}" | median; }
# scaled VALUE DIV : VALUE / DIV with 1 decimal, or -
scaled() { awk -v v="$1" -v d="$2" 'BEGIN { if (v == "-") print "-"; else printf "%.1f", v / d }'; }
# vs A B : B / A (how many times the local figure A the cross-node B is)
vs() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || a == 0) print "-"; else printf "%.1fx", b / a }'; }

row() { # label name key div
	local k u n2 n3
	k=$(scaled "$(get kernel1 "$2" "$3")" "$4")
	u=$(scaled "$(get user1 "$2" "$3")" "$4")
	n2=$(scaled "$(get nodes2 "$2" "$3")" "$4")
	n3=$(scaled "$(get nodes3 "$2" "$3")" "$4")
	echo "| $1 | $k | $u | $n2 | $n3 | $(vs "$k" "$n2") |"
}

echo "## One VM over several nodes"
echo
echo "The test guest (256 MiB) as one process with KVM's in-kernel irqchip"
echo "(\`kernel\`), as one process with dvmm's userspace LAPIC/IOAPIC/PIC/PIT"
echo "(\`--irqchip user\`), and spread over 2 and 3 node processes on this"
echo "machine (\`--nodes N\`: vCPU i on node i mod N, virtio-rng on the last"
echo "node, guest RAM kept coherent by the DSM over loopback TCP)."
echo "In the cluster columns CPU 0 (node 0) talks to the highest-numbered"
echo "CPU, which is on another node, and drives the rng, which lives on"
echo "another node: every figure there crosses the cluster transport."
echo "The last column is the 2-node figure over the in-kernel one."
echo "Median of $RUNS runs, configurations interleaved; times in"
echo "microseconds unless marked ms."
echo
echo "| measurement | 1 node, kernel irqchip | 1 node, user irqchip | 2 nodes | 3 nodes | 2 nodes vs kernel |"
echo "|---|---|---|---|---|---|"
row "boot to exit, tests=boot (ms)" boot us 1000
row "IPI round trip, CPU 0 <-> last CPU" ipibench ns_per_round_trip 1000
row "MMIO read (virtio-rng common config), CPU 0" mmiobench/cpu0 ns_per_read 1000
row "doorbell kick, guest-side cost" kick-doorbell ns_per_kick 1000
row "rng request round trip at QD1 (kick + device + used ring)" kick-rng-qd1 avg_us 1
row "cache-line ping-pong round trip, CPU 0 <-> last CPU" pingpong ns_per_round_trip 1000
echo
echo "What the cross-node figures are made of, on these 2-core PVM hosts:"
echo "an MMIO access that exits to dvmm costs ~30 us here (a KVM ioeventfd"
echo "~4 us), and a forwarded read adds a loopback round trip through both"
echo "nodes' transport threads. A kick to a device on another node is caught"
echo "by a local ioeventfd and sent one-way, so the guest pays little more"
echo "than a local kick. The rng round trip and the ping-pong are dominated"
echo "by the DSM: the request's ring pages and the token's page move between"
echo "the nodes (a userfaultfd fault and a 4 KiB transfer each, ~0.3-1 ms"
echo "when both cores are busy with spinning vCPUs). The in-kernel and user"
echo "irqchips differ mostly in the IPI: KVM delivers it in the kernel, dvmm"
echo "takes two userspace exits (ICR write, interrupt window)."
echo
echo "Commands (the guest's benchmark lines are \`INFO bench NAME key=value...\`):"
echo
echo '```'
for c in $CONFIGS; do
	echo "$DVMM run $(cfg_args $c) --memory 256M --kernel $GUEST --cmdline tests=boot"
done
for c in $CONFIGS; do
	echo "$DVMM run $(cfg_args $c) --memory 256M --kernel $GUEST --rng --cmdline \"$BENCH_TESTS\""
done
echo '```'
echo

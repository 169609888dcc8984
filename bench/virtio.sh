#!/bin/bash
# bench/virtio.sh - virtio-blk, virtio-net and doorbell benchmarks from the
# test guest's user-mode drivers (blkbench, netbench, kickbench): dvmm with
# ioeventfd doorbells, dvmm with polled doorbells, and QEMU (q35, same guest,
# same image, same tap), interleaved, median of RUNS runs. Prints a markdown
# section.
cd "$(dirname "$0")/.." || exit 1
. bench/lib.sh
. scripts/netns.sh
RUNS=${RUNS:-3}
MS=${BENCH_MS:-2000}
TMPD=$(mktemp -d /tmp/dvmm-bench.XXXXXX)
NS=dvmm-bench-$$
cleanup() {
	netns_delete "$NS"
	rm -rf "$TMPD"
}
trap cleanup EXIT
IMG=$TMPD/disk.img
truncate -s 64M "$IMG"

BLK_ARGS="tests=blkbench,kickbench bench_ms=$MS"
NET_ARGS="tests=netbench bench_ms=$MS net_ip=$NET_GUEST_ADDR net_peer=$NET_HOST_ADDR net_port=$NET_PORT"

dvmm_blk() { # mode
	echo "build/dvmm run --cpus 1 --memory 256M --kernel $GUEST" \
		"--disk $IMG --rng --doorbell $1"
}
dvmm_net() {
	echo "build/dvmm run --cpus 1 --memory 256M --kernel $GUEST" \
		"--net tap=tap0 --doorbell $1"
}
QEMU="qemu-system-x86_64 -M q35 -enable-kvm -cpu qemu64,+x2apic -smp 1 -m 256 -display none -no-reboot -monitor none -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x4 -kernel $GUEST"
qemu_blk() {
	echo "$QEMU -drive file=$IMG,if=none,format=raw,id=d0" \
		"-device virtio-blk-pci,drive=d0 -device virtio-rng-pci"
}
qemu_net() {
	echo "$QEMU -netdev tap,id=n0,ifname=tap0,script=no,downscript=no" \
		"-device virtio-net-pci,netdev=n0"
}

declare -A val # "config|name|key" -> space-separated samples

# run_one CONFIG NS_PREFIX CMD APPEND EXPECTED_STATUS
run_one() {
	local cfg=$1 pre=$2 cmd=$3 app=$4 want=$5 rc=0 out=$TMPD/out
	timeout -k 5 300 $pre $cmd -$([ "${cmd%% *}" = build/dvmm ] &&
		echo -cmdline || echo append) "$app" </dev/null >"$out" 2>&1 ||
		rc=$?
	if [ "$rc" != "$want" ]; then
		echo "bench: $cfg exited $rc (want $want):" >&2
		tail -5 "$out" >&2
		return 1
	fi
	while read -r _ _ name rest; do
		for kv in $rest; do
			val["$cfg|$name|${kv%%=*}"]+="${kv#*=} "
		done
	done < <(grep '^INFO bench ' "$out")
}

netns_create "$NS" tap0 || exit 1
ip netns exec "$NS" build/tools/udp_echo $NET_HOST_ADDR $NET_PORT 3600 \
	>/dev/null 2>&1 &
IN="ip netns exec $NS"
for i in $(seq "$RUNS"); do
	for m in ioeventfd poll; do
		run_one "dvmm-$m" "" "$(dvmm_blk $m)" "$BLK_ARGS" 0 || exit 1
		run_one "dvmm-$m" "$IN" "$(dvmm_net $m)" "$NET_ARGS" 0 || exit 1
	done
	run_one qemu "" "$(qemu_blk)" "$BLK_ARGS" 1 || exit 1
	run_one qemu "$IN" "$(qemu_net)" "$NET_ARGS" 1 || exit 1
	echo "bench: virtio round $i/$RUNS" >&2
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "-"; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.6g", m}'; }
get() { echo "${val[$1|$2|$3]}" | median; }
# higher is better unless the key is a latency or a cost
ratio_of() { # dvmm qemu key
	awk -v d="$1" -v q="$2" -v k="$3" 'BEGIN {
		if (d == "-" || q == "-" || d == 0 || q == 0) { print "-"; exit }
		if (k ~ /(_us|ns_per)/) printf "%.2f", q / d; else printf "%.2f", d / q }'
}

echo "## virtio devices and doorbells (issue 3)"
echo
echo "The test guest's user-mode drivers (guest/tests_blk.c, tests_net.c,"
echo "tests_virtio.c) measure from inside the guest, each phase $MS ms of"
echo "guest time, 1 vCPU, median of $RUNS runs. Ratio columns are dvmm"
echo "relative to QEMU, oriented so that above 1.00 means dvmm is better"
echo "(for latencies and costs: QEMU's value / dvmm's)."
echo
echo "| measurement | dvmm ioeventfd | dvmm poll | QEMU 7.2 | ioeventfd vs QEMU | poll vs QEMU |"
echo "|---|---|---|---|---|---|"
rows="blk-randread-qd1:iops blk-randread-qd1:lat_p50_us blk-randread-qd1:lat_p99_us
blk-randread-qd32:iops blk-randread-qd32:lat_p50_us blk-randread-qd32:lat_p99_us
blk-seqread-qd8:mb_s blk-seqwrite-qd8:mb_s
net-udp64:tx_pps net-udp64:echo_pps net-udp1400:tx_pps net-udp1400:tx_mbit_s
kick-doorbell:ns_per_kick kick-doorbell:kicks_per_s
kick-rng-qd1:per_s kick-rng-qd1:avg_us"
for r in $rows; do
	n=${r%%:*} k=${r#*:}
	e=$(get dvmm-ioeventfd "$n" "$k") p=$(get dvmm-poll "$n" "$k")
	q=$(get qemu "$n" "$k")
	echo "| $n $k | $e | $p | $q | $(ratio_of "$e" "$q" "$k") | $(ratio_of "$p" "$q" "$k") |"
done
echo
echo "Commands (the guest command line follows \`--cmdline\` / \`-append\`):"
echo
echo '```'
echo "$(dvmm_blk ioeventfd) --cmdline \"$BLK_ARGS\""
echo "$(dvmm_blk poll) --cmdline \"$BLK_ARGS\""
echo "$(qemu_blk) -append \"$BLK_ARGS\""
echo "# net: in a namespace with tap0 at $NET_HOST_ADDR/24 and build/tools/udp_echo on port $NET_PORT"
echo "ip netns exec NS $(dvmm_net ioeventfd) --cmdline \"$NET_ARGS\""
echo "ip netns exec NS $(dvmm_net poll) --cmdline \"$NET_ARGS\""
echo "ip netns exec NS $(qemu_net) -append \"$NET_ARGS\""
echo '```'
echo
echo "The disk is a 64 MiB raw image in the host's page cache (dvmm and"
echo "QEMU both use buffered I/O: QEMU's default cache=writeback, dvmm"
echo "without O_DIRECT). QEMU's doorbells are 4 bytes apart in one page"
echo "(notify_off_multiplier 4) and trapped by ioeventfd; dvmm gives every"
echo "queue its own 4 KiB page. Poll mode needs a host core for its poller:"
echo "with 1 vCPU on this 2-core host it has one; with the host loaded it"
echo "loses (see README)."
echo

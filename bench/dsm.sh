#!/bin/bash
# bench/dsm.sh - the guest-memory DSM between 2 node processes on loopback
# (build/tools/dsm_bench): remote read and write fault latency, invalidation
# latency (median, p99), streaming read of remote memory (pages/s), beside
# the floor measured in the same run (one userfaultfd fault served by a
# local handler with UFFDIO_COPY after one transport round trip bringing
# 4 KiB, and its two parts). Median over RUNS runs. Prints a markdown
# section.
cd "$(dirname "$0")/.." || exit 1
RUNS=${RUNS:-3}
BENCH=build/tools/dsm_bench
TMPD=$(mktemp -d /tmp/dvmm-bench-dsm.XXXXXX)
trap 'rm -rf "$TMPD"' EXIT

declare -A val # "figure|key" -> space-separated samples
for i in $(seq "$RUNS"); do
	if ! timeout -k 5 150 $BENCH >"$TMPD/out" 2>&1; then
		echo "bench: dsm_bench failed:" >&2
		tail -5 "$TMPD/out" >&2
		exit 1
	fi
	while read -r _ name rest; do
		for kv in $rest; do
			val["$name|${kv%%=*}"]+="${kv#*=} "
		done
	done < <(grep '^BENCH ' "$TMPD/out")
	echo "bench: dsm round $i/$RUNS" >&2
done

med() { # figure key
	echo ${val["$1|$2"]} | tr ' ' '\n' | sort -g |
		awk '{a[NR]=$1} END {print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

floor=$(med floor median_us)
row() { # label figure
	local m
	m=$(med "$2" median_us)
	echo "| $1 | $m | $(med "$2" p99_us) | $(ratio "$m" "$floor")x |"
}

cat <<EOT
## Guest-memory DSM (2 nodes, loopback)

\`bench/dsm.sh\` runs \`build/tools/dsm_bench\` $RUNS times (median of the
runs' figures): node 0 makes 2000 pages its own, node 1 times one access per
page, each a fault served by the protocol of docs/dsm.md. Pages alternate
between the two homes (home = page % 2): either way one round trip.
The floor is measured in the same run, in node 1: a userfaultfd
missing fault whose local handler first does one transport round trip that
brings 4 KiB from node 0, then \`UFFDIO_COPY\`.

| access (node 1) | median us | p99 us | median / floor |
|---|---|---|---|
$(row "read fault, page writable at node 0 (downgrade + 4 KiB)" \
	dsm_read_fault)
$(row "write fault, page writable at node 0 (invalidate + 4 KiB)" \
	dsm_write_fault)
$(row "write to a page both hold read-only (invalidation, no data)" dsm_invalidate)
$(row "**floor**: uffd fault + 4 KiB transport round trip" floor)
$(row "floor part: uffd fault, local UFFDIO_COPY" uffd_local)
$(row "floor part: transport round trip bringing 4 KiB" rtt_4k)

Streaming read of remote memory (one thread, $(med dsm_stream_read pages)
pages in order): **$(med dsm_stream_read pages_per_s) pages/s**
($(med dsm_stream_read MB_per_s) MB/s). Goal: median remote fault within
1.5x of the floor.

Commands: \`make tools && RUNS=$RUNS bench/dsm.sh\`, or one run:
\`build/tools/dsm_bench [--pages N] [--stream N]\`.

EOT

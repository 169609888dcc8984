#!/bin/bash
# bench/run.sh - `make bench`: run every benchmark section and write
# docs/benchmarks.md. RUNS=N sets the repetitions.
cd "$(dirname "$0")/.." || exit 1
OUT=docs/benchmarks.md
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
{
	echo "# dvmm benchmarks"
	echo
	echo "Written by \`make bench\` (bench/run.sh) on $(date -u +%Y-%m-%d);"
	echo "host: $(nproc) cores, Linux $(uname -r), KVM" \
		"$(grep -q -w -E 'vmx|svm' /proc/cpuinfo && echo 'with VT-x/AMD-V' ||
			echo 'without VT-x/AMD-V (PVM: guest kernel mode emulated)')."
	echo "Absolute times drift on these shared machines; compare the ratios,"
	echo "which come from runs interleaved in the same session."
	echo
} >"$tmp"
for b in bench/boot.sh bench/virtio.sh bench/cluster.sh bench/dsm.sh; do
	"$b" >>"$tmp" || { echo "bench: $b failed" >&2; exit 1; }
done
mv "$tmp" "$OUT"
trap - EXIT
echo "bench: wrote $OUT"

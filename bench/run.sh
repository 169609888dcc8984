#!/bin/bash
# bench/run.sh - `make bench`: run every benchmark section and write
# docs/benchmarks.md. RUNS=N sets the repetitions. BENCH_SECTIONS="bench/X.sh
# ..." runs only those and replaces their sections in the existing file
# (each section starts with its "## " title line).
cd "$(dirname "$0")/.." || exit 1
OUT=docs/benchmarks.md
ALL="bench/boot.sh bench/virtio.sh bench/cluster.sh bench/dsm.sh bench/multinode.sh bench/vtime.sh bench/migration.sh bench/globalnic.sh"
tmp=$(mktemp)
sec=$(mktemp)
trap 'rm -f "$tmp" "$sec"' EXIT

header() {
	echo "# dvmm benchmarks"
	echo
	echo "Written by \`make bench\` (bench/run.sh) on $(date -u +%Y-%m-%d);"
	echo "host: $(nproc) cores, Linux $(uname -r), KVM" \
		"$(grep -q -w -E 'vmx|svm' /proc/cpuinfo && echo 'with VT-x/AMD-V' ||
			echo 'without VT-x/AMD-V (PVM: guest kernel mode emulated)')."
	echo "Absolute times drift on these shared machines; compare the ratios,"
	echo "which come from runs interleaved in the same session."
	echo
}

# splice FILE SECTION_FILE : FILE with SECTION's "## " section replaced
# (or appended).
splice() {
	local title
	title=$(head -1 "$2")
	awk -v title="$title" -v secfile="$2" '
		function put() { while ((getline l < secfile) > 0) print l; done = 1 }
		$0 == title { skip = 1; put(); next }
		skip && /^## / { skip = 0 }
		!skip { print }
		END { if (!done) put() }' "$1"
}

if [ -z "$BENCH_SECTIONS" ]; then
	header >"$tmp"
	for b in $ALL; do
		"$b" >>"$tmp" || { echo "bench: $b failed" >&2; exit 1; }
	done
else
	cp "$OUT" "$tmp"
	for b in $BENCH_SECTIONS; do
		"$b" >"$sec" || { echo "bench: $b failed" >&2; exit 1; }
		splice "$tmp" "$sec" >"$tmp.new" && mv "$tmp.new" "$tmp"
	done
fi
mv "$tmp" "$OUT"
trap - EXIT
rm -f "$sec"
echo "bench: wrote $OUT"

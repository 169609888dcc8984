#!/bin/bash
# bench/run.sh - `make bench`: wall time from start to the guest's debug
# exit for tests=boot, dvmm vs Debian's QEMU booting the same ELF, median of
# RUNS runs each, interleaved in one run; writes docs/benchmarks.md.
cd "$(dirname "$0")/.." || exit 1
RUNS=${RUNS:-7}
GUEST=build/guest/testguest.elf
OUT=docs/benchmarks.md

now_ns() { date +%s%N; }

dvmm_cmd() { # cpus
	echo "build/dvmm run --cpus $1 --memory 256M --kernel $GUEST" \
		"--console none --cmdline tests=boot"
}

qemu_cmd() { # cpus
	echo "qemu-system-x86_64 -enable-kvm -cpu qemu64,+x2apic -smp $1" \
		"-m 256 -display none -monitor none -serial null -no-reboot" \
		"-device isa-debug-exit,iobase=0xf4,iosize=0x4" \
		"-kernel $GUEST -append tests=boot"
}

# time_once CMD EXPECTED_STATUS : prints milliseconds, or fails.
time_once() {
	local t0 t1 rc=0
	t0=$(now_ns)
	timeout -k 5 120 $1 </dev/null >/dev/null 2>&1 || rc=$?
	t1=$(now_ns)
	if [ "$rc" != "$2" ]; then
		echo "bench: '$1' exited $rc, expected $2" >&2
		return 1
	fi
	echo $(((t1 - t0) / 1000))
}

median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f", m/1000}'; }

declare -A samples
for i in $(seq "$RUNS"); do
	for cpus in 1 2; do
		us=$(time_once "$(dvmm_cmd $cpus)" 0) || exit 1
		samples[dvmm$cpus]+="$us "
		us=$(time_once "$(qemu_cmd $cpus)" 1) || exit 1
		samples[qemu$cpus]+="$us "
	done
	echo "bench: round $i/$RUNS done" >&2
done

med() { echo "${samples[$1]}" | tr ' ' '\n' | grep . | median; }
d1=$(med dvmm1) d2=$(med dvmm2) q1=$(med qemu1) q2=$(med qemu2)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b / a}'; }

{
	echo "# dvmm benchmarks"
	echo
	echo "Written by \`make bench\` (bench/run.sh) on $(date -u +%Y-%m-%d)," \
		"host: $(nproc) cores, $(uname -r), KVM $(grep -q -w -E 'vmx|svm' /proc/cpuinfo && echo 'with VT-x/AMD-V' || echo 'without VT-x/AMD-V (PVM)')."
	echo "Absolute times drift on shared machines; compare the ratios, which"
	echo "come from runs interleaved in the same session."
	echo
	echo "## Boot to debug exit (issue 2)"
	echo
	echo "Wall time from process start to the guest's write to the debug-exit"
	echo "port, test guest with \`tests=boot\`, 256 MiB, median of $RUNS runs."
	echo
	echo "| vCPUs | dvmm (ms) | QEMU 7.2 (ms) | QEMU / dvmm |"
	echo "|---|---|---|---|"
	echo "| 1 | $d1 | $q1 | $(ratio "$d1" "$q1")x |"
	echo "| 2 | $d2 | $q2 | $(ratio "$d2" "$q2")x |"
	echo
	echo "Commands (one run each):"
	echo
	echo '```'
	echo "$(dvmm_cmd 1)"
	echo "$(dvmm_cmd 2)"
	echo "$(qemu_cmd 1)"
	echo "$(qemu_cmd 2)"
	echo '```'
	echo
	echo "QEMU boots through SeaBIOS and its PVH option ROM, which run in"
	echo "emulated real mode on this host (about 3 s before the guest's first"
	echo "instruction); that firmware time is part of QEMU's figure. dvmm"
	echo "enters the PVH entry point directly. Raw samples (us): dvmm1:"
	echo "${samples[dvmm1]}; dvmm2: ${samples[dvmm2]}; qemu1:"
	echo "${samples[qemu1]}; qemu2: ${samples[qemu2]}."
} >"$OUT"
echo "bench: wrote $OUT"
cat "$OUT"

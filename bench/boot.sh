#!/bin/bash
# bench/boot.sh - wall time from start to the guest's debug exit for
# tests=boot: dvmm, QEMU pc (SeaBIOS) and QEMU microvm (qboot) booting the
# same ELF, RUNS runs each, interleaved. Prints a markdown section.
cd "$(dirname "$0")/.." || exit 1
. bench/lib.sh
RUNS=${RUNS:-7}

dvmm_cmd() {
	echo "build/dvmm run --cpus $1 --memory 256M --kernel $GUEST" \
		"--console none --cmdline tests=boot"
}
qemu_cmd() { # cpus [machine]
	echo "qemu-system-x86_64 ${2:+-M $2 }-enable-kvm -cpu qemu64,+x2apic" \
		"-smp $1 -m 256 -display none -monitor none -serial null" \
		"-no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x4" \
		"-kernel $GUEST -append tests=boot"
}

declare -A s
for i in $(seq "$RUNS"); do
	for c in 1 2; do
		s[d$c]+="$(time_once "$(dvmm_cmd $c)" 0) " || exit 1
		s[q$c]+="$(time_once "$(qemu_cmd $c)" 1) " || exit 1
		s[m$c]+="$(time_once "$(qemu_cmd $c microvm)" 1) " || exit 1
	done
	echo "bench: boot round $i/$RUNS" >&2
done
med() { echo "${s[$1]}" | tr ' ' '\n' | grep . | median_ms; }

echo "## Boot to debug exit (issue 2)"
echo
echo "Wall time from process start to the guest's write to the debug-exit"
echo "port, test guest with \`tests=boot\`, 256 MiB, median of $RUNS runs."
echo
echo "| vCPUs | dvmm (ms) | QEMU pc (ms) | pc / dvmm | QEMU microvm (ms) | microvm / dvmm |"
echo "|---|---|---|---|---|---|"
for c in 1 2; do
	d=$(med d$c) q=$(med q$c) m=$(med m$c)
	echo "| $c | $d | $q | $(ratio "$d" "$q")x | $m | $(ratio "$d" "$m")x |"
done
echo
echo "Commands (one run each; N = 1 or 2):"
echo
echo '```'
dvmm_cmd N
qemu_cmd N
qemu_cmd N microvm
echo '```'
echo
echo "QEMU's default \`pc\` machine boots through SeaBIOS and its PVH option"
echo "ROM, which run in emulated real mode on this host (seconds before the"
echo "guest's first instruction); that firmware time is part of its figure."
echo "QEMU's \`microvm\` machine uses the much smaller qboot firmware and is"
echo "the fairer peer for a lean VMM. dvmm enters the PVH entry point"
echo "directly. Raw samples (us):"
for k in d1 d2 q1 q2 m1 m2; do echo "$k: ${s[$k]}"; done | sed 's/^/- /'
echo

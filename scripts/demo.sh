#!/bin/sh
# scripts/demo.sh - `make demo`: boot the test guest under dvmm with 2 vCPUs
# and show what the guest found.
cd "$(dirname "$0")/.." || exit 1
cmd="build/dvmm run --cpus 2 --memory 256M --kernel build/guest/testguest.elf"
args="tests=boot,acpi,smp,timer,ipi,syscall,tsc,mem cpus=2 mem=256M"
echo "== $cmd --cmdline \"$args\""
$cmd --cmdline "$args" </dev/null
rc=$?
if [ $rc = 0 ]; then
	echo "== the guest passed every test (exit status 0)"
else
	echo "== the guest reported a failure (exit status $rc)"
fi
exit $rc

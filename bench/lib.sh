# bench/lib.sh - helpers shared by the benchmark scripts.
GUEST=build/guest/testguest.elf

now_ns() { date +%s%N; }

# time_once CMD EXPECTED_STATUS : prints microseconds, or fails.
time_once() {
	local t0 t1 rc=0
	t0=$(now_ns)
	timeout -k 5 300 $1 </dev/null >/dev/null 2>&1 || rc=$?
	t1=$(now_ns)
	if [ "$rc" != "$2" ]; then
		echo "bench: '$1' exited $rc, expected $2" >&2
		return 1
	fi
	echo $(((t1 - t0) / 1000))
}

# median of numbers on stdin (microseconds) printed in milliseconds
median_ms() {
	sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f", m/1000}'
}

# ratio A B : B / A with one decimal
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b / a}'; }

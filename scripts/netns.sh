# scripts/netns.sh - a network namespace holding a tap device that a VM
# attaches to, with the host-side address the guest's `net` test talks to.
# Sourced by the integration tests and the benchmarks.
# netns_create NS TAP [ADDR/PREFIX] : create NS with TAP (up, addressed).
# netns_delete NS : remove it (taps inside go with it).
NET_HOST_ADDR=10.0.2.1
NET_GUEST_ADDR=10.0.2.15
NET_PORT=7777

netns_create() {
	ns=$1 tap=$2 addr=${3:-$NET_HOST_ADDR/24}
	ip netns add "$ns" || return 1
	ip -n "$ns" link set lo up &&
		ip -n "$ns" tuntap add dev "$tap" mode tap &&
		ip -n "$ns" addr add "$addr" dev "$tap" &&
		ip -n "$ns" link set "$tap" up || {
		ip netns del "$ns"
		return 1
	}
}

netns_delete() {
	ip netns pids "$1" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
	ip netns del "$1" 2>/dev/null || true
}

# netns_tap_peer NS TAP ADDR MAC ECHO_OUT PORT SECS : for a tap someone else
# (dvmm) creates in NS: wait for it (60 s at most), give it ADDR/24 (and MAC
# unless "-"), start build/tools/udp_echo on ADDR:PORT for SECS seconds with
# its output in ECHO_OUT (pid in NETNS_PEER_PID), wait for it to be ready,
# then set the link up. 1 with a line on stderr if something fails.
netns_tap_peer() {
	local ns=$1 tap=$2 addr=$3 mac=$4 out=$5 i
	for i in $(seq 1200); do
		ip -n "$ns" link show "$tap" >/dev/null 2>&1 && break
		sleep 0.05
	done
	ip -n "$ns" link show "$tap" >/dev/null 2>&1 ||
		{ echo "no tap $tap in $ns after 60 s" >&2; return 1; }
	if [ "$mac" != - ]; then
		ip -n "$ns" link set "$tap" address "$mac" || return 1
	fi
	ip -n "$ns" addr add "$addr/24" dev "$tap" || return 1
	: >"$out" # empty before the peer starts: no "ready" from an older one
	ip netns exec "$ns" "$(dirname "${BASH_SOURCE[0]}")/../build/tools/udp_echo" \
		"$addr" "$6" "$7" >"$out" 2>&1 &
	NETNS_PEER_PID=$!
	for i in $(seq 400); do
		grep -q ready "$out" 2>/dev/null && break
		sleep 0.05
	done
	grep -q ready "$out" 2>/dev/null || {
		echo "the echo peer in $ns did not start in 20 s" \
			"($(kill -0 $NETNS_PEER_PID 2>/dev/null && echo running ||
				echo exited)): $(cat "$out")" >&2
		return 1
	}
	ip -n "$ns" link set "$tap" up
}

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

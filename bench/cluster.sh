#!/bin/bash
# bench/cluster.sh - the cluster transport between two processes
# (build/tools/cluster_ping: node 0 serves, node 1 is the client): message
# round trip (median, p99) and throughput (64 B and 4 KiB messages/s, MB/s),
# on loopback and across two network namespaces joined by a veth pair, each
# beside a plain TCP ping-pong of the same sizes and framing (--raw: the
# floor), interleaved in the same session, median of RUNS runs. Prints a
# markdown section.
cd "$(dirname "$0")/.." || exit 1
. bench/lib.sh
. scripts/netns.sh
RUNS=${RUNS:-3}
PING=build/tools/cluster_ping
NSA=dvmm-bench-$$-a
NSB=dvmm-bench-$$-b
ADDR_A=10.78.0.1
ADDR_B=10.78.0.2
TMPD=$(mktemp -d /tmp/dvmm-bench.XXXXXX)
cleanup() {
	[ -n "$SPID" ] && kill "$SPID" 2>/dev/null
	netns_delete "$NSA"
	netns_delete "$NSB"
	rm -rf "$TMPD"
}
trap cleanup EXIT

# Two namespaces, one veth pair between them: $ADDR_A and $ADDR_B.
make_pair() {
	ip netns add "$NSA" && ip netns add "$NSB" &&
		ip -n "$NSA" link add eth0 type veth peer name eth0 netns "$NSB" &&
		ip -n "$NSA" addr add "$ADDR_A/24" dev eth0 &&
		ip -n "$NSB" addr add "$ADDR_B/24" dev eth0 &&
		for ns in "$NSA" "$NSB"; do
			ip -n "$ns" link set lo up &&
				ip -n "$ns" link set eth0 up || return 1
		done
}

declare -A val # "config|figure|key" -> space-separated samples

# run_pair CONFIG SERVER_PREFIX CLIENT_PREFIX HOST [--raw]
run_pair() {
	local cfg=$1 spre=$2 cpre=$3 host=$4 raw=$5 port=""
	$spre $PING serve "$host:0" $raw --timeout 120 >"$TMPD/serve" 2>&1 &
	SPID=$!
	for _ in $(seq 200); do
		port=$(sed -n 's/^READY port=\([0-9]*\).*/\1/p' "$TMPD/serve")
		[ -n "$port" ] && break
		sleep 0.05
	done
	if [ -z "$port" ] || ! timeout -k 5 120 $cpre $PING client \
		"$host:$port" $raw >"$TMPD/client" 2>&1; then
		echo "bench: cluster_ping $cfg failed:" >&2
		tail -3 "$TMPD/serve" "$TMPD/client" >&2
		return 1
	fi
	wait "$SPID"
	SPID=""
	while read -r _ name rest; do
		local size fig
		size=$(echo "$rest" | grep -o 'size=[0-9]*' | cut -d= -f2)
		fig="$name/$size"
		for kv in $rest; do
			val["$cfg|$fig|${kv%%=*}"]+="${kv#*=} "
		done
	done < <(grep '^BENCH ' "$TMPD/client")
}

NETNS=yes
[ "$(id -u)" = 0 ] && make_pair || NETNS=""
for i in $(seq "$RUNS"); do
	run_pair lo-transport "" "" 127.0.0.1 || exit 1
	run_pair lo-raw "" "" 127.0.0.1 --raw || exit 1
	if [ -n "$NETNS" ]; then
		run_pair ns-transport "ip netns exec $NSA" "ip netns exec $NSB" \
			$ADDR_A || exit 1
		run_pair ns-raw "ip netns exec $NSA" "ip netns exec $NSB" \
			$ADDR_A --raw || exit 1
	fi
	echo "bench: cluster round $i/$RUNS" >&2
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "-"; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.6g", m}'; }
get() { echo "${val[$1|$2|$3]}" | median; }
# above 1.00: the transport is better than plain TCP (latency: tcp / t)
ratio_of() { # transport raw key
	awk -v t="$1" -v r="$2" -v k="$3" 'BEGIN {
		if (t == "-" || r == "-" || t == 0 || r == 0) { print "-"; exit }
		if (k ~ /_us$/) printf "%.2f", r / t; else printf "%.2f", t / r }'
}
cells() { # where figure key
	local t r
	t=$(get "$1-transport" "$2" "$3") r=$(get "$1-raw" "$2" "$3")
	echo "$t | $r | $(ratio_of "$t" "$r" "$3")"
}

echo "## Cluster transport"
echo
echo "Two processes, node 0 serving and node 1 the client, over the TCP"
echo "engine (authenticated connection, framed messages, event-loop thread,"
echo "per-peer send queues) and, as the floor, over a plain blocking TCP"
echo "socket with the same 12-byte framing and TCP_NODELAY. Round trips are"
echo "64-byte messages echoed by node 0, sent from a caller thread (as"
echo "most dvmm code will) and from inside the event loop's message"
echo "handler; throughput is one-way streaming (MB/s with 1 MiB messages)."
echo "Loopback is 127.0.0.1; namespaces are two network namespaces joined"
echo "by a veth pair ($ADDR_A, $ADDR_B)."
echo "Median of $RUNS runs, transport and TCP interleaved; the ratio is"
echo "oriented so that above 1.00 the transport beats plain TCP (for"
echo "latencies: TCP's value / the transport's)."
echo
if [ -n "$NETNS" ]; then
	echo "| measurement | loopback transport | loopback TCP | ratio | namespaces transport | namespaces TCP | ratio |"
	echo "|---|---|---|---|---|---|---|"
else
	echo "| measurement | loopback transport | loopback TCP | ratio |"
	echo "|---|---|---|---|"
fi
while IFS='|' read -r label fig key; do
	line="| $label | $(cells lo "$fig" "$key")"
	[ -n "$NETNS" ] && line="$line | $(cells ns "$fig" "$key")"
	echo "$line |"
done <<'ROWS'
round trip 64 B, median (us)|cluster_rtt/64|median_us
round trip 64 B, p99 (us)|cluster_rtt/64|p99_us
round trip 64 B from the loop, median (us)|cluster_rtt_loop/64|median_us
round trip 64 B from the loop, p99 (us)|cluster_rtt_loop/64|p99_us
64 B messages/s|cluster_tput/64|msgs_per_s
4 KiB messages/s|cluster_tput/4096|msgs_per_s
4 KiB messages, MB/s|cluster_tput/4096|MB_per_s
1 MiB messages, MB/s|cluster_tput/1048576|MB_per_s
ROWS
echo
echo "Commands (one run each; add --raw to both for plain TCP; the server"
echo "prints \`READY port=N\`):"
echo
echo '```'
echo "$PING serve 127.0.0.1:0"
echo "$PING client 127.0.0.1:N"
if [ -n "$NETNS" ]; then
	echo "ip netns exec A $PING serve $ADDR_A:0"
	echo "ip netns exec B $PING client $ADDR_A:N"
fi
echo '```'
if [ -z "$NETNS" ]; then
	echo
	echo "(Namespaces skipped: they need root.)"
fi
echo
echo "In the caller-thread round trip node 1's thread sends and sleeps until"
echo "its event loop has the PONG (a thread wake-up per round trip); in the"
echo "loop round trip node 1's message handler sends the next PING itself."
echo "Node 0 echoes from its handler in both. Plain TCP is one blocking"
echo "thread per side, so it pays no thread hop at all."
echo

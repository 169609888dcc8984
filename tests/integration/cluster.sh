# tests/integration/cluster.sh - a VM run as a cluster of node processes
# (`dvmm run --nodes N`, `dvmm node`): 2 and 3 nodes on loopback and across
# network namespaces, a node killed or frozen, a stranger at a node's port,
# an unreachable node, bad cluster files. Sourced by run.sh; every test
# checks that no process, namespace or temp directory of its cluster is
# left behind.

# The launcher makes its temp directory (cluster file) under $TMPDIR, so
# this test's node processes are the ones whose command line names $TMP.
cluster_env() {
	export TMPDIR=$TMP
}

# cluster_gone LAUNCHER_PID : nothing of that cluster is left.
cluster_gone() {
	wait_for "! pgrep -f 'dvmm node --cluster $TMP/' >/dev/null" 5 \
		"the node processes to go" || return 1
	! ip netns list 2>/dev/null | grep -q "^dvmm-$1-" ||
		fail "namespaces left: $(ip netns list | grep "^dvmm-$1-")" ||
		return 1
	! ls -d "$TMP"/dvmm-cluster.* >/dev/null 2>&1 ||
		fail "temp directory left: $(ls -d "$TMP"/dvmm-cluster.*)"
}

# The namespaces a launcher makes, for cleanup_test if the test fails.
note_cluster_netns() { # launcher-pid nodes
	for k in $(seq 0 $(($2 - 1))) br; do
		NETNS_LIST="$NETNS_LIST dvmm-$1-$k"
	done
}

# cluster_boot NODES NETNS(yes|no) : boot tests=boot,smp on NODES nodes.
cluster_boot() {
	cluster_env
	ns=""
	[ "$2" = yes ] && ns=--netns
	start_dvmm_bg "$TMP/out" run --nodes "$1" $ns --cpus 2 --memory 128M \
		--kernel "$GUEST" --cmdline "tests=boot,smp cpus=2"
	pid=$BGPID
	[ "$2" = yes ] && note_cluster_netns "$pid" "$1"
	wait_exit "$pid" 120 || return 1
	expect_rc 0 && expect_passes "$TMP/out" boot smp || return 1
	n=$(grep -c 'node [0-9]* failed' "$TMP/out")
	[ "$n" = 0 ] || fail "a node failed: $(grep failed "$TMP/out")" ||
		return 1
	cluster_gone "$pid"
}

# Guest RAM through the DSM: every page the guest, the loader and the tests
# touch (half of them homed on node 1) crosses the cluster transport.
t_cluster_dsm_tests() {
	cluster_env
	start_dvmm_bg "$TMP/out" run --nodes 2 --cpus 2 --memory 64M \
		--kernel "$GUEST" \
		--cmdline "tests=boot,acpi,smp,timer,ipi,mem cpus=2"
	pid=$BGPID
	wait_exit "$pid" 120 || return 1
	expect_rc 0 &&
		expect_passes "$TMP/out" boot acpi smp timer ipi mem ||
		return 1
	cluster_gone "$pid"
}

# node_dsm FILE K : node K's "dsm" object of a ctl stats answer.
node_dsm() {
	sed -n '/"nodes"/,$p' "$1" | sed -n "/\"id\": $2,/,\$p" |
		sed -n '/"dsm"/,/"fault_latency"/p'
}

# ctl stats shows each node's DSM counters: node 0 faults, node 1 serves.
t_cluster_dsm_stats() {
	sock=$TMP/api.sock
	start_idle_cluster 2 --api "$sock" || return 1
	"$DVMM" ctl "$sock" stats >"$TMP/st" || fail "stats failed" ||
		return 1
	node_dsm "$TMP/st" 0 | grep -Eq '"(read|write)": [1-9]' ||
		fail "no DSM faults on node 0: $(cat "$TMP/st")" || return 1
	node_dsm "$TMP/st" 1 | grep -q '"msgs_sent": [1-9]' ||
		fail "node 1 sent no DSM messages: $(cat "$TMP/st")" ||
		return 1
	"$DVMM" ctl "$sock" stop >/dev/null || fail "stop failed" || return 1
	wait_exit "$pid" 20 && expect_rc 0 && cluster_gone "$pid"
}

t_cluster_2nodes() { cluster_boot 2 no; }
t_cluster_3nodes() { cluster_boot 3 no; }
t_cluster_2nodes_netns() { cluster_boot 2 yes; }
t_cluster_3nodes_netns() { cluster_boot 3 yes; }

# node_pid LAUNCHER K : the pid of node K of that launcher.
node_pid() {
	pgrep -P "$1" -f -- "--id $2( |\$)"
}

# start_idle_cluster NODES [ARGS...] : a 1-vCPU guest ticking until stopped.
start_idle_cluster() {
	cluster_env
	n=$1
	shift
	start_dvmm_bg "$TMP/out" run --nodes "$n" --memory 64M \
		--kernel "$GUEST" --cmdline "tests=idle" "$@"
	pid=$BGPID
	wait_for "grep -q '^INFO tick 2' $TMP/out" 60 "guest ticks"
}

# node_failure SIGNAL LIMIT_S : that signal to node 1 of 3 ends the VM,
# reported by the others, within LIMIT_S.
node_failure() {
	start_idle_cluster 3 || return 1
	victim=$(node_pid "$pid" 1)
	[ -n "$victim" ] || fail "no node 1 under launcher $pid" || return 1
	t0=$(date +%s.%N)
	kill "-$1" "$victim"
	wait_exit "$pid" 20 || return 1
	took=$(echo "$(date +%s.%N) - $t0" | bc)
	[ "$RC" != 0 ] || fail "exit status 0 after node 1 failed" || return 1
	[ "$(echo "$took < $2" | bc)" = 1 ] ||
		fail "took ${took}s to stop, limit $2 s" || return 1
	grep -q '^dvmm: node 1 failed: .*; stopping the VM$' "$TMP/out" ||
		fail "no 'node 1 failed' line: $(grep -v tick "$TMP/out")" ||
		return 1
	kill -CONT "$victim" 2>/dev/null
	cluster_gone "$pid"
}

t_cluster_node_killed() { node_failure KILL 10; }
# A frozen node stops answering: missed heartbeats (3 s) find it.
t_cluster_node_frozen() { node_failure STOP 10; }

# free_port : a TCP port nothing listens on now.
free_port() {
	while :; do
		p=$((20000 + RANDOM % 30000))
		ss -ltnH "sport = :$p" | grep -q . || break
	done
	echo $p
}

# cluster_file PATH SECRET NODE0_ADDR NODE0_PORT NODE1_PORT [EXTRA_JSON]
cluster_file() {
	cat >"$1" <<EOF
{"cluster_id": "${CLUSTER_ID:-00112233445566778899aabbccddeeff}",
 "secret": "$2", "memory": "64M", "kernel": "$GUEST",
 "cmdline": "tests=idle",
 "nodes": [{"id": 0, "host": "$3", "port": $4},
	   {"id": 1, "host": "127.0.0.1", "port": $5}],
 "vcpus": [0]$6}
EOF
}

# A stranger at node 0's port (garbage, then a node with the wrong secret)
# is refused and changes nothing: the VM keeps ticking, both nodes stay up,
# ctl stop ends it cleanly.
t_cluster_stranger_refused() {
	sock=$TMP/api.sock
	start_idle_cluster 2 --api "$sock" || return 1
	n0=$(node_pid "$pid" 0)
	file=$(tr '\0' '\n' <"/proc/$n0/cmdline" | grep cluster.json)
	port=$(grep -A3 '"id": 0' "$file" | grep -o '"port": [0-9]*' |
		grep -o '[0-9]*$')
	[ -n "$port" ] || fail "no node 0 port in $file" || return 1
	head -c 4096 /dev/urandom | timeout 5 nc -q 1 127.0.0.1 "$port" \
		>/dev/null 2>&1
	wait_for "grep -q 'refused connection' $TMP/out" 10 "a refusal" ||
		return 1
	CLUSTER_ID=$(grep -o '"cluster_id": "[0-9a-f]*"' "$file" |
		grep -o '[0-9a-f]\{32\}')
	cluster_file "$TMP/wrong.json" "ffffffffffffffffffffffffffffffff" \
		127.0.0.1 "$port" "$(free_port)" ', "connect_timeout_ms": 1500'
	run_dvmm 20 "$TMP/stranger" node --cluster "$TMP/wrong.json" --id 1
	[ "$RC" != 0 ] && one_line "$TMP/stranger" ||
		fail "the stranger was not refused" || return 1
	n=$(grep -c 'refused connection' "$TMP/out")
	[ "$n" -ge 2 ] || fail "$n refusals logged, expected 2" || return 1
	ticks=$(grep -c '^INFO tick' "$TMP/out")
	wait_for "[ \$(grep -c '^INFO tick' $TMP/out) -gt $ticks ]" 10 \
		"ticks after the strangers" || return 1
	"$DVMM" ctl "$sock" status >"$TMP/st" || fail "status failed" ||
		return 1
	[ "$(grep -c '"state": "up"' "$TMP/st")" = 2 ] &&
		grep -q '"auth_failures": [2-9]' "$TMP/st" ||
		fail "status: $(cat "$TMP/st")" || return 1
	"$DVMM" ctl "$sock" stats | grep -q '"msgs_sent"' ||
		fail "stats have no transport counters" || return 1
	! grep -q 'failed' "$TMP/out" || fail "$(grep failed "$TMP/out")" ||
		return 1
	"$DVMM" ctl "$sock" stop >/dev/null || fail "stop failed" || return 1
	wait_exit "$pid" 20 && expect_rc 0 && cluster_gone "$pid"
}

# A node that cannot reach its peer gives up within the connect timeout.
t_cluster_unreachable_node() {
	cluster_file "$TMP/c.json" "000102030405060708090a0b0c0d0e0f" \
		127.0.0.1 "$(free_port)" "$(free_port)" \
		', "connect_timeout_ms": 2000'
	t0=$(date +%s.%N)
	run_dvmm 20 "$TMP/out" node --cluster "$TMP/c.json" --id 0
	took=$(echo "$(date +%s.%N) - $t0" | bc)
	expect_rc 1 && one_line "$TMP/out" && grep -q 'node 1' "$TMP/out" ||
		return 1
	[ "$(echo "$took < 5" | bc)" = 1 ] || fail "gave up after ${took}s"
	run_dvmm 20 "$TMP/out" node --cluster "$TMP/c.json" --id 1
	expect_rc 1 && one_line "$TMP/out" &&
		grep -q 'cannot reach node 0' "$TMP/out"
}

t_cluster_bad_files() {
	cluster_file "$TMP/c.json" "000102030405060708090a0b0c0d0e0f" \
		127.0.0.1 7001 7002 ''
	sed 's/"vcpus": \[0\]/"vcpus": [1, 0]/' "$TMP/c.json" >"$TMP/v.json"
	run_dvmm 20 "$TMP/out" node --cluster "$TMP/v.json" --id 0
	expect_rc 1 && one_line "$TMP/out" && grep -q \
		'v.json:vcpus\[0\]: the boot vCPU must be on node 0, not 1' \
		"$TMP/out" || return 1
	sed 's/"secret": "[0-9a-f]*"/"secret": "0011"/' "$TMP/c.json" \
		>"$TMP/s.json"
	run_dvmm 20 "$TMP/out" node --cluster "$TMP/s.json" --id 0
	expect_rc 1 && one_line "$TMP/out" && grep -q 's.json:secret:' \
		"$TMP/out" || return 1
	printf '000102030405060708090a0b0c0d0e0f\n' >"$TMP/secret"
	chmod 644 "$TMP/secret"
	sed "s|\"secret\": \"[0-9a-f]*\"|\"secret_file\": \"$TMP/secret\"|" \
		"$TMP/c.json" >"$TMP/f.json"
	run_dvmm 20 "$TMP/out" node --cluster "$TMP/f.json" --id 0
	expect_rc 1 && one_line "$TMP/out" &&
		grep -q 'readable by every user' "$TMP/out" || return 1
	run_dvmm 20 "$TMP/out" node --cluster "$TMP/c.json" --id 5
	expect_rc 2 && one_line "$TMP/out"
}

t_cluster_bad_options() {
	run_dvmm 20 "$TMP/out" run --kernel "$GUEST" --netns
	expect_rc 2 && one_line "$TMP/out" || return 1
	run_dvmm 20 "$TMP/out" run --kernel "$GUEST" --nodes 1
	expect_rc 2 && one_line "$TMP/out" || return 1
	run_dvmm 20 "$TMP/out" node --id 0
	expect_rc 2 && one_line "$TMP/out" || return 1
	run_dvmm 20 "$TMP/out" node --cluster "$TMP/none.json" --id 0
	expect_rc 1 && one_line "$TMP/out" && grep -q none.json "$TMP/out"
}

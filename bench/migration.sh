#!/bin/bash
# bench/migration.sh - live migration between two processes on this host
# over loopback TCP: downtime and total time of dvmm (build/dvmm ctl SOCK
# migrate) beside QEMU (QMP migrate, query-migrate), the same test guest
# idle at 256 MiB, 512 MiB and 1 GiB, and dirtying a 64 MiB working set at
# 64 MB/s, 256 MB/s and as fast as it can. The moved guest must go on on
# the destination (more idle ticks; the dirty test verifies every page
# and passes). Interleaved, median of RUNS runs. Prints a markdown section.
# TARGET: downtime target in ms (default 50); MIG_TIMEOUT: seconds a
# migration may take before it counts as "did not converge" (default 20).
# MIGRATION_ROWS="idle:256 d64:256 ..." runs only those rows (WORKLOAD:MiB).
cd "$(dirname "$0")/.." || exit 1
. bench/lib.sh
RUNS=${RUNS:-3}
TARGET=${TARGET:-50}
MIG_TIMEOUT=${MIG_TIMEOUT:-20}
# the dirty workload outlives the longest migration we wait for
DIRTY_SECS=$((MIG_TIMEOUT + 5))
DIRTY_MB=64
# QEMU's own default cap is 128 MiB/s; dvmm has none unless --bandwidth
QEMU_BW=100000000000 # bytes/s: no cap in practice
DVMM=build/dvmm
TMPD=$(mktemp -d /tmp/dvmm-bench.XXXXXX)
PIDS=""
trap '' PIPE # a QMP peer that went away must not end the script
cleanup() {
	local p
	for p in $PIDS; do kill -KILL "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$TMPD"
}
trap cleanup EXIT

SECRET=$TMPD/secret
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$SECRET"
chmod 600 "$SECRET"

# Does this dvmm take --downtime, does this guest have the dirty test?
DT_OPT="--downtime $TARGET"
$DVMM ctl --help 2>&1 | grep -q -- --downtime || DT_OPT=""
HAVE_DIRTY=1
strings "$GUEST" | grep -q dirty_rate || HAVE_DIRTY=0

track() { PIDS="$PIDS $1"; }
forget() { PIDS=$(echo " $PIDS " | sed "s/ $1 / /"); }

free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 30000))
		ss -ltnH "sport = :$p" | grep -q . || break
	done
	echo $p
}

# wait_for CONDITION SECONDS
wait_for() {
	local end=$(($(date +%s) + $2))
	until eval "$1"; do
		[ "$(date +%s)" -ge $end ] && return 1
		sleep 0.1
	done
}

# reap PID SECONDS : wait for PID to exit (rc in RC), else fail
reap() {
	RC=""
	wait_for "! kill -0 $1 2>/dev/null" "$2" || return 1
	RC=0
	wait "$1" 2>/dev/null || RC=$?
	forget "$1"
}

# stop_proc PID : TERM, then KILL after 5 s (a dvmm destination whose
# incoming migration broke off ignores TERM)
stop_proc() {
	case " $PIDS " in *" $1 "*) ;; *) return 0 ;; esac # reaped already
	kill -TERM "$1" 2>/dev/null
	reap "$1" 5 && return 0
	echo "bench: pid $1 ignored SIGTERM; killed" >&2
	kill -KILL "$1" 2>/dev/null
	wait "$1" 2>/dev/null
	forget "$1"
}

last_tick() { grep -o '^INFO tick [0-9]*' "$1" | tail -1 | cut -d' ' -f3; }

# ---- workloads: KEY -> guest command line, label ----
wl_args() {
	case $1 in
	idle) echo "tests=idle" ;;
	d64) echo "tests=dirty dirty_mb=$DIRTY_MB dirty_rate=64 dirty_secs=$DIRTY_SECS" ;;
	d256 | d256def) echo "tests=dirty dirty_mb=$DIRTY_MB dirty_rate=256 dirty_secs=$DIRTY_SECS" ;;
	dmax | dmaxac) echo "tests=dirty dirty_mb=$DIRTY_MB dirty_rate=0 dirty_secs=$DIRTY_SECS" ;;
	esac
}
wl_label() {
	case $1 in
	idle) echo "idle" ;;
	d64) echo "dirty 64 MB/s" ;;
	d256) echo "dirty 256 MB/s" ;;
	d256def) echo "dirty 256 MB/s, default targets (dvmm 50 ms, QEMU 300 ms)" ;;
	dmax) echo "dirty unlimited" ;;
	dmaxac) echo "dirty unlimited, QEMU auto-converge on (dvmm: row above)" ;;
	esac
}
ROWS=${MIGRATION_ROWS:-"idle:256 idle:512 idle:1024 d64:256 d256:256 dmax:256 d256def:256 dmaxac:256"}

declare -A val # "side|row|key" -> space-separated samples; counts for nc/fail

note_fail() { # side row why
	echo "bench: migration $1 $2: $3" >&2
	val["$1|$2|fail"]=$((${val["$1|$2|fail"]:-0} + 1))
}
note_nc() { # side row progress
	echo "bench: migration $1 $2: did not converge in $MIG_TIMEOUT s ($3)" >&2
	val["$1|$2|nc"]=$((${val["$1|$2|nc"]:-0} + 1))
}
# the numbers of a progress report, "key=value ..."
progress() { # JSON KEY...
	local j=$1 k
	shift
	for k in "$@"; do
		printf '%s=%s ' "$k" "$(echo "$j" | grep -o "\"$k\": [0-9.]*" | head -1 | cut -d' ' -f2)"
	done
}

# wait_guest WL OUT : the guest under way: 3 idle ticks, or ~2 s of dirtying
wait_guest() {
	if [ "$1" = idle ]; then
		wait_for "grep -q '^INFO tick 3 ' $2 2>/dev/null" 60
	else
		wait_for "grep -q '^INFO cpus' $2 2>/dev/null" 60 && sleep 2
	fi
}

# check_after WL SRC_OUT DST_OUT : the guest goes on at the destination
check_after() {
	local last
	if [ "$1" = idle ]; then
		last=$(last_tick "$2")
		wait_for "grep -q '^INFO tick $((${last:-0} + 3)) ' $3" 30 ||
			{ echo "no tick after $last on the destination"; return 1; }
		! grep -q 'went back' "$3" ||
			{ echo "$(grep -m1 'went back' "$3")"; return 1; }
	else
		wait_for "grep -Eq '^(PASS|FAIL) dirty' $3" $((DIRTY_SECS + 30)) ||
			{ echo "no PASS/FAIL dirty on the destination"; return 1; }
		grep -q '^PASS dirty' "$3" ||
			{ echo "$(grep -m1 '^FAIL dirty' "$3")"; return 1; }
	fi
	return 0
}

dirty_rate() { # OUT : the guest's achieved rate (MB/s)
	grep -o '^INFO dirty mb=.* rate_mbps=[0-9]*' "$1" |
		grep -o 'rate_mbps=[0-9]*' | cut -d= -f2
}

# ---- dvmm ----
dvmm_cmd() { # memory secret
	echo "$DVMM run --cpus 1 --memory $1 --kernel $GUEST" \
		"--migration-secret $2"
}

dvmm_one() { # wl mem
	local wl=$1 mem=$2 row=$1:$2 port src dst rc=0 opt=$DT_OPT why
	local m=$TMPD/m sout=$TMPD/src.out dout=$TMPD/dst.out
	[ "$wl" = d256def ] && opt=""
	port=$(free_port)
	rm -f "$TMPD/src.sock" "$TMPD/dst.sock"
	$(dvmm_cmd "${mem}M" "$SECRET") --incoming "tcp:127.0.0.1:$port" \
		--api "$TMPD/dst.sock" --cmdline "$(wl_args "$wl")" \
		</dev/null >"$dout" 2>&1 &
	dst=$!
	track $dst
	$(dvmm_cmd "${mem}M" "$SECRET") --api "$TMPD/src.sock" \
		--cmdline "$(wl_args "$wl")" </dev/null >"$sout" 2>&1 &
	src=$!
	track $src
	if ! wait_guest "$wl" "$sout"; then
		why="the guest did not start: $(tail -n 2 "$sout" | tr '\n' ' ')"
	elif ! wait_for "ss -ltnH 'sport = :$port' | grep -q ." 20; then
		why="no destination on port $port: $(tail -n 2 "$dout" | tr '\n' ' ')"
	else
		why=""
	fi
	if [ -n "$why" ]; then
		note_fail dvmm "$row" "$why"
		stop_proc $src
		stop_proc $dst
		return
	fi
	while :; do
		rc=0
		timeout -k 5 "$MIG_TIMEOUT" $DVMM ctl "$TMPD/src.sock" migrate \
			"tcp:127.0.0.1:$port" $opt >"$m" 2>&1 || rc=$?
		# a dvmm without --downtime prints its usage: go on without
		if [ $rc = 2 ] && [ -n "$opt" ] && grep -q '^usage' "$m"; then
			echo "bench: $DVMM ctl migrate has no --downtime; using its default" >&2
			DT_OPT="" opt=""
			continue
		fi
		break
	done
	if [ $rc = 124 ] || [ $rc = 137 ]; then
		note_nc dvmm "$row" "$(progress "$($DVMM ctl "$TMPD/src.sock" migrate-status 2>&1)" round pages_left dirty_mbps link_mbps expected_downtime_ms throttle_pct)"
		stop_proc $src
		stop_proc $dst
		return
	fi
	if [ $rc != 0 ] || ! grep -q '"downtime_ms"' "$m"; then
		note_fail dvmm "$row" "migrate exited $rc: $(tail -3 "$m" | tr '\n' ' ')"
		stop_proc $src
		stop_proc $dst
		return
	fi
	val["dvmm|$row|down"]+="$(grep -o '"downtime_ms": [0-9.]*' "$m" | cut -d' ' -f2) "
	val["dvmm|$row|total"]+="$(grep -o '"total_ms": [0-9.]*' "$m" | cut -d' ' -f2) "
	val["dvmm|$row|rounds"]+="$(grep -o '"rounds": [0-9]*' "$m" | cut -d' ' -f2) "
	val["dvmm|$row|thr"]+="$(grep -o '"max_throttle_pct": [0-9]*' "$m" | cut -d' ' -f2) "
	reap $src 30 && [ "$RC" = 0 ] ||
		note_fail dvmm "$row" "the source did not end with 0 (${RC:-running})"
	stop_proc $src
	if why=$(check_after "$wl" "$sout" "$dout"); then
		[ "$wl" != idle ] && val["dvmm|$row|rate"]+="$(dirty_rate "$dout") "
	else
		note_fail dvmm "$row" "after the move: $why"
	fi
	# the dirty guest ends by itself; the idle one is stopped
	[ "$wl" = idle ] && $DVMM ctl "$TMPD/dst.sock" stop >/dev/null 2>&1
	reap $dst 20
	stop_proc $dst
}

# ---- QEMU ----
QEMU_BASE="qemu-system-x86_64 -M q35 -enable-kvm -cpu qemu64,+x2apic -smp 1"
qemu_cmd() { # mem
	echo "$QEMU_BASE -m $1 -display none -no-reboot -monitor none" \
		"-device isa-debug-exit,iobase=0xf4,iosize=0x4 -kernel $GUEST"
}

declare -A QFD
QID=0
# qmp_open NAME SOCKET : a QMP connection (nc -U) past its greeting
qmp_open() {
	local fd
	rm -f "$TMPD/$1.in" "$TMPD/$1.qmp"
	mkfifo "$TMPD/$1.in"
	wait_for "[ -S $2 ]" 20 || return 1
	nc -U "$2" <"$TMPD/$1.in" >"$TMPD/$1.qmp" 2>&1 &
	QPID=$!
	track $QPID
	exec {fd}>"$TMPD/$1.in"
	QFD[$1]=$fd
	wait_for "grep -q '\"QMP\"' $TMPD/$1.qmp" 10 &&
		qmp "$1" '{"execute":"qmp_capabilities"}'
}
qmp_close() { # NAME
	local fd=${QFD[$1]}
	[ -n "$fd" ] && exec {fd}>&-
	unset "QFD[$1]"
}
# qmp_send NAME JSON : send without waiting for the reply
qmp_send() {
	printf '%s,"id":%d}\n' "${2%\}}" $((++QID)) 1>&"${QFD[$1]}" 2>/dev/null
}
# qmp NAME JSON : send JSON; the reply (a "return" or "error" line) in QR.
# Not in a $(...) subshell: QID must count in this shell.
qmp() {
	local id=$((++QID))
	QR=""
	printf '%s,"id":%d}\n' "${2%\}}" $id 1>&"${QFD[$1]}" 2>/dev/null ||
		return 1
	wait_for "grep -q '\"id\": $id}' $TMPD/$1.qmp" 10 || return 1
	QR=$(grep "\"id\": $id}" "$TMPD/$1.qmp")
	! echo "$QR" | grep -q '"error"'
}
jnum() { grep -o "\"$1\": [0-9.]*" | head -1 | cut -d' ' -f2; }

qemu_one() { # wl mem
	local wl=$1 mem=$2 row=$1:$2 port src dst st r why end qp t thr=0
	local sout=$TMPD/qsrc.out dout=$TMPD/qdst.out
	port=$(free_port)
	rm -f "$sout" "$dout" "$TMPD/qsrc.sock" "$TMPD/qdst.sock"
	$(qemu_cmd "$mem") -serial "file:$dout" \
		-qmp "unix:$TMPD/qdst.sock,server=on,wait=off" \
		-incoming "tcp:127.0.0.1:$port" -append "$(wl_args "$wl")" \
		</dev/null >"$TMPD/qdst.log" 2>&1 &
	dst=$!
	track $dst
	$(qemu_cmd "$mem") -serial "file:$sout" \
		-qmp "unix:$TMPD/qsrc.sock,server=on,wait=off" \
		-append "$(wl_args "$wl")" </dev/null >"$TMPD/qsrc.log" 2>&1 &
	src=$!
	track $src
	if ! wait_guest "$wl" "$sout"; then
		why="the guest did not start: $(tail -n 2 "$TMPD/qsrc.log" | tr '\n' ' ')"
	elif ! wait_for "ss -ltnH 'sport = :$port' | grep -q ." 20; then
		why="no destination on port $port: $(tail -n 2 "$TMPD/qdst.log" | tr '\n' ' ')"
	elif ! qmp_open src "$TMPD/qsrc.sock"; then
		why="no QMP: $(tail -n 2 "$TMPD/src.qmp" | tr '\n' ' ')"
	else
		why=""
	fi
	if [ -n "$why" ]; then
		note_fail qemu "$row" "$why"
		qmp_close src
		stop_proc $src
		stop_proc $dst
		return
	fi
	qp=$QPID
	qmp src "{\"execute\":\"migrate-set-parameters\",\"arguments\":{\"max-bandwidth\":$QEMU_BW$([ "$wl" != d256def ] && echo ",\"downtime-limit\":$TARGET")}}" ||
		note_fail qemu "$row" "migrate-set-parameters: $QR"
	if [ "$wl" = dmaxac ]; then
		qmp src '{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"auto-converge","state":true}]}}' ||
			note_fail qemu "$row" "auto-converge: $QR"
	fi
	st=""
	r=""
	if qmp src "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"tcp:127.0.0.1:$port\"}}"; then
		end=$(($(date +%s) + MIG_TIMEOUT))
		while :; do
			qmp src '{"execute":"query-migrate"}' || break
			r=$QR
			t=$(echo "$r" | jnum cpu-throttle-percentage)
			[ "${t:-0}" -gt $thr ] && thr=$t
			st=$(echo "$r" | grep -o '"status": "[a-z-]*"' | head -1 | cut -d'"' -f4)
			case $st in completed | failed | cancelled) break ;; esac
			[ "$(date +%s)" -ge $end ] && break
			sleep 0.1
		done
	fi
	case $st in
	completed)
		val["qemu|$row|down"]+="$(echo "$r" | jnum downtime) "
		val["qemu|$row|total"]+="$(echo "$r" | jnum total-time) "
		val["qemu|$row|rounds"]+="$(echo "$r" | jnum dirty-sync-count) "
		val["qemu|$row|thr"]+="$thr "
		if why=$(check_after "$wl" "$sout" "$dout"); then
			[ "$wl" != idle ] && val["qemu|$row|rate"]+="$(dirty_rate "$dout") "
		else
			note_fail qemu "$row" "after the move: $why"
		fi
		;;
	failed | cancelled)
		note_fail qemu "$row" "migration $st: $(echo "$r" | grep -o '"error-desc": "[^"]*"')"
		;;
	"")
		note_fail qemu "$row" "no migration: $QR"
		;;
	*) # still under way after MIG_TIMEOUT
		note_nc qemu "$row" "$(progress "$r" dirty-sync-count remaining dirty-pages-rate mbps expected-downtime cpu-throttle-percentage)"
		qmp src '{"execute":"migrate_cancel"}'
		;;
	esac
	qmp_send src '{"execute":"quit"}'
	qmp_close src
	reap $src 10
	stop_proc $src
	stop_proc $dst
	stop_proc $qp
}

# ---- the runs ----
for i in $(seq "$RUNS"); do
	for r in $ROWS; do
		wl=${r%%:*} mem=${r#*:}
		[ "$wl" != idle ] && [ $HAVE_DIRTY = 0 ] && continue
		[ "$wl" != dmaxac ] && dvmm_one "$wl" "$mem"
		qemu_one "$wl" "$mem"
	done
	echo "bench: migration round $i/$RUNS" >&2
done

# ---- the section ----
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "-"; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; if (m == int(m)) printf "%d", m; else printf "%.1f", m}'; }
srow() { # side row : the row whose samples stand for this one
	[ "$1" = dvmm ] && [ "${2%%:*}" = dmaxac ] && echo "dmax:${2#*:}" ||
		echo "$2"
}
# cell SIDE ROW KEY : median, or why there is none
cell() {
	local row nc fail m
	row=$(srow "$1" "$2")
	if [ "${row%%:*}" != idle ] && [ $HAVE_DIRTY = 0 ]; then
		echo "n/a (guest lacks dirty)"
		return
	fi
	nc=${val["$1|$row|nc"]:-0} fail=${val["$1|$row|fail"]:-0}
	m=$(echo "${val["$1|$row|$3"]}" | median)
	if [ "$m" = - ]; then
		[ "$nc" -gt 0 ] && echo "did not converge in $MIG_TIMEOUT s" && return
		[ "$fail" -gt 0 ] && echo "failed" && return
		echo "-"
		return
	fi
	[ "$nc" -gt 0 ] && m="$m ($nc of $RUNS did not converge)"
	[ "$fail" -gt 0 ] && m="$m ($fail of $RUNS failed)"
	echo "$m"
}
# qratio DVMM_CELL QEMU_CELL : QEMU / dvmm, > 1 = dvmm better
qratio() {
	local d=${1%% *} q=${2%% *}
	awk -v d="$d" -v q="$q" 'BEGIN {
		if (d !~ /^[0-9.]+$/ || q !~ /^[0-9.]+$/ || d == 0) { print "-"; exit }
		printf "%.2f", q / d }'
}
mem_label() { [ "$1" -ge 1024 ] && echo "$(($1 / 1024)) GiB" || echo "$1 MiB"; }

if [ -n "$DT_OPT" ]; then
	dvmm_target="\`--downtime $TARGET\`"
else
	dvmm_target="its built-in 50 ms (this build of \`dvmm ctl migrate\` has no \`--downtime\`)"
fi

echo "## Live migration (issue 9)"
echo
echo "One guest moves between two processes on this host over loopback TCP,"
echo "dvmm (\`dvmm ctl SRC migrate\`, authenticated and MAC'd stream) beside"
echo "QEMU 7.2 (QMP \`migrate\`, plain stream). 1 vCPU, the test guest idle"
echo "(\`tests=idle\`, ticking every 200 ms; migrated after 3 ticks) or"
echo "dirtying a $DIRTY_MB MiB working set in user mode, whole pages at a"
echo "paced rate or as fast as it can (\`tests=dirty\`; migrated ~2 s into"
echo "the workload, which runs $DIRTY_SECS s). Every run checks the guest"
echo "goes on at the destination: 3 more idle ticks there with no clock"
echo "going back, or the dirty test's \`PASS dirty\` (every page holds its"
echo "last write). Median of $RUNS runs, milliseconds, the two VMMs"
echo "interleaved. Ratios are QEMU's value / dvmm's: above 1.00 means dvmm is"
echo "better. A migration still under way after $MIG_TIMEOUT s counts as"
echo "\"did not converge\" (QEMU: \`migrate_cancel\`)."
echo
echo "Downtime targets: $TARGET ms on both sides (dvmm: $dvmm_target;"
echo "QEMU: \`downtime-limit\` $TARGET), except the \"default targets\" row:"
echo "dvmm's default 50 ms, QEMU's default 300 ms. QEMU's bandwidth cap"
echo "(default 128 MiB/s) is lifted (\`max-bandwidth\` $QEMU_BW) in every row;"
echo "dvmm has no cap."
echo
echo "| workload | memory | dvmm downtime | QEMU downtime | downtime QEMU/dvmm | dvmm total | QEMU total | total QEMU/dvmm |"
echo "|---|---|---|---|---|---|---|---|"
for r in $ROWS; do
	dd=$(cell dvmm "$r" down) qd=$(cell qemu "$r" down)
	dt=$(cell dvmm "$r" total) qt=$(cell qemu "$r" total)
	echo "| $(wl_label "${r%%:*}") | $(mem_label "${r#*:}") | $dd | $qd | $(qratio "$dd" "$qd") | $dt | $qt | $(qratio "$dt" "$qt") |"
done
echo
if [ $HAVE_DIRTY = 1 ]; then
	echo "Dirty rows in detail (medians): dvmm's pre-copy rounds after the"
	echo "first pass (it stops at 30 whatever the target) and its highest"
	echo "vCPU throttle (auto-converge, on by default), QEMU's dirty-bitmap"
	echo "syncs (\`dirty-sync-count\`, the first pass and the final one"
	echo "included) and the highest throttle it reported while polled (only"
	echo "with auto-converge), and the rate the guest achieved over its whole"
	echo "run (MB/s)."
	echo
	echo "| workload | dvmm rounds | dvmm throttle % | QEMU syncs | QEMU throttle % | guest rate dvmm | guest rate QEMU |"
	echo "|---|---|---|---|---|---|---|"
	for r in $ROWS; do
		[ "${r%%:*}" = idle ] && continue
		echo "| $(wl_label "${r%%:*}") | $(cell dvmm "$r" rounds) | $(cell dvmm "$r" thr) | $(cell qemu "$r" rounds) | $(cell qemu "$r" thr) | $(cell dvmm "$r" rate) | $(cell qemu "$r" rate) |"
	done
	echo
fi
echo "What the two downtimes cover: dvmm's runs from pausing the vCPUs to the"
echo "destination's answer that its VM runs (the last dirty pages, the VM and"
echo "device state, their MAC, the destination's restore). QEMU's is the"
echo "source's time from stopping the VM to the end of the stream: the"
echo "destination's loading of the device state and its start are not in it."
echo "Total times run from the migrate command to completion on the source."
echo
echo "Commands (SIZE: the row's memory; ARGS: \`tests=idle\` or"
echo "\`tests=dirty dirty_mb=$DIRTY_MB dirty_rate=R dirty_secs=$DIRTY_SECS\`"
echo "with R = 64, 256, or 0 for unlimited):"
echo
echo '```'
echo "$(dvmm_cmd SIZE SECRET_FILE) --incoming tcp:127.0.0.1:PORT --api DST.sock --cmdline \"ARGS\""
echo "$(dvmm_cmd SIZE SECRET_FILE) --api SRC.sock --cmdline \"ARGS\""
echo "$DVMM ctl SRC.sock migrate tcp:127.0.0.1:PORT${DT_OPT:+ $DT_OPT}   # default row: no --downtime"
echo "$DVMM ctl DST.sock stop   # idle; the dirty guest ends by itself"
echo
echo "$(qemu_cmd SIZE) -serial file:DST.out -qmp unix:DST.qmp,server=on,wait=off -incoming tcp:127.0.0.1:PORT -append \"ARGS\""
echo "$(qemu_cmd SIZE) -serial file:SRC.out -qmp unix:SRC.qmp,server=on,wait=off -append \"ARGS\""
echo "# QMP on SRC.qmp (nc -U):"
echo '{"execute":"qmp_capabilities"}'
echo "{\"execute\":\"migrate-set-parameters\",\"arguments\":{\"max-bandwidth\":$QEMU_BW,\"downtime-limit\":$TARGET}}   # default row: no downtime-limit"
echo '{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"auto-converge","state":true}]}}   # auto-converge row only'
echo '{"execute":"migrate","arguments":{"uri":"tcp:127.0.0.1:PORT"}}'
echo '{"execute":"query-migrate"}   # every 100 ms until "completed"; "downtime", "total-time"'
echo '{"execute":"quit"}   # and SIGTERM to the destination'
echo '```'
echo

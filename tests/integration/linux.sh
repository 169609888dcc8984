# tests/integration/linux.sh - boot Debian's cloud kernel (build/linux/,
# from `make linux-guest`) under dvmm, as a bzImage and as an ELF vmlinux
# through PVH, and under QEMU; check what the kernel's own log says.
# Sourced by run.sh (test functions t_linux_*).
#
# On a host without hardware virtualization (kvm_pvm: guest kernel mode is
# emulated) Linux dies after its early boot log, so the tests check that
# log: the command line, an e820 map matching --memory, every ACPI table
# dvmm made, the CPU count, kvm-clock and the initrd. They stop the VM as
# soon as all of it is there, or fail at LINUX_LIMIT seconds naming the
# lines that never came. On a VT-x/AMD-V host they also wait for the
# initramfs to list the CPUs, memory, disks and NICs it saw and power off.
# LINUX_LOG_DIR=DIR keeps the guests' console logs there.

LINUX_DIR=${LINUX_DIR:-$ROOT/build/linux}
LINUX_LIMIT=${LINUX_LIMIT:-180}       # seconds per boot
LINUX_BZ_LIMIT=${LINUX_BZ_LIMIT:-240} # the bzImage decompresses itself first
LINUX_MAC=52:54:00:12:34:56

# What every early boot log must hold: "name|extended regex".
LINUX_EARLY=(
	"the command line|Command line: "
	"e820 usable RAM|BIOS-e820: \[mem 0x[0-9a-f]+-0x[0-9a-f]+\] usable"
	"ACPI RSDP|ACPI: RSDP 0x"
	"ACPI XSDT|ACPI: XSDT 0x"
	"ACPI FADT|ACPI: FACP 0x"
	"ACPI DSDT|ACPI: DSDT 0x"
	"ACPI FACS|ACPI: FACS 0x"
	"ACPI MADT|ACPI: APIC 0x"
	"ACPI MCFG|ACPI: MCFG 0x"
	"the CPU count|smpboot: Allowing [0-9]+ CPUs"
	"kvm-clock MSRs|kvm-clock: Using msrs"
	"kvm-clock clocksource|clocksource: kvm-clock"
	"the initrd|RAMDISK: \[mem "
)
# QEMU's firmware makes other tables; memory map and CPUs are compared.
LINUX_QEMU_EARLY=(
	"the command line|Command line: "
	"e820 usable RAM|BIOS-e820: \[mem 0x[0-9a-f]+-0x[0-9a-f]+\] usable"
	"the CPU count|smpboot: Allowing [0-9]+ CPUs"
)

note() {
	echo "    $*" >&2
}

linux_keep_log() { # LOG NAME
	[ -z "${LINUX_LOG_DIR:-}" ] || cp "$1" "$LINUX_LOG_DIR/$2.log"
}

# "hardware" (VT-x/AMD-V, no kvm_pvm) or "emulated" (guest kernel mode
# emulated by KVM, as on PVM hosts).
linux_host_kind() {
	if [ ! -d /sys/module/kvm_pvm ] &&
		grep -qwE 'vmx|svm' /proc/cpuinfo; then
		echo hardware
	else
		echo emulated
	fi
}

linux_say_host() {
	if [ "$(linux_host_kind)" = hardware ]; then
		note "host: hardware virtualization ($(grep -owE 'vmx|svm' \
			/proc/cpuinfo | head -n 1)): booting to the initramfs"
	else
		note "host: no hardware virtualization (kvm_pvm; guest kernel" \
			"mode emulated): checking Linux's early boot log only"
	fi
}

# The files a Linux test makes in $TMP go when it ends, pass or fail; run.sh
# runs each test in a subshell whose EXIT trap this extends.
linux_own_files() {
	trap 'cleanup_test; rm -f "$TMP"/linux[.-]* "$TMP"/qemu.* \
		"$TMP"/*.bz "$TMP"/big.initrd "$TMP"/zero.bin "$TMP"/out' EXIT
}

linux_need_guest() {
	for f in vmlinuz vmlinux initramfs.cpio.gz; do
		[ -s "$LINUX_DIR/$f" ] ||
			fail "$LINUX_DIR/$f missing; run make linux-guest" ||
			return 1
	done
}

# linux_missing LOG NAME|REGEX... : the names whose line is not in LOG.
linux_missing() {
	log=$1
	shift
	for pair in "$@"; do
		grep -qE "${pair#*|}" "$log" 2>/dev/null || echo "${pair%%|*}"
	done
}

# linux_watch PID LIMIT_S COND : poll COND every 0.5 s until it holds,
# PID exits or LIMIT_S pass; sets WATCH to done, exited or timeout.
linux_watch() {
	pid=$1 end=$(($(date +%s) + $2)) cond=$3
	while :; do
		if eval "$cond"; then
			WATCH=done
			return
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			eval "$cond" && WATCH=done || WATCH=exited
			return
		fi
		[ "$(date +%s)" -lt "$end" ] || {
			WATCH=timeout
			return
		}
		sleep 0.5
	done
}

# linux_report_missing LOG WHO NAME|REGEX... : fail naming missing lines.
linux_report_missing() {
	log=$1 who=$2
	shift 2
	missing=$(linux_missing "$log" "$@" | paste -sd, | sed 's/,/, /g')
	[ -z "$missing" ] && return 0
	fail "$who: after $WATCH, no line for: $missing; the log ends with:"
	tail -5 "$log" | sed 's/^/      /' >&2
	return 1
}

# Sum of the usable e820 entries in a kernel log, in bytes.
linux_e820_usable() {
	total=0
	while read -r a b; do
		total=$((total + 0x$b - 0x$a + 1))
	done < <(sed -nE 's/.*BIOS-e820: \[mem 0x([0-9a-f]+)-0x([0-9a-f]+)\] usable.*/\1 \2/p' "$1")
	echo $total
}

# End of the highest usable e820 entry.
linux_e820_top() {
	sed -nE 's/.*BIOS-e820: \[mem 0x[0-9a-f]+-0x([0-9a-f]+)\] usable.*/\1/p' \
		"$1" | while read -r b; do echo $((0x$b + 1)); done |
		sort -n | tail -n 1
}

linux_cpus() {
	sed -nE 's/.*smpboot: Allowing ([0-9]+) CPUs.*/\1/p' "$1" | head -n 1
}

mib_bytes() { # 256M / 1G -> bytes
	case $1 in
	*G) echo $((${1%G} << 30)) ;;
	*M) echo $((${1%M} << 20)) ;;
	esac
}

# What dvmm's memory map (machine/memmap.c) gives: all RAM but the
# 0x60400 bytes of [0x9fc00, 0x100000); RAM above 3 GiB from 4 GiB.
linux_expect_usable() {
	echo $(($1 - 0x60400))
}

linux_expect_top() {
	if [ "$1" -le $((3 << 30)) ]; then
		echo "$1"
	else
		echo $(($1 + (1 << 30)))
	fi
}

# linux_check_dvmm_log LOG CPUS BYTES CMDLINE INITRD : the early lines
# say what dvmm was asked for.
linux_check_dvmm_log() {
	log=$1 cpus=$2 bytes=$3 cmdline=$4 initrd=$5
	grep -qF "Command line: $cmdline" "$log" ||
		fail "command line differs: $(grep 'Command line:' "$log")" ||
		return 1
	usable=$(linux_e820_usable "$log") top=$(linux_e820_top "$log")
	[ "$usable" = "$(linux_expect_usable "$bytes")" ] &&
		[ "$top" = "$(linux_expect_top "$bytes")" ] ||
		fail "e820: usable $usable bytes up to $top; expected" \
			"$(linux_expect_usable "$bytes") up to" \
			"$(linux_expect_top "$bytes") for --memory $bytes" ||
		return 1
	[ "$(linux_cpus "$log")" = "$cpus" ] ||
		fail "Linux allows $(linux_cpus "$log") CPUs, expected $cpus" ||
		return 1
	linux_check_ramdisk "$log" "$initrd"
}

# RAMDISK: [mem 0xA-0xB] covers the initrd, page-rounded.
linux_check_ramdisk() {
	size=$(stat -c %s "$2")
	read -r a b < <(sed -nE 's/.*RAMDISK: \[mem 0x([0-9a-f]+)-0x([0-9a-f]+)\].*/\1 \2/p' "$1")
	len=$((0x$b - 0x$a + 1))
	[ "$len" -ge "$size" ] && [ "$len" -lt $((size + 4096)) ] ||
		fail "RAMDISK is $len bytes, the initrd $size"
}

# linux_stop PID SOCK : stop dvmm through its control socket; sets RC.
linux_stop() {
	"$DVMM" ctl "$2" stop >/dev/null 2>&1 || kill -TERM "$1" 2>/dev/null
	wait_exit "$1" 30
}

# On emulated hosts dvmm ends with status 0 (we stopped it) or 1 after
# the KVM emulation failure that kills Linux there.
linux_expect_end() { # OUT
	[ "$RC" = 0 ] && return 0
	[ "$RC" = 1 ] && grep -qE 'KVM internal error|emulation failure' "$1" &&
		return 0
	fail "dvmm exit status $RC:"
	tail -5 "$1" | sed 's/^/      /' >&2
	return 1
}

# The initramfs's report (hardware hosts): CPUs, memory, no failures.
linux_check_init() { # LOG CPUS BYTES
	log=$1
	grep -q '^DVMM-LINUX done' "$log" ||
		fail "the initramfs did not finish" || return 1
	grep -q "^DVMM-LINUX cpus $2 " "$log" ||
		fail "init saw: $(grep '^DVMM-LINUX cpus' "$log")" || return 1
	kb=$(sed -nE 's/^DVMM-LINUX memory ([0-9]+) kB.*/\1/p' "$log")
	[ "${kb:-0}" -gt $(($3 >> 11)) ] && [ "$kb" -le $(($3 >> 10)) ] ||
		fail "init saw ${kb:-no} kB of memory for $3 bytes" || return 1
	! grep -q '^DVMM-LINUX module-failed' "$log" ||
		fail "$(grep '^DVMM-LINUX module-failed' "$log")"
}

linux_check_devices() { # LOG DISK_SECTORS
	log=$1
	grep -q "^DVMM-LINUX block vda $2 sectors" "$log" ||
		fail "no virtio disk vda of $2 sectors:" \
			"$(grep '^DVMM-LINUX block' "$log")" || return 1
	grep -qE "^DVMM-LINUX net [^ ]+ $LINUX_MAC" "$log" ||
		fail "no NIC with $LINUX_MAC: $(grep '^DVMM-LINUX net' "$log")" ||
		return 1
	grep -qE '^DVMM-LINUX virtio .* driver virtio_console' "$log" ||
		fail "virtio-console not bound"
}

# linux_dvmm KERNEL CPUS MEMORY [dvmm options...] : boot under dvmm with
# the initramfs and check the log; on hardware hosts the init report too.
# Leaves the console log in $TMP/linux.log.
linux_dvmm() {
	kernel=$1 cpus=$2 mem=$3
	shift 3
	log=$TMP/linux.log sock=$TMP/linux.sock
	cmdline="console=ttyS0 earlyprintk=serial,ttyS0,115200 dvmm.test=$$"
	initrd=$LINUX_DIR/initramfs.cpio.gz
	: >"$log"
	$IN_NS "$DVMM" run --kernel "$kernel" --initrd "$initrd" --cpus "$cpus" \
		--memory "$mem" --console "file:$log" --api "$sock" \
		--cmdline "$cmdline" "$@" </dev/null >"$TMP/linux.out" 2>&1 &
	pid=$!
	BG_PIDS="$BG_PIDS $pid"
	t0=$(date +%s)
	cond="[ -z \"\$(linux_missing $log \"\${LINUX_EARLY[@]}\")\" ]"
	[ "$(linux_host_kind)" = hardware ] &&
		cond="$cond && grep -q '^DVMM-LINUX done' $log"
	linux_watch "$pid" "${LIMIT:-$LINUX_LIMIT}" "$cond"
	secs=$(($(date +%s) - t0)) ended=yes
	if [ "$(linux_host_kind)" = hardware ] && [ "$WATCH" = done ]; then
		wait_exit "$pid" 30 && expect_rc 0
	else
		linux_stop "$pid" "$sock" && linux_expect_end "$TMP/linux.out"
	fi || ended=no
	linux_keep_log "$log" "dvmm-$(basename "$kernel")-${cpus}cpu"
	[ "$ended" = yes ] || return 1
	linux_report_missing "$log" "dvmm" "${LINUX_EARLY[@]}" || return 1
	linux_check_dvmm_log "$log" "$cpus" "$(mib_bytes "$mem")" "$cmdline" \
		"$initrd" || return 1
	note "dvmm ($(basename "$kernel"), $cpus vCPU, $mem): every early" \
		"line in ${secs}s; e820 usable $(linux_e820_usable "$log")" \
		"bytes, Allowing $(linux_cpus "$log") CPUs, kvm-clock"
	[ "$(linux_host_kind)" = hardware ] || return 0
	linux_check_init "$log" "$cpus" "$(mib_bytes "$mem")"
}

# linux_qemu KERNEL CPUS MEMORY : the same kernel under QEMU (q35, for an
# MCFG like dvmm's); compare memory map and CPUs with dvmm's log.
linux_qemu() {
	kernel=$1 cpus=$2 mem=$3 bytes=$(mib_bytes "$3")
	qlog=$TMP/qemu.log
	command -v qemu-system-x86_64 >/dev/null || fail "qemu missing" ||
		return 1
	: >"$qlog"
	qemu-system-x86_64 -enable-kvm -cpu qemu64,+x2apic -M q35 \
		-smp "$cpus" -m "$((bytes >> 20))" -nodefaults -display none \
		-monitor none -no-reboot -serial "file:$qlog" \
		-kernel "$kernel" -initrd "$LINUX_DIR/initramfs.cpio.gz" \
		-append "console=ttyS0 earlyprintk=serial,ttyS0,115200" \
		</dev/null >"$TMP/qemu.out" 2>&1 &
	qpid=$!
	BG_PIDS="$BG_PIDS $qpid"
	t0=$(date +%s)
	linux_watch "$qpid" "$LINUX_LIMIT" \
		"[ -z \"\$(linux_missing $qlog \"\${LINUX_QEMU_EARLY[@]}\")\" ]"
	secs=$(($(date +%s) - t0))
	kill -TERM "$qpid" 2>/dev/null
	wait_exit "$qpid" 30 || return 1
	linux_keep_log "$qlog" "qemu-$(basename "$kernel")-${cpus}cpu"
	linux_report_missing "$qlog" "QEMU" "${LINUX_QEMU_EARLY[@]}" ||
		return 1
	linux_compare "$TMP/linux.log" "$qlog" "$cpus" "$bytes" "$secs"
}

# Both say what was asked: the same CPU count, usable RAM within 4 MiB of
# --memory (the VMMs reserve different small areas).
linux_compare() { # DVMM_LOG QEMU_LOG CPUS BYTES QEMU_SECS
	du=$(linux_e820_usable "$1") qu=$(linux_e820_usable "$2")
	dc=$(linux_cpus "$1") qc=$(linux_cpus "$2")
	note "QEMU (${5}s): e820 usable $qu bytes, Allowing $qc CPUs;" \
		"dvmm: $du bytes, $dc CPUs; asked: $4 bytes, $3 CPUs;" \
		"usable differs by $((du - qu)) bytes"
	[ "$dc" = "$3" ] && [ "$qc" = "$3" ] ||
		fail "CPU counts differ: dvmm $dc, QEMU $qc, asked $3" || return 1
	for u in "$du" "$qu"; do
		[ "$u" -le "$4" ] && [ "$u" -gt $(($4 - (4 << 20))) ] ||
			fail "usable RAM $u is not within 4 MiB of $4" || return 1
	done
}

# A bzImage (64-bit boot protocol) with the initramfs, a disk and a NIC.
t_linux_bzimage_2cpu() {
	linux_own_files
	linux_say_host
	linux_need_guest || return 1
	make_netns linux || return 1
	truncate -s 16M "$TMP/linux-disk.img"
	LIMIT=$LINUX_BZ_LIMIT IN_NS="ip netns exec $NS" \
		linux_dvmm "$LINUX_DIR/vmlinuz" 2 256M \
		--disk "$TMP/linux-disk.img" --net "tap=tap0,mac=$LINUX_MAC" \
		--vconsole "file:$TMP/linux-vcon" || return 1
	[ "$(linux_host_kind)" = hardware ] || return 0
	linux_check_devices "$TMP/linux.log" 32768
}

# The ELF vmlinux through its PVH note, without devices, and QEMU.
linux_vmlinux() { # CPUS MEMORY
	linux_own_files
	linux_say_host
	linux_need_guest || return 1
	linux_dvmm "$LINUX_DIR/vmlinux" "$1" "$2" || return 1
	if [ "$(linux_host_kind)" = hardware ]; then
		grep -q '^DVMM-LINUX block' "$TMP/linux.log" &&
			fail "a disk without --disk" && return 1
	fi
	linux_qemu "$LINUX_DIR/vmlinux" "$1" "$2"
}

t_linux_vmlinux_1cpu() { linux_vmlinux 1 256M; }
t_linux_vmlinux_2cpu() { linux_vmlinux 2 512M; }

# Kernels dvmm must refuse with one clear line (no Linux boot needed).
t_linux_bad_kernels() {
	linux_own_files
	linux_need_guest || return 1
	bz=$LINUX_DIR/vmlinuz
	head -c 1000000 "$bz" >"$TMP/trunc.bz"
	linux_refused "$TMP/trunc.bz" "truncated" || return 1
	cp "$bz" "$TMP/old.bz"
	printf '\x0b\x02' | dd of="$TMP/old.bz" bs=1 seek=$((0x206)) \
		conv=notrunc status=none
	linux_refused "$TMP/old.bz" "2.11 is too old" || return 1
	cp "$bz" "$TMP/32.bz"
	printf '\x00\x00' | dd of="$TMP/32.bz" bs=1 seek=$((0x236)) \
		conv=notrunc status=none
	linux_refused "$TMP/32.bz" "32-bit-only kernel" || return 1
	head -c 4096 /dev/zero >"$TMP/zero.bin"
	linux_refused "$TMP/zero.bin" "neither a PVH ELF nor a bzImage" ||
		return 1
	run_dvmm 20 "$TMP/out" run --kernel "$bz" --memory 32M
	expect_rc 1 && one_line "$TMP/out" && grep -q 'kernel needs' "$TMP/out" ||
		return 1
	truncate -s 300M "$TMP/big.initrd"
	run_dvmm 20 "$TMP/out" run --kernel "$bz" --memory 256M \
		--initrd "$TMP/big.initrd"
	rm -f "$TMP"/*.bz "$TMP/big.initrd"
	expect_rc 1 && one_line "$TMP/out" &&
		grep -q "big.initrd: 300 MiB does not fit in guest RAM" "$TMP/out"
}

linux_refused() { # FILE PHRASE
	run_dvmm 20 "$TMP/out" run --kernel "$1"
	expect_rc 1 && one_line "$TMP/out" && grep -q "$2" "$TMP/out" ||
		fail "for $(basename "$1"): $(cat "$TMP/out")"
}

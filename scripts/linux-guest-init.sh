#!/bin/busybox sh
# scripts/linux-guest-init.sh - /init of the Linux test guest's initramfs
# (built by scripts/linux-guest.sh): mount /proc, /sys and /dev, load the
# virtio modules listed in /lib/modules/order, print what the guest sees
# (CPUs, memory, block and network devices) as "DVMM-LINUX ..." lines on
# the console, and power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "DVMM-LINUX init $(uname -r)"

while read -r m; do
	if insmod "/lib/modules/$m.ko"; then
		echo "DVMM-LINUX module $m"
	else
		echo "DVMM-LINUX module-failed $m"
	fi
done </lib/modules/order

# Drivers probe as they load; give late binds up to 2 s.
i=0
while [ $i -lt 20 ]; do
	unbound=0
	for v in /sys/bus/virtio/devices/*; do
		[ -e "$v" ] && [ ! -e "$v/driver" ] && unbound=1
	done
	[ $unbound = 0 ] && break
	sleep 0.1
	i=$((i + 1))
done

echo "DVMM-LINUX cpus $(grep -c '^processor' /proc/cpuinfo)" \
	"online $(cat /sys/devices/system/cpu/online)"
echo "DVMM-LINUX memory $(awk '/^MemTotal/ {print $2}' /proc/meminfo) kB"
for b in /sys/block/*; do
	n=${b##*/}
	case $n in loop* | ram* | \*) continue ;; esac
	echo "DVMM-LINUX block $n $(cat "$b/size") sectors ro=$(cat "$b/ro")"
done
for n in /sys/class/net/*; do
	[ -e "$n" ] || continue
	echo "DVMM-LINUX net ${n##*/} $(cat "$n/address")"
done
for v in /sys/bus/virtio/devices/*; do
	[ -e "$v" ] || continue
	d=none
	[ -e "$v/driver" ] && d=$(basename "$(readlink "$v/driver")")
	echo "DVMM-LINUX virtio ${v##*/} id $(cat "$v/device") driver $d"
done
echo "DVMM-LINUX done"
poweroff -f

#!/bin/bash
# scripts/linux-guest.sh - build the Linux test guest in build/linux/ from
# Debian packages only: the cloud kernel (the package that
# linux-image-cloud-amd64 depends on, fetched with `apt-get download` and
# unpacked with dpkg-deb, never installed), its bzImage and the ELF vmlinux
# inside it, and an initramfs of busybox-static plus the kernel's virtio
# modules whose /init is scripts/linux-guest-init.sh.
# Usage: linux-guest.sh [OUTDIR]. Does nothing when OUTDIR already holds
# the current kernel.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/build/linux}
META=linux-image-cloud-amd64
MODULES="virtio virtio_ring virtio_pci virtio_blk virtio_net virtio_console"

say() { echo "linux-guest: $*"; }
die() {
	echo "linux-guest: $*" >&2
	exit 1
}

candidate() {
	apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}'
}

# A fresh machine may have no package lists yet.
ensure_lists() {
	c=$(candidate "$META")
	[ -n "$c" ] && [ "$c" != "(none)" ] && return 0
	[ "$(id -u)" = 0 ] ||
		die "apt knows no $META; run: sudo apt-get update"
	say "apt-get update"
	apt-get update -qq
	c=$(candidate "$META")
	[ -n "$c" ] && [ "$c" != "(none)" ] ||
		die "no $META in this machine's apt sources"
}

# linux-image-6.1.0-NN-cloud-amd64: what the metapackage depends on.
kernel_package() {
	apt-cache depends "$META" 2>/dev/null |
		awk '/Depends: linux-image-/ {print $2; exit}'
}

download() { # PACKAGE... into the current directory
	apt-get download -q -o APT::Sandbox::User=root "$@" >/dev/null ||
		die "apt-get download $* failed"
}

# The ELF vmlinux inside the bzImage: decompress from each magic found.
extract_vmlinux() { # bzimage output
	local magic tool pos
	for pair in '\x02\x21\x4c\x18:lz4 -dc' '\x28\xb5\x2f\xfd:zstd -dcq' \
		'\xfd\x37\x7a\x58\x5a\x00:xz -dcq' '\x1f\x8b\x08:gzip -dcq'; do
		magic=${pair%%:*} tool=${pair#*:}
		command -v "${tool%% *}" >/dev/null || continue
		for pos in $(LC_ALL=C grep -obUaP "$magic" "$1" | cut -d: -f1); do
			tail -c +$((pos + 1)) "$1" | $tool >"$2" 2>/dev/null || true
			[ "$(head -c 4 "$2" | od -An -c | tr -d ' ')" = '177ELF' ] &&
				return 0
		done
	done
	die "found no compressed ELF vmlinux inside $1"
}

find_module() { # NAME -> path of NAME.ko under $MODDIR
	find "$MODDIR/kernel" \( -name "$1.ko" -o -name "${1//_/-}.ko" \) |
		head -n 1
}

# Append NAME and, first, what it depends on to ORDER.
add_module() {
	local name=$1 file dep
	case " $ORDER " in *" $name "*) return 0 ;; esac
	file=$(find_module "$name")
	if [ -z "$file" ]; then
		grep -q "/$name.ko\$" "$MODDIR/modules.builtin" && return 0
		die "kernel module $name not found in the kernel package"
	fi
	for dep in $(modinfo -F depends "$file" | tr , ' '); do
		add_module "$dep"
	done
	ORDER="$ORDER $name"
	cp "$file" "$ROOTFS/lib/modules/$name.ko"
}

make_initramfs() {
	ROOTFS=$WORK/rootfs
	mkdir -p "$ROOTFS"/{bin,dev,proc,sys,tmp,lib/modules}
	cp "$WORK/bb/bin/busybox" "$ROOTFS/bin/busybox"
	install -m 755 "$ROOT/scripts/linux-guest-init.sh" "$ROOTFS/init"
	ORDER=""
	for m in $MODULES; do
		add_module "$m"
	done
	printf '%s\n' $ORDER >"$ROOTFS/lib/modules/order"
	(cd "$ROOTFS" && find . | LC_ALL=C sort |
		cpio -o -H newc -R 0:0 --quiet) | gzip -9n >"$WORK/initramfs.cpio.gz"
	say "initramfs: busybox and modules:$ORDER"
}

ensure_lists
KPKG=$(kernel_package)
[ -n "$KPKG" ] || die "cannot tell which kernel $META depends on"
KVER=$(candidate "$KPKG")
BBVER=$(candidate busybox-static)
STAMP="$KPKG $KVER busybox-static $BBVER $(md5sum <"$ROOT/scripts/linux-guest-init.sh" | cut -c1-32)"
if [ -f "$OUT/STAMP" ] && [ "$(cat "$OUT/STAMP")" = "$STAMP" ] &&
	[ -s "$OUT/vmlinuz" ] && [ -s "$OUT/vmlinux" ] &&
	[ -s "$OUT/initramfs.cpio.gz" ]; then
	exit 0
fi

mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
say "downloading $KPKG $KVER and busybox-static $BBVER from Debian"
(cd "$WORK" && download "$KPKG=$KVER" "busybox-static=$BBVER")
dpkg-deb -x "$WORK/${KPKG}_"*.deb "$WORK/k"
dpkg-deb -x "$WORK/busybox-static_"*.deb "$WORK/bb"
UNAME=$(basename "$(ls -d "$WORK"/k/lib/modules/*/)")
MODDIR=$WORK/k/lib/modules/$UNAME
cp "$WORK/k/boot/vmlinuz-$UNAME" "$WORK/vmlinuz"
extract_vmlinux "$WORK/vmlinuz" "$WORK/vmlinux"
make_initramfs
mv "$WORK/vmlinuz" "$WORK/vmlinux" "$WORK/initramfs.cpio.gz" "$OUT/"
echo "$UNAME" >"$OUT/RELEASE"
echo "$STAMP" >"$OUT/STAMP"
say "built $OUT: vmlinuz, vmlinux, initramfs.cpio.gz (Linux $UNAME)"

#!/bin/sh
# scripts/deps.sh - make sure the Debian packages dvmm needs are installed.
# Usage: deps.sh build|test. As root it installs what is missing with
# apt-get; otherwise it prints the exact command and fails.
set -e
BUILD_PKGS="gcc make binutils libc6-dev libjansson-dev liburing-dev libsodium-dev pkg-config"
TEST_PKGS="$BUILD_PKGS clang-format libcmocka-dev qemu-system-x86 iproute2 procps netcat-openbsd bc
	cpio lz4 kmod"
case "$1" in
build) want="$BUILD_PKGS" ;;
test) want="$TEST_PKGS" ;;
*) echo "usage: $0 build|test" >&2; exit 2 ;;
esac
missing=""
for p in $want; do
	st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$st" = "installed" ] || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "dvmm: missing Debian packages; run: sudo apt-get install -y$missing" >&2
	exit 1
fi
echo "dvmm: installing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null

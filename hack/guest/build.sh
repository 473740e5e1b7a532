#!/usr/bin/env bash
# Build the Linux test guest that Shoal's CI boots under QEMU (see hack/guest/README.md).
#
# Produces, under hack/.guest/ (gitignored):
#   vmlinuz              Debian 12's stock 6.1 kernel (linux-image-amd64), unpacked, not installed
#   vmlinux              the same kernel as an uncompressed ELF, which boots 2 s faster (PVH)
#   initramfs.cpio.gz    busybox + kmod + nvme-cli + fio + e2fsprogs' mke2fs and e2fsck (with every
#                        library ldd lists) + the NVMe/TCP host and target modules, ext4, and their
#                        dependencies + hack/guest/init.sh
#   initramfs.cpio       the same, uncompressed, which boots 1 s faster (what run.sh uses)
#   stamp                what the outputs were built from; an unchanged stamp makes a re-run a no-op
#
# Idempotent and safe to run concurrently (flock). Needs root: it installs what it lacks with
# apt-get (qemu-system-x86, busybox-static, nvme-cli, fio, e2fsprogs, xfsprogs, cpio, kmod, python3) so that
# a fresh Debian 12 machine or a clean CI clone needs nothing installed by hand. apt output:
# hack/.guest/apt.log.
#
# Usage: hack/guest/build.sh [--force]
# Env:   GUEST_DIR         output directory (default: hack/.guest next to this script's parent)
#        GUEST_KERNEL_PKG  kernel package to use (default: what linux-image-amd64 depends on)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${GUEST_DIR:-$(dirname "$here")/.guest}
force=0
case "${1:-}" in
    --force) force=1 ;;
    "") ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "build.sh: unknown argument: $1" >&2
        exit 2
        ;;
esac

# Host packages the guest is assembled from (and qemu to run it). The guest's userland is the
# host's own Debian 12 binaries copied with the libraries ldd finds, so it needs no other source.
# python3 (also a dependency of fio) extracts the ELF kernel and serves selftest.sh's HTTP check.
host_pkgs=(qemu-system-x86 busybox-static nvme-cli fio e2fsprogs xfsprogs cpio kmod python3)

# Kernel modules the initramfs carries; dependencies (and softdeps) are added by modprobe.
# - virtio_pci, virtio_net: the NIC that QEMU's user-mode network sits behind.
# - nvme-tcp (pulls nvme-fabrics, nvme-core, t10-pi, crc-t10dif, crc64-rocksoft, ...): the host.
# - crc32c_generic, crc32c-intel: header/data digests (nvme-tcp asks the crypto API for "crc32c").
# - crc64_rocksoft_generic: the "crc64-rocksoft" shash that crc64-rocksoft requests at load time.
# - nvmet, nvmet-tcp, configfs: the in-kernel reference target (used by selftest.sh).
# - ext4 (pulls jbd2, mbcache, crc16): the file system the crash tests (test-crash-*.sh) judge with.
# - xfs: the CSI node plugin's other file system (test-csi-node.sh).
modules=(
    virtio_pci virtio_net
    crc32c_generic crc32c-intel crc64_rocksoft_generic
    nvme-core nvme-fabrics nvme-tcp
    configfs nvmet nvmet-tcp
    ext4 xfs
)

log() { printf 'guest/build: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get installs, device nodes in the initramfs)"
export DEBIAN_FRONTEND=noninteractive
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9 # One build at a time; a concurrent run.sh waits here, then finds the stamp current.

apt_log=$out/apt.log
apt_updated=0
apt_update() {
    if [[ $apt_updated -eq 0 ]]; then
        log "apt-get update"
        apt-get update -qq >>"$apt_log" 2>&1 || {
            tail -n 20 "$apt_log" >&2
            die "apt-get update failed (log $apt_log)"
        }
        apt_updated=1
    fi
}

# --- 1. host packages -------------------------------------------------------------------------
missing=()
for p in "${host_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    apt_update
    log "apt-get install ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$apt_log" 2>&1 || {
        tail -n 20 "$apt_log" >&2
        die "apt-get install failed (log $apt_log)"
    }
fi

# Debian's python3, not whatever a user's PATH (pyenv, venv) puts first.
python=/usr/bin/python3

# --- 2. which kernel --------------------------------------------------------------------------
# linux-image-amd64 is a metapackage; its Depends names the real image (linux-image-6.1.0-N-amd64).
# Sets kpkg and kver (e.g. 6.1.0-56-amd64).
resolve_kernel() {
    kpkg=${GUEST_KERNEL_PKG:-}
    if [[ -z $kpkg ]]; then
        kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
            awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
    fi
    kver=${kpkg#linux-image-}
}
resolve_kernel
if [[ -z $kpkg ]]; then
    apt_update # no package lists yet (fresh machine, or lists cleaned)
    resolve_kernel
fi
[[ -n $kpkg ]] || die "cannot resolve linux-image-amd64's kernel package"

# --- 3. up to date? ---------------------------------------------------------------------------
# The stamp covers the inputs: these scripts, the kernel package, the userland package versions.
stamp_of() {
    {
        sha256sum "$here/build.sh" "$here/init.sh" | awk '{ print $1 }'
        echo "$kpkg"
        dpkg-query -W -f='${Package}=${Version}\n' busybox-static nvme-cli fio e2fsprogs xfsprogs kmod libc6
    } | sha256sum | awk '{ print $1 }'
}
if [[ $force -eq 0 && -f $out/vmlinuz && -f $out/vmlinux && -f $out/initramfs.cpio &&
    -f $out/initramfs.cpio.gz && -f $out/stamp &&
    $(head -n1 "$out/stamp") == "$(stamp_of)" ]]; then
    log "up to date ($kver)"
    exit 0
fi

work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- 4. kernel package: download (cached) and unpack ------------------------------------------
mkdir -p "$out/cache"
deb=$(find "$out/cache" -maxdepth 1 -name "${kpkg}_*_amd64.deb" | sort | tail -n1)
if [[ -z $deb ]]; then
    log "apt-get download $kpkg"
    # The sandbox user (_apt) may not be able to write here; we are root, so skip the sandbox.
    if ! (cd "$out/cache" && apt-get download -qq -o APT::Sandbox::User=root "$kpkg") \
        >>"$apt_log" 2>&1; then
        # Stale package lists can name a kernel the archive no longer has: refresh, resolve
        # linux-image-amd64 again (the stamp is computed again at the end) and retry.
        apt_update
        resolve_kernel
        log "apt-get download $kpkg (after apt-get update)"
        (cd "$out/cache" && apt-get download -qq -o APT::Sandbox::User=root "$kpkg") \
            >>"$apt_log" 2>&1 || {
            tail -n 20 "$apt_log" >&2
            die "apt-get download $kpkg failed (log $apt_log)"
        }
    fi
    deb=$(find "$out/cache" -maxdepth 1 -name "${kpkg}_*_amd64.deb" | sort | tail -n1)
    [[ -n $deb ]] || die "download of $kpkg produced no .deb"
    # Keep only the newest kernel .deb in the cache.
    find "$out/cache" -maxdepth 1 -name 'linux-image-*.deb' ! -path "$deb" -delete
fi
log "unpacking $(basename "$deb")"
kroot=$work/kernel
dpkg-deb -x "$deb" "$kroot"
[[ -f $kroot/boot/vmlinuz-$kver ]] || die "no boot/vmlinuz-$kver in $deb"
# Debian ships the modules without their index; build it so modprobe can resolve dependencies.
depmod -b "$kroot" "$kver"

# --- 5. stage the initramfs tree --------------------------------------------------------------
stage=$work/root
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,lib64,etc/nvme,proc,sys,dev,tmp,run,var,mnt,guest}
ln -s ../run "$stage/var/run"
ln -s ../proc/self/mounts "$stage/etc/mtab"
# The kernel opens /dev/console for init before /dev is mounted, so the node must be in the cpio.
mknod -m 600 "$stage/dev/console" c 5 1
mknod -m 666 "$stage/dev/null" c 1 3

# Copy a file to the same path inside the stage, dereferencing symlinks (so a library lands under
# the name ldd printed, e.g. libc.so.6, with the real file's content).
stage_file() {
    local src=$1 dst=$stage$1
    mkdir -p "$(dirname "$dst")"
    [[ -e $dst ]] || cp -L "$src" "$dst"
}

# A dynamically linked binary plus every library ldd resolves for it, including the loader.
stage_elf() {
    local bin=$1 lib
    stage_file "$bin"
    # ldd lines: "libX.so.1 => /path/libX.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)".
    while read -r lib; do
        stage_file "$lib"
    done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
    if ldd "$bin" | grep -q 'not found'; then
        die "ldd $bin: a library is not found"
    fi
}

# busybox: static, one binary, every applet as a symlink (sh, mount, ip, wget, timeout, ...).
cp /bin/busybox "$stage/bin/busybox"
while read -r applet; do
    case "$applet" in
        */busybox) continue ;;
    esac
    [[ -e $stage$applet || -L $stage$applet ]] || ln -s /bin/busybox "$stage$applet"
done < <("$stage/bin/busybox" --list-full | sed 's|^|/|')

# kmod: the real modprobe (aliases, softdeps), which the kernel also runs for request_module().
stage_elf /usr/bin/kmod
for t in modprobe insmod rmmod lsmod modinfo depmod; do
    ln -sf /usr/bin/kmod "$stage/sbin/$t"
done

stage_elf "$(command -v nvme)"
stage_elf "$(command -v fio)"
# e2fsprogs for the crash tests: make ext4 and check it (mkfs.ext4 and fsck.ext4 are links, as
# on the host); mke2fs.conf gives the host's defaults (metadata_csum, 64bit, ...).
stage_elf /usr/sbin/mke2fs
stage_elf /usr/sbin/e2fsck
ln -sf mke2fs "$stage/usr/sbin/mkfs.ext4"
ln -sf e2fsck "$stage/usr/sbin/fsck.ext4"
cp /etc/mke2fs.conf "$stage/etc/mke2fs.conf"
# The CSI node plugin (test-csi-node.sh) grows file systems online and makes xfs.
stage_elf /usr/sbin/resize2fs
stage_elf /usr/sbin/mkfs.xfs
stage_elf /usr/sbin/xfs_growfs
# Rust binaries copied in at run time (run.sh -f: shoal-csi) link libgcc_s and libm.
stage_file /lib/x86_64-linux-gnu/libgcc_s.so.1
stage_file /lib/x86_64-linux-gnu/libm.so.6

# Kernel modules, by their dependency closure.
kmods=$work/kmods.txt
: >"$kmods"
for m in "${modules[@]}"; do
    modprobe -d "$kroot" -S "$kver" --show-depends "$m" >>"$kmods" ||
        die "module $m not found in $kpkg"
done
mdir=lib/modules/$kver
mkdir -p "$stage/$mdir"
awk '$1 == "insmod" { print $2 }' "$kmods" | sort -u | while read -r ko; do
    rel=${ko#"$kroot"/}
    mkdir -p "$(dirname "$stage/$rel")"
    cp "$ko" "$stage/$rel"
done
for f in modules.order modules.builtin modules.builtin.modinfo; do
    [[ -f $kroot/$mdir/$f ]] && cp "$kroot/$mdir/$f" "$stage/$mdir/"
done
depmod -b "$stage" "$kver"
log "modules: $(awk '$1 == "insmod" { print $2 }' "$kmods" | sort -u | wc -l) files"

# The init script (PID 1), and a few files busybox and nvme-cli look for.
install -m 755 "$here/init.sh" "$stage/init"
echo "$kver" >"$stage/etc/guest-kernel"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$stage/etc/passwd"
printf 'root:x:0:\n' >"$stage/etc/group"
printf '127.0.0.1 localhost\n10.0.2.2 host\n' >"$stage/etc/hosts"
mkdir -p "$stage/root"

# --- 6. pack ----------------------------------------------------------------------------------
log "packing initramfs"
(
    cd "$stage"
    find . -mindepth 1 -print0 | LC_ALL=C sort -z |
        cpio --null --create --format=newc --owner=0:0 --reproducible --quiet
) >"$work/initramfs.cpio"
# run.sh boots the uncompressed archive: with PVH, QEMU copies it straight into guest memory,
# and the guest skips ~1 s of gunzip under TCG (fio's libraries make it ~90 MiB unpacked).
gzip -n -6 <"$work/initramfs.cpio" >"$work/initramfs.cpio.gz"
cp "$kroot/boot/vmlinuz-$kver" "$work/vmlinuz"
# Also the uncompressed ELF kernel: QEMU boots it through its PVH entry point (CONFIG_PVH=y),
# skipping SeaBIOS's bzImage loader and the kernel's XZ self-decompression, which together take
# about 2 s under TCG. The bzImage wraps the ELF as one XZ stream: find it and inflate it.
"$python" - "$work/vmlinuz" "$work/vmlinux" <<'EOF_PY'
import lzma, sys
data = open(sys.argv[1], "rb").read()
at = data.find(b"\xfd7zXZ\x00")
if at < 0:
    sys.exit("vmlinuz: no XZ stream (kernel not XZ-compressed?)")
elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[at:])
if elf[:4] != b"\x7fELF":
    sys.exit("vmlinuz: XZ stream is not an ELF image")
open(sys.argv[2], "wb").write(elf)
EOF_PY
mv -f "$work/vmlinuz" "$out/vmlinuz"
mv -f "$work/vmlinux" "$out/vmlinux"
mv -f "$work/initramfs.cpio" "$out/initramfs.cpio"
mv -f "$work/initramfs.cpio.gz" "$out/initramfs.cpio.gz"
{
    stamp_of
    echo "kernel=$kpkg"
    dpkg-query -W -f='${Package}=${Version}\n' busybox-static nvme-cli fio e2fsprogs xfsprogs kmod libc6
} >"$out/stamp"
log "built $kver guest in $out: vmlinuz, vmlinux, initramfs.cpio ($(du -h "$out/initramfs.cpio" |
    cut -f1)), initramfs.cpio.gz ($(du -h "$out/initramfs.cpio.gz" | cut -f1))"

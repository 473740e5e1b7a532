#!/usr/bin/env bash
# Boot the Linux 6.1 test guest under QEMU (TCG) and run a shell script inside it.
#
# Usage: hack/guest/run.sh [options] SCRIPT [ARG...]
#
# SCRIPT runs in the guest as `/bin/sh /guest/script.sh ARG...` (busybox ash, not bash) with cwd
# /guest, as root, after the NVMe/TCP host modules are loaded and the network is up. It has
# busybox, nvme (nvme-cli 2.3), fio (libaio, io_uring), kmod's modprobe, the nvmet modules, and
# helpers in /guest/lib.sh (hack/guest/lib.sh: nvme_wait_dev, fio_verify, nvmet_file_target...).
# The host's 127.0.0.1 is 10.0.2.2 in the guest (QEMU user-mode networking; also $GUEST_HOST_IP).
# run.sh exits with SCRIPT's exit status, or 124 on timeout, or 125 when the guest ended without
# reporting one (kernel panic, qemu error): the reason is printed on stderr either way.
#
# Options:
#   -t, --timeout SEC     kill the guest after SEC seconds, boot included (default 300)
#   -l, --log FILE        console log (default hack/.guest/logs/NAME-TIME-PID.log)
#   -q, --quiet           do not stream the console to stdout (it is still logged)
#   -e, --env NAME[=VAL]  export NAME in the guest, with VAL or the host's value (repeatable)
#   -f, --file SRC[:DST]  copy a host file into the guest, at DST (relative to /guest, or
#                         absolute); default /guest/BASENAME (repeatable)
#       --net MODE        static (default; 10.0.2.15/24 via 10.0.2.2), dhcp or none
#       --host-uuid UUID  host NQN nqn.2014-08.org.nvmexpress:uuid:UUID and host ID UUID
#                         (default 5ba1e0b1-0000-4000-8000-000000000001)
#       --loglevel N      kernel console log level while SCRIPT runs (default 7: info lines
#                         such as nvme's "new ctrl"; 5: warnings and errors only)
#       --smp N           vCPUs (default 2)      --mem SIZE  guest memory (default 2G)
#       --hostfwd RULE    forward a host port to the guest (QEMU user networking's hostfwd,
#                         e.g. tcp:127.0.0.1:4821-:4420: the host's 127.0.0.1:4821 reaches the
#                         guest's 10.0.2.15:4420; a guest service must listen on 10.0.2.15 or
#                         0.0.0.0, not 127.0.0.1); repeatable; needs --net static or dhcp
#       --qemu-arg ARG    extra qemu argument (repeatable)
#       --no-build        do not run build.sh first (it is a quick no-op when up to date)
#       --bzimage         boot vmlinuz through the firmware instead of vmlinux through PVH
#   -h, --help
# Env: GUEST_DIR (as in build.sh), GUEST_TIMEOUT (default for --timeout).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${GUEST_DIR:-$(dirname "$here")/.guest}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() {
    printf 'guest/run: error: %s\n' "$*" >&2
    exit 2
}
need_arg() { [[ $# -ge 2 ]] || die "option $1 needs an argument"; }

timeout_s=${GUEST_TIMEOUT:-300}
log=""
quiet=0
build=1
bzimage=0
net=static
host_uuid=5ba1e0b1-0000-4000-8000-000000000001
loglevel=7
smp=2
mem=2G
envs=()
files=()
qemu_extra=()
hostfwds=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        -t | --timeout) need_arg "$@"; timeout_s=$2; shift 2 ;;
        -l | --log) need_arg "$@"; log=$2; shift 2 ;;
        -q | --quiet) quiet=1; shift ;;
        -e | --env) need_arg "$@"; envs+=("$2"); shift 2 ;;
        -f | --file) need_arg "$@"; files+=("$2"); shift 2 ;;
        --net) need_arg "$@"; net=$2; shift 2 ;;
        --host-uuid) need_arg "$@"; host_uuid=$2; shift 2 ;;
        --loglevel) need_arg "$@"; loglevel=$2; shift 2 ;;
        --smp) need_arg "$@"; smp=$2; shift 2 ;;
        --mem) need_arg "$@"; mem=$2; shift 2 ;;
        --hostfwd) need_arg "$@"; hostfwds+=("$2"); shift 2 ;;
        --qemu-arg) need_arg "$@"; qemu_extra+=("$2"); shift 2 ;;
        --no-build) build=0; shift ;;
        --bzimage) bzimage=1; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; break ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) break ;;
    esac
done
[[ $# -ge 1 ]] || die "no SCRIPT given (see --help)"
script=$1
shift
[[ -f $script ]] || die "no such script: $script"
[[ $timeout_s =~ ^[0-9]+$ && $timeout_s -gt 0 ]] || die "bad --timeout: $timeout_s"
[[ $net =~ ^(static|dhcp|none)$ ]] || die "bad --net: $net"
[[ $host_uuid =~ ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$ ]] ||
    die "bad --host-uuid (lower-case UUID expected): $host_uuid"
[[ $loglevel =~ ^[0-8]$ ]] || die "bad --loglevel: $loglevel"
netdev=user,id=n0
for f in ${hostfwds[@]+"${hostfwds[@]}"}; do
    # [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT, as QEMU's -netdev user,hostfwd= takes it.
    [[ $f =~ ^(tcp|udp):[0-9.]*:[0-9]+-[0-9.]*:[0-9]+$ ]] ||
        die "bad --hostfwd (expected tcp:HOSTADDR:HOSTPORT-[GUESTADDR]:GUESTPORT): $f"
    [[ $net != none ]] || die "--hostfwd needs a guest network (--net static or dhcp)"
    netdev+=",hostfwd=$f"
done

if [[ $build -eq 1 ]]; then
    "$here/build.sh"
fi
if [[ $bzimage -eq 0 ]]; then
    kernel=$out/vmlinux
    initramfs=$out/initramfs.cpio
else
    kernel=$out/vmlinuz
    initramfs=$out/initramfs.cpio.gz
fi
[[ -f $kernel && -f $initramfs ]] || die "no guest in $out: run build.sh"

if [[ -z $log ]]; then
    mkdir -p "$out/logs"
    name=$(basename "$script")
    log=$out/logs/${name%.*}-$(date +%Y%m%d-%H%M%S)-$$.log
    # Keep the 50 newest default logs.
    find "$out/logs" -maxdepth 1 -name '*.log' -printf '%T@ %p\n' | sort -rn | tail -n +51 |
        cut -d' ' -f2- | xargs -r rm -f
fi
mkdir -p "$(dirname "$log")"
: >"$log"

work=$(mktemp -d "${TMPDIR:-/tmp}/shoal-guest.XXXXXX")
qpid=""
tpid=""
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    # Runs on every exit, including INT/TERM from a CI runner: never leave a qemu behind.
    if [[ -n $qpid ]]; then kill -TERM "$qpid" 2>/dev/null || true; fi
    if [[ -n $tpid ]]; then kill -TERM "$tpid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Single-quote a value for the guest's sh: 'it'\''s'.
sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# --- the per-run cpio: /guest/{script.sh,env,args} and any extra files ------------------------
g=$work/root/guest
mkdir -p "$g"
cp "$script" "$g/script.sh"
cp "$here/lib.sh" "$g/lib.sh" # helpers: . /guest/lib.sh
{
    echo "# written by hack/guest/run.sh"
    echo "GUEST_NET=$net"
    echo "GUEST_HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:$host_uuid"
    echo "GUEST_HOSTID=$host_uuid"
    echo "GUEST_LOGLEVEL=$loglevel"
    echo "GUEST_HOST_IP=10.0.2.2"
    echo "export GUEST_HOST_IP"
    for e in ${envs[@]+"${envs[@]}"}; do
        n=${e%%=*}
        [[ $n =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "bad --env name: $n"
        if [[ $e == *=* ]]; then v=${e#*=}; else v=${!n-}; fi
        echo "$n=$(sq "$v")"
        echo "export $n"
    done
} >"$g/env"
{
    printf 'set --'
    for a in "$@"; do printf ' %s' "$(sq "$a")"; done
    echo
} >"$g/args"
for f in ${files[@]+"${files[@]}"}; do
    src=${f%%:*}
    if [[ $f == *:* ]]; then dst=${f#*:}; else dst=$(basename "$src"); fi
    [[ -f $src ]] || die "no such file: $src"
    [[ $dst == /* ]] || dst=/guest/$dst
    mkdir -p "$work/root$(dirname "$dst")"
    cp "$src" "$work/root$dst"
done
# The kernel unpacks concatenated cpio archives (each compressed or not) in order, later files
# winning, so this one is simply appended to the prebuilt initramfs. cpio pads to 512 bytes,
# which keeps the next archive 4-byte aligned as the kernel requires.
# An uncompressed archive after a gzip stream would start unaligned and be skipped as junk, so
# with the (compressed) bzImage-path initramfs this one is compressed too.
(cd "$work/root" && find . -mindepth 1 | LC_ALL=C sort |
    cpio --create --format=newc --owner=0:0 --quiet) >"$work/run.cpio"
if [[ $initramfs == *.gz ]]; then
    gzip -1 -n "$work/run.cpio"
    cat "$initramfs" "$work/run.cpio.gz" >"$work/initrd"
else
    cat "$initramfs" "$work/run.cpio" >"$work/initrd"
fi

# --- boot -------------------------------------------------------------------------------------
# TCG, not KVM: KVM on these hosts cannot boot a stock kernel (see shared LINUX-HOST.md).
# -nodefaults: no VGA, floppy or CD; the only devices are the serial console and the virtio NIC.
# panic=-1 + -no-reboot: a kernel panic (e.g. init died) ends qemu at once instead of looping.
# An ELF -kernel (vmlinux) is entered through its PVH note: no firmware, no decompression.
# shellcheck disable=SC2054 # the commas belong to qemu's option syntax
qemu=(
    qemu-system-x86_64 -accel tcg -cpu max -smp "$smp" -m "$mem"
    -nodefaults -display none -no-reboot -serial stdio
    -kernel "$kernel" -initrd "$work/initrd"
    -append "console=ttyS0 panic=-1 quiet"
    -netdev "$netdev" -device virtio-net-pci,netdev=n0
    ${qemu_extra[@]+"${qemu_extra[@]}"}
)
start=$(date +%s.%N)
printf 'guest/run: booting %s (timeout %ss, log %s)\n' "$script" "$timeout_s" "$log" >&2
timeout --kill-after=10 "$timeout_s" "${qemu[@]}" </dev/null >>"$log" 2>&1 &
qpid=$!
if [[ $quiet -eq 0 ]]; then
    # --pid: tail exits once qemu is gone, after printing what is left in the file.
    tail -n +1 -f --pid="$qpid" "$log" | tr -d '\r' &
    tpid=$!
fi
set +e
wait "$qpid"
qrc=$?
set -e
qpid=""
if [[ -n $tpid ]]; then
    wait "$tpid" || true
    tpid=""
fi
sed -i 's/\r$//' "$log"
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')

# --- verdict ----------------------------------------------------------------------------------
ready=$(sed -n 's/^guest: ready at \([0-9.]*\) s.*/\1/p' "$log" | tail -n1)
rc=$(sed -n 's/^GUEST-EXIT=\([0-9]\{1,3\}\)$/\1/p' "$log" | tail -n1)
if [[ $qrc -eq 124 || $qrc -eq 137 ]]; then
    [[ $quiet -eq 0 ]] || tail -n 40 "$log" | sed 's|^|guest/run:   > |' >&2
    printf 'guest/run: TIMEOUT after %ss (%s); log %s\n' "$timeout_s" "$script" "$log" >&2
    exit 124
fi
if [[ -z $rc ]]; then
    printf 'guest/run: FAILED: guest ended without GUEST-EXIT (qemu exit %s, %ss); log %s\n' \
        "$qrc" "$elapsed" "$log" >&2
    tail -n 40 "$log" | sed 's|^|guest/run:   > |' >&2
    exit 125
fi
# Wall-clock split: the script's share is measured by the guest's clock (ready -> exit); the rest
# (qemu start, firmware, kernel, initramfs unpack, init, power-off) is reported as boot.
ended=$(sed -n 's/^guest: script exited [0-9]* at \([0-9.]*\) s$/\1/p' "$log" | tail -n1)
split=$(awk -v e="$elapsed" -v r="${ready:-0}" -v x="${ended:-0}" \
    'BEGIN { if (r > 0 && x >= r) printf "boot %.1fs + script %.1fs", e - (x - r), x - r }')
if [[ $rc -ne 0 && $quiet -eq 1 ]]; then
    tail -n 40 "$log" | sed 's|^|guest/run:   > |' >&2 # the console was not streamed: show the end
fi
printf 'guest/run: %s exited %s in %ss wall (%s); log %s\n' \
    "$script" "$rc" "$elapsed" "${split:-no timing}" "$log" >&2
exit "$rc"

#!/bin/sh
# Guest half of the ext4 crash tests (hack/tests/test-crash-ext4.sh, test-crash-nexus.sh), in
# busybox ash. Env from the host script: NQN and PORT (the namespace on $GUEST_HOST_IP), MODE
# (write or check), SEED (write: the file sizes and the noise).
#
# MODE=write: mkfs.ext4 (4 KiB blocks, no discard) on the namespace, mount it (data=ordered,
# barriers, commit=1), then until the device fails (the host cuts its power):
#   - a background "noise" writer keeps creating, overwriting (half of the time with O_DIRECT)
#     and deleting files in noise/ without any fsync (with a 1 s dirty expiry), so that
#     writeback, journal commits and block reuse go on all the time and the device's cache is
#     seldom empty;
#   - the main loop writes file fN (N = 1, 2, ...) in dN%4/, of a random size from 1 byte to
#     256 KiB of random data, with `dd conv=fsync` (write + fsync), and once the fsync has
#     succeeded prints "DURABLE fN SIZE SHA256" on the console: ext4 promises that this file,
#     its name included, survives a crash from now on.
#   The script never ends by itself: the host kills the guest after the cut.
# MODE=check (after the crash, on the restarted target): mount (it must replay the journal:
# "recovery complete"), unmount,
# `e2fsck -fn` must be clean (exit 0), mount read-only, and every file listed in
# /guest/durable.txt ("fN SIZE SHA256" lines, the DURABLE lines of the write boot) must be
# there with that size and checksum. Prints "crash-ext4: durable files: I intact, L lost or
# damaged (of N)"; any loss, damage or fsck problem fails the script.
set -eu
# shellcheck source=/dev/null
. /guest/lib.sh

H=$GUEST_HOST_IP
MNT=/mnt/t

step "nvme connect $NQN at $H:$PORT ($MODE)"
nvme connect -t tcp -a "$H" -s "$PORT" -n "$NQN" --ctrl-loss-tmo=5 --reconnect-delay=1 ||
    fail "connect"
DEV=$(nvme_wait_dev "$NQN") || fail "no block device for $NQN"
modprobe ext4 || fail "modprobe ext4"
mkdir -p "$MNT"

# rnd I LO HI: a pseudo-random integer in [LO, HI], a function of SEED and I.
rnd() { awk -v s="$SEED" -v i="$1" -v lo="$2" -v hi="$3" \
    'BEGIN { srand((s * 7919 + i) % 2147483647); print lo + int(rand() * (hi - lo + 1)) }'; }

noise() {
    j=0
    while :; do
        j=$((j + 1))
        _f=$MNT/noise/n$((j % 12))
        if [ $((j % 2)) -eq 0 ]; then
            # O_DIRECT over what is there: data straight to the device, no journal, no flush.
            dd if=/dev/urandom of="$_f" bs=4k count="$(rnd $((1000000 + j)) 1 48)" oflag=direct \
                conv=notrunc 2>/dev/null || return 0
        else
            dd if=/dev/urandom of="$_f" bs=4k count="$(rnd $((1000000 + j)) 1 48)" \
                2>/dev/null || return 0
        fi
        [ $((j % 5)) -ne 0 ] || rm -f "$MNT/noise/n$(((j + 6) % 12))" || return 0
        sleep 0.05
    done
}

case "$MODE" in
    write)
        mkfs.ext4 -q -F -b 4096 -E nodiscard "$DEV" || fail "mkfs.ext4"
        mount -t ext4 -o data=ordered,barrier=1,commit=1 "$DEV" "$MNT" || fail "mount"
        mkdir "$MNT/d0" "$MNT/d1" "$MNT/d2" "$MNT/d3" "$MNT/noise"
        sync
        echo 100 >/proc/sys/vm/dirty_expire_centisecs
        echo 50 >/proc/sys/vm/dirty_writeback_centisecs
        step "crash-ext4: writing (seed $SEED)"
        noise &
        i=0
        while :; do
            i=$((i + 1))
            [ "$i" -le 5000 ] || fail "still writing after 5000 files: the host never cut"
            size=$(rnd "$i" 1 262144)
            dd if=/dev/urandom of=/tmp/f bs="$size" count=1 2>/dev/null
            sum=$(sha256sum /tmp/f | cut -d' ' -f1)
            if ! dd if=/tmp/f of="$MNT/d$((i % 4))/f$i" bs=64k conv=fsync 2>/dev/null; then
                echo "crash-ext4: f$i failed (the device is gone)"
                break
            fi
            echo "DURABLE f$i $size $sum"
        done
        # The host kills the guest; never report success from here.
        sleep 600
        fail "not killed after the cut"
        ;;
    check)
        [ -f /guest/durable.txt ] || fail "no /guest/durable.txt"
        mount -t ext4 "$DEV" "$MNT" || fail "mount (journal replay)"
        dmesg | grep -iE 'ext4|jbd2' | tail -n 5
        # The write boot died with the file system mounted: the mount must have replayed.
        dmesg | grep -q 'EXT4-fs (.*): recovery complete' ||
            fail "the mount replayed no journal: was the file system not crashed?"
        echo "crash-ext4: journal replayed"
        umount "$MNT" || fail "umount"
        rc=0
        e2fsck -fn "$DEV" >/tmp/fsck.out 2>&1 || rc=$?
        sed 's/^/  fsck> /' /tmp/fsck.out
        [ "$rc" -eq 0 ] || fail "e2fsck -fn exited $rc: the file system is not clean"
        echo "crash-ext4: e2fsck -fn clean"
        mount -t ext4 -o ro "$DEV" "$MNT" || fail "mount -o ro"
        ok=0 bad=0 n=0
        while read -r name size sum; do
            n=$((n + 1))
            f=$MNT/d$((${name#f} % 4))/$name
            if [ ! -f "$f" ]; then
                echo "LOST $name: missing"
                bad=$((bad + 1))
            elif [ "$(wc -c <"$f")" -ne "$size" ]; then
                echo "LOST $name: $(wc -c <"$f") bytes, not $size"
                bad=$((bad + 1))
            elif [ "$(sha256sum "$f" | cut -d' ' -f1)" != "$sum" ]; then
                echo "LOST $name: content differs (sha256 $(sha256sum "$f" | cut -d' ' -f1))"
                bad=$((bad + 1))
            else
                ok=$((ok + 1))
            fi
        done </guest/durable.txt
        total=$(find "$MNT"/d? -type f | wc -l)
        echo "crash-ext4: durable files: $ok intact, $bad lost or damaged (of $n);" \
            "$total files in d*/"
        umount "$MNT"
        nvme disconnect -n "$NQN" >/dev/null || true
        [ "$bad" -eq 0 ] || fail "$bad file(s) made durable before the crash are lost or damaged"
        [ "$n" -gt 0 ] || fail "no durable file to check"
        ;;
    *) fail "MODE must be write or check, not '$MODE'" ;;
esac

#!/bin/sh
# Guest half of test-csi-lifecycle.sh (busybox ash): the CSI node plugin (shoal-csi --mode
# node, node id node1) on a Unix socket, driven with shoal-csi-client, one phase at a time.
#
# The host starts a phase by serving the file PHASE at http://$GUEST_HOST_IP:$CTL_PORT/ (its
# KEY=VAL lines are sourced here: the publish context of ControllerPublishVolume, sizes); the
# guest runs it and prints "$TAG: PHASE done", which the host waits for. Files written through
# the mount are checked by md5 after dropping the page cache (the reads reach the volume).
#
# The publish context's traddr is the node's address on the host (127.0.0.1): the host's
# 127.0.0.1 is $GUEST_HOST_IP in the guest, so that address is translated, nothing else.
set -eu
. /guest/lib.sh
modprobe ext4
H=$GUEST_HOST_IP
SOCK=/run/csi/csi.sock
CLI="/guest/shoal-csi-client --endpoint $SOCK"
calls=0

say() { echo "$TAG: $*"; }
# await PHASE: wait until the host serves PHASE, then source its KEY=VAL lines.
await() {
    _n=0
    rm -f "/tmp/$1.env"
    while ! timeout 10 wget -q -O "/tmp/$1.env" "http://$H:$CTL_PORT/$1" 2>/dev/null; do
        _n=$((_n + 1))
        [ $_n -lt 2400 ] || fail "the host never started phase $1"
        sleep 0.25
    done
    . "/tmp/$1.env"
    step "phase $1"
}
done_() { say "$1 done"; }
# ok ARGS...: one RPC that must succeed (output in /tmp/out).
ok() {
    calls=$((calls + 1))
    $CLI "$@" >/tmp/out 2>&1 || {
        cat /tmp/out
        tail -n 20 /tmp/csi.log
        fail "call failed: $*"
    }
}
# twice ARGS...: the same RPC twice, both must succeed and answer the same (idempotency; the
# lines compared sorted: maps print in any order).
twice() {
    ok "$@"
    sort /tmp/out >/tmp/out1
    ok "$@"
    sort /tmp/out | cmp -s - /tmp/out1 || { cat /tmp/out1 /tmp/out; fail "the second call answered otherwise: $*"; }
}
host_addr() { if [ "$1" = 127.0.0.1 ]; then echo "$H"; else echo "$1"; fi; }
ctrls() { grep -lx "$1" /sys/class/nvme/nvme*/subsysnqn 2>/dev/null | wc -l; }
mounted() { awk -v p="$1" '$2 == p { f = 1 } END { exit !f }' /proc/mounts; }
drop() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}
# write_set NAME COUNT DIR: COUNT files of 512 KiB random data, fsynced; their md5s in
# /tmp/NAME.sums (relative names).
write_set() {
    _i=1
    while [ $_i -le "$2" ]; do
        dd if=/dev/urandom of="$3/$1-$_i" bs=64k count=8 conv=fsync 2>/dev/null ||
            fail "write $3/$1-$_i"
        _i=$((_i + 1))
    done
    (cd "$3" && md5sum "$1"-*) >"/tmp/$1.sums"
}
# check_sets DIR SUMS...: every file listed in the SUMS files has its md5 under DIR (page
# cache dropped first).
check_sets() {
    _d=$1
    shift
    drop
    for _s in "$@"; do
        (cd "$_d" && md5sum -c "$_s" >/tmp/md5.out 2>&1) || {
            grep -v ': OK$' /tmp/md5.out | head
            fail "files of $_s differ under $_d"
        }
    done
    say "$(cat "$@" | wc -l) files under $_d match their checksums"
}
df_kib() { df -k "$1" | awk 'NR == 2 { print $2 }'; }

/guest/shoal-csi --mode node --endpoint "unix://$SOCK" --node-id node1 --zone z1 \
    --state-dir /run/shoal-csi --ctrl-loss-tmo 60 --reconnect-delay 1 --namespace-wait 30 \
    >/tmp/csi.log 2>&1 &
n=0
while [ ! -S $SOCK ]; do
    n=$((n + 1))
    [ $n -lt 100 ] || { cat /tmp/csi.log; fail "the plugin did not start"; }
    sleep 0.1
done
ok probe
ok node-info
nid=$(sed -n 's/^ *node_id: "\(.*\)",$/\1/p' /tmp/out)
[ "$nid" = node1 ] || fail "node info: $(cat /tmp/out)"
say "node-id $nid"

await stage
ADDR=$(host_addr "$TRADDR")
CTX="--ctx nqn=$NQN --ctx traddr=$ADDR --ctx trsvcid=$TRSVCID"
twice stage --volume-id "$VOL" --staging /mnt/s1 $CTX --fs ext4 --vctx fsType=ext4
grep ' /mnt/s1 ' /proc/mounts | grep -q ' ext4 ' || fail "not ext4: $(grep /mnt/s1 /proc/mounts)"
[ "$(ctrls "$NQN")" -eq 1 ] || fail "$(ctrls "$NQN") controllers after two stages"
twice publish --volume-id "$VOL" --staging /mnt/s1 --target /mnt/p1 $CTX --fs ext4
mounted /mnt/p1 || fail "/mnt/p1 not mounted"
write_set a 16 /mnt/p1
check_sets /mnt/p1 /tmp/a.sums
done_ stage

# The host killed a replica node (SIGKILL) just before: the nexus faults that child (after
# its I/O timeout) and goes on with the others.
await degraded
check_sets /mnt/p1 /tmp/a.sums
write_set b 8 /mnt/p1
check_sets /mnt/p1 /tmp/a.sums /tmp/b.sums
ok stats --volume-id "$VOL" --path /mnt/p1
tr -d ' \n' </tmp/out | grep -q 'abnormal:false' || fail "node condition: $(cat /tmp/out)"
done_ degraded

# The control plane replaced the replica and the nexus rebuilt it. CHECKS ("NQN:PORT ...")
# are replicas the host lets this guest read: with the file system frozen, each one's data
# region (after the nexus's label of LABEL_BYTES) must equal the volume's VOL_BYTES.
await healed
check_sets /mnt/p1 /tmp/a.sums /tmp/b.sums
fsfreeze --freeze /mnt/p1 || fail "fsfreeze"
vdev=$(nvme_dev "$NQN") || fail "no device for $NQN"
vsum=$(dd if="$vdev" bs=1M count=$((VOL_BYTES / 1048576)) iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
for c in $CHECKS; do
    rnqn=${c%:*}
    nvme connect -t tcp -a "$H" -s "${c##*:}" -n "$rnqn" >/dev/null || fail "connect $rnqn"
    rdev=$(nvme_wait_dev "$rnqn") || fail "no block device for $rnqn"
    rsum=$(dd if="$rdev" bs="$LABEL_BYTES" skip=1 count=$((VOL_BYTES / LABEL_BYTES)) iflag=direct \
        2>/dev/null | sha256sum | cut -d' ' -f1)
    nvme disconnect -n "$rnqn" >/dev/null || fail "disconnect $rnqn"
    [ "$rsum" = "$vsum" ] || fail "replica $rnqn: sha256 $rsum, the volume $vsum"
    say "replica $rnqn equals the volume"
done
fsfreeze --unfreeze /mnt/p1
write_set c 8 /mnt/p1
check_sets /mnt/p1 /tmp/a.sums /tmp/b.sums /tmp/c.sums
done_ healed

if [ "${WITH_EXPAND:-0}" = 1 ]; then
    # ControllerExpandVolume grew the volume to NEW_BYTES; the file system grows online.
    await expand
    k0=$(df_kib /mnt/p1)
    twice node-expand --volume-id "$VOL" --path /mnt/p1 --bytes "$NEW_BYTES"
    tr -d ' \n' </tmp/out | grep -q "capacity_bytes:$NEW_BYTES" || fail "expand: $(cat /tmp/out)"
    k1=$(df_kib /mnt/p1)
    say "file system $k0 KiB -> $k1 KiB"
    # At least 90% of the added bytes show up in the file system.
    [ $(((k1 - k0) * 1024)) -ge $(((NEW_BYTES - OLD_BYTES) / 10 * 9)) ] ||
        fail "the file system did not grow enough: $k0 -> $k1 KiB for $OLD_BYTES -> $NEW_BYTES bytes"
    # The old volume's size on top of the files there: only the grown file system holds it.
    dd if=/dev/urandom of=/mnt/p1/big bs=1M count=$((OLD_BYTES / 1048576)) conv=fsync 2>/dev/null ||
        fail "write after the expansion"
    (cd /mnt/p1 && md5sum big) >/tmp/big.sums
    check_sets /mnt/p1 /tmp/a.sums /tmp/b.sums /tmp/c.sums /tmp/big.sums
    done_ expand
fi

if [ "${WITH_SNAPSHOT:-0}" = 1 ]; then
    # Quiesce: everything written is on the volume before the host takes the snapshot.
    await quiesce
    drop
    cat /tmp/*.sums >/tmp/snap.sums
    done_ quiesce

    # After CreateSnapshot: change the source (these must not show in the clone).
    await after-snapshot
    rm /mnt/p1/a-1
    dd if=/dev/urandom of=/mnt/p1/b-1 bs=64k count=8 conv=fsync 2>/dev/null
    write_set e 4 /mnt/p1
    drop
    done_ after-snapshot

    # The volume made from the snapshot, published for this node.
    await clone
    ADDR2=$(host_addr "$TRADDR2")
    CTX2="--ctx nqn=$NQN2 --ctx traddr=$ADDR2 --ctx trsvcid=$TRSVCID2"
    twice stage --volume-id "$VOL2" --staging /mnt/s2 $CTX2 --fs ext4 --vctx fsType=ext4
    twice publish --volume-id "$VOL2" --staging /mnt/s2 --target /mnt/p2 $CTX2 --fs ext4
    check_sets /mnt/p2 /tmp/snap.sums
    [ ! -e /mnt/p2/e-1 ] || fail "a file written after the snapshot is in its clone"
    [ "$(ls /mnt/p2 | grep -v lost+found | wc -l)" -eq "$(wc -l </tmp/snap.sums)" ] ||
        fail "the clone holds other files: $(ls /mnt/p2)"
    # The clone is a volume of its own: writing to it leaves the source alone.
    write_set f 2 /mnt/p2
    [ ! -e /mnt/p1/f-1 ] || fail "a write to the clone shows in the source"
    done_ clone
fi

await teardown
twice unpublish --volume-id "$VOL" --target /mnt/p1
twice unstage --volume-id "$VOL" --staging /mnt/s1
if [ -n "${VOL2:-}" ]; then
    twice unpublish --volume-id "$VOL2" --target /mnt/p2
    twice unstage --volume-id "$VOL2" --staging /mnt/s2
fi
if grep -q ' /mnt/' /proc/mounts; then fail "mounts left: $(grep ' /mnt/' /proc/mounts)"; fi
[ -z "$(cat /sys/class/nvme/nvme*/subsysnqn 2>/dev/null)" ] || fail "NVMe controllers left"
[ -z "$(ls /run/shoal-csi 2>/dev/null)" ] || fail "records left: $(ls /run/shoal-csi)"
say "CSI node calls: $calls"
done_ teardown

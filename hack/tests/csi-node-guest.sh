#!/bin/sh
# Guest half of test-csi-node.sh (busybox ash): the CSI node plugin driven through its socket.
set -eu
. /guest/lib.sh
modprobe ext4
modprobe xfs

SOCK=/run/csi/csi.sock
CLI="/guest/shoal-csi-client --endpoint $SOCK"
H=$GUEST_HOST_IP
calls=0

/guest/shoal-csi --mode node --endpoint "unix://$SOCK" --node-id guest-1 --zone zone-a \
    --state-dir /run/shoal-csi --ctrl-loss-tmo 30 --reconnect-delay 1 --namespace-wait 20 \
    >/tmp/csi.log 2>&1 &
n=0
while [ ! -S $SOCK ]; do
    n=$((n + 1))
    [ $n -lt 100 ] || { cat /tmp/csi.log; fail "the plugin did not start"; }
    sleep 0.1
done

# ok ARGS...: one RPC that must succeed (output in /tmp/out).
ok() {
    calls=$((calls + 1))
    $CLI "$@" >/tmp/out 2>&1 || {
        cat /tmp/out
        tail -n 20 /tmp/csi.log
        fail "call failed: $*"
    }
}
# twice ARGS...: the same RPC twice, both must succeed (CSI: every call is idempotent).
twice() { ok "$@"; ok "$@"; }
# bad CODE ARGS...: an RPC that must fail with exactly CODE.
bad() {
    _code=$1
    shift
    ok --expect "$_code" "$@"
    echo "  $(cat /tmp/out)"
}
ctx() { echo "--ctx nqn=$PFX-$1 --ctx traddr=$H --ctx trsvcid=$PORT"; }
ctrls() { grep -lx "$1" /sys/class/nvme/nvme*/subsysnqn 2>/dev/null | wc -l; }
mounted() { awk -v p="$1" '$2 == p { f = 1 } END { exit !f }' /proc/mounts; }
trigger() { timeout 20 wget -q -O - "http://$H:$TRIGGER_PORT/rpc/$1" || fail "trigger $1"; }

V1=0b5c7e1e-6b1a-4a8e-9d59-2f5f3b0f6f01
V2=0b5c7e1e-6b1a-4a8e-9d59-2f5f3b0f6f02
V3=0b5c7e1e-6b1a-4a8e-9d59-2f5f3b0f6f03
V4=0b5c7e1e-6b1a-4a8e-9d59-2f5f3b0f6f04

step "identity and node info"
ok plugin-info
grep -q '"io.shoal.csi"' /tmp/out || fail "plugin name: $(cat /tmp/out)"
ok probe
tr -d ' \n' </tmp/out | grep -q 'ready:Some(true' || fail "probe: $(cat /tmp/out)"
ok node-info
grep -q '"guest-1"' /tmp/out && grep -q '"zone-a"' /tmp/out || fail "node info: $(cat /tmp/out)"
ok node-caps
grep -q StageUnstageVolume /tmp/out || fail "node caps: $(cat /tmp/out)"

step "bad calls"
bad InvalidArgument stage --staging /mnt/s1 $(ctx ext4)
bad InvalidArgument stage --volume-id $V1 $(ctx ext4)
bad InvalidArgument stage --volume-id $V1 --staging mnt/relative $(ctx ext4)
bad InvalidArgument stage --volume-id $V1 --staging /mnt/s1
bad InvalidArgument stage --volume-id $V1 --staging /mnt/s1 $(ctx ext4) --no-cap
bad InvalidArgument stage --volume-id $V1 --staging /mnt/s1 $(ctx ext4) --mode MULTI_NODE_MULTI_WRITER
bad InvalidArgument stage --volume-id $V1 --staging /mnt/s1 $(ctx ext4) --fs btrfs
bad InvalidArgument stage --volume-id ../../etc --staging /mnt/s1 $(ctx ext4)
bad InvalidArgument unstage --volume-id $V1
bad InvalidArgument publish --volume-id $V1 --staging /mnt/s1
bad FailedPrecondition publish --volume-id $V1 --staging /mnt/s1 --target /mnt/p1
bad NotFound stats --volume-id $V1 --path /mnt/nothing-here
bad NotFound node-expand --volume-id $V1 --path /mnt/nothing-here
[ "$(ctrls "$PFX-ext4")" -eq 0 ] || fail "a bad call connected"

step "ext4: stage twice (connect, mkfs on the empty namespace, mount)"
twice stage --volume-id $V1 --staging /mnt/s1 $(ctx ext4) --fs ext4
mounted /mnt/s1 || fail "staging path not mounted"
grep ' /mnt/s1 ' /proc/mounts | grep -q ' ext4 ' || fail "not ext4: $(grep /mnt/s1 /proc/mounts)"
[ "$(ctrls "$PFX-ext4")" -eq 1 ] || fail "$(ctrls "$PFX-ext4") controllers after two stages"
cat /sys/class/nvme/nvme*/ctrl_loss_tmo >/dev/null 2>&1 || true

step "ext4: publish read-write and read-only, twice each"
twice publish --volume-id $V1 --staging /mnt/s1 --target /mnt/p1 $(ctx ext4)
twice publish --volume-id $V1 --staging /mnt/s1 --target /mnt/p1-ro $(ctx ext4) --readonly
bad AlreadyExists publish --volume-id $V1 --staging /mnt/s1 --target /mnt/p1 $(ctx ext4) --readonly
dd if=/dev/urandom of=/mnt/p1/data bs=64k count=64 2>/dev/null
mkdir -p /mnt/p1/dir && echo hello >/mnt/p1/dir/file
sync
sum1=$(md5sum /mnt/p1/data | cut -d' ' -f1)
[ "$(md5sum /mnt/p1-ro/data | cut -d' ' -f1)" = "$sum1" ] || fail "read-only mount shows other data"
if touch /mnt/p1-ro/nope 2>/dev/null; then fail "wrote through a read-only publish"; fi

step "ext4: stats and expand"
ok stats --volume-id $V1 --path /mnt/p1
grep -q Inodes /tmp/out && grep -q Bytes /tmp/out || fail "stats: $(cat /tmp/out)"
tr -d ' \n' </tmp/out | grep -q 'abnormal:false' || fail "condition: $(cat /tmp/out)"
ok node-expand --volume-id $V1 --path /mnt/p1 --bytes 1
tr -d ' \n' </tmp/out | grep -q 'capacity_bytes:268435456' || fail "expand: $(cat /tmp/out)"
bad Unavailable node-expand --volume-id $V1 --path /mnt/p1 --bytes 999999999999

step "ext4: unpublish twice, unstage twice (unmount, disconnect)"
twice unpublish --volume-id $V1 --target /mnt/p1
twice unpublish --volume-id $V1 --target /mnt/p1-ro
[ ! -e /mnt/p1 ] && [ ! -e /mnt/p1-ro ] || fail "targets left behind"
twice unstage --volume-id $V1 --staging /mnt/s1
mounted /mnt/s1 && fail "staging path still mounted"
[ "$(ctrls "$PFX-ext4")" -eq 0 ] || fail "still connected after unstage"

step "ext4: stage again: the files are there (no second mkfs)"
twice stage --volume-id $V1 --staging /mnt/s1 $(ctx ext4)
twice publish --volume-id $V1 --staging /mnt/s1 --target /mnt/p1 $(ctx ext4)
[ "$(md5sum /mnt/p1/data | cut -d' ' -f1)" = "$sum1" ] || fail "data changed across unstage/stage"
[ "$(cat /mnt/p1/dir/file)" = hello ] || fail "file lost"
twice unpublish --volume-id $V1 --target /mnt/p1
twice unstage --volume-id $V1 --staging /mnt/s1

step "xfs: stage, publish, write, and a second stage as ext4 refused"
twice stage --volume-id $V2 --staging /mnt/s2 $(ctx xfs) --vctx fsType=xfs
grep ' /mnt/s2 ' /proc/mounts | grep -q ' xfs ' || fail "not xfs: $(grep /mnt/s2 /proc/mounts)"
twice publish --volume-id $V2 --staging /mnt/s2 --target /mnt/p2 $(ctx xfs)
dd if=/dev/urandom of=/mnt/p2/data bs=64k count=32 2>/dev/null
sync
ok stats --volume-id $V2 --path /mnt/p2
ok node-expand --volume-id $V2 --path /mnt/p2 --bytes 1
twice unpublish --volume-id $V2 --target /mnt/p2
twice unstage --volume-id $V2 --staging /mnt/s2
bad FailedPrecondition stage --volume-id $V2 --staging /mnt/s2 $(ctx xfs) --fs ext4
ok unstage --volume-id $V2 --staging /mnt/s2
[ "$(ctrls "$PFX-xfs")" -eq 0 ] || fail "xfs still connected"

step "block: an NQN already connected by hand, stage reuses it"
nvme connect -t tcp -a "$H" -s "$PORT" -n "$PFX-blk" >/dev/null
twice stage --volume-id $V3 --staging /mnt/s3 $(ctx blk) --block
[ "$(ctrls "$PFX-blk")" -eq 1 ] || fail "$(ctrls "$PFX-blk") controllers: stage connected again"
twice publish --volume-id $V3 --staging /mnt/s3 --target /mnt/b3/dev $(ctx blk) --block
twice publish --volume-id $V3 --staging /mnt/s3 --target /mnt/b3/ro $(ctx blk) --block --readonly
[ -b /mnt/b3/dev ] || fail "no device node at the target"
dd if=/dev/urandom of=/tmp/blk bs=64k count=16 2>/dev/null
dd if=/tmp/blk of=/mnt/b3/dev bs=64k conv=fsync 2>/dev/null
dev=$(nvme_dev "$PFX-blk")
[ "$(dd if="$dev" bs=64k count=16 iflag=direct 2>/dev/null | md5sum)" = "$(md5sum </tmp/blk)" ] ||
    fail "the namespace does not hold what was written through the published node"
# A read-only bind of a device node is recorded read-only, but the kernel lets a device node
# on a read-only mount be opened for writing (nothing of the mount's file system changes):
# for raw block, the container runtime's device permissions (kubelet asks "r") enforce it.
grep ' /mnt/b3/ro ' /proc/mounts | grep -q ' ro[, ]' || fail "block publish not read-only: $(grep /mnt/b3/ro /proc/mounts)"
ok stats --volume-id $V3 --path /mnt/b3/dev
tr -d ' \n' </tmp/out | grep -q 'total:67108864' || fail "block stats: $(cat /tmp/out)"
twice unpublish --volume-id $V3 --target /mnt/b3/dev
twice unpublish --volume-id $V3 --target /mnt/b3/ro
twice unstage --volume-id $V3 --staging /mnt/s3
[ "$(ctrls "$PFX-blk")" -eq 0 ] || fail "block still connected"

step "a namespace that shows up late: stage waits for it"
( $CLI stage --volume-id $V4 --staging /mnt/s4 $(ctx late) >/tmp/late.out 2>&1; echo $? >/tmp/late.rc ) &
sleep 3
[ ! -e /tmp/late.rc ] || fail "stage returned before the namespace existed: $(cat /tmp/late.out)"
trigger "nvmf_subsystem_add_ns?nqn=$PFX-late&namespace.bdev_name=Late" >/dev/null
n=0
while [ ! -e /tmp/late.rc ]; do
    n=$((n + 1))
    [ $n -lt 300 ] || fail "stage did not return"
    sleep 0.1
done
[ "$(cat /tmp/late.rc)" = 0 ] || fail "late stage: $(cat /tmp/late.out)"
calls=$((calls + 1))
mounted /mnt/s4 || fail "late namespace not mounted"
twice unstage --volume-id $V4 --staging /mnt/s4

step "a controller that is reconnecting: its target frozen, then thawed"
V5=0b5c7e1e-6b1a-4a8e-9d59-2f5f3b0f6f05
RCTX="--ctx nqn=$PFX-recon --ctx traddr=$H --ctx trsvcid=$PORT2"
twice stage --volume-id $V5 --staging /mnt/s5 $RCTX
twice publish --volume-id $V5 --staging /mnt/s5 --target /mnt/p5 $RCTX
dd if=/dev/urandom of=/mnt/p5/data bs=64k count=16 conv=fsync 2>/dev/null
sum5=$(md5sum /mnt/p5/data | cut -d' ' -f1)
ctrl=$(grep -lx "$PFX-recon" /sys/class/nvme/nvme*/subsysnqn | head -n1)
ctrl=${ctrl%/subsysnqn}
signal() { timeout 20 wget -q -O - "http://$H:$SIGNAL_PORT/$1" >/dev/null || fail "signal $1"; }
signal stop
n=0
while [ "$(cat $ctrl/state)" = live ]; do
    n=$((n + 1))
    [ $n -lt 600 ] || { signal cont; fail "the controller stayed live with its target frozen"; }
    sleep 0.1
done
echo "  controller ${ctrl##*/} is $(cat $ctrl/state) after $((n / 10)) s"
ok stats --volume-id $V5 --path /mnt/p5
tr -d ' \n' </tmp/out | grep -q 'abnormal:true' || { signal cont; fail "condition while reconnecting: $(cat /tmp/out)"; }
twice stage --volume-id $V5 --staging /mnt/s5 $RCTX
twice publish --volume-id $V5 --staging /mnt/s5 --target /mnt/p5 $RCTX
[ "$(ctrls "$PFX-recon")" -eq 1 ] || { signal cont; fail "stage made a second controller while one reconnects"; }
signal cont
n=0
while [ "$(cat $ctrl/state)" != live ]; do
    n=$((n + 1))
    [ $n -lt 600 ] || fail "the controller did not come back: $(cat $ctrl/state)"
    sleep 0.1
done
echo "  live again after $((n / 10)) s"
ok stats --volume-id $V5 --path /mnt/p5
tr -d ' \n' </tmp/out | grep -q 'abnormal:false' || fail "condition after reconnecting: $(cat /tmp/out)"
echo 3 >/proc/sys/vm/drop_caches
[ "$(md5sum /mnt/p5/data | cut -d' ' -f1)" = "$sum5" ] || fail "data changed across the reconnect"
twice unpublish --volume-id $V5 --target /mnt/p5
twice unstage --volume-id $V5 --staging /mnt/s5
[ "$(ctrls "$PFX-recon")" -eq 0 ] || fail "recon still connected"

[ -z "$(ls /run/shoal-csi 2>/dev/null)" ] || fail "records left: $(ls /run/shoal-csi)"
if grep -q ' /mnt/' /proc/mounts; then fail "mounts left: $(grep ' /mnt/' /proc/mounts)"; fi
[ -z "$(cat /sys/class/nvme/nvme*/subsysnqn 2>/dev/null)" ] || fail "controllers left"

echo "CSI node calls: $calls, all answered as expected"

#!/bin/sh
# Guest half of hack/tests/test-lvol-resize.sh (busybox ash): a 32 MiB logical volume grown to
# 64 MiB while this host is connected must show its new size without a reconnect.
set -eu
. /guest/lib.sh

H=$GUEST_HOST_IP
MIB=1048576

# trigger METHOD?QUERY: call shoald's JSON-RPC through hack/tests/rpc-trigger.py on the host;
# prints the answer (the caller checks it).
trigger() {
    timeout 20 wget -q -O - "http://$H:$TRIGGER_PORT/rpc/$1" || fail "trigger $1"
}

step "nvme connect $NQN on port $PORT"
nvme connect -t tcp -a "$H" -s "$PORT" -n "$NQN" || fail "connect"
DEV=$(nvme_wait_dev "$NQN") || fail "no block device"
SYS=/sys/block/${DEV#/dev/}/size
step "namespace 1 is $DEV"
[ "$(blockdev --getsize64 "$DEV")" -eq $((32 * MIB)) ] || fail "not 32 MiB: $(blockdev --getsize64 "$DEV")"

step "fill the 32 MiB with random data"
dd if=/dev/urandom of=/tmp/a bs=1M count=32 2>/dev/null
dd if=/tmp/a of="$DEV" bs=1M oflag=direct 2>/dev/null || fail "write the first 32 MiB"

step "bdev_lvol_resize to 64 MiB while connected"
out=$(trigger "bdev_lvol_resize?name=lvs/vol&size_in_mib=64")
echo "$out"
echo "$out" | grep -q '"result": *true' || fail "resize: $out"

# The host learns the size from the Namespace Attribute Changed notice: no reconnect, no
# rescan asked for here.
n=0
while [ "$(cat "$SYS")" -ne $((64 * MIB / 512)) ]; do
    n=$((n + 1))
    [ "$n" -le 300 ] || fail "the kernel still shows $(cat "$SYS") sectors after 30 s"
    sleep 0.1
done
step "the kernel shows $(cat "$SYS") sectors after $n polls"
[ "$(blockdev --getsize64 "$DEV")" -eq $((64 * MIB)) ] || fail "blockdev: $(blockdev --getsize64 "$DEV")"
dmesg | grep -i "capacity change" | tail -n 2 || true

step "write past the old end, read everything back"
dd if=/dev/urandom of=/tmp/b bs=1M count=32 2>/dev/null
dd if=/tmp/b of="$DEV" bs=1M seek=32 oflag=direct 2>/dev/null || fail "write past the old end"
cat /tmp/a /tmp/b | md5sum >/tmp/want
dd if="$DEV" bs=1M count=64 iflag=direct 2>/dev/null | md5sum >/tmp/got
cmp -s /tmp/want /tmp/got || fail "read-back mismatch: $(cat /tmp/got) != $(cat /tmp/want)"

step "a shrink of the exported volume is refused (SPDK: -16 for an open bdev)"
out=$(trigger "bdev_lvol_resize?name=lvs/vol&size_in_mib=16")
echo "$out"
echo "$out" | grep -q '"code": *-16' || fail "shrink not refused with -16: $out"
sleep 1
[ "$(blockdev --getsize64 "$DEV")" -eq $((64 * MIB)) ] || fail "the size changed: $(blockdev --getsize64 "$DEV")"
dd if="$DEV" bs=1M count=64 iflag=direct 2>/dev/null | md5sum >/tmp/got
cmp -s /tmp/want /tmp/got || fail "read-back mismatch after the refused shrink"

step "disconnect"
nvme disconnect -n "$NQN" || fail "disconnect"
step "PASS"

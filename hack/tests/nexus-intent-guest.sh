#!/bin/sh
# Guest half of test-nexus-intent.sh (busybox ash): the Linux host writes a few regions of a
# 1 GiB nexus, keeps writing while the host script kills the nexus node, and checks after the
# node is back that what it made durable is there.
#
# Env (from the host script, see lib-nexus.sh start_guest): NX_NQN, NX_PORT, NX_SIZE, CTL_PORT,
# TAG, SUM_MIBS.
#
# 1. connect with a controller-loss timeout of 2 s: writes in flight when the nexus node dies
#    fail after 2 s instead of being sent again after the reconnect (a host that resends them
#    would rewrite every block whose replicas disagree, and hide a resync that missed them);
# 2. "durable" phase: 8 jobs, each writing every 4 KiB block of one 1 MiB region (at 3 MiB +
#    k * 127 MiB) in random order with crc32c verify headers, then fsync: "TAG: written";
# 3. "load" phase, in the background: 2 jobs of random 4 KiB writes at depth 16 over 1 MiB
#    regions at 70 MiB and 700 MiB: "TAG: load running". The host script kills the nexus node
#    now; the load fails with I/O errors (expected) once the controller is lost;
# 4. once GET /reconnect answers (the nexus is back): connect again, verify the durable regions
#    (fio verify_only: every block as written in phase 2), checksum the 1 MiB pieces at
#    SUM_MIBS (the regions written: "TAG: device sha256 HASH", compared by the host with the
#    same pieces of each replica), disconnect.
set -eu
. /guest/lib.sh

H=$GUEST_HOST_IP
TAG=${TAG:-nexus-intent}

asked() { timeout 10 wget -q -O /dev/null "http://$H:$CTL_PORT/$1" 2>/dev/null; }

step "nvme connect $NX_NQN at $H:$NX_PORT"
nvme connect -t tcp -a "$H" -s "$NX_PORT" -n "$NX_NQN" --reconnect-delay=1 --ctrl-loss-tmo=2 ||
    fail "connect"
DEV=$(nvme_wait_dev "$NX_NQN") || fail "no block device for $NX_NQN"
blocks=$(cat "/sys/block/${DEV#/dev/}/size")
[ "$((blocks * 512))" -eq "$NX_SIZE" ] || fail "$DEV has $((blocks * 512)) bytes, not $NX_SIZE"
step "nexus is $DEV ($NX_SIZE bytes)"

# The durable regions: the same job description writes them and verifies them.
durable() {
    fio --name=durable --filename="$DEV" --ioengine=io_uring --direct=1 --rw=randwrite --bs=4k \
        --iodepth=8 --numjobs=8 --size=1m --offset=3m --offset_increment=127m --randseed=4242 \
        --verify=crc32c --verify_fatal=1 --group_reporting "$@" >/tmp/durable.out 2>&1 || {
        cat /tmp/durable.out
        return 1
    }
}
durable --do_verify=0 --end_fsync=1 || fail "durable writes"
echo "$TAG: written"

fio --name=load --filename="$DEV" --ioengine=io_uring --direct=1 --rw=randwrite --bs=4k \
    --iodepth=16 --numjobs=2 --size=1m --offset=70m --offset_increment=630m --time_based \
    --runtime=600 --group_reporting >/tmp/load.out 2>&1 &
load=$!
sleep 1
kill -0 "$load" || { cat /tmp/load.out; fail "the load did not start"; }
echo "$TAG: load running"

n=0
until asked reconnect; do
    n=$((n + 1))
    [ "$n" -le 300 ] || fail "the host did not say reconnect within 300 s"
    sleep 1
done
lrc=0
kill -INT "$load" 2>/dev/null || true
wait "$load" || lrc=$?
echo "$TAG: load ended (fio status $lrc: $(grep -o 'err=[ 0-9]*' /tmp/load.out | head -n1))"
# The controller is gone (its loss timeout passed while the node was down): connect again.
nvme disconnect -n "$NX_NQN" >/dev/null 2>&1 || true
step "nvme connect again"
nvme connect -t tcp -a "$H" -s "$NX_PORT" -n "$NX_NQN" || fail "connect after the restart"
DEV=$(nvme_wait_dev "$NX_NQN") || fail "no block device for $NX_NQN after the restart"

step "verify the durable regions (verify_only)"
durable --verify_only || fail "the durable regions do not read back as written"
echo "$TAG: durable regions verified"
step "checksum of the written regions ($SUM_MIBS MiB)"
sum=$(for m in $SUM_MIBS; do dd if="$DEV" bs=1M skip="$m" count=1 iflag=direct 2>/dev/null; done |
    sha256sum | cut -d' ' -f1)
echo "$TAG: device sha256 $sum"
out=$(nvme disconnect -n "$NX_NQN")
echo "$out"
echo "$out" | grep -q "disconnected 1 controller" || fail "disconnect: $out"
step "$TAG: guest done"

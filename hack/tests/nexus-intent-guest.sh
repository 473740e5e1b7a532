#!/bin/sh
# Guest half of test-nexus-intent.sh (busybox ash): the Linux host writes a few regions of a
# 1 GiB nexus, keeps writing while the host script kills the nexus node, rides out the
# reconnect, and checks afterwards that what it made durable is there.
#
# Env (from the host script, see lib-nexus.sh start_guest): NX_NQN, NX_PORT, NX_SIZE, CTL_PORT,
# TAG.
#
# 1. connect (reconnect every second for up to 120 s: the nexus node comes back);
# 2. "durable" phase: 8 jobs, each writing every 4 KiB block of one 1 MiB region (at 3 MiB +
#    k * 127 MiB) in random order with crc32c verify headers, then fsync: "TAG: written";
# 3. "load" phase, in the background: 2 jobs of random 4 KiB writes at depth 16 over 1 MiB
#    regions at 70 MiB and 700 MiB, until stopped: "TAG: load running". The host script kills
#    the nexus node now (writes in flight), restarts it and creates the nexus again from the
#    same replicas; the Linux host reconnects and the load goes on;
# 4. once GET /stop answers: the load is stopped (it must not have failed), the durable
#    regions are verified (fio verify_only: every block as written in phase 2), the whole device
#    is checksummed ("TAG: device sha256 HASH") and the controller disconnected.
set -eu
. /guest/lib.sh

H=$GUEST_HOST_IP
TAG=${TAG:-nexus-intent}

stop_requested() { timeout 10 wget -q -O /dev/null "http://$H:$CTL_PORT/stop" 2>/dev/null; }

step "nvme connect $NX_NQN at $H:$NX_PORT"
nvme connect -t tcp -a "$H" -s "$NX_PORT" -n "$NX_NQN" --reconnect-delay=1 --ctrl-loss-tmo=120 ||
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
until stop_requested; do
    n=$((n + 1))
    [ "$n" -le 600 ] || fail "the host did not say stop within 600 s"
    kill -0 "$load" || { cat /tmp/load.out; fail "the load ended before the host said stop"; }
    sleep 1
done
kill -INT "$load"
lrc=0
wait "$load" || lrc=$?
grep -q "err= 0" /tmp/load.out || { cat /tmp/load.out; fail "the load saw I/O errors (fio $lrc)"; }
echo "$TAG: load ok ($(grep -o 'IOPS=[^,]*' /tmp/load.out | head -n1))"

step "verify the durable regions (verify_only)"
durable --verify_only || fail "the durable regions do not read back as written"
echo "$TAG: durable regions verified"
step "checksum of the whole device"
sum=$(dd if="$DEV" bs=1M iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
echo "$TAG: device sha256 $sum"
out=$(nvme disconnect -n "$NX_NQN")
echo "$out"
echo "$out" | grep -q "disconnected 1 controller" || fail "disconnect: $out"
step "$TAG: guest done"

#!/bin/sh
# Guest half of hack/tests/test-nexus-failover.sh (busybox ash): the Linux host writes to a
# three-way nexus while the host script kills, freezes and brings back its replica nodes.
#
# Env (from the host script): NX_NQN, NX_PORT (the nexus's subsystem on $GUEST_HOST_IP),
# CTL_PORT (an HTTP server on the host serving its control directory), NX_SIZE (bytes).
#
# 1. connect; check the namespace size;
# 2. fio rounds until the host says stop (GET /stop answers): round N writes every 4 KiB block
#    of window (N-1) mod 8 of the device (an eighth), in random order, with 2 jobs (each on
#    half of the window; io_uring and libaio alternately) at iodepth 16, a new random seed per
#    round (new data every time), crc32c verify interleaved (verify_backlog). The windows keep
#    part of the device unwritten while a replica is away, so its return is a partial rebuild.
#    Any fio error or verify mismatch fails the test. Progress lines "nexus-failover: round N
#    ok" are what the host script follows;
# 3. once stopped: the last round is verified again (verify_only), the whole device is
#    checksummed ("nexus-failover: device sha256 HASH", compared by the host with each
#    replica's data region), then disconnect.
set -eu
. /guest/lib.sh

H=$GUEST_HOST_IP
MAX_ROUNDS=${MAX_ROUNDS:-200}

stop_requested() { timeout 10 wget -q -O /dev/null "http://$H:$CTL_PORT/stop" 2>/dev/null; }

step "nvme connect $NX_NQN at $H:$NX_PORT"
nvme connect -t tcp -a "$H" -s "$NX_PORT" -n "$NX_NQN" || fail "connect"
DEV=$(nvme_wait_dev "$NX_NQN") || fail "no block device for $NX_NQN"
blocks=$(cat "/sys/block/${DEV#/dev/}/size")
[ "$((blocks * 512))" -eq "$NX_SIZE" ] || fail "$DEV has $((blocks * 512)) bytes, not $NX_SIZE"
step "nexus is $DEV ($NX_SIZE bytes)"

window=$((NX_SIZE / 8))
half=$((window / 2))
# round N WHAT [FIO-OPTION...]: one fio run with seed N; WHAT names it in the progress line.
round() {
    _n=$1 _what=$2
    shift 2
    if [ $((_n % 2)) -eq 0 ]; then _eng=libaio; else _eng=io_uring; fi
    fio --name="nx-round$_n" --filename="$DEV" --ioengine="$_eng" --direct=1 \
        --rw=randwrite --bs=4k --iodepth=16 --numjobs=2 --size="$half" \
        --offset=$(((_n - 1) % 8 * window)) --offset_increment="$half" --randseed="$_n" \
        --verify=crc32c --verify_backlog=256 --do_verify=1 --verify_fatal=1 \
        --group_reporting --output-format=terse --terse-version=3 "$@" >/tmp/fio.terse 2>&1 || {
        cat /tmp/fio.terse
        return 1
    }
    # terse v3 fields: 5 error, 6 read KiB (verify), 47 written KiB.
    awk -F';' -v n="$_n" -v w="$_what" -v e="$_eng" 'NF > 100 {
            seen = 1
            if ($5 != 0) bad = 1
            printf "nexus-failover: %s %s %s (%s: err=%s write_kib=%s verify_read_kib=%s)\n",
                w, n, ($5 == 0 ? "ok" : "FAILED"), e, $5, $47, $6
        }
        END { exit (bad || !seen) }' /tmp/fio.terse || {
        cat /tmp/fio.terse
        return 1
    }
}

step "nexus-failover: fio running"
n=0
while :; do
    n=$((n + 1))
    [ "$n" -le "$MAX_ROUNDS" ] || fail "the host did not say stop after $MAX_ROUNDS rounds"
    round "$n" round || fail "fio round $n"
    stop_requested && break
done
step "nexus-failover: stopped after $n rounds"

step "re-verify round $n (verify_only)"
round "$n" verify_only --verify_only || fail "verify_only of round $n"
step "checksum of the whole device"
sum=$(dd if="$DEV" bs=1M iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
echo "nexus-failover: device sha256 $sum"
out=$(nvme disconnect -n "$NX_NQN")
echo "$out"
echo "$out" | grep -q "disconnected 1 controller" || fail "disconnect: $out"
step "nexus-failover: guest done"

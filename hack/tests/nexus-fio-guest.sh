#!/bin/sh
# Guest half of the nexus system tests (hack/tests/test-nexus-*.sh, lib-nexus.sh; busybox
# ash): the Linux host writes to a three-way nexus while the host script kills, freezes and
# brings back its replica nodes.
#
# Env (from the host script): NX_NQN, NX_PORT (the nexus's subsystem on $GUEST_HOST_IP),
# CTL_PORT (an HTTP server on the host serving its control directory), NX_SIZE (bytes), TAG
# (the test's name, which starts every progress line), CONNECT_OPTS (more `nvme connect`
# options, e.g. --ctrl-loss-tmo), MODE (verify, the default, or overlap),
# and for MODE=overlap: REGION (bytes written, from offset 0), ROUND_SECS.
#
# 1. connect; check the namespace size;
# 2. fio rounds until the host says stop (GET /stop answers). MODE=verify: round N writes every
#    4 KiB block of window (N-1) mod 8 of the device (an eighth), in random order, with 2 jobs
#    (each on half of the window; io_uring and libaio alternately) at iodepth 16, a new random
#    seed per round (new data every time), crc32c verify interleaved (verify_backlog). The
#    windows keep part of the device unwritten while a replica is away, so its return is a
#    partial rebuild. Any fio error or verify mismatch fails the test. MODE=overlap: round N
#    writes ROUND_SECS seconds of random 4-64 KiB writes over the first REGION bytes with 2
#    jobs at iodepth 16 each, so that writes to the same blocks are often in flight together
#    (no verify: with overlapping writes in flight, what a block holds is the choice of the
#    target; the host script compares the replicas instead). Progress lines "TAG: round N ok"
#    are what the host script follows;
# 3. once stopped: MODE=verify verifies the last round again (verify_only); the whole device is
#    checksummed ("TAG: device sha256 HASH", compared by the host with each replica's data
#    region), then disconnect ("TAG: disconnected");
# 4. READBACK=1 (the replicas are logical volumes, whose files hold a pool's metadata): wait
#    for GET /readback, lines "N PORT NQN": the host has exported replica N's volume as NQN on
#    PORT; read each one's data region (after the nexus's 1 MiB label region, NX_SIZE bytes)
#    and print "TAG: replica N sha256 HASH" and "TAG: replica N window W sha256 HASH" for each
#    eighth W of it.
set -eu
. /guest/lib.sh

H=$GUEST_HOST_IP
MAX_ROUNDS=${MAX_ROUNDS:-200}
TAG=${TAG:-nexus-failover}
MODE=${MODE:-verify}

stop_requested() { timeout 10 wget -q -O /dev/null "http://$H:$CTL_PORT/stop" 2>/dev/null; }

step "nvme connect $NX_NQN at $H:$NX_PORT"
# shellcheck disable=SC2086 # CONNECT_OPTS is split into options on purpose
nvme connect -t tcp -a "$H" -s "$NX_PORT" -n "$NX_NQN" ${CONNECT_OPTS:-} || fail "connect"
DEV=$(nvme_wait_dev "$NX_NQN") || fail "no block device for $NX_NQN"
blocks=$(cat "/sys/block/${DEV#/dev/}/size")
[ "$((blocks * 512))" -eq "$NX_SIZE" ] || fail "$DEV has $((blocks * 512)) bytes, not $NX_SIZE"
step "nexus is $DEV ($NX_SIZE bytes)"

window=$((NX_SIZE / 8))
half=$((window / 2))
# fio_args N: what a round writes in this MODE.
fio_args() {
    if [ "$MODE" = overlap ]; then
        echo "--rw=randwrite --bsrange=4k-64k --iodepth=16 --numjobs=2 --size=$REGION" \
            "--offset=0 --time_based --runtime=$ROUND_SECS --randseed=$1"
    else
        echo "--rw=randwrite --bs=4k --iodepth=16 --numjobs=2 --size=$half" \
            "--offset=$((($1 - 1) % 8 * window)) --offset_increment=$half --randseed=$1" \
            "--verify=crc32c --verify_backlog=256 --do_verify=1 --verify_fatal=1"
    fi
}

# round N WHAT [FIO-OPTION...]: one fio run with seed N; WHAT names it in the progress line.
round() {
    _n=$1 _what=$2
    shift 2
    if [ $((_n % 2)) -eq 0 ]; then _eng=libaio; else _eng=io_uring; fi
    # shellcheck disable=SC2046 # fio_args is split into options on purpose
    fio --name="nx-round$_n" --filename="$DEV" --ioengine="$_eng" --direct=1 $(fio_args "$_n") \
        --group_reporting --output-format=terse --terse-version=3 "$@" >/tmp/fio.terse 2>&1 || {
        cat /tmp/fio.terse
        return 1
    }
    # terse v3 fields: 5 error, 6 read KiB (verify), 47 written KiB.
    awk -F';' -v n="$_n" -v w="$_what" -v e="$_eng" -v tag="$TAG" 'NF > 100 {
            seen = 1
            if ($5 != 0) bad = 1
            printf "%s: %s %s %s (%s: err=%s write_kib=%s verify_read_kib=%s)\n",
                tag, w, n, ($5 == 0 ? "ok" : "FAILED"), e, $5, $47, $6
        }
        END { exit (bad || !seen) }' /tmp/fio.terse || {
        cat /tmp/fio.terse
        return 1
    }
}

step "$TAG: fio running ($MODE)"
n=0
while :; do
    n=$((n + 1))
    [ "$n" -le "$MAX_ROUNDS" ] || fail "the host did not say stop after $MAX_ROUNDS rounds"
    round "$n" round || fail "fio round $n"
    # The device's size now (512-byte sectors): a growth shows here without a reconnect.
    echo "$TAG: size $(cat "/sys/block/${DEV#/dev/}/size")"
    stop_requested && break
done
step "$TAG: stopped after $n rounds"

if [ "$MODE" = verify ]; then
    step "re-verify round $n (verify_only)"
    round "$n" verify_only --verify_only || fail "verify_only of round $n"
fi
step "checksum of the whole device"
sum=$(dd if="$DEV" bs=1M iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
echo "$TAG: device sha256 $sum"
out=$(nvme disconnect -n "$NX_NQN")
echo "$out"
echo "$out" | grep -q "disconnected 1 controller" || fail "disconnect: $out"
echo "$TAG: disconnected"

if [ -n "${READBACK:-}" ]; then
    step "$TAG: waiting for the replicas to be exported for the read-back"
    n=0
    until timeout 10 wget -q -O /tmp/readback "http://$H:$CTL_PORT/readback" 2>/dev/null; do
        n=$((n + 1))
        [ "$n" -le 600 ] || fail "no read-back list from the host"
        sleep 0.5
    done
    mib=$((NX_SIZE >> 20))
    win=$((mib / 8))
    while read -r r port nqn; do
        nvme connect -t tcp -a "$H" -s "$port" -n "$nqn" </dev/null || fail "connect $nqn"
        d=$(nvme_wait_dev "$nqn") || fail "no block device for $nqn"
        # The first MiB is the nexus's label region (shoal_replication::META_BYTES).
        dd if="$d" of=/tmp/replica bs=1M skip=1 count="$mib" iflag=direct 2>/dev/null </dev/null ||
            fail "read replica $r"
        nvme disconnect -n "$nqn" </dev/null | grep -q "disconnected 1 controller" ||
            fail "disconnect $nqn"
        [ "$(wc -c </tmp/replica)" -eq "$NX_SIZE" ] || fail "replica $r: short read"
        echo "$TAG: replica $r sha256 $(sha256sum </tmp/replica | cut -d' ' -f1)"
        w=0
        while [ "$w" -lt 8 ]; do
            h=$(dd if=/tmp/replica bs=1M skip=$((w * win)) count="$win" 2>/dev/null | sha256sum)
            echo "$TAG: replica $r window $w sha256 ${h%% *}"
            w=$((w + 1))
        done
        rm -f /tmp/replica
    done </tmp/readback
fi
step "$TAG: guest done"

#!/bin/sh
# Guest half of hack/tests/test-crash-kill.sh (busybox ash): flushed writes under a target that
# is killed (SIGKILL) and restarted, read back after the reconnects.
#
# Env from the host script: NQN, PORT (the namespace on $GUEST_HOST_IP), CTL_PORT (an HTTP
# server on the host: GET /stop answers once the host wants the writers to stop), SEED,
# WRITERS (default 4).
#
# 1. connect with ctrl-loss-tmo 90 s and reconnect-delay 1 s: while the target is down the
#    kernel holds the I/O and reconnects once it is back, then reissues what was outstanding;
# 2. WRITERS writers in parallel; the device is cut in 64 KiB slots, writer w owning the slots
#    with slot % WRITERS = w. Each loop of a writer: pick a random slot of its own, fill a
#    buffer with random data, log "START w n slot" (in its own log in tmpfs), write the slot
#    as 16 4 KiB O_DIRECT writes and then fsync the block device (a Flush), all with
#    `dd oflag=direct conv=fsync`; when dd succeeds, every write of the slot was acknowledged
#    and a Flush issued after them completed: log "FLUSHED w n slot SHA256" and print
#    "FLUSHED w n slot" on the console (the host counts them to choose when to kill). An I/O
#    error (the kernel gave up) fails the test;
# 3. when the host says stop, each writer finishes its current slot and stops;
# 4. verify: for every slot, the last FLUSHED record of the writer that owns it is the data
#    the slot must hold: read it back with O_DIRECT and compare the SHA-256. Every write
#    acknowledged before a kill and covered by a later completed Flush is checked this way
#    unless a later flushed write of the same slot superseded it (rare: the slots are many).
#    Prints "crash-kill: N slots verified (W flushed slot writes), B bad"; B > 0 fails.
set -eu
# shellcheck source=/dev/null
. /guest/lib.sh

H=$GUEST_HOST_IP
WRITERS=${WRITERS:-4}
SLOT=65536

stop_requested() { timeout 10 wget -q -O /dev/null "http://$H:$CTL_PORT/stop" 2>/dev/null; }
rnd() { awk -v s="$SEED" -v i="$1" -v lo="$2" -v hi="$3" \
    'BEGIN { srand((s * 7919 + i) % 2147483647); print lo + int(rand() * (hi - lo + 1)) }'; }

step "nvme connect $NQN at $H:$PORT"
nvme connect -t tcp -a "$H" -s "$PORT" -n "$NQN" --ctrl-loss-tmo=90 --reconnect-delay=1 ||
    fail "connect"
DEV=$(nvme_wait_dev "$NQN") || fail "no block device for $NQN"
blocks=$(cat "/sys/block/${DEV#/dev/}/size")
slots=$((blocks * 512 / SLOT))
per=$((slots / WRITERS))
step "crash-kill: $DEV, $slots slots of 64 KiB, $WRITERS writers"

# writer W: the loop of writer W until /tmp/stop exists.
writer() {
    _w=$1 _n=0
    while [ ! -e /tmp/stop ]; do
        _n=$((_n + 1))
        _s=$(($(rnd $((_w * 1000000 + _n)) 0 $((per - 1))) * WRITERS + _w))
        dd if=/dev/urandom of="/tmp/w$_w.dat" bs=$SLOT count=1 2>/dev/null
        _sum=$(sha256sum "/tmp/w$_w.dat" | cut -d' ' -f1)
        echo "START $_w $_n $_s" >>"/tmp/w$_w.log"
        if ! dd if="/tmp/w$_w.dat" of="$DEV" bs=4k seek=$((_s * 16)) count=16 oflag=direct \
            conv=fsync,notrunc 2>"/tmp/w$_w.err"; then
            echo "crash-kill: writer $_w: write $_n of slot $_s failed: $(cat "/tmp/w$_w.err")"
            echo failed >"/tmp/w$_w.failed"
            return 1
        fi
        echo "FLUSHED $_w $_n $_s $_sum" >>"/tmp/w$_w.log"
        echo "FLUSHED $_w $_n $_s"
    done
}

rm -f /tmp/stop
w=0
pids=""
while [ "$w" -lt "$WRITERS" ]; do
    : >"/tmp/w$w.log"
    writer "$w" &
    pids="$pids $!"
    w=$((w + 1))
done
# Until the host says stop (bounded), or a writer fails.
t=0
while ! stop_requested; do
    t=$((t + 1))
    [ "$t" -le 600 ] || fail "the host did not say stop within 600 polls"
    ls /tmp/w*.failed >/dev/null 2>&1 && break
    sleep 0.5
done
touch /tmp/stop
step "crash-kill: stopping the writers"
for p in $pids; do wait "$p" || true; done
if ls /tmp/w*.failed >/dev/null 2>&1; then fail "a writer failed (I/O error)"; fi

step "crash-kill: verifying"
# The last FLUSHED record per slot (the logs are in each writer's order).
cat /tmp/w*.log | awk '$1 == "FLUSHED" { sum[$4] = $5; n++ }
    END { for (s in sum) print s, sum[s]; print "total", n + 0 > "/tmp/total" }' >/tmp/expect
bad=0 n=0
while read -r s sum; do
    n=$((n + 1))
    got=$(dd if="$DEV" bs=4k skip=$((s * 16)) count=16 iflag=direct 2>/dev/null |
        sha256sum | cut -d' ' -f1)
    if [ "$got" != "$sum" ]; then
        echo "BAD slot $s: sha256 $got, expected $sum"
        bad=$((bad + 1))
    fi
done </tmp/expect
total=$(cut -d' ' -f2 /tmp/total)
echo "crash-kill: $n slots verified ($total flushed slot writes), $bad bad"
nvme disconnect -n "$NQN" >/dev/null || true
[ "$bad" -eq 0 ] || fail "$bad slot(s) do not hold their last flushed data"
[ "$n" -gt 0 ] || fail "nothing was flushed"

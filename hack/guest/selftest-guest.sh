#!/bin/sh
# shellcheck source-path=SCRIPTDIR
# Guest half of hack/guest/selftest.sh (runs inside the guest via run.sh; busybox ash).
#
# 1. Host reachability: fetch http://$GUEST_HOST_IP:$SELFTEST_HTTP_PORT/token.txt (served by
#    selftest.sh on the host's 127.0.0.1) and compare it with $SELFTEST_TOKEN.
# 2. NVMe/TCP end to end against Linux's own target (nvmet + nvmet-tcp, configured through
#    configfs) on the guest's 127.0.0.1:4420, backed by a file in tmpfs: nvme discover, connect,
#    list, fio randwrite + verify with libaio and io_uring, a reconnect with header and data
#    digests, a check that corrupted data does fail the verify, disconnect, target teardown.
# Also a worked example of driving nvme-cli and fio in this guest (see lib.sh for the helpers).
set -eu
# shellcheck source=lib.sh
. /guest/lib.sh

NQN=nqn.2026-11.io.shoal:selftest
ADDR=127.0.0.1
PORT=4420

# --- 1. the host's loopback, through QEMU user-mode networking --------------------------------
step "fetch http://$GUEST_HOST_IP:$SELFTEST_HTTP_PORT/token.txt"
# busybox 1.35's static wget crashes with -T: bound it with timeout instead.
got=$(timeout 20 wget -q -O - "http://$GUEST_HOST_IP:$SELFTEST_HTTP_PORT/token.txt") ||
    fail "cannot reach the host at $GUEST_HOST_IP:$SELFTEST_HTTP_PORT"
[ "$got" = "$SELFTEST_TOKEN" ] || fail "host answered '$got', expected '$SELFTEST_TOKEN'"
step "host reachable: token matches"

# --- 2. tools and the reference target --------------------------------------------------------
for e in libaio io_uring; do
    fio --enghelp | grep -qx "[[:space:]]*$e" || fail "fio lacks the $e engine"
done
nvme version
step "nvmet: file-backed namespace on tmpfs, tcp $ADDR:$PORT"
nvmet_file_target "$NQN" /tmp/selftest-ns1.img 64M "$ADDR" "$PORT" || fail "nvmet setup"

# --- 3. the 6.1 host against it ---------------------------------------------------------------
step "nvme discover"
nvme discover -t tcp -a "$ADDR" -s "$PORT" | tee /tmp/discover.txt
grep -q "subnqn: *$NQN" /tmp/discover.txt || fail "discovery log lacks $NQN"

connect() { # connect [nvme-connect option...]: sets DEV
    step "nvme connect $*"
    nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$NQN" "$@" || fail "connect"
    DEV=$(nvme_wait_dev "$NQN") || fail "no block device for $NQN after connect"
    step "namespace 1 is $DEV"
}

disconnect() {
    step "nvme disconnect"
    out=$(nvme disconnect -n "$NQN")
    echo "$out"
    echo "$out" | grep -q "disconnected 1 controller" || fail "disconnect: $out"
    ! nvme_dev "$NQN" >/dev/null || fail "$DEV still present after disconnect"
}

connect
nvme list
nvme list | grep -q "^$DEV " || fail "nvme list does not show $DEV"
nvme id-ctrl "$DEV" | grep -E '^(mn|fr|mdts|ioccsz|iorcsz|icdoff|subnqn) '
for engine in libaio io_uring; do
    step "fio randwrite + verify, $engine, 2 x 16M, iodepth 16"
    fio_verify "$DEV" "$engine" 16M || fail "fio $engine"
done
disconnect

# Header and data digests exercise the crc32c modules on every PDU.
connect --hdr-digest --data-digest
step "fio randwrite + verify, io_uring, 2 x 4M, with digests"
fio_verify "$DEV" io_uring 4M || fail "fio with digests"

# The verify must be able to fail: write, corrupt the backing file behind the target's back,
# then a verify-only pass with the same job (same offsets and seeds) has to report it.
step "negative check: corrupted data must fail the verify"
fio_verify "$DEV" libaio 4M --do_verify=0 || fail "fio write pass"
dd if=/dev/urandom of=/tmp/selftest-ns1.img bs=4k count=8 seek=16 conv=notrunc 2>/dev/null
if fio_verify "$DEV" libaio 4M --verify_only >/tmp/fio-neg.txt 2>&1; then
    fail "fio verified corrupted data"
fi
grep -m1 -i 'verify' /tmp/fio-neg.txt || true
step "corruption detected"
disconnect

step "tear down nvmet"
nvmet_file_target_remove "$NQN" "$PORT" || fail "nvmet teardown"
step "PASS"

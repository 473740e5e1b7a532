#!/bin/sh
# shellcheck source-path=SCRIPTDIR/../guest
# Guest half of hack/tests/test-interop-nvmet.sh (busybox ash): Linux's own NVMe/TCP target
# (nvmet) serves the host's Shoal initiator through QEMU's host forward.
#
# Env (from the host script): NQN_PREFIX; SUBSYS (names, one subsystem each: NQN_PREFIX-NAME
# backed by /tmp/NAME.img); SIZES (the file sizes, in the same order, e.g. "64M 33M");
# GPORT (nvmet's port on 10.0.2.15, which the host forward targets); CTL_PORT (the host's HTTP
# server); WAIT_S (longest wait for the host).
#
# 1. nvmet_file_target for each subsystem on 10.0.2.15:GPORT, then "interop-nvmet: ready";
# 2. wait (polling http://10.0.2.2:CTL_PORT/done) until the host has finished with them;
# 3. "interop-nvmet: sha256 NAME HASH" of each file after its first MiB (the region where a
#    nexus child holds the volume's data, META_BYTES), compared by the host with its local
#    child; then tear nvmet down.
set -eu
# shellcheck source=../guest/lib.sh
. /guest/lib.sh

ADDR=10.0.2.15
H=$GUEST_HOST_IP

# shellcheck disable=SC2086 # one word per size
set -- $SIZES
for s in $SUBSYS; do
    step "nvmet: $NQN_PREFIX-$s on $ADDR:$GPORT, /tmp/$s.img ($1)"
    nvmet_file_target "$NQN_PREFIX-$s" "/tmp/$s.img" "$1" "$ADDR" "$GPORT" || fail "nvmet $s"
    shift
done
echo "interop-nvmet: ready"

n=0
until timeout 5 wget -q -O /dev/null "http://$H:$CTL_PORT/done" 2>/dev/null; do
    n=$((n + 1))
    [ "$n" -le "$((WAIT_S * 2))" ] || fail "the host did not say done within ${WAIT_S}s"
    sleep 0.5
done
step "host done"

for s in $SUBSYS; do
    sum=$(dd if="/tmp/$s.img" bs=1M skip=1 2>/dev/null | sha256sum | cut -d' ' -f1)
    echo "interop-nvmet: sha256 $s $sum"
done
for s in $SUBSYS; do
    nvmet_file_target_remove "$NQN_PREFIX-$s" "$GPORT" || fail "nvmet teardown $s"
done
step "interop-nvmet: guest done"

#!/bin/sh
# Guest half of the replica comparison of test-control-volume.sh (busybox ash): each replica
# of a volume, exported on its own by its node (the volume unpublished), is read through the
# Linux NVMe/TCP host and checksummed over the volume's data (after the nexus's label region
# of LABEL_BYTES), so the host script compares replicas through shoald, not through files.
#
# Env: CHECKS ("NQN:PORT ..." at $GUEST_HOST_IP), NX_SIZE (the volume's bytes), LABEL_BYTES,
# TAG. Prints "TAG: replica NQN sha256 HASH" per replica.
set -eu
. /guest/lib.sh

H=$GUEST_HOST_IP
TAG=${TAG:-replica-sum}
for c in $CHECKS; do
    nqn=${c%:*}
    port=${c##*:}
    step "nvme connect $nqn at $H:$port"
    nvme connect -t tcp -a "$H" -s "$port" -n "$nqn" || fail "connect $nqn"
    dev=$(nvme_wait_dev "$nqn") || fail "no block device for $nqn"
    sum=$(dd if="$dev" bs="$LABEL_BYTES" skip=1 count=$((NX_SIZE / LABEL_BYTES)) iflag=direct \
        2>/dev/null | sha256sum | cut -d' ' -f1)
    echo "$TAG: replica $nqn sha256 $sum"
    nvme disconnect -n "$nqn" >/dev/null || fail "disconnect $nqn"
done
step "$TAG: guest done"

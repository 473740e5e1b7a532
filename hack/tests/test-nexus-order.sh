#!/usr/bin/env bash
# System test (issue 20): overlapping writes in flight together reach every replica of a
# three-way nexus in one order, so that the replicas end identical byte for byte, through a
# replica killed and rebuilt.
#
#   node1  127.0.0.1:NX_PORT    shoald -m 0x3 (two reactors): the nexus nx0 (32 MiB) over
#                               bdev:///local (uring on r1.img) and the two replicas below
#   node2  127.0.0.22:NX_PORT   replica r2 (uring on r2.img)
#   node3  127.0.0.23:NX_PORT   replica r3 (uring on r3.img)
#
# The guest (2 CPUs, so the Linux host opens two I/O queues, which node1 spreads over its two
# reactors) runs nexus-fio-guest.sh in MODE=overlap: rounds of ROUND_SECS seconds of fio random
# writes of 4 to 64 KiB over the first 4 MiB of the device, 2 jobs at iodepth 16 each, so that
# writes to the same blocks are in flight together all the time, from both queues. Meanwhile:
# SIGKILL node2 -> its child faults, 2 rounds go on degraded; node2 restarted, its child re-added
# and rebuilt (partial, limited to REBUILD_MIB/s, so that rebuild copies and host writes to the
# same segments meet) -> online; one more round. Then the guest checksums the device and
# disconnects, the nodes stop with SIGTERM (flush, labels clean), and the data regions of the
# three replica files must be identical byte for byte (cmp) and match the guest's checksum.
#
# Without the write order the replicas differ: SHOAL_TEST_UNORDERED_WRITES=1 (in the
# environment of this script, so of node1) turns it off, and the test must then FAIL.
#
# Env: NX_PORT (default 4521), REPLICA_NET (default 127.0.0.2: replicas on .22 and .23),
# ROUND_SECS (default 4); KEEP, SHOAL_BIN_DIR as in lib-nexus.sh (set-up and helpers).
set -euo pipefail
NAME=nexus-order
NX_PORT=${NX_PORT:-4521}
REPLICA_NET=${REPLICA_NET:-127.0.0.2}
NX_SIZE=$((32 << 20))
NODE1_ARGS="-m 0x3"
GUEST_SMP=2
REBUILD_MIB=2
GUEST_TIMEOUT=240
REGION=$((4 << 20))
ROUND_SECS=${ROUND_SECS:-4}
# shellcheck source=hack/tests/lib-nexus.sh
. "$(dirname "$0")/lib-nexus.sh"

setup_nexus
[[ -n ${SHOAL_TEST_UNORDERED_WRITES:-} ]] && note "SHOAL_TEST_UNORDERED_WRITES is set: no write order"
start_guest "$here/nexus-fio-guest.sh" MODE=overlap REGION="$REGION" ROUND_SECS="$ROUND_SECS"
wait_rounds_after 0 150
# The guest's two I/O queues must sit on node1's two reactors: writes then reach the nexus
# from both, and their order is one order across reactors.
groups=$(rpc 1 nvmf_get_stats | jsq "sum(1 for g in d['poll_groups'] if g['current_io_qpairs'] > 0)")
[[ $groups -eq 2 ]] || die "the guest's I/O queues are on $groups of node1's 2 reactors"
note "guest up; overlapping-write round 1 done with 3 online children, I/O queues on 2 reactors"

fault_phase 2 KILL

finish_guest
compare_replicas
result=PASS

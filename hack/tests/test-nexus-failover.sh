#!/usr/bin/env bash
# System test: a three-way nexus over logical volumes survives a replica node killed (SIGKILL)
# and one frozen (SIGSTOP) while the Linux host (the QEMU guest) writes and verifies through it.
#
#   node1  127.0.0.1:PORT  the nexus nx0 (64 MiB) over bdev:///lvs/replica1 (a thick volume in
#                          the pool lvs on the uring bdev disk1, r1.img) and the two replicas
#                          below; exported as NQN_NX, reached by the guest at 10.0.2.2:PORT
#   node2  127.0.0.2:PORT  replica: the thick volume lvs/replica2 (pool on r2.img), exported in
#                          its own subsystem
#   node3  127.0.0.3:PORT  replica: the thin volume lvs/replica3 (pool on r3.img), exported in
#                          its own subsystem
#
# Pools and volumes are made with shoalctl pool/volume create. The guest (nexus-fio-guest.sh)
# runs fio rounds (random writes + crc32c verify, a new seed each round) until told to stop.
# Meanwhile this script:
#   kill:   SIGKILL node2 -> its child faults, the nexus is degraded, 2 fio rounds go on; node2
#           restarted on the same file (examine brings its pool and volume back with the same
#           UUID), the volume exported again, nexus_add_child brings the child back (partial
#           rebuild, limited to REBUILD_MIB/s so it overlaps the writes) -> online;
#   freeze: SIGSTOP node3 -> its child faults (I/O timeout), 2 fio rounds go on; SIGCONT;
#           nexus_add_child (retried while abandoned I/Os are outstanding) -> online;
# then stops the guest's fio (it re-verifies the last round, checksums the device and
# disconnects), stops the nodes with SIGTERM (exit status 0), starts them again (examine: the
# same volumes), exports each volume on 127.0.0.1, and the guest reads them back: each
# volume's data region (after the 1 MiB label region) must have the guest's device checksum,
# and each eighth of it the same checksum on the three. No fio error, no nexus I/O error, all
# children online, identical replicas: PASS.
#
# Env: NX_PORT (default 4420; node1 on 127.0.0.1, the replicas on .2 and .3); LVOL= (empty)
# runs the same test on whole uring bdevs as replicas, compared file against file; KEEP=1 keeps
# the work directory (logs and images) even on success; SHOAL_BIN_DIR=DIR runs the shoald and
# shoalctl found in DIR instead of building them. The set-up and helpers: lib-nexus.sh.
set -euo pipefail
NAME=nexus-failover
LVOL=${LVOL-1}
# shellcheck source=hack/tests/lib-nexus.sh
. "$(dirname "$0")/lib-nexus.sh"

# --- set up ----------------------------------------------------------------------------------
setup_nexus
start_guest "$here/nexus-fio-guest.sh"
wait_rounds_after 0 150
note "guest up; fio round 1 done with 3 online children"

# --- the faults -------------------------------------------------------------------------------
fault_phase 2 KILL
fault_phase 3 STOP

# --- end: stop the guest, stop the nodes, compare the replicas -------------------------------
finish_guest
compare_replicas
result=PASS

#!/usr/bin/env bash
# System test of the control plane: etcd, four shoald nodes with their agents and two
# shoal-control instances (hack/lib-cluster.sh); a 3-replica volume is created and published
# through the API, and the Linux host in the QEMU guest connects to it and runs fio rounds
# with crc32c verify (nexus-fio-guest.sh) while, one at a time:
#   A. a replica node (shoald and its agent, not the nexus's node) is killed with SIGKILL: the
#      leader replaces its replica on the fourth node once it has been offline for HEAL_AFTER,
#      the nexus rebuilds it while fio writes, the API shows the rebuild's progress and the
#      events; the killed node comes back and its stale replica is deleted, never exported;
#   B. the leading shoal-control is killed with SIGKILL: the second takes over, I/O goes on,
#      the volume's state is intact;
#   C. etcd is stopped and started again: I/O goes on, the state is intact afterwards;
#   D. the nexus's own node (node1) is killed with SIGKILL: the leader re-creates the nexus on
#      a node with a current replica (same NQN, namespace and address); the guest, connected
#      with --ctrl-loss-tmo, reconnects and fio goes on; the outage is measured; node1's
#      replica is replaced and node1, back, holds nothing of the volume.
#   E. the volume grows by 32 MiB (replicas, then the nexus): the guest's block device shows
#      the new size without reconnecting, fio goes on.
# Then every node holds exactly what the control plane says (lvols, nexus, subsystems asked
# of each node), and after unpublishing, every replica, exported on its own and read by the
# guest through NVMe/TCP, holds what the guest's device held (sha256 of the data after the
# label region). Finally delete: nothing of the volume is left on any node.
#
#   node1  127.0.0.1:NX_PORT  the nexus (published there: the guest reaches only the host's
#                             127.0.0.1, as 10.0.2.2), and a replica
#   node2-4 127.0.0.2-4       replicas where the control plane places them (node2 and node3
#                             first: equal pools, ties broken by node id), node4 spare
#
# Env: NX_PORT [4425], CLUSTER_IP [127.0.0.5], ETCD_PORT [2385], API_PORT [8085] (and +1 for
# the second instance), HEAL_AFTER [4], ETCD_DOWN [10]; KEEP=1 keeps the work directory;
# SHOAL_BIN_DIR=DIR runs the binaries found there. About 2 minutes after the build (two guest
# boots under TCG, the phases, the replica checksums).
set -euo pipefail
NAME=control-volume
NX_PORT=${NX_PORT:-4425}
GUEST_TIMEOUT=${GUEST_TIMEOUT:-240}
# shellcheck source=hack/tests/lib-nexus.sh
. "$(dirname "$0")/lib-nexus.sh"
ETCD_PORT=${ETCD_PORT:-2385}
API_PORT=${API_PORT:-8085}
CONTROL_INSTANCES=2
HEAL_AFTER=${HEAL_AFTER:-4}
ETCD_DOWN=${ETCD_DOWN:-10} # seconds etcd stays stopped in phase C (3 lease TTLs)
REBUILD_MIB=16 # MiB/s: the 64 MiB replica's rebuild takes seconds, while fio writes
# shellcheck source=hack/lib-cluster.sh
. hack/lib-cluster.sh

if [[ -z ${SHOAL_BIN_DIR:-} ]]; then
    cargo build --release -q -p shoal-target -p shoal-control --bins
fi
hack/guest/build.sh
cluster_up
note "cluster up: 4 nodes online with their pools"

# --- create and publish -------------------------------------------------------------------
t=$(elapsed)
vol=$(api POST /v1/volumes "{\"name\": \"ci-vol\", \"size_bytes\": $NX_SIZE, \"replicas\": 3}") ||
    die "create"
VOL=$(jsq "d['id']" <<<"$vol")
[[ $(jsq "d['state']" <<<"$vol") == online ]] || die "volume not online: $vol"
placed=$(jsq "' '.join(sorted(r['node'] for r in d['replica_list']))" <<<"$vol")
[[ $(wc -w <<<"$placed") -eq 3 && $(tr ' ' '\n' <<<"$placed" | sort -u | wc -l) -eq 3 ]] ||
    die "replicas not on 3 distinct nodes: $placed"
again=$(api POST /v1/volumes "{\"name\": \"ci-vol\", \"size_bytes\": $NX_SIZE, \"replicas\": 3}")
[[ $(jsq "d['id']" <<<"$again") == "$VOL" ]] || die "the same create gave another volume"
note "volume $VOL created in $(since "$t")s: replicas on $placed (the same request again: the same volume)"
t=$(elapsed)
target=$(api POST "/v1/volumes/$VOL/publish" '{"node": "node1"}') || die "publish"
NQN_NX=$(jsq "d['nqn']" <<<"$target")
[[ $(jsq "d['traddr'] + ':' + d['trsvcid']" <<<"$target") == "127.0.0.1:$NX_PORT" ]] ||
    die "unexpected target: $target"
[[ $(api POST "/v1/volumes/$VOL/publish" '{}') == "$target" ]] || die "publishing twice differs"
# lib-nexus.sh's helpers, on this volume's nexus (named by the volume's id) on node NX_NODE
# (node1 until phase D moves it).
NX_NODE=1
nexus() { rpc "$NX_NODE" nexus_get "{\"name\": \"$VOL\"}"; }
nx_errors() { rpc "$NX_NODE" bdev_get_iostat "{\"name\": \"$VOL\"}" | jsq "d['bdevs'][0]['num_errors']"; }
[[ $(nexus_state) == online ]] || die "nexus $(nexus_state)"
note "published on node1 in $(since "$t")s as $NQN_NX; nexus online with $(nexus | jsq "len(d[0]['children'])") children"

rpc 1 nexus_set_rebuild_rate "{\"name\": \"$VOL\", \"mib_per_sec\": $REBUILD_MIB}" >/dev/null
[[ $placed == "node1 node2 node3" ]] || die "expected the replicas on node1-3 (node4 spare): $placed"

# shellcheck source=hack/tests/control-phases.sh
. "$here/control-phases.sh"

# --- the Linux host ---------------------------------------------------------------------------
# --ctrl-loss-tmo: the host keeps reconnecting for a minute when the nexus's node dies (D).
start_guest "$here/nexus-fio-guest.sh" CONNECT_OPTS="--ctrl-loss-tmo=60 --reconnect-delay=1"
wait_rounds_after 0 150
note "guest: fio round 1 with crc32c verify done"

phase_replica_node_killed
phase_leader_killed
phase_etcd_restarted
phase_nexus_node_killed
phase_resize

wait_rounds_after "$(rounds)" 120
finish_guest
check_holdings
compare_replicas_via_guest

# --- unpublish and delete: nothing left anywhere --------------------------------------------
t=$(elapsed)
api POST "/v1/volumes/$VOL/unpublish" '{}' >/dev/null || die "unpublish"
api DELETE "/v1/volumes/$VOL" >/dev/null || die "delete"
for n in 1 2 3 4; do
    [[ $(rpc "$n" bdev_lvol_get_lvols | jsq "len(d)") -eq 0 ]] || die "node$n still has an lvol"
    [[ $(rpc "$n" nexus_get | jsq "len(d)") -eq 0 ]] || die "node$n still has a nexus"
    [[ $(rpc "$n" nvmf_get_subsystems | jsq "len([s for s in d if s['subtype'] != 'Discovery'])") -eq 0 ]] ||
        die "node$n still exports something"
done
api GET "/v1/volumes/$VOL" >/dev/null 2>&1 && die "the volume is still listed"
note "unpublished and deleted in $(since "$t")s: no lvol, nexus or subsystem left on the 4 nodes"
result=PASS

#!/usr/bin/env bash
# System test of the CSI driver over the whole life of a volume (issue 17): etcd, four shoald
# nodes with their agents and shoal-control (hack/lib-cluster.sh), and the CSI controller
# (shoal-csi --mode controller) on the host; the CSI node plugin (shoal-csi --mode node, node
# id node1) inside the QEMU guest (csi-lifecycle-guest.sh). shoal-csi-client speaks CSI to
# the controller here and to the node plugin there; every call is made twice where the CSI
# spec says it is idempotent, and the two answers must agree.
#
#   CreateVolume (3 replicas, ext4) -> ControllerPublishVolume on node1 (publish context nqn,
#   traddr, trsvcid) -> NodeStageVolume -> NodePublishVolume -> files written through the
#   mount, with md5s -> SIGKILL of a replica node (not node1, the nexus's): ControllerGetVolume
#   turns abnormal, the files stay readable and writable -> the control plane replaces the
#   replica and the nexus rebuilds it: the condition is normal again with 3 replicas online,
#   the files are intact; the killed node comes back and its stale replica is removed
#   [WITH_EXPAND: ControllerExpandVolume + NodeExpandVolume: the file system grows online and
#   holds more than the old size] [WITH_SNAPSHOT: CreateSnapshot (ready_to_use) -> the source
#   changes -> CreateVolume from the snapshot -> staged and published: it holds exactly the
#   files of snapshot time] -> NodeUnpublish, NodeUnstage, ControllerUnpublish, DeleteVolume,
#   DeleteSnapshot for all -> the API lists nothing, and no node holds an lvol, a nexus or an
#   export (asked of each shoald over its RPC).
#
# WITH_EXPAND and WITH_SNAPSHOT (1 or 0) select the optional parts; see their defaults below.
# Env: NX_PORT [4435], CLUSTER_IP [127.0.0.6], ETCD_PORT [2395], API_PORT [8095], HEAL_AFTER
# [25]; KEEP=1 keeps the work directory; SHOAL_BIN_DIR=DIR runs the binaries found there.
set -euo pipefail
NAME=csi-lifecycle
NX_PORT=${NX_PORT:-4435}
GUEST_TIMEOUT=${GUEST_TIMEOUT:-900}
# shellcheck source=hack/tests/lib-nexus.sh
. "$(dirname "$0")/lib-nexus.sh"
CLUSTER_IP=${CLUSTER_IP:-127.0.0.6}
ETCD_PORT=${ETCD_PORT:-2395}
API_PORT=${API_PORT:-8095}
# Seconds a replica's node stays offline before the replica is replaced: longer than the
# guest's degraded phase takes, so that its reads and writes meet the degraded volume.
HEAL_AFTER=${HEAL_AFTER:-25}
# shellcheck source=hack/lib-cluster.sh
. hack/lib-cluster.sh
# kill_node, vol_nodes, has_event (the last on $VOL)
# shellcheck source=hack/tests/control-phases.sh
. "$here/control-phases.sh"
# The optional parts, both on by default (0 to leave one out while working on another).
WITH_EXPAND=${WITH_EXPAND:-1}
WITH_SNAPSHOT=${WITH_SNAPSHOT:-1}
MIB=1048576
VOL_BYTES=$((64 * MIB))
NEW_BYTES=$((128 * MIB))
CSI_SOCK=$work/csi-controller.sock
GUEST_HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:5ba1e0b1-0000-4000-8000-000000000001 # run.sh's
calls=0

if [[ -z ${SHOAL_BIN_DIR:-} ]]; then
    cargo build --release -q -p shoal-target -p shoal-control -p shoal-csi --bins
fi
hack/guest/build.sh

# --- CSI helpers --------------------------------------------------------------------------
# csi ARGS...: one call to the controller; its answer (Rust debug form) in $work/out.
csi() {
    calls=$((calls + 1))
    timeout 150 "$bin/shoal-csi-client" --endpoint "$CSI_SOCK" "$@" >"$work/out" 2>&1 || {
        cat "$work/out" >&2
        tail -n 20 "$work/csi-controller.log" >&2
        die "CSI call failed: $*"
    }
}
# csi_twice ARGS...: the same call twice; both succeed with the same answer (maps print in
# any order: the lines are compared sorted).
csi_twice() {
    csi "$@"
    sort "$work/out" >"$work/out1"
    csi "$@"
    sort "$work/out" | cmp -s - "$work/out1" || {
        cat "$work/out1" "$work/out" >&2
        die "the second call answered otherwise: $*"
    }
}
# csi_expect CODE ARGS...: a call that must fail with CODE.
csi_expect() {
    local code=$1
    shift
    csi --expect "$code" "$@"
}
# out_str KEY / out_map KEY / out_num KEY: a field of the last answer.
out_str() { sed -n "s/^ *$1: \"\\(.*\\)\",\$/\\1/p" "$work/out" | head -n1; }
out_map() { sed -n "s/^ *\"$1\": \"\\(.*\\)\",\$/\\1/p" "$work/out" | head -n1; }
out_num() { sed -n "s/^ *$1: \\([0-9-]*\\),\$/\\1/p" "$work/out" | head -n1; }
out_bool() { sed -n "s/^ *$1: \\(true\\|false\\),\$/\\1/p" "$work/out" | head -n1; }

# go PHASE [KEY=VAL...]: let the guest run PHASE (it fetches the file PHASE from the control
# HTTP server, with the KEY=VAL lines); wait_phase PHASE SECONDS: until it says it is done.
go() {
    local p=$1
    shift
    printf '%s\n' "$@" >"$work/ctl/$p.tmp"
    mv "$work/ctl/$p.tmp" "$work/ctl/$p"
}
wait_phase() { wait_guest_line "$NAME: $1 done" "$2"; }

# vol_api ID: the volume as the API shows it.
vol_api() { api GET "/v1/volumes/$1"; }
# cond ID: COND="abnormal message" of the volume condition ControllerGetVolume reports.
cond() {
    csi get --volume-id "$1"
    COND="$(out_bool abnormal) $(out_str message)"
}

# holds_nothing: no node holds an lvol, a nexus or an export (asked of each shoald).
holds_nothing() {
    local n
    for n in 1 2 3 4; do
        [[ $(rpc "$n" bdev_lvol_get_lvols | jsq "len(d)") -eq 0 ]] ||
            die "node$n still has lvols: $(rpc "$n" bdev_lvol_get_lvols | jsq "[l['name'] for l in d]")"
        [[ $(rpc "$n" nexus_get | jsq "len(d)") -eq 0 ]] || die "node$n still has a nexus"
        [[ $(rpc "$n" nvmf_get_subsystems | jsq "len([s for s in d if s['subtype'] != 'Discovery'])") -eq 0 ]] ||
            die "node$n still exports something"
    done
}

# --- the cluster and the controller ---------------------------------------------------------
cluster_up
"$bin/shoal-csi" --mode controller --endpoint "unix://$CSI_SOCK" --control-url "$SHOAL_API" \
    >>"$work/csi-controller.log" 2>&1 &
pid[csi]=$!
for _ in $(seq 100); do [[ -S $CSI_SOCK ]] && break; sleep 0.1; done
[[ -S $CSI_SOCK ]] || { cat "$work/csi-controller.log" >&2; die "the CSI controller did not start"; }
csi probe
csi plugin-info
grep -q '"io.shoal.csi"' "$work/out" || die "plugin info: $(cat "$work/out")"
note "cluster up (4 nodes, pools of $POOL_MIB MiB), CSI controller on $CSI_SOCK"

# Without their debug info the binaries are a tenth of the size in the guest's archive.
strip -o "$work/shoal-csi" "$bin/shoal-csi"
strip -o "$work/shoal-csi-client" "$bin/shoal-csi-client"
GUEST_FILES="$work/shoal-csi $work/shoal-csi-client" start_guest "$here/csi-lifecycle-guest.sh" \
    WITH_EXPAND="$WITH_EXPAND" WITH_SNAPSHOT="$WITH_SNAPSHOT"
wait_guest_line "$NAME: node-id node1" 120
node=node1

# --- create and publish -----------------------------------------------------------------------
t=$(elapsed)
csi_twice create --name pvc-lifecycle --bytes "$VOL_BYTES" --param replicas=3 \
    --param fsType=ext4 --fs ext4
VOL=$(out_str volume_id)
[[ $(out_num capacity_bytes) -eq $VOL_BYTES ]] || die "created with $(out_num capacity_bytes) bytes"
[[ $(out_map fsType) == ext4 ]] || die "no fsType in the volume context: $(cat "$work/out")"
csi_expect AlreadyExists create --name pvc-lifecycle --bytes "$NEW_BYTES" --limit "$NEW_BYTES" \
    --param replicas=3 --fs ext4
v=$(vol_api "$VOL")
placed=$(vol_nodes <<<"$v")
[[ $(jsq "d['state']" <<<"$v") == online ]] || die "volume not online: $v"
[[ $(tr ' ' '\n' <<<"$placed" | sort -u | wc -l) -eq 3 ]] || die "replicas not on 3 nodes: $placed"
# lib-nexus.sh's nexus helpers, on this volume's nexus (named by the volume's id, on node1).
nexus() { rpc 1 nexus_get "{\"name\": \"$VOL\"}"; }
note "CreateVolume x2: $VOL, 3 replicas on $placed ($(since "$t")s)"

csi_twice ctrl-publish --volume-id "$VOL" --node-id "$node" --fs ext4
NQN=$(out_map nqn) TRADDR=$(out_map traddr) TRSVCID=$(out_map trsvcid)
[[ -n $NQN && $TRADDR == 127.0.0.1 && $TRSVCID == "$NX_PORT" ]] ||
    die "publish context: $(cat "$work/out")"
[[ $(vol_api "$VOL" | jsq "d['target']['node']") == "$node" ]] || die "not published on $node"
csi get --volume-id "$VOL"
grep -q '"node1"' "$work/out" || die "ControllerGetVolume: not published on node1: $(cat "$work/out")"
cond "$VOL"
[[ $COND == "false online: 3 of 3 replicas online" ]] || die "condition: $COND"
note "ControllerPublishVolume x2: $NQN at $TRADDR:$TRSVCID"

go stage VOL="$VOL" NQN="$NQN" TRADDR="$TRADDR" TRSVCID="$TRSVCID"
wait_phase stage 240
note "NodeStageVolume x2 (connect, mkfs.ext4, mount), NodePublishVolume x2; 16 files written" \
    "and read back"

# --- a replica node dies -----------------------------------------------------------------------
victim=$(tr ' ' '\n' <<<"$placed" | grep -vx "$node" | head -n1)
vn=${victim#node}
t=$(elapsed)
kill_node "$vn"
log "$victim (shoald and agent) killed with SIGKILL"
end=$((SECONDS + 60))
until cond "$VOL" && [[ $COND == true* ]]; do
    ((SECONDS < end)) || die "ControllerGetVolume never abnormal after $victim died: $(cat "$work/out")"
    sleep 0.3
done
note "SIGKILL $victim: ControllerGetVolume abnormal $(since "$t")s later ($(out_str message))"
go degraded
wait_phase degraded 240
# The phase met the degraded volume only if the replacement is not in yet.
cond "$VOL"
[[ $COND == true* ]] || die "the volume healed before the guest's degraded phase ended" \
    "(raise HEAL_AFTER, now $HEAL_AFTER s): $COND"
note "the files read back intact and 8 more written while $victim is down, the volume" \
    "still degraded ($(since "$t")s after the kill)"

end=$((SECONDS + 180))
while :; do
    v=$(vol_api "$VOL")
    if [[ $(jsq "(d['state'] == 'online' and len(d['replica_list']) == 3 and
        all(r['state'] == 'online' for r in d['replica_list']))" <<<"$v") == True ]]; then
        break
    fi
    ((SECONDS < end)) || die "the volume did not heal within 180 s: $v"
    check_nodes
    sleep 0.5
done
healed=$(vol_nodes <<<"$v")
[[ " $healed " != *" $victim "* ]] || die "$victim still holds a replica: $healed"
cond "$VOL"
[[ $COND == "false online: 3 of 3 replicas online" ]] || die "condition after the heal: $COND"
[[ $(nexus_state) == online && $(nexus | jsq "len(d[0]['children'])") -eq 3 ]] ||
    die "the nexus is $(nexus_state) with $(nexus | jsq "len(d[0]['children'])") children"
note "healed $(since "$t")s after the kill: replicas on $healed, all online, condition normal," \
    "nexus online with 3 children"
# The guest compares the replacement replica with the volume: its node exports it to the
# nexus; that export also listens on the host's 127.0.0.1, for the guest's host NQN, while the
# guest reads it (the file system frozen meanwhile).
checks="" exposed=()
for n in $(vol_nodes <<<"$v" | sed 's/node//g'); do
    [[ " $placed " == *" node$n "* ]] && continue
    sub=$(rpc "$n" nvmf_get_subsystems | jsq "json.dumps([s for s in d if '$VOL' in s['nqn']][0])")
    rnqn=$(jsq "d['nqn']" <<<"$sub")
    port=$(free_port)
    rpc "$n" nvmf_subsystem_add_listener "{\"nqn\": \"$rnqn\", \"listen_address\": {\"trtype\": \"TCP\",
        \"adrfam\": \"IPv4\", \"traddr\": \"127.0.0.1\", \"trsvcid\": \"$port\"}}" >/dev/null
    if [[ $(jsq "d['allow_any_host']" <<<"$sub") != True ]]; then
        rpc "$n" nvmf_subsystem_add_host "{\"nqn\": \"$rnqn\", \"host\": \"$GUEST_HOSTNQN\"}" >/dev/null
    fi
    checks+=" $rnqn:$port"
    exposed+=("$n $rnqn $port")
done
((${#exposed[@]} == 1)) || die "expected one replacement replica, found ${#exposed[@]}: $healed (was $placed)"
go healed CHECKS="'${checks# }'" LABEL_BYTES="$LABEL_BYTES" VOL_BYTES="$VOL_BYTES"
wait_phase healed 240
for e in "${exposed[@]}"; do
    read -r n rnqn port <<<"$e"
    rpc "$n" nvmf_subsystem_remove_listener "{\"nqn\": \"$rnqn\", \"listen_address\": {\"trtype\": \"TCP\",
        \"adrfam\": \"IPv4\", \"traddr\": \"127.0.0.1\", \"trsvcid\": \"$port\"}}" >/dev/null
    rpc "$n" nvmf_subsystem_remove_host "{\"nqn\": \"$rnqn\", \"host\": \"$GUEST_HOSTNQN\"}" \
        >/dev/null 2>&1 || true
done
[[ $(tr -d '\r' <"$work/guest.log" | grep -c "^$NAME: replica .* equals the volume\$") -eq ${#exposed[@]} ]] ||
    die "the guest did not compare ${#exposed[@]} replicas"
note "after the heal: the 24 files intact; the rebuilt replica on node${exposed[0]%% *}, read by" \
    "the guest through NVMe/TCP, equals the volume (sha256 of the data region, file system" \
    "frozen); 8 more files written and read back"

t=$(elapsed)
cluster_start_node "$vn"
end=$((SECONDS + 60))
until has_event replica_removed "$victim"; do
    ((SECONDS < end)) || die "$victim's stale replica not removed within 60 s of its return"
    sleep 0.3
done
note "$victim back: its stale replica removed $(since "$t")s after its restart"

# --- expand -------------------------------------------------------------------------------------
if [[ $WITH_EXPAND == 1 ]]; then
    t=$(elapsed)
    csi_twice ctrl-expand --volume-id "$VOL" --bytes "$NEW_BYTES"
    [[ $(out_num capacity_bytes) -eq $NEW_BYTES ]] || die "ControllerExpandVolume: $(cat "$work/out")"
    [[ $(out_bool node_expansion_required) == true ]] || die "no node expansion asked: $(cat "$work/out")"
    [[ $(vol_api "$VOL" | jsq "d['size_bytes']") -eq $NEW_BYTES ]] || die "the API shows another size"
    # Less than it has: success with its size; a limit below its size: OUT_OF_RANGE.
    csi ctrl-expand --volume-id "$VOL" --bytes "$VOL_BYTES"
    [[ $(out_num capacity_bytes) -eq $NEW_BYTES ]] || die "a smaller request: $(cat "$work/out")"
    csi_expect OutOfRange ctrl-expand --volume-id "$VOL" --bytes "$VOL_BYTES" --limit "$VOL_BYTES"
    go expand NEW_BYTES="$NEW_BYTES" OLD_BYTES="$VOL_BYTES"
    wait_phase expand 240
    note "ControllerExpandVolume x2 and NodeExpandVolume x2: $((VOL_BYTES / MIB)) -> $((NEW_BYTES / MIB))" \
        "MiB, $(tr -d '\r' <"$work/guest.log" | sed -n "s/^$NAME: file system //p") ($(since "$t")s)"
    SNAP_BYTES=$NEW_BYTES
else
    SNAP_BYTES=$VOL_BYTES
    note "NOT RUN: ControllerExpandVolume / NodeExpandVolume (WITH_EXPAND=0)"
fi

# --- snapshot and a volume from it ---------------------------------------------------------------
VOL2="" SNAP=""
if [[ $WITH_SNAPSHOT == 1 ]]; then
    go quiesce
    wait_phase quiesce 120
    t=$(elapsed)
    csi snapshot --name snap-lifecycle --volume-id "$VOL"
    SNAP=$(out_str snapshot_id)
    [[ -n $SNAP && $(out_str source_volume_id) == "$VOL" ]] || die "CreateSnapshot: $(cat "$work/out")"
    csi snapshot --name snap-lifecycle --volume-id "$VOL"
    [[ $(out_str snapshot_id) == "$SNAP" ]] || die "CreateSnapshot again: another snapshot"
    end=$((SECONDS + 120))
    until csi list-snapshots --snapshot-id "$SNAP" && [[ $(out_bool ready_to_use) == true ]]; do
        ((SECONDS < end)) || die "the snapshot is not ready_to_use within 120 s: $(cat "$work/out")"
        sleep 0.5
    done
    [[ $(out_num size_bytes) -eq $SNAP_BYTES ]] || die "snapshot size: $(cat "$work/out")"
    note "CreateSnapshot x2: $SNAP ready_to_use $(since "$t")s after it was asked"
    go after-snapshot
    wait_phase after-snapshot 120

    t=$(elapsed)
    csi_twice create --name pvc-from-snap --bytes "$SNAP_BYTES" --param replicas=3 \
        --param fsType=ext4 --fs ext4 --from-snapshot "$SNAP"
    VOL2=$(out_str volume_id)
    [[ $VOL2 != "$VOL" && $(out_str snapshot_id) == "$SNAP" ]] ||
        die "CreateVolume from the snapshot: $(cat "$work/out")"
    # Used by its volume and the one made from it: not deletable yet (the control plane
    # answers 412: deleting merges a snapshot into its only clone).
    csi_expect FailedPrecondition delete-snapshot --snapshot-id "$SNAP"
    csi_twice ctrl-publish --volume-id "$VOL2" --node-id "$node" --fs ext4
    NQN2=$(out_map nqn) TRADDR2=$(out_map traddr) TRSVCID2=$(out_map trsvcid)
    note "CreateVolume x2 from the snapshot: $VOL2, published as $NQN2 ($(since "$t")s)"
    go clone VOL2="$VOL2" NQN2="$NQN2" TRADDR2="$TRADDR2" TRSVCID2="$TRSVCID2"
    wait_phase clone 240
    note "the volume from the snapshot, staged and published x2: the files of snapshot time," \
        "none written after; a write to it leaves the source alone"
else
    note "NOT RUN: CreateSnapshot / CreateVolume from a snapshot / DeleteSnapshot (WITH_SNAPSHOT=0)"
fi

# --- tear down: nothing left ----------------------------------------------------------------------
t=$(elapsed)
go teardown
wait_phase teardown 240
gcalls=$(tr -d '\r' <"$work/guest.log" | sed -n "s/^$NAME: CSI node calls: //p")
wait_guest
for id in $VOL $VOL2; do
    csi_twice ctrl-unpublish --volume-id "$id" --node-id "$node"
    [[ $(vol_api "$id" | jsq "d['target']") == None ]] || die "$id is still published"
done
# delete_volume ID: DeleteVolume twice, then it is gone.
delete_volume() {
    csi_twice delete --volume-id "$1"
    csi_expect NotFound get --volume-id "$1"
}
# The volume made from the snapshot first, then the snapshot, then its source.
[[ -z $VOL2 ]] || delete_volume "$VOL2"
if [[ -n $SNAP ]]; then
    csi_twice delete-snapshot --snapshot-id "$SNAP"
    csi list-snapshots --snapshot-id "$SNAP"
    ! grep -q snapshot_id "$work/out" || die "the snapshot is still listed"
fi
delete_volume "$VOL"
csi list
! grep -q volume_id "$work/out" || die "ListVolumes still lists: $(cat "$work/out")"
holds_nothing
note "NodeUnpublish/NodeUnstage x2, ControllerUnpublish/DeleteVolume x2$([[ -n $SNAP ]] &&
    echo ", DeleteSnapshot x2"): no lvol, nexus or export left on the 4 nodes ($(since "$t")s)"
note "CSI calls: $calls to the controller, $gcalls to the node plugin"
result=PASS

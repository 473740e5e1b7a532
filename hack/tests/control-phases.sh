# shellcheck shell=bash
# The failure phases of test-control-volume.sh (sourced after lib-nexus.sh and
# lib-cluster.sh, with VOL the published volume, its nexus on node1, replicas on node1-3 and
# node4 spare, and the guest's fio rounds running). Each phase logs what it measured with note.

# vol_get: the volume as the API (SHOAL_API) shows it.
vol_get() { api GET "/v1/volumes/$VOL"; }
# vol_nodes JSON: its replicas' nodes, sorted, on one line.
vol_nodes() { jsq "' '.join(sorted(r['node'] for r in d['replica_list']))"; }
# vol_shape JSON: what must survive a control-plane or etcd outage: replicas, their states and
# UUIDs, the target.
vol_shape() {
    jsq "(sorted((r['node'], r['state'], r['lvol_uuid']) for r in d['replica_list']), d['target'], d['state'])"
}
# vol_events [QUERY]: the volume's events as "kind node" lines.
vol_events() {
    api GET "/v1/events?volume=$VOL&limit=1000${1:+&$1}" |
        jsq "'\n'.join('%s %s' % (e['kind'], e.get('node', '-')) for e in d['events'])"
}
# has_event KIND NODE [QUERY]: the volume's events hold KIND for NODE (the list is read whole
# first: `grep -q` leaving a pipe early breaks the writer's pipe, which pipefail reports).
has_event() {
    local events
    events=$(vol_events "${3:-}") || return 1
    grep -qx "$1 $2" <<<"$events"
}
# expect_event KIND NODE: the volume's events hold KIND for NODE.
expect_event() {
    has_event "$1" "$2" || {
        vol_events >&2
        die "no $1 event for $2"
    }
}
# watch_io: fail at once when the guest fails or a node that should run died.
watch_io() {
    guest_alive || die "the guest ended (see its console)"
    if grep -q '^FAIL:' "$work/guest.log"; then die "the guest failed"; fi
    check_nodes
}

# kill_node N: SIGKILL to shoald N and its agent (the whole node dies).
kill_node() {
    kill -KILL "${pid[$1]}" "${pid[agent$1]}"
    wait "${pid[$1]}" "${pid[agent$1]}" 2>/dev/null || true
    unset "pid[$1]" "pid[agent$1]"
}

# A. node2 (a replica, not the nexus's node) is killed during a fio round. Measured: the time
# from the kill until the replacement is placed on node4, and until the replica count is
# restored (3 replicas online: node4's rebuilt). fio must go on and pass its verify. Then
# node2 comes back with its pool: its stale replica is deleted, never exported.
phase_replica_node_killed() {
    local t r0 v="" nodes="" placed="" restored="" prog="" p end
    sleep 1
    r0=$(rounds)
    t=$(elapsed)
    kill_node 2
    log "node2 (shoald and agent) killed with SIGKILL during fio round $((r0 + 1))"
    end=$((SECONDS + 120))
    while ((SECONDS < end)); do
        if v=$(vol_get 2>/dev/null); then
            nodes=$(vol_nodes <<<"$v")
            if [[ $nodes == "node1 node3 node4" ]]; then
                [[ -n $placed ]] || placed=$(since "$t")
                p=$(jsq "max([r.get('rebuild_progress', -1) for r in d['replica_list']])" <<<"$v")
                ((p >= 0 && p < 100)) && prog+=" $p"
                if [[ $(jsq "all(r['state'] == 'online' for r in d['replica_list'])" <<<"$v") == True ]]; then
                    restored=$(since "$t")
                    break
                fi
            fi
        fi
        watch_io
        sleep 0.2
    done
    [[ -n $restored ]] || die "the replica count was not restored within 120 s: $v"
    note "A. node2 SIGKILL: replacement placed on node4 ${placed}s after the kill (HEAL_AFTER" \
        "${HEAL_AFTER}s); replica count restored (3 online, node4 rebuilt) ${restored}s after the kill"
    [[ -n $prog ]] || die "the API never showed the rebuild's progress"
    note "A. rebuild progress seen in GET /v1/volumes/{id} (%):$prog"
    # The list is read whole before it is searched: `grep -q` leaving a pipe early broke the
    # writer's pipe (BrokenPipeError), which pipefail reported as a missing event.
    events=$(api GET "/v1/events?limit=1000" |
        jsq "'\n'.join('%s %s' % (e['kind'], e.get('node', '-')) for e in d['events'])")
    for e in "node_offline node2" "replica_faulted node2" "replica_replaced node2" \
        "rebuild_started node4" "rebuild_finished node4"; do
        grep -qx "$e" <<<"$events" || die "no event '$e' in: $(tr '\n' ',' <<<"$events")"
    done
    [[ $(nexus_state) == online ]] || die "nexus $(nexus_state) after the rebuild"
    [[ $(nexus | jsq "len(d[0]['children'])") -eq 3 ]] || die "the nexus does not have 3 children"
    wait_rounds_after "$(rounds)" 120
    note "A. events node_offline, replica_faulted, replica_replaced, rebuild_started/finished;" \
        "fio rounds $r0 -> $(rounds) passed their verify"
    log "$(SHOAL_API=$SHOAL_API "$bin/shoal-control" --api "$SHOAL_API" volume get "$VOL")"

    t=$(elapsed)
    cluster_start_node 2
    end=$((SECONDS + 60))
    until has_event replica_removed node2; do
        ((SECONDS < end)) || die "node2's stale replica not removed within 60 s of its return"
        watch_io
        sleep 0.3
    done
    [[ $(rpc 2 bdev_lvol_get_lvols | jsq "len([l for l in d if l['name'] == '$VOL'])") -eq 0 ]] ||
        die "node2 still holds the stale replica"
    [[ $(rpc 2 nvmf_get_subsystems | jsq "len([s for s in d if s['subtype'] != 'Discovery'])") -eq 0 ]] ||
        die "node2 exports something"
    note "A. node2 back: its stale replica deleted $(since "$t")s after its restart, never exported"
}

# B. the leading shoal-control is killed: the second instance takes over; I/O goes on; the
# volume's state is the same.
phase_leader_killed() {
    local t r0 before after api2=http://$CLUSTER_IP:$((API_PORT + 1)) end
    [[ $(api GET /v1/leader | jsq "d['leader']['id']") == control1 ]] || die "control1 should lead"
    before=$(vol_get | vol_shape)
    r0=$(rounds)
    t=$(elapsed)
    kill -KILL "${pid[control1]}"
    wait "${pid[control1]}" 2>/dev/null || true
    unset "pid[control1]"
    SHOAL_API=$api2
    end=$((SECONDS + 30))
    until [[ $(api GET /v1/instance 2>/dev/null | jsq "d['leader']") == True ]]; do
        ((SECONDS < end)) || die "control2 did not take over within 30 s"
        watch_io
        sleep 0.1
    done
    note "B. control1 (leader) SIGKILL: control2 leads $(since "$t")s later (lease TTL ${LEASE_TTL}s)"
    wait_rounds_after "$r0" 120
    after=$(vol_get | vol_shape)
    [[ $after == "$before" ]] || die "the volume changed across the failover: $before -> $after"
    [[ $(nx_errors) -eq 0 ]] || die "the nexus counted I/O errors"
    note "B. fio rounds $r0 -> $(rounds) meanwhile; volume state intact through control2"
}

# C. etcd stopped (SIGTERM) while fio runs, for at least ETCD_DOWN seconds (longer than the
# leases: the leader steps down, the agents lose their registrations) and a fio round, then
# etcd starts again on its data: the API answers again, the state is intact, nothing was
# healed that did not need it.
phase_etcd_restarted() {
    local t r0 before after end
    before=$(vol_get | vol_shape)
    r0=$(rounds)
    t=$(elapsed)
    kill -TERM "${pid[etcd]}"
    wait "${pid[etcd]}" 2>/dev/null || true
    unset "pid[etcd]"
    log "etcd stopped"
    if vol_get >/dev/null 2>&1; then die "the API answered a volume without etcd"; fi
    wait_rounds_after "$r0" 120
    while (($(awk -v a="$t" -v b="$(elapsed)" 'BEGIN { print int(b - a) }') < ETCD_DOWN)); do
        watch_io
        sleep 0.5
    done
    [[ $(nx_errors) -eq 0 ]] || die "the nexus counted I/O errors"
    note "C. etcd stopped for $(since "$t")s: fio rounds $r0 -> $(rounds) completed without it"
    cluster_start_etcd
    log "etcd started again"
    t=$(elapsed)
    end=$((SECONDS + 60))
    until after=$(vol_get 2>/dev/null | vol_shape) && [[ $after == "$before" ]] &&
        [[ $(api GET /v1/nodes | grep -o '"status":"online"' | wc -l) -eq 4 ]] &&
        api GET /v1/leader | grep -q '"id"'; do
        ((SECONDS < end)) || die "after etcd's restart: the volume is $after (was $before), or not every node online, or no leader"
        watch_io
        sleep 0.3
    done
    note "C. etcd back: leader, 4 nodes online and the volume intact $(since "$t")s later"
    # Long enough for a healer misled by the outage to act (HEAL_AFTER), then check again.
    sleep "$((HEAL_AFTER + 2))"
    after=$(vol_get | vol_shape)
    [[ $after == "$before" ]] || die "the volume changed after etcd's restart: $before -> $after"
    [[ $(nx_errors) -eq 0 ]] || die "the nexus counted I/O errors"
}

# D. node1, the nexus's own node, is killed (shoald and agent, SIGKILL) while the guest's fio
# runs; the guest connected with --ctrl-loss-tmo, so its kernel keeps reconnecting to the
# address it connected to. Once node1 has been offline for HEAL_AFTER, the leader re-creates
# the nexus on a node holding a current replica (node3: the fewest nexuses, then the id) with
# the same NQN, namespace UUID and address (127.0.0.1:NX_PORT, which node1's death freed), and
# the guest's reconnect lands there: fio goes on with the same block device and passes its
# verify. Measured: the kill until the move is recorded, and until I/O resumes (the new
# nexus's first completed read or write: the outage the application saw). Then node1's
# replica is replaced on node2 and rebuilt; node1 comes back with no nexus and no export, and
# its stale replica is deleted. NX_NODE follows the nexus.
phase_nexus_node_killed() {
    local t r0 v="" moved="" resumed="" ops end new=""
    sleep 1
    r0=$(rounds)
    t=$(elapsed)
    kill_node 1
    log "node1 (the nexus's node: shoald and agent) killed with SIGKILL during fio round $((r0 + 1))"
    end=$((SECONDS + 120))
    while ((SECONDS < end)); do
        if [[ -z $new ]] && v=$(vol_get 2>/dev/null); then
            new=$(jsq "(d['target'] or {}).get('node', '')" <<<"$v")
            [[ $new == node1 ]] && new=""
            [[ -n $new ]] && moved=$(since "$t")
        fi
        if [[ -n $new ]]; then
            ops=$(rpc "${new#node}" bdev_get_iostat "{\"name\": \"$VOL\"}" 2>/dev/null |
                jsq "d['bdevs'][0]['num_read_ops'] + d['bdevs'][0]['num_write_ops']" 2>/dev/null) || ops=0
            if ((ops > 0)); then
                resumed=$(since "$t")
                break
            fi
        fi
        guest_alive || die "the guest ended (see its console)"
        if grep -q '^FAIL:' "$work/guest.log"; then die "the guest failed"; fi
        sleep 0.2
    done
    [[ -n $moved ]] || die "the nexus did not move within 120 s: $v"
    [[ -n $resumed ]] || die "the guest's I/O did not resume on $new within 120 s"
    NX_NODE=${new#node}
    [[ $new == node3 ]] || die "the nexus moved to $new, expected node3 (a current replica, fewest nexuses)"
    v=$(vol_get)
    [[ $(jsq "d['target']['nqn'] + ' ' + d['target']['traddr'] + ':' + d['target']['trsvcid']" <<<"$v") == \
        "$NQN_NX 127.0.0.1:$NX_PORT" ]] || die "the target changed its NQN or address: $v"
    [[ $(rpc "$NX_NODE" bdev_get_bdevs "{\"name\": \"$VOL\"}" | jsq "d[0]['uuid']") == "$VOL" ]] ||
        die "the new nexus's namespace UUID is not the volume's"
    note "D. node1 (nexus) SIGKILL: nexus re-created on $new ${moved}s after the kill (lease TTL" \
        "${LEASE_TTL}s + HEAL_AFTER ${HEAL_AFTER}s); guest I/O resumed ${resumed}s after the kill" \
        "(the outage: reconnect-delay 1 s, same NQN, namespace and address)"
    expect_event nexus_moved "$new"
    expect_event replica_faulted node1
    wait_rounds_after "$r0" 120
    note "D. fio rounds $r0 -> $(rounds) passed their verify across the move (the same block device)"

    # node1's replica: replaced on node2 (the only node without one) and rebuilt.
    end=$((SECONDS + 120))
    until v=$(vol_get 2>/dev/null) && [[ $(vol_nodes <<<"$v") == "node2 node3 node4" ]] &&
        [[ $(jsq "all(r['state'] == 'online' for r in d['replica_list'])" <<<"$v") == True ]]; do
        ((SECONDS < end)) || die "node1's replica not replaced and rebuilt within 120 s: $v"
        watch_io
        sleep 0.3
    done
    note "D. node1's replica replaced on node2 and rebuilt $(since "$t")s after the kill"
    t=$(elapsed)
    cluster_start_node 1
    end=$((SECONDS + 60))
    until has_event replica_removed node1; do
        ((SECONDS < end)) || die "node1's stale replica not removed within 60 s of its return"
        watch_io
        sleep 0.3
    done
    [[ $(rpc 1 nexus_get | jsq "len(d)") -eq 0 ]] || die "node1 serves a nexus again"
    [[ $(rpc 1 bdev_lvol_get_lvols | jsq "len([l for l in d if l['name'] == '$VOL'])") -eq 0 ]] ||
        die "node1 still holds the stale replica"
    [[ $(rpc 1 nvmf_get_subsystems | jsq "len([s for s in d if s['subtype'] != 'Discovery'])") -eq 0 ]] ||
        die "node1 exports something"
    note "D. node1 back: no nexus, no export; its stale replica deleted $(since "$t")s after its restart"
    wait_rounds_after "$(rounds)" 120
}

# E. the volume grows by 32 MiB while fio runs: the API answers once every replica and the
# nexus have the new size; the guest's block device (/sys/block/nvmeXnY/size, printed after
# each fio round) shows it without reconnecting (the target's Namespace Attribute Changed
# event); fio goes on without an error. NX_SIZE becomes the new size (the replicas are
# compared over it at the end). Self-contained: needs only VOL, the guest and the nexus (NX_NODE).
phase_resize() {
    local t r0 grown=$((NX_SIZE + (32 << 20))) v n uuid bytes end
    r0=$(rounds)
    t=$(elapsed)
    v=$(api POST "/v1/volumes/$VOL/resize" "{\"size_bytes\": $grown}") || die "resize"
    [[ $(jsq "d['size_bytes']" <<<"$v") -eq $grown ]] || die "resize answered $v"
    note "E. volume grown from $NX_SIZE to $grown bytes in $(since "$t")s (the replicas, then the nexus)"
    [[ $(nexus | jsq "d[0]['size']") -eq $grown ]] || die "the nexus has $(nexus | jsq "d[0]['size']") bytes"
    for n in $(vol_nodes <<<"$v" | sed 's/node//g'); do
        uuid=$(rpc "$n" bdev_lvol_get_lvols | jsq "[l['uuid'] for l in d if l['name'] == '$VOL'][0]")
        bytes=$(rpc "$n" bdev_get_bdevs "{\"name\": \"$uuid\"}" | jsq "d[0]['num_blocks'] * d[0]['block_size']")
        ((bytes >= grown + LABEL_BYTES)) || die "node$n's replica has $bytes bytes"
    done
    end=$((SECONDS + 90))
    until grep -q "^$NAME: size $((grown / 512))" "$work/guest.log" 2>/dev/null; do
        ((SECONDS < end)) || die "the guest's device did not show $grown bytes within 90 s"
        watch_io
        sleep 0.3
    done
    note "E. the guest's block device shows $grown bytes $(since "$t")s after the request (no reconnect)"
    wait_rounds_after "$r0" 120
    [[ $(nx_errors) -eq 0 ]] || die "the nexus counted I/O errors"
    note "E. fio rounds $r0 -> $(rounds) passed their verify across the growth"
    NX_SIZE=$grown
}

# check_holdings: every node holds exactly what the control plane says: the volume's lvol on
# its replica nodes only (and no other lvol), the nexus on node NX_NODE only, the volume's
# export there and a replica's export on each other replica node, nothing else.
check_holdings() {
    local v reps n lv want_lv subs want_subs nx
    v=$(vol_get)
    reps=" $(vol_nodes <<<"$v") "
    for n in 1 2 3 4; do
        lv=$(rpc "$n" bdev_lvol_get_lvols | jsq "' '.join(sorted(l['name'] for l in d))")
        want_lv=""
        [[ $reps == *" node$n "* ]] && want_lv=$VOL
        [[ $lv == "$want_lv" ]] || die "node$n holds lvols [$lv], the control plane says [$want_lv]"
        nx=$(rpc "$n" nexus_get | jsq "' '.join(x['name'] for x in d)")
        [[ $nx == "$([[ $n -eq $NX_NODE ]] && echo "$VOL")" ]] || die "node$n holds nexuses [$nx]"
        subs=$(rpc "$n" nvmf_get_subsystems |
            jsq "' '.join(sorted(s['nqn'] for s in d if s['subtype'] != 'Discovery'))")
        want_subs=""
        if [[ $n -eq $NX_NODE ]]; then
            want_subs=$NQN_NX
        elif [[ $reps == *" node$n "* ]]; then
            want_subs=nqn.2016-06.io.shoal:replica:$VOL:node$n
        fi
        [[ $subs == "$want_subs" ]] || die "node$n exports [$subs], the control plane says [$want_subs]"
    done
    note "every node holds exactly what the control plane says (replicas on${reps% }, nexus on node$NX_NODE)"
}

# compare_replicas_via_guest: unpublish, export each replica's lvol on its own (on the host's
# 127.0.0.1, which the guest reaches), and let the guest checksum each through NVMe/TCP: every
# one must equal the device checksum the guest took through the nexus.
compare_replicas_via_guest() {
    local n port uuid nqn checks="" sums fail=0 line
    api POST "/v1/volumes/$VOL/unpublish" '{}' >/dev/null || die "unpublish"
    for n in $(vol_get | vol_nodes | sed 's/node//g'); do
        port=$((NX_PORT + 10 + n))
        port_free 127.0.0.1 "$port"
        uuid=$(rpc "$n" bdev_lvol_get_lvols | jsq "[l['uuid'] for l in d if l['name'] == '$VOL'][0]")
        nqn=nqn.2016-06.io.shoal:check:node$n
        rpc "$n" nvmf_create_subsystem "{\"nqn\": \"$nqn\", \"allow_any_host\": true,
            \"serial_number\": \"SHOALCHECK$n\"}" >/dev/null
        rpc "$n" nvmf_subsystem_add_ns "{\"nqn\": \"$nqn\", \"namespace\": {\"bdev_name\": \"$uuid\"}}" >/dev/null
        rpc "$n" nvmf_subsystem_add_listener "{\"nqn\": \"$nqn\", \"listen_address\": {\"trtype\": \"TCP\",
            \"adrfam\": \"IPv4\", \"traddr\": \"127.0.0.1\", \"trsvcid\": \"$port\"}}" >/dev/null
        checks+=" $nqn:$port"
    done
    hack/guest/run.sh --no-build -q -t 180 --loglevel 5 -l "$work/guest-sum.log" \
        -e CHECKS="${checks# }" -e NX_SIZE="$NX_SIZE" -e LABEL_BYTES="$LABEL_BYTES" \
        -e TAG="$NAME" "$here/replica-sum-guest.sh" >"$work/run-sum.out" 2>&1 ||
        { cat "$work/run-sum.out" >&2; die "the replica checksum guest failed"; }
    sums=$(grep "^$NAME: replica " "$work/guest-sum.log")
    [[ $(wc -l <<<"$sums") -eq 3 ]] || die "expected 3 replica checksums: $sums"
    while read -r line; do
        log "$line"
        [[ ${line##* } == "$gsum" ]] || fail=1
    done <<<"$sums"
    log "guest device (through the nexus) sha256 $gsum"
    [[ $fail -eq 0 ]] || die "the replicas differ from the device the guest wrote"
    for n in $(vol_get | vol_nodes | sed 's/node//g'); do
        rpc "$n" nvmf_delete_subsystem "{\"nqn\": \"nqn.2016-06.io.shoal:check:node$n\"}" >/dev/null
    done
    note "the 3 replicas (node4's rebuilt one among them), each read through its own NVMe/TCP" \
        "export, are byte-identical to the device the guest wrote"
}

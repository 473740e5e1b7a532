#!/usr/bin/env bash
# Crash test judged by a real file system, through a 2-way nexus: one child's disk loses its
# power while the Linux host (the QEMU guest) writes and fsyncs files on ext4; the nexus must
# go on from the other child; then both nodes crash, the nexus is re-created from its
# children's labels, and every file made durable is there.
#
#   node1  127.0.0.1:CRASH_NX_PORT   the nexus nx0 (64 MiB) over bdev:///local and the remote
#                                    child; exported to the guest (as 10.0.2.2:CRASH_NX_PORT)
#          `local`: pfail over uring r1.img
#   node2  127.0.0.42:CRASH_REP_PORT replica `p2`: pfail over uring r2.img, in its own subsystem
#
# Both children are disks with a volatile write cache (pfail). Each round (CRASH_ROUNDS,
# default 2), on fresh images, with the victim child alternating (odd rounds: node1's local
# child; even rounds: node2's remote child):
#   1. nexus_create over both children, exported; write boot (crash-ext4-guest.sh MODE=write:
#      mkfs.ext4, noise writes, files fsynced one by one, "DURABLE fN SIZE SHA256" each);
#   2. after a random number of durable files (3-10) and a random 0-1.5 s, at the first
#      moment the victim's cache holds writes (pfail-cut.py, at most 3 s): bdev_pfail_cut
#      keep=random (seed logged) of the victim's pfail device;
#   3. the nexus must fault the victim (within 40 s) and keep serving: the guest must report at
#      least 3 more durable files after the fault, with no error;
#   4. node1 gets SIGKILL, 1 s later node2 (a crash of both nodes; a pfail device dies with its
#      process, so the survivor's cache is lost too, as in a keep=none cut), then the guest is
#      killed;
#   5. both nodes restart on the same images without pfail (same bdev names and NQNs);
#      nexus_create with the same child URIs must pick the survivor as current from the labels
#      (written when the victim faulted): the survivor comes up online without a rebuild, the
#      victim is rebuilt from it and comes online;
#   6. check boot (MODE=check): journal replayed, `e2fsck -fn` clean, and every file reported
#      durable (before the cut and after it, while degraded) intact by size and SHA-256;
#   7. both nodes stop on SIGTERM with status 0, and the two images' data regions (after the
#      1 MiB label region) are identical.
# What it asserts: an fsync acknowledged through the nexus is durable on every child still in
# sync (FUA legs and Flush reach both children's disks; the victim's loss is covered by the
# survivor); a child that lost its cache is faulted, and the fault is recorded in the
# survivor's label before the nexus acknowledges writes without the victim, so that after a
# crash of everything the re-created nexus does not take the victim's older data as current
# (that would lose the files written while degraded). Any lost or damaged durable file, an
# unclean fsck, a victim not faulted, the survivor rebuilt or the victim not, differing
# replicas, a panic or a non-zero exit fails the test.
#
# Env: CRASH_ROUNDS (2), CRASH_NX_PORT (4722), CRASH_REP_PORT (4723), CRASH_SEEDS ("S1 S2 ...",
# the cut seeds, default random and logged), CRASH_RANDOM (seeds this script's own choices;
# logged), KEEP=1 keeps the work directory; SHOAL_BIN_DIR=DIR uses the binaries in DIR.
set -euo pipefail
NAME=crash-nexus
NODES="1 2"
# shellcheck source=hack/tests/crash-lib.sh
. "$(dirname "$0")/crash-lib.sh"

ROUNDS=${CRASH_ROUNDS:-2}
NX_PORT=${CRASH_NX_PORT:-4722}
REP_PORT=${CRASH_REP_PORT:-4723}
REP_ADDR=127.0.0.42
read -r -a SEEDS <<<"${CRASH_SEEDS:-}"
CRASH_RANDOM=${CRASH_RANDOM:-$((($(date +%s%N) / 1000) % 1000000007))}
RANDOM=$CRASH_RANDOM
NQN_NX=nqn.2016-06.io.shoal:crash-nexus
NQN_REP=nqn.2016-06.io.shoal:crash-replica2
NX_UUID=6c0a5d1e-7e57-4c4a-9e00-0000000a0001
REP_UUID=6c0a5d1e-7e57-4c4a-9e00-0000000a0002
NX_SIZE=$((64 << 20))
IMG_SIZE=72M
LABEL_BYTES=$((1 << 20)) # shoal_replication::META_BYTES
IO_TIMEOUT_MS=5000
URI_HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:5ba1e0b1-0000-4000-8000-0000000000c1
URI_OPTS="hostnqn=$URI_HOSTNQN&ctrl-loss-tmo=3"
REMOTE_URI="nvmf://$REP_ADDR:$REP_PORT/$NQN_REP?$URI_OPTS"
LOCAL_URI=bdev:///local
GUEST_TIMEOUT=300

# config N pfail|plain: node N's config. The exported/child bdev is `local` (node1) or `p2`
# (node2): pfail over the uring bdev rN, or rN itself renamed so in plain mode.
config() {
    local n=$1 mode=$2 top uring
    if [[ $n -eq 1 ]]; then top=local; else top=p2; fi
    uring=r$n
    [[ $mode == plain ]] && uring=$top
    cat <<EOF
{ "subsystems": [
  { "subsystem": "bdev", "config": [
    { "method": "bdev_uring_create",
      "params": { "name": "$uring", "filename": "$work/r$n.img", "block_size": 4096 } }
EOF
    [[ $mode == pfail ]] && cat <<EOF
    , { "method": "bdev_pfail_create", "params": { "name": "$top", "base_bdev_name": "r$n" } }
EOF
    echo '  ] },'
    echo '  { "subsystem": "nvmf", "config": ['
    echo '    { "method": "nvmf_create_transport", "params": { "trtype": "TCP" } }'
    [[ $n -eq 2 ]] && cat <<EOF
    , { "method": "nvmf_create_subsystem",
      "params": { "nqn": "$NQN_REP", "allow_any_host": true, "serial_number": "SHOALCRASHR2" } },
    { "method": "nvmf_subsystem_add_ns",
      "params": { "nqn": "$NQN_REP", "namespace": { "bdev_name": "p2", "uuid": "$REP_UUID" } } },
    { "method": "nvmf_subsystem_add_listener",
      "params": { "nqn": "$NQN_REP", "listen_address": { "trtype": "TCP", "adrfam": "IPv4",
                  "traddr": "$REP_ADDR", "trsvcid": "$REP_PORT" } } }
EOF
    echo '] } ] }'
}

nexus() { rpc 1 nexus_get '{"name": "nx0"}'; }
# child_field URI FIELD: FIELD of that child in nexus_get (matched without the query).
child_field() {
    nexus | jsq "[c for c in d[0]['children'] if c['uri'].split('?')[0] == '${1%%\?*}'][0]['$2']"
}
nexus_state() { nexus | jsq "d[0]['state']"; }

# create_nexus: nexus_create over both children, exported to the guest.
create_nexus() {
    local out
    out=$(rpc 1 nexus_create "{\"name\": \"nx0\", \"size\": $NX_SIZE,
        \"io_timeout_ms\": $IO_TIMEOUT_MS, \"children\": [\"$LOCAL_URI\", \"$REMOTE_URI\"]}") ||
        die "nexus_create: $out"
    rpc 1 nvmf_create_subsystem "{\"nqn\": \"$NQN_NX\", \"allow_any_host\": true,
        \"serial_number\": \"SHOALCRASHNX\"}" >/dev/null
    rpc 1 nvmf_subsystem_add_ns "{\"nqn\": \"$NQN_NX\", \"namespace\": {\"bdev_name\": \"nx0\",
        \"uuid\": \"$NX_UUID\"}}" >/dev/null
    rpc 1 nvmf_subsystem_add_listener "{\"nqn\": \"$NQN_NX\", \"listen_address\": {
        \"trtype\": \"TCP\", \"adrfam\": \"IPv4\", \"traddr\": \"127.0.0.1\",
        \"trsvcid\": \"$NX_PORT\"}}" >/dev/null
}

# data_sum N: SHA-256 of rN.img's data region (after the labels).
data_sum() {
    dd if="$work/r$1.img" bs=$LABEL_BYTES skip=1 count=$((NX_SIZE / LABEL_BYTES)) status=none |
        sha256sum | cut -d' ' -f1
}

durable() { console "$1" | grep -cE '^DURABLE f[0-9]+ [0-9]+ [0-9a-f]{64}$' || true; }

# guest_ok LABEL: fail when the write guest ended or failed.
guest_ok() {
    guest_alive || guest_fail "$1" "the write guest ended"
    ! console "$1" | grep -q '^FAIL:\|^crash-ext4: f[0-9]* failed' ||
        guest_fail "$1" "the write guest saw an error"
}

# wait_durable LABEL N SECONDS: until the write guest has reported N durable files.
wait_durable() {
    local label=$1 want=$2 end=$((SECONDS + $3))
    while ((SECONDS < end)); do
        [[ $(durable "$label") -ge $want ]] && return 0
        guest_ok "$label"
        check_node 1
        check_node 2
        sleep 0.1
    done
    guest_fail "$label" "fewer than $want durable files after $3 s"
}

# wait_child URI STATE SECONDS
wait_child() {
    local u=$1 want=$2 st="" end=$((SECONDS + $3))
    while ((SECONDS < end)); do
        st=$(child_field "$u" state) || die "nexus_get failed"
        [[ $st == "$want" ]] && return 0
        check_node 1
        check_node 2
        sleep 0.2
    done
    nexus >&2 || true
    die "child $u is $st, not $want, after $3 s"
}

round() {
    local r=$1 seed cut_after delay_ms out dirty kept waited n_cut n_fault n ndur rc intact
    local victim vnode survivor vname reason s1 s2 rb
    if ((r % 2 == 1)); then
        victim=$LOCAL_URI vnode=1 survivor=$REMOTE_URI vname=local
    else
        victim=$REMOTE_URI vnode=2 survivor=$LOCAL_URI vname=p2
    fi
    seed=${SEEDS[$((r - 1))]:-$(seed64)}
    cut_after=$(rand 3 10)
    delay_ms=$(rand 0 1500)
    for n in 1 2; do
        rm -f "$work/r$n.img"
        truncate -s "$IMG_SIZE" "$work/r$n.img"
        config "$n" pfail >"$work/n$n.json"
    done
    start_node 2
    start_node 1
    create_nexus
    [[ $(nexus_state) == online ]] || die "round $r: new nexus is $(nexus_state)"
    start_guest "w$r" "$GUEST_TIMEOUT" "$here/crash-ext4-guest.sh" \
        -e NQN="$NQN_NX" -e PORT="$NX_PORT" -e MODE=write -e SEED="$(rand 1 1000000)"
    log "round $r: write guest booting; cut of node$vnode's $vname after $cut_after durable" \
        "files + $delay_ms ms (keep random, seed $seed)"
    wait_durable "w$r" "$cut_after" 240
    sleep "$(awk -v m="$delay_ms" 'BEGIN { printf "%.3f", m / 1000 }')"
    n_cut=$(durable "w$r")
    out=$(pfail_cut "$vnode" "$vname" random "$seed") || die "round $r: bdev_pfail_cut failed: $out"
    dirty=$(jsq "d['dirty_blocks']" <<<"$out")
    kept=$(jsq "d['kept_blocks']" <<<"$out")
    waited=$(jsq "'%d ms later, cache at %d blocks' % (d['waited_ms'], d['cached_seen'])" <<<"$out")
    wait_child "$victim" faulted 40
    reason=$(child_field "$victim" fault_reason)
    [[ $(nexus_state) == degraded ]] || die "round $r: nexus is $(nexus_state), not degraded"
    n_fault=$(durable "w$r")
    wait_durable "w$r" $((n_fault + 3)) 120
    guest_ok "w$r"
    kill_node 1
    sleep 1
    kill_node 2
    kill_guest
    console "w$r" | grep -E '^DURABLE f[0-9]+ [0-9]+ [0-9a-f]{64}$' | cut -d' ' -f2- \
        >"$work/durable$r.txt" || true
    ndur=$(wc -l <"$work/durable$r.txt")
    log "round $r: cut at $n_cut durable files ($dirty dirty blocks, $kept kept); victim" \
        "faulted ($reason) at $n_fault; $ndur durable in all; both nodes and the guest killed"

    for n in 1 2; do config "$n" plain >"$work/n$n.json"; done
    start_node 2
    start_node 1
    create_nexus
    s1=$(child_field "$survivor" state)
    [[ $s1 == online ]] || die "round $r: re-created nexus: survivor $survivor is $s1, not online"
    wait_child "$victim" online 120
    s2=$(child_field "$survivor" last_rebuild)
    [[ $s2 == None ]] ||
        die "round $r: the survivor was rebuilt ($s2): the nexus took the victim as current"
    rb=$(child_field "$victim" last_rebuild)
    [[ $rb != None ]] || die "round $r: the victim was not rebuilt: the nexus took it as current"
    rb=$(child_field "$victim" last_rebuild |
        python3 -c 'import ast, sys; r = ast.literal_eval(sys.stdin.read())
print("%s, %d of %d segments in %d ms" % (r["outcome"], r["segments_copied"],
      r["segments_total"], r["duration_ms"]))')
    log "round $r: nexus re-created: survivor online, victim rebuilt ($rb)"

    start_guest "c$r" "$GUEST_TIMEOUT" "$here/crash-ext4-guest.sh" \
        -e NQN="$NQN_NX" -e PORT="$NX_PORT" -e MODE=check -e SEED=0 \
        -f "$work/durable$r.txt:/guest/durable.txt"
    wait_guest
    rc=$guest_rc
    check_node 1
    check_node 2
    console "c$r" | grep '^LOST ' >&2 || true
    [[ $rc -eq 0 ]] ||
        guest_fail "c$r" "round $r (victim $vname, seed $seed): check guest exited $rc"
    intact=$(console "c$r" | sed -n 's/^crash-ext4: durable files: \([0-9]*\) intact.*/\1/p')
    [[ $intact -eq $ndur ]] || guest_fail "c$r" "round $r: $intact of $ndur durable files intact"
    [[ $(nexus_state) == online ]] || die "round $r: nexus $(nexus_state) after the check"
    stop_node 1
    stop_node 2
    s1=$(data_sum 1)
    s2=$(data_sum 2)
    [[ $s1 == "$s2" ]] || die "round $r: the replicas' data regions differ ($s1 / $s2)"
    note "round $r: cut node$vnode's $vname (keep random, seed $seed) after $n_cut durable files" \
        "(+${delay_ms} ms, then $waited): $dirty dirty blocks, $kept kept; faulted ($reason)," \
        "$((ndur - n_fault)) more durable files while degraded; re-created: victim rebuilt" \
        "($rb); replay + e2fsck -fn clean; $ndur/$ndur durable files intact; replicas identical"
}

build
port_free 127.0.0.1 "$NX_PORT"
port_free "$REP_ADDR" "$REP_PORT"
note "CRASH_RANDOM=$CRASH_RANDOM, $ROUNDS rounds, nexus on 127.0.0.1:$NX_PORT, replica on" \
    "$REP_ADDR:$REP_PORT"
for r in $(seq "$ROUNDS"); do round "$r"; done
result=PASS

# shellcheck shell=bash
# What the nexus system tests share (sourced by test-nexus-*.sh): three shoald nodes, a
# three-way nexus on node1 exported to the Linux host in the QEMU guest, RPC helpers, the
# guest's fio rounds, and the byte-for-byte comparison of the replicas at the end.
#
#   node1  127.0.0.1:NX_PORT     the nexus nx0 (NX_SIZE) over bdev:///local (uring on r1.img) and
#                                the two replicas below; exported as NQN_NX, reached by the guest
#                                at 10.0.2.2:NX_PORT (QEMU forwards only the host's 127.0.0.1)
#   node2  REPLICA_NET2:NX_PORT  replica r2 (uring on r2.img) in its own subsystem
#   node3  REPLICA_NET3:NX_PORT  replica r3 (uring on r3.img) in its own subsystem
#
# Set before sourcing (defaults in brackets): NAME (the test's name: logs, work directory, the
# guest's progress lines), NX_PORT [4420], REPLICA_NET [127.0.0.: node N listens on
# ${REPLICA_NET}N], NX_SIZE [64 MiB], NODE1_ARGS [none: more shoald arguments for node1],
# GUEST_SMP [2], IO_TIMEOUT_MS [5000], REBUILD_MIB [8], GUEST_TIMEOUT [420], LVOL [unset]. The
# test calls setup_nexus, start_guest SCRIPT [ENV...], its phases (e.g. fault_phase), then
# finish_guest and compare_replicas, and sets result=PASS.
#
# LVOL=1: the replicas are logical volumes. Each node's file is the bdev diskN holding a pool
# `lvs` (made with `shoalctl pool create` on the first start) with the volume lvs/replicaN
# (`shoalctl volume create`; thin on node LVOL_THIN [3], thick on the others); node1's child is
# bdev:///lvs/replica1 (by its alias), nodes 2 and 3 export theirs (by alias) over NVMe/TCP. A
# restarted node must find its volume again by examine, with the same UUID. The replicas are
# compared through the volumes, not the files (whose layout holds the pool's metadata): the
# nodes are stopped, started again (examine), and each exports its volume on 127.0.0.1; the
# guest (still up, READBACK=1) reads each one's data region over NVMe/TCP and prints its
# sha256 and those of its eighths.
# Env: KEEP=1 keeps the work directory (logs and images) even on success; SHOAL_BIN_DIR=DIR
# runs the shoald and shoalctl found in DIR instead of building them.

: "${NAME:?set NAME before sourcing lib-nexus.sh}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
# shellcheck disable=SC2034 # for the tests that source this file
here=hack/tests
bin=${SHOAL_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}

NX_PORT=${NX_PORT:-4420}
REPLICA_NET=${REPLICA_NET:-127.0.0.}
NQN_NX=nqn.2016-06.io.shoal:nexus0
NX_SIZE=${NX_SIZE:-$((64 << 20))}
IMG_SIZE=$(((NX_SIZE >> 20) + 16))M
LABEL_BYTES=$((1 << 20)) # shoal_replication::META_BYTES
IO_TIMEOUT_MS=${IO_TIMEOUT_MS:-5000} # nexus: a child I/O outstanding this long faults the child
REBUILD_MIB=${REBUILD_MIB:-8}        # MiB/s: a rebuild takes seconds, while fio writes
NODE1_ARGS=${NODE1_ARGS:-}
GUEST_SMP=${GUEST_SMP:-2}
# The NVMe/TCP host's knobs for the replicas: give up a lost replica after 3 s.
URI_OPTS="hostnqn=nqn.2014-08.org.nvmexpress:uuid:5ba1e0b1-0000-4000-8000-0000000000a1&ctrl-loss-tmo=3"
GUEST_TIMEOUT=${GUEST_TIMEOUT:-420}
LVOL=${LVOL:-}
LVOL_THIN=${LVOL_THIN:-3}
# The volumes: the label region plus the nexus, rounded up to the pool's 4 MiB clusters.
LVOL_MIB=$((((LABEL_BYTES + NX_SIZE) / 1048576 + 3) / 4 * 4))
declare -A lvol_uuid=()

work=$(mktemp -d "/var/tmp/shoal-$NAME.XXXXXX")
declare -A pid=()
ctl_pid="" guest_pid="" result=FAIL
summary=()
t0=$(date +%s.%N)

log() { printf '%s: [%6.1fs] %s\n' "$NAME" "$(elapsed)" "$*" >&2; }
# note MSG: log MSG and keep it for the summary.
note() {
    log "$*"
    summary+=("[$(elapsed)s] $*")
}
elapsed() { awk -v s="$t0" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }
plain() { sed 's/\x1b\[[0-9;]*m//g' "$@"; } # shoald's log without colours

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    set +e
    [[ -n $guest_pid ]] && kill -TERM "$guest_pid" 2>/dev/null && wait "$guest_pid" 2>/dev/null
    for n in "${!pid[@]}"; do
        kill -CONT "${pid[$n]}" 2>/dev/null
        kill -KILL "${pid[$n]}" 2>/dev/null
    done
    [[ -n $ctl_pid ]] && kill "$ctl_pid" 2>/dev/null
    wait 2>/dev/null
    if [[ $result == PASS && -z ${KEEP:-} ]]; then
        rm -rf "$work"
    else
        if [[ $result != PASS ]]; then
            for n in 1 2 3; do
                [[ -f $work/n$n.log ]] || continue
                printf '\n--- node%s log (last 25 lines, no backtrace frames) ---\n' "$n" >&2
                plain "$work/n$n.log" | grep -v '^ *at \|^ *[0-9]*: ' | tail -n 25 >&2
            done
            if [[ -f $work/guest.log ]]; then
                printf '\n--- guest console (last 40 lines) ---\n' >&2
                tail -n 40 "$work/guest.log" >&2
            fi
        fi
        [[ -n ${KEEP:-} ]] || rm -f "$work"/*.img
        log "logs kept in $work"
    fi
    printf '\n=== %s summary ===\n' "$NAME" >&2
    for l in "${summary[@]}"; do printf '  %s\n' "$l" >&2; done
    log "$result ($(elapsed) s)"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() {
    note "FAIL: $*"
    exit 1
}

# check_nodes: fail at once when a node that should run has died or a reactor panicked (a
# panicking reactor thread leaves the process up with its I/O dead).
check_nodes() {
    local n
    for n in 1 2 3; do
        if grep -q 'panicked at' "$work/n$n.log" 2>/dev/null; then
            plain "$work/n$n.log" | grep -A1 'panicked at' | head -n 4 >&2
            die "node$n panicked (see above; full log in n$n.log)"
        fi
        if [[ -n ${pid[$n]:-} ]] && ! kill -0 "${pid[$n]}" 2>/dev/null; then
            die "node$n died"
        fi
    done
}

sock() { echo "$work/n$1.sock"; }
# rpc N METHOD [JSON]: one RPC call to node N (bounded), the result on stdout.
rpc() {
    local params=${3:-}
    [[ -n $params ]] || params='{}'
    timeout 45 "$bin/shoalctl" -s "$(sock "$1")" -t 40 rpc "$2" "$params"
}
# jsq EXPR: evaluate EXPR in Python with d = the JSON document on stdin.
jsq() { python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }

# node_config N: the SPDK-format config of node N: a uring bdev on rN.img, and for the
# replica nodes (2, 3) its subsystem and listener (LVOL: the bdev diskN and the transport; the
# volume is exported by lvol_ready once the node is up).
node_config() {
    local n=$1 name=r$1 nqn=nqn.2016-06.io.shoal:replica$1
    [[ $n -eq 1 ]] && name=local
    [[ -n $LVOL ]] && name=disk$n
    cat <<EOF
{ "subsystems": [
  { "subsystem": "bdev", "config": [
    { "method": "bdev_uring_create",
      "params": { "name": "$name", "filename": "$work/r$n.img", "block_size": 4096 } } ] },
  { "subsystem": "nvmf", "config": [
    { "method": "nvmf_create_transport", "params": { "trtype": "TCP" } }
EOF
    if [[ $n -ne 1 && -z $LVOL ]]; then
        cat <<EOF
    , { "method": "nvmf_create_subsystem",
      "params": { "nqn": "$nqn", "allow_any_host": true, "serial_number": "SHOALREPLICA$n" } },
    { "method": "nvmf_subsystem_add_ns",
      "params": { "nqn": "$nqn", "namespace": { "bdev_name": "$name" } } },
    { "method": "nvmf_subsystem_add_listener",
      "params": { "nqn": "$nqn", "listen_address": { "trtype": "TCP", "adrfam": "IPv4",
                  "traddr": "$REPLICA_NET$n", "trsvcid": "$NX_PORT" } } }
EOF
    fi
    echo '] } ] }'
}

# start_node N: start shoald N (log appended to nN.log) and wait for its RPC socket.
start_node() {
    local n=$1 s args=()
    s=$(sock "$n")
    rm -f "$s"
    [[ $n -eq 1 && -n $NODE1_ARGS ]] && read -ra args <<<"$NODE1_ARGS"
    echo "=== start $(date +%T.%N)" >>"$work/n$n.log"
    "$bin/shoald" -c "$work/n$n.json" -r "$s" --log info "${args[@]}" >>"$work/n$n.log" 2>&1 &
    pid[$n]=$!
    for _ in $(seq 100); do
        if [[ -S $s ]]; then
            [[ -z $LVOL ]] || lvol_ready "$n"
            return 0
        fi
        kill -0 "${pid[$n]}" 2>/dev/null || break
        sleep 0.1
    done
    plain "$work/n$n.log" | tail -n 20 >&2
    die "node$n did not start"
}

# ctl N ARGS...: shoalctl on node N (bounded).
ctl() {
    local n=$1
    shift
    timeout 45 "$bin/shoalctl" -s "$(sock "$n")" -t 40 "$@"
}

# export_volume N NQN ADDR: export node N's volume lvs/replicaN (named by its alias) as NQN,
# listening on ADDR:PORT.
export_volume() {
    local n=$1 nqn=$2 addr=$3
    rpc "$n" nvmf_create_subsystem "{\"nqn\": \"$nqn\", \"allow_any_host\": true,
        \"serial_number\": \"SHOALREPLICA$n\"}" >/dev/null || die "node$n: create $nqn"
    rpc "$n" nvmf_subsystem_add_ns "{\"nqn\": \"$nqn\",
        \"namespace\": {\"bdev_name\": \"lvs/replica$n\"}}" >/dev/null ||
        die "node$n: export lvs/replica$n in $nqn"
    rpc "$n" nvmf_subsystem_add_listener "{\"nqn\": \"$nqn\", \"listen_address\": {
        \"trtype\": \"TCP\", \"adrfam\": \"IPv4\", \"traddr\": \"${addr%:*}\",
        \"trsvcid\": \"${addr##*:}\"}}" >/dev/null || die "node$n: listen on $addr"
}

# lvol_ready N (LVOL): node N is up. On its first start, make the pool and the volume; on a
# restart, check that examine brought the same volume back. Then nodes 2 and 3 export it as
# their replica (not during the read-back, READBACK_PHASE set).
lvol_ready() {
    local n=$1 uuid thin=()
    if [[ -z ${lvol_uuid[$n]:-} ]]; then
        [[ $n -eq $LVOL_THIN ]] && thin=(--thin)
        ctl "$n" pool create "disk$n" lvs >/dev/null || die "node$n: shoalctl pool create"
        uuid=$(ctl "$n" --json volume create lvs "replica$n" "${LVOL_MIB}MiB" "${thin[@]}" |
            jsq d) || die "node$n: shoalctl volume create"
        lvol_uuid[$n]=$uuid
    else
        uuid=$(ctl "$n" --json volume list --pool lvs |
            jsq "[v['uuid'] for v in d if v['alias'] == 'lvs/replica$n'][0]") ||
            die "node$n: lvs/replica$n did not come back (examine) after the restart"
        [[ $uuid == "${lvol_uuid[$n]}" ]] ||
            die "node$n: lvs/replica$n came back as $uuid, not ${lvol_uuid[$n]}"
    fi
    if [[ $n -ne 1 && -z ${READBACK_PHASE:-} ]]; then
        export_volume "$n" "nqn.2016-06.io.shoal:replica$n" "$REPLICA_NET$n:$NX_PORT"
    fi
}

# stop_node N: SIGTERM, wait up to 30 s, expect exit status 0.
stop_node() {
    local n=$1 p=${pid[$1]} st=0
    kill -TERM "$p"
    for _ in $(seq 300); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$p" 2>/dev/null && die "node$n still running 30 s after SIGTERM"
    wait "$p" || st=$?
    unset "pid[$n]"
    [[ $st -eq 0 ]] || die "node$n exited with status $st after SIGTERM"
}

uri() { echo "nvmf://$REPLICA_NET$1:$NX_PORT/nqn.2016-06.io.shoal:replica$1?$URI_OPTS"; }
# local_child: node1's own child of the nexus.
local_child() { if [[ -n $LVOL ]]; then echo bdev:///lvs/replica1; else echo bdev:///local; fi; }

nexus() { rpc 1 nexus_get '{"name": "nx0"}'; }
# child_field URI FIELD: FIELD of that child in nexus_get (matched without the query).
child_field() {
    nexus | jsq "[c for c in d[0]['children'] if c['uri'].split('?')[0] == '${1%%\?*}'][0]['$2']"
}
nexus_state() { nexus | jsq "d[0]['state']"; }
# last_rebuild URI: the child's last rebuild, in short.
last_rebuild() {
    nexus | jsq "(lambda r: '%s, %d of %d segments (%.1f MiB) in %d ms' % (r['outcome'],
        r['segments_copied'], r['segments_total'], r['bytes_copied'] / 1048576, r['duration_ms']))(
        [c for c in d[0]['children'] if c['uri'].split('?')[0] == '${1%%\?*}'][0]['last_rebuild'])"
}

# wait_child URI STATE SECONDS: wait until the child is in STATE.
wait_child() {
    local u=$1 want=$2 limit=$3 st="" end=$((SECONDS + $3))
    while ((SECONDS < end)); do
        st=$(child_field "$u" state) || die "nexus_get failed"
        [[ $st == "$want" ]] && return 0
        guest_alive || die "the guest ended while waiting for $u to be $want"
        check_nodes
        sleep 0.2
    done
    nexus >&2 || true
    die "child $u is $st, not $want, after ${limit}s"
}

# add_child URI SECONDS: nexus_add_child, retried while the nexus answers busy (I/Os given
# up after a timeout still outstanding on the old connection).
add_child() {
    local u=$1 limit=$2 out="" end=$((SECONDS + $2))
    while ((SECONDS < end)); do
        if out=$(rpc 1 nexus_add_child "{\"name\": \"nx0\", \"uri\": \"$u\"}" 2>&1); then
            return 0
        fi
        [[ $out == *"outstanding"* || $out == *"busy"* || $out == *"Busy"* ]] ||
            die "nexus_add_child $u: $out"
        log "add_child: $out (retrying)"
        check_nodes
        sleep 0.5
    done
    die "nexus_add_child $u still refused after ${limit}s: $out"
}

guest_alive() { kill -0 "$guest_pid" 2>/dev/null; }
# rounds: fio rounds the guest has completed.
rounds() {
    { grep -o "$NAME: round [0-9]* ok" "$work/guest.log" 2>/dev/null || true; } |
        awk '{ n = $3 } END { print n + 0 }'
}
# wait_rounds_after N SECONDS: wait until the guest has completed a round after round N.
wait_rounds_after() {
    local n=$1 limit=$2 end=$((SECONDS + $2))
    while ((SECONDS < end)); do
        [[ $(rounds) -gt $n ]] && return 0
        guest_alive || die "the guest ended (see its console)"
        grep -q '^FAIL:' "$work/guest.log" && die "the guest failed"
        check_nodes
        sleep 0.2
    done
    die "no fio round completed within ${limit}s (last: $n)"
}
written() { rpc 1 bdev_get_iostat '{"name": "nx0"}' | jsq "d['bdevs'][0]['num_write_ops']"; }
nx_errors() { rpc 1 bdev_get_iostat '{"name": "nx0"}' | jsq "d['bdevs'][0]['num_errors']"; }

since() { awk -v a="$1" -v b="$(elapsed)" 'BEGIN { printf "%.1f", b - a }'; }

# fault_phase N SIGNAL: the replica node N gets SIGNAL (KILL or STOP) during a fio round; its
# child must fault with the nexus degraded and fio going on; then node N comes back (restart
# or SIGCONT), its child is re-added and rebuilt while fio writes, and fio goes on.
fault_phase() {
    local n=$1 sig=$2 u t w0 w1 r0
    u=$(uri "$n")
    sleep 1
    r0=$(rounds)
    t=$(elapsed)
    kill "-$sig" "${pid[$n]}"
    if [[ $sig == KILL ]]; then
        wait "${pid[$n]}" 2>/dev/null || true
        unset "pid[$n]"
    fi
    log "node$n: SIG$sig during fio round $((r0 + 1))"
    wait_child "$u" faulted 40
    note "node$n SIG$sig: child faulted ($(child_field "$u" fault_reason)) after $(since "$t")s;" \
        "nexus $(nexus_state)"
    [[ $(nexus_state) == degraded ]] || die "the nexus should be degraded"
    r0=$(rounds)
    wait_rounds_after "$((r0 + 1))" 90
    note "node$n SIG$sig: fio rounds $((r0 + 1))-$(rounds) completed with the child faulted"
    t=$(elapsed)
    if [[ $sig == KILL ]]; then
        start_node "$n"
        log "node$n restarted on the same file"
    else
        kill -CONT "${pid[$n]}"
        log "node$n thawed (SIGCONT)"
    fi
    add_child "$u" 90
    note "node$n: child re-added $(since "$t")s after its node came back;" \
        "state $(child_field "$u" state)"
    t=$(elapsed)
    w0=$(written)
    r0=$(rounds)
    wait_child "$u" online 120
    w1=$(written)
    note "node$n: rebuilt and online after $(since "$t")s; host writes meanwhile: $((w1 - w0)), fio" \
        "rounds $r0 -> $(rounds); rebuild $(last_rebuild "$u")"
    [[ $w1 -gt $w0 ]] || die "no host write reached the nexus during the rebuild"
    [[ $(nexus_state) == online ]] || die "nexus not online after the rebuild: $(nexus_state)"
    wait_rounds_after "$(rounds)" 90
    note "node$n: fio round $(rounds) completed after the rebuild"
}

# setup_nexus: build, start the three nodes, create the nexus nx0 and export it.
setup_nexus() {
    local n
    if [[ -z ${SHOAL_BIN_DIR:-} ]]; then
        cargo build --release -q -p shoal-target --bin shoald --bin shoalctl
    fi
    hack/guest/build.sh
    if ss -Hltn "src 127.0.0.1:$NX_PORT or src 0.0.0.0:$NX_PORT" | grep -q .; then
        die "127.0.0.1:$NX_PORT is already in use (another target?); set NX_PORT"
    fi
    for n in 2 3; do
        if ss -Hltn "src $REPLICA_NET$n:$NX_PORT" | grep -q .; then
            die "$REPLICA_NET$n:$NX_PORT is already in use (another target?); set NX_PORT"
        fi
    done
    for n in 1 2 3; do
        truncate -s "$IMG_SIZE" "$work/r$n.img"
        node_config "$n" >"$work/n$n.json"
    done
    for n in 2 3 1; do start_node "$n"; done
    log "nodes up: node1 $(sock 1), replicas on $REPLICA_NET{2,3}:$NX_PORT"
    export_nexus
    [[ $(nexus_state) == online ]] || die "new nexus is $(nexus_state)"
    log "nexus nx0 online with 3 children, exported as $NQN_NX on 127.0.0.1:$NX_PORT"
}

# export_nexus: on node1, create the nexus nx0 over its three children (new ones, or the same
# ones again after a restart of node1) and export it as NQN_NX on 127.0.0.1:NX_PORT.
export_nexus() {
    rpc 1 nexus_create "{\"name\": \"nx0\", \"size\": $NX_SIZE, \"io_timeout_ms\": $IO_TIMEOUT_MS,
        \"children\": [\"$(local_child)\", \"$(uri 2)\", \"$(uri 3)\"]}" >/dev/null
    rpc 1 nexus_set_rebuild_rate "{\"name\": \"nx0\", \"mib_per_sec\": $REBUILD_MIB}" >/dev/null
    rpc 1 nvmf_create_subsystem "{\"nqn\": \"$NQN_NX\", \"allow_any_host\": true,
        \"serial_number\": \"SHOALNEXUS0\"}" >/dev/null
    rpc 1 nvmf_subsystem_add_ns "{\"nqn\": \"$NQN_NX\", \"namespace\": {\"bdev_name\": \"nx0\"}}" >/dev/null
    rpc 1 nvmf_subsystem_add_listener "{\"nqn\": \"$NQN_NX\", \"listen_address\": {\"trtype\": \"TCP\",
        \"adrfam\": \"IPv4\", \"traddr\": \"127.0.0.1\", \"trsvcid\": \"$NX_PORT\"}}" >/dev/null
}

# start_guest SCRIPT [NAME=VAL...]: the guest runs SCRIPT (with NX_NQN, NX_PORT, NX_SIZE,
# CTL_PORT and TAG=$NAME, and the NAME=VALs), which polls http://10.0.2.2:CTL_PORT/stop: that
# file appears when it should stop (finish_guest). GUEST_FILES: host files (SRC[:DST], space
# separated) copied into the guest (run.sh -f).
start_guest() {
    local script=$1 ctl_port="" e envs=()
    shift
    for e in "$@"; do envs+=(-e "$e"); done
    for e in ${GUEST_FILES:-}; do envs+=(-f "$e"); done
    [[ -z $LVOL ]] || envs+=(-e READBACK=1)
    mkdir "$work/ctl"
    python3 -u -m http.server --bind 127.0.0.1 --directory "$work/ctl" 0 >"$work/ctl.log" 2>&1 &
    ctl_pid=$!
    for _ in $(seq 50); do
        ctl_port=$(sed -n 's/^Serving HTTP on .* port \([0-9]*\) .*/\1/p' "$work/ctl.log" | head -n1)
        [[ -n $ctl_port ]] && break
        sleep 0.1
    done
    [[ -n $ctl_port ]] || die "the control HTTP server did not start"

    hack/guest/run.sh --no-build -q -t "$GUEST_TIMEOUT" --loglevel 5 -l "$work/guest.log" \
        --smp "$GUEST_SMP" -e NX_NQN="$NQN_NX" -e NX_PORT="$NX_PORT" -e NX_SIZE="$NX_SIZE" \
        -e CTL_PORT="$ctl_port" -e TAG="$NAME" "${envs[@]}" "$script" >"$work/run.out" 2>&1 &
    guest_pid=$!
    log "guest started; waiting for its first fio round"
}

# finish_guest: ask the guest to stop, wait for it; check the nexus (online, no I/O error).
# Sets gsum to the guest's checksum of the device (of the SUM_MIBS pieces, when set).
finish_guest() {
    local errs
    touch "$work/ctl/stop"
    log "asking the guest to stop"
    if [[ -n $LVOL ]]; then
        # It stays up to read the replicas back (compare_replicas).
        wait_guest_line "$NAME: disconnected" 240
        tr -d '\r' <"$work/guest.log" | grep "$NAME:" | sed 's/^/  guest> /' >&2
    else
        wait_guest
    fi
    gsum=$(tr -d '\r' <"$work/guest.log" |
        sed -n "s/^$NAME: device sha256 \([0-9a-f]\{64\}\)\$/\1/p")
    [[ -n $gsum ]] || die "the guest printed no device checksum"

    [[ $(nexus_state) == online ]] || die "nexus not online at the end: $(nexus_state)"
    errs=$(nx_errors)
    [[ $errs -eq 0 ]] || die "the nexus counted $errs I/O errors"
    note "guest: $(rounds) fio rounds and the checksum done; nexus online, 0 I/O errors"
    nexus | jsq "'\n'.join('  %s %s' % (c['state'], c['uri']) for c in d[0]['children'])" >&2
}

# wait_guest: wait for the guest to end; fail unless it ended well. Prints its progress lines.
wait_guest() {
    local grc=0
    wait "$guest_pid" || grc=$?
    guest_pid=""
    grep "$NAME:" "$work/guest.log" | grep -v " window " | sed 's/^/  guest> /' >&2
    [[ $grc -eq 0 ]] || { cat "$work/run.out" >&2; die "guest exited with $grc"; }
}

# wait_guest_line TEXT SECONDS: wait until the guest prints the line TEXT.
wait_guest_line() {
    local end=$((SECONDS + $2))
    while ((SECONDS < end)); do
        # The console's lines end in \r until run.sh strips them when the guest ends.
        tr -d '\r' <"$work/guest.log" 2>/dev/null | grep -cxF "$1" >/dev/null && return 0
        guest_alive || { wait_guest; die "the guest ended without printing '$1'"; }
        grep -q '^FAIL:' "$work/guest.log" && die "the guest failed"
        sleep 0.2
    done
    die "the guest did not print '$1' within ${2}s"
}

# free_port: a TCP port of 127.0.0.1 that was free a moment ago.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# readback_replicas (LVOL; the nodes stopped): start each node again (examine must bring its
# volume back), export its volume on 127.0.0.1 and let the guest read them all (READBACK=1 in
# nexus-fio-guest.sh); the guest's sha256 of each data region must be the device's, and each
# eighth the same on the three (else the differing eighths are named). The nodes are then
# stopped again with SIGTERM.
readback_replicas() {
    local n port list="" sum fail=0 w a b
    for n in 1 2 3; do
        READBACK_PHASE=1 start_node "$n"
        port=$(free_port)
        export_volume "$n" "nqn.2016-06.io.shoal:readback$n" "127.0.0.1:$port"
        list+="$n $port nqn.2016-06.io.shoal:readback$n"$'\n'
    done
    note "nodes restarted: each found its volume again (examine, same UUID) and exports it for the read-back"
    printf '%s' "$list" >"$work/ctl/readback.tmp"
    mv "$work/ctl/readback.tmp" "$work/ctl/readback"
    wait_guest
    for n in 1 2 3; do
        sum=$(sed -n "s/^$NAME: replica $n sha256 \([0-9a-f]\{64\}\)\$/\1/p" "$work/guest.log")
        [[ -n $sum ]] || die "the guest printed no checksum of replica $n"
        log "replica $n volume data region sha256 $sum"
        [[ $sum == "$gsum" ]] || fail=1
    done
    log "guest device                 sha256 $gsum"
    for n in 2 3; do
        for w in 0 1 2 3 4 5 6 7; do
            a=$(grep -c "^$NAME: replica 1 window $w sha256 " "$work/guest.log" || true)
            [[ $a -eq 1 ]] || die "the guest printed $a checksums of replica 1's window $w"
            a=$(sed -n "s/^$NAME: replica 1 window $w sha256 //p" "$work/guest.log")
            b=$(sed -n "s/^$NAME: replica $n window $w sha256 //p" "$work/guest.log")
            if [[ $a != "$b" ]]; then
                note "replica $n differs from replica 1 in the eighth $w of the data region"
                fail=1
            fi
        done
    done
    for n in 1 2 3; do stop_node "$n"; done
    [[ $fail -eq 0 ]] || die "the replicas' data regions differ"
    note "the 3 replica volumes, read back over NVMe/TCP by the guest, are identical (sha256 of" \
        "the data region and of each eighth) and match the guest's device; nodes stopped again"
}

# data_sum IMG: sha256 of the replica file's data region (after the label region), or with
# SUM_MIBS set (offsets in MiB of the device), of those 1 MiB pieces of it one after the other:
# what the guest's "device sha256" line covers (the guest reads a large device slowly).
data_sum() {
    local off
    if [[ -z ${SUM_MIBS:-} ]]; then
        dd if="$1" bs="$LABEL_BYTES" skip=1 count=$((NX_SIZE / LABEL_BYTES)) status=none
    else
        for off in $SUM_MIBS; do
            dd if="$1" bs=1M skip=$((LABEL_BYTES / 1048576 + off)) count=1 status=none
        done
    fi | sha256sum | cut -d' ' -f1
}

# compare_replicas: stop the nodes (SIGTERM: flush, labels clean, exit status 0), then compare
# the data region of each replica file (after the label region) byte for byte with node1's and
# its checksum with the guest's. LVOL: through the volumes instead (readback_replicas).
compare_replicas() {
    local n sum fail=0 diff
    for n in 1 2 3; do stop_node "$n"; done
    note "all nodes stopped with SIGTERM, exit status 0"
    if [[ -n $LVOL ]]; then
        readback_replicas
        return
    fi
    for n in 2 3; do
        diff=$(cmp -l -i "$LABEL_BYTES" -n "$NX_SIZE" "$work/r1.img" "$work/r$n.img" | wc -l || true)
        if [[ $diff -ne 0 ]]; then
            # Which 128 KiB segments differ (byte offsets of the data region).
            note "replica $n differs from replica 1 in $diff bytes, in $(cmp -l -i "$LABEL_BYTES" \
                -n "$NX_SIZE" "$work/r1.img" "$work/r$n.img" |
                awk '{ print int(($1 - 1) / 131072) }' | uniq | sort -u | wc -l) segments of 128 KiB"
            fail=1
        fi
    done
    for n in 1 2 3; do
        sum=$(data_sum "$work/r$n.img")
        log "replica $n data region sha256 $sum"
        [[ $sum == "$gsum" ]] || fail=1
    done
    log "guest device          sha256 $gsum"
    [[ $fail -eq 0 ]] || die "the replicas' data regions differ"
    note "the 3 replicas' data regions are identical byte for byte and match the guest's device"
}

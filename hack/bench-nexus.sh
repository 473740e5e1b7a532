#!/usr/bin/env bash
# The nexus's speed targets (issue 5, docs/PERFORMANCE.md), over NVMe/TCP on 127.0.0.x:
#
#   iops     shoald -m 0x1 (core 0) exports, in one subsystem, a RAM (malloc) bdev directly
#            (nsid 1) and a nexus over two RAM children (nsid 2), all the same size; shoal-perf
#            on core 1 (-c 0x2) runs 4 KiB random writes, then reads, at depth 32 on each in
#            turn, BENCH_ROUNDS times; prints every pair's ratio and the median.
#            Targets: writes >= 80 %, reads >= 100 % of the direct RAM bdev.
#   rebuild  A full rebuild of a BENCH_REBUILD_MIB RAM replica between two nodes against a plain
#            copy of the same bytes over the same path (1 MiB pieces, 2 in flight, read locally
#            and written over NVMe/TCP): part 4 of `cargo bench -p shoal-replication --bench
#            nexus`, where the bench process is node 1 (core 0) and a shoald on 127.0.0.2
#            (core 1) is node 2. Then, daemon to daemon, host 4 KiB random writes on a nexus
#            over a local and a remote RAM replica, in sync and during a full rebuild with the
#            default rate limit.
#            Targets: rebuild >= 80 % of the copy's rate; host IOPS during a rebuild >= 50 %.
#
#   hack/bench-nexus.sh [all|iops|rebuild]        (default all)
#
# Env: BENCH_TIME (seconds per IOPS run, 8), BENCH_ROUNDS (3), BENCH_PORT (4521; node 2 uses
#      the same port on 127.0.0.2, the bench's node 2 BENCH_PORT + 2), BENCH_RAM_MIB (256, IOPS runs), BENCH_REBUILD_MIB (1024).
set -euo pipefail
cd "$(dirname "$0")/.."

which=${1:-all}
secs=${BENCH_TIME:-8}
rounds=${BENCH_ROUNDS:-3}
port=${BENCH_PORT:-4521}
ram_mib=${BENCH_RAM_MIB:-256}
rb_mib=${BENCH_REBUILD_MIB:-1024}
case $which in
all | iops | rebuild) ;;
*)
    echo "usage: $0 [all|iops|rebuild]" >&2
    exit 2
    ;;
esac

bin=${CARGO_TARGET_DIR:-target}/release
cargo build --release -q -p shoal-target --bin shoald --bin shoalctl -p shoal-benches --bin shoal-perf
work=$(mktemp -d /tmp/shoal-bench-nexus.XXXXXX)
declare -A pid=()
cleanup() {
    for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pid[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# The nexus keeps its metadata (labels) in the first MiB of each child.
meta_blocks=256
nqn=nqn.2016-06.io.shoal:bench
rnqn=nqn.2016-06.io.shoal:replica

# start N MASK CONFIG: shoald node N on 127.0.0.N, pinned to MASK.
start() {
    local n=$1 addr=127.0.0.$1
    if (exec 3<>"/dev/tcp/$addr/$port") 2>/dev/null; then
        echo "something already listens on $addr:$port: set BENCH_PORT" >&2
        exit 1
    fi
    "$bin/shoald" -m "$2" -c "$3" -r "$work/n$n.sock" --log warn >"$work/n$n.log" 2>&1 &
    pid[$n]=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/$addr/$port") 2>/dev/null; then
            sleep 0.3
            return 0
        fi
        kill -0 "${pid[$n]}" 2>/dev/null || break
        sleep 0.1
    done
    cat "$work/n$n.log" >&2
    echo "shoald node $n did not start" >&2
    exit 1
}
stop() {
    kill "${pid[$1]}"
    wait "${pid[$1]}" 2>/dev/null || true
    unset "pid[$1]"
}
rpc() { "$bin/shoalctl" -s "$work/n$1.sock" -t 120 rpc "$2" "${3:-{\}}"; }
jsq() { python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
trid() { echo "trtype:TCP adrfam:IPv4 traddr:127.0.0.$1 trsvcid:$port subnqn:$2 ns:$3"; }
# perf CORE_MASK TRID [args...]: one shoal-perf run; prints its total IOPS and MiB/s.
perf() {
    local mask=$1 t=$2
    shift 2
    "$bin/shoal-perf" -r "$t" -c "$mask" --json "$@" |
        jsq "'%.0f %.1f' % (d['total']['rates']['iops'], d['total']['rates']['mib_s'])"
}
malloc() { # NAME MIB [extra blocks]
    echo "{\"method\": \"bdev_malloc_create\", \"params\": {\"name\": \"$1\", \"num_blocks\": $(($2 * 256 + ${3:-0})), \"block_size\": 4096}}"
}
listener() { # NQN N
    echo "{\"method\": \"nvmf_subsystem_add_listener\", \"params\": {\"nqn\": \"$1\", \"listen_address\": {\"trtype\": \"TCP\", \"adrfam\": \"IPv4\", \"traddr\": \"127.0.0.$2\", \"trsvcid\": \"$port\"}}}"
}
subsys() { # NQN
    echo "{\"method\": \"nvmf_create_subsystem\", \"params\": {\"nqn\": \"$1\", \"allow_any_host\": true}}"
}
ns() { # NQN BDEV NSID
    echo "{\"method\": \"nvmf_subsystem_add_ns\", \"params\": {\"nqn\": \"$1\", \"namespace\": {\"bdev_name\": \"$2\", \"nsid\": $3}}}"
}
transport='{"method": "nvmf_create_transport", "params": {"trtype": "TCP"}}'
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

if [[ $which == all || $which == iops ]]; then
    cat >"$work/iops.json" <<EOF
{"subsystems": [
 {"subsystem": "bdev", "config": [
  $(malloc Direct "$ram_mib"), $(malloc ChildA "$ram_mib" $meta_blocks), $(malloc ChildB "$ram_mib" $meta_blocks),
  {"method": "nexus_create", "params": {"name": "nx0", "size": $((ram_mib << 20)), "children": ["bdev:///ChildA", "bdev:///ChildB"]}}]},
 {"subsystem": "nvmf", "config": [
  $transport, $(subsys $nqn), $(ns $nqn Direct 1), $(ns $nqn nx0 2), $(listener $nqn 1)]}]}
EOF
    start 1 0x1 "$work/iops.json"
    echo "shoald -m 0x1: nsid 1 = RAM bdev ($ram_mib MiB), nsid 2 = nexus over two RAM bdevs" >&2
    # Written in full first: reads of never-written memory hit the kernel's zero page.
    for n in 1 2; do perf 0x2 "$(trid 1 $nqn $n)" -t 3 -q 8 -o 1048576 -w write >/dev/null; done
    # Unmeasured warm-up: the first seconds of random I/O on freshly written memory run slower
    # here (seen: 560k then 740k-770k IOPS for the same reads, huge pages already in place).
    for n in 1 2; do perf 0x2 "$(trid 1 $nqn $n)" -t 4 -q 32 -o 4096 -w randread >/dev/null; done
    for w in randwrite randread; do
        : >"$work/$w.ratios"
        for r in $(seq "$rounds"); do
            # Alternating which goes first cancels a drift during the runs.
            if ((r % 2)); then
                read -r d _ < <(perf 0x2 "$(trid 1 $nqn 1)" -t "$secs" -q 32 -o 4096 -w $w)
                read -r x _ < <(perf 0x2 "$(trid 1 $nqn 2)" -t "$secs" -q 32 -o 4096 -w $w)
            else
                read -r x _ < <(perf 0x2 "$(trid 1 $nqn 2)" -t "$secs" -q 32 -o 4096 -w $w)
                read -r d _ < <(perf 0x2 "$(trid 1 $nqn 1)" -t "$secs" -q 32 -o 4096 -w $w)
            fi
            pct=$(awk -v a="$x" -v b="$d" 'BEGIN { printf "%.1f", 100 * a / b }')
            echo "$pct" >>"$work/$w.ratios"
            printf '%-9s round %d: RAM bdev %8d IOPS, nexus 2x RAM %8d IOPS: %5s %%\n' \
                "$w" "$r" "$d" "$x" "$pct"
        done
        printf '%-9s median nexus / RAM bdev: %s %% (target %s)\n' "$w" \
            "$(median <"$work/$w.ratios")" "$([[ $w == randwrite ]] && echo '>= 80 %' || echo '>= 100 %')"
    done
    stop 1
fi

if [[ $which == all || $which == rebuild ]]; then
    # Rebuild against a plain copy between two nodes: the bench process is node 1 (source
    # replica, nexus, NVMe/TCP host), a shoald on 127.0.0.2 is node 2.
    NEXUS_BENCH_ONLY=remote NEXUS_BENCH_SHOALD="$(realpath "$bin/shoald")" \
        NEXUS_BENCH_REBUILD_MIB=$rb_mib NEXUS_BENCH_ROUNDS=$rounds NEXUS_BENCH_PORT=$((port + 2)) \
        cargo bench -q -p shoal-replication --bench nexus

    # Host I/O during a rebuild, daemon to daemon: node 1 (127.0.0.1, core 0) has a nexus over
    # a local RAM replica and node 2's (127.0.0.2, core 1); shoal-perf on core 1.
    bytes=$((rb_mib << 20))
    cat >"$work/n1.json" <<EOF
{"subsystems": [
 {"subsystem": "bdev", "config": [$(malloc Local "$rb_mib" $meta_blocks),
  {"method": "nexus_create", "params": {"name": "nx0", "size": $bytes, "children": ["bdev:///Local"]}}]},
 {"subsystem": "nvmf", "config": [$transport, $(subsys $nqn), $(ns $nqn nx0 1), $(listener $nqn 1)]}]}
EOF
    cat >"$work/n2.json" <<EOF
{"subsystems": [
 {"subsystem": "bdev", "config": [$(malloc Replica "$rb_mib" $meta_blocks)]},
 {"subsystem": "nvmf", "config": [$transport, $(subsys $rnqn), $(ns $rnqn Replica 1), $(listener $rnqn 2)]}]}
EOF
    start 1 0x1 "$work/n1.json"
    start 2 0x2 "$work/n2.json"
    uri="nvmf://127.0.0.2:$port/$rnqn"
    child_state() {
        rpc 1 nexus_get '{"name": "nx0"}' |
            jsq "[c['state'] for c in d[0]['children'] if c['uri'].startswith('nvmf')][0]"
    }
    # The volume written in full, then node 2's replica added and rebuilt: in sync.
    "$bin/shoal-perf" -r "$(trid 1 $nqn 1)" -c 0x2 -q 8 -o 1048576 -w write \
        -t $((rb_mib / 512 + 2)) >/dev/null
    rpc 1 nexus_add_child "{\"name\": \"nx0\", \"uri\": \"$uri\"}" >/dev/null
    until [[ $(child_state) == online ]]; do sleep 0.1; done
    read -r quiet _ < <(perf 0x2 "$(trid 1 $nqn 1)" -t "$secs" -q 32 -o 4096 -w randwrite)
    # Removed and added anew: a full rebuild, at the default rate while the host writes.
    rpc 1 nexus_remove_child "{\"name\": \"nx0\", \"uri\": \"$uri\"}" >/dev/null
    rpc 1 nexus_add_child "{\"name\": \"nx0\", \"uri\": \"$uri\"}" >/dev/null
    read -r busy _ < <(perf 0x2 "$(trid 1 $nqn 1)" -t "$secs" -q 32 -o 4096 -w randwrite)
    prog=$(rpc 1 nexus_get '{"name": "nx0"}' |
        jsq "[(c['state'], c['rebuild_progress']) for c in d[0]['children'] if c['uri'].startswith('nvmf')][0]")
    echo
    echo "host 4 KiB random writes, depth 32, on a nexus over a local and a remote RAM replica:"
    echo "  $quiet IOPS in sync, $busy IOPS during a full rebuild at the default rate" \
        "($(awk -v a="$busy" -v b="$quiet" 'BEGIN { printf "%.1f", 100 * a / b }') %, target >= 50 %);" \
        "the child after the run (state, % rebuilt): $prog"
    stop 1
    stop 2
fi

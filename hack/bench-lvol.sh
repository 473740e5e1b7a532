#!/usr/bin/env bash
# Logical volumes side by side: Shoal's lvol against SPDK's, and against the base bdev itself.
#
#   SPDK_DIR=/var/tmp/spdk hack/bench-lvol.sh
#
# shoald and SPDK's nvmf_tgt take turns on core 0 with the same RAM bdevs; spdk_nvme_perf on
# core 1 is the one load generator; the first target alternates between rounds and each row's
# figure is the median of the rounds. Each target start builds, over JSON-RPC (SPDK's rpc.py
# for both), one subsystem with four namespaces:
#   1  Malloc0 (512 MiB) exported directly: the base-bdev reference;
#   2  lvs1/thick, a thick 256 MiB volume in a pool on Malloc1 (1 GiB, 4 MiB clusters);
#   3  lvs1/fresh, a thin 256 MiB volume in the same pool, never written before its row (the
#      pool keeps room for the snapshot row: its first writes copy clusters);
#   4  lvs2/seq, a thin 3,800 MiB volume in a pool on Malloc2 (4 GiB, 64 KiB clusters): large
#      enough that one second of its row never wraps around to clusters already written.
# Rows: 4 KiB random read and write at depth 32 on 1 and 2 (after 1 MiB writes over both, so
# that no row reads never-written memory); 4 KiB random writes for 1 s on the fresh thin volume;
# 64 KiB sequential writes at depth 1 for 1 s on 4, every one of them the first write to its
# cluster, then (after 2 s of writes allocating further) the same again over allocated
# clusters; a snapshot of lvs1/thick, then
# 4 KiB random writes on it for 1 s (each cluster's first write copies it).
#
# Without SPDK_DIR it says SKIPPED and exits 0. CI does not run it. Root (hugepages for SPDK:
# it raises the reservation to 8 GiB). Env: BENCH_TIME (4), BENCH_ROUNDS (5), BENCH_PORT (4531),
# BENCH_NO_BUILD, BENCH_OUT. Output: a markdown table on stdout; raw lines in $BENCH_OUT/raw.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z ${SPDK_DIR:-} || ! -x ${SPDK_DIR:-/nonexistent}/build/bin/nvmf_tgt ]]; then
    echo "SKIPPED: SPDK_DIR does not point at an SPDK build (../shared/tools/build-spdk.sh)"
    exit 0
fi
secs=${BENCH_TIME:-4}
rounds=${BENCH_ROUNDS:-5}
port=${BENCH_PORT:-4531}
cores=0x1
extra=()
nqn=nqn.2016-06.io.shoal:benchlvol
out=${BENCH_OUT:-$(mktemp -d /tmp/shoal-bench-lvol.XXXXXX)}
mkdir -p "$out"
work=$(mktemp -d /tmp/shoal-bench-lvol-work.XXXXXX)
bin=${CARGO_TARGET_DIR:-target}/release
pid=
rpcpy=$SPDK_DIR/scripts/rpc.py

cleanup() {
    if [[ -n $pid ]]; then kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
log() { echo "bench-lvol: $*" >&2; }

# shellcheck source=hack/lib-bench-spdk.sh
source hack/lib-bench-spdk.sh

if [[ -z ${BENCH_NO_BUILD:-} ]]; then
    cargo build --release -q -p shoal-target --bin shoald
fi
[[ $(cat /proc/sys/vm/nr_hugepages) -ge 4096 ]] || echo 4096 >/proc/sys/vm/nr_hugepages
[[ $(cat /proc/sys/vm/nr_hugepages) -ge 4096 ]] || { log "could not reserve 8 GiB of hugepages"; exit 1; }
"$SPDK_DIR/spdk-hugepages"

# Both targets start with the same three RAM bdevs and an empty subsystem.
for t in shoald spdk; do
    cat >"$work/$t.json" <<JSON
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": 131072, "block_size": 4096}},
  {"method": "bdev_malloc_create", "params": {"name": "Malloc1", "num_blocks": 262144, "block_size": 4096}},
  {"method": "bdev_malloc_create", "params": {"name": "Malloc2", "num_blocks": 1048576, "block_size": 4096}}]},
 {"subsystem": "nvmf", "config": [
  {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "$nqn", "allow_any_host": true, "serial_number": "BENCHLVOL01"}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$nqn", "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "$port"}}}]}]}
JSON
done

rpc() { # TARGET METHOD ARGS...: prints the answer
    local sock=$work/rpc.sock
    [[ $1 == spdk ]] && sock=$work/spdk.sock
    shift
    python3 "$rpcpy" -s "$sock" "$@" || { log "rpc $*: failed"; tail -n 5 "$work/target.log" >&2; exit 1; }
}

volumes() { # TARGET: the pools, volumes and namespaces (each volume added by the UUID it got)
    local t=$1 thick fresh seq
    rpc "$t" bdev_lvol_create_lvstore -c 4194304 Malloc1 lvs1 >/dev/null
    rpc "$t" bdev_lvol_create_lvstore -c 65536 Malloc2 lvs2 >/dev/null
    thick=$(rpc "$t" bdev_lvol_create -l lvs1 thick 256)
    fresh=$(rpc "$t" bdev_lvol_create -l lvs1 -t fresh 256)
    seq=$(rpc "$t" bdev_lvol_create -l lvs2 -t seq 3800)
    rpc "$t" nvmf_subsystem_add_ns -n 1 "$nqn" Malloc0 >/dev/null
    rpc "$t" nvmf_subsystem_add_ns -n 2 "$nqn" "$thick" >/dev/null
    rpc "$t" nvmf_subsystem_add_ns -n 3 "$nqn" "$fresh" >/dev/null
    rpc "$t" nvmf_subsystem_add_ns -n 4 "$nqn" "$seq" >/dev/null
    snap_of=$thick
}

raw=$out/raw.tsv
: >"$raw"
record() { # ROUND TARGET ROW NSID [PERF_SECS] -- PERF-ARGS
    local round=$1 target=$2 name=$3 ns=$4 t=$5 iops lat
    shift 5
    read -r iops lat < <(PERF_SECS=$t perf spdk "$ns" "$@")
    printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$target" "$name" "$iops" "$lat" >>"$raw"
    log "  $target $name: $iops IOPS, $lat us"
}

for ((round = 0; round < rounds; round++)); do
    order=(shoal spdk)
    ((round % 2)) && order=(spdk shoal)
    for target in "${order[@]}"; do
        log "round $round: $target"
        start "$target"
        volumes "$target"
        PERF_SECS=2 perf spdk 1 -q 8 -o 1048576 -w write >/dev/null
        PERF_SECS=2 perf spdk 2 -q 8 -o 1048576 -w write >/dev/null
        record "$round" "$target" base-randread-4k 1 "$secs" -q 32 -o 4096 -w randread
        record "$round" "$target" base-randwrite-4k 1 "$secs" -q 32 -o 4096 -w randwrite
        record "$round" "$target" lvol-randread-4k 2 "$secs" -q 32 -o 4096 -w randread
        record "$round" "$target" lvol-randwrite-4k 2 "$secs" -q 32 -o 4096 -w randwrite
        record "$round" "$target" thin-fresh-randwrite-4k-1s 3 1 -q 32 -o 4096 -w randwrite
        record "$round" "$target" thin-first-write-64k-qd1-1s 4 1 -q 1 -o 65536 -w write
        # Allocate further than the next row reaches (it starts again at offset 0), so that
        # none of its writes is a first write.
        PERF_SECS=2 perf spdk 4 -q 8 -o 65536 -w write >/dev/null
        record "$round" "$target" thin-allocated-64k-qd1-1s 4 1 -q 1 -o 65536 -w write
        rpc "$target" bdev_lvol_snapshot "$snap_of" snap >/dev/null
        record "$round" "$target" after-snapshot-randwrite-4k-1s 2 1 -q 32 -o 4096 -w randwrite
        [[ -z ${BENCH_DEBUG_HOLD:-} ]] || { log "holding: $work"; sleep "$BENCH_DEBUG_HOLD"; }
        stop
    done
done

python3 - "$raw" "$rounds" "$secs" <<'PY'
import collections, datetime, statistics, sys
raw, rounds, secs = sys.argv[1], sys.argv[2], sys.argv[3]
d = collections.defaultdict(lambda: collections.defaultdict(dict))
for line in open(raw):
    rnd, target, name, iops, _lat = line.rstrip("\n").split("\t")
    d[name][rnd][target] = float(iops)
def med(name, target):
    return statistics.median([r[target] for r in d[name].values() if target in r] or [0])
def ratio(num, den, target=None):
    rs = []
    for rnd in d[num]:
        if target:
            a, b = d[num][rnd].get(target), d[den].get(rnd, {}).get(target)
        else:
            a, b = d[num][rnd].get("shoal"), d[num][rnd].get("spdk")
        if a and b:
            rs.append(a / b)
    return statistics.median(rs) if rs else float("nan")
print(f"Shoal and SPDK lvols, median of {rounds} alternating rounds ({secs} s rows unless "
      f"marked 1s), targets on core 0, spdk_nvme_perf on core 1 ({datetime.date.today()})\n")
print("| row | SPDK IOPS | Shoal IOPS | Shoal / SPDK |")
print("|---|---|---|---|")
for n in d:
    print(f"| {n} | {med(n, 'spdk'):,.0f} | {med(n, 'shoal'):,.0f} | **{ratio(n, None):.2f}** |")
print("\nWithin each target (median of the rounds' ratios):\n")
print("| ratio | SPDK | Shoal |")
print("|---|---|---|")
for num, den, what in [
    ("lvol-randread-4k", "base-randread-4k", "lvol / base, 4 KiB random read"),
    ("lvol-randwrite-4k", "base-randwrite-4k", "lvol / base, 4 KiB random write"),
    ("thin-first-write-64k-qd1-1s", "thin-allocated-64k-qd1-1s", "first write / allocated write, 64 KiB depth 1"),
    ("after-snapshot-randwrite-4k-1s", "lvol-randwrite-4k", "first second after a snapshot / no snapshot, 4 KiB random write"),
]:
    print(f"| {what} | {ratio(num, den, 'spdk'):.3f} | {ratio(num, den, 'shoal'):.3f} |")
PY
log "raw results: $raw"

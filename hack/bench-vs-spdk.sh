#!/usr/bin/env bash
# Shoal and SPDK side by side: one load generator, one run, the median ratio per workload.
#
#   SPDK_DIR=/var/tmp/spdk hack/bench-vs-spdk.sh [ROW-FILTER]
#
# shoald and SPDK's nvmf_tgt take turns on core 0 (-m 0x1) with the same bdevs as namespaces
# of one subsystem on 127.0.0.1: 1 a RAM bdev (malloc, BENCH_RAM_MIB), 2 a null bdev, 3 a
# two-way mirror over two RAM bdevs (Shoal's nexus; SPDK's raid1, the closest thing it has).
# The load generator runs on core 1 (-c 0x2): SPDK's spdk_nvme_perf, and as a second column
# Shoal's shoal-perf (same options). Every round runs both targets, the first one alternating
# between rounds (the machine's speed drifts by tens of percent within an hour); each row's
# ratio is the median of the rounds' ratios Shoal / SPDK (IOPS; for the depth-1 row it is the
# same as SPDK's latency over Shoal's).
#
# It needs an SPDK build (../shared/tools/build-spdk.sh; export SPDK_DIR): without SPDK_DIR it
# says SKIPPED and exits 0. CI does not run it. Root (hugepages for SPDK).
#
# Env: BENCH_TIME (seconds per run, 6), BENCH_ROUNDS (5), BENCH_PORT (4530), BENCH_RAM_MIB
#      (1024), BENCH_PERF (spdk|shoal|both, default both), BENCH_OUT (keep raw results there),
#      BENCH_NO_BUILD (1: do not run cargo build first), BENCH_CORES (the targets' core mask,
#      0x1; 0x3 for the two-core rows, the load generator staying on core 1), BENCH_PERF_ARGS
#      (added to every load-generator run, e.g. "-P 4" for four queue pairs per namespace).
# Output: one markdown table on stdout; progress on stderr; raw lines in $BENCH_OUT/raw.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z ${SPDK_DIR:-} || ! -x ${SPDK_DIR:-/nonexistent}/build/bin/nvmf_tgt ]]; then
    echo "SKIPPED: SPDK_DIR does not point at an SPDK build (../shared/tools/build-spdk.sh)"
    exit 0
fi
filter=${1:-}
secs=${BENCH_TIME:-6}
rounds=${BENCH_ROUNDS:-5}
port=${BENCH_PORT:-4530}
ram_mib=${BENCH_RAM_MIB:-1024}
perfs=${BENCH_PERF:-both}
cores=${BENCH_CORES:-0x1}
# shellcheck disable=SC2206 # the extra arguments are words
extra=(${BENCH_PERF_ARGS:-})
nqn=nqn.2016-06.io.shoal:vsspdk
out=${BENCH_OUT:-$(mktemp -d /tmp/shoal-vs-spdk.XXXXXX)}
mkdir -p "$out"
work=$(mktemp -d /tmp/shoal-vs-spdk-work.XXXXXX)
bin=${CARGO_TARGET_DIR:-target}/release
pid=

cleanup() {
    if [[ -n $pid ]]; then kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
log() { echo "bench-vs-spdk: $*" >&2; }

# BENCH_NO_BUILD=1: use the binaries as built (a build would wait on any other cargo holding
# the package cache, e.g. one paused while the machine is kept quiet for the run).
if [[ -z ${BENCH_NO_BUILD:-} ]]; then
    cargo build --release -q -p shoal-target --bin shoald -p shoal-benches --bin shoal-perf
fi
"$SPDK_DIR/spdk-hugepages"

blocks=$((ram_mib * 256))
cat >"$work/shoald.json" <<EOF
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": $blocks, "block_size": 4096}},
  {"method": "bdev_null_create", "params": {"name": "Null0", "num_blocks": 262144, "block_size": 4096}},
  {"method": "bdev_malloc_create", "params": {"name": "Malloc1", "num_blocks": $((blocks / 4 + 256)), "block_size": 4096}},
  {"method": "bdev_malloc_create", "params": {"name": "Malloc2", "num_blocks": $((blocks / 4 + 256)), "block_size": 4096}},
  {"method": "nexus_create", "params": {"name": "Mirror0", "size": $((blocks / 4 * 4096)), "children": ["bdev:///Malloc1", "bdev:///Malloc2"]}}]},
 {"subsystem": "nvmf", "config": [
  {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "$nqn", "allow_any_host": true, "serial_number": "VSSPDK0001"}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$nqn", "namespace": {"bdev_name": "Malloc0", "nsid": 1}}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$nqn", "namespace": {"bdev_name": "Null0", "nsid": 2}}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$nqn", "namespace": {"bdev_name": "Mirror0", "nsid": 3}}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$nqn", "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "$port"}}}]}]}
EOF
# The same for SPDK, with raid1 (superblock off: the whole bdev is data, as the nexus's data
# region) instead of the nexus.
cat >"$work/spdk.json" <<EOF
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": $blocks, "block_size": 4096}},
  {"method": "bdev_null_create", "params": {"name": "Null0", "num_blocks": 262144, "block_size": 4096}},
  {"method": "bdev_malloc_create", "params": {"name": "Malloc1", "num_blocks": $((blocks / 4)), "block_size": 4096}},
  {"method": "bdev_malloc_create", "params": {"name": "Malloc2", "num_blocks": $((blocks / 4)), "block_size": 4096}},
  {"method": "bdev_raid_create", "params": {"name": "Mirror0", "raid_level": "raid1", "base_bdevs": ["Malloc1", "Malloc2"]}}]},
 {"subsystem": "nvmf", "config": [
  {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "$nqn", "allow_any_host": true, "serial_number": "VSSPDK0001"}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$nqn", "namespace": {"bdev_name": "Malloc0", "nsid": 1}}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$nqn", "namespace": {"bdev_name": "Null0", "nsid": 2}}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$nqn", "namespace": {"bdev_name": "Mirror0", "nsid": 3}}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$nqn", "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "$port"}}}]}]}
EOF

# shellcheck source=hack/lib-bench-spdk.sh
source hack/lib-bench-spdk.sh

# The rows: NAME NSID PERF-ARGS.
rows=(
    "randread-4k-qd32-ram|1|-q 32 -o 4096 -w randread"
    "randwrite-4k-qd32-ram|1|-q 32 -o 4096 -w randwrite"
    "read-128k-qd32-ram|1|-q 32 -o 131072 -w read"
    "write-128k-qd32-ram|1|-q 32 -o 131072 -w write"
    "randread-4k-qd1-ram|1|-q 1 -o 4096 -w randread"
    "randread-4k-qd32-null|2|-q 32 -o 4096 -w randread"
    "randread-4k-qd128-null|2|-q 128 -o 4096 -w randread"
    "randread-4k-qd32-ram-digests|1|-q 32 -o 4096 -w randread -H -I"
    "randwrite-4k-qd32-mirror|3|-q 32 -o 4096 -w randwrite"
    "randread-4k-qd32-mirror|3|-q 32 -o 4096 -w randread"
)
gens=()
[[ $perfs == spdk || $perfs == both ]] && gens+=(spdk)
[[ $perfs == shoal || $perfs == both ]] && gens+=(shoal)

raw=$out/raw.tsv
: >"$raw"
for ((round = 0; round < rounds; round++)); do
    order=(shoal spdk)
    ((round % 2)) && order=(spdk shoal)
    for target in "${order[@]}"; do
        log "round $round: $target"
        start "$target"
        # Write the RAM bdevs once: reads of never-written memory hit the zero page.
        perf spdk 1 -q 8 -o 1048576 -w write >/dev/null
        perf spdk 3 -q 8 -o 1048576 -w write >/dev/null
        for row in "${rows[@]}"; do
            IFS='|' read -r name ns args <<<"$row"
            [[ -z $filter || $name == *$filter* ]] || continue
            for gen in "${gens[@]}"; do
                # shellcheck disable=SC2086 # the row's arguments are words
                read -r iops lat < <(perf "$gen" "$ns" $args)
                printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$target" "$gen" "$name" "$iops" "$lat" >>"$raw"
                log "  $target $name ($gen): $iops IOPS, $lat us"
            done
        done
        stop
    done
done

python3 - "$raw" "$rounds" "$secs" "$cores" "${extra[*]}" <<'EOF'
import statistics, sys, collections, datetime
raw, rounds, secs = sys.argv[1], sys.argv[2], sys.argv[3]
d = collections.defaultdict(dict)
for line in open(raw):
    rnd, target, gen, name, iops, lat = line.split("\t")
    d[(name, gen)].setdefault(rnd, {})[target] = float(iops)
names = list(dict.fromkeys(n for n, _ in d))
gens = list(dict.fromkeys(g for _, g in d))
cores, extra = sys.argv[4], sys.argv[5]
try:
    cc = open("/proc/sys/net/ipv4/tcp_congestion_control").read().strip()
except OSError:
    cc = "unknown"
print(f"Shoal / SPDK, median of {rounds} alternating rounds of {secs} s, both targets on cores {cores}, "
      f"load on core 1{', load options ' + extra if extra else ''}, TCP congestion control {cc} "
      f"({datetime.date.today()})\n")
head = "| workload | " + " | ".join(f"SPDK IOPS ({g}) | Shoal IOPS ({g}) | ratio ({g})" for g in gens) + " |"
print(head)
print("|" + "---|" * (1 + 3 * len(gens)))
for n in names:
    cells = []
    for g in gens:
        per = d.get((n, g), {})
        ratios = [r["shoal"] / r["spdk"] for r in per.values() if r.get("spdk") and r.get("shoal")]
        s = statistics.median([r["spdk"] for r in per.values() if "spdk" in r] or [0])
        h = statistics.median([r["shoal"] for r in per.values() if "shoal" in r] or [0])
        ratio = f"**{statistics.median(ratios):.2f}**" if ratios else "n/a"
        cells += [f"{s:,.0f}", f"{h:,.0f}", ratio]
    print(f"| {n} | " + " | ".join(cells) + " |")
EOF
log "raw results: $raw"

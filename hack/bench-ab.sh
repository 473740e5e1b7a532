#!/usr/bin/env bash
# Two builds of shoald side by side: the same bdevs, spdk_nvme_perf as the one load generator,
# alternating rounds, the median ratio B / A per workload. For before/after figures of a change.
#
#   SPDK_DIR=/var/tmp/spdk hack/bench-ab.sh A_BIN_DIR B_BIN_DIR
#
# A_BIN_DIR and B_BIN_DIR hold a release `shoald` each (e.g. a worktree at the commit before the
# change, and target/release). Both run on core 0, the load on core 1, a 1 GiB RAM bdev (written
# once per start) and a null bdev as namespaces 1 and 2. spdk_nvme_perf comes from SPDK_DIR
# (../shared/tools/build-spdk.sh); without it this says SKIPPED and exits 0. CI does not run it.
# Env: BENCH_TIME (4), BENCH_ROUNDS (5), BENCH_PORT (4532), BENCH_OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z ${SPDK_DIR:-} || ! -x ${SPDK_DIR:-/nonexistent}/build/bin/spdk_nvme_perf ]]; then
    echo "SKIPPED: SPDK_DIR does not point at an SPDK build (../shared/tools/build-spdk.sh)"
    exit 0
fi
[[ $# -eq 2 && -x $1/shoald && -x $2/shoald ]] || {
    echo "usage: $0 A_BIN_DIR B_BIN_DIR (each with a release shoald)" >&2
    exit 2
}
a_bin=$(realpath "$1")
b_bin=$(realpath "$2")
secs=${BENCH_TIME:-4}
rounds=${BENCH_ROUNDS:-5}
port=${BENCH_PORT:-4532}
cores=0x1
extra=()
nqn=nqn.2016-06.io.shoal:benchab
out=${BENCH_OUT:-$(mktemp -d /tmp/shoal-bench-ab.XXXXXX)}
mkdir -p "$out"
work=$(mktemp -d /tmp/shoal-bench-ab-work.XXXXXX)
pid=

cleanup() {
    if [[ -n $pid ]]; then kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
log() { echo "bench-ab: $*" >&2; }

# shellcheck source=hack/lib-bench-spdk.sh
source hack/lib-bench-spdk.sh
"$SPDK_DIR/spdk-hugepages"

cat >"$work/shoald.json" <<JSON
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": 262144, "block_size": 4096}},
  {"method": "bdev_null_create", "params": {"name": "Null0", "num_blocks": 262144, "block_size": 4096}}]},
 {"subsystem": "nvmf", "config": [
  {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "$nqn", "allow_any_host": true, "serial_number": "BENCHAB01"}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$nqn", "namespace": {"bdev_name": "Malloc0", "nsid": 1}}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$nqn", "namespace": {"bdev_name": "Null0", "nsid": 2}}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$nqn", "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "$port"}}}]}]}
JSON

rows=(
    "randread-4k-qd32-ram|1|-q 32 -o 4096 -w randread"
    "randwrite-4k-qd32-ram|1|-q 32 -o 4096 -w randwrite"
    "read-128k-qd32-ram|1|-q 32 -o 131072 -w read"
    "randread-4k-qd1-ram|1|-q 1 -o 4096 -w randread"
    "randread-4k-qd32-null|2|-q 32 -o 4096 -w randread"
)
raw=$out/raw.tsv
: >"$raw"
for ((round = 0; round < rounds; round++)); do
    order=(a b)
    ((round % 2)) && order=(b a)
    for build in "${order[@]}"; do
        log "round $round: $build"
        bin=$a_bin
        [[ $build == b ]] && bin=$b_bin
        start shoal
        perf spdk 1 -q 8 -o 1048576 -w write >/dev/null
        for row in "${rows[@]}"; do
            IFS='|' read -r name ns args <<<"$row"
            # shellcheck disable=SC2086 # the row's arguments are words
            read -r iops lat < <(perf spdk "$ns" $args)
            printf '%s\t%s\t%s\t%s\n' "$round" "$build" "$name" "$iops" >>"$raw"
            log "  $build $name: $iops IOPS, $lat us"
        done
        stop
    done
done

python3 - "$raw" "$rounds" "$secs" "$a_bin" "$b_bin" <<'PY'
import collections, datetime, statistics, sys
raw, rounds, secs, a, b = sys.argv[1:6]
d = collections.defaultdict(lambda: collections.defaultdict(dict))
for line in open(raw):
    rnd, build, name, iops = line.rstrip("\n").split("\t")
    d[name][rnd][build] = float(iops)
print(f"B / A, median of {rounds} alternating rounds of {secs} s, shoald on core 0, "
      f"spdk_nvme_perf on core 1 ({datetime.date.today()})\nA: {a}\nB: {b}\n")
print("| workload | A IOPS | B IOPS | B / A | rounds |")
print("|---|---|---|---|---|")
for n, per in d.items():
    rs = [r["b"] / r["a"] for r in per.values() if r.get("a") and r.get("b")]
    ma = statistics.median([r["a"] for r in per.values() if "a" in r] or [0])
    mb = statistics.median([r["b"] for r in per.values() if "b" in r] or [0])
    print(f"| {n} | {ma:,.0f} | {mb:,.0f} | **{statistics.median(rs):.2f}** | "
          + " ".join(f"{x:.2f}" for x in rs) + " |")
PY
log "raw results: $raw"

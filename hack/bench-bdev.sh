#!/usr/bin/env bash
# Compares shoal-perf's uring bdev path with fio (io_uring engine, O_DIRECT) on the same file:
# 4 KiB random reads at queue depth 32 from one pinned core, fio first, then shoal-perf with
# adaptive polling (the default) and with busy polling. Prints both numbers and the ratio.
#
#   hack/bench-bdev.sh
#
# Env: BENCH_FILE (default /var/tmp/shoal-bench-bdev.img, 1 GiB, written once by fio so that it
#      is allocated, not sparse), BENCH_TIME seconds per run (10), BENCH_QD (32), BENCH_CORE (1),
#      BENCH_ROUNDS (1: each round runs all three, alternating, to even out disk noise),
#      BENCH_NICE (-10 as root, else 0: both tools run at this niceness so that other work on
#      the machine, e.g. a build, disturbs them less; it favours neither).
# Needs root for apt-get only if fio is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

file=${BENCH_FILE:-/var/tmp/shoal-bench-bdev.img}
secs=${BENCH_TIME:-10}
qd=${BENCH_QD:-32}
core=${BENCH_CORE:-1}
rounds=${BENCH_ROUNDS:-1}
if [[ $(id -u) -eq 0 ]]; then nice_level=${BENCH_NICE:--10}; else nice_level=${BENCH_NICE:-0}; fi
size=$((1 << 30))
mask=$(printf '0x%x' $((1 << core)))
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

if ! command -v fio >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fio
fi

cargo build --release -q -p shoal-benches --bin shoal-perf
perf=${CARGO_TARGET_DIR:-target}/release/shoal-perf

if [[ ! -f $file || $(stat -c %s "$file") -ne $size ]]; then
    echo "writing $file (1 GiB)"
    fio --name=prep --filename="$file" --size=$size --rw=write --bs=1M --direct=1 \
        --ioengine=io_uring --iodepth=8 --output=/dev/null
fi

run_fio() {
    nice -n "$nice_level" fio --name=randread --filename="$file" --ioengine=io_uring \
        --direct=1 --rw=randread --bs=4k --iodepth="$qd" --runtime="$secs" --time_based --cpus_allowed="$core" \
        --output-format=json >"$out/fio.json"
    python3 - "$out/fio.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["jobs"][0]["read"]
print(f'{r["iops"]:.0f} {r["lat_ns"]["mean"] / 1000:.1f}')
EOF
}

run_perf() {
    nice -n "$nice_level" "$perf" --bdev "uring:$file" -q "$qd" -o 4096 -w randread \
        -t "$secs" -c "$mask" "$@" >"$out/perf.txt"
    sed 's/^/    /' "$out/perf.txt" >&2
    awk '/^Total/ {printf "%.0f %.1f\n", $3, $5}' "$out/perf.txt"
}

declare -a fio_iops adaptive_iops busy_iops
for ((r = 1; r <= rounds; r++)); do
    echo "round $r/$rounds: fio" >&2
    read -r iops lat < <(run_fio)
    fio_iops+=("$iops")
    echo "    fio: $iops IOPS, $lat us average" >&2
    echo "round $r/$rounds: shoal-perf, adaptive polling" >&2
    read -r iops lat < <(run_perf)
    adaptive_iops+=("$iops")
    echo "round $r/$rounds: shoal-perf, busy polling" >&2
    read -r iops lat < <(run_perf --busy-poll)
    busy_iops+=("$iops")
done

python3 - "${fio_iops[*]}" "${adaptive_iops[*]}" "${busy_iops[*]}" "$qd" <<'EOF'
import sys
fio, ada, busy = ([float(x) for x in a.split()] for a in sys.argv[1:4])
mean = lambda v: sum(v) / len(v)
f = mean(fio)
print("=" * 72)
print(f"4 KiB randread, queue depth {sys.argv[4]}, one core, {len(fio)} round(s), mean IOPS")
print(f"fio (io_uring, O_DIRECT)        : {f:10.0f}")
for name, v in (("shoal-perf adaptive polling", ada), ("shoal-perf busy polling", busy)):
    m = mean(v)
    print(f"{name:<32}: {m:10.0f}   ratio to fio {m / f:6.1%}")
EOF

#!/usr/bin/env bash
# The comparison table with SPDK (docs/PERFORMANCE.md): shoald (release) on core 0 with a RAM
# (malloc) bdev, a null bdev and a uring bdev on a 1 GiB file as namespaces 1, 2 and 3 of one
# subsystem on 127.0.0.1; shoal-perf on core 1 (-c 0x2) runs each workload for BENCH_TIME
# seconds; fio (io_uring, O_DIRECT, core 1) runs the uring line's workload on the same file,
# BENCH_URING_ROUNDS (5) rounds taking turns with shoal-perf (the ratio is the median of the
# rounds'); `tcp-floor` (benches/src/bin) measures, right after the depth-1 line, the same
# round trip's bytes over loopback TCP with no NVMe work on either side.
# Three configurations: one connection, no digests (SPDK's set-up); the same with header and
# data digests (-H -I); shoald on two cores (-m 0x3) with four connections (-P 4), where
# shoal-perf shares core 1 with shoald's second reactor.
#
#   hack/bench-table.sh [all|base|digests|scale|cpu]      (default all)
#   BENCH_OUT=DIR hack/bench-table.sh render              (the tables of an earlier run's JSON)
#
# `cpu` (also part of `all`) measures shoal-perf's own CPU time per I/O: 4 KiB random reads at
# depth 32 and 128, one connection, RAM and null bdevs, with the default adaptive polling (the
# reactor spins up to 100 us when idle, so it shows ~100% of a core whatever the rate) and with
# --idle-spin-us 0 (it sleeps as soon as it is idle: the CPU time of the work itself).
#
# Prints markdown: the table with SPDK's figures next to Shoal's, then one line per run with
# latency percentiles and CPU time per I/O of shoal-perf and of shoald (from /proc/PID/stat),
# shoald's system calls per I/O during the 4 KiB depth-32 read (perf stat, when perf works),
# and shoald's idle CPU and resident memory.
#
# Env: BENCH_TIME (10), BENCH_FILE (/var/tmp/shoal-bench-bdev.img, shared with
#      hack/bench-bdev.sh), BENCH_PORT (4520: other tests on a shared machine use 4420),
#      BENCH_RAM_MIB (1024), BENCH_URING_ROUNDS (5), BENCH_OUT (a directory to keep the JSON
#      of every run in; default: a temporary one).
# The RAM bdev is written once before the read runs: reads of never-written anonymous memory
# all hit the kernel's zero page and would flatter the figures.
set -euo pipefail
cd "$(dirname "$0")/.."

which=${1:-all}
secs=${BENCH_TIME:-10}
file=${BENCH_FILE:-/var/tmp/shoal-bench-bdev.img}
port=${BENCH_PORT:-4520}
ram_mib=${BENCH_RAM_MIB:-1024}
uring_rounds=${BENCH_URING_ROUNDS:-5}
nqn=nqn.2016-06.io.shoal:bench
out=${BENCH_OUT:-$(mktemp -d /tmp/shoal-bench-table.XXXXXX)}
mkdir -p "$out"
work=$(mktemp -d /tmp/shoal-bench-work.XXXXXX)
pid=

cleanup() {
    if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

case $which in
all | base | digests | scale | cpu | render) ;;
*)
    echo "usage: $0 [all|base|digests|scale|cpu|render]" >&2
    exit 2
    ;;
esac
if [[ $which == render ]]; then
    [[ -n ${BENCH_OUT:-} ]] || { echo "render needs BENCH_OUT=DIR" >&2; exit 2; }
elif ! command -v fio >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fio
fi
bin=${CARGO_TARGET_DIR:-target}/release
size=$((1 << 30))
if [[ $which != render ]]; then
    cargo build --release -q -p shoal-target --bin shoald -p shoal-benches --bin shoal-perf \
        --bin tcp-floor
fi
if [[ $which != render && ( ! -f $file || $(stat -c %s "$file") -ne $size ) ]]; then
    echo "writing $file (1 GiB)" >&2
    fio --name=prep --filename="$file" --size=$size --rw=write --bs=1M --direct=1 \
        --ioengine=io_uring --iodepth=8 --output=/dev/null
fi

cat >"$work/config.json" <<EOF
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": $((ram_mib * 256)), "block_size": 4096}},
  {"method": "bdev_null_create", "params": {"name": "Null0", "num_blocks": 262144, "block_size": 4096}},
  {"method": "bdev_uring_create", "params": {"name": "Uring0", "filename": "$file", "block_size": 4096}}]},
 {"subsystem": "nvmf", "config": [
  {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "$nqn", "allow_any_host": true, "serial_number": "SHOALBENCH0001"}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$nqn", "namespace": {"bdev_name": "Malloc0", "nsid": 1}}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$nqn", "namespace": {"bdev_name": "Null0", "nsid": 2}}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$nqn", "namespace": {"bdev_name": "Uring0", "nsid": 3}}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$nqn", "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "$port"}}}]}]}
EOF

cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
# Busy (user, nice, system, irq, softirq), softirq and stolen jiffies of the whole machine, to
# tell how much else ran during a run. Without CONFIG_IRQ_TIME_ACCOUNTING (this kernel), a tick
# in softirq context (loopback TCP receive processing, mostly our own) is also charged to the
# task it interrupted, so a process's CPU time includes it.
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $8, $9}' /proc/stat; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }

start_shoald() { # MASK
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "something already listens on 127.0.0.1:$port: set BENCH_PORT" >&2
        exit 1
    fi
    "$bin/shoald" -m "$1" -c "$work/config.json" -r "$work/rpc.sock" --log warn \
        >"$work/shoald.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
        sleep 0.1
    done
    sleep 0.5
    echo "shoald -m $1 (pid $pid) up" >&2
}

stop_shoald() {
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
}

trid() { echo "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$port subnqn:$nqn ns:$1"; }

# run NAME NSID [shoal-perf args...]: one measured run; its JSON, with shoald's CPU time.
run() {
    local name=$1 ns=$2
    shift 2
    local a b m0 q0 s0 m1 q1 s1
    a=$(cpu_ticks)
    read -r m0 q0 s0 < <(machine_ticks)
    "$bin/shoal-perf" -r "$(trid "$ns")" -c 0x2 -t "$secs" --json "$@" >"$out/$name.json"
    b=$(cpu_ticks)
    read -r m1 q1 s1 < <(machine_ticks)
    echo "{\"ticks\": $((b - a)), \"clk_tck\": $(getconf CLK_TCK), \"machine_busy\": $((m1 - m0)), \"softirq\": $((q1 - q0)), \"steal\": $((s1 - s0))}" \
        >"$out/$name.shoald.json"
    python3 - "$out/$name.json" "$name" <<'EOF' >&2
import json, sys
j = json.load(open(sys.argv[1])); r = j["total"]["rates"]
print(f'  {sys.argv[2]:<28} {r["iops"]:>10.0f} IOPS {r["mib_s"]:>9.1f} MiB/s {r["avg_us"]:>8.1f} us avg, '
      f'shoal-perf {j["cpu"]["per_io_us"]:.3f} us CPU/IO')
EOF
}

# Fills the RAM bdev so that reads touch real memory.
prefill() {
    "$bin/shoal-perf" -r "$(trid 1)" -c 0x2 -t 5 -q 8 -o 1048576 -w write >/dev/null
}

# The six workloads of the table, as run NAME-PREFIX.
workloads() { # PREFIX [extra shoal-perf args...]
    local p=$1
    shift
    prefill
    run "$p-randread-qd32-ram" 1 -q 32 -o 4096 -w randread "$@"
    run "$p-randwrite-qd32-ram" 1 -q 32 -o 4096 -w randwrite "$@"
    run "$p-read128k-qd32-ram" 1 -q 32 -o 131072 -w read "$@"
    run "$p-randread-qd1-ram" 1 -q 1 -o 4096 -w randread "$@"
    if [[ $p == base ]]; then
        # The same round trip's bytes over loopback TCP with no NVMe work on either side: the
        # floor under the depth-1 line, measured in the same minute (the VM's speed drifts).
        "$bin/tcp-floor" --secs "$secs" --port $((port + 1)) --json >"$out/tcp-floor.json"
        echo "  tcp-floor: $(cat "$out/tcp-floor.json")" >&2
    fi
    run "$p-randread-qd32-null" 2 -q 32 -o 4096 -w randread "$@"
    run "$p-randread-qd32-uring" 3 -q 32 -o 4096 -w randread "$@"
}

if [[ $which == all || $which == base ]]; then
    start_shoald 0x1
    echo "{\"rss_kib_start\": $(rss_kib)}" >"$out/rss-start.json"
    # System calls per I/O of shoald (and of shoal-perf) in the middle of a 4 KiB read run.
    if perf stat -e raw_syscalls:sys_enter -p "$pid" -- sleep 0.1 >/dev/null 2>&1; then
        prefill
        "$bin/shoal-perf" -r "$(trid 1)" -c 0x2 -t "$secs" -q 32 -o 4096 -w randread --json \
            >"$out/syscalls-run.json" &
        host_pid=$!
        sleep 2
        window=$((secs > 5 ? secs - 4 : 1))
        perf stat -x, -e raw_syscalls:sys_enter -p "$pid" -o "$out/syscalls-shoald.csv" \
            -- sleep "$window" &
        stat_pid=$!
        perf stat -x, -e raw_syscalls:sys_enter -p "$host_pid" -o "$out/syscalls-host.csv" \
            -- sleep "$window" || true
        wait "$stat_pid" || true
        wait "$host_pid"
        echo "{\"window_s\": $window}" >"$out/syscalls-window.json"
    fi
    workloads base
    # Idle: no connection left; CPU over 5 s after 2 s to settle, as hack/bench-idle.sh does.
    sleep 2
    a=$(cpu_ticks)
    sleep 5
    b=$(cpu_ticks)
    echo "{\"ticks\": $((b - a)), \"secs\": 5, \"clk_tck\": $(getconf CLK_TCK), \"rss_kib_end\": $(rss_kib)}" \
        >"$out/idle.json"
    # The uring line against fio on the same file: the virtual disk's speed drifts by 5-10%
    # within minutes and shoal's runs by +-7% between runs, so fio and shoal-perf take turns,
    # BENCH_URING_ROUNDS (5) rounds each (shoald stays up, idle while fio runs), and the ratio
    # is the median of the rounds'.
    for r in $(seq "$uring_rounds"); do
        echo "fio on $file (core 1), round $r" >&2
        fio --name=randread --filename="$file" --ioengine=io_uring --direct=1 --rw=randread \
            --bs=4k --iodepth=32 --runtime="$secs" --time_based --cpus_allowed=1 \
            --output-format=json >"$out/fio-$r.json"
        run "uring-round$r" 3 -q 32 -o 4096 -w randread
    done
    stop_shoald
fi
if [[ $which == all || $which == digests ]]; then
    start_shoald 0x1
    workloads digests -H -I
    stop_shoald
fi
if [[ $which == all || $which == scale ]]; then
    start_shoald 0x3
    workloads scale -P 4
    stop_shoald
fi

if [[ $which == all || $which == cpu ]]; then
    start_shoald 0x1
    prefill
    for q in 32 128; do
        for ns in 1 2; do
            dev=$([[ $ns == 1 ]] && echo ram || echo null)
            run "cpu-qd$q-$dev-adaptive" "$ns" -q "$q" -o 4096 -w randread
            run "cpu-qd$q-$dev-nospin" "$ns" -q "$q" -o 4096 -w randread --idle-spin-us 0
        done
    done
    stop_shoald
fi

python3 - "$out" "$secs" <<'EOF'
import json, os, sys
out, secs = sys.argv[1], int(sys.argv[2])
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None
rows = [
    ("4 KiB random read, depth 32, RAM bdev", "randread-qd32-ram", "iops", "628k IOPS"),
    ("4 KiB random write, depth 32, RAM bdev", "randwrite-qd32-ram", "iops", "592k IOPS"),
    ("128 KiB sequential read, depth 32, RAM bdev", "read128k-qd32-ram", "mib", "4,310 MiB/s"),
    ("4 KiB random read, depth 1, RAM bdev (average latency)", "randread-qd1-ram", "lat", "11 us"),
    ("4 KiB random read, depth 32, null bdev", "randread-qd32-null", "iops", "780k IOPS"),
    ("4 KiB random read, depth 32, uring bdev on a file", "randread-qd32-uring", "iops",
     "71k IOPS (fio: 88k)"),
]
def fmt(j, kind):
    if j is None:
        return "-"
    r = j["total"]["rates"]
    if kind == "iops":
        return f'{r["iops"] / 1000:.0f}k IOPS'
    if kind == "mib":
        return f'{r["mib_s"]:,.0f} MiB/s'
    return f'{r["avg_us"]:.1f} us'
rounds = [(load(f"uring-round{r}.json"), load(f"fio-{r}.json")) for r in range(1, 100)]
rounds = [(u["total"]["rates"]["iops"], f["jobs"][0]["read"]["iops"]) for u, f in rounds if u and f]
fio = None
if rounds:
    ratios = sorted(u / f for u, f in rounds)
    mid = len(rounds) // 2
    fio = (sorted(f for _, f in rounds)[mid], ratios[mid], rounds, sorted(u for u, _ in rounds)[mid])
configs = [("base", "Shoal, 1 connection"), ("digests", "Shoal, header + data digests"),
           ("scale", "Shoal, shoald -m 0x3, -P 4")]
print("| workload | SPDK v25.09 | " + " | ".join(c[1] for c in configs) + " |")
print("|---|---|" + "---|" * len(configs))
for label, key, kind, spdk in rows:
    cells = []
    for prefix, _ in configs:
        c = fmt(load(f"{prefix}-{key}.json"), kind)
        floor = load("tcp-floor.json")
        if key == "randread-qd1-ram" and prefix == "base" and floor:
            c += f' (TCP floor {floor["avg_us"]:.1f} us)'
        if key.endswith("uring") and prefix == "base" and fio:
            c = (f'{fio[3] / 1000:.0f}k IOPS (fio: {fio[0] / 1000:.0f}k; medians of {len(fio[2])} '
                 f'alternating rounds; median ratio {100 * fio[1]:.0f}% of fio)')
        cells.append(c)
    print(f"| {label} | {spdk} | " + " | ".join(cells) + " |")
idle, start = load("idle.json"), load("rss-start.json")
if idle:
    pct = 100 * idle["ticks"] / idle["clk_tck"] / idle["secs"]
    print(f"| CPU while idle | 100% of a core | {pct:.1f}% of a core | | |")
if start and idle:
    print(f'| resident memory of shoald | 37 MiB + 2 GiB hugepages | {start["rss_kib_start"] / 1024:.1f} MiB at start, '
          f'{idle["rss_kib_end"] / 1024:.0f} MiB after the runs (RAM bdev pages written) | | |')
print()
print("| run | IOPS | MiB/s | avg us | p50 | p99 | p99.9 | shoal-perf CPU us/IO | shoald CPU us/IO | others, softirq, steal (% of a core) |")
print("|---|---|---|---|---|---|---|---|---|---|")
names = [f"{prefix}-{key}" for prefix, _ in configs for _, key, _, _ in rows]
names += [f"cpu-qd{q}-{dev}-{mode}" for q in (32, 128) for dev in ("ram", "null")
          for mode in ("adaptive", "nospin")]
for name in names:
    j, s = load(f"{name}.json"), load(f"{name}.shoald.json")
    if j is None:
        continue
    r, ios = j["total"]["rates"], max(j["total"]["ios"], 1)
    tgt = s["ticks"] / s["clk_tck"] * 1e6 / ios if s else float("nan")
    other = "-"
    if s and "machine_busy" in s:
        # Everything else that ran (other processes, interrupts) and time stolen by the
        # hypervisor, in % of one core over the run.
        own = s["ticks"] + (j["cpu"]["process_user_s"] + j["cpu"]["process_sys_s"]) * s["clk_tck"]
        wall = j["jobs"][0]["elapsed_s"] * s["clk_tck"]
        other = (f'{100 * max(s["machine_busy"] - own, 0) / wall:.0f}%, softirq '
                 f'{100 * s["softirq"] / wall:.0f}%, steal {100 * s["steal"] / wall:.0f}%')
    print(f'| {name} | {r["iops"]:.0f} | {r["mib_s"]:.1f} | {r["avg_us"]:.1f} | {r["p50_us"]:.1f} '
          f'| {r["p99_us"]:.1f} | {r["p99_9_us"]:.1f} | {j["cpu"]["per_io_us"]:.3f} | {tgt:.3f} | {other} |')
def syscalls(name):
    p = os.path.join(out, name)
    if not os.path.exists(p):
        return None
    for line in open(p):
        f = line.strip().split(",")
        if len(f) > 2 and "raw_syscalls" in f[2] and f[0].isdigit():
            return int(f[0])
    return None
run, win = load("syscalls-run.json"), load("syscalls-window.json")
if run and win:
    iops = run["total"]["rates"]["iops"]
    for who, name in (("shoald", "syscalls-shoald.csv"), ("shoal-perf", "syscalls-host.csv")):
        n = syscalls(name)
        if n is not None:
            print(f'\n{who}: {n / win["window_s"]:.0f} system calls/s at {iops:.0f} IOPS = '
                  f'{n / win["window_s"] / iops:.3f} per I/O (4 KiB random read, depth 32, RAM bdev)')
cpu = [(q, dev, load(f"cpu-qd{q}-{dev}-adaptive.json"), load(f"cpu-qd{q}-{dev}-nospin.json"))
       for q in (32, 128) for dev in ("ram", "null")]
if any(a for _, _, a, _ in cpu):
    print("\n| shoal-perf, 4 KiB random read | adaptive polling: IOPS | CPU us/IO (user + sys) "
          "| --idle-spin-us 0: IOPS | CPU us/IO (user + sys) | its share of core 1 |")
    print("|---|---|---|---|---|---|")
    for q, dev, a, n in cpu:
        def cells(j):
            if j is None:
                return "-", "-"
            c = j["cpu"]
            return (f'{j["total"]["rates"]["iops"] / 1000:.0f}k',
                    f'{c["per_io_us"]:.3f} ({c["user_per_io_us"]:.3f} + {c["sys_per_io_us"]:.3f})')
        share = "-"
        if n:
            core = n["cores"][0]
            share = f'{100 * (core["cpu_user_s"] + core["cpu_sys_s"]) / core["elapsed_s"]:.0f}%'
        print(f"| depth {q}, {dev} bdev | {' | '.join(cells(a))} | {' | '.join(cells(n))} | {share} |")
if fio:
    print("\nuring bdev vs fio on the same file, alternating rounds (IOPS): " + ", ".join(
        f"{u / 1000:.1f}k vs {f / 1000:.1f}k = {100 * u / f:.1f}%" for u, f in fio[2]))
print(f"\nJSON of every run: {out}")
EOF

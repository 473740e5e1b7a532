#!/usr/bin/env bash
# Measures the CPU an idle shoald uses: starts it on its default configuration (a listening
# target, no hosts), waits for it to settle, then reads its user+system CPU time over a window.
#
#   hack/bench-idle.sh [SECONDS] [extra shoald args...]     (default 10 s)
#
# Prints the CPU share of one core; `--busy-poll` shows what SPDK-style polling costs.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
shift || true
cargo build --release -q -p shoal-target --bin shoald
dir=$(mktemp -d /tmp/shoal-idle.XXXXXX)
target/release/shoald -r "$dir/rpc.sock" "$@" >"$dir/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [[ -S $dir/rpc.sock ]] && break; sleep 0.1; done
sleep 2
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
a=$(cpu)
sleep "$secs"
b=$(cpu)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
awk -v a="$a" -v b="$b" -v t="$tick" -v s="$secs" -v r="$rss" -v args="$*" 'BEGIN {
    printf "idle shoald %s: %.2f%% of one core over %d s (%d ticks), resident %.1f MiB\n",
        args, 100 * (b - a) / t / s, s, b - a, r / 1024 }'

#!/usr/bin/env bash
# Soak (issue 19, not run by CI): hostile and broken hosts (hack/soak/hostile.py: a host that
# floods reads and never reads its socket, connect/Disconnect churn, connections that never
# send an ICReq, hosts that vanish mid-R2T and mid-PDU, garbage) beside a verified healthy
# load (shoal-perf -V, 4 KiB random reads and writes at depth 32), against one shoald.
#
#   hack/soak-hostile.sh [SECONDS]          (default 600: the soak's length with hostile hosts)
#
# First the healthy load runs alone for SOAK_BASELINE seconds (30), then beside the hostile
# hosts for SECONDS, then alone again for 10 s after they stopped. Every 10 s it prints
# shoald's resident memory (VmRSS), its open descriptors and the healthy load's IOPS (each
# sample is one 10 s shoal-perf run: it connects, verifies and disconnects), and at the end
# the range of each and the healthy IOPS as a share of the baseline.
#
# The healthy load first writes the whole namespace (unmeasured), so that its reads do not hit
# never-written memory.
#
# Env: SOAK_ADDR (127.0.0.31), SOAK_PORT (4620), SOAK_BASELINE (30), SOAK_CORES: shoald's and
#      shoal-perf's core masks ("0x1 0x2"), SOAK_HOSTILE_NICE (10). The hostile hosts are Python
#      threads on any core, at that nice level. SOAK_CYCLE=N (0: off): the hostile hosts run in
#      cycles of N seconds with SOAK_QUIET (30) seconds without them in between, and each cycle
#      is compared with the quiet windows around it (for a machine whose speed drifts).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-600}
addr=${SOAK_ADDR:-127.0.0.31}
port=${SOAK_PORT:-4620}
base=${SOAK_BASELINE:-30}
cycle=${SOAK_CYCLE:-0}
quiet=${SOAK_QUIET:-30}
read -r tmask pmask <<<"${SOAK_CORES:-0x1 0x2}"
nqn=nqn.2016-06.io.shoal:soak

bin=${CARGO_TARGET_DIR:-target}/release
cargo build --release -q -p shoal-target --bin shoald -p shoal-benches --bin shoal-perf
work=$(mktemp -d /tmp/shoal-soak.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

if (exec 3<>"/dev/tcp/$addr/$port") 2>/dev/null; then
    echo "something already listens on $addr:$port: set SOAK_ADDR / SOAK_PORT" >&2
    exit 1
fi
cat >"$work/soak.json" <<EOF
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_malloc_create", "params": {"name": "Soak0", "num_blocks": 65536, "block_size": 4096}}]},
 {"subsystem": "nvmf", "config": [
  {"method": "nvmf_create_transport", "params": {"trtype": "TCP", "ic_timeout_ms": 2000}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "$nqn", "allow_any_host": true}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$nqn", "namespace": {"bdev_name": "Soak0", "nsid": 1}}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$nqn", "listen_address":
    {"trtype": "TCP", "adrfam": "IPv4", "traddr": "$addr", "trsvcid": "$port"}}}]}]}
EOF
"$bin/shoald" -m "$tmask" -c "$work/soak.json" -r "$work/rpc.sock" --log warn >"$work/shoald.log" 2>&1 &
spid=$!
pids+=("$spid")
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/$addr/$port") 2>/dev/null && break
    kill -0 "$spid" 2>/dev/null || break
    sleep 0.1
done
if ! (exec 3<>"/dev/tcp/$addr/$port") 2>/dev/null; then
    cat "$work/shoald.log" >&2
    echo "shoald did not start" >&2
    exit 1
fi

rss_mib() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$spid/status"; }
fds() { find "/proc/$spid/fd" -mindepth 1 -maxdepth 1 | wc -l; }
trid="trtype:TCP adrfam:IPv4 traddr:$addr trsvcid:$port subnqn:$nqn ns:1"
# One 10 s verified slice of the healthy load; prints its IOPS (or FAIL).
slice() {
    "$bin/shoal-perf" -r "$trid" -c "$pmask" -q 32 -o 4096 -w randrw -M 50 -V -t 10 --json 2>"$work/perf.err" |
        python3 -c 'import json, sys; print("%.0f" % json.load(sys.stdin)["total"]["rates"]["iops"])' ||
        echo FAIL
}
start=$(date +%s)
sample() { # PHASE
    local iops
    iops=$(slice)
    printf '%5ds %-8s RSS %7s MiB  fds %5s  healthy %8s IOPS\n' \
        $(($(date +%s) - start)) "$1" "$(rss_mib)" "$(fds)" "$iops"
    echo "$1 $(rss_mib) $(fds) $iops" >>"$work/samples"
    [[ $iops != FAIL ]] || {
        cat "$work/perf.err" >&2
        return 1
    }
}

echo "$(date -u '+%F %T') UTC: shoald -m $tmask on $addr:$port, healthy load shoal-perf -V -c $pmask -q 32 -o 4096 -w randrw"
printf '%5ds %-8s RSS %7s MiB  fds %5s\n' 0 start "$(rss_mib)" "$(fds)"
"$bin/shoal-perf" -r "$trid" -c "$pmask" -q 8 -o 1048576 -w write -t 3 >/dev/null
end=$(($(date +%s) + base))
while (($(date +%s) < end)); do sample baseline; done

# The hostile hosts stand in for other machines: their own CPU time (Python threads) would not be
# taken from this node's cores in a cluster, so they run at a lower priority (SOAK_HOSTILE_NICE,
# 10) than shoald and the healthy load; what they make shoald do is still done by shoald.
hostile() { # SECONDS
    nice -n "${SOAK_HOSTILE_NICE:-10}" python3 hack/soak/hostile.py "$addr" "$port" "$nqn" "$1" \
        >>"$work/hostile.out" 2>&1 &
    hpid=$!
    pids+=("$hpid")
    while kill -0 "$hpid" 2>/dev/null; do sample hostile; done
    wait "$hpid" || true
}
if ((cycle == 0)); then
    hostile "$secs"
else
    # Cycles: the hostile hosts for `cycle` seconds, then `quiet` seconds without them, until
    # they have run for SECONDS in all; each cycle's hostile samples are compared with the
    # quiet samples on both sides of it, so that the machine's drift cancels out.
    left=$secs
    while ((left > 0)); do
        c=$((left < cycle ? left : cycle))
        hostile "$c"
        left=$((left - c))
        end=$(($(date +%s) + quiet))
        while (($(date +%s) < end)); do sample quiet; done
    done
fi
cat "$work/hostile.out"
sample after

if ((cycle > 0)); then
    # Per cycle: mean healthy IOPS beside the hostile hosts / the mean of the windows without
    # them just before and just after it; the median of those ratios.
    python3 - "$work/samples" <<'PY'
import itertools, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
segs = [(k, statistics.mean(float(r[3]) for r in g))
        for k, g in itertools.groupby(rows, key=lambda r: r[0] == "hostile")]
ratios = [h / ((segs[i - 1][1] + segs[i + 1][1]) / 2)
          for i, (hostile, h) in enumerate(segs) if hostile and 0 < i < len(segs) - 1]
print("per cycle, healthy IOPS beside the hostile hosts / without them (windows around it): "
      + " ".join("%.1f%%" % (100 * r) for r in ratios)
      + ("; median %.1f%%" % (100 * statistics.median(ratios)) if ratios else " none"))
PY
fi
awk '
    $1 == "baseline" { b += $4; nb++ }
    $1 == "hostile" { h += $4; nh++; if (!rmin || $2 < rmin) rmin = $2; if ($2 > rmax) rmax = $2
                      if (!fmin || $3 < fmin) fmin = $3; if ($3 > fmax) fmax = $3 }
    $1 == "after" { ra = $2; fa = $3 }
    END {
        printf "baseline: %.0f IOPS (%d samples); beside hostile hosts: %.0f IOPS (%d samples) = %.1f %%\n",
            b / nb, nb, h / nh, nh, 100 * (h / nh) / (b / nb)
        printf "shoald RSS beside hostile hosts %.1f-%.1f MiB, after %.1f MiB; descriptors %d-%d, after %d\n",
            rmin, rmax, ra, fmin, fmax, fa
    }' "$work/samples"
grep -c . "$work/shoald.log" | xargs printf 'shoald log lines (warn and above): %s; by kind:\n'
sed -E 's/\x1b\[[0-9;]*m//g; s/^[^ ]+ +//; s/[0-9]+/N/g' "$work/shoald.log" | cut -c1-160 |
    sort | uniq -c | sort -rn | head -8

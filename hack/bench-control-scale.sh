#!/usr/bin/env bash
# The control plane's own cost at scale (issue 16, "Scale"), on SIMULATED nodes.
#
# A real etcd and a real shoal-control (release build) manage BENCH_NODES nodes simulated by
# two shoal-simnode processes (control/src/bin/shoal-simnode: JSON-RPC endpoints answering the
# methods the control plane calls from state in memory, registered through the real agent
# code with one etcd lease each; they store no data and serve no NVMe/TCP). Through the real
# HTTP API it then:
#   1. creates BENCH_VOLUMES volumes of BENCH_REPLICAS replicas (BENCH_CLIENTS requests at a
#      time), then publishes each (the control plane chooses the nexus node);
#   2. measures the leader's idle cost with every volume published (BENCH_IDLE seconds);
#   3. takes BENCH_OFFLINE nodes spread over the numbers offline (with the defaults nodes 10,
#      20, 30, 40 and 50; kill -9 of their process: their leases expire, their endpoints close) and waits until every affected volume
#      is placed again (each replica on an online node and online, the nexus published on an
#      online node: a nexus on an offline node is moved);
#   4. measures the idle cost again (the offline nodes still down), then unpublishes and
#      deletes BENCH_SAMPLE volumes that the offline nodes did not touch.
# For each phase: wall time, etcd requests (etcd's /metrics: gRPC requests by method; the
# store's range, put and delete operations, a range counted for every Range request and for
# every compare of a transaction; and the revision: one per write transaction that changed
# something; the one Status request per phase is the benchmark's), node calls (the
# simulations count them by method), shoal-control's and etcd's CPU time; at the end
# shoal-control's peak RSS. The requests of the benchmark's own polling through the API are
# part of the figures of phase 3 (one volume list and one node list per second).
#
# Run it under `nice -n 19` on a shared machine: the figures are the control plane's own
# cost, not a latency under contention. Env: BENCH_NODES [50], BENCH_OFFLINE [5],
# BENCH_VOLUMES [1000], BENCH_REPLICAS [3], BENCH_VOLUME_MIB [1024], BENCH_THIN [false],
# BENCH_POOL_GIB [256], BENCH_CLIENTS [4], BENCH_HEAL_AFTER [10], BENCH_LEASE_TTL [3],
# BENCH_REBUILD_MS [0], BENCH_IDLE [20], BENCH_SAMPLE [100], BENCH_HEAL_TIMEOUT [600],
# BENCH_NO_BUILD (use target/release as it is), BENCH_KEEP (keep the work directory).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

NODES=${BENCH_NODES:-50}
OFFLINE=${BENCH_OFFLINE:-5}
VOLUMES=${BENCH_VOLUMES:-1000}
REPLICAS=${BENCH_REPLICAS:-3}
VOLUME_MIB=${BENCH_VOLUME_MIB:-1024}
THIN=${BENCH_THIN:-false}
POOL_GIB=${BENCH_POOL_GIB:-256}
CLIENTS=${BENCH_CLIENTS:-4}
HEAL_AFTER=${BENCH_HEAL_AFTER:-10}
LEASE_TTL=${BENCH_LEASE_TTL:-3}
REBUILD_MS=${BENCH_REBUILD_MS:-0}
IDLE=${BENCH_IDLE:-20}
SAMPLE=${BENCH_SAMPLE:-100}
HEAL_TIMEOUT=${BENCH_HEAL_TIMEOUT:-600}

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "FAILED: $*"
    exit 1
}
((OFFLINE < NODES && NODES <= 250 && REPLICAS <= NODES - OFFLINE)) ||
    die "BENCH_NODES 1-250, BENCH_OFFLINE below it, BENCH_REPLICAS at most the nodes left online"

work=$(mktemp -d /tmp/shoal-bench-scale.XXXXXX)
declare -A pid=()
cleanup() {
    local p
    for p in "${!pid[@]}"; do kill "${pid[$p]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ -n ${BENCH_KEEP:-} ]]; then log "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# A 127.a.b.0/24 slice of our own (as the control tests do): fixed ports never clash.
slice="127.$((100 + RANDOM % 150)).$((RANDOM % 256))"
ETCD_URL=http://$slice.250:2379
API=http://$slice.251:8080
for hp in "$slice.250:2379" "$slice.250:2380" "$slice.251:8080"; do
    ! ss -Hltn "src $hp" | grep -q . || die "$hp in use"
done

if [[ -z ${BENCH_NO_BUILD:-} ]]; then
    log "building shoal-control and shoal-simnode (release)"
    cargo build --release -q -p shoal-control --bins
fi
bin=$root/target/release
for b in shoal-control shoal-simnode; do [[ -x $bin/$b ]] || die "$bin/$b missing"; done

api() { # METHOD PATH [JSON]: the body; fails unless 2xx
    local out code
    out=$(curl -sS -m 300 -X "$1" -H 'content-type: application/json' \
        ${3:+--data "$3"} -w '\n%{http_code}' "$API$2") || return 1
    code=${out##*$'\n'}
    out=${out%$'\n'*}
    [[ $code == 2* ]] || {
        echo "$1 $2: HTTP $code: $out" >&2
        return 1
    }
    printf '%s\n' "$out"
}

wait_port() { # HOST PORT SECONDS WHAT
    local end=$((SECONDS + $3))
    until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
        ((SECONDS < end)) || die "$4 did not listen on $1:$2"
        sleep 0.1
    done
}

cpu_ticks() { # PID: utime + stime of the process (clock ticks)
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}
hz=$(getconf CLK_TCK)

# snapshot NAME: the time, the CPU of shoal-control and etcd, etcd's counters and revision,
# and the nodes' calls by method.
snapshot() {
    local f=$work/snap.$1 s
    {
        echo "time $(date +%s.%N)"
        echo "control_cpu $(cpu_ticks "${pid[control]}")"
        echo "etcd_cpu $(cpu_ticks "${pid[etcd]}")"
        curl -sS "$ETCD_URL/metrics" | awk '
            /^etcd_mvcc_(range|put|delete)_total / { print $1, $2 }
            /^grpc_server_handled_total\{/ && /grpc_type="unary"/ {
                match($0, /grpc_method="[A-Za-z]*"/)
                n["grpc:" substr($0, RSTART + 13, RLENGTH - 14)] += $2
            }
            END { for (k in n) print k, n[k] }'
        echo "revision $(ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" endpoint status -w json |
            jq '.[0].Status.header.revision')"
        for s in simA simB; do
            [[ -n ${pid[$s]:-} ]] && kill -USR1 "${pid[$s]}" 2>/dev/null || true
        done
        sleep 0.3
        for s in simA simB; do
            grep '^{"calls"' "$work/$s.out" | tail -n 1 | jq -r '.calls | to_entries[] | "call:\(.key) \(.value)"'
        done | awk '{ n[$1] += $2 } END { for (k in n) print k, n[k] }'
    } >"$f"
}

# report NAME FROM TO OPS: what happened between two snapshots, per operation.
report() {
    awk -v name="$1" -v ops="$4" -v hz="$hz" '
        FNR == NR { a[$1] = $2; next }
        { b[$1] = $2 }
        END {
            wall = b["time"] - a["time"]
            printf "%-22s %6d ops  %8.1f s  %7.2f ops/s\n", name, ops, wall, (wall > 0 ? ops / wall : 0)
            printf "    shoal-control CPU %7.2f s (%.1f ms/op, %.0f%% of a core)   etcd CPU %7.2f s\n",
                (b["control_cpu"] - a["control_cpu"]) / hz,
                (ops ? 1000 * (b["control_cpu"] - a["control_cpu"]) / hz / ops : 0),
                (wall > 0 ? 100 * (b["control_cpu"] - a["control_cpu"]) / hz / wall : 0),
                (b["etcd_cpu"] - a["etcd_cpu"]) / hz
            split("range put delete", k, " ")
            line = "    etcd store ops:"
            for (i = 1; i <= 3; i++) {
                m = "etcd_mvcc_" k[i] "_total"; v = b[m] - a[m]
                line = line sprintf(" %s %d (%.1f/op)", k[i], v, (ops ? v / ops : 0))
            }
            v = b["revision"] - a["revision"]
            printf "%s  revisions %d (%.2f/op)\n", line, v, (ops ? v / ops : 0)
            printf "    etcd requests:"
            for (m in b) if (m ~ /^grpc:/) { v = b[m] - a[m]; if (v > 0) { gt += v; g[m] = v } }
            for (m in g) printf " %s %d (%.1f/op)", substr(m, 6), g[m], (ops ? g[m] / ops : 0)
            printf "  total %d (%.1f/op)\n", gt, (ops ? gt / ops : 0)
            for (m in b) if (m ~ /^call:/) { v = b[m] - a[m]; if (v > 0) { tot += v; c[m] = v } }
            printf "    node calls %d (%.1f/op):", tot, (ops ? tot / ops : 0)
            for (m in c) printf " %s %d", substr(m, 6), c[m]
            printf "\n"
        }' "$work/snap.$2" "$work/snap.$3" | tee -a "$work/results.txt"
}

# --- the cluster -------------------------------------------------------------------------
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/token")
etcd --name bench --data-dir "$work/etcd" \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "http://$slice.250:2380" --initial-advertise-peer-urls "http://$slice.250:2380" \
    --initial-cluster "bench=http://$slice.250:2380" \
    --logger zap --log-level warn >"$work/etcd.log" 2>&1 &
pid[etcd]=$!
wait_port "$slice.250" 2379 20 etcd
"$bin/shoal-control" serve --etcd "$ETCD_URL" --listen "$slice.251:8080" --id control1 \
    --lease-ttl "$LEASE_TTL" --rpc-token-file "$work/token" --heal-after "$HEAL_AFTER" \
    >"$work/control.log" 2>&1 &
pid[control]=$!
wait_port "$slice.251" 8080 20 shoal-control
# The nodes to take offline: every (NODES / OFFLINE)th (placement fills nodes in the order of
# their free space, then of their ids: neighbours share many volumes).
offline_nums=$(for i in $(seq "$OFFLINE"); do echo $((i * NODES / OFFLINE)); done)
online_nums=$(seq "$NODES" | grep -vxF -f <(echo "$offline_nums") | paste -sd,)
sim() { # NAME NUMBERS
    "$bin/shoal-simnode" --etcd "$ETCD_URL" --numbers "$2" --ip-prefix "$slice" \
        --rpc-token-file "$work/token" --lease-ttl "$LEASE_TTL" --rebuild-ms "$REBUILD_MS" \
        >"$work/$1.out" 2>"$work/$1.log" &
    pid[$1]=$!
}
sim simA "$online_nums"
sim simB "$(paste -sd, <<<"$offline_nums")"
end=$((SECONDS + 60))
until [[ $(api GET /v1/nodes | jq '[.nodes[] | select(.status == "online")] | length') == "$NODES" ]]; do
    ((SECONDS < end)) || die "not all $NODES simulated nodes online after 60 s"
    sleep 0.5
done
snapshot pools0
for n in $(seq "$NODES"); do
    printf -v id 'sim-%03d' "$n"
    api POST /v1/pools "{\"node\": \"$id\", \"name\": \"pool\", \"disk\": \"malloc:///?size_mib=$((POOL_GIB * 1024))\"}" >/dev/null ||
        die "pool on $id"
done
snapshot pools1
[[ $(api GET /v1/pools | jq '[.pools[] | select(.state == "online")] | length') == "$NODES" ]] ||
    die "not every pool online"
log "$NODES SIMULATED nodes online with a $POOL_GIB GiB pool each; etcd $ETCD_URL, API $API"
{
    echo "# shoal-control at scale on SIMULATED nodes ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
    echo "# $NODES nodes (shoal-simnode), $VOLUMES volumes x $REPLICAS replicas of $VOLUME_MIB MiB (thin $THIN), $CLIENTS clients, heal-after $HEAL_AFTER s, lease TTL $LEASE_TTL s, simulated rebuild $REBUILD_MS ms"
} | tee "$work/results.txt"
report "declare pools" pools0 pools1 "$NODES"

# --- create and publish ------------------------------------------------------------------
cat >"$work/one.sh" <<'EOF'
#!/usr/bin/env bash
# one.sh API METHOD PATH BODY OUT: one request; "code seconds body" appended to OUT.
r=$(curl -sS -m 300 -X "$2" -H 'content-type: application/json' --data "$4" \
    -w '\n%{http_code} %{time_total}' "$1$3" 2>&1)
body=${r%$'\n'*}
tail=${r##*$'\n'}
printf '%s %s\n' "$tail" "${body//$'\n'/ }" >>"$5"
EOF
chmod +x "$work/one.sh"
size=$((VOLUME_MIB * 1024 * 1024))
snapshot create0
seq -f 'vol-%05g' "$VOLUMES" | xargs -P "$CLIENTS" -I@@ "$work/one.sh" "$API" POST /v1/volumes \
    "{\"name\": \"@@\", \"size_bytes\": $size, \"replicas\": $REPLICAS, \"thin\": $THIN}" "$work/create.out"
snapshot create1
ok=$(grep -c '^201 ' "$work/create.out" || true)
((ok == VOLUMES)) || die "$ok of $VOLUMES volumes created; see $work/create.out"
report "create" create0 create1 "$VOLUMES"
lat() { # FILE: p50 / p99 / max of the requests' seconds
    awk '{ print $2 }' "$1" | sort -n | awk '{ a[NR] = $1 } END {
        i = int(NR * 0.99); if (i < 1) i = 1
        printf "    request latency: p50 %.0f ms, p99 %.0f ms, max %.0f ms\n",
            1000 * a[int(NR * 0.5) + 1], 1000 * a[i], 1000 * a[NR] }' |
        tee -a "$work/results.txt"
}
lat "$work/create.out"
sed 's/^[0-9]* [0-9.]* //' "$work/create.out" | jq -r .id >"$work/ids"

snapshot publish0
xargs -P "$CLIENTS" -I@@ "$work/one.sh" "$API" POST /v1/volumes/@@/publish '{}' "$work/publish.out" <"$work/ids"
snapshot publish1
ok=$(grep -c '^200 ' "$work/publish.out" || true)
((ok == VOLUMES)) || die "$ok of $VOLUMES volumes published; see $work/publish.out"
report "publish" publish0 publish1 "$VOLUMES"
lat "$work/publish.out"

all_volumes() { # every volume (the API's pages)
    local start="" page
    while :; do
        page=$(api GET "/v1/volumes?limit=1000${start:+&start=$start}") || return 1
        jq -c '.volumes[]' <<<"$page"
        start=$(jq -r '.next // empty' <<<"$page")
        [[ -n $start ]] || break
    done
}

log "idle for $IDLE s with $VOLUMES volumes published"
snapshot idle0
sleep "$IDLE"
snapshot idle1
report "idle ($IDLE s)" idle0 idle1 0
echo "    per second: shoal-control CPU $(awk -v a="$(awk '/^control_cpu/{print $2}' "$work/snap.idle0")" \
    -v b="$(awk '/^control_cpu/{print $2}' "$work/snap.idle1")" -v hz="$hz" -v t="$IDLE" \
    'BEGIN { printf "%.1f ms", 1000 * (b - a) / hz / t }'), etcd ranges $(awk -v t="$IDLE" \
    'FNR == NR && /^etcd_mvcc_range_total/ { a = $2; next } /^etcd_mvcc_range_total/ { printf "%.1f", ($2 - a) / t }' \
    "$work/snap.idle0" "$work/snap.idle1")" | tee -a "$work/results.txt"

# --- nodes offline -----------------------------------------------------------------------
all_volumes >"$work/before.jsonl"
offline_json=$(xargs printf '"sim-%03d",' <<<"$offline_nums" | sed 's/,$//')
offline_json="[$offline_json]"
jq -c --argjson off "$offline_json" \
    'select([.replica_list[].node] | any(. as $n | $off | index($n)))
     | {id, nexus: .target.node, lost: [.replica_list[].node | select(. as $n | $off | index($n))]}' \
    "$work/before.jsonl" >"$work/affected.jsonl"
affected=$(wc -l <"$work/affected.jsonl")
jq -r '.id' "$work/affected.jsonl" >"$work/healable"
moved=$(jq -r --argjson off "$offline_json" 'select(.nexus as $n | $off | index($n)) | .id' \
    "$work/affected.jsonl" | wc -l)
healable=$(wc -l <"$work/healable")
lost=$(jq '.lost | length' "$work/affected.jsonl" | awk '{ s += $1 } END { print s + 0 }')
log "taking $OFFLINE nodes offline (kill -9 of their process): $affected volumes hold $lost replicas there; $moved of them had their nexus there"
snapshot heal0
t0=$(date +%s.%N)
kill -9 "${pid[simB]}"
wait "${pid[simB]}" 2>/dev/null || true
unset 'pid[simB]'
t_off=""
end=$((SECONDS + HEAL_TIMEOUT))
healed=0
polls=0
while :; do
    now=$(date +%s.%N)
    polls=$((polls + 1))
    if [[ -z $t_off ]]; then
        off=$(api GET /v1/nodes | jq '[.nodes[] | select(.status == "offline")] | length')
        [[ $off == "$OFFLINE" ]] && t_off=$now && log "the leader sees $OFFLINE nodes offline after $(awk -v a="$t0" -v b="$now" 'BEGIN { printf "%.1f", b - a }') s"
    fi
    healed=$(all_volumes | jq -c --argjson off "$offline_json" --argjson want "$REPLICAS" \
        'select((.replica_list | length) == $want
                and all(.replica_list[]; .state == "online" and (.node as $n | $off | index($n) | not))
                and .target != null and (.target.node as $n | $off | index($n) | not))
         | .id' | jq -r . | sort | comm -12 - <(sort "$work/healable") | wc -l)
    ((healed == healable)) && break
    ((SECONDS < end)) || break
    sleep 1
done
t_done=$(date +%s.%N)
snapshot heal1
report "heal ($OFFLINE nodes off)" heal0 heal1 "$healable"
awk -v t0="$t0" -v toff="${t_off:-$t_done}" -v td="$t_done" -v ha="$HEAL_AFTER" -v h="$healed" \
    -v hb="$healable" -v mv="$moved" -v lost="$lost" -v polls="$polls" -v ttl="$LEASE_TTL" 'BEGIN {
    printf "    %d of %d affected volumes (%d replicas on the offline nodes) placed again, every replica online: %.1f s after the kill\n", h, hb, lost, td - t0
    printf "      = %.1f s until the leader saw the nodes offline (lease TTL %d s) + %d s heal-after + %.1f s of the control plane'"'"'s work\n", toff - t0, ttl, ha, td - toff - ha
    printf "    %d of them had their nexus on an offline node: moved to a node holding a current replica\n", mv
    printf "    (the figures include the benchmark'"'"'s %d polls of the volume and node lists)\n", polls
}' | tee -a "$work/results.txt"
((healed == healable)) || die "$healed of $healable volumes healed within $HEAL_TIMEOUT s"

log "idle for $IDLE s after healing, $OFFLINE nodes still offline"
snapshot idle2
sleep "$IDLE"
snapshot idle3
report "idle after heal ($IDLE s)" idle2 idle3 0

# --- unpublish and delete a sample the offline nodes did not touch ------------------------
jq -r '.id' "$work/affected.jsonl" | sort >"$work/affected.ids"
sort "$work/ids" | comm -23 - "$work/affected.ids" | head -n "$SAMPLE" >"$work/sample"
n=$(wc -l <"$work/sample")
snapshot unpub0
xargs -P "$CLIENTS" -I@@ "$work/one.sh" "$API" POST /v1/volumes/@@/unpublish '{}' "$work/unpublish.out" <"$work/sample"
snapshot unpub1
ok=$(grep -c '^204 ' "$work/unpublish.out" || true)
((ok == n)) || die "$ok of $n unpublished"
report "unpublish" unpub0 unpub1 "$n"
lat "$work/unpublish.out"
snapshot delete0
xargs -P "$CLIENTS" -I@@ "$work/one.sh" "$API" DELETE /v1/volumes/@@ '' "$work/delete.out" <"$work/sample"
snapshot delete1
ok=$(grep -c '^204 ' "$work/delete.out" || true)
((ok == n)) || die "$ok of $n deleted"
report "delete" delete0 delete1 "$n"
lat "$work/delete.out"

awk '/^VmHWM|^VmRSS/ { printf "    shoal-control %s %.1f MiB\n", $1, $2 / 1024 }' "/proc/${pid[control]}/status" |
    tee -a "$work/results.txt"
echo "    etcd database $(curl -sS "$ETCD_URL/metrics" | awk '/^etcd_mvcc_db_total_size_in_bytes / { printf "%.1f MiB", $2 / 1048576 }')" |
    tee -a "$work/results.txt"
cp "$work/results.txt" "${BENCH_OUT:-/tmp/bench-control-scale.txt}"
log "results in ${BENCH_OUT:-/tmp/bench-control-scale.txt}"

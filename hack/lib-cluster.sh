# shellcheck shell=bash
# A local Shoal cluster from real processes (sourced by hack/local-cluster.sh and the control
# plane's system test): one etcd, CLUSTER_NODES shoald nodes each with its shoal-agent, and
# shoal-control; a uring pool on a file per node.
#
#   etcd           CLUSTER_IP:ETCD_PORT (client) and :ETCD_PORT+1 (peer)
#   node N         shoald: NVMe/TCP on 127.0.0.N:NX_PORT, JSON-RPC on 127.0.0.N:RPC_PORT (token)
#                  and on the socket $work/nN.sock; zone zN; pool "pool" on $work/diskN.img
#   shoal-control  http://CLUSTER_IP:API_PORT (SHOAL_API), with the nodes' token; with
#                  CONTROL_INSTANCES=2 a second one on :API_PORT+1 (it waits, the first leads)
#
# The caller sets: work (a directory), bin (where shoald and shoal-control are), and an
# associative array pid (the processes started, by name, for its cleanup); log and die.
# Env: CLUSTER_NODES [4], NX_PORT [4420], CLUSTER_IP [127.0.0.5], ETCD_PORT [2379],
# API_PORT [8080], RPC_PORT [NX_PORT + 840], POOL_MIB [512], LEASE_TTL [3],
# CONTROL_INSTANCES [1], HEAL_AFTER [shoal-control's default: seconds before a replica whose
# node is offline is replaced].

CLUSTER_NODES=${CLUSTER_NODES:-4}
NX_PORT=${NX_PORT:-4420}
CLUSTER_IP=${CLUSTER_IP:-127.0.0.5}
ETCD_PORT=${ETCD_PORT:-2379}
API_PORT=${API_PORT:-8080}
RPC_PORT=${RPC_PORT:-$((NX_PORT + 840))}
POOL_MIB=${POOL_MIB:-512}
LEASE_TTL=${LEASE_TTL:-3}
CONTROL_INSTANCES=${CONTROL_INSTANCES:-1}
HEAL_AFTER=${HEAL_AFTER:-}
ETCD_URL=http://$CLUSTER_IP:$ETCD_PORT
SHOAL_API=http://$CLUSTER_IP:$API_PORT

# api METHOD PATH [JSON]: one API call; the body on stdout; fails (status 1, body on stderr)
# unless the status is 2xx.
api() {
    local out code
    out=$(curl -sS -m 120 -X "$1" -H 'content-type: application/json' \
        ${3:+--data "$3"} -w '\n%{http_code}' "$SHOAL_API$2") || return 1
    code=${out##*$'\n'}
    out=${out%$'\n'*}
    if [[ $code != 2* ]]; then
        echo "$1 $2: HTTP $code: $out" >&2
        return 1
    fi
    printf '%s\n' "$out"
}

# wait_leader SECONDS: until the API (SHOAL_API) names a leader.
wait_leader() {
    local end=$((SECONDS + $1))
    while ((SECONDS < end)); do
        api GET /v1/leader 2>/dev/null | grep -q '"id"' && return 0
        sleep 0.2
    done
    die "no shoal-control leads after $1 s"
}

# wait_port ADDR PORT SECONDS WHAT
wait_port() {
    local end=$((SECONDS + $3))
    while ((SECONDS < end)); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.1
    done
    die "$4 did not listen on $1:$2 within $3 s"
}

# port_free ADDR PORT: dies if something listens there already.
port_free() {
    if ss -Hltn "src $1:$2" | grep -q .; then
        die "$1:$2 is already in use; set NX_PORT / ETCD_PORT / API_PORT / CLUSTER_IP"
    fi
}

# cluster_start_node N: shoald N and its agent.
cluster_start_node() {
    local n=$1 ip=127.0.0.$1
    rm -f "$work/n$n.sock"
    "$bin/shoald" -r "$work/n$n.sock" --empty --rpc-listen "$ip:$RPC_PORT" \
        --rpc-token-file "$work/token" --log info >>"$work/n$n.log" 2>&1 &
    pid[$n]=$!
    wait_port "$ip" "$RPC_PORT" 20 "shoald $n"
    "$bin/shoal-agent" --etcd "$ETCD_URL" --node-id "node$n" --nvmf-addr "$ip:$NX_PORT" \
        --rpc-endpoint "$ip:$RPC_PORT" --rpc-token-file "$work/token" --label "zone=z$n" \
        --lease-ttl "$LEASE_TTL" >>"$work/agent$n.log" 2>&1 &
    pid[agent$n]=$!
}

# cluster_start_etcd: etcd (again, on the same data directory after a stop).
cluster_start_etcd() {
    etcd --name shoal --data-dir "$work/etcd" \
        --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls "http://$CLUSTER_IP:$((ETCD_PORT + 1))" \
        --initial-advertise-peer-urls "http://$CLUSTER_IP:$((ETCD_PORT + 1))" \
        --initial-cluster "shoal=http://$CLUSTER_IP:$((ETCD_PORT + 1))" \
        --logger zap --log-level warn >>"$work/etcd.log" 2>&1 &
    pid[etcd]=$!
    wait_port "$CLUSTER_IP" "$ETCD_PORT" 20 etcd
}

# cluster_start_control I: shoal-control instance I (1, 2, ...) on API_PORT + I - 1.
cluster_start_control() {
    local i=$1 port=$((API_PORT + $1 - 1))
    "$bin/shoal-control" serve --etcd "$ETCD_URL" --listen "$CLUSTER_IP:$port" \
        --id "control$i" --lease-ttl "$LEASE_TTL" --rpc-token-file "$work/token" \
        ${HEAL_AFTER:+--heal-after "$HEAL_AFTER"} >>"$work/control$i.log" 2>&1 &
    pid[control$i]=$!
    wait_port "$CLUSTER_IP" "$port" 20 "shoal-control $i"
}

# cluster_up: everything above, and waits until the nodes are online and the pools too.
cluster_up() {
    local n online
    port_free "$CLUSTER_IP" "$ETCD_PORT"
    port_free "$CLUSTER_IP" "$API_PORT"
    for n in $(seq "$CLUSTER_NODES"); do
        port_free "127.0.0.$n" "$NX_PORT"
        port_free "127.0.0.$n" "$RPC_PORT"
    done
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/token")
    cluster_start_etcd
    cluster_start_control 1
    # The first leads (it campaigned first); the others wait.
    wait_leader 20
    for n in $(seq 2 "$CONTROL_INSTANCES"); do
        port_free "$CLUSTER_IP" "$((API_PORT + n - 1))"
        cluster_start_control "$n"
    done
    for n in $(seq "$CLUSTER_NODES"); do cluster_start_node "$n"; done
    local end=$((SECONDS + 30))
    while ((SECONDS < end)); do
        online=$(api GET /v1/nodes | grep -o '"status":"online"' | wc -l) || online=0
        ((online == CLUSTER_NODES)) && break
        sleep 0.2
    done
    ((online == CLUSTER_NODES)) || die "$online of $CLUSTER_NODES nodes online after 30 s"
    for n in $(seq "$CLUSTER_NODES"); do
        truncate -s "${POOL_MIB}M" "$work/disk$n.img"
        api POST /v1/pools "{\"node\": \"node$n\", \"name\": \"pool\", \"disk\": \"uring://$work/disk$n.img\"}" \
            >/dev/null || die "pool on node$n"
    done
    online=$(api GET /v1/pools | grep -o '"state":"online"' | wc -l)
    ((online == CLUSTER_NODES)) || die "$online of $CLUSTER_NODES pools online"
    log "cluster up: etcd $ETCD_URL, $CLUSTER_NODES nodes (127.0.0.1-$CLUSTER_NODES:$NX_PORT), pools of $POOL_MIB MiB, API $SHOAL_API"
}

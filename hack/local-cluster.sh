#!/usr/bin/env bash
# A local Shoal cluster in one command: etcd, CLUSTER_NODES shoald nodes with their agents,
# shoal-control, and a pool on a file per node (hack/lib-cluster.sh). It runs until Ctrl-C,
# then stops everything and removes its directory (KEEP=1 keeps it).
#
#   hack/local-cluster.sh            # then, in another shell:
#   curl -s -XPOST http://127.0.0.5:8080/v1/volumes -d '{"name": "v1", "size_bytes": 67108864}'
#   curl -s -XPOST http://127.0.0.5:8080/v1/volumes/<id>/publish -d '{"node": "node1"}'
#   sudo nvme connect -t tcp -a 127.0.0.1 -s 4420 -n <the answer's nqn>
#
# Env: as hack/lib-cluster.sh (CLUSTER_NODES, NX_PORT, CLUSTER_IP, API_PORT, POOL_MIB, ...);
# SHOAL_BIN_DIR=DIR uses the binaries there instead of building them.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SHOAL_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
work=$(mktemp -d /var/tmp/shoal-cluster.XXXXXX)
declare -A pid=()
log() { printf 'local-cluster: %s\n' "$*" >&2; }
die() {
    log "FAIL: $*"
    exit 1
}
cleanup() {
    local p
    for p in "${pid[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ -z ${KEEP:-} ]]; then rm -rf "$work"; else log "kept $work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if [[ -z ${SHOAL_BIN_DIR:-} ]]; then
    cargo build --release -q -p shoal-target -p shoal-control --bins
fi
# shellcheck source=hack/lib-cluster.sh
. hack/lib-cluster.sh
cluster_up
log "logs in $work; the API: SHOAL_API=$SHOAL_API target/release/shoal-control node list"
log "create a volume: curl -s -XPOST $SHOAL_API/v1/volumes -d '{\"name\": \"v1\", \"size_bytes\": 67108864}'"
log "Ctrl-C stops the cluster"
while :; do sleep 3600; done

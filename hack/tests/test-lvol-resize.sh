#!/usr/bin/env bash
# System test: online resize of a logical volume that the real Linux 6.1 NVMe/TCP host (in a
# QEMU guest) has connected.
#
# Starts shoald with nothing, then over its JSON-RPC (through hack/tests/rpc-trigger.py): a
# uring bdev on a sparse file, a pool on it (1 MiB clusters), a 32 MiB thick volume exported
# over NVMe/TCP on a free port. lvol-resize-guest.sh then connects, fills the volume with random
# data, asks for `bdev_lvol_resize` to 64 MiB while connected and waits (at most 30 s) until
# the kernel shows the new size WITHOUT reconnecting (the target's Namespace Attribute Changed
# notice makes the host rescan the namespace), writes past the old end, reads everything back;
# a shrink of the exported volume is refused (-16) and changes nothing. Finally the pool's
# free clusters show the growth, and SIGTERM must stop shoald with exit status 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=hack/tests
work=$(mktemp -d /var/tmp/shoal-lvol-resize.XXXXXX)
shoald_pid="" trig_pid=""
cleanup() {
    [[ -n $trig_pid ]] && kill "$trig_pid" 2>/dev/null
    [[ -n $shoald_pid ]] && kill -9 "$shoald_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

log() { printf 'lvol-resize: %s\n' "$*" >&2; }

cargo build --release -q -p shoal-target --bin shoald
hack/guest/build.sh

sock=$work/shoal.sock
log "starting shoald"
target/release/shoald --empty -r "$sock" --log info >"$work/shoald.log" 2>&1 &
shoald_pid=$!
for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.1; done
[[ -S $sock ]] || { cat "$work/shoald.log"; log "shoald did not start"; exit 1; }

python3 -u "$here/rpc-trigger.py" --socket "$sock" >"$work/trigger.log" 2>&1 &
trig_pid=$!
tport=""
for _ in $(seq 50); do
    tport=$(sed -n 's/^port \([0-9]*\)$/\1/p' "$work/trigger.log" | head -n1)
    [[ -n $tport ]] && break
    sleep 0.1
done
[[ -n $tport ]] || { log "rpc-trigger did not start"; exit 1; }
rpc() { # rpc METHOD?QUERY: prints the response, fails on an error
    local out
    out=$(curl -sf "http://127.0.0.1:$tport/rpc/$1") || { log "rpc $1: no answer"; exit 1; }
    if grep -q '"error"' <<<"$out"; then log "rpc $1: $out"; exit 1; fi
    echo "$out"
}

# A free port for the NVMe/TCP listener (other tests may run beside this one).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
nqn=nqn.2016-06.io.shoal:resize
truncate -s 256M "$work/pool.img"
rpc "bdev_uring_create?filename=$work/pool.img&name=U0&block_size=4096" >/dev/null
rpc "bdev_lvol_create_lvstore?bdev_name=U0&lvs_name=lvs&cluster_sz=1048576" >/dev/null
uuid=$(rpc "bdev_lvol_create?lvs_name=lvs&lvol_name=vol&size_in_mib=32" | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"])')
rpc "nvmf_create_transport?trtype=TCP" >/dev/null
rpc "nvmf_create_subsystem?nqn=$nqn&allow_any_host=true" >/dev/null
rpc "nvmf_subsystem_add_ns?nqn=$nqn&namespace.bdev_name=$uuid" >/dev/null
rpc "nvmf_subsystem_add_listener?nqn=$nqn&listen_address.trtype=TCP&listen_address.adrfam=IPv4&listen_address.traddr=127.0.0.1&listen_address.trsvcid=%22$port%22" >/dev/null
free0=$(rpc "bdev_lvol_get_lvstores?lvs_name=lvs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"][0]["free_clusters"])')

rc=0
hack/guest/run.sh --no-build -t 600 -e TRIGGER_PORT="$tport" -e PORT="$port" -e NQN="$nqn" \
    "$here/lvol-resize-guest.sh" || rc=$?
if [[ $rc -ne 0 ]]; then
    log "guest test failed (exit $rc); shoald log:"
    tail -n 60 "$work/shoald.log" >&2
    exit "$rc"
fi

free1=$(rpc "bdev_lvol_get_lvstores?lvs_name=lvs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"][0]["free_clusters"])')
if [[ $free1 -ne $((free0 - 32)) ]]; then
    log "free clusters $free0 -> $free1: the thick growth should have taken 32"
    exit 1
fi
grep -q "namespace resized" "$work/shoald.log" || { log "shoald did not log the resize"; exit 1; }

log "SIGTERM to shoald"
kill -TERM "$shoald_pid"
status=0
wait "$shoald_pid" || status=$?
shoald_pid=""
if [[ $status -ne 0 ]]; then
    tail -n 30 "$work/shoald.log" >&2
    log "shoald exited with $status after SIGTERM"
    exit 1
fi
log "PASS"

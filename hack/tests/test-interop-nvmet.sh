#!/usr/bin/env bash
# System test (interop matrix, issue 14): Shoal's NVMe/TCP host against Linux's target (nvmet).
#
# The guest (interop-nvmet-guest.sh) runs nvmet on its 10.0.2.15:4420 with three file-backed
# subsystems in tmpfs (buffered_io), reached from here through a QEMU host forward
# (run.sh --hostfwd tcp:127.0.0.1:HPORT-:4420), and stays up until this script says done:
#
#   perf   16 MiB   shoal-perf -V (random 4 KiB reads and writes, every read checked against
#                   the last write of its block), once without digests, once with header and
#                   data digests (-H -I);
#   nx     33 MiB   the remote child of nexus nx0 (nvmf://127.0.0.1:HPORT/...)
#   nxd    33 MiB   the remote child of nexus nxd (the same URI with hdgst=true&ddgst=true)
#
# Each nexus (32 MiB) lives on a shoald on this host with a local child (a uring bdev on a file
# here) and the nvmet child; shoald exports both (nsid 1 nx, nsid 2 nxd) on 127.0.0.51:HPORT+1,
# and shoal-perf -V drives them through shoald (nxd with digests on the front connection too).
# The nexus reads from its local child, so the local child is then removed and a shoal-perf -V
# read pass reads through the nexus from nvmet (each block: zeroes or a valid header, CRC32C
# and LBA, from the write pass). Then the nexuses are destroyed, shoald stops (SIGTERM, status
# 0), the guest checksums its
# files after their first MiB (META_BYTES: where a child's data region starts) and this script
# compares them with the same region of each local child, which must not be all zeroes.
#
# Env: INTEROP_PORT (HPORT, default 4821; HPORT+1 is used too); KEEP=1 keeps the work
# directory; SHOAL_BIN_DIR=DIR runs the shoald, shoalctl and shoal-perf found in DIR instead
# of building them; PERF_SECS (seconds per shoal-perf run, default 4).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=hack/tests
bin=${SHOAL_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}

HPORT=${INTEROP_PORT:-4821}
NX_PORT=$((HPORT + 1))
NX_ADDR=127.0.0.51
GPORT=4420
PERF_SECS=${PERF_SECS:-4}
NQN_PREFIX=nqn.2026-12.io.shoal:interop-nvmet
NQN_NX=nqn.2016-06.io.shoal:interop-nexus
NX_SIZE=$((32 << 20))
META_BYTES=$((1 << 20)) # shoal_replication::META_BYTES
HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:5ba1e0b1-0000-4000-8000-0000000000b1
GUEST_TIMEOUT=240

work=$(mktemp -d /var/tmp/shoal-interop-nvmet.XXXXXX)
shoald_pid="" ctl_pid="" guest_pid="" result=FAIL
t0=$(date +%s.%N)
elapsed() { awk -v s="$t0" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }
log() { printf 'interop-nvmet: [%5.1fs] %s\n' "$(elapsed)" "$*" >&2; }
plain() { sed 's/\x1b\[[0-9;]*m//g' "$@"; }

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    set +e
    [[ -n $shoald_pid ]] && kill -KILL "$shoald_pid" 2>/dev/null
    [[ -n $guest_pid ]] && kill -TERM "$guest_pid" 2>/dev/null
    [[ -n $ctl_pid ]] && kill "$ctl_pid" 2>/dev/null
    wait 2>/dev/null
    if [[ $result != PASS ]]; then
        if [[ -f $work/shoald.log ]]; then
            printf '\n--- shoald log (last 25 lines) ---\n' >&2
            plain "$work/shoald.log" | tail -n 25 >&2
        fi
        if [[ -f $work/guest.log ]]; then
            printf '\n--- guest console (last 30 lines) ---\n' >&2
            tail -n 30 "$work/guest.log" >&2
        fi
    fi
    if [[ $result == PASS && -z ${KEEP:-} ]]; then
        rm -rf "$work"
    else
        rm -f "$work"/*.img
        log "logs kept in $work"
    fi
    log "$result ($(elapsed) s)"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() {
    log "FAIL: $*"
    exit 1
}

guest_alive() { kill -0 "$guest_pid" 2>/dev/null; }

# perf NAME TRID WORKLOAD [ARG...]: shoal-perf -V, 4 KiB, WORKLOAD randrw (half reads, every
# read checked against the last write of its block) or randread (a block this run did not
# write must be zeroes or carry a valid header for its LBA: CRC32C and LBA checked); must pass
# with reads checked, writes done (randrw) and no mismatch.
perf() {
    local name=$1 trid=$2 wl=$3 out=$work/perf-$1.txt v
    shift 3
    if ! timeout $((PERF_SECS + 60)) "$bin/shoal-perf" -r "$trid" -c 0x1 -q 16 -o 4096 -w "$wl" \
        -M 50 -t "$PERF_SECS" -V "$@" >"$out" 2>&1; then
        tail -n 20 "$out" >&2
        die "shoal-perf -V $name failed"
    fi
    v=$(grep '^verify: [0-9]* reads checked' "$out") || { cat "$out" >&2; die "$name: no verify line"; }
    [[ $v =~ ^verify:\ ([0-9]+)\ reads\ checked,\ ([0-9]+)\ writes,\ 0\ mismatches$ ]] ||
        { cat "$out" >&2; die "$name: $v"; }
    if ((BASH_REMATCH[1] == 0)) || { ((BASH_REMATCH[2] == 0)) && [[ $wl != randread ]]; }; then
        die "$name moved no data: $v"
    fi
    log "PASS $name: $v ($(awk '/^Total/ { printf "%s IOPS", $3 }' "$out"))"
}

sock=$work/rpc.sock
rpc() {
    local params=${2:-}
    [[ -n $params ]] || params='{}'
    timeout 45 "$bin/shoalctl" -s "$sock" -t 40 rpc "$1" "$params"
}
jsq() { python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }

# --- build, ports, the guest ------------------------------------------------------------------
if [[ -z ${SHOAL_BIN_DIR:-} ]]; then
    cargo build --release -q -p shoal-target --bin shoald --bin shoalctl \
        -p shoal-benches --bin shoal-perf
fi
hack/guest/build.sh
for a in "127.0.0.1:$HPORT" "$NX_ADDR:$NX_PORT"; do
    if ss -Hltn "src $a or src 0.0.0.0:${a#*:}" | grep -q .; then
        die "$a is already in use; set INTEROP_PORT"
    fi
done

mkdir "$work/ctl"
: >"$work/ctl.log"
python3 -u -m http.server --bind 127.0.0.1 --directory "$work/ctl" 0 >"$work/ctl.log" 2>&1 &
ctl_pid=$!
ctl_port=""
for _ in $(seq 50); do
    ctl_port=$(sed -n 's/^Serving HTTP on .* port \([0-9]*\) .*/\1/p' "$work/ctl.log" | head -n1)
    [[ -n $ctl_port ]] && break
    sleep 0.1
done
[[ -n $ctl_port ]] || die "the control HTTP server did not start"

hack/guest/run.sh --no-build -q -t "$GUEST_TIMEOUT" --loglevel 5 -l "$work/guest.log" \
    --hostfwd "tcp:127.0.0.1:$HPORT-:$GPORT" \
    -e NQN_PREFIX="$NQN_PREFIX" -e SUBSYS="perf nx nxd" -e SIZES="16M 33M 33M" \
    -e GPORT="$GPORT" -e CTL_PORT="$ctl_port" -e WAIT_S=$((GUEST_TIMEOUT - 30)) \
    "$here/interop-nvmet-guest.sh" >"$work/run.out" 2>&1 &
guest_pid=$!
for _ in $(seq 1200); do
    grep -q '^interop-nvmet: ready' "$work/guest.log" 2>/dev/null && break
    guest_alive || { cat "$work/run.out" >&2; die "the guest ended before nvmet was ready"; }
    sleep 0.1
done
grep -q '^interop-nvmet: ready' "$work/guest.log" || die "nvmet not ready within 120 s"
log "guest up: nvmet on 10.0.2.15:$GPORT, forwarded from 127.0.0.1:$HPORT"

# --- Shoal host (shoal-perf) -> nvmet ---------------------------------------------------------
trid="trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$HPORT subnqn:$NQN_PREFIX-perf"
perf "shoal-perf->nvmet" "$trid" randrw
perf "shoal-perf->nvmet-digests" "$trid" randrw -H -I

# --- Shoal host (nexus child) -> nvmet --------------------------------------------------------
for c in nx nxd; do truncate -s $((NX_SIZE + META_BYTES)) "$work/$c.img"; done
cat >"$work/shoald.json" <<EOF
{ "subsystems": [
  { "subsystem": "bdev", "config": [
    { "method": "bdev_uring_create", "params": { "name": "local_nx", "filename": "$work/nx.img", "block_size": 4096 } },
    { "method": "bdev_uring_create", "params": { "name": "local_nxd", "filename": "$work/nxd.img", "block_size": 4096 } } ] },
  { "subsystem": "nvmf", "config": [
    { "method": "nvmf_create_transport", "params": { "trtype": "TCP" } } ] } ] }
EOF
"$bin/shoald" -m 0x1 -c "$work/shoald.json" -r "$sock" --log info >"$work/shoald.log" 2>&1 &
shoald_pid=$!
for _ in $(seq 100); do
    [[ -S $sock ]] && break
    kill -0 "$shoald_pid" 2>/dev/null || break
    sleep 0.1
done
[[ -S $sock ]] || die "shoald did not start"

remote="nvmf://127.0.0.1:$HPORT/$NQN_PREFIX"
opts="hostnqn=$HOSTNQN&ctrl-loss-tmo=5"
rpc nexus_create "{\"name\": \"nx\", \"size\": $NX_SIZE,
    \"children\": [\"bdev:///local_nx\", \"$remote-nx?$opts\"]}" >/dev/null ||
    die "nexus_create nx (remote child on nvmet)"
rpc nexus_create "{\"name\": \"nxd\", \"size\": $NX_SIZE,
    \"children\": [\"bdev:///local_nxd\", \"$remote-nxd?$opts&hdgst=true&ddgst=true\"]}" >/dev/null ||
    die "nexus_create nxd (remote child on nvmet, digests)"
rpc nvmf_create_subsystem "{\"nqn\": \"$NQN_NX\", \"allow_any_host\": true,
    \"serial_number\": \"SHOALINTEROP1\"}" >/dev/null
rpc nvmf_subsystem_add_ns "{\"nqn\": \"$NQN_NX\", \"namespace\": {\"bdev_name\": \"nx\", \"nsid\": 1}}" >/dev/null
rpc nvmf_subsystem_add_ns "{\"nqn\": \"$NQN_NX\", \"namespace\": {\"bdev_name\": \"nxd\", \"nsid\": 2}}" >/dev/null
rpc nvmf_subsystem_add_listener "{\"nqn\": \"$NQN_NX\", \"listen_address\": {\"trtype\": \"TCP\",
    \"adrfam\": \"IPv4\", \"traddr\": \"$NX_ADDR\", \"trsvcid\": \"$NX_PORT\"}}" >/dev/null
for n in nx nxd; do
    st=$(rpc nexus_get "{\"name\": \"$n\"}" | jsq "d[0]['state'] + ' ' + ','.join(c['state'] for c in d[0]['children'])")
    [[ $st == "online online,online" ]] || die "nexus $n: $st (expected online, both children online)"
done
log "nexuses nx and nxd online (local child + nvmet child), exported on $NX_ADDR:$NX_PORT"

trid="trtype:TCP adrfam:IPv4 traddr:$NX_ADDR trsvcid:$NX_PORT subnqn:$NQN_NX"
perf "nexus-child->nvmet" "$trid ns:1" randrw
perf "nexus-child->nvmet-digests" "$trid ns:2" randrw -H -I
# Reads went to the local child: remove it, so that reads come from nvmet through the nexus.
for n in nx nxd; do
    rpc nexus_remove_child "{\"name\": \"$n\", \"uri\": \"bdev:///local_$n\"}" >/dev/null ||
        die "nexus_remove_child $n bdev:///local_$n"
done
perf "nexus-child->nvmet-reads" "$trid ns:1" randread
perf "nexus-child->nvmet-digests-reads" "$trid ns:2" randread -H -I

for n in nx nxd; do
    st=$(rpc nexus_get "{\"name\": \"$n\"}" | jsq "d[0]['state'] + ' ' + ','.join(c['state'] for c in d[0]['children'])")
    [[ $st == "online online" ]] || die "nexus $n after the runs (the nvmet child alone): $st"
    errs=$(rpc bdev_get_iostat "{\"name\": \"$n\"}" | jsq "d['bdevs'][0]['num_errors']")
    [[ $errs -eq 0 ]] || die "nexus $n counted $errs I/O errors"
done
rpc nvmf_delete_subsystem "{\"nqn\": \"$NQN_NX\"}" >/dev/null
for n in nx nxd; do rpc nexus_destroy "{\"name\": \"$n\"}" >/dev/null || die "nexus_destroy $n"; done
kill -TERM "$shoald_pid"
st=0
timeout 30 tail --pid="$shoald_pid" -f /dev/null || die "shoald still running 30 s after SIGTERM"
wait "$shoald_pid" || st=$?
shoald_pid=""
[[ $st -eq 0 ]] || die "shoald exited with status $st after SIGTERM"

# --- compare the children ---------------------------------------------------------------------
touch "$work/ctl/done"
grc=0
wait "$guest_pid" || grc=$?
guest_pid=""
[[ $grc -eq 0 ]] || { cat "$work/run.out" >&2; die "guest exited with $grc"; }
zero=$(head -c "$NX_SIZE" /dev/zero | sha256sum | cut -d' ' -f1)
for c in nx nxd; do
    want=$(dd if="$work/$c.img" bs="$META_BYTES" skip=1 status=none | sha256sum | cut -d' ' -f1)
    got=$(sed -n "s/^interop-nvmet: sha256 $c \([0-9a-f]\{64\}\)$/\1/p" "$work/guest.log")
    [[ -n $got ]] || die "the guest printed no checksum of $c"
    [[ $want != "$zero" ]] || die "local child of $c: the data region is all zeroes"
    [[ $got == "$want" ]] || die "nexus $c: nvmet child $got, local child $want"
    log "PASS nexus $c: nvmet child data region == local child's (sha256 ${want:0:16}...)"
done
result=PASS

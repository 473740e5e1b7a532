#!/usr/bin/env bash
# The SPDK cells of the interop matrix (issue 14): Shoal's host against SPDK's nvmf_tgt as SPDK
# ships it, and SPDK's host against shoald. Each cell moves data and checks it, without and
# with NVMe/TCP header and data digests. Run by hand (CI has no SPDK):
#
#   SPDK_DIR=/var/tmp/spdk hack/interop-spdk.sh
#
# Shoal host -> SPDK nvmf_tgt (-m 0x1; nvmf_create_transport with {"trtype": "TCP"} only, so
# SPDK's defaults, c2h_success among them: C2HData PDUs carry SUCCESS and no response capsule
# follows, also on the admin queue, where Shoal's host keeps SQ flow control on):
#   shoal-perf       shoal-perf -V, random 4 KiB reads and writes on a 16 MiB malloc namespace,
#                    every read checked against the last write of its block; -H -I for digests;
#   nexus child      a shoald (127.0.0.53) with nexus nx (32 MiB) over a local uring child and a
#                    remote child on nvmf_tgt (an aio bdev on a file, nvmf://127.0.0.1:PORT/...,
#                    hdgst=true&ddgst=true for the digest cell), exported by shoald and driven by
#                    shoal-perf -V (with -H -I on the front too for the digest cell); the local
#                    child is removed and a shoal-perf -V read pass reads through the nexus from
#                    nvmf_tgt (blocks: zeroes or a valid header, CRC32C and LBA); then the
#                    nexus is destroyed, both targets stop, and the remote file's data region
#                    (after META_BYTES, 1 MiB) must equal the local child's and not be all zeroes.
# SPDK host -> shoald (127.0.0.52):
#   spdk_nvme_identify  Identify Controller and Namespace over TCP: the subsystem NQN, serial,
#                    model and the namespace's size must be what shoald was given (identify has
#                    no digest option: one cell);
#   spdk_nvme_perf   it has no verify mode, but it writes buffers filled with one byte each
#                    (task i: i % 8 + 1). A 16 MiB uring namespace on a file pre-filled with
#                    random bytes gets one sequential pass of 4 KiB writes over all of it (-w write
#                    -d 4096), then a read pass (-w read -d 4096; with digests every C2HData's data
#                    digest is checked by SPDK's host). The file must then hold, in every 4 KiB block, one
#                    byte value 1..8 repeated: nothing random left (every block written), no torn
#                    or foreign block. Read data is not compared by spdk_nvme_perf; that is what
#                    the next cell does;
#   bdevperf verify  SPDK's bdevperf -w verify over bdev_nvme (SPDK's NVMe/TCP host, the same
#                    lib/nvme transport as spdk_nvme_perf) with hdgst/ddgst off and on: it writes
#                    a pattern, reads it back and compares, on a 64 MiB malloc namespace.
# Prints a PASS/FAIL matrix; exits 1 if a cell failed. Without SPDK_DIR it says SKIPPED, exits 0.
# Root (hugepages for SPDK). Env: INTEROP_SPDK_PORT (default 4840; +1 for shoald, +2 for the
# nexus's shoald), KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z ${SPDK_DIR:-} || ! -x ${SPDK_DIR:-/nonexistent}/build/bin/nvmf_tgt ]]; then
    echo "SKIPPED: SPDK_DIR does not point at an SPDK build (../shared/tools/build-spdk.sh)"
    exit 0
fi
bin=${CARGO_TARGET_DIR:-target}/release
SPDK_PORT=${INTEROP_SPDK_PORT:-4840}
SHOALD_ADDR=127.0.0.52
SHOALD_PORT=$((SPDK_PORT + 1))
NX_ADDR=127.0.0.53
NX_PORT=$((SPDK_PORT + 2))
NQN_SPDK=nqn.2016-06.io.spdk:interop
NQN_SHOAL=nqn.2016-06.io.shoal:interop-spdk
NQN_NX=nqn.2016-06.io.shoal:interop-spdk-nexus
NX_SIZE=$((32 << 20))
META_BYTES=$((1 << 20)) # shoal_replication::META_BYTES
HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:5ba1e0b1-0000-4000-8000-0000000000c1
SPDK_MEM_MB=512

work=$(mktemp -d /var/tmp/shoal-interop-spdk.XXXXXX)
tgt_pid="" shoald_pid="" nx_pid=""
t0=$(date +%s)
log() { printf 'interop-spdk: [%4ss] %s\n' "$(($(date +%s) - t0))" "$*" >&2; }

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    set +e
    for p in "$tgt_pid" "$shoald_pid" "$nx_pid"; do
        [[ -n $p ]] && kill -KILL "$p" 2>/dev/null
    done
    wait 2>/dev/null
    if [[ -z ${KEEP:-} && $rc -eq 0 ]]; then
        rm -rf "$work"
    else
        rm -f "$work"/*.img
        log "logs kept in $work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() {
    log "FAIL: $*"
    exit 1
}
listening() { ss -Hltn "src $1:$2" | grep -q .; }
# wait_listen PID LOG ADDR PORT: wait up to 30 s for PID to listen on ADDR:PORT.
wait_listen() {
    for _ in $(seq 300); do
        listening "$3" "$4" && return 0
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    tail -n 20 "$2" >&2
    die "no listener on $3:$4 (log $2)"
}
# stop_pid PID: SIGTERM, then SIGKILL after 10 s.
stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    timeout 10 tail --pid="$1" -f /dev/null || kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
jsq() { python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }

# --- cells ------------------------------------------------------------------------------------
declare -A res=()
# cell NAME FUNCTION [ARG...]: run FUNCTION (set -e, in a subshell, output in cell-NAME.log),
# record PASS or FAIL; on FAIL print the end of its log.
cell() {
    local name=$1 rc=0
    shift
    (set -e; "$@") >"$work/cell-$name.log" 2>&1 || rc=$?
    if [[ $rc -eq 0 ]]; then
        res[$name]=PASS
        log "PASS $name: $(tail -n 1 "$work/cell-$name.log")"
    else
        res[$name]=FAIL
        log "FAIL $name (exit $rc); its log ends:"
        tail -n 15 "$work/cell-$name.log" | sed 's/^/    /' >&2
    fi
}

# shoal_perf NAME TRID [ARG...]: shoal-perf -V 4 KiB for 3 s, random reads and writes (every
# read checked against the last write of its block), or with WL=randread only reads (a block
# this run did not write must be zeroes or carry a valid header: CRC32C and LBA); passes with
# reads checked, writes (randrw) and no mismatch.
shoal_perf() {
    local out=$work/perf-$1.txt trid=$2 wl=${WL:-randrw} v
    shift 2
    timeout 90 "$bin/shoal-perf" -r "$trid" -c 0x2 -q 16 -o 4096 -w "$wl" -M 50 -t 3 -V "$@" \
        >"$out" 2>&1 || { tail -n 20 "$out"; echo "shoal-perf failed"; return 1; }
    v=$(grep '^verify: [0-9]* reads checked' "$out") || { cat "$out"; return 1; }
    [[ $v =~ ^verify:\ ([0-9]+)\ reads\ checked,\ ([0-9]+)\ writes,\ 0\ mismatches$ ]] ||
        { echo "$v"; return 1; }
    if ((BASH_REMATCH[1] == 0)) || { ((BASH_REMATCH[2] == 0)) && [[ $wl != randread ]]; }; then
        echo "no data moved: $v"
        return 1
    fi
    echo "$v"
}

cargo build --release -q -p shoal-target --bin shoald --bin shoalctl -p shoal-benches --bin shoal-perf
"$SPDK_DIR/spdk-hugepages"
for a in "127.0.0.1:$SPDK_PORT" "$SHOALD_ADDR:$SHOALD_PORT" "$NX_ADDR:$NX_PORT"; do
    listening "${a%:*}" "${a#*:}" && die "$a is already in use: set INTEROP_SPDK_PORT"
done

# === Shoal host -> SPDK nvmf_tgt ==============================================================
# Written out, not sparse: SPDK's aio bdev calls io_submit on its reactor, and an O_DIRECT write
# into a hole of an ext4 file allocates synchronously there (a few hundred IOPS in all).
for c in nx nxd; do
    truncate -s $((NX_SIZE + META_BYTES)) "$work/local-$c.img"
    head -c $((NX_SIZE + META_BYTES)) /dev/zero >"$work/spdk-$c.img"
done
cat >"$work/spdk.json" <<EOF
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": 4096, "block_size": 4096}},
  {"method": "bdev_aio_create", "params": {"name": "Aio_nx", "filename": "$work/spdk-nx.img", "block_size": 4096}},
  {"method": "bdev_aio_create", "params": {"name": "Aio_nxd", "filename": "$work/spdk-nxd.img", "block_size": 4096}}]},
 {"subsystem": "nvmf", "config": [
  {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "$NQN_SPDK-perf", "allow_any_host": true, "serial_number": "SPDKINTEROP1"}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$NQN_SPDK-perf", "namespace": {"bdev_name": "Malloc0"}}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$NQN_SPDK-perf", "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "$SPDK_PORT"}}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "$NQN_SPDK-nx", "allow_any_host": true, "serial_number": "SPDKINTEROP2"}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$NQN_SPDK-nx", "namespace": {"bdev_name": "Aio_nx"}}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$NQN_SPDK-nx", "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "$SPDK_PORT"}}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "$NQN_SPDK-nxd", "allow_any_host": true, "serial_number": "SPDKINTEROP3"}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$NQN_SPDK-nxd", "namespace": {"bdev_name": "Aio_nxd"}}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$NQN_SPDK-nxd", "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "$SPDK_PORT"}}}]}]}
EOF
log "starting SPDK nvmf_tgt on 127.0.0.1:$SPDK_PORT (core 0, default TCP transport options)"
"$SPDK_DIR/build/bin/nvmf_tgt" -m 0x1 -s "$SPDK_MEM_MB" -r "$work/spdk.sock" --json "$work/spdk.json" \
    >"$work/nvmf_tgt.log" 2>&1 &
tgt_pid=$!
wait_listen "$tgt_pid" "$work/nvmf_tgt.log" 127.0.0.1 "$SPDK_PORT"
c2h=$(timeout 30 "$SPDK_DIR/scripts/rpc.py" -s "$work/spdk.sock" nvmf_get_transports |
    jsq "d[0]['c2h_success']") || die "nvmf_get_transports"
log "nvmf_tgt's TCP transport: c2h_success=$c2h"

trid_spdk="trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$SPDK_PORT subnqn:$NQN_SPDK-perf"
cell shoal-perf-spdk shoal_perf spdk "$trid_spdk"
cell shoal-perf-spdk-dg shoal_perf spdk-dg "$trid_spdk" -H -I

# The nexus cells: one shoald with the local children and an exported subsystem; each cell
# creates its nexus (nx: plain remote child; nxd: digests) and adds it as a namespace.
cat >"$work/nx.json" <<EOF
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_uring_create", "params": {"name": "local_nx", "filename": "$work/local-nx.img", "block_size": 4096}},
  {"method": "bdev_uring_create", "params": {"name": "local_nxd", "filename": "$work/local-nxd.img", "block_size": 4096}}]},
 {"subsystem": "nvmf", "config": [
  {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "$NQN_NX", "allow_any_host": true, "serial_number": "SHOALINTEROP2"}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$NQN_NX", "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "$NX_ADDR", "trsvcid": "$NX_PORT"}}}]}]}
EOF
"$bin/shoald" -m 0x2 -c "$work/nx.json" -r "$work/nx.sock" --log info >"$work/shoald-nexus.log" 2>&1 &
nx_pid=$!
wait_listen "$nx_pid" "$work/shoald-nexus.log" "$NX_ADDR" "$NX_PORT"
nx_rpc() { timeout 45 "$bin/shoalctl" -s "$work/nx.sock" -t 40 rpc "$@"; }
nexus_state() {
    nx_rpc nexus_get "{\"name\": \"$1\"}" |
        jsq "d[0]['state'] + ' ' + ','.join(c['state'] for c in d[0]['children'])"
}
# nexus_cell NAME NSID URI-EXTRA [ARG...]: nexus NAME over bdev:///local_NAME and nvmf_tgt's
# subsystem NQN_SPDK-NAME (URI options + URI-EXTRA), exported as NSID; both children online,
# shoal-perf -V (ARGs) through shoald; still online with no I/O error.
nexus_cell() {
    local n=$1 ns=$2 extra=$3 st v r errs
    local uri="nvmf://127.0.0.1:$SPDK_PORT/$NQN_SPDK-$n?hostnqn=$HOSTNQN&ctrl-loss-tmo=5$extra"
    shift 3
    nx_rpc nexus_create "{\"name\": \"$n\", \"size\": $NX_SIZE,
        \"children\": [\"bdev:///local_$n\", \"$uri\"]}" || { echo "nexus_create $n failed"; return 1; }
    nx_rpc nvmf_subsystem_add_ns "{\"nqn\": \"$NQN_NX\", \"namespace\": {\"bdev_name\": \"$n\", \"nsid\": $ns}}"
    st=$(nexus_state "$n")
    [[ $st == "online online,online" ]] || { echo "nexus $n: $st"; return 1; }
    local trid="trtype:TCP adrfam:IPv4 traddr:$NX_ADDR trsvcid:$NX_PORT subnqn:$NQN_NX ns:$ns"
    v=$(shoal_perf "nexus-$n" "$trid" "$@") || { echo "$v"; return 1; }
    st=$(nexus_state "$n")
    [[ $st == "online online,online" ]] || { echo "nexus $n after shoal-perf: $st"; return 1; }
    # The nexus reads from its local child: remove it, so that reads come from nvmf_tgt.
    nx_rpc nexus_remove_child "{\"name\": \"$n\", \"uri\": \"bdev:///local_$n\"}" >/dev/null ||
        { echo "nexus_remove_child $n failed"; return 1; }
    r=$(WL=randread shoal_perf "nexus-$n-reads" "$trid" "$@") || { echo "$r"; return 1; }
    st=$(nexus_state "$n")
    [[ $st == "online online" ]] || { echo "nexus $n (the remote child alone) after reads: $st"; return 1; }
    errs=$(nx_rpc bdev_get_iostat "{\"name\": \"$n\"}" | jsq "d['bdevs'][0]['num_errors']")
    [[ $errs -eq 0 ]] || { echo "nexus $n counted $errs I/O errors"; return 1; }
    echo "through the nexus: $v; local child removed, reads from nvmf_tgt: $r; 0 errors"
}
# compare NAME: the remote child's data region equals the local child's, not all zeroes.
compare() {
    local want got zero
    zero=$(head -c "$NX_SIZE" /dev/zero | sha256sum | cut -d' ' -f1)
    want=$(dd if="$work/local-$1.img" bs="$META_BYTES" skip=1 status=none | sha256sum | cut -d' ' -f1)
    got=$(dd if="$work/spdk-$1.img" bs="$META_BYTES" skip=1 status=none | sha256sum | cut -d' ' -f1)
    [[ $want != "$zero" ]] || { echo "the local child's data region is all zeroes"; return 1; }
    [[ $got == "$want" ]] || { echo "data regions differ: nvmf_tgt child $got, local $want"; return 1; }
    echo "$(tail -n 1 "$work/cell-nexus-$1.log"); data regions equal (sha256 ${want:0:16}...)"
}
nexus_ok=1
cell nexus-nx nexus_cell nx 1 ""
cell nexus-nxd nexus_cell nxd 2 "&hdgst=true&ddgst=true" -H -I
nx_rpc nvmf_delete_subsystem "{\"nqn\": \"$NQN_NX\"}" >/dev/null || nexus_ok=0
for c in nx nxd; do
    [[ ${res[nexus-$c]} == PASS ]] || continue
    nx_rpc nexus_destroy "{\"name\": \"$c\"}" >/dev/null || nexus_ok=0
done
stop_pid "$nx_pid"
nx_pid=""
stop_pid "$tgt_pid"
tgt_pid=""
log "nvmf_tgt stopped"
if [[ $nexus_ok -eq 1 ]]; then
    for c in nx nxd; do
        [[ ${res[nexus-$c]} == PASS ]] || continue
        cell "nexus-$c-data" compare "$c"
        res[nexus-$c]=${res[nexus-$c-data]}
    done
else
    log "FAIL nexus teardown (see $work/shoald-nexus.log)"
    res[nexus-nx]=FAIL res[nexus-nxd]=FAIL
fi

# === SPDK host -> shoald ======================================================================
head -c $((16 << 20)) /dev/urandom >"$work/shoal-pat.img"
head -c $((16 << 20)) /dev/urandom >"$work/shoal-pat-dg.img"
cat >"$work/shoald.json" <<EOF
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_uring_create", "params": {"name": "Pat", "filename": "$work/shoal-pat.img", "block_size": 4096}},
  {"method": "bdev_uring_create", "params": {"name": "PatDg", "filename": "$work/shoal-pat-dg.img", "block_size": 4096}},
  {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": 16384, "block_size": 4096}}]},
 {"subsystem": "nvmf", "config": [
  {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
  {"method": "nvmf_create_subsystem", "params": {"nqn": "$NQN_SHOAL", "allow_any_host": true, "serial_number": "SHOALINTEROP3", "model_number": "Shoal interop"}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$NQN_SHOAL", "namespace": {"bdev_name": "Pat", "nsid": 1}}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$NQN_SHOAL", "namespace": {"bdev_name": "PatDg", "nsid": 2}}},
  {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "$NQN_SHOAL", "namespace": {"bdev_name": "Malloc0", "nsid": 3}}},
  {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "$NQN_SHOAL", "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "$SHOALD_ADDR", "trsvcid": "$SHOALD_PORT"}}}]}]}
EOF
log "starting shoald on $SHOALD_ADDR:$SHOALD_PORT (core 0)"
"$bin/shoald" -m 0x1 -c "$work/shoald.json" -r "$work/shoald.sock" --log info >"$work/shoald.log" 2>&1 &
shoald_pid=$!
wait_listen "$shoald_pid" "$work/shoald.log" "$SHOALD_ADDR" "$SHOALD_PORT"
trid_shoal="trtype:TCP adrfam:IPv4 traddr:$SHOALD_ADDR trsvcid:$SHOALD_PORT subnqn:$NQN_SHOAL"

identify() {
    local out=$work/identify.txt
    timeout 60 "$SPDK_DIR/build/bin/spdk_nvme_identify" -r "$trid_shoal" -s 256 >"$out" 2>&1 ||
        { tail -n 20 "$out"; return 1; }
    grep -q "^NVMeoF Controller at TCP (addr:$SHOALD_ADDR subnqn:$NQN_SHOAL)" "$out" ||
        { head -n 5 "$out"; echo "no controller line for $NQN_SHOAL"; return 1; }
    grep -q "^Subsystem NQN: *$NQN_SHOAL$" "$out" || { grep '^Subsystem NQN' "$out"; return 1; }
    grep -q '^Serial Number: *SHOALINTEROP3' "$out" || { grep '^Serial' "$out"; return 1; }
    grep -q '^Model Number: *Shoal interop' "$out" || { grep '^Model' "$out"; return 1; }
    # Namespace 1: 4096 blocks of 4096 bytes; namespace 3: 16384.
    grep -A20 '^Namespace ID:1$' "$out" | grep -q '^Size (in LBAs): *4096 ' ||
        { grep -A20 '^Namespace ID:1$' "$out"; return 1; }
    grep -A20 '^Namespace ID:3$' "$out" | grep -q '^Size (in LBAs): *16384 ' ||
        { grep -A20 '^Namespace ID:3$' "$out"; return 1; }
    echo "$(grep -c . "$out") lines: subsystem NQN, serial, model, namespaces 1 (4096 blocks) and 3 (16384) as configured"
}

# spdk_perf NAME NSID FILE [ARG...]: spdk_nvme_perf sequential write pass then read pass on
# NSID; then every 4 KiB block of FILE (the namespace's backing file) must be one byte 1..8.
spdk_perf() {
    local name=$1 ns=$2 file=$3 w r check
    shift 3
    for pass in write read; do
        timeout 60 "$SPDK_DIR/build/bin/spdk_nvme_perf" -r "$trid_shoal ns:$ns" -c 0x2 -s 256 \
            -q 8 -o 4096 -w "$pass" -d 4096 -t 30 "$@" >"$work/spdk-perf-$name-$pass.txt" 2>&1 ||
            { tail -n 20 "$work/spdk-perf-$name-$pass.txt"; echo "spdk_nvme_perf -w $pass failed"; return 1; }
        if grep -qiE 'error|fail' "$work/spdk-perf-$name-$pass.txt"; then
            grep -iE 'error|fail' "$work/spdk-perf-$name-$pass.txt" | head -n 10
            return 1
        fi
    done
    w=$(awk '/^Total/ { print $3 }' "$work/spdk-perf-$name-write.txt")
    r=$(awk '/^Total/ { print $3 }' "$work/spdk-perf-$name-read.txt")
    check=$(dd if="$file" bs=1M iflag=direct status=none | python3 -c '
import sys
data = sys.stdin.buffer.read()
bs = 4096
counts = [0] * 9
bad = []
for i in range(0, len(data), bs):
    b = data[i:i + bs]
    v = b[0]
    if 1 <= v <= 8 and b == bytes([v]) * bs:
        counts[v] += 1
    else:
        bad.append(i // bs)
n = len(data) // bs
if bad or n == 0:
    print("%d of %d blocks are not one byte 1..8 repeated (first: %s)" % (len(bad), n, bad[:8]))
    sys.exit(1)
print("all %d blocks hold one of perf'"'"'s patterns (blocks per byte 1..8: %s)" % (n, counts[1:]))
') || { echo "$check"; return 1; }
    echo "write pass $w IOPS, read pass $r IOPS; $check"
}

# bdevperf_verify NAME HDGST DDGST: bdevperf -w verify through bdev_nvme over TCP.
bdevperf_verify() {
    local out=$work/bdevperf-$1.txt
    cat >"$work/bdevperf-$1.json" <<EOF
{"subsystems": [{"subsystem": "bdev", "config": [
 {"method": "bdev_nvme_attach_controller", "params": {"name": "Shoal", "trtype": "tcp", "adrfam": "ipv4",
  "traddr": "$SHOALD_ADDR", "trsvcid": "$SHOALD_PORT", "subnqn": "$NQN_SHOAL", "hostnqn": "$HOSTNQN",
  "hdgst": $2, "ddgst": $3}},
 {"method": "bdev_wait_for_examine"}]}]}
EOF
    # bdev_nvme attaches every namespace: verify on namespace 3 (Shoaln3, the RAM disk) only,
    # by listing it with -T.
    timeout 90 "$SPDK_DIR/build/examples/bdevperf" -m 0x2 -s 256 --json "$work/bdevperf-$1.json" \
        -T Shoaln3 -q 16 -o 4096 -w verify -t 4 >"$out" 2>&1 || { tail -n 25 "$out"; return 1; }
    if grep -qiE 'miscompare|error' "$out"; then
        grep -iE 'miscompare|error' "$out" | head -n 10
        return 1
    fi
    # The job line: "Shoaln3 : RUNTIME IOPS MiB/s Fail/s TO/s ...": IOPS > 0, no failure.
    awk '$1 == "Shoaln3" && $2 == ":" { found = 1; iops = $4; fail = $6; to = $7 }
        END {
            if (!found) { print "no result line for Shoaln3"; exit 1 }
            if (iops + 0 <= 0 || fail + 0 != 0 || to + 0 != 0) {
                print "iops " iops " fail/s " fail " timeouts/s " to; exit 1 }
            print "verify: " iops " IOPS, 0 failures, 0 timeouts"
        }' "$out"
}

cell spdk-identify identify
cell spdk-perf spdk_perf plain 1 "$work/shoal-pat.img"
cell spdk-perf-dg spdk_perf dg 2 "$work/shoal-pat-dg.img" -H -I
cell bdevperf-verify bdevperf_verify plain false false
cell bdevperf-verify-dg bdevperf_verify dg true true
stop_pid "$shoald_pid"
shoald_pid=""
log "shoald stopped"

# === the matrix ===============================================================================
r() { echo "${res[$1]:-not run}"; }
printf '\nInterop matrix, SPDK cells (%s, SPDK %s, nvmf_tgt c2h_success=%s)\n\n' \
    "$(date -u +%F)" "$(cat "$SPDK_DIR/VERSION" 2>/dev/null || echo '?')" "$c2h"
printf '| %-62s | %-10s | %-19s |\n' "host -> target (how checked)" "no digests" "header+data digests"
printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..64})" "$(printf -- '-%.0s' {1..12})" "$(printf -- '-%.0s' {1..21})"
row() { printf '| %-62s | %-10s | %-19s |\n' "$1" "$2" "$3"; }
row "Shoal shoal-perf -V -> SPDK nvmf_tgt" "$(r shoal-perf-spdk)" "$(r shoal-perf-spdk-dg)"
row "Shoal nexus child -> SPDK nvmf_tgt (-V via shoald + data cmp)" "$(r nexus-nx)" "$(r nexus-nxd)"
row "SPDK spdk_nvme_identify -> shoald" "$(r spdk-identify)" "n/a (no option)"
row "SPDK spdk_nvme_perf write+read -> shoald (pattern check)" "$(r spdk-perf)" "$(r spdk-perf-dg)"
row "SPDK bdevperf -w verify (bdev_nvme TCP host) -> shoald" "$(r bdevperf-verify)" "$(r bdevperf-verify-dg)"
echo
fails=0
for k in shoal-perf-spdk shoal-perf-spdk-dg nexus-nx nexus-nxd spdk-identify spdk-perf spdk-perf-dg \
    bdevperf-verify bdevperf-verify-dg; do
    [[ $(r "$k") == PASS ]] || fails=$((fails + 1))
done
if [[ $fails -eq 0 ]]; then
    echo "interop-spdk: PASS (all cells, $(($(date +%s) - t0)) s)"
else
    echo "interop-spdk: FAIL ($fails cells; logs in $work)"
    KEEP=1
    exit 1
fi

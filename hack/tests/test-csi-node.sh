#!/usr/bin/env bash
# System test: the CSI node plugin (shoal-csi --mode node) in the real Linux 6.1 host (QEMU
# guest) against namespaces that shoald on this host exports over NVMe/TCP.
#
# shoald serves four subsystems (RAM namespaces): ext4 (256 MiB), xfs (384 MiB: mkfs.xfs wants
# 300 MB), block (64 MiB), and one without a namespace until the guest asks the host (through
# rpc-trigger.py) to add it while NodeStageVolume waits ("a namespace that shows up late").
# In the guest, csi-node-guest.sh starts the plugin on a Unix socket and drives it with
# shoal-csi-client (built from the same CSI bindings): stage, publish (read-write and
# read-only), write and read files through the mounts, stats, expand, unpublish, unstage, each
# call made twice (idempotency), the data still there after unstage + stage again, an NQN
# already connected by hand before staging, a controller that is reconnecting (its target,
# a second shoald, frozen with SIGSTOP: stage and publish again succeed, the volume condition
# turns abnormal, and normal again with the data intact after SIGCONT), and the bad calls with
# the code the CSI spec names.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=hack/tests
work=$(mktemp -d /tmp/shoal-csi-node.XXXXXX)
shoald_pid="" trig_pid="" shoald2_pid="" sig_pid=""
cleanup() {
    [[ -n $trig_pid ]] && kill "$trig_pid" 2>/dev/null
    [[ -n $sig_pid ]] && kill "$sig_pid" 2>/dev/null
    [[ -n $shoald2_pid ]] && kill -CONT "$shoald2_pid" 2>/dev/null && kill -9 "$shoald2_pid" 2>/dev/null
    [[ -n $shoald_pid ]] && kill -9 "$shoald_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
log() { printf 'csi-node: %s\n' "$*" >&2; }

cargo build --release -q -p shoal-target --bin shoald
cargo build --release -q -p shoal-csi --bin shoal-csi --bin shoal-csi-client
hack/guest/build.sh

# A free port for the NVMe/TCP listener (other tests may hold 4420).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pfx=nqn.2026-12.io.shoal:csi
listen() {
    printf '{ "method": "nvmf_subsystem_add_listener", "params": { "nqn": "%s", "listen_address": { "trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "%s" } } }' "$1" "$port"
}
sub() {
    printf '{ "method": "nvmf_create_subsystem", "params": { "nqn": "%s", "allow_any_host": true, "serial_number": "%s" } }' "$1" "$2"
}
ns() {
    printf '{ "method": "nvmf_subsystem_add_ns", "params": { "nqn": "%s", "namespace": { "bdev_name": "%s" } } }' "$1" "$2"
}
malloc() {
    printf '{ "method": "bdev_malloc_create", "params": { "name": "%s", "num_blocks": %s, "block_size": 4096 } }' "$1" "$2"
}
cat >"$work/config.json" <<EOF_JSON
{ "subsystems": [
  { "subsystem": "bdev", "config": [
    $(malloc Ext4 65536), $(malloc Xfs 98304), $(malloc Blk 16384), $(malloc Late 16384) ] },
  { "subsystem": "nvmf", "config": [
    { "method": "nvmf_create_transport", "params": { "trtype": "TCP" } },
    $(sub "$pfx-ext4" SHOALCSI000000000001), $(ns "$pfx-ext4" Ext4), $(listen "$pfx-ext4"),
    $(sub "$pfx-xfs" SHOALCSI000000000002), $(ns "$pfx-xfs" Xfs), $(listen "$pfx-xfs"),
    $(sub "$pfx-blk" SHOALCSI000000000003), $(ns "$pfx-blk" Blk), $(listen "$pfx-blk"),
    $(sub "$pfx-late" SHOALCSI000000000004), $(listen "$pfx-late") ] } ] }
EOF_JSON

sock=$work/shoal.sock
log "starting shoald (NVMe/TCP on 127.0.0.1:$port)"
target/release/shoald -c "$work/config.json" -r "$sock" --log info >"$work/shoald.log" 2>&1 &
shoald_pid=$!
for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.1; done
[[ -S $sock ]] || { cat "$work/shoald.log"; log "shoald did not start"; exit 1; }

# A second shoald serves one more volume, and the guest may freeze it (SIGSTOP) and thaw it
# (SIGCONT) through a small HTTP endpoint: its controller in the guest then loses the
# connection (keep-alive timeout), reconnects every reconnect-delay, and comes back with its
# data when the target answers again ("a controller that is reconnecting").
port2=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/config2.json" <<EOF_JSON
{ "subsystems": [
  { "subsystem": "bdev", "config": [ $(malloc Recon 65536) ] },
  { "subsystem": "nvmf", "config": [
    { "method": "nvmf_create_transport", "params": { "trtype": "TCP" } },
    $(sub "$pfx-recon" SHOALCSI000000000005), $(ns "$pfx-recon" Recon),
    $(port=$port2 listen "$pfx-recon") ] } ] }
EOF_JSON
target/release/shoald -c "$work/config2.json" -r "$work/shoal2.sock" --log info >"$work/shoald2.log" 2>&1 &
shoald2_pid=$!
for _ in $(seq 100); do [[ -S $work/shoal2.sock ]] && break; sleep 0.1; done
[[ -S $work/shoal2.sock ]] || { cat "$work/shoald2.log"; log "second shoald did not start"; exit 1; }
python3 -u - "$shoald2_pid" >"$work/signal.log" 2>&1 <<'EOF_PY' &
import http.server, os, signal, sys
pid = int(sys.argv[1])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        sig = {"/stop": signal.SIGSTOP, "/cont": signal.SIGCONT}.get(self.path)
        if sig is None:
            self.send_error(404)
            return
        os.kill(pid, sig)
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
print("port", srv.server_address[1], flush=True)
srv.serve_forever()
EOF_PY
sig_pid=$!
sport=""
for _ in $(seq 50); do
    sport=$(sed -n 's/^port \([0-9]*\)$/\1/p' "$work/signal.log" | head -n1)
    [[ -n $sport ]] && break
    sleep 0.1
done
[[ -n $sport ]] || { log "signal endpoint did not start"; exit 1; }

python3 -u "$here/rpc-trigger.py" --socket "$sock" >"$work/trigger.log" 2>&1 &
trig_pid=$!
tport=""
for _ in $(seq 50); do
    tport=$(sed -n 's/^port \([0-9]*\)$/\1/p' "$work/trigger.log" | head -n1)
    [[ -n $tport ]] && break
    sleep 0.1
done
[[ -n $tport ]] || { log "rpc-trigger did not start"; exit 1; }

# Without their debug info the two binaries are a tenth of the size in the guest's archive.
strip -o "$work/shoal-csi" target/release/shoal-csi
strip -o "$work/shoal-csi-client" target/release/shoal-csi-client

rc=0
hack/guest/run.sh --no-build -t 900 --loglevel 5 -e PORT="$port" -e PORT2="$port2" -e TRIGGER_PORT="$tport" -e SIGNAL_PORT="$sport" \
    -e PFX="$pfx" -f "$work/shoal-csi" -f "$work/shoal-csi-client" \
    "$here/csi-node-guest.sh" || rc=$?
if [[ $rc -ne 0 ]]; then
    log "guest test failed (exit $rc); shoald log:"
    tail -n 40 "$work/shoald.log" >&2
    exit "$rc"
fi
log "PASS"

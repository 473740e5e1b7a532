#!/usr/bin/env bash
# System test: the real Linux 6.1 NVMe/TCP host (in a QEMU guest) against shoald on this host.
#
# Starts shoald with hack/tests/linux-host.json (a 4 KiB and a 512-byte RAM namespace in two
# subsystems, I/O listener 127.0.0.1:4420, discovery on 127.0.0.1:8009), then runs
# linux-host-guest.sh in the guest: discover (8009 and 4420), connect, list, id-ctrl, id-ns,
# fio write+verify with libaio and io_uring on several queues, write zeroes and deallocate read
# back as zeroes, a namespace added and removed while connected, digests, the 512-byte
# namespace, disconnect. Finally SIGTERM must stop shoald with exit status 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=hack/tests
work=$(mktemp -d /tmp/shoal-linux-host.XXXXXX)
shoald_pid="" trig_pid=""
cleanup() {
    [[ -n $trig_pid ]] && kill "$trig_pid" 2>/dev/null
    [[ -n $shoald_pid ]] && kill -9 "$shoald_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

log() { printf 'linux-host: %s\n' "$*" >&2; }

cargo build --release -q -p shoal-target --bin shoald --bin shoalctl
hack/guest/build.sh

sock=$work/shoal.sock
log "starting shoald"
target/release/shoald -c "$here/linux-host.json" -r "$sock" --log info >"$work/shoald.log" 2>&1 &
shoald_pid=$!
for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.1; done
[[ -S $sock ]] || { cat "$work/shoald.log"; log "shoald did not start"; exit 1; }

python3 -u "$here/rpc-trigger.py" --socket "$sock" >"$work/trigger.log" 2>&1 &
trig_pid=$!
port=""
for _ in $(seq 50); do
    port=$(sed -n 's/^port \([0-9]*\)$/\1/p' "$work/trigger.log" | head -n1)
    [[ -n $port ]] && break
    sleep 0.1
done
[[ -n $port ]] || { log "rpc-trigger did not start"; exit 1; }

rc=0
hack/guest/run.sh --no-build -t 600 --loglevel 5 -e TRIGGER_PORT="$port" \
    "$here/linux-host-guest.sh" || rc=$?
if [[ $rc -ne 0 ]]; then
    log "guest test failed (exit $rc); shoald log:"
    tail -n 60 "$work/shoald.log" >&2
    exit "$rc"
fi

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

#!/usr/bin/env bash
# Crash test: shoald is killed (SIGKILL) at random instants under a load of flushed writes from
# the Linux host (the QEMU guest), restarted on the same file, and every write that was
# acknowledged and covered by a later completed Flush reads back.
#
#   node1  shoald -m 0x1, 127.0.0.1:CRASH_KILL_PORT (10.0.2.2 in the guest): namespace `disk` =
#          uring on disk.img (64 MiB, 4 KiB blocks); no pfail: the process dies, not the disk
#
# The guest (crash-kill-guest.sh) stays up the whole time, connected with ctrl-loss-tmo 90 s
# and reconnect-delay 1 s. Its 4 writers each loop: random 64 KiB slot of their own, random
# data, 16 x 4 KiB O_DIRECT writes then an fsync of the block device (a Flush), all in one
# `dd oflag=direct conv=fsync`; a success is logged in the guest with the slot's SHA-256
# ("FLUSHED", also counted on the console). Meanwhile this script, CRASH_KILLS times (default
# 3): waits for a random number (5-20) of further flushed slots and a random 0-1 s more,
# SIGKILLs shoald (writes and flushes in flight), waits 0.5-2 s, restarts it with the same
# config (same NQN, namespace UUID and file), and waits for 5 more flushed slots (the kernel
# reconnected and reissued what was outstanding). Then it tells the guest to stop; the
# writers finish their slot, and the guest reads every slot back (O_DIRECT) and compares it
# with the last FLUSHED record for that slot. Finally shoald must stop on SIGTERM with status 0.
#
# What it asserts: an acknowledged write covered by a completed Flush survives the death of
# the target process and its restart: shoald acknowledges a write only once the kernel has it
# (nothing held in the process), a restart does not damage the file, and the Linux host's
# reissue of the writes in flight lands correctly. Any slot whose data differs from its last
# flushed write, an I/O error seen by a writer (the reconnect failed), a guest or node failure
# fails the test. (A power loss, where the kernel's cache is lost too, is what
# test-crash-ext4.sh simulates with pfail.)
#
# Env: CRASH_KILLS (3), CRASH_KILL_PORT (4724), CRASH_RANDOM (seeds this script's choices and
# the guest's; logged), KEEP=1 keeps the work directory; SHOAL_BIN_DIR=DIR uses DIR's binaries.
set -euo pipefail
NAME=crash-kill
NODES=1
# shellcheck source=hack/tests/crash-lib.sh
. "$(dirname "$0")/crash-lib.sh"

KILLS=${CRASH_KILLS:-3}
PORT=${CRASH_KILL_PORT:-4724}
CRASH_RANDOM=${CRASH_RANDOM:-$((($(date +%s%N) / 1000) % 1000000007))}
RANDOM=$CRASH_RANDOM
NQN=nqn.2016-06.io.shoal:crash-kill
NS_UUID=6c0a5d1e-7e57-4c4a-9e00-00000000c111
IMG_SIZE=64M
GUEST_TIMEOUT=400
ctl_pid=""

# shellcheck disable=SC2317 # called by crash_cleanup
crash_cleanup_extra() { [[ -z $ctl_pid ]] || kill "$ctl_pid" 2>/dev/null; }

config() {
    cat <<EOF
{ "subsystems": [
  { "subsystem": "bdev", "config": [
    { "method": "bdev_uring_create",
      "params": { "name": "disk", "filename": "$work/disk.img", "block_size": 4096 } } ] },
  { "subsystem": "nvmf", "config": [
    { "method": "nvmf_create_transport", "params": { "trtype": "TCP" } },
    { "method": "nvmf_create_subsystem",
      "params": { "nqn": "$NQN", "allow_any_host": true, "serial_number": "SHOALCRASHK1" } },
    { "method": "nvmf_subsystem_add_ns",
      "params": { "nqn": "$NQN", "namespace": { "bdev_name": "disk", "uuid": "$NS_UUID" } } },
    { "method": "nvmf_subsystem_add_listener",
      "params": { "nqn": "$NQN", "listen_address": { "trtype": "TCP", "adrfam": "IPv4",
                  "traddr": "127.0.0.1", "trsvcid": "$PORT" } } }
  ] } ] }
EOF
}

flushed() { console g | grep -cE '^FLUSHED [0-9]+ [0-9]+ [0-9]+$' || true; }

# wait_flushed N SECONDS: until the guest has flushed N slots in all.
wait_flushed() {
    local want=$1 end=$((SECONDS + $2))
    while ((SECONDS < end)); do
        [[ $(flushed) -ge $want ]] && return 0
        guest_alive || guest_fail g "the guest ended early"
        console g | grep -q '^FAIL:\|^crash-kill: writer' && guest_fail g "the guest failed"
        check_node 1
        sleep 0.1
    done
    guest_fail g "fewer than $want flushed slots after $2 s"
}

build
port_free 127.0.0.1 "$PORT"
note "CRASH_RANDOM=$CRASH_RANDOM, $KILLS kills, port $PORT"
truncate -s "$IMG_SIZE" "$work/disk.img"
config >"$work/n1.json"
start_node 1

# The guest polls http://10.0.2.2:CTL_PORT/stop; the file appears when it should stop.
mkdir "$work/ctl"
python3 -u -m http.server --bind 127.0.0.1 --directory "$work/ctl" 0 >"$work/ctl.log" 2>&1 &
ctl_pid=$!
ctl_port=""
for _ in $(seq 50); do
    ctl_port=$(sed -n 's/^Serving HTTP on .* port \([0-9]*\) .*/\1/p' "$work/ctl.log" | head -n1)
    [[ -n $ctl_port ]] && break
    sleep 0.1
done
[[ -n $ctl_port ]] || die "the control HTTP server did not start"

start_guest g "$GUEST_TIMEOUT" "$here/crash-kill-guest.sh" \
    -e NQN="$NQN" -e PORT="$PORT" -e CTL_PORT="$ctl_port" -e SEED="$(rand 1 1000000)"
wait_flushed 1 120
note "guest up, writers flushing"
for k in $(seq "$KILLS"); do
    wait_flushed $(($(flushed) + $(rand 5 20))) 120
    sleep "$(awk -v m="$(rand 0 1000)" 'BEGIN { printf "%.3f", m / 1000 }')"
    before=$(flushed)
    kill_node 1
    down_ms=$(rand 500 2000)
    sleep "$(awk -v m="$down_ms" 'BEGIN { printf "%.3f", m / 1000 }')"
    start_node 1
    t=$(elapsed)
    wait_flushed $((before + 5)) 120
    up=$(awk -v a="$t" -v b="$(elapsed)" 'BEGIN { printf "%.1f", b - a }')
    note "kill $k: SIGKILL after $before flushed slots, down ${down_ms} ms; the guest flushed" \
        "5 more $up s after the restart"
done
touch "$work/ctl/stop"
wait_guest
console g | grep '^BAD ' >&2 || true
[[ $guest_rc -eq 0 ]] || guest_fail g "the guest exited $guest_rc"
check_node 1
line=$(console g | grep '^crash-kill: [0-9]* slots verified') || guest_fail g "no verify line"
note "${line#crash-kill: }"
stop_node 1
note "shoald stopped with SIGTERM, status 0"
result=PASS

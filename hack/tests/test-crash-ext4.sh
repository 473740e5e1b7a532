#!/usr/bin/env bash
# Crash test judged by a real file system: ext4 on a disk with a volatile write cache (pfail)
# loses its power while the Linux host (the QEMU guest) writes and fsyncs files.
#
#   node1  shoald -m 0x1, 127.0.0.1:CRASH_PORT (the guest reaches it as 10.0.2.2): namespace
#          `disk` = pfail over `base` = uring on disk.img (64 MiB, 4 KiB blocks)
#
# Each round (CRASH_ROUNDS, default 3), on a fresh disk.img:
#   1. write boot (crash-ext4-guest.sh MODE=write): mkfs.ext4, mount, a noise writer without
#      fsync, and files f1, f2, ... of random size and content, each written with
#      `dd conv=fsync`; after each successful fsync the guest prints "DURABLE fN SIZE SHA256";
#   2. once the guest has reported a random number of durable files (3-12) and a random
#      0-1.5 s later, at the first moment the device's cache holds writes (pfail-cut.py polls
#      it every few ms, for at most 3 s: a cut of an empty cache loses nothing), while the
#      guest keeps writing: bdev_pfail_cut with a logged seed; odd rounds
#      keep=random (every write not yet made durable by a Flush or FUA is dropped or kept
#      block by block, any version, any order: consistency under reordering and tearing),
#      even rounds keep=none (everything not durable is lost: the strictest test of Flush and
#      FUA); the guest gets I/O errors from then on;
#   3. 2 s later (time for the guest to print the DURABLE lines of fsyncs that had completed
#      before the cut), shoald gets SIGKILL and the guest is killed (qemu gone);
#   4. shoald restarts with disk.img exported as plain uring (no pfail, same namespace UUID);
#   5. check boot (MODE=check): mount (the kernel must report a journal replay), unmount,
#      `e2fsck -fn` must exit 0, mount read-only, and every file reported DURABLE in step 1
#      or 3 must be there with its size and SHA-256. Then shoald must stop on SIGTERM with
#      status 0.
# What it asserts: a successful fsync is a promise ext4 keeps only if the device honours
# Flush and FUA (jbd2 commits with a pre-flush and a FUA commit block). Every DURABLE line is a
# successful fsync, and after the cut every I/O fails, so each one completed before the cut:
# its file must survive any cut. A lost or damaged durable file, an unclean fsck, a missing
# or failed journal replay, a node panic or a non-zero exit fails the test. Files being
# written at the cut and the noise files may be in any state (but fsck must be clean).
# Why keep=none rounds: were FUA ignored, only the newest commit block would be volatile (the
# next commit's pre-flush saves the older ones), so the newest durable file, often reported in
# the 2 s after the cut, is the one at risk; keep=random keeps that block half of the time,
# keep=none never. Measured with FUA dropped by hand in the target (writes passed down
# without FUA): as the test is now, it failed 4 runs out of 4 (keep=random rounds caught the
# loss in 3 of 4, keep=none rounds in 1 of 1); before the cut waited for a non-empty cache,
# keep=random rounds caught it in 4 of 10 and keep=none rounds in 6 of 7. A round misses it
# when the newest commit block reaches the base anyway: keep=random kept it, or the cut came
# during a Flush's write-back, which pfail lets finish.
#
# Env: CRASH_ROUNDS (3), CRASH_PORT (4721), CRASH_KEEP (mix: keep=random and keep=none
# alternately; or random, none, all for every round), CRASH_SEEDS ("S1 S2 ...": the cut seeds
# of the rounds, default random and logged), CRASH_RANDOM (seeds this script's own choices:
# when to cut, the guest's sizes; logged), KEEP=1 keeps the work directory;
# SHOAL_BIN_DIR=DIR uses the shoald/shoalctl found in DIR.
set -euo pipefail
NAME=crash-ext4
NODES=1
# shellcheck source=hack/tests/crash-lib.sh
. "$(dirname "$0")/crash-lib.sh"

ROUNDS=${CRASH_ROUNDS:-3}
PORT=${CRASH_PORT:-4721}
KEEP_MODE=${CRASH_KEEP:-mix}
read -r -a SEEDS <<<"${CRASH_SEEDS:-}"
CRASH_RANDOM=${CRASH_RANDOM:-$((($(date +%s%N) / 1000) % 1000000007))}
RANDOM=$CRASH_RANDOM
NQN=nqn.2016-06.io.shoal:crash-ext4
NS_UUID=6c0a5d1e-7e57-4c4a-9e00-00000000e4e4
IMG_SIZE=64M
GUEST_TIMEOUT=300

# config pfail|plain: node1's config, with or without the pfail device.
config() {
    local top=disk
    [[ $1 == pfail ]] && top=base
    cat <<EOF
{ "subsystems": [
  { "subsystem": "bdev", "config": [
    { "method": "bdev_uring_create",
      "params": { "name": "$top", "filename": "$work/disk.img", "block_size": 4096 } }
EOF
    [[ $1 == pfail ]] && cat <<EOF
    , { "method": "bdev_pfail_create", "params": { "name": "disk", "base_bdev_name": "base" } }
EOF
    cat <<EOF
  ] },
  { "subsystem": "nvmf", "config": [
    { "method": "nvmf_create_transport", "params": { "trtype": "TCP" } },
    { "method": "nvmf_create_subsystem",
      "params": { "nqn": "$NQN", "allow_any_host": true, "serial_number": "SHOALCRASH1" } },
    { "method": "nvmf_subsystem_add_ns",
      "params": { "nqn": "$NQN", "namespace": { "bdev_name": "disk", "uuid": "$NS_UUID" } } },
    { "method": "nvmf_subsystem_add_listener",
      "params": { "nqn": "$NQN", "listen_address": { "trtype": "TCP", "adrfam": "IPv4",
                  "traddr": "127.0.0.1", "trsvcid": "$PORT" } } }
  ] } ] }
EOF
}

durable() { console "$1" | grep -cE '^DURABLE f[0-9]+ [0-9]+ [0-9a-f]{64}$' || true; }

# wait_durable LABEL N SECONDS: until the write guest has reported N durable files.
wait_durable() {
    local label=$1 want=$2 end=$((SECONDS + $3))
    while ((SECONDS < end)); do
        [[ $(durable "$label") -ge $want ]] && return 0
        guest_alive || guest_fail "$label" "the write guest ended before the cut"
        console "$label" | grep -q '^FAIL:' && guest_fail "$label" "the write guest failed"
        check_node 1
        sleep 0.1
    done
    guest_fail "$label" "fewer than $want durable files after $3 s"
}

round() {
    local r=$1 seed cut_after delay_ms out dirty kept waited n_cut n rc intact keep=$KEEP_MODE
    seed=${SEEDS[$((r - 1))]:-$(seed64)}
    if [[ $keep == mix ]]; then
        if ((r % 2 == 0)); then keep=none; else keep=random; fi
    fi
    cut_after=$(rand 3 12)
    delay_ms=$(rand 0 1500)
    rm -f "$work/disk.img"
    truncate -s "$IMG_SIZE" "$work/disk.img"
    config pfail >"$work/n1.json"
    start_node 1
    start_guest "w$r" "$GUEST_TIMEOUT" "$here/crash-ext4-guest.sh" \
        -e NQN="$NQN" -e PORT="$PORT" -e MODE=write -e SEED="$(rand 1 1000000)"
    log "round $r: write guest booting; cut after $cut_after durable files + $delay_ms ms" \
        "(keep $keep, seed $seed)"
    wait_durable "w$r" "$cut_after" 240
    sleep "$(awk -v m="$delay_ms" 'BEGIN { printf "%.3f", m / 1000 }')"
    n_cut=$(durable "w$r")
    out=$(pfail_cut 1 disk "$keep" "$seed") || die "round $r: bdev_pfail_cut failed: $out"
    dirty=$(jsq "d['dirty_blocks']" <<<"$out")
    kept=$(jsq "d['kept_blocks']" <<<"$out")
    waited=$(jsq "'%d ms later, cache at %d blocks' % (d['waited_ms'], d['cached_seen'])" <<<"$out")
    sleep 2
    check_node 1
    kill_node 1
    kill_guest
    console "w$r" | grep -E '^DURABLE f[0-9]+ [0-9]+ [0-9a-f]{64}$' | cut -d' ' -f2- \
        >"$work/durable$r.txt" || true
    n=$(wc -l <"$work/durable$r.txt")
    log "round $r: cut with $n_cut durable files reported ($n in all): $dirty dirty blocks," \
        "$kept kept; node1 killed, guest killed"

    config plain >"$work/n1.json"
    start_node 1
    start_guest "c$r" "$GUEST_TIMEOUT" "$here/crash-ext4-guest.sh" \
        -e NQN="$NQN" -e PORT="$PORT" -e MODE=check -e SEED=0 \
        -f "$work/durable$r.txt:/guest/durable.txt"
    wait_guest
    rc=$guest_rc
    check_node 1
    console "c$r" | grep '^LOST ' >&2 || true
    [[ $rc -eq 0 ]] || guest_fail "c$r" "round $r (keep $keep, seed $seed): check guest exited $rc"
    intact=$(console "c$r" | sed -n 's/^crash-ext4: durable files: \([0-9]*\) intact.*/\1/p')
    [[ $intact -eq $n ]] || guest_fail "c$r" "round $r: $intact of $n durable files intact"
    stop_node 1
    note "round $r: keep $keep seed $seed, cut after $n_cut durable files" \
        "(+${delay_ms} ms, then $waited):" \
        "$dirty dirty blocks, $kept kept; replay + e2fsck -fn clean; $n/$n durable files intact"
}

build
port_free 127.0.0.1 "$PORT"
note "CRASH_RANDOM=$CRASH_RANDOM, $ROUNDS rounds, keep $KEEP_MODE, port $PORT"
for r in $(seq "$ROUNDS"); do round "$r"; done
result=PASS

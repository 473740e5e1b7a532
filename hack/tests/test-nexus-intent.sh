#!/usr/bin/env bash
# System test (issue 13, the write-intent bitmap): a crash of the nexus node resynchronises
# only the regions the bitmap marks, the replicas end identical, and what the host made
# durable reads back.
#
#   node1  127.0.0.1:NX_PORT    the nexus nx0 (1 GiB) over bdev:///local (uring on r1.img) and
#                               the two replicas below
#   node2  127.0.0.32:NX_PORT   replica r2 (uring on r2.img)
#   node3  127.0.0.33:NX_PORT   replica r3 (uring on r3.img)
#
# The guest (nexus-intent-guest.sh) writes 8 regions of 1 MiB with verify headers and fsyncs
# them, then keeps 4 KiB random writes at depth 32 in flight over 2 more regions. node1 gets
# SIGKILL: its children are left unclean, with writes in flight on some replicas and not on
# others. node1 restarts on the same file and nexus_create is called again with the same three
# children: the nexus sees the unclean stop and resynchronises the replicas from one of them,
# where the write-intent bitmaps say. The Linux host reconnects by itself and its load goes on.
# The test checks: the resync was partial and copied at most 3% of the volume (the figure is
# in the summary); the load saw no I/O error; the durable regions verify (fio verify_only);
# after a clean stop the three replicas' data regions are identical byte for byte and match the
# guest's checksum of the device.
#
# Env: NX_PORT (default 4522), REPLICA_NET (default 127.0.0.3: replicas on .32 and .33);
# KEEP, SHOAL_BIN_DIR as in lib-nexus.sh.
set -euo pipefail
NAME=nexus-intent
NX_PORT=${NX_PORT:-4522}
REPLICA_NET=${REPLICA_NET:-127.0.0.3}
NX_SIZE=$((1 << 30))
REBUILD_MIB=64
GUEST_TIMEOUT=300
# shellcheck source=hack/tests/lib-nexus.sh
. "$(dirname "$0")/lib-nexus.sh"

# wait_guest LINE SECONDS: wait until the guest has printed "$NAME: LINE".
wait_guest() {
    local end=$((SECONDS + $2))
    while ((SECONDS < end)); do
        grep -q "^$NAME: $1" "$work/guest.log" 2>/dev/null && return 0
        guest_alive || die "the guest ended while waiting for '$1' (see its console)"
        check_nodes
        sleep 0.2
    done
    die "the guest did not print '$1' within $2 s"
}

# rebuild_field URI EXPR: EXPR applied to the child's last rebuild (None: "is there none?").
rebuild_field() {
    local e=$2
    [[ $e == None ]] && e=" is None"
    nexus | jsq "[c for c in d[0]['children'] if c['uri'].split('?')[0] == '${1%%\?*}'][0]['last_rebuild']$e"
}

setup_nexus
start_guest "$here/nexus-intent-guest.sh"
wait_guest written 150
marked=$(nexus | jsq "d[0]['write_intent']['marked_regions']")
note "guest: 8 MiB written and fsynced; $marked regions of 1 MiB marked in the write-intent bitmap"
[[ $marked -gt 0 ]] || die "no region is marked after the guest's writes"
wait_guest "load running" 60
sleep 2
w=$(written)
kill -KILL "${pid[1]}"
wait "${pid[1]}" 2>/dev/null || true
unset "pid[1]"
note "node1 SIGKILL with the guest's load in flight ($w writes reached the nexus)"

t=$(elapsed)
start_node 1
export_nexus
note "node1 restarted on the same file; nexus_create from the same children: $(nexus_state)"
for n in 2 3; do
    u=$(uri "$n")
    wait_child "$u" online 120
done
copied=0
for n in 2 3; do
    u=$(uri "$n")
    [[ $(rebuild_field "$u" None) != True ]] || die "replica $n: no resync after the unclean stop"
    full=$(rebuild_field "$u" "['full']")
    segs=$(rebuild_field "$u" "['segments_copied']")
    total=$(rebuild_field "$u" "['segments_total']")
    note "replica $n resync: $(last_rebuild "$u"); full=$full"
    [[ $full == False ]] || die "replica $n was resynchronised in full: the bitmap was not used"
    ((segs * 100 <= total * 3)) || die "replica $n: $segs of $total segments copied (> 3%)"
    ((segs > copied)) && copied=$segs
done
pct=$(awk -v c="$copied" -v t="$total" 'BEGIN { printf "%.2f", 100 * c / t }')
note "resync after the crash: at most $copied of $total segments per replica = $pct% of the volume" \
    "($(since "$t") s from the restart to all children online)"
[[ $(nexus_state) == online ]] || die "nexus not online after the resync: $(nexus_state)"

# The Linux host has reconnected: writes reach the new nexus.
w=$(written)
end=$((SECONDS + 60))
while (($(written) <= w + 100)); do
    ((SECONDS < end)) || die "the guest's load did not come back to the restarted nexus"
    check_nodes
    sleep 0.5
done
note "the guest's load goes on through the restarted nexus"
touch "$work/ctl/stop"
wait_guest "durable regions verified" 120
note "guest: no I/O error in the load; the 8 durable regions verify after the crash"
finish_guest
compare_replicas
result=PASS

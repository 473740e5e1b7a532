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
# them, then keeps 4 KiB random writes at depth 32 in flight over 2 more regions. node3 (a
# replica) is frozen for a second, then node1 and node3 get SIGKILL: the children are left
# unclean, the writes in flight on the local child and node2's but not on node3's. The guest's
# controller-loss timeout (2 s) passes, so the Linux host gives those writes up instead of
# sending them again (which would hide a missed resync). node3 and node1 restart on the same
# files and nexus_create is called again with the same three children: the nexus sees the
# unclean stop and resynchronises the replicas from one of them, where the write-intent bitmaps
# say. The test checks: the resync was partial and copied at most 3% of the volume (the figure
# is in the summary); the guest, connected again, verifies its durable regions (fio verify_only);
# after a clean stop the three replicas' data regions are identical byte for byte, and the
# regions written match the guest's checksum of them.
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
# The regions the guest writes (MiB offsets): the durable ones, then the load's. The guest's
# checksum covers these (reading all of 1 GiB in the emulated guest takes minutes); the replicas
# are compared whole, byte for byte.
SUM_MIBS="3 130 257 384 511 638 765 892 70 700"
# shellcheck source=hack/tests/lib-nexus.sh
. "$(dirname "$0")/lib-nexus.sh"

# wait_guest_says LINE SECONDS: wait until the guest has printed "$NAME: LINE".
wait_guest_says() {
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
start_guest "$here/nexus-intent-guest.sh" SUM_MIBS="$SUM_MIBS"
wait_guest_says written 150
marked=$(nexus | jsq "d[0]['write_intent']['marked_regions']")
note "guest: 8 MiB written and fsynced; $marked regions of 1 MiB marked in the write-intent bitmap"
[[ $marked -gt 0 ]] || die "no region is marked after the guest's writes"
wait_guest_says "load running" 60
sleep 1
# Make the replicas disagree for sure: node3 freezes, so the writes in flight reach the local
# child and node2 but wait in node3's socket; then node1 and node3 die (node3 never executes
# them). Only the resync can make the replicas agree again, as the guest gives its writes up.
kill -STOP "${pid[3]}"
sleep 1
w=$(written)
kill -KILL "${pid[1]}" "${pid[3]}"
for n in 1 3; do
    wait "${pid[$n]}" 2>/dev/null || true
    unset "pid[$n]"
done
note "node3 frozen, then node1 and node3 SIGKILL with the guest's load in flight ($w writes" \
    "reached the nexus)"
sleep 4 # the guest's controller-loss timeout (2 s) passes: its writes in flight fail
start_node 3
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
    bytes=$(rebuild_field "$u" "['bytes_copied']")
    note "replica $n resync: $(last_rebuild "$u"); full=$full"
    [[ $full == False ]] || die "replica $n was resynchronised in full: the bitmap was not used"
    ((bytes * 100 <= NX_SIZE * 3)) || die "replica $n: $bytes bytes copied (> 3% of $NX_SIZE)"
    ((bytes > copied)) && copied=$bytes
done
pct=$(awk -v c="$copied" -v t="$NX_SIZE" 'BEGIN { printf "%.2f", 100 * c / t }')
note "resync after the crash: at most $((copied >> 20)) MiB per replica = $pct% of the volume" \
    "($(since "$t") s from the restart to all children online)"
[[ $(nexus_state) == online ]] || die "nexus not online after the resync: $(nexus_state)"

touch "$work/ctl/reconnect" "$work/ctl/stop"
wait_guest_says "durable regions verified" 120
note "guest: $(tr -d '\r' <"$work/guest.log" | sed -n "s/^$NAME: load ended (\(.*\))\$/\1/p");" \
    "reconnected, and" \
    "the 8 durable regions verify after the crash"
finish_guest
compare_replicas
result=PASS

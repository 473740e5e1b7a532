#!/bin/sh
# Guest half of hack/tests/linux-host.sh: the Linux 6.1 host against shoald (busybox ash).
set -eu
. /guest/lib.sh

H=$GUEST_HOST_IP
NQN=nqn.2016-06.io.shoal:vol0
NQN512=nqn.2016-06.io.shoal:vol512

# trigger METHOD?QUERY: call shoald's JSON-RPC through hack/tests/rpc-trigger.py on the host.
trigger() {
    out=$(timeout 20 wget -q -O - "http://$H:$TRIGGER_PORT/rpc/$1") || fail "trigger $1"
    echo "$out"
    echo "$out" | grep -q '"error"' && fail "RPC $1 failed: $out"
    return 0
}

# zeroes DEV BS COUNT SKIP: true when COUNT blocks of BS bytes from block SKIP read as zeroes.
zeroes() {
    n=$(dd if="$1" bs="$2" count="$3" skip="$4" iflag=direct 2>/dev/null | tr -d '\000' | wc -c)
    [ "$n" -eq 0 ]
}

# fill DEV BS COUNT SEEK: write random data.
fill() {
    dd if=/dev/urandom of="$1" bs="$2" count="$3" seek="$4" oflag=direct 2>/dev/null
    ! zeroes "$1" "$2" "$3" "$4" || fail "random data read back as zeroes"
}

connect() { # connect NQN [option...]: sets DEV
    n=$1
    shift
    step "nvme connect $n $*"
    nvme connect -t tcp -a "$H" -s 4420 -n "$n" "$@" || fail "connect $n"
    DEV=$(nvme_wait_dev "$n") || fail "no block device for $n"
    step "namespace 1 of $n is $DEV"
}

disconnect() {
    out=$(nvme disconnect -n "$1")
    echo "$out"
    echo "$out" | grep -q "disconnected 1 controller" || fail "disconnect $1: $out"
    ! nvme_dev "$1" >/dev/null || fail "$1 still has a block device after disconnect"
}

step "discover on the dedicated discovery port 8009"
nvme discover -t tcp -a "$H" -s 8009 | tee /tmp/d8009
grep -q "subnqn: *$NQN\$" /tmp/d8009 || fail "discovery log lacks $NQN"
grep -q "subnqn: *$NQN512\$" /tmp/d8009 || fail "discovery log lacks $NQN512"
grep -q "trsvcid: *4420" /tmp/d8009 || fail "discovery log lacks port 4420"
step "discover on the I/O port 4420"
nvme discover -t tcp -a "$H" -s 4420 | grep -q "subnqn: *$NQN\$" || fail "discovery on 4420"

connect "$NQN"
nvme list
nvme list | grep -q "^$DEV " || fail "nvme list does not show $DEV"
nvme id-ctrl "$DEV" | tee /tmp/idctrl | grep -E '^(vid|sn|mn|fr|mdts|cntlid|ver|oncs|vwc|sgls|ioccsz|iorcsz|icdoff|subnqn) '
grep -q "^subnqn *: $NQN\$" /tmp/idctrl || fail "id-ctrl subnqn"
nvme id-ns "$DEV" | tee /tmp/idns | grep -E '^(nsze|ncap|nuse|nlbaf|flbas|lbaf)'
grep -q "lbads:12.*in use" /tmp/idns || fail "namespace 1 should have 4096-byte blocks"
dmesg | grep -E "creating [0-9]+ I/O queues|mapped [0-9]+/" || true
q=$(dmesg | sed -n 's/.*creating \([0-9]*\) I\/O queues.*/\1/p' | tail -n1)
[ "${q:-0}" -ge 2 ] || fail "expected at least 2 I/O queues, got '${q:-none}'"

for engine in libaio io_uring; do
    step "fio randwrite + verify, $engine, 2 jobs, iodepth 16"
    fio_verify "$DEV" "$engine" 16M || fail "fio verify with $engine"
done

step "write zeroes then read zeroes"
fill "$DEV" 4096 8 0
nvme write-zeroes "$DEV" -n 1 -s 0 -c 7 || fail "write-zeroes"
zeroes "$DEV" 4096 8 0 || fail "blocks 0-7 are not zero after Write Zeroes"
step "deallocate (nvme dsm) then read zeroes"
fill "$DEV" 4096 8 16
nvme dsm "$DEV" -n 1 -d -s 16 -b 8 || fail "dsm"
zeroes "$DEV" 4096 8 16 || fail "blocks 16-23 are not zero after deallocate"
step "blkdiscard (the kernel's discard path) then read zeroes"
fill "$DEV" 4096 16 64
blkdiscard -o $((64 * 4096)) -l $((16 * 4096)) "$DEV" || fail "blkdiscard"
zeroes "$DEV" 4096 16 64 || fail "blocks 64-79 are not zero after blkdiscard"

step "namespace 2 added while connected"
trigger "nvmf_subsystem_add_ns?nqn=$NQN&namespace.bdev_name=Malloc2&namespace.nsid=2"
DEV2=$(nvme_wait_dev "$NQN" 2 20) || fail "the host did not see namespace 2 appear"
step "namespace 2 is $DEV2"
fill "$DEV2" 4096 4 0
step "namespace 2 removed while connected"
trigger "nvmf_subsystem_remove_ns?nqn=$NQN&nsid=2"
n=0
while nvme_dev "$NQN" 2 >/dev/null; do
    n=$((n + 1))
    [ "$n" -lt 200 ] || fail "namespace 2 still present 20 s after removal"
    sleep 0.1
done
step "namespace 2 gone; namespace 1 still works"
fill "$DEV" 4096 1 100
disconnect "$NQN"

connect "$NQN" --hdr-digest --data-digest
step "fio verify with header and data digests"
fio_verify "$DEV" libaio 8M || fail "fio verify with digests"
disconnect "$NQN"

connect "$NQN512"
nvme id-ns "$DEV" | grep -q "lbads:9.*in use" || fail "vol512 should have 512-byte blocks"
step "fio verify on the 512-byte namespace, 512-byte and 4 KiB I/O"
fio_verify "$DEV" io_uring 8M --bs=512 || fail "fio 512-byte verify"
fio_verify "$DEV" libaio 8M || fail "fio 4 KiB verify on 512-byte blocks"
disconnect "$NQN512"
step "all Linux-host checks passed"

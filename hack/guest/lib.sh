#!/bin/sh
# Helpers for guest scripts (busybox ash). run.sh puts this file at /guest/lib.sh in every guest;
# a script uses it with `. /guest/lib.sh`. Functions return non-zero on failure (pair them with
# `set -e` or `|| fail ...`); none of them exits the script except fail.

# step MSG...: a progress line stamped with the guest's uptime.
step() { echo "step: [$(cut -d' ' -f1 /proc/uptime) s] $*"; }

# fail MSG...: print MSG and the end of the kernel log, exit 1.
fail() {
    echo "FAIL: $*"
    dmesg | tail -n 30
    exit 1
}

# nvme_dev NQN [NSID]: print the block device of namespace NSID (default 1) of the connected
# subsystem NQN. With native multipath (Debian's default) that is the head node /dev/nvmeXnY,
# X being the subsystem instance, not necessarily the controller's: so look it up by NQN.
nvme_dev() {
    _s=""
    for _s in /sys/class/nvme-subsystem/nvme-subsys*; do
        [ -e "$_s/subsysnqn" ] || continue
        [ "$(cat "$_s/subsysnqn")" = "$1" ] || continue
        for _b in "$_s"/nvme*n*; do
            if [ -e "$_b/nsid" ] && [ "$(cat "$_b/nsid")" = "${2:-1}" ]; then
                echo "/dev/${_b##*/}"
                return 0
            fi
        done
    done
    return 1
}

# nvme_wait_dev NQN [NSID] [SECONDS]: wait (default 10 s) until nvme_dev finds a block device
# (udev-less: the node comes from devtmpfs), then print it.
nvme_wait_dev() {
    _n=0
    while [ "$_n" -lt $((${3:-10} * 10)) ]; do
        if _d=$(nvme_dev "$1" "${2:-1}") && [ -b "$_d" ]; then
            echo "$_d"
            return 0
        fi
        sleep 0.1
        _n=$((_n + 1))
    done
    return 1
}

# fio_verify DEV ENGINE SIZE [FIO-OPTION...]: random 4 KiB writes then a read-back verify
# (crc32c) with 2 jobs at iodepth 16, each job on its own SIZE region of DEV (offset_increment,
# so their verify headers never overlap: DEV needs 2 x SIZE). Non-zero on any error or mismatch.
fio_verify() {
    _dev=$1 _eng=$2 _size=$3
    shift 3
    fio --name="verify-$_eng" --filename="$_dev" --ioengine="$_eng" --direct=1 \
        --rw=randwrite --bs=4k --iodepth=16 --numjobs=2 --size="$_size" \
        --offset_increment="$_size" --verify=crc32c --do_verify=1 --verify_fatal=1 \
        --group_reporting --output-format=terse --terse-version=3 "$@" >/tmp/fio.terse || {
        cat /tmp/fio.terse
        return 1
    }
    # terse v3 fields: 3 job name, 5 error, 6 read KiB (the verify pass), 47 written KiB.
    awk -F';' 'NF > 100 { printf "fio %s: err=%s write_kib=%s verify_read_kib=%s\n", $3, $5, $47, $6 }
        NF > 100 && $5 != 0 { bad = 1 } END { exit bad }' /tmp/fio.terse
}

# nvmet_file_target NQN FILE SIZE ADDR PORT: export FILE (created with SIZE, e.g. 64M) as
# namespace 1 of subsystem NQN through Linux's own NVMe/TCP target (nvmet, via configfs), on
# ADDR:PORT, open to any host. A reference to compare a target's behaviour with.
nvmet_file_target() {
    modprobe nvmet && modprobe nvmet-tcp || return 1
    _c=/sys/kernel/config/nvmet
    truncate -s "$3" "$2" || return 1
    mkdir "$_c/subsystems/$1" || return 1
    echo 1 >"$_c/subsystems/$1/attr_allow_any_host"
    mkdir "$_c/subsystems/$1/namespaces/1"
    echo "$2" >"$_c/subsystems/$1/namespaces/1/device_path"
    # nvmet opens the file O_DIRECT unless buffered_io is set, and tmpfs has no O_DIRECT in 6.1.
    echo 1 >"$_c/subsystems/$1/namespaces/1/buffered_io"
    echo 1 >"$_c/subsystems/$1/namespaces/1/enable" || return 1
    # One port per ADDR:PORT; reuse it when another subsystem already created it.
    _p=$_c/ports/$5
    if [ ! -d "$_p" ]; then
        mkdir "$_p" || return 1
        echo tcp >"$_p/addr_trtype"
        echo ipv4 >"$_p/addr_adrfam"
        echo "$4" >"$_p/addr_traddr"
        echo "$5" >"$_p/addr_trsvcid"
    fi
    ln -s "$_c/subsystems/$1" "$_p/subsystems/$1"
}

# nvmet_file_target_remove NQN PORT: undo nvmet_file_target (the port goes when it is empty).
nvmet_file_target_remove() {
    _c=/sys/kernel/config/nvmet
    rm -f "$_c/ports/$2/subsystems/$1"
    [ -n "$(ls "$_c/ports/$2/subsystems")" ] || rmdir "$_c/ports/$2"
    echo 0 >"$_c/subsystems/$1/namespaces/1/enable"
    rmdir "$_c/subsystems/$1/namespaces/1" && rmdir "$_c/subsystems/$1"
}

#!/bin/sh
# PID 1 of the test guest (busybox ash; installed as /init by build.sh).
#
# Mounts the pseudo filesystems, loads the NVMe/TCP host modules, brings up the network, writes
# nvme-cli's host identity, runs /guest/script.sh (appended to the initramfs by run.sh), prints
# "GUEST-EXIT=<rc>" on the console and powers off. run.sh reads that marker for the exit code.
#
# Settings come from /guest/env (written by run.sh, sourced here; also visible to the script):
#   GUEST_NET       static (default: 10.0.2.15/24, gateway 10.0.2.2 = host's 127.0.0.1),
#                   dhcp (busybox udhcpc against QEMU's user-mode DHCP) or none (loopback only)
#   GUEST_HOSTNQN   host NQN written to /etc/nvme/hostnqn
#   GUEST_HOSTID    host ID written to /etc/nvme/hostid (the UUID inside GUEST_HOSTNQN)
#   GUEST_MODULES   modules loaded before the script (default below; modprobe adds dependencies)
#   GUEST_LOGLEVEL  console log level while the script runs: messages of a priority below it
#                   reach the console (default 7: includes nvme's "new ctrl", "creating N I/O
#                   queues" info lines; 5 keeps only warnings and errors)
# No "set -e": PID 1 must always reach the marker and the power-off, whatever fails on the way.

PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH HOME=/root TERM=dumb

say() { echo "guest: $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

finish() {
    # Silence the kernel so that no printk lands in the middle of the marker line.
    echo 1 >/proc/sys/kernel/printk
    sync
    echo "GUEST-EXIT=$1"
    poweroff -f
    echo o >/proc/sysrq-trigger # poweroff should not return; if it does, force it.
    sleep 5
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr

# Defaults first, then run.sh's settings and the user's variables.
GUEST_NET=static
GUEST_HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:5ba1e0b1-0000-4000-8000-000000000001
GUEST_HOSTID=5ba1e0b1-0000-4000-8000-000000000001
GUEST_MODULES="virtio_pci virtio_net crc32c_intel crc32c_generic nvme_tcp configfs"
GUEST_LOGLEVEL=7
set -- # The kernel passes unknown command-line words to init as arguments: drop them.
if [ -f /guest/env ]; then
    # shellcheck source=/dev/null
    . /guest/env
fi
export GUEST_NET GUEST_HOSTNQN GUEST_HOSTID GUEST_MODULES GUEST_LOGLEVEL

say "kernel $(uname -r) up at $(uptime_s) s, $(nproc) CPUs"

for m in $GUEST_MODULES; do
    # crc32c_intel needs SSE4.2 (present with -cpu max); failing modules are reported, not fatal.
    modprobe "$m" || say "warning: modprobe $m failed"
done
if grep -q configfs /proc/filesystems; then
    mount -t configfs configfs /sys/kernel/config
fi

ip link set lo up
case "$GUEST_NET" in
    static | dhcp)
        # virtio_net registers eth0 asynchronously after modprobe returns: wait for it.
        n=0
        while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 50 ]; do
            sleep 0.1
            n=$((n + 1))
        done
        if [ ! -e /sys/class/net/eth0 ]; then
            say "error: no eth0"
        elif [ "$GUEST_NET" = static ]; then
            ip link set eth0 up
            ip addr add 10.0.2.15/24 dev eth0
            ip route add default via 10.0.2.2
        else
            ip link set eth0 up
            # busybox ships no default udhcpc script: this one applies the lease (ip, mask, router).
            cat >/run/udhcpc.sh <<'EOF_DHCP'
#!/bin/sh
case "$1" in
    bound | renew)
        ip addr add "$ip/${mask:-24}" dev "$interface"
        [ -n "$router" ] && ip route add default via "${router%% *}"
        ;;
esac
exit 0
EOF_DHCP
            chmod 755 /run/udhcpc.sh
            udhcpc -i eth0 -n -q -t 5 -s /run/udhcpc.sh >/dev/null 2>&1 || say "warning: udhcpc failed"
        fi
        ;;
    none) ;;
    *) say "warning: unknown GUEST_NET=$GUEST_NET" ;;
esac

mkdir -p /etc/nvme
echo "$GUEST_HOSTNQN" >/etc/nvme/hostnqn
echo "$GUEST_HOSTID" >/etc/nvme/hostid

echo "$GUEST_LOGLEVEL" >/proc/sys/kernel/printk
say "ready at $(uptime_s) s; running script"

if [ -f /guest/script.sh ]; then
    cd /guest || finish 125
    if [ -f /guest/args ]; then
        # shellcheck source=/dev/null
        . /guest/args # set -- 'arg1' 'arg2' ...
    fi
    /bin/sh /guest/script.sh "$@" </dev/null
    rc=$?
else
    say "error: no /guest/script.sh (boot the initramfs with run.sh)"
    rc=125
fi
say "script exited $rc at $(uptime_s) s"
finish "$rc"

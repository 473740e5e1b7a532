#!/usr/bin/env python3
"""Regenerates tests/rpc_fixtures.json: the exact requests SPDK's rpc.py sends.

Runs `rpc.py --dry-run` (module `spdk.spdk_rpc` of the `spdk` package on PyPI, which is
SPDK's own python/ directory) for each command line below and records the request it prints.

    pip download spdk==26.9 --no-deps -d /tmp/spdk && unzip /tmp/spdk/*.whl -d /tmp/spdk/x
    PYTHONPATH=/tmp/spdk/x python3 tests/rpc_fixtures_gen.py > tests/rpc_fixtures.json
"""
import json
import shlex
import subprocess
import sys

UUID = "ceccf520-691e-4b46-9546-34af789907c5"
NQN = "nqn.2016-06.io.spdk:cnode1"
HOST = "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"

COMMANDS = [
    "rpc_get_methods",
    "rpc_get_methods --current --include-aliases",
    "spdk_get_version",
    "framework_start_init",
    "framework_wait_init",
    "framework_get_subsystems",
    "framework_get_config bdev",
    "spdk_kill_instance SIGTERM",
    "bdev_malloc_create -b Malloc0 64 512",
    f"bdev_malloc_create 32 4096 -u {UUID} -p 4096 -o 8",
    "bdev_malloc_delete Malloc0",
    "bdev_null_create Null0 64 512",
    f"bdev_null_create Null1 128 4096 -u {UUID} -p 4096",
    "bdev_null_delete Null0",
    "bdev_uring_create /dev/nullb0 Uring0",
    f"bdev_uring_create /var/tmp/disk.img Uring1 4096 -u {UUID}",
    "bdev_uring_delete Uring0",
    "bdev_get_bdevs",
    "bdev_get_bdevs -b Malloc0 -t 1000",
    "bdev_get_iostat",
    "bdev_get_iostat -c --reset-mode maxmin --names Malloc0",
    "bdev_get_iostat --names Malloc0,Null0 --reset-mode error",
    f"bdev_error_create Malloc0 --uuid {UUID}",
    "bdev_error_create Malloc0",
    "bdev_error_delete EE_Malloc0",
    "bdev_error_inject_error EE_Malloc0 read failure -n 3",
    "bdev_error_inject_error EE_Malloc0 all corrupt_data -n 1 -q 4 -o 512 -v 255",
    "bdev_error_inject_error EE_Malloc0 clear failure",
    "bdev_delay_create -b Malloc0 -d Delay0 -r 100 -t 1000 -w 200 -n 2000",
    f"bdev_delay_create -b Malloc0 -d Delay1 -r 0 -t 0 -w 0 -n 0 -u {UUID}",
    "bdev_delay_delete Delay0",
    "bdev_delay_update_latency Delay0 p99_write 5000",
    "nvmf_create_transport -t TCP",
    "nvmf_create_transport -t TCP -q 128 -m 7 -c 4096 -i 131072 -a 128 -z -o -y 0 -x 1 -e 32"
    " --iobuf-small-cache-size 32 --ack-timeout 0 --kas 10 --min-kato 1000",
    "nvmf_get_transports",
    "nvmf_get_transports --trtype TCP",
    f"nvmf_create_subsystem {NQN} -a -s SPDK00000000000001 -d 'Shoal Controller' -m 32 -i 1 -I 65519",
    f"nvmf_create_subsystem {NQN}",
    f"nvmf_delete_subsystem {NQN}",
    "nvmf_get_subsystems",
    f"nvmf_get_subsystems {NQN}",
    f"nvmf_subsystem_add_ns {NQN} Malloc0",
    f"nvmf_subsystem_add_ns {NQN} Malloc0 -n 1 -g 0123456789ABCDEF0123456789abcdef"
    f" -e ABCDEF0123456789 -u {UUID}",
    f"nvmf_subsystem_remove_ns {NQN} 1",
    f"nvmf_subsystem_add_listener {NQN} -t tcp -a 127.0.0.1 -s 4420 -f ipv4",
    "nvmf_subsystem_add_listener discovery -t tcp -a 127.0.0.1 -s 8009",
    f"nvmf_subsystem_remove_listener {NQN} -t tcp -a 127.0.0.1 -s 4420 -f ipv4",
    f"nvmf_subsystem_add_host {NQN} {HOST}",
    f"nvmf_subsystem_remove_host {NQN} {HOST}",
    f"nvmf_subsystem_allow_any_host {NQN} --allow-any-host",
    f"nvmf_subsystem_allow_any_host {NQN} --no-allow-any-host",
    f"nvmf_subsystem_get_controllers {NQN}",
    f"nvmf_subsystem_get_qpairs {NQN}",
    f"nvmf_subsystem_get_listeners {NQN}",
    "nvmf_get_stats",
    "nvmf_set_config --discovery-filter match_any",
    "nvmf_set_max_subsystems -x 1024",
    "nvmf_set_crdt -t1 1 -t2 2 -t3 3",
    "bdev_set_options -p 65535 -c 256",
    "bdev_wait_for_examine",
    "sock_impl_set_options -i posix --no-recv-pipe",
    "iobuf_set_options --small-pool-count 8192",
]


def main():
    out = []
    for cmd in COMMANDS:
        args = shlex.split(cmd)
        proc = subprocess.run(
            [sys.executable, "-m", "spdk.spdk_rpc", "--dry-run", *args],
            capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"rpc.py failed for {cmd!r}: {proc.stderr}")
        text = proc.stdout
        prefix = "Request:\n"
        if not text.startswith(prefix):
            raise SystemExit(f"unexpected output for {cmd!r}: {text!r}")
        out.append({"rpc_py": cmd, "request": json.loads(text[len(prefix):])})
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

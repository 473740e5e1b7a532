#!/usr/bin/env bash
# Installs everything Shoal's tests need on a fresh Debian 12 machine (run as root).
# Idempotent: what is already there is left alone.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# etcd-server: the control plane's store (its tests start their own etcd on loopback);
# protobuf-compiler, libprotobuf-dev (protobuf's own .proto files): the etcd-client crate
# generates its gRPC code with protoc at build time.
# xfsprogs: the CSI node plugin's xfs (the guest image copies mkfs.xfs and xfs_growfs).
pkgs=(fio qemu-system-x86 busybox-static nvme-cli cpio kmod iproute2 python3 procps
    etcd-server protobuf-compiler libprotobuf-dev xfsprogs)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# SPDK's own JSON-RPC client (scripts/rpc.py's library): the RPC tests drive shoald with it.
if ! python3 -c 'import spdk' 2>/dev/null; then
    python3 -m pip install --quiet 'spdk==26.9'
fi
# The deploy/ manifests are validated offline against Kubernetes' API schemas.
if ! command -v kubernetes-validate >/dev/null 2>&1; then
    python3 -m pip install --quiet 'kubernetes-validate==1.37.0'
fi
if [[ -z "${SKIP_FUZZ:-}" ]] && ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo +nightly install --locked cargo-fuzz
fi

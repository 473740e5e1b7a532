#!/usr/bin/env bash
# Runs every check and test of Shoal: the one command README.md gives.
#
#   hack/test.sh            format, lint, unit + loopback tests, fuzz smoke, Linux-guest tests
#   SKIP_GUEST=1 hack/test.sh   the same without the QEMU guest (for quick local runs)
#   SKIP_FUZZ=1 hack/test.sh    without the cargo-fuzz smoke runs
#
# Needs what hack/install-deps.sh installs (CI runs that first).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s ===\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

if [[ -n "${CI:-}" ]]; then
    # In CI the tests that drive shoald with SPDK's rpc.py must run, not skip.
    python3 -c 'import spdk.spdk_rpc' || { echo "SPDK's rpc.py library is missing (hack/install-deps.sh)"; exit 1; }
fi

# The control plane's tests start their own etcd (Debian's etcd-server).
command -v etcd >/dev/null || { echo "etcd is missing (hack/install-deps.sh installs etcd-server)"; exit 1; }

step "deploy/ manifests against the Kubernetes API schemas"
hack/validate-deploy.sh

step "cargo test"
# A log of its own: runs side by side (several worktrees) must not count each other's results.
test_log=$(mktemp /tmp/shoal-cargo-test.XXXXXX.log)
cargo test --workspace 2>&1 | tee "$test_log"
grep -E "^test result:" "$test_log" | awk '{p+=$4; f+=$6} END {print "unit/loopback tests:", p, "passed,", f, "failed"}'

if [[ -z "${SKIP_FUZZ:-}" && -d nvmf/fuzz ]]; then
    step "fuzz targets: build and run briefly"
    hack/fuzz-smoke.sh
fi

if [[ -z "${SKIP_GUEST:-}" ]]; then
    step "guest harness self-test (the Linux target inside the guest)"
    hack/guest/selftest.sh -q
    for t in hack/tests/test-*.sh; do
        [[ -e "$t" ]] || continue
        step "guest/system test: $t"
        "$t"
    done
fi
step "all tests passed"

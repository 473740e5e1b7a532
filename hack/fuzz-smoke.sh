#!/usr/bin/env bash
# Builds the cargo-fuzz targets and runs each briefly from its seeds (CI smoke run).
#   hack/fuzz-smoke.sh [SECONDS-PER-TARGET]   (default 20)
# Needs the nightly toolchain and cargo-fuzz (hack/install-deps.sh installs cargo-fuzz).
set -euo pipefail
cd "$(dirname "$0")/../nvmf/fuzz"
secs=${1:-20}
cargo +nightly fuzz build
for t in deframe command_parse; do
    corpus=$(mktemp -d /tmp/shoal-fuzz-$t.XXXXXX)
    seeds=()
    [[ -d seeds/$t ]] && seeds=(seeds/$t)
    echo "fuzz: $t for ${secs}s"
    cargo +nightly fuzz run "$t" "$corpus" "${seeds[@]}" -- -max_total_time="$secs" 2>&1 | tail -n 3
    rm -rf "$corpus"
done
cd ../../lvol/fuzz
cargo +nightly fuzz build
for t in metadata; do
    corpus=$(mktemp -d /tmp/shoal-fuzz-$t.XXXXXX)
    echo "fuzz: $t for ${secs}s"
    cargo +nightly fuzz run "$t" "$corpus" -- -max_total_time="$secs" 2>&1 | tail -n 3
    rm -rf "$corpus"
done
echo "fuzz: no crash"

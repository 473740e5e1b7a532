# Shared by the benchmarks that run shoald and SPDK's nvmf_tgt in turn (hack/bench-vs-spdk.sh,
# hack/bench-lvol.sh). Source it after setting: port, nqn, work (a scratch folder), bin (Shoal's
# release binaries), cores (the targets' core mask), secs (seconds per run), extra (an array of
# load-generator arguments), SPDK_DIR; and define log(). Targets read $work/shoald.json and
# $work/spdk.json. The load generator runs on core 1.
# shellcheck shell=bash
pid=

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

start() { # shoal|spdk
    if listening; then
        log "something already listens on 127.0.0.1:$port: set BENCH_PORT"
        exit 1
    fi
    if [[ $1 == shoal ]]; then
        "$bin/shoald" -m "$cores" -c "$work/shoald.json" -r "$work/rpc.sock" --log warn \
            >"$work/target.log" 2>&1 &
    else
        "$SPDK_DIR/build/bin/nvmf_tgt" -m "$cores" -r "$work/spdk.sock" --json "$work/spdk.json" \
            >"$work/target.log" 2>&1 &
    fi
    pid=$!
    for _ in $(seq 300); do
        listening && break
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$work/target.log" >&2; exit 1; }
        sleep 0.1
    done
    listening || { log "$1 did not listen"; tail -n 20 "$work/target.log" >&2; exit 1; }
    sleep 0.5
}

stop() {
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
}

trid() { echo "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$port subnqn:$nqn ns:$1"; }

# perf GEN NSID ARGS...: prints "IOPS AVG_US" of one run with load generator GEN.
# PERF_SECS overrides secs for one run.
perf() {
    local gen=$1 ns=$2 line t=${PERF_SECS:-$secs}
    shift 2
    if [[ $gen == spdk ]]; then
        line=$("$SPDK_DIR/build/bin/spdk_nvme_perf" -r "$(trid "$ns")" -c 0x2 -t "$t" "$@" "${extra[@]}" \
            2>"$work/perf.err" | awk '/^Total/ {print $3, $5}') ||
            log "$gen perf exited with an error (I/O errors?): $(tail -n 3 "$work/perf.err")"
    else
        line=$("$bin/shoal-perf" -r "$(trid "$ns")" -c 0x2 -t "$t" --json "$@" "${extra[@]}" \
            2>"$work/perf.err" | python3 -c 'import json,sys; r=json.load(sys.stdin)["total"]["rates"]; print(r["iops"], r["avg_us"])')
    fi
    [[ -n $line ]] || { log "$gen perf failed: $(tail -n 3 "$work/perf.err")"; echo "0 0"; return; }
    echo "$line"
}


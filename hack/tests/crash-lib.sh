# shellcheck shell=bash
# Shared by the crash tests (hack/tests/test-crash-*.sh): work directory, logging, shoald nodes
# (start, SIGKILL, SIGTERM), JSON-RPC, the QEMU guest in the background, and the cleanup trap.
# Not a test itself (hack/test.sh runs test-*.sh only).
#
# The sourcing script sets NAME (its short name) first, and may set NODES (node numbers whose
# logs the failure report shows; default "1 2"). After sourcing: $work (a fresh directory under
# /var/tmp, removed on PASS unless KEEP=1; on FAIL the logs are kept and their tails printed),
# $bin (shoald and shoalctl: SHOAL_BIN_DIR, or target/release built here), and result=FAIL until
# the script sets result=PASS as its last step.
#
# A node N runs `shoald -m 0x1 -c $work/nN.json -r $work/nN.sock`, log appended to $work/nN.log.
# A guest started with start_guest has its console in $work/LABEL.log.

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
# shellcheck disable=SC2034 # used by the sourcing scripts
here=hack/tests
bin=${SHOAL_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
NODES=${NODES:-"1 2"}

work=$(mktemp -d "/var/tmp/shoal-$NAME.XXXXXX")
declare -A pid=()
guest_pid="" guest_label="" result=FAIL
summary=()
t0=$(date +%s.%N)

elapsed() { awk -v s="$t0" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }
log() { printf '%s: [%6.1fs] %s\n' "$NAME" "$(elapsed)" "$*" >&2; }
# note MSG: log MSG and keep it for the summary.
note() {
    log "$*"
    summary+=("[$(elapsed)s] $*")
}
plain() { sed 's/\x1b\[[0-9;]*m//g' "$@"; } # shoald's log without colours

# shellcheck disable=SC2317 # invoked by the EXIT trap
crash_cleanup() {
    local rc=$? n
    set +e
    if [[ -n $guest_pid ]]; then
        kill -TERM "$guest_pid" 2>/dev/null
        wait "$guest_pid" 2>/dev/null
    fi
    for n in "${!pid[@]}"; do
        kill -CONT "${pid[$n]}" 2>/dev/null
        kill -KILL "${pid[$n]}" 2>/dev/null
        wait "${pid[$n]}" 2>/dev/null
    done
    [[ $(type -t crash_cleanup_extra) == function ]] && crash_cleanup_extra
    if [[ $result == PASS && -z ${KEEP:-} ]]; then
        rm -rf "$work"
    else
        if [[ $result != PASS ]]; then
            for n in $NODES; do
                [[ -f $work/n$n.log ]] || continue
                printf '\n--- node%s log (last 25 lines, no backtrace frames) ---\n' "$n" >&2
                plain "$work/n$n.log" | grep -v '^ *at \|^ *[0-9]*: ' | tail -n 25 >&2
            done
            if [[ -n $guest_label && -f $work/$guest_label.log ]]; then
                printf '\n--- guest console %s (last 40 lines) ---\n' "$guest_label.log" >&2
                tail -n 40 "$work/$guest_label.log" >&2
            fi
        fi
        rm -f "$work"/*.img
        log "logs kept in $work"
    fi
    printf '\n=== %s summary ===\n' "$NAME" >&2
    for l in "${summary[@]}"; do printf '  %s\n' "$l" >&2; done
    log "$result ($(elapsed) s)"
    exit "$rc"
}
trap crash_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() {
    note "FAIL: $*"
    exit 1
}

# rand LO HI: a random integer in [LO, HI] from the test's generator (seeded by $RANDOM).
rand() { echo $((($1) + RANDOM % ((($2) - ($1)) + 1))); }
# seed64: a random 48-bit seed for bdev_pfail_cut.
seed64() { echo $(((RANDOM << 33) ^ (RANDOM << 18) ^ (RANDOM << 3) ^ (RANDOM & 7))); }

sock() { echo "$work/n$1.sock"; }
# rpc N METHOD [JSON]: one RPC call to node N (bounded), the result on stdout.
rpc() {
    local params=${3:-}
    [[ -n $params ]] || params='{}'
    timeout 70 "$bin/shoalctl" -s "$(sock "$1")" -t 65 rpc "$2" "$params"
}
# jsq EXPR: evaluate EXPR in Python with d = the JSON document on stdin.
jsq() { python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }

# pfail_cut N NAME KEEP SEED: bdev_pfail_cut of NAME on node N at the first moment its cache
# holds something (or after 3 s anyway), see pfail-cut.py; its JSON answer on stdout.
pfail_cut() {
    timeout 80 python3 "$here/pfail-cut.py" --socket "$(sock "$1")" --name "$2" --keep "$3" \
        --seed "$4" --wait 3 2>&1
}

# build: shoald and shoalctl (release) unless SHOAL_BIN_DIR is given, and the guest.
build() {
    if [[ -z ${SHOAL_BIN_DIR:-} ]]; then
        cargo build --release -q -p shoal-target --bin shoald --bin shoalctl
    fi
    hack/guest/build.sh
}

# port_free ADDR PORT: fail when something listens there already.
port_free() {
    if ss -Hltn "src $1:$2 or src 0.0.0.0:$2" | grep -q .; then
        die "$1:$2 is already in use (another target?); set the port variables"
    fi
}

# check_node N: fail when node N panicked, or died while it should run.
check_node() {
    local n=$1
    if grep -q 'panicked at' "$work/n$n.log" 2>/dev/null; then
        plain "$work/n$n.log" | grep -A1 'panicked at' | head -n 4 >&2
        die "node$n panicked (see above; full log in n$n.log)"
    fi
    if [[ -n ${pid[$n]:-} ]] && ! kill -0 "${pid[$n]}" 2>/dev/null; then
        die "node$n died"
    fi
}

# start_node N: start shoald N on one core with config nN.json; wait for its RPC socket.
start_node() {
    local n=$1 s
    s=$(sock "$n")
    rm -f "$s"
    echo "=== start $(date +%T.%N)" >>"$work/n$n.log"
    "$bin/shoald" -m 0x1 -c "$work/n$n.json" -r "$s" --log info >>"$work/n$n.log" 2>&1 &
    pid[$n]=$!
    for _ in $(seq 150); do
        [[ -S $s ]] && return 0
        kill -0 "${pid[$n]}" 2>/dev/null || break
        sleep 0.1
    done
    plain "$work/n$n.log" | tail -n 20 >&2
    die "node$n did not start"
}

# kill_node N: SIGKILL node N (a crash) and reap it.
kill_node() {
    local n=$1
    [[ -n ${pid[$n]:-} ]] || return 0
    kill -KILL "${pid[$n]}" 2>/dev/null || true
    wait "${pid[$n]}" 2>/dev/null || true
    unset "pid[$n]"
    echo "=== SIGKILL $(date +%T.%N)" >>"$work/n$n.log"
}

# stop_node N: SIGTERM, wait up to 30 s, expect exit status 0.
stop_node() {
    local n=$1 p=${pid[$1]} st=0
    kill -TERM "$p"
    for _ in $(seq 300); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$p" 2>/dev/null && die "node$n still running 30 s after SIGTERM"
    wait "$p" || st=$?
    unset "pid[$n]"
    [[ $st -eq 0 ]] || die "node$n exited with status $st after SIGTERM"
}

# start_guest LABEL TIMEOUT SCRIPT [run.sh OPTION...]: boot the guest in the background, console
# in $work/LABEL.log (run.sh's own output in $work/LABEL.out).
start_guest() {
    local label=$1 limit=$2 script=$3
    shift 3
    guest_label=$label
    hack/guest/run.sh --no-build -q -t "$limit" --loglevel 5 -l "$work/$label.log" "$@" \
        "$script" >"$work/$label.out" 2>&1 &
    guest_pid=$!
}
# console LABEL: the guest's console so far, without the serial line's carriage returns.
console() { tr -d '\r' 2>/dev/null <"$work/$1.log" || true; }
guest_alive() { [[ -n $guest_pid ]] && kill -0 "$guest_pid" 2>/dev/null; }
# wait_guest: wait for the guest started last; its exit status in guest_rc (124: timeout).
# (Not in a $(...) subshell: the guest is this shell's child.)
# shellcheck disable=SC2034 # guest_rc is read by the sourcing scripts
wait_guest() {
    guest_rc=0
    wait "$guest_pid" || guest_rc=$?
    guest_pid=""
}
# kill_guest: end the guest started last at once (qemu is killed: the machine crashes).
kill_guest() {
    [[ -n $guest_pid ]] || return 0
    kill -TERM "$guest_pid" 2>/dev/null || true
    wait "$guest_pid" 2>/dev/null || true
    guest_pid=""
}
# guest_fail LABEL: the guest's FAIL lines and the end of its console, then die.
guest_fail() {
    local label=$1 why=$2
    printf '\n--- guest console %s (last 40 lines) ---\n' "$label.log" >&2
    tail -n 40 "$work/$label.log" >&2
    cat "$work/$label.out" >&2
    die "$why"
}

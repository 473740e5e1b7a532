#!/usr/bin/env bash
# End-to-end check of the guest harness, without Shoal: boots the guest once with
# selftest-guest.sh, which
#   1. fetches a token from an HTTP server this script runs on the host's 127.0.0.1 (the guest
#      sees it as 10.0.2.2), proving the guest -> host-loopback path a Shoal test will use, and
#   2. runs Linux's own NVMe/TCP target (nvmet) inside the guest and drives it with the 6.1
#      host: nvme discover / connect / list, fio randwrite + verify (libaio and io_uring,
#      iodepth 16, 2 jobs), digests, disconnect.
# Usage: hack/guest/selftest.sh [run.sh options]   (e.g. -q, -t 600, -l FILE)
# Exit status: 0 on success; otherwise run.sh's (the guest script's, 124 timeout, 125 no verdict).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$here/build.sh" # before starting anything, so a first-time build is not timed as the test

# Debian's python3 (a dependency of fio, so build.sh installed it) serves the token.
py=/usr/bin/python3
[[ -x $py ]] || py=python3
web=$(mktemp -d "${TMPDIR:-/tmp}/shoal-guest-web.XXXXXX")
srv=""
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    if [[ -n $srv ]]; then kill "$srv" 2>/dev/null || true; fi
    rm -rf "$web"
}
trap cleanup EXIT

token="shoal-selftest-$$-$RANDOM"
echo "$token" >"$web/token.txt"
# Port 0: the kernel picks a free port; http.server prints it ("... port N ...").
"$py" -u -m http.server 0 --bind 127.0.0.1 --directory "$web" >"$web/server.log" 2>&1 &
srv=$!
port=""
for _ in $(seq 50); do
    port=$(sed -n 's/.* port \([0-9][0-9]*\).*/\1/p' "$web/server.log" | head -n1)
    [[ -n $port ]] && break
    sleep 0.1
done
[[ -n $port ]] || {
    echo "selftest: http.server did not start: $(cat "$web/server.log")" >&2
    exit 1
}
echo "selftest: host http.server on 127.0.0.1:$port" >&2

start=$(date +%s)
rc=0
"$here/run.sh" --no-build -t 300 "$@" \
    -e SELFTEST_HTTP_PORT="$port" -e SELFTEST_TOKEN="$token" \
    "$here/selftest-guest.sh" || rc=$?
echo "selftest: $([[ $rc -eq 0 ]] && echo PASS || echo "FAIL (exit $rc)") in $(($(date +%s) - start))s" >&2
exit "$rc"

#!/usr/bin/env bash
# The suite must not depend on an idle machine (issue 26): runs scripts/test
# twice while a CPU hog keeps both cores busy, and says how each run ended.
# The hogs are bounded (they stop after HOG_SECONDS, default 1 hour, and
# when this script exits).
#
# Usage: bench/under-load.sh [RUNS]   (default 2; needs what scripts/test needs)
set -euo pipefail
ROOT=$(cd "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${1:-2}
hogs=()
cleanup() { for p in "${hogs[@]}"; do kill "$p" 2>/dev/null || :; done; }
trap cleanup EXIT
for _ in $(seq "$(nproc)"); do
	timeout "${HOG_SECONDS:-3600}" sh -c 'while :; do :; done' &
	hogs+=($!)
done
status=0
for i in $(seq "$RUNS"); do
	start=$(date +%s)
	if "$ROOT/scripts/test" >"/tmp/under-load-$i.log" 2>&1; then
		echo "run $i under load: passed in $(($(date +%s) - start)) s"
	else
		echo "run $i under load: FAILED after $(($(date +%s) - start)) s (log: /tmp/under-load-$i.log)"
		status=1
	fi
done
exit "$status"

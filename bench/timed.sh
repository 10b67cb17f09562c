#!/usr/bin/env bash
# bench/timed.sh OUT CMD...   (helper of bench/run.sh; runs inside the netns)
# Runs CMD once under /usr/bin/time: stdout -> OUT.out, stderr -> OUT.err,
# rusage ("user_s sys_s maxrss_kib") -> OUT.rusage, and "wall_us exit_code"
# -> OUT.time, the wall time taken with bash's microsecond clock around the
# command only. Always exits 0: the caller reads OUT.time.
set -uo pipefail
export LC_ALL=C
out=$1
shift
b=$EPOCHREALTIME
/usr/bin/time -f '%U %S %M' -o "$out.rusage" "$@" >"$out.out" 2>"$out.err" </dev/null
rc=$?
e=$EPOCHREALTIME
echo "$((${e/./} - ${b/./})) $rc" >"$out.time"
exit 0

#!/usr/bin/env bash
# bench/timed.sh OUT CMD...   (helper of bench/run.sh; runs inside the netns)
# Runs CMD once under /usr/bin/time: stdout -> OUT.out, stderr -> OUT.err,
# rusage ("user_s sys_s maxrss_kib") -> OUT.rusage, and to OUT.time
# "wall_us exit_code machine_ticks fleet_ticks clk_tck": the wall time taken
# with bash's microsecond clock around the command only, and the CPU time the
# whole machine and the fleet's processes spent meanwhile (see bench/lib.sh;
# the end sample is taken 0.2 s after the command, once the hosts have reaped
# their sessions). Always exits 0: the caller reads OUT.time.
set -uo pipefail
export LC_ALL=C
out=$1
shift
# shellcheck source=bench/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
cpu_sample
m0=$MACHINE_T f0=$FLEET_T
b=$EPOCHREALTIME
/usr/bin/time -f '%U %S %M' -o "$out.rusage" "$@" >"$out.out" 2>"$out.err" </dev/null
rc=$?
e=$EPOCHREALTIME
sleep 0.2
cpu_sample
echo "$((${e/./} - ${b/./})) $rc $((MACHINE_T - m0)) $((FLEET_T - f0)) $(getconf CLK_TCK)" >"$out.time"
exit 0

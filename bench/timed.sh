#!/usr/bin/env bash
# bench/timed.sh OUT CMD...   (helper of bench/run.sh; runs inside the netns)
# Runs CMD once under /usr/bin/time: stdout -> OUT.out, stderr -> OUT.err,
# rusage ("user_s sys_s maxrss_kib") -> OUT.rusage, and to OUT.time
# "wall_us exit_code busy_ticks clk_tck": the wall time taken with bash's
# microsecond clock around the command only, and the CPU time the whole
# machine spent meanwhile (/proc/stat, all processes: sshds, the hosts'
# shells, the proxy, khard). Always exits 0: the caller reads OUT.time.
set -uo pipefail
export LC_ALL=C
out=$1
shift
read -r _ u n sy _ _ irq sirq st _ </proc/stat
busy0=$((u + n + sy + irq + sirq + st))
b=$EPOCHREALTIME
/usr/bin/time -f '%U %S %M' -o "$out.rusage" "$@" >"$out.out" 2>"$out.err" </dev/null
rc=$?
e=$EPOCHREALTIME
read -r _ u n sy _ _ irq sirq st _ </proc/stat
echo "$((${e/./} - ${b/./})) $rc $((u + n + sy + irq + sirq + st - busy0)) $(getconf CLK_TCK)" >"$out.time"
exit 0

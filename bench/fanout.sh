#!/usr/bin/env bash
# bench/fanout.sh OUT ADDRS_FILE KEY KNOWN_HOSTS   (helper of bench/run.sh; runs inside the netns)
# The baseline: OpenSSH logs in to every address of ADDRS_FILE (one a line)
# at once and runs `true`; waits for all. Writes "wall_us failures
# busy_ticks clk_tck" to OUT.time (busy: CPU time of the whole machine
# meanwhile, from /proc/stat) and the clients' stderr to OUT.err. Run it under /usr/bin/time to
# get the clients' total CPU time.
set -uo pipefail
export LC_ALL=C
out=$1 addrs_file=$2 key=$3 kh=$4
mapfile -t addrs <"$addrs_file"
: >"$out.err"
pids=()
read -r _ u n sy _ _ irq sirq st _ </proc/stat
busy0=$((u + n + sy + irq + sirq + st))
b=$EPOCHREALTIME
for a in "${addrs[@]}"; do
	ssh -i "$key" -o UserKnownHostsFile="$kh" -o StrictHostKeyChecking=yes -o BatchMode=yes \
		"root@$a" true </dev/null >/dev/null 2>>"$out.err" &
	pids+=($!)
done
fails=0
for p in "${pids[@]}"; do wait "$p" || fails=$((fails + 1)); done
e=$EPOCHREALTIME
read -r _ u n sy _ _ irq sirq st _ </proc/stat
echo "$((${e/./} - ${b/./})) $fails $((u + n + sy + irq + sirq + st - busy0)) $(getconf CLK_TCK)" >"$out.time"
exit 0

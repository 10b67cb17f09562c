#!/usr/bin/env bash
# bench/fanout.sh OUT ADDRS_FILE KEY KNOWN_HOSTS [SSH_OPTION...]   (helper of bench/run.sh; runs inside the netns)
# The baseline: OpenSSH logs in to every address of ADDRS_FILE (one a line)
# at once and runs `true`; waits for all. SSH_OPTIONs go before the others
# (bench/run.sh's step a2 passes -o KexAlgorithms=curve25519-sha256). Writes
# "wall_us failures machine_ticks fleet_ticks clk_tck" to OUT.time (as
# bench/timed.sh) and the clients' stderr to OUT.err. Run it under /usr/bin/time to
# get the clients' total CPU time.
set -uo pipefail
export LC_ALL=C
out=$1 addrs_file=$2 key=$3 kh=$4
shift 4
mapfile -t addrs <"$addrs_file"
: >"$out.err"
pids=()
# shellcheck source=bench/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
cpu_sample
m0=$MACHINE_T f0=$FLEET_T
b=$EPOCHREALTIME
for a in "${addrs[@]}"; do
	ssh "$@" -i "$key" -o UserKnownHostsFile="$kh" -o StrictHostKeyChecking=yes -o BatchMode=yes \
		"root@$a" true </dev/null >/dev/null 2>>"$out.err" &
	pids+=($!)
done
fails=0
for p in "${pids[@]}"; do wait "$p" || fails=$((fails + 1)); done
e=$EPOCHREALTIME
sleep 0.2
cpu_sample
echo "$((${e/./} - ${b/./})) $fails $((MACHINE_T - m0)) $((FLEET_T - f0)) $(getconf CLK_TCK)" >"$out.time"
exit 0

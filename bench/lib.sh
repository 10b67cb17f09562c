# shellcheck shell=bash disable=SC2034 # MACHINE_T, FLEET_T are for the caller
# CPU counters for bench/timed.sh and bench/fanout.sh (sourced; builtins only).

# cpu_sample: sets MACHINE_T to the ticks the whole machine was busy so far
# (/proc/stat: user nice system irq softirq steal, over all CPUs) and FLEET_T
# to the ticks of the processes listed in $BENCH_PIDS (one PID a line: each
# host's sshd, PID 1 of its PID namespace, which reaps every session, so its
# cutime/cstime hold the CPU of every finished session: sshd children, the
# shells and what they ran; plus the delay proxy). Ticks: getconf CLK_TCK.
cpu_sample() {
	local u n sy irq sirq st s pid f
	read -r _ u n sy _ _ irq sirq st _ </proc/stat
	MACHINE_T=$((u + n + sy + irq + sirq + st))
	FLEET_T=0
	[[ -n ${BENCH_PIDS-} && -r $BENCH_PIDS ]] || return 0
	while read -r pid; do
		read -r s 2>/dev/null <"/proc/$pid/stat" || continue
		s=${s##*) }
		read -ra f <<<"$s"
		# fields 14-17 of stat (utime stime cutime cstime) are 11-14 after "pid (comm) "
		FLEET_T=$((FLEET_T + f[11] + f[12] + f[13] + f[14]))
	done <"$BENCH_PIDS"
}

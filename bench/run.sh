#!/usr/bin/env bash
# khard fleet benchmark: khard against OpenSSH's own client on a fleet of
# simulated k3s nodes (tests/fleet/fleet.sh: a real sshd per node, in a
# network namespace). Needs root, python3, iproute2, util-linux,
# openssh-server/-client; installs GNU time (Debian package `time`) if missing.
#
# Usage:
#   bench/run.sh [--hosts N] [--runs R] [--forks F] [--rtt-ms MS] [--tasks-x2] [--keep]
#
#   --hosts N    fleet size: 1 server + N-1 agents, all k3s v1.30.6+k3s1 (default 20)
#   --runs R     repetitions; the table shows the median of each figure (default 3)
#   --forks F    passed to `khard apply --forks` (default: khard's own, 100)
#   --rtt-ms MS  put bench/delay_proxy.py in front of every host, adding MS/2 ms
#                each way; OpenSSH and khard both connect through it
#   --tasks-x2   also time a no-change apply of a playbook holding every task of
#                the cis_k3s role twice, against the same role copied once
#   --keep       keep the fleet folders (/dev/shm/khard-bench.*) after `down`
#   env BENCH_IDLE_WAIT  seconds to wait for an idle machine before each run (default 600)
#   env BENCH_BG_MAX, BENCH_RETRIES  a run during which other processes used more
#                than BENCH_BG_MAX cores (default 0.25) is done again, up to
#                BENCH_RETRIES times (default 3)
#   env BENCH_X2_PAIRS  c1/c2 pairs per run with --tasks-x2 (default 5)
#   env KHARD    the khard binary (default target/release/khard; never built here;
#                copied to the work folder first)
#
# Each run brings up a FRESH fleet (that is how the hosts are reset between
# runs), warms it with one unmeasured OpenSSH fan-out, then measures, in order:
#   a  fan-out: `ssh ... root@ADDR true` to all N hosts at once, wait for all
#   a2 the same with -o KexAlgorithms=curve25519-sha256, khard's key exchange
#      (OpenSSH 9.x defaults to sntrup761x25519, which costs more CPU on both
#      ends); informational: the targets are judged against a
#   b  khard apply on the fresh hosts                     (everything changes)
#   c  khard apply again                                  (nothing to change)
#   c1/c2 (--tasks-x2) khard apply of the role copy / the doubled copy, in
#      BENCH_X2_PAIRS alternating pairs (default 5; c1 c2, c2 c1, ...) whose
#      median is the run's figure: the effect sought (10 %) is smaller than
#      the spread of single runs
#   d  khard apply --check                                (no drift expected)
# then takes the fleet down. khard runs with --format json; its document gives
# the recap (ok/changed/failed/unreachable per host) and SSH channels per host.
# The results table (markdown) goes to stdout and to
# bench/results/<date>-N<hosts>[-f<forks>][-rtt<MS>][-x2].md; the raw outputs
# stay in the work folder printed at the end (/tmp/khard-bench.*).
set -euo pipefail
export LC_ALL=C

BENCH=$(cd "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname -- "$BENCH")
FLEET=$REPO/tests/fleet/fleet.sh
KHARD=${KHARD:-$REPO/target/release/khard}
VERSION=v1.30.6+k3s1

HOSTS=20 RUNS=3 FORKS='' RTT=0 X2=0 KEEP=0
usage() {
	sed -n '/^# Usage:/,/^#                copied to the work folder first/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}
die() {
	echo "bench: $*" >&2
	exit 1
}
CMDLINE="bench/run.sh $*"
while (($#)); do
	case $1 in
	--hosts | --runs | --forks | --rtt-ms)
		[[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || die "$1 needs a whole number"
		case $1 in --hosts) HOSTS=$2 ;; --runs) RUNS=$2 ;; --forks) FORKS=$2 ;; --rtt-ms) RTT=$2 ;; esac
		shift 2
		;;
	--tasks-x2) X2=1 && shift ;;
	--keep) KEEP=1 && shift ;;
	-h | --help) usage ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done
((HOSTS >= 1 && HOSTS <= 25000)) || die "--hosts must be 1..25000"
((RUNS >= 1)) || die "--runs must be at least 1"
[[ -z $FORKS ]] || ((FORKS >= 1)) || die "--forks must be at least 1"

[[ $(id -u) == 0 ]] || die "needs root (network namespaces, the fleet's sshds)"
[[ -x $KHARD ]] || die "no khard binary at $KHARD (build it with cargo build --release, or set KHARD)"
command -v python3 >/dev/null || die "needs python3"
if [[ ! -x /usr/bin/time ]]; then
	echo "bench: installing GNU time (Debian package time)" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >&2 ||
		{ apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >&2; } ||
		die "cannot install the package time"
fi

WORK=$(mktemp -d /tmp/khard-bench.XXXXXX)
# A private copy, so that a rebuild during the benchmark cannot mix binaries.
KHARD_SRC=$KHARD
cp "$KHARD_SRC" "$WORK/khard"
KHARD=$WORK/khard
META=$WORK/meta.tsv
MANIFEST=$WORK/manifest.tsv
: >"$META"
: >"$MANIFEST"
meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }

# ------------------------------------------------------------ cleanup
FLEET_DIR='' PROXY_PID='' FLEET_DIRS=()
stop_proxy() {
	if [[ -n $PROXY_PID ]]; then
		kill -TERM "$PROXY_PID" 2>/dev/null || :
		wait "$PROXY_PID" 2>/dev/null || :
		PROXY_PID=''
	fi
}
fleet_down() {
	stop_proxy
	if [[ -n $FLEET_DIR ]]; then
		"$FLEET" down "$FLEET_DIR" || echo "bench: fleet down $FLEET_DIR failed" >&2
		FLEET_DIR=''
	fi
}
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	fleet_down
	if ((!KEEP)); then
		for d in "${FLEET_DIRS[@]}"; do rm -rf -- "$d"; done
	fi
	rm -f -- "$WORK/khard" # 50+ MB; the report names the binary and its sha256
	((rc == 0)) || echo "bench: failed (exit $rc); raw outputs in $WORK" >&2
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------ machine
meta command "$CMDLINE"
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta hosts "$HOSTS"
meta runs "$RUNS"
meta forks "${FORKS:-100 (khard default)}"
meta rtt_ms "$RTT"
meta tasks_x2 "$X2"
meta nproc "$(nproc)"
meta cpu "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
meta mem "$(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
meta kernel "$(uname -sr)"
meta openssh "$(ssh -V 2>&1)"
meta khard "$("$KHARD" --version 2>&1) ($KHARD_SRC, built $(stat -c %y "$KHARD_SRC" | cut -d. -f1), sha256 $(sha256sum "$KHARD" | cut -c1-12))"
meta commit "$(git -C "$REPO" log -1 --format='%h %s' 2>/dev/null || echo unknown)$(git -C "$REPO" diff --quiet HEAD -- src roles playbooks 2>/dev/null || echo ' (+ uncommitted changes in src/roles/playbooks)')"
meta quickack "${FLEET_QUICKACK:-1}"

# ------------------------------------------------------------ --tasks-x2 playbooks
# x1: the role built into the binary, copied to disk; x2: the same with every
# task twice (bench/tasks_x2.py). Both load from disk, so c2/c1 compares like
# with like; c1 must also change nothing after the built-in playbook's apply.
# Made on every run: it also tells which commit's role the binary carries.
if role_copy=$(python3 "$BENCH/tasks_x2.py" "$KHARD" "$REPO" "$WORK" 2>&1); then
	meta role_copy "$role_copy"
else
	meta role_copy "unknown (${role_copy#bench: })"
	((!X2)) || die "cannot make the --tasks-x2 playbooks: $role_copy"
fi
if ((X2)); then
	echo "bench: --tasks-x2: role from $role_copy" >&2
	for v in x1 x2; do
		"$KHARD" apply -i "$REPO/inventories/example.yaml" --syntax-check "$WORK/$v/playbook.yaml" \
			>"$WORK/$v.syntax" 2>&1 || die "khard rejects the $v playbook: $(tail -n 3 "$WORK/$v.syntax")"
	done
fi

# ------------------------------------------------------------ one run
V=(-f '%U %S %M') # /usr/bin/time format: user s, sys s, max RSS KiB

# khard_step RUN STEP DESC ARGS...: one timed khard run inside the netns.
khard_step() {
	local r=$1 step=$2 desc=$3 p
	shift 3
	p=$RUN_DIR/$step
	ip netns exec "$NS" "$BENCH/timed.sh" "$p" \
		"$KHARD" "${VERB:-apply}" -i "$INV" --known-hosts "$KH" --format json ${FORKS:+--forks "$FORKS"} "$@"
	local wall rc
	read -r wall rc _ <"$p.time"
	printf '%s\t%s\t%s\n' "$r" "$step" "$p" >>"$MANIFEST"
	printf 'bench: run %d %-3s %-28s %8.3f s  exit %s\n' "$r" "$step" "$desc" "$(awk -v u="$wall" 'BEGIN{print u/1e6}')" "$rc" >&2
}

fanout_step() { # RUN STEP DESC [SSH_OPTION...]
	local r=$1 step=$2 desc=$3 p
	shift 3
	p=$RUN_DIR/$step
	ip netns exec "$NS" /usr/bin/time "${V[@]}" -o "$p.rusage" \
		"$BENCH/fanout.sh" "$p" "$ADDRS" "$KEY" "$KH" "$@"
	local wall fails
	read -r wall fails _ <"$p.time"
	[[ $step == warm ]] || printf '%s\t%s\t%s\n' "$r" "$step" "$p" >>"$MANIFEST"
	printf 'bench: run %d %-3s %-28s %8.3f s  %s of %s logins failed\n' "$r" "$step" \
		"$desc" "$(awk -v u="$wall" 'BEGIN{print u/1e6}')" "$fails" "$HOSTS" >&2
	if ((fails)); then
		echo "bench: OpenSSH fan-out failed on $fails host(s); first errors:" >&2
		head -n 5 "$p.err" >&2
		[[ $step != warm ]] || die "the fleet is not reachable; see $p.err"
	fi
}

# ssh_once ADDR: milliseconds of one `ssh root@ADDR true`.
ssh_once() { # ADDR KNOWN_HOSTS
	# shellcheck disable=SC2016 # expanded by the inner bash
	ip netns exec "$NS" bash -c 'b=$EPOCHREALTIME
		ssh -i "$1" -o UserKnownHostsFile="$2" -o StrictHostKeyChecking=yes -o BatchMode=yes "root@$3" true </dev/null || exit 1
		e=$EPOCHREALTIME; echo $(( (${e/./} - ${b/./}) / 1000 ))' _ "$KEY" "$2" "$1"
}
median_ssh() { # ADDR KNOWN_HOSTS: median ms of 7 sequential logins
	local v=()
	for _ in 1 2 3 4 5 6 7; do v+=("$(ssh_once "$1" "$2")"); done
	printf '%s\n' "${v[@]}" | sort -n | sed -n 4p
}

start_proxy() { # RUN: listens on 127.0.(K+100).x:22 for host 127.0.K.x:22; rewrites INV, KH, ADDRS
	local r=$1
	local map=$RUN_DIR/proxy.map ready=$RUN_DIR/proxy.ready
	awk -F'\t' '{ split($2, o, "."); printf "%s.%s.%d.%s:22 %s:22\n", o[1], o[2], o[3] + 100, o[4], $2 }' \
		"$FLEET_DIR/hosts.tsv" >"$map"
	ip netns exec "$NS" python3 "$BENCH/delay_proxy.py" serve --rtt --delay-ms "$RTT" \
		--map-file "$map" --ready-file "$ready" 2>"$RUN_DIR/proxy.log" &
	PROXY_PID=$!
	local n
	for ((n = 0; n < 200; n++)); do
		[[ -e $ready ]] && break
		kill -0 "$PROXY_PID" 2>/dev/null || die "delay proxy died: $(cat "$RUN_DIR/proxy.log")"
		sleep 0.05
	done
	[[ -e $ready ]] || die "delay proxy did not start"
	# The same inventory and known_hosts, with the proxy's addresses.
	local sedexpr
	sedexpr=$(awk '{ split($1, l, ":"); split($2, t, ":"); gsub(/\./, "\\.", t[1]); printf "s/\\b%s\\b/%s/;", t[1], l[1] }' "$map")
	sed -E "$sedexpr" "$FLEET_DIR/inventory.yaml" >"$RUN_DIR/inventory.yaml"
	sed -E "$sedexpr" "$FLEET_DIR/known_hosts" >"$RUN_DIR/known_hosts"
	cut -d' ' -f1 "$map" | cut -d: -f1 >"$RUN_DIR/addrs"
	INV=$RUN_DIR/inventory.yaml KH=$RUN_DIR/known_hosts ADDRS=$RUN_DIR/addrs
	if ! grep -q proxy_banner_direct "$META"; then
		# Does the proxy add the RTT asked for? Time to sshd's banner (one round
		# trip: the SYN, then the banner) and whole `ssh true` logins.
		local first direct proxied
		first=$(head -n1 "$map")
		direct=${first#* } proxied=${first%% *}
		meta proxy_selftest_ms "$(ip netns exec "$NS" python3 "$BENCH/delay_proxy.py" selftest --rtt --delay-ms "$RTT")"
		meta proxy_banner_direct_ms "$(ip netns exec "$NS" python3 "$BENCH/delay_proxy.py" rtt "$direct")"
		meta proxy_banner_proxied_ms "$(ip netns exec "$NS" python3 "$BENCH/delay_proxy.py" rtt "$proxied")"
		meta proxy_ssh_direct_ms "$(median_ssh "${direct%:22}" "$FLEET_DIR/known_hosts")"
		meta proxy_ssh_proxied_ms "$(median_ssh "${proxied%:22}" "$KH")"
		echo "bench: delay proxy check: echo round trip $(grep selftest "$META" | cut -f2 | sed 's/ / ms direct, /') ms proxied;" \
			"banner $(grep banner_direct "$META" | cut -f2) ms direct," \
			"$(grep banner_proxied "$META" | cut -f2) ms proxied; ssh true $(grep ssh_direct "$META" | cut -f2) ms direct," \
			"$(grep ssh_proxied "$META" | cut -f2) ms proxied" >&2
	fi
}

# Other work on the machine (a compiler, say) would be measured too: before
# each run wait until the machine is idle (under 0.25 cores busy over 1 s),
# at most BENCH_IDLE_WAIT seconds (default 600), then go on regardless; the
# load seen is reported.
busy_cores() {
	local u n sy irq sirq st a
	read -r _ u n sy _ _ irq sirq st _ </proc/stat
	a=$((u + n + sy + irq + sirq + st))
	sleep 1
	read -r _ u n sy _ _ irq sirq st _ </proc/stat
	awk -v d=$((u + n + sy + irq + sirq + st - a)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", d / hz }'
}
wait_idle() { # RUN
	local deadline=$((SECONDS + ${BENCH_IDLE_WAIT:-600})) c said=0
	while :; do
		c=$(busy_cores)
		awk -v c="$c" 'BEGIN { exit !(c < 0.25) }' && break
		if ((SECONDS >= deadline)); then
			echo "bench: the machine is still busy ($c cores); measuring anyway" >&2
			break
		fi
		((said)) || echo "bench: the machine is busy ($c cores used by other processes); waiting for it to be idle" >&2
		said=1
	done
	meta "busy_before_r$1" "$c"
}

# A run during which other processes used more than BENCH_BG_MAX cores
# (default 0.25) in any step is discarded and done again, at most
# BENCH_RETRIES times (default 3) per run; see bench/report.py --background.
START=$SECONDS
r=1 try=0 retries=0
while ((r <= RUNS)); do
	try=$((try + 1))
	RUN_DIR=$WORK/t$try
	mkdir -p "$RUN_DIR"
	NS=khb$$t$try
	FLEET_DIR=/dev/shm/khard-bench.$$.t$try
	FLEET_DIRS+=("$FLEET_DIR")
	hosts=(--count 1 --role server --version "$VERSION" --prefix server)
	((HOSTS == 1)) || hosts+=(--count $((HOSTS - 1)) --role agent --version "$VERSION" --prefix agent)
	b=$EPOCHREALTIME
	"$FLEET" up "$FLEET_DIR" --netns "$NS" "${hosts[@]}" >"$RUN_DIR/fleet-up.log" 2>&1 ||
		die "fleet up failed: $(tail -n 5 "$RUN_DIR/fleet-up.log")"
	e=$EPOCHREALTIME
	meta "fleet_up_s_r$r" "$(awk -v u=$((${e/./} - ${b/./})) 'BEGIN{printf "%.1f", u/1e6}')"
	echo "bench: run $r: fleet of $HOSTS up in $(grep "fleet_up_s_r$r" "$META" | tail -n1 | cut -f2) s ($FLEET_DIR, netns $NS)" >&2
	INV=$FLEET_DIR/inventory.yaml KH=$FLEET_DIR/known_hosts KEY=$FLEET_DIR/id_ed25519
	ADDRS=$RUN_DIR/addrs
	cut -f2 "$FLEET_DIR/hosts.tsv" >"$ADDRS"
	cat "$FLEET_DIR"/hosts/*/sshd.pid >"$RUN_DIR/pids"
	((RTT == 0)) || start_proxy "$r"
	[[ -z $PROXY_PID ]] || echo "$PROXY_PID" >>"$RUN_DIR/pids"
	export BENCH_PIDS=$RUN_DIR/pids
	wait_idle "$r"

	fanout_step "$r" warm "OpenSSH fan-out (warm-up)"
	fanout_step "$r" a "OpenSSH fan-out"
	fanout_step "$r" a2 "OpenSSH fan-out, curve25519" -o KexAlgorithms=curve25519-sha256
	khard_step "$r" b "apply (fresh)"
	khard_step "$r" c "apply (no change)"
	if ((X2)); then
		for ((k = 1; k <= ${BENCH_X2_PAIRS:-5}; k++)); do
			if ((k % 2)); then
				khard_step "$r" "c1.$k" "apply (no change, role copy)" "$WORK/x1/playbook.yaml"
				khard_step "$r" "c2.$k" "apply (no change, tasks x2)" "$WORK/x2/playbook.yaml"
			else
				khard_step "$r" "c2.$k" "apply (no change, tasks x2)" "$WORK/x2/playbook.yaml"
				khard_step "$r" "c1.$k" "apply (no change, role copy)" "$WORK/x1/playbook.yaml"
			fi
		done
	fi
	khard_step "$r" d "apply --check"
	VERB=report khard_step "$r" e "report (compliance)"
	fleet_down
	((KEEP)) || rm -rf -- "$FLEET_DIR"
	if bg=$(python3 "$BENCH/report.py" "$WORK" --background "$r" "${BENCH_BG_MAX:-0.25}"); then
		r=$((r + 1)) retries=0
	elif ((retries < ${BENCH_RETRIES:-3})); then
		retries=$((retries + 1))
		echo "bench: run $r discarded, other processes were busy: $bg; again" >&2
		meta "discarded_t$try" "run $r: $bg"
		grep -v "^$r	" "$MANIFEST" >"$MANIFEST.tmp" || :
		mv "$MANIFEST.tmp" "$MANIFEST"
	else
		echo "bench: run $r kept although other processes were busy ($bg): no retries left" >&2
		meta "kept_busy_r$r" "$bg"
		r=$((r + 1)) retries=0
	fi
done
meta total_s $((SECONDS - START))

# ------------------------------------------------------------ report
mkdir -p "$BENCH/results"
name=$(date +%Y-%m-%d)-N$HOSTS${FORKS:+-f$FORKS}
((RTT == 0)) || name+=-rtt$RTT
((X2 == 0)) || name+=-x2
OUT=$BENCH/results/$name.md
python3 "$BENCH/report.py" "$WORK" >"$OUT"
cat "$OUT"
echo "bench: results in ${OUT#"$REPO"/}; raw outputs in $WORK" >&2

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
#   env KHARD    the khard binary (default target/release/khard; never built here)
#
# Each run brings up a FRESH fleet (that is how the hosts are reset between
# runs), warms it with one unmeasured OpenSSH fan-out, then measures, in order:
#   a  fan-out: `ssh ... root@ADDR true` to all N hosts at once, wait for all
#   b  khard apply on the fresh hosts                     (everything changes)
#   c  khard apply again                                  (nothing to change)
#   c1/c2 (--tasks-x2) khard apply of the role copy / the doubled copy
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
	sed -n '/^# Usage:/,/^#   env KHARD/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
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
meta khard "$("$KHARD" --version 2>&1) ($KHARD, $(stat -c %y "$KHARD" | cut -d. -f1))"
meta commit "$(git -C "$REPO" log -1 --format='%h %s' 2>/dev/null || echo unknown)$(git -C "$REPO" diff --quiet HEAD -- src roles playbooks 2>/dev/null || echo ' (+ uncommitted changes in src/roles/playbooks)')"
meta quickack "${FLEET_QUICKACK:-1}"

# ------------------------------------------------------------ --tasks-x2 playbooks
# x1: the built-in playbook and role, copied to disk; x2: the same with every
# task of roles/cis_k3s/tasks/main.yaml twice, the copy named "... (copy 2)".
# Both load from disk, so c2/c1 compares like with like.
if ((X2)); then
	for v in x1 x2; do
		mkdir -p "$WORK/$v/roles"
		cp "$REPO/playbooks/cis-hardening.yaml" "$WORK/$v/playbook.yaml"
		cp -r "$REPO/roles/cis_k3s" "$WORK/$v/roles/"
	done
	python3 - "$REPO/roles/cis_k3s/tasks/main.yaml" "$WORK/x2/roles/cis_k3s/tasks/main.yaml" <<'PY'
import re, sys
src, dst = sys.argv[1:]
lines = open(src).read().splitlines(keepends=True)
head, blocks = [], []
for line in lines:
    if line.startswith("- "):
        blocks.append([line])
    elif blocks:
        blocks[-1].append(line)
    else:
        head.append(line)
out = list(head)
for i, b in enumerate(blocks):
    out += b
    copy = list(b)
    m = re.match(r"- name: (.*?)\s*$", copy[0])
    if m:
        copy[0] = f"- name: {m.group(1)} (copy 2)\n"
    else:
        copy[0] = "  " + copy[0][2:]
        copy.insert(0, f"- name: task {i + 1} (copy 2)\n")
    if not copy[-1].endswith("\n"):
        copy[-1] += "\n"
    out += copy
open(dst, "w").write("".join(out))
print(f"bench: --tasks-x2: {len(blocks)} tasks -> {2 * len(blocks)}", file=sys.stderr)
PY
fi

# ------------------------------------------------------------ one run
V=(-f '%U %S %M') # /usr/bin/time format: user s, sys s, max RSS KiB

# khard_step RUN STEP DESC ARGS...: one timed khard run inside the netns.
khard_step() {
	local r=$1 step=$2 desc=$3 p
	shift 3
	p=$WORK/r$r/$step
	ip netns exec "$NS" "$BENCH/timed.sh" "$p" \
		"$KHARD" apply -i "$INV" --known-hosts "$KH" --format json ${FORKS:+--forks "$FORKS"} "$@"
	local wall rc
	read -r wall rc <"$p.time"
	printf '%s\t%s\t%s\n' "$r" "$step" "$p" >>"$MANIFEST"
	printf 'bench: run %d %-3s %-28s %8.3f s  exit %s\n' "$r" "$step" "$desc" "$(awk -v u="$wall" 'BEGIN{print u/1e6}')" "$rc" >&2
}

fanout_step() { # RUN STEP DESC
	local r=$1 step=$2 desc=$3 p
	p=$WORK/r$r/$step
	ip netns exec "$NS" /usr/bin/time "${V[@]}" -o "$p.rusage" \
		"$BENCH/fanout.sh" "$p" "$ADDRS" "$KEY" "$KH"
	local wall fails
	read -r wall fails <"$p.time"
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

start_proxy() { # RUN: proxy 127.0.K.x:22 -> 127.0.(K+100).x:22; rewrites INV, KH, ADDRS
	local r=$1
	local map=$WORK/r$r/proxy.map ready=$WORK/r$r/proxy.ready
	awk -F'\t' '{ split($2, o, "."); printf "%s.%s.%d.%s:22 %s:22\n", o[1], o[2], o[3] + 100, o[4], $2 }' \
		"$FLEET_DIR/hosts.tsv" >"$map"
	ip netns exec "$NS" python3 "$BENCH/delay_proxy.py" serve --rtt --delay-ms "$RTT" \
		--map-file "$map" --ready-file "$ready" 2>"$WORK/r$r/proxy.log" &
	PROXY_PID=$!
	local n
	for ((n = 0; n < 200; n++)); do
		[[ -e $ready ]] && break
		kill -0 "$PROXY_PID" 2>/dev/null || die "delay proxy died: $(cat "$WORK/r$r/proxy.log")"
		sleep 0.05
	done
	[[ -e $ready ]] || die "delay proxy did not start"
	# The same inventory and known_hosts, with the proxy's addresses.
	local sedexpr
	sedexpr=$(awk '{ split($1, l, ":"); split($2, t, ":"); gsub(/\./, "\\.", t[1]); printf "s/\\b%s\\b/%s/;", t[1], l[1] }' "$map")
	sed -E "$sedexpr" "$FLEET_DIR/inventory.yaml" >"$WORK/r$r/inventory.yaml"
	sed -E "$sedexpr" "$FLEET_DIR/known_hosts" >"$WORK/r$r/known_hosts"
	cut -d' ' -f1 "$map" | cut -d: -f1 >"$WORK/r$r/addrs"
	INV=$WORK/r$r/inventory.yaml KH=$WORK/r$r/known_hosts ADDRS=$WORK/r$r/addrs
	if ((r == 1)); then
		# Does the proxy add the RTT asked for? Time to sshd's banner (one round
		# trip: the SYN, then the banner) and whole `ssh true` logins.
		local first direct proxied
		first=$(head -n1 "$map")
		direct=${first#* } proxied=${first%% *}
		meta proxy_banner_direct_ms "$(ip netns exec "$NS" python3 "$BENCH/delay_proxy.py" rtt "$direct")"
		meta proxy_banner_proxied_ms "$(ip netns exec "$NS" python3 "$BENCH/delay_proxy.py" rtt "$proxied")"
		meta proxy_ssh_direct_ms "$(median_ssh "${direct%:22}" "$FLEET_DIR/known_hosts")"
		meta proxy_ssh_proxied_ms "$(median_ssh "${proxied%:22}" "$KH")"
		echo "bench: delay proxy check: banner $(grep banner_direct "$META" | cut -f2) ms direct," \
			"$(grep banner_proxied "$META" | cut -f2) ms proxied; ssh true $(grep ssh_direct "$META" | cut -f2) ms direct," \
			"$(grep ssh_proxied "$META" | cut -f2) ms proxied" >&2
	fi
}

START=$SECONDS
for ((r = 1; r <= RUNS; r++)); do
	mkdir -p "$WORK/r$r"
	NS=khb$$r$r
	FLEET_DIR=/dev/shm/khard-bench.$$.r$r
	FLEET_DIRS+=("$FLEET_DIR")
	hosts=(--count 1 --role server --version "$VERSION" --prefix server)
	((HOSTS == 1)) || hosts+=(--count $((HOSTS - 1)) --role agent --version "$VERSION" --prefix agent)
	b=$EPOCHREALTIME
	"$FLEET" up "$FLEET_DIR" --netns "$NS" "${hosts[@]}" >"$WORK/r$r/fleet-up.log" 2>&1 ||
		die "fleet up failed: $(tail -n 5 "$WORK/r$r/fleet-up.log")"
	e=$EPOCHREALTIME
	meta "fleet_up_s_r$r" "$(awk -v u=$((${e/./} - ${b/./})) 'BEGIN{printf "%.1f", u/1e6}')"
	echo "bench: run $r: fleet of $HOSTS up in $(grep "fleet_up_s_r$r" "$META" | cut -f2) s ($FLEET_DIR, netns $NS)" >&2
	INV=$FLEET_DIR/inventory.yaml KH=$FLEET_DIR/known_hosts KEY=$FLEET_DIR/id_ed25519
	ADDRS=$WORK/r$r/addrs
	cut -f2 "$FLEET_DIR/hosts.tsv" >"$ADDRS"
	((RTT == 0)) || start_proxy "$r"

	fanout_step "$r" warm "OpenSSH fan-out (warm-up)"
	fanout_step "$r" a "OpenSSH fan-out"
	khard_step "$r" b "apply (fresh)"
	khard_step "$r" c "apply (no change)"
	if ((X2)); then
		khard_step "$r" c1 "apply (no change, role copy)" "$WORK/x1/playbook.yaml"
		khard_step "$r" c2 "apply (no change, tasks x2)" "$WORK/x2/playbook.yaml"
	fi
	khard_step "$r" d "apply --check"
	fleet_down
	((KEEP)) || rm -rf -- "$FLEET_DIR"
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

#!/usr/bin/env bash
# A fleet of simulated k3s nodes for khard's tests: each node is a real
# OpenSSH sshd on its own loopback address, with a private view of the few
# folders khard touches. Needs root, util-linux (unshare, mount, nsenter),
# iproute2 (ip, ss) and openssh-server/-client, and for the fake /proc/sys
# /dev/fuse, libfuse3 and the venv target/procsys-venv with mfusepy (PyPI)
# that scripts/test installs (another python: env FLEET_PROCSYS_PYTHON).
#
# Usage:
#   fleet.sh up DIR [--netns NAME [--bastion HOST]] [--restart-down SECS] HOST...
#   fleet.sh down DIR
#
# HOST is either
#   NAME:ROLE[:VERSION]     ROLE server|agent; VERSION like v1.30.6+k3s1;
#                           no VERSION = k3s not installed (no k3s shim)
#   --count N [--role R] [--version V] [--prefix P]
#                           N hosts P001..PNNN (role agent, no version and
#                           prefix "node" unless given); the options after a
#                           --count belong to it, until the next --count or NAME:ROLE
# e.g. fleet.sh up /tmp/f --netns f1 s1:server:v1.30.6+k3s1 --count 200 --version v1.30.6+k3s1
#
#   --netns NAME        create network namespace NAME and run every sshd in it;
#                       reach the hosts with `ip netns exec NAME ssh ...`
#   --bastion HOST      (needs --netns) SSH jump host topology: also create the
#                       "runner" netns NAME-r, joined to NAME by a veth pair
#                       10.254.a.b+1/30 (NAME-r) <-> +2 (NAME), the /30 picked
#                       by a hash of NAME; HOST's sshd also listens on +2:22.
#                       From NAME-r only HOST is reachable, the others (on
#                       their 127.0.x.y) only through it: `ip netns exec NAME-r
#                       ssh -J root@10.254.a.b+2 root@127.0.1.i`
#   --restart-down SECS how long `systemctl restart k3s|k3s-agent` keeps the
#                       node's /readyz down (default 0; may be fractional);
#                       per host: write seconds to DIR/hosts/NAME/state/restart_down
#   env FLEET_UP_TIMEOUT seconds `up` waits for every sshd to listen (default 60)
#   env FLEET_QUICKACK=0  keep delayed ACKs on the netns loopback (by default
#                       they are off: with them each `ssh host cmd` stalls 2x40 ms)
#
# Host i (1-based) listens on 127.0.1.i:22 for i <= 250, then 127.0.2.(i-250)...
# `up` returns once every sshd listens, or tears everything down and exits 1
# naming the host that failed. `down` kills every process of the fleet (each
# host lives in its own PID namespace, so killing its sshd, which is PID 1
# there, takes every session and daemonised child with it) and deletes the
# netns; it is idempotent and works on a half-started fleet. It keeps DIR
# (logs, state) for the caller to inspect and delete.
#
# Layout of DIR:
#   id_ed25519{,.pub}  client key (no passphrase); authorized_keys = its .pub
#   known_hosts        "ADDR ssh-ed25519 AAAA..." per host (and for the
#                      bastion's veth address with --bastion)
#   hosts.tsv          NAME<TAB>ADDR<TAB>ROLE<TAB>VERSION (empty: no k3s)<TAB>HOSTDIR
#   api/               the cluster's API state, shared by every host's k3s shim
#                      (the fleet is one cluster): sa.NS.NAME, nodes (every node's pod CIDR and InternalIP, as `k3s kubectl get nodes` prints them for khard)
#   inventory.yaml     Ansible inventory: k3s_cluster -> server/agent groups
#   netns              the netns name (only with --netns, removed by down)
#   bastion            NAME<TAB>VETH_ADDR of the bastion (only with --bastion)
#   runner-netns       the runner netns name (only with --bastion, removed by down)
#   hosts/NAME/        HOSTDIR:
#     sshd_config ssh_host_ed25519_key{,.pub} sshd.log (sshd -E, LogLevel INFO)
#     sshd.pid         host-side PID of the sshd (PID 1 of the host's PID namespace)
#     unshare.pid      its parent; start.log: output of the start-up commands
#     fs/P             what the host sees at /P, for P in etc/sysctl.d etc/rancher
#                      var/lib/rancher var/lib/khard var/backups etc/sudoers.d etc/systemd/system etc/default root
#                      usr/local/bin usr/local/sbin proc/sys (all else is the real machine)
#     fs/proc/sys      only vm/panic_on_oom vm/overcommit_memory kernel/panic
#                      kernel/panic_on_oops kernel/keys/root_maxkeys
#                      kernel/keys/root_maxbytes, each a plain file "N\n": the
#                      backing store of the host's /proc/sys/KEY, which is
#                      DIR/procsys/NAME/KEY (see procsys below), so the real
#                      sysctl inside the host reads and writes these; a value
#                      set replaces the file (new inode, mtime = when it was set)
#                      and tests read them as plain files
#     fs/usr/local/sbin/systemctl, fs/usr/local/bin/k3s (and curl -> k3s)
#                      shims (systemctl.in, k3s.in beside this script), and
#                      fs/usr/local/bin/journalctl (prints state/journal.UNIT
#                      for each -u UNIT), ahead of /usr/bin in root's PATH
#     log/systemctl.log, log/k3s.log   one line per shim call, see the .in files
#     state/           shim state: version, down_until, restarted, sa.NS.NAME;
#                      tests may add restart_down (seconds) or never_ready
#     mounts.fstab     the bind mounts made inside the host
#   procsys/           mount point of the fleet's one FUSE daemon (procsys.py
#                      beside this script), which serves every host's fake
#                      /proc/sys with procfs' semantics for integer sysctls: a
#                      read at an offset > 0 is end-of-file (dash's `read` gets
#                      one digit), size 0, a write parsed as the kernel parses an
#                      int or refused with EINVAL, a value replacing the old one;
#                      each host bind-mounts procsys/NAME on its /proc/sys and
#                      checks at start-up that it is served by the daemon.
#   procsys.pid, procsys.log   the daemon's PID and output
set -euo pipefail

HERE=$(cd "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
SSHD=/usr/sbin/sshd
# What each host sees as its own (bind-mounted from HOSTDIR/fs/...).
PRIVATE=(etc/sysctl.d etc/rancher var/lib/rancher var/lib/khard var/backups etc/sudoers.d etc/systemd/system etc/default root usr/local/bin usr/local/sbin)
# The fake /proc/sys: path=initial value.
SYSCTLS=(vm/panic_on_oom=0 vm/overcommit_memory=0 kernel/panic=0 kernel/panic_on_oops=0
	kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000)
# The FUSE daemon behind them and its python (a venv with mfusepy).
PROCSYS=$HERE/procsys.py
PROCSYS_PYTHON=${FLEET_PROCSYS_PYTHON:-$(cd "$HERE/../.." && pwd)/target/procsys-venv/bin/python3}
PROCSYS_HINT='scripts/test installs what it needs (or: apt-get install libfuse3-3; python3 -m venv target/procsys-venv && target/procsys-venv/bin/pip install mfusepy)'

# Runs as `sh -c` inside the host's new mount, UTS (hostname = NAME) and PID
# namespaces, then becomes sshd. mount -a batches the mounts into one process
# (200 hosts x 12 mount(8) calls would cost seconds); the last one puts the
# fleet's fake /proc/sys (DIR/procsys/NAME, served by its FUSE daemon) over
# the host's /proc/sys. The host checks that before sshd starts: /proc/sys is
# on FUSE, and `read` of root_maxkeys gets what its backing file holds (sh is
# dash: its `read` takes one byte at a time, so only the first digit; bash: all).
# (A plain bind of the per-host folder would not do: procps `sysctl -a` skips
# the first two directory entries unread, assuming "." and ".." as procfs and
# the daemon return them, and on ext4, in hash order, it then recurses into
# ".." forever.)
# shellcheck disable=SC2016 # expanded by that sh, not here
STARTER='h=$1 name=$2; shift 2
echo "$name" >/proc/sys/kernel/hostname || exit 1
ssh-keygen -q -t ed25519 -N "" -C "root@$name" -f "$h/ssh_host_ed25519_key" </dev/null || exit 1
mount -a -T "$h/mounts.fstab" || exit 1
t=$(stat -f -c %T /proc/sys/kernel/panic)
[ "$t" = fuseblk ] || { echo "fleet host $name: /proc/sys/kernel/panic is on $t, not on the fake /proc/sys (fuseblk)" >&2; exit 1; }
read -r b <"$h/fs/proc/sys/kernel/keys/root_maxkeys" || exit 1
read -r v </proc/sys/kernel/keys/root_maxkeys
case $v in "$b" | "${b%"${b#?}"}") ;; *)
	echo "fleet host $name: /proc/sys/kernel/keys/root_maxkeys reads \"$v\", its backing file \"$b\"" >&2
	exit 1 ;;
esac
exec "$@"'

die() {
	echo "fleet: $*" >&2
	exit 1
}

# What a k3s that has run leaves in its data dir, with k3s's own modes
# (kubeconfigs and keys 0600, certificates 0644): the files the benchmarks'
# file controls read. The content is a placeholder; only metadata is audited.
k3s_data() {
	local d=$1 role=$2 f
	mkdir -p "$d/agent"
	for f in kubelet.kubeconfig kubeproxy.kubeconfig client-ca.crt client-kubelet.key serving-kubelet.key; do
		echo "fleet placeholder" >"$d/agent/$f" && chmod 0600 "$d/agent/$f"
	done
	[[ $role == server ]] || return 0
	# The admin kubeconfig a server writes (write-kubeconfig), which `k3s kubectl` reads.
	local kc=${d%/var/lib/rancher/k3s}/etc/rancher/k3s/k3s.yaml
	mkdir -p "${kc%/*}"
	echo "fleet placeholder" >"$kc" && chmod 0600 "$kc"
	mkdir -p "$d/server/cred" "$d/server/tls"
	for f in admin controller scheduler api-server cloud-controller supervisor; do
		echo "fleet placeholder" >"$d/server/cred/$f.kubeconfig" && chmod 0600 "$d/server/cred/$f.kubeconfig"
	done
	for f in client-ca server-ca request-header-ca serving-kube-apiserver client-kube-apiserver; do
		echo "fleet placeholder" >"$d/server/tls/$f.crt" && chmod 0644 "$d/server/tls/$f.crt"
		echo "fleet placeholder" >"$d/server/tls/$f.key" && chmod 0600 "$d/server/tls/$f.key"
	done
	echo "fleet placeholder" >"$d/server/tls/service.key" && chmod 0600 "$d/server/tls/service.key"
}

usage() {
	sed -n '/^# Usage:/,/^#                       they are off/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

# ---------------------------------------------------------------- down

# Fills FOUND with the PIDs of this fleet's unshare and sshd listener processes
# (their command lines hold "-f DIR/hosts/NAME/sshd_config"; sshd's proctitle
# keeps it too) and of its procsys daemon ("procsys.py DIR/hosts DIR/procsys").
# Scans /proc with builtins only.
find_fleet_pids() {
	local d=$1 p s args
	FOUND=()
	for p in /proc/[1-9]*/cmdline; do
		mapfile -d '' -t args 2>/dev/null <"$p" || continue
		s=" ${args[*]-} "
		[[ $s == *" -f $d/hosts/"*"/sshd_config "* || $s == *"/procsys.py $d/hosts $d/procsys " ]] || continue
		p=${p#/proc/}
		FOUND+=("${p%/cmdline}")
	done
}

# Waits until every PID given is gone or a zombie. A host's sshd is PID 1 of
# its PID namespace; the kernel kills and reaps all the rest of the namespace
# before that sshd turns zombie, so this also waits for every session.
wait_gone() {
	local p st n alive
	for ((n = 0; n < 500; n++)); do
		alive=0
		for p; do
			read -r st 2>/dev/null <"/proc/$p/stat" || continue
			st=${st##*) }
			[[ ${st%% *} == Z ]] || { alive=1 && break; }
		done
		((alive)) || return 0
		sleep 0.02
	done
	return 1
}

# Whether a mount point is MNT in our mount namespace (builtins only; MNT is
# plain, see check_dir, so mountinfo holds it unescaped).
is_mounted() {
	local _a _b _c _d m _r
	while read -r _a _b _c _d m _r; do
		[[ $m != "$1" ]] || return 0
	done </proc/self/mountinfo
	return 1
}

cmd_down() {
	[[ $# -eq 1 ]] || usage
	local dir=$1 ns
	[[ $dir == /* ]] || dir=$PWD/$dir
	if [[ -d $dir ]]; then dir=$(cd "$dir" && pwd -P); fi
	dir=${dir%/}
	for _ in 1 2 3; do
		find_fleet_pids "$dir"
		((${#FOUND[@]})) || break
		kill -KILL "${FOUND[@]}" 2>/dev/null || :
		wait_gone "${FOUND[@]}" || :
	done
	find_fleet_pids "$dir"
	((${#FOUND[@]} == 0)) || die "down: processes still alive: ${FOUND[*]}"
	# The procsys mount (dead now that its daemon is): detach it.
	while is_mounted "$dir/procsys"; do
		umount -l "$dir/procsys" || die "down: cannot unmount $dir/procsys"
	done
	rm -f "$dir/procsys.pid"
	if [[ -f $dir/netns ]]; then
		read -r ns <"$dir/netns" || :
		if [[ -n $ns && -e /run/netns/$ns ]]; then
			ip netns delete "$ns" || die "down: cannot delete netns $ns"
		fi
		rm -f "$dir/netns"
	fi
	# The runner netns holds one end of the veth; deleting it deletes both.
	if [[ -f $dir/runner-netns ]]; then
		read -r ns <"$dir/runner-netns" || :
		if [[ -n $ns && -e /run/netns/$ns ]]; then
			ip netns delete "$ns" || die "down: cannot delete netns $ns"
		fi
		rm -f "$dir/runner-netns"
	fi
}

# ---------------------------------------------------------------- up

NAMES=() ROLES=() VERSIONS=()
declare -A SEEN=()

add_host() { # NAME ROLE VERSION
	[[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "bad host name '$1'"
	[[ $2 == server || $2 == agent ]] || die "host $1: role must be server or agent, not '$2'"
	[[ -z $3 || $3 =~ ^v[0-9]+\.[0-9]+\.[0-9]+[A-Za-z0-9.+_-]*$ ]] || die "host $1: bad k3s version '$3'"
	[[ -z ${SEEN[$1]-} ]] || die "host $1 given twice"
	SEEN[$1]=1
	NAMES+=("$1") ROLES+=("$2") VERSIONS+=("$3")
}

G_COUNT='' G_ROLE=agent G_VERSION='' G_PREFIX=node
flush_group() {
	[[ -n $G_COUNT ]] || return 0
	[[ $G_COUNT =~ ^[0-9]+$ ]] || die "--count needs a number, not '$G_COUNT'"
	local i name w=${#G_COUNT}
	((w >= 3)) || w=3
	for ((i = 1; i <= G_COUNT; i++)); do
		printf -v name '%s%0*d' "$G_PREFIX" "$w" "$i"
		add_host "$name" "$G_ROLE" "$G_VERSION"
	done
	G_COUNT='' G_ROLE=agent G_VERSION='' G_PREFIX=node
}

check_dir() {
	local c
	# Paths go unquoted into sshd_config and fstab files: keep them plain.
	[[ $1 =~ ^/[A-Za-z0-9._/+-]*$ ]] || die "DIR '$1' may only hold A-Z a-z 0-9 . _ / + -"
	# DIR must stay visible inside the hosts, so not under what they overlay.
	for c in "${PRIVATE[@]}" proc; do
		[[ $1 != /$c && $1 != /$c/* ]] || die "DIR must not be under /$c (the hosts overlay it)"
	done
}

UP_DONE=0 UP_DIR=''
on_up_exit() {
	local rc=$?
	((UP_DONE)) && return
	[[ -n $UP_DIR ]] || return
	echo "fleet: up failed (exit $rc); tearing down what was started" >&2
	cmd_down "$UP_DIR" || :
}

cmd_up() {
	[[ $# -ge 1 ]] || usage
	local dir=$1 netns='' bastion='' rdown=0 spec n v r
	shift
	while (($#)); do
		case $1 in
		--netns | --bastion | --restart-down | --count | --role | --version | --prefix)
			[[ $# -ge 2 ]] || die "$1 needs a value"
			v=$2
			case $1 in
			--netns) netns=$v ;;
			--bastion) bastion=$v ;;
			--restart-down) rdown=$v ;;
			--count) flush_group && G_COUNT=$v ;;
			--role | --version | --prefix)
				[[ -n $G_COUNT ]] || die "$1 must follow --count"
				case $1 in --role) G_ROLE=$v ;; --version) G_VERSION=$v ;; --prefix) G_PREFIX=$v ;; esac
				;;
			esac
			shift 2
			;;
		-*) die "unknown option $1" ;;
		*)
			flush_group
			spec=$1
			IFS=: read -r n r v <<<"$spec"
			[[ -n $n && -n $r ]] || die "bad host spec '$spec' (NAME:ROLE[:VERSION])"
			add_host "$n" "$r" "$v"
			shift
			;;
		esac
	done
	flush_group
	((${#NAMES[@]})) || die "no hosts given"
	[[ $rdown =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--restart-down needs seconds, not '$rdown'"
	[[ -z $netns || $netns =~ ^[A-Za-z0-9._-]+$ ]] || die "bad netns name '$netns'"
	((${#NAMES[@]} <= 250 * 254)) || die "too many hosts"
	[[ -z $bastion || -n $netns ]] || die "--bastion needs --netns"
	[[ -z $bastion || -n ${SEEN[$bastion]-} ]] || die "--bastion $bastion is not one of the hosts"

	local c i
	for c in "$SSHD" ssh-keygen unshare nsenter mount umount stat ip ss; do
		command -v "$c" >/dev/null || die "missing $c"
	done
	[[ -c /dev/fuse ]] || die "no /dev/fuse for the fake /proc/sys (modprobe fuse)"
	[[ -x $PROCSYS_PYTHON ]] || die "no $PROCSYS_PYTHON for the fake /proc/sys; $PROCSYS_HINT"
	[[ $dir == /* ]] || dir=$PWD/$dir
	check_dir "$dir"
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd -P)
	check_dir "$dir"
	[[ ! -e $dir/hosts ]] || die "$dir already holds a fleet; run down and use a fresh DIR"

	[[ -z $netns || ! -e /run/netns/$netns ]] || die "netns $netns already exists"
	[[ -z $bastion || ! -e /run/netns/$netns-r ]] || die "netns $netns-r already exists"
	if [[ -z $netns ]]; then
		# Our addresses, or a wildcard, already on port 22 would make sshd
		# fail or the readiness check lie: say so up front.
		local -A ours=() busy=()
		for ((i = 0; i < ${#NAMES[@]}; i++)); do ours[127.0.$((i / 250 + 1)).$((i % 250 + 1))]=1; done
		while read -r _ _ _ c _; do
			c=${c%:22}
			if [[ $c == 0.0.0.0 || $c == '*' || $c == '[::]' || -n ${ours[$c]-} ]]; then busy[$c]=1; fi
		done < <(ss -Hltn 'sport = :22')
		((${#busy[@]} == 0)) ||
			die "port 22 is already in use on ${#busy[@]} of the addresses, e.g. $(printf '%s ' "${!busy[@]}" | cut -d' ' -f1-3) (another fleet? use --netns)"
	fi

	UP_DIR=$dir
	trap on_up_exit EXIT
	trap 'exit 130' INT TERM

	# Mount points on the real machine (empty folders, never content) and
	# sshd's privilege separation folder.
	for c in "${PRIVATE[@]}"; do [[ -d /$c ]] || mkdir -p "/$c"; done
	# -p: fleets of parallel tests race to create it on a fresh machine
	mkdir -p -m 0755 /run/sshd

	local -a enter=()
	if [[ -n $netns ]]; then
		ip netns add "$netns"
		echo "$netns" >"$dir/netns"
		ip -n "$netns" link set lo up
		# Quick ACKs on loopback: sshd leaves Nagle on for non-tty sessions,
		# and Nagle behind a delayed ACK stalls each `ssh host cmd` twice
		# for 40 ms (150 -> 60 ms per connection). FLEET_QUICKACK=0: keep them.
		if [[ ${FLEET_QUICKACK:-1} != 0 ]]; then
			for c in 127.0.0.0/8 127.0.0.1; do
				ip -n "$netns" route replace local "$c" dev lo proto kernel scope host \
					src 127.0.0.1 table local quickack 1
			done
		fi
		enter=(nsenter "--net=/run/netns/$netns")
	fi

	# Bastion: a runner netns and a veth pair to the fleet netns, made inside
	# the two namespaces (never in the caller's), so their names cannot clash.
	# The /30 in 10.254.0.0/16 comes from a hash of the netns name; as the
	# pair joins only this fleet's two namespaces, even a collision is harmless.
	local baddr='' net o
	if [[ -n $bastion ]]; then
		ip netns add "$netns-r"
		echo "$netns-r" >"$dir/runner-netns"
		ip -n "$netns-r" link set lo up
		read -r c _ < <(cksum <<<"$netns")
		c=$((c % 16384)) # the /30's index; veth ends kfrC (runner) and kffC (fleet)
		net=10.254.$((c / 64)) o=$((c % 64 * 4))
		baddr=$net.$((o + 2))
		ip -n "$netns-r" link add "kfr$c" type veth peer name "kff$c" netns "$netns"
		ip -n "$netns-r" addr add "$net.$((o + 1))/30" dev "kfr$c"
		ip -n "$netns" addr add "$baddr/30" dev "kff$c"
		ip -n "$netns-r" link set "kfr$c" up
		ip -n "$netns" link set "kff$c" up
		printf '%s\t%s\n' "$bastion" "$baddr" >"$dir/bastion"
	fi

	ssh-keygen -q -t ed25519 -N '' -C khard-fleet -f "$dir/id_ed25519" </dev/null
	cp "$dir/id_ed25519.pub" "$dir/authorized_keys"

	local sysctl_tmpl k3s_tmpl
	sysctl_tmpl=$(<"$HERE/systemctl.in")
	k3s_tmpl=$(<"$HERE/k3s.in")

	# Newer sshd (9.8+) penalises sources that fail or drop connections; every
	# client here is 127.0.0.1/the netns, so switch that off where it exists.
	local extra=''
	if [[ $("$SSHD" -V 2>&1) =~ OpenSSH_([0-9]+)\.([0-9]+) ]] &&
		((BASH_REMATCH[1] > 9 || (BASH_REMATCH[1] == 9 && BASH_REMATCH[2] >= 8))); then
		extra='PerSourcePenalties no'
	fi

	# Per-host files, written with builtins (forks are what costs at 200 hosts).
	local i h addr name tab dirs=() shims=() kv tsv='' inv_s='' inv_a='' nodes=''
	local -a ADDRS=() HDIRS=()
	for i in "${!NAMES[@]}"; do
		ADDRS[i]=127.0.$((i / 250 + 1)).$((i % 250 + 1))
		HDIRS[i]=$dir/hosts/${NAMES[i]}
		h=${HDIRS[i]}
		dirs+=("$h/log" "$h/state" "$h/fs/proc/sys/vm" "$h/fs/proc/sys/kernel/keys")
		for c in "${PRIVATE[@]}"; do dirs+=("$h/fs/$c"); done
	done
	mkdir -p "${dirs[@]}" "$dir/procsys" "$dir/api"
	# The fake /proc/sys: one FUSE daemon for the whole fleet, serving
	# DIR/hosts/*/fs/proc/sys at DIR/procsys; it starts up while we write the
	# hosts' files.
	local pid
	"$PROCSYS_PYTHON" "$PROCSYS" "$dir/hosts" "$dir/procsys" </dev/null >"$dir/procsys.log" 2>&1 &
	pid=$!
	echo "$pid" >"$dir/procsys.pid"
	for i in "${!NAMES[@]}"; do
		name=${NAMES[i]} addr=${ADDRS[i]} h=${HDIRS[i]} v=${VERSIONS[i]}
		# sshd is PID 1 of its own PID namespace, so PidFile none: fleet.sh
		# writes the host-side PID to sshd.pid itself.
		printf '%s\n' "# fleet host $name (generated by tests/fleet/fleet.sh)" \
			"ListenAddress $addr:22" "HostKey $h/ssh_host_ed25519_key" "PidFile none" \
			"AuthorizedKeysFile $dir/authorized_keys" "UsePAM no" "StrictModes no" \
			"PermitRootLogin prohibit-password" "PasswordAuthentication no" \
			"KbdInteractiveAuthentication no" "UseDNS no" "PrintMotd no" "PrintLastLog no" \
			"MaxStartups 1000:30:1000" "MaxSessions 10" "LogLevel INFO" \
			"Subsystem sftp internal-sftp" ${extra:+"$extra"} >"$h/sshd_config"
		if [[ $name == "$bastion" ]]; then
			printf '%s\n' "ListenAddress $baddr:22" "AllowTcpForwarding yes" >>"$h/sshd_config"
		fi
		tab=''
		for c in "${PRIVATE[@]}"; do tab+="$h/fs/$c /$c none bind 0 0"$'\n'; done
		printf '%s%s\n' "$tab" "$dir/procsys/$name /proc/sys none bind 0 0" >"$h/mounts.fstab"
		for kv in "${SYSCTLS[@]}"; do echo "${kv#*=}" >"$h/fs/proc/sys/${kv%%=*}"; done
		printf '#!/bin/sh\n# systemctl shim of fleet host %s\nH=%s\nRD=%s\n%s\n' \
			"$name" "$h" "$rdown" "$sysctl_tmpl" >"$h/fs/usr/local/sbin/systemctl"
		: >"$h/log/systemctl.log"
		shims+=("$h/fs/usr/local/sbin/systemctl")
		# journald's answer to `journalctl … -u UNIT …`: what the unit logged in
		# this boot, which is what a test wrote to state/journal.UNIT (k3s's own
		# "Running kube-apiserver …" lines); nothing when the test wrote none,
		# and then no process (journalctl itself starts none).
		printf '#!/bin/sh\n# journalctl shim of fleet host %s\nH=%s\n%s\n' "$name" "$h" \
			'u=""; for a; do [ "$u" = next ] && u=$a && { [ ! -e "$H/state/journal.$u" ] || cat "$H/state/journal.$u"; }; [ "$a" = -u ] && u=next; done; exit 0' \
			>"$h/fs/usr/local/bin/journalctl"
		shims+=("$h/fs/usr/local/bin/journalctl")
		if [[ -n $v ]]; then
			printf '#!/bin/sh\n# k3s shim of fleet host %s\nH=%s\n%s\n' "$name" "$h" "$k3s_tmpl" >"$h/fs/usr/local/bin/k3s"
			k3s_data "$h/fs/var/lib/rancher/k3s" "${ROLES[i]}"
			echo "$v" >"$h/state/version"
			: >"$h/log/k3s.log"
			shims+=("$h/fs/usr/local/bin/k3s")
			ln -s k3s "$h/fs/usr/local/bin/curl" # the kubelet healthz probe of agents
			# The node as the API lists it: its pod CIDR (flannel's lease, a /24
			# per node) and InternalIP.
			nodes+="10.$((42 + i / 256)).$((i % 256)).0/24 $addr "
		fi
		tsv+="$name	$addr	${ROLES[i]}	$v	$h"$'\n'
		if [[ ${ROLES[i]} == server ]]; then
			inv_s+="        $name: { ansible_host: $addr }"$'\n'
		else
			inv_a+="        $name: { ansible_host: $addr }"$'\n'
		fi
	done
	chmod 0755 "${shims[@]}"
	printf '%s' "$tsv" >"$dir/hosts.tsv"
	printf '%s\n' "$nodes" >"$dir/api/nodes"
	{
		echo "k3s_cluster:"
		echo "  children:"
		[[ -z $inv_s ]] || printf '    server:\n      hosts:\n%s' "$inv_s"
		[[ -z $inv_a ]] || printf '    agent:\n      hosts:\n%s' "$inv_a"
		echo "  vars:"
		echo "    ansible_user: root"
		echo "    ansible_ssh_private_key_file: $dir/id_ed25519"
	} >"$dir/inventory.yaml"

	# Wait for the fake /proc/sys: it must be mounted before any host starts
	# (each host's mount namespace is a copy of ours).
	local deadline=$((SECONDS + ${FLEET_UP_TIMEOUT:-60}))
	until [[ $(stat -f -c %T "$dir/procsys" 2>/dev/null) == fuse* ]]; do
		if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
			{
				echo "fleet: the fake /proc/sys (FUSE daemon $PROCSYS) did not mount at $dir/procsys; procsys.log says:"
				tail -n 5 "$dir/procsys.log" | sed 's/^/  /'
				echo "  ($PROCSYS_HINT)"
			} >&2
			exit 1
		fi
		sleep 0.02
	done

	# Start every host at once. Each gets a private mount namespace (its bind
	# mounts never reach the real machine) and a PID namespace with sshd as
	# PID 1 (-D: no daemonising, which would end the namespace). --kill-child:
	# if unshare dies, its sshd and with it the whole host dies too. Output
	# goes to files so that no caller's pipe is held open by the fleet.
	local -a UPID=()
	for i in "${!NAMES[@]}"; do
		h=${HDIRS[i]}
		"${enter[@]}" unshare --mount --uts --propagation private --pid --fork --kill-child --mount-proc \
			sh -c "$STARTER" khard-fleet-host "$h" "${NAMES[i]}" \
			"$SSHD" -D -f "$h/sshd_config" -E "$h/sshd.log" \
			</dev/null >"$h/start.log" 2>&1 &
		UPID[i]=$!
		echo "$!" >"$h/unshare.pid"
	done

	# Wait until each address is listened on by a child of our own unshare
	# (ss -p gives the host-side PID of the listener).
	local -A want=()
	for i in "${!NAMES[@]}"; do
		want[${ADDRS[i]}]=$i
		[[ ${NAMES[i]} != "$bastion" ]] || want[$baddr]=$i
	done
	local line ppid st
	deadline=$((SECONDS + ${FLEET_UP_TIMEOUT:-60}))
	while :; do
		while read -r line; do
			[[ $line =~ [[:space:]]([0-9.]+):22[[:space:]].*pid=([0-9]+), ]] || continue
			addr=${BASH_REMATCH[1]} pid=${BASH_REMATCH[2]}
			[[ -n ${want[$addr]-} ]] || continue
			i=${want[$addr]}
			read -r st 2>/dev/null <"/proc/$pid/stat" || continue
			st=${st##*) }
			read -r _ ppid _ <<<"$st"
			[[ $ppid == "${UPID[i]}" ]] || continue
			echo "$pid" >"${HDIRS[i]}/sshd.pid"
			unset "want[$addr]"
		done < <("${enter[@]}" ss -Hltnp 'sport = :22')
		((${#want[@]})) || break
		for addr in "${!want[@]}"; do
			i=${want[$addr]}
			kill -0 "${UPID[i]}" 2>/dev/null && continue
			h=${HDIRS[i]}
			{
				echo "fleet: host ${NAMES[i]} ($addr) failed to start; $h/start.log and sshd.log say:"
				tail -n 5 "$h/start.log" "$h/sshd.log" 2>/dev/null | sed 's/^/  /'
			} >&2
			exit 1
		done
		if ((SECONDS >= deadline)); then
			echo "fleet: timeout: ${#want[@]} host(s) not listening after ${FLEET_UP_TIMEOUT:-60}s, e.g. ${!want[*]}" | cut -c1-300 >&2
			exit 1
		fi
		sleep 0.05
	done

	local kh='' t k
	for i in "${!NAMES[@]}"; do
		read -r t k _ <"${HDIRS[i]}/ssh_host_ed25519_key.pub"
		kh+="${ADDRS[i]} $t $k"$'\n'
		[[ ${NAMES[i]} != "$bastion" ]] || kh+="$baddr $t $k"$'\n'
	done
	printf '%s' "$kh" >"$dir/known_hosts"

	UP_DONE=1
	echo "fleet: ${#NAMES[@]} host(s) up in $dir${netns:+ (netns $netns)}${bastion:+, bastion $bastion at $baddr (runner netns $netns-r)}"
}

case ${1-} in
up) shift && cmd_up "$@" ;;
down) shift && cmd_down "$@" ;;
*) usage ;;
esac

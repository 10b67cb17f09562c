#!/usr/bin/env bash
# Planning scales with the inventory (issue 27): `khard apply --list-hosts`
# (inventory, group_vars, --limit, planning; no connection) on a generated
# k3s-ansible inventory of 10,000 and 40,000 hosts, with a --limit that keeps
# half of them. Prints each time and the ratio of times against the ratio of
# sizes (4): linear planning gives about 4.
#
# Usage: bench/planning.sh   (KHARD: the binary, default target/release/khard)
set -euo pipefail
ROOT=$(cd "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
KHARD=${KHARD:-$ROOT/target/release/khard}
[ -x "$KHARD" ] || { echo "bench/planning.sh: build it first: cargo build --release" >&2; exit 1; }
D=$(mktemp -d /tmp/khard-planning.XXXXXX)
trap 'rm -rf "$D"' EXIT
inventory() { # N FILE
	{
		echo "k3s_cluster:"
		echo "  children:"
		echo "    server:"
		echo "      hosts:"
		echo "        s0: { ansible_host: 10.0.0.1 }"
		echo "    agent:"
		echo "      hosts:"
		awk -v n="$1" 'BEGIN { for (i = 1; i < n; i++) printf "        a%d: { ansible_host: 10.%d.%d.%d }\n", i, int(i / 65536) % 256, int(i / 256) % 256, i % 256 }'
		echo "  vars:"
		echo "    ansible_user: root"
		echo "    k3s_version: v1.30.6+k3s1"
	} >"$2"
}
declare -A ms
for n in 10000 40000; do
	inventory "$n" "$D/inv-$n.yaml"
	start=$(date +%s%N)
	count=$("$KHARD" apply --list-hosts -i "$D/inv-$n.yaml" --limit 'k3s_cluster:!a1*' --format json |
		python3 -c 'import json,sys; print(len(json.load(sys.stdin)[0]["hosts"]))')
	ms[$n]=$((($(date +%s%N) - start) / 1000000))
	printf 'planning %6d hosts (%d selected): %d.%03d s\n' "$n" "$count" $((ms[$n] / 1000)) $((ms[$n] % 1000))
done
awk -v a="${ms[10000]}" -v b="${ms[40000]}" 'BEGIN { printf "time ratio 40,000 / 10,000 hosts: %.2f (sizes: 4; linear is about 4, quadratic 16)\n", b / a }'

#!/usr/bin/env bash
# The cost of a hostile k3s drop-in (issue 24): a node may hold a 256 KiB
# drop-in of nested flow brackets (`a: [[[[…`), which the YAML scanner once
# took minutes of the operator's CPU to refuse (3 min 21 s for --check).
# Times `khard apply --check` on this machine (ansible_connection: local, the
# README's inventory) with k3s_config_file pointing into a temp folder that
# holds the hostile drop-in: it must refuse it, in well under a second.
# (`khard report` reads drop-ins through the same k3s::config::effective,
# bounded by the same lang::yaml_bounds; on this machine without k3s it
# never gets that far, so it is not timed here.)
#
# Usage: bench/hostile-yaml.sh   (KHARD: the binary, default target/release/khard)
set -euo pipefail
ROOT=$(cd "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
KHARD=${KHARD:-$ROOT/target/release/khard}
[ -x "$KHARD" ] || { echo "bench/hostile-yaml.sh: build it first: cargo build --release" >&2; exit 1; }
D=$(mktemp -d /tmp/khard-hostile.XXXXXX)
trap 'rm -rf "$D"' EXIT
mkdir -p "$D/config.yaml.d"
: >"$D/config.yaml"
{ printf 'a: '; head -c $((256 * 1024 - 3)) /dev/zero | tr '\0' '['; } >"$D/config.yaml.d/50-hostile.yaml"
for cmd in "apply --check"; do
	start=$(date +%s%N)
	# shellcheck disable=SC2086
	out=$("$KHARD" $cmd -i "$ROOT/inventories/localhost.yaml" -e "k3s_config_file=$D/config.yaml" 2>&1 || :)
	ms=$((($(date +%s%N) - start) / 1000000))
	grep -q 'nested deeper than' <<<"$out" || { echo "$out" | tail -n 20; echo "khard $cmd did not refuse the hostile drop-in" >&2; exit 1; }
	printf 'khard %-13s refused the 256 KiB drop-in in %d.%03d s\n' "$cmd" $((ms / 1000)) $((ms % 1000))
done

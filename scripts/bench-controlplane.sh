#!/usr/bin/env bash
# bench-controlplane.sh — the control-plane benchmark of issue 7.
#
# For each mesh size N: a fresh coordinator (the real binary, its own
# process, on 127.0.0.1), N lightweight nodes (real enrollment, real mTLS
# netmap streams, real Ed25519 checks, no tunnels) spread over client
# processes of at most 2,000 nodes, and the phases: enroll all, first maps,
# idle, a policy change, one join that reaches its one peer (the hub), and a
# second hub's join that reaches everyone. Prints the markdown of the "One
# coordinator, N nodes" section of BENCHMARKS.md; the coordinator's CPU and
# memory are read from /proc for its process alone.
#
# Usage (from anywhere in the repository):
#   scripts/bench-controlplane.sh                  100, 1,000 and 10,000 nodes (about 2 minutes)
#   scripts/bench-controlplane.sh 100 1000         the sizes given
#   scripts/bench-controlplane.sh --smoke          50 nodes, 2 client processes (a few seconds)
#   scripts/bench-controlplane.sh --profile DIR N  the coordinator inside the driver, with a CPU
#                                                  profile per phase and a heap profile in DIR
#   options: --json FILE (also write JSON results), --concurrency K (enrollments
#   in flight per client process, default 16), --clients C
set -euo pipefail

cd "$(dirname "$0")/.."
GO=${GO:-go}

sizes=() extra=() smoke=0 profile=""
while [ $# -gt 0 ]; do
	case $1 in
	--smoke) smoke=1 ;;
	--profile) profile=$(realpath -m "$2"); shift ;;
	--json) extra+=(-json "$(realpath -m "$2")"); shift ;;
	--concurrency) extra+=(-concurrency "$2"); shift ;;
	--clients) extra+=(-clients "$2"); shift ;;
	[0-9]*) sizes+=("$1") ;;
	*) echo "bench-controlplane: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
if [ "$smoke" = 1 ]; then
	sizes=(50) extra+=(-clients 2)
fi
[ ${#sizes[@]} -gt 0 ] || sizes=(100 1000 10000)

# The coordinator holds one descriptor per stream; Go raises the soft limit
# to the hard one, which this sandbox fixes at 20,000.
largest=$(printf '%s\n' "${sizes[@]}" | sort -n | tail -1)
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ $((largest + 1000)) -gt "$hard" ]; then
	echo "bench-controlplane: $largest nodes need about $((largest + 1000)) file descriptors in the coordinator; the hard limit is $hard" >&2
	exit 1
fi

bindir=bin/bench
mkdir -p "$bindir"
echo "bench-controlplane: building mcpmesh and the driver" >&2
"$GO" build -o "$bindir/mcpmesh" ./cmd/mcpmesh
"$GO" build -o "$bindir/controlplane" ./test/bench/controlplane

list=$(IFS=,; echo "${sizes[*]}")
cmd="scripts/bench-controlplane.sh"
[ "$smoke" = 1 ] && cmd+=" --smoke" || cmd+=" ${sizes[*]}"
if [ -n "$profile" ]; then
	exec "$bindir/controlplane" run -profile "$profile" -nodes "$list" -command "$cmd --profile DIR" "${extra[@]}"
fi
exec "$bindir/controlplane" run -mcpmesh "$bindir/mcpmesh" -nodes "$list" -command "$cmd" "${extra[@]}"

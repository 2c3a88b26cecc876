#!/usr/bin/env bash
# bench-dataplane.sh — the data-plane benchmark of issue 7.
#
# Measures TCP throughput (1 and 4 streams) and small-echo round trips
# (p50, p99) over six paths, in alternating rounds, and prints a markdown
# section with the medians and the ratios issue 7 asks for:
#
#   loopback   plain TCP on 127.0.0.1            (baseline of userspace mode)
#   userspace  two mcpmesh netstack tunnels in one process over loopback UDP
#   veth       plain TCP over a veth pair between two namespaces
#                                                 (baseline of the TUN paths)
#   tun        mcpmesh kernel-TUN mode (tunnel/kernel) in each namespace
#   wg         bare wireguard-go, configured through its UAPI socket
#   nebula     Nebula v1.10.3 (skipped by --smoke)
#
# All traffic stays inside two network namespaces this script creates (the
# loopback and userspace cases run on the loopback of the first one); it
# adds no route and no address in the host's namespace, and deletes the
# namespaces (and every interface in them) on exit, also on failure.
#
# Usage (root, from anywhere in the repository):
#   scripts/bench-dataplane.sh                 full run, 5 rounds, 1 GiB or 3 s per transfer
#   scripts/bench-dataplane.sh --smoke         tiny transfers, every case but Nebula (~30 s)
#   scripts/bench-dataplane.sh --profile DIR   also write CPU profiles of userspace and TUN mode
#   options: --rounds N  --bytes N  --duration D  --no-nebula
#            --cases LIST   only these cases, e.g. tun,wg (comma-separated)
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
GO=${GO:-go}

smoke=0 rounds=5 bytes=$((1 << 30)) duration=3s count=2000 profile="" nebula=1 only=""
while [ $# -gt 0 ]; do
	case $1 in
	--smoke) smoke=1 ;;
	--rounds) rounds=$2; shift ;;
	--bytes) bytes=$2; shift ;;
	--duration) duration=$2; shift ;;
	--profile) profile=$(realpath -m "$2"); shift ;;
	--no-nebula) nebula=0 ;;
	--cases) only=$2; shift ;;
	*) echo "bench-dataplane: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
if [ "$smoke" = 1 ]; then
	rounds=1 bytes=$((4 << 20)) duration=1s count=50 nebula=0
fi
if [ -n "$only" ]; then
	case ",$only," in *,nebula,*) ;; *) nebula=0 ;; esac
fi
if [ "$(id -u)" != 0 ]; then
	echo "bench-dataplane: needs root (network namespaces, TUN devices)" >&2
	exit 1
fi
command -v ip >/dev/null || { echo "bench-dataplane: needs ip(8) (iproute2)" >&2; exit 1; }

log() { echo "bench-dataplane: $*" >&2; }

# Binaries: the measuring program, and the comparison daemons built from the
# module cache (wireguard-go at the version go.mod pins, so both sides run
# the same engine).
bindir=$root/bin/bench
mkdir -p "$bindir"
wgversion=$("$GO" list -m -f '{{.Version}}' golang.zx2c4.com/wireguard)
log "building dataplane and wireguard-go $wgversion"
"$GO" build -o "$bindir/dataplane" ./test/bench/dataplane
GOBIN=$bindir "$GO" install "golang.zx2c4.com/wireguard@$wgversion"
if [ "$nebula" = 1 ]; then
	log "building nebula v1.10.3"
	GOBIN=$bindir "$GO" install github.com/slackhq/nebula/cmd/nebula@v1.10.3 github.com/slackhq/nebula/cmd/nebula-cert@v1.10.3
fi
dp=$bindir/dataplane

tmp=$(mktemp -d /tmp/bench-dataplane.XXXXXX)
nsA=mcpmesh-dp$$-a
nsB=mcpmesh-dp$$-b
pids=()

cleanup() {
	local rc=$?
	set +e
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null
	done
	for pid in "${pids[@]}"; do
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	# Anything still inside the namespaces is ours: a namespace lives on
	# while a process holds it, so stop those before deleting.
	for ns in "$nsA" "$nsB"; do
		for pid in $(ip netns pids "$ns" 2>/dev/null); do
			kill -KILL "$pid" 2>/dev/null
		done
		ip netns del "$ns" 2>/dev/null
	done
	rm -f /var/run/wireguard/dpwg$$a.sock /var/run/wireguard/dpwg$$b.sock
	if [ $rc != 0 ]; then
		log "failed (exit $rc); logs of the daemons:"
		tail -n 20 "$tmp"/*.log >&2 2>/dev/null
	fi
	rm -rf "$tmp"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Two namespaces joined by a veth pair; nothing else is in them.
underlay_a=10.99.7.1 underlay_b=10.99.7.2
ip netns add "$nsA"
ip netns add "$nsB"
for ns in "$nsA" "$nsB"; do ip -n "$ns" link set lo up; done
ip -n "$nsA" link add dpveth-a type veth peer name dpveth-b netns "$nsB"
ip -n "$nsA" addr add $underlay_a/24 dev dpveth-a
ip -n "$nsB" addr add $underlay_b/24 dev dpveth-b
ip -n "$nsA" link set dpveth-a up
ip -n "$nsB" link set dpveth-b up
# For foreground commands only: a function run with & is a subshell, and
# its $! would not be the daemon's pid.
inA() { ip netns exec "$nsA" "$@"; }

# wait_for FILE PATTERN: until a daemon's log shows it is up (10 s at most).
wait_for() {
	for _ in $(seq 100); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	log "timed out waiting for '$2' in $1"
	return 1
}

# One sink/echo server in B serves every namespace case on its own address.
ip netns exec "$nsB" "$dp" server -listen 0.0.0.0:5201 >"$tmp/server.log" 2>&1 &
pids+=($!)
wait_for "$tmp/server.log" '^ready'

# The same two key pairs serve mcpmesh's TUN mode and bare wireguard-go.
read -r privA pubA < <("$dp" keygen)
read -r privB pubB < <("$dp" keygen)

# mcpmesh TUN mode: tunnel/kernel in each namespace, mesh 100.64.7.0/24.
tun_a=100.64.7.1 tun_b=100.64.7.2
prof_a=() prof_b=()
if [ -n "$profile" ]; then
	mkdir -p "$profile"
	prof_a=(-cpuprofile "$profile/tun-a.prof")
	prof_b=(-cpuprofile "$profile/tun-b.prof")
fi
ip netns exec "$nsA" "$dp" tun -stdin=false -name mcpmesh0 -addr $tun_a -port 51820 -key "$privA" \
	-peer "$pubB" -peer-allowed $tun_b/32 -peer-endpoint $underlay_b:51820 "${prof_a[@]}" >"$tmp/tun-a.log" 2>&1 &
pids+=($!)
ip netns exec "$nsB" "$dp" tun -stdin=false -name mcpmesh0 -addr $tun_b -port 51820 -key "$privB" \
	-peer "$pubA" -peer-allowed $tun_a/32 -peer-endpoint $underlay_a:51820 "${prof_b[@]}" >"$tmp/tun-b.log" 2>&1 &
pids+=($!)
wait_for "$tmp/tun-a.log" '^ready'
wait_for "$tmp/tun-b.log" '^ready'

# Bare wireguard-go, MTU 1420, mesh 100.64.8.0/24 (more specific than the
# 100.64.0.0/10 that mcpmesh0 routes). Its UAPI socket path is global, so
# the two interfaces need distinct names.
wg_a=100.64.8.1 wg_b=100.64.8.2
wgup() { # ns iface addr peer-addr priv peer-pub peer-underlay log
	ip netns exec "$1" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=error "$bindir/wireguard" -f "$2" >"$8" 2>&1 &
	pids+=($!)
	for _ in $(seq 100); do [ -S "/var/run/wireguard/$2.sock" ] && break; sleep 0.1; done
	ip netns exec "$1" "$dp" wgset -sock "/var/run/wireguard/$2.sock" -port 51821 -key "$5" \
		-peer "$6" -peer-allowed "$4/32" -peer-endpoint "$7:51821"
	ip -n "$1" addr add "$3/24" dev "$2"
	ip -n "$1" link set "$2" mtu 1420 up
}
wgup "$nsA" dpwg$$a $wg_a $wg_b "$privA" "$pubB" $underlay_b "$tmp/wg-a.log"
wgup "$nsB" dpwg$$b $wg_b $wg_a "$privB" "$pubA" $underlay_a "$tmp/wg-b.log"

# Nebula, MTU 1420, mesh 100.64.9.0/24, each side a static host of the
# other (no lighthouse), firewall open.
neb_a=100.64.9.1 neb_b=100.64.9.2
if [ "$nebula" = 1 ]; then
	nc=$bindir/nebula-cert
	"$nc" ca -name mcpmesh-bench -duration 2h -out-crt "$tmp/ca.crt" -out-key "$tmp/ca.key"
	for side in a b; do
		ipvar=neb_$side
		"$nc" sign -ca-crt "$tmp/ca.crt" -ca-key "$tmp/ca.key" -name "$side" -networks "${!ipvar}/24" \
			-out-crt "$tmp/$side.crt" -out-key "$tmp/$side.key"
	done
	nebconf() { # side peer-addr peer-underlay
		cat <<-EOF
		pki:
		  ca: $tmp/ca.crt
		  cert: $tmp/$1.crt
		  key: $tmp/$1.key
		static_host_map:
		  "$2": ["$3:4242"]
		lighthouse:
		  am_lighthouse: false
		listen:
		  host: 0.0.0.0
		  port: 4242
		punchy:
		  punch: false
		tun:
		  dev: dpneb$$$1
		  mtu: 1420
		logging:
		  level: warning
		firewall:
		  outbound:
		    - port: any
		      proto: any
		      host: any
		  inbound:
		    - port: any
		      proto: any
		      host: any
		EOF
	}
	nebconf a $neb_b $underlay_b >"$tmp/neb-a.yml"
	nebconf b $neb_a $underlay_a >"$tmp/neb-b.yml"
	ip netns exec "$nsA" "$bindir/nebula" -config "$tmp/neb-a.yml" >"$tmp/nebula-a.log" 2>&1 &
	pids+=($!)
	ip netns exec "$nsB" "$bindir/nebula" -config "$tmp/neb-b.yml" >"$tmp/nebula-b.log" 2>&1 &
	pids+=($!)
fi

cases=(loopback userspace veth tun wg)
[ "$nebula" = 1 ] && cases+=(nebula)
if [ -n "$only" ]; then
	wanted=()
	for c in "${cases[@]}"; do
		case ",$only," in *",$c,"*) wanted+=("$c") ;; esac
	done
	[ ${#wanted[@]} -gt 0 ] || { log "--cases $only: no such case"; exit 2; }
	cases=("${wanted[@]}")
fi
addr_of() {
	case $1 in
	veth) echo $underlay_b ;;
	tun) echo $tun_b ;;
	wg) echo $wg_b ;;
	nebula) echo $neb_b ;;
	esac
}

# Every path must carry an echo before anything is timed; the first one
# over a tunnel waits out its handshake (a lost first initiation is retried
# after 5 s), so each path gets 20 s.
for c in "${cases[@]}"; do
	case $c in
	loopback | userspace) ;;
	*)
		ok=0
		deadline=$((SECONDS + 20))
		while [ $SECONDS -lt $deadline ]; do
			if inA timeout 10 "$dp" rtt -addr "$(addr_of "$c"):5201" -count 1 -duration 5s >/dev/null 2>>"$tmp/warmup.log"; then
				ok=1
				break
			fi
			sleep 0.5
		done
		[ $ok = 1 ] || { log "$c: no echo through the path"; cat "$tmp/warmup.log" >&2; exit 1; }
		;;
	esac
done

results=$tmp/results.jsonl
load=(-bytes "$bytes" -duration "$duration" -count "$count")
measure() { # case round
	local c=$1 r=$2
	case $c in
	loopback | userspace)
		local mode=mesh
		[ "$c" = loopback ] && mode=loopback
		inA timeout 300 "$dp" userspace -mode $mode -case "$c" -round "$r" "${load[@]}" >>"$results"
		;;
	*)
		local a
		a=$(addr_of "$c"):5201
		for n in 1 4; do
			inA timeout 120 "$dp" client -addr "$a" -streams $n -case "$c" -round "$r" "${load[@]}" >>"$results"
		done
		inA timeout 120 "$dp" rtt -addr "$a" -case "$c" -round "$r" "${load[@]}" >>"$results"
		;;
	esac
}
# Rounds alternate the cases, and every other round runs them in reverse
# order, so that a load drifting over the run (the machine is shared) falls
# on every case alike rather than on whichever comes last.
for r in $(seq "$rounds"); do
	order=("${cases[@]}")
	if [ $((r % 2)) = 0 ]; then
		order=()
		for ((i = ${#cases[@]} - 1; i >= 0; i--)); do order+=("${cases[$i]}"); done
	fi
	for c in "${order[@]}"; do
		log "round $r/$rounds: $c"
		measure "$c" "$r"
	done
done
if [ -n "$profile" ] && [[ " ${cases[*]} " == *" userspace "* ]]; then
	log "profiling userspace mode into $profile/userspace.prof"
	inA timeout 300 "$dp" userspace -mode mesh -case profile "${load[@]}" -cpuprofile "$profile/userspace.prof" >/dev/null
fi

want=$(IFS=,; echo "${cases[*]}")
cmd="scripts/bench-dataplane.sh"
smokeflag=()
if [ "$smoke" = 1 ]; then
	cmd+=" --smoke"
	smokeflag=(-smoke)
fi
"$dp" report -in "$results" -cases "$want" -nproc "$(nproc)" -goversion "$("$GO" version | cut -d' ' -f3-)" -command "$cmd" "${smokeflag[@]}"

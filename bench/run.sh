#!/usr/bin/env bash
# Runs the load scenarios of BENCHMARKS.md against the plugin (bench/Caddyfile)
# and the reference baseline (cmd/chatbaseline), each on a fresh server,
# RUNS times (default 5), and prints the medians with their ratios.
#
#   bench/run.sh [scenario...]     scenarios: fanout saturation idle hold (default: all)
#                                  submit1 submit16 submit256 (1, 16, 256 publishers
#                                  in one room), submit256x64 (4 in each of 64)
#
# A scenario with a protocol suffix runs the same load with every subscriber
# on a TLS connection of its own, against the baseline serving the same
# protocol: fanout-h2, idle-h2 (HTTP/2), fanout-h3, idle-h3 (HTTP/3), and
# so on for any scenario. fanout-grpc compares, both on the plugin, gRPC
# streams ("grpc") against SSE streams over HTTP/2 ("sse-h2").
#
# A scenario with the suffix -file (fanout-file, submit256-file, ...) runs
# the load over HTTP/1.1 against the plugin with `store file` ("file") and
# with `store memory` ("memory"), alternating which goes first; the file
# store starts empty each time, in a temporary directory.
#
# The servers listen on fixed ports, which another run on the machine may
# hold: BENCH_HTTP (8080), BENCH_HTTPS (8443, TCP and UDP), BENCH_ADMIN
# (2019), BENCH_BASELINE (8090) and BENCH_BASELINE_TLS (8091) move them.
#
# Results go to bench/results/<date>.jsonl, one JSON line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(fanout saturation idle hold)
export BENCH_HTTP=${BENCH_HTTP:-8080} BENCH_HTTPS=${BENCH_HTTPS:-8443} BENCH_ADMIN=${BENCH_ADMIN:-2019}
BENCH_BASELINE=${BENCH_BASELINE:-8090} BENCH_BASELINE_TLS=${BENCH_BASELINE_TLS:-8091}

bin=$(mktemp -d)
trap 'pkill -P $$ || true; rm -rf "$bin"' EXIT
go build -o "$bin/caddy" ./cmd/caddy
go build -o "$bin/chatbaseline" ./cmd/chatbaseline
go build -o "$bin/chatbench" ./cmd/chatbench
mkdir -p bench/results
out=bench/results/$(date -u +%Y%m%dT%H%M%SZ).jsonl

# Flags of chatbench for each scenario.
declare -A args=(
	[fanout]="-rooms 10 -subscribers 1000 -rate 20 -duration 20s"
	[saturation]="-rooms 1 -subscribers 2000 -saturate -publishers 4 -duration 15s"
	[idle]="-rooms 100 -subscribers 10000 -rate 0 -duration 1s -settle 5s"
	[hold]="-rooms 100 -subscribers 15000 -rate 1 -duration 60s -settle 5s"
	[submit1]="-rooms 1 -subscribers 0 -saturate -publishers 1 -duration 10s -fsyncs"
	[submit16]="-rooms 1 -subscribers 0 -saturate -publishers 16 -duration 10s -fsyncs"
	[submit256]="-rooms 1 -subscribers 0 -saturate -publishers 256 -duration 10s -fsyncs"
	[submit256x64]="-rooms 64 -subscribers 0 -saturate -publishers 4 -duration 10s -fsyncs"
)

wait_port() {
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "nothing listens on port $1" >&2
	return 1
}

# wait_tls waits until the HTTPS server on port has its certificate, which
# Caddy makes in the background.
wait_tls() {
	for _ in $(seq 100); do
		if curl -sk -o /dev/null "https://127.0.0.1:$1/"; then return 0; fi
		sleep 0.1
	done
	echo "no TLS on port $1" >&2
	return 1
}

port_free() {
	if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
		echo "port $1 is already in use: stop what listens there first" >&2
		exit 1
	fi
}

for scenario in "${scenarios[@]}"; do
	load=${scenario%%-*}
	proto=h1
	[ "$load" = "$scenario" ] || proto=${scenario#*-}
	if [ -z "${args[$load]:-}" ]; then
		echo "unknown scenario $scenario" >&2
		exit 1
	fi
	servers=(plugin baseline)
	[ "$proto" != grpc ] || servers=(grpc sse-h2)
	[ "$proto" != file ] || servers=(file memory)
	for run in $(seq "$RUNS"); do
		order=("${servers[@]}")
		if [ "$proto" = file ] && [ $((run % 2)) = 0 ]; then
			order=(memory file)
		fi
		for server in "${order[@]}"; do
			# What the subscribers speak, and to which server.
			speak=$proto
			[ "$server" != sse-h2 ] || speak=h2
			[ "$proto" != file ] || speak=h1
			store=memory
			[ "$server" != file ] || store="file $bin/store/history.db"
			if [ "$server" = baseline ]; then
				port=$BENCH_BASELINE
				[ "$speak" = h1 ] || port=$BENCH_BASELINE_TLS
				port_free "$port"
				"$bin/chatbaseline" -addr "127.0.0.1:$port" -proto "$speak" >/dev/null 2>&1 &
			else
				port=$BENCH_HTTP
				[ "$speak" = h1 ] || port=$BENCH_HTTPS
				port_free "$BENCH_HTTP"
				port_free "$BENCH_HTTPS"
				BENCH_STORE=$store "$bin/caddy" run --config bench/Caddyfile >/dev/null 2>&1 &
			fi
			pid=$!
			url=http://127.0.0.1:$port
			wait_port "$port"
			if [ "$speak" != h1 ]; then
				url=https://127.0.0.1:$port
				wait_tls "$port"
			fi
			echo "== $scenario run $run: $server" >&2
			# shellcheck disable=SC2086
			"$bin/chatbench" -url "$url" -proto "$speak" -pid $pid -label "$scenario/$server" ${args[$load]} |
				tail -n 1 >>"$out"
			kill $pid
			wait $pid 2>/dev/null || true
			rm -rf "$bin/store"
		done
	done
done
"$bin/chatbench" -summarize "$out"
echo "results: $out" >&2

#!/usr/bin/env bash
# Runs the load scenarios of BENCHMARKS.md against the plugin (bench/Caddyfile)
# and the reference baseline (cmd/chatbaseline), each on a fresh server,
# RUNS times (default 5), and prints the medians with their ratios.
#
#   bench/run.sh [scenario...]     scenarios: fanout saturation idle hold (default: all)
#
# Results go to bench/results/<date>.jsonl, one JSON line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(fanout saturation idle hold)

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
)

wait_port() {
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "nothing listens on port $1" >&2
	return 1
}

port_free() {
	if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
		echo "port $1 is already in use: stop what listens there first" >&2
		exit 1
	fi
}

for scenario in "${scenarios[@]}"; do
	for run in $(seq "$RUNS"); do
		for server in plugin baseline; do
			if [ "$server" = plugin ]; then
				port_free 8080
				"$bin/caddy" run --config bench/Caddyfile >/dev/null 2>&1 &
				port=8080
			else
				port_free 8090
				"$bin/chatbaseline" -addr 127.0.0.1:8090 >/dev/null 2>&1 &
				port=8090
			fi
			pid=$!
			wait_port $port
			echo "== $scenario run $run: $server" >&2
			# shellcheck disable=SC2086
			"$bin/chatbench" -url "http://127.0.0.1:$port" -pid $pid -label "$scenario/$server" ${args[$scenario]} |
				tail -n 1 >>"$out"
			kill $pid
			wait $pid 2>/dev/null || true
		done
	done
done
"$bin/chatbench" -summarize "$out"
echo "results: $out" >&2

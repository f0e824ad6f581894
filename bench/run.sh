#!/usr/bin/env bash
# Runs the load scenarios of BENCHMARKS.md against the plugin (bench/Caddyfile)
# and the reference baseline (cmd/chatbaseline), each on a fresh server,
# RUNS times (default 5), and prints the medians with their ratios.
#
#   bench/run.sh [scenario...]     scenarios: fanout saturation idle hold (default)
#                                  deletes (1,000 streams in one room, each
#                                  fifth message deleted by its author),
#                                  submit1 submit16 submit256 (1, 16, 256 publishers
#                                  in one room), submit256x64 (4 in each of 64),
#                                  nodes nodes-saturation (asked for by name)
#
# The nodes scenarios run 1, 2 and 3 Caddy nodes on one local redis-server
# (on port BENCH_REDIS, 6399) against one node on the memory store: messages
# are published through the first node, and each room's subscribers are
# spread over every node (on ports BENCH_NODES to BENCH_NODES+2, 8180-8182,
# with admin endpoints on BENCH_NODES_ADMIN on, 2119-2121). They report the
# Redis commands per stored message, from INFO commandstats before and after
# each run.
#
# A scenario with a protocol suffix runs the same load with every subscriber
# on a TLS connection of its own, against the baseline serving the same
# protocol: fanout-h2, idle-h2 (HTTP/2), fanout-h3, idle-h3 (HTTP/3), and
# so on for any scenario. fanout-grpc runs gRPC streams against the bare
# grpc-go server (chatbaseline -grpc, posts still over HTTP/2), and against
# the plugin's own SSE streams over HTTP/2 ("sse-h2").
#
# A scenario with the suffix -file (fanout-file, submit256-file, ...) runs
# the load over HTTP/1.1 against the plugin with `store file` ("file") and
# with `store memory` ("memory"), alternating which goes first; the file
# store starts empty each time, in a temporary directory.
#
# The suffixes -webhook and -screen run the load the same way against the
# plugin with a hook that calls a local receiver (cmd/hookreceiver, on
# BENCH_RECEIVER, 8093), "webhook" or "screen", and against the plugin
# without one ("plugin"): a webhook of the messages in batches of 100 or
# 1 s, or a screen that allows every post. Their rows are what the hook
# adds to each post, its CPU and its submit latency at p50 and p99, and for
# a webhook the events per second the receiver got, against the submits
# per second: submit256-webhook saturates it, fanout-webhook and
# fanout-screen post at a steady rate, submit1-screen one post at a time.
#
# The servers listen on fixed ports, which another run on the machine may
# hold: BENCH_HTTP (8080), BENCH_HTTPS (8443, TCP and UDP), BENCH_ADMIN
# (2019), BENCH_BASELINE (8090), BENCH_BASELINE_TLS (8091),
# BENCH_BASELINE_GRPC (8092) and BENCH_RECEIVER (8093) move them.
#
# BENCH_BASELINE_FLAGS adds flags to the baseline's command line: "-xnet"
# has it serve HTTP/2 through x/net's package, as Caddy does.
#
# BENCH_FLAGS adds flags to the load tool's command line, after the
# scenario's, which they override: "-duration 3s" for a quick look.
#
# GODEBUG applies to both servers (and the load tool); the results say so.
#
# BENCH_BEFORE=<commit> builds the plugin at that commit as well, and runs
# it beside today's in every run of every scenario (as "plugin@before",
# "file@before", or "redis1@before" for one node on Redis), so that a
# change is measured against what it changed in the same run, on the same
# machine. Its rows compare today's plugin with it.
#
# Each run's results go to bench/results/<date>.jsonl, one JSON line per
# run. The medians, against the reference, replace the rows of the
# scenarios run in BENCH_RESULTS (bench/results.tsv, the figures of
# BENCHMARKS.md, with the day, the commit, the machine and the command),
# and the chart BENCH_CHART (docs/benchmarks.svg) is drawn again from it.
# BENCH_RESULTS= (empty) keeps neither, for a quick look.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(fanout saturation idle hold)
export BENCH_HTTP=${BENCH_HTTP:-8080} BENCH_HTTPS=${BENCH_HTTPS:-8443} BENCH_ADMIN=${BENCH_ADMIN:-2019}
BENCH_BASELINE=${BENCH_BASELINE:-8090} BENCH_BASELINE_TLS=${BENCH_BASELINE_TLS:-8091} BENCH_BASELINE_GRPC=${BENCH_BASELINE_GRPC:-8092}
export BENCH_RECEIVER=${BENCH_RECEIVER:-8093}
# The hooks' secret, which Caddy and the receiver are given, new for each
# invocation as the docs make one.
hook_secret=whsec_$(head -c 32 /dev/urandom | base64)
BENCH_BASELINE_FLAGS=${BENCH_BASELINE_FLAGS:-} BENCH_FLAGS=${BENCH_FLAGS:-}
results=${BENCH_RESULTS-bench/results.tsv} chart=${BENCH_CHART:-docs/benchmarks.svg}
invocation="RUNS=$RUNS${BENCH_BASELINE_FLAGS:+ BENCH_BASELINE_FLAGS='$BENCH_BASELINE_FLAGS'}${BENCH_FLAGS:+ BENCH_FLAGS='$BENCH_FLAGS'}${GODEBUG:+ GODEBUG=$GODEBUG} bench/run.sh ${scenarios[*]}"
commit=$(git describe --always --dirty) load_start=$(cut -d' ' -f1 /proc/loadavg)

bin=$(mktemp -d)
trap 'pkill -P $$ || true; rm -rf "$bin"' EXIT
go build -o "$bin/caddy" ./cmd/caddy
go build -o "$bin/chatbaseline" ./cmd/chatbaseline
go build -o "$bin/chatbench" ./cmd/chatbench
go build -o "$bin/hookreceiver" ./cmd/hookreceiver
go build -o "$bin/chart" ./bench/chart
before=${BENCH_BEFORE:-}
if [ -n "$before" ]; then
	git worktree add -q --detach "$bin/before" "$before"
	trap 'pkill -P $$ || true; git worktree remove --force "$bin/before"; rm -rf "$bin"' EXIT
	(cd "$bin/before" && go build -o "$bin/caddy@before" ./cmd/caddy)
	before=$(git rev-parse --short "$before")
	invocation="BENCH_BEFORE=$before $invocation"
fi
mkdir -p bench/results
out=bench/results/$(date -u +%Y%m%dT%H%M%SZ).jsonl

# Flags of chatbench for each load, or for one scenario where its protocol
# needs another: 20,000 deliveries per second over QUIC take more than the
# 2 cores the load tool shares with the server, for the baseline too.
declare -A args=(
	[nodes]="-rooms 10 -subscribers 1000 -rate 20 -duration 15s"
	[nodes-saturation]="-rooms 1 -subscribers 300 -saturate -publishers 4 -duration 10s"
	[fanout]="-rooms 10 -subscribers 1000 -rate 20 -duration 20s"
	[deletes]="-rooms 1 -subscribers 1000 -rate 20 -delete-every 5 -duration 20s"
	[fanout-h3]="-rooms 10 -subscribers 1000 -rate 5 -duration 20s"
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

redis_port=${BENCH_REDIS:-6399} nodes_port=${BENCH_NODES:-8180} nodes_admin=${BENCH_NODES_ADMIN:-2119}

# The median of an array of numbers, for jq, as chatbench -summarize takes it.
jq_median='def median: sort | if length == 0 then 0 elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;'

# redis_stats prints the calls of every command the Redis on redis_port
# served, as a JSON object.
redis_stats() {
	redis-cli -p $redis_port INFO commandstats | tr -d '\r' |
		awk -F'[:=,]' '/^cmdstat_/ { sub("cmdstat_", "", $1); printf "%s\"%s\":%s", (n++ ? "," : "{"), $1, $3 } END { print (n ? "}" : "{}") }'
}

# redis_messages prints how many messages the rooms in Redis hold: the sum
# of their last sequence numbers.
redis_messages() {
	redis-cli -p $redis_port --scan --pattern 'chat:*:meta' |
		while read -r key; do redis-cli -p $redis_port HGET "$key" last; done |
		awk '{ n += $1 } END { print n + 0 }'
}

# run_nodes runs a nodes scenario: per run, the memory store on one node,
# then the redis store on 1, 2 and 3 nodes, each on a fresh Redis.
run_nodes() {
	local scenario=$1 run setup n i port pids urls line before messages
	for run in $(seq "$RUNS"); do
		for setup in memory redis1 redis2 redis3 ${before:+redis1@before}; do
			pids=() urls=()
			n=1 store="" caddy=$bin/caddy
			[[ $setup != *@before ]] || caddy=$bin/caddy@before
			if [ "$setup" != memory ]; then
				n=${setup#redis} n=${n%@before} store="store redis redis://127.0.0.1:$redis_port/0"
				port_free $redis_port
				redis-server --port $redis_port --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
				pids+=($!)
				wait_port $redis_port
			fi
			for i in $(seq 0 $((n - 1))); do
				port=$((nodes_port + i))
				port_free $port
				printf '{\n\tadmin localhost:%d\n\tchat {\n\t\tmax_subscribers 100000\n\t\t%s\n\t}\n}\nhttp://:%d {\n\tchat {\n\t\tui off\n\t\tmax_streams_per_client 100000\n\t}\n}\n' \
					$((nodes_admin + i)) "$store" $port >"$bin/node$i.caddyfile"
				"$caddy" run --config "$bin/node$i.caddyfile" --adapter caddyfile >/dev/null 2>&1 &
				pids+=($!) urls+=("http://127.0.0.1:$port")
			done
			for url in "${urls[@]}"; do wait_port "${url##*:}"; done
			before='{}'
			[ "$setup" = memory ] || before=$(redis_stats)
			echo "== $scenario run $run: $setup" >&2
			# A failed run is left out, as in the other scenarios.
			# shellcheck disable=SC2086
			if ! line=$("$bin/chatbench" -url "${urls[0]}" -subscribe-urls "$(IFS=,; echo "${urls[*]}")" \
				-label "$scenario/$setup" ${args[$scenario]} $BENCH_FLAGS | tail -n 1); then
				echo "== $scenario run $run: $setup failed, left out" >&2
			elif [ "$setup" = memory ]; then
				echo "$line" | jq -c '. + {nodes: 1}' >>"$out"
			else
				messages=$(redis_messages)
				echo "$line" | jq -c --argjson b "$before" --argjson a "$(redis_stats)" --argjson m "$messages" --argjson n "$n" \
					'. + {nodes: $n, messages_stored: $m, redis_calls_per_message: ($a | del(.info) | with_entries(.value = (.value - ($b[.key] // 0)) / ([$m, 1] | max)) | with_entries(select(.value > 0)))}' >>"$out"
			fi
			kill "${pids[@]}"
			wait "${pids[@]}" 2>/dev/null || true
		done
	done
}

# nodes_summary prints the medians of the nodes scenarios' runs per setup,
# with deliveries/s and p99 against the memory store's, and the Redis
# commands per stored message: EVALSHA, those its script runs, and the rest
# (subscribing, reading a gap or a resume position).
nodes_summary() {
	jq -rs "$jq_median"'
		def r2: . * 100 | round / 100;
		def script: ["hget", "hset", "hincrby", "xadd", "set", "publish", "pexpire"];
		def calls(f): map(.redis_calls_per_message // {} | to_entries | map(select(.key | f) | .value) | add // 0) | median | r2;
		map(select(.label | startswith("nodes"))) | group_by(.label | split("/")[0])[] |
		(.[0].label | split("/")[0]) as $scenario |
		(map(select(.label == $scenario + "/memory")) | { d: map(.deliveries_per_sec) | median, p99: map(.p99_ms) | median }) as $mem |
		"\n### \($scenario)\n\n| setup | runs | deliveries/s | vs memory | p50 ms | p99 ms | p99 vs memory | lost/dup/ooo | EVALSHA per message | in the script | other commands per message |\n|---|---|---|---|---|---|---|---|---|---|---|",
		(group_by(.label)[] | .[0].nodes as $n |
			(map(.deliveries_per_sec) | median) as $d | (map(.p99_ms) | median) as $p99 |
			"| \(.[0].label | split("/")[1]) | \(length) | \($d | round) | \(if $mem.d > 0 then ($d / $mem.d | r2 | tostring) + "x" else "-" end) | \(map(.p50_ms) | median | r2) | \($p99 | r2) | \(if $mem.p99 > 0 then ($p99 / $mem.p99 | r2 | tostring) + "x" else "-" end) | \(map(.lost) | add)/\(map(.duplicates) | add)/\(map(.out_of_order) | add) | \(calls(. == "evalsha")) | \(calls(IN(script[]))) | \(calls(. != "evalsha" and (IN(script[]) | not))) |")
	' "$1"
}

# result_rows prints the rows of bench/results.tsv for the runs in a results
# file: per scenario and metric, the medians of the server measured and of
# its reference (the plugin and the baseline; the plugin's gRPC and its SSE
# over HTTP/2; the file and the memory store; the plugin with a hook and
# without; each Redis setup of a nodes scenario and the memory node).
# Deliveries where there are any, else submits; for a hook, what it adds to
# each submit, and the webhook's events per second against the submits per
# second of its runs ("submits/s").
result_rows() {
	jq -rs --arg date "$(date -u +%Y-%m-%d)" --arg commit "$commit" \
		--arg machine "$(nproc) cores, load $load_start to $(cut -d' ' -f1 /proc/loadavg)" --arg command "$invocation" "$jq_median"'
		def r2: . * 100 | round / 100;
		def hooked: split(" ")[0] | test("-(webhook|screen)$");
		def metrics($scenario): if $scenario | hooked
			then [["submits/s", "submits_per_sec"], ["CPU µs/submit", "cpu_per_submit_us"], ["submit p50 ms", "submit_p50_ms"], ["submit p99 ms", "submit_p99_ms"]]
			elif map(.deliveries_per_sec) | median > 0
			then [["deliveries/s", "deliveries_per_sec"], ["CPU µs/delivery", "cpu_per_delivery_us"], ["p99 ms", "p99_ms"], ["RSS KiB/subscriber", "rss_per_subscriber_kib"]]
			else [["submits/s", "submits_per_sec"], ["CPU µs/submit", "cpu_per_submit_us"], ["submit p99 ms", "submit_p99_ms"], ["RSS KiB/subscriber", "rss_per_subscriber_kib"]] end;
		group_by(.label | split("/")[0])[] |
		(.[0].label | split("/")[0]) as $scenario |
		(group_by(.label) | map({key: (.[0].label | split("/")[1]), value: .}) | from_entries) as $runs |
		def row($name; $against; $metric; $m; $r; $runs):
			select($m > 0 and $r > 0) | [$name, $against, $metric, ($m | r2), ($r | r2), $runs, $date, $commit, $machine, $command] | @tsv;
		((if $scenario | startswith("nodes")
			then ($runs | keys - ["memory"] | map(select(endswith("@before") | not)) | map([., "memory", $scenario + "/" + .])) + [["redis1", "redis1@before", $scenario + "/redis1"]]
			else [["plugin", "baseline"], ["plugin", "sse-h2"], ["file", "memory"], ["webhook", "plugin"], ["screen", "plugin"],
				["plugin", "plugin@before"], ["file", "file@before"], ["webhook", "webhook@before"], ["screen", "screen@before"]] | map(. + [$scenario]) end)[] |
		select($runs[.[0]] and $runs[.[1]]) |
		. as [$measured, $reference, $name] |
		($runs[$measured] | metrics($scenario))[] | . as [$metric, $field] |
		row($name; $reference; $metric;
			$runs[$measured] | map(.[$field] // 0) | median; $runs[$reference] | map(.[$field] // 0) | median;
			"\($runs[$measured] | length)/\($runs[$reference] | length)")),
		($runs.webhook // empty |
			row($scenario; "submits/s"; "webhook events/s";
				map(.webhook_events_per_sec // 0) | median; map(.submits_per_sec // 0) | median; "\(length)/\(length)"))
	' "$1"
}

# keep_results puts the rows in file $1 into the results file $2, each
# scenario's where its old rows stood (new scenarios at the end).
keep_results() {
	[ -s "$2" ] || printf 'scenario\tagainst\tmetric\tplugin\treference\truns\tdate\tcommit\tmachine\tcommand\n' >"$2"
	awk -F'\t' '
		NR == FNR { if (!($1 in rows)) order[++n] = $1; rows[$1] = rows[$1] $0 "\n"; next }
		/^#/ || !($1 in rows) { print; next }
		!($1 in done) { printf "%s", rows[$1]; done[$1] = 1 }
		END { for (i = 1; i <= n; i++) if (!(order[i] in done)) printf "%s", rows[order[i]] }
	' "$1" "$2" >"$2.new"
	mv "$2.new" "$2"
}

for scenario in "${scenarios[@]}"; do
	if [[ $scenario == nodes* ]]; then
		run_nodes "$scenario"
		continue
	fi
	load=${scenario%%-*}
	proto=h1
	[ "$load" = "$scenario" ] || proto=${scenario#*-}
	flags=${args[$scenario]:-${args[$load]:-}}
	if [ -z "$flags" ]; then
		echo "unknown scenario $scenario" >&2
		exit 1
	fi
	servers=(plugin baseline)
	[ "$proto" != grpc ] || servers=(plugin baseline sse-h2)
	# The results say which flags the baseline ran with, if any.
	label=$scenario${BENCH_BASELINE_FLAGS:+ (baseline $BENCH_BASELINE_FLAGS)}${GODEBUG:+ (GODEBUG=$GODEBUG)}
	# A suffix that names a setup of the plugin measures it against the
	# plugin without it, over HTTP/1.1.
	setup=""
	case $proto in
	file) setup=file servers=(file memory) ;;
	webhook | screen) setup=$proto servers=("$proto" plugin) ;;
	esac
	[ -z "$before" ] || servers+=("${servers[0]}@before")
	for run in $(seq "$RUNS"); do
		order=("${servers[@]}")
		# Which of a setup and its reference goes first alternates.
		if [ -n "$setup" ] && [ $((run % 2)) = 0 ]; then
			order=("${servers[1]}" "${servers[0]}" "${servers[@]:2}")
		fi
		for server in "${order[@]}"; do
			# What the subscribers speak, and to which server, and which
			# build of the plugin serves.
			caddy=$bin/caddy
			[[ $server != *@before ]] || caddy=$bin/caddy@before
			speak=$proto
			[ "$server" != sse-h2 ] || speak=h2
			[ -z "$setup" ] || speak=h1
			store=memory
			[ "${server%@before}" != file ] || store="file $bin/store/history.db"
			hook=none receiver=() receiver_pid=""
			case ${server%@before} in webhook | screen) hook=${server%@before} ;; esac
			# Where the subscribers go, if not to url: the bare grpc-go
			# server, beside the baseline's HTTP/2 that takes the posts.
			subscribe=()
			if [ "$server" = baseline ] && [ "$speak" = grpc ]; then
				port=$BENCH_BASELINE_TLS
				port_free "$port"
				port_free "$BENCH_BASELINE_GRPC"
				# shellcheck disable=SC2086
				"$bin/chatbaseline" -addr "127.0.0.1:$port" -proto h2 -grpc "127.0.0.1:$BENCH_BASELINE_GRPC" $BENCH_BASELINE_FLAGS >/dev/null 2>&1 &
				subscribe=(-subscribe-urls "https://127.0.0.1:$BENCH_BASELINE_GRPC")
			elif [ "$server" = baseline ]; then
				port=$BENCH_BASELINE
				[ "$speak" = h1 ] || port=$BENCH_BASELINE_TLS
				port_free "$port"
				# shellcheck disable=SC2086
				"$bin/chatbaseline" -addr "127.0.0.1:$port" -proto "$speak" $BENCH_BASELINE_FLAGS >/dev/null 2>&1 &
			else
				port=$BENCH_HTTP
				[ "$speak" = h1 ] || port=$BENCH_HTTPS
				port_free "$BENCH_HTTP"
				port_free "$BENCH_HTTPS"
				# The receiver listens before Caddy calls it.
				if [ "$hook" != none ]; then
					port_free "$BENCH_RECEIVER"
					CHAT_HOOK_SECRET=$hook_secret "$bin/hookreceiver" -addr "127.0.0.1:$BENCH_RECEIVER" >/dev/null 2>&1 &
					receiver_pid=$! receiver=(-receiver "http://127.0.0.1:$BENCH_RECEIVER")
					wait_port "$BENCH_RECEIVER"
				fi
				BENCH_STORE=$store BENCH_HOOK=$hook BENCH_HOOK_SECRET=$hook_secret "$caddy" run --config bench/Caddyfile >/dev/null 2>&1 &
			fi
			pid=$!
			url=http://127.0.0.1:$port
			wait_port "$port"
			if [ "$speak" != h1 ]; then
				url=https://127.0.0.1:$port
				wait_tls "$port"
			fi
			[ ${#subscribe[@]} = 0 ] || wait_port "$BENCH_BASELINE_GRPC"
			echo "== $scenario run $run: $server" >&2
			# A run that fails (a subscriber that never connects) is left out
			# of the medians, which say how many runs they had, and the rest go on.
			# shellcheck disable=SC2086
			if ! "$bin/chatbench" -url "$url" "${subscribe[@]}" "${receiver[@]}" -proto "$speak" -pid $pid -label "$label/$server" $flags $BENCH_FLAGS |
				tail -n 1 >>"$out"; then
				echo "== $scenario run $run: $server failed, left out" >&2
			fi
			kill $pid $receiver_pid
			wait $pid $receiver_pid 2>/dev/null || true
			rm -rf "$bin/store"
		done
	done
done
"$bin/chatbench" -summarize "$out"
nodes_summary "$out"
echo "results: $out" >&2
if [ -n "$results" ]; then
	result_rows "$out" >"$bin/rows.tsv"
	if [ -s "$bin/rows.tsv" ]; then
		keep_results "$bin/rows.tsv" "$results"
		"$bin/chart" -in "$results" -out "$chart"
		echo "medians kept in $results, chart drawn in $chart" >&2
	fi
fi

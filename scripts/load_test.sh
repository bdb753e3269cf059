#!/usr/bin/env bash
# Sustained load on `birads serve` over loopback with wrk (apt-get install wrk):
#   scripts/load_test.sh CLA_WEIGHTS FEA_WEIGHTS IMAGE [SECONDS] [CONNECTIONS]
# Prints wrk's throughput and latency, the status counts, and the server's own error counters.
# Zero non-2xx answers other than documented 503s (queue full) is the pass condition.
set -euo pipefail
cla=$1 fea=$2 image=$3 secs=${4:-60} conns=${5:-8}
here=$(cd "$(dirname "$0")" && pwd)
bin=${BIRADS_BIN:-$here/../target/release/birads}
log=$(mktemp)
"$bin" serve --cla-weights "$cla" --fea-weights "$fea" --addr 127.0.0.1:0 > "$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q listening "$log" && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$log" | head -1)
echo "server $url, $conns connections for $secs s"
out=$(wrk -t2 -c"$conns" -d"${secs}s" --timeout 30s --latency -s "$here/wrk_predict.lua" "$url/v1/predict" -- "$image")
echo "$out"
echo "--- server counters"
curl -s "$url/metrics" | grep -E '^birads_(requests_total|errors_total|queue_depth|batch_size_(sum|count))'
codes=$(echo "$out" | sed -n 's/^status counts://p')
bad=0
for kv in $codes; do
  case ${kv%%=*} in 200|503) ;; *) bad=$((bad + ${kv#*=})) ;; esac
done
if echo "$out" | grep -q "Socket errors"; then echo "socket errors seen"; bad=$((bad + 1)); fi
echo "non-2xx other than 503, or socket errors: $bad"
[ "$bad" = 0 ]

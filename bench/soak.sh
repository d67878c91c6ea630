#!/usr/bin/env bash
# Soak: does a long-running instance give back what churning clients took?
# Starts redis-server and the release sidecar on unusual ports, runs the
# churn driver (bench/soak/churn.cjs) for CHURN seconds, then waits IDLE
# seconds (past every timeout: client timeout, parked sessions, tokens,
# presence TTL, typing and coalescing windows) and samples the sidecar's
# RSS, its metric series and its introspection every SAMPLE seconds.
# Output: bench-out/soak/samples.tsv and the driver's summary.
# Usage: bash bench/soak.sh        (cargo build --release first)
set -euo pipefail
cd "$(dirname "$0")/.."
CHURN=${CHURN:-300} IDLE=${IDLE:-120} ROUNDS=${ROUNDS:-1} SAMPLE=${SAMPLE:-30} CLIENTS=${CLIENTS:-200}
REDIS_PORT=${REDIS_PORT:-47379} PORT=${PORT:-47080} ADMIN_PORT=${ADMIN_PORT:-47090}
SECRET=soak-secret-soak-secret-soak-secret
OUT=bench-out/soak
mkdir -p "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --save '' --appendonly no >"$OUT/redis.log" 2>&1 &
pids+=($!)
sleep 0.5
SIDECAR_REDIS_URL=redis://127.0.0.1:$REDIS_PORT SIDECAR_LISTEN=127.0.0.1:$PORT \
  SIDECAR_ADMIN_LISTEN=127.0.0.1:$ADMIN_PORT SIDECAR_AUTH=jwt SIDECAR_JWT_SECRET=$SECRET \
  SIDECAR_INSTANCE_ID=soak SIDECAR_CONNECTION_RATE_PER_IP=1000 SIDECAR_CONNECTION_BURST_PER_IP=1000 \
  SIDECAR_LOG=warn target/release/signalr-sidecar >"$OUT/sidecar.log" 2>&1 &
SIDECAR_PID=$!
pids+=("$SIDECAR_PID")
for _ in $(seq 100); do curl -sf "127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break; sleep 0.2; done

sample() {
  local rss series rooms conns
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$SIDECAR_PID/status")
  series=$(curl -s "127.0.0.1:$ADMIN_PORT/metrics" | grep -vc '^#')
  rooms=$(curl -s "127.0.0.1:$ADMIN_PORT/admin/api/hubs/chat/rooms?limit=1000" | python3 -c \
    'import json,sys; d=json.load(sys.stdin); print(d.get("total", len(d.get("rooms", []))))' 2>/dev/null || echo '?')
  conns=$(curl -s "127.0.0.1:$ADMIN_PORT/metrics" | awk '/^sidecar_connections[{ ]/ {s+=$NF} END {print s+0}')
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date +%s)" "$1" "$rss" "$series" "$rooms" "$conns" | tee -a "$OUT/samples.tsv"
}
printf 'unix\tphase\trss_kib\tseries\tchat_rooms\tconnections\n' | tee "$OUT/samples.tsv"
sample start
: >"$OUT/driver.json"
for round in $(seq "$ROUNDS"); do
  SIDECAR=http://127.0.0.1:$PORT ADMIN=http://127.0.0.1:$ADMIN_PORT SECRET=$SECRET CLIENTS=$CLIENTS DURATION=$CHURN \
    ROUND=$round NODE_PATH=tests/client/node_modules node bench/soak/churn.cjs >>"$OUT/driver.json" &
  DRIVER=$!
  pids+=("$DRIVER")
  while kill -0 "$DRIVER" 2>/dev/null; do sleep "$SAMPLE"; sample "churn$round"; done
  for _ in $(seq $((IDLE / SAMPLE))); do sleep "$SAMPLE"; sample "idle$round"; done
done
cat "$OUT/driver.json"
echo "redis keys: $(redis-cli -p "$REDIS_PORT" dbsize)"
redis-cli -p "$REDIS_PORT" --scan --pattern 'presence:*' | sed 's/{.*}/{..}/' | sort | uniq -c

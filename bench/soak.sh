#!/usr/bin/env bash
# Soak: does a long-running instance give back what churning clients took?
# Starts redis-server and the release sidecar on unusual ports, runs the
# churn driver (bench/soak/churn.cjs) for CHURN seconds, then waits IDLE
# seconds (past every timeout: client timeout, parked sessions, tokens,
# presence TTL, typing and coalescing windows) and samples the sidecar's
# RSS, its metric series and its introspection every SAMPLE seconds.
# Output: bench-out/soak/samples.tsv and the driver's summary.
# Usage: bash bench/soak.sh        (cargo build --release first)
#
# INSTANCES=2: two instances (ids soak-0, soak-1; client ports PORT and
# PORT+1, admin ADMIN_PORT and ADMIN_PORT+1) share the Redis, without
# session affinity: each client picks one, stateful clients kill their own
# socket and resume on a random one (about half on the other), and every
# RESTART seconds (60; 0: never) one instance, in turn, gets SIGTERM while
# the churn goes on and starts again with the same id. Each sample then has
# a row per instance and bench-out/soak/redis.tsv the Redis side (keys by
# kind, consumer groups, pending entries, stream lengths).
set -euo pipefail
cd "$(dirname "$0")/.."
CHURN=${CHURN:-300} IDLE=${IDLE:-120} ROUNDS=${ROUNDS:-1} SAMPLE=${SAMPLE:-30} CLIENTS=${CLIENTS:-200}
REDIS_PORT=${REDIS_PORT:-47379} PORT=${PORT:-47080} ADMIN_PORT=${ADMIN_PORT:-47090}
INSTANCES=${INSTANCES:-1} RESTART=${RESTART:-60}
# HUB=discussion with ROUTES=<a discussion routing file> (and STREAMS):
# the churn joins discussions instead of chat rooms (presence, away).
HUB=${HUB:-chat} ROUTES=${ROUTES:-} STREAMS=${STREAMS:-} BIN=${BIN:-target/release/signalr-sidecar}
SECRET=soak-secret-soak-secret-soak-secret
OUT=bench-out/soak
mkdir -p "$OUT"
rm -f "$OUT/down" "$OUT/stop"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for i in $(seq 0 $((INSTANCES - 1))); do [ -f "$OUT/pid$i" ] && kill "$(cat "$OUT/pid$i")" 2>/dev/null || true; done
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --save '' --appendonly no >"$OUT/redis.log" 2>&1 &
pids+=($!)
sleep 0.5
R() { redis-cli -p "$REDIS_PORT" "$@"; }

# Instance i: client port PORT+i, admin ADMIN_PORT+i; its pid in $OUT/pid<i>.
start_instance() {
  local i=$1 id=soak
  [ "$INSTANCES" -gt 1 ] && id=soak-$i
  SIDECAR_REDIS_URL=redis://127.0.0.1:$REDIS_PORT SIDECAR_LISTEN=127.0.0.1:$((PORT + i)) \
    SIDECAR_ADMIN_LISTEN=127.0.0.1:$((ADMIN_PORT + i)) SIDECAR_AUTH=jwt SIDECAR_JWT_SECRET=$SECRET \
    SIDECAR_INSTANCE_ID=$id SIDECAR_CONNECTION_RATE_PER_IP=1000 SIDECAR_CONNECTION_BURST_PER_IP=1000 \
    SIDECAR_LOG=${SIDECAR_LOG:-warn} env ${ROUTES:+SIDECAR_ROUTES=$ROUTES} ${STREAMS:+SIDECAR_STREAMS=$STREAMS} \
    "$BIN" >>"$OUT/sidecar$i.log" 2>&1 &
  echo $! >"$OUT/pid$i"
  for _ in $(seq 100); do curl -sf "127.0.0.1:$((ADMIN_PORT + i))/readyz" >/dev/null && break; sleep 0.2; done
}
for i in $(seq 0 $((INSTANCES - 1))); do : >"$OUT/sidecar$i.log"; start_instance "$i"; done

sample() (
  # A restarting instance answers nothing: its row says so, the run goes on.
  set +e +o pipefail
  local rss series rooms conns i admin pid
  for i in $(seq 0 $((INSTANCES - 1))); do
    admin=127.0.0.1:$((ADMIN_PORT + i)) pid=$(cat "$OUT/pid$i")
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo down)
    series=$(curl -s "$admin/metrics" | grep -vc '^#' || true)
    rooms=$(curl -s "$admin/admin/api/hubs/$HUB/rooms?limit=1000" | python3 -c \
      'import json,sys; d=json.load(sys.stdin); print(d.get("total", len(d.get("rooms", []))))' 2>/dev/null || echo '?')
    conns=$(curl -s "$admin/metrics" | awk '/^sidecar_connections[{ ]/ {s+=$NF} END {print s+0}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date +%s)" "$1" "$i" "$rss" "$series" "$rooms" "$conns" | tee -a "$OUT/samples.tsv"
  done
  [ "$INSTANCES" -gt 1 ] && redis_sample "$1"
  return 0
)
# Redis: keys by kind (ttl -1 counted apart), groups and pending per stream.
redis_sample() (
  set +e +o pipefail
  local kinds groups
  kinds=$(R --scan | python3 -c '
import re, sys, collections
c = collections.Counter()
for k in sys.stdin.read().split():
    k = re.sub(r"\{[^}]*\}", "{}", k)
    k = re.sub(r":session:[^:]+", ":session:*", k)
    k = re.sub(r"reply:.*", "reply:*", k)
    c[k] += 1
print(" ".join(f"{k}={n}" for k, n in sorted(c.items())))')
  groups=""
  for s in $(R --scan --pattern "events:*"); do
    [ "$(R type "$s")" = stream ] || continue
    groups+="$s:len=$(R xlen "$s"),groups=$(R xinfo groups "$s" | awk 'p=="name"{n=$0} p=="pending"{printf "%s/%s;", n, $0} {p=$0}') "
  done
  # Keys without an expiry, by kind (not the streams): one script, no round trips.
  local nottl
  nottl=$(R eval 'local out = {} for _, k in ipairs(redis.call("KEYS", "*")) do
      if redis.call("TTL", k) == -1 and redis.call("TYPE", k).ok ~= "stream" then
        local kind = string.gsub(string.gsub(k, "{[^}]*}", "{}"), ":session:[^:]+", ":session:*")
        out[kind] = (out[kind] or 0) + 1 end end
    local r = {} for k, n in pairs(out) do table.insert(r, k .. "=" .. n) end return r' 0 | sort | tr '\n' ' ')
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date +%s)" "$1" "$(R dbsize)" "$kinds" "no_ttl: $nottl" "$groups" >>"$OUT/redis.tsv"
)
printf 'unix\tphase\tinstance\trss_kib\tseries\trooms\tconnections\n' | tee "$OUT/samples.tsv"
: >"$OUT/redis.tsv"
sample start

# Rolling restarts: SIGTERM one instance (in turn), wait for its exit, start it again.
restarter() {
  local i=0 pid t0
  while :; do
    for _ in $(seq "$RESTART"); do sleep 1; [ -f "$OUT/stop" ] && return 0; done
    pid=$(cat "$OUT/pid$i")
    echo "$i" >"$OUT/down"
    t0=$(date +%s%N)
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    echo "restart instance $i: exited after $((($(date +%s%N) - t0) / 1000000)) ms" >>"$OUT/restarts.log"
    start_instance "$i"
    rm -f "$OUT/down"
    i=$(((i + 1) % INSTANCES))
  done
}

SIDECARS=$(for i in $(seq 0 $((INSTANCES - 1))); do printf 'http://127.0.0.1:%s,' $((PORT + i)); done)
ADMINS=$(for i in $(seq 0 $((INSTANCES - 1))); do printf 'http://127.0.0.1:%s,' $((ADMIN_PORT + i)); done)
: >"$OUT/driver.json"
: >"$OUT/restarts.log"
for round in $(seq "$ROUNDS"); do
  SIDECAR=http://127.0.0.1:$PORT ADMIN=http://127.0.0.1:$ADMIN_PORT SECRET=$SECRET CLIENTS=$CLIENTS DURATION=$CHURN \
    SIDECARS=${SIDECARS%,} ADMINS=${ADMINS%,} DOWN_FILE=$OUT/down HUB=$HUB \
    ROUND=$round NODE_PATH=tests/client/node_modules node bench/soak/churn.cjs >>"$OUT/driver.json" &
  DRIVER=$!
  pids+=("$DRIVER")
  RESTARTER=
  if [ "$INSTANCES" -gt 1 ] && [ "$RESTART" -gt 0 ]; then restarter & RESTARTER=$!; pids+=("$RESTARTER"); fi
  while kill -0 "$DRIVER" 2>/dev/null; do sleep "$SAMPLE"; sample "churn$round"; done
  if [ -n "$RESTARTER" ]; then
    # A restart under way finishes, then no more.
    touch "$OUT/stop"
    wait "$RESTARTER" 2>/dev/null || true
    rm -f "$OUT/stop"
  fi
  for _ in $(seq $((IDLE / SAMPLE))); do sleep "$SAMPLE"; sample "idle$round"; done
done
cat "$OUT/driver.json"
cat "$OUT/restarts.log"
echo "redis keys: $(R dbsize)"
R --scan --pattern 'presence:*' | sed 's/{.*}/{..}/' | sort | uniq -c

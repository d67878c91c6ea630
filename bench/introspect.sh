#!/usr/bin/env bash
# Measures the introspection API (issue 20: "answers within 100 ms with 3
# instances and 100,000 connections between them"): INSTANCES sidecars on one
# redis-server, CONNECTIONS idle official-protocol clients (signalr-loadgen)
# spread over them in ROOMS rooms, then QUERIES requests per endpoint to the
# first instance's admin port, timed by the client and by the server
# (`cluster.elapsed_ms`). Results: bench-out/introspect-<stamp>/ (result.json,
# the probe's table); BENCHMARKS.md is not rewritten (bench/introspect.md is
# the section it includes, written by hand from result.json).
#
#   bash bench/introspect.sh                                  # 3 instances, 100,000 connections, release build
#   INSTANCES=6 bash bench/introspect.sh                      # where one process may not hold 33,334 sockets
#   CONNECTIONS=30000 bash bench/introspect.sh                # a smaller deployment
#   INTROSPECT_SMOKE=1 bash bench/introspect.sh               # seconds: debug build, 3 x 100 connections
#
# Each sidecar holds CONNECTIONS / INSTANCES client sockets, and its load
# generators as many again: both need RLIMIT_NOFILE above that. The script
# raises the soft limit to the hard one and refuses to start when it is still
# too low, saying what to change. Every process it starts is stopped by PID.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SMOKE="${INTROSPECT_SMOKE:-}"
INSTANCES="${INSTANCES:-3}"
CONNECTIONS="${CONNECTIONS:-100000}"
ROOMS="${ROOMS:-$((CONNECTIONS / 10))}"
QUERIES="${QUERIES:-200}"
[ -n "$SMOKE" ] && { CONNECTIONS=300; ROOMS=30; QUERIES=20; }
TOKEN="introspection-bench-token-0123456789"
OUT="${BENCH_OUT:-$ROOT/bench-out/introspect-${SMOKE:+smoke-}$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
say() { echo "[introspect] $*" >&2; }
die() { echo "[introspect] ERROR: $*" >&2; exit 2; }

STARTED=()
stop_pid() { # TERM, up to 10 s, then KILL; that PID only
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() { local pid; for pid in "${STARTED[@]}"; do stop_pid "$pid"; done; }
trap cleanup EXIT
trap 'say interrupted; exit 130' INT TERM

# ---------------------------------------------------------------- limits
PER_INSTANCE=$(((CONNECTIONS + INSTANCES - 1) / INSTANCES))
# One generator holds at most this many sockets; each instance gets enough.
PER_GEN_MAX=15000
GENS_PER_INSTANCE=$(((PER_INSTANCE + PER_GEN_MAX - 1) / PER_GEN_MAX))
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE="$(ulimit -n)"
NEED=$((PER_INSTANCE + 1000))
if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt "$NEED" ]; then
  die "each instance would hold $PER_INSTANCE client sockets, but RLIMIT_NOFILE is $NOFILE (hard limit $(ulimit -Hn)).
  Raise the hard limit for this shell (as root: ulimit -Hn 1048576; in a container: --ulimit nofile=1048576;
  systemd: LimitNOFILE=), or spread the connections over more instances: INSTANCES=$(((CONNECTIONS + NOFILE - 1001) / (NOFILE - 1000)))."
fi

free_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((61000 + RANDOM % 4000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  return 1
}
http_status() {
  local line
  line="$(timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && printf 'GET $2 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3 && head -n1 <&3" 2>/dev/null)" || true
  echo "$line" | awk '{print ($2 == "" ? "000" : $2)}'
}

# ---------------------------------------------------------------- build
PROFILE=release; FLAGS=(--release)
[ -n "$SMOKE" ] && { PROFILE=debug; FLAGS=(); }
say "building the sidecar and signalr-loadgen ($PROFILE)"
cargo build "${FLAGS[@]}" --quiet --bin signalr-sidecar >"$OUT/build.log" 2>&1 || die "cargo build failed: see $OUT/build.log"
cargo build "${FLAGS[@]}" --quiet -p signalr-loadgen >>"$OUT/build.log" 2>&1 || die "cargo build of loadgen failed: see $OUT/build.log"
mkdir -p "$OUT/bin"
cp "target/$PROFILE/signalr-sidecar" "target/$PROFILE/signalr-loadgen" "$OUT/bin/"

# ---------------------------------------------------------------- redis and sidecars
REDIS_PORT="$(free_port)" || die "no free port"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$OUT/redis.log" 2>&1 </dev/null &
STARTED+=("$!")
for ((i = 0; i < 50; i++)); do [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

URLS=() ADMIN_PORTS=()
for ((k = 1; k <= INSTANCES; k++)); do
  port="$(free_port)" && aport="$(free_port)" || die "no free port"
  env SIDECAR_CONNECTION_RATE_PER_IP=1000000 SIDECAR_CONNECTION_BURST_PER_IP=1000000 \
    SIDECAR_LISTEN="127.0.0.1:$port" SIDECAR_ADMIN_LISTEN="127.0.0.1:$aport" SIDECAR_REDIS_URL="$REDIS_URL" \
    SIDECAR_INSTANCE_ID="introspect-$k" SIDECAR_STREAMS=events:chat SIDECAR_ADMIN_TOKEN="$TOKEN" SIDECAR_LOG=warn \
    "$OUT/bin/signalr-sidecar" >>"$OUT/sidecar.log" 2>&1 </dev/null &
  STARTED+=("$!")
  URLS+=("http://127.0.0.1:$port") ADMIN_PORTS+=("$aport")
  for ((i = 0; i < 300; i++)); do [ "$(http_status "$aport" /readyz)" = 200 ] && break; sleep 0.1; done
  [ "$(http_status "$aport" /readyz)" = 200 ] || die "instance $k not ready: $(tail -n 5 "$OUT/sidecar.log")"
done

# ---------------------------------------------------------------- connections
say "$CONNECTIONS connections in $ROOMS rooms over $INSTANCES instances ($GENS_PER_INSTANCE generator(s) each)"
offset=0
for ((k = 0; k < INSTANCES; k++)); do
  share=$(((PER_INSTANCE + GENS_PER_INSTANCE - 1) / GENS_PER_INSTANCE))
  for ((g = 0; g < GENS_PER_INSTANCE; g++)); do
    # Idle clients held far longer than the measurement; stopped by PID.
    "$OUT/bin/signalr-loadgen" --url "${URLS[$k]}" --redis "$REDIS_URL" --stream events:chat \
      --connections "$share" --rooms "$ROOMS" --rate 0 --warmup 3600 --duration 1 --connect-rate 1500 \
      --connect-timeout 60 --source-offset "$offset" --label "introspect-$k-$g" >/dev/null 2>"$OUT/loadgen-$k-$g.log" &
    STARTED+=("$!")
    offset=$((offset + 1))
  done
done

want=$((PER_INSTANCE * INSTANCES * 99 / 100))
deadline=$((SECONDS + 60 + CONNECTIONS / 500))
while :; do
  have="$(curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:${ADMIN_PORTS[0]}/admin/api/instances" |
    python3 -c 'import json,sys; print(sum(i["connections"] for i in json.load(sys.stdin)["instances"]))' 2>/dev/null || echo 0)"
  [ "$have" -ge "$want" ] && break
  [ "$SECONDS" -lt "$deadline" ] || die "only $have of $want connections after the ramp (see $OUT/loadgen-*.log)"
  sleep 2
done
say "$have connections open; asking instance 1 $QUERIES times per endpoint"

# ---------------------------------------------------------------- measure
python3 bench/introspect_probe.py "http://127.0.0.1:${ADMIN_PORTS[0]}" "$TOKEN" "$QUERIES" "$OUT/result.json" | tee "$OUT/probe.txt"
python3 - "$OUT/result.json" "$PROFILE" "$(git rev-parse --short HEAD)" "$(nproc)" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
r.update(profile=sys.argv[2], commit=sys.argv[3], cores=int(sys.argv[4]))
json.dump(r, open(sys.argv[1], "w"), indent=1)
worst = max(e["client_ms"]["p99"] for e in r["endpoints"].values())
print(f"[introspect] {r['connections']} connections on {len(r['instances'])} instances: worst p99 {worst} ms (client side)")
EOF
say "results in $OUT"

#!/usr/bin/env bash
# Two builds side by side on one stream, each as an instance that skips
# almost every event (10 clients over 1,000 rooms), for the CPU an instance
# spends on the events it does not deliver. Both run in the same seconds on
# the same Redis, so the pair's ratio holds where the absolute figure moves
# with the host from one minute to the next (an A/A pair: 1.00-1.02).
#
#   BIN_A=/tmp/old-sidecar BIN_B=target/release/signalr-sidecar bash bench/skip_ab.sh
#
# Knobs: RATE (events/s, 1000), W (SIDECAR_READ_WINDOW_MS of both, 8),
# ENV_A / ENV_B (extra NAME=value words for one side). Prints each side's
# task-clock µs and context switches per event over 20 s. Needs perf.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
RATE=${RATE:-1000} W=${W:-8}
: "${BIN_A:?BIN_A=<sidecar binary>}" "${BIN_B:?BIN_B=<sidecar binary>}"
command -v perf >/dev/null || { echo "perf is needed" >&2; exit 2; }
cargo build --release --quiet -p signalr-loadgen
OUT="$(mktemp -d)"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$OUT"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
RP=$(port)
redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$OUT/redis.log" 2>&1 &
PIDS+=($!)
sleep 0.5
start() { # start NAME BIN ENV: prints "pid url"
  local p a
  p=$(port) a=$(port)
  # shellcheck disable=SC2086 # ENV is a list of NAME=value words
  env $3 SIDECAR_CONNECTION_RATE_PER_IP=1000000 SIDECAR_CONNECTION_BURST_PER_IP=1000000 SIDECAR_LISTEN="127.0.0.1:$p" \
    SIDECAR_ADMIN_LISTEN="127.0.0.1:$a" SIDECAR_REDIS_URL="redis://127.0.0.1:$RP" SIDECAR_INSTANCE_ID="$1" \
    SIDECAR_STREAMS=events:chat SIDECAR_LOG=warn SIDECAR_READ_WINDOW_MS="$W" "$2" >"$OUT/$1.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$a/readyz" 2>/dev/null)" = 200 ] && break
    sleep 0.1
  done
  echo "$pid http://127.0.0.1:$p"
}
read -r APID AURL < <(start a "$BIN_A" "${ENV_A:-}")
PIDS+=("$APID")
read -r BPID BURL < <(start b "$BIN_B" "${ENV_B:-}")
PIDS+=("$BPID")
target/release/signalr-loadgen --url "$AURL,$BURL" --server-pid "$APID" --redis "redis://127.0.0.1:$RP" --stream events:chat \
  --connections 20 --rooms 1000 --rate "$RATE" --warmup 3 --duration 27 --out "$OUT/lg.json" >/dev/null 2>"$OUT/lg.log" &
LG=$!
sleep 7
perf stat -e task-clock,context-switches -p "$APID" -x, -o "$OUT/a.txt" -- sleep 20 >/dev/null 2>&1 &
PA=$!
perf stat -e task-clock,context-switches -p "$BPID" -x, -o "$OUT/b.txt" -- sleep 20 >/dev/null 2>&1 &
PB=$!
wait "$PA" "$PB" "$LG"
for x in a b; do
  ms=$(grep task-clock "$OUT/$x.txt" | cut -d, -f1)
  cs=$(grep context-switches "$OUT/$x.txt" | cut -d, -f1)
  python3 -c "print('$x: %.2f us/event, %.3f switches/event' % ($ms * 1000 / 20 / $RATE, $cs / 20 / $RATE))"
done

#!/usr/bin/env bash
# Two builds side by side on one stream, each as an instance that skips
# almost every event (10 clients over 1,000 rooms), for the CPU an instance
# spends on the events it does not deliver. Both run in the same seconds on
# the same Redis, so the pair's ratio holds where the absolute figure moves
# with the host from one minute to the next. The instance started first
# comes out cheaper by up to ~7 % (it is woken first for each read), so the
# pair runs twice, each build first once, and the ratio given is the
# geometric mean of the two (an A/A pair: 1.00-1.02).
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
# pass FIRST SECOND: both sides at once, FIRST started first; each one's
# task-clock µs per event to $OUT/<side>.us, and a line per side.
pass() {
  local first=$1 second=$2 x bin env pid url pids=() urls=() lg pa pb
  for x in "$first" "$second"; do
    bin=BIN_$x env=ENV_$x
    read -r pid url < <(start "$x" "${!bin}" "${!env:-}")
    PIDS+=("$pid") pids+=("$pid") urls+=("$url")
  done
  target/release/signalr-loadgen --url "${urls[0]},${urls[1]}" --server-pid "${pids[0]}" --redis "redis://127.0.0.1:$RP" \
    --stream events:chat --connections 20 --rooms 1000 --rate "$RATE" --warmup 3 --duration 27 --out "$OUT/lg.json" \
    >/dev/null 2>"$OUT/lg.log" &
  lg=$!
  sleep 7
  perf stat -e task-clock,context-switches -p "${pids[0]}" -x, -o "$OUT/$first.txt" -- sleep 20 >/dev/null 2>&1 &
  pa=$!
  perf stat -e task-clock,context-switches -p "${pids[1]}" -x, -o "$OUT/$second.txt" -- sleep 20 >/dev/null 2>&1 &
  pb=$!
  wait "$pa" "$pb" "$lg"
  for x in "$first" "$second"; do
    ms=$(grep task-clock "$OUT/$x.txt" | cut -d, -f1)
    cs=$(grep context-switches "$OUT/$x.txt" | cut -d, -f1)
    python3 -c "print('%.3f' % ($ms * 1000 / 20 / $RATE))" >"$OUT/$x.us"
    python3 -c "print('  $x: %.2f us/event, %.3f switches/event' % ($ms * 1000 / 20 / $RATE, $cs / 20 / $RATE))"
  done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
}
echo "A first:"
pass A B
ab=$(python3 -c "print($(cat "$OUT/B.us") / $(cat "$OUT/A.us"))")
echo "B first:"
pass B A
ba=$(python3 -c "print($(cat "$OUT/B.us") / $(cat "$OUT/A.us"))")
python3 -c "print('B/A: %.3f (A first), %.3f (B first), %.3f together' % ($ab, $ba, ($ab * $ba) ** 0.5))"

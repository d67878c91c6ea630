#!/usr/bin/env bash
# Profiles the release sidecar under one short load, to find the cause of a
# missed target (BENCHMARKS.md, "Gaps").
#
#   bash bench/profile.sh TOOL [signalr-loadgen arguments...]
#
# TOOL:
#   callgrind  CPU by function (user space), instrumented only during the
#              load generator's window: callgrind_annotate, inclusive and self
#   strace     system calls per delivery (counts and time, all threads), for
#              STRACE_SECONDS (default 6) from the window's start: keep the
#              generator's --duration longer. ptrace stops the sidecar at
#              every call, which slows it enough to change what it does (a
#              reader that falls behind reads several events at once)
#   syscalls   the same count without stopping it: the kernel's syscall
#              tracepoints counted by `perf stat` (mounts tracefs if needed),
#              for STRACE_SECONDS; the figure BENCHMARKS.md gives
#   massif     heap by allocation site at the peak (ms_print)
#   perf       perf record -g (only where `perf stat -e instructions true` works)
#
# Example: bash bench/profile.sh callgrind --connections 1000 --rooms 100 --rate 50 --duration 10
# (SIDECAR_ROUTES=<file> to profile with another routing file.)
# Output: bench-out/profile-<tool>-<stamp>/ (report.txt and the raw data).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TOOL="${1:?usage: bench/profile.sh callgrind|strace|syscalls|massif|perf [loadgen arguments...]}"
shift
OUT="$ROOT/bench-out/profile-$TOOL-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
say() { echo "[profile] $*" >&2; }
die() { echo "[profile] ERROR: $*" >&2; exit 2; }
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; sleep 1; for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

{ cargo build --release --quiet --bin signalr-sidecar && cargo build --release --quiet -p signalr-loadgen; } 2>"$OUT/build.log" || die "build failed: $(tail -n 5 "$OUT/build.log")"
port() { local p; while :; do p=$((20000 + RANDOM % 12000)); (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }; done; }
RPORT=$(port) CPORT=$(port) APORT=$(port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$OUT/redis.log" 2>&1 &
PIDS+=("$!")
sleep 0.5

ENVS=(SIDECAR_CONNECTION_RATE_PER_IP=1000000 SIDECAR_CONNECTION_BURST_PER_IP=1000000 SIDECAR_LISTEN="127.0.0.1:$CPORT"
  SIDECAR_ADMIN_LISTEN="127.0.0.1:$APORT" SIDECAR_REDIS_URL="redis://127.0.0.1:$RPORT" SIDECAR_INSTANCE_ID=profile
  SIDECAR_STREAMS=events:chat SIDECAR_LOG=warn SIDECAR_HANDSHAKE_TIMEOUT_SECONDS=120
  SIDECAR_ROUTES="${SIDECAR_ROUTES:-protocol/routes.toml}")
BIN="${SIDECAR_BIN:-$ROOT/target/release/signalr-sidecar}"
case $TOOL in
  callgrind) env "${ENVS[@]}" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" "$BIN" >"$OUT/sidecar.log" 2>&1 & ;;
  massif) env "${ENVS[@]}" valgrind --tool=massif --threshold=0.2 --massif-out-file="$OUT/massif.out" "$BIN" >"$OUT/sidecar.log" 2>&1 & ;;
  perf) env "${ENVS[@]}" perf record -g -o "$OUT/perf.data" "$BIN" >"$OUT/sidecar.log" 2>&1 & ;;
  strace | syscalls) env "${ENVS[@]}" "$BIN" >"$OUT/sidecar.log" 2>&1 & ;;
  *) die "unknown tool $TOOL" ;;
esac
SPID=$!
PIDS+=("$SPID")
for ((i = 0; i < 600; i++)); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$APORT/readyz" 2>/dev/null)" = 200 ] && break
  sleep 0.1
done
TARGET_PID=$SPID
# The sidecar's own count of frames delivered (sidecar_events_delivered_total).
delivered() { curl -s "127.0.0.1:$APORT/metrics" | awk '/^sidecar_events_delivered_total/ {print $2}'; }
[ "$TOOL" = perf ] && TARGET_PID=$(pgrep -P "$SPID" | head -n1)

WARMUP=5
# The calls `syscalls` names one by one (the total counts every call).
SYSCALLS=(sendto sendmsg write writev recvfrom read epoll_wait futex io_uring_enter)
if [ "$TOOL" = syscalls ] && ! [ -e /sys/kernel/tracing/events/raw_syscalls ]; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || die "no tracefs at /sys/kernel/tracing (perf stat needs its syscall tracepoints)"
fi
"$ROOT/target/release/signalr-loadgen" --url "http://127.0.0.1:$CPORT" --redis "redis://127.0.0.1:$RPORT" \
  --server-pid "$TARGET_PID" --warmup "$WARMUP" --connect-timeout 120 --out "$OUT/loadgen.json" "$@" >/dev/null 2>"$OUT/loadgen.log" &
LG=$!
PIDS+=("$LG")
# The window opens after the ramp and the warm-up: watch the generator's log.
until grep -q "measuring" "$OUT/loadgen.log" 2>/dev/null || ! kill -0 "$LG" 2>/dev/null; do sleep 0.2; done
say "window open"
case $TOOL in
  callgrind) callgrind_control -i on "$SPID" >/dev/null ;;
  strace)
    # Counted for STRACE_SECONDS inside the window, not up to the generator's
    # end: its clients closing would be counted as if they were deliveries'.
    DELIVERED_BEFORE=$(delivered)
    timeout -s INT "${STRACE_SECONDS:-6}" strace -c -f -p "$SPID" -o "$OUT/strace.txt" || true
    DELIVERED_AFTER=$(delivered) ;;
  syscalls)
    DELIVERED_BEFORE=$(delivered)
    perf stat -x, -o "$OUT/perf-stat.csv" -e "raw_syscalls:sys_enter,$(printf 'syscalls:sys_enter_%s,' "${SYSCALLS[@]}" | sed 's/,$//')" \
      -p "$SPID" -- sleep "${STRACE_SECONDS:-6}" || die "perf stat failed (no tracefs?)"
    DELIVERED_AFTER=$(delivered) ;;
esac
wait "$LG" || true
case $TOOL in
  callgrind) callgrind_control -i off "$SPID" >/dev/null; callgrind_control -d "$SPID" >/dev/null ;;
esac
kill -TERM "$SPID" 2>/dev/null || true
for ((i = 0; i < 300; i++)); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("delivered in window:", round(r["delivered_per_sec"]*r["window_s"]), "| events:", r["events_measured"], "| p50/p99 ms:", r["latency_ms"]["p50"], r["latency_ms"]["p99"])' "$OUT/loadgen.json" >"$OUT/report.txt" || true
case $TOOL in
  callgrind)
    f="$OUT/callgrind.out.1" # the dump at the end of the window
    { echo "== inclusive"; callgrind_annotate --inclusive=yes "$f" | head -n 70; echo "== self"; callgrind_annotate "$f" | head -n 60; } >>"$OUT/report.txt" ;;
  massif) ms_print "$OUT/massif.out" | head -n 200 >>"$OUT/report.txt" ;;
  strace)
    cat "$OUT/strace.txt" >>"$OUT/report.txt"
    # Per frame the sidecar delivered while strace counted (its own counter,
    # read when strace started and after it stopped: the same span).
    python3 - "$OUT/strace.txt" "$DELIVERED_BEFORE" "$DELIVERED_AFTER" >>"$OUT/report.txt" <<'PY'
import sys
calls = {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 5 and f[-1] not in ("syscall", "total") and f[3].isdigit():
        calls[f[-1]] = int(f[3])
frames = int(float(sys.argv[3])) - int(float(sys.argv[2]))
total = sum(calls.values())
print(f"frames delivered while counting: {frames}; system calls: {total}; per frame: {total / max(frames, 1):.2f}")
for name, n in sorted(calls.items(), key=lambda kv: -kv[1])[:8]:
    print(f"  {name}: {n / max(frames, 1):.3f} per frame")
PY
    ;;
  syscalls)
    python3 - "$OUT/perf-stat.csv" "$DELIVERED_BEFORE" "$DELIVERED_AFTER" >>"$OUT/report.txt" <<'PY'
import sys
calls, total = {}, 0
for line in open(sys.argv[1]):
    f = line.strip().split(",")
    if len(f) < 3 or not f[0].isdigit():
        continue
    if f[2] == "raw_syscalls:sys_enter":
        total = int(f[0])
    else:
        calls[f[2].removeprefix("syscalls:sys_enter_")] = int(f[0])
frames = int(float(sys.argv[3])) - int(float(sys.argv[2]))
print(f"frames delivered while counting: {frames}; system calls: {total}; per frame: {total / max(frames, 1):.2f}")
for name, n in sorted(calls.items(), key=lambda kv: -kv[1]):
    if n:
        print(f"  {name}: {n / max(frames, 1):.3f} per frame")
rest = total - sum(calls.values())
print(f"  (others: {rest / max(frames, 1):.3f} per frame)")
PY
    ;;
  perf) perf report -i "$OUT/perf.data" --no-children --stdio 2>/dev/null | head -n 120 >>"$OUT/report.txt" ;;
esac
say "report: $OUT/report.txt"

#!/usr/bin/env bash
# The benchmark of signalr-sidecar: the scenarios of issue 9 against a
# release build, with loadgen/ (signalr-loadgen) as the clients and the
# publisher, and BENCHMARKS.md written from the results.
#
#   bash bench/run.sh                          # every scenario (~15-20 min, both cores)
#   BENCH_SCENARIOS="c d" bash bench/run.sh    # some of them (results in bench-out/ only)
#   BENCH_QUICK=1 bash bench/run.sh            # every scenario shrunk (~3 min): checks the script
#   BENCH_SMOKE=1 bash bench/run.sh            # seconds: one tiny run, debug build, no BENCHMARKS.md
#
# Scenarios: a (100 users / 50 rooms / 10 ev/s, JSON and MessagePack),
# b (50 -> 200 users at the same rate per user), c (10,000 connections /
# 1,000 rooms / 1,000 ev/s, JSON and both protocols mixed, then JSON with
# stateful-reconnect clients: c-stateful), stateful (c-stateful alone; issue
# 17), d (5,000
# connections in one room, the rate stepped up until delivery falls behind),
# idle (10,000 and 100,000 idle connections), typing (the typing trace),
# instances (c's load on 1, 2 and 3 instances), instances-by-room (the same
# with each room's members on one instance; not in the default list),
# instances-paired (1 and 3 instances at the same time, rooms whole on one
# instance; not in the default list).
#
# Each scenario gets a fresh sidecar (so VmHWM and CPU time are its own) on
# free loopback ports, against one private redis-server (--save "" and
# --appendonly no) whose stream is emptied in between. Every process this
# script starts is remembered by PID and stopped by PID.
#
# Knobs: BENCH_SCENARIOS, BENCH_OUT (results folder, default
# bench-out/<stamp>), BENCH_WRITE=1 (rewrite BENCHMARKS.md after a partial
# run), SIDECAR_BENCH_ENV ("SIDECAR_X=1 ..." extra sidecar settings),
# BENCH_B_ROUNDS (rounds of b, default 3), BENCH_INSTANCE_ROUNDS (series of
# the instance scenarios, default 1), BENCH_SIDECAR_BIN (measure that
# binary instead of this checkout's build), BENCH_NOTES ("note | note": lines
# for the page's Machine section, e.g. what else ran meanwhile).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SMOKE="${BENCH_SMOKE:-}"
STREAM="events:chat"
STAMP="$(date +%Y%m%d-%H%M%S)"
OUT="${BENCH_OUT:-$ROOT/bench-out/${SMOKE:+smoke-}$STAMP}"
mkdir -p "$OUT"

say() { echo "[bench] $*" >&2; }
die() { echo "[bench] ERROR: $*" >&2; exit 2; }

# ---------------------------------------------------------------- processes
STARTED=()
SIDECAR_PIDS=()
SIDECAR_URLS=()
PORT_RANGE_SAVED=""

stop_pid() { # stop_pid PID: TERM, up to 10 s, then KILL; that PID only
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { say "pid $pid still alive after 10 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local pid
  for pid in "${STARTED[@]}"; do stop_pid "$pid"; done
  if [ -n "$PORT_RANGE_SAVED" ]; then
    sysctl -qw net.ipv4.ip_local_port_range="$PORT_RANGE_SAVED" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT TERM

# ---------------------------------------------------------------- system limits
# 100,000 client sockets plus as many server sockets: descriptors, and
# ephemeral ports (the load generator also spreads over 127.0.0.x).
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
NOFILE="$(ulimit -n)"
PORT_RANGE="$(tr -s '\t ' ' ' </proc/sys/net/ipv4/ip_local_port_range)"
PORT_RANGE_NOTE="unchanged ($PORT_RANGE)"
SERVER_PORT_LO=20000 SERVER_PORT_SPAN=12000
if [ -z "$SMOKE" ]; then
  if sysctl -qw net.ipv4.ip_local_port_range="1024 65000" 2>/dev/null; then
    PORT_RANGE_SAVED="$PORT_RANGE"
    PORT_RANGE_NOTE="1024-65000 for the run (was $PORT_RANGE, restored after)"
    SERVER_PORT_LO=65001 SERVER_PORT_SPAN=500 # listeners above the ephemeral range
  else
    PORT_RANGE_NOTE="could not be widened (sysctl refused), left at $PORT_RANGE"
  fi
fi

free_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((SERVER_PORT_LO + RANDOM % SERVER_PORT_SPAN))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  return 1
}

http_status() { # http_status PORT PATH: the status code of a GET, or 000
  local line
  line="$(timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && printf 'GET $2 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3 && head -n1 <&3" 2>/dev/null)" || true
  echo "$line" | awk '{print ($2 == "" ? "000" : $2)}'
}

# ---------------------------------------------------------------- build
PROFILE=release
[ -n "$SMOKE" ] && PROFILE=debug
FLAGS=(); [ "$PROFILE" = release ] && FLAGS=(--release)
say "building the sidecar and signalr-loadgen ($PROFILE)"
cargo build "${FLAGS[@]}" --quiet --bin signalr-sidecar >"$OUT/build.log" 2>&1 ||
  die "cargo build of the sidecar failed: $(tail -n 20 "$OUT/build.log")"
cargo build "${FLAGS[@]}" --quiet -p signalr-loadgen >>"$OUT/build.log" 2>&1 ||
  die "cargo build of signalr-loadgen failed: $(tail -n 20 "$OUT/build.log")"
# Copies, so a rebuild in this tree during the run does not change what is measured.
mkdir -p "$OUT/bin"
cp "$ROOT/target/$PROFILE/signalr-sidecar" "$ROOT/target/$PROFILE/signalr-loadgen" "$OUT/bin/"
# BENCH_SIDECAR_BIN=<path>: measure that build instead (an A/B against an
# earlier commit's binary, with the same generator and scenarios).
if [ -n "${BENCH_SIDECAR_BIN:-}" ]; then
  cp "$BENCH_SIDECAR_BIN" "$OUT/bin/signalr-sidecar" || die "BENCH_SIDECAR_BIN=$BENCH_SIDECAR_BIN: cannot copy"
fi
SIDECAR_BIN="$OUT/bin/signalr-sidecar"
LOADGEN_BIN="$OUT/bin/signalr-loadgen"

# ---------------------------------------------------------------- redis
command -v redis-server >/dev/null || die "redis-server is needed (apt-get install redis-server)"
# start_redis PORT LOG: a private redis-server on PORT, once it answers;
# its PID in REDIS_STARTED_PID (and in STARTED, so it is stopped at exit).
start_redis() {
  local i
  redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly no --protected-mode no \
    --daemonize no >"$2" 2>&1 </dev/null &
  REDIS_STARTED_PID=$!
  STARTED+=("$REDIS_STARTED_PID")
  for ((i = 0; i < 50; i++)); do
    [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return 0
    kill -0 "$REDIS_STARTED_PID" 2>/dev/null || die "redis-server exited: $(tail -n 5 "$2")"
    sleep 0.1
  done
  die "redis-server does not answer on $1"
}
REDIS_PORT="$(free_port)" || die "no free port for redis"
start_redis "$REDIS_PORT" "$OUT/redis.log"
REDIS_PID=$REDIS_STARTED_PID
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

# ---------------------------------------------------------------- sidecars
start_sidecars() { # start_sidecars N: fresh instances bench-1..N, each ready
  local n=$1 k port aport code i
  SIDECAR_PIDS=() SIDECAR_URLS=()
  redis-cli -p "$REDIS_PORT" del "$STREAM" >/dev/null
  for ((k = 1; k <= n; k++)); do
    port="$(free_port)" && aport="$(free_port)" || die "no free port"
    [ "$port" != "$aport" ] || aport="$(free_port)"
    # The per-address connection limit guards against floods from one
    # client; the generator is one "client" ramping thousands of connections.
    # shellcheck disable=SC2086 # SIDECAR_BENCH_ENV is a list of NAME=value words
    env SIDECAR_CONNECTION_RATE_PER_IP=1000000 SIDECAR_CONNECTION_BURST_PER_IP=1000000 \
      SIDECAR_ROUTES="${SIDECAR_ROUTES:-protocol/routes.toml}" SIDECAR_LISTEN="127.0.0.1:$port" SIDECAR_ADMIN_LISTEN="127.0.0.1:$aport" \
      SIDECAR_REDIS_URL="$REDIS_URL" SIDECAR_INSTANCE_ID="bench-$k" SIDECAR_STREAMS="$STREAM" \
      SIDECAR_LOG="${SIDECAR_LOG:-warn}" ${SIDECAR_BENCH_ENV:-} "$SIDECAR_BIN" >>"$OUT/sidecar.log" 2>&1 </dev/null &
    SIDECAR_PIDS+=("$!")
    STARTED+=("$!")
    SIDECAR_URLS+=("http://127.0.0.1:$port")
    for ((i = 0; i < 300; i++)); do
      code="$(http_status "$aport" /readyz)"
      [ "$code" = 200 ] && break
      kill -0 "${SIDECAR_PIDS[-1]}" 2>/dev/null || die "the sidecar exited: $(tail -n 5 "$OUT/sidecar.log")"
      sleep 0.1
    done
    [ "$code" = 200 ] || die "no 200 from /readyz on $aport within 30 s (last: $code)"
  done
}

stop_sidecars() {
  local pid
  for pid in "${SIDECAR_PIDS[@]}"; do stop_pid "$pid"; done
  SIDECAR_PIDS=() SIDECAR_URLS=()
}

join_by() { local IFS=$1; shift; echo "$*"; }

# run LABEL INSTANCES [loadgen arguments...]: one scenario on fresh sidecars.
# Writes $OUT/LABEL.json (the result line) and $OUT/LABEL.cmd (how to run it).
run() {
  local label=$1 n=$2 rc=0
  shift 2
  start_sidecars "$n"
  local args=(--url "$(join_by , "${SIDECAR_URLS[@]}")" --server-pid "$(join_by , "${SIDECAR_PIDS[@]}")" --redis-pid "$REDIS_PID"
    --redis "$REDIS_URL" --stream "$STREAM" --label "$label" --out "$OUT/$label.json" "$@")
  echo "${SIDECAR_ROUTES:+SIDECAR_ROUTES=$(basename "$SIDECAR_ROUTES") }signalr-loadgen $*" >"$OUT/$label.cmd"
  say "$label: $* ($n instance(s))"
  timeout -k 10 900 "$LOADGEN_BIN" "${args[@]}" >/dev/null 2>"$OUT/$label.log" || rc=$?
  stop_sidecars
  [ -s "$OUT/$label.json" ] || printf '{"label":"%s","error":"loadgen exit %s"}\n' "$label" "$rc" >"$OUT/$label.json"
  say "$label: $(summary "$OUT/$label.json")"
  return "$rc"
}

# run_split LABEL PARTS [loadgen arguments...]: PARTS sidecars, each with its
# own load generator (same arguments, its own source address), in parallel;
# the results are summed into $OUT/LABEL.json. For connection counts past
# what one process may open (RLIMIT_NOFILE, when it cannot be raised).
run_split() {
  local label=$1 n=$2 k pids=()
  shift 2
  start_sidecars "$n"
  echo "signalr-loadgen $* (x$n in parallel, one per instance)" >"$OUT/$label.cmd"
  say "$label: $n x ($*)"
  for ((k = 0; k < n; k++)); do
    timeout -k 10 900 "$LOADGEN_BIN" --url "${SIDECAR_URLS[$k]}" --server-pid "${SIDECAR_PIDS[$k]}" --source-offset "$k" \
      --label "$label-$k" --out "$OUT/$label-$k.json" "$@" >/dev/null 2>"$OUT/$label-$k.log" &
    pids+=("$!")
    STARTED+=("$!")
  done
  for k in "${pids[@]}"; do wait "$k" || true; done
  stop_sidecars
  python3 - "$OUT" "$label" "$n" <<'EOF2'
import json, sys
out, label, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
parts = []
for k in range(n):
    try: parts.append(json.load(open(f"{out}/{label}-{k}.json")))
    except (OSError, ValueError) as e: parts.append({"error": str(e)})
bad = [p["error"] for p in parts if "error" in p]
if bad:
    json.dump({"label": label, "error": "; ".join(bad)}, open(f"{out}/{label}.json", "w")); sys.exit()
r = dict(parts[0]); r["label"] = label; r["instances"] = n
for key in ("connections", "joined", "connect_failures", "join_failures", "disconnects", "received_total"):
    r[key] = sum(p[key] for p in parts)
r["connect_s"] = max(p["connect_s"] for p in parts)
r["errors"] = {k: v for p in parts for k, v in p["errors"].items()}
srv = {key: sum(p["server"][key] for p in parts) for key in ("rss_kb", "rss_kb_before", "hwm_kb", "cpu_s", "cpu_s_run")}
srv["pids"] = [pid for p in parts for pid in p["server"]["pids"]]
srv["hwm_kb_each"] = [h for p in parts for h in p["server"]["hwm_kb_each"]]
srv["bytes_per_conn"] = srv["rss_kb"] * 1024 // max(r["joined"], 1)
srv["bytes_per_conn_marginal"] = (srv["rss_kb"] - srv["rss_kb_before"]) * 1024 // max(r["joined"], 1)
srv["us_per_delivery"] = None
r["server"] = srv
r["parts"] = parts
json.dump(r, open(f"{out}/{label}.json", "w"))
EOF2
  say "$label: $(summary "$OUT/$label.json")"
}

summary() { # one human line of a result
  python3 - "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
if "error" in r:
    print("ERROR", r["error"]); sys.exit()
l, s = r["latency_ms"], r.get("server") or {}
t = r.get("typing")
extra = f" typing reduction {t['frame_reduction_pct']}% first-indicator p99 {t['first_indicator_ms']['p99']} ms" if t else ""
print(f"joined {r['joined']}/{r['connections']} delivered/s {r['delivered_per_sec']} of {r['offered_per_sec']} "
      f"missing {r['missing']} dup {r['duplicates']} p50 {l['p50']} p99 {l['p99']} max {l['max']} ms "
      f"server {s.get('us_per_delivery')} us/delivery, cpu {s.get('cpu_pct')}%, rss {s.get('rss_kb')} kB, "
      f"{s.get('bytes_per_conn_marginal')} B/conn marginal{extra}")
EOF
}

# ---------------------------------------------------------------- smoke
if [ -n "$SMOKE" ]; then
  run smoke 1 --protocol mixed --connections 20 --rooms 5 --rate 50 --warmup 1 --duration 2 --drain 3 \
    --connect-rate 200 --strict ||
    die "smoke run failed: $(cat "$OUT/smoke.json") (log: $OUT/smoke.log)"
  say "smoke run passed"
  exit 0
fi

# ---------------------------------------------------------------- scenarios
SCENARIOS="${BENCH_SCENARIOS:-a b c d idle typing instances}"
# The instance scenarios' ratios move with the machine's noise between one
# run and the next; BENCH_INSTANCE_ROUNDS repeats the 1, 2, 3 series (the
# page reports each round's ratio and their median).
ROUNDS_I="${BENCH_INSTANCE_ROUNDS:-1}"
[[ "$ROUNDS_I" =~ ^[1-9][0-9]*$ ]] || die "BENCH_INSTANCE_ROUNDS must be a whole number from 1, got '$ROUNDS_I'"
# paired_series ROOMS: c's load on 1 instance and on 3 at the same time, each set with its own
# redis-server and its own generator (rooms whole on one instance, as in
# instances-by-room): the two see the same machine, so the ratio is not
# moved by what the shared host does from one minute to the next (rounds
# of the sequential series ranged 0.97x-1.43x in one run). Labels
# instances-paired-1 and instances-paired-3 (-rK for round K).
paired_series() {
  local rooms=$1 r tag label port2 pid2
  port2="$(free_port)" || die "no free port for the second redis"
  start_redis "$port2" "$OUT/redis-2.log"
  pid2=$REDIS_STARTED_PID
  local load=(--connections "$BIG" --rooms "$rooms" --rate 1000 --warmup "$WARM" --duration $((WIN * 2 / 3)))
  for ((r = 1; r <= ROUNDS_I; r++)); do
    tag=""
    [ "$r" -gt 1 ] && tag="-r$r"
    local saved=("$REDIS_PORT" "$REDIS_URL")
    REDIS_PORT=$port2 REDIS_URL="redis://127.0.0.1:$port2"
    start_sidecars 3
    local three_pids=("${SIDECAR_PIDS[@]}") three_urls=("${SIDECAR_URLS[@]}")
    REDIS_PORT=${saved[0]} REDIS_URL=${saved[1]}
    start_sidecars 1
    local one="instances-paired-1$tag" three="instances-paired-3$tag"
    echo "signalr-loadgen ${load[*]} (beside $three)" >"$OUT/$one.cmd"
    echo "signalr-loadgen ${load[*]} (beside $one)" >"$OUT/$three.cmd"
    say "$one and $three at once: ${load[*]}"
    timeout -k 10 900 "$LOADGEN_BIN" --url "${SIDECAR_URLS[0]}" --server-pid "${SIDECAR_PIDS[0]}" --redis-pid "$REDIS_PID" \
      --redis "$REDIS_URL" --stream "$STREAM" --label "$one" --out "$OUT/$one.json" "${load[@]}" >/dev/null 2>"$OUT/$one.log" &
    local lg1=$!
    timeout -k 10 900 "$LOADGEN_BIN" --url "$(join_by , "${three_urls[@]}")" --server-pid "$(join_by , "${three_pids[@]}")" \
      --redis-pid "$pid2" --redis "redis://127.0.0.1:$port2" --stream "$STREAM" --label "$three" --out "$OUT/$three.json" \
      "${load[@]}" >/dev/null 2>"$OUT/$three.log" &
    local lg3=$!
    wait "$lg1" || true
    wait "$lg3" || true
    stop_sidecars
    SIDECAR_PIDS=("${three_pids[@]}")
    stop_sidecars
    for label in "$one" "$three"; do
      [ -s "$OUT/$label.json" ] || printf '{"label":"%s","error":"loadgen failed"}\n' "$label" >"$OUT/$label.json"
      say "$label: $(summary "$OUT/$label.json")"
    done
  done
  stop_pid "$pid2"
}

# instance_series PREFIX ROOMS: c's load on 1, 2 and 3 instances, ROUNDS_I
# times interleaved; labels PREFIX-N, then PREFIX-N-r2, PREFIX-N-r3, ...
instance_series() {
  local prefix=$1 rooms=$2 r n tag
  for ((r = 1; r <= ROUNDS_I; r++)); do
    tag=""
    [ "$r" -gt 1 ] && tag="-r$r"
    for n in 1 2 3; do
      run "$prefix-$n$tag" "$n" --connections "$BIG" --rooms "$rooms" --rate 1000 --warmup "$WARM" \
        --duration $((WIN * 2 / 3)) || true
    done
  done
}
python3 - "$OUT/meta.json" "$NOFILE" "$PORT_RANGE_NOTE" "$SCENARIOS" "${BENCH_NOTES:-}" "${BENCH_SIDECAR_BIN:-}" <<'EOF'
import json, os, platform, subprocess, sys
def sh(*c):
    try: return subprocess.run(c, capture_output=True, text=True).stdout.strip()
    except OSError: return "?"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
json.dump({"nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem / 1048576, 1),
           "kernel": platform.release(), "rustc": sh("rustc", "--version"),
           "redis": sh("redis-server", "--version"), "commit": sh("git", "rev-parse", "--short", "HEAD"),
           "dirty": bool(sh("git", "status", "--porcelain", "--", "src", "Cargo.toml")),
           "nofile": sys.argv[2], "port_range": sys.argv[3], "scenarios": sys.argv[4],
           "started": sh("date", "-u", "+%Y-%m-%dT%H:%M:%SZ"),
           "notes": [n.strip() for n in sys.argv[5].split("|") if n.strip()]
                    + ([f"sidecar binary: {sys.argv[6]} (BENCH_SIDECAR_BIN), not this checkout's build"] if sys.argv[6] else [])},
          open(sys.argv[1], "w"), indent=1)
EOF

# Sizes and durations; BENCH_QUICK=1 shrinks every scenario to check the
# script end to end in a couple of minutes (its numbers mean little).
if [ -n "${BENCH_QUICK:-}" ]; then
  WIN=4 WIN_B=5 WIN_T=10 WARM=1 BIG=1000 BIG_ROOMS=100 BCAST=500 IDLE=1000 SPLIT=300 RATES="5 20"
else
  WIN=30 WIN_B=30 WIN_T=60 WARM=5 BIG=10000 BIG_ROOMS=1000 BCAST=5000 IDLE=10000 SPLIT=16667 RATES="2 5 10 20 40 60 80 100 150"
fi

# c's load with clients that negotiated stateful reconnect (issue 17): the
# server numbers and keeps every frame until the client's Ack (at most one a
# second per connection, as @microsoft/signalr sends them).
run_c_stateful() {
  run c-stateful 1 --protocol json --stateful --connections "$BIG" --rooms "$BIG_ROOMS" --rate 1000 --warmup "$WARM" --duration "$WIN" || true
}

for s in $SCENARIOS; do
  case $s in
    a)
      # --redis-probe: a blocked XREAD beside the clients times the Redis hop alone.
      run a-json 1 --protocol json --connections 100 --rooms 50 --rate 10 --warmup "$WARM" --duration "$WIN" --redis-probe || true
      run a-msgpack 1 --protocol messagepack --connections 100 --rooms 50 --rate 10 --warmup "$WARM" --duration "$WIN" --redis-probe || true
      ;;
    b)
      # The same rate per user as a (0.1 events/s per user, 2 users per room).
      # Sub-millisecond medians move by ~5 % from one run to the next on a
      # shared VM, so each size runs BENCH_B_ROUNDS times, the sizes
      # interleaved, and the report compares the sizes' medians.
      for ((round = 1; round <= ${BENCH_B_ROUNDS:-3}; round++)); do
        for users in 50 100 150 200; do
          run "b-$users-r$round" 1 --connections "$users" --rooms $((users / 2)) --rate "$(awk -v u="$users" 'BEGIN { print u / 10 }')" \
            --warmup "$WARM" --duration "$WIN_B" --redis-probe || true
        done
      done
      ;;
    c)
      run c-json 1 --protocol json --connections "$BIG" --rooms "$BIG_ROOMS" --rate 1000 --warmup "$WARM" --duration "$WIN" || true
      run c-mixed 1 --protocol mixed --connections "$BIG" --rooms "$BIG_ROOMS" --rate 1000 --warmup "$WARM" --duration "$WIN" || true
      run_c_stateful
      ;;
    stateful)
      run_c_stateful
      ;;
    d)
      # One step with the default routing file (presence on): presence is
      # kept for authenticated users only and the generator connects without
      # a token, so no UserJoined storm (N^2/2 frames while a room of 5,000
      # ramps, the first run's Gaps 2). The steps that measure fan-out run on
      # a copy with presence off, which is what they exercise either way.
      run d-default-2 1 --connections "$BCAST" --rooms 1 --rate 2 --warmup 3 --duration $((WIN / 2)) --drain 10 || true
      sed 's/^presence = true/presence = false/' protocol/routes.toml >"$OUT/routes-no-presence.toml"
      behind=0
      for rate in ${BENCH_BROADCAST_RATES:-$RATES}; do
        SIDECAR_ROUTES="$OUT/routes-no-presence.toml" \
          run "d-$rate" 1 --connections "$BCAST" --rooms 1 --rate "$rate" --warmup 3 --duration $((WIN / 2)) --drain 10 || true
        if python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r.get("expected_deliveries",0) and r["missing"] <= r["expected_deliveries"]/100 and r["delivered_per_sec"] >= 0.95*r["offered_per_sec"] else 1)' "$OUT/d-$rate.json"; then
          behind=0
        else
          behind=$((behind + 1))
          [ "$behind" -ge 2 ] && break
        fi
      done
      ;;
    idle)
      run idle-10k 1 --connections "$IDLE" --rooms $((IDLE / 10)) --rate 0 --warmup 5 --duration 10 --connect-rate 4000 || true
      if [ "$NOFILE" -ge 200100 ]; then
        run idle-100k 1 --connections $((IDLE * 10)) --rooms "$IDLE" --rate 0 --warmup 5 --duration 10 --connect-rate 4000 \
          --source-ips 4 --connect-timeout 60 || true
      else
        # One process may not hold 100,000 sockets here: six instances of
        # 16,667, each with its own generator and source address.
        run_split idle-100k 6 --connections "$SPLIT" --rooms $((SPLIT / 10)) --rate 0 --warmup 5 --duration 10 \
          --connect-rate 700 --connect-timeout 60
      fi
      ;;
    typing)
      run typing 1 --typing-trace --connections 500 --rooms 50 --typists-per-room 10 --warmup 10 --duration "$WIN_T" --drain 3 || true
      ;;
    instances)
      instance_series instances "$BIG_ROOMS"
      ;;
    instances-by-room)
      # The same load with every room's members on one instance: the
      # generator gives connection i room i mod ROOMS and instance i mod N,
      # so with a room count that 2 and 3 divide each room stays whole and
      # an instance skips the two thirds (half) of the events it serves no
      # one in (session affinity by room; README, *Scaling out*).
      instance_series instances-by-room $((BIG_ROOMS / 6 * 6 + 6))
      ;;
    instances-paired)
      # 1 and 3 instances at the same time (see paired_series).
      paired_series $((BIG_ROOMS / 6 * 6 + 6))
      ;;
    *) say "unknown scenario '$s' (known: a b c stateful d idle typing instances instances-by-room instances-paired)" ;;
  esac
done
date -u +%Y-%m-%dT%H:%M:%SZ >"$OUT/finished_at"

if { [ -z "${BENCH_SCENARIOS:-}" ] && [ -z "${BENCH_QUICK:-}" ]; } || [ -n "${BENCH_WRITE:-}" ]; then
  python3 bench/report.py "$OUT" >"$ROOT/BENCHMARKS.md" || die "report rendering failed"
  say "wrote BENCHMARKS.md (raw results: $OUT)"
else
  python3 bench/report.py "$OUT" >"$OUT/BENCHMARKS.md" || die "report rendering failed"
  say "partial run: $OUT/BENCHMARKS.md (BENCH_WRITE=1 to rewrite the one at the root)"
fi

#!/usr/bin/env python3
"""Renders BENCHMARKS.md from one bench/run.sh results folder.

    python3 bench/report.py bench-out/<stamp> > BENCHMARKS.md

Reads meta.json and one <label>.json (the load generator's result line) and
<label>.cmd per run; adds bench/gaps.md (the profiled causes of missed
targets, written by hand), bench/compare.md (the comparison with the
Socket.IO and Centrifuge peers, written by bench/compare.sh), bench/roster.md
(the typing roster's frames, from a unit test) and bench/introspect.md (the
introspection API's figures, from bench/introspect.sh) when they exist.
"""

import json
import os
import re
import sys

OUT = sys.argv[1]
HERE = os.path.dirname(os.path.abspath(__file__))


def load(label):
    try:
        with open(os.path.join(OUT, label + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def cmd(label):
    try:
        with open(os.path.join(OUT, label + ".cmd")) as f:
            return f.read().strip()
    except OSError:
        return ""


def ok(r):
    return r is not None and "error" not in r


def num(v, digits=2):
    if v is None:
        return "-"
    if isinstance(v, (int, float)) and abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)


def verdict(passed):
    return "**met**" if passed else "**missed**"


meta = json.load(open(os.path.join(OUT, "meta.json")))
labels = [f[:-5] for f in os.listdir(OUT) if f.endswith(".json") and f != "meta.json"]
labels = [label for label in labels if not re.fullmatch(r".*-\d+-\d+|idle-100k-\d+", label)]
R = {label: load(label) for label in labels}
R = {k: v for k, v in R.items() if v is not None}

print("# Benchmarks")
print()
print(f"Measured {meta['started']} by `bash bench/run.sh` at commit `{meta['commit']}`"
      f"{' (with uncommitted changes in src/)' if meta.get('dirty') else ''}. Targets and scenarios: issue 9.")
print("Raw results: one JSON line per run from `signalr-loadgen`, repeated at the end of this page.")
print()
print("## Reproduce")
print()
print("```sh")
print("bash bench/run.sh                               # every row below (~20 min, both cores), rewrites this page")
print('BENCH_SCENARIOS="c" bash bench/run.sh           # one scenario: a b c stateful d idle typing instances (results in bench-out/)')
print('BENCH_INSTANCE_ROUNDS=5 SIDECAR_BENCH_ENV="SIDECAR_READ_WINDOW_MS=8" BENCH_SCENARIOS="instances-by-room instances" bash bench/run.sh')
print("                                                # 3 instances against 1 in five interleaved rounds, with a read window, and their median")
print("BENCH_SMOKE=1 bash bench/run.sh                 # seconds-long smoke run (debug build), exits non-zero on loss")
print("bash bench/compare.sh                           # the sidecar against the Centrifuge and Socket.IO peers, rewrites that section")
print("bash bench/profile.sh syscalls --connections 10000 --rooms 1000 --rate 1000 --duration 12   # system calls per delivery (perf tracepoints)")
print("```")
print()
print("## Machine")
print()
print(f"- {meta['nproc']} cores ({meta['cpu']}), {meta['memory_gib']} GiB, Linux {meta['kernel']}, {meta['rustc']}, "
      f"{meta['redis'].split(' sha=')[0]}.")
print(f"- Open files: {meta['nofile']} (`ulimit -n 1048576` "
      f"{'worked' if str(meta['nofile']) == '1048576' else 'was refused: the sandbox has no CAP_SYS_RESOURCE, so the hard limit stays'}); "
      f"ephemeral ports: {meta['port_range']}.")
for note in meta.get("notes", []):
    print(f"- {note}")
print("- The load generator shares the same cores with the sidecar and Redis, so latency tails carry its scheduling"
      " noise; CPU time per delivery is the sidecar's own and does not.")
print()
print("## Method")
print()
print("""- Everything on this machine over loopback: a private `redis-server` (`--save "" --appendonly no`), the release
  sidecar (`target/release/signalr-sidecar`, `SIDECAR_STREAMS=events:chat`, otherwise defaults, except the per-address
  connection limit raised: the generator ramps thousands of connections from a few addresses), and `signalr-loadgen`
  (`loadgen/`, 2 tokio worker threads). A fresh sidecar per run, so its peak RSS (VmHWM) and CPU time are that run's.
- Clients do what `@microsoft/signalr` does: `POST /hubs/chat/negotiate?negotiateVersion=1`, the WebSocket upgrade on
  the same keep-alive connection, the handshake (`json` or `messagepack`), a blocking `JoinRoom(room)` invocation
  (waits for its Completion), a Ping every 15 s. Client i joins room i mod R. Ramp at 2,000 connections/s unless noted.
- Stateful clients (`--stateful`, the rows marked stateful) do what `withStatefulReconnect()` does: negotiate with
  `useStatefulReconnect=true`, handshake version 2, count the sequenced messages received (invocations, completions)
  and send `Ack(count)` one second after the first one not yet acknowledged, so at most one Ack a second per
  connection; the server numbers and keeps every frame it sends them until it is acknowledged.
- Events: one XADD per event of a flat seed-004 envelope (fresh UUID `event_id`, ISO `timestamp`, `room_id` in turn,
  `chat_message` payload with a 200-byte `content`, a per-room `sequence_number` and `sent_ns`, the send time stamped
  just before the XADD). Rate paced every millisecond.
- Latency: client receive wall clock - `sent_ns` (one process, one clock), HdrHistogram with 3 significant digits:
  XADD, Redis, the sidecar's XREADGROUP, pipeline and fan-out, the kernel, and the generator's own scheduling.
- Loss and duplicates: each client checks the per-room sequence numbers; "missing" = deliveries owed for the events
  published in the window (room members x events) not received by the end of the drain (up to 5 s after the window).
- Server CPU: utime + stime of the sidecar(s) from `/proc/<pid>/stat` over the window, divided by the deliveries
  received in the window. Memory: VmRSS / VmHWM from `/proc/<pid>/status`; "per connection" is
  (RSS with the connections - RSS before the first one) / connections, read at the end of a 10 s hold after the ramp
  and a 5 s wait. Where one process may not open 100,000 sockets (RLIMIT_NOFILE), the 100,000 row runs as 6 instances
  of 16,667 connections, each with its own generator and loopback source address, and sums them.
- In a and b the generator also times the Redis hop alone: its own reader blocked in `XREAD` on the stream gets each
  event like the sidecar's XREADGROUP does (`redis_hop_ms` in the raw lines).
- Typing trace (`signalr-loadgen --typing-trace`, model in `loadgen/src/typing.rs`): 10 typists per room who type in
  bursts of 8-60 keys at log-normal inter-key intervals (median 200 ms), pause, stop (the client sends `typing_stop`
  after 2 s without a key), or send the message (a `chat_message` from that user, which clears the indicator
  server-side); every key is one `typing_start`, as from a client calling `SendTyping(room, true)` per keystroke.
  Frames: `UserTyping` frames received against each typing event times the members of its room (what a server
  without coalescing sends). First indicator: from the send stamp of a burst's first key to the first frame showing
  that user typing, at each client.""")
print()

# ------------------------------------------------------------------ summary table
rows = []


def lat(r):
    lm = r["latency_ms"]
    return f"p50 {num(lm['p50'], 3)}, p90 {num(lm['p90'], 3)}, p99 {num(lm['p99'], 3)}, p99.9 {num(lm['p999'], 3)}, max {num(lm['max'], 3)} ms"


def loss(r):
    return f"missing {r['missing']:,} of {r['expected_deliveries']:,}, duplicates {r['duplicates']}"


def cpu(r):
    s = r.get("server") or {}
    return f"{num(s.get('us_per_delivery'))} µs server CPU/delivery ({num(s.get('cpu_user_s'))} s user + {num(s.get('cpu_system_s'))} s system)"


# a
for label, proto in (("a-json", "JSON"), ("a-msgpack", "MessagePack")):
    r = R.get(label)
    if ok(r):
        lm = r["latency_ms"]
        met = lm["p50"] <= 0.5 and lm["p99"] <= 1.0 and r["missing"] == 0
        hop = r.get("redis_hop_ms")
        hop_text = f"; the Redis hop alone: p50 {num(hop['p50'], 3)}, p99 {num(hop['p99'], 3)} ms" if hop else ""
        rows.append((f"100 users / 50 rooms / 10 events/s ({proto})", "p50 <= 0.5 ms, p99 <= 1 ms (peer: p50 1.07, p99 2.45 ms)",
                     f"{lat(r)}; {loss(r)}{hop_text}", verdict(met), "`BENCH_SCENARIOS=a bash bench/run.sh`"))
# b
def median(values):
    v = sorted(values)
    return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2


# Each size's runs: b-<users> (one round) or b-<users>-r<k> (several rounds).
b_runs = {u: [r for k, r in sorted(R.items()) if re.fullmatch(rf"b-{u}(-r\d+)?", k) and ok(r)] for u in (50, 100, 150, 200)}
bs_ok = all(b_runs.values())
if bs_ok:
    p50 = [median([r["latency_ms"]["p50"] for r in runs]) for runs in b_runs.values()]
    p99 = [median([r["latency_ms"]["p99"] for r in runs]) for runs in b_runs.values()]
    v50 = (max(p50) - min(p50)) / min(p50) * 100
    v99 = (max(p99) - min(p99)) / min(p99) * 100
    rounds = min(len(runs) for runs in b_runs.values())
    detail = "; ".join(f"{u}: p50 {num(a, 3)} / p99 {num(b, 3)} ms" for u, a, b in zip(b_runs, p50, p99))
    missing = sum(r["missing"] for runs in b_runs.values() for r in runs)
    rows.append(("50 -> 200 users, 0.1 events/s per user", "< 10 % variance in p50 and p99",
                 f"variance (max-min)/min of each size's median over {rounds} interleaved rounds: p50 {v50:.0f} %, "
                 f"p99 {v99:.0f} % ({detail}); missing {missing}",
                 verdict(v50 < 10 and v99 < 10), "`BENCH_SCENARIOS=b bash bench/run.sh`"))
# c
for label, proto in (("c-json", "JSON"), ("c-mixed", "half JSON, half MessagePack"),
                     ("c-stateful", "JSON, stateful reconnect: version 2, Acks")):
    r = R.get(label)
    if ok(r):
        us = (r.get("server") or {}).get("us_per_delivery") or 1e9
        met = r["latency_ms"]["p99"] <= 2.0 and us <= 5.0 and r["missing"] == 0 and r["duplicates"] == 0
        rows.append((f"10,000 connections / 1,000 rooms / 1,000 events/s ({proto})",
                     "p99 <= 2 ms, <= 5 µs server CPU per delivery, zero loss (peer: p99 7.1 ms, ~54 µs)",
                     f"{num(r['delivered_per_sec'])} deliveries/s; {lat(r)}; {cpu(r)}; {loss(r)}", verdict(met),
                     f"`BENCH_SCENARIOS={'stateful' if label == 'c-stateful' else 'c'} bash bench/run.sh`"))
# d
ds = sorted(((int(k[2:]), v) for k, v in R.items() if k.startswith("d-") and k[2:].isdigit() and ok(v)), key=lambda x: x[0])


def keeps_up(r):
    return r["expected_deliveries"] > 0 and r["missing"] <= r["expected_deliveries"] / 100 and r["delivered_per_sec"] >= 0.95 * r["offered_per_sec"]


if ds:
    kept = [(rate, r) for rate, r in ds if keeps_up(r)]
    best = max(kept, key=lambda x: x[1]["delivered_per_sec"]) if kept else None
    lossless = all(r["missing"] == 0 for _, r in kept)
    us = [r["server"]["us_per_delivery"] for _, r in ds if r["server"].get("us_per_delivery")]
    if best:
        b = best[1]
        text = (f"keeps up to {num(b['delivered_per_sec'])} deliveries/s ({best[0]} events/s, p99 {num(b['latency_ms']['p99'], 3)} ms); "
                f"server CPU {min(us):.2f}-{max(us):.2f} µs/delivery; loss in the steps that kept up: "
                f"{sum(r['missing'] for _, r in kept)}")
    else:
        text = "did not keep up at any step"
    first_behind = next((rate for rate, r in ds if not keeps_up(r)), None)
    if first_behind is not None:
        text += f"; falls behind from {first_behind} events/s (see the broadcast table)"
    met = bool(best) and lossless and max(us) <= 2.0
    rows.append(("5,000 connections in one room, broadcast (presence off)", "up to the generator's ceiling, zero loss, <= 2 µs server CPU/delivery (peer: knee ~50k/s, ~20 µs)",
                 text, verdict(met), "`BENCH_SCENARIOS=d bash bench/run.sh`"))
r = R.get("d-default-2")
if ok(r):
    errors = "; ".join(f"{k} x{v}" for k, v in r["errors"].items()) or "none"
    rows.append(("the same room with the default routing file (presence on, clients without a token), 2 events/s",
                 "(no target: the join of 5,000 into one room)",
                 f"{r['joined']:,} of {r['connections']:,} joined; {r['disconnects']} dropped later; "
                 f"{num(r['delivered_per_sec'])} of {num(r['offered_per_sec'])} deliveries/s; p50 {num(r['latency_ms']['p50'], 3)}, "
                 f"p99 {num(r['latency_ms']['p99'], 3)} ms; errors: {errors}",
                 "(measured)", "`BENCH_SCENARIOS=d bash bench/run.sh`"))
# idle
for label, n in (("idle-10k", "10,000"), ("idle-100k", "100,000")):
    r = R.get(label)
    if ok(r):
        s = r["server"]
        b = s["bytes_per_conn_marginal"]
        how = f" over {r['instances']} instances (one process may not open 100,000 sockets here)" if r.get("instances", 1) > 1 else ""
        rows.append((f"{n} idle connections", "<= 4 KB RSS per connection (peer: 13.9 KB)",
                     f"{b:,} B per connection ({r['joined']:,} joined{how}; RSS {s['rss_kb_before'] / 1024:.1f} -> {s['rss_kb'] / 1024:.1f} MiB)",
                     verdict(b <= 4096 and r["joined"] == r["connections"]), "`BENCH_SCENARIOS=idle bash bench/run.sh`"))
# typing
r = R.get("typing")
if ok(r) and r.get("typing"):
    t = r["typing"]
    fi = t["first_indicator_ms"]
    red = t["frame_reduction_pct"] or 0
    rows.append(("typing trace: 10 typists per room, keystroke bursts", ">= 60 % fewer frames, first-indicator p99 <= 2 ms (seed: 30 %)",
                 f"{red} % fewer frames ({t['frames_received']:,} received vs {t['naive_frames']:,} without coalescing, "
                 f"{num(t['typing_events_per_sec'])} typing events/s); first indicator p50 {num(fi['p50'], 3)}, p99 {num(fi['p99'], 3)} ms "
                 f"over {fi['count']:,} burst starts",
                 verdict(red >= 60 and fi["p99"] <= 2.0), "`BENCH_SCENARIOS=typing bash bench/run.sh`"))
# instances: each series is 1, 2, 3 instances; BENCH_INSTANCE_ROUNDS repeats it
# (labels -r2, -r3, ...), and the ratios of the rounds are given with their median.
def series(prefix):
    rounds = []
    for k in range(1, 100):
        tag = "" if k == 1 else f"-r{k}"
        runs = {n: R.get(f"{prefix}-{n}{tag}") for n in (1, 2, 3)}
        if not any(runs.values()):
            break
        rounds.append(runs)
    return rounds



for prefix, what, layout in (
        ("instances", "the overhead per instance (every instance reads every event)", "on 1, 2, 3 instances, rooms spread over the instances"),
        ("instances-by-room", "the overhead per instance (an instance skips the rooms it has no member in)", "on 1, 2, 3 instances, each room on one instance"),
        ("instances-paired", "the same, 1 and 3 instances measured at the same time (each set with its own Redis and generator)",
         "on 1 and on 3 instances side by side, each room on one instance")):
    rounds = series(prefix)
    if not rounds:
        continue
    texts, ratios = [], []
    for runs in rounds:
        good = {n: r for n, r in runs.items() if ok(r)}
        if not good:
            texts.append("error")
            continue
        us = {n: r["server"]["us_per_delivery"] for n, r in good.items()}
        text = " -> ".join(num(us[n]) if n in us else "-" for n in (1, 2, 3)) + " µs CPU/delivery"
        if 1 in us and 3 in us:
            ratios.append(us[3] / us[1])
            text += f" (**{us[3] / us[1]:.2f}x**)"
        worst = max(r["latency_ms"]["p99"] for r in good.values())
        text += f", p99 <= {num(worst, 3)} ms, missing {sum(r['missing'] for r in good.values())}"
        texts.append(text)
    measured = "; ".join(texts)
    if len(ratios) > 1:
        measured += f"; median of {len(ratios)} rounds **{median(ratios):.2f}x**"
    rows.append((f"10,000 connections / {rounds[0][1]['rooms'] if ok(rounds[0][1]) else 1000:,} rooms / 1,000 events/s {layout}",
                 what + "; issue 19: 3 against 1 <= 1.15x", measured, "(measured)",
                 f"`BENCH_SCENARIOS={prefix} bash bench/run.sh`"))

print("## Results against the targets")
print()
print("| scenario | target (issue 9) | measured | verdict | reproduce |")
print("|---|---|---|---|---|")
for row in rows:
    print("| " + " | ".join(row) + " |")
print()
floors = []
a = R.get("a-json")
if ok(a):
    floors.append(("p50 < 200 ms, p95 < 500 ms at 100 users (seed 000 SC-002)", a["latency_ms"]["p50"] < 200 and a["latency_ms"]["p99"] < 500))
if bs_ok:
    floors.append((f"< 20 % latency variance from 50 to 200 users (SC-003): p50 {v50:.0f} %, p99 {v99:.0f} %", v50 < 20 and v99 < 20))
c = R.get("c-json")
if ok(c):
    floors.append(("10,000 connections per server, 1,000 events/s delivered under 2 s (seed 003)", c["joined"] == 10000 and c["latency_ms"]["max"] < 2000 and c["missing"] == 0))
i10 = R.get("idle-10k")
if ok(i10):
    floors.append((f"< 10 KB of server memory per connection (NFR-006): {i10['server']['bytes_per_conn_marginal']:,} B", i10["server"]["bytes_per_conn_marginal"] < 10240))
t = R.get("typing")
if ok(t) and t.get("typing"):
    floors.append((f"30 % less typing traffic (SC-004): {t['typing']['frame_reduction_pct']} %", (t["typing"]["frame_reduction_pct"] or 0) >= 30))
print("Seed floors: " + "; ".join(f"{text} ({'met' if passed else '**missed**'})" for text, passed in floors) + ".")
print("Where a row says missed, the section *Gaps* below gives the measured cause and what would close it.")
print()

# ------------------------------------------------------------------ detail tables
print("## All runs")
print()
print("| run | connections (joined) | rooms | events/s | offered/s | delivered/s | missing | dup | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | server CPU (window) | µs CPU/delivery | server RSS end | B/conn (marginal) | loadgen CPU |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def order(label):
    head = label.split("-")[0]
    rank = {"a": 0, "b": 1, "c": 2, "d": 3, "idle": 4, "typing": 5, "instances": 6}.get(head, 9)
    tail = label[len(head) + 1:]
    lead = re.match(r"\d+", tail)
    return (rank, int(lead.group()) if lead else 0, tail)


for label in sorted(R, key=order):
    r = R[label]
    if not ok(r):
        print(f"| {label} | error: {r.get('error')} |" + " |" * 16)
        continue
    s, lm = r.get("server") or {}, r["latency_ms"]
    rate = num(r["rate"]) if not r.get("typing") else f"{num(r['typing']['typing_events_per_sec'])} typing + {num(r['publish_rate'])} chat"
    stateful = ", stateful" if r.get("stateful") else ""
    print(f"| {label} ({r['protocol']}{stateful}, {r.get('instances', 1)} inst.) | {r['connections']:,} ({r['joined']:,}) | {r['rooms']:,} | {rate} | "
          f"{num(r['offered_per_sec'])} | {num(r['delivered_per_sec'])} | {r['missing']:,} | {r['duplicates']} | "
          f"{num(lm['p50'], 3)} | {num(lm['p90'], 3)} | {num(lm['p99'], 3)} | {num(lm['p999'], 3)} | {num(lm['max'], 3)} | "
          f"{num(s.get('cpu_pct'), 1)} % | {num(s.get('us_per_delivery'))} | {s.get('rss_kb', 0) / 1024:.1f} MiB | "
          f"{num(s.get('bytes_per_conn_marginal'))} | {num((r.get('loadgen') or {}).get('cpu_pct'), 1)} % |")
print()
print("\"server CPU (window)\" is the share of one core over the measurement window (200 % = both cores);"
      " \"loadgen CPU\" likewise for the generator. Broadcast steps (`d-<events/s>`) stop after two steps in a row fall behind"
      " (delivered < 95 % of offered or > 1 % missing after the drain).")
print()

# Where the instances' CPU goes, by thread, and what they share the cores with
# (runs whose lines carry the thread readings: loadgen after stop 32).
split_runs = [(prefix, k, runs) for prefix in ("instances-by-room", "instances", "instances-paired")
          for k, runs in enumerate(series(prefix), 1)
          if all(ok(r) and (r.get("server") or {}).get("threads") for r in runs.values() if r)]
if split_runs:
    print("### Instances: where the CPU goes")
    print()
    print("| run | instances | µs CPU/delivery | event lane (`sidecar-events`) | workers (`tokio-rt-worker`) | rest | Redis µs/event | machine busy (cores) | stolen (cores) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for prefix, k, runs in split_runs:
        for n, r in sorted((n, r) for n, r in runs.items() if r):
            s, th = r["server"], r["server"]["threads"]
            lane = (th.get("sidecar-events") or {}).get("us_per_delivery") or 0
            workers = (th.get("tokio-rt-worker") or {}).get("us_per_delivery") or 0
            redis, machine = r.get("redis") or {}, r.get("machine") or {}
            print(f"| {prefix} round {k} | {n} | {num(s['us_per_delivery'])} | {num(lane)} | {num(workers)} | "
                  f"{num(s['us_per_delivery'] - lane - workers)} | {num(redis.get('us_per_event'))} | "
                  f"{num(machine.get('busy_cores'), 2)} | {num(machine.get('steal_cores'), 2)} |")
    print()
    print("Per delivery unless said: each thread group's CPU over the window, summed over the instances, divided by the"
          " deliveries; \"rest\" is the process total less the two (the main thread, pool threads). Redis's CPU is per"
          " event published; \"machine busy\" is every process's CPU on the machine over the window (2 = both cores),"
          " \"stolen\" what the hypervisor took.")
    print()
print("Commands (each run's `signalr-loadgen` arguments; `bench/run.sh` adds `--url`, `--server-pid`, `--redis-pid`, `--redis`):")
print()
print("```")
for label in sorted(R, key=order):
    print(f"{label}: {cmd(label)}")
print("```")
print()

for name, title in (("delivery.md", None), ("gaps.md", None), ("compare.md", None), ("roster.md", None), ("introspect.md", None), ("missed_updates.md", None)):
    path = os.path.join(HERE, name)
    if os.path.exists(path):
        with open(path) as f:
            print(f.read().rstrip())
        print()

print("<details><summary>Raw results (one JSON line per run)</summary>")
print()
print("```")
for label in sorted(R, key=order):
    r = dict(R[label])
    r.pop("parts", None)
    print(json.dumps(r, sort_keys=True))
print("```")
print()
print("</details>")

#!/usr/bin/env python3
"""Renders BENCHMARKS.md's peer comparison from one bench/peers/compare.sh run.

    python3 bench/compare_report.py bench/peers/out/compare-<stamp> [PAGES_DIR]

Writes the section "## Against the Socket.IO and Centrifuge peers" to
bench/compare.md (bench/report.py puts that file into the page bench/run.sh
writes) and replaces the same section in BENCHMARKS.md, so a comparison run
and a full benchmark run keep one text. The section: what was run, when, on
which commit; the headline figures of issue 19 with their ratio to the
Centrifuge peer; then the ratio tables of bench/peers/lib/report.mjs for each
peer. Called by bench/compare.sh.
"""

import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REPORT_MJS = os.path.join(HERE, "peers", "lib", "report.mjs")
TITLE = "## Against the Socket.IO and Centrifuge peers"
# Headings the section had before, so the rewrite finds and replaces them too.
OLD_TITLES = ("## Against the Socket.IO peer", TITLE)
# What follows the comparison on the page bench/report.py writes: where a
# page without the section gets it.
FOLLOWERS = ("## Typing roster", "## Introspection", "## Missed updates", "<details>")

RAW = os.path.abspath(sys.argv[1])
PAGES = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else None
# Sub-folder of the raw run, the name report.mjs gives the server, and the heading's name.
SERVERS = (("sidecar", "sidecar", "sidecar"), ("centrifuge", "centrifuge", "Centrifuge peer"), ("peer", "socketio", "Socket.IO peer"))
# What each peer is, for the text; the peers asked for, in the order they ran.
ABOUT = {"centrifuge": "the Centrifuge peer (Go, Centrifuge from Debian's packages, `bench/peers/peer-centrifuge`)",
         "socketio": "the Socket.IO 4 peer (Node, `bench/peers/peer-socketio`)"}
ASKED = os.environ.get("COMPARE_PEERS", "socketio centrifuge").split()


def read_json(path):
    try:
        with open(path) as f:
            lines = f.read().strip().splitlines()
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def runs(sub):
    """The loadgen result of each scenario of one server, or None when that server did not run."""
    folder = os.path.join(RAW, sub)
    if not os.path.exists(os.path.join(folder, "meta.json")):
        return None
    out = {}
    for name in os.listdir(folder):
        if name.endswith(".json") and not name.endswith(".proc.json") and name != "meta.json":
            r = read_json(os.path.join(folder, name))
            if r is not None:
                out[name[:-5]] = r
    return out


def ok(r):
    return r is not None and "error" not in r


def us_per_delivery(r):
    """Server CPU per delivery over the window, as report.mjs computes it."""
    cpu = (r.get("server") or {}).get("cpu_s")
    deliveries = (r.get("delivered_per_sec") or 0) * (r.get("window_s") or 0)
    return None if not cpu or deliveries <= 0 else cpu * 1e6 / deliveries


def keeps_up(r):
    """report.mjs's rule: >= 95 % of the offered deliveries/s and <= 1 % missing after the drain."""
    offered = r.get("offered_deliveries_per_sec") or 0
    return ok(r) and offered > 0 and r["delivered_per_sec"] >= 0.95 * offered and r["missing_pct"] <= 1


def fmt(v, digits=2):
    if v is None:
        return "n/a"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def ratio(a, b):
    return "n/a" if a is None or not b else f"{a / b:.2f}x"


meta = read_json(os.path.join(RAW, "sidecar", "meta.json"))
if meta is None:
    sys.exit(f"compare_report: no sidecar results in {RAW}")
R = {sub: runs(sub) for sub, _, _ in SERVERS}
present = [(sub, name, title) for sub, name, title in SERVERS if R[sub] is not None]
quick = bool(meta.get("quick"))
server = meta.get("server") or {}
machine = meta.get("machine") or {}


def figure(sub, label, get):
    r = (R[sub] or {}).get(label)
    return get(r) if ok(r) else None


def broadcast_best(sub):
    """The highest delivered/s among the broadcast steps kept up with, and the rate of the highest step tried."""
    steps = sorted(((int(k[2:]), r) for k, r in (R[sub] or {}).items() if re.fullmatch(r"d-\d+", k)), key=lambda x: x[0])
    kept = [r["delivered_per_sec"] for _, r in steps if keeps_up(r)]
    return (max(kept) if kept else None), (steps[-1][0] if steps else None), bool(steps and keeps_up(steps[-1][1]))


rows = []
c = next((R[sub]["c"] for sub, _, _ in present if ok(R[sub].get("c"))), None)
c_name = (f"{c['connections']:,} connections / {c['rooms']:,} rooms / {c['rate']:,.0f} events/s" if c else "scenario c")
rows.append((f"{c_name}: p99 latency (ms)", lambda s: figure(s, "c", lambda r: r["latency_ms"]["p99"] if r["latency_ms"]["count"] else None), 2,
             "p99 <= 2 ms"))
rows.append((f"{c_name}: server CPU per delivery (µs)", lambda s: figure(s, "c", us_per_delivery), 1, "<= 0.4x"))
rows.append((f"{c_name}: deliveries missing (%)", lambda s: figure(s, "c", lambda r: r["missing_pct"]), 3, "zero"))
idle = next((R[sub]["idle"] for sub, _, _ in present if ok(R[sub].get("idle"))), None)
idle_n = f"{idle['connections']:,}" if idle else "N"
rows.append((f"idle memory per connection at {idle_n}, (RSS - before) / N (B)",
             lambda s: figure(s, "idle", lambda r: (r.get("server") or {}).get("bytes_per_conn_marginal")), 0, "<= 2.5 KB"))
d = next((r for sub, _, _ in present for k, r in sorted(R[sub].items()) if k.startswith("d-") and ok(r)), None)
d_n = f"{d['connections']:,}" if d else "N"
rows.append((f"broadcast to {d_n}: highest deliveries/s kept up with (<= 1 % missing)", lambda s: broadcast_best(s)[0], 0,
             ">= 450k/s or the generator's ceiling"))

section = [TITLE, ""]
when = meta.get("started_at", "?")
section.append(f"Measured {when} by `{'BENCH_QUICK=1 ' if quick else ''}bash bench/compare.sh` at commit `{server.get('commit', '?')}`: "
               "the sidecar, then " + ", then ".join(ABOUT[p] for p in ASKED if p in ABOUT) + ", one after the other on this machine "
               f"({machine.get('cores', '?')} cores, {machine.get('cpu', '?')}), with the same load generator "
               "(`bench/peers/loadgen`) and the same scenarios (`bench/peers/lib/common.sh`). Every server reads the same "
               "Redis stream; a fresh server process per scenario; the load generator and Redis share the cores with it. "
               "The sidecar ran with its per-address connection limits raised, as `bench/run.sh` does.")
if quick:
    section += ["", "**BENCH_QUICK=1: a smoke run of shrunk scenarios (3 s windows, 1,000 connections at most), "
                "not results.**"]
missing = [title for sub, name, title in SERVERS if R[sub] is None and name in ASKED]
if missing:
    section += ["", f"No results from: {', '.join(missing)} (its run failed; see the run's output)."]
raw_rel = os.path.relpath(RAW, ROOT)
pages = f"; per-server pages: `{os.path.relpath(PAGES, ROOT)}`" if PAGES else ""
section += ["", f"Raw results: `{raw_rel}`{pages} (not kept in git)."]
section += ["", "Headline figures (issue 19's targets are ratios to the Centrifuge peer, same machine, same run):", ""]
section.append("| figure | " + " | ".join(title for _, _, title in SERVERS) + " | sidecar / Centrifuge peer | target (issue 19) |")
section.append("|---|---|---|---|---|---|")
for label, get, digits, target in rows:
    values = {sub: (get(sub) if R[sub] is not None else None) for sub, _, _ in SERVERS}
    cells = [fmt(values[sub], digits) for sub, _, _ in SERVERS]
    # A ratio of loss percentages says nothing: that row shows "-".
    share = "-" if target == "zero" else ratio(values["sidecar"], values["centrifuge"])
    section.append(f"| {label} | " + " | ".join(cells) + f" | {share} | {target} |")
ceiling = [f"the {title} ({top} events/s)" for sub, _, title in present
           for _, top, top_kept in [broadcast_best(sub)] if top is not None and top_kept]
if ceiling:
    section += ["", "Broadcast: kept up with at the highest step tried, so only a lower bound, for "
                + ", ".join(ceiling) + "."]
section += ["", "Server CPU per delivery: the server's utime + stime over the measurement window (read by the load generator "
            "from `/proc` at the window's ends) / messages received in the window. Idle memory: RSS with the connections "
            "- RSS before the first, / connections."]

for sub, name, title in present[1:]:
    section += ["", f"### sidecar against the {title}", ""]
    table = subprocess.run(["node", REPORT_MJS, "compare", os.path.join(RAW, sub), os.path.join(RAW, "sidecar"), name, "sidecar"],
                           check=True, capture_output=True, text=True).stdout
    section.append(table.rstrip())
if R["peer"] is not None and R["centrifuge"] is not None:
    section += ["", "### The Centrifuge peer against the Socket.IO peer", ""]
    table = subprocess.run(["node", REPORT_MJS, "compare", os.path.join(RAW, "peer"), os.path.join(RAW, "centrifuge"), "socketio", "centrifuge"],
                           check=True, capture_output=True, text=True).stdout
    section.append(table.rstrip())
text = "\n".join(section) + "\n"

with open(os.path.join(HERE, "compare.md"), "w") as f:
    f.write(text)

# The same text in BENCHMARKS.md, in place of the section it had.
page_path = os.path.join(ROOT, "BENCHMARKS.md")
with open(page_path) as f:
    page = f.read().splitlines()
start = next((i for i, line in enumerate(page) if line.strip() in OLD_TITLES), None)
if start is not None:
    end = next((i for i in range(start + 1, len(page)) if page[i].startswith("## ") or page[i].startswith("<details>")), len(page))
else:
    start = end = next((i for i, line in enumerate(page) if line.startswith(FOLLOWERS)), len(page))
new = page[:start] + text.rstrip("\n").splitlines() + [""] + page[end:]
with open(page_path, "w") as f:
    f.write("\n".join(new).rstrip("\n") + "\n")
print(f"compare_report: wrote bench/compare.md and BENCHMARKS.md's section \"{TITLE[3:]}\"", file=sys.stderr)

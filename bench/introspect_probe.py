"""Times the introspection API of one sidecar instance (bench/introspect.sh).

    python3 bench/introspect_probe.py <admin base url> <token or ""> <queries per endpoint> <out.json>

Asks each endpoint `queries` times, one after the other on one keep-alive
connection, and records the round trip seen by the client and the server's own
`cluster.elapsed_ms`, plus how often an instance was missing. Prints one line per
endpoint and writes everything as JSON."""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import time
import urllib.parse

base, token, queries, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
url = urllib.parse.urlsplit(base)
headers = {"Authorization": f"Bearer {token}"} if token else {}
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)


def get(path: str) -> tuple[float, dict]:
    started = time.perf_counter()
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    body = r.read()
    took = (time.perf_counter() - started) * 1000
    if r.status != 200:
        raise SystemExit(f"GET {path}: {r.status} {body[:200]!r}")
    return took, json.loads(body)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p))], 2)


# Names from what the deployment holds: a busy room and a real user, if any.
_, rooms = get("/admin/api/hubs/chat/rooms?limit=1")
room = rooms["rooms"][0]["name"] if rooms["rooms"] else "room-0"
_, members = get(f"/admin/api/hubs/chat/rooms/{urllib.parse.quote(room, safe='')}?limit=1")
user = next((m["user"] for m in members["members"] if m["user"]), "nobody")

endpoints = {
    "instances": "/admin/api/instances",
    "hubs": "/admin/api/hubs",
    "rooms (first 100)": "/admin/api/hubs/chat/rooms?limit=100",
    "rooms (prefix, 100)": "/admin/api/hubs/chat/rooms?prefix=room-1&limit=100",
    "room members (100)": f"/admin/api/hubs/chat/rooms/{urllib.parse.quote(room, safe='')}?limit=100",
    "user": f"/admin/api/users/{urllib.parse.quote(user, safe='')}",
}
results = {}
_, deployment = get("/admin/api/instances")
for name, path in endpoints.items():
    client, server, missing = [], [], 0
    for _ in range(queries):
        took, body = get(path)
        client.append(took)
        server.append(body["cluster"]["elapsed_ms"])
        missing += bool(body["cluster"]["missing"])
    results[name] = {
        "path": path,
        "queries": queries,
        "client_ms": {"p50": pct(client, 0.5), "p99": pct(client, 0.99), "max": round(max(client), 2),
                      "mean": round(statistics.fmean(client), 2)},
        "server_ms": {"p50": pct(server, 0.5), "p99": pct(server, 0.99), "max": round(max(server), 2)},
        "answers_with_missing": missing,
    }
    r = results[name]
    print(f"{name:22} client p50 {r['client_ms']['p50']:7.2f} p99 {r['client_ms']['p99']:7.2f} max {r['client_ms']['max']:7.2f} ms"
          f" | server p50 {r['server_ms']['p50']:7.2f} p99 {r['server_ms']['p99']:7.2f} ms | missing in {missing}/{queries}")
summary = {
    "instances": [{"instance": i["instance"], "connections": i["connections"]} for i in deployment["instances"]],
    "connections": sum(i["connections"] for i in deployment["instances"]),
    "endpoints": results,
}
with open(out, "w") as f:
    json.dump(summary, f, indent=1)

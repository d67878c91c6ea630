#!/usr/bin/env bash
# The comparison with the peers, in one command: this checkout's sidecar,
# the Centrifuge peer and the Socket.IO peer through the same scenarios with
# the same load generator (bench/peers/, from ../shared/bench), then
# BENCHMARKS.md's section "Against the Socket.IO and Centrifuge peers" and
# bench/compare.md rewritten from the results (bench/compare_report.py).
#
#   bash bench/compare.sh                      # full size (~30-40 min, both cores)
#   BENCH_QUICK=1 bash bench/compare.sh        # smoke run of the same steps (~5 min), labelled quick
#   COMPARE_PEERS=centrifuge bash bench/compare.sh
#
# Needs: cargo (the sidecar's release build and bench/peers/loadgen, its own
# target/), redis-server, Node (the Socket.IO peer: npm ci on first use; the
# reports), and for the Centrifuge peer Go and Debian's Centrifuge packages,
# which bench/peers/peer-centrifuge/build.sh installs with apt-get (root)
# when missing.
#
# Knobs: COMPARE_PEERS (default "socketio centrifuge"), SIDECAR_BENCH_ENV
# (extra "SIDECAR_X=1 ..." settings, added after the raised per-address
# connection limits), SIDECAR_BIN (run that binary instead of building),
# and those of bench/peers/lib/common.sh (BENCH_QUICK, BENCH_SCENARIOS,
# BROADCAST_RATES, ...). A failed peer run is reported in the section and
# makes the exit status 2; without the sidecar's results nothing is
# rewritten.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS_DIR="$ROOT/bench/peers"
say() { echo "[compare] $*" >&2; }

for tool in node cargo redis-server python3; do
  command -v "$tool" >/dev/null || { say "ERROR: $tool is needed"; exit 2; }
done
# 10,000 client sockets and as many server sockets in one run.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

export COMPARE_PEERS="${COMPARE_PEERS:-socketio centrifuge}"
# The per-address connection limit guards against floods from one client;
# the generator is one "client" ramping thousands of connections (as in
# bench/run.sh). Logs at warn, as in bench/run.sh.
export SIDECAR_BENCH_ENV="SIDECAR_CONNECTION_RATE_PER_IP=1000000 SIDECAR_CONNECTION_BURST_PER_IP=1000000 SIDECAR_LOG=warn ${SIDECAR_BENCH_ENV:-}"

# The per-server pages and the shared script's own summary go next to the
# raw results (git-ignored), not into the tree.
STAMP="$(date +%Y%m%d-%H%M%S)"
PAGES="$PEERS_DIR/out/pages-$STAMP"
mkdir -p "$PAGES" && touch "$PAGES/.started"
export SIDECAR_RESULTS_MD="$PAGES/results-sidecar.md" PEER_RESULTS_MD="$PAGES/results-peer.md"
export CENTRIFUGE_RESULTS_MD="$PAGES/results-centrifuge.md" COMPARE_RESULTS_MD="$PAGES/results-compare.md"

say "peers: $COMPARE_PEERS${BENCH_QUICK:+ (BENCH_QUICK=1: smoke run)}; pages in ${PAGES#"$ROOT"/}"
bash "$PEERS_DIR/compare.sh" "$ROOT"
rc=$?

# The raw folder compare.sh made in this run: the one its summary names,
# else (every peer failed: no summary) the newest made since the start.
RAW="$(sed -n 's/.*raw: `bench\/out\/\(compare-[0-9-]*\)`.*/\1/p' "$COMPARE_RESULTS_MD" 2>/dev/null | head -n1)"
[ -n "$RAW" ] || RAW="$(cd "$PEERS_DIR/out" && find . -maxdepth 1 -name 'compare-*' -newer "$PAGES/.started" -printf '%f\n' | sort | tail -n1)"
if [ -z "$RAW" ] || [ ! -s "$PEERS_DIR/out/$RAW/sidecar/meta.json" ]; then
  say "ERROR: no sidecar results (compare.sh exit $rc): BENCHMARKS.md left as it was"
  exit 2
fi
python3 "$ROOT/bench/compare_report.py" "$PEERS_DIR/out/$RAW" "$PAGES" || { say "ERROR: compare_report.py failed"; exit 2; }
[ "$rc" -eq 0 ] || say "a peer run failed (exit $rc): the section says which"
exit "$rc"

#!/usr/bin/env bash
# Runs each fuzz target for a bounded time, one after another (the machine
# has 2 cores), on the nightly toolchain, with cargo-fuzz from crates.io.
#
#   bash fuzz/run.sh                      # every target, 60 s each
#   FUZZ_SECONDS=600 bash fuzz/run.sh     # longer
#   bash fuzz/run.sh handshake envelope_json   # some targets
#
# New corpus entries land in fuzz/corpus/<target>/ and crash inputs in
# fuzz/artifacts/<target>/; commit both. After each run the corpus is
# minimized like `cargo fuzz cmin`, except that the hand-made seeds
# (`seed-*`) always stay: the inputs kept are the seeds plus those that add
# coverage beyond them. `cargo test --test fuzz_corpus` replays it all on
# stable. A summary line per target goes to stdout and the libFuzzer output
# to fuzz/target/logs/<target>.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${FUZZ_SECONDS:-60}"
all=(
  json_hub_message
  msgpack_hub_message
  record_framing
  length_framing
  handshake
  envelope_json
  envelope_stream_fields
)
targets=("${@:-${all[@]}}")

command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
rustup toolchain list | grep -q '^nightly' || {
  echo "fuzz/run.sh: needs the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
}

root="$PWD"
logs="$root/fuzz/target/logs"
host="$(rustc +nightly -vV | sed -n 's/^host: //p')"
mkdir -p "$logs"
status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  before=$(find "fuzz/artifacts/$t" -type f | wc -l)
  log="$logs/$t.log"
  # Run from the log directory: -jobs=1 runs one worker whose fuzz-0.log
  # libFuzzer copies into its own output; -print_final_stats gives the count.
  if ! (cd "$logs" && cargo +nightly fuzz run --fuzz-dir "$root/fuzz" "$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -jobs=1 -print_final_stats=1 \
    >"$log" 2>&1); then
    status=1
  fi
  rm -f "$logs/fuzz-0.log"
  found=$(find "fuzz/corpus/$t" -type f | wc -l)
  # Minimize with the binary just run (no rebuild): the seeds are the base;
  # the fewest other inputs that cover every edge they miss merge in (edges
  # only, not hit counts, to keep it small).
  pool="$root/fuzz/target/pool/$t"
  rm -rf "$pool" && mkdir -p "$pool"
  find "fuzz/corpus/$t" -type f ! -name 'seed-*' -exec mv {} "$pool/" \;
  if (cd "$logs" && "$root/fuzz/target/$host/release/$t" -set_cover_merge=1 -use_counters=0 \
    "$root/fuzz/corpus/$t" "$pool" >"$log.merge" 2>&1); then
    rm -rf "$pool"
  else
    echo "fuzz/run.sh: minimizing $t failed (see $log.merge); corpus kept as it was" >&2
    find "$pool" -type f -exec mv -n {} "fuzz/corpus/$t/" \;
    status=1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  after=$(find "fuzz/artifacts/$t" -type f | wc -l)
  printf '%-24s %5ss  execs %-10s corpus %5s (minimized %4s)  new crash inputs %s\n' \
    "$t" "$seconds" "${execs:-?}" "$found" "$corpus" "$((after - before))"
  [ "$after" -eq "$before" ] || status=1
done
exit "$status"

#!/usr/bin/env bash
# Runs every test of signalr-sidecar, installing what the tests need on a
# fresh Debian machine: redis-server, chromium, npm and python3-venv where
# missing (apt-get), prometheus (the dashboard test scrapes the real sidecar
# with it), the official SignalR clients (npm ci in tests/client), Python
# packages (./.venv).
#
#   bash scripts/test.sh            # everything
#   SKIP_INSTALL=1 bash scripts/test.sh   # assume the tools are there
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
step() { printf '\n==> %s\n' "$*"; }

if [ -z "${SKIP_INSTALL:-}" ]; then
  missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
  # tests/readme_examples.rs runs the README's curl command as written.
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  # Debian packages npm apart from nodejs, and venv (ensurepip) apart from python3.
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  [ -x .venv/bin/python ] || python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  if [ ${#missing[@]} -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  step "npm ci (tests/client: the official SignalR clients, @aspnet/signalr 1.1 to @microsoft/signalr 10)"
  (cd tests/client && npm ci --no-audit --no-fund --loglevel=error)
  step "python venv (.venv): tests/requirements.txt and publishers/python[test]"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -r tests/requirements.txt -e 'publishers/python[test]'
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo test (unit, protocol vectors, integration with redis-server and the official client)"
cargo test --all-targets

step "benchmark smoke run (bench/run.sh with BENCH_SMOKE=1: seconds, to keep it from rotting)"
# One retry: the harness picks free ports by probing, and on a busy machine
# another process can take one between the probe and the bind.
BENCH_SMOKE=1 bash bench/run.sh || { echo "smoke run failed; once more"; BENCH_SMOKE=1 bash bench/run.sh; }

# Separate runs: each suite has its own conftest.py, imported by name.
step "pytest publishers/python (against redis-server and the sidecar binary)"
.venv/bin/python -m pytest -q publishers/python/tests

step "pytest tests/python (protocol/admin-openapi.yaml against the running sidecar, with schemathesis; the Python community client signalrcore)"
.venv/bin/python -m pytest -q tests/python

step "pytest deploy (helm chart, Kubernetes manifests, Dockerfile)"
.venv/bin/python -m pytest -q deploy/tests

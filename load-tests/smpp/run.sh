#!/usr/bin/env bash
# SMPP load test: the ESME (src/smpp/esme.rs) against the in-process SMSC simulator, one process,
# loopback TCP. Prints JSON lines and a summary; see RESULTS.md.
#
#   bash load-tests/smpp/run.sh                 # defaults: 100000 submits x 5 rounds, 60 s per TPS limit
#   SECONDS_PER_LIMIT=10 bash load-tests/smpp/run.sh   # quick run
#
# Measures: ESME vs raw-client throughput (window 10 and 100), TPS accuracy at 10/100/500 TPS,
# window use at 20 ms simulator latency. Needs no external service. About 4 minutes by default.
set -euo pipefail
cd "$(dirname "$0")/../.."

SUBMITS=${SUBMITS:-100000}
ROUNDS=${ROUNDS:-5}
WINDOWS=${WINDOWS:-10,100}
TPS=${TPS:-10,100,500}
SECONDS_PER_LIMIT=${SECONDS_PER_LIMIT:-60}
LATENCY_MS=${LATENCY_MS:-20}
WINDOW=${WINDOW:-10}
WINDOW_SECONDS=${WINDOW_SECONDS:-10}

cargo build --release --locked --bin smpp-load 2>&1 | tail -n 1
bin=${CARGO_TARGET_DIR:-target}/release

echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin/smpp-load" --submits "$SUBMITS" --windows "$WINDOWS" --rounds "$ROUNDS" --tps "$TPS" \
  --seconds "$SECONDS_PER_LIMIT" --latency-ms "$LATENCY_MS" --window "$WINDOW" \
  --window-seconds "$WINDOW_SECONDS"
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

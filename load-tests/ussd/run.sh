#!/usr/bin/env bash
# USSD load test: the gateway against a minimal Redis GET/SET server, loaded the same way, in
# the same run, on the same machine. Prints JSON lines and a summary; see RESULTS.md.
#
#   bash load-tests/ussd/run.sh            # defaults: 64 citizens, 10 s per measurement, 3 rounds
#   CITIZENS=128 SECONDS_PER_RUN=20 ROUNDS=5 bash load-tests/ussd/run.sh
#
# Needs Redis on 127.0.0.1:6379 (and PostgreSQL on 5432 for RESULTS=postgres); run
# `bash .ci/services.sh` first on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/../.."

CITIZENS=${CITIZENS:-64}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
ROUNDS=${ROUNDS:-3}                   # closed-loop rounds, baseline then gateway in each
RATE=${RATE:-1000}
LIVE_SESSIONS=${LIVE_SESSIONS:-20000}
RESULTS=${RESULTS:-sqlite}            # sqlite | postgres: where durable answers go
GATEWAY_PORT=${GATEWAY_PORT:-18080}
BASELINE_PORT=${BASELINE_PORT:-18090}
SCRIPT=${SCRIPT:-"1,1,Water point broken for two weeks,Near the market"}
CODE=${CODE:-"*384*12*3#"}

cargo build --release --locked --bin baraza --bin ussd-load --bin ussd-baseline 2>&1 | tail -n 1
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

wait_for() { # port
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listening on $1" >&2
  [ -s "$work/gateway.log" ] && { echo "gateway log:" >&2; cat "$work/gateway.log" >&2; }
  exit 1
}
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
redis_used() { redis-cli -h 127.0.0.1 info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r'; }
load() { "$bin/ussd-load" --citizens "$CITIZENS" --duration "$SECONDS_PER_RUN" --service-code "$CODE" --script "$SCRIPT" "$@"; }
# CPU time of a process in clock ticks (user + system), from /proc; empty if it cannot be read.
ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || true; }
hz=$(getconf CLK_TCK)
redis_pid=$(redis-cli -h 127.0.0.1 info server | awk -F: '/^process_id:/ {print $2}' | tr -d '\r')
# `measured SERVER_PID LOAD_ARGS...`: one load run, its JSON line with the CPU each process
# spent per step added (server, Redis, load generator), so the split of the gap is reproducible.
measured() {
  local pid=$1 s0 r0 s1 r1 cpu json; shift
  s0=$(ticks "$pid"); r0=$(ticks "$redis_pid")
  cpu=$( { TIMEFORMAT='%U %S'; time load "$@" > "$work/load.json"; } 2>&1 )
  s1=$(ticks "$pid"); r1=$(ticks "$redis_pid")
  json=$(cat "$work/load.json")
  python3 - "$json" "$hz" "$s0" "$s1" "$r0" "$r1" "$cpu" <<'PY'
import json, sys
run = json.loads(sys.argv[1]); hz = float(sys.argv[2])
s0, s1, r0, r1 = (float(v) if v else None for v in sys.argv[3:7])
user, system = (float(v) for v in sys.argv[7].split()[-2:])
steps = max(run["steps"], 1)
per = lambda a, b: None if a is None or b is None else round((b - a) / hz * 1e6 / steps, 1)
run["server_cpu_us_per_step"] = per(s0, s1)
run["redis_cpu_us_per_step"] = per(r0, r1)
run["loadgen_cpu_us_per_step"] = round((user + system) * 1e6 / steps, 1)
print(json.dumps(run, sort_keys=True))
PY
}

prefix="loadtest$$"
if [ "$RESULTS" = postgres ]; then
  results_block="results:\n  store: postgres\n  url: postgres://postgres@127.0.0.1:5432/test\n  schema: $prefix"
else
  results_block="results:\n  store: sqlite\n  path: $work/results.sqlite3"
fi
printf "listen: 127.0.0.1:$GATEWAY_PORT\nflows_dir: $PWD/flows\nsessions:\n  store: redis\n  url: redis://127.0.0.1:6379\n  key_prefix: $prefix\n$results_block\nadmission:\n  per_subscriber_per_minute: 100000\n  burst: 10000\npseudonym_secret: load-test-pseudonym-secret\n" > "$work/gateway.yaml"

echo "== baseline (hyper + one Redis GET and one SET EX per request) and gateway (Redis sessions,"
echo "   durable answers in $RESULTS, flow grievance over Africa's Talking), closed loop alternated"
"$bin/ussd-baseline" --listen "127.0.0.1:$BASELINE_PORT" 2>/dev/null & base=$!; pids+=($base)
RUST_LOG=warn "$bin/baraza" serve --config "$work/gateway.yaml" 2>"$work/gateway.log" & gw=$!; pids+=($gw)
wait_for "$BASELINE_PORT"
wait_for "$GATEWAY_PORT"
# Other work on the machine comes and goes: each round measures the baseline, then at once the
# gateway, and the summary takes the median round (by ratio). The idle server uses no CPU.
closed_rounds=()
for round in $(seq "$ROUNDS"); do
  b=$(measured "$base" --target "127.0.0.1:$BASELINE_PORT" --label baseline); echo "$b"
  g=$(measured "$gw" --target "127.0.0.1:$GATEWAY_PORT" --label gateway); echo "$g"
  closed_rounds+=("$b" "$g")
done
base_open=$(load --target "127.0.0.1:$BASELINE_PORT" --label baseline --mode open --rate "$RATE")
echo "$base_open"
gw_open=$(load --target "127.0.0.1:$GATEWAY_PORT" --label gateway --mode open --rate "$RATE")
echo "$gw_open"
kill "$base"; wait "$base" 2>/dev/null || true
# Keys of the runs above would otherwise expire during the memory measurement below and
# hide the new sessions' memory (the baseline's after 180 s, the gateway's after the flow's
# session timeout).
for pattern in 'baseline:{load-*' "$prefix:*"; do
  redis-cli -h 127.0.0.1 --scan --pattern "$pattern" | xargs -r -n 1000 redis-cli -h 127.0.0.1 del >/dev/null
done

echo "== memory with $LIVE_SESSIONS live sessions (Redis store)"
before_redis=$(redis_used); before_rss=$(rss_kib "$gw")
"$bin/ussd-load" --target "127.0.0.1:$GATEWAY_PORT" --citizens 32 --service-code "$CODE" --script "$SCRIPT" --open-sessions "$LIVE_SESSIONS" >/dev/null
after_redis=$(redis_used); after_rss=$(rss_kib "$gw")
kill "$gw"; wait "$gw" 2>/dev/null || true

echo "== memory with $LIVE_SESSIONS live sessions (in-memory store)"
sed -e 's/store: redis/store: memory/' -e '/url: redis/d' -e '/key_prefix/d' "$work/gateway.yaml" > "$work/memory.yaml"
RUST_LOG=warn "$bin/baraza" serve --config "$work/memory.yaml" 2>>"$work/gateway.log" & gm=$!; pids+=($gm)
wait_for "$GATEWAY_PORT"
mem_before=$(rss_kib "$gm")
"$bin/ussd-load" --target "127.0.0.1:$GATEWAY_PORT" --citizens 32 --service-code "$CODE" --script "$SCRIPT" --open-sessions "$LIVE_SESSIONS" >/dev/null
mem_after=$(rss_kib "$gm")
kill "$gm"; wait "$gm" 2>/dev/null || true
redis-cli -h 127.0.0.1 --scan --pattern "$prefix:*" | xargs -r -n 1000 redis-cli -h 127.0.0.1 del >/dev/null

python3 - "$base_open" "$gw_open" "${closed_rounds[@]}" <<'PY'
import json, sys
bo, go = (json.loads(a) for a in sys.argv[1:3])
rest = [json.loads(a) for a in sys.argv[3:]]
rounds = list(zip(rest[0::2], rest[1::2]))
print("== summary")
for i, (b, g) in enumerate(rounds, 1):
    print(f"round {i}: gateway {g['steps_per_s']:.0f} steps/s, baseline {b['steps_per_s']:.0f} req/s, ratio {g['steps_per_s']/b['steps_per_s']:.2f}")
ordered = sorted(rounds, key=lambda r: r[1]['steps_per_s'] / r[0]['steps_per_s'])
bc, gc = ordered[len(ordered) // 2]
print(f"closed loop, {bc['citizens']} citizens, median round: gateway {gc['steps_per_s']:.0f} steps/s, baseline {bc['steps_per_s']:.0f} req/s, ratio {gc['steps_per_s']/bc['steps_per_s']:.2f} (rounds {min(g['steps_per_s']/b['steps_per_s'] for b, g in rounds):.2f}-{max(g['steps_per_s']/b['steps_per_s'] for b, g in rounds):.2f})")
print(f"closed loop latency ms p50/p99/p99.9 (median round): gateway {gc['p50_ms']}/{gc['p99_ms']}/{gc['p999_ms']}, baseline {bc['p50_ms']}/{bc['p99_ms']}/{bc['p999_ms']}")
print(f"open loop at {go['target_rate']}/s ms p50/p99/p99.9: gateway {go['p50_ms']}/{go['p99_ms']}/{go['p999_ms']} (errors {go['errors']}), baseline {bo['p50_ms']}/{bo['p99_ms']}/{bo['p999_ms']}")
print(f"gateway errors: closed {sum(g['errors'] for _, g in rounds)}, open {go['errors']}; sessions completed (closed, median round) {gc['sessions_completed']}")
def split(r):
    parts = [r.get(k) for k in ("server_cpu_us_per_step", "redis_cpu_us_per_step", "loadgen_cpu_us_per_step")]
    total = sum(p for p in parts if p is not None)
    return f"server {parts[0]} + Redis {parts[1]} + load generator {parts[2]} = {total:.1f}"
print(f"CPU us per step (median round): gateway {split(gc)}; baseline {split(bc)}")
PY
echo "Redis memory per live session: $(( (after_redis - before_redis) / LIVE_SESSIONS )) bytes ($LIVE_SESSIONS sessions)"
echo "gateway RSS, Redis store: ${before_rss} KiB -> ${after_rss} KiB with $LIVE_SESSIONS live sessions"
echo "gateway RSS, in-memory store: ${mem_before} KiB -> ${mem_after} KiB with $LIVE_SESSIONS live sessions ($(( (mem_after - mem_before) * 1024 / LIVE_SESSIONS )) bytes/session)"

#!/usr/bin/env bash
# Fault injection (issue 13): two gateway nodes (`baraza serve`, one config each) on a private
# Redis and a private PostgreSQL cluster, each with an SMPP bind to the SMSC simulator that the
# driver (`fault-load`, load-tests/faults/driver.rs) runs, under USSD load and an SMS flow.
# Faults one at a time, each after a steady period and followed by a recovery period:
# SIGKILL of a node (restarted), Redis restart, Redis CLIENT PAUSE 5000, PostgreSQL restart,
# the SMSC dropping its connections mid-window, the SMSC throttling. Prints one JSON line and
# one table row per fault; see RESULTS.md. Loopback only; about 5 minutes, at most about 10.
#
#   bash load-tests/faults/run.sh
#   FAULTS=redis-pause,pg-restart RECOVERY=10 bash load-tests/faults/run.sh
#   REDIS_PERSIST=no bash load-tests/faults/run.sh   # a Redis that keeps nothing on restart
#
# The machine's shared Redis and PostgreSQL are never touched: the private servers get free
# ports and a temporary folder (initdb runs as `postgres` when this runs as root).
set -euo pipefail
cd "$(dirname "$0")/../.."

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
listening() { (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
wait_listening() { # port what
  for _ in $(seq 300); do listening "$1" && return 0; sleep 0.1; done
  echo "$2 never listened on $1" >&2; return 1
}
# `start_node N`: node N in the background, its pid in $FAULTS_WORK/node$N.pid.
start_node() {
  RUST_LOG=${RUST_LOG:-warn} "$FAULTS_BIN/baraza" serve --config "$FAULTS_WORK/node$1.yaml" \
    >>"$FAULTS_WORK/node$1.log" 2>&1 &
  echo $! > "$FAULTS_WORK/node$1.pid"
  disown $!  # its SIGKILL is the fault, not news
  wait_listening "$(cat "$FAULTS_WORK/node$1.port")" "node $1"
}
start_redis() {
  local persist=(--appendonly no)
  # SMS sessions last days: a production Redis keeps them across a restart (append-only file).
  [ "$FAULTS_REDIS_PERSIST" = yes ] && persist=(--appendonly yes --appendfsync everysec)
  redis-server --port "$FAULTS_REDIS_PORT" --bind 127.0.0.1 --save '' "${persist[@]}" \
    --dir "$FAULTS_WORK" --daemonize no >>"$FAULTS_WORK/redis.log" 2>&1 &
  echo $! > "$FAULTS_WORK/redis.pid"
  for _ in $(seq 100); do
    [ "$(redis-cli -p "$FAULTS_REDIS_PORT" ping 2>/dev/null)" = PONG ] && return 0; sleep 0.1
  done
  echo "private redis never answered" >&2; return 1
}
stop_redis() {
  local pid; pid=$(cat "$FAULTS_WORK/redis.pid")
  redis-cli -p "$FAULTS_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}
pg_ctl_() { as_postgres "$PG_BIN/pg_ctl" -D "$FAULTS_WORK/pg/data" "$@"; }
start_pg() {
  pg_ctl_ -w -l "$FAULTS_WORK/pg/log" \
    -o "-p $FAULTS_PG_PORT -k $FAULTS_WORK/pg -c listen_addresses=127.0.0.1" start >/dev/null
}

# The driver calls `run.sh hook FAULT start|end` (settings in the FAULTS_* environment).
if [ "${1:-}" = hook ]; then
  fault=$2 phase=$3
  case "$fault/$phase" in
    node-kill/start) kill -KILL "$(cat "$FAULTS_WORK/node2.pid")" ;;
    node-kill/end) start_node 2 ;;
    redis-restart/start) stop_redis ;;
    redis-restart/end) start_redis ;;
    redis-pause/start) redis-cli -p "$FAULTS_REDIS_PORT" client pause 5000 all >/dev/null ;;
    redis-pause/end) ;;
    pg-restart/start) pg_ctl_ -w -m fast stop >/dev/null ;;
    pg-restart/end) start_pg ;;
    *) echo "unknown hook $fault $phase" >&2; exit 1 ;;
  esac
  exit 0
fi

export FAULTS_REDIS_PERSIST=${REDIS_PERSIST:-yes}
FAULTS=${FAULTS:-node-kill,redis-restart,redis-pause,pg-restart,smsc-drop,smsc-throttle}
SETTLE=${SETTLE:-5}
RECOVERY=${RECOVERY:-15}
DOWN=${DOWN:-3}
USSD_CITIZENS=${USSD_CITIZENS:-16}
SMS_CITIZENS=${SMS_CITIZENS:-8}
THINK_MS=${THINK_MS:-50}

cargo build --release --locked --bin baraza --bin fault-load 2>&1 | tail -n 1
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export FAULTS_BIN=$PWD/${CARGO_TARGET_DIR:-target}/release
export FAULTS_WORK; FAULTS_WORK=$(mktemp -d /tmp/baraza-faults.XXXXXX)
chmod 755 "$FAULTS_WORK"  # the postgres user reaches its cluster folder inside
export FAULTS_REDIS_PORT; FAULTS_REDIS_PORT=$(free_port)
export FAULTS_PG_PORT; FAULTS_PG_PORT=$(free_port)
smsc_port=$(free_port)
driver=""
cleanup() {
  [ -n "$driver" ] && kill "$driver" 2>/dev/null || true
  for n in 1 2; do
    [ -f "$FAULTS_WORK/node$n.pid" ] && kill "$(cat "$FAULTS_WORK/node$n.pid")" 2>/dev/null || true
  done
  [ -f "$FAULTS_WORK/redis.pid" ] && kill "$(cat "$FAULTS_WORK/redis.pid")" 2>/dev/null || true
  [ -d "$FAULTS_WORK/pg/data" ] && pg_ctl_ -m immediate stop >/dev/null 2>&1 || true
  if [ -n "${KEEP:-}" ]; then echo "logs kept in $FAULTS_WORK"; else rm -rf "$FAULTS_WORK"; fi
}
trap cleanup EXIT

echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== private Redis on $FAULTS_REDIS_PORT (append-only file: $FAULTS_REDIS_PERSIST), PostgreSQL on $FAULTS_PG_PORT, SMSC simulator on $smsc_port"
start_redis
mkdir -p "$FAULTS_WORK/pg"
[ "$(id -u)" = 0 ] && chown postgres "$FAULTS_WORK/pg"
as_postgres "$PG_BIN/initdb" -D "$FAULTS_WORK/pg/data" -U postgres --auth=trust -E UTF8 >/dev/null
start_pg
pg_url="postgres://postgres@127.0.0.1:$FAULTS_PG_PORT/postgres"

for n in 1 2; do
  port=$(free_port); echo "$port" > "$FAULTS_WORK/node$n.port"
  cat > "$FAULTS_WORK/node$n.yaml" <<EOF
listen: 127.0.0.1:$port
flows_dir: $PWD/flows
sessions:
  store: redis
  url: redis://127.0.0.1:$FAULTS_REDIS_PORT
  key_prefix: faults
results:
  store: postgres
  url: $pg_url
  schema: faults
smpp:
  node: node-$n
  operators:
    - name: sim
      host: 127.0.0.1
      port: $smsc_port
      system_id: baraza
      password: secret
      sender: "20880"
admission:
  per_subscriber_per_minute: 100000
  burst: 10000
pseudonym_secret: fault-suite-pseudonym-secret
EOF
done

"$FAULTS_BIN/fault-load" --nodes "127.0.0.1:$(cat "$FAULTS_WORK/node1.port"),127.0.0.1:$(cat "$FAULTS_WORK/node2.port")" \
  --smsc-listen "127.0.0.1:$smsc_port" --hook "bash $PWD/load-tests/faults/run.sh hook" \
  --faults "$FAULTS" --settle "$SETTLE" --recovery "$RECOVERY" --down "$DOWN" \
  --ussd-citizens "$USSD_CITIZENS" --sms-citizens "$SMS_CITIZENS" --think-ms "$THINK_MS" \
  --postgres "$pg_url" --schema faults > "$FAULTS_WORK/driver.out" 2> >(tee "$FAULTS_WORK/driver.err" >&2) &
driver=$!
wait_listening "$smsc_port" "the SMSC simulator"
# Node 2 binds first, so the simulator delivers inbound SMS to it: the node killed carries
# the SMS flow too.
start_node 2
for _ in $(seq 100); do
  ss -Htn state established "( dport = :$smsc_port )" | grep -q . && break; sleep 0.1
done
start_node 1
status=0
wait "$driver" || status=$?
cat "$FAULTS_WORK/driver.out"
for n in 1 2; do
  if grep -qiE 'panic|error' "$FAULTS_WORK/node$n.log"; then
    echo "== node $n log (errors and warnings, last 15 lines):"
    grep -iE 'panic|error|warn' "$FAULTS_WORK/node$n.log" | tail -n 15
  fi
done
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$status"

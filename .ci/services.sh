#!/usr/bin/env bash
# Makes sure the services the tests talk to are up: Redis on 127.0.0.1:6379 and PostgreSQL on
# 127.0.0.1:5432 (trust auth for 127.0.0.1, database `test`). On a machine that already runs
# them this only checks; on a fresh Debian machine it installs them with apt-get and starts them.
# It never lets the tests skip: if a service cannot be brought up, it fails loudly.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq "$@"
}

redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && timeout 2 head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
postgres_up() { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; }

if ! redis_up; then
  echo "services: Redis is not answering on 127.0.0.1:6379; installing/starting it"
  command -v redis-server >/dev/null || apt_install redis-server
  redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes
  for _ in $(seq 50); do redis_up && break; sleep 0.2; done
  redis_up || { echo "services: Redis did not come up" >&2; exit 1; }
fi

# tests/faults.rs and tests/tls.rs start Redis servers of their own (stopped and restarted under
# a gateway; TLS only, which Debian's redis-server is built with).
command -v redis-server >/dev/null || apt_install redis-server
# ... and a PostgreSQL cluster of its own (initdb, pg_ctl: the server package).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || apt_install postgresql

if ! postgres_up; then
  echo "services: PostgreSQL is not answering on 127.0.0.1:5432; installing/starting it"
  command -v pg_ctlcluster >/dev/null || apt_install postgresql postgresql-client
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  # Tests connect as `postgres` over TCP without a password, as on the CI machines.
  as_root sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/' "$hba"
  as_root pg_ctlcluster "$version" main start || as_root service postgresql start
  for _ in $(seq 50); do postgres_up && break; sleep 0.2; done
  postgres_up || { echo "services: PostgreSQL did not come up" >&2; exit 1; }
fi
# tests/tls.rs starts PostgreSQL clusters of its own (initdb, TLS only). Where the shared server
# runs elsewhere (a service container), the server binaries may be missing here: install them
# without creating a cluster of their own.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  as_root mkdir -p /etc/postgresql-common
  grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf ||
    echo 'create_main_cluster = false' | as_root tee -a /etc/postgresql-common/createcluster.conf >/dev/null
  apt_install postgresql
fi

if ! psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; then
  psql -h 127.0.0.1 -U postgres -d postgres -c 'create database test' >/dev/null
fi
echo "services: Redis and PostgreSQL are up"

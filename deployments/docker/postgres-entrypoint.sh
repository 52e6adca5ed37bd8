#!/bin/sh
# Entrypoint of conveyor-postgres (deployments/docker/build.sh postgres): Debian's PostgreSQL with the
# variables of the official postgres image, for machines that cannot pull it.
#   POSTGRES_PASSWORD (required), POSTGRES_USER (default postgres), POSTGRES_DB (default: the user),
#   PGDATA (default /var/lib/postgresql/data).
# The first start creates the cluster in single-user mode (nothing listens meanwhile, so `pg_isready`
# turns true only once the database exists); later starts reuse it. Extra arguments go to postgres.
set -eu
PGDATA=${PGDATA:-/var/lib/postgresql/data}
POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
export PGDATA

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

quote() { printf '"%s"' "$(printf '%s' "$1" | sed 's/"/""/g')"; }

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  [ -n "${POSTGRES_PASSWORD:-}" ] || { echo "POSTGRES_PASSWORD must be set" >&2; exit 1; }
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  "$BIN/initdb" --pgdata="$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" \
    --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != postgres ]; then
    echo "CREATE DATABASE $(quote "$POSTGRES_DB") OWNER $(quote "$POSTGRES_USER");" |
      "$BIN/postgres" --single -j -D "$PGDATA" postgres >/dev/null
  fi
  echo "created database $POSTGRES_DB for $POSTGRES_USER in $PGDATA"
fi

exec "$BIN/postgres" -D "$PGDATA" -c listen_addresses='*' "$@"

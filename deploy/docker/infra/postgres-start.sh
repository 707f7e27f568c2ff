#!/bin/sh
# PostgreSQL for the compose stack: on first start, a cluster in $PGDATA with one role and one
# database per service (user, order, inventory, payment), each role owning its database and
# nothing else, all with the password $MICROSHOP_DB_PASSWORD. Then the server in the
# foreground on every address (the stack's network; compose publishes nothing of it), md5
# passwords required off the local socket. Runs as root only to fix ownership, then as postgres.
set -eu
: "${PGDATA:=/var/lib/microshop/pg}"
: "${MICROSHOP_DB_PASSWORD:?set MICROSHOP_DB_PASSWORD}"
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
export PGDATA

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA"
    chown -R postgres:postgres "$PGDATA"
    chmod 0700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    "$bin/initdb" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 >/dev/null
    echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
    echo "host all all ::/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
    # the databases exist before the server listens on TCP: a service that can connect finds
    # its database (the health check connects over TCP)
    "$bin/pg_ctl" -D "$PGDATA" -o "-c listen_addresses='' -k /tmp" -w start >/dev/null
    for svc in user order inventory payment; do
        "$bin/psql" -h /tmp -U postgres -v ON_ERROR_STOP=1 -q <<SQL
CREATE ROLE "$svc" LOGIN PASSWORD '$MICROSHOP_DB_PASSWORD';
CREATE DATABASE "$svc" OWNER "$svc";
REVOKE ALL ON DATABASE "$svc" FROM PUBLIC;
SQL
    done
    "$bin/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec "$bin/postgres" -D "$PGDATA" -c listen_addresses='*' -k /tmp -c max_connections=200 -c jit=off "$@"

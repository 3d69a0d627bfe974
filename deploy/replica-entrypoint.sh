#!/bin/sh
# docker-compose: a streaming replica of the `postgres` service. On an empty volume it
# clones the primary (pg_basebackup -R writes standby.signal and primary_conninfo),
# then runs as a hot standby.
set -e
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_isready -h postgres -U "$POSTGRES_USER" -q; do sleep 1; done
  PGPASSWORD="$POSTGRES_PASSWORD" pg_basebackup -h postgres -U "$POSTGRES_USER" \
    -D "$PGDATA" -R -X stream -c fast
  chmod 0700 "$PGDATA"
fi
exec postgres -c hot_standby=on

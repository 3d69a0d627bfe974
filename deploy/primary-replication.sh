#!/bin/sh
# docker-compose: lets the replica stream from the primary (runs once, on a new volume).
set -e
echo "host replication ${POSTGRES_USER} all scram-sha-256" >> "$PGDATA/pg_hba.conf"

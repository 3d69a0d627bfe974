-- rate_limits: the counters of @fastify/rate-limit, shared by every API process
-- (src/http/rate-limit-store.ts), so N processes allow a limit once, not N times.
-- One row per limited route and client; one statement per hit. UNLOGGED: no WAL,
-- so a hit costs no fsync and replicas do not carry it; after a crash the table is
-- empty, which forgives the counts of at most one window. Expired rows are pruned
-- by the maintenance loop.

create unlogged table rate_limits (
  -- "<method> <route>|<client key>", built by the store.
  key         text not null,
  hits        bigint not null,
  -- The end of the current fixed window.
  expires_at  timestamptz not null,

  constraint pk_rate_limits primary key (key),
  constraint ck_rate_limits_hits_positive check (hits > 0),
  constraint ck_rate_limits_key_length check (length(key) <= 512)
);

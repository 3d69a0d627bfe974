-- Extensions the schema depends on.
--
-- pg_trgm: trigram GIN indexes make `ilike '%term%'` on users.email and
-- users.username an index scan instead of a sequential scan (user search).
create extension if not exists pg_trgm with schema public;

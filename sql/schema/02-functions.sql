-- Trigger functions shared by several tables.

-- Keeps updated_at honest whoever writes the row (the app, a DBA, a script).
-- The triggers fire only when a column really changed, so a no-op UPDATE
-- leaves updated_at alone.
create function set_updated_at() returns trigger
language plpgsql as $$
begin
  new.updated_at := now();
  return new;
end;
$$;

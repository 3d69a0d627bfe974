-- Enum types. Labels are lower-case everywhere: here, in TypeScript
-- (src/domain/enums.ts) and in JSON; test/domain/enums.test.ts compares them.
-- Adding a label is `alter type ... add value` in a migration; the new label
-- cannot be used inside the transaction that added it.

create type auth_provider as enum ('email', 'google');

create type user_role as enum ('user', 'admin');

create type script_status as enum ('uploaded', 'queued', 'running', 'completed', 'failed', 'cancelled');

-- What started a run (src/domain/run.ts): a person (execute) or a schedule.
create type run_trigger as enum ('manual', 'schedule');

-- A run's state: script_status without `uploaded` (a run starts queued).
create type run_status as enum ('queued', 'running', 'completed', 'failed', 'cancelled');

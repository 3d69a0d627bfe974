-- Enum types. Labels are lower-case everywhere: here, in TypeScript
-- (src/domain/enums.ts) and in JSON; test/domain/enums.test.ts compares them.
-- Adding a label is `alter type ... add value` in a migration; the new label
-- cannot be used inside the transaction that added it.

create type auth_provider as enum ('email', 'google');

create type user_role as enum ('user', 'admin');

create type script_status as enum ('uploaded', 'queued', 'running', 'completed', 'failed', 'cancelled');

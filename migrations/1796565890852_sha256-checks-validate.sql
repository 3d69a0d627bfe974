-- Up Migration
-- Validates the two checks sha256-checks-without-counted-regex added NOT VALID.
-- VALIDATE CONSTRAINT scans the table under SHARE UPDATE EXCLUSIVE, which blocks
-- neither reads nor writes; every row passes (the old check was the same rule).
set local lock_timeout = '5s';
set local statement_timeout = '30min';

alter table scripts validate constraint ck_scripts_sha256_format;
alter table script_runs validate constraint ck_script_runs_sha256_format;

-- Down Migration
-- Nothing to undo: a validated constraint is what the previous migration's down replaces.

-- Up Migration
-- Validates the two constraints script-runs added to scripts NOT VALID. VALIDATE
-- CONSTRAINT scans scripts under SHARE UPDATE EXCLUSIVE, which blocks neither reads nor
-- writes (only other schema changes); every row passes (last_run_id was added null,
-- run_count 0), so this is one sequential scan, about a second per million scripts.

set local lock_timeout = '5s';
set local statement_timeout = '30min';

alter table scripts validate constraint ck_scripts_run_count_non_negative;
alter table scripts validate constraint fk_scripts_last_run;

-- Down Migration
-- Nothing to undo: a validated constraint is what script-runs' down migration drops.

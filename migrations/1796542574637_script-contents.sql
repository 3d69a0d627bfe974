-- Up Migration
-- Script bytes move into PostgreSQL: script_contents holds the uploaded bytes of
-- a script, one row per script, written in the transaction that inserts the
-- script row and deleted with it (cascade). No shared disk is needed any more.
-- scripts.file_path becomes nullable: it is where the bytes of a script uploaded
-- before this migration still are, until `npm run cli -- move-contents` (run once
-- after upgrading; `npm start` also does it) has copied them here and cleared it.
-- A SQL migration cannot do that copy: the files are on the API machines' disks,
-- which the database server cannot read (pg_read_binary_file also needs superuser).
-- Locking: creating a table and dropping a NOT NULL take an ACCESS EXCLUSIVE lock
-- on scripts for a moment (no scan, no rewrite); it gives up rather than queue
-- behind a long transaction and block everything behind itself.

set local lock_timeout = '5s';
set local statement_timeout = '30s';

-- New code never writes file_path: it may be null (no client reads it: it was never shown).
-- squawk-ignore ban-drop-not-null
alter table scripts alter column file_path drop not null;

create table script_contents (
  script_id  bigint not null,
  -- Kept on every per-user table, so the data can be distributed by user.
  user_id    bigint not null,
  content    bytea not null,

  -- (script_id, user_id): on Citus a key must contain the distribution column. One row
  -- per script all the same: script_id determines user_id (the foreign key below).
  constraint pk_script_contents primary key (script_id, user_id),
  constraint fk_script_contents_script foreign key (script_id, user_id)
    references scripts (id, user_id) on delete cascade,
  constraint ck_script_contents_not_empty check (octet_length(content) > 0)
);

-- Uncompressed out-of-line storage: substring() then reads only the TOAST chunks of
-- the slice it asks for, so content is streamed out in slices at linear cost
-- (compressed values would be decompressed from the start for every slice).
alter table script_contents alter column content set storage external;

-- Down Migration
-- squawk-ignore ban-drop-table
drop table script_contents;

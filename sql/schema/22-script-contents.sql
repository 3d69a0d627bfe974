-- script_contents: the uploaded bytes of a script, one row per script, written in
-- the transaction that inserts the script row and deleted with it (cascade), so an
-- upload is all or nothing, a delete leaves nothing behind, a backup holds
-- everything, and any executor anywhere can run any script.

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

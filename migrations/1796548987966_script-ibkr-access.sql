-- Up Migration
-- Whether a script's runs receive its owner's IBKR credentials (PATCH /scripts/{id}
-- {ibkr_access}); off unless the owner turns it on for that script. A constant default
-- is a catalog-only change (no table rewrite); the timeouts keep the brief lock bounded.
set local lock_timeout = '5s';
set local statement_timeout = '30s';

alter table scripts add column ibkr_access boolean not null default false;

-- Down Migration
set local lock_timeout = '5s';
-- Going down removes the feature with its column: nothing else reads it.
-- squawk-ignore ban-drop-column
alter table scripts drop column ibkr_access;

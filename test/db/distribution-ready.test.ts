/**
 * The schema stays ready to be distributed by user (docs/scaling.md): every
 * per-user table carries `user_id bigint not null`, and every foreign key between
 * per-user tables carries the user along (both sides' user_id in the key), so rows
 * that reference each other always live on one shard. A new table must either follow
 * that or be named below as global, with its reason in docs/scaling.md.
 */
import t from 'tap';
import { testDatabase } from '../helpers/db.ts';

/** The distribution root: distributed by its id, which every other table calls user_id. */
const ROOT = 'users';

/** Not per-user: counters, pre-authentication state (docs/scaling.md, "Global tables"). */
const GLOBAL = new Set([
  'login_attempts',
  'rate_limits',
  'script_counters',
  'script_upload_counts',
  'user_counters',
  'user_registration_counts',
]);

t.test('every per-user table has user_id bigint not null', async (t) => {
  const { sql } = await testDatabase(t);
  const tables = await sql<{ table: string; user_id: string | null }[]>`
    select c.relname as table,
      (select format_type(a.atttypid, a.atttypmod) || case when a.attnotnull then ' not null' else '' end
       from pg_attribute a
       where a.attrelid = c.oid and a.attname = 'user_id' and not a.attisdropped) as user_id
    from pg_class c
    where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
      and c.relname <> 'pgmigrations'
    order by c.relname
  `;
  t.ok(tables.length > 5, `${tables.length} tables`);
  for (const { table, user_id } of tables) {
    if (table === ROOT || GLOBAL.has(table)) continue;
    t.equal(user_id, 'bigint not null', `${table}.user_id`);
  }
  for (const name of GLOBAL)
    t.ok(
      tables.some((r) => r.table === name),
      `global table ${name} still exists`,
    );
});

t.test('every foreign key between per-user tables includes user_id on both sides', async (t) => {
  const { sql } = await testDatabase(t);
  const keys = await sql<
    { name: string; from: string; to: string; from_cols: string[]; to_cols: string[] }[]
  >`
    select con.conname as name, src.relname as from, dst.relname as to,
      array(select a.attname::text from unnest(con.conkey) with ordinality k(n, i)
            join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.n order by k.i) as from_cols,
      array(select a.attname::text from unnest(con.confkey) with ordinality k(n, i)
            join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.n order by k.i) as to_cols
    from pg_constraint con
    join pg_class src on src.oid = con.conrelid
    join pg_class dst on dst.oid = con.confrelid
    where con.contype = 'f' and src.relnamespace = 'public'::regnamespace
    order by con.conname
  `;
  t.ok(keys.length > 5, `${keys.length} foreign keys`);
  for (const key of keys) {
    if (GLOBAL.has(key.from) || GLOBAL.has(key.to)) {
      t.fail(`${key.name}: a key between a global and a per-user table cannot hold once distributed`);
      continue;
    }
    if (key.to === ROOT) {
      t.same(
        [key.from_cols, key.to_cols],
        [['user_id'], ['id']],
        `${key.name}: user_id references users (id)`,
      );
      continue;
    }
    const at = key.from_cols.indexOf('user_id');
    t.ok(
      at >= 0 && key.to_cols[at] === 'user_id',
      `${key.name}: (${key.from_cols}) → ${key.to} (${key.to_cols})`,
    );
  }
});

t.test(
  'every primary key and unique constraint of a per-user table includes user_id, or is listed',
  async (t) => {
    const { sql } = await testDatabase(t);
    const rows = await sql<{ name: string; table: string; cols: string[] }[]>`
    select con.conname as name, c.relname as table,
      array(select a.attname::text from unnest(con.conkey) k(n)
            join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.n) as cols
    from pg_constraint con
    join pg_class c on c.oid = con.conrelid
    where con.contype in ('p', 'u') and c.relnamespace = 'public'::regnamespace
      and c.relname <> 'pgmigrations'
    order by con.conname
  `;
    // Keys that must change on Citus, with the change planned in docs/scaling.md
    // ("Keys"). This list only shrinks: a new per-user key must include user_id.
    const planned = new Set([
      'pk_api_tokens',
      'uq_api_tokens_token_hash',
      'pk_scripts',
      'uq_scripts_filename',
      'pk_script_log_chunks',
      'pk_script_runs',
      'pk_run_log_chunks',
      'pk_script_schedules',
    ]);
    for (const row of rows) {
      if (row.table === ROOT || GLOBAL.has(row.table)) continue;
      if (row.cols.includes('user_id')) continue;
      t.ok(planned.has(row.name), `${row.name} (${row.cols}) lacks user_id: planned in docs/scaling.md`);
    }
  },
);

/**
 * sql/schema and migrations/ must build the same database (DESIGN.md, Schema):
 * this is what stops a schema change from shipping without its migration, or the
 * other way round. The catalogs are compared by test/helpers/catalog.ts.
 */
import postgres from 'postgres';
import t, { type Test } from 'tap';
import { migrate, migrationNames } from '../../src/db/migrate.ts';
import { applySchemaFiles, type Catalog, diffCatalogs, type Kind, readCatalog } from '../helpers/catalog.ts';
import { emptyDatabase } from '../helpers/db.ts';

async function withSql<T>(url: string, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    return await fn(sql);
  } finally {
    await sql.end();
  }
}

const catalogOf = (url: string) => withSql(url, readCatalog);

/** Runs `fn` in a transaction that is always rolled back: DDL is transactional, so the database is untouched. */
async function rolledBack<T>(url: string, fn: (sql: postgres.ReservedSql) => Promise<T>): Promise<T> {
  return withSql(url, async (sql) => {
    const conn = await sql.reserve();
    try {
      await conn`begin`;
      return await fn(conn);
    } finally {
      await conn`rollback`;
      conn.release();
    }
  });
}

/** Asserts no difference; on failure the diff lines are printed as they are, one per line, and compared. */
function sameCatalogs(t: Test, lines: string[], message: string): void {
  for (const line of lines) t.comment(line);
  t.same(lines, [], message);
}

// Two databases for the whole file: one built from sql/schema, one by the migrations.
// Tests only read them, or change them inside a transaction that is rolled back.
const schemaDb = await emptyDatabase(t, 'drift_schema');
await withSql(schemaDb.url, applySchemaFiles);
const fromSchema = await catalogOf(schemaDb.url);

const migratedDb = await emptyDatabase(t, 'drift_migrations');
const names = await migrationNames();
const firstUp = await migrate({ databaseUrl: migratedDb.url });
const fromMigrations = await catalogOf(migratedDb.url);

t.test('the catalog describes our objects and leaves out extension members and pgmigrations', async (t) => {
  // Without this, two catalogs that both missed everything would compare equal.
  t.match(fromSchema.extension, { pg_trgm: /^version .* in public$/ });
  t.same(
    fromSchema.type.script_status,
    "enum ('uploaded', 'queued', 'running', 'completed', 'failed', 'cancelled')",
  );
  t.match(fromSchema.table.users, /^table columns \(id, email, username, /);
  t.match(fromSchema.column['users.id'], /^bigint not null generated always as identity \(bigint start 1 /);
  t.match(
    fromSchema.column['users.is_ibkr_connected'],
    /generated always as \(\(ibkr_user_id IS NOT NULL\)\) stored/,
  );
  t.same(fromSchema.column['scripts.execution_time_seconds'], 'numeric(10,3) null');
  t.same(fromSchema.constraint['ck_scripts_positive_file_size on scripts'], 'CHECK ((file_size > 0))');
  t.match(fromSchema.constraint['fk_scripts_user on scripts'], /REFERENCES users\(id\) ON DELETE CASCADE/);
  t.match(fromSchema.index.ix_users_email_trgm, /USING gin \(email gin_trgm_ops\)/);
  t.match(fromSchema.trigger['tg_scripts_status_transition on scripts'], /BEFORE UPDATE OF status ON/);
  t.match(fromSchema.function['set_updated_at()'], /new\.updated_at := now\(\)/);
  // pg_trgm's own functions (similarity, gtrgm_*) and type (gtrgm) are the extension's, not ours.
  const functions = Object.keys(fromSchema.function);
  t.ok(functions.includes('scripts_check_status_transition()'));
  t.same(
    functions.filter((f) =>
      /^(similarity|word_similarity|strict_word|show_|set_limit|gtrgm|gin_|show_limit)/.test(f),
    ),
    [],
  );
  t.notOk('gtrgm' in fromSchema.type);
  t.notOk('pgmigrations' in fromMigrations.table);
  t.same(
    Object.keys(fromMigrations.sequence).filter((n) => n.startsWith('pgmigrations')),
    [],
    'no pgmigrations sequence',
  );
  t.notOk('pgmigrations_pkey' in fromMigrations.index);
});

t.test('a database built from sql/schema equals one built by the migrations', async (t) => {
  t.same(firstUp, names, 'the migrations all ran');
  sameCatalogs(t, diffCatalogs(fromSchema, fromMigrations, ['schema', 'migrations']), 'no drift');
});

t.test('the checker sees a change', async (t) => {
  t.test('an index recreated on another column is reported by name', async (t) => {
    const changed = await rolledBack(schemaDb.url, async (sql) => {
      await sql`drop index ix_scripts_status`;
      await sql`create index ix_scripts_status on scripts (created_at)`;
      return readCatalog(sql);
    });
    const lines = diffCatalogs(fromSchema, changed, ['schema', 'changed']);
    t.equal(lines.length, 1, 'exactly one difference');
    t.match(
      lines[0],
      /^index ix_scripts_status: schema has ".*\(status\)" \/ changed has ".*\(created_at\)"$/,
    );
  });

  t.test('a check constraint with another expression is reported by name', async (t) => {
    const changed = await rolledBack(schemaDb.url, async (sql) => {
      await sql`alter table scripts drop constraint ck_scripts_positive_file_size`;
      await sql`alter table scripts add constraint ck_scripts_positive_file_size check (file_size >= 0)`;
      return readCatalog(sql);
    });
    const lines = diffCatalogs(fromSchema, changed, ['schema', 'changed']);
    t.equal(lines.length, 1, 'exactly one difference');
    t.match(
      lines[0],
      /^constraint ck_scripts_positive_file_size on scripts: schema has "CHECK \(\(file_size > 0\)\)" \/ changed has "CHECK \(\(file_size >= 0\)\)"$/,
    );
  });

  t.test('an object missing on one side is reported as only in the other', async (t) => {
    const changed = await rolledBack(schemaDb.url, async (sql) => {
      await sql`drop trigger tg_scripts_set_updated_at on scripts`;
      return readCatalog(sql);
    });
    t.same(diffCatalogs(fromSchema, changed, ['schema', 'changed']), [
      'trigger tg_scripts_set_updated_at on scripts only in schema',
    ]);
  });
});

t.test('up, down all the way, up again gives the catalog of the first up', async (t) => {
  const { url } = await emptyDatabase(t, 'drift_up_down_up');
  const empty = await catalogOf(url);
  t.same(await migrate({ databaseUrl: url }), names, 'up applies every migration');
  const up = await catalogOf(url);

  const reverted = await migrate({ databaseUrl: url, direction: 'down', count: Number.POSITIVE_INFINITY });
  t.same(reverted, [...names].reverse(), 'down reverts every migration, newest first');
  const down = await catalogOf(url);
  sameCatalogs(t, diffCatalogs(empty, down, ['empty database', 'after down']), 'down leaves an empty schema');
  for (const kind of ['extension', 'type', 'table', 'function', 'view', 'sequence'] satisfies Kind[]) {
    const left = Object.keys(down[kind]).filter((name) => name in up[kind]);
    t.same(left, [], `no ${kind} of ours is left after down`);
  }

  t.same(await migrate({ databaseUrl: url }), names, 'up applies every migration again');
  sameCatalogs(t, diffCatalogs(up, await catalogOf(url), ['first up', 'second up']), 'same catalog');
});

t.test('running up twice: the second run applies nothing and changes nothing', async (t) => {
  // migratedDb was migrated once above.
  t.same(await migrate({ databaseUrl: migratedDb.url }), [], 'nothing to apply');
  const again: Catalog = await catalogOf(migratedDb.url);
  sameCatalogs(t, diffCatalogs(fromMigrations, again, ['first up', 'second up']), 'catalog unchanged');
});

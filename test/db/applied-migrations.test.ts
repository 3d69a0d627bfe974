/**
 * appliedMigrations (db/migrate.ts), what `npm run migrate -- status` marks applied:
 * every migration on a migrated database, in order; none where node-pg-migrate's
 * table is not there yet.
 */
import t from 'tap';
import { appliedMigrations, MIGRATIONS_TABLE, migrationNames } from '../../src/db/migrate.ts';
import { rolledBack, testDatabase } from '../helpers/db.ts';

const db = await testDatabase(t);

t.test('a migrated database: every migration, in the order they were applied', async (t) => {
  t.same(await appliedMigrations(db.sql), await migrationNames());
});

t.test('without the migrations table: none', async (t) => {
  const applied = await rolledBack(db, async (tx) => {
    await tx`alter table ${tx(MIGRATIONS_TABLE)} rename to pgmigrations_hidden`;
    return appliedMigrations(tx);
  });
  t.same(applied, []);
  t.same(await appliedMigrations(db.sql), await migrationNames(), 'the rename was rolled back');
});

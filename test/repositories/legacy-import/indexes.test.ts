/**
 * The index handling of import-legacy's load into an empty database, against a real
 * migrated database, in transactions that are thrown away.
 */
import t from 'tap';
import type { TransactionSql } from '../../../src/db/client.ts';
import { LegacyIndexes } from '../../../src/repositories/legacy-import/indexes.ts';
import { rolledBack, testDatabase } from '../../helpers/db.ts';

t.test(
  'indexes: an empty target loses its secondary indexes and foreign keys, and gets them back',
  async (t) => {
    const db = await testDatabase(t);
    const catalog = (tx: TransactionSql) => tx<{ name: string; def: string }[]>`
    select c.relname::text as name, pg_get_indexdef(i.indexrelid) as def
    from pg_index as i join pg_class as c on c.oid = i.indexrelid
    where i.indrelid = any('{users,scripts,script_contents,script_runs,run_log_chunks}'::regclass[])
    union all
    select conname::text, pg_get_constraintdef(oid) || ' valid=' || convalidated
    from pg_constraint
    where conrelid = any('{users,scripts,script_contents,script_runs,run_log_chunks}'::regclass[])
    order by 1, 2
  `;
    const result = await rolledBack(db, async (tx) => {
      const indexes = new LegacyIndexes(tx);
      const before = await catalog(tx);
      const empty = await indexes.targetIsEmpty();
      const deferred = await indexes.defer();
      const during = await catalog(tx);
      const steps: string[] = [];
      await indexes.restore(deferred, (what) => steps.push(what));
      const after = await catalog(tx);
      return { before, during, after, empty, deferred, steps };
    });
    t.equal(result.empty, true);
    t.ok(result.deferred.indexes.length > 10, 'the secondary indexes are dropped');
    t.ok(
      result.deferred.foreignKeys.some((k) => k.name === 'fk_scripts_user'),
      'and the foreign keys, fk_scripts_user among them',
    );
    const names = new Set(result.during.map((r) => r.name));
    t.notOk(names.has('ix_scripts_user_status'), 'no secondary index during the load');
    t.notOk(names.has('fk_scripts_last_run'), 'no foreign key during the load');
    t.ok(
      names.has('pk_scripts') && names.has('uq_scripts_filename'),
      'primary keys and unique constraints stay',
    );
    t.same(result.after, result.before, 'every index and constraint is back, each foreign key validated');
    t.equal(result.steps.length, result.deferred.indexes.length + result.deferred.foreignKeys.length);

    const notEmpty = await rolledBack(db, async (tx) => {
      await tx`
      insert into users (email, username, hashed_password)
      values ('x@example.com', 'xxx', '$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA')
    `;
      return new LegacyIndexes(tx).targetIsEmpty();
    });
    t.equal(notEmpty, false, 'a database with a user is not empty');
  },
);

/**
 * mapPostgresError: the cases test/db/database.test.ts does not reach — a foreign key the
 * map does not name, NOT NULL, a NUL in a parameter no column is blamed for, conflicts and
 * checks the map does not know — from real PostgreSQL errors; and the driver's own errors,
 * which carry a code but no SQLSTATE.
 */
import postgres from 'postgres';
import t from 'tap';
import { ConcurrentUpdateError, isRetryable, mapPostgresError } from '../../src/db/map-error.ts';
import {
  ConflictError,
  DatabaseUnavailableError,
  ForeignKeyError,
  InvalidStateError,
  ValidationError,
} from '../../src/domain/errors.ts';
import { rejectsWith } from '../helpers/assert.ts';
import { testDatabase } from '../helpers/db.ts';
import { makeScript, makeUser, queueRun } from '../helpers/fixtures.ts';

t.test('a foreign key the map does not name is REFERENCE_VIOLATION with the constraint', async (t) => {
  const { db, repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  const sql = db.sql;
  // script_contents' key is (script_id, user_id): the script exists, but not with this owner.
  const error = await rejectsWith(
    t,
    db.count(
      'test.fk',
      sql`insert into script_contents (script_id, user_id, content) values (${script.id}, ${user.id + 1000}, 'x')`,
    ),
    ForeignKeyError,
    { code: 'REFERENCE_VIOLATION', constraint: 'fk_script_contents_script' },
  );
  t.type(error?.cause, postgres.PostgresError, 'the PostgreSQL error is kept as the cause');
});

t.test('NOT NULL is a ValidationError on the column', async (t) => {
  const { db } = await testDatabase(t);
  const sql = db.sql;
  await rejectsWith(
    t,
    db.count('test.notnull', sql`insert into users (email, username) values (${null}, 'nobody')`),
    ValidationError,
    { code: 'VALIDATION_FAILED', errors: [{ path: '/email', message: 'is required' }] },
  );
});

t.test('a NUL in a text parameter: the error says which values are the culprits', async (t) => {
  const { db } = await testDatabase(t);
  const sql = db.sql;
  const error = await rejectsWith(
    t,
    db.one('test.nul', sql`select ${'left\u0000right'}::text as value, ${'clean'}::text as other`),
    ValidationError,
    { errors: [{ path: '', message: 'contains a character that cannot be stored (NUL, or invalid UTF-8)' }] },
  );
  t.type(error?.offending, 'function', 'no column named: a test of the value instead');
  t.equal(error?.offending?.('a\u0000b'), true);
  t.equal(error?.offending?.('clean'), false);
});

t.test(
  'conflicts and checks the maps do not know get a generic code that still names the rule',
  async (t) => {
    const { db, repos } = await testDatabase(t);
    const user = await makeUser(repos);
    const script = await makeScript(repos, user.id);
    const sql = db.sql;
    const insert = () =>
      db.count(
        'test.content',
        sql`insert into script_contents (script_id, user_id, content) values (${script.id}, ${user.id}, 'x')`,
      );
    await insert();
    await rejectsWith(t, insert(), ConflictError, { code: 'CONFLICT', constraint: 'pk_script_contents' });
    await rejectsWith(
      t,
      db.count('test.empty', sql`update script_contents set content = '' where script_id = ${script.id}`),
      ValidationError,
      { errors: [{ path: '', message: 'violates rule ck_script_contents_not_empty' }] },
    );
  },
);

t.test('errors of the driver and of the network: unavailable by code, anything else unchanged', async (t) => {
  for (const code of ['CONNECTION_CLOSED', 'CONNECT_TIMEOUT', 'ECONNREFUSED', 'ECONNRESET', 'EAI_AGAIN']) {
    const error = Object.assign(new Error(code), { code });
    const mapped = mapPostgresError(error);
    t.type(mapped, DatabaseUnavailableError, code);
    t.equal((mapped as Error).cause, error, `${code}: kept as the cause`);
  }
  const other = Object.assign(new Error('no such file'), { code: 'ENOENT' });
  t.equal(mapPostgresError(other), other, 'an error with a code we do not know is a bug: unchanged');
  const plain = new TypeError('x is undefined');
  t.equal(mapPostgresError(plain), plain);
  t.equal(mapPostgresError('a string'), 'a string', 'not even an Error: unchanged');
});

t.test('isRetryable: serialization failures and deadlocks, raw or mapped; nothing else', async (t) => {
  t.equal(isRetryable(new ConcurrentUpdateError()), true);
  t.equal(isRetryable(Object.assign(new Error('x'), { code: '40001' })), true);
  t.equal(isRetryable(Object.assign(new Error('x'), { code: '40P01' })), true);
  t.equal(isRetryable(Object.assign(new Error('x'), { code: '23505' })), false);
  t.equal(isRetryable(new Error('no code')), false);
  t.equal(isRetryable(null), false);
});

t.test(
  'a second live run of a script and a run status change the machine forbids are INVALID_STATE',
  async (t) => {
    const { db, repos } = await testDatabase(t);
    const user = await makeUser(repos);
    const script = await makeScript(repos, user.id);
    const run = await queueRun(repos, script.id);
    const sql = db.sql;
    await rejectsWith(
      t,
      db.count(
        'test.secondLive',
        sql`insert into script_runs (script_id, user_id, script_sha256) values (${script.id}, ${user.id}, ${script.sha256})`,
      ),
      InvalidStateError,
      { message: 'the script already has a queued or running run' },
    );
    await rejectsWith(
      t,
      db.count('test.transition', sql`update script_runs set status = 'completed' where id = ${run.id}`),
      InvalidStateError,
      { message: 'the run is not in a state that allows this' },
    );
    t.equal((await repos.runs.getById(run.id)).status, 'queued', 'the run is unchanged');
  },
);

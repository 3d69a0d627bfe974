/**
 * Every rule of script_runs and run_log_chunks, broken on purpose in raw SQL: each
 * attempt fails with the right SQLSTATE and constraint name. Also the status machine
 * trigger against RUN_TRANSITIONS, the cascades, and fk_scripts_last_run refusing to
 * delete a script's latest run.
 */
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import t, { type Test } from 'tap';
import { RUN_STATUSES, type RunStatus } from '../../src/domain/enums.ts';
import { RUN_TRANSITIONS } from '../../src/domain/run.ts';
import { testDatabase } from '../helpers/db.ts';
import { FAKE_HASH } from '../helpers/fixtures.ts';

type Row = Record<string, unknown>;
type Case = [label: string, attempt: () => Promise<unknown>, code: string, name: string | null];

const tag = () => randomBytes(5).toString('hex');
const sha = (c = 'a') => c.repeat(64);
const T1 = new Date('2024-01-01T00:00:00Z');
const T2 = new Date('2024-01-01T00:01:00Z');
const RUNNING: Row = { status: 'running', started_at: T1, executor_id: 'executor-1', lease_expires_at: T2 };
const NO_SUCH_ID = 2 ** 53 - 1;
const CHECK = '23514';
const UNIQUE = '23505';
const FOREIGN_KEY = '23503';
const NOT_NULL = '23502';
const BAD_TEXT = '22P02';

const broken = new Set<string>();

async function expectViolation(t: Test, [label, attempt, code, name]: Case): Promise<void> {
  let error: unknown;
  try {
    await attempt();
  } catch (e) {
    error = e;
  }
  if (!(error instanceof postgres.PostgresError)) {
    t.fail(`${label}: expected ${code} ${name ?? ''}`, { found: error === undefined ? 'success' : error });
    return;
  }
  const found = code === NOT_NULL ? error.column_name : error.constraint_name;
  const ok = t.strictSame(
    { code: error.code, name: found ?? null },
    { code, name },
    `${label}: ${code} ${name ?? ''}`,
  );
  if (ok && name !== null && code !== NOT_NULL) broken.add(name);
}

t.test('constraints of script_runs and run_log_chunks', async (t) => {
  const { sql } = await testDatabase(t);
  const insertUser = async () => {
    const id = tag();
    const [row] = await sql<{ id: number }[]>`
      insert into users (email, username, hashed_password)
      values (${`u${id}@example.com`}, ${`user_${id}`}, ${FAKE_HASH}) returning id
    `;
    return row!.id;
  };
  const owner = await insertUser();
  const stranger = await insertUser();
  const insertScript = async () => {
    const id = tag();
    const [row] = await sql<{ id: number }[]>`
      insert into scripts (user_id, filename, original_filename, file_path, file_size, file_extension, sha256)
      values (${owner}, ${`${id}.py`}, 'x.py', ${`/nonexistent/${id}.py`}, 1, '.py', ${sha()}) returning id
    `;
    return row!.id;
  };
  const scriptId = await insertScript();
  const validRun = (): Row => ({ script_id: scriptId, user_id: owner, script_sha256: sha() });
  const insertRun = async (overrides: Row = {}) => {
    const [row] = await sql<(Row & { id: number })[]>`
      insert into script_runs ${sql({ ...validRun(), ...overrides } as Record<string, postgres.ParameterOrJSON<never>>)}
      returning *
    `;
    return row!;
  };
  const finished = { status: 'completed', started_at: T1, completed_at: T2 };
  const takenRun = await insertRun({ ...finished, script_id: await insertScript() });
  const insertChunk = async (overrides: Row = {}) =>
    sql`insert into run_log_chunks ${sql({ run_id: takenRun.id, user_id: owner, seq: Number.parseInt(tag().slice(0, 6), 16), data: 'x', ...overrides } as Record<string, postgres.ParameterOrJSON<never>>)}`;
  await insertChunk({ seq: 0 });
  const run = (o: Row) => () => insertRun(o);
  const chunk = (o: Row) => () => insertChunk(o);

  await t.test('valid rows are accepted', async (t) => {
    await t.resolves(insertRun({ ...finished, script_id: await insertScript() }), 'completed run');
    await t.resolves(insertRun({ ...RUNNING, script_id: await insertScript() }), 'running run');
    const scheduled = await insertScript();
    const [schedule] = await sql<{ id: number }[]>`
      insert into script_schedules (script_id, user_id, cron, timezone, next_run_at)
      values (${scheduled}, ${owner}, '* * * * *', 'UTC', now()) returning id
    `;
    await t.resolves(
      insertRun({ trigger: 'schedule', schedule_id: schedule!.id, script_id: scheduled }),
      'schedule run',
    );
    await t.resolves(
      insertRun({ status: 'cancelled', completed_at: T1, script_id: await insertScript() }),
      'cancelled while queued',
    );
    await t.resolves(insertChunk({ seq: 1, data: '\n' }), 'chunk');
  });

  await t.test('script_runs: each check, unique, primary key and foreign key', async (t) => {
    // biome-ignore format: a table, one case a line
    const cases: Case[] = [
      ['sha256 in upper case', run({ script_sha256: sha('A') }), CHECK, 'ck_script_runs_sha256_format'],
      ['manual run with a schedule', run({ schedule_id: 1 }), CHECK, 'ck_script_runs_schedule_has_schedule_trigger'],
      ['negative execution time', run({ ...finished, execution_time_seconds: -1 }), CHECK, 'ck_script_runs_execution_time_non_negative'],
      ['negative cpu time', run({ ...finished, cpu_time_seconds: -1 }), CHECK, 'ck_script_runs_cpu_time_non_negative'],
      ['negative memory', run({ ...finished, memory_usage_mb: -1 }), CHECK, 'ck_script_runs_memory_usage_non_negative'],
      ['negative log bytes', run({ ...finished, log_bytes: -1 }), CHECK, 'ck_script_runs_log_bytes_non_negative'],
      ['queued with started_at', run({ started_at: T1 }), CHECK, 'ck_script_runs_queued_not_started'],
      ['running without started_at', run({ ...RUNNING, started_at: null }), CHECK, 'ck_script_runs_running_has_started_at'],
      ['running without executor', run({ ...RUNNING, executor_id: '' }), CHECK, 'ck_script_runs_running_has_lease'],
      ['failed without completed_at', run({ status: 'failed', started_at: T1 }), CHECK, 'ck_script_runs_finished_has_completed_at'],
      ['completed before started', run({ status: 'completed', started_at: T2, completed_at: T1 }), CHECK, 'ck_script_runs_completed_after_started'],
      ['status not in the enum', run({ status: 'uploaded' }), BAD_TEXT, null],
      ['script that does not exist', run({ script_id: NO_SUCH_ID }), FOREIGN_KEY, 'fk_script_runs_script'],
      ['a user who does not own the script', run({ ...finished, user_id: stranger }), FOREIGN_KEY, 'fk_script_runs_script'],
      ['a schedule that does not exist', run({ ...finished, trigger: 'schedule', schedule_id: NO_SUCH_ID }), FOREIGN_KEY, 'fk_script_runs_schedule'],
      ['two live runs of one script', async () => { await insertRun(); await insertRun(); }, UNIQUE, 'uq_script_runs_live_per_script'],
      ['duplicate id', () => sql`insert into script_runs (id, script_id, user_id, script_sha256, status, completed_at) overriding system value values (${takenRun.id}, ${scriptId}, ${owner}, ${sha()}, 'cancelled', now())`, UNIQUE, 'pk_script_runs'],
    ];
    for (const c of cases) await expectViolation(t, c);
  });

  await t.test('run_log_chunks: its checks, primary key and foreign key', async (t) => {
    // biome-ignore format: a table, one case a line
    const cases: Case[] = [
      ['empty data', chunk({ data: '' }), CHECK, 'ck_run_log_chunks_data_not_empty'],
      ['negative seq', chunk({ seq: -1 }), CHECK, 'ck_run_log_chunks_seq_non_negative'],
      ['duplicate seq', chunk({ seq: 0 }), UNIQUE, 'pk_run_log_chunks'],
      ['run that does not exist', chunk({ run_id: NO_SUCH_ID }), FOREIGN_KEY, 'fk_run_log_chunks_run'],
      ['a user who does not own the run', chunk({ user_id: stranger }), FOREIGN_KEY, 'fk_run_log_chunks_run'],
    ];
    for (const c of cases) await expectViolation(t, c);
  });

  await t.test('every NOT NULL column refuses null', async (t) => {
    const columns = await sql<{ table: string; column: string }[]>`
      select c.relname as table, a.attname as column
      from pg_attribute a join pg_class c on c.oid = a.attrelid
      where c.relname in ('script_runs', 'run_log_chunks') and c.relnamespace = 'public'::regnamespace
        and a.attnum > 0 and not a.attisdropped and a.attnotnull and a.attidentity = ''
      order by c.relname, a.attnum
    `;
    t.ok(columns.length >= 13, `${columns.length} NOT NULL columns`);
    for (const { table, column } of columns) {
      const attempt =
        table === 'script_runs' ? run({ ...finished, [column]: null }) : chunk({ [column]: null });
      await expectViolation(t, [`${table}.${column} null`, attempt, NOT_NULL, column]);
    }
  });

  await t.test('the status machine trigger agrees with RUN_TRANSITIONS', async (t) => {
    const fields: Record<RunStatus, Row> = {
      queued: { started_at: null, completed_at: null, executor_id: null, lease_expires_at: null },
      running: { started_at: T1, completed_at: null, executor_id: 'e', lease_expires_at: T2 },
      completed: { started_at: T1, completed_at: T2 },
      failed: { started_at: T1, completed_at: T2 },
      cancelled: { started_at: T1, completed_at: T2 },
    };
    for (const from of RUN_STATUSES) {
      for (const to of RUN_STATUSES) {
        if (from === to) continue;
        const r = await insertRun({ status: from, ...fields[from], script_id: await insertScript() });
        const attempt = () =>
          sql`update script_runs set ${sql({ status: to, ...fields[to] } as Record<string, postgres.ParameterOrJSON<never>>)} where id = ${r.id}`;
        if (RUN_TRANSITIONS[from].includes(to)) await t.resolves(attempt(), `${from} → ${to} allowed`);
        else
          await expectViolation(t, [`${from} → ${to}`, attempt, CHECK, 'ck_script_runs_status_transition']);
      }
    }
  });

  await t.test('the latest run cannot be deleted; deleting the script deletes runs and chunks', async (t) => {
    const s = await insertScript();
    const r = await insertRun({ ...finished, script_id: s });
    await sql`insert into run_log_chunks (run_id, user_id, seq, data) values (${r.id}, ${owner}, 0, 'out')`;
    await sql`update scripts set last_run_id = ${r.id} where id = ${s}`;
    await expectViolation(t, [
      'deleting the latest run',
      () => sql`delete from script_runs where id = ${r.id}`,
      FOREIGN_KEY,
      'fk_scripts_last_run',
    ]);
    await expectViolation(t, [
      'a latest run of another user',
      () => sql`update scripts set last_run_id = ${r.id}, user_id = ${stranger} where id = ${s}`,
      FOREIGN_KEY,
      'fk_script_runs_script',
    ]);
    await sql`delete from scripts where id = ${s}`;
    const [left] = await sql<{ runs: number; chunks: number }[]>`
      select (select count(*) from script_runs where id = ${r.id}) as runs,
        (select count(*) from run_log_chunks where run_id = ${r.id}) as chunks
    `;
    t.same(left, { runs: 0, chunks: 0 });
  });

  await t.test('every constraint of script_runs and run_log_chunks was broken by a case', async (t) => {
    const rows = await sql<{ conname: string }[]>`
      select conname from pg_constraint
      where conrelid in ('script_runs'::regclass, 'run_log_chunks'::regclass) and contype in ('p', 'u', 'f', 'c')
      union all select 'uq_script_runs_live_per_script'
      union all select 'ck_script_runs_status_transition'
      order by 1
    `;
    // (id, user_id) is unique because id is; it is the target of two foreign keys that are broken above.
    const implied = ['uq_script_runs_id_user'];
    const constraints = rows.map((r) => r.conname);
    t.strictSame(
      constraints.filter((n) => !broken.has(n) && !implied.includes(n)),
      [],
      'none left unbroken',
    );
    t.strictSame(
      [...broken].filter((n) => !constraints.includes(n) && n !== 'fk_scripts_last_run'),
      [],
      'no case names a constraint that does not exist',
    );
  });
});

/**
 * The upgrade to runs (migrations/*_script-runs-upgrade.ts) on a database full of
 * old-style rows: built by migrating to the migration before it, filled with scripts
 * in every state (output in execution_logs and in script_log_chunks, queue and lease
 * columns), then migrated up. Every script's last execution must be one run with its
 * status, output, metrics and times; more scripts than one batch holds.
 */
import postgres from 'postgres';
import t from 'tap';
import { migrate, migrationNames } from '../../src/db/migrate.ts';
import { emptyDatabase } from '../helpers/db.ts';
import { FAKE_HASH } from '../helpers/fixtures.ts';

const UPGRADE = /_script-runs-upgrade$/;
const MANY = 12_001; // more than two batches of 5,000

t.test('every script’s last execution becomes one run with its output', async (t) => {
  const { url } = await emptyDatabase(t, 'runs_upgrade');
  const names = await migrationNames();
  const upgrade = names.findIndex((n) => UPGRADE.test(n));
  t.ok(upgrade > 0, 'the upgrade migration exists');
  await migrate({ databaseUrl: url, count: upgrade });
  const sql = postgres(url, { max: 2, onnotice: () => {} });
  t.teardown(() => sql.end());

  const [user] = await sql<{ id: number }[]>`
    insert into users (email, username, hashed_password) values ('old@example.com', 'old_user', ${FAKE_HASH}) returning id
  `;
  const uid = user!.id;
  const script = async (name: string, row: Record<string, unknown>) => {
    const [s] = await sql<{ id: number }[]>`
      insert into scripts ${sql({
        user_id: uid,
        filename: `${name}.py`,
        original_filename: `${name}.py`,
        file_path: `/old/${name}.py`,
        file_size: 10,
        file_extension: '.py',
        sha256: 'ab'.repeat(32),
        ...row,
      } as Record<string, postgres.ParameterOrJSON<never>>)}
      returning id
    `;
    return s!.id;
  };
  const T1 = new Date('2026-01-01T10:00:00.123Z');
  const T2 = new Date('2026-01-01T10:00:05.456Z');
  const T3 = new Date('2026-01-01T10:01:00Z');
  const uploaded = await script('uploaded', {});
  const completed = await script('completed', {
    status: 'completed',
    execution_logs: 'hello\nworld\n',
    exit_code: 0,
    execution_time_seconds: 5.333,
    memory_usage_mb: 12.5,
    started_at: T1,
    completed_at: T2,
    queued_at: T1,
  });
  const failed = await script('failed', {
    status: 'failed',
    execution_logs: 'folded ',
    exit_code: 3,
    error_message: 'exited with code 3',
    started_at: T1,
    completed_at: T2,
  });
  await sql`insert into script_log_chunks (script_id, user_id, data) values (${failed}, ${uid}, 'and '), (${failed}, ${uid}, 'unfolded\n')`;
  const cancelled = await script('cancelled', {
    status: 'cancelled',
    error_message: 'cancelled',
    completed_at: T2,
  });
  const queued = await script('queued', { status: 'queued', queued_at: T3 });
  const running = await script('running', {
    status: 'running',
    started_at: T3,
    queued_at: T1,
    executor_id: 'old-executor',
    lease_expires_at: T3,
  });
  await sql`insert into script_log_chunks (script_id, user_id, data) values (${running}, ${uid}, 'partial\n')`;
  await sql`
    insert into scripts (user_id, filename, original_filename, file_path, file_size, file_extension, sha256,
      status, execution_logs, exit_code, started_at, completed_at)
    select ${uid}, 'bulk' || i || '.py', 'bulk.py', '/old/bulk.py', 1, '.py', ${'cd'.repeat(32)},
      'completed', 'out ' || i || E'\n', 0, ${T1}, ${T2}
    from generate_series(1, ${MANY}) as i
  `;

  const ran = await migrate({ databaseUrl: url });
  t.ok(
    ran.some((n) => UPGRADE.test(n)),
    'the upgrade ran',
  );

  const runOf = async (scriptId: number) => {
    const [row] = await sql`
      select r.*, s.last_run_id, s.run_count, s.status as script_status,
        (select string_agg(data, '' order by seq) from run_log_chunks where run_id = r.id) as output
      from scripts as s left join script_runs as r on r.id = s.last_run_id
      where s.id = ${scriptId}
    `;
    return row!;
  };
  t.match(
    await runOf(uploaded),
    { last_run_id: null, run_count: 0, script_status: 'uploaded' },
    'no run for an uploaded script',
  );
  t.match(await runOf(completed), {
    script_id: completed,
    user_id: uid,
    trigger: 'manual',
    status: 'completed',
    script_sha256: 'ab'.repeat(32),
    exit_code: 0,
    execution_time_seconds: '5.333',
    memory_usage_mb: '12.50',
    started_at: T1,
    completed_at: T2,
    queued_at: T1,
    output: 'hello\nworld\n',
    log_bytes: '12',
    run_count: 1,
  });
  t.match(await runOf(failed), {
    status: 'failed',
    exit_code: 3,
    error_message: 'exited with code 3',
    output: 'folded and unfolded\n',
    queued_at: T1,
  });
  t.match(await runOf(cancelled), { status: 'cancelled', output: null, log_bytes: '0', queued_at: T2 });
  t.match(await runOf(queued), {
    status: 'queued',
    queued_at: T3,
    started_at: null,
    script_status: 'queued',
  });
  t.match(await runOf(running), {
    status: 'running',
    executor_id: 'old-executor',
    lease_expires_at: T3,
    output: 'partial\n',
  });
  const [bulk] = await sql<{ scripts: string; runs: string; right: string; chunks: string }[]>`
    select count(*) as scripts,
      count(r.id) as runs,
      count(*) filter (where k.data = 'out ' || substr(s.filename, 5, length(s.filename) - 7) || E'\n') as right,
      (select count(*) from run_log_chunks) as chunks
    from scripts as s
    left join script_runs as r on r.id = s.last_run_id
    left join run_log_chunks as k on k.run_id = r.id
    where s.filename like 'bulk%'
  `;
  t.same(bulk, { scripts: String(MANY), runs: String(MANY), right: String(MANY), chunks: String(MANY + 3) });
  const [runs] = await sql<{ n: string }[]>`select count(*) as n from script_runs`;
  t.equal(runs?.n, String(MANY + 5), 'one run per executed script, no more');
  const gone = await sql`
    select table_name, column_name from information_schema.columns
    where table_schema = 'public' and (table_name = 'script_log_chunks'
      or (table_name = 'scripts' and column_name in ('execution_logs', 'queued_at', 'executor_id', 'lease_expires_at')))
  `;
  t.same([...gone], [], 'the old output and queue columns are gone');
  t.same(await migrate({ databaseUrl: url }), [], 'nothing left to run');
});

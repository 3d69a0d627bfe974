/**
 * Retention wired end to end: the maintenance pass as src/main.ts starts it
 * (startMaintenance with the loaded config's RUN_RETENTION_DAYS) deletes the runs that
 * finished longer ago than that, with their output, and keeps younger ones and each
 * script's latest run, however old; RUN_RETENTION_DAYS is 90 unless set.
 */
import t from 'tap';
import { ConfigError, loadConfig } from '../src/config.ts';
import { runMaintenance, startMaintenance } from '../src/maintenance.ts';
import type { Repositories } from '../src/repositories/index.ts';
import { testDatabase, testLogger } from './helpers/db.ts';
import { LEASE, makeScript, makeUser, startRun } from './helpers/fixtures.ts';
import { captureLogger } from './helpers/log-capture.ts';

type Sql = Awaited<ReturnType<typeof testDatabase>>['sql'];

/** A completed run of the script with some output, then moved `days` into the past. */
async function runFinishedDaysAgo(repos: Repositories, sql: Sql, scriptId: number, days: number) {
  const run = await startRun(repos, scriptId);
  await repos.output.appendLog(run.id, LEASE.executorId, 0, `finished ${days} days ago\n`);
  await repos.outcomes.complete(run.id, { exit_code: 0, execution_time_seconds: 1, memory_usage_mb: 1 });
  const shift = `${days} days`;
  await sql`
    update script_runs
    set queued_at = queued_at - ${shift}::interval, started_at = started_at - ${shift}::interval,
      completed_at = completed_at - ${shift}::interval
    where id = ${run.id}
  `;
  return run.id;
}

async function remaining(sql: Sql, ids: number[]) {
  const runs = await sql<{ id: number }[]>`
    select id from script_runs where id = any(${ids}::bigint[]) order by id
  `;
  const chunks = await sql<{ run_id: number }[]>`
    select distinct run_id from run_log_chunks where run_id = any(${ids}::bigint[]) order by run_id
  `;
  return { runs: runs.map((r) => r.id), withOutput: chunks.map((c) => c.run_id) };
}

t.test('RUN_RETENTION_DAYS is 90 unless set, and takes whole days from 1', async (t) => {
  t.equal(loadConfig({}).RUN_RETENTION_DAYS, 90);
  t.equal(loadConfig({ RUN_RETENTION_DAYS: '' }).RUN_RETENTION_DAYS, 90, 'empty counts as unset');
  t.equal(loadConfig({ RUN_RETENTION_DAYS: '7' }).RUN_RETENTION_DAYS, 7);
  for (const bad of ['0', '-1', '1.5', 'ninety'])
    t.throws(() => loadConfig({ RUN_RETENTION_DAYS: bad }), ConfigError, bad);
});

t.test(
  'a maintenance pass with the default config deletes runs finished over 90 days ago, not younger ones nor a latest run',
  async (t) => {
    const { repos, sql } = await testDatabase(t);
    const config = loadConfig({ NODE_ENV: 'test' });
    const user = await makeUser(repos);
    const busy = await makeScript(repos, user.id);
    const once = await makeScript(repos, user.id);
    const ancient = await runFinishedDaysAgo(repos, sql, busy.id, 200);
    const expired = await runFinishedDaysAgo(repos, sql, busy.id, 91);
    const young = await runFinishedDaysAgo(repos, sql, busy.id, 89);
    const latest = await runFinishedDaysAgo(repos, sql, busy.id, 1);
    const onlyRun = await runFinishedDaysAgo(repos, sql, once.id, 200);
    const all = [ancient, expired, young, latest, onlyRun];

    await runMaintenance(repos, { runRetentionDays: config.RUN_RETENTION_DAYS }, testLogger());

    const kept = [young, latest, onlyRun].sort((a, b) => a - b);
    t.same(await remaining(sql, all), { runs: kept, withOutput: kept }, 'the 200- and 91-day-old runs went');
    t.match(await repos.scripts.getById(once.id), { last_run_id: onlyRun }, 'a 200-day-old latest run stays');
    t.match(await repos.scripts.getById(busy.id), { last_run_id: latest, run_count: 4 });
  },
);

t.test('startMaintenance with RUN_RETENTION_DAYS=7 purges at start what is over 7 days old', async (t) => {
  const { repos, sql } = await testDatabase(t);
  const config = loadConfig({ NODE_ENV: 'test', RUN_RETENTION_DAYS: '7' });
  const user = await makeUser(repos);
  const busy = await makeScript(repos, user.id);
  const once = await makeScript(repos, user.id);
  // The 200-day-old run goes whatever the retention, so the pass always has something to log.
  const ancient = await runFinishedDaysAgo(repos, sql, busy.id, 200);
  const expired = await runFinishedDaysAgo(repos, sql, busy.id, 8);
  const young = await runFinishedDaysAgo(repos, sql, busy.id, 6);
  const latest = await runFinishedDaysAgo(repos, sql, busy.id, 30);
  const onlyRun = await runFinishedDaysAgo(repos, sql, once.id, 30);
  const all = [ancient, expired, young, latest, onlyRun];

  const { log, lines } = captureLogger('info');
  const maintenance = startMaintenance(repos, config.RUN_RETENTION_DAYS, log);
  t.teardown(() => maintenance.stop());
  // The first pass starts at once; it logs what it pruned (or that it failed) when it ends.
  const ended = () =>
    lines.find((l) => l.msg === 'maintenance pruned old rows' || l.msg === 'maintenance failed');
  while (ended() === undefined) await new Promise((resolve) => setTimeout(resolve, 20));
  t.match(ended(), { msg: 'maintenance pruned old rows', runs: 2 }, 'two runs pruned');

  const kept = [young, latest, onlyRun].sort((a, b) => a - b);
  t.same(await remaining(sql, all), { runs: kept, withOutput: kept }, 'the 200- and 8-day-old runs went');
});

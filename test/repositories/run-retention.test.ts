/**
 * Retention (RUN_RETENTION_DAYS): expired runs and their output go, batch by batch,
 * never a script's latest run, never a live or recent one.
 */
import t from 'tap';
import { purgeRuns } from '../../src/maintenance.ts';
import { testDatabase } from '../helpers/db.ts';
import { LEASE, makeScript, makeUser, queueRun, startRun } from '../helpers/fixtures.ts';

const DAY = 86_400_000;

t.test(
  'purge deletes expired runs and their output in batches, and keeps each script’s latest run',
  async (t) => {
    const { repos, sql } = await testDatabase(t);
    const user = await makeUser(repos);
    const busy = await makeScript(repos, user.id);
    const once = await makeScript(repos, user.id);
    const finish = async (scriptId: number, output: string) => {
      const run = await startRun(repos, scriptId);
      await repos.output.appendLog(run.id, LEASE.executorId, 0, output);
      return repos.outcomes.complete(run.id, {
        exit_code: 0,
        execution_time_seconds: 1,
        memory_usage_mb: 1,
      });
    };
    const old = [];
    for (let i = 0; i < 5; i++) old.push(await finish(busy.id, `old ${i}\n`));
    const onlyRun = await finish(once.id, 'the only run\n');
    const recent = await finish(busy.id, 'recent\n');
    const latest = await finish(busy.id, 'latest\n');
    // Everything but `recent` and `latest` finished 100 days ago; `latest` too, yet it is the latest.
    const aged = [...old.map((r) => r.id), onlyRun.id, latest.id];
    await sql`
    update script_runs
    set queued_at = queued_at - interval '100 days', started_at = started_at - interval '100 days',
      completed_at = completed_at - interval '100 days'
    where id = any(${aged}::bigint[])
  `;
    const live = await queueRun(repos, (await makeScript(repos, user.id)).id);
    await sql`update script_runs set queued_at = queued_at - interval '100 days' where id = ${live.id}`;

    const deleted = await purgeRuns(repos, new Date(Date.now() - 90 * DAY), { batch: 2, pauseMs: 0 });
    t.equal(deleted, 5, 'the five old runs of the busy script');
    const left = await sql<{ id: number }[]>`select id from script_runs order by id`;
    t.same(
      left.map((r) => r.id),
      [onlyRun.id, recent.id, latest.id, live.id].sort((a, b) => a - b),
    );
    const [chunks] = await sql<{ n: number }[]>`
    select count(*) as n from run_log_chunks where run_id = any(${old.map((r) => r.id)}::bigint[])
  `;
    t.equal(chunks?.n, 0, 'their output went with them');
    t.equal((await repos.output.readLogs(latest.id)).logs, 'latest\n', 'the latest run keeps its output');
    t.equal(
      (await repos.output.readLogs(onlyRun.id)).logs,
      'the only run\n',
      'so does a run its script was left with',
    );
    t.match(
      await repos.scripts.getById(busy.id),
      { last_run_id: latest.id, run_count: 7 },
      'run_count is not lowered',
    );
    t.equal(
      await purgeRuns(repos, new Date(Date.now() - 90 * DAY), { batch: 2, pauseMs: 0 }),
      0,
      'a second pass finds nothing',
    );
    // The latest run of a script is refused by the database itself.
    const refused = await sql`delete from script_runs where id = ${latest.id}`.catch(
      (error: unknown) => error,
    );
    t.match(refused, { code: '23503', constraint_name: 'fk_scripts_last_run' });
  },
);

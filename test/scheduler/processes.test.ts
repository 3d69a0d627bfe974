/**
 * A schedule fires once with three processes: three real `npm run worker` processes
 * (`node src/worker.ts`, each with its own pool, scheduler and executor)
 * against one database, with the real clock. Once all three schedulers listen, a few
 * hundred schedules become due at once (next_run_at set in the past by SQL, in one
 * transaction, so the insert's `schedule_changed` notification wakes all three), and
 * every outcome is checked from the rows: each occurrence queued exactly once or
 * skipped exactly once, never both, never twice, and the skip counters say why.
 *
 * The executors of the workers claim the queued runs and fail them (the scripts have no
 * stored bytes): that changes the runs' status, never how many there are. Every skip is
 * made certain by data they cannot change: the busy scripts' runs are running under a
 * long lease of a fake executor, the capped owner's slots are held the same way, the
 * inactive owner stays inactive, and the stale occurrences are older than the catch-up window.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import t from 'tap';
import { CronRule } from '../../src/domain/schedule.ts';
import { testDatabase } from '../helpers/db.ts';
import { childEnv, entryArgs } from '../helpers/entry.ts';
import { eventually } from '../helpers/executor.ts';
import { makeScript, makeUser } from '../helpers/fixtures.ts';

const PROCESSES = 3;
const MAX_ACTIVE = 5;
const CATCHUP_SECONDS = 300;
/** Owners whose schedules all fire: 4 scripts each, under MAX_ACTIVE (more than a batch of 100 in all). */
const FIRING_OWNERS = 60;
const SCRIPTS_PER_OWNER = 4;
const BUSY = 8;
const STALE = 12;
const INACTIVE = 3;
const CAPPED = 3;
/** A fake executor that holds the busy and capped runs for longer than the test. */
const HOLDER = { executorId: 'test-holder', seconds: 3_600 };

// Three Node processes starting on a loaded 2-core machine.
t.setTimeout(240_000);

interface Worker {
  child: ChildProcess;
  /** Resolves when its scheduler listens (its `scheduler started` log line). */
  started: Promise<void>;
  /** What its scheduler says it did (its `schedules fired` log lines, summed). */
  said: { fired: number; skipped: number };
  exited: Promise<number | null>;
}

function startWorker(env: Record<string, string>): Worker {
  const child = spawn(process.execPath, entryArgs('src/worker.ts'), {
    env: childEnv({ ...process.env, ...env }),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const said = { fired: 0, skipped: 0 };
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const started = new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let entry: { msg?: string; component?: string; fired?: number; skipped?: number };
      try {
        entry = JSON.parse(line);
      } catch {
        return;
      }
      if (entry.msg === 'scheduler started') resolve();
      if (entry.msg === 'schedules fired') {
        said.fired += entry.fired ?? 0;
        said.skipped += entry.skipped ?? 0;
      }
    });
    exited.then((code) => reject(new Error(`a worker exited with ${code} before its scheduler started`)));
  });
  return { child, started, said, exited };
}

/** A rule whose next occurrence is far away (so each schedule has exactly one occurrence due). */
function farRule(now: Date): string {
  for (const cron of ['0 12 1 1 *', '0 12 1 7 *']) {
    const next = CronRule.stored(cron, 'UTC').nextAfter(new Date(now.getTime() - 3_600_000));
    if (next !== null && next.getTime() > now.getTime() + 3_600_000) return cron;
  }
  throw new Error('no far rule');
}

t.test(
  'a schedule fires once with 3 worker processes: each occurrence queued or skipped exactly once',
  async (t) => {
    const database = await testDatabase(t);
    const { repos, sql } = database;
    const scratch = await mkdtemp(path.join(tmpdir(), 'dollarclub-scheduler-processes-'));
    await chmod(scratch, 0o755); // the executors' script users enter their folders
    t.teardown(() => rm(scratch, { recursive: true, force: true }));

    // The owners and scripts (the schedules come later, all at once).
    const firing: number[] = [];
    for (let u = 0; u < FIRING_OWNERS; u++) {
      const user = await makeUser(repos);
      for (let s = 0; s < SCRIPTS_PER_OWNER; s++) firing.push((await makeScript(repos, user.id)).id);
    }
    const busy: number[] = [];
    for (let i = 0; i < BUSY; i++) {
      const script = await makeScript(repos, (await makeUser(repos)).id);
      const run = await repos.runs.queue(script.id, { maxActive: MAX_ACTIVE });
      await repos.leases.start(run.id, HOLDER);
      busy.push(script.id);
    }
    const capped: number[] = [];
    const cappedOwner = await makeUser(repos);
    for (let i = 0; i < MAX_ACTIVE; i++) {
      const run = await repos.runs.queue((await makeScript(repos, cappedOwner.id)).id, {
        maxActive: MAX_ACTIVE,
      });
      await repos.leases.start(run.id, HOLDER);
    }
    for (let i = 0; i < CAPPED; i++) capped.push((await makeScript(repos, cappedOwner.id)).id);
    const inactiveOwner = await makeUser(repos);
    const inactive: number[] = [];
    for (let i = 0; i < INACTIVE; i++) inactive.push((await makeScript(repos, inactiveOwner.id)).id);
    await repos.users.update(inactiveOwner.id, { is_active: false });
    const staleOwner = await makeUser(repos);
    const stale: number[] = [];
    for (let i = 0; i < STALE; i++) stale.push((await makeScript(repos, staleOwner.id)).id);

    const env = {
      NODE_ENV: 'test',
      NODE_OPTIONS: '',
      DATABASE_URL: database.url,
      STORAGE_DIR: path.join(scratch, 'storage'),
      EXECUTOR_WORK_DIR: path.join(scratch, 'runs'),
      IBKR_TOKEN_KEY: randomBytes(32).toString('base64'),
      EXECUTOR_CONCURRENCY: '1',
      EXECUTOR_SHUTDOWN_GRACE_SECONDS: '1',
      MAX_CONCURRENT_SCRIPTS: String(MAX_ACTIVE),
      SCHEDULE_CATCHUP_SECONDS: String(CATCHUP_SECONDS),
      DB_POOL_MAX: '4',
      LOG_LEVEL: 'info',
    };
    const workers = Array.from({ length: PROCESSES }, () => startWorker(env));
    t.teardown(async () => {
      for (const w of workers) w.child.kill('SIGTERM');
      const timer = setTimeout(() => {
        for (const w of workers) w.child.kill('SIGKILL');
      }, 10_000);
      await Promise.all(workers.map((w) => w.exited));
      clearTimeout(timer);
    });
    await Promise.all(workers.map((w) => w.started));

    // Every schedule at once, due 10 s ago (stale ones an hour ago), one occurrence each.
    const [now] = await sql<{ now: Date }[]>`select now()`;
    const cron = farRule(now!.now);
    const made = await sql.begin(async (tx) => {
      const due = (scripts: number[], ago: string) =>
        tx<{ id: number; script_id: number }[]>`
        insert into script_schedules (script_id, user_id, cron, timezone, next_run_at)
        select s.id, s.user_id, ${cron}, 'UTC', now() - ${ago}::interval
        from scripts as s
        where s.id = any(${scripts}::bigint[])
        returning id, script_id
      `;
      return {
        firing: await due(firing, '10 seconds'),
        busy: await due(busy, '10 seconds'),
        capped: await due(capped, '10 seconds'),
        inactive: await due(inactive, '10 seconds'),
        stale: await due(stale, '1 hour'),
      };
    });
    const total = firing.length + BUSY + CAPPED + INACTIVE + STALE;

    await eventually(
      'every occurrence handled',
      async () => {
        const [left] = await sql<{ n: number }[]>`
        select count(*)::int as n from script_schedules where next_run_at <= now()
      `;
        return left?.n === 0;
      },
      120_000,
    );
    for (const w of workers) t.equal(w.child.exitCode, null, `worker ${w.child.pid} still runs`);

    const rows = await sql<
      {
        id: number;
        runs: number;
        run_id: number | null;
        last_run_id: number | null;
        fired: boolean;
        skipped_count: number;
        skipped: boolean;
        advanced: boolean;
      }[]
    >`
    select s.id, count(r.id)::int as runs, max(r.id) as run_id, s.last_run_id,
      s.last_fired_at is not null as fired, s.skipped_count, s.last_skipped_at is not null as skipped,
      s.next_run_at > now() + interval '1 hour' as advanced
    from script_schedules as s
    left join script_runs as r on r.schedule_id = s.id
    group by s.id
    order by s.id
  `;
    t.equal(rows.length, total, 'every schedule is there');
    const byId = new Map(rows.map((r) => [r.id, r]));
    const outcome = (id: number) => {
      const r = byId.get(id)!;
      return r.runs === 1 && r.fired && r.run_id === r.last_run_id && r.skipped_count === 0 && !r.skipped
        ? 'queued once'
        : r.runs === 0 && !r.fired && r.skipped_count === 1 && r.skipped
          ? 'skipped once'
          : `runs ${r.runs}, fired ${r.fired}, skipped_count ${r.skipped_count}`;
    };
    t.same(
      made.firing.map((s) => outcome(s.id)),
      made.firing.map(() => 'queued once'),
      `each of the ${made.firing.length} free schedules queued exactly one run, and points at it`,
    );
    for (const [what, schedules] of [
      ['its script already runs', made.busy],
      ['its owner is at MAX_CONCURRENT_SCRIPTS', made.capped],
      ['its owner is deactivated', made.inactive],
      ['its occurrence is older than SCHEDULE_CATCHUP_SECONDS', made.stale],
    ] as const)
      t.same(
        schedules.map((s) => outcome(s.id)),
        schedules.map(() => 'skipped once'),
        `skipped once, counted once, no run: ${what}`,
      );
    t.ok(
      rows.every((r) => r.advanced),
      'every schedule waits for its next occurrence (months away)',
    );

    const [runs] = await sql<{ scheduled: number; doubled: number; capped_live: number }[]>`
    select
      (select count(*)::int from script_runs where trigger = 'schedule') as scheduled,
      (select count(*)::int from (
        select schedule_id from script_runs where schedule_id is not null group by schedule_id having count(*) > 1
      ) as d) as doubled,
      (select count(*)::int from script_runs
        where user_id = ${cappedOwner.id} and status in ('queued', 'running')) as capped_live
  `;
    t.same(
      { ...runs },
      { scheduled: made.firing.length, doubled: 0, capped_live: MAX_ACTIVE },
      'as many scheduled runs as free schedules, none for the same schedule twice, the cap held',
    );

    // What the processes logged agrees with the rows (their `schedules fired` lines). A
    // process logs after its batch commits, so its line may still be on its way here.
    const expected = { fired: made.firing.length, skipped: total - made.firing.length };
    const logged = () =>
      workers.reduce((n, w) => n + w.said.fired + w.said.skipped, 0) >= expected.fired + expected.skipped;
    await eventually('the processes have logged every batch', logged, 30_000).catch(() => {});
    const said = workers.reduce(
      (n, w) => ({ fired: n.fired + w.said.fired, skipped: n.skipped + w.said.skipped }),
      {
        fired: 0,
        skipped: 0,
      },
    );
    t.same(said, expected, 'the processes’ own counts');
    t.comment(
      `handled by process: ${workers.map((w) => `${w.said.fired} fired + ${w.said.skipped} skipped`).join(', ')}`,
    );
  },
);

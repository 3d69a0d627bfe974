/**
 * The scheduler against a real database: an occurrence fires once with three
 * schedulers racing on their own connections, skips are counted, missed
 * occurrences follow the catch-up rule, and time is a clock the test moves.
 */
import t, { type Test } from 'tap';
import { createPool } from '../../src/db/client.ts';
import { Database } from '../../src/db/database.ts';
import { Repositories } from '../../src/repositories/index.ts';
import { Scheduler } from '../../src/scheduler/scheduler.ts';
import { ScheduleService } from '../../src/services/schedule-service.ts';
import { type TestDatabase, testDatabase, testLogger } from '../helpers/db.ts';
import { eventually } from '../helpers/executor.ts';
import { LEASE, makeScript, makeUser } from '../helpers/fixtures.ts';

const MAX_ACTIVE = 5;

/** Repositories over a pool of their own (separate connections, as another process has). */
function ownPool(t: Test, database: TestDatabase): Repositories {
  const log = testLogger();
  const sql = createPool(
    {
      url: database.url,
      max: 4,
      idleTimeoutSeconds: 10,
      maxLifetimeSeconds: 0,
      connectTimeoutSeconds: 5,
      statementTimeoutMs: 30_000,
      prepare: true,
      applicationName: 'dollarclub-test-scheduler',
    },
    log,
  );
  t.teardown(() => sql.end({ timeout: 5 }));
  return new Repositories(new Database(sql, { log, slowQueryMs: 10_000, queryTimeoutMs: 30_000 }));
}

/** A scheduler whose clock is `clock.now`, which the test sets. */
function scheduler(repos: Repositories, clock: { now: Date }, options: { catchupSeconds?: number } = {}) {
  return new Scheduler({
    repos,
    log: testLogger(),
    catchupSeconds: options.catchupSeconds ?? 300,
    maxConcurrentScripts: MAX_ACTIVE,
    clock: () => clock.now,
    batchSize: 7, // small, so the test crosses batch boundaries
  });
}

async function schedule(
  repos: Repositories,
  scriptId: number,
  nextRunAt: Date,
  cron = '30 9 * * 1-5',
  timezone = 'America/New_York',
) {
  return repos.schedules.create({
    script_id: scriptId,
    cron,
    timezone,
    enabled: true,
    next_run_at: nextRunAt,
  });
}

const MONDAY_0930_NY = new Date('2027-01-04T14:30:00Z');
const TUESDAY_0930_NY = new Date('2027-01-05T14:30:00Z');

// Many databases and requests: more than tap's 120 s per file on a loaded 2-core machine.
t.setTimeout(300_000);

t.test('three schedulers on their own connections: every occurrence fires exactly once', async (t) => {
  const database = await testDatabase(t);
  const { repos, sql } = database;
  const ids: number[] = [];
  for (let u = 0; u < 12; u++) {
    const user = await makeUser(repos);
    for (let s = 0; s < 4; s++) {
      const script = await makeScript(repos, user.id);
      ids.push((await schedule(repos, script.id, MONDAY_0930_NY)).id);
    }
  }
  const clock = { now: new Date(MONDAY_0930_NY.getTime() + 150) };
  const schedulers = [ownPool(t, database), ownPool(t, database), ownPool(t, database)].map((r) =>
    scheduler(r, clock),
  );
  // Each scheduler ticks several times at once: claims race on every row.
  const results = await Promise.all(schedulers.flatMap((s) => [s.tick(), s.tick(), s.tick()]));
  t.equal(
    results.reduce((n, r) => n + r.fired, 0),
    ids.length,
    'as many firings in all as schedules',
  );
  t.equal(
    results.reduce((n, r) => n + r.skipped, 0),
    0,
    'nothing skipped (4 scripts per user, under the cap)',
  );
  const rows = await sql<{ id: number; next_run_at: Date; last_fired_at: Date; skipped_count: number }[]>`
    select id, next_run_at, last_fired_at, skipped_count from script_schedules order by id
  `;
  t.same(
    rows.map((r) => [r.next_run_at.toISOString(), r.last_fired_at?.toISOString(), r.skipped_count]),
    rows.map(() => [TUESDAY_0930_NY.toISOString(), clock.now.toISOString(), 0]),
    'every schedule fired once and waits for Tuesday',
  );
  // Checked from the rows: one run per schedule, queued by it, and the schedule points at it.
  const runs = await sql<{ schedule_id: number; runs: number; run_id: number; last_run_id: number }[]>`
    select r.schedule_id, count(*)::int as runs, max(r.id) as run_id, max(s.last_run_id) as last_run_id
    from script_runs as r
    join script_schedules as s on s.id = r.schedule_id
    where r.trigger = 'schedule' and r.status = 'queued'
    group by r.schedule_id
    order by r.schedule_id
  `;
  t.same(
    runs.map((r) => r.schedule_id),
    ids,
    'every schedule queued a run',
  );
  t.ok(
    runs.every((r) => r.runs === 1 && r.run_id === r.last_run_id),
    'exactly one each, and it is last_run_id',
  );
  const [all] = await sql<{ n: number }[]>`select count(*)::int as n from script_runs`;
  t.equal(all?.n, ids.length, 'no other run');
  // Later the same minute, and once more: nothing is due twice.
  clock.now = new Date(MONDAY_0930_NY.getTime() + 30_000);
  const again = await Promise.all(schedulers.map((s) => s.tick()));
  t.same(
    again,
    [0, 1, 2].map(() => ({ fired: 0, skipped: 0 })),
  );
});

t.test('an occurrence that cannot queue is skipped and counted, never queued late', async (t) => {
  const { repos, sql } = await testDatabase(t);
  const clock = { now: MONDAY_0930_NY };
  const s = scheduler(repos, clock);

  // The script already has a queued run.
  const busyOwner = await makeUser(repos);
  const busy = await makeScript(repos, busyOwner.id);
  await repos.runs.queue(busy.id, { maxActive: MAX_ACTIVE });
  const busySchedule = await schedule(repos, busy.id, MONDAY_0930_NY);

  // The owner is at MAX_CONCURRENT_SCRIPTS.
  const fullOwner = await makeUser(repos);
  for (let i = 0; i < MAX_ACTIVE; i++)
    await repos.runs.queue((await makeScript(repos, fullOwner.id)).id, { maxActive: MAX_ACTIVE });
  const capped = await makeScript(repos, fullOwner.id);
  const cappedSchedule = await schedule(repos, capped.id, MONDAY_0930_NY);

  // The owner is deactivated.
  const gone = await makeUser(repos);
  const goneSchedule = await schedule(repos, (await makeScript(repos, gone.id)).id, MONDAY_0930_NY);
  await repos.users.update(gone.id, { is_active: false });

  t.same(await s.tick(), { fired: 0, skipped: 3 });
  for (const { id } of [busySchedule, cappedSchedule, goneSchedule]) {
    const row = await repos.schedules.getById(id);
    t.same(
      {
        skipped_count: row.skipped_count,
        last_skipped_at: row.last_skipped_at,
        last_fired_at: row.last_fired_at,
        next_run_at: row.next_run_at,
      },
      {
        skipped_count: 1,
        last_skipped_at: MONDAY_0930_NY,
        last_fired_at: null,
        next_run_at: TUESDAY_0930_NY,
      },
      `schedule ${id}`,
    );
  }
  const [capped_] = await sql<{ status: string }[]>`select status from scripts where id = ${capped.id}`;
  t.equal(capped_?.status, 'uploaded', 'the capped script was not queued');

  // The script is free again by Tuesday: that occurrence fires; the skip stays counted.
  await sql`update script_runs set status = 'cancelled', completed_at = now() where script_id = ${busy.id}`;
  await sql`update scripts set status = 'cancelled', completed_at = now() where id = ${busy.id}`;
  clock.now = TUESDAY_0930_NY;
  t.same(await s.tick(), { fired: 1, skipped: 2 });
  const row = await repos.schedules.getById(busySchedule.id);
  t.equal(row.skipped_count, 1);
  t.same(row.last_fired_at, TUESDAY_0930_NY);
});

t.test('catch-up: a missed occurrence fires on start when recent enough, else it is skipped', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const recent = await schedule(repos, (await makeScript(repos, user.id)).id, MONDAY_0930_NY);
  const clock = { now: new Date(MONDAY_0930_NY.getTime() + 299_000) };
  t.same(await scheduler(repos, clock).tick(), { fired: 1, skipped: 0 }, '299 s late: fires');
  t.same((await repos.schedules.getById(recent.id)).next_run_at, TUESDAY_0930_NY);

  const stale = await schedule(repos, (await makeScript(repos, user.id)).id, MONDAY_0930_NY);
  clock.now = new Date(MONDAY_0930_NY.getTime() + 301_000);
  t.same(await scheduler(repos, clock).tick(), { fired: 0, skipped: 1 }, '301 s late: skipped');
  const row = await repos.schedules.getById(stale.id);
  t.same([row.skipped_count, row.last_fired_at, row.next_run_at], [1, null, TUESDAY_0930_NY]);

  // A scheduler away for three days: Monday's to Wednesday's occurrences are all too old.
  const away = await schedule(repos, (await makeScript(repos, user.id)).id, MONDAY_0930_NY);
  clock.now = new Date('2027-01-07T14:00:00Z'); // Thursday 9:00 New York
  // Monday … Wednesday for it, Tuesday and Wednesday for each of the two above.
  t.same(await scheduler(repos, clock).tick(), { fired: 0, skipped: 3 + 2 + 2 }, 'all too old: skipped');
  const awayRow = await repos.schedules.getById(away.id);
  t.same([awayRow.skipped_count, awayRow.next_run_at], [3, new Date('2027-01-07T14:30:00Z')]);
});

t.test(
  'market hours through the scheduler: 9:30 New York fires at 13:30Z in July, 14:30Z in January, and across both DST changes',
  async (t) => {
    const { repos, sql } = await testDatabase(t);
    const clock = { now: new Date(0) };
    // The API's service computes the first due time, the scheduler the rest, on one clock.
    const service = new ScheduleService(repos, () => clock.now);
    const s = scheduler(repos, clock);
    const user = await makeUser(repos);

    /**
     * A schedule created at `createdAt`; then for each instant of `fires` but the last:
     * nothing a second before it, a run queued by the schedule at it, and the next
     * instant as next_run_at. Each run ends before the next occurrence, so that it queues too.
     */
    const walk = async (t: Test, createdAt: string, fires: string[]) => {
      const script = await makeScript(repos, user.id);
      clock.now = new Date(createdAt);
      const made = await service.create(script.id, { cron: '30 9 * * 1-5', timezone: 'America/New_York' });
      t.same(made.next_run_at, new Date(fires[0]!), `created ${createdAt}: first due ${fires[0]}`);
      for (const [i, at] of fires.slice(0, -1).entries()) {
        clock.now = new Date(new Date(at).getTime() - 1000);
        t.same(await s.tick(), { fired: 0, skipped: 0 }, `a second before ${at}: nothing`);
        clock.now = new Date(at);
        t.same(await s.tick(), { fired: 1, skipped: 0 }, `${at}: fires`);
        const row = await repos.schedules.getById(made.id);
        t.same(
          [row.last_fired_at, row.next_run_at, row.skipped_count],
          [new Date(at), new Date(fires[i + 1]!), 0],
          `fired at ${at}, next due ${fires[i + 1]}`,
        );
        const [run] = await sql<{ id: number; trigger: string; schedule_id: number; status: string }[]>`
          select id, trigger, schedule_id, status from script_runs where id = ${row.last_run_id}
        `;
        t.same(
          { ...run },
          { id: row.last_run_id, trigger: 'schedule', schedule_id: made.id, status: 'queued' },
        );
        await repos.leases.start(run!.id, LEASE);
        await repos.outcomes.complete(run!.id, {
          exit_code: 0,
          execution_time_seconds: 1,
          memory_usage_mb: 1,
        });
      }
      const [runs] = await sql<{ n: number }[]>`
        select count(*)::int as n from script_runs where schedule_id = ${made.id}
      `;
      t.equal(runs?.n, fires.length - 1, 'one run per occurrence');
      await repos.schedules.delete(made.id);
    };

    await t.test('January (EST): 14:30Z', (t) =>
      walk(t, '2027-01-07T12:00:00Z', [
        '2027-01-07T14:30:00.000Z', // Thursday
        '2027-01-08T14:30:00.000Z', // Friday
        '2027-01-11T14:30:00.000Z', // Monday: the weekend has none
      ]),
    );
    await t.test('July (EDT): 13:30Z', (t) =>
      walk(t, '2027-07-08T12:00:00Z', [
        '2027-07-08T13:30:00.000Z',
        '2027-07-09T13:30:00.000Z',
        '2027-07-12T13:30:00.000Z',
      ]),
    );
    await t.test('spring forward (Sunday 2027-03-14): Friday 14:30Z, then Monday 13:30Z', (t) =>
      walk(t, '2027-03-12T12:00:00Z', [
        '2027-03-12T14:30:00.000Z',
        '2027-03-15T13:30:00.000Z',
        '2027-03-16T13:30:00.000Z',
      ]),
    );
    await t.test('fall back (Sunday 2027-11-07): Friday 13:30Z, then Monday 14:30Z', (t) =>
      walk(t, '2027-11-05T12:00:00Z', [
        '2027-11-05T13:30:00.000Z',
        '2027-11-08T14:30:00.000Z',
        '2027-11-09T14:30:00.000Z',
      ]),
    );
  },
);

t.test('time moves only when the clock does', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  const made = await schedule(repos, script.id, MONDAY_0930_NY, '*/5 * * * *', 'UTC');
  const clock = { now: new Date(MONDAY_0930_NY.getTime() - 1) };
  const s = scheduler(repos, clock);
  t.same(await s.tick(), { fired: 0, skipped: 0 }, 'a millisecond early: nothing');
  clock.now = MONDAY_0930_NY;
  t.same(await s.tick(), { fired: 1, skipped: 0 }, 'on time: fires');
  t.same(await s.tick(), { fired: 0, skipped: 0 }, 'the same instant again: nothing');
  t.same((await repos.schedules.getById(made.id)).next_run_at, new Date(MONDAY_0930_NY.getTime() + 300_000));
});

t.test('a disabled schedule never fires; a deleted script takes its schedules along', async (t) => {
  const { repos, sql } = await testDatabase(t);
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  await repos.schedules.create({
    script_id: script.id,
    cron: '* * * * *',
    timezone: 'UTC',
    enabled: false,
    next_run_at: null,
  });
  const clock = { now: new Date('2030-01-01T00:00:00Z') };
  t.same(await scheduler(repos, clock).tick(), { fired: 0, skipped: 0 });
  // A schedule that fired, then deleted: its run stays, without the schedule's id.
  const fired = await schedule(repos, script.id, MONDAY_0930_NY);
  clock.now = MONDAY_0930_NY;
  t.same(await scheduler(repos, clock).tick(), { fired: 1, skipped: 0 });
  const runId = (await repos.schedules.getById(fired.id)).last_run_id;
  t.ok(runId, 'last_run_id is the run');
  await repos.schedules.delete(fired.id);
  const [kept] = await sql<{ id: number; trigger: string; schedule_id: number | null }[]>`
    select id, trigger, schedule_id from script_runs
  `;
  t.same({ ...kept }, { id: runId, trigger: 'schedule', schedule_id: null });
  await sql`update script_runs set status = 'cancelled', completed_at = now()`;
  await sql`update scripts set status = 'cancelled', completed_at = now()`;
  await schedule(repos, script.id, MONDAY_0930_NY);
  await repos.scripts.delete(script.id);
  const [left] = await sql<{ n: number }[]>`select count(*)::int as n from script_schedules`;
  t.equal(left?.n, 0);
});

t.test('the loop: started, it wakes on schedule_changed and fires; stop() ends it', async (t) => {
  const database = await testDatabase(t);
  const { repos, sql } = database;
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  const s = new Scheduler({
    repos,
    sql,
    log: testLogger(),
    catchupSeconds: 300,
    maxConcurrentScripts: MAX_ACTIVE,
  });
  // Not due for a year: the scheduler goes to sleep (for MAX_SLEEP_MS at most).
  const far = await schedule(repos, script.id, new Date(Date.now() + 365 * 86_400_000), '* * * * *', 'UTC');
  await s.start();
  t.teardown(() => s.stop());
  // Moved earlier by hand: the trigger notifies, and the scheduler wakes and fires it.
  await sql`update script_schedules set next_run_at = now() where id = ${far.id}`;
  const fired = await eventually('the schedule fired', async () => {
    const row = await repos.schedules.getById(far.id);
    return row.last_fired_at;
  });
  t.ok(fired);
  const [run] = await sql<{ trigger: string; schedule_id: number }[]>`
    select trigger, schedule_id from script_runs where script_id = ${script.id}
  `;
  t.same({ ...run }, { trigger: 'schedule', schedule_id: far.id }, 'a run with trigger schedule');
  await s.stop();
});

t.test(
  'one batch: two schedules of one script queue one run; the owner’s cap is shared in due order',
  async (t) => {
    const { repos, sql } = await testDatabase(t);
    const clock = { now: MONDAY_0930_NY };
    const user = await makeUser(repos);
    const scripts = [];
    for (let i = 0; i < MAX_ACTIVE + 1; i++) scripts.push(await makeScript(repos, user.id));
    // Two schedules of the first script, both due now.
    const twin = await schedule(repos, scripts[0]!.id, MONDAY_0930_NY, '30 9 * * *', 'America/New_York');
    const twin2 = await schedule(repos, scripts[0]!.id, MONDAY_0930_NY, '30 9 * * 1', 'America/New_York');
    // One schedule for each of the other five scripts, due a minute earlier: they come first.
    const earlier = new Date(MONDAY_0930_NY.getTime() - 60_000); // 9:29 New York: an occurrence of its rule
    const others = [];
    for (const script of scripts.slice(1))
      others.push(await schedule(repos, script.id, earlier, '29 9 * * *', 'America/New_York'));
    t.same(await scheduler(repos, clock).tick(), { fired: MAX_ACTIVE, skipped: 2 });
    const fired = await sql<{ id: number }[]>`
    select id from script_schedules where last_fired_at is not null order by id
  `;
    // The earlier-due five fire (all of the cap); both twins are skipped: one for the cap,
    // the other also because its script is the same.
    t.same(
      fired.map((r) => r.id),
      others.map((o) => o.id),
    );
    t.same(
      (await repos.schedules.getById(twin.id)).skipped_count +
        (await repos.schedules.getById(twin2.id)).skipped_count,
      2,
    );
    const [live] = await sql<{ n: number }[]>`
    select count(*)::int as n from script_runs where user_id = ${user.id} and status = 'queued'
  `;
    t.equal(live?.n, MAX_ACTIVE, 'never past MAX_CONCURRENT_SCRIPTS');
  },
);

t.test('a schedule whose data breaks a rule is skipped alone; the rest of its batch fires', async (t) => {
  const { repos, sql } = await testDatabase(t);
  const clock = { now: MONDAY_0930_NY };
  const ids = [];
  for (let i = 0; i < 4; i++) {
    const user = await makeUser(repos);
    ids.push((await schedule(repos, (await makeScript(repos, user.id)).id, MONDAY_0930_NY)).id);
  }
  // A script whose summary says it is idle while a run of it is still queued (as a bug or a
  // hand edit could leave it): queueing it breaks uq_script_runs_live_per_script.
  const broken = await repos.schedules.getById(ids[1]!);
  await repos.runs.queue(broken.script_id, { maxActive: MAX_ACTIVE });
  await sql`update scripts set status = 'cancelled', completed_at = now() where id = ${broken.script_id}`;
  t.same(await scheduler(repos, clock).tick(), { fired: 3, skipped: 1 });
  const rows = await sql<{ id: number; fired: boolean; skipped_count: number }[]>`
    select id, last_fired_at is not null as fired, skipped_count from script_schedules order by id
  `;
  t.same(
    rows.map((r) => [r.id, r.fired, r.skipped_count]),
    ids.map((id) => [id, id !== broken.id, id === broken.id ? 1 : 0]),
  );
});

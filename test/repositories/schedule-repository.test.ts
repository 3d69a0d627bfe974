/**
 * script_schedules: each rule broken in raw SQL, the per-script limit under
 * concurrency, the owner's scope, keyset pages, and the schedule_changed trigger.
 */
import type postgres from 'postgres';
import t from 'tap';
import { ConflictError, NotFoundError, ValidationError } from '../../src/domain/errors.ts';
import { MAX_SCHEDULES_PER_SCRIPT } from '../../src/domain/schedule.ts';
import { rejectsWith } from '../helpers/assert.ts';
import { testDatabase } from '../helpers/db.ts';
import { makeScript, makeUser } from '../helpers/fixtures.ts';

const SOON = new Date('2027-01-04T14:30:00Z');
const rule = (scriptId: number, extra: Partial<{ enabled: boolean; next_run_at: Date | null }> = {}) => ({
  script_id: scriptId,
  cron: '30 9 * * 1-5',
  timezone: 'America/New_York',
  enabled: true,
  next_run_at: SOON,
  ...extra,
});

// Many databases and requests: more than tap's 120 s per file on a loaded 2-core machine.
t.setTimeout(300_000);

t.test('SQL refuses every bad row, by constraint name', async (t) => {
  const { repos, sql } = await testDatabase(t);
  const user = await makeUser(repos);
  const other = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  const insert = (row: Record<string, unknown>) =>
    sql`insert into script_schedules ${sql({
      script_id: script.id,
      user_id: user.id,
      cron: '* * * * *',
      timezone: 'UTC',
      enabled: true,
      next_run_at: SOON,
      ...row,
    } as Record<string, postgres.SerializableParameter>)}`;
  const cases: Array<[string, Record<string, unknown>, string, string]> = [
    ['empty cron', { cron: '' }, '23514', 'ck_script_schedules_cron_format'],
    ['six fields', { cron: '0 * * * * *' }, '23514', 'ck_script_schedules_cron_format'],
    ['four fields', { cron: '* * * *' }, '23514', 'ck_script_schedules_cron_format'],
    ['double space', { cron: '*  * * * *' }, '23514', 'ck_script_schedules_cron_format'],
    ['odd character', { cron: '* * * * 1;' }, '23514', 'ck_script_schedules_cron_format'],
    ['offset time zone', { timezone: '+05:00' }, '23514', 'ck_script_schedules_timezone_format'],
    ['empty time zone', { timezone: '' }, '23514', 'ck_script_schedules_timezone_format'],
    ['enabled, never due', { next_run_at: null }, '23514', 'ck_script_schedules_enabled_has_next_run'],
    [
      'negative skips',
      { skipped_count: -1, last_skipped_at: SOON },
      '23514',
      'ck_script_schedules_skipped_count_non_negative',
    ],
    ['skips without a time', { skipped_count: 2 }, '23514', 'ck_script_schedules_skip_has_time'],
    ['a run without a time', { last_run_id: 1 }, '23514', 'ck_script_schedules_run_has_fired_at'],
    ['another user’s script', { user_id: other.id }, '23503', 'fk_script_schedules_script'],
    [
      'a last run that does not exist',
      { last_run_id: 2 ** 53 - 1, last_fired_at: SOON },
      '23503',
      'fk_script_schedules_last_run',
    ],
  ];
  for (const [label, row, code, constraint] of cases) {
    const error = await insert(row).then(
      () => null,
      (e: postgres.PostgresError) => e,
    );
    t.match(error, { code, constraint_name: constraint }, label);
  }
  await insert({ enabled: false, next_run_at: null });
  t.pass('a disabled schedule may have no due time');
});

t.test(`at most ${MAX_SCHEDULES_PER_SCRIPT} schedules per script, however many create at once`, async (t) => {
  const { repos, sql } = await testDatabase(t, { poolMax: 20 });
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  const results = await Promise.allSettled(
    Array.from({ length: 25 }, () => repos.schedules.create(rule(script.id), user.id)),
  );
  const created = results.filter((r) => r.status === 'fulfilled');
  const refused = results.filter((r) => r.status === 'rejected');
  t.equal(created.length, MAX_SCHEDULES_PER_SCRIPT);
  t.ok(
    refused.every((r) => r.reason instanceof ConflictError && r.reason.code === 'TOO_MANY_SCHEDULES'),
    'the rest are TOO_MANY_SCHEDULES',
  );
  const [count] = await sql<{ n: number }[]>`
    select count(*)::int as n from script_schedules where script_id = ${script.id}
  `;
  t.equal(count?.n, MAX_SCHEDULES_PER_SCRIPT);
  // Another script of the same user has its own ten.
  const second = await makeScript(repos, user.id);
  t.ok(await repos.schedules.create(rule(second.id), user.id));
});

t.test('scope: someone else’s script or schedule is not found', async (t) => {
  const { repos } = await testDatabase(t);
  const owner = await makeUser(repos);
  const stranger = await makeUser(repos);
  const script = await makeScript(repos, owner.id);
  await rejectsWith(t, repos.schedules.create(rule(script.id), stranger.id), NotFoundError, {
    resource: 'script',
  });
  const schedule = await repos.schedules.create(rule(script.id), owner.id);
  t.equal(schedule.user_id, owner.id, 'the schedule is the script owner’s');
  t.equal(await repos.schedules.findById(schedule.id, stranger.id), null);
  await rejectsWith(t, repos.schedules.listByScript(script.id, stranger.id), NotFoundError);
  await rejectsWith(t, repos.schedules.delete(schedule.id, stranger.id), NotFoundError);
  t.same(
    (await repos.schedules.listByScript(script.id)).map((s) => s.id),
    [schedule.id],
    'an admin (no owner) reaches it',
  );
  const empty = await makeScript(repos, owner.id);
  t.same(await repos.schedules.listByScript(empty.id, owner.id), [], 'a script without schedules: empty');
  // An admin scheduling a user's script: still the owner's schedule.
  const byAdmin = await repos.schedules.create(rule(script.id));
  t.equal(byAdmin.user_id, owner.id);
});

t.test('keyset pages, newest first, per user', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const other = await makeUser(repos);
  const ids: number[] = [];
  for (let i = 0; i < 3; i++) {
    const script = await makeScript(repos, user.id);
    for (let j = 0; j < 3; j++) ids.push((await repos.schedules.create(rule(script.id))).id);
  }
  await repos.schedules.create(rule((await makeScript(repos, other.id)).id));
  const seen: number[] = [];
  let cursor: string | null = null;
  do {
    const page = await repos.schedules.listAfter({ user_id: user.id }, cursor, 4);
    seen.push(...page.items.map((s) => s.id));
    cursor = page.next_cursor;
  } while (cursor !== null);
  t.same(seen, [...ids].reverse());
  const all = await repos.schedules.listAfter({}, null, 100);
  t.equal(all.items.length, 10, 'everyone’s');
});

t.test(
  'schedule_changed is notified when a schedule becomes due earlier, not when a scheduler advances it',
  async (t) => {
    const { repos, sql } = await testDatabase(t);
    const user = await makeUser(repos);
    const script = await makeScript(repos, user.id);
    const heard: string[] = [];
    const { unlisten } = await sql.listen('schedule_changed', (payload) => heard.push(payload));
    t.teardown(unlisten);
    const schedule = await repos.schedules.create(rule(script.id));
    await repos.schedules.recordOutcomes([
      {
        id: schedule.id,
        next_run_at: new Date(SOON.getTime() + 86_400_000),
        run_id: null,
        fired_at: SOON,
        skipped: 0,
        skipped_at: null,
      },
    ]);
    await sql`update script_schedules set next_run_at = ${SOON} where id = ${schedule.id}`;
    await sql`update script_schedules set enabled = false, next_run_at = null where id = ${schedule.id}`;
    // A last notification as a marker: they arrive in commit order.
    await sql`select pg_notify('schedule_changed', 'end')`;
    for (let i = 0; i < 100 && heard.at(-1) !== 'end'; i++) await new Promise((r) => setTimeout(r, 20));
    t.same(heard, [String(SOON.getTime()), String(SOON.getTime()), 'end']);
  },
);

t.test(
  'getById and lockById find a schedule in scope; lockById holds it until the transaction ends',
  async (t) => {
    const { repos, sql } = await testDatabase(t);
    const owner = await makeUser(repos);
    const stranger = await makeUser(repos);
    const schedule = await repos.schedules.create(rule((await makeScript(repos, owner.id)).id));
    t.same(await repos.schedules.getById(schedule.id, owner.id), schedule);
    await rejectsWith(t, repos.schedules.getById(schedule.id, stranger.id), NotFoundError, {
      resource: 'schedule',
    });
    await rejectsWith(t, repos.schedules.getById(schedule.id + 1000), NotFoundError);

    const tryLock = () => sql`select id from script_schedules where id = ${schedule.id} for update nowait`;
    await repos.transaction(async (tx) => {
      t.same(await tx.schedules.lockById(schedule.id, owner.id), schedule);
      await t.rejects(tryLock(), { code: '55P03' }, 'held against another transaction');
    });
    t.same(await tryLock(), [{ id: schedule.id }], 'released at commit');
    await repos.transaction(async (tx) => {
      await rejectsWith(t, tx.schedules.lockById(schedule.id, stranger.id), NotFoundError, {
        resource: 'schedule',
      });
    });
  },
);

t.test('update sets the rule, state and due time; a disabled schedule may have none', async (t) => {
  const { repos } = await testDatabase(t);
  const user = await makeUser(repos);
  const schedule = await repos.schedules.create(rule((await makeScript(repos, user.id)).id));
  const later = new Date('2027-02-01T08:00:00Z');
  const changed = await repos.schedules.update(schedule.id, {
    cron: '0 8 1 * *',
    timezone: 'UTC',
    enabled: true,
    next_run_at: later,
  });
  t.match(changed, {
    id: schedule.id,
    cron: '0 8 1 * *',
    timezone: 'UTC',
    enabled: true,
    next_run_at: later,
  });
  t.same(await repos.schedules.getById(schedule.id), changed, 'what it returned is what is stored');
  const disabled = await repos.schedules.update(schedule.id, {
    ...changed,
    enabled: false,
    next_run_at: null,
  });
  t.match(disabled, { enabled: false, next_run_at: null });
  await rejectsWith(
    t,
    repos.schedules.update(schedule.id, { ...changed, cron: 'every day' }),
    ValidationError,
    {
      errors: [{ path: '/cron' }],
    },
  );
  await rejectsWith(
    t,
    repos.schedules.update(schedule.id, { ...changed, next_run_at: null }),
    ValidationError,
    {
      errors: [{ path: '', message: 'violates rule ck_script_schedules_enabled_has_next_run' }],
    },
  );
});

t.test('claimDue locks due schedules earliest first, skipping those another scheduler holds', async (t) => {
  const { repos } = await testDatabase(t);
  const active = await makeUser(repos);
  const inactive = await makeUser(repos);
  const now = new Date('2027-01-04T15:00:00Z');
  const at = (minutesBefore: number) => new Date(now.getTime() - minutesBefore * 60_000);
  const script = await makeScript(repos, active.id);
  const late = await repos.schedules.create(rule(script.id, { next_run_at: at(5) }));
  const early = await repos.schedules.create(rule(script.id, { next_run_at: at(30) }));
  const ofInactive = await repos.schedules.create(
    rule((await makeScript(repos, inactive.id)).id, { next_run_at: at(10) }),
  );
  await repos.schedules.create(rule(script.id, { next_run_at: new Date(now.getTime() + 60_000) })); // not due
  await repos.schedules.create(rule(script.id, { enabled: false, next_run_at: null }));
  await repos.users.deactivate(inactive.id);

  const due = await repos.transaction((tx) => tx.schedules.claimDue(now, 10));
  t.same(
    due.map((d) => [d.id, d.owner_active]),
    [
      [early.id, true],
      [ofInactive.id, false],
      [late.id, true],
    ],
    'due and enabled only, earliest first, with whether the owner may run',
  );
  t.match(due[0], { script_id: script.id, user_id: active.id, cron: early.cron, next_run_at: at(30) });

  await repos.transaction(async (first) => {
    t.same(
      (await first.schedules.claimDue(now, 1)).map((d) => d.id),
      [early.id],
    );
    const second = await repos.transaction((tx) => tx.schedules.claimDue(now, 10));
    t.same(
      second.map((d) => d.id),
      [ofInactive.id, late.id],
      'a concurrent scheduler takes the others without waiting',
    );
  });
});

t.test('nextDueAt is the earliest due time of an enabled schedule, or null', async (t) => {
  const { repos } = await testDatabase(t);
  t.equal(await repos.schedules.nextDueAt(), null, 'no schedule at all');
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  await repos.schedules.create(rule(script.id, { enabled: false, next_run_at: null }));
  t.equal(await repos.schedules.nextDueAt(), null, 'only a disabled one');
  const earlier = new Date(SOON.getTime() - 3_600_000);
  await repos.schedules.create(rule(script.id));
  await repos.schedules.create(rule(script.id, { next_run_at: earlier }));
  t.same(await repos.schedules.nextDueAt(), earlier);
});

/**
 * ScheduleService against a real database, on a clock the test sets: the due time is
 * computed from the rule and stored (null while disabled), a change recomputes it from
 * now, bad input is refused before anything is written, and someone else's schedule
 * or script is not found.
 */
import t from 'tap';
import { ConflictError, ForbiddenError, NotFoundError, ValidationError } from '../../src/domain/errors.ts';
import { MAX_SCHEDULES_PER_SCRIPT } from '../../src/domain/schedule.ts';
import type { User } from '../../src/domain/user.ts';
import type { Principal } from '../../src/services/auth-service.ts';
import { ScheduleService, systemClock } from '../../src/services/schedule-service.ts';
import { rejectsWith } from '../helpers/assert.ts';
import { testDatabase } from '../helpers/db.ts';
import { makeScript, makeUser } from '../helpers/fixtures.ts';

const { repos } = await testDatabase(t);
let now = new Date('2027-03-01T10:00:00Z');
const service = new ScheduleService(repos, () => now);

function principal(user: User, role: 'user' | 'admin' = user.role): Principal {
  return { user_id: user.id, role, token_key: Buffer.alloc(32).toString('base64') };
}

t.test('the system clock is the wall clock', async (t) => {
  const before = Date.now();
  const read = systemClock().getTime();
  t.ok(read >= before && read <= Date.now(), 'systemClock reads Date.now()');
});

t.test('create stores the rule normalised and its next occurrence after now', async (t) => {
  now = new Date('2027-03-01T10:00:00Z');
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  const schedule = await service.create(
    script.id,
    { cron: ' 30  9 * * 1-5 ', timezone: 'America/New_York' },
    user.id,
  );
  t.match(schedule, {
    script_id: script.id,
    user_id: user.id,
    cron: '30 9 * * 1-5',
    timezone: 'America/New_York',
    enabled: true,
    skipped_count: 0,
  });
  // 2027-03-01 is a Monday; 09:30 EST is 14:30Z.
  t.equal(schedule.next_run_at?.toISOString(), '2027-03-01T14:30:00.000Z');
  t.same(await service.get(schedule.id, user.id), schedule, 'what get reads back is what create answered');
});

t.test('a schedule created disabled has no due time', async (t) => {
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  const schedule = await service.create(script.id, { cron: '0 * * * *', timezone: 'UTC', enabled: false });
  t.equal(schedule.enabled, false);
  t.equal(schedule.next_run_at, null);
  t.equal(schedule.user_id, user.id, 'an admin’s schedule (no owner given) belongs to the script’s owner');
});

t.test('create refuses a bad rule naming its field, and someone else’s script as not found', async (t) => {
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  await rejectsWith(t, service.create(script.id, { cron: '0 0 31 2 *', timezone: 'UTC' }), ValidationError, {
    errors: [{ path: '/cron', message: 'never fires' }],
  });
  await rejectsWith(
    t,
    service.create(script.id, { cron: '* * * * *', timezone: 'Mars/Base' }),
    ValidationError,
    {
      errors: [{ path: '/timezone' }],
    },
  );
  const stranger = await makeUser(repos);
  await rejectsWith(
    t,
    service.create(script.id, { cron: '* * * * *', timezone: 'UTC' }, stranger.id),
    NotFoundError,
    { resource: 'script' },
  );
  t.same(await service.listByScript(script.id), [], 'nothing was stored');
});

t.test(`a script keeps at most ${MAX_SCHEDULES_PER_SCRIPT} schedules`, async (t) => {
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  for (let i = 0; i < MAX_SCHEDULES_PER_SCRIPT; i++)
    await service.create(script.id, { cron: `${i} * * * *`, timezone: 'UTC' }, user.id);
  await rejectsWith(
    t,
    service.create(script.id, { cron: '59 * * * *', timezone: 'UTC' }, user.id),
    ConflictError,
    { code: 'TOO_MANY_SCHEDULES' },
  );
  t.equal((await service.listByScript(script.id, user.id)).length, MAX_SCHEDULES_PER_SCRIPT);
});

t.test('get, listByScript and delete: the owner’s or an admin’s, not found for anyone else', async (t) => {
  const user = await makeUser(repos);
  const stranger = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  const a = await service.create(script.id, { cron: '0 1 * * *', timezone: 'UTC' }, user.id);
  const b = await service.create(script.id, { cron: '0 2 * * *', timezone: 'UTC' }, user.id);

  t.same(
    (await service.listByScript(script.id, user.id)).map((s) => s.id),
    [a.id, b.id],
    'the script’s schedules, oldest first',
  );
  await rejectsWith(t, service.listByScript(script.id, stranger.id), NotFoundError, { resource: 'script' });
  await rejectsWith(t, service.get(a.id, stranger.id), NotFoundError, { resource: 'schedule' });
  t.equal((await service.get(a.id)).id, a.id, 'an admin (no owner) reads it');

  await rejectsWith(t, service.delete(a.id, stranger.id), NotFoundError, { resource: 'schedule' });
  await service.delete(a.id, user.id);
  await rejectsWith(t, service.get(a.id), NotFoundError, { resource: 'schedule' });
  t.same(
    (await service.listByScript(script.id)).map((s) => s.id),
    [b.id],
    'only the deleted one is gone',
  );
  await rejectsWith(t, service.delete(a.id), NotFoundError, { resource: 'schedule' });
});

t.test('list: own schedules newest first, by cursor; everyone’s only for an admin', async (t) => {
  const user = await makeUser(repos);
  const other = await makeUser(repos);
  const admin = principal(await makeUser(repos), 'admin');
  const mine = await makeScript(repos, user.id);
  const first = await service.create(mine.id, { cron: '0 1 * * *', timezone: 'UTC' }, user.id);
  const second = await service.create(mine.id, { cron: '0 2 * * *', timezone: 'UTC' }, user.id);
  const theirs = await service.create(
    (await makeScript(repos, other.id)).id,
    { cron: '0 3 * * *', timezone: 'UTC' },
    other.id,
  );

  const page1 = await service.list(principal(user), { per_page: 1 });
  t.same(
    page1.items.map((s) => s.id),
    [second.id],
    'newest first',
  );
  t.type(page1.next_cursor, 'string');
  const page2 = await service.list(principal(user), { per_page: 1, cursor: page1.next_cursor! });
  t.same(
    page2.items.map((s) => s.id),
    [first.id],
  );
  t.same(
    (await service.list(principal(user), { cursor: '' })).items.map((s) => s.id),
    [second.id, first.id],
    'an empty cursor is the first page; no one else’s schedules',
  );

  await rejectsWith(t, service.list(principal(user), { all: true }), ForbiddenError);
  const all = (await service.list(admin, { all: true, per_page: 100 })).items.map((s) => s.id);
  t.ok(all.includes(theirs.id) && all.includes(first.id), 'an admin lists everyone’s');
  t.same((await service.list(admin, {})).items, [], 'an admin’s default is its own (none)');
});

t.test('update recomputes the due time from now under the new rule', async (t) => {
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  now = new Date('2027-06-01T00:00:00Z');
  const schedule = await service.create(script.id, { cron: '0 12 * * *', timezone: 'UTC' }, user.id);
  t.equal(schedule.next_run_at?.toISOString(), '2027-06-01T12:00:00.000Z');

  now = new Date('2027-06-05T13:00:00Z');
  const moved = await service.update(schedule.id, { cron: '0 6 * * *' }, user.id);
  t.equal(moved.cron, '0 6 * * *');
  t.equal(moved.next_run_at?.toISOString(), '2027-06-06T06:00:00.000Z', 'from the new now, the new rule');

  const zoned = await service.update(schedule.id, { timezone: 'Asia/Kolkata' }, user.id);
  t.equal(zoned.cron, '0 6 * * *', 'the rule is kept when only the zone changes');
  t.equal(zoned.next_run_at?.toISOString(), '2027-06-06T00:30:00.000Z', '06:00 in Kolkata is 00:30Z');

  const off = await service.update(schedule.id, { enabled: false }, user.id);
  t.equal(off.enabled, false);
  t.equal(off.next_run_at, null, 'disabled: no due time');
  const on = await service.update(schedule.id, {}, user.id);
  t.equal(on.enabled, false, 'an empty change keeps the state');
  const back = await service.update(schedule.id, { enabled: true });
  t.equal(back.next_run_at?.toISOString(), '2027-06-06T00:30:00.000Z', 'enabled again: due again');
});

t.test('update refuses bad fields before locking, and someone else’s schedule as not found', async (t) => {
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);
  const schedule = await service.create(script.id, { cron: '0 12 * * *', timezone: 'UTC' }, user.id);

  // A schedule id that does not exist: the field check answers first, so it is a ValidationError.
  await rejectsWith(t, service.update(2 ** 31 - 1, { cron: '1 2 3' }), ValidationError, {
    errors: [{ path: '/cron' }],
  });
  await rejectsWith(t, service.update(2 ** 31 - 1, { timezone: '+05:00' }), ValidationError, {
    errors: [{ path: '/timezone' }],
  });
  // Well-formed fields whose rule never fires are refused after the lock, naming cron.
  await rejectsWith(t, service.update(schedule.id, { cron: '0 0 30 2 *' }, user.id), ValidationError, {
    errors: [{ path: '/cron', message: 'never fires' }],
  });
  await rejectsWith(
    t,
    service.update(schedule.id, { enabled: false }, (await makeUser(repos)).id),
    NotFoundError,
    { resource: 'schedule' },
  );
  t.same(await service.get(schedule.id), schedule, 'no refused change was written');
});

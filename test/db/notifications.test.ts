/**
 * db/notifications.ts is the one place that names a NOTIFY channel: the channels it
 * knows are exactly those the migrated schema's functions send on, and each typed
 * subscription hears its trigger with the payload parsed.
 */
import t from 'tap';
import { CHANNELS, Notifications } from '../../src/db/notifications.ts';
import { testDatabase } from '../helpers/db.ts';
import { LEASE, makeScript, makeUser, queueRun } from '../helpers/fixtures.ts';

t.test('the channels are exactly those the schema notifies on', async (t) => {
  const { sql } = await testDatabase(t);
  const rows = await sql<{ src: string }[]>`
    select p.prosrc as src from pg_proc as p
    join pg_namespace as n on n.oid = p.pronamespace
    where n.nspname = current_schema() and p.prosrc like '%pg_notify%'
  `;
  const sent = new Set<string>();
  for (const { src } of rows)
    for (const m of src.matchAll(/pg_notify\('([a-z_]+)'/g)) sent.add(m[1] as string);
  t.same([...sent].sort(), Object.values(CHANNELS).sort());
});

/** Resolves with the first value `subscribe` hands its handler. */
function first<T>(subscribe: (handler: (value: T) => void) => Promise<{ unlisten(): Promise<void> }>) {
  let resolve!: (value: T) => void;
  const heard = new Promise<T>((r) => {
    resolve = r;
  });
  const listening = subscribe((value) => resolve(value));
  return { listening, heard };
}

t.test('each subscription hears its trigger, with the id parsed', async (t) => {
  const { sql, repos } = await testDatabase(t);
  const notifications = new Notifications(sql);
  const user = await makeUser(repos);
  const script = await makeScript(repos, user.id);

  const queued = first<void>((h) => notifications.onRunQueued(h));
  const cancelled = first<number>((h) => notifications.onRunCancelled(h));
  const auth = first<number>((h) => notifications.onAuthChanged(h));
  const schedule = first<number>((h) => notifications.onScheduleChanged(h));
  const subscriptions = await Promise.all([queued, cancelled, auth, schedule].map((s) => s.listening));
  t.teardown(() => Promise.all(subscriptions.map((s) => s.unlisten())));

  const run = await queueRun(repos, script.id);
  await queued.heard;
  t.pass('run_queued heard');
  await repos.leases.start(run.id, LEASE);
  await repos.runs.cancel(run.id);
  t.equal(await cancelled.heard, run.id, 'run_cancelled carries the id of the running run cancelled');
  await repos.users.deactivate(user.id);
  t.equal(await auth.heard, user.id, 'auth_changed carries the user id');
  const next = new Date(Date.UTC(2031, 0, 2, 14, 30));
  await repos.schedules.create({
    script_id: script.id,
    cron: '30 9 * * 1-5',
    timezone: 'America/New_York',
    enabled: true,
    next_run_at: next,
  });
  t.equal(await schedule.heard, next.getTime(), 'schedule_changed carries next_run_at in epoch ms');
});

t.test('a payload that is not an id is ignored, not handed on as NaN', async (t) => {
  const { sql } = await testDatabase(t);
  const got: number[] = [];
  const subscription = await new Notifications(sql).onAuthChanged((id) => got.push(id));
  t.teardown(() => subscription.unlisten());
  const done = first<number>((h) => new Notifications(sql).onAuthChanged(h));
  const marker = await done.listening;
  t.teardown(() => marker.unlisten());
  await sql`select pg_notify(${CHANNELS.authChanged}, 'not-an-id'), pg_notify(${CHANNELS.authChanged}, '')`;
  await sql`select pg_notify(${CHANNELS.authChanged}, '42')`;
  // Notifications of one session arrive in the order they were sent: after 42, nothing earlier is pending.
  t.equal(await done.heard, 42);
  t.same(got, [42], 'only the id came through');
});

/**
 * The scheduler's batch queue (queueScheduledRuns, `repos.runs.queueScheduled`): the
 * queueing rules applied to many due occurrences in one statement — a busy script gets
 * no run, one run per script, an owner's cap served in the given order.
 */
import t from 'tap';
import { testDatabase } from '../helpers/db.ts';
import { makeScript, makeUser, queueRun } from '../helpers/fixtures.ts';

const SOON = new Date('2027-01-04T14:30:00Z');

t.test('queueScheduled queues a run per request that may run, first served first', async (t) => {
  const { repos } = await testDatabase(t);
  const alice = await makeUser(repos);
  const bob = await makeUser(repos);
  const [a1, a2, a3, busy] = [
    await makeScript(repos, alice.id),
    await makeScript(repos, alice.id),
    await makeScript(repos, alice.id),
    await makeScript(repos, bob.id),
  ] as const;
  const b1 = await makeScript(repos, bob.id);
  const schedule = async (scriptId: number) =>
    (
      await repos.schedules.create({
        script_id: scriptId,
        cron: '* * * * *',
        timezone: 'UTC',
        enabled: true,
        next_run_at: SOON,
      })
    ).id;
  const sA1 = await schedule(a1.id);
  const sA1again = await schedule(a1.id);
  const sA2 = await schedule(a2.id);
  const sA3 = await schedule(a3.id);
  const sBusy = await schedule(busy.id);
  const sB1 = await schedule(b1.id);
  await queueRun(repos, busy.id); // bob's script already has a queued run

  const request = (schedule_id: number, script: { id: number; user_id: number }) => ({
    schedule_id,
    script_id: script.id,
    user_id: script.user_id,
  });
  const queued = await repos.transaction((tx) =>
    tx.runs.queueScheduled(
      [
        request(sA1, a1),
        request(sA1again, a1),
        request(sA2, a2),
        request(sA3, a3),
        request(sBusy, busy),
        request(sB1, b1),
      ],
      2,
    ),
  );
  t.same(
    [...queued.keys()].sort((x, y) => x - y),
    [sA1, sA2, sB1].sort((x, y) => x - y),
    'a1 once (its first request), a2; a3 is past alice’s cap of 2; bob: b1 (his busy script gets none)',
  );
  for (const [scheduleId, scriptId] of [
    [sA1, a1.id],
    [sA2, a2.id],
    [sB1, b1.id],
  ] as const) {
    const script = await repos.scripts.getById(scriptId);
    t.equal(script.last_run_id, queued.get(scheduleId), `script ${scriptId}: its latest run is the new one`);
    t.equal(script.status, 'queued');
    const run = await repos.runs.getById(queued.get(scheduleId)!);
    t.match(run, { status: 'queued', trigger: 'schedule', schedule_id: scheduleId, script_id: scriptId });
  }
  t.equal((await repos.scripts.getById(a3.id)).status, 'uploaded', 'a3 was not queued');

  t.same(
    await repos.transaction((tx) => tx.runs.queueScheduled([request(sA3, a3)], 2)),
    new Map(),
    'alice is at her cap: nothing more',
  );
  t.same(await repos.runs.queueScheduled([], 2), new Map(), 'no request: no statement, nothing queued');
});

/** The run status machine as TypeScript states it (the SQL trigger enforces the same). */
import t from 'tap';
import { RUN_STATUSES } from '../../src/domain/enums.ts';
import {
  FINISHED_RUN_STATUSES,
  LIVE_RUN_STATUSES,
  RUN_COLUMNS,
  RUN_TRANSITIONS,
  runStatusesLeadingTo,
} from '../../src/domain/run.ts';

t.test('runStatusesLeadingTo: the states each state is reached from', async (t) => {
  t.same(runStatusesLeadingTo('queued'), [], 'a run starts queued; nothing leads back to it');
  t.same(runStatusesLeadingTo('running'), ['queued']);
  t.same(runStatusesLeadingTo('completed'), ['running']);
  t.same(runStatusesLeadingTo('failed'), ['running']);
  t.same(runStatusesLeadingTo('cancelled'), ['queued', 'running'], 'a run is cancelled waiting or running');
});

t.test('live and finished states split the statuses; a finished run never changes again', async (t) => {
  t.same([...LIVE_RUN_STATUSES, ...FINISHED_RUN_STATUSES].sort(), [...RUN_STATUSES].sort());
  for (const status of FINISHED_RUN_STATUSES) t.same(RUN_TRANSITIONS[status], [], `${status} is final`);
  for (const status of LIVE_RUN_STATUSES)
    t.ok(RUN_TRANSITIONS[status].includes('cancelled'), `a ${status} run can be cancelled`);
});

t.test('the public columns of a run hold no executor or lease column', async (t) => {
  t.equal(new Set(RUN_COLUMNS).size, RUN_COLUMNS.length, 'no column twice');
  t.notOk(
    RUN_COLUMNS.some((c) => /executor|lease/.test(c)),
    'nothing of the executor’s side is shown',
  );
});

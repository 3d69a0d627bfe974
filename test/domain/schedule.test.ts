/**
 * Cron rules: what is accepted (and which field a refusal names), and the
 * occurrences in a time zone across DST, as README's Schedules section states them.
 */
import fc from 'fast-check';
import t from 'tap';
import { ValidationError } from '../../src/domain/errors.ts';
import { CronRule, checkTimezone, normalizeCron } from '../../src/domain/schedule.ts';
import { MISSED_COUNT_LIMIT, planFiring } from '../../src/scheduler/plan.ts';

const NY = 'America/New_York';
const at = (iso: string) => new Date(iso);
const iso = (d: Date | null) => d?.toISOString() ?? null;

/** The occurrences of a rule in [from, to), in UTC. */
function occurrences(rule: CronRule, from: string, to: string): string[] {
  const out: string[] = [];
  let next = rule.nextAfter(new Date(at(from).getTime() - 1));
  while (next !== null && next < at(to)) {
    out.push(next.toISOString());
    next = rule.nextAfter(next);
  }
  return out;
}

function refusal(fn: () => unknown): { path: string; message: string } | undefined {
  try {
    fn();
  } catch (error) {
    if (error instanceof ValidationError) return error.errors[0];
    throw error;
  }
  return undefined;
}

t.test('market hours: 9:30 New York weekdays is 14:30Z in January and 13:30Z in July', async (t) => {
  const rule = CronRule.parse('30 9 * * 1-5', NY, at('2027-01-01T00:00:00Z'));
  t.same(occurrences(rule, '2027-01-08T00:00:00Z', '2027-01-12T00:00:00Z'), [
    '2027-01-08T14:30:00.000Z', // Friday
    '2027-01-11T14:30:00.000Z', // Monday (the weekend has none)
  ]);
  t.same(occurrences(rule, '2027-07-09T00:00:00Z', '2027-07-13T00:00:00Z'), [
    '2027-07-09T13:30:00.000Z',
    '2027-07-12T13:30:00.000Z',
  ]);
});

t.test('spring forward: a fixed time inside the skipped hour fires once, at 03:00 local', async (t) => {
  // 2027-03-14, New York: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist.
  const rule = CronRule.parse('30 2 * * *', NY, at('2027-01-01T00:00:00Z'));
  t.same(occurrences(rule, '2027-03-13T00:00:00Z', '2027-03-16T00:00:00Z'), [
    '2027-03-13T07:30:00.000Z', // 02:30 EST
    '2027-03-14T07:00:00.000Z', // 03:00 EDT, the first minute after the gap
    '2027-03-15T06:30:00.000Z', // 02:30 EDT
  ]);
});

t.test('fall back: a fixed time inside the repeated hour fires once, at the first pass', async (t) => {
  // 2027-11-07, New York: 02:00 EDT goes back to 01:00 EST; 01:30 happens twice.
  const rule = CronRule.parse('30 1 * * *', NY, at('2027-01-01T00:00:00Z'));
  t.same(occurrences(rule, '2027-11-06T00:00:00Z', '2027-11-09T00:00:00Z'), [
    '2027-11-06T05:30:00.000Z',
    '2027-11-07T05:30:00.000Z', // 01:30 EDT; not again at 06:30Z (01:30 EST)
    '2027-11-08T06:30:00.000Z',
  ]);
});

t.test('interval schedules follow real time across DST', async (t) => {
  const rule = CronRule.parse('*/30 1-2 * * *', NY, at('2027-01-01T00:00:00Z'));
  // Fall back: both passes of 01:xx fire, then 02:xx EST.
  t.same(occurrences(rule, '2027-11-07T04:00:00Z', '2027-11-07T09:00:00Z'), [
    '2027-11-07T05:00:00.000Z',
    '2027-11-07T05:30:00.000Z',
    '2027-11-07T06:00:00.000Z',
    '2027-11-07T06:30:00.000Z',
    '2027-11-07T07:00:00.000Z',
    '2027-11-07T07:30:00.000Z',
  ]);
  // Spring forward: 02:xx does not exist, so only 01:00 and 01:30 EST.
  t.same(occurrences(rule, '2027-03-14T05:00:00Z', '2027-03-14T09:00:00Z'), [
    '2027-03-14T06:00:00.000Z',
    '2027-03-14T06:30:00.000Z',
  ]);
});

t.test('the scheduler plan handles each DST day once: a fixed time inside the repeated hour', async (t) => {
  const rule = CronRule.stored('30 1 * * *', NY);
  // The scheduler fires the first pass and moves to the next day: the second pass is never due.
  const first = planFiring(rule, at('2027-11-07T05:30:00Z'), at('2027-11-07T05:30:01Z'), 300);
  t.same(
    { fire: iso(first.fire), next: iso(first.next), skipped: first.skipped },
    {
      fire: '2027-11-07T05:30:00.000Z',
      next: '2027-11-08T06:30:00.000Z',
      skipped: 0,
    },
  );
});

t.test('cron: five fields, normalised; seconds and other shapes are refused naming cron', async (t) => {
  t.equal(normalizeCron('  30   9 * *\t1-5 '), '30 9 * * 1-5');
  t.equal(CronRule.parse('0 12 * JAN-MAR MON-FRI', 'UTC', new Date()).expression, '0 12 * JAN-MAR MON-FRI');
  const cases: Array<[string, RegExp]> = [
    ['0 30 9 * * 1-5', /seconds are not supported/],
    ['', /must not be empty/],
    ['   ', /must not be empty/],
    ['* * * *', /5 fields/],
    ['* * * * * * *', /5 fields/],
    ['@daily', /5 fields/],
    ['61 * * * *', /not a valid cron expression/],
    ['* 24 * * *', /not a valid cron expression/],
    ['* * 0 * *', /not a valid cron expression/],
    ['* * * 13 *', /not a valid cron expression/],
    ['*/0 * * * *', /not a valid cron expression/],
    ['0 0 31 2 *', /never fires/],
    ['0 0 * * 1; drop table x', /5 fields|character/],
    ['$ * * * *', /character/],
  ];
  for (const [cron, message] of cases) {
    const error = refusal(() => CronRule.parse(cron, 'UTC', at('2027-01-01T00:00:00Z')));
    t.equal(error?.path, '/cron', JSON.stringify(cron));
    t.match(error?.message, message, JSON.stringify(cron));
  }
  t.match(
    refusal(() => normalizeCron(`${'1,'.repeat(100)}1 * * * *`)),
    { path: '/cron', message: /200/ },
  );
});

t.test('time zone: IANA names only, refused naming timezone', async (t) => {
  for (const ok of [
    'America/New_York',
    'UTC',
    'Europe/London',
    'Asia/Kolkata',
    'America/Argentina/Buenos_Aires',
  ])
    t.equal(checkTimezone(ok), ok, ok);
  for (const bad of [
    '',
    'Mars/Olympus_Mons',
    'America/New York',
    '+05:00',
    'UTC+5',
    '../etc/passwd',
    'x'.repeat(65),
  ])
    t.same(refusal(() => checkTimezone(bad))?.path, '/timezone', JSON.stringify(bad));
  t.equal(refusal(() => CronRule.parse('* * * * *', 'Nowhere/Land', new Date()))?.path, '/timezone');
});

t.test(
  'any text: parse either accepts a five-field rule or throws a ValidationError naming cron',
  async () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 60 }), (text) => {
        try {
          const rule = CronRule.parse(text, 'UTC', at('2027-01-01T00:00:00Z'));
          return rule.expression.split(' ').length === 5;
        } catch (error) {
          return error instanceof ValidationError && error.errors[0]?.path === '/cron';
        }
      }),
      { numRuns: 500 },
    );
  },
);

t.test(
  'catch-up: the latest occurrence within the window fires, older ones are counted as skipped',
  async (t) => {
    const rule = CronRule.stored('*/5 * * * *', 'UTC');
    const plan = (due: string, now: string) => {
      const p = planFiring(rule, at(due), at(now), 300);
      return { fire: iso(p.fire), skipped: p.skipped, next: iso(p.next) };
    };
    // On time.
    t.same(plan('2027-01-01T10:00:00Z', '2027-01-01T10:00:00.200Z'), {
      fire: '2027-01-01T10:00:00.000Z',
      skipped: 0,
      next: '2027-01-01T10:05:00.000Z',
    });
    // Exactly 300 s late still fires; 301 s late does not.
    t.equal(plan('2027-01-01T10:00:00Z', '2027-01-01T10:04:59Z').fire, '2027-01-01T10:00:00.000Z');
    t.same(plan('2027-01-01T10:00:00Z', '2027-01-01T10:05:00Z').skipped, 1);
    // Down from 10:00 to 10:12:30: 10:00, 10:05 missed (too old or not the latest), 10:10 fires.
    t.same(plan('2027-01-01T10:00:00Z', '2027-01-01T10:12:30Z'), {
      fire: '2027-01-01T10:10:00.000Z',
      skipped: 2,
      next: '2027-01-01T10:15:00.000Z',
    });
    // Down for an hour, back at 11:06: 10:00 … 11:00 are older than 300 s, 11:05 fires.
    t.same(plan('2027-01-01T10:00:00Z', '2027-01-01T11:06:00Z'), {
      fire: '2027-01-01T11:05:00.000Z',
      skipped: 13,
      next: '2027-01-01T11:10:00.000Z',
    });
    // With a 30 s window, 11:05 is too old as well: nothing fires, all 14 are counted.
    const p = planFiring(rule, at('2027-01-01T10:00:00Z'), at('2027-01-01T11:06:00Z'), 30);
    t.same(
      { fire: p.fire, skipped: p.skipped, next: iso(p.next) },
      {
        fire: null,
        skipped: 14,
        next: '2027-01-01T11:10:00.000Z',
      },
    );
    // With no catch-up window, only an occurrence due exactly now fires.
    t.equal(planFiring(rule, at('2027-01-01T10:00:00Z'), at('2027-01-01T10:00:01Z'), 0).fire, null);
  },
);

t.test('a long outage costs bounded work', async (t) => {
  const rule = CronRule.stored('* * * * *', 'UTC');
  const p = planFiring(rule, at('2027-01-01T00:00:00Z'), at('2027-03-01T00:00:30Z'), 300);
  t.equal(iso(p.fire), '2027-03-01T00:00:00.000Z');
  t.equal(iso(p.next), '2027-03-01T00:01:00.000Z');
  // Up to the bound before the window, plus 23:56 … 23:59 inside it (00:00 fires).
  t.equal(p.skipped, MISSED_COUNT_LIMIT + 4, 'the skips are counted up to the bound');
});

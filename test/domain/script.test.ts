import fc from 'fast-check';
import t from 'tap';
import { SCRIPT_STATUSES } from '../../src/domain/enums.ts';
import { ValidationError } from '../../src/domain/errors.ts';
import {
  assertExecutionMetrics,
  canTransition,
  ORIGINAL_FILENAME_MAX_LENGTH,
  sanitizeFilename,
  scriptExtension,
  statusesLeadingTo,
} from '../../src/domain/script.ts';

t.test('scriptExtension accepts .py .js .ts in any case, nothing else', async (t) => {
  t.equal(scriptExtension('a.py'), '.py');
  t.equal(scriptExtension('A.TS'), '.ts');
  t.equal(scriptExtension('x.tar.js'), '.js');
  for (const name of ['a.pyc', 'py', '.py/evil', 'a.py.exe', 'a.', 'a.sh', 'a.py\\x', 'a'])
    t.equal(scriptExtension(name), null, name);
});

t.test('sanitizeFilename keeps a harmless display name whatever comes in', async (t) => {
  t.equal(sanitizeFilename('../../etc/passwd.py'), 'passwd.py');
  t.equal(sanitizeFilename('..\\..\\win.py'), 'win.py');
  t.equal(sanitizeFilename('a\u0000b\nc.py'), 'abc.py');
  t.equal(sanitizeFilename('...hidden.py'), 'hidden.py');
  t.equal(sanitizeFilename('/'), 'script');
  t.equal(sanitizeFilename('.py'), 'script.py');
  t.equal(sanitizeFilename('....PY'), 'script.py');
  t.equal(sanitizeFilename('invoice\u202Eyp.exe'), 'invoiceyp.exe', 'no bidirectional override survives');
  t.equal(sanitizeFilename('a\u2066b\u2069.py'), 'ab.py');
  t.equal(sanitizeFilename('évolution 📈.py'), 'évolution 📈.py');
  const long = sanitizeFilename(`${'x'.repeat(400)}.py`);
  t.equal(long.length, ORIGINAL_FILENAME_MAX_LENGTH);
  t.ok(long.endsWith('.py'), 'the extension survives truncation');
  fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 600 }), (input) => {
      const name = sanitizeFilename(input);
      return (
        name.length > 0 &&
        [...name].length <= ORIGINAL_FILENAME_MAX_LENGTH &&
        !/[/\\]/.test(name) &&
        // biome-ignore lint/suspicious/noControlCharactersInRegex: asserting there are none
        !/[\u0000-\u001f\u007f\u202a-\u202e\u2066-\u2069]/.test(name) &&
        !name.startsWith('.')
      );
    }),
    { numRuns: 2000 },
  );
});

t.test('the status machine is the one API.md describes', async (t) => {
  const allowed = SCRIPT_STATUSES.flatMap((from) =>
    SCRIPT_STATUSES.filter((to) => canTransition(from, to)).map((to) => `${from}->${to}`),
  );
  t.same(allowed.sort(), [
    'cancelled->queued',
    'completed->queued',
    'failed->queued',
    'queued->cancelled',
    'queued->running',
    'running->cancelled',
    'running->completed',
    'running->failed',
    'uploaded->queued',
  ]);
  t.same(statusesLeadingTo('queued'), ['uploaded', 'completed', 'failed', 'cancelled']);
  t.same(statusesLeadingTo('cancelled'), ['queued', 'running']);
});

t.test(
  'execution metrics: from 0 to what numeric(10,3) and numeric(10,2) hold, each refusal named',
  async (t) => {
    t.doesNotThrow(() => assertExecutionMetrics({}), 'absent metrics are fine');
    t.doesNotThrow(() => assertExecutionMetrics({ execution_time_seconds: null, memory_usage_mb: null }));
    t.doesNotThrow(() => assertExecutionMetrics({ execution_time_seconds: 0, memory_usage_mb: 0 }));
    t.doesNotThrow(() =>
      assertExecutionMetrics({ execution_time_seconds: 9_999_999.999, memory_usage_mb: 99_999_999.99 }),
    );
    const time = { path: '/execution_time_seconds', message: 'must be a number from 0 to 9999999.999' };
    const memory = { path: '/memory_usage_mb', message: 'must be a number from 0 to 99999999.99' };
    for (const bad of [-0.001, 10_000_000, Number.NaN, Number.POSITIVE_INFINITY])
      t.throws(
        () => assertExecutionMetrics({ execution_time_seconds: bad }),
        { constructor: ValidationError, errors: [time] },
        String(bad),
      );
    t.throws(() => assertExecutionMetrics({ memory_usage_mb: 100_000_000 }), { errors: [memory] });
    t.throws(
      () => assertExecutionMetrics({ execution_time_seconds: -1, memory_usage_mb: -1 }),
      { errors: [time, memory] },
      'both refusals at once',
    );
  },
);

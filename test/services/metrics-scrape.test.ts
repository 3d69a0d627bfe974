/**
 * A scrape of /metrics: the run queue (and, for an API process, the pool) sampled at
 * scrape time; an answer even when the database is down; and the METRICS_TOKEN check.
 */
import t from 'tap';
import { createPool } from '../../src/db/client.ts';
import { Database } from '../../src/db/database.ts';
import { Metrics } from '../../src/metrics.ts';
import { Repositories } from '../../src/repositories/index.ts';
import { presentsToken, scrape } from '../../src/services/metrics-scrape.ts';
import { testDatabase, testLogger } from '../helpers/db.ts';
import { makeScript, makeUser, queueRun, startRun } from '../helpers/fixtures.ts';
import { captureLogger } from '../helpers/log-capture.ts';

const { repos, url } = await testDatabase(t);

/** The value of one sample line (`name{labels} value`) of the exposition text, or null. */
function sample(text: string, series: string): number | null {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? null : Number(line.slice(series.length + 1));
}

t.test('a scrape samples the run queue, and the pool when asked', async (t) => {
  const user = await makeUser(repos);
  await queueRun(repos, (await makeScript(repos, user.id)).id);
  await queueRun(repos, (await makeScript(repos, user.id)).id);
  await startRun(repos, (await makeScript(repos, user.id)).id);

  const worker = await scrape(new Metrics({ defaultMetrics: false }), repos, testLogger(), { pool: false });
  t.equal(sample(worker, 'script_queue_depth{status="queued"}'), 2);
  t.equal(sample(worker, 'script_queue_depth{status="running"}'), 1);
  t.equal(sample(worker, 'db_pool_connections{state="total"}'), null, 'no pool sample for a worker');

  const api = await scrape(new Metrics({ defaultMetrics: false }), repos, testLogger(), { pool: true });
  const total = sample(api, 'db_pool_connections{state="total"}');
  const idle = sample(api, 'db_pool_connections{state="idle"}');
  t.ok(total !== null && total >= 1, `the pool's connections are counted (${total})`);
  t.ok(idle !== null && idle >= 0 && idle <= total!, `idle ones are part of them (${idle})`);
  t.equal(sample(api, 'db_sample_success'), 1, 'the sample is fresh');
  const at = sample(api, 'db_sample_timestamp_seconds')!;
  t.ok(Math.abs(at - Date.now() / 1000) < 60, `and taken now (${at})`);
});

t.test('with the database down a scrape still answers, and says why its samples are missing', async (t) => {
  const log = testLogger();
  const sql = createPool(
    {
      url,
      max: 1,
      idleTimeoutSeconds: 1,
      maxLifetimeSeconds: 0,
      connectTimeoutSeconds: 5,
      statementTimeoutMs: 5_000,
      prepare: true,
      applicationName: 'metrics-scrape-test',
    },
    log,
  );
  await sql.end();
  const down = new Repositories(new Database(sql, { log, slowQueryMs: 10_000, queryTimeoutMs: 5_000 }));
  const metrics = new Metrics({ defaultMetrics: false });
  const { log: captured, lines } = captureLogger('warn');
  t.equal(sample(await scrape(metrics, repos, captured, { pool: true }), 'db_sample_success'), 1);
  metrics.setQueueDepth({ queued: 7, running: 3 });
  const sampledAt = sample(await metrics.registry.metrics(), 'db_sample_timestamp_seconds');

  const text = await scrape(metrics, down, captured, { pool: true });
  t.match(text, /# HELP script_queue_depth/, 'the registry is answered');
  t.equal(sample(text, 'script_queue_depth{status="queued"}'), 7, 'the last sample stays');
  t.equal(sample(text, 'db_sample_success'), 0, 'and is said to be an old one');
  t.equal(sample(text, 'db_sample_timestamp_seconds'), sampledAt, 'of the time it was taken');
  t.match(lines, [{ level: 40, msg: 'could not sample the pool and queue for metrics', err: {} }]);
});

t.test('presentsToken accepts exactly `Bearer <token>`', async (t) => {
  const token = 's3cret-metrics-token';
  t.equal(presentsToken(`Bearer ${token}`, token), true);
  t.equal(presentsToken(`bearer   ${token}  `, token), true, 'scheme case and spaces are lenient');
  t.equal(presentsToken(`Bearer ${token}x`, token), false, 'a longer token');
  t.equal(presentsToken(`Bearer ${token.slice(0, -1)}`, token), false, 'a prefix of the token');
  t.equal(presentsToken(token, token), false, 'no scheme');
  t.equal(presentsToken(`Basic ${token}`, token), false, 'another scheme');
  t.equal(presentsToken(`Bearer ${token} extra`, token), false, 'more than one word');
  t.equal(presentsToken(undefined, token), false, 'no header');
  t.equal(presentsToken(`Bearer ${token}`, undefined), false, 'no token configured: nobody');
});

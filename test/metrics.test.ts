/**
 * The query- and request-duration histograms are observed on every query and request
 * without prom-client's per-call work (src/metrics.ts, LabelledHistogram); what they export
 * must be exactly what prom-client's own Histogram exports for the same observations, in
 * both the text format and `get()`.
 */
import { Histogram, Registry } from 'prom-client';
import t from 'tap';
import { Metrics } from '../src/metrics.ts';

const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5];

/** Durations on, between and beyond the bucket bounds, for several queries and both outcomes. */
const OBSERVATIONS: Array<[string, number, boolean]> = [
  ['users.findById', 0.0004, true],
  ['users.findById', 0.001, true],
  ['users.findById', 0.00100001, true],
  ['users.findById', 0.3, false],
  ['scripts.create', 5, true],
  ['scripts.create', 7.5, true],
  ['scripts.create', 0, false],
  ['stats.userStats', 0.049999, true],
  ['users.findById', 0.25, true],
];

t.test('the histogram exports what prom-client exports for the same observations', async (t) => {
  const metrics = new Metrics({ defaultMetrics: false });
  const registry = new Registry();
  const reference = new Histogram({
    name: 'db_query_duration_seconds',
    help: 'Database queries by repository method and outcome',
    labelNames: ['query', 'outcome'] as const,
    buckets: BUCKETS,
    registers: [registry],
  });
  for (const [name, seconds, ok] of OBSERVATIONS) {
    metrics.observeQuery(name, seconds, ok);
    reference.observe({ query: name, outcome: ok ? 'ok' : 'error' }, seconds);
  }
  const ours = (await metrics.registry.getSingleMetricAsString('db_query_duration_seconds')).split('\n');
  const theirs = (await registry.getSingleMetricAsString('db_query_duration_seconds')).split('\n');
  t.same([...ours].sort(), [...theirs].sort(), 'the same lines');
  t.match(ours.join('\n'), /^db_query_duration_seconds_count\{query="users.findById",outcome="ok"\} 4$/m);
  t.match(
    ours.join('\n'),
    /^db_query_duration_seconds_bucket\{le="0.001",query="users.findById",outcome="ok"\} 2$/m,
  );
  const sort = (values: Array<{ metricName?: string; labels: object; value: number }>) =>
    values.map((v) => JSON.stringify([v.metricName, Object.entries(v.labels).sort(), v.value])).sort();
  t.same(sort((await metrics.queryDuration.get()).values), sort((await reference.get()).values), 'get()');

  metrics.registry.resetMetrics();
  t.equal(
    (await metrics.registry.getSingleMetricAsString('db_query_duration_seconds')).includes('_count'),
    false,
    'reset empties it',
  );
});

t.test('the request histogram exports what prom-client exports for the same requests', async (t) => {
  const metrics = new Metrics({ defaultMetrics: false });
  const registry = new Registry();
  const reference = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'HTTP requests by method, route pattern and status code',
    labelNames: ['method', 'route', 'status_code'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const requests: Array<[string, string, number, number]> = [
    ['GET', '/api/v1/scripts/:id', 200, 0.004],
    ['GET', '/api/v1/scripts/:id', 200, 0.005],
    ['GET', '/api/v1/scripts/:id', 404, 0.02],
    ['POST', '/api/v1/scripts/:id', 200, 0.3],
    // A route pattern with a space cannot be mistaken for another method's or status's.
    ['GET', '200 /x', 404, 11],
    ['GET', 'unmatched', 404, 0],
    ['GET', '/api/v1/scripts/:id', 200, 7],
  ];
  for (const [method, route, status, seconds] of requests) {
    metrics.observeRequest(method, route, status, seconds);
    reference.observe({ method, route, status_code: String(status) }, seconds);
  }
  const name = 'http_request_duration_seconds';
  const ours = (await metrics.registry.getSingleMetricAsString(name)).split('\n');
  const theirs = (await registry.getSingleMetricAsString(name)).split('\n');
  t.same([...ours].sort(), [...theirs].sort(), 'the same lines');
  t.match(
    ours.join('\n'),
    /^http_request_duration_seconds_count\{method="GET",route="\/api\/v1\/scripts\/:id",status_code="200"\} 3$/m,
  );
});

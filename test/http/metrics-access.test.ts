/**
 * Who sees metrics and readiness detail (issue 7, item 8): the public gets neither
 * `/metrics` on the API port nor the server version, migrations and pool figures of
 * `/health/database`; METRICS_TOKEN opens both, and the metrics listener
 * (METRICS_PORT) listens on 127.0.0.1 unless told otherwise.
 */
import t from 'tap';
import { loadConfig } from '../../src/config.ts';
import { startMetricsServer } from '../../src/executor/metrics-server.ts';
import { testApp } from '../helpers/app.ts';
import { testLogger } from '../helpers/db.ts';

const TOKEN = 'a-long-metrics-token-0123456789';

t.test('without METRICS_TOKEN the API port serves no metrics and no readiness detail', async (t) => {
  const { app } = await testApp(t);
  const metrics = await app.inject('/metrics');
  t.equal(metrics.statusCode, 404);
  t.notMatch(metrics.body, /http_request_duration_seconds/);
  const ready = await app.inject('/health/database');
  t.equal(ready.statusCode, 200);
  t.same(ready.json(), { status: 'ok' }, 'only the status');
  const guessed = await app.inject({
    url: '/health/database',
    headers: { authorization: 'Bearer anything' },
  });
  t.same(guessed.json(), { status: 'ok' });
});

t.test('with METRICS_TOKEN, metrics and the detail answer only to it', async (t) => {
  const { app } = await testApp(t, { METRICS_TOKEN: TOKEN });
  for (const headers of [{}, { authorization: 'Bearer wrong-token-0123456789' }, { authorization: TOKEN }]) {
    const res = await app.inject({ url: '/metrics', headers });
    t.equal(res.statusCode, 401, JSON.stringify(headers));
    t.match(res.headers['content-type'], /^application\/problem\+json/);
    t.match(res.json(), { code: 'UNAUTHENTICATED' });
    t.notMatch(res.body, /http_request_duration_seconds/);
  }
  const res = await app.inject({ url: '/metrics', headers: { authorization: `Bearer ${TOKEN}` } });
  t.equal(res.statusCode, 200);
  t.match(res.body, /http_request_duration_seconds/);

  const plain = await app.inject('/health/database');
  t.same(plain.json(), { status: 'ok' });
  const wrong = await app.inject({
    url: '/health/database',
    headers: { authorization: `Bearer ${TOKEN}x` },
  });
  t.same(wrong.json(), { status: 'ok' });
  const detail = await app.inject({ url: '/health/database', headers: { authorization: `bearer ${TOKEN}` } });
  t.match(detail.json(), {
    status: 'ok',
    server_version: String,
    pool: { max: Number },
    migrations: { pending: 0 },
  });
  t.notMatch(JSON.stringify((await app.inject('/docs/json')).json().paths), /"\/metrics"/, 'not documented');
});

t.test('the metrics listener is on 127.0.0.1 by default and honours the token', async (t) => {
  const config = loadConfig({});
  t.equal(config.METRICS_HOST, '127.0.0.1');
  t.equal(config.METRICS_PORT, 0, 'off unless asked for');
  t.throws(() => loadConfig({ METRICS_TOKEN: 'short' }), { message: /METRICS_TOKEN=\(hidden\)/ });

  const { ctx, repos } = await testApp(t);
  const server = await startMetricsServer({
    host: config.METRICS_HOST,
    port: 0,
    metrics: ctx.metrics,
    repos,
    log: testLogger(),
    token: TOKEN,
    pool: true,
  });
  t.teardown(() => server.close());
  const address = server.server.address() as { address: string; port: number };
  t.equal(address.address, '127.0.0.1');
  const base = `http://127.0.0.1:${address.port}`;
  t.equal((await fetch(`${base}/metrics`)).status, 401);
  const res = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
  t.equal(res.status, 200);
  t.match(await res.text(), /db_pool_connections\{state="total"\} \d+/);
  t.equal((await fetch(`${base}/health`)).status, 200);
});

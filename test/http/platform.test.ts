/**
 * What every route shares: liveness and readiness (also with the database gone or
 * frozen), the OpenAPI document, Prometheus metrics, problem+json for Fastify's own
 * errors and for bugs, request ids, secrets kept out of logs, and helmet's headers.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import type { Logger } from 'pino';
import t, { type Test } from 'tap';
import { compose } from '../../src/compose.ts';
import { loadConfig } from '../../src/config.ts';
import { createPool, poolOptionsFrom, type Sql } from '../../src/db/client.ts';
import { freePort } from '../../src/db/embedded.ts';
import { migrationNames } from '../../src/db/migrate.ts';
import { build } from '../../src/http/app.ts';
import { Metrics } from '../../src/metrics.ts';
import { newToken } from '../../src/services/tokens.ts';
import { signUp, signUpAdmin, testApp } from '../helpers/app.ts';
import { testDatabase, testLogger } from '../helpers/db.ts';
import { captureLogger } from '../helpers/log-capture.ts';

/** METRICS_TOKEN of the apps that show metrics and readiness detail. */
const METRICS_TOKEN = 'metrics-token-for-the-platform-test';
const MONITOR = { authorization: `Bearer ${METRICS_TOKEN}` };

/** DB_QUERY_TIMEOUT_MS of the apps over a dead or frozen database. */
const QUERY_TIMEOUT_MS = 500;

/**
 * The app over a pool of its own (`url`), or over `sql`, with `logger`: what
 * test/helpers/app.ts builds, for the cases it cannot (a database that is down,
 * a logger the test reads, a route added before the first request).
 */
async function appOver(
  t: Test,
  where: { url: string } | { sql: Sql },
  options: { logger?: Logger; env?: Record<string, string> } = {},
): Promise<FastifyInstance> {
  const storageDir = await mkdtemp(path.join(tmpdir(), 'dollarclub-platform-'));
  t.teardown(() => rm(storageDir, { recursive: true, force: true }));
  const config = loadConfig({
    NODE_ENV: 'test',
    STORAGE_DIR: storageDir,
    AUTH_RATE_LIMIT_MAX: '100000',
    MAX_EVENT_LOOP_DELAY_MS: '0',
    DB_QUERY_TIMEOUT_MS: String(QUERY_TIMEOUT_MS),
    DB_CONNECT_TIMEOUT_SECONDS: '1',
    ...options.env,
  });
  const log = options.logger ?? testLogger();
  let sql: Sql;
  if ('sql' in where) sql = where.sql;
  else {
    sql = createPool(poolOptionsFrom(config, where.url, `dollarclub-platform-${process.pid}`), log);
    t.teardown(() => sql.end({ timeout: 1 }));
  }
  const composition = compose({
    config,
    sql,
    log,
    metrics: new Metrics({ defaultMetrics: false }),
    migrations: await migrationNames(),
  });
  const app = await build({ ctx: composition.ctx, logger: log, activity: composition.activity });
  t.teardown(() => app.close());
  return app;
}

/** A TCP server that accepts connections and never says a word: a frozen database. */
async function frozenServer(t: Test): Promise<number> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

function isProblem(t: Test, res: LightMyRequestResponse, status: number, code: string): void {
  t.equal(res.statusCode, status, `answered ${status}`);
  t.match(res.headers['content-type'], /^application\/problem\+json/, 'as problem+json');
  const body = res.json();
  t.match(body, { type: String, title: String, status, detail: String, code }, `a ${code} problem`);
}

// ---------------------------------------------------------------------------
// Health

t.test('GET /health answers 200 {status: ok} without a database call', async (t) => {
  const app = await appOver(t, { url: `postgres://postgres@127.0.0.1:${await freePort()}/nowhere` });
  const res = await app.inject('/health');
  t.equal(res.statusCode, 200);
  t.same(res.json(), { status: 'ok' });
});

t.test(
  'GET /health/database reports latency, version, pool and migrations to the metrics token',
  async (t) => {
    const { app, config } = await testApp(t, { METRICS_TOKEN });
    const last = (await migrationNames()).at(-1)!;
    const res = await app.inject({ url: '/health/database', headers: MONITOR });
    t.equal(res.statusCode, 200);
    const body = res.json();
    t.match(body, {
      status: 'ok',
      latency_ms: Number,
      server_version: /^\d+(\.\d+)?/,
      pool: { size: Number, idle: Number, waiting: 0, max: config.DB_POOL_MAX },
      migrations: { current: last, pending: 0 },
    });
    t.ok(body.latency_ms >= 0, 'latency is a duration');
    t.ok(
      body.pool.size >= 1 && body.pool.size <= config.DB_POOL_MAX,
      'the pool holds at least the connection it used',
    );
    t.ok(body.pool.idle >= 0 && body.pool.idle <= body.pool.size, 'idle connections are some of the pool');
  },
);

t.test('with nothing listening where the database should be', async (t) => {
  const app = await appOver(t, { url: `postgres://postgres@127.0.0.1:${await freePort()}/nowhere` });

  await t.test('readiness answers 503 {status: unavailable}', async (t) => {
    const res = await app.inject('/health/database');
    t.equal(res.statusCode, 503);
    t.match(res.json(), { status: 'unavailable' });
  });

  await t.test('a route that needs the database answers 503 DATABASE_UNAVAILABLE', async (t) => {
    const res = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      payload: { email: 'someone@example.com', password: 'whatever it is' },
    });
    isProblem(t, res, 503, 'DATABASE_UNAVAILABLE');
  });

  await t.test('liveness still answers 200', async (t) => {
    t.equal((await app.inject('/health')).statusCode, 200);
  });
});

t.test('with a database that accepts connections and never answers', async (t) => {
  const port = await frozenServer(t);
  const app = await appOver(t, { url: `postgres://postgres@127.0.0.1:${port}/frozen` });
  await app.inject('/health'); // the app is built and accepting before anything is timed

  await t.test('readiness answers 503 within the 2 s the contract allows (2.5 s with margin)', async (t) => {
    const start = performance.now();
    const res = await app.inject('/health/database');
    const ms = performance.now() - start;
    t.equal(res.statusCode, 503);
    t.match(res.json(), { status: 'unavailable' });
    t.ok(ms < 2500, `answered in ${Math.round(ms)} ms`);
  });

  const routes: InjectOptions[] = [
    {
      method: 'POST',
      url: '/api/v1/auth/login',
      payload: { email: 'someone@example.com', password: 'whatever it is' },
    },
    { method: 'GET', url: '/api/v1/me', headers: { authorization: `Bearer ${newToken()}` } },
    { method: 'GET', url: '/api/v1/scripts', headers: { authorization: `Bearer ${newToken()}` } },
  ];
  for (const route of routes) {
    await t.test(`${route.method} ${route.url} fails fast with 503 DATABASE_UNAVAILABLE`, async (t) => {
      const start = performance.now();
      const res = await app.inject(route);
      const ms = performance.now() - start;
      isProblem(t, res, 503, 'DATABASE_UNAVAILABLE');
      t.equal(res.headers['retry-after'], '5', 'with Retry-After');
      t.ok(ms < 2500, `answered in ${Math.round(ms)} ms (query timeout ${QUERY_TIMEOUT_MS} ms)`);
    });
  }
});

t.test('readiness keeps its 2 s bound even when queries may wait far longer', async (t) => {
  const port = await frozenServer(t);
  const app = await appOver(
    t,
    { url: `postgres://postgres@127.0.0.1:${port}/frozen` },
    { env: { DB_QUERY_TIMEOUT_MS: '30000', DB_CONNECT_TIMEOUT_SECONDS: '30' } },
  );
  await app.inject('/health');
  const start = performance.now();
  const res = await app.inject('/health/database');
  const ms = performance.now() - start;
  t.equal(res.statusCode, 503);
  t.match(res.json(), { status: 'unavailable' });
  t.ok(ms < 2500, `answered in ${Math.round(ms)} ms`);
});

// ---------------------------------------------------------------------------
// Docs

/** API.md's routes other than the runs (test/http/runs.test.ts) and schedules (schedules.test.ts). */
const DOCUMENTED: Array<[string, string]> = [
  ['post', '/api/v1/auth/register'],
  ['post', '/api/v1/auth/login'],
  ['post', '/api/v1/auth/logout'],
  ['post', '/api/v1/auth/google'],
  ['patch', '/api/v1/scripts/{id}'],
  ['get', '/api/v1/auth/providers'],
  ['get', '/api/v1/me'],
  ['patch', '/api/v1/me'],
  ['put', '/api/v1/me/ibkr'],
  ['delete', '/api/v1/me/ibkr'],
  ['get', '/api/v1/users'],
  ['get', '/api/v1/users/search'],
  ['get', '/api/v1/users/{id}'],
  ['patch', '/api/v1/users/{id}'],
  ['delete', '/api/v1/users/{id}'],
  ['post', '/api/v1/scripts'],
  ['get', '/api/v1/scripts'],
  ['get', '/api/v1/scripts/recent'],
  ['get', '/api/v1/scripts/{id}'],
  ['get', '/api/v1/scripts/{id}/content'],
  ['delete', '/api/v1/scripts/{id}'],
  ['get', '/api/v1/stats/scripts'],
  ['get', '/api/v1/stats/scripts/by-status'],
  ['get', '/api/v1/stats/scripts/performance'],
  ['get', '/api/v1/stats/users'],
  ['get', '/api/v1/stats/users/by-provider'],
  ['get', '/api/v1/stats/users/top'],
  ['get', '/api/v1/stats/users/script-counts'],
];

type Json = Record<string, unknown>;
interface OpenApi {
  openapi: string;
  paths: Record<string, Record<string, Json & { security?: unknown; responses?: Record<string, Json> }>>;
  components: { schemas: Record<string, Json>; securitySchemes?: Record<string, Json> };
}

/**
 * Every property name a response can carry, with the component it belongs to:
 * `$ref`s into components.schemas are followed (once each).
 */
function responseProperties(doc: OpenApi, schema: unknown, owner: string, seen = new Set<string>()) {
  const found: Array<{ owner: string; name: string }> = [];
  const walk = (node: unknown, owner: string): void => {
    if (Array.isArray(node)) {
      for (const item of node) walk(item, owner);
      return;
    }
    if (node === null || typeof node !== 'object') return;
    const object = node as Json;
    if (typeof object.$ref === 'string') {
      const name = object.$ref.replace(/^#\/components\/schemas\//, '');
      if (!seen.has(name)) {
        seen.add(name);
        walk(doc.components.schemas[name], name);
      }
    }
    if (object.properties !== null && typeof object.properties === 'object')
      for (const name of Object.keys(object.properties)) found.push({ owner, name });
    for (const [key, value] of Object.entries(object)) if (key !== '$ref') walk(value, owner);
  };
  walk(schema, owner);
  return found;
}

t.test('GET /docs serves Swagger UI, GET /docs/json the OpenAPI document', async (t) => {
  const { app } = await testApp(t);

  await t.test('/docs is an HTML page', async (t) => {
    const res = await app.inject('/docs');
    t.equal(res.statusCode, 200);
    t.match(res.headers['content-type'], /^text\/html/);
    t.match(res.body, /<html/i);
  });

  const res = await app.inject('/docs/json');
  t.equal(res.statusCode, 200);
  const doc = res.json<OpenApi>();
  const text = res.body;

  await t.test('OpenAPI 3 with every implemented route of API.md', async (t) => {
    t.match(doc.openapi, /^3\./);
    for (const [method, route] of DOCUMENTED)
      t.ok(doc.paths[route]?.[method], `${method.toUpperCase()} ${route}`);
  });

  await t.test('named components, no def-N references', async (t) => {
    for (const name of ['User', 'Script', 'Problem'])
      t.ok(doc.components.schemas[name], `components.schemas.${name}`);
    t.notMatch(text, /def-\d/, 'no def-N anywhere');
    for (const [, ref] of text.matchAll(/"\$ref":"([^"]*)"/g))
      t.ok(
        ref!.startsWith('#/components/schemas/') &&
          doc.components.schemas[ref!.split('/').pop()!] !== undefined,
        `${ref} resolves`,
      );
  });

  await t.test('routes that answer other than JSON document their content types', async (t) => {
    const mediaOf = (route: string) =>
      Object.keys(
        (doc.paths[route]?.get?.responses?.['200'] as { content?: object } | undefined)?.content ?? {},
      );
    t.same(mediaOf('/api/v1/scripts/{id}/logs'), ['text/plain', 'text/event-stream']);
    t.same(mediaOf('/api/v1/scripts/{id}/content'), ['application/octet-stream']);
    t.same(mediaOf('/api/v1/scripts/{id}'), ['application/json']);
  });

  await t.test('every route behind a token declares bearerAuth and the session cookie', async (t) => {
    t.match(doc.components.securitySchemes, {
      bearerAuth: { type: 'http', scheme: 'bearer' },
      cookieAuth: { type: 'apiKey', in: 'cookie', name: 'dc_session' },
    });
    const open = new Set([
      'post /api/v1/auth/register',
      'post /api/v1/auth/login',
      'post /api/v1/auth/google',
      'get /api/v1/auth/providers',
    ]);
    for (const [route, operations] of Object.entries(doc.paths)) {
      if (!route.startsWith('/api/v1/')) continue;
      for (const [method, operation] of Object.entries(operations)) {
        const name = `${method} ${route}`;
        if (open.has(name)) t.same(operation.security, [], `${name} is open, and says so`);
        else {
          t.same(operation.security, [{ bearerAuth: [] }, { cookieAuth: [] }], `${name} needs a token`);
          t.ok(operation.responses?.['401'], `${name} declares 401`);
        }
      }
    }
  });

  await t.test('every operation has its own operationId', async (t) => {
    const ids = Object.values(doc.paths).flatMap((operations) =>
      Object.values(operations).map((operation) => (operation as { operationId?: string }).operationId),
    );
    t.ok(ids.length > 20, `${ids.length} operations`);
    t.ok(
      ids.every((id) => typeof id === 'string' && /^[a-z]+[A-Za-z0-9]*$/.test(id)),
      'each a camelCase name',
    );
    t.equal(new Set(ids).size, ids.length, 'no two alike');
  });

  await t.test(
    'no response exposes hashed_password, file_path or a token (but Session.token/csrf_token)',
    async (t) => {
      let checked = 0;
      for (const [route, operations] of Object.entries(doc.paths)) {
        for (const [method, operation] of Object.entries(operations)) {
          for (const { owner, name } of responseProperties(doc, operation.responses, `${method} ${route}`)) {
            checked++;
            if (['hashed_password', 'file_path'].includes(name) || /token/i.test(name))
              t.ok(
                owner === 'Session' && (name === 'token' || name === 'csrf_token'),
                `${owner}.${name} is not exposed`,
              );
          }
        }
      }
      t.ok(checked > 100, `${checked} response properties looked at`);
      t.match(doc.components.schemas.Session, { properties: { token: {} } }, 'the session carries its token');
    },
  );
});

t.test('the OpenAPI document lists the failures every route may meet, as problems', async (t) => {
  const { app } = await testApp(t);
  const doc = (await app.inject('/docs/json')).json<OpenApi>();
  const problem = {
    description: String,
    content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } },
  };
  let operations = 0;
  for (const [route, byMethod] of Object.entries(doc.paths)) {
    for (const [method, operation] of Object.entries(byMethod)) {
      operations++;
      const responses = operation.responses ?? {};
      const name = `${method.toUpperCase()} ${route}`;
      t.match(responses['500'], problem, `${name} declares 500`);
      // Readiness answers its own 503 body ({status: unavailable}); everything else a problem.
      if (route === '/health/database') t.match(responses['503'], { content: {} }, `${name} declares 503`);
      else t.match(responses['503'], problem, `${name} declares 503`);
      if (['post', 'put', 'patch', 'delete'].includes(method))
        for (const status of ['400', '413', '415'])
          t.ok(responses[status], `${name} reads a body, so declares ${status}`);
      for (const [status, response] of Object.entries(responses))
        if (status.startsWith('4')) t.match(response, problem, `${name} ${status} is a problem`);
    }
  }
  t.ok(operations >= 30, `${operations} operations checked`);
});

t.test('a route without a body still answers 415 and 413 as problems, as documented', async (t) => {
  const { app } = await testApp(t);
  const account = await signUp(app);
  const url = '/api/v1/auth/logout';
  const xml = await app.inject({
    method: 'POST',
    url,
    headers: { ...account.headers, 'content-type': 'application/xml' },
    payload: '<hello/>',
  });
  isProblem(t, xml, 415, 'UNSUPPORTED_MEDIA_TYPE');
  const big = await app.inject({
    method: 'POST',
    url,
    headers: { ...account.headers, 'content-type': 'application/json' },
    payload: JSON.stringify({ pad: 'x'.repeat(2 * 1024 * 1024) }),
  });
  isProblem(t, big, 413, 'PAYLOAD_TOO_LARGE');
  const bad = await app.inject({
    method: 'POST',
    url,
    headers: { ...account.headers, 'content-type': 'application/json' },
    payload: '{not json',
  });
  isProblem(t, bad, 400, 'BAD_REQUEST');
  t.equal(
    (await app.inject({ url: '/api/v1/me', headers: account.headers })).statusCode,
    200,
    'still signed in',
  );
});

// ---------------------------------------------------------------------------
// Load shedding

/** Waits (up to 10 s) for the app's next pressure sample to find it over its limit. */
async function underPressure(app: FastifyInstance): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!app.isUnderPressure() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}

t.test(
  'a freshly started app does not shed load while its busy start-up is still being measured',
  async (t) => {
    // The first sample window after start-up measures the start (schemas, routes): shedding on it
    // refused a new process's first requests. Within the warm-up the API answers though the
    // utilisation is over the limit.
    const { app } = await testApp(
      t,
      { MAX_EVENT_LOOP_UTILIZATION: '0.000001' },
      { sheddingWarmUpMs: 3_600_000 },
    );
    const account = await signUp(app);
    await underPressure(app);
    t.ok(app.isUnderPressure(), 'the utilisation is over the limit');
    const me = await app.inject({ url: '/api/v1/me', headers: account.headers });
    t.equal(me.statusCode, 200, 'and the request is answered, not shed');
    // Readiness has its own answer under load; it waits out the start-up too.
    const ready = await app.inject('/health/database');
    t.equal(ready.statusCode, 200, 'and the instance is ready');
  },
);

t.test(
  'an event loop that stays late sheds load (by default: its delay), and stops once it is on time',
  async (t) => {
    const { app } = await testApp(t, { MAX_EVENT_LOOP_DELAY_MS: '200' }, { sheddingWarmUpMs: 0 });
    const account = await signUp(app);
    // The set-up (schemas compiled, a slow machine) may itself have stalled the loop for a window.
    const deadline = Date.now() + 20_000;
    while (app.isUnderPressure() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    t.equal(
      (await app.inject({ url: '/api/v1/me', headers: account.headers })).statusCode,
      200,
      'served while the loop is on time',
    );

    // Work queued faster than it is done: each turn of the loop takes 400 ms, so every delay
    // sample of a window is late (one stall alone is not an overload: a window's mean is taken
    // over all its samples, most of them on time).
    while (!app.isUnderPressure() && Date.now() < deadline) {
      const busyUntil = performance.now() + 400;
      while (performance.now() < busyUntil) {
        // busy
      }
      await new Promise((r) => setImmediate(r));
    }
    t.ok(app.isUnderPressure(), 'a sample finds the loop late');
    isProblem(t, await app.inject({ url: '/api/v1/me', headers: account.headers }), 503, 'SERVER_OVERLOADED');

    let status = 0;
    while (status !== 200 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      status = (await app.inject({ url: '/api/v1/me', headers: account.headers })).statusCode;
    }
    t.equal(status, 200, 'a window later, with the loop on time again, requests are served');
  },
);

t.test('under pressure the API answers 503, but /health and /metrics still answer 200', async (t) => {
  // Any utilisation at all is "too busy": the first sample (after a second) turns shedding on,
  // with no warm-up after start (see the test before).
  const { app, ctx, repos } = await testApp(
    t,
    { MAX_EVENT_LOOP_UTILIZATION: '0.000001', METRICS_TOKEN },
    { sheddingWarmUpMs: 0 },
  );
  const account = await signUp(app);
  await underPressure(app);
  t.ok(app.isUnderPressure(), 'the app is under pressure');

  const shed = await app.inject({ url: '/api/v1/me', headers: account.headers });
  isProblem(t, shed, 503, 'SERVER_OVERLOADED');
  t.equal(shed.headers['retry-after'], '5');
  // A shed request is answered and ends there: its handler never runs.
  const rename = await app.inject({
    method: 'PATCH',
    url: '/api/v1/me',
    headers: account.headers,
    payload: { username: 'renamed_under_load' },
  });
  isProblem(t, rename, 503, 'SERVER_OVERLOADED');
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.equal(
    (await repos.users.getById(account.user.id)).username,
    account.user.username,
    'the shed change was not made',
  );

  const live = await app.inject('/health');
  t.equal(live.statusCode, 200, 'liveness answers');
  t.same(live.json(), { status: 'ok' });
  const metrics = await app.inject({ url: '/metrics', headers: MONITOR });
  t.equal(metrics.statusCode, 200, 'metrics answer');
  t.match(metrics.body, /http_request_duration_seconds/);

  const statusQueries = async () =>
    (await ctx.metrics.queryDuration.get()).values.find(
      (v) => v.metricName === 'db_query_duration_seconds_count' && v.labels.query === 'system.status',
    )?.value ?? 0;
  const before = await statusQueries();
  const ready = await app.inject({ url: '/health/database', headers: MONITOR });
  t.equal(ready.statusCode, 503, 'readiness says not ready');
  t.same(ready.json(), { status: 'unavailable', detail: 'the server is overloaded' }, 'in its own form');
  t.equal(ready.headers['retry-after'], '5');
  const publicReady = await app.inject('/health/database');
  t.equal(publicReady.statusCode, 503);
  t.same(publicReady.json(), { status: 'unavailable' }, 'the public learns only that');
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.equal(await statusQueries(), before, 'and the database was not asked: the handler did not run');
});

t.test(
  'a request that arrives while the server closes is answered 503 as a problem, and its connection closed',
  async (t) => {
    const { app } = await testApp(t);
    let entered!: () => void;
    const inFlight = new Promise<void>((resolve) => {
      entered = resolve;
    });
    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    app.get('/test/held', async () => {
      entered();
      await released;
      return { finished: true };
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = app.server.address() as { port: number };
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = new Socket();
      s.once('error', reject);
      s.connect(port, '127.0.0.1', () => resolve(s));
    });
    let received = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => {
      received += chunk;
    });
    const ended = new Promise((resolve) => socket.once('close', resolve));
    socket.write('GET /test/held HTTP/1.1\r\nhost: x\r\n\r\n');
    await inFlight;
    const closed = app.close();
    await new Promise((resolve) => setTimeout(resolve, 100));
    // The connection is busy, so the close leaves it open: a second request still arrives.
    socket.write('GET /health HTTP/1.1\r\nhost: x\r\n\r\n');
    await new Promise((resolve) => setTimeout(resolve, 100));
    release();
    const timer = setTimeout(() => socket.destroy(), 10_000); // a connection kept open fails below
    await ended;
    clearTimeout(timer);
    await closed;
    const [first, second] = received.split(/(?=HTTP\/1\.1 )/);
    t.match(first, /^HTTP\/1\.1 200 /, 'the request in flight finished');
    t.match(first, /"finished":true/);
    t.match(second, /^HTTP\/1\.1 503 /, 'the one that came during the close was refused');
    t.match(second, /content-type: application\/problem\+json/i);
    t.match(second, /connection: close/i);
    t.match(second, /"code":"SERVICE_UNAVAILABLE"/);
    t.match(second, /shutting down/);
    t.match(second, /x-content-type-options: nosniff/i, 'with the security headers of every answer');
    t.match(second, /content-security-policy: default-src 'none'/i);
  },
);

// ---------------------------------------------------------------------------
// Metrics

t.test('GET /metrics exposes request and query durations by pattern, and the pool', async (t) => {
  const harness = await testApp(t, { METRICS_TOKEN });
  const { app } = harness;
  await app.inject('/health');
  const admin = await signUpAdmin(harness);
  const other = await signUp(app);
  t.equal((await app.inject({ url: '/api/v1/me', headers: admin.headers })).statusCode, 200);
  const byId = await app.inject({ url: `/api/v1/users/${other.user.id}`, headers: admin.headers });
  t.equal(byId.statusCode, 200);

  const res = await app.inject({ url: '/metrics', headers: MONITOR });
  t.equal(res.statusCode, 200);
  t.match(res.headers['content-type'], /^text\/plain/);
  const text = res.body;
  t.match(
    text,
    /^http_request_duration_seconds_count\{[^}]*route="\/api\/v1\/me"[^}]*\} [1-9]/m,
    'labelled /api/v1/me',
  );
  t.match(
    text,
    /^http_request_duration_seconds_count\{[^}]*route="\/api\/v1\/users\/:id"[^}]*\} [1-9]/m,
    'by pattern',
  );
  t.notMatch(text, new RegExp(`route="/api/v1/users/${other.user.id}"`), 'never the raw URL with its id');
  t.match(text, /^db_query_duration_seconds_count\{[^}]*\} [1-9]/m, 'query durations');
  t.match(text, /^db_pool_connections\{[^}]*\} \d+/m, 'pool connections');
});

// ---------------------------------------------------------------------------
// Errors

t.test('request errors are problems', async (t) => {
  const { app } = await testApp(t);
  await app.inject('/health');

  await t.test('invalid JSON answers 400', async (t) => {
    const res = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      headers: { 'content-type': 'application/json' },
      payload: '{"email": "a@b.c", "password": ',
    });
    isProblem(t, res, 400, 'BAD_REQUEST');
  });

  for (const payload of ['{"__proto__":{"x":1}}', '{"constructor":{"prototype":{"x":1}}}']) {
    await t.test(`prototype poisoning ${payload} answers 400`, async (t) => {
      const res = await app.inject({
        method: 'POST',
        url: '/api/v1/auth/login',
        headers: { 'content-type': 'application/json' },
        payload,
      });
      t.equal(res.statusCode, 400);
      t.match(res.headers['content-type'], /^application\/problem\+json/);
      t.match(res.json(), { status: 400, code: String, detail: String });
      t.equal(({} as Json).x, undefined, 'Object.prototype is clean');
    });
  }

  await t.test('an unknown route answers 404 NOT_FOUND', async (t) => {
    isProblem(t, await app.inject('/api/v1/nothing-here'), 404, 'NOT_FOUND');
    isProblem(t, await app.inject({ method: 'DELETE', url: '/health' }), 404, 'NOT_FOUND');
  });

  await t.test('a malformed URL answers 400 as a problem', async (t) => {
    isProblem(t, await app.inject('/api/v1/users/%E0%A4%A'), 400, 'BAD_REQUEST');
  });
});

t.test('an unexpected error answers a generic 500 and is logged with its request id', async (t) => {
  const { sql } = await testDatabase(t);
  const { log, lines } = captureLogger('info');
  const app = await appOver(t, { sql }, { logger: log });
  const secret = 'connection to /var/lib/secret.conf failed: password=hunter2';
  app.get('/boom', async () => {
    throw new Error(secret);
  });
  const res = await app.inject('/boom');
  isProblem(t, res, 500, 'INTERNAL');
  const body = res.json();
  t.match(body.detail, /something went wrong/, 'a generic detail');
  for (const leak of [secret, 'hunter2', '/var/lib', 'stack', 'Error:', '.ts:', 'node_modules'])
    t.notOk(res.body.includes(leak), `the body does not contain ${JSON.stringify(leak)}`);
  const requestId = res.headers['x-request-id'];
  t.ok(requestId, 'the answer carries its request id');
  const logged = lines.find((l) => l.level === 50 && l.request_id === requestId);
  t.ok(logged, 'an error line with the request id');
  t.match(logged, { err: { message: secret, stack: /Error/ } }, 'with the error and its stack');
});

t.test('x-request-id: a well-formed incoming id is kept, anything else replaced', async (t) => {
  const { app } = await testApp(t);
  const kept = await app.inject({ url: '/health', headers: { 'x-request-id': 'edge-proxy.42:abc_DEF' } });
  t.equal(kept.headers['x-request-id'], 'edge-proxy.42:abc_DEF');
  const problem = await app.inject({ url: '/nowhere', headers: { 'x-request-id': 'trace-7' } });
  t.equal(problem.headers['x-request-id'], 'trace-7', 'on error answers too');
  t.equal(problem.json().request_id, 'trace-7', 'and in the problem');
  const malformed = await app.inject({
    url: '/api/v1/users/%E0%A4%A',
    headers: { 'x-request-id': 'trace-8' },
  });
  t.equal(malformed.statusCode, 400);
  t.equal(malformed.headers['x-request-id'], 'trace-8', 'on a malformed URL, refused before any hook');
  t.equal(malformed.json().request_id, 'trace-8', 'and in its problem');
  for (const bad of ['has spaces', 'x'.repeat(65), '<script>', 'ü', '']) {
    const res = await app.inject({ url: '/health', headers: { 'x-request-id': bad } });
    const id = String(res.headers['x-request-id']);
    t.not(id, bad, `${JSON.stringify(bad.slice(0, 10))} is replaced`);
    t.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'by a UUID');
  }
  const fresh = await app.inject('/health');
  t.match(fresh.headers['x-request-id'], /^[0-9a-f-]{36}$/, 'one is made when none comes');
});

t.test('the Authorization header, tokens and passwords never reach the logs', async (t) => {
  const { sql } = await testDatabase(t);
  const { log, lines, text } = captureLogger('trace');
  const app = await appOver(t, { sql }, { logger: log });
  await app.inject('/health');
  const password = 'a very secret passphrase';
  const email = 'logs@example.com';
  const registered = await app.inject({
    method: 'POST',
    url: '/api/v1/auth/register',
    payload: { email, username: 'logs_person', password },
  });
  t.equal(registered.statusCode, 201);
  const { token } = registered.json();
  const login = await app.inject({
    method: 'POST',
    url: '/api/v1/auth/login',
    payload: { email, password },
  });
  t.equal(login.statusCode, 200);
  const second = login.json().token as string;
  const headers = { authorization: `Bearer ${token}` };
  t.equal((await app.inject({ url: '/api/v1/me', headers })).statusCode, 200);
  t.equal((await app.inject({ url: '/api/v1/users', headers })).statusCode, 403);
  const changed = await app.inject({
    method: 'PATCH',
    url: '/api/v1/me',
    headers,
    payload: { current_password: password, new_password: `${password} 2` },
  });
  t.equal(changed.statusCode, 200);
  t.equal(
    (await app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers })).statusCode,
    204,
    'logged out',
  );
  const refused = await app.inject({ url: '/api/v1/me', headers });
  t.equal(refused.statusCode, 401, 'the revoked token is refused');

  t.ok(lines.length > 20, `${lines.length} log lines written at trace`);
  t.ok(
    lines.some((l) => typeof l.msg === 'string' && /incoming request/.test(l.msg)),
    'requests themselves are logged',
  );
  const all = text();
  for (const [name, secret] of [
    ['the token', token],
    ['the second token', second],
    ['the password', password],
    ['the Authorization header', `Bearer ${token}`],
  ] as const)
    t.notOk(all.includes(secret), `${name} is in no log line`);
  t.notOk(/"authorization":"Bearer/i.test(all), 'no Authorization header value at all');
});

t.test('security headers are on every answer: the API set, and the documents set under /docs', async (t) => {
  const { app } = await testApp(t);
  const forDocuments = [
    'cross-origin-opener-policy',
    'origin-agent-cluster',
    'referrer-policy',
    'x-dns-prefetch-control',
    'x-download-options',
    'x-permitted-cross-domain-policies',
    'x-xss-protection',
  ];
  for (const url of ['/health', '/api/v1/me', '/nowhere', '/api/v1/users/%E0%A4%A']) {
    const res = await app.inject(url);
    t.equal(res.headers['x-content-type-options'], 'nosniff', `${url}: nosniff`);
    t.equal(
      res.headers['content-security-policy'],
      "default-src 'none';frame-ancestors 'none'",
      `${url}: a content security policy that allows nothing`,
    );
    t.equal(res.headers['x-frame-options'], 'DENY', `${url}: never framed`);
    t.match(res.headers['strict-transport-security'], /max-age=\d+/, `${url}: HSTS`);
    t.equal(res.headers['cross-origin-resource-policy'], 'same-origin', `${url}: CORP`);
    t.equal(res.headers['cache-control'], 'no-store', `${url}: never stored`);
    t.equal(res.headers['x-powered-by'], undefined, `${url}: no x-powered-by`);
    for (const name of forDocuments) t.equal(res.headers[name], undefined, `${url}: no ${name}`);
  }
  for (const url of ['/docs', '/docs/', '/docs/json', '/%64ocs/']) {
    const res = await app.inject(url);
    t.ok(res.statusCode < 400, `${url}: served (${res.statusCode})`);
    t.match(res.headers['content-security-policy'], /^default-src 'self'/, `${url}: the documents' policy`);
    t.equal(res.headers['x-frame-options'], 'SAMEORIGIN', `${url}: framed by its own origin only`);
    t.equal(res.headers['x-content-type-options'], 'nosniff', `${url}: nosniff`);
    t.equal(res.headers['cache-control'], undefined, `${url}: may be cached`);
    for (const name of forDocuments) t.ok(res.headers[name], `${url}: ${name}`);
  }
});

/** The schedule routes: create, list, read, change, delete; their errors and scoping. */
import type { LightMyRequestResponse } from 'fastify';
import t, { type Test } from 'tap';
import { type Account, signUp, signUpAdmin, type TestApp, testApp } from '../helpers/app.ts';
import { upload } from '../helpers/executor.ts';

function isProblem(t: Test, res: LightMyRequestResponse, status: number, code: string, path?: string) {
  t.equal(res.statusCode, status, `${res.statusCode} ${res.body}`);
  t.match(res.headers['content-type'], /^application\/problem\+json/);
  const body = res.json();
  t.match(body, { status, code });
  if (path !== undefined) t.equal(body.errors?.[0]?.path, path, `names ${path}`);
  return body;
}

async function world(t: Test) {
  const ta = await testApp(t);
  const alice = await signUp(ta.app);
  const bob = await signUp(ta.app);
  const admin = await signUpAdmin(ta);
  const script = await upload(ta, alice, 'strategy.py', 'print(1)\n');
  return { ta, alice, bob, admin, script };
}

const call = (ta: TestApp, account: Account, method: string, url: string, payload?: object) =>
  ta.app.inject({
    method: method as 'GET',
    url: `/api/v1${url}`,
    headers: account.headers,
    ...(payload ? { payload } : {}),
  });

const MARKET = { cron: '30 9 * * 1-5', timezone: 'America/New_York' };

// Many databases and requests: more than tap's 120 s per file on a loaded 2-core machine.
t.setTimeout(300_000);

t.test('POST /scripts/:id/schedules creates a schedule with its next occurrence', async (t) => {
  const { ta, alice, script } = await world(t);
  const before = Date.now();
  const res = await call(ta, alice, 'POST', `/scripts/${script}/schedules`, {
    ...MARKET,
    cron: ' 30  9 * * 1-5 ',
  });
  t.equal(res.statusCode, 201, res.body);
  const schedule = res.json();
  t.match(schedule, {
    script_id: script,
    user_id: alice.user.id,
    cron: '30 9 * * 1-5',
    timezone: 'America/New_York',
    enabled: true,
    last_run_id: null,
    last_fired_at: null,
    last_skipped_at: null,
    skipped_count: 0,
  });
  t.equal(res.headers.location, `/api/v1/schedules/${schedule.id}`);
  const next = new Date(schedule.next_run_at);
  t.ok(next.getTime() > before, 'next_run_at is in the future');
  t.ok(next.getTime() - before <= 4 * 86_400_000, 'within the next weekday or so');
  t.ok([13, 14].includes(next.getUTCHours()) && next.getUTCMinutes() === 30, '9:30 New York in UTC');

  const disabled = await call(ta, alice, 'POST', `/scripts/${script}/schedules`, {
    ...MARKET,
    enabled: false,
  });
  t.equal(disabled.statusCode, 201);
  t.match(disabled.json(), { enabled: false, next_run_at: null });
});

t.test('bad input: 400 VALIDATION_FAILED naming the field', async (t) => {
  const { ta, alice, script } = await world(t);
  const url = `/scripts/${script}/schedules`;
  const cases: Array<[object, string]> = [
    [{ ...MARKET, cron: '0 30 9 * * 1-5' }, '/cron'],
    [{ ...MARKET, cron: '* * * *' }, '/cron'],
    [{ ...MARKET, cron: '' }, '/cron'],
    [{ ...MARKET, cron: '99 * * * *' }, '/cron'],
    [{ ...MARKET, cron: '0 0 30 2 *' }, '/cron'],
    [{ ...MARKET, cron: 'x'.repeat(201) }, '/cron'],
    [{ ...MARKET, cron: 5 }, '/cron'],
    [{ ...MARKET, timezone: 'Mars/Olympus' }, '/timezone'],
    [{ ...MARKET, timezone: '+05:00' }, '/timezone'],
    [{ ...MARKET, timezone: '' }, '/timezone'],
    [{ cron: '* * * * *' }, '/timezone'],
    [{ timezone: 'UTC' }, '/cron'],
    [{ ...MARKET, enabled: 'yes' }, '/enabled'],
    [{ ...MARKET, user_id: 1 }, '/user_id'],
  ];
  for (const [payload, path] of cases) {
    const res = await call(ta, alice, 'POST', url, payload);
    isProblem(t, res, 400, 'VALIDATION_FAILED');
    t.match(JSON.stringify(res.json().errors), path.slice(1), `${JSON.stringify(payload)} names ${path}`);
  }
  const six = (await call(ta, alice, 'POST', url, { ...MARKET, cron: '0 30 9 * * 1-5' })).json();
  t.match(six.errors[0], { path: '/cron', message: /seconds/ });
  isProblem(t, await call(ta, alice, 'POST', '/scripts/0/schedules', MARKET), 400, 'VALIDATION_FAILED');
  t.same(
    (await call(ta, alice, 'GET', `/scripts/${script}/schedules`)).json(),
    { schedules: [] },
    'none made',
  );
});

t.test('10 schedules per script; the 11th is 409 TOO_MANY_SCHEDULES', async (t) => {
  const { ta, alice, script } = await world(t);
  for (let i = 0; i < 10; i++) {
    const res = await call(ta, alice, 'POST', `/scripts/${script}/schedules`, {
      cron: `${i} * * * *`,
      timezone: 'UTC',
    });
    t.equal(res.statusCode, 201);
  }
  isProblem(
    t,
    await call(ta, alice, 'POST', `/scripts/${script}/schedules`, MARKET),
    409,
    'TOO_MANY_SCHEDULES',
  );
  const list = (await call(ta, alice, 'GET', `/scripts/${script}/schedules`)).json();
  t.same(
    list.schedules.map((s: { cron: string }) => s.cron),
    Array.from({ length: 10 }, (_, i) => `${i} * * * *`),
    'oldest first',
  );
});

t.test('scoping: someone else’s script or schedule is a 404; an admin reaches all', async (t) => {
  const { ta, alice, bob, admin, script } = await world(t);
  const made = (await call(ta, alice, 'POST', `/scripts/${script}/schedules`, MARKET)).json();
  const missing = 9_999_999;
  const attempts: Array<[string, string, object?]> = [
    ['POST', `/scripts/${script}/schedules`, MARKET],
    ['GET', `/scripts/${script}/schedules`],
    ['GET', `/schedules/${made.id}`],
    ['PATCH', `/schedules/${made.id}`, { enabled: false }],
    ['DELETE', `/schedules/${made.id}`],
  ];
  for (const [method, url, payload] of attempts) {
    const res = await call(ta, bob, method, url, payload);
    const body = isProblem(t, res, 404, 'NOT_FOUND');
    const none = (
      await call(
        ta,
        bob,
        method,
        url.replace(String(made.id), String(missing)).replace(String(script), String(missing)),
        payload,
      )
    ).json();
    t.same(
      { ...body, request_id: undefined },
      { ...none, request_id: undefined },
      `${method} ${url}: like a missing id`,
    );
  }
  t.same((await call(ta, alice, 'GET', `/schedules/${made.id}`)).json(), made, 'unchanged');
  t.same(
    (await call(ta, bob, 'GET', '/schedules')).json(),
    { schedules: [], next_cursor: null },
    'B lists none',
  );

  t.equal((await call(ta, admin, 'GET', `/schedules/${made.id}`)).statusCode, 200);
  const byAdmin = await call(ta, admin, 'POST', `/scripts/${script}/schedules`, {
    cron: '0 16 * * 1-5',
    timezone: 'America/New_York',
  });
  t.equal(byAdmin.statusCode, 201);
  t.equal(byAdmin.json().user_id, alice.user.id, 'an admin’s schedule on A’s script is A’s');
  const unauthenticated = await ta.app.inject({ method: 'GET', url: '/api/v1/schedules' });
  isProblem(t, unauthenticated, 401, 'UNAUTHENTICATED');
});

t.test('GET /schedules: own, newest first, cursor pages; all=true for admins only', async (t) => {
  const { ta, alice, bob, admin, script } = await world(t);
  const ids: number[] = [];
  for (let i = 0; i < 5; i++)
    ids.push(
      (
        await call(ta, alice, 'POST', `/scripts/${script}/schedules`, {
          cron: `${i} 12 * * *`,
          timezone: 'UTC',
        })
      ).json().id,
    );
  const bobScript = await upload(ta, bob, 'b.py', 'print(2)\n');
  await call(ta, bob, 'POST', `/scripts/${bobScript}/schedules`, MARKET);

  const seen: number[] = [];
  let cursor = '';
  for (let pages = 0; pages < 10; pages++) {
    const res = await call(ta, alice, 'GET', `/schedules?per_page=2&cursor=${cursor}`);
    t.equal(res.statusCode, 200);
    const page = res.json();
    seen.push(...page.schedules.map((s: { id: number }) => s.id));
    if (page.next_cursor === null) break;
    cursor = page.next_cursor;
  }
  t.same(seen, [...ids].reverse());
  t.equal(
    (await call(ta, alice, 'GET', '/schedules')).json().schedules.length,
    5,
    'no cursor: the first page',
  );
  isProblem(t, await call(ta, alice, 'GET', '/schedules?cursor=nonsense!'), 400, 'INVALID_CURSOR');
  isProblem(t, await call(ta, alice, 'GET', '/schedules?cursor=WzFd0'), 400, 'INVALID_CURSOR');
  isProblem(t, await call(ta, alice, 'GET', '/schedules?per_page=0'), 400, 'VALIDATION_FAILED');
  isProblem(t, await call(ta, alice, 'GET', '/schedules?all=true'), 403, 'FORBIDDEN');
  t.equal((await call(ta, alice, 'GET', '/schedules?all=false')).json().schedules.length, 5);
  t.equal((await call(ta, admin, 'GET', '/schedules?all=true')).json().schedules.length, 6, 'everyone’s');
  t.equal((await call(ta, admin, 'GET', '/schedules')).json().schedules.length, 0, 'an admin’s own');
});

t.test('PATCH recomputes next_run_at; DELETE removes', async (t) => {
  const { ta, alice, script } = await world(t);
  const made = (await call(ta, alice, 'POST', `/scripts/${script}/schedules`, MARKET)).json();

  const tokyo = await call(ta, alice, 'PATCH', `/schedules/${made.id}`, { timezone: 'Asia/Tokyo' });
  t.equal(tokyo.statusCode, 200, tokyo.body);
  const next = new Date(tokyo.json().next_run_at);
  t.same([next.getUTCHours(), next.getUTCMinutes()], [0, 30], '9:30 in Tokyo is 00:30 UTC');
  t.equal(tokyo.json().cron, MARKET.cron, 'the cron is kept');

  const off = (await call(ta, alice, 'PATCH', `/schedules/${made.id}`, { enabled: false })).json();
  t.match(off, { enabled: false, next_run_at: null, timezone: 'Asia/Tokyo' });
  const on = (
    await call(ta, alice, 'PATCH', `/schedules/${made.id}`, { enabled: true, cron: '0 * * * *' })
  ).json();
  t.match(on, { enabled: true, cron: '0 * * * *' });
  t.equal(new Date(on.next_run_at).getUTCMinutes(), 0);
  t.ok(new Date(on.next_run_at).getTime() - Date.now() <= 3_600_000, 'within the hour');

  isProblem(
    t,
    await call(ta, alice, 'PATCH', `/schedules/${made.id}`, { timezone: 'Nowhere' }),
    400,
    'VALIDATION_FAILED',
    '/timezone',
  );
  isProblem(
    t,
    await call(ta, alice, 'PATCH', `/schedules/${made.id}`, { cron: '* * * * * *' }),
    400,
    'VALIDATION_FAILED',
    '/cron',
  );
  isProblem(
    t,
    await call(ta, alice, 'PATCH', `/schedules/${made.id}`, { next_run_at: '2030-01-01T00:00:00Z' }),
    400,
    'VALIDATION_FAILED',
  );
  isProblem(
    t,
    await call(ta, alice, 'PATCH', `/schedules/${made.id}`, { skipped_count: 0 }),
    400,
    'VALIDATION_FAILED',
  );
  t.match(
    (await call(ta, alice, 'GET', `/schedules/${made.id}`)).json(),
    { cron: '0 * * * *', enabled: true },
    'unchanged by the refusals',
  );

  const deleted = await call(ta, alice, 'DELETE', `/schedules/${made.id}`);
  t.equal(deleted.statusCode, 204);
  isProblem(t, await call(ta, alice, 'GET', `/schedules/${made.id}`), 404, 'NOT_FOUND');
  isProblem(t, await call(ta, alice, 'DELETE', `/schedules/${made.id}`), 404, 'NOT_FOUND');
});

t.test('deleting the script deletes its schedules', async (t) => {
  const { ta, alice, script } = await world(t);
  const made = (await call(ta, alice, 'POST', `/scripts/${script}/schedules`, MARKET)).json();
  t.equal((await call(ta, alice, 'DELETE', `/scripts/${script}`)).statusCode, 204);
  isProblem(t, await call(ta, alice, 'GET', `/schedules/${made.id}`), 404, 'NOT_FOUND');
});

t.test('the OpenAPI document describes the schedule routes and the Schedule resource', async (t) => {
  const { ta } = await world(t);
  const doc = (await ta.app.inject('/docs/json')).json();
  for (const [path, methods] of Object.entries({
    '/api/v1/scripts/{id}/schedules': ['get', 'post'],
    '/api/v1/schedules': ['get'],
    '/api/v1/schedules/{id}': ['get', 'patch', 'delete'],
  }))
    for (const method of methods) t.ok(doc.paths[path]?.[method], `${method} ${path}`);
  t.match(doc.paths['/api/v1/scripts/{id}/schedules'].post.responses, { 201: {}, 400: {}, 404: {}, 409: {} });
  t.match(
    doc.paths['/api/v1/scripts/{id}/schedules'].post.responses['201']?.headers,
    { Location: { schema: { type: 'string' }, description: /\/api\/v1\/schedules\/\{schedule_id\}/ } },
    'the 201 documents its Location header',
  );
  t.match(Object.keys(doc.components.schemas.Schedule.properties), [
    'id',
    'script_id',
    'user_id',
    'cron',
    'timezone',
    'enabled',
    'next_run_at',
    'last_run_id',
    'last_fired_at',
    'last_skipped_at',
    'skipped_count',
    'created_at',
    'updated_at',
  ]);
});

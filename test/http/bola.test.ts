/**
 * Broken object-level authorisation and mass assignment: user B tries every `:id`
 * route on user A's resources and gets 404 (never 403, never a change); admin-only
 * routes answer B 403; no JSON body can set a column its route does not offer.
 *
 * The route tables are the point: a new `:id` route is one line in SCRIPT_ROUTES or
 * USER_ROUTES, a new admin route one line in ADMIN_ROUTES.
 */
import type { LightMyRequestResponse } from 'fastify';
import t, { type Test } from 'tap';
import { type Account, multipartFile, signUp, signUpAdmin, type TestApp, testApp } from '../helpers/app.ts';
import { LEASE, queueRun, startRun } from '../helpers/fixtures.ts';

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

interface Attempt {
  method: Method;
  /** The route as registered, `:id` standing for the target's id. */
  route: string;
  query?: string;
  payload?: Record<string, unknown>;
}

/** Every route that takes a script id. */
const SCRIPT_ROUTES: Attempt[] = [
  { method: 'GET', route: '/api/v1/scripts/:id' },
  { method: 'GET', route: '/api/v1/scripts/:id/content' },
  { method: 'DELETE', route: '/api/v1/scripts/:id' },
  { method: 'POST', route: '/api/v1/scripts/:id/execute' },
  { method: 'POST', route: '/api/v1/scripts/:id/cancel' },
  { method: 'GET', route: '/api/v1/scripts/:id/logs' },
  { method: 'GET', route: '/api/v1/scripts/:id/logs', query: 'tail=5' },
  { method: 'GET', route: '/api/v1/scripts/:id/logs', query: 'follow=true' },
  { method: 'GET', route: '/api/v1/scripts/:id/schedules' },
  {
    method: 'POST',
    route: '/api/v1/scripts/:id/schedules',
    payload: { cron: '30 9 * * 1-5', timezone: 'America/New_York' },
  },
];

/** Every route that takes a user id and is open to the user itself. */
const USER_ROUTES: Attempt[] = [
  { method: 'GET', route: '/api/v1/users/:id' },
  { method: 'GET', route: '/api/v1/users/:id', query: 'include=scripts' },
  { method: 'DELETE', route: '/api/v1/users/:id' },
];

/** Admin-only routes; `:id` is user A. */
const ADMIN_ROUTES: Attempt[] = [
  { method: 'GET', route: '/api/v1/users' },
  { method: 'GET', route: '/api/v1/users', query: 'cursor=' },
  { method: 'GET', route: '/api/v1/users/search', query: 'q=person' },
  { method: 'PATCH', route: '/api/v1/users/:id', payload: { is_active: false } },
  { method: 'PATCH', route: '/api/v1/users/:id', payload: { role: 'admin' } },
  { method: 'GET', route: '/api/v1/scripts/recent' },
  { method: 'GET', route: '/api/v1/scripts', query: 'all=true' },
  { method: 'GET', route: '/api/v1/scripts', query: 'user_id=:id' },
  { method: 'GET', route: '/api/v1/schedules', query: 'all=true' },
  { method: 'GET', route: '/api/v1/stats/scripts' },
  { method: 'GET', route: '/api/v1/stats/scripts/by-status' },
  { method: 'GET', route: '/api/v1/stats/scripts/performance' },
  { method: 'GET', route: '/api/v1/stats/users' },
  { method: 'GET', route: '/api/v1/stats/users/by-provider' },
  { method: 'GET', route: '/api/v1/stats/users/top' },
  { method: 'GET', route: '/api/v1/stats/users/script-counts' },
];

/** The app with load shedding off (a loaded test machine is not an overloaded server). */
async function setup(t: Test): Promise<TestApp> {
  const ta = await testApp(t, { MAX_EVENT_LOOP_DELAY_MS: '0' });
  await ta.app.ready();
  return ta;
}

function label(a: Attempt): string {
  return `${a.method} ${a.route}${a.query ? `?${a.query}` : ''}`;
}

function attempt(ta: TestApp, a: Attempt, id: number, headers: Record<string, string> = {}) {
  const url = `${a.route}${a.query ? `?${a.query}` : ''}`.replaceAll(':id', String(id));
  return ta.app.inject({ method: a.method, url, headers, ...(a.payload ? { payload: a.payload } : {}) });
}

function problemOf(t: Test, res: LightMyRequestResponse, status: number, code: string, what: string) {
  t.equal(res.statusCode, status, `${what}: ${status}`);
  t.match(res.headers['content-type'], /^application\/problem\+json/, `${what}: problem+json`);
  const body = res.json();
  t.equal(body.code, code, `${what}: ${code}`);
  return body as { code: string; detail: string; errors?: Array<{ path: string; message: string }> };
}

interface World {
  ta: TestApp;
  alice: Account;
  bob: Account;
  admin: Account;
  /** Alice's scripts, one per state a route could act on. */
  scripts: { uploaded: number; queued: number; running: number; completed: number };
}

async function uploadAs(ta: TestApp, account: Account, name: string, content: string): Promise<number> {
  const body = multipartFile(name, content);
  const res = await ta.app.inject({
    method: 'POST',
    url: '/api/v1/scripts',
    payload: body.payload,
    headers: { ...account.headers, ...body.headers },
  });
  if (res.statusCode !== 201) throw new Error(`upload failed: ${res.statusCode} ${res.body}`);
  return res.json().id;
}

async function world(t: Test): Promise<World> {
  const ta = await setup(t);
  const alice = await signUp(ta.app);
  const bob = await signUp(ta.app);
  const admin = await signUpAdmin(ta);
  const { outcomes, output } = ta.repos;
  const uploaded = await uploadAs(ta, alice, 'uploaded.py', 'print("uploaded")\n');
  const queued = await uploadAs(ta, alice, 'queued.py', 'print("queued")\n');
  const running = await uploadAs(ta, alice, 'running.py', 'print("running")\n');
  const completed = await uploadAs(ta, alice, 'completed.py', 'print("completed")\n');
  await queueRun(ta.repos, queued);
  await startRun(ta.repos, running);
  const done = await startRun(ta.repos, completed);
  await output.appendLog(done.id, LEASE.executorId, 0, 'secret output of alice\n');
  await outcomes.complete(done.id, { exit_code: 0, execution_time_seconds: 1, memory_usage_mb: 2 });
  await uploadAs(ta, bob, 'bob.py', 'print("bob")\n');
  return { ta, alice, bob, admin, scripts: { uploaded, queued, running, completed } };
}

/** Everything of a user that an attack could change: its row, its scripts' rows and files. */
async function snapshot(ta: TestApp, userId: number) {
  const sql = ta.database.sql;
  const [user] = await sql`select * from users where id = ${userId}`;
  const scripts = await sql`select * from scripts where user_id = ${userId} order by id`;
  const files = await sql`
    select script_id, convert_from(content, 'UTF8') as content
    from script_contents where user_id = ${userId} order by script_id
  `;
  const tokens = await sql`select id, revoked_at from api_tokens where user_id = ${userId} order by id`;
  const schedules = await sql`select * from script_schedules where user_id = ${userId} order by id`;
  return { user, scripts: [...scripts], files: [...files], tokens: [...tokens], schedules: [...schedules] };
}

t.test('every route of the tables exists (a missing one would answer 404 and prove nothing)', async (t) => {
  const { app } = await setup(t);
  for (const a of [...SCRIPT_ROUTES, ...USER_ROUTES, ...ADMIN_ROUTES]) {
    t.ok(app.hasRoute({ method: a.method, url: a.route }), label(a));
  }
});

t.test(
  'user B gets 404 NOT_FOUND on every script route for each of A’s scripts; nothing changes',
  async (t) => {
    const { ta, alice, bob, scripts } = await world(t);
    const before = await snapshot(ta, alice.user.id);
    const missing = 9_999_999;
    for (const [state, id] of Object.entries(scripts)) {
      for (const a of SCRIPT_ROUTES) {
        const what = `${label(a)} on A's ${state} script`;
        const res = await attempt(ta, a, id, bob.headers);
        const body = problemOf(t, res, 404, 'NOT_FOUND', what);
        t.notMatch(res.body, /secret output|print\(/, `${what}: nothing of A's script leaks`);
        // Someone else's id answers exactly like an id that does not exist.
        const none = (await attempt(ta, a, missing, bob.headers)).json();
        t.same(
          { ...body, request_id: undefined },
          { ...none, request_id: undefined },
          `${what}: like a missing id`,
        );
      }
    }
    t.same(await snapshot(ta, alice.user.id), before, 'A’s rows, files and tokens are unchanged');

    // The owner still reaches everything: the 404s were about ownership.
    for (const id of Object.values(scripts)) {
      const own = await ta.app.inject({
        method: 'GET',
        url: `/api/v1/scripts/${id}`,
        headers: alice.headers,
      });
      t.equal(own.statusCode, 200);
    }
    const logs = await ta.app.inject({
      method: 'GET',
      url: `/api/v1/scripts/${scripts.completed}/logs`,
      headers: alice.headers,
    });
    t.equal(logs.body, 'secret output of alice\n', 'A reads her own output');
  },
);

t.test('an admin reaches A’s scripts where B got 404', async (t) => {
  const { ta, admin, scripts } = await world(t);
  for (const a of SCRIPT_ROUTES.filter((r) => r.method === 'GET' && r.query !== 'follow=true')) {
    const res = await attempt(ta, a, scripts.completed, admin.headers);
    t.equal(res.statusCode, 200, label(a));
  }
});

t.test('user B gets 404 NOT_FOUND on A’s user routes; A stays as it was and signed in', async (t) => {
  const { ta, alice, bob } = await world(t);
  const before = await snapshot(ta, alice.user.id);
  for (const a of USER_ROUTES) {
    const body = problemOf(t, await attempt(ta, a, alice.user.id, bob.headers), 404, 'NOT_FOUND', label(a));
    const none = (await attempt(ta, a, 9_999_999, bob.headers)).json();
    t.equal(body.detail, none.detail, `${label(a)}: like a missing id`);
  }
  t.same(await snapshot(ta, alice.user.id), before, 'A’s row, scripts, files and tokens are unchanged');
  const me = await ta.app.inject({ method: 'GET', url: '/api/v1/me', headers: alice.headers });
  t.equal(me.statusCode, 200, 'A’s token still works');
  // The user itself, and an admin, are let through: the 404 was about ownership.
  const own = await ta.app.inject({
    method: 'GET',
    url: `/api/v1/users/${bob.user.id}?include=scripts`,
    headers: bob.headers,
  });
  t.equal(own.statusCode, 200);
  t.equal(own.json().scripts.length, 1, 'B’s own scripts only');
});

t.test('user B gets 403 FORBIDDEN on every admin route, and nothing changes', async (t) => {
  const { ta, alice, bob } = await world(t);
  const before = await snapshot(ta, alice.user.id);
  const bobBefore = await snapshot(ta, bob.user.id);
  for (const a of ADMIN_ROUTES) {
    problemOf(t, await attempt(ta, a, alice.user.id, bob.headers), 403, 'FORBIDDEN', `${label(a)} on A`);
  }
  const promote: Attempt = { method: 'PATCH', route: '/api/v1/users/:id', payload: { role: 'admin' } };
  problemOf(t, await attempt(ta, promote, bob.user.id, bob.headers), 403, 'FORBIDDEN', 'B promoting itself');
  t.same(await snapshot(ta, alice.user.id), before, 'A is unchanged');
  t.same(await snapshot(ta, bob.user.id), bobBefore, 'B is still a user');
});

t.test('every table route refuses a request without a valid token with 401', async (t) => {
  const { ta, alice, scripts } = await world(t);
  const targets: Array<[Attempt, number]> = [
    ...SCRIPT_ROUTES.map((a): [Attempt, number] => [a, scripts.uploaded]),
    ...[...USER_ROUTES, ...ADMIN_ROUTES].map((a): [Attempt, number] => [a, alice.user.id]),
  ];
  const before = await snapshot(ta, alice.user.id);
  for (const [a, id] of targets) {
    problemOf(t, await attempt(ta, a, id), 401, 'UNAUTHENTICATED', `${label(a)} without a token`);
    const forged = { authorization: `Bearer ${'A'.repeat(43)}` };
    problemOf(t, await attempt(ta, a, id, forged), 401, 'UNAUTHENTICATED', `${label(a)} with a forged token`);
  }
  t.same(await snapshot(ta, alice.user.id), before);
});

t.test('lists never show user B another user’s scripts', async (t) => {
  const { ta, alice, bob, scripts } = await world(t);
  const owned = (res: LightMyRequestResponse) =>
    (res.json().scripts as Array<{ user_id: number }>).every((s) => s.user_id === bob.user.id);
  for (const url of ['/api/v1/scripts?per_page=100', '/api/v1/scripts?cursor=', '/api/v1/scripts/running']) {
    const res = await ta.app.inject({ method: 'GET', url, headers: bob.headers });
    t.equal(res.statusCode, 200, url);
    t.ok(owned(res), `${url}: only B's scripts`);
  }
  const running = await ta.app.inject({
    method: 'GET',
    url: '/api/v1/scripts/running',
    headers: alice.headers,
  });
  t.same(
    running.json().scripts.map((s: { id: number }) => s.id),
    [scripts.running],
    'A sees her running script',
  );
});

// ---------------------------------------------------------------- mass assignment

/** Columns no client body may set. */
const FORBIDDEN_FIELDS: Record<string, unknown> = {
  role: 'admin',
  is_active: false,
  user_id: 1,
  status: 'running',
  hashed_password: '$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA',
  file_path: '/etc/passwd',
};

async function userRow(ta: TestApp, id: number) {
  const sql = ta.database.sql;
  const [row] = await sql`select * from users where id = ${id}`;
  return row;
}

t.test('register refuses role, is_active, user_id, status, hashed_password, file_path (400)', async (t) => {
  const ta = await setup(t);
  const extra = { ...FORBIDDEN_FIELDS, is_verified: true, id: 1, auth_provider: 'google', google_id: 'g-1' };
  for (const [field, value] of Object.entries(extra)) {
    const email = `mass_${field}@example.com`;
    const res = await ta.app.inject({
      method: 'POST',
      url: '/api/v1/auth/register',
      payload: { email, username: `mass_${field}`, password: 'correct horse battery', [field]: value },
    });
    const body = problemOf(t, res, 400, 'VALIDATION_FAILED', `register with ${field}`);
    t.same(body.errors, [{ path: `/${field}`, message: 'is not allowed' }], `names /${field}`);
    t.equal(await ta.repos.users.findByEmail(email), null, `register with ${field}: no user`);
  }
  // Prototype pollution is refused too.
  for (const raw of [
    '{"email":"proto@example.com","username":"proto","password":"correct horse battery","__proto__":{"role":"admin"}}',
    '{"email":"proto@example.com","username":"proto","password":"correct horse battery","constructor":{"prototype":{"role":"admin"}}}',
  ]) {
    const res = await ta.app.inject({
      method: 'POST',
      url: '/api/v1/auth/register',
      payload: raw,
      headers: { 'content-type': 'application/json' },
    });
    t.equal(res.statusCode, 400, 'a poisoned body is a 400');
    t.match(res.headers['content-type'], /^application\/problem\+json/);
  }
  t.equal(await ta.repos.users.findByEmail('proto@example.com'), null);
  const sql = ta.database.sql;
  const [{ n }] = (await sql`select count(*)::int as n from users`) as unknown as [{ n: number }];
  t.equal(n, 0, 'no user was created');
});

t.test(
  'PATCH /me refuses the forbidden fields (400) and changes nothing, not even the username',
  async (t) => {
    const ta = await setup(t);
    const alice = await signUp(ta.app);
    const before = await userRow(ta, alice.user.id);
    for (const [field, value] of Object.entries({
      ...FORBIDDEN_FIELDS,
      is_verified: true,
      email: 'x@example.com',
    })) {
      const res = await ta.app.inject({
        method: 'PATCH',
        url: '/api/v1/me',
        headers: alice.headers,
        payload: { username: 'renamed_by_mass', [field]: value },
      });
      const body = problemOf(t, res, 400, 'VALIDATION_FAILED', `PATCH /me with ${field}`);
      t.same(body.errors, [{ path: `/${field}`, message: 'is not allowed' }]);
    }
    t.same(await userRow(ta, alice.user.id), before, 'the row is unchanged');
  },
);

t.test(
  'PATCH /users/:id by an admin refuses user_id, status, email and the other columns (400)',
  async (t) => {
    const ta = await setup(t);
    const admin = await signUpAdmin(ta);
    const alice = await signUp(ta.app);
    const before = await userRow(ta, alice.user.id);
    const extra = {
      user_id: admin.user.id,
      status: 'running',
      email: 'taken-over@example.com',
      hashed_password: FORBIDDEN_FIELDS.hashed_password,
      file_path: '/etc/passwd',
      id: 1,
      auth_provider: 'google',
      ibkr_user_id: 'U1',
      created_at: '2020-01-01T00:00:00Z',
    };
    for (const [field, value] of Object.entries(extra)) {
      const res = await ta.app.inject({
        method: 'PATCH',
        url: `/api/v1/users/${alice.user.id}`,
        headers: admin.headers,
        payload: { is_verified: true, [field]: value },
      });
      const body = problemOf(t, res, 400, 'VALIDATION_FAILED', `PATCH /users/:id with ${field}`);
      t.same(body.errors, [{ path: `/${field}`, message: 'is not allowed' }]);
    }
    t.same(await userRow(ta, alice.user.id), before, 'the row is unchanged');
    // The same request without the extra field goes through: the 400s were about the field.
    const ok = await ta.app.inject({
      method: 'PATCH',
      url: `/api/v1/users/${alice.user.id}`,
      headers: admin.headers,
      payload: { is_verified: true },
    });
    t.equal(ok.statusCode, 200);
    t.equal(ok.json().is_verified, true);
  },
);

t.test('PUT /me/ibkr refuses the forbidden fields (400) and links nothing', async (t) => {
  const ta = await setup(t);
  const alice = await signUp(ta.app);
  const before = await userRow(ta, alice.user.id);
  const extra = { ...FORBIDDEN_FIELDS, is_ibkr_connected: true, ibkr_connected_at: '2020-01-01T00:00:00Z' };
  for (const [field, value] of Object.entries(extra)) {
    const res = await ta.app.inject({
      method: 'PUT',
      url: '/api/v1/me/ibkr',
      headers: alice.headers,
      payload: { ibkr_user_id: 'U1234567', access_token: 'tok', [field]: value },
    });
    const body = problemOf(t, res, 400, 'VALIDATION_FAILED', `PUT /me/ibkr with ${field}`);
    t.same(body.errors, [{ path: `/${field}`, message: 'is not allowed' }]);
  }
  t.same(await userRow(ta, alice.user.id), before, 'the row is unchanged, no IBKR link');
});

t.test(
  'routes that take no body refuse one (400) and change nothing; none, or {}, goes through',
  async (t) => {
    const ta = await setup(t);
    const alice = await signUp(ta.app);
    const upload = multipartFile('bodies.py', 'print(1)\n');
    const uploaded = await ta.app.inject({
      method: 'POST',
      url: '/api/v1/scripts',
      headers: { ...alice.headers, ...upload.headers },
      payload: upload.payload,
    });
    const id = uploaded.json().id as number;
    const routes: Array<[Method, string]> = [
      ['POST', `/api/v1/scripts/${id}/execute`],
      ['POST', `/api/v1/scripts/${id}/cancel`],
      ['DELETE', `/api/v1/scripts/${id}`],
      ['DELETE', `/api/v1/users/${alice.user.id}`],
      ['POST', '/api/v1/auth/logout'],
    ];
    const bodies: Array<[string, Record<string, string>, string]> = [
      ['a JSON object', { 'content-type': 'application/json' }, '{"status":"running","user_id":1}'],
      ['a JSON array', { 'content-type': 'application/json' }, '[1]'],
      ['text', { 'content-type': 'text/plain' }, 'hello'],
    ];
    for (const [method, url] of routes) {
      for (const [what, headers, payload] of bodies) {
        const res = await ta.app.inject({ method, url, headers: { ...alice.headers, ...headers }, payload });
        const body = problemOf(t, res, 400, 'VALIDATION_FAILED', `${method} ${url} with ${what}`);
        t.same(body.errors, [{ path: '', message: 'this route takes no request body' }]);
      }
    }
    t.match(await ta.repos.scripts.getById(id), { status: 'uploaded' }, 'the script is unchanged');
    t.equal(
      (await ta.app.inject({ url: '/api/v1/me', headers: alice.headers })).statusCode,
      200,
      'still signed in',
    );
    const empty = await ta.app.inject({
      method: 'POST',
      url: `/api/v1/scripts/${id}/execute`,
      headers: { ...alice.headers, 'content-type': 'application/json' },
      payload: '{}',
    });
    t.equal(empty.statusCode, 202, '{} is no body');
    const none = await ta.app.inject({
      method: 'POST',
      url: `/api/v1/scripts/${id}/cancel`,
      headers: alice.headers,
    });
    t.equal(none.statusCode, 200, 'and neither is nothing');
  },
);

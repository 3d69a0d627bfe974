/**
 * Statistics over HTTP: admin only, and the exact shapes and values of API.md on a
 * small data set whose every number is known.
 */
import type { LightMyRequestResponse } from 'fastify';
import t, { type Test } from 'tap';
import type { User } from '../../src/domain/user.ts';
import { type Account, signUp, signUpAdmin, type TestApp, testApp } from '../helpers/app.ts';
import { makeScript, makeUser, queueRun, startRun } from '../helpers/fixtures.ts';

const ROUTES = [
  '/api/v1/stats/scripts',
  '/api/v1/stats/scripts/by-status',
  '/api/v1/stats/scripts/performance',
  '/api/v1/stats/users',
  '/api/v1/stats/users/by-provider',
  '/api/v1/stats/users/top',
  '/api/v1/stats/users/script-counts',
];

const DAY_MS = 86_400_000;
const MiB = 1_048_576;

/** The app with load shedding off (a loaded test machine is not an overloaded server). */
async function setup(t: Test): Promise<TestApp> {
  const ta = await testApp(t, { MAX_EVENT_LOOP_DELAY_MS: '0' });
  await ta.app.ready();
  return ta;
}

function problemOf(t: Test, res: LightMyRequestResponse, status: number, code: string, what: string) {
  t.equal(res.statusCode, status, `${what}: ${status}`);
  t.match(res.headers['content-type'], /^application\/problem\+json/, `${what}: problem+json`);
  t.equal(res.json().code, code, `${what}: ${code}`);
}

interface DataSet {
  ta: TestApp;
  admin: Account;
  viewer: Account;
  /** Email users: u1 verified and IBKR-linked, u2 deactivated. Google users: g1 verified, g2. */
  u1: User;
  u2: User;
  g1: User;
  g2: User;
  /** Whole-second "now" the registration times were set from. */
  base: Date;
}

/**
 * Six users, created (ids ascending) admin, viewer, u1, u2, g1, g2, registered 1, 2, 3, 4, 5
 * and 40 days before `base`. Scripts, all of u1 and g1:
 *
 * | owner | status    | size       | run time | created    |
 * |-------|-----------|------------|----------|------------|
 * | u1    | uploaded  | 1 MiB      |          | now        |
 * | u1    | completed | 2 MiB      | 2.5 s    | now        |
 * | u1    | completed | 512 KiB    | 4 s      | now        |
 * | u1    | failed    | 1 MiB      | 1 s      | now        |
 * | g1    | running   | 256 KiB    |          | now        |
 * | g1    | queued    | 100 B      |          | now        |
 * | g1    | cancelled | 1 MiB      |          | 10 days ago |
 */
async function dataSet(t: Test): Promise<DataSet> {
  const ta = await setup(t);
  const repos = ta.repos;
  const admin = await signUpAdmin(ta);
  const viewer = await signUp(ta.app);
  const u1 = await makeUser(repos, { is_verified: true });
  const u2 = await makeUser(repos);
  const g1 = await makeUser(repos, {
    auth_provider: 'google',
    google_id: 'google-1',
    hashed_password: null,
    is_verified: true,
  });
  const g2 = await makeUser(repos, { auth_provider: 'google', google_id: 'google-2', hashed_password: null });
  await repos.users.deactivate(u2.id);
  await repos.ibkr.link(u1.id, {
    ibkr_user_id: 'U1234567',
    access_token_encrypted: null,
    refresh_token_encrypted: null,
    token_expires_at: null,
  });
  const sql = ta.database.sql;
  const [{ base }] = (await sql`select date_trunc('second', now()) as base`) as unknown as [{ base: Date }];
  const ages: Array<[number, number]> = [
    [admin.user.id, 1],
    [viewer.user.id, 2],
    [u1.id, 3],
    [u2.id, 4],
    [g1.id, 5],
    [g2.id, 40],
  ];
  for (const [id, days] of ages) {
    await sql`update users set created_at = ${base}::timestamptz - make_interval(days => ${days}) where id = ${id}`;
  }
  await sql`update users set is_verified = false where id in ${sql([admin.user.id, viewer.user.id])}`;

  const outcomes = repos.outcomes;
  const run = async (id: number, outcome: 'complete' | 'fail', seconds: number) => {
    const started = await startRun(repos, id);
    const result = {
      exit_code: outcome === 'complete' ? 0 : 1,
      execution_time_seconds: seconds,
      memory_usage_mb: 3,
    };
    if (outcome === 'complete') await outcomes.complete(started.id, result);
    else await outcomes.fail(started.id, 'exit code 1', result);
  };
  await makeScript(repos, u1.id, { file_size: MiB });
  await run((await makeScript(repos, u1.id, { file_size: 2 * MiB })).id, 'complete', 2.5);
  await run((await makeScript(repos, u1.id, { file_size: MiB / 2 })).id, 'complete', 4);
  await run((await makeScript(repos, u1.id, { file_size: MiB })).id, 'fail', 1);
  const running = await makeScript(repos, g1.id, { file_size: MiB / 4 });
  await startRun(repos, running.id);
  const queued = await makeScript(repos, g1.id, { file_size: 100 });
  await queueRun(repos, queued.id);
  const cancelled = await makeScript(repos, g1.id, { file_size: MiB });
  await queueRun(repos, cancelled.id);
  await repos.runs.cancelScript(cancelled.id);
  await sql`update scripts set created_at = now() - interval '10 days' where id = ${cancelled.id}`;

  const fresh = async (user: User) => (await repos.users.getById(user.id)) as User;
  return {
    ta,
    admin,
    viewer,
    u1: await fresh(u1),
    u2: await fresh(u2),
    g1: await fresh(g1),
    g2: await fresh(g2),
    base,
  };
}

function getAs(ta: TestApp, account: Account | null, url: string) {
  return ta.app.inject({ method: 'GET', url, headers: account?.headers ?? {} });
}

/** A 200 JSON answer, its body. */
function ok(t: Test, res: LightMyRequestResponse) {
  t.equal(res.statusCode, 200);
  t.match(res.headers['content-type'], /^application\/json/);
  return res.json();
}

t.test('every stats route answers 401 without a token, 403 to a user, 200 to an admin', async (t) => {
  const ta = await setup(t);
  const admin = await signUpAdmin(ta);
  const viewer = await signUp(ta.app);
  for (const url of ROUTES) {
    problemOf(t, await getAs(ta, null, url), 401, 'UNAUTHENTICATED', `${url} anonymous`);
    problemOf(t, await getAs(ta, viewer, url), 403, 'FORBIDDEN', `${url} as a user`);
    t.equal((await getAs(ta, admin, url)).statusCode, 200, `${url} as an admin`);
  }
});

t.test('with no scripts, script statistics are zeros with every status present', async (t) => {
  const ta = await setup(t);
  const admin = await signUpAdmin(ta);
  t.same(ok(t, await getAs(ta, admin, '/api/v1/stats/scripts')), {
    total_scripts: 0,
    running_scripts: 0,
    by_status: { uploaded: 0, queued: 0, running: 0, completed: 0, failed: 0, cancelled: 0 },
    total_size_mb: 0,
    avg_execution_time: null,
    uploads_last_7_days: 0,
  });
  t.same(
    ok(t, await getAs(ta, admin, '/api/v1/stats/scripts/by-status')),
    ['uploaded', 'queued', 'running', 'completed', 'failed', 'cancelled'].map((status) => ({
      status,
      count: 0,
      avg_time: null,
      total_size: 0,
    })),
  );
  t.same(ok(t, await getAs(ta, admin, '/api/v1/stats/scripts/performance')), {
    avg_time: null,
    max_time: null,
    min_time: null,
    total_scripts: 0,
  });
  t.same(ok(t, await getAs(ta, admin, '/api/v1/stats/users/top')), []);
});

t.test(
  'GET /stats/scripts: totals, running, by status, size in MiB, mean run time, recent uploads',
  async (t) => {
    const { ta, admin } = await dataSet(t);
    t.same(ok(t, await getAs(ta, admin, '/api/v1/stats/scripts')), {
      total_scripts: 7,
      running_scripts: 1,
      by_status: { uploaded: 1, queued: 1, running: 1, completed: 2, failed: 1, cancelled: 1 },
      // 6,029,412 bytes
      total_size_mb: 5.75,
      // (2.5 + 4 + 1) / 3: every run that has a time
      avg_execution_time: 2.5,
      uploads_last_7_days: 6,
    });
  },
);

t.test('GET /stats/scripts/by-status: one row per status, in order, with mean time and bytes', async (t) => {
  const { ta, admin } = await dataSet(t);
  t.same(ok(t, await getAs(ta, admin, '/api/v1/stats/scripts/by-status')), [
    { status: 'uploaded', count: 1, avg_time: null, total_size: MiB },
    { status: 'queued', count: 1, avg_time: null, total_size: 100 },
    { status: 'running', count: 1, avg_time: null, total_size: MiB / 4 },
    { status: 'completed', count: 2, avg_time: 3.25, total_size: 2 * MiB + MiB / 2 },
    { status: 'failed', count: 1, avg_time: 1, total_size: MiB },
    { status: 'cancelled', count: 1, avg_time: null, total_size: MiB },
  ]);
});

t.test('GET /stats/scripts/performance: run times of completed scripts only', async (t) => {
  const { ta, admin } = await dataSet(t);
  t.same(ok(t, await getAs(ta, admin, '/api/v1/stats/scripts/performance')), {
    avg_time: 3.25,
    max_time: 4,
    min_time: 2.5,
    total_scripts: 2,
  });
});

t.test('GET /stats/users: totals, active, verified, IBKR, by provider, last 30 days', async (t) => {
  const { ta, admin } = await dataSet(t);
  t.same(ok(t, await getAs(ta, admin, '/api/v1/stats/users')), {
    total: 6,
    active: 5,
    verified: 2,
    ibkr_connected: 1,
    by_provider: { email: 4, google: 2 },
    registrations_last_30_days: 5,
  });
});

t.test('GET /stats/users/by-provider: count and mean registration time per provider', async (t) => {
  const { ta, admin, base } = await dataSet(t);
  const at = (daysAgo: number) => new Date(base.getTime() - daysAgo * DAY_MS).toISOString();
  t.same(ok(t, await getAs(ta, admin, '/api/v1/stats/users/by-provider')), [
    // email: 1, 2, 3 and 4 days ago
    { auth_provider: 'email', user_count: 4, avg_created_at: at(2.5) },
    // google: 5 and 40 days ago
    { auth_provider: 'google', user_count: 2, avg_created_at: at(22.5) },
  ]);
});

t.test('GET /stats/users/top: most scripts first, `limit` from 1 to 100', async (t) => {
  const { ta, admin, u1, g1 } = await dataSet(t);
  const top = [
    { user_id: u1.id, username: u1.username, script_count: 4 },
    { user_id: g1.id, username: g1.username, script_count: 3 },
  ];
  t.same(ok(t, await getAs(ta, admin, '/api/v1/stats/users/top')), top, 'users without scripts are not top');
  t.same(ok(t, await getAs(ta, admin, '/api/v1/stats/users/top?limit=1')), top.slice(0, 1));
  t.same(ok(t, await getAs(ta, admin, '/api/v1/stats/users/top?limit=100')), top);
  for (const limit of ['0', '101', '-1', '1.5', 'ten', '']) {
    problemOf(
      t,
      await getAs(ta, admin, `/api/v1/stats/users/top?limit=${limit}`),
      400,
      'VALIDATION_FAILED',
      `limit=${limit}`,
    );
  }
  problemOf(
    t,
    await getAs(ta, admin, '/api/v1/stats/users/top?top=1'),
    400,
    'VALIDATION_FAILED',
    'unknown parameter',
  );
});

t.test('GET /stats/users/script-counts: every user with its count, zeros included, as pages', async (t) => {
  const { ta, admin, viewer, u1, u2, g1, g2 } = await dataSet(t);
  const row = (user: Pick<User, 'id' | 'username' | 'email'>, script_count: number) => ({
    user_id: user.id,
    username: user.username,
    email: user.email,
    script_count,
  });
  const all = [row(admin.user, 0), row(viewer.user, 0), row(u1, 4), row(u2, 0), row(g1, 3), row(g2, 0)];
  t.same(ok(t, await getAs(ta, admin, '/api/v1/stats/users/script-counts')), {
    users: all,
    total: 6,
    page: 1,
    per_page: 20,
    pages: 1,
  });
  t.same(ok(t, await getAs(ta, admin, '/api/v1/stats/users/script-counts?per_page=4&page=2')), {
    users: all.slice(4),
    total: 6,
    page: 2,
    per_page: 4,
    pages: 2,
  });
  t.same(ok(t, await getAs(ta, admin, '/api/v1/stats/users/script-counts?per_page=4&page=3')), {
    users: [],
    total: 6,
    page: 3,
    per_page: 4,
    pages: 2,
  });
  for (const query of ['per_page=0', 'per_page=101', 'page=0', 'page=x', 'cursor=']) {
    problemOf(
      t,
      await getAs(ta, admin, `/api/v1/stats/users/script-counts?${query}`),
      400,
      'VALIDATION_FAILED',
      query,
    );
  }
});

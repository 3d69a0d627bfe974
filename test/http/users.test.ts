import type { FastifyInstance } from 'fastify';
import t from 'tap';
import { type Account, multipartFile, signUp, signUpAdmin, type TestApp, testApp } from '../helpers/app.ts';
import { FAKE_HASH } from '../helpers/fixtures.ts';

const USERS = '/api/v1/users';
const ME = '/api/v1/me';

const PUBLIC_USER_FIELDS = [
  'auth_provider',
  'created_at',
  'email',
  'ibkr_connected_at',
  'ibkr_user_id',
  'id',
  'is_active',
  'is_ibkr_connected',
  'is_verified',
  'last_login_at',
  'role',
  'updated_at',
  'username',
];

async function upload(app: FastifyInstance, account: Account, name: string, content: string) {
  const { payload, headers } = multipartFile(name, content);
  const res = await app.inject({
    method: 'POST',
    url: '/api/v1/scripts',
    headers: { ...headers, ...account.headers },
    payload,
  });
  if (res.statusCode !== 201) throw new Error(`upload failed: ${res.statusCode} ${res.body}`);
  return res.json() as { id: number; user_id: number; original_filename: string };
}

/** The ids of a user's scripts whose bytes are in script_contents. */
async function contentIdsOf(test: TestApp, userId: number): Promise<number[]> {
  const rows = await test.database.sql`
    select script_id from script_contents where user_id = ${userId} order by script_id
  `;
  return rows.map((r) => r.script_id as number);
}

function ids(users: Array<{ id: number }>): number[] {
  return users.map((u) => u.id);
}

t.test('the admin routes answer 403 FORBIDDEN to a normal user', async (t) => {
  const test = await testApp(t);
  const { app } = test;
  const user = await signUp(app);
  const other = await signUp(app);
  const routes: Array<{ method: 'GET' | 'PATCH'; url: string; payload?: Record<string, unknown> }> = [
    { method: 'GET', url: USERS },
    { method: 'GET', url: `${USERS}?cursor=` },
    { method: 'GET', url: `${USERS}/search?q=person` },
    { method: 'PATCH', url: `${USERS}/${other.user.id}`, payload: { is_active: false } },
    { method: 'PATCH', url: `${USERS}/${user.user.id}`, payload: { role: 'admin' } },
  ];
  for (const route of routes) {
    const res = await app.inject({ ...route, headers: user.headers });
    const label = `${route.method} ${route.url}`;
    t.equal(res.statusCode, 403, label);
    t.match(res.headers['content-type'], /^application\/problem\+json/, label);
    t.match(res.json(), { status: 403, title: 'Forbidden', code: 'FORBIDDEN' }, label);
  }
  const [row] = await test.database.sql`
    select count(*) filter (where role = 'admin')::int as admins,
           count(*) filter (where not is_active)::int as inactive
    from users
  `;
  t.same(row, { admins: 0, inactive: 0 }, 'nobody was promoted or deactivated');
});

t.test('every users route answers 401 without a token', async (t) => {
  const { app } = await testApp(t);
  const user = await signUp(app);
  const routes: Array<{
    method: 'GET' | 'PATCH' | 'DELETE';
    url: string;
    payload?: Record<string, unknown>;
  }> = [
    { method: 'GET', url: USERS },
    { method: 'GET', url: `${USERS}/search?q=person` },
    { method: 'GET', url: `${USERS}/${user.user.id}` },
    { method: 'PATCH', url: `${USERS}/${user.user.id}`, payload: { is_active: false } },
    { method: 'DELETE', url: `${USERS}/${user.user.id}` },
  ];
  for (const route of routes) {
    const res = await app.inject(route);
    const label = `${route.method} ${route.url}`;
    t.equal(res.statusCode, 401, label);
    t.equal(res.headers['www-authenticate'], 'Bearer', label);
    t.match(res.json(), { status: 401, code: 'UNAUTHENTICATED' }, label);
  }
  const me = await app.inject({ method: 'GET', url: ME, headers: user.headers });
  t.equal(me.statusCode, 200, 'the user is still there');
});

t.test('GET /users answers an offset page, newest first', async (t) => {
  const test = await testApp(t);
  const { app } = test;
  const admin = await signUpAdmin(test);
  const users = [admin.user];
  for (let i = 0; i < 4; i++) users.push((await signUp(app)).user);
  const newestFirst = ids(users).reverse();

  const all = await app.inject({ method: 'GET', url: USERS, headers: admin.headers });
  t.equal(all.statusCode, 200);
  const body = all.json();
  t.same(Object.keys(body).sort(), ['page', 'pages', 'per_page', 'total', 'users']);
  t.match(body, { total: 5, page: 1, per_page: 20, pages: 1 });
  t.same(ids(body.users), newestFirst);
  t.same(Object.keys(body.users[0]).sort(), PUBLIC_USER_FIELDS, 'no password hash, no tokens');
  t.notMatch(all.body, /argon2/);

  const page2 = await app.inject({
    method: 'GET',
    url: `${USERS}?page=2&per_page=2`,
    headers: admin.headers,
  });
  t.equal(page2.statusCode, 200);
  t.match(page2.json(), { total: 5, page: 2, per_page: 2, pages: 3 });
  t.same(ids(page2.json().users), newestFirst.slice(2, 4));

  const last = await app.inject({ method: 'GET', url: `${USERS}?page=3&per_page=2`, headers: admin.headers });
  t.same(ids(last.json().users), newestFirst.slice(4));

  const beyond = await app.inject({
    method: 'GET',
    url: `${USERS}?page=9&per_page=2`,
    headers: admin.headers,
  });
  t.equal(beyond.statusCode, 200);
  t.same(
    beyond.json(),
    { users: [], total: 5, page: 9, per_page: 2, pages: 3 },
    'past the end: empty, same total',
  );

  const one = await app.inject({ method: 'GET', url: `${USERS}?per_page=100`, headers: admin.headers });
  t.equal(one.statusCode, 200, 'per_page 100 is allowed');
  t.equal(one.json().per_page, 100);
});

t.test('GET /users refuses per_page 0 and 101, page 0 and unknown parameters with 400', async (t) => {
  const test = await testApp(t);
  const admin = await signUpAdmin(test);
  for (const query of [
    'per_page=0',
    'per_page=101',
    'per_page=-1',
    'per_page=ten',
    'page=0',
    'page=1.5',
    'sort=email',
  ]) {
    const res = await test.app.inject({ method: 'GET', url: `${USERS}?${query}`, headers: admin.headers });
    t.equal(res.statusCode, 400, query);
    t.match(res.headers['content-type'], /^application\/problem\+json/, query);
    const name = query.split('=')[0] as string;
    t.match(res.json(), { code: 'VALIDATION_FAILED', errors: [{ path: new RegExp(`/${name}$`) }] }, query);
  }
});

t.test(
  'GET /users filters by auth_provider, is_active, ibkr_connected, last_login_since, created_since',
  async (t) => {
    const test = await testApp(t);
    const { app, database } = test;
    const admin = await signUpAdmin(test);
    const inactive = await signUp(app);
    const ibkr = await signUp(app);
    const old = await signUp(app);
    const google = await test.repos.users.create({
      email: 'gina@example.com',
      username: 'gina',
      auth_provider: 'google',
      google_id: 'google-123',
    });
    await app.inject({
      method: 'PATCH',
      url: `${USERS}/${inactive.user.id}`,
      headers: admin.headers,
      payload: { is_active: false },
    });
    const linked = await app.inject({
      method: 'PUT',
      url: '/api/v1/me/ibkr',
      headers: ibkr.headers,
      payload: { ibkr_user_id: 'U1010101' },
    });
    t.equal(linked.statusCode, 200);
    await database.sql`
    update users set created_at = '2020-01-01T00:00:00Z', last_login_at = '2020-06-01T00:00:00Z'
    where id = ${old.user.id}
  `;
    const login = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      payload: { email: ibkr.user.email, password: ibkr.password },
    });
    t.equal(login.statusCode, 200);

    const list = async (query: string) => {
      const res = await app.inject({ method: 'GET', url: `${USERS}?${query}`, headers: admin.headers });
      t.equal(res.statusCode, 200, query);
      return { ids: ids(res.json().users).sort((a, b) => a - b), total: res.json().total as number };
    };
    const sorted = (...xs: number[]) => xs.sort((a, b) => a - b);
    const everyone = sorted(admin.user.id, inactive.user.id, ibkr.user.id, old.user.id, google.id);

    t.same(await list('auth_provider=google'), { ids: [google.id], total: 1 });
    t.same(await list('auth_provider=email'), {
      ids: sorted(admin.user.id, inactive.user.id, ibkr.user.id, old.user.id),
      total: 4,
    });
    t.same(await list('is_active=false'), { ids: [inactive.user.id], total: 1 });
    t.same(
      (await list('is_active=true')).ids,
      everyone.filter((id) => id !== inactive.user.id),
    );
    t.same(await list('ibkr_connected=true'), { ids: [ibkr.user.id], total: 1 });
    t.equal((await list('ibkr_connected=false')).total, 4);
    t.same(await list('last_login_since=2021-01-01T00:00:00Z'), { ids: [ibkr.user.id], total: 1 });
    t.same(
      await list('last_login_since=2020-01-01T00:00:00.000Z'),
      { ids: sorted(ibkr.user.id, old.user.id), total: 2 },
      'a user who never signed in is not "since" anything',
    );
    t.same(
      (await list('created_since=2021-01-01T00:00:00Z')).ids,
      everyone.filter((id) => id !== old.user.id),
    );
    t.same(await list('created_since=2019-12-31T23:59:59Z'), { ids: everyone, total: 5 });
    t.same(
      await list(
        'auth_provider=email&is_active=true&ibkr_connected=false&created_since=2021-01-01T00:00:00Z',
      ),
      {
        ids: [admin.user.id],
        total: 1,
      },
    );
    t.same(await list('is_active=false&ibkr_connected=true'), { ids: [], total: 0 });

    for (const query of [
      'auth_provider=facebook',
      'is_active=maybe',
      'ibkr_connected=2',
      'last_login_since=yesterday',
      'created_since=2021-13-01T00:00:00Z',
      'created_since=2021-01-01',
    ]) {
      const res = await app.inject({ method: 'GET', url: `${USERS}?${query}`, headers: admin.headers });
      t.equal(res.statusCode, 400, query);
      t.match(res.json(), { code: 'VALIDATION_FAILED' }, query);
    }
  },
);

t.test('GET /users in cursor mode walks every user once, newest first, to next_cursor null', async (t) => {
  const test = await testApp(t);
  const { app } = test;
  const admin = await signUpAdmin(test);
  const created = [admin.user.id];
  for (let i = 0; i < 6; i++) created.push((await signUp(app)).user.id);
  const expected = [...created].reverse();

  const first = await app.inject({
    method: 'GET',
    url: `${USERS}?cursor=&per_page=3`,
    headers: admin.headers,
  });
  t.equal(first.statusCode, 200);
  t.same(Object.keys(first.json()).sort(), ['next_cursor', 'users'], 'a cursor page, not an offset page');
  t.type(first.json().next_cursor, 'string');
  t.same(ids(first.json().users), expected.slice(0, 3));

  const seen: number[] = [];
  let cursor = '';
  let pages = 0;
  for (;;) {
    const res = await app.inject({
      method: 'GET',
      url: `${USERS}?per_page=3&cursor=${encodeURIComponent(cursor)}`,
      headers: admin.headers,
    });
    t.equal(res.statusCode, 200);
    const body = res.json();
    seen.push(...ids(body.users));
    pages++;
    if (body.next_cursor === null) break;
    t.ok(body.users.length === 3, 'a page with a next cursor is full');
    cursor = body.next_cursor;
    if (pages > 10) break;
  }
  t.equal(pages, 3, '7 users in pages of 3');
  t.same(seen, expected, 'each user exactly once, newest first');

  const exact = await app.inject({
    method: 'GET',
    url: `${USERS}?cursor=&per_page=7`,
    headers: admin.headers,
  });
  t.equal(exact.json().users.length, 7);
  t.equal(exact.json().next_cursor, null, 'a page that holds the rest ends the walk');
});

t.test('GET /users in cursor mode keeps the filters', async (t) => {
  const test = await testApp(t);
  const { app } = test;
  const admin = await signUpAdmin(test);
  const inactive: number[] = [];
  for (let i = 0; i < 5; i++) {
    const account = await signUp(app);
    if (i % 2 === 0) {
      await app.inject({
        method: 'PATCH',
        url: `${USERS}/${account.user.id}`,
        headers: admin.headers,
        payload: { is_active: false },
      });
      inactive.push(account.user.id);
    }
  }
  const seen: number[] = [];
  let cursor = '';
  for (let i = 0; i < 10; i++) {
    const res = await app.inject({
      method: 'GET',
      url: `${USERS}?is_active=false&per_page=2&cursor=${cursor}`,
      headers: admin.headers,
    });
    t.equal(res.statusCode, 200);
    seen.push(...ids(res.json().users));
    if (res.json().next_cursor === null) break;
    cursor = res.json().next_cursor;
  }
  t.same(seen, inactive.reverse());
});

t.test('GET /users answers 400 INVALID_CURSOR to a tampered cursor', async (t) => {
  const test = await testApp(t);
  const { app } = test;
  const admin = await signUpAdmin(test);
  for (let i = 0; i < 3; i++) await signUp(app);
  const first = await app.inject({
    method: 'GET',
    url: `${USERS}?cursor=&per_page=1`,
    headers: admin.headers,
  });
  const real = first.json().next_cursor as string;
  const b64 = (value: string) => Buffer.from(value).toString('base64url');
  const tampered: Array<[string, string]> = [
    ['garbage', 'not a cursor!'],
    ['a cut-off cursor', real.slice(0, -2)],
    ['JSON that is not an array', b64('{"id":1}')],
    ['a string key', b64('["1"]')],
    ['a zero id', b64('[0]')],
    ['a negative id', b64('[-5]')],
    ['a fractional id', b64('[1.5]')],
    ['two keys', b64('[1,2]')],
    ['an empty array', b64('[]')],
    ['SQL', b64('["1; drop table users"]')],
    ['a too long cursor', 'A'.repeat(600)],
  ];
  for (const [label, cursor] of tampered) {
    const res = await app.inject({
      method: 'GET',
      url: `${USERS}?cursor=${encodeURIComponent(cursor)}`,
      headers: admin.headers,
    });
    t.equal(res.statusCode, 400, label);
    t.match(res.headers['content-type'], /^application\/problem\+json/, label);
    t.match(res.json(), { status: 400, code: /^(INVALID_CURSOR|VALIDATION_FAILED)$/ }, label);
    if (label !== 'a too long cursor')
      t.match(res.json(), { code: 'INVALID_CURSOR', errors: [{ path: /cursor$/ }] }, label);
  }
  const again = await app.inject({
    method: 'GET',
    url: `${USERS}?cursor=${real}&per_page=1`,
    headers: admin.headers,
  });
  t.equal(again.statusCode, 200, 'the real cursor still works');
});

t.test('GET /users answers 400 INVALID_CURSOR to a cursor whose id is out of range', async (t) => {
  const test = await testApp(t);
  const admin = await signUpAdmin(test);
  const b64 = (value: string) => Buffer.from(value).toString('base64url');
  for (const key of ['[1e20]', '[1e300]', '[9223372036854775808]']) {
    const res = await test.app.inject({
      method: 'GET',
      url: `${USERS}?cursor=${b64(key)}`,
      headers: admin.headers,
    });
    t.equal(res.statusCode, 400, key);
    t.match(res.json(), { code: 'INVALID_CURSOR' }, key);
  }
});

t.test('GET /users/search finds a case-insensitive substring of email or username', async (t) => {
  const test = await testApp(t);
  const { app } = test;
  const admin = await signUpAdmin(test);
  const zelda = await signUp(app, { email: 'Zelda.Hyrule@Example.com', username: 'princess' });
  const fan = await signUp(app, { email: 'link@example.com', username: 'ZeldaFan_99' });
  await signUp(app, { email: 'ganon@example.com', username: 'ganon' });
  const search = async (query: string) => {
    const res = await app.inject({ method: 'GET', url: `${USERS}/search?${query}`, headers: admin.headers });
    t.equal(res.statusCode, 200, query);
    t.same(Object.keys(res.json()), ['users'], query);
    return ids(res.json().users).sort((a, b) => a - b);
  };
  t.same(await search('q=ZELDA'), [zelda.user.id, fan.user.id], 'email or username, any case');
  t.same(await search('q=a.hyr'), [zelda.user.id], 'a substring inside the email');
  t.same(await search('q=fAn_9'), [fan.user.id], 'a substring inside the username');
  t.same(await search('q=nobody-has-this'), []);
  t.same(await search('q=%25'), [], '% matches literally, not everything');
  t.same(await search(`q=${encodeURIComponent('n_n')}`), [], '_ matches literally, not any character');
  t.equal((await search('q=example&limit=2')).length, 2, 'limit caps the answer');
  t.equal((await search('q=example')).length, 4, 'up to 20 by default');
  const res = await app.inject({ method: 'GET', url: `${USERS}/search?q=zelda`, headers: admin.headers });
  t.same(Object.keys(res.json().users[0]).sort(), PUBLIC_USER_FIELDS);
});

t.test('GET /users/search needs q of 1 to 100 characters and limit 1 to 100', async (t) => {
  const test = await testApp(t);
  const admin = await signUpAdmin(test);
  for (const query of [
    '',
    'q=',
    `q=${'a'.repeat(101)}`,
    'q=a&limit=0',
    'q=a&limit=101',
    'q=a&limit=x',
    'q=a&page=2',
  ]) {
    const res = await test.app.inject({
      method: 'GET',
      url: `${USERS}/search?${query}`,
      headers: admin.headers,
    });
    t.equal(res.statusCode, 400, query || '(no q)');
    t.match(res.json(), { code: 'VALIDATION_FAILED' }, query);
  }
  for (const query of [`q=${'a'.repeat(100)}`, 'q=a&limit=1', 'q=a&limit=100']) {
    const res = await test.app.inject({
      method: 'GET',
      url: `${USERS}/search?${query}`,
      headers: admin.headers,
    });
    t.equal(res.statusCode, 200, query);
  }
});

t.test('GET /users/:id: an admin reads anyone, a user itself, anyone else is 404', async (t) => {
  const test = await testApp(t);
  const { app } = test;
  const admin = await signUpAdmin(test);
  const user = await signUp(app);
  const other = await signUp(app);

  const byAdmin = await app.inject({
    method: 'GET',
    url: `${USERS}/${user.user.id}`,
    headers: admin.headers,
  });
  t.equal(byAdmin.statusCode, 200);
  t.same(byAdmin.json(), user.user);
  t.notOk('scripts' in byAdmin.json(), 'no scripts unless asked');

  const self = await app.inject({ method: 'GET', url: `${USERS}/${user.user.id}`, headers: user.headers });
  t.equal(self.statusCode, 200);
  t.same(self.json(), user.user);

  const foreign = await app.inject({
    method: 'GET',
    url: `${USERS}/${other.user.id}`,
    headers: user.headers,
  });
  t.equal(foreign.statusCode, 404);
  t.match(foreign.headers['content-type'], /^application\/problem\+json/);
  t.match(foreign.json(), { status: 404, code: 'NOT_FOUND' });
  t.notMatch(foreign.body, new RegExp(other.user.email.replace('.', '\\.')));

  const adminsOwn = await app.inject({
    method: 'GET',
    url: `${USERS}/${admin.user.id}`,
    headers: user.headers,
  });
  t.equal(adminsOwn.statusCode, 404, "even an admin's id is just not found");

  const missing = await app.inject({
    method: 'GET',
    url: `${USERS}/${other.user.id + 1000}`,
    headers: admin.headers,
  });
  t.equal(missing.statusCode, 404);
  t.match(missing.json(), { code: 'NOT_FOUND' });
  const missingForUser = await app.inject({
    method: 'GET',
    url: `${USERS}/${other.user.id + 1000}`,
    headers: user.headers,
  });
  t.same(
    {
      status: missingForUser.statusCode,
      code: missingForUser.json().code,
      detail: missingForUser.json().detail,
    },
    { status: foreign.statusCode, code: foreign.json().code, detail: foreign.json().detail },
    "someone else's user and a missing one answer alike",
  );

  for (const id of ['abc', '0', '-1', '1.5', '99999999999999999999']) {
    const res = await app.inject({ method: 'GET', url: `${USERS}/${id}`, headers: admin.headers });
    t.equal(res.statusCode, 400, id);
    t.match(res.json(), { code: 'VALIDATION_FAILED' }, id);
  }
});

t.test('GET /users/:id?include=scripts embeds the scripts of that user only, newest first', async (t) => {
  const test = await testApp(t);
  const { app } = test;
  const admin = await signUpAdmin(test);
  const user = await signUp(app);
  const other = await signUp(app);
  const a = await upload(app, user, 'alpha.py', 'print("a")\n');
  const b = await upload(app, user, 'beta.js', 'console.log("b")\n');
  await upload(app, other, 'gamma.ts', 'console.log("c")\n');

  for (const account of [user, admin]) {
    const res = await app.inject({
      method: 'GET',
      url: `${USERS}/${user.user.id}?include=scripts`,
      headers: account.headers,
    });
    t.equal(res.statusCode, 200);
    const body = res.json();
    t.match(body, { id: user.user.id, email: user.user.email });
    t.same(
      body.scripts.map((s: { id: number }) => s.id),
      [b.id, a.id],
      'its own two scripts, newest first',
    );
    t.match(body.scripts[1], {
      id: a.id,
      user_id: user.user.id,
      original_filename: 'alpha.py',
      file_extension: '.py',
      file_size: 11,
      status: 'uploaded',
    });
    t.notOk('file_path' in body.scripts[0], 'never the server path');
    t.notOk('execution_logs' in body.scripts[0], 'never the logs');
    t.notMatch(res.body, /file_path|hashed_password/);
  }

  const none = await app.inject({
    method: 'GET',
    url: `${USERS}/${admin.user.id}?include=scripts`,
    headers: admin.headers,
  });
  t.same(none.json().scripts, [], 'a user without scripts has an empty list');

  const foreign = await app.inject({
    method: 'GET',
    url: `${USERS}/${other.user.id}?include=scripts`,
    headers: user.headers,
  });
  t.equal(foreign.statusCode, 404, "another user's scripts stay hidden");

  const missing = await app.inject({
    method: 'GET',
    url: `${USERS}/${other.user.id + 1000}?include=scripts`,
    headers: admin.headers,
  });
  t.equal(missing.statusCode, 404);

  const bad = await app.inject({
    method: 'GET',
    url: `${USERS}/${user.user.id}?include=tokens`,
    headers: admin.headers,
  });
  t.equal(bad.statusCode, 400, 'only scripts can be included');
});

t.test('GET /users/:id?include=scripts embeds scripts made through the repository too', async (t) => {
  const test = await testApp(t);
  const admin = await signUpAdmin(test);
  const user = await signUp(test.app);
  const script = await test.repos.scripts.create({
    user_id: user.user.id,
    filename: 'generated.py',
    original_filename: 'mine.py',
    file_path: 'ab/00000000-0000-0000-0000-000000000000.py',
    file_size: 42,
    file_extension: '.py',
    sha256: 'a'.repeat(64),
  });
  const res = await test.app.inject({
    method: 'GET',
    url: `${USERS}/${user.user.id}?include=scripts`,
    headers: admin.headers,
  });
  t.equal(res.statusCode, 200);
  t.match(res.json().scripts, [
    { id: script.id, file_size: 42, sha256: 'a'.repeat(64), original_filename: 'mine.py' },
  ]);
  t.equal(res.json().scripts[0].created_at, script.created_at.toISOString(), 'timestamps as ISO strings');
});

t.test('PATCH /users/:id lets an admin change role, is_active, is_verified and username', async (t) => {
  const test = await testApp(t);
  const { app, database } = test;
  const admin = await signUpAdmin(test);
  const user = await signUp(app);
  const res = await app.inject({
    method: 'PATCH',
    url: `${USERS}/${user.user.id}`,
    headers: admin.headers,
    payload: { role: 'admin', is_verified: true, username: 'promoted_one' },
  });
  t.equal(res.statusCode, 200);
  t.match(res.json(), {
    id: user.user.id,
    role: 'admin',
    is_verified: true,
    is_active: true,
    username: 'promoted_one',
    email: user.user.email,
  });
  t.same(Object.keys(res.json()).sort(), PUBLIC_USER_FIELDS);
  const [row] = await database.sql`select role, is_verified, username from users where id = ${user.user.id}`;
  t.same(row, { role: 'admin', is_verified: true, username: 'promoted_one' });

  const stale = await app.inject({ method: 'GET', url: USERS, headers: user.headers });
  t.equal(stale.statusCode, 401, 'a token from before the promotion is no admin token: it was revoked');

  const off = await app.inject({
    method: 'PATCH',
    url: `${USERS}/${user.user.id}`,
    headers: admin.headers,
    payload: { is_active: false, is_verified: false },
  });
  t.equal(off.statusCode, 200);
  t.match(off.json(), { is_active: false, is_verified: false });

  const empty = await app.inject({
    method: 'PATCH',
    url: `${USERS}/${user.user.id}`,
    headers: admin.headers,
    payload: {},
  });
  t.equal(empty.statusCode, 200, 'an empty patch changes nothing');
  t.same(empty.json(), off.json());
});

t.test(
  'PATCH /users/:id refuses unknown properties and bad values with 400 and changes nothing',
  async (t) => {
    const test = await testApp(t);
    const { app, database } = test;
    const admin = await signUpAdmin(test);
    const user = await signUp(app);
    const [before] = await database.sql`select * from users where id = ${user.user.id}`;
    const cases: Array<[string, Record<string, unknown>, string]> = [
      ['email', { email: 'new@example.com' }, 'email'],
      ['hashed_password', { hashed_password: FAKE_HASH }, 'hashed_password'],
      ['auth_provider', { auth_provider: 'google' }, 'auth_provider'],
      ['ibkr_user_id', { ibkr_user_id: 'U1' }, 'ibkr_user_id'],
      ['id', { id: 1 }, 'id'],
      ['a known and an unknown property', { is_verified: true, password: 'x' }, 'password'],
      ['a bad role', { role: 'root' }, 'role'],
      ['a bad username', { username: 'no spaces allowed' }, 'username'],
    ];
    for (const [label, payload, field] of cases) {
      const res = await app.inject({
        method: 'PATCH',
        url: `${USERS}/${user.user.id}`,
        headers: admin.headers,
        payload,
      });
      t.equal(res.statusCode, 400, label);
      t.match(res.json(), { code: 'VALIDATION_FAILED' }, label);
      t.ok(
        res.json().errors.some((e: { path: string }) => e.path.endsWith(`/${field}`)),
        `${label}: the error names ${field}`,
      );
    }
    const [after] = await database.sql`select * from users where id = ${user.user.id}`;
    t.same(after, before, 'the row is unchanged');
  },
);

t.test('PATCH /users/:id of a missing user is 404', async (t) => {
  const test = await testApp(t);
  const admin = await signUpAdmin(test);
  const res = await test.app.inject({
    method: 'PATCH',
    url: `${USERS}/${admin.user.id + 1000}`,
    headers: admin.headers,
    payload: { is_verified: true },
  });
  t.equal(res.statusCode, 404);
  t.match(res.json(), { code: 'NOT_FOUND' });
});

t.test(
  'DELETE /users/:id by the user itself removes it, its scripts, their files and its tokens',
  async (t) => {
    const test = await testApp(t);
    const { app, database } = test;
    const user = await signUp(app);
    const other = await signUp(app);
    const login = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      payload: { email: user.user.email, password: user.password },
    });
    const secondHeaders = { authorization: `Bearer ${login.json().token}` };
    t.equal((await app.inject({ method: 'GET', url: ME, headers: secondHeaders })).statusCode, 200);
    await upload(app, user, 'one.py', 'print(1)\n');
    await upload(app, user, 'two.ts', 'console.log(2)\n');
    await upload(app, other, 'kept.py', 'print("kept")\n');
    t.equal((await contentIdsOf(test, user.user.id)).length, 2, 'two scripts with bytes before');
    const otherKeys = await contentIdsOf(test, other.user.id);

    const res = await app.inject({
      method: 'DELETE',
      url: `${USERS}/${user.user.id}`,
      headers: user.headers,
    });
    t.equal(res.statusCode, 204);
    t.equal(res.body, '');

    t.same(await contentIdsOf(test, user.user.id), [], 'their bytes are gone');
    t.same(await contentIdsOf(test, other.user.id), otherKeys, "another user's bytes stay");
    const [counts] = await database.sql`
    select
      (select count(*)::int from users where id = ${user.user.id}) as users,
      (select count(*)::int from scripts where user_id = ${user.user.id}) as scripts,
      (select count(*)::int from api_tokens where user_id = ${user.user.id}) as tokens,
      (select count(*)::int from scripts where user_id = ${other.user.id}) as other_scripts
  `;
    t.same(counts, { users: 0, scripts: 0, tokens: 0, other_scripts: 1 });

    for (const headers of [user.headers, secondHeaders]) {
      const me = await app.inject({ method: 'GET', url: ME, headers });
      t.equal(me.statusCode, 401, 'its tokens stop working');
    }
    const login2 = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      payload: { email: user.user.email, password: user.password },
    });
    t.equal(login2.statusCode, 401, 'it can no longer sign in');
    const otherMe = await app.inject({ method: 'GET', url: ME, headers: other.headers });
    t.equal(otherMe.statusCode, 200, 'another user is untouched');
  },
);

t.test('DELETE /users/:id of someone else by a normal user is 404 and deletes nothing', async (t) => {
  const test = await testApp(t);
  const { app } = test;
  const user = await signUp(app);
  const victim = await signUp(app);
  await upload(app, victim, 'victim.py', 'print("mine")\n');
  const keys = await contentIdsOf(test, victim.user.id);
  const res = await app.inject({
    method: 'DELETE',
    url: `${USERS}/${victim.user.id}`,
    headers: user.headers,
  });
  t.equal(res.statusCode, 404);
  t.match(res.json(), { code: 'NOT_FOUND' });
  const me = await app.inject({ method: 'GET', url: ME, headers: victim.headers });
  t.equal(me.statusCode, 200, 'the victim still signs in');
  t.same(await contentIdsOf(test, victim.user.id), keys, 'its bytes stay');
  const missing = await app.inject({
    method: 'DELETE',
    url: `${USERS}/${victim.user.id + 1000}`,
    headers: user.headers,
  });
  t.equal(missing.statusCode, 404, 'a missing id answers the same');
});

t.test('DELETE /users/:id by an admin removes the user and its files; a second delete is 404', async (t) => {
  const test = await testApp(t);
  const { app } = test;
  const admin = await signUpAdmin(test);
  const user = await signUp(app);
  await upload(app, user, 'doomed.js', 'console.log("bye")\n');
  t.equal((await contentIdsOf(test, user.user.id)).length, 1);
  t.equal((await app.inject({ method: 'GET', url: ME, headers: user.headers })).statusCode, 200, 'cached');

  const res = await app.inject({ method: 'DELETE', url: `${USERS}/${user.user.id}`, headers: admin.headers });
  t.equal(res.statusCode, 204);
  t.same(await contentIdsOf(test, user.user.id), [], 'its bytes are gone');
  t.equal((await app.inject({ method: 'GET', url: ME, headers: user.headers })).statusCode, 401);
  const read = await app.inject({ method: 'GET', url: `${USERS}/${user.user.id}`, headers: admin.headers });
  t.equal(read.statusCode, 404);
  const again = await app.inject({
    method: 'DELETE',
    url: `${USERS}/${user.user.id}`,
    headers: admin.headers,
  });
  t.equal(again.statusCode, 404);
  t.match(again.json(), { code: 'NOT_FOUND' });
  const adminMe = await app.inject({ method: 'GET', url: ME, headers: admin.headers });
  t.equal(adminMe.statusCode, 200, 'the admin is still signed in');
});

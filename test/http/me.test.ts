import t from 'tap';
import { DatabaseUnavailableError } from '../../src/domain/errors.ts';
import { UserRepository } from '../../src/repositories/user-repository.ts';
import { SecretBox } from '../../src/services/secret-box.ts';
import { ibkrContext } from '../../src/services/user-service.ts';
import { signUp, TEST_IBKR_KEY, testApp } from '../helpers/app.ts';

const ME = '/api/v1/me';
const IBKR = '/api/v1/me/ibkr';
const LOGIN = '/api/v1/auth/login';

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

t.test('GET /me answers the current user and only its public fields', async (t) => {
  const { app } = await testApp(t);
  const account = await signUp(app);
  await signUp(app);
  const res = await app.inject({ method: 'GET', url: ME, headers: account.headers });
  t.equal(res.statusCode, 200);
  t.same(res.json(), account.user, 'the same user that register answered');
  t.same(Object.keys(res.json()).sort(), PUBLIC_USER_FIELDS);
});

t.test('GET /me without a token is 401', async (t) => {
  const { app } = await testApp(t);
  const res = await app.inject({ method: 'GET', url: ME });
  t.equal(res.statusCode, 401);
  t.equal(res.headers['www-authenticate'], 'Bearer');
  t.match(res.json(), { code: 'UNAUTHENTICATED' });
});

t.test('PATCH /me changes the username', async (t) => {
  const { app, database } = await testApp(t);
  const account = await signUp(app);
  const res = await app.inject({
    method: 'PATCH',
    url: ME,
    headers: account.headers,
    payload: { username: 'New_Name-1' },
  });
  t.equal(res.statusCode, 200);
  t.match(res.json(), { id: account.user.id, username: 'New_Name-1', email: account.user.email });
  t.ok(new Date(res.json().updated_at) >= new Date(account.user.updated_at), 'updated_at moves forward');
  const [row] = await database.sql`select username from users where id = ${account.user.id}`;
  t.equal(row?.username, 'New_Name-1');
  const me = await app.inject({ method: 'GET', url: ME, headers: account.headers });
  t.equal(me.json().username, 'New_Name-1');
});

t.test('PATCH /me with an empty body changes nothing', async (t) => {
  const { app } = await testApp(t);
  const account = await signUp(app);
  const res = await app.inject({ method: 'PATCH', url: ME, headers: account.headers, payload: {} });
  t.equal(res.statusCode, 200);
  t.same(res.json(), account.user);
});

t.test('PATCH /me refuses a bad username with 400 naming /username', async (t) => {
  const { app, database } = await testApp(t);
  const account = await signUp(app);
  for (const username of ['ab', 'has space', 'x'.repeat(101), 'émile']) {
    const res = await app.inject({
      method: 'PATCH',
      url: ME,
      headers: account.headers,
      payload: { username },
    });
    t.equal(res.statusCode, 400, username);
    t.match(res.json(), { code: 'VALIDATION_FAILED', errors: [{ path: /\/username$/ }] }, username);
  }
  const [row] = await database.sql`select username from users where id = ${account.user.id}`;
  t.equal(row?.username, account.user.username);
});

t.test(
  'PATCH /me refuses role, is_active, email and other columns with 400 and changes nothing',
  async (t) => {
    const { app, database } = await testApp(t);
    const account = await signUp(app);
    const [before] = await database.sql`select * from users where id = ${account.user.id}`;
    const attempts: Array<Record<string, unknown>> = [
      { role: 'admin' },
      { is_active: false },
      { email: 'other@example.com' },
      { is_verified: true },
      { hashed_password: '$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA' },
      { ibkr_user_id: 'U1' },
      { username: 'sneaky', role: 'admin' },
    ];
    for (const payload of attempts) {
      const name = Object.keys(payload).at(-1) as string;
      const res = await app.inject({ method: 'PATCH', url: ME, headers: account.headers, payload });
      t.equal(res.statusCode, 400, name);
      t.match(res.json(), { code: 'VALIDATION_FAILED', errors: [{ path: new RegExp(`/${name}$`) }] }, name);
    }
    const [after] = await database.sql`select * from users where id = ${account.user.id}`;
    t.same(after, before, 'the row is unchanged');
  },
);

t.test('PATCH /me: a new password needs the current one (400 /current_password when missing)', async (t) => {
  const { app, database } = await testApp(t);
  const account = await signUp(app);
  const [before] = await database.sql`select hashed_password from users where id = ${account.user.id}`;
  const res = await app.inject({
    method: 'PATCH',
    url: ME,
    headers: account.headers,
    payload: { new_password: 'a brand new password' },
  });
  t.equal(res.statusCode, 400);
  t.match(res.headers['content-type'], /^application\/problem\+json/);
  t.match(res.json(), { code: 'VALIDATION_FAILED', errors: [{ path: '/current_password' }] });
  const [after] = await database.sql`select hashed_password from users where id = ${account.user.id}`;
  t.equal(after?.hashed_password, before?.hashed_password, 'the password is unchanged');
});

t.test('PATCH /me: a wrong current password is 400 /current_password and changes nothing', async (t) => {
  const { app, database } = await testApp(t);
  const account = await signUp(app);
  const other = await app.inject({
    method: 'POST',
    url: LOGIN,
    payload: { email: account.user.email, password: account.password },
  });
  const [before] =
    await database.sql`select hashed_password, username from users where id = ${account.user.id}`;
  const res = await app.inject({
    method: 'PATCH',
    url: ME,
    headers: account.headers,
    payload: {
      username: 'renamed',
      current_password: 'not my password',
      new_password: 'a brand new password',
    },
  });
  t.equal(res.statusCode, 400);
  t.match(res.json(), { code: 'VALIDATION_FAILED', errors: [{ path: '/current_password' }] });
  const [after] =
    await database.sql`select hashed_password, username from users where id = ${account.user.id}`;
  t.same(after, before, 'neither the password nor the username changed');
  const login = await app.inject({
    method: 'POST',
    url: LOGIN,
    payload: { email: account.user.email, password: account.password },
  });
  t.equal(login.statusCode, 200, 'the old password still signs in');
  const otherMe = await app.inject({
    method: 'GET',
    url: ME,
    headers: { authorization: `Bearer ${other.json().token}` },
  });
  t.equal(otherMe.statusCode, 200, 'other sessions were not ended');
});

t.test('PATCH /me: a too short new password is 400 /new_password', async (t) => {
  const { app } = await testApp(t);
  const account = await signUp(app);
  for (const new_password of ['short', 'p'.repeat(257)]) {
    const res = await app.inject({
      method: 'PATCH',
      url: ME,
      headers: account.headers,
      payload: { current_password: account.password, new_password },
    });
    t.equal(res.statusCode, 400, `${new_password.length} characters`);
    t.match(res.json(), { code: 'VALIDATION_FAILED', errors: [{ path: /\/new_password$/ }] });
  }
});

t.test(
  'PATCH /me changes the password: old one refused, new one accepted, this token kept, other tokens revoked',
  async (t) => {
    const { app, database } = await testApp(t);
    const account = await signUp(app, { email: 'frank@example.com' });
    const login = await app.inject({
      method: 'POST',
      url: LOGIN,
      payload: { email: 'frank@example.com', password: account.password },
    });
    const otherHeaders = { authorization: `Bearer ${login.json().token}` };
    t.equal(
      (await app.inject({ method: 'GET', url: ME, headers: otherHeaders })).statusCode,
      200,
      'the other token works (and is cached)',
    );
    const stranger = await signUp(app);

    const res = await app.inject({
      method: 'PATCH',
      url: ME,
      headers: account.headers,
      payload: { current_password: account.password, new_password: 'a brand new password' },
    });
    t.equal(res.statusCode, 200);
    t.equal(res.json().id, account.user.id);
    t.notOk('hashed_password' in res.json());

    const oldLogin = await app.inject({
      method: 'POST',
      url: LOGIN,
      payload: { email: 'frank@example.com', password: account.password },
    });
    t.equal(oldLogin.statusCode, 401, 'the old password no longer signs in');
    const newLogin = await app.inject({
      method: 'POST',
      url: LOGIN,
      payload: { email: 'frank@example.com', password: 'a brand new password' },
    });
    t.equal(newLogin.statusCode, 200, 'the new password does');

    const same = await app.inject({ method: 'GET', url: ME, headers: account.headers });
    t.equal(same.statusCode, 200, 'the token in use still works');
    const other = await app.inject({ method: 'GET', url: ME, headers: otherHeaders });
    t.equal(other.statusCode, 401, 'the other token was revoked');
    t.match(other.json(), { code: 'UNAUTHENTICATED' });
    const strangers = await app.inject({ method: 'GET', url: ME, headers: stranger.headers });
    t.equal(strangers.statusCode, 200, "another user's token is untouched");

    const rows = await database.sql`
      select count(*) filter (where revoked_at is null)::int as live,
             count(*) filter (where revoked_at is not null)::int as revoked
      from api_tokens where user_id = ${account.user.id}
    `;
    t.same(rows[0], { live: 2, revoked: 1 }, 'the token in use and the new login live; the other is revoked');
  },
);

t.test('PATCH /me may change the username and the password at once', async (t) => {
  const { app } = await testApp(t);
  const account = await signUp(app);
  const res = await app.inject({
    method: 'PATCH',
    url: ME,
    headers: account.headers,
    payload: {
      username: 'both_at_once',
      current_password: account.password,
      new_password: 'another password',
    },
  });
  t.equal(res.statusCode, 200);
  t.equal(res.json().username, 'both_at_once');
  const login = await app.inject({
    method: 'POST',
    url: LOGIN,
    payload: { email: account.user.email, password: 'another password' },
  });
  t.equal(login.statusCode, 200);
});

t.test('PUT /me/ibkr links the account and never shows the tokens', async (t) => {
  const { app } = await testApp(t);
  const account = await signUp(app);
  const res = await app.inject({
    method: 'PUT',
    url: IBKR,
    headers: account.headers,
    payload: {
      ibkr_user_id: 'U1234567',
      access_token: 'plain-access-token-123',
      refresh_token: 'plain-refresh-token-456',
      token_expires_at: '2030-01-01T00:00:00.000Z',
    },
  });
  t.equal(res.statusCode, 200);
  const user = res.json();
  t.match(user, { id: account.user.id, is_ibkr_connected: true, ibkr_user_id: 'U1234567' });
  t.match(user.ibkr_connected_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
  t.same(Object.keys(user).sort(), PUBLIC_USER_FIELDS, 'no token field');
  t.notMatch(res.body, /plain-access-token-123|plain-refresh-token-456|v1:/);
  const me = await app.inject({ method: 'GET', url: ME, headers: account.headers });
  t.match(me.json(), { is_ibkr_connected: true, ibkr_user_id: 'U1234567' });
  t.notMatch(me.body, /plain-access-token-123|plain-refresh-token-456|v1:/);
});

t.test('PUT /me/ibkr stores the tokens encrypted for this user and field only', async (t) => {
  const { app, database } = await testApp(t);
  const account = await signUp(app);
  const other = await signUp(app);
  const res = await app.inject({
    method: 'PUT',
    url: IBKR,
    headers: account.headers,
    payload: {
      ibkr_user_id: 'U7654321',
      access_token: 'plain-access-token-123',
      refresh_token: 'plain-refresh-token-456',
      token_expires_at: '2030-01-01T00:00:00.000Z',
    },
  });
  t.equal(res.statusCode, 200);
  const [row] = await database.sql`
    select ibkr_access_token, ibkr_refresh_token, ibkr_token_expires_at
    from users where id = ${account.user.id}
  `;
  const access = row?.ibkr_access_token as string;
  const refresh = row?.ibkr_refresh_token as string;
  t.type(access, 'string');
  t.type(refresh, 'string');
  t.not(access, 'plain-access-token-123');
  t.not(refresh, 'plain-refresh-token-456');
  t.notMatch(access, /plain/);
  t.notMatch(refresh, /plain/);
  t.same(row?.ibkr_token_expires_at, new Date('2030-01-01T00:00:00.000Z'));

  const box = new SecretBox(TEST_IBKR_KEY);
  t.equal(box.decrypt(access, ibkrContext(account.user.id, 'access')), 'plain-access-token-123');
  t.equal(box.decrypt(refresh, ibkrContext(account.user.id, 'refresh')), 'plain-refresh-token-456');
  t.throws(
    () => box.decrypt(access, ibkrContext(other.user.id, 'access')),
    "not with another user's context",
  );
  t.throws(() => box.decrypt(access, ibkrContext(account.user.id, 'refresh')), 'not as the other field');
  t.throws(() => box.decrypt(refresh, ibkrContext(account.user.id, 'access')), 'not as the other field');
});

t.test('PUT /me/ibkr without tokens links the account with no stored token', async (t) => {
  const { app, database } = await testApp(t);
  const account = await signUp(app);
  const res = await app.inject({
    method: 'PUT',
    url: IBKR,
    headers: account.headers,
    payload: { ibkr_user_id: 'U0000001' },
  });
  t.equal(res.statusCode, 200);
  t.match(res.json(), { is_ibkr_connected: true, ibkr_user_id: 'U0000001' });
  const [row] = await database.sql`
    select ibkr_access_token, ibkr_refresh_token, ibkr_token_expires_at from users where id = ${account.user.id}
  `;
  t.same(row, { ibkr_access_token: null, ibkr_refresh_token: null, ibkr_token_expires_at: null });
});

t.test('PUT /me/ibkr again with the same account keeps ibkr_connected_at', async (t) => {
  const { app } = await testApp(t);
  const account = await signUp(app);
  const first = await app.inject({
    method: 'PUT',
    url: IBKR,
    headers: account.headers,
    payload: { ibkr_user_id: 'U5555555', access_token: 'one' },
  });
  const second = await app.inject({
    method: 'PUT',
    url: IBKR,
    headers: account.headers,
    payload: { ibkr_user_id: 'U5555555', access_token: 'two' },
  });
  t.equal(second.statusCode, 200);
  t.equal(second.json().ibkr_connected_at, first.json().ibkr_connected_at);
});

t.test('PUT /me/ibkr answers 409 IBKR_ACCOUNT_TAKEN when another user has linked it', async (t) => {
  const { app, database } = await testApp(t);
  const first = await signUp(app);
  const second = await signUp(app);
  const linked = await app.inject({
    method: 'PUT',
    url: IBKR,
    headers: first.headers,
    payload: { ibkr_user_id: 'U9999999', access_token: 'first-token' },
  });
  t.equal(linked.statusCode, 200);
  const res = await app.inject({
    method: 'PUT',
    url: IBKR,
    headers: second.headers,
    payload: { ibkr_user_id: 'U9999999', access_token: 'second-token' },
  });
  t.equal(res.statusCode, 409);
  t.match(res.headers['content-type'], /^application\/problem\+json/);
  t.match(res.json(), { status: 409, code: 'IBKR_ACCOUNT_TAKEN' });
  const rows = await database.sql`
    select id, ibkr_user_id, ibkr_access_token is not null as has_token
    from users where id in ${database.sql([first.user.id, second.user.id])} order by id
  `;
  t.same(
    rows.map((r) => ({ ...r })),
    [
      { id: first.user.id, ibkr_user_id: 'U9999999', has_token: true },
      { id: second.user.id, ibkr_user_id: null, has_token: false },
    ],
  );
});

t.test('PUT /me/ibkr refuses bad input with 400', async (t) => {
  const { app } = await testApp(t);
  const account = await signUp(app);
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['no ibkr_user_id', { access_token: 'x' }, 'ibkr_user_id'],
    ['an empty ibkr_user_id', { ibkr_user_id: '' }, 'ibkr_user_id'],
    ['a too long ibkr_user_id', { ibkr_user_id: 'U'.repeat(101) }, 'ibkr_user_id'],
    ['an empty access token', { ibkr_user_id: 'U1', access_token: '' }, 'access_token'],
    [
      'a token_expires_at that is no time',
      { ibkr_user_id: 'U1', token_expires_at: 'tomorrow' },
      'token_expires_at',
    ],
    ['an unknown property', { ibkr_user_id: 'U1', user_id: 1 }, 'user_id'],
    ['is_ibkr_connected', { ibkr_user_id: 'U1', is_ibkr_connected: false }, 'is_ibkr_connected'],
  ];
  for (const [label, payload, field] of cases) {
    const res = await app.inject({ method: 'PUT', url: IBKR, headers: account.headers, payload });
    t.equal(res.statusCode, 400, label);
    t.match(res.json(), { code: 'VALIDATION_FAILED', errors: [{ path: new RegExp(`/${field}$`) }] }, label);
  }
  const me = await app.inject({ method: 'GET', url: ME, headers: account.headers });
  t.equal(me.json().is_ibkr_connected, false, 'nothing was linked');
});

t.test(
  'DELETE /me/ibkr clears every IBKR field, and the account can be linked by someone else',
  async (t) => {
    const { app, database } = await testApp(t);
    const account = await signUp(app);
    const other = await signUp(app);
    await app.inject({
      method: 'PUT',
      url: IBKR,
      headers: account.headers,
      payload: {
        ibkr_user_id: 'U3333333',
        access_token: 'a-token',
        refresh_token: 'r-token',
        token_expires_at: '2030-01-01T00:00:00Z',
      },
    });
    const res = await app.inject({ method: 'DELETE', url: IBKR, headers: account.headers });
    t.equal(res.statusCode, 200);
    t.match(res.json(), {
      id: account.user.id,
      is_ibkr_connected: false,
      ibkr_user_id: null,
      ibkr_connected_at: null,
    });
    const [row] = await database.sql`
    select ibkr_user_id, ibkr_access_token, ibkr_refresh_token, ibkr_token_expires_at,
           ibkr_connected_at, is_ibkr_connected
    from users where id = ${account.user.id}
  `;
    t.same(row, {
      ibkr_user_id: null,
      ibkr_access_token: null,
      ibkr_refresh_token: null,
      ibkr_token_expires_at: null,
      ibkr_connected_at: null,
      is_ibkr_connected: false,
    });
    const again = await app.inject({ method: 'DELETE', url: IBKR, headers: account.headers });
    t.equal(again.statusCode, 200, 'unlinking an unlinked account is harmless');
    const relink = await app.inject({
      method: 'PUT',
      url: IBKR,
      headers: other.headers,
      payload: { ibkr_user_id: 'U3333333' },
    });
    t.equal(relink.statusCode, 200, 'the freed account can be linked by another user');
  },
);

t.test('the IBKR routes need a token', async (t) => {
  const { app } = await testApp(t);
  const put = await app.inject({ method: 'PUT', url: IBKR, payload: { ibkr_user_id: 'U1' } });
  t.equal(put.statusCode, 401);
  const del = await app.inject({ method: 'DELETE', url: IBKR });
  t.equal(del.statusCode, 401);
  const patch = await app.inject({ method: 'PATCH', url: ME, payload: { username: 'nobody' } });
  t.equal(patch.statusCode, 401);
});

t.test(
  'PATCH /me: concurrent password changes from the same current password: exactly one wins',
  async (t) => {
    const { app, database } = await testApp(t);
    const account = await signUp(app);
    const attempts = [
      'first new password',
      'second new password',
      'third new password',
      'fourth new password',
    ];
    const answers = await Promise.all(
      attempts.map((new_password) =>
        app.inject({
          method: 'PATCH',
          url: ME,
          headers: account.headers,
          payload: { current_password: account.password, new_password },
        }),
      ),
    );
    const won = answers.flatMap((res, i) => (res.statusCode === 200 ? [attempts[i]!] : []));
    t.equal(won.length, 1, `exactly one change succeeded (answers: ${answers.map((r) => r.statusCode)})`);
    for (const res of answers.filter((r) => r.statusCode !== 200)) {
      t.match(res.headers['content-type'], /^application\/problem\+json/);
      // 409 when it lost the race between its check and its write; 400 when it checked after the winner.
      t.ok(
        (res.statusCode === 409 && res.json().code === 'PASSWORD_CHANGED') ||
          (res.statusCode === 400 && res.json().errors?.[0]?.path === '/current_password'),
        `a loser answered ${res.statusCode} ${res.json().code}`,
      );
    }
    for (const password of [account.password, ...attempts]) {
      const login = await app.inject({
        method: 'POST',
        url: LOGIN,
        payload: { email: account.user.email, password },
      });
      t.equal(
        login.statusCode,
        password === won[0] ? 200 : 401,
        `${password} ${password === won[0] ? 'signs in' : 'does not'}`,
      );
    }
    const [row] = await database.sql`
    select count(*) filter (where revoked_at is null)::int as live from api_tokens where user_id = ${account.user.id}
  `;
    t.ok(row!.live >= 1, 'the token in use survives');
    t.equal((await app.inject({ url: ME, headers: account.headers })).statusCode, 200, 'and still works');
  },
);

t.test(
  'PATCH /me: a password changed between the check and the write is 409 PASSWORD_CHANGED and changes nothing',
  async (t) => {
    const { app, ctx, database } = await testApp(t);
    const account = await signUp(app);
    const other = await app.inject({
      method: 'POST',
      url: LOGIN,
      payload: { email: account.user.email, password: account.password },
    });
    const otherHeaders = { authorization: `Bearer ${other.json().token}` };
    // Another request changes the password right after this one has checked the current one.
    const prepare = ctx.auth.preparePasswordChange.bind(ctx.auth);
    let concurrent = false;
    ctx.auth.preparePasswordChange = async (...args) => {
      const change = await prepare(...args);
      if (!concurrent) {
        concurrent = true; // changePassword prepares too: only the request under test races
        await ctx.auth.changePassword(
          { ...args[0], token_key: Buffer.alloc(32).toString('base64') },
          account.password,
          'changed meanwhile',
        );
      }
      return change;
    };
    const [before] = await database.sql`select username from users where id = ${account.user.id}`;
    const res = await app.inject({
      method: 'PATCH',
      url: ME,
      headers: account.headers,
      payload: { username: 'renamed_too', current_password: account.password, new_password: 'mine wins?' },
    });
    t.equal(res.statusCode, 409);
    t.match(res.headers['content-type'], /^application\/problem\+json/);
    t.match(res.json(), { code: 'PASSWORD_CHANGED', status: 409 });
    const [after] = await database.sql`select username from users where id = ${account.user.id}`;
    t.equal(after?.username, before?.username, 'nothing was renamed');
    const login = (password: string) =>
      app.inject({ method: 'POST', url: LOGIN, payload: { email: account.user.email, password } });
    t.equal((await login('mine wins?')).statusCode, 401, 'the refused password was not stored');
    t.equal((await login('changed meanwhile')).statusCode, 200, 'the concurrent change stands');
    // The concurrent change revoked every token but its own (none of these): both sessions ended.
    t.equal((await app.inject({ url: ME, headers: otherHeaders })).statusCode, 401);
  },
);

t.test(
  'PATCH /me: when the rename fails after the password write, the password change is rolled back',
  async (t) => {
    const { app, database } = await testApp(t);
    const account = await signUp(app);
    const other = await app.inject({
      method: 'POST',
      url: LOGIN,
      payload: { email: account.user.email, password: account.password },
    });
    const [before] =
      await database.sql`select hashed_password, username from users where id = ${account.user.id}`;
    // The rename runs after the password write, in the same transaction: make it fail there.
    const update = UserRepository.prototype.update;
    UserRepository.prototype.update = async function (this: UserRepository, id, patch) {
      if (patch.username !== undefined) throw new DatabaseUnavailableError('injected failure');
      return update.call(this, id, patch);
    };
    t.teardown(() => {
      UserRepository.prototype.update = update;
    });
    const res = await app.inject({
      method: 'PATCH',
      url: ME,
      headers: account.headers,
      payload: {
        username: 'renamed',
        current_password: account.password,
        new_password: 'a brand new password',
      },
    });
    t.equal(res.statusCode, 503);
    t.match(res.headers['content-type'], /^application\/problem\+json/);
    const [after] =
      await database.sql`select hashed_password, username from users where id = ${account.user.id}`;
    t.same(after, before, 'neither the password nor the username changed');
    const otherMe = await app.inject({ url: ME, headers: { authorization: `Bearer ${other.json().token}` } });
    t.equal(otherMe.statusCode, 200, 'the other session was not ended');
  },
);

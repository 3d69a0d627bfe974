/** A change of role ends every session of the account (issue 7, item 1). */
import t from 'tap';
import { signUp, signUpAdmin, testApp } from '../helpers/app.ts';

const USERS = '/api/v1/users';
const ME = '/api/v1/me';

t.test(
  'a role change by PATCH /users/:id ends every session of that account, in its transaction',
  async (t) => {
    const test = await testApp(t);
    const { app, database } = test;
    const admin = await signUpAdmin(test);
    const user = await signUp(app);
    const second = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      payload: { email: user.user.email, password: user.password },
    });
    const tokens = [user.token, second.json().token as string];
    const live = async () => {
      const [row] = await database.sql`
      select count(*)::int as n from api_tokens where user_id = ${user.user.id} and revoked_at is null
    `;
      return row!.n as number;
    };
    // Warm the cache: the revocation must reach cached tokens too.
    for (const token of tokens)
      t.equal((await app.inject({ url: ME, headers: { authorization: `Bearer ${token}` } })).statusCode, 200);

    const other = await app.inject({
      method: 'PATCH',
      url: `${USERS}/${user.user.id}`,
      headers: admin.headers,
      payload: { is_verified: true, username: 'renamed_one' },
    });
    t.equal(other.statusCode, 200);
    t.equal(await live(), 2, 'changes other than the role keep the sessions');

    const same = await app.inject({
      method: 'PATCH',
      url: `${USERS}/${user.user.id}`,
      headers: admin.headers,
      payload: { role: 'user' },
    });
    t.equal(same.statusCode, 200);
    t.equal(await live(), 2, 'setting the role it has is no change');

    const promote = await app.inject({
      method: 'PATCH',
      url: `${USERS}/${user.user.id}`,
      headers: admin.headers,
      payload: { role: 'admin' },
    });
    t.equal(promote.statusCode, 200);
    t.equal(await live(), 0, 'promotion revoked every token of the account');
    for (const token of tokens) {
      const res = await app.inject({ url: USERS, headers: { authorization: `Bearer ${token}` } });
      t.equal(res.statusCode, 401, 'an old session never acts as admin');
    }

    const fresh = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      payload: { email: user.user.email, password: user.password },
    });
    const freshHeaders = { authorization: `Bearer ${fresh.json().token}` };
    t.equal(
      (await app.inject({ url: USERS, headers: freshHeaders })).statusCode,
      200,
      'a new session is admin',
    );
    const demote = await app.inject({
      method: 'PATCH',
      url: `${USERS}/${user.user.id}`,
      headers: admin.headers,
      payload: { role: 'user' },
    });
    t.equal(demote.statusCode, 200);
    t.equal((await app.inject({ url: ME, headers: freshHeaders })).statusCode, 401, 'demotion ends it too');

    const missing = await app.inject({
      method: 'PATCH',
      url: `${USERS}/999999999`,
      headers: admin.headers,
      payload: { role: 'admin' },
    });
    t.equal(missing.statusCode, 404);
  },
);

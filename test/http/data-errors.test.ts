/**
 * Class-22 data errors (PostgreSQL refusing a value, such as a NUL character in text) answer
 * 400 VALIDATION_FAILED naming the request field that carried the value, in the body, the
 * query string or a nested pointer, even when PostgreSQL names no column.
 */
import t from 'tap';
import { Database } from '../../src/db/database.ts';
import { ValidationError } from '../../src/domain/errors.ts';
import { signUp, signUpAdmin, testApp } from '../helpers/app.ts';
import { testLogger } from '../helpers/db.ts';

const harness = await testApp(t);
const { app } = harness;
const admin = await signUpAdmin(harness);
const user = await signUp(app);

interface Problem {
  status: number;
  code: string;
  errors?: { path: string; message: string }[];
}

const NUL_MESSAGE = 'contains a character that cannot be stored (NUL, or invalid UTF-8)';

t.test('a NUL in a JSON body field names that field', async (t) => {
  const login = await app.inject({
    method: 'POST',
    url: '/api/v1/auth/login',
    payload: { email: 'some\u0000one@example.com', password: 'correct horse battery' },
  });
  t.equal(login.statusCode, 400, login.body);
  const body = login.json<Problem>();
  t.equal(body.code, 'VALIDATION_FAILED');
  t.same(body.errors, [{ path: '/email', message: NUL_MESSAGE }], 'the field, not an empty path');

  const link = await app.inject({
    method: 'PUT',
    url: '/api/v1/me/ibkr',
    headers: user.headers,
    payload: { ibkr_user_id: 'U\u00001234' },
  });
  t.equal(link.statusCode, 400, link.body);
  t.same(link.json<Problem>().errors, [{ path: '/ibkr_user_id', message: NUL_MESSAGE }]);
});

t.test('a NUL in a query-string parameter names the parameter', async (t) => {
  const res = await app.inject({
    method: 'GET',
    url: '/api/v1/users/search?q=a%00b',
    headers: admin.headers,
  });
  t.equal(res.statusCode, 400, res.body);
  t.same(res.json<Problem>().errors, [{ path: '/q', message: NUL_MESSAGE }]);
});

t.test('the mapped error carries a test for the value when PostgreSQL names no column', async (t) => {
  const db = new Database(harness.database.sql, {
    log: testLogger(),
    slowQueryMs: 10_000,
    queryTimeoutMs: 10_000,
  });
  const sql = harness.database.sql;
  const nul = await db.one('test.nul', sql`select ${'a\u0000'}::text as x`).catch((e: unknown) => e);
  t.type(nul, ValidationError);
  const e = nul as ValidationError;
  t.equal(e.errors[0]?.path, '', 'PostgreSQL gives no column for a parameter');
  t.equal(e.offending?.('x\u0000'), true, 'the value test recognizes a NUL');
  t.equal(e.offending?.('x'), false);

  // Not a NUL: no value test, whatever the parameters hold.
  const other = await db.one('test.int', sql`select ${'12x'}::int as x`).catch((e: unknown) => e);
  t.type(other, ValidationError);
  t.equal((other as ValidationError).offending, undefined, 'no guess for other data errors');
});

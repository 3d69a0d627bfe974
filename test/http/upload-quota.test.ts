/**
 * Per-account upload quotas (MAX_SCRIPTS_PER_USER, MAX_STORAGE_BYTES_PER_USER), checked
 * by the insert under a lock on the owner, so parallel uploads never pass the last slot
 * together; and the per-account upload rate limit, counted in PostgreSQL.
 */
import type { LightMyRequestResponse } from 'fastify';
import t, { type Test } from 'tap';
import { type Account, multipartFile, signUp, type TestApp, testApp } from '../helpers/app.ts';

const SCRIPTS = '/api/v1/scripts';

function upload(ta: TestApp, account: Account, content: string | Buffer, filename = 'strategy.py') {
  const body = multipartFile(filename, content);
  return ta.app.inject({
    method: 'POST',
    url: SCRIPTS,
    payload: body.payload,
    headers: { ...account.headers, ...body.headers },
  });
}

function isProblem(t: Test, res: LightMyRequestResponse, status: number, code: string) {
  t.equal(res.statusCode, status, `status ${status}`);
  t.match(res.headers['content-type'], /^application\/problem\+json/, 'a problem+json answer');
  t.match(res.json(), { status, code });
}

/** Scripts and stored bytes of one user, as PostgreSQL has them. */
async function usage(ta: TestApp, userId: number) {
  const sql = ta.database.sql;
  const [row] = await sql<{ scripts: number; bytes: number; contents: number }[]>`
    select
      (select count(*) from scripts where user_id = ${userId})::int as scripts,
      (select coalesce(sum(file_size), 0) from scripts where user_id = ${userId})::int as bytes,
      (select count(*) from script_contents where user_id = ${userId})::int as contents
  `;
  return row!;
}

t.test(
  'the script-count quota: 409 SCRIPT_QUOTA_EXCEEDED, nothing written; a delete frees a slot',
  async (t) => {
    const ta = await testApp(t, { MAX_SCRIPTS_PER_USER: '3' });
    const alice = await signUp(ta.app);
    const bob = await signUp(ta.app);
    const ids: number[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await upload(ta, alice, `print(${i})\n`);
      t.equal(res.statusCode, 201, `upload ${i + 1} of 3`);
      ids.push(res.json().id);
    }
    const refused = await upload(ta, alice, 'print("one too many")\n');
    isProblem(t, refused, 409, 'SCRIPT_QUOTA_EXCEEDED');
    t.match(refused.json().detail, /at most 3 scripts/);
    t.same(
      await usage(ta, alice.user.id),
      { scripts: 3, bytes: 27, contents: 3 },
      'the refused upload wrote nothing',
    );

    t.equal((await upload(ta, bob, 'print("bob")\n')).statusCode, 201, 'the quota is per account');

    const del = await ta.app.inject({
      method: 'DELETE',
      url: `${SCRIPTS}/${ids[0]}`,
      headers: alice.headers,
    });
    t.equal(del.statusCode, 204);
    t.equal((await upload(ta, alice, 'print("again")\n')).statusCode, 201, 'a deleted script frees its slot');
  },
);

t.test('the storage quota: 413 STORAGE_QUOTA_EXCEEDED past the bytes, exactly the limit fits', async (t) => {
  const ta = await testApp(t, { MAX_STORAGE_BYTES_PER_USER: '100' });
  const alice = await signUp(ta.app);
  t.equal((await upload(ta, alice, 'x'.repeat(60))).statusCode, 201, '60 of 100 bytes');
  const refused = await upload(ta, alice, 'y'.repeat(41));
  isProblem(t, refused, 413, 'STORAGE_QUOTA_EXCEEDED');
  t.match(refused.json().detail, /at most 100 bytes.*60 are in use/);
  t.same(await usage(ta, alice.user.id), { scripts: 1, bytes: 60, contents: 1 }, 'nothing written');
  t.equal((await upload(ta, alice, 'z'.repeat(40))).statusCode, 201, 'up to the limit exactly');
  isProblem(t, await upload(ta, alice, 'w'), 413, 'STORAGE_QUOTA_EXCEEDED');
});

t.test('parallel uploads never pass the last slots together (count quota)', async (t) => {
  const ta = await testApp(t, { MAX_SCRIPTS_PER_USER: '4' });
  const alice = await signUp(ta.app);
  t.equal((await upload(ta, alice, 'print(0)\n')).statusCode, 201);
  // Three slots left, twelve uploads at once; large enough bodies that their transactions overlap.
  const body = Buffer.alloc(512 * 1024, 'a');
  for (let round = 0; round < 3; round++) {
    const results = await Promise.all(Array.from({ length: 12 }, () => upload(ta, alice, body)));
    const statuses = results.map((r) => r.statusCode).sort();
    const created = statuses.filter((s) => s === 201).length;
    t.equal(created, round === 0 ? 3 : 0, `round ${round + 1}: only the free slots are taken`);
    t.same(
      statuses.filter((s) => s !== 201),
      Array(12 - created).fill(409),
      'every other upload is refused with 409',
    );
    t.equal((await usage(ta, alice.user.id)).scripts, 4, 'never more scripts than the quota');
  }
  t.equal((await usage(ta, alice.user.id)).contents, 4, 'and no bytes of refused uploads');
});

t.test('parallel uploads never pass the storage quota together', async (t) => {
  const size = 256 * 1024;
  const ta = await testApp(t, { MAX_STORAGE_BYTES_PER_USER: String(size * 3) });
  const alice = await signUp(ta.app);
  const results = await Promise.all(
    Array.from({ length: 10 }, (_, i) => upload(ta, alice, Buffer.alloc(size, 97 + i))),
  );
  const statuses = results.map((r) => r.statusCode).sort();
  t.same(statuses, [...Array(3).fill(201), ...Array(7).fill(413)], 'three fit, seven are refused');
  t.same(await usage(ta, alice.user.id), { scripts: 3, bytes: size * 3, contents: 3 });
});

t.test('uploads are rate limited per account, counted in PostgreSQL', async (t) => {
  const ta = await testApp(t, { UPLOAD_RATE_LIMIT_MAX: '2', UPLOAD_RATE_LIMIT_WINDOW_SECONDS: '600' });
  const alice = await signUp(ta.app);
  const bob = await signUp(ta.app);
  t.equal((await upload(ta, alice, 'print(1)\n')).statusCode, 201);
  t.equal((await upload(ta, alice, 'print(2)\n')).statusCode, 201);
  const limited = await upload(ta, alice, 'print(3)\n');
  isProblem(t, limited, 429, 'RATE_LIMITED');
  t.ok(Number(limited.headers['retry-after']) > 0, 'with Retry-After');
  t.equal((await usage(ta, alice.user.id)).scripts, 2, 'the limited upload wrote nothing');
  t.equal((await upload(ta, bob, 'print("bob")\n')).statusCode, 201, 'another account has its own count');

  const rows = await ta.database.sql<{ key: string; hits: number }[]>`
    select key, hits from rate_limits where key like ${'POST /api/v1/scripts|%'} order by key
  `;
  t.same(
    rows.map((r) => [r.key.split('|')[1], r.hits]),
    [
      [`user:${alice.user.id}`, 3],
      [`user:${bob.user.id}`, 1],
    ],
    'one shared counter per account',
  );
});

t.test('OpenAPI lists the quota and rate-limit answers of the upload route', async (t) => {
  const ta = await testApp(t);
  await ta.app.ready();
  const doc = ta.app.swagger() as unknown as {
    paths: Record<string, Record<string, { responses: Record<string, unknown>; description?: string }>>;
  };
  const post = doc.paths['/api/v1/scripts']?.post;
  t.ok(post, 'POST /api/v1/scripts is documented');
  for (const status of ['409', '413', '429']) t.ok(post?.responses[status], `${status} is listed`);
  t.match(post?.description, /SCRIPT_QUOTA_EXCEEDED.*STORAGE_QUOTA_EXCEEDED.*RATE_LIMITED/s);
});

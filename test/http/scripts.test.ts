/**
 * Scripts over HTTP: upload (the row and its bytes in script_contents), listing in
 * offset and cursor mode, the admin's views, download and deletion.
 */
import { createHash } from 'node:crypto';
import contentDisposition from 'content-disposition';
import type { LightMyRequestResponse } from 'fastify';
import t, { type Test } from 'tap';
import { encodeCursor } from '../../src/domain/paging.ts';
import type { Script } from '../../src/domain/script.ts';
import { SCRIPT_SORTS } from '../../src/domain/script.ts';
import { type Account, multipartFile, signUp, signUpAdmin, type TestApp, testApp } from '../helpers/app.ts';
import { makeScript, queueRun, startQueuedRun } from '../helpers/fixtures.ts';

/**
 * The app over a fresh database, with load shedding off: @fastify/under-pressure takes a
 * sample window without any event-loop sample (a busy, loaded machine) as an infinite
 * delay and answers 503 SERVER_OVERLOADED, which is not what these tests are about.
 */
async function setup(t: Test, env: Record<string, string> = {}): Promise<TestApp> {
  const ta = await testApp(t, { MAX_EVENT_LOOP_DELAY_MS: '0', ...env });
  await ta.app.ready();
  return ta;
}

function problemOf(t: Test, res: LightMyRequestResponse, status: number, code?: string) {
  t.equal(res.statusCode, status, `status ${status}`);
  t.match(res.headers['content-type'], /^application\/problem\+json/, 'a problem+json answer');
  const body = res.json();
  t.equal(body.status, status);
  if (code !== undefined) t.equal(body.code, code, `code ${code}`);
  t.notMatch(res.body, /\/tmp\/|dollarclub-storage|node_modules|at \w+ \(/, 'no internal path or stack');
  return body as { code: string; errors?: Array<{ path: string; message: string }> };
}

function upload(ta: TestApp, account: Account, filename: string, content: string | Buffer, field?: string) {
  const body = multipartFile(filename, content, field);
  return ta.app.inject({
    method: 'POST',
    url: '/api/v1/scripts',
    payload: body.payload,
    headers: { ...account.headers, ...body.headers },
  });
}

/** A multipart body written by hand, for the malformed ones. */
function rawMultipart(ta: TestApp, account: Account, body: string, boundary: string | null = 'XyZzY') {
  return ta.app.inject({
    method: 'POST',
    url: '/api/v1/scripts',
    payload: body,
    headers: {
      ...account.headers,
      'content-type': boundary === null ? 'multipart/form-data' : `multipart/form-data; boundary=${boundary}`,
    },
  });
}

/** The script ids that have bytes in script_contents, in order. */
async function storedFiles(ta: TestApp): Promise<number[]> {
  const sql = ta.database.sql;
  const rows = await sql<{ script_id: number }[]>`select script_id from script_contents order by script_id`;
  return rows.map((r) => r.script_id);
}

/** The ids of the script rows, in order. */
async function fileKeys(ta: TestApp): Promise<number[]> {
  const sql = ta.database.sql;
  const rows = await sql<{ id: number }[]>`select id from scripts order by id`;
  return rows.map((r) => r.id);
}

/** The stored bytes of a script, or null. */
async function contentOf(ta: TestApp, id: number): Promise<Buffer | null> {
  const sql = ta.database.sql;
  const [row] = await sql<{ content: Buffer }[]>`select content from script_contents where script_id = ${id}`;
  return row?.content ?? null;
}

const hasContent = async (ta: TestApp, id: number) => (await contentOf(ta, id)) !== null;

async function scriptCount(ta: TestApp): Promise<number> {
  const sql = ta.database.sql;
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from scripts`;
  return row!.n;
}

/** Nothing was stored: no row, no bytes. */
async function nothingStored(t: Test, ta: TestApp, label: string) {
  t.equal(await scriptCount(ta), 0, `${label}: no row`);
  t.same(await storedFiles(ta), [], `${label}: no bytes left in script_contents`);
}

type RunState = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';

/** Puts a script in a state through the status machine (the executor's own calls). */
async function putInState(ta: TestApp, id: number, state: RunState, seconds = 1): Promise<void> {
  const { outcomes, runs } = ta.repos;
  await queueRun(ta.repos, id);
  if (state === 'queued') return;
  if (state === 'cancelled') {
    await runs.cancelScript(id);
    return;
  }
  const run = await startQueuedRun(ta.repos, id);
  if (state === 'running') return;
  const result = {
    exit_code: state === 'completed' ? 0 : 1,
    execution_time_seconds: seconds,
    memory_usage_mb: 2,
  };
  if (state === 'completed') await outcomes.complete(run.id, result);
  else await outcomes.fail(run.id, 'exit code 1', result);
}

async function ageScript(ta: TestApp, id: number, daysAgo: number): Promise<void> {
  const sql = ta.database.sql;
  await sql`
    update scripts
    set created_at = date_trunc('second', now()) - make_interval(days => ${daysAgo})
    where id = ${id}
  `;
}

const get = (ta: TestApp, account: Account, url: string) =>
  ta.app.inject({ method: 'GET', url, headers: account.headers });

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

// ---------------------------------------------------------------- upload

t.test('an upload answers 201 with the script (no file_path) and stores exactly its bytes', async (t) => {
  const ta = await setup(t);
  const alice = await signUp(ta.app);
  // Bytes that are not valid UTF-8, a NUL and CRLF: stored as sent, never re-encoded.
  const bytes = Buffer.concat([
    Buffer.from('print("hello")\r\n# \u00e9\n'),
    Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x0d, 0x0a]),
  ]);
  const res = await upload(ta, alice, 'strategy.py', bytes);
  t.equal(res.statusCode, 201);
  const script = res.json();
  t.match(script, {
    user_id: alice.user.id,
    original_filename: 'strategy.py',
    file_extension: '.py',
    file_size: bytes.length,
    sha256: sha256(bytes),
    status: 'uploaded',
    exit_code: null,
    execution_time_seconds: null,
    memory_usage_mb: null,
    error_message: null,
    started_at: null,
    completed_at: null,
  });
  t.match(script.filename, /^[0-9a-f-]{36}\.py$/, 'stored under a generated name');
  t.notOk('file_path' in script, 'the server path is never shown');
  t.notOk('execution_logs' in script);

  t.same(await contentOf(ta, script.id), bytes, 'script_contents holds exactly the uploaded bytes');
  const [row] = await ta.database.sql`
    select c.user_id, s.file_path from script_contents c join scripts s on s.id = c.script_id
  `;
  t.same(row, { user_id: alice.user.id, file_path: null }, 'keyed by script and owner; no file path');
  t.same(await storedFiles(ta), [script.id], 'one content row, the script’s');

  const again = await get(ta, alice, `/api/v1/scripts/${script.id}`);
  t.equal(again.statusCode, 200);
  t.same(again.json(), script, 'GET answers the same script');
});

t.test('.py, .js and .ts are accepted in any case; the extension is stored lower-cased', async (t) => {
  const ta = await setup(t);
  const alice = await signUp(ta.app);
  const cases: Array<[string, string]> = [
    ['a.py', '.py'],
    ['b.js', '.js'],
    ['c.ts', '.ts'],
    ['D.PY', '.py'],
    ['e.Js', '.js'],
    ['f.TS', '.ts'],
  ];
  for (const [name, extension] of cases) {
    const res = await upload(ta, alice, name, 'x = 1\n');
    t.equal(res.statusCode, 201, name);
    t.match(res.json(), { original_filename: name, file_extension: extension });
    t.match(res.json().filename, new RegExp(`\\${extension}$`));
  }
  t.same(await storedFiles(ta), await fileKeys(ta), 'one file per row');
});

t.test('an empty file is a 400 and leaves no row and no file', async (t) => {
  const ta = await setup(t);
  const alice = await signUp(ta.app);
  const body = problemOf(t, await upload(ta, alice, 'empty.py', ''), 400, 'EMPTY_FILE');
  t.same(body.errors, [{ path: '/file', message: 'must not be empty' }]);
  await nothingStored(t, ta, 'empty');
});

t.test('a file above MAX_UPLOAD_BYTES is a 413 and leaves nothing; one at the limit is taken', async (t) => {
  const ta = await setup(t, { MAX_UPLOAD_BYTES: '1000' });
  const alice = await signUp(ta.app);
  problemOf(t, await upload(ta, alice, 'big.py', Buffer.alloc(1001, 0x61)), 413, 'PAYLOAD_TOO_LARGE');
  await nothingStored(t, ta, 'one byte over');
  problemOf(t, await upload(ta, alice, 'huge.py', Buffer.alloc(300_000, 0x61)), 413, 'PAYLOAD_TOO_LARGE');
  await nothingStored(t, ta, 'far over');

  const res = await upload(ta, alice, 'exact.py', Buffer.alloc(1000, 0x61));
  t.equal(res.statusCode, 201, 'exactly MAX_UPLOAD_BYTES is accepted');
  t.equal(res.json().file_size, 1000);
  t.same(await storedFiles(ta), await fileKeys(ta));
});

t.test('a file that is not .py, .js or .ts is a 415 UNSUPPORTED_FILE_TYPE and leaves nothing', async (t) => {
  const ta = await setup(t);
  const alice = await signUp(ta.app);
  for (const name of ['run.sh', 'tool.exe', 'Makefile', 'x.py.exe', 'x.py.', 'x.pyc', 'x.tsx', 'x.py/']) {
    problemOf(t, await upload(ta, alice, name, 'echo hi\n'), 415, 'UNSUPPORTED_FILE_TYPE');
  }
  await nothingStored(t, ta, 'unsupported types');
});

t.test('a body that is not multipart is refused with a 415 problem and stores nothing', async (t) => {
  const ta = await setup(t);
  const alice = await signUp(ta.app);
  const json = await ta.app.inject({
    method: 'POST',
    url: '/api/v1/scripts',
    headers: alice.headers,
    payload: { file: 'print(1)', filename: 'a.py' },
  });
  problemOf(t, json, 415, 'UNSUPPORTED_MEDIA_TYPE');
  const text = await ta.app.inject({
    method: 'POST',
    url: '/api/v1/scripts',
    headers: { ...alice.headers, 'content-type': 'text/plain' },
    payload: 'print(1)',
  });
  problemOf(t, text, 415, 'UNSUPPORTED_MEDIA_TYPE');
  const none = await ta.app.inject({ method: 'POST', url: '/api/v1/scripts', headers: alice.headers });
  problemOf(t, none, 415, 'UNSUPPORTED_MEDIA_TYPE');
  await nothingStored(t, ta, 'not multipart');
});

t.test('a multipart body sent to any other route is a 415 problem and changes nothing', async (t) => {
  const ta = await setup(t);
  const alice = await signUp(ta.app);
  const uploaded = await upload(ta, alice, 'keep.py', 'print(1)\n');
  t.equal(uploaded.statusCode, 201, 'the upload route still reads multipart');
  const id = uploaded.json().id;
  const body = multipartFile('x.py', 'print(2)\n');
  for (const [method, url] of [
    ['PATCH', `/api/v1/scripts/${id}`],
    ['POST', `/api/v1/scripts/${id}/execute`],
    ['PATCH', '/api/v1/me'],
    ['POST', '/api/v1/auth/login'],
  ] as const) {
    const res = await ta.app.inject({
      method,
      url,
      headers: { ...alice.headers, ...body.headers },
      payload: body.payload,
    });
    problemOf(t, res, 415, 'UNSUPPORTED_MEDIA_TYPE');
  }
  const [row] = await ta.database.sql`select ibkr_access, run_count from scripts where id = ${id}`;
  t.same(row, { ibkr_access: false, run_count: 0 }, 'the script is as it was, with no run');
});

t.test('a file part not named `file` is a 400 naming the field', async (t) => {
  const ta = await setup(t);
  const alice = await signUp(ta.app);
  const body = problemOf(t, await upload(ta, alice, 'a.py', 'print(1)', 'upload'), 400, 'VALIDATION_FAILED');
  t.equal(body.errors?.[0]?.path, '/upload');
  await nothingStored(t, ta, 'wrong field');
});

t.test('a multipart body without a file part is a 400', async (t) => {
  const ta = await setup(t);
  const alice = await signUp(ta.app);
  problemOf(t, await rawMultipart(ta, alice, '--XyZzY--\r\n'), 400, 'FILE_REQUIRED');
  // A text field only, and a text field before the file: still no file where it should be.
  problemOf(
    t,
    await rawMultipart(
      ta,
      alice,
      '--XyZzY\r\nContent-Disposition: form-data; name="file"\r\n\r\nprint(1)\r\n--XyZzY--\r\n',
    ),
    400,
  );
  problemOf(
    t,
    await rawMultipart(
      ta,
      alice,
      '--XyZzY\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n' +
        '--XyZzY\r\nContent-Disposition: form-data; name="file"; filename="a.py"\r\n\r\nprint(1)\r\n--XyZzY--\r\n',
    ),
    400,
  );
  await nothingStored(t, ta, 'no file part');
});

t.test('a truncated or malformed multipart body is a 400, never a 500, and leaves nothing', async (t) => {
  const ta = await setup(t);
  const alice = await signUp(ta.app);
  const head = '--XyZzY\r\nContent-Disposition: form-data; name="file"; filename="a.py"\r\n';
  const cases: Array<[string, string, string | null]> = [
    ['cut off inside the file', `${head}\r\nprint(1)\nprint(2)`, 'XyZzY'],
    ['cut off inside the part headers', head, 'XyZzY'],
    ['cut off before the closing boundary', `${head}\r\nprint(1)\r\n--XyZzY`, 'XyZzY'],
    ['no boundary in the content type', `${head}\r\nprint(1)\r\n--XyZzY--\r\n`, null],
    ['a boundary that never appears', 'garbage garbage garbage', 'XyZzY'],
    ['another boundary than announced', `${head}\r\nprint(1)\r\n--XyZzY--\r\n`, 'Other'],
  ];
  for (const [label, body, boundary] of cases) {
    const res = await rawMultipart(ta, alice, body, boundary);
    t.equal(res.statusCode, 400, label);
    t.match(res.headers['content-type'], /^application\/problem\+json/, label);
  }
  await nothingStored(t, ta, 'malformed');
});

t.test('hostile file names are stored as sanitised text and never reach the file system', async (t) => {
  const ta = await setup(t);
  const alice = await signUp(ta.app);
  const long = `${'a'.repeat(1000)}.py`;
  const cases: Array<[string, string]> = [
    ['../../evil.py', 'evil.py'],
    ['..\\..\\evil.py', 'evil.py'],
    ['/etc/cron.d/evil.py', 'evil.py'],
    ['a\u0000b\u001b[31m\tc\u007f\u0085.py', 'ab[31mc.py'],
    [long, `${'a'.repeat(252)}.py`],
    ['x.exe.py', 'x.exe.py'],
    ['stratégie 📈 日本.py', 'stratégie 📈 日本.py'],
    ['.hidden.py', 'hidden.py'],
  ];
  for (const [name, expected] of cases) {
    const res = await upload(ta, alice, name, 'print(1)\n');
    t.equal(res.statusCode, 201, JSON.stringify(name.slice(0, 40)));
    const stored: string = res.json().original_filename;
    t.equal(stored, expected, `${JSON.stringify(name.slice(0, 40))} is kept as ${JSON.stringify(expected)}`);
    t.notMatch(stored, /[/\\]/, 'no path separator');
    // biome-ignore lint/suspicious/noControlCharactersInRegex: looking for control characters
    t.notMatch(stored, /[\u0000-\u001f\u007f-\u009f]/, 'no control character');
    t.ok([...stored].length <= 255, 'at most 255 characters');
    t.match(res.json().filename, /^[0-9a-f-]{36}\.py$/, 'the stored name is generated');
  }
  // A raw line break cannot be carried by a multipart header: the part is dropped, nothing is stored.
  const broken = await upload(ta, alice, 'a\u0000b\nc.py', 'print(1)\n');
  problemOf(t, broken, 400);

  const keys = await fileKeys(ta);
  t.equal(keys.length, cases.length);
  t.same(await storedFiles(ta), keys, 'script_contents holds exactly the bytes of the rows');
});

t.test('when the insert of the row fails no bytes are stored', async (t) => {
  const ta = await setup(t);
  const alice = await signUp(ta.app);
  const sql = ta.database.sql;
  await sql`alter table scripts add constraint ck_test_tiny check (file_size < 5)`;
  problemOf(t, await upload(ta, alice, 'ten.py', '0123456789'), 400);
  await nothingStored(t, ta, 'refused by a check constraint');
  const small = await upload(ta, alice, 'four.py', '0123');
  t.equal(small.statusCode, 201, 'a file the constraint allows is stored');
  t.same(await storedFiles(ta), await fileKeys(ta));
});

t.test('an upload without a token is a 401 and stores nothing', async (t) => {
  const ta = await setup(t);
  const body = multipartFile('a.py', 'print(1)');
  const res = await ta.app.inject({ method: 'POST', url: '/api/v1/scripts', ...body });
  problemOf(t, res, 401, 'UNAUTHENTICATED');
  await nothingStored(t, ta, 'anonymous');
});

// ---------------------------------------------------------------- list

interface ListData {
  ta: TestApp;
  alice: Account;
  bob: Account;
  admin: Account;
  /** Alice's scripts a1 (oldest) .. a5 (newest); a3 and a4 share created_at. */
  a: Script[];
  b1: Script;
  adminScript: Script;
}

/**
 * Alice: a1 5 days old, completed in 5.5 s; a2 4 days, completed in 0.25 s; a3 and a4
 * 2 days (a tie), a3 failed after 9 s, a4 running; a5 new, uploaded. Bob: b1 completed in 7 s.
 */
async function listData(t: Test): Promise<ListData> {
  const ta = await setup(t);
  const alice = await signUp(ta.app);
  const bob = await signUp(ta.app);
  const admin = await signUpAdmin(ta);
  const repos = ta.repos;
  const a: Script[] = [];
  for (let i = 0; i < 5; i++) a.push(await makeScript(repos, alice.user.id));
  const b1 = await makeScript(repos, bob.user.id);
  const adminScript = await makeScript(repos, admin.user.id);
  await putInState(ta, a[0]!.id, 'completed', 5.5);
  await putInState(ta, a[1]!.id, 'completed', 0.25);
  await putInState(ta, a[2]!.id, 'failed', 9);
  await putInState(ta, a[3]!.id, 'running');
  await putInState(ta, b1.id, 'completed', 7);
  await ageScript(ta, a[0]!.id, 5);
  await ageScript(ta, a[1]!.id, 4);
  const sql = ta.database.sql;
  await sql`
    update scripts set created_at = date_trunc('second', now()) - interval '2 days'
    where id in ${sql([a[2]!.id, a[3]!.id])}
  `;
  return { ta, alice, bob, admin, a, b1, adminScript };
}

const ids = (res: LightMyRequestResponse, key = 'scripts'): number[] =>
  (res.json()[key] as Array<{ id: number }>).map((s) => s.id);

t.test('GET /scripts lists only the caller’s scripts, newest first, as an offset page', async (t) => {
  const { ta, alice, bob, a, b1 } = await listData(t);
  const res = await get(ta, alice, '/api/v1/scripts');
  t.equal(res.statusCode, 200);
  const page = res.json();
  t.same(Object.keys(page).sort(), ['page', 'pages', 'per_page', 'scripts', 'total']);
  t.match(page, { total: 5, page: 1, per_page: 20, pages: 1 });
  t.same(
    ids(res),
    [a[4]!.id, a[3]!.id, a[2]!.id, a[1]!.id, a[0]!.id],
    'newest first (ties by id, newest first)',
  );
  for (const script of page.scripts) {
    t.equal(script.user_id, alice.user.id);
    t.notOk('file_path' in script);
  }
  t.same(ids(await get(ta, bob, '/api/v1/scripts')), [b1.id], 'Bob sees only his own');

  const second = await get(ta, alice, '/api/v1/scripts?per_page=2&page=2');
  t.match(second.json(), { total: 5, page: 2, per_page: 2, pages: 3 });
  t.same(ids(second), [a[2]!.id, a[1]!.id]);
  const beyond = await get(ta, alice, '/api/v1/scripts?per_page=2&page=4');
  t.same(beyond.json(), { scripts: [], total: 5, page: 4, per_page: 2, pages: 3 }, 'past the end: empty');
  t.equal((await get(ta, alice, '/api/v1/scripts?per_page=100')).statusCode, 200);
  for (const bad of ['per_page=0', 'per_page=101', 'page=0', 'page=x', 'unknown=1']) {
    problemOf(t, await get(ta, alice, `/api/v1/scripts?${bad}`), 400, 'VALIDATION_FAILED');
  }
});

t.test('GET /scripts filters by status, minimum execution time and creation time', async (t) => {
  const { ta, alice, a } = await listData(t);
  const list = async (query: string) => ids(await get(ta, alice, `/api/v1/scripts?${query}`));
  t.same(await list('status=completed'), [a[1]!.id, a[0]!.id]);
  t.same(await list('status=running'), [a[3]!.id]);
  t.same(await list('status=uploaded'), [a[4]!.id]);
  t.same(await list('status=cancelled'), []);
  t.same(await list('min_execution_time=1'), [a[2]!.id, a[0]!.id]);
  t.same(await list('min_execution_time=0.25'), [a[2]!.id, a[1]!.id, a[0]!.id]);
  t.same(await list('min_execution_time=9.5'), []);
  const since = new Date(Date.now() - 3 * 86_400_000).toISOString();
  t.same(await list(`created_since=${since}`), [a[4]!.id, a[3]!.id, a[2]!.id]);
  t.same(await list(`status=completed&min_execution_time=1&created_since=${new Date(0).toISOString()}`), [
    a[0]!.id,
  ]);
  const filtered = await get(ta, alice, '/api/v1/scripts?status=completed&per_page=1');
  t.match(filtered.json(), { total: 2, pages: 2 }, 'the total counts the filtered rows');
  for (const bad of [
    'status=done',
    'min_execution_time=-1',
    'min_execution_time=abc',
    'created_since=yesterday',
  ]) {
    problemOf(t, await get(ta, alice, `/api/v1/scripts?${bad}`), 400, 'VALIDATION_FAILED');
  }
});

t.test('GET /scripts sorts by each `sort` value', async (t) => {
  const { ta, alice, a } = await listData(t);
  const [a1, a2, a3, a4, a5] = a.map((s) => s.id);
  const expected: Record<(typeof SCRIPT_SORTS)[number], number[]> = {
    created_at: [a1!, a2!, a3!, a4!, a5!],
    '-created_at': [a5!, a4!, a3!, a2!, a1!],
    // Never run (no time) sorts as the shortest.
    execution_time_seconds: [a4!, a5!, a2!, a1!, a3!],
    '-execution_time_seconds': [a3!, a1!, a2!, a5!, a4!],
  };
  for (const sort of SCRIPT_SORTS) {
    t.same(ids(await get(ta, alice, `/api/v1/scripts?sort=${sort}`)), expected[sort], `sort=${sort}`);
  }
  problemOf(t, await get(ta, alice, '/api/v1/scripts?sort=filename'), 400, 'VALIDATION_FAILED');
});

t.test('cursor mode walks every script once, in the order of the offset page, for each sort', async (t) => {
  const { ta, alice } = await listData(t);
  for (const sort of SCRIPT_SORTS) {
    const seen: number[] = [];
    let cursor: string | null = '';
    let pages = 0;
    while (cursor !== null) {
      const res = await get(
        ta,
        alice,
        `/api/v1/scripts?sort=${sort}&per_page=2&cursor=${encodeURIComponent(cursor)}`,
      );
      t.equal(res.statusCode, 200);
      const page = res.json();
      t.same(Object.keys(page).sort(), ['next_cursor', 'scripts'], 'a cursor page');
      seen.push(...ids(res));
      cursor = page.next_cursor;
      if (cursor !== null) t.match(cursor, /^[A-Za-z0-9_-]+$/, 'an opaque url-safe cursor');
      if (++pages > 10) throw new Error('the walk does not end');
    }
    t.equal(pages, 3, `${sort}: 5 scripts in pages of 2`);
    const offset = await get(ta, alice, `/api/v1/scripts?sort=${sort}&per_page=100`);
    t.same(seen, ids(offset), `sort=${sort}: every script once, in order`);
  }
  // Filters apply in cursor mode too.
  const completed = await get(ta, alice, '/api/v1/scripts?cursor=&status=completed&per_page=5');
  t.equal(completed.json().scripts.length, 2);
  t.equal(completed.json().next_cursor, null, 'the last page has no next cursor');
});

t.test('a tampered or foreign cursor is a 400 INVALID_CURSOR, never a 500', async (t) => {
  const { ta, alice } = await listData(t);
  const first = (await get(ta, alice, '/api/v1/scripts?cursor=&per_page=1')).json();
  const real: string = first.next_cursor;
  t.type(real, 'string');
  const tampered = [
    real.slice(0, -2),
    `${real}x`,
    `${real.slice(0, 4)}${real[4] === 'A' ? 'B' : 'A'}${real.slice(5)}`,
    'not a cursor!',
    Buffer.from('garbage').toString('base64url'),
    encodeCursor(['-created_at']),
    encodeCursor(['-created_at', 5, 1]),
    encodeCursor(['-created_at', '2026-01-01T00:00:00Z', 0]),
    encodeCursor(['-created_at', '2026-01-01T00:00:00Z', 'x']),
    encodeCursor(['-created_at', 'x'.repeat(100), 1]),
    encodeCursor(['bogus', 1, 1]),
    Buffer.from(JSON.stringify({ sort: '-created_at' })).toString('base64url'),
  ];
  for (const cursor of tampered) {
    const res = await get(ta, alice, `/api/v1/scripts?cursor=${encodeURIComponent(cursor)}`);
    problemOf(t, res, 400, 'INVALID_CURSOR');
  }
  // A cursor issued for one sort is refused by another.
  const other = await get(ta, alice, `/api/v1/scripts?sort=created_at&cursor=${real}`);
  problemOf(t, other, 400, 'INVALID_CURSOR');
  // Out of range for the sort key or the id.
  for (const [sort, cursor] of [
    ['-created_at', encodeCursor(['-created_at', '2026-01-01T00:00:00Z', 1e300])],
    ['-execution_time_seconds', encodeCursor(['-execution_time_seconds', 1e300, 1])],
    ['execution_time_seconds', encodeCursor(['execution_time_seconds', -1e308, 2 ** 60])],
  ]) {
    problemOf(
      t,
      await get(ta, alice, `/api/v1/scripts?sort=${sort}&cursor=${cursor}`),
      400,
      'INVALID_CURSOR',
    );
  }
  // Well-formed, but a timestamp PostgreSQL cannot read: a 400 too. (Its code is VALIDATION_FAILED,
  // from the database's refusal, with an empty path: reported, since INVALID_CURSOR is meant.)
  const unreadable = encodeCursor(['-created_at', '2026-13-45T99:00:00Z', 1]);
  problemOf(t, await get(ta, alice, `/api/v1/scripts?cursor=${unreadable}`), 400);
  // Longer than any cursor the server issues: refused by the schema.
  problemOf(t, await get(ta, alice, `/api/v1/scripts?cursor=${'A'.repeat(600)}`), 400);
});

t.test('a user asking for other users’ scripts (user_id, all) gets 403', async (t) => {
  const { ta, alice, bob } = await listData(t);
  for (const query of [`user_id=${bob.user.id}`, 'all=true', `user_id=${bob.user.id}&all=true`]) {
    problemOf(t, await get(ta, alice, `/api/v1/scripts?${query}`), 403, 'FORBIDDEN');
  }
});

t.test('a user naming its own scripts (its user_id, all=false) gets its own list', async (t) => {
  const { ta, alice } = await listData(t);
  const own = ids(await get(ta, alice, '/api/v1/scripts'));
  t.ok(own.length > 0);
  for (const query of [`user_id=${alice.user.id}`, 'all=false', `user_id=${alice.user.id}&all=false`])
    t.same(ids(await get(ta, alice, `/api/v1/scripts?${query}`)), own, query);
});

t.test(
  'an admin lists its own scripts by default, one user’s with user_id, everyone’s with all',
  async (t) => {
    const { ta, admin, alice, bob, a, b1, adminScript } = await listData(t);
    t.same(ids(await get(ta, admin, '/api/v1/scripts')), [adminScript.id], 'own by default');
    t.same(
      ids(await get(ta, admin, `/api/v1/scripts?user_id=${alice.user.id}`)),
      a.map((s) => s.id).reverse(),
    );
    t.same(ids(await get(ta, admin, `/api/v1/scripts?user_id=${bob.user.id}`)), [b1.id]);
    const all = await get(ta, admin, '/api/v1/scripts?all=true&per_page=100');
    t.equal(all.json().total, 7);
    t.same(
      ids(all).sort((x, y) => x - y),
      [...a.map((s) => s.id), b1.id, adminScript.id].sort((x, y) => x - y),
    );
    t.same(
      ids(await get(ta, admin, '/api/v1/scripts?all=true&status=completed&sort=-execution_time_seconds')),
      [b1.id, a[0]!.id, a[1]!.id],
    );
    t.same(ids(await get(ta, admin, '/api/v1/scripts?user_id=999999')), [], 'an unknown user has none');
    const both = await get(ta, admin, `/api/v1/scripts?user_id=${alice.user.id}&all=true`);
    problemOf(t, both, 400, 'VALIDATION_FAILED');
  },
);

t.test('GET /scripts/recent is for admins: scripts of the last `days` with their owner', async (t) => {
  const { ta, admin, alice, bob, a, b1, adminScript } = await listData(t);
  await ageScript(ta, a[0]!.id, 10);
  problemOf(t, await get(ta, alice, '/api/v1/scripts/recent'), 403, 'FORBIDDEN');
  problemOf(t, await ta.app.inject({ method: 'GET', url: '/api/v1/scripts/recent' }), 401, 'UNAUTHENTICATED');

  const res = await get(ta, admin, '/api/v1/scripts/recent');
  t.equal(res.statusCode, 200);
  const { scripts } = res.json();
  t.same(Object.keys(res.json()), ['scripts']);
  t.notOk(ids(res).includes(a[0]!.id), 'a script of 10 days ago is not in the default 7 days');
  t.equal(scripts.length, 6);
  const created = scripts.map((s: { created_at: string }) => Date.parse(s.created_at));
  t.same(
    created,
    [...created].sort((x: number, y: number) => y - x),
    'newest first',
  );
  const owners = new Map([
    [alice.user.id, alice.user],
    [bob.user.id, bob.user],
    [admin.user.id, admin.user],
  ]);
  for (const script of scripts) {
    const owner = owners.get(script.user_id)!;
    t.same(script.user, { id: owner.id, email: owner.email, username: owner.username }, 'the owner embedded');
    t.notOk('file_path' in script);
  }
  t.ok(ids(res).includes(b1.id) && ids(res).includes(adminScript.id), 'everyone’s scripts');

  const month = await get(ta, admin, '/api/v1/scripts/recent?days=30');
  t.equal(month.json().scripts.length, 7, 'days=30 reaches the old one');
  t.equal(ids(month).at(-1), a[0]!.id, 'the oldest last');
  const three = await get(ta, admin, '/api/v1/scripts/recent?days=3');
  t.same(ids(three).sort(), [a[2]!.id, a[3]!.id, a[4]!.id, b1.id, adminScript.id].sort());
  const limited = await get(ta, admin, '/api/v1/scripts/recent?days=30&limit=2');
  t.same(ids(limited), ids(month).slice(0, 2), 'limit keeps the newest');
  for (const bad of ['days=0', 'days=x', 'limit=0', 'limit=1001', 'user_id=1']) {
    problemOf(t, await get(ta, admin, `/api/v1/scripts/recent?${bad}`), 400, 'VALIDATION_FAILED');
  }
});

// ---------------------------------------------------------------- one script, content, delete

t.test('GET /scripts/:id answers the script; an unknown or malformed id is 404 or 400', async (t) => {
  const ta = await setup(t);
  const alice = await signUp(ta.app);
  const script = (await upload(ta, alice, 'one.ts', 'const x = 1;\n')).json();
  const res = await get(ta, alice, `/api/v1/scripts/${script.id}`);
  t.equal(res.statusCode, 200);
  t.same(res.json(), script);
  problemOf(t, await get(ta, alice, `/api/v1/scripts/${script.id + 1000}`), 404, 'NOT_FOUND');
  for (const bad of ['0', '-1', 'abc', '1.5', '99999999999999999999']) {
    problemOf(t, await get(ta, alice, `/api/v1/scripts/${bad}`), 400, 'VALIDATION_FAILED');
  }
});

t.test(
  'GET /scripts/:id/content answers the exact bytes as an attachment under the original name',
  async (t) => {
    const ta = await setup(t);
    const alice = await signUp(ta.app);
    const bytes = Buffer.from(Array.from({ length: 512 }, (_, i) => i % 256));
    const script = (await upload(ta, alice, 'my strategy.py', bytes)).json();
    const res = await get(ta, alice, `/api/v1/scripts/${script.id}/content`);
    t.equal(res.statusCode, 200);
    t.same(res.rawPayload, bytes, 'exactly the uploaded bytes');
    t.equal(res.headers['content-type'], 'application/octet-stream');
    t.equal(res.headers['content-length'], String(bytes.length));
    t.equal(res.headers['content-disposition'], 'attachment; filename="my strategy.py"');
    problemOf(t, await get(ta, alice, `/api/v1/scripts/${script.id + 1000}/content`), 404, 'NOT_FOUND');
  },
);

t.test(
  'GET /scripts/:id/content of a script whose file is missing is a 404 problem, not a 500',
  async (t) => {
    const ta = await setup(t);
    const alice = await signUp(ta.app);
    const script = (await upload(ta, alice, 'lost.py', 'print(1)\n')).json();
    await ta.database.sql`delete from script_contents where script_id = ${script.id}`;
    const res = await get(ta, alice, `/api/v1/scripts/${script.id}/content`);
    const body = problemOf(t, res, 404, 'NOT_FOUND');
    t.notOk(res.headers['content-disposition'], 'no attachment header on the problem');
    t.match(body, { detail: /file/ });
    t.equal((await get(ta, alice, `/api/v1/scripts/${script.id}`)).statusCode, 200, 'the row is still there');
  },
);

t.test('the download name is the sanitised one, non-ASCII encoded as filename*=UTF-8', async (t) => {
  const ta = await setup(t);
  const alice = await signUp(ta.app);
  const cases: Array<[string, string]> = [
    ['stratégie 📈.py', 'stratégie 📈.py'],
    ['../../evil.py', 'evil.py'],
    ['a\u0000b\u001bc.js', 'abc.js'],
    ['日本語.ts', '日本語.ts'],
  ];
  const headers = new Map<string, string>();
  for (const [name, expected] of cases) {
    const script = (await upload(ta, alice, name, 'x\n')).json();
    const res = await get(ta, alice, `/api/v1/scripts/${script.id}/content`);
    t.equal(res.statusCode, 200);
    const header = String(res.headers['content-disposition']);
    headers.set(expected, header);
    // RFC 6266: the plain `filename` is an ISO-8859-1 fallback; `filename*` carries the UTF-8 name.
    t.match(header, /^[\x20-\x7e\xa0-\xff]*$/, 'the header is ISO-8859-1 text, no control character');
    t.match(header, /^attachment;/);
    t.equal(contentDisposition.parse(header).parameters.filename, expected, `${expected} round-trips`);
  }
  t.match(
    headers.get('stratégie 📈.py'),
    "filename*=UTF-8''strat%C3%A9gie%20%F0%9F%93%88.py",
    'RFC 5987 encoding of the UTF-8 name',
  );
  t.equal(headers.get('evil.py'), 'attachment; filename="evil.py"');
});

t.test('DELETE /scripts/:id answers 204 and removes the row and the file', async (t) => {
  const ta = await setup(t);
  const alice = await signUp(ta.app);
  const keep = (await upload(ta, alice, 'keep.py', 'print(0)\n')).json();
  const script = (await upload(ta, alice, 'gone.py', 'print(1)\n')).json();
  const res = await ta.app.inject({
    method: 'DELETE',
    url: `/api/v1/scripts/${script.id}`,
    headers: alice.headers,
  });
  t.equal(res.statusCode, 204);
  t.equal(res.body, '');
  problemOf(t, await get(ta, alice, `/api/v1/scripts/${script.id}`), 404, 'NOT_FOUND');
  t.notOk(await hasContent(ta, script.id), 'its bytes are gone');
  t.same(await storedFiles(ta), [keep.id], 'the other script’s bytes stay');
  const again = await ta.app.inject({
    method: 'DELETE',
    url: `/api/v1/scripts/${script.id}`,
    headers: alice.headers,
  });
  problemOf(t, again, 404, 'NOT_FOUND');
});

t.test('DELETE /scripts/:id is a 409 INVALID_STATE while queued or running; row and file stay', async (t) => {
  const ta = await setup(t);
  const alice = await signUp(ta.app);
  for (const state of ['queued', 'running'] as const) {
    const script = (await upload(ta, alice, `${state}.py`, 'print(1)\n')).json();
    await putInState(ta, script.id, state);
    const del = () =>
      ta.app.inject({ method: 'DELETE', url: `/api/v1/scripts/${script.id}`, headers: alice.headers });
    problemOf(t, await del(), 409, 'INVALID_STATE');
    t.match(
      (await get(ta, alice, `/api/v1/scripts/${script.id}`)).json(),
      { status: state },
      'the row stays',
    );
    t.ok(await hasContent(ta, script.id), 'its bytes stay');
    const content = await get(ta, alice, `/api/v1/scripts/${script.id}/content`);
    t.equal(content.body, 'print(1)\n', 'and can still be downloaded');
    if (state === 'running') {
      await ta.repos.outcomes.complete((await ta.repos.scripts.getById(script.id)).last_run_id!, {
        exit_code: 0,
        execution_time_seconds: 1,
        memory_usage_mb: 2,
      });
    } else {
      await ta.repos.runs.cancelScript(script.id);
    }
    t.equal((await del()).statusCode, 204, 'deletable once the run is over');
    t.notOk(await hasContent(ta, script.id));
  }
  t.same(await storedFiles(ta), []);
});

/**
 * The runs API: lists (own, filtered, admin), one run, a script's history, a run's
 * output (plain, tail, followed: a finished run streams its output and `end` at once),
 * cancel; scoping (someone else's run is a 404) and problem answers. Runs are put in
 * their states through the repositories, as an executor would.
 */
import t from 'tap';
import { type Account, signUp, signUpAdmin, type TestApp, testApp } from '../helpers/app.ts';
import { LEASE, makeScript, queueRun, startRun } from '../helpers/fixtures.ts';

const ok = { exit_code: 0, execution_time_seconds: 1, memory_usage_mb: 2 };

function get(f: TestApp, account: Account, url: string) {
  return f.app.inject({ url, headers: account.headers });
}

async function finishedRun(f: TestApp, scriptId: number, output: string) {
  const run = await startRun(f.repos, scriptId);
  if (output !== '') await f.repos.output.appendLog(run.id, LEASE.executorId, 0, output);
  return f.repos.outcomes.complete(run.id, ok);
}

t.test('one run, a script’s history, lists and filters, scoped to the owner', async (t) => {
  const f = await testApp(t);
  const alice = await signUp(f.app);
  const bob = await signUp(f.app);
  const admin = await signUpAdmin(f);
  const a1 = await makeScript(f.repos, alice.user.id);
  const a2 = await makeScript(f.repos, alice.user.id);
  const b1 = await makeScript(f.repos, bob.user.id);
  const r1 = await finishedRun(f, a1.id, 'one\n');
  const r2 = await finishedRun(f, a1.id, 'two\n');
  const r3 = await queueRun(f.repos, a2.id);
  const rb = await finishedRun(f, b1.id, 'bob\n');

  const one = await get(f, alice, `/api/v1/runs/${r1.id}`);
  t.equal(one.statusCode, 200);
  t.match(one.json(), { id: r1.id, script_id: a1.id, status: 'completed', log_bytes: 4, trigger: 'manual' });
  t.same(Object.keys(one.json()).sort(), Object.keys(r1).sort(), 'exactly the Run fields');
  const foreign = await get(f, bob, `/api/v1/runs/${r1.id}`);
  t.equal(foreign.statusCode, 404);
  t.match(foreign.headers['content-type'], /application\/problem\+json/);
  t.equal((await get(f, admin, `/api/v1/runs/${r1.id}`)).statusCode, 200, 'an admin sees anyone’s');
  t.equal((await get(f, alice, '/api/v1/runs/abc')).statusCode, 400);

  const mine = (await get(f, alice, '/api/v1/runs')).json();
  t.same(
    mine.runs.map((r: { id: number }) => r.id),
    [r3.id, r2.id, r1.id],
    'own runs, newest first',
  );
  t.equal(mine.next_cursor, null);
  const page1 = (await get(f, alice, '/api/v1/runs?per_page=2')).json();
  t.equal(page1.runs.length, 2);
  const page2 = (await get(f, alice, `/api/v1/runs?per_page=2&cursor=${page1.next_cursor}`)).json();
  t.same(
    page2.runs.map((r: { id: number }) => r.id),
    [r1.id],
  );
  const filtered = async (query: string) =>
    (await get(f, alice, `/api/v1/runs?${query}`)).json().runs.map((r: { id: number }) => r.id);
  t.same(await filtered(`script_id=${a1.id}`), [r2.id, r1.id]);
  t.same(await filtered('status=queued'), [r3.id]);
  t.same(await filtered('trigger=schedule'), []);
  t.same(await filtered(`since=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`), []);
  t.equal((await get(f, alice, '/api/v1/runs?cursor=bm90LWEtY3Vyc29y')).json().code, 'INVALID_CURSOR');
  t.equal((await get(f, alice, '/api/v1/runs?status=uploaded')).statusCode, 400);
  t.equal((await get(f, alice, `/api/v1/runs?user_id=${bob.user.id}`)).statusCode, 403);
  t.equal((await get(f, alice, '/api/v1/runs?all=true')).statusCode, 403);
  t.same(
    (await get(f, admin, '/api/v1/runs?all=true')).json().runs.map((r: { id: number }) => r.id),
    [rb.id, r3.id, r2.id, r1.id],
  );
  t.same(
    (await get(f, admin, `/api/v1/runs?user_id=${bob.user.id}`)).json().runs.map((r: { id: number }) => r.id),
    [rb.id],
  );

  const history = await get(f, alice, `/api/v1/scripts/${a1.id}/runs`);
  t.equal(history.statusCode, 200);
  t.same(
    history.json().runs.map((r: { id: number }) => r.id),
    [r2.id, r1.id],
  );
  t.equal((await get(f, bob, `/api/v1/scripts/${a1.id}/runs`)).statusCode, 404);
  const script = (await get(f, alice, `/api/v1/scripts/${a1.id}`)).json();
  t.match(script, { status: 'completed', last_run_id: r2.id, run_count: 2 });
});

t.test(
  'logs of a run: plain, tail, 404 for someone else; the script’s logs are its latest run’s',
  async (t) => {
    const f = await testApp(t);
    const alice = await signUp(f.app);
    const bob = await signUp(f.app);
    const script = await makeScript(f.repos, alice.user.id);
    const first = await finishedRun(f, script.id, 'a\nb\nc\n');
    await finishedRun(f, script.id, 'second run\n');
    const plain = await get(f, alice, `/api/v1/runs/${first.id}/logs`);
    t.equal(plain.statusCode, 200);
    t.match(plain.headers['content-type'], /^text\/plain/);
    t.equal(plain.body, 'a\nb\nc\n', 'run 1’s output after run 2');
    t.equal((await get(f, alice, `/api/v1/runs/${first.id}/logs?tail=2`)).body, 'b\nc\n');
    t.equal((await get(f, bob, `/api/v1/runs/${first.id}/logs`)).statusCode, 404);
    t.equal((await get(f, alice, `/api/v1/runs/${first.id}/logs?tail=0`)).statusCode, 400);
    t.equal((await get(f, alice, `/api/v1/scripts/${script.id}/logs`)).body, 'second run\n');
    const never = await makeScript(f.repos, alice.user.id);
    t.equal((await get(f, alice, `/api/v1/scripts/${never.id}/logs`)).body, '', 'no run yet: no output');
  },
);

t.test('follow of a finished run sends its output and `end` at once', async (t) => {
  const f = await testApp(t);
  const alice = await signUp(f.app);
  const script = await makeScript(f.repos, alice.user.id);
  const run = await finishedRun(f, script.id, 'done\n');
  await f.app.listen({ port: 0, host: '127.0.0.1' });
  const address = f.app.server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  const res = await fetch(`http://127.0.0.1:${address.port}/api/v1/runs/${run.id}/logs?follow=true`, {
    headers: alice.headers,
  });
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type'), /^text\/event-stream/);
  t.equal(res.headers.get('cache-control'), 'no-cache, no-transform', "the stream's own caching rule");
  t.equal(res.headers.get('x-content-type-options'), 'nosniff', 'the security headers of every answer');
  t.equal(res.headers.get('content-security-policy'), "default-src 'none';frame-ancestors 'none'");
  t.equal(res.headers.get('x-frame-options'), 'DENY');
  t.ok(res.headers.get('x-request-id'), 'its request id');
  const body = await res.text();
  t.equal(
    body,
    'event: log\ndata: done\ndata: \n\nevent: end\ndata: {"status":"completed","exit_code":0}\n\n',
  );
  const never = await makeScript(f.repos, alice.user.id);
  const idle = await fetch(`http://127.0.0.1:${address.port}/api/v1/scripts/${never.id}/logs?follow=true`, {
    headers: alice.headers,
  });
  t.equal(await idle.text(), 'event: end\ndata: {"status":"uploaded","exit_code":null}\n\n');
});

t.test(
  'cancel a run: queued or running → cancelled (200 run), otherwise 409, someone else 404',
  async (t) => {
    const f = await testApp(t);
    const alice = await signUp(f.app);
    const bob = await signUp(f.app);
    const script = await makeScript(f.repos, alice.user.id);
    const run = await queueRun(f.repos, script.id);
    const cancel = (account: Account, id: number) =>
      f.app.inject({ method: 'POST', url: `/api/v1/runs/${id}/cancel`, headers: account.headers });
    t.equal((await cancel(bob, run.id)).statusCode, 404);
    const done = await cancel(alice, run.id);
    t.equal(done.statusCode, 200);
    t.match(done.json(), { id: run.id, status: 'cancelled', error_message: 'cancelled' });
    const again = await cancel(alice, run.id);
    t.equal(again.statusCode, 409);
    t.equal(again.json().code, 'INVALID_STATE');
    t.equal((await cancel(alice, 2 ** 40)).statusCode, 404);
    const running = await startRun(f.repos, script.id);
    t.match((await cancel(alice, running.id)).json(), { status: 'cancelled' });
    t.match((await get(f, alice, `/api/v1/scripts/${script.id}`)).json(), {
      status: 'cancelled',
      run_count: 2,
    });
  },
);

t.test(
  'a followed log stream carries the CORS headers of a listed origin, and none for another',
  async (t) => {
    const allowed = 'http://127.0.0.1:5173';
    const f = await testApp(t, { CORS_ORIGINS: allowed });
    const alice = await signUp(f.app);
    const script = await makeScript(f.repos, alice.user.id);
    await f.app.listen({ port: 0, host: '127.0.0.1' });
    const address = f.app.server.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    const url = `http://127.0.0.1:${address.port}/api/v1/scripts/${script.id}/logs?follow=true`;
    const listed = await fetch(url, { headers: { ...alice.headers, origin: allowed } });
    t.match(listed.headers.get('content-type'), /^text\/event-stream/, 'a stream (a hijacked response)');
    t.equal(listed.headers.get('access-control-allow-origin'), allowed);
    t.equal(listed.headers.get('access-control-allow-credentials'), 'true');
    t.match(listed.headers.get('access-control-expose-headers'), /x-request-id/);
    t.match(listed.headers.get('vary'), /Origin/i);
    await listed.text();
    const other = await fetch(url, { headers: { ...alice.headers, origin: 'https://evil.example.com' } });
    t.equal(other.headers.get('access-control-allow-origin'), null);
    await other.text();
  },
);

t.test('the OpenAPI document describes every runs route of API.md and the Run resource', async (t) => {
  const f = await testApp(t);
  const doc = (await f.app.inject('/docs/json')).json();
  const json = (ref: string) => ({ 'application/json': { schema: { $ref: `#/components/schemas/${ref}` } } });
  const text = { 'text/plain': {}, 'text/event-stream': {} };
  // API.md's Runs section and the script routes that run: method, path, the answers it
  // names (besides 401 and the 5xx every route declares), and what a success carries.
  const routes: Array<[string, string, string[], Record<string, object>]> = [
    ['get', '/api/v1/runs', ['200', '400', '403'], { 200: json('RunPage') }],
    ['get', '/api/v1/scripts/{id}/runs', ['200', '400', '404'], { 200: json('RunPage') }],
    ['get', '/api/v1/runs/{id}', ['200', '400', '404'], { 200: json('Run') }],
    ['get', '/api/v1/runs/{id}/logs', ['200', '400', '404'], { 200: text }],
    ['post', '/api/v1/runs/{id}/cancel', ['200', '404', '409'], { 200: json('Run') }],
    ['post', '/api/v1/scripts/{id}/execute', ['202', '404', '409', '429'], { 202: json('Run') }],
    ['post', '/api/v1/scripts/{id}/cancel', ['200', '404', '409'], { 200: json('Script') }],
    ['get', '/api/v1/scripts/{id}/logs', ['200', '404'], { 200: text }],
    ['get', '/api/v1/scripts/running', ['200'], { 200: {} }],
  ];
  for (const [method, path, statuses, successes] of routes) {
    const name = `${method.toUpperCase()} ${path}`;
    const operation = doc.paths[path]?.[method];
    if (!t.ok(operation, `${name} is documented`)) continue;
    const documented = Object.keys(operation.responses);
    for (const status of [...statuses, '401'])
      t.ok(documented.includes(status), `${name} declares ${status}`);
    t.same(
      documented.filter((s) => s.startsWith('2')),
      Object.keys(successes),
      `${name} answers ${Object.keys(successes).join()} on success`,
    );
    for (const [status, content] of Object.entries(successes))
      t.match(operation.responses[status], { content }, `${name} ${status} carries what API.md says`);
  }
  t.same(
    Object.keys(doc.paths['/api/v1/runs/{id}/logs'].get.responses['200'].content),
    ['text/plain', 'text/event-stream'],
    'a run’s logs are plain text or an event stream, nothing else',
  );
  t.match(
    doc.paths['/api/v1/runs/{id}/logs'].get.parameters,
    [
      { in: 'query', name: 'tail', schema: { type: 'integer' } },
      { in: 'query', name: 'follow', schema: { type: 'boolean' } },
    ],
    '`tail` and `follow` are documented',
  );
  t.match(
    doc.paths['/api/v1/scripts/{id}/execute'].post.responses['202']?.headers,
    { Location: { schema: { type: 'string' }, description: /\/api\/v1\/runs\/\{run_id\}/ } },
    'execute’s 202 documents its Location header',
  );

  const fields = [
    'id',
    'script_id',
    'user_id',
    'trigger',
    'schedule_id',
    'status',
    'script_sha256',
    'exit_code',
    'execution_time_seconds',
    'cpu_time_seconds',
    'memory_usage_mb',
    'error_message',
    'log_bytes',
    'log_truncated',
    'queued_at',
    'started_at',
    'completed_at',
  ];
  const run = doc.components.schemas.Run;
  t.same(Object.keys(run.properties), fields, 'Run has exactly API.md’s fields');
  t.same([...run.required].sort(), [...fields].sort(), 'every one of them always present');
  t.match(run.properties, {
    trigger: { $ref: '#/components/schemas/RunTrigger' },
    status: { $ref: '#/components/schemas/RunStatus' },
    queued_at: { format: 'date-time' },
  });
  const values = (name: string) =>
    doc.components.schemas[name].anyOf.map(
      (literal: { const?: string; enum?: string[] }) => literal.const ?? literal.enum?.[0],
    );
  t.same(values('RunTrigger'), ['manual', 'schedule']);
  t.same(values('RunStatus'), ['queued', 'running', 'completed', 'failed', 'cancelled']);
  t.match(doc.components.schemas.RunPage, {
    required: ['runs', 'next_cursor'],
    properties: { runs: { type: 'array', items: { $ref: '#/components/schemas/Run' } } },
  });
});

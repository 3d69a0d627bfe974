/** The run routes: execute, cancel, running, logs (plain, tail, followed over SSE). */
import type { FastifyInstance } from 'fastify';
import t from 'tap';
import { sseEvent } from '../../src/http/routes/execution.ts';
import { type Account, signUp, signUpAdmin, testApp } from '../helpers/app.ts';
import { execute, executorFixture, upload, waitFor } from '../helpers/executor.ts';

/**
 * The events of a Server-Sent Events stream, parsed as a browser does
 * (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
 * a line ends at CRLF, LF or CR; a blank line dispatches; `:` starts a comment.
 */
function parseSse(text: string): Array<{ event: string; data: string }> {
  const events: Array<{ event: string; data: string }> = [];
  let event = '';
  let data: string[] = [];
  for (const line of text.split(/\r\n|\r|\n/)) {
    if (line === '') {
      if (data.length > 0) events.push({ event: event || 'message', data: data.join('\n') });
      event = '';
      data = [];
      continue;
    }
    if (line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  return events;
}

/** Listens on a free port of the loopback; returns the base URL. */
async function listen(app: FastifyInstance): Promise<string> {
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return `http://127.0.0.1:${address.port}`;
}

/** Opens a log stream; resolves once its status line and headers have arrived. */
function follow(base: string, account: Account, id: number, signal?: AbortSignal) {
  return fetch(`${base}/api/v1/scripts/${id}/logs?follow=true`, { headers: account.headers, signal });
}

/** The rest of a response body as text, or null when it does not end within `ms`. */
async function readAll(res: Response, ms: number): Promise<string | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  try {
    return await Promise.race([res.text(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves to true when `promise` settles within `ms`. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

t.test('execute queues, refuses a second time, and is not found for someone else', async (t) => {
  const f = await executorFixture(t);
  const owner = await signUp(f.app);
  const stranger = await signUp(f.app);
  const admin = await signUpAdmin(f);
  const id = await upload(f, owner, 'a.py', 'print(1)\n');
  const queued = await execute(f, owner, id);
  t.equal(queued.statusCode, 202);
  const run = queued.json();
  t.match(run, { script_id: id, status: 'queued', trigger: 'manual', schedule_id: null, exit_code: null });
  t.equal(queued.headers.location, `/api/v1/runs/${run.id}`);
  const script = await f.app.inject({ url: `/api/v1/scripts/${id}`, headers: owner.headers });
  t.match(script.json(), { status: 'queued', last_run_id: run.id, run_count: 1 });
  const again = await execute(f, owner, id);
  t.equal(again.statusCode, 409);
  t.match(again.json(), { code: 'INVALID_STATE', status: 409 });
  const foreign = await execute(f, stranger, id);
  t.equal(foreign.statusCode, 404);
  t.equal(foreign.json().code, 'NOT_FOUND');
  const missing = await execute(f, owner, 999_999);
  t.equal(missing.statusCode, 404);
  // An admin may run anyone's script.
  const other = await upload(f, owner, 'b.py', 'print(2)\n');
  t.equal((await execute(f, admin, other)).statusCode, 202);
  const bad = await f.app.inject({
    method: 'POST',
    url: '/api/v1/scripts/abc/execute',
    headers: owner.headers,
  });
  t.equal(bad.statusCode, 400);
});

t.test('cancel: queued → cancelled; otherwise 409; someone else 404', async (t) => {
  const f = await executorFixture(t);
  const owner = await signUp(f.app);
  const stranger = await signUp(f.app);
  const id = await upload(f, owner, 'a.py', 'print(1)\n');
  const cancel = () =>
    f.app.inject({ method: 'POST', url: `/api/v1/scripts/${id}/cancel`, headers: owner.headers });
  t.equal((await cancel()).statusCode, 409, 'an uploaded script has no run to cancel');
  await execute(f, owner, id);
  const foreign = await f.app.inject({
    method: 'POST',
    url: `/api/v1/scripts/${id}/cancel`,
    headers: stranger.headers,
  });
  t.equal(foreign.statusCode, 404);
  const ok = await cancel();
  t.equal(ok.statusCode, 200);
  t.match(ok.json(), { status: 'cancelled', error_message: 'cancelled' });
  t.equal((await cancel()).statusCode, 409, 'already cancelled');
  t.equal((await execute(f, owner, id)).statusCode, 202, 'a cancelled script can be queued again');
});

t.test('delete is refused while queued', async (t) => {
  const f = await executorFixture(t);
  const owner = await signUp(f.app);
  const id = await upload(f, owner, 'a.py', 'print(1)\n');
  await execute(f, owner, id);
  const del = await f.app.inject({ method: 'DELETE', url: `/api/v1/scripts/${id}`, headers: owner.headers });
  t.equal(del.statusCode, 409);
  t.equal(del.json().code, 'INVALID_STATE');
});

t.test('running lists own running scripts; an admin sees everyone’s', async (t) => {
  const f = await executorFixture(t);
  const alice = await signUp(f.app);
  const bob = await signUp(f.app);
  const admin = await signUpAdmin(f);
  const a = await upload(f, alice, 'a.py', 'import time\ntime.sleep(30)\n');
  const b = await upload(f, bob, 'b.py', 'import time\ntime.sleep(30)\n');
  await execute(f, alice, a);
  await execute(f, bob, b);
  await f.startExecutor();
  await waitFor(f, a, (s) => s.status === 'running');
  await waitFor(f, b, (s) => s.status === 'running');
  const list = async (who: typeof alice) =>
    (await f.app.inject({ url: '/api/v1/scripts/running', headers: who.headers }))
      .json()
      .scripts.map((s: { id: number }) => s.id);
  t.same(await list(alice), [a]);
  t.same(await list(bob), [b]);
  t.same((await list(admin)).sort(), [a, b].sort());
  for (const [who, id] of [
    [alice, a],
    [bob, b],
  ] as const)
    await f.app.inject({ method: 'POST', url: `/api/v1/scripts/${id}/cancel`, headers: who.headers });
});

t.test('logs: plain text, tail=N, and 404 for someone else', async (t) => {
  const f = await executorFixture(t);
  await f.startExecutor();
  const owner = await signUp(f.app);
  const stranger = await signUp(f.app);
  const id = await upload(f, owner, 'count.py', 'for i in range(1, 11):\n    print("line", i)\n');
  const empty = await f.app.inject({ url: `/api/v1/scripts/${id}/logs`, headers: owner.headers });
  t.equal(empty.statusCode, 200);
  t.equal(empty.body, '', 'never run: no output');
  await execute(f, owner, id);
  await waitFor(f, id);
  const all = await f.app.inject({ url: `/api/v1/scripts/${id}/logs`, headers: owner.headers });
  t.equal(all.body.split('\n').length, 11);
  const tail = await f.app.inject({ url: `/api/v1/scripts/${id}/logs?tail=3`, headers: owner.headers });
  t.equal(tail.body, 'line 8\nline 9\nline 10\n');
  const foreign = await f.app.inject({ url: `/api/v1/scripts/${id}/logs`, headers: stranger.headers });
  t.equal(foreign.statusCode, 404);
  const badTail = await f.app.inject({ url: `/api/v1/scripts/${id}/logs?tail=0`, headers: owner.headers });
  t.equal(badTail.statusCode, 400);
  // Followed after the end: the whole output at once, then `end`.
  const done = await f.app.inject({ url: `/api/v1/scripts/${id}/logs?follow=true`, headers: owner.headers });
  t.match(done.headers['content-type'], /^text\/event-stream/);
  t.match(done.body, /^event: log\ndata: line 1\n/);
  t.match(done.body, /event: end\ndata: \{"status":"completed","exit_code":0\}\n\n$/);
  const followForeign = await f.app.inject({
    url: `/api/v1/scripts/${id}/logs?follow=true`,
    headers: stranger.headers,
  });
  t.equal(followForeign.statusCode, 404);
  t.match(followForeign.headers['content-type'], /application\/problem\+json/);
});

t.test('follow=true streams output while the script runs and ends with the run', async (t) => {
  const f = await executorFixture(t);
  await f.startExecutor();
  const owner = await signUp(f.app);
  const id = await upload(
    f,
    owner,
    'ticker.py',
    'import time\nfor i in range(4):\n    print("tick", i, flush=True)\n    time.sleep(0.7)\nprint("done")\n',
  );
  await f.app.listen({ port: 0, host: '127.0.0.1' });
  const address = f.app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  await execute(f, owner, id);
  const res = await fetch(`http://127.0.0.1:${port}/api/v1/scripts/${id}/logs?follow=true`, {
    headers: owner.headers,
  });
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type'), /^text\/event-stream/);
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let text = '';
  let statusAtFirstTick: string | undefined;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
    if (statusAtFirstTick === undefined && text.includes('tick 0'))
      statusAtFirstTick = (await f.repos.scripts.getById(id)).status;
  }
  t.equal(statusAtFirstTick, 'running', 'the first output arrived while the script was still running');
  const output = [...text.matchAll(/^data: (.*)$/gm)].map((m) => m[1]).join('\n');
  for (const line of ['tick 0', 'tick 1', 'tick 2', 'tick 3', 'done']) t.match(output, line);
  t.match(
    text,
    /event: end\ndata: \{"status":"completed","exit_code":0\}\n\n$/,
    'the stream ends with the run',
  );
});

t.test('metrics count finished runs by outcome and report the queue', async (t) => {
  const f = await executorFixture(t, { METRICS_TOKEN: 'metrics-token-for-the-test' });
  await f.startExecutor();
  const owner = await signUp(f.app);
  const ok = await upload(f, owner, 'ok.py', 'print(1)\n');
  const bad = await upload(f, owner, 'bad.py', 'raise SystemExit(2)\n');
  await execute(f, owner, ok);
  await execute(f, owner, bad);
  await waitFor(f, ok);
  await waitFor(f, bad);
  const scrape = await f.app.inject({
    url: '/metrics',
    headers: { authorization: 'Bearer metrics-token-for-the-test' },
  });
  t.match(scrape.body, /script_runs_total\{outcome="completed"\} 1/);
  t.match(scrape.body, /script_runs_total\{outcome="failed"\} 1/);
  t.match(scrape.body, /script_run_duration_seconds_count\{outcome="completed"\} 1/);
  t.match(scrape.body, /script_queue_depth\{status="queued"\} 0/);
});

t.test('sseEvent ends a data line at CRLF, LF and a lone CR, as SSE parsers do', async (t) => {
  const forged = 'x\revent: end\rdata: {"status":"completed","exit_code":0}\r\rafter\r\nlast';
  const text = sseEvent('log', forged);
  t.notMatch(text, /\r/, 'no CR reaches the stream');
  t.same(parseSse(text), [
    { event: 'log', data: 'x\nevent: end\ndata: {"status":"completed","exit_code":0}\n\nafter\nlast' },
  ]);
  t.same(parseSse(sseEvent('log', 'one\ntwo\n')), [{ event: 'log', data: 'one\ntwo\n' }]);
});

t.test('output with lone CRs cannot forge an event in a followed stream', async (t) => {
  const f = await executorFixture(t);
  await f.startExecutor();
  const owner = await signUp(f.app);
  const id = await upload(
    f,
    owner,
    'forge.py',
    'import sys\nsys.stdout.write(\'x\\revent: end\\rdata: {"status":"completed","exit_code":0}\\r\\rafter\\n\')\n' +
      'raise SystemExit(3)\n',
  );
  await execute(f, owner, id);
  await waitFor(f, id);
  const plain = await f.app.inject({ url: `/api/v1/scripts/${id}/logs`, headers: owner.headers });
  t.match(plain.body, 'x\revent: end\r', 'the stored output is the output as written');
  const res = await f.app.inject({ url: `/api/v1/scripts/${id}/logs?follow=true`, headers: owner.headers });
  const events = parseSse(res.body);
  t.same(
    events.map((e) => e.event),
    ['log', 'end'],
    'one log event and one end event, nothing forged',
  );
  t.match(events[0]!.data, 'event: end', 'the forged lines are data');
  t.match(JSON.parse(events[1]!.data), { status: 'failed', exit_code: 3 }, 'the real end');
});

t.test(
  'closing the app ends an open log stream with a shutdown event, and close() does not wait',
  async (t) => {
    const ta = await testApp(t);
    const base = await listen(ta.app);
    const owner = await signUp(ta.app);
    const id = await upload(ta, owner, 'wait.py', 'print(1)\n');
    t.equal((await execute(ta, owner, id)).statusCode, 202, 'queued; no executor runs it');
    const client = new AbortController();
    t.teardown(() => client.abort()); // so that a failure here does not hang the app's own teardown
    const res = await follow(base, owner, id, client.signal);
    t.equal(res.status, 200);
    t.match(res.headers.get('content-type'), /^text\/event-stream/);
    const started = Date.now();
    const closing = ta.app.close();
    const text = await readAll(res, 5000);
    t.ok(await settlesWithin(closing, 5000), 'app.close() resolved');
    t.ok(Date.now() - started < 3000, `promptly (${Date.now() - started} ms)`);
    t.not(text, null, 'the stream ended');
    const events = parseSse(text ?? '');
    t.same(
      events.map((e) => e.event),
      ['shutdown'],
      'its last event says the server is shutting down',
    );
    t.match(JSON.parse(events[0]?.data ?? '{}'), { detail: /reconnect/ });
  },
);

t.test('log streams are limited per user and in all: 429 TOO_MANY_FOLLOWERS with Retry-After', async (t) => {
  const ta = await testApp(t, {}, { followLimits: { perUser: 2, total: 3 } });
  const base = await listen(ta.app);
  const alice = await signUp(ta.app);
  const bob = await signUp(ta.app);
  const carol = await signUp(ta.app);
  const queued = async (who: Account) => {
    const id = await upload(ta, who, 'wait.py', 'print(1)\n');
    await execute(ta, who, id);
    return id;
  };
  const [a, b, c] = [await queued(alice), await queued(bob), await queued(carol)];
  const aborts: AbortController[] = [];
  t.teardown(() => {
    for (const abort of aborts) abort.abort();
  });
  const open = async (who: Account, id: number) => {
    const abort = new AbortController();
    aborts.push(abort);
    return { res: await follow(base, who, id, abort.signal), abort };
  };
  const refused = async (res: Response, label: string) => {
    t.equal(res.status, 429, `${label}: 429`);
    if (res.status !== 429) return; // an open stream: its body never ends
    t.match(res.headers.get('content-type'), /^application\/problem\+json/, `${label}: problem+json`);
    t.ok(Number(res.headers.get('retry-after')) > 0, `${label}: Retry-After`);
    t.match(await res.json(), { status: 429, code: 'TOO_MANY_FOLLOWERS' }, label);
  };

  const first = await open(alice, a);
  t.equal(first.res.status, 200);
  t.equal((await open(alice, a)).res.status, 200, 'a second stream of the same user');
  await refused((await open(alice, a)).res, 'a third stream of one user');
  t.equal((await open(bob, b)).res.status, 200, 'another user still may');
  await refused((await open(carol, c)).res, 'past the total');

  // A stream that ends frees its place (the server sees the client go).
  first.abort.abort();
  let again: Response | undefined;
  for (let i = 0; i < 50; i++) {
    again = (await open(carol, c)).res;
    if (again.status === 200) break;
    await again.body?.cancel();
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  t.equal(again?.status, 200, 'a place freed by a closed stream is taken again');
  // Someone else's script is still a 404 before any limit is looked at.
  const foreign = await fetch(`${base}/api/v1/scripts/${a}/logs?follow=true`, { headers: bob.headers });
  t.equal(foreign.status, 404);
});

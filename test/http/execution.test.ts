/** The run routes: execute, cancel, running, logs (plain, tail, followed over SSE). */
import t from 'tap';
import { signUp, signUpAdmin } from '../helpers/app.js';
import { execute, executorFixture, upload, waitFor } from '../helpers/executor.js';

t.test('execute queues, refuses a second time, and is not found for someone else', async (t) => {
  const f = await executorFixture(t);
  const owner = await signUp(f.app);
  const stranger = await signUp(f.app);
  const admin = await signUpAdmin(f);
  const id = await upload(f, owner, 'a.py', 'print(1)\n');
  const queued = await execute(f, owner, id);
  t.equal(queued.statusCode, 202);
  t.match(queued.json(), { id, status: 'queued', exit_code: null });
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
      statusAtFirstTick = (await f.ctx.repos.scripts.getById(id)).status;
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
  const f = await executorFixture(t);
  await f.startExecutor();
  const owner = await signUp(f.app);
  const ok = await upload(f, owner, 'ok.py', 'print(1)\n');
  const bad = await upload(f, owner, 'bad.py', 'raise SystemExit(2)\n');
  await execute(f, owner, ok);
  await execute(f, owner, bad);
  await waitFor(f, ok);
  await waitFor(f, bad);
  const scrape = await f.app.inject({ url: '/metrics' });
  t.match(scrape.body, /script_runs_total\{outcome="completed"\} 1/);
  t.match(scrape.body, /script_runs_total\{outcome="failed"\} 1/);
  t.match(scrape.body, /script_run_duration_seconds_count\{outcome="completed"\} 1/);
  t.match(scrape.body, /script_queue_depth\{status="queued"\} 0/);
});

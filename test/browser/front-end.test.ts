/**
 * A real browser against the API: headless Debian Chromium, driven by playwright-core,
 * loads a small page from another origin on 127.0.0.1 (listed in CORS_ORIGINS), which
 * signs up with `cookie: true`, uploads a script and runs it through the runs API, as a
 * front end does: `execute` answers the queued run (and its Location), the page follows
 * that run's output (GET /runs/{id}/logs?follow=true, EventSource(withCredentials)), then
 * reads the finished run (GET /runs/{id}) and finds it in the script's history
 * (GET /scripts/{id}/runs), all with fetch(credentials: 'include'). The same page from an
 * origin not listed is refused by the browser, and a form another page posts without the
 * CSRF token is refused by the server.
 *
 * Without /usr/bin/chromium (CI installs it: .ci/run) the test says so and checks nothing else.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { executorFixture } from '../helpers/executor.ts';

// Starting Chromium and running a script take a while on a busy machine.
t.setTimeout(300_000);

const CHROMIUM = '/usr/bin/chromium';
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>DollarClub front end (test)</title></head>
<body><p>a front end on another origin</p></body></html>`;

/** The few DOM parts the page's code uses (the project's types have no DOM). */
interface PageGlobals {
  document: {
    cookie: string;
    body: { append(node: unknown): void };
    createElement(tag: 'form'): { method: string; action: string; submit(): void };
  };
}

/** Serves PAGE at / on a free loopback port; returns its origin. */
async function pageServer(t: Test): Promise<string> {
  const server: Server = createServer((request, response) => {
    if (request.url !== '/') return void response.writeHead(404).end();
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(PAGE);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

if (!existsSync(CHROMIUM)) {
  t.comment(`no browser test: ${CHROMIUM} is not installed (apt-get install chromium; .ci/run does)`);
  t.pass('skipped for want of Chromium');
} else {
  t.test('a browser front end on an allowed origin, and what other origins cannot do', async (t) => {
    const { chromium } = await import('playwright-core');
    const allowed = await pageServer(t);
    const other = await pageServer(t);
    const f = await executorFixture(t, { CORS_ORIGINS: allowed });
    await f.startExecutor();
    await f.app.listen({ port: 0, host: '127.0.0.1' });
    const api = `http://127.0.0.1:${(f.app.server.address() as AddressInfo).port}/api/v1`;

    const profile = await mkdtemp(path.join(tmpdir(), 'dollarclub-chromium-'));
    const browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: FLAGS,
    });
    t.teardown(async () => {
      await browser.close();
      await rm(profile, { recursive: true, force: true });
    });
    const page = await browser.newPage();
    await page.goto(`${allowed}/`);

    const result = await page.evaluate(async (api) => {
      const json = { 'content-type': 'application/json' };
      const steps: Record<string, unknown> = {};
      const email = `browser${Date.now()}@example.com`;
      const registered = await fetch(`${api}/auth/register`, {
        method: 'POST',
        credentials: 'include',
        headers: json,
        body: JSON.stringify({
          email,
          username: 'browser_user',
          password: 'correct horse battery',
          cookie: true,
        }),
      });
      const session = (await registered.json()) as { csrf_token: string };
      steps.register = { status: registered.status, keys: Object.keys(session).sort() };
      const cookie = (globalThis as unknown as PageGlobals).document.cookie;
      const csrf = /(?:^|; )dc_csrf=([^;]*)/.exec(cookie)?.[1] ?? null;
      steps.cookies = {
        csrfReadable: csrf !== null && csrf === session.csrf_token,
        sessionHidden: !cookie.includes('dc_session'),
      };
      const me = await fetch(`${api}/me`, { credentials: 'include' });
      steps.me = { status: me.status, email: ((await me.json()) as { email: string }).email === email };

      const form = new FormData();
      form.append('file', new Blob(["print('hello from the browser', flush=True)\n"]), 'hello.py');
      const refused = await fetch(`${api}/scripts`, { method: 'POST', credentials: 'include', body: form });
      steps.uploadWithoutCsrf = {
        status: refused.status,
        code: ((await refused.json()) as { code: string }).code,
      };
      const uploaded = await fetch(`${api}/scripts`, {
        method: 'POST',
        credentials: 'include',
        headers: { 'x-csrf-token': session.csrf_token },
        body: form,
      });
      const script = (await uploaded.json()) as { id: number };
      steps.upload = { status: uploaded.status, requestId: uploaded.headers.get('x-request-id') !== null };

      const executed = await fetch(`${api}/scripts/${script.id}/execute`, {
        method: 'POST',
        credentials: 'include',
        headers: { 'x-csrf-token': session.csrf_token },
      });
      // The answer is the queued run; the page follows that run, not the script.
      const run = (await executed.json()) as {
        id: number;
        script_id: number;
        status: string;
        trigger: string;
      };
      steps.execute = {
        status: executed.status,
        run: { script_id: run.script_id === script.id, status: run.status, trigger: run.trigger },
        location: executed.headers.get('location') === `/api/v1/runs/${run.id}`,
      };

      steps.follow = await new Promise((resolve) => {
        const logs: string[] = [];
        const source = new EventSource(`${api}/runs/${run.id}/logs?follow=true`, {
          withCredentials: true,
        });
        source.addEventListener('log', (event) => logs.push((event as MessageEvent).data));
        source.addEventListener('end', (event) => {
          source.close();
          resolve({ logs: logs.join(''), end: JSON.parse((event as MessageEvent).data) });
        });
        source.onerror = () => {
          if (source.readyState === EventSource.CLOSED) resolve({ error: 'the stream was refused' });
        };
      });
      const finished = await fetch(`${api}/runs/${run.id}`, { credentials: 'include' });
      const done = (await finished.json()) as { id: number; status: string; exit_code: number };
      steps.run = {
        status: finished.status,
        run: { same: done.id === run.id, status: done.status, exit_code: done.exit_code },
      };
      const history = await fetch(`${api}/scripts/${script.id}/runs`, { credentials: 'include' });
      const runsPage = (await history.json()) as { runs: Array<{ id: number }>; next_cursor: string | null };
      steps.history = {
        status: history.status,
        ids: runsPage.runs.map((r) => r.id === run.id),
        next_cursor: runsPage.next_cursor,
      };
      return { steps, scriptId: script.id as number, runId: run.id as number };
    }, api);

    const { steps, scriptId, runId } = result;
    t.same(steps.register, { status: 201, keys: ['csrf_token', 'user'] }, 'signed up, no token in the body');
    t.same(
      steps.cookies,
      { csrfReadable: true, sessionHidden: true },
      'dc_csrf readable, dc_session HttpOnly',
    );
    t.same(steps.me, { status: 200, email: true }, 'the cookie authenticates');
    t.same(steps.uploadWithoutCsrf, { status: 403, code: 'CSRF_FAILED' }, 'no CSRF token, no upload');
    t.same(steps.upload, { status: 201, requestId: true }, 'uploaded; x-request-id readable');
    t.same(
      steps.execute,
      { status: 202, run: { script_id: true, status: 'queued', trigger: 'manual' }, location: true },
      'execute answers the queued run, and its Location is readable',
    );
    t.match(
      steps.follow,
      { logs: /hello from the browser/, end: { status: 'completed', exit_code: 0 } },
      "followed the run's output to the end over EventSource (GET /runs/{id}/logs)",
    );
    t.same(
      steps.run,
      { status: 200, run: { same: true, status: 'completed', exit_code: 0 } },
      'GET /runs/{id}: the run finished',
    );
    t.same(
      steps.history,
      { status: 200, ids: [true], next_cursor: null },
      "GET /scripts/{id}/runs: the script's history is that one run",
    );

    // The same page from an origin not in CORS_ORIGINS: the browser refuses every answer.
    await page.goto(`${other}/`);
    const foreign = await page.evaluate(
      async ({ api, runId }) => {
        const attempt = async (init: RequestInit, url = `${api}/me`) => {
          try {
            const res = await fetch(url, { credentials: 'include', ...init });
            return `answered ${res.status}`;
          } catch (error) {
            return `refused: ${(error as Error).name}`;
          }
        };
        const stream = await new Promise<string>((resolve) => {
          const source = new EventSource(`${api}/runs/${runId}/logs?follow=true`, {
            withCredentials: true,
          });
          source.addEventListener('log', () => {
            source.close();
            resolve('read the stream');
          });
          source.onerror = () => {
            if (source.readyState === EventSource.CLOSED) resolve('refused');
          };
        });
        return {
          read: await attempt({}),
          run: await attempt({}, `${api}/runs/${runId}`),
          write: await attempt({
            method: 'PATCH',
            headers: { 'content-type': 'application/json' },
            body: '{}',
          }),
          stream,
        };
      },
      { api, runId },
    );
    t.same(
      foreign,
      {
        read: 'refused: TypeError',
        run: 'refused: TypeError',
        write: 'refused: TypeError',
        stream: 'refused',
      },
      'an origin not listed can neither read nor write',
    );

    // A form that page posts to the API: the browser sends the cookies (127.0.0.1 is one site,
    // so SameSite=Lax does not stop it), but there is no CSRF token, so the server refuses.
    const target = `${api}/scripts/${scriptId}/execute`;
    const [answer] = await Promise.all([
      page.waitForResponse((response) => response.url() === target),
      page.evaluate((target) => {
        const { document } = globalThis as unknown as PageGlobals;
        const form = document.createElement('form');
        form.method = 'POST';
        form.action = target;
        document.body.append(form);
        form.submit();
      }, target),
    ]);
    // 403 CSRF_FAILED, not 401: the session cookie did come with it.
    t.equal(answer.status(), 403, 'the forged form post is refused');
    t.equal((await answer.json()).code, 'CSRF_FAILED');
    const [row] = await f.database.sql`
      select s.status, s.last_run_id, (select count(*)::int from script_runs where script_id = s.id) as runs
      from scripts as s where s.id = ${scriptId}
    `;
    t.same({ ...row }, { status: 'completed', last_run_id: runId, runs: 1 }, 'no run was queued by it');
  });
}

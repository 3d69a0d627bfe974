/**
 * Graceful shutdown over real sockets (issue 7, item 9): the real process
 * (`node src/main.ts` on Node 24, `node --import=./src/ts-loader.mjs src/main.ts` on Node 20 (test/helpers/entry.ts), as `npm start` runs it), real keep-alive
 * connections of a `node:http` Agent, a real SIGTERM. Every request that reached the
 * server is answered (its result, or 503 SERVICE_UNAVAILABLE with `Connection: close`),
 * never reset; idle keep-alive connections are closed at once; with no script running
 * the process exits 0 within 2 s of its last response.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { Agent, request } from 'node:http';
import { connect, type Socket } from 'node:net';
import path from 'node:path';
import t, { type Test } from 'tap';
import { freePort } from '../src/db/embedded.ts';
import { TEST_IBKR_KEY } from './helpers/app.ts';
import { testDatabase } from './helpers/db.ts';
import { childEnv, entryArgs } from './helpers/entry.ts';

const REPO = path.resolve(import.meta.dirname, '..');
const READY_WITHIN_MS = 60_000;
/** The requirement: with no script running, the process is gone this soon after its last answer. */
const EXIT_AFTER_LAST_RESPONSE_MS = 2_000;

interface Server {
  child: ChildProcess;
  port: number;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
}

const children = new Set<ChildProcess>();

t.teardown(async () => {
  for (const child of children) {
    const gone = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL'); // DATABASE_URL: no embedded PostgreSQL to orphan
    await gone;
  }
});

/** The app over this test's own database, listening on 127.0.0.1 only, executor on and idle. */
async function start(t: Test): Promise<Server> {
  const database = await testDatabase(t);
  const port = await freePort();
  const child = spawn(process.execPath, entryArgs('src/main.ts'), {
    cwd: REPO,
    env: childEnv({
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/root',
      NODE_ENV: 'test',
      HOST: '127.0.0.1',
      PORT: String(port),
      LOG_LEVEL: 'info',
      DATABASE_URL: database.url,
      IBKR_TOKEN_KEY: TEST_IBKR_KEY,
      AUTH_RATE_LIMIT_MAX: '100000',
      // Load shedding answers 503 SERVER_OVERLOADED on a starved loop: not what this is about.
      MAX_EVENT_LOOP_DELAY_MS: '0',
    }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let output = '';
  child.stdout?.on('data', (chunk) => {
    output += chunk;
  });
  child.stderr?.on('data', (chunk) => {
    output += chunk;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.on('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal, at: performance.now() });
    }),
  );
  const server = { child, port, output: () => output, exited };
  await ready(server);
  return server;
}

async function ready(server: Server): Promise<void> {
  let exited = false;
  void server.exited.then(() => {
    exited = true;
  });
  const deadline = Date.now() + READY_WITHIN_MS;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`the server exited before it was ready:\n${server.output()}`);
    try {
      const res = await fetch(`http://127.0.0.1:${server.port}/health/database`, {
        signal: AbortSignal.timeout(3000),
      });
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`not ready within ${READY_WITHIN_MS} ms:\n${server.output()}`);
}

interface Answer {
  status?: number;
  connection?: string;
  contentType?: string;
  code?: string;
  error?: string;
  at: number;
  socket?: Socket;
}

/** One request through `agent`; resolves with its answer or its error, never rejects. */
function send(agent: Agent, port: number, method: string, url: string, body?: unknown): Promise<Answer> {
  return new Promise((resolve) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      {
        agent,
        host: '127.0.0.1',
        port,
        method,
        path: url,
        headers: payload === undefined ? {} : { 'content-type': 'application/json' },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => {
          text += chunk;
        });
        res.on('error', (error: NodeJS.ErrnoException) =>
          resolve({ error: error.code ?? error.message, at: performance.now() }),
        );
        res.on('end', () => {
          let code: string | undefined;
          try {
            code = (JSON.parse(text) as { code?: string }).code;
          } catch {
            code = undefined;
          }
          resolve({
            status: res.statusCode,
            connection: res.headers.connection,
            contentType: res.headers['content-type'],
            code,
            at: performance.now(),
            socket: req.socket ?? undefined,
          });
        });
      },
    );
    req.on('error', (error: NodeJS.ErrnoException) =>
      resolve({ error: error.code ?? error.message, at: performance.now() }),
    );
    req.end(payload);
  });
}

/** Opens `n` keep-alive connections in `agent` (each answers one GET /health) and leaves them idle. */
async function openConnections(t: Test, agent: Agent, port: number, n: number): Promise<Set<Socket>> {
  const answers = await Promise.all(Array.from({ length: n }, () => send(agent, port, 'GET', '/health')));
  t.same(
    answers.map((a) => a.status),
    Array(n).fill(200),
    `${n} connections answered`,
  );
  const sockets = new Set(answers.map((a) => a.socket).filter((s): s is Socket => s !== undefined));
  t.equal(sockets.size, n, `${n} distinct keep-alive connections are open`);
  const free = Object.values(agent.freeSockets).flat();
  t.equal(free.length, n, 'and idle in the agent');
  return sockets;
}

t.test(
  '50 keep-alive POSTs and a SIGTERM 30 ms later: every request answered, none reset; exit 0 within 2 s',
  async (t) => {
    const server = await start(t);
    const agent = new Agent({ keepAlive: true, maxSockets: 50, maxFreeSockets: 50 });
    t.teardown(() => agent.destroy());
    await openConnections(t, agent, server.port, 50);

    const n = `${process.pid}_${Date.now()}`;
    const requests = Array.from({ length: 50 }, (_, i) =>
      send(agent, server.port, 'POST', '/api/v1/auth/register', {
        email: `leaver${i}_${n}@example.com`,
        username: `leaver_${i}_${n}`,
        password: 'correct horse battery',
      }),
    );
    await new Promise((resolve) => setTimeout(resolve, 30));
    server.child.kill('SIGTERM');
    const answers = await Promise.all(requests);
    const exit = await server.exited;

    const errors = answers.filter((a) => a.error !== undefined).map((a) => a.error);
    t.same(errors, [], 'no request failed (zero ECONNRESET, no socket hang up)');
    const created = answers.filter((a) => a.status === 201);
    const refused = answers.filter((a) => a.status === 503);
    t.equal(created.length + refused.length, 50, 'every answer is 201 or 503');
    for (const answer of refused) {
      t.equal(answer.code, 'SERVICE_UNAVAILABLE', 'a 503 says the server is shutting down');
      t.match(answer.contentType, /^application\/problem\+json/, 'as problem+json');
      t.equal(answer.connection, 'close', 'with Connection: close');
    }
    t.comment(`${created.length} × 201, ${refused.length} × 503`);

    t.equal(exit.code, 0, 'the process exits 0');
    const last = Math.max(...answers.map((a) => a.at));
    t.ok(
      exit.at - last <= EXIT_AFTER_LAST_RESPONSE_MS,
      `it exits within 2 s of its last response (took ${Math.round(exit.at - last)} ms)`,
    );
    t.notMatch(server.output(), /ECONNRESET|"level":50/, 'no error logged');
  },
);

t.test('idle keep-alive connections are closed at once while a request is still in flight', async (t) => {
  const server = await start(t);
  const agent = new Agent({ keepAlive: true, maxSockets: 20, maxFreeSockets: 20 });
  t.teardown(() => agent.destroy());
  const idle = await openConnections(t, agent, server.port, 20);
  const ended = [...idle].map(
    (socket) =>
      new Promise<string>((resolve) => {
        socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
        socket.once('close', () => resolve('closed'));
      }),
  );

  // A request the server holds until we finish its body: the process cannot exit before.
  const slow = connect(server.port, '127.0.0.1');
  await new Promise((resolve) => slow.once('connect', resolve));
  const body = JSON.stringify({
    email: `slow_${process.pid}@example.com`,
    username: `slow_${process.pid}`,
    password: 'correct horse battery',
  });
  let raw = '';
  slow.setEncoding('utf8');
  slow.on('data', (chunk) => {
    raw += chunk;
  });
  const slowClosed = new Promise((resolve) => slow.once('close', resolve));
  slow.write(
    'POST /api/v1/auth/register HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n' +
      `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 10)}`,
  );
  // And a connection that has sent half a request head when the signal comes.
  const late = connect(server.port, '127.0.0.1');
  await new Promise((resolve) => late.once('connect', resolve));
  let lateRaw = '';
  late.setEncoding('utf8');
  late.on('data', (chunk) => {
    lateRaw += chunk;
  });
  const lateClosed = new Promise((resolve) => late.once('close', resolve));
  late.write('GET /health HTTP/1.1\r\n');
  await new Promise((resolve) => setTimeout(resolve, 200)); // the server has both

  server.child.kill('SIGTERM');
  t.same(await Promise.all(ended), Array(20).fill('closed'), 'every idle connection is closed, cleanly');
  t.equal(server.child.exitCode, null, 'while the process still runs (it waits for the request in flight)');
  t.equal(raw, '', 'nothing has been answered on the busy connection yet');

  // The half-sent request is completed now, during the close: it is refused, not dropped.
  late.write('Host: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n');
  await lateClosed;
  t.match(lateRaw, /^HTTP\/1\.1 503 /, 'a request that arrives during the close is answered 503');
  t.match(lateRaw, /\r\nconnection: close\r\n/i, 'with Connection: close');
  t.match(lateRaw, /\r\ncontent-type: application\/problem\+json/i, 'as problem+json');
  t.match(lateRaw, /"code":"SERVICE_UNAVAILABLE"/);

  slow.write(body.slice(10));
  await slowClosed;
  const last = performance.now();
  t.match(raw, /^HTTP\/1\.1 201 /, 'the request in flight gets its result');
  t.match(raw, /\r\nconnection: close\r\n/i, 'with Connection: close, and the connection is closed after it');
  const exit = await server.exited;
  t.equal(exit.code, 0, 'the process exits 0');
  t.ok(
    exit.at - last <= EXIT_AFTER_LAST_RESPONSE_MS,
    `within 2 s of its last response (took ${Math.round(exit.at - last)} ms)`,
  );
});

/**
 * The real process, as `npm start` runs it but without npm (which does not pass
 * SIGTERM on): `node src/main.ts` on Node 24, `node --import=./src/ts-loader.mjs src/main.ts` on Node 20 (test/helpers/entry.ts) with no DATABASE_URL, so it starts
 * an embedded PostgreSQL in a folder of this test. Over real HTTP: it becomes ready,
 * keeps data across a SIGTERM and a restart, stops its PostgreSQL and exits 0, and
 * refuses a bad configuration with exit code 1.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmod, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { freePort } from '../src/db/embedded.ts';
import { childEnv, entryArgs } from './helpers/entry.ts';

const REPO = path.resolve(import.meta.dirname, '..');
const READY_WITHIN_MS = 60_000;

const folder = await mkdtemp(path.join(tmpdir(), 'dollarclub-server-'));
await chmod(folder, 0o755); // the embedded server runs as the `postgres` user and must reach its folder
const dataDir = path.join(folder, 'postgres');
const storageDir = path.join(folder, 'storage');

interface Server {
  child: ChildProcess;
  port: number;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const children = new Set<ChildProcess>();

/** Starts `node src/main.ts` on Node 24, `node --import=./src/ts-loader.mjs src/main.ts` on Node 20 (test/helpers/entry.ts) with a clean environment: no DATABASE_URL, only what is given. */
function start(env: Record<string, string>): Server {
  const port = Number(env.PORT);
  const child = spawn(process.execPath, entryArgs('src/main.ts'), {
    cwd: REPO,
    env: childEnv({
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/root',
      HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
      EMBEDDED_PG_DIR: dataDir,
      STORAGE_DIR: storageDir,
      ...env,
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
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  return { child, port, output: () => output, exited };
}

/** Polls GET /health/database over HTTP until it answers 200; fails when the process dies first. */
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

/** Pids of processes whose command line names `dir` (the postmaster runs with `-D dir`). */
async function processesUsing(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).split('\0');
      if (cmdline.some((arg) => arg.startsWith(dir))) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

async function stop(server: Server) {
  server.child.kill('SIGTERM');
  return server.exited;
}

async function call(port: number, method: string, url: string, body?: unknown, token?: string) {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`http://127.0.0.1:${port}${url}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const post = (port: number, url: string, body: unknown) => call(port, 'POST', url, body);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * An upload whose body arrives in two halves: the request is in the server's hands
 * (its handler waits for the file) between `begin` and `finish`.
 */
function slowUpload(port: number, token: string, filename: string, content: string) {
  const boundary = 'dollarclub-server-test';
  const head = `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${filename}"\r\nContent-Type: text/plain\r\n\r\n`;
  const tail = `\r\n--${boundary}--\r\n`;
  let finish: () => void = () => {};
  const answer = new Promise<{ status: number; body: Record<string, unknown> }>((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/api/v1/scripts',
        headers: {
          authorization: `Bearer ${token}`,
          'content-type': `multipart/form-data; boundary=${boundary}`,
        },
      },
      (res) => {
        let text = '';
        res.on('data', (chunk) => {
          text += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text || '{}') }));
      },
    );
    req.on('error', reject);
    req.write(head + content.slice(0, content.length / 2));
    finish = () => req.end(content.slice(content.length / 2) + tail);
  });
  return { answer, finish: () => finish() };
}

t.teardown(async () => {
  // Whatever happened: the servers go (SIGTERM first: SIGKILL would orphan their PostgreSQL).
  for (const child of children) {
    const gone = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await gone;
    clearTimeout(timer);
  }
  // A PostgreSQL that our servers started and left behind (a SIGKILLed server): ended by its pid.
  for (const pid of await processesUsing(dataDir)) {
    try {
      process.kill(pid, 'SIGQUIT');
    } catch {
      // already gone
    }
  }
  await rm(folder, { recursive: true, force: true });
});

const account = { email: 'survivor@example.com', username: 'survivor', password: 'correct horse battery' };

t.test(
  'started with no DATABASE_URL it serves over an embedded PostgreSQL and stops cleanly on SIGTERM',
  async (t) => {
    const server = start({ PORT: String(await freePort()) });
    await ready(server);
    t.pass('GET /health/database answered 200 over HTTP');

    const registered = await post(server.port, '/api/v1/auth/register', account);
    t.equal(registered.status, 201, 'a user registered over HTTP');
    t.ok(
      await processesUsing(dataDir).then((pids) => pids.length > 0),
      'its PostgreSQL runs on the data folder',
    );

    // SIGTERM while an upload is in flight: the server finishes it (file, row, commit), then stops.
    const upload = slowUpload(
      server.port,
      String(registered.body.token),
      'in_flight.py',
      'print("still here")\n',
    );
    await sleep(500); // the server has the request: its handler waits for the rest of the file
    const exited = stop(server);
    await sleep(500); // shutdown is under way
    upload.finish();
    const uploaded = await upload.answer;
    t.equal(uploaded.status, 201, `the in-flight upload was answered 201 (${JSON.stringify(uploaded.body)})`);

    const { code, signal } = await exited;
    t.equal(code, 0, `SIGTERM: exit code 0 (signal ${signal})\n${code === 0 ? '' : server.output()}`);
    t.same(await processesUsing(dataDir), [], 'no PostgreSQL process is left on the data folder');
  },
);

t.test('started again on the same folders it keeps the data', async (t) => {
  const server = start({ PORT: String(await freePort()) });
  await ready(server);
  const login = await post(server.port, '/api/v1/auth/login', {
    email: account.email,
    password: account.password,
  });
  t.equal(
    login.status,
    200,
    `the user registered before the restart signs in${login.status === 200 ? '' : `\n${JSON.stringify(login.body)}\n${server.output()}`}`,
  );
  t.match(login.body, { user: { email: account.email, username: account.username }, token: String });
  const scripts = await call(server.port, 'GET', '/api/v1/scripts', undefined, String(login.body.token));
  t.match(
    scripts.body,
    { scripts: [{ original_filename: 'in_flight.py', status: 'uploaded' }], total: 1 },
    'the upload acknowledged during the shutdown was kept',
  );

  const { code } = await stop(server);
  t.equal(code, 0, `and it stops with exit code 0 again${code === 0 ? '' : `\n${server.output()}`}`);
  t.same(await processesUsing(dataDir), [], 'leaving no PostgreSQL behind');
});

t.test('a bad configuration value exits with code 1 and names the variable', async (t) => {
  const server = start({ PORT: 'abc' });
  const { code } = await server.exited;
  t.equal(code, 1, 'exit code 1');
  t.match(server.output(), /PORT/, 'the message names PORT');
  t.notMatch(server.output(), /\n\s+at .+:\d+:\d+/, 'a message, not a stack trace');
});

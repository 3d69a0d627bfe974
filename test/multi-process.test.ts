/**
 * Many processes, one database: 2 API processes (`node src/main.ts` on Node 24, `node --import=./src/ts-loader.mjs src/main.ts` on Node 20 (test/helpers/entry.ts),
 * EXECUTOR_ENABLED=false, each on its own loopback port) and 3 workers
 * (`node src/worker.ts`) as separate OS processes over one test database.
 * A mixed load goes through both APIs (register, upload, schedules, execute, cancel); one
 * worker is killed with SIGKILL while it runs scripts, one API gets SIGTERM while requests
 * reach it; then the rows must show: every acknowledged write, no run executed twice, the
 * killed worker's runs failed by lease expiry within the lease bounds. Logout, password
 * change and deactivation on API 1 are effective on API 2 at once, and the login rate limit
 * allows its limit once across both APIs, not once per API.
 *
 * Scripts append a line to a ledger file of their own when they start (SCRIPT_SANDBOX=off
 * so the ledger folder is reachable): a run executed twice would leave two lines.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import t from 'tap';
import { multipartFile } from './helpers/app.ts';
import { testDatabase } from './helpers/db.ts';
import { childEnv, entryArgs } from './helpers/entry.ts';
import { eventually } from './helpers/executor.ts';

const LEASE_SECONDS = 4;
const RATE_LIMIT = 4;
const USERS = 4;
/** How long a long script runs: well past the kill and the lease expiry. */
const LONG_SECONDS = 20;
/** Scheduling delay on a loaded 2-core machine, beyond the lease bounds themselves. */
const SLACK_SECONDS = 3;
/** How late the auth_changed NOTIFY may reach the other API process (its cache keeps a token 30 s). */
const NOTIFY_BOUND_MS = 1000;

t.setTimeout(280_000);

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

interface Proc {
  name: string;
  child: ChildProcess;
  exited: Promise<number | null>;
  /** Resolves at the log line that says it is ready. */
  ready: Promise<void>;
  /** Its last log lines, shown when it misbehaves. */
  tail: string[];
}

function start(name: string, entry: string, env: Record<string, string>, readyMessage: string): Proc {
  const child = spawn(process.execPath, entryArgs(entry), {
    env: childEnv({ ...process.env, ...env }),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let signal: string | null = null;
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code, by) => {
      signal = by;
      resolve(code);
    }),
  );
  const tail: string[] = [];
  const ready = new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      tail.push(line);
      if (tail.length > 20) tail.shift();
      try {
        if (JSON.parse(line).msg === readyMessage) resolve();
      } catch {
        // not a log line
      }
    });
    exited.then((code) =>
      reject(
        new Error(
          `${name} exited (code ${code}, signal ${signal}) before it was ready; its last lines:\n${tail.join('\n')}`,
        ),
      ),
    );
  });
  ready.catch(() => {});
  return { name, child, exited, ready, tail };
}

interface Answer {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: the JSON answers of many routes, read field by field
  body: any;
}

t.test('2 API processes and 3 workers over one database', async (t) => {
  const database = await testDatabase(t);
  const { sql } = database;
  const scratch = await mkdtemp(path.join(tmpdir(), 'dollarclub-multi-process-'));
  await chmod(scratch, 0o755); // the scripts' users enter their folders
  const ledger = path.join(scratch, 'ledger');
  await mkdir(ledger);
  await chmod(ledger, 0o777); // every script's uid appends its line here
  t.teardown(() => rm(scratch, { recursive: true, force: true }));

  const common = {
    NODE_ENV: 'test',
    NODE_OPTIONS: '',
    DATABASE_URL: database.url,
    IBKR_TOKEN_KEY: randomBytes(32).toString('base64'),
    STORAGE_DIR: path.join(scratch, 'storage'),
    DB_POOL_MAX: '3',
    LOG_LEVEL: 'info',
    MAX_EVENT_LOOP_DELAY_MS: '0',
    EXECUTOR_LEASE_SECONDS: String(LEASE_SECONDS),
  };
  const ports = [await freePort(), await freePort()];
  const apis = ports.map((port, i) =>
    start(
      `api ${i + 1}`,
      'src/main.ts',
      {
        ...common,
        HOST: '127.0.0.1',
        PORT: String(port),
        EXECUTOR_ENABLED: 'false',
        // The test is every client: each stands for one through X-Forwarded-For.
        TRUST_PROXY: '127.0.0.1',
        AUTH_RATE_LIMIT_MAX: String(RATE_LIMIT),
        AUTH_RATE_LIMIT_WINDOW_SECONDS: '600',
      },
      `Server listening at http://127.0.0.1:${port}`,
    ),
  );
  const workers = [1, 2, 3].map((i) =>
    start(
      `worker ${i}`,
      'src/worker.ts',
      {
        ...common,
        EXECUTOR_WORK_DIR: path.join(scratch, 'runs'),
        EXECUTOR_CONCURRENCY: '2',
        EXECUTOR_SHUTDOWN_GRACE_SECONDS: '1',
        EXECUTOR_POLL_MS: '500',
        SCRIPT_SANDBOX: 'off',
      },
      'executor started',
    ),
  );
  const all = [...apis, ...workers];
  t.teardown(async () => {
    for (const p of all) p.child.kill('SIGTERM');
    const timer = setTimeout(() => {
      for (const p of all) p.child.kill('SIGKILL');
    }, 15_000);
    await Promise.all(all.map((p) => p.exited));
    clearTimeout(timer);
  });
  await Promise.all(all.map((p) => p.ready));

  const call = async (
    api: number,
    method: string,
    url: string,
    options: {
      token?: string;
      client?: string;
      json?: unknown;
      form?: ReturnType<typeof multipartFile>;
    } = {},
  ): Promise<Answer> => {
    const headers: Record<string, string> = { 'x-forwarded-for': options.client ?? '10.0.0.1' };
    if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
    let body: string | Buffer | undefined;
    if (options.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(options.json);
    } else if (options.form !== undefined) {
      Object.assign(headers, options.form.headers);
      body = options.form.payload;
    }
    const res = await fetch(`http://127.0.0.1:${ports[api - 1]}/api/v1${url}`, { method, headers, body });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: res.status, body: parsed };
  };

  await t.test('the login rate limit allows its limit once across both APIs', async (t) => {
    const statuses: number[] = [];
    for (let i = 0; i < RATE_LIMIT + 2; i++) {
      const res = await call((i % 2) + 1, 'POST', '/auth/login', {
        client: '10.9.9.9',
        json: { email: `nobody${i}@example.com`, password: 'not the password' },
      });
      statuses.push(res.status);
    }
    t.same(
      statuses,
      [...Array(RATE_LIMIT).fill(401), 429, 429],
      `${RATE_LIMIT} attempts in all, half through each API, then both refuse`,
    );
  });

  // The mixed load. Every 2xx is remembered, to be found in the rows at the end.
  const acknowledged = {
    users: [] as number[],
    scripts: [] as number[],
    schedules: [] as number[],
    runs: [] as number[],
  };
  const users: { id: number; token: string; client: string; email: string; long: number; short: number }[] =
    [];
  for (let i = 0; i < USERS; i++) {
    const client = `10.0.1.${i + 1}`;
    const email = `mp${i}_${randomBytes(3).toString('hex')}@example.com`;
    const res = await call((i % 2) + 1, 'POST', '/auth/register', {
      client,
      json: {
        email,
        username: `mp_${i}_${randomBytes(2).toString('hex')}`,
        password: 'correct horse battery',
      },
    });
    t.equal(res.status, 201, `user ${i} registered through API ${(i % 2) + 1}`);
    acknowledged.users.push(res.body.user.id);
    users.push({ id: res.body.user.id, token: res.body.token, client, email, long: 0, short: 0 });
  }
  const upload = async (api: number, token: string, name: string, code: string) => {
    const res = await call(api, 'POST', '/scripts', { token, form: multipartFile(name, code) });
    if (res.status !== 201) throw new Error(`upload ${name}: ${res.status} ${JSON.stringify(res.body)}`);
    acknowledged.scripts.push(res.body.id);
    return res.body.id as number;
  };
  const script = (name: string, seconds: number) =>
    `import time\nwith open(${JSON.stringify(path.join(ledger, name))}, "a") as f:\n    f.write("ran\\n")\n` +
    `time.sleep(${seconds})\nprint("done ${name}")\n`;
  for (const [i, user] of users.entries()) {
    user.long = await upload((i % 2) + 1, user.token, `long${i}.py`, script(`long${i}`, LONG_SECONDS));
    user.short = await upload(((i + 1) % 2) + 1, user.token, `short${i}.py`, script(`short${i}`, 0));
    const schedule = await call((i % 2) + 1, 'POST', `/scripts/${user.short}/schedules`, {
      token: user.token,
      json: { cron: '0 12 1 1 *', timezone: 'UTC' },
    });
    t.equal(schedule.status, 201, `user ${i}: a schedule created`);
    acknowledged.schedules.push(schedule.body.id);
  }
  for (const [i, user] of users.entries()) {
    for (const [api, id] of [
      [(i % 2) + 1, user.long],
      [((i + 1) % 2) + 1, user.short],
    ] as const) {
      const res = await call(api, 'POST', `/scripts/${id}/execute`, { token: user.token });
      t.equal(res.status, 202, `user ${i}: script ${id} queued through API ${api}`);
      acknowledged.runs.push(res.body.id);
    }
  }
  // User 0 cancels its long run through the other API.
  const cancelled = await call(2, 'POST', `/scripts/${users[0]!.long}/cancel`, { token: users[0]!.token });
  t.equal(cancelled.status, 200, 'a cancel through API 2');

  const runOf = async (scriptId: number) => {
    const [run] = await sql<{ id: number; status: string; executor_id: string | null }[]>`
      select id, status::text, executor_id from script_runs where script_id = ${scriptId}
    `;
    return run!;
  };
  const longRunning = users.slice(1).map((u) => u.long);
  await eventually(
    'the short runs complete and the long ones run',
    async () => {
      const [row] = await sql<{ short_done: number; long_running: number }[]>`
        select count(*) filter (where script_id = any(${users.map((u) => u.short)}) and status = 'completed')::int as short_done,
          count(*) filter (where script_id = any(${longRunning}) and status = 'running')::int as long_running
        from script_runs
      `;
      return row!.short_done === USERS && row!.long_running === longRunning.length;
    },
    90_000,
  );

  await t.test('an action on API 1 is effective on API 2 at once', async (t) => {
    const [one, two, three] = [users[1]!, users[2]!, users[3]!];
    /**
     * API 2 has the token cached (AUTH_CACHE_TTL_SECONDS, 30 s); the auth_changed NOTIFY of
     * the commit on API 1 evicts it. The NOTIFY travels on its own connection, so on a loaded
     * machine it may reach API 2 a moment after the request: "at once" is the next request,
     * or within NOTIFY_BOUND_MS, never the cache's 30 s. How it went is printed.
     */
    const refusedOnApi2 = async (token: string, client: string, what: string) => {
      const started = Date.now();
      let first: number | undefined;
      let status = 0;
      while (status !== 401 && Date.now() - started <= NOTIFY_BOUND_MS) {
        status = (await call(2, 'GET', '/me', { token, client })).status;
        first ??= status;
      }
      if (first !== 401)
        t.comment(
          `${what}: the first request after it got ${first}; refused after ${Date.now() - started} ms`,
        );
      t.equal(
        status,
        401,
        `${what}: API 2 refuses the token at once (the next request${first === 401 ? '' : `, within ${NOTIFY_BOUND_MS} ms`})`,
      );
    };
    // Logout.
    t.equal(
      (await call(2, 'GET', '/me', { token: one.token, client: one.client })).status,
      200,
      'API 2 knows the token',
    );
    t.equal(
      (await call(1, 'POST', '/auth/logout', { token: one.token, client: one.client })).status,
      204,
      'logout on API 1',
    );
    await refusedOnApi2(one.token, one.client, 'logout');
    // Password change: every other session ends.
    const login = await call(2, 'POST', '/auth/login', {
      client: two.client,
      json: { email: two.email, password: 'correct horse battery' },
    });
    t.equal(login.status, 200, 'a second session, through API 2');
    t.equal((await call(2, 'GET', '/me', { token: login.body.token, client: two.client })).status, 200);
    const change = await call(1, 'PATCH', '/me', {
      token: two.token,
      client: two.client,
      json: { current_password: 'correct horse battery', new_password: 'another horse battery' },
    });
    t.equal(change.status, 200, 'password changed on API 1');
    await refusedOnApi2(login.body.token, two.client, 'password change (the other session)');
    // Deactivation by an admin.
    const admin = await call(1, 'POST', '/auth/register', {
      client: '10.0.2.1',
      json: {
        email: `admin_${randomBytes(3).toString('hex')}@example.com`,
        username: `admin_${randomBytes(2).toString('hex')}`,
        password: 'correct horse battery',
      },
    });
    t.equal(admin.status, 201);
    acknowledged.users.push(admin.body.user.id);
    await sql`update users set role = 'admin' where id = ${admin.body.user.id}`;
    t.equal(
      (await call(2, 'GET', '/me', { token: three.token, client: three.client })).status,
      200,
      'API 2 knows the token',
    );
    const off = await call(1, 'PATCH', `/users/${three.id}`, {
      token: admin.body.token,
      client: '10.0.2.1',
      json: { is_active: false },
    });
    t.equal(off.status, 200, 'deactivated on API 1');
    await refusedOnApi2(three.token, three.client, 'deactivation');
  });

  // SIGKILL the worker that runs a long script (and whatever else it runs).
  const victimRun = await runOf(users[1]!.long);
  const victim = workers.find((w) => victimRun.executor_id?.split(':')[1] === String(w.child.pid));
  if (victim === undefined) throw new Error(`no worker holds run ${victimRun.id} (${victimRun.executor_id})`);
  const [killed] = await sql<
    { at: Date; executor: string }[]
  >`select now() as at, ${victimRun.executor_id} as executor`;
  victim.child.kill('SIGKILL');
  t.equal(await victim.exited, null, `${victim.name} killed`);
  const victimRuns = await sql<{ id: number }[]>`
    select id from script_runs where executor_id = ${victimRun.executor_id} and status = 'running'
  `;

  // SIGTERM API 2 while uploads reach it: what it acknowledged is kept, the rest is refused.
  const uploader = users[0]!;
  const inFlight = [0, 1, 2].map((k) =>
    call(2, 'POST', '/scripts', {
      token: uploader.token,
      client: uploader.client,
      form: multipartFile(`late${k}.py`, 'print("late")\n'),
    }).catch((error: unknown) => ({ status: 0, body: String(error) }) as Answer),
  );
  apis[1]!.child.kill('SIGTERM');
  const late = await Promise.all(inFlight);
  for (const res of late) if (res.status === 201) acknowledged.scripts.push(res.body.id);
  t.ok(
    late.every((res) => res.status === 201 || res.status === 503 || res.status === 0),
    `API 2 answered or refused each request while stopping (${late.map((r) => r.status).join(', ')})`,
  );
  const code = await apis[1]!.exited;
  if (!t.equal(code, 0, `API 2 stopped cleanly on SIGTERM (exit code ${code})`))
    t.comment(`API 2's last lines:\n${apis[1]!.tail.join('\n')}`);

  // API 1 and the two workers left carry on.
  const after = await upload(1, uploader.token, 'after.py', script('after', 0));
  const afterRun = await call(1, 'POST', `/scripts/${after}/execute`, { token: uploader.token });
  t.equal(afterRun.status, 202, 'a run queued after the kills');
  acknowledged.runs.push(afterRun.body.id);

  await t.test("the killed worker's runs fail by lease expiry, within the lease bounds", async (t) => {
    t.ok(victimRuns.length >= 1, `the killed worker held ${victimRuns.length} running run(s)`);
    const ids = victimRuns.map((r) => r.id);
    await eventually(
      'the lapsed runs failed',
      async () => {
        const [row] = await sql<{ n: number }[]>`
          select count(*)::int as n from script_runs where id = any(${ids}) and status = 'failed'
        `;
        return row!.n === ids.length;
      },
      (2 * LEASE_SECONDS + 30) * 1000,
    );
    const rows = await sql<
      { id: number; error_message: string; lease_after_kill: number; failed_after_lease: number }[]
    >`
      select id, error_message,
        extract(epoch from lease_expires_at - ${killed!.at}::timestamptz)::float8 as lease_after_kill,
        extract(epoch from completed_at - lease_expires_at)::float8 as failed_after_lease
      from script_runs where id = any(${ids})
    `;
    for (const row of rows) {
      t.match(row.error_message, /stopped renewing its lease/, `run ${row.id}: failed for its lease`);
      t.ok(
        row.lease_after_kill <= LEASE_SECONDS,
        `run ${row.id}: its lease ran out ${row.lease_after_kill.toFixed(2)} s after the kill (at most the lease, ${LEASE_SECONDS} s)`,
      );
      t.ok(
        row.failed_after_lease > 0 && row.failed_after_lease <= LEASE_SECONDS + SLACK_SECONDS,
        `run ${row.id}: failed ${row.failed_after_lease.toFixed(2)} s after its lease ran out (the survivors check every lease period)`,
      );
    }
  });

  await eventually(
    'every run has ended',
    async () => {
      const [row] = await sql<{ n: number }[]>`
        select count(*)::int as n from script_runs where status in ('queued', 'running')
      `;
      return row!.n === 0;
    },
    (LONG_SECONDS + 60) * 1000,
  );

  await t.test('every acknowledged write is in the rows, and no run executed twice', async (t) => {
    const count = async (table: string, ids: number[]) => {
      const [row] = await sql<
        { n: number }[]
      >`select count(*)::int as n from ${sql(table)} where id = any(${ids})`;
      return row!.n;
    };
    t.equal(await count('users', acknowledged.users), acknowledged.users.length, 'every registered user');
    t.equal(
      await count('scripts', acknowledged.scripts),
      acknowledged.scripts.length,
      'every uploaded script',
    );
    t.equal(
      await count('script_schedules', acknowledged.schedules),
      acknowledged.schedules.length,
      'every schedule',
    );
    t.equal(await count('script_runs', acknowledged.runs), acknowledged.runs.length, 'every queued run');
    const [contents] = await sql<{ n: number }[]>`
      select count(*)::int as n from script_contents where script_id = any(${acknowledged.scripts})
    `;
    t.equal(contents!.n, acknowledged.scripts.length, "every uploaded script's bytes");
    t.equal((await runOf(users[0]!.long)).status, 'cancelled', 'the cancelled run stayed cancelled');

    const runs = await sql<{ id: number; script: string; status: string; runs_of_script: number }[]>`
      select r.id, s.original_filename as script, r.status::text,
        count(*) over (partition by r.script_id)::int as runs_of_script
      from script_runs as r join scripts as s on s.id = r.script_id
      order by r.id
    `;
    t.equal(runs.length, acknowledged.runs.length, 'no run was made but those queued');
    for (const run of runs) {
      const name = run.script.replace(/\.py$/, '');
      const lines = (await readFile(path.join(ledger, name), 'utf8').catch(() => ''))
        .split('\n')
        .filter(Boolean).length;
      const expected = run.status === 'completed' || victimRuns.some((v) => v.id === run.id) ? 1 : lines;
      t.ok(
        run.runs_of_script === 1 && lines <= 1 && lines === expected,
        `run ${run.id} (${run.script}, ${run.status}) executed ${lines} time(s)`,
      );
    }
  });
});

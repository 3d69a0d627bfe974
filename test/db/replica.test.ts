/**
 * A real streaming replica: this file starts a PostgreSQL primary of its own (the system's
 * binaries, a temporary data folder, a free loopback port), makes a replica of it with
 * `pg_basebackup -R`, and runs the app with DATABASE_READ_URL pointing at the replica.
 * Skipped, saying why, only where the binaries are missing (.ci/run installs them).
 *
 * Which server answered a listing is told by the data: while the replica's replay is
 * paused (`pg_wal_replay_pause()`), a script another process uploads is on the primary
 * only.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { FastifyInstance } from 'fastify';
import postgres from 'postgres';
import t from 'tap';
import { compose } from '../../src/compose.ts';
import { loadConfig } from '../../src/config.ts';
import { createPool, poolOptionsFrom, type Sql } from '../../src/db/client.ts';
import { migrate, migrationNames } from '../../src/db/migrate.ts';
import { build } from '../../src/http/app.ts';
import { Metrics } from '../../src/metrics.ts';
import { multipartFile, signUp, TEST_IBKR_KEY } from '../helpers/app.ts';
import { testLogger } from '../helpers/db.ts';

const run = promisify(execFile);
const METRICS_TOKEN = 'replica-test-metrics-token';

function postgresBin(): string | null {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  const versions = readdirSync(root)
    .filter((v) => existsSync(path.join(root, v, 'bin', 'pg_basebackup')))
    .sort((a, b) => Number(b) - Number(a));
  return versions.length === 0 ? null : path.join(root, versions[0]!, 'bin');
}

const bin = postgresBin();
if (bin === null) {
  t.comment(
    'skipped: no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)',
  );
  t.pass('skipped: no PostgreSQL binaries to make a replica with');
} else {
  await replicaTests(bin);
}

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

async function replicaTests(bin: string): Promise<void> {
  const root = process.getuid?.() === 0;
  /** PostgreSQL refuses to run as root: as root, its tools run as the `postgres` user. */
  const pg = (tool: string, args: string[]) =>
    root
      ? run('runuser', ['-u', 'postgres', '--', path.join(bin, tool), ...args])
      : run(path.join(bin, tool), args);

  const dir = await mkdtemp(path.join(tmpdir(), 'dollarclub-replica-'));
  if (root) await run('chown', ['postgres:postgres', dir]);
  const primaryDir = path.join(dir, 'primary');
  const replicaDir = path.join(dir, 'replica');
  const [primaryPort, replicaPort] = [await freePort(), await freePort()];
  const started: string[] = [];
  t.teardown(async () => {
    for (const data of started.reverse())
      await pg('pg_ctl', ['-D', data, '-m', 'immediate', 'stop']).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  });

  const settings = [
    `-c listen_addresses=127.0.0.1 -c unix_socket_directories=${dir}`,
    '-c wal_level=replica -c max_wal_senders=4 -c fsync=off -c shared_buffers=16MB -c max_connections=40',
  ].join(' ');
  await pg('initdb', ['-D', primaryDir, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8']);
  // initdb's pg_hba.conf with --auth=trust already admits replication from 127.0.0.1; say it anyway.
  await run('sh', ['-c', `echo 'host replication all 127.0.0.1/32 trust' >> ${primaryDir}/pg_hba.conf`]);
  await pg('pg_ctl', [
    '-D',
    primaryDir,
    '-l',
    path.join(dir, 'primary.log'),
    '-o',
    `-p ${primaryPort} ${settings}`,
    '-w',
    'start',
  ]);
  started.push(primaryDir);

  const primaryUrl = `postgres://postgres@127.0.0.1:${primaryPort}/dollarclub`;
  const replicaUrl = `postgres://postgres@127.0.0.1:${replicaPort}/dollarclub`;
  const admin = postgres(`postgres://postgres@127.0.0.1:${primaryPort}/postgres`, {
    max: 1,
    onnotice: () => {},
  });
  await admin`create database dollarclub`;
  await admin.end();
  await migrate({ databaseUrl: primaryUrl, log: () => {} });

  await pg('pg_basebackup', [
    '-h',
    '127.0.0.1',
    '-p',
    String(primaryPort),
    '-U',
    'postgres',
    '-D',
    replicaDir,
    '-R',
    '-X',
    'stream',
    '-c',
    'fast',
    '--no-sync',
  ]);
  await pg('pg_ctl', [
    '-D',
    replicaDir,
    '-l',
    path.join(dir, 'replica.log'),
    '-o',
    `-p ${replicaPort} ${settings}`,
    '-w',
    'start',
  ]);
  started.push(replicaDir);

  const log = testLogger();
  const pools: Sql[] = [];
  const pool = (url: string, name: string) => {
    const sql = createPool(
      poolOptionsFrom({ ...loadConfig({ NODE_ENV: 'test' }), DB_POOL_MAX: 4 }, url, name),
      log,
    );
    pools.push(sql);
    return sql;
  };
  t.teardown(() => Promise.all(pools.map((sql) => sql.end({ timeout: 1 }))));
  const primary = pool(primaryUrl, 'replica-test:direct');
  const onReplica = pool(replicaUrl, 'replica-test:replica-direct');

  async function makeApp(env: Record<string, string>, withReplica: boolean): Promise<FastifyInstance> {
    const config = loadConfig({
      NODE_ENV: 'test',
      DATABASE_URL: primaryUrl,
      ...(withReplica ? { DATABASE_READ_URL: replicaUrl } : {}),
      IBKR_TOKEN_KEY: TEST_IBKR_KEY,
      AUTH_RATE_LIMIT_MAX: '100000',
      MAX_EVENT_LOOP_DELAY_MS: '0',
      METRICS_TOKEN,
      ...env,
    });
    const composition = compose({
      config,
      sql: pool(primaryUrl, 'replica-test'),
      readSql: withReplica ? pool(replicaUrl, 'replica-test:read') : undefined,
      log,
      metrics: new Metrics({ defaultMetrics: false }),
      migrations: await migrationNames(),
    });
    const app = await build({ ctx: composition.ctx, logger: log, activity: composition.activity });
    t.teardown(async () => {
      await composition.router?.stop();
      await app.close();
    });
    return app;
  }

  const readiness = async (app: FastifyInstance) => {
    const res = await app.inject({
      method: 'GET',
      url: '/health/database',
      headers: { authorization: `Bearer ${METRICS_TOKEN}` },
    });
    return { code: res.statusCode, body: res.json() };
  };
  /** Waits (bounded) until readiness shows the replica in `state`; returns the last answer. */
  const replicaState = async (app: FastifyInstance, state: string) => {
    let last = await readiness(app);
    for (let i = 0; i < 100 && last.body.replica?.state !== state; i++) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      last = await readiness(app);
    }
    return last;
  };
  const caughtUp = async () => {
    const [row] = await primary<{ lsn: string }[]>`select pg_current_wal_lsn()::text as lsn`;
    const lsn = row?.lsn ?? '0/0';
    for (let i = 0; i < 150; i++) {
      const [state] = await onReplica<
        { ok: boolean }[]
      >`select pg_last_wal_replay_lsn() >= ${lsn}::pg_lsn as ok`;
      if (state?.ok) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error('the replica did not catch up');
  };
  const upload = async (app: FastifyInstance, headers: Record<string, string>, name: string) => {
    const file = multipartFile(name, 'print("hi")\n');
    const res = await app.inject({
      method: 'POST',
      url: '/api/v1/scripts',
      payload: file.payload,
      headers: { ...headers, ...file.headers },
    });
    if (res.statusCode !== 201) throw new Error(`upload: ${res.statusCode} ${res.body}`);
  };
  const listing = async (app: FastifyInstance, headers: Record<string, string>) => {
    const res = await app.inject({ method: 'GET', url: '/api/v1/scripts', headers });
    return { code: res.statusCode, body: res.body };
  };

  const api = await makeApp({ REPLICA_MAX_LAG_SECONDS: '60' }, true);
  // A second API process with the replica: the writer's next request may reach it.
  const peer = await makeApp({ REPLICA_MAX_LAG_SECONDS: '60' }, true);
  // Another API process, without a replica: its writes are not this process's callers' own.
  const other = await makeApp({}, false);
  const writer = await signUp(api);
  const reader = await signUp(api);
  await caughtUp();
  const states = [
    (await replicaState(api, 'ok')).body.replica?.state,
    (await replicaState(peer, 'ok')).body.replica?.state,
  ];
  t.same(states, ['ok', 'ok'], 'the replica is in use, by both API processes');

  t.test('listings read from the replica; the writer reads its own write at once', async (t) => {
    await onReplica`select pg_wal_replay_pause()`;
    t.teardown(() => onReplica`select pg_wal_replay_resume()`);
    await upload(other, reader.headers, 'elsewhere.py');
    await upload(api, writer.headers, 'mine.py');

    const theirs = await listing(api, reader.headers);
    t.equal(theirs.code, 200);
    t.notMatch(
      theirs.body,
      'elsewhere.py',
      'a listing is served by the replica, which has not replayed the upload',
    );

    const mine = await listing(api, writer.headers);
    t.equal(mine.code, 200);
    t.match(mine.body, 'mine.py', "the writer's read right after its upload sees it (read-your-writes)");

    // Through the other API process: pinned by the NOTIFY of the write's position, which may
    // arrive a moment after the request (bounded here by 1 s; printed when it happens).
    const started = Date.now();
    let elsewhere = await listing(peer, writer.headers);
    const first = elsewhere.body.includes('mine.py');
    while (!elsewhere.body.includes('mine.py') && Date.now() - started < 1000)
      elsewhere = await listing(peer, writer.headers);
    if (!first)
      t.comment(`the other process saw the write after ${Date.now() - started} ms (the NOTIFY came late)`);
    t.match(elsewhere.body, 'mine.py', "the writer's read through another API process sees it too");
    t.notMatch(
      (await listing(peer, reader.headers)).body,
      'elsewhere.py',
      'while that process still serves other users from the replica',
    );

    const ready = await readiness(api);
    t.equal(ready.code, 200);
    t.equal(ready.body.replica.state, 'ok', 'within REPLICA_MAX_LAG_SECONDS the replica stays in use');
    t.type(ready.body.replica.lag_seconds, 'number', 'readiness reports the lag');
  });

  t.test('a replica lagging more than REPLICA_MAX_LAG_SECONDS is bypassed', async (t) => {
    await caughtUp();
    const strict = await makeApp({ REPLICA_MAX_LAG_SECONDS: '1' }, true);
    t.equal((await replicaState(strict, 'ok')).body.replica?.state, 'ok');
    await onReplica`select pg_wal_replay_pause()`;
    t.teardown(() => onReplica`select pg_wal_replay_resume()`);
    await upload(other, reader.headers, 'while-lagging.py');

    const ready = await replicaState(strict, 'lagging');
    t.equal(ready.code, 200, 'a lagging replica does not make the API unready');
    t.equal(ready.body.replica.state, 'lagging');
    t.ok(
      ready.body.replica.lag_seconds > 1,
      `readiness reports the lag (${ready.body.replica.lag_seconds} s)`,
    );
    const page = await listing(strict, reader.headers);
    t.equal(page.code, 200);
    t.match(page.body, 'while-lagging.py', 'the listing is read from the primary');
  });

  t.test('a stopped replica is bypassed without errors', async (t) => {
    await caughtUp();
    await upload(other, reader.headers, 'before-stop.py');
    await pg('pg_ctl', ['-D', replicaDir, '-m', 'fast', '-w', 'stop']);
    // At once, before any probe has noticed: the query the replica cannot answer runs on the primary.
    const page = await listing(api, reader.headers);
    t.equal(page.code, 200, 'the listing is answered');
    t.match(page.body, 'before-stop.py', 'from the primary');
    const ready = await replicaState(api, 'down');
    t.equal(ready.code, 200, 'readiness stays ok');
    t.same(ready.body.replica, { state: 'down', lag_seconds: null, max_lag_seconds: 60 });
    const again = await listing(api, reader.headers);
    t.equal(again.code, 200);
    t.match(again.body, 'before-stop.py');
  });
}

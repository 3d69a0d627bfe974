/**
 * The whole app over a fresh database of this test file, for `app.inject`.
 * Rate limits are raised unless a test sets them; STORAGE_DIR is a temporary folder
 * (where script files were kept before script_contents).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Test } from 'tap';
import { type Composition, compose } from '../../src/compose.ts';
import { type Config, loadConfig } from '../../src/config.ts';
import { migrationNames } from '../../src/db/migrate.ts';
import type { User } from '../../src/domain/user.ts';
import { type BuildOptions, build } from '../../src/http/app.ts';
import { Metrics } from '../../src/metrics.ts';
import { type TestDatabase, testDatabase, testLogger } from './db.ts';

export interface TestApp extends Composition {
  app: FastifyInstance;
  database: TestDatabase;
  config: Config;
}

export async function testApp(
  t: Test,
  env: Record<string, string> = {},
  /** More options of build(), such as smaller log-stream limits. */
  buildOptions: Partial<Omit<BuildOptions, 'ctx' | 'logger'>> = {},
): Promise<TestApp> {
  const database = await testDatabase(t);
  const storageDir = await mkdtemp(path.join(tmpdir(), 'dollarclub-storage-'));
  t.teardown(() => rm(storageDir, { recursive: true, force: true }));
  const config = loadConfig({
    NODE_ENV: 'test',
    STORAGE_DIR: storageDir,
    AUTH_RATE_LIMIT_MAX: '100000',
    UPLOAD_RATE_LIMIT_MAX: '100000',
    LOGIN_MAX_FAILURES: '1000',
    IBKR_TOKEN_KEY: TEST_IBKR_KEY,
    // Load shedding reacts to a starved event loop, which a busy test machine produces at will;
    // it is not what these tests are about.
    MAX_EVENT_LOOP_DELAY_MS: '0',
    ...env,
  });
  const log = testLogger();
  const composition = compose({
    config,
    sql: database.sql,
    log,
    metrics: new Metrics({ defaultMetrics: false }),
    migrations: await migrationNames(),
  });
  const app = await build({
    ctx: composition.ctx,
    logger: log,
    activity: composition.activity,
    ...buildOptions,
  });
  t.teardown(() => app.close());
  return { ...composition, app, database, config };
}

export interface Account {
  user: User;
  token: string;
  headers: { authorization: string };
  password: string;
}

/** The IBKR token key of every test app (a test passes its key explicitly; nothing derives one). */
export const TEST_IBKR_KEY = Buffer.alloc(32, 42).toString('base64');

let counter = 0;

/** Registers a user through the API. */
export async function signUp(
  app: FastifyInstance,
  fields: Partial<{ email: string; username: string; password: string }> = {},
): Promise<Account> {
  const n = `${process.pid}_${++counter}`;
  const body = {
    email: `person${n}@example.com`,
    username: `person_${n}`,
    password: 'correct horse battery',
    ...fields,
  };
  const res = await app.inject({ method: 'POST', url: '/api/v1/auth/register', payload: body });
  if (res.statusCode !== 201) throw new Error(`register failed: ${res.statusCode} ${res.body}`);
  const { user, token } = res.json();
  return { user, token, headers: { authorization: `Bearer ${token}` }, password: body.password };
}

/** Registers a user and makes it an admin. */
export async function signUpAdmin(testApp: TestApp): Promise<Account> {
  const account = await signUp(testApp.app);
  account.user = await testApp.repos.users.update(account.user.id, { role: 'admin' });
  testApp.cache.evictUser(account.user.id);
  return account;
}

/** A multipart/form-data body with one file part. */
export function multipartFile(
  filename: string,
  content: string | Buffer,
  field = 'file',
): { payload: Buffer; headers: Record<string, string> } {
  const boundary = `----dollarclub${Math.random().toString(16).slice(2)}`;
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="${field}"; filename="${filename}"\r\n` +
      'Content-Type: application/octet-stream\r\n\r\n',
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  return {
    payload: Buffer.concat([head, Buffer.isBuffer(content) ? content : Buffer.from(content), tail]),
    headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
  };
}

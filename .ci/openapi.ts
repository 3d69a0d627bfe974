/**
 * Prints the OpenAPI document the server generates (GET /docs/json) without a
 * database: the app is built around a pool that is never used (postgres() connects
 * lazily), so .ci/run can lint the document before any PostgreSQL is up.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import postgres from 'postgres';
import { compose } from '../src/compose.ts';
import { loadConfig } from '../src/config.ts';
import type { Sql } from '../src/db/client.ts';
import { build } from '../src/http/app.ts';
import { Metrics } from '../src/metrics.ts';

const dir = await mkdtemp(path.join(tmpdir(), 'dollarclub-openapi-'));
try {
  const config = loadConfig({ NODE_ENV: 'test', STORAGE_DIR: dir });
  const log = pino({ level: 'silent' });
  const sql = postgres('postgres://openapi@127.0.0.1:1/openapi', { max: 1 }) as unknown as Sql;
  const { ctx, activity } = compose({
    config,
    sql,
    log,
    metrics: new Metrics({ defaultMetrics: false }),
    migrations: [],
  });
  const app = await build({ ctx, logger: log, activity });
  await app.ready();
  process.stdout.write(`${JSON.stringify(app.swagger(), null, 2)}\n`);
  await app.close();
  await sql.end({ timeout: 0 });
} finally {
  await rm(dir, { recursive: true, force: true });
}

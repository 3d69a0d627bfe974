/**
 * Uids of runs. As root, every run gets a uid and gid of its own, so one user's
 * script can neither read another's running script or output through /proc
 * (/proc/<pid>/cwd and /proc/<pid>/fd need the same uid) nor signal its
 * processes, and SCRIPT_MAX_PROCESSES (RLIMIT_NPROC, counted per uid) is per run.
 *
 * The uids are SCRIPT_UID … SCRIPT_UID+1023 (gids: SCRIPT_GID + the same offset),
 * shared by every executor of the host: each executor holds 2 × EXECUTOR_CONCURRENCY
 * of them (its block) while it runs (a finished run's uid is swept while the next run
 * starts), and each run takes a free one of its block.
 *
 * Holding a uid is a lock file in UID_LOCK_DIR (host-wide, root's, whatever an
 * executor's EXECUTOR_WORK_DIR): `<uid>.<generation>`, holding the owner's pid,
 * start time and boot id. The holder is the newest generation, and only while
 * its owner lives and it has no `.released` marker. Files are created whole with
 * link(2), which never replaces, so of several executors taking over a dead
 * owner's uid (generation g + 1) exactly one succeeds; nothing is ever overwritten,
 * and an executor that re-creates an old generation (cleaned up meanwhile) sees a
 * newer one when it checks again and backs off.
 */
import { randomBytes } from 'node:crypto';
import { chmod, link, lstat, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pidExists } from '../proc.ts';
import { identify, isAlive, parseIdentity } from './host-processes.ts';
import type { SandboxUser } from './process-group.ts';

export const UID_LOCK_DIR = '/run/dollarclub-script-uids';
/** How many uids (and gids) from SCRIPT_UID (SCRIPT_GID) runs may get. */
export const SCRIPT_ID_RANGE = 1024;

export interface UidPoolOptions {
  baseUid: number;
  baseGid: number;
  /** How many uids to hold (the executor holds twice its concurrency). */
  count: number;
  executorId: string;
  lockDir?: string;
}

interface Held {
  user: SandboxUser;
  generation: number;
}

export class UidPool {
  private readonly free: SandboxUser[];

  private readonly dir: string;
  private readonly held: Held[];

  private constructor(dir: string, held: Held[]) {
    this.dir = dir;
    this.held = held;
    this.free = held.map((h) => h.user);
  }

  /** Takes `count` free uids of the range, or throws. */
  static async acquire(options: UidPoolOptions): Promise<UidPool> {
    await checkRangeUnused(options.baseUid, options.baseGid);
    const dir = options.lockDir ?? UID_LOCK_DIR;
    await ensurePrivateDir(dir);
    await removeStaleTemporaries(dir);
    const owner = `${JSON.stringify({ ...(await identify()), executor: options.executorId })}\n`;
    const held: Held[] = [];
    const locks = new UidPool(dir, held); // for locking and, on failure, unlocking
    try {
      for (let offset = 0; offset < SCRIPT_ID_RANGE && held.length < options.count; offset++) {
        const uid = options.baseUid + offset;
        const generation = await locks.tryLock(uid, owner);
        if (generation !== null) held.push({ user: { uid, gid: options.baseGid + offset }, generation });
      }
    } catch (error) {
      await locks.release();
      throw error;
    }
    if (held.length < options.count) {
      const got = held.length;
      await locks.release();
      throw new Error(
        `only ${got} of the ${options.count} script uids this executor needs are free: ` +
          `other executors of this host hold the rest of ${options.baseUid}…${options.baseUid + SCRIPT_ID_RANGE - 1}`,
      );
    }
    return new UidPool(dir, held);
  }

  /** Every uid this executor holds. */
  get users(): SandboxUser[] {
    return this.held.map((h) => h.user);
  }

  /** How many uids no run is using. */
  get available(): number {
    return this.free.length;
  }

  /** A uid no run of this executor is using, for a new run. */
  take(): SandboxUser {
    const user = this.free.shift();
    if (user === undefined) throw new Error('no free script uid: more runs than EXECUTOR_CONCURRENCY');
    return user;
  }

  /** Gives a run's uid back (once its processes and files are gone). */
  give(user: SandboxUser): void {
    if (!this.free.some((u) => u.uid === user.uid)) this.free.push(user);
  }

  /** Lets other executors have these uids. */
  async release(): Promise<void> {
    for (const { user, generation } of this.held.splice(0)) {
      await writeFile(this.marker(user.uid, generation), '', { flag: 'wx', mode: 0o600 }).catch(() => {});
    }
    this.free.length = 0;
  }

  /** Locks `uid` if nobody alive holds it; the generation taken, or null. */
  private async tryLock(uid: number, owner: string): Promise<number | null> {
    const temporary = path.join(this.dir, `.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
    await writeFile(temporary, owner, { mode: 0o600 });
    try {
      for (let attempt = 0; attempt < 10; attempt++) {
        const newest = Math.max(-1, ...(await this.generations(uid)));
        if (newest >= 0 && (await this.isHeld(uid, newest))) return null;
        const mine = newest + 1;
        try {
          await link(temporary, this.lockFile(uid, mine));
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'EEXIST') continue; // someone was faster
          throw error;
        }
        const generations = await this.generations(uid);
        if (Math.max(...generations) !== mine) {
          // A generation cleaned up meanwhile, re-created by us: a newer holder exists.
          await rm(this.lockFile(uid, mine), { force: true });
          return null;
        }
        for (const old of generations.filter((g) => g < mine)) {
          await rm(this.marker(uid, old), { force: true }); // marker first: a lock never loses its marker alone
          await rm(this.lockFile(uid, old), { force: true });
        }
        return mine;
      }
      return null;
    } finally {
      await rm(temporary, { force: true });
    }
  }

  private async isHeld(uid: number, generation: number): Promise<boolean> {
    try {
      await lstat(this.marker(uid, generation));
      return false; // released
    } catch {
      // no marker
    }
    const text = await readFile(this.lockFile(uid, generation), 'utf8').catch(() => null);
    if (text === null) return true; // gone meanwhile: someone is taking it over, let them
    const owner = parseIdentity(text);
    return owner !== null && (await isAlive(owner));
  }

  private async generations(uid: number): Promise<number[]> {
    const prefix = `${uid}.`;
    return (await readdir(this.dir))
      .filter((name) => name.startsWith(prefix) && /^\d+$/.test(name.slice(prefix.length)))
      .map((name) => Number(name.slice(prefix.length)));
  }

  private lockFile(uid: number, generation: number): string {
    return path.join(this.dir, `${uid}.${generation}`);
  }

  private marker(uid: number, generation: number): string {
    return `${this.lockFile(uid, generation)}.released`;
  }
}

/** The uids and gids of runs must belong to nobody else: a sweep kills every process of a run's uid. */
async function checkRangeUnused(baseUid: number, baseGid: number): Promise<void> {
  for (const [file, base, what, variable] of [
    ['/etc/passwd', baseUid, 'user', 'SCRIPT_UID'],
    ['/etc/group', baseGid, 'group', 'SCRIPT_GID'],
  ] as const) {
    const text = await readFile(file, 'utf8').catch(() => '');
    for (const line of text.split('\n')) {
      const [name, , id] = line.split(':');
      const n = Number(id);
      if (name && id && n >= base && n < base + SCRIPT_ID_RANGE)
        throw new Error(
          `${variable}=${base}: runs get the ${what} ids ${base}…${base + SCRIPT_ID_RANGE - 1}, which must ` +
            `belong to no ${what}, but ${n} is ${what} "${name}" in ${file}; choose another ${variable}`,
        );
    }
  }
}

/** The lock folder: root's, and writable by nobody else (a script must not plant locks). */
async function ensurePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const stat = await lstat(dir);
  if (!stat.isDirectory() || stat.uid !== process.getuid?.())
    throw new Error(`${dir} must be a folder owned by the executor's user (root)`);
  if ((stat.mode & 0o022) !== 0) await chmod(dir, 0o700);
}

/** Temporary files of processes that died between writing and removing them. */
async function removeStaleTemporaries(dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    const m = /^\.(\d+)\.[0-9a-f]+\.tmp$/.exec(name);
    if (m && !pidExists(Number(m[1]))) await rm(path.join(dir, name), { force: true });
  }
}

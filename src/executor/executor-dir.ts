/**
 * The executor's own folder under EXECUTOR_WORK_DIR, named after its id
 * (`<host>:<pid>:<random>`), holding its runs' scratch folders. An executor that
 * died (SIGKILL, a crash, the machine's OOM killer) leaves its folder behind, and
 * maybe processes: the parent-death signal ends `time` and the script, but not
 * what the script started. So at start an executor looks at its siblings: a
 * folder of this host whose executor no longer lives is reaped, its processes
 * (those working inside it) killed and the folder removed.
 */
import { randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { pidExists } from '../proc.ts';
import { identify, isAlive, killProcessesIn, parseIdentity } from './host-processes.ts';

const OWNER_FILE = '.owner';
const FOLDER_NAME = /^(.+):(\d+):[0-9a-f]+$/;

/** A new executor id, `<host>:<pid>:<random>`: also the name of its folder (FOLDER_NAME). */
export function newExecutorId(): string {
  return `${hostLabel()}:${process.pid}:${randomBytes(3).toString('hex')}`;
}

/** This host's name as it appears in executor ids and folder names. */
export function hostLabel(): string {
  return hostname().replace(/[^A-Za-z0-9.-]/g, '_') || 'host';
}

/** Creates the executor's folder (0711: runs can enter their own scratch folder, not list others). */
export async function createExecutorDir(root: string, executorId: string): Promise<string> {
  if (!FOLDER_NAME.test(executorId) || executorId.includes('/'))
    throw new Error(`bad executor id ${executorId}`);
  await mkdir(root, { recursive: true, mode: 0o711 });
  // The default root is in /tmp, where anyone (a script, too) could have made it first.
  const stat = await lstat(root);
  if (!stat.isDirectory() || stat.uid !== process.getuid?.())
    throw new Error(`EXECUTOR_WORK_DIR ${root} must be a folder (not a link) owned by the executor's user`);
  await chmod(root, 0o711);
  const dir = path.join(root, executorId);
  await mkdir(dir, { mode: 0o711 });
  await writeFile(path.join(dir, OWNER_FILE), `${JSON.stringify(await identify())}\n`, { mode: 0o600 });
  return dir;
}

/** Kills what dead executors of this host left running in their folders and removes the folders. */
export async function reapDeadExecutors(
  root: string,
  self: string,
): Promise<Array<{ folder: string; killed: number }>> {
  const reaped: Array<{ folder: string; killed: number }> = [];
  const host = hostLabel();
  for (const name of await readdir(root).catch(() => [] as string[])) {
    const m = FOLDER_NAME.exec(name);
    if (m === null || name === self || m[1] !== host) continue;
    const dir = path.join(root, name);
    if (await ownerAlive(dir, Number(m[2]))) continue;
    const killed = await killProcessesIn(dir);
    await rm(dir, { recursive: true, force: true });
    reaped.push({ folder: name, killed });
  }
  return reaped;
}

async function ownerAlive(dir: string, pid: number): Promise<boolean> {
  const owner = parseIdentity(await readFile(path.join(dir, OWNER_FILE), 'utf8').catch(() => ''));
  // Without the owner file (a folder being created right now), the pid is all there is.
  return owner === null ? pidExists(pid) : owner.pid === pid && (await isAlive(owner));
}

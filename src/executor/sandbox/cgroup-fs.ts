/** Reading cgroupfs files, and removing a cgroup tree once its processes are gone. */
import { readdir, readFile, rmdir } from 'node:fs/promises';
import path from 'node:path';

/** rmdir, deepest first, retrying while the last processes are being reaped (EBUSY). */
export async function removeTree(dir: string): Promise<boolean> {
  for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    if (entry.isDirectory()) await removeTree(path.join(dir, entry.name));
  }
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      await rmdir(dir);
      return true;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return true;
      if (code !== 'EBUSY') return false;
      const procs = await readText(path.join(dir, 'cgroup.procs'));
      for (const pid of procs.split('\n').filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // gone
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  return false;
}

export async function readText(file: string): Promise<string> {
  return readFile(file, 'utf8').catch(() => '');
}

export async function readNumber(file: string): Promise<number | null> {
  const value = Number.parseInt(await readText(file), 10);
  return Number.isFinite(value) ? value : null;
}

export async function exists(file: string): Promise<boolean> {
  return readFile(file).then(
    () => true,
    () => false,
  );
}

/** `key N` from a flat-keyed cgroup file. */
export function keyed(text: string, key: string): number | null {
  const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : null;
}

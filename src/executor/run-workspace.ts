/**
 * A fresh scratch folder per run in its executor's folder, holding a copy of the
 * script, streamed from storage. As root, the
 * folder is root's, shared with the run's own gid only (0770): the script works
 * in it but cannot chmod it open to anybody else, so once the run's uid has no
 * process left nobody but root reaches inside, and root can remove it safely.
 * TypeScript is compiled here with esbuild (what tsx, the project's runner,
 * uses), so the script needs nothing of the project at run time.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { chmod, chown, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { pipeline } from 'node:stream/promises';
import { transform } from 'esbuild';
import type { ScriptExtension } from '../domain/script.ts';
import type { SandboxUser } from './process-group.ts';

export interface Workspace {
  dir: string;
  /** Where GNU time writes its report: beside the scratch folders, not inside one. */
  statsFile: string;
  /** The file to run, relative to `dir`. */
  entry: string;
  remove(): Promise<void>;
}

export class ScriptCompileError extends Error {
  override name = 'ScriptCompileError';
}

export interface WorkspaceOptions {
  /** The executor's folder, parent of its runs' scratch folders: 0711 (enter, not list). */
  root: string;
  scriptId: number;
  /** The script's bytes (from `Storage.open`). */
  source: Readable;
  extension: ScriptExtension;
  user?: SandboxUser;
}

export async function prepareWorkspace(options: WorkspaceOptions): Promise<Workspace> {
  const name = `run-${options.scriptId}-${randomBytes(6).toString('hex')}`;
  const dir = path.join(options.root, name);
  const statsFile = path.join(options.root, `${name}.time`);
  await mkdir(dir, { mode: 0o700 });
  const remove = () =>
    Promise.all([rm(dir, { recursive: true, force: true }), rm(statsFile, { force: true })]).then(() => {});
  try {
    const entry = options.extension === '.py' ? 'main.py' : 'main.js';
    const file = path.join(dir, entry);
    if (options.extension !== '.ts') {
      // Streamed slice by slice into the file: never the whole script in memory.
      await pipeline(options.source, createWriteStream(file, { mode: 0o400, flags: 'wx' }));
    } else {
      // esbuild takes the whole text; a script is at most MAX_UPLOAD_BYTES.
      const source = await text(options.source);
      let code: string;
      try {
        const out = await transform(source, {
          loader: 'ts',
          sourcefile: 'main.ts',
          target: 'node20',
        });
        code = out.code;
      } catch (error) {
        const errors =
          (error as { errors?: Array<{ text: string; location?: { line: number } }> }).errors ?? [];
        const detail = errors.map((e) => `line ${e.location?.line ?? '?'}: ${e.text}`).join('; ');
        throw new ScriptCompileError(`the TypeScript does not compile: ${detail || String(error)}`);
      }
      await writeFile(file, code, { mode: 0o400, flag: 'wx' });
    }
    if (options.user) {
      await chown(dir, 0, options.user.gid);
      await chmod(dir, 0o770);
      await chown(file, options.user.uid, options.user.gid);
    }
    return { dir, statsFile, entry, remove };
  } catch (error) {
    await remove();
    throw error;
  }
}

/**
 * The file step of import-legacy: reads each script's file from the old upload
 * folder (by its `filename`), computes sha256 and size from the bytes, and writes a
 * copy into this app's storage under the script's key. A missing file is a result
 * (the script is refused), not an error; any other I/O error stops the import.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ScriptFile } from '../../repositories/legacy-import-repository.js';

export interface FileResult {
  id: number;
  /** null: the file is missing. */
  sha256: string | null;
  size: number | null;
}

const MISSING = new Set(['ENOENT', 'ENOTDIR', 'EISDIR']);

export class FileCopier {
  private readonly made = new Set<string>();

  constructor(
    private readonly filesDir: string,
    /** The absolute path of a storage key under STORAGE_DIR (legacyPathOf). */
    private readonly pathOf: (key: string) => string,
    private readonly concurrency = 32,
  ) {}

  /** Reads, hashes and copies one page of files, `concurrency` at a time; results in input order. */
  async copy(files: ScriptFile[], onFile: () => void): Promise<FileResult[]> {
    const results: FileResult[] = new Array(files.length);
    let next = 0;
    const worker = async () => {
      while (next < files.length) {
        const i = next++;
        results[i] = await this.one(files[i]!);
        onFile();
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, files.length) }, worker));
    return results;
  }

  private async one(file: ScriptFile): Promise<FileResult> {
    let bytes: Buffer;
    try {
      // source_name passed FILENAME_RE (a uuid and an extension): it cannot leave filesDir.
      bytes = await readFile(path.join(this.filesDir, file.source_name));
    } catch (error) {
      if (MISSING.has((error as NodeJS.ErrnoException).code ?? ''))
        return { id: file.id, sha256: null, size: null };
      throw error;
    }
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    if (bytes.length > 0) {
      const target = this.pathOf(file.file_path);
      const dir = path.dirname(target);
      if (!this.made.has(dir)) {
        await mkdir(dir, { recursive: true, mode: 0o700 });
        this.made.add(dir);
      }
      // Overwrites a copy left by an earlier run that did not commit; no row points at it.
      await writeFile(target, bytes, { mode: 0o600 });
    }
    return { id: file.id, sha256, size: bytes.length };
  }
}

/** COPY text rows for import_files. */
export function fileRows(results: FileResult[]): string {
  let out = '';
  for (const r of results)
    out += r.sha256 === null ? `${r.id}\t\\N\t\\N\n` : `${r.id}\t${r.sha256}\t${r.size}\n`;
  return out;
}

/**
 * The file step of import-legacy: reads each script's file from the old upload
 * folder (by its `filename`) and computes sha256 and size from the bytes, which go
 * into script_contents in the import's transaction (as COPY rows of import_files).
 * A missing file is a result (the script is refused), not an error; any other I/O
 * error stops the import.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { ScriptFile } from '../../repositories/legacy-import-repository.ts';

export interface FileResult {
  id: number;
  /** null: the file is missing. */
  bytes: Buffer | null;
  sha256: string | null;
}

const MISSING = new Set(['ENOENT', 'ENOTDIR', 'EISDIR']);

export class FileReader {
  private readonly filesDir: string;
  private readonly concurrency: number;

  constructor(filesDir: string, concurrency = 32) {
    this.filesDir = filesDir;
    this.concurrency = concurrency;
  }

  /** Reads and hashes one page of files, `concurrency` at a time; results in input order. */
  async read(files: ScriptFile[], onFile: () => void): Promise<FileResult[]> {
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
    try {
      // source_name passed FILENAME_RE (a uuid and an extension): it cannot leave filesDir.
      const bytes = await readFile(path.join(this.filesDir, file.source_name));
      return { id: file.id, bytes, sha256: createHash('sha256').update(bytes).digest('hex') };
    } catch (error) {
      if (MISSING.has((error as NodeJS.ErrnoException).code ?? ''))
        return { id: file.id, bytes: null, sha256: null };
      throw error;
    }
  }
}

/** COPY text rows for import_files (id, sha256, size, content as bytea hex). */
export function fileRows(results: FileResult[]): string {
  let out = '';
  for (const r of results)
    out +=
      r.bytes === null
        ? `${r.id}\t\\N\t\\N\t\\N\n`
        : `${r.id}\t${r.sha256}\t${r.bytes.length}\t\\\\x${r.bytes.toString('hex')}\n`;
  return out;
}

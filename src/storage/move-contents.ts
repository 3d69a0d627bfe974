/**
 * The one-time move of script bytes from STORAGE_DIR (where they were kept before
 * script_contents) into PostgreSQL: `npm run cli -- move-contents`, also run by
 * `npm start` when STORAGE_DIR exists. A SQL migration cannot do it: the files are
 * on the API machines' disks, which the database server cannot read.
 *
 * In batches (keyset over scripts.id, at most `batchFiles` files or `batchBytes`
 * bytes per transaction): each file is read, its SHA-256 compared with the row's,
 * and the bytes inserted with the row's file_path cleared in the same transaction.
 * The insert checks the hash again in SQL, on what PostgreSQL received, and only
 * for the row as it was read (same file_path). Files that are missing, not where a
 * storage key may point, or whose hash differs are reported and left as they are
 * (the row keeps its file_path). Safe to run again and from several processes at
 * once: a moved script is skipped (its file_path is null), and a content row that
 * is already there is left alone.
 */
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Database } from '../db/database.ts';

export interface MoveReport {
  moved: number;
  /** Rows whose file was not found under STORAGE_DIR. */
  missing: Array<{ script_id: number; file_path: string }>;
  /** Rows whose file is there but whose bytes do not hash to the row's sha256. */
  mismatched: Array<{ script_id: number; file_path: string }>;
  /** Rows whose file_path is not a storage key (it would point outside STORAGE_DIR). */
  invalid: Array<{ script_id: number; file_path: string }>;
}

export interface MoveOptions {
  storageDir: string;
  batchFiles?: number;
  batchBytes?: number;
  /** Called after each committed batch. */
  onBatch?: (report: MoveReport) => void;
}

/** What FileStorage generated: `ab/<uuid>.py`. */
const KEY_PATTERN = /^[0-9a-f]{2}\/[0-9a-f-]{36}\.(py|js|ts)$/;

interface Pending {
  id: number;
  user_id: number;
  file_path: string;
  sha256: string;
  file_size: number;
}

export async function moveContents(db: Database, options: MoveOptions): Promise<MoveReport> {
  const root = path.resolve(options.storageDir);
  const batchFiles = options.batchFiles ?? 100;
  const batchBytes = options.batchBytes ?? 64 * 1024 * 1024;
  const report: MoveReport = { moved: 0, missing: [], mismatched: [], invalid: [] };
  let after = 0;
  for (;;) {
    const rows = await db.many<Pending>(
      'contents.move.pending',
      db.sql`
        select id, user_id, file_path, sha256, file_size
        from scripts
        where file_path is not null and id > ${after}
        order by id
        limit ${batchFiles}
      `,
    );
    if (rows.length === 0) return report;
    let batch: Array<Pending & { content: Buffer }> = [];
    let bytes = 0;
    for (const row of rows) {
      after = row.id;
      const content = await readLegacy(root, row, report);
      if (content === null) continue;
      batch.push({ ...row, content });
      bytes += content.length;
      if (bytes >= batchBytes) {
        report.moved += await commitBatch(db, batch);
        batch = [];
        bytes = 0;
      }
    }
    report.moved += await commitBatch(db, batch);
    options.onBatch?.(report);
  }
}

/** Where a storage key's file is under `root`; throws for anything that is not a key. */
export function legacyPathOf(root: string, key: string): string {
  if (!KEY_PATTERN.test(key)) throw new Error(`not a storage key: ${JSON.stringify(key)}`);
  return path.join(path.resolve(root), key);
}

async function readLegacy(root: string, row: Pending, report: MoveReport): Promise<Buffer | null> {
  const ref = { script_id: row.id, file_path: row.file_path };
  if (!KEY_PATTERN.test(row.file_path)) {
    report.invalid.push(ref);
    return null;
  }
  let content: Buffer;
  try {
    content = await readFile(path.join(root, row.file_path));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    report.missing.push(ref);
    return null;
  }
  if (createHash('sha256').update(content).digest('hex') !== row.sha256) {
    report.mismatched.push(ref);
    return null;
  }
  return content;
}

/** One transaction per batch: the bytes in, the path cleared; returns how many moved. */
async function commitBatch(db: Database, batch: Array<Pending & { content: Buffer }>): Promise<number> {
  if (batch.length === 0) return 0;
  return db.transaction(async (tx) => {
    let moved = 0;
    for (const row of batch) {
      const inserted = await tx.count(
        'contents.move.insert',
        tx.sql`
          insert into script_contents (script_id, user_id, content)
          select s.id, s.user_id, c.bytes
          from scripts s, (select ${row.content}::bytea as bytes) as c
          where s.id = ${row.id} and s.file_path = ${row.file_path}
            and s.sha256 = encode(sha256(c.bytes), 'hex')
          on conflict do nothing
        `,
      );
      await tx.count(
        'contents.move.clear',
        tx.sql`
          update scripts set file_path = null
          where id = ${row.id} and file_path = ${row.file_path}
            and exists (select from script_contents c where c.script_id = ${row.id} and c.user_id = scripts.user_id)
        `,
      );
      moved += inserted;
    }
    return moved;
  });
}

/**
 * At start-up: moves what STORAGE_DIR still holds, if that folder exists, and logs
 * the outcome. A failure is logged, not fatal: the scripts concerned answer 404 for
 * their content until `npm run cli -- move-contents` succeeds.
 */
export async function moveContentsAtStartup(
  db: Database,
  storageDir: string,
  log: { info: (o: object, m: string) => void; warn: (o: object, m: string) => void },
): Promise<void> {
  const exists = await stat(storageDir).then(
    (s) => s.isDirectory(),
    () => false,
  );
  if (!exists) return;
  try {
    const report = await moveContents(db, { storageDir });
    const problems = report.missing.length + report.mismatched.length + report.invalid.length;
    if (report.moved > 0 || problems > 0)
      (problems > 0 ? log.warn : log.info).call(log, report, 'script files moved into PostgreSQL');
  } catch (err) {
    log.warn({ err }, 'could not move script files into PostgreSQL; run `npm run cli -- move-contents`');
  }
}

/**
 * import-legacy: moves an original (Python) DollarClub database and its upload folder
 * into this one (docs/import.md; the old schema is test/fixtures/legacy-schema.sql).
 *
 * One transaction on the target: the old rows are COPYed out of the old database (a
 * read-only, repeatable-read snapshot) straight into staging tables, classified and
 * normalised set-wise, and inserted with INSERT … SELECT; files are read and hashed
 * page by page, and their bytes go into script_contents in the same transaction. Into
 * an empty database the secondary indexes and the foreign keys are dropped first and
 * rebuilt (NOT VALID + VALIDATE) after the load. Either everything
 * commits, or nothing does. A second run with the same input finds every row present
 * and changes nothing.
 */
import { createWriteStream } from 'node:fs';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import postgres from 'postgres';
import type { Sql } from '../../db/client.ts';
import { LegacyClassifier, type Outcomes } from '../../repositories/legacy-import/classify.ts';
import { analyzeImported, LegacyIndexes } from '../../repositories/legacy-import/indexes.ts';
import { LegacyLoader } from '../../repositories/legacy-import/load.ts';
import { LegacyStaging } from '../../repositories/legacy-import/staging.ts';
import type { SecretBox } from '../secret-box.ts';
import { ibkrContext } from '../user-service.ts';
import { pipeCopy } from './copy.ts';
import { FileReader } from './files.ts';
import { type ProgressSink, silentProgress } from './progress.ts';

export interface LegacyImportOptions {
  /** Connection URL of the old database; only read. */
  legacyUrl: string;
  /** The old upload folder (SCRIPTS_DIR of the original). */
  filesDir: string;
  /** The target pool. */
  sql: Sql;
  secrets: SecretBox;
  /** Where the refused rows are written (CSV: kind, legacy_id, reason). */
  detailsFile: string;
  progress?: ProgressSink;
  /** The time "running" scripts are failed at; now by default. */
  now?: Date;
}

export interface TableReport {
  /** Rows in the old database. */
  source: number;
  imported: number;
  /** Already here from an earlier run: left as they are. */
  already_present: number;
  refused: number;
}

export interface ImportReport {
  /** False when the run changed nothing (every row was present or refused). */
  changed: boolean;
  /** True when the target was empty: indexes built after the load, the foreign key validated after. */
  empty_target_fast_path: boolean;
  users: TableReport;
  scripts: TableReport & { files_missing: number };
  /** Runs made from the scripts' last executions (every imported script that ever ran). */
  runs: number;
  /** Scripts that were `running` in the old database: now failed, "interrupted by the migration". */
  interrupted: number;
  refused_by_reason: { kind: string; reason: string; count: number }[];
  details_file: string;
  seconds: number;
  rows_per_second: number;
  phases: Record<string, number>;
}

/** Rows per page of the token step, and of the file step (a page of files is one COPY). */
const PAGE = 10_000;
const FILE_PAGE = 50_000;

/** Text COPY escaping for the few values we write ourselves (ciphertexts are base64url, ids digits). */
const copyValue = (v: string | null) => (v === null ? '\\N' : v);

export async function importLegacy(options: LegacyImportOptions): Promise<ImportReport> {
  const progress = options.progress ?? silentProgress;
  const now = options.now ?? new Date();
  const started = performance.now();
  const phases: Record<string, number> = {};
  let phaseStart = performance.now();
  const mark = (name: string) => {
    const t = performance.now();
    phases[name] = Math.round(t - phaseStart) / 1000;
    phaseStart = t;
  };

  const legacy = postgres(options.legacyUrl, {
    max: 1,
    onnotice: () => {},
    // Read-only at the session level too: nothing this import sends can write there.
    connection: {
      application_name: 'dollarclub-import-legacy',
      default_transaction_read_only: 'on',
      DateStyle: 'ISO, MDY',
      TimeZone: 'UTC',
    } as Record<string, string>,
  });
  try {
    const report = await options.sql.begin(async (tx) => {
      const staging = new LegacyStaging(tx);
      const classifier = new LegacyClassifier(tx);
      const loader = new LegacyLoader(tx);
      const indexes = new LegacyIndexes(tx);
      await staging.begin();

      // 1. COPY out of the old database, into the staging tables, from one snapshot.
      const source = await legacy.begin('isolation level repeatable read read only', async (l) => {
        const [counts] = await l<{ users: number; scripts: number }[]>`
          select (select count(*) from users)::int as users, (select count(*) from scripts)::int as scripts
        `;
        progress.phase('users: copy from the old database', counts!.users);
        await pipeCopy(
          await l`
            copy (
              select id, email, username, hashed_password, auth_provider::text, google_id, is_active,
                is_verified, created_at, updated_at, last_login_at, ibkr_user_id, ibkr_access_token,
                ibkr_refresh_token, ibkr_token_expires_at, ibkr_connected_at
              from users
            ) to stdout
          `.readable(),
          await staging.copyInto('legacy_users'),
          countRows(progress),
        );
        progress.phase('scripts: copy from the old database', counts!.scripts);
        await pipeCopy(
          await l`
            copy (
              select id, user_id, filename, original_filename, file_size, file_extension, status::text,
                execution_logs, error_message, execution_time_seconds, memory_usage_mb, exit_code,
                started_at, completed_at, created_at, updated_at
              from scripts
            ) to stdout
          `.readable(),
          await staging.copyInto('legacy_scripts'),
          countRows(progress),
        );
        progress.end();
        return counts!;
      });
      mark('copy out');

      // 2. Users: classify, then encrypt the IBKR tokens of those to import.
      let users = await classifier.classifyUsers();
      progress.phase('users: encrypt IBKR tokens', 0);
      for (let after = 0; ; ) {
        const page = await staging.tokensToEncrypt(after, PAGE);
        if (page.length === 0) break;
        let rows = '';
        for (const u of page) {
          const access =
            u.ibkr_access_token === null
              ? null
              : options.secrets.encrypt(u.ibkr_access_token, ibkrContext(u.id, 'access'));
          const refresh =
            u.ibkr_refresh_token === null
              ? null
              : options.secrets.encrypt(u.ibkr_refresh_token, ibkrContext(u.id, 'refresh'));
          rows += `${u.id}\t${copyValue(access)}\t${copyValue(refresh)}\n`;
        }
        await writeAll(await staging.copyInto('import_tokens'), rows);
        progress.add(page.length);
        after = page.at(-1)!.id;
      }
      progress.end();
      mark('users');

      // 3. Scripts: classify, then read, hash and copy their files.
      // The target cannot change from here on (users and scripts are locked since begin).
      const empty = await indexes.targetIsEmpty();
      const runIdBase = empty ? await classifier.reserveRunIds() : null;
      let scripts = await classifier.classifyScripts(now, runIdBase);
      progress.phase('scripts: read and hash files', scripts.import);
      const reader = new FileReader(options.filesDir);
      for (let after = 0; ; ) {
        const page = await staging.filesToRead(after, FILE_PAGE);
        if (page.length === 0) break;
        await reader.copy(page, await staging.copyInto('import_files'), (n) => progress.add(n));
        after = page.at(-1)!.id;
      }
      await staging.filesLoaded();
      progress.end();
      const beforeFiles = scripts.refused;
      scripts = await classifier.applyFiles();
      const filesMissing = scripts.refused - beforeFiles;
      mark('files');

      // 4. Load: into an empty database without secondary indexes and foreign key.
      const fastPath = users.import + scripts.import > 0 && empty;
      const deferred = fastPath ? await indexes.defer() : null;
      progress.phase('users: insert', users.import);
      const insertedUsers = await loader.insertUsers();
      progress.add(insertedUsers);
      progress.phase('scripts: insert', scripts.import);
      const insertedScripts = await loader.insertScripts(fastPath);
      progress.add(insertedScripts);
      await loader.insertContents();
      progress.phase('runs: insert (each script’s last execution)', 0);
      const insertedRuns = await loader.insertRuns();
      progress.add(insertedRuns);
      if (!fastPath) await loader.linkRuns();
      progress.end();
      mark('insert');
      if (deferred !== null) {
        progress.phase('indexes and foreign key', deferred.indexes.length + deferred.foreignKeys.length);
        await indexes.restore(deferred, () => progress.add(1));
        progress.end();
        mark('indexes');
      }
      await loader.moveSequences();
      const interrupted = await loader.countInterrupted();

      // 5. The report: every refused row in the details file, counts by reason here.
      await pipeCopy(await staging.refusalsCsv(), createWriteStream(options.detailsFile));
      const refused_by_reason = await staging.refusalCounts();
      users = { ...users, import: insertedUsers };
      scripts = { ...scripts, import: insertedScripts };
      mark('report');
      return {
        changed: insertedUsers + insertedScripts > 0,
        empty_target_fast_path: fastPath,
        users: table(source.users, users),
        scripts: { ...table(source.scripts, scripts), files_missing: filesMissing },
        runs: insertedRuns,
        interrupted,
        refused_by_reason,
        details_file: options.detailsFile,
      };
    });
    if (report.changed) await analyzeImported(options.sql);
    const seconds = (performance.now() - started) / 1000;
    return {
      ...report,
      seconds: Math.round(seconds * 100) / 100,
      rows_per_second: Math.round((report.users.source + report.scripts.source) / seconds),
      phases,
    };
  } finally {
    await legacy.end({ timeout: 5 });
  }
}

function table(source: number, o: Outcomes): TableReport {
  return { source, imported: o.import, already_present: o.present, refused: o.refused };
}

/** Counts rows of a text COPY stream as it passes (one newline per row: COPY escapes the others). */
function countRows(progress: ProgressSink) {
  return (chunk: Buffer) => {
    let n = 0;
    for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) n++;
    progress.add(n);
  };
}

async function writeAll(into: Writable, text: string): Promise<void> {
  await pipeline(
    (async function* () {
      yield Buffer.from(text);
    })(),
    into,
  );
}

/** The report as an operator reads it. */
export function formatReport(r: ImportReport): string {
  const row = (name: string, t: TableReport) =>
    `  ${name.padEnd(8)} ${String(t.source).padStart(9)} in the old database: ${t.imported} imported, ` +
    `${t.already_present} already here, ${t.refused} refused`;
  const lines = [
    r.changed
      ? `import-legacy: imported in ${r.seconds} s (${r.rows_per_second.toLocaleString('en-US')} rows/s)` +
        (r.empty_target_fast_path ? ', empty database: indexes built after the load' : '')
      : `import-legacy: nothing changed: every row was already imported or is refused (${r.seconds} s)`,
    row('users', r.users),
    row('scripts', r.scripts),
    `  runs (each script's last execution): ${r.runs}, of which "interrupted by the migration": ${r.interrupted}`,
  ];
  if (r.refused_by_reason.length > 0) {
    lines.push('  refused, by reason:');
    for (const x of r.refused_by_reason)
      lines.push(`    ${String(x.count).padStart(7)}  ${x.kind}: ${x.reason}`);
  }
  lines.push(`  every refused row, with its reason: ${r.details_file}`);
  return lines.join('\n');
}

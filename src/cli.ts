/**
 * `npm run cli -- <command>`: operator commands.
 *   create-admin --email E --username U [--password-stdin] [--promote-existing]
 *     creates an admin. The password comes from standard input (`--password-stdin`)
 *     or a prompt that does not echo, never from the command line. An existing
 *     account with that email is promoted only with `--promote-existing`, which
 *     replaces its password and ends all its sessions.
 *   import-legacy --from URL --files DIR [--details FILE] [--json]
 *     imports an original (Python) DollarClub database and its upload folder
 *     (docs/import.md); prints progress on a terminal and a final report. The
 *     files' bytes go into script_contents in the import's transaction.
 *   move-contents [--storage-dir DIR]
 *     moves the files of scripts uploaded before script_contents from STORAGE_DIR
 *     (or DIR) into PostgreSQL, in batches, checking each SHA-256; lists the files
 *     it could not find or whose bytes do not match, and exits 1 if there were any.
 *   rotate-ibkr-key [--batch-size N]
 *     re-encrypts every stored IBKR token with the newest key of the keyring, in
 *     batches; resumable (run it again after a crash: it finishes the rest).
 * Uses DATABASE_URL, or the embedded PostgreSQL in EMBEDDED_PG_DIR (attaching to
 * it when `npm start` is running it).
 */
import { parseArgs } from 'node:util';
import { openDatabase } from './boot.ts';
import { PasswordInputError, readPassword } from './cli-password.ts';
import { ConfigError, loadConfig } from './config.ts';
import type { Sql } from './db/client.ts';
import type { Database } from './db/database.ts';
import { DomainError, ValidationError } from './domain/errors.ts';
import { createLogger } from './logger.ts';
import type { Repositories } from './repositories/index.ts';
import { createAdmin } from './services/admin.ts';
import { rotateIbkrKeys } from './services/ibkr-key-rotation.ts';
import { formatReport, importLegacy } from './services/legacy-import/import.ts';
import { TerminalProgress } from './services/legacy-import/progress.ts';
import type { SecretBox } from './services/secret-box.ts';
import { type MoveReport, moveContents } from './storage/move-contents.ts';

const USAGE = [
  'usage: npm run cli -- create-admin --email E --username U [--password-stdin] [--promote-existing]',
  '  the password is read from standard input with --password-stdin, otherwise asked for',
  '  at a prompt; --promote-existing makes an existing account admin (ending its sessions)',
  '       npm run cli -- import-legacy --from URL --files DIR [--details FILE] [--json]',
  '       npm run cli -- move-contents [--storage-dir DIR]',
  '       npm run cli -- rotate-ibkr-key [--batch-size N]',
].join('\n');

class UsageError extends Error {
  override name = 'UsageError';
}

/** Arguments of create-admin, checked before anything connects. */
function parseCreateAdmin(args: string[]) {
  // Refused by name, not just as unknown: whoever tries it learns why and what to do instead.
  if (args.some((a) => a === '--password' || a.startsWith('--password=')))
    throw new UsageError(
      '--password is refused: a password on the command line ends up in the shell history and in ' +
        '/proc/<pid>/cmdline, which every process on the host can read. Pipe it in with ' +
        '--password-stdin (`printf %s "$PW" | npm run cli -- create-admin ... --password-stdin`) ' +
        'or leave the flag out to be asked for it.',
    );
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(args);
  } catch (error) {
    throw new UsageError(`${(error as Error).message}\n${USAGE}`);
  }
  const { email, username } = parsed.values;
  if (!email || !username) throw new UsageError(USAGE);
  return {
    email,
    username,
    passwordStdin: parsed.values['password-stdin'] === true,
    promoteExisting: parsed.values['promote-existing'] === true,
  };
}

function parse(args: string[]) {
  return parseArgs({
    args,
    options: {
      email: { type: 'string' },
      username: { type: 'string' },
      'password-stdin': { type: 'boolean' },
      'promote-existing': { type: 'boolean' },
    },
    strict: true,
  });
}

async function importLegacyCommand(sql: Sql, args: string[], secrets: SecretBox): Promise<string> {
  const { values } = parseArgs({
    args,
    options: {
      from: { type: 'string' },
      files: { type: 'string' },
      details: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (!values.from || !values.files) throw new Error(USAGE);
  const report = await importLegacy({
    legacyUrl: values.from,
    filesDir: values.files,
    sql,
    secrets,
    detailsFile:
      values.details ?? `import-legacy-refused-${new Date().toISOString().replace(/[:.]/g, '-')}.csv`,
    progress: new TerminalProgress(process.stderr),
  });
  return values.json ? JSON.stringify(report, null, 2) : formatReport(report);
}

async function moveContentsCommand(db: Database, storageDir: string, args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { 'storage-dir': { type: 'string' } }, strict: true });
  const report = await moveContents(db, {
    storageDir: values['storage-dir'] ?? storageDir,
    onBatch: (r) => console.error(`moved ${r.moved} so far`),
  });
  console.log(formatMoveReport(report));
  return report.missing.length + report.mismatched.length + report.invalid.length > 0 ? 1 : 0;
}

function formatMoveReport(report: MoveReport): string {
  const lines = [`moved ${report.moved} script file(s) into PostgreSQL`];
  for (const [what, rows] of [
    ['missing', report.missing],
    ['hash differs', report.mismatched],
    ['not a storage key', report.invalid],
  ] as const) {
    for (const row of rows) lines.push(`${what}: script ${row.script_id} ${row.file_path}`);
  }
  return lines.join('\n');
}

async function rotateCommand(repos: Repositories, box: SecretBox, args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { 'batch-size': { type: 'string' } }, strict: true });
  const batchSize = values['batch-size'] === undefined ? 500 : Number(values['batch-size']);
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10_000)
    throw new UsageError('--batch-size must be an integer from 1 to 10000');
  const report = await rotateIbkrKeys(repos, box, {
    batchSize,
    onBatch: (r) => console.error(`rotated ${r.rotated} so far`),
  });
  console.log(
    `re-encrypted the IBKR tokens of ${report.rotated} user(s) with key ${report.kid}` +
      (report.raced > 0 ? `; ${report.raced} changed meanwhile and were left as they are` : ''),
  );
  if (report.failed.length > 0) {
    console.error(
      `no key of the keyring decrypts the tokens of user(s) ${report.failed.join(', ')}: left unchanged`,
    );
    return 1;
  }
  return 0;
}

async function main(): Promise<number> {
  const [command, ...args] = process.argv.slice(2);
  const commands = ['create-admin', 'import-legacy', 'move-contents', 'rotate-ibkr-key'];
  if (command === undefined || !commands.includes(command)) {
    console.error(USAGE);
    return 2;
  }
  // Asked before connecting: a prompt must not wait on a database, nor a database on a person.
  const admin =
    command === 'create-admin'
      ? await (async () => {
          const options = parseCreateAdmin(args);
          const password = await readPassword({
            stdin: options.passwordStdin,
            input: process.stdin,
            output: process.stderr,
          });
          return { ...options, password };
        })()
      : null;
  const config = loadConfig();
  const log = createLogger(config.LOG_LEVEL === 'info' ? 'warn' : config.LOG_LEVEL, 'dollarclub-cli');
  const opened = await openDatabase(config, log, 'cli');
  const { sql, db, repos, secrets } = opened;
  try {
    if (command === 'move-contents') return await moveContentsCommand(db, config.STORAGE_DIR, args);
    if (command === 'rotate-ibkr-key') return await rotateCommand(repos, secrets, args);
    if (admin !== null) {
      const result = await createAdmin(repos, admin);
      console.log(
        result.action === 'created'
          ? `created admin ${result.email} (id ${result.user_id})`
          : `promoted ${result.email} (id ${result.user_id}) to admin; ${result.revoked} session(s) ended`,
      );
      return 0;
    }
    console.log(await importLegacyCommand(sql, args, secrets));
    return 0;
  } finally {
    await opened.close();
  }
}

main().then(
  (code) => process.exit(code),
  (error) => {
    if (error instanceof ValidationError)
      console.error(error.errors.map((e) => `${e.path}: ${e.message}`).join('\n'));
    else if (
      error instanceof DomainError ||
      error instanceof ConfigError ||
      error instanceof UsageError ||
      error instanceof PasswordInputError
    )
      console.error(error.message);
    else console.error(error instanceof Error ? error.message : error);
    process.exit(error instanceof UsageError ? 2 : 1);
  },
);

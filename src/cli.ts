/**
 * `npm run cli -- <command>`: operator commands.
 *   create-admin --email E --username U --password P
 *     creates an admin, or promotes the existing user with that email (and sets
 *     the password given).
 *   import-legacy --from URL --files DIR [--details FILE] [--json]
 *     imports an original (Python) DollarClub database and its upload folder
 *     (docs/import.md); prints progress on a terminal and a final report.
 * Uses DATABASE_URL, or the embedded PostgreSQL in EMBEDDED_PG_DIR (attaching to
 * it when `npm start` is running it).
 */
import { parseArgs } from 'node:util';
import { type Config, ConfigError, loadConfig } from './config.js';
import { createPool, poolOptionsFrom, type Sql } from './db/client.js';
import { locateDatabase } from './db/connect.js';
import { Database } from './db/database.js';
import { migrate } from './db/migrate.js';
import { DomainError, ValidationError } from './domain/errors.js';
import { assertValid, normalizeEmail, passwordProblem } from './domain/user.js';
import { createLogger } from './logger.js';
import { Repositories } from './repositories/index.js';
import { formatReport, importLegacy } from './services/legacy-import/import.js';
import { TerminalProgress } from './services/legacy-import/progress.js';
import { hashPassword } from './services/passwords.js';
import { SecretBox } from './services/secret-box.js';
import { FileStorage } from './storage/file-storage.js';

const USAGE = [
  'usage: npm run cli -- create-admin --email E --username U --password P',
  '       npm run cli -- import-legacy --from URL --files DIR [--details FILE] [--json]',
].join('\n');

async function importLegacyCommand(config: Config, sql: Sql, args: string[]): Promise<string> {
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
  const storage = new FileStorage(config.STORAGE_DIR);
  await storage.init();
  const report = await importLegacy({
    legacyUrl: values.from,
    filesDir: values.files,
    sql,
    pathOf: (key) => storage.pathOf(key),
    secrets: config.IBKR_TOKEN_KEY ? new SecretBox(config.IBKR_TOKEN_KEY) : SecretBox.development(),
    detailsFile:
      values.details ?? `import-legacy-refused-${new Date().toISOString().replace(/[:.]/g, '-')}.csv`,
    progress: new TerminalProgress(process.stderr),
  });
  return values.json ? JSON.stringify(report, null, 2) : formatReport(report);
}

async function createAdmin(repos: Repositories, args: string[]): Promise<string> {
  const { values } = parseArgs({
    args,
    options: { email: { type: 'string' }, username: { type: 'string' }, password: { type: 'string' } },
    strict: true,
  });
  if (!values.email || !values.username || !values.password) throw new Error(USAGE);
  const email = normalizeEmail(values.email);
  assertValid([['/password', passwordProblem(values.password)]]);
  const hashed_password = await hashPassword(values.password);
  return repos.transaction(async (tx) => {
    const existing = await tx.users.findByEmail(email);
    if (existing === null) {
      const user = await tx.users.create({
        email,
        username: values.username!,
        hashed_password,
        role: 'admin',
      });
      return `created admin ${user.email} (id ${user.id})`;
    }
    const user = await tx.users.update(existing.id, { role: 'admin', is_active: true, hashed_password });
    return `promoted ${user.email} (id ${user.id}) to admin`;
  });
}

async function main(): Promise<number> {
  const [command, ...args] = process.argv.slice(2);
  if (command !== 'create-admin' && command !== 'import-legacy') {
    console.error(USAGE);
    return 2;
  }
  const config = loadConfig();
  const log = createLogger(config.LOG_LEVEL === 'info' ? 'warn' : config.LOG_LEVEL, 'dollarclub-cli');
  const location = await locateDatabase(config, log, { reuseRunning: true });
  const sql = createPool(poolOptionsFrom(config, location.url, 'dollarclub-cli'), log);
  try {
    await migrate({ databaseUrl: location.url });
    const db = new Database(sql, {
      log,
      slowQueryMs: config.SLOW_QUERY_MS,
      queryTimeoutMs: config.DB_QUERY_TIMEOUT_MS,
    });
    console.log(
      command === 'import-legacy'
        ? await importLegacyCommand(config, sql, args)
        : await createAdmin(new Repositories(db), args),
    );
    return 0;
  } finally {
    await sql.end({ timeout: 5 });
    await location.embedded?.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (error) => {
    if (error instanceof ValidationError)
      console.error(error.errors.map((e) => `${e.path}: ${e.message}`).join('\n'));
    else if (error instanceof DomainError || error instanceof ConfigError) console.error(error.message);
    else console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  },
);

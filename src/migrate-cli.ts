/**
 * `npm run migrate -- <command>`:
 *   up [N]         apply all pending migrations (or N)
 *   down [N]       revert the last migration (or the last N)
 *   redo           revert the last migration and apply it again
 *   create <name>  add migrations/<timestamp>_<name>.sql with Up and Down sections
 *   status         list applied and pending migrations
 * Uses DATABASE_URL, or the embedded PostgreSQL in EMBEDDED_PG_DIR.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { locate, openPool } from './boot.ts';
import { loadConfig } from './config.ts';
import { appliedMigrations, MIGRATIONS_DIR, migrate, migrationNames } from './db/migrate.ts';
import { createLogger } from './logger.ts';

const USAGE = 'usage: npm run migrate -- up [N] | down [N] | redo | create <name> | status';

const TEMPLATE = `-- Up Migration
-- Why this migration exists, and whether it locks a large table.
-- Keep sql/schema/ in step: the drift test compares the two.


-- Down Migration

`;

async function create(name: string | undefined): Promise<string> {
  if (!name || !/^[a-z0-9][a-z0-9-]{0,80}$/.test(name))
    throw new Error('create <name>: lower-case words joined by -');
  const file = path.join(MIGRATIONS_DIR, `${Date.now()}_${name}.sql`);
  await writeFile(file, TEMPLATE, { flag: 'wx' });
  return `created ${path.relative(process.cwd(), file)}`;
}

async function main(): Promise<number> {
  const [command, arg] = process.argv.slice(2);
  if (command === 'create') {
    console.log(await create(arg));
    return 0;
  }
  if (!['up', 'down', 'redo', 'status'].includes(command ?? '')) {
    console.error(USAGE);
    return 2;
  }
  const count = arg === undefined ? undefined : Number(arg);
  if (count !== undefined && !(Number.isInteger(count) && count > 0)) throw new Error(`not a count: ${arg}`);
  const config = loadConfig();
  const log = createLogger('warn', 'dollarclub-migrate');
  const location = await locate(config, log, 'migrate');
  const say = (message: string) => console.log(message);
  try {
    if (command === 'up') await migrate({ databaseUrl: location.url, direction: 'up', count, log: say });
    else if (command === 'down')
      await migrate({ databaseUrl: location.url, direction: 'down', count: count ?? 1, log: say });
    else if (command === 'redo') {
      await migrate({ databaseUrl: location.url, direction: 'down', count: 1, log: say });
      await migrate({ databaseUrl: location.url, direction: 'up', count: 1, log: say });
    } else {
      const sql = openPool({ ...config, DB_POOL_MAX: 1 }, log, location.url, 'migrate');
      try {
        const applied = await appliedMigrations(sql);
        for (const name of await migrationNames())
          console.log(`${applied.includes(name) ? 'applied' : 'pending'}  ${name}`);
      } finally {
        await sql.end();
      }
    }
    return 0;
  } finally {
    await location.embedded?.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  },
);

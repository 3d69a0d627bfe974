/** Where the database is: DATABASE_URL, or an embedded PostgreSQL in EMBEDDED_PG_DIR. */
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import { type EmbeddedPostgresHandle, ensureDatabase, startEmbeddedPostgres } from './embedded.ts';

export const EMBEDDED_DATABASE = 'dollarclub';

export interface DatabaseLocation {
  url: string;
  /** Set when this process started (or attached to) the embedded server. */
  embedded?: EmbeddedPostgresHandle;
}

export async function locateDatabase(
  config: Pick<Config, 'DATABASE_URL' | 'EMBEDDED_PG_DIR' | 'EMBEDDED_PG_PORT'>,
  log: Logger,
  options: { reuseRunning?: boolean } = {},
): Promise<DatabaseLocation> {
  if (config.DATABASE_URL !== undefined) return { url: config.DATABASE_URL };
  log.info({ dir: config.EMBEDDED_PG_DIR }, 'no DATABASE_URL: using the embedded PostgreSQL');
  const embedded = await startEmbeddedPostgres({
    dir: config.EMBEDDED_PG_DIR,
    port: config.EMBEDDED_PG_PORT,
    persistent: true,
    reuseRunning: options.reuseRunning,
    log: (line) => log.debug({ postgres: line }, 'embedded postgres'),
    notice: (message) => log.info(message),
  });
  const url = await ensureDatabase(embedded.url, EMBEDDED_DATABASE);
  log.info(
    { port: embedded.port, data: embedded.dataDir, binaries: embedded.binDir },
    'embedded PostgreSQL is up',
  );
  return { url, embedded };
}

/** What readiness and metrics ask the database about itself. */
import type { Database } from '../db/database.ts';
import { MIGRATIONS_TABLE } from '../db/migrate.ts';

export interface DatabaseStatus {
  server_version: string;
  applied_migrations: string[];
  /** Connections this process holds (its application_name is unique per process). */
  connections: number;
  idle_connections: number;
}

export class SystemRepository {
  private readonly db: Database;

  constructor(db: Database) {
    this.db = db;
  }

  /** One round trip: version, migration history and this process's connections. */
  async status(): Promise<DatabaseStatus> {
    const sql = this.db.sql;
    return this.db.one<DatabaseStatus>(
      'system.status',
      sql`
        select current_setting('server_version') as server_version,
          (select coalesce(array_agg(name order by id), '{}') from ${sql(MIGRATIONS_TABLE)}) as applied_migrations,
          count(a.pid) as connections,
          count(a.pid) filter (where a.state = 'idle') as idle_connections
        from pg_stat_activity as a
        where a.application_name = current_setting('application_name')
          and a.datname = current_database()
      `,
    );
  }

  /** Cheapest possible round trip. */
  async ping(): Promise<void> {
    const sql = this.db.sql;
    await this.db.one('system.ping', sql`select 1 as ok`);
  }
}

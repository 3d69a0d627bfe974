/**
 * The staging side of import-legacy on the target database (docs/import.md), inside
 * the import's one transaction: the tables the old database's rows are COPYed into,
 * COPY streams in and out of them, and the pages the service reads back (tokens to
 * encrypt, files to read).
 *
 * The staging tables are temporary (`on commit drop`): nothing of them outlives the
 * transaction, committed or not. The other steps are classify.ts (set-wise rules),
 * load.ts (INSERT … SELECT into the app's tables, the report) and indexes.ts (an
 * empty target's indexes and foreign keys).
 */
import type { Readable, Writable } from 'node:stream';
import type { TransactionSql } from '../../db/client.ts';

/** A script to import, for the file step: its file's name in the old folder. */
export interface ScriptFile {
  id: number;
  source_name: string;
}

/** Plain IBKR tokens of a user to import, for the encryption step. */
export interface PlainTokens {
  id: number;
  ibkr_access_token: string | null;
  ibkr_refresh_token: string | null;
}

/** The staging tables a COPY can fill. */
export type StagingTable = 'legacy_users' | 'legacy_scripts' | 'import_tokens' | 'import_files';

export class LegacyStaging {
  private readonly sql: TransactionSql;

  constructor(sql: TransactionSql) {
    this.sql = sql;
  }

  /**
   * Marks the transaction as the import (the only writer allowed to store bcrypt
   * hashes), locks users and scripts against writers, and creates the staging tables.
   */
  async begin(): Promise<void> {
    const sql = this.sql;
    // The load and the index builds take minutes at millions of rows, and the transaction
    // waits on file I/O between statements: no pool timeout applies to it. The joins and
    // sorts of whole staging tables (INSERT … SELECT … ORDER BY id) and the index builds
    // after an empty target's load sort in memory up to work_mem / maintenance_work_mem
    // (4 MB / 64 MB by default: 100k scripts already spilled to disk); for this
    // transaction only.
    await sql`
      select set_config('dollarclub.legacy_import', 'on', true),
        set_config('statement_timeout', '0', true),
        set_config('idle_in_transaction_session_timeout', '0', true),
        set_config('work_mem', '64MB', true),
        set_config('maintenance_work_mem', '256MB', true)
    `;
    // Nobody writes users or scripts while the import decides what is new (reads go on).
    await sql`lock table users, scripts in exclusive mode`;
    await sql`
      create temp table legacy_users (
        id integer primary key, email text, username text, hashed_password text, auth_provider text,
        google_id text, is_active boolean, is_verified boolean, created_at timestamptz,
        updated_at timestamptz, last_login_at timestamptz, ibkr_user_id text, ibkr_access_token text,
        ibkr_refresh_token text, ibkr_token_expires_at timestamp, ibkr_connected_at timestamp
      ) on commit drop
    `;
    await sql`
      create temp table legacy_scripts (
        id integer primary key, user_id integer, filename text, original_filename text, file_size integer,
        file_extension text, status text, execution_logs text, error_message text,
        execution_time_seconds numeric, memory_usage_mb numeric, exit_code integer, started_at timestamptz,
        completed_at timestamptz, created_at timestamptz, updated_at timestamptz
      ) on commit drop
    `;
    await sql`
      create temp table import_tokens (id integer primary key, access text, refresh text) on commit drop
    `;
    // No primary key while it is filled (the COPY of the file step is the longest): one
    // is added once the files are in (filesLoaded), for the joins that follow.
    await sql`
      create temp table import_files (id integer not null, sha256 text, size bigint, content bytea) on commit drop
    `;
  }

  /**
   * A COPY stream into a staging table: text format, columns in the order of the
   * table (for legacy_*, the `select` of the service's COPY out); import_files takes
   * COPY's binary format (the files' bytes as they are, not as hex text).
   */
  async copyInto(table: StagingTable): Promise<Writable> {
    const sql = this.sql;
    return table === 'import_files'
      ? sql`copy import_files from stdin with (format binary)`.writable()
      : sql`copy ${sql(table)} from stdin`.writable();
  }

  /**
   * The files are all in: import_files gets its primary key (one sorted build), and
   * import_scripts statistics. Autovacuum never analyzes a temporary table; without
   * them the planner takes `outcome = 'import'` for 0.5% of the rows and joins 100k
   * scripts to their files by 100k index lookups (0.8 s, against 0.3 s hashed).
   */
  async filesLoaded(): Promise<void> {
    const sql = this.sql;
    await sql`alter table import_files add primary key (id)`;
    await sql`analyze import_scripts`;
  }

  /**
   * Users to import that have IBKR tokens, in id order after `afterId`, for encryption.
   * Pages, not a cursor: the transaction's one connection also carries the COPY that
   * writes the results, and a COPY cannot share it with an open cursor.
   */
  async tokensToEncrypt(afterId: number, limit: number): Promise<PlainTokens[]> {
    const sql = this.sql;
    return sql<PlainTokens[]>`
      select id, ibkr_access_token, ibkr_refresh_token
      from import_users
      where outcome = 'import'
        and id > ${afterId}
        and ibkr_user_id is not null
        and (ibkr_access_token is not null or ibkr_refresh_token is not null)
      order by id
      limit ${limit}
    `;
  }

  /** Scripts whose files are to be read, in id order after `afterId` (pages, as tokensToEncrypt). */
  async filesToRead(afterId: number, limit: number): Promise<ScriptFile[]> {
    const sql = this.sql;
    return sql<ScriptFile[]>`
      select id, source_name
      from import_scripts
      where outcome = 'import' and id > ${afterId}
      order by id
      limit ${limit}
    `;
  }

  /** Every refused row as CSV (kind, legacy_id, reason), users first, in id order. */
  async refusalsCsv(): Promise<Readable> {
    const sql = this.sql;
    return sql`
      copy (
        select 'user' as kind, id as legacy_id, reason from import_users where outcome = 'refused'
        union all
        select 'script', id, reason from import_scripts where outcome = 'refused'
        order by 1 desc, 2
      ) to stdout with (format csv, header)
    `.readable();
  }

  /** Refusals counted by kind and reason (reasons that name an id are grouped by their kind). */
  async refusalCounts(): Promise<{ kind: string; reason: string; count: number }[]> {
    const sql = this.sql;
    return sql<{ kind: string; reason: string; count: number }[]>`
      select kind, reason, count(*)::int as count
      from (
        select 'user' as kind, regexp_replace(reason, '[0-9]+', 'N', 'g') as reason
        from import_users where outcome = 'refused'
        union all
        select 'script', regexp_replace(regexp_replace(reason, ': .*$', ''), '[0-9]+', 'N', 'g')
        from import_scripts where outcome = 'refused'
      ) as r
      group by kind, reason
      order by kind desc, count desc, reason
    `;
  }
}

/**
 * The load of import-legacy: INSERT … SELECT from the classified staging tables into
 * the app's tables (ids kept, OVERRIDING SYSTEM VALUE), in id order so each primary
 * key grows at its right edge; then the identity sequences and the report's counts.
 * A script's sha256, size and bytes come from import_files (the file step), joined
 * here rather than copied into import_scripts first.
 */
import type { TransactionSql } from '../../db/client.ts';

export class LegacyLoader {
  private readonly sql: TransactionSql;

  constructor(sql: TransactionSql) {
    this.sql = sql;
  }

  async insertUsers(): Promise<number> {
    const sql = this.sql;
    const result = await sql`
      insert into users (
        id, email, username, hashed_password, auth_provider, google_id, is_active, is_verified,
        ibkr_user_id, ibkr_access_token, ibkr_refresh_token, ibkr_token_expires_at, ibkr_connected_at,
        created_at, updated_at, last_login_at
      )
      overriding system value
      select u.id, u.email, u.username, u.hashed_password, u.auth_provider::auth_provider, u.google_id,
        u.is_active, u.is_verified, u.ibkr_user_id,
        case when u.ibkr_user_id is not null then t.access end,
        case when u.ibkr_user_id is not null then t.refresh end,
        case when u.ibkr_user_id is not null then u.ibkr_token_expires_at end,
        case when u.ibkr_user_id is not null then coalesce(u.ibkr_connected_at, u.updated_at) end,
        u.created_at, u.updated_at, u.last_login_at
      from import_users as u
      left join import_tokens as t on t.id = u.id
      where u.outcome = 'import'
      order by u.id
    `;
    return result.count;
  }

  /**
   * Inserts the scripts. `linkRuns`: last_run_id and run_count are written now, which
   * needs fk_scripts_last_run out of the way (the fast path); otherwise `linkRuns()`
   * sets them once the runs exist (a script and its run name each other).
   */
  async insertScripts(linkRuns: boolean): Promise<number> {
    const sql = this.sql;
    const result = await sql`
      insert into scripts (
        id, user_id, filename, original_filename, file_size, file_extension, sha256, status,
        error_message, exit_code, execution_time_seconds, memory_usage_mb,
        started_at, completed_at, created_at, updated_at, last_run_id, run_count
      )
      overriding system value
      select s.id, s.user_id, s.filename, s.original_filename, f.size, s.file_extension, f.sha256,
        s.status::script_status, s.error_message, s.exit_code, s.execution_time_seconds,
        s.memory_usage_mb, s.started_at, s.completed_at, s.created_at, s.updated_at,
        case when ${linkRuns} then s.run_id end,
        case when ${linkRuns} and s.run_id is not null then 1 else 0 end
      from import_scripts as s
      join import_files as f on f.id = s.id
      where s.outcome = 'import'
      order by s.id
    `;
    return result.count;
  }

  /** The bytes of each imported script (script_contents), read by the file step. */
  async insertContents(): Promise<number> {
    const sql = this.sql;
    const result = await sql`
      insert into script_contents (script_id, user_id, content)
      select s.id, s.user_id, f.content
      from import_scripts as s
      join import_files as f on f.id = s.id
      where s.outcome = 'import'
      order by s.id
    `;
    return result.count;
  }

  /** Each imported script's last execution as one finished run, with its output as one chunk. */
  async insertRuns(): Promise<number> {
    const sql = this.sql;
    const result = await sql`
      insert into script_runs (
        id, script_id, user_id, trigger, status, script_sha256, exit_code, execution_time_seconds,
        memory_usage_mb, error_message, log_bytes, queued_at, started_at, completed_at
      )
      overriding system value
      select s.run_id, s.id, s.user_id, 'manual', s.status::run_status, f.sha256, s.exit_code,
        s.execution_time_seconds, s.memory_usage_mb, s.error_message, coalesce(octet_length(s.execution_logs), 0),
        coalesce(s.started_at, s.completed_at, s.created_at), s.started_at, s.completed_at
      from import_scripts as s
      join import_files as f on f.id = s.id
      where s.outcome = 'import' and s.run_id is not null
      order by s.run_id
    `;
    await sql`
      insert into run_log_chunks (run_id, user_id, seq, data, created_at)
      select run_id, user_id, 0, execution_logs, completed_at
      from import_scripts
      where outcome = 'import' and run_id is not null and execution_logs <> ''
      order by run_id
    `;
    return result.count;
  }

  /** The slow path's second step: each imported script names its run. */
  async linkRuns(): Promise<void> {
    const sql = this.sql;
    await sql`
      update scripts as s
      set last_run_id = i.run_id, run_count = 1
      from import_scripts as i
      where i.id = s.id and i.outcome = 'import' and i.run_id is not null
    `;
  }

  /**
   * Moves both identity sequences past the highest id, here or in the old database (so
   * a refused row, once fixed there, can still be imported under its id); never backwards.
   */
  async moveSequences(): Promise<void> {
    const sql = this.sql;
    await sql`
      select setval(x.seq, x.max_id)
      from (
        select pg_get_serial_sequence('users', 'id')::regclass as seq,
          greatest((select max(id) from users), (select max(id) from legacy_users)) as max_id
        union all
        select pg_get_serial_sequence('scripts', 'id')::regclass,
          greatest((select max(id) from scripts), (select max(id) from legacy_scripts))
      ) as x
      where x.max_id > coalesce(pg_sequence_last_value(x.seq), 0)
    `;
  }

  /** Scripts imported that were `running` in the old database (now failed, interrupted). */
  async countInterrupted(): Promise<number> {
    const sql = this.sql;
    const [row] = await sql<{ n: number }[]>`
      select count(*)::int as n from import_scripts where outcome = 'import' and interrupted
    `;
    return row!.n;
  }
}

/**
 * Scripts, one at a time: uploads (within the owner's quota), reads, the IBKR switch and
 * deletion (listings: script-listings.ts). Runs, and the latest-run summary that
 * they keep on the script's row, are RunRepository's. `ownerId` (when given) restricts a statement to one user's
 * scripts: someone else's script is simply not found.
 */
import type { Fragment } from '../db/client.ts';
import type { Database } from '../db/database.ts';
import { SCRIPT_STATUSES, type ScriptStatus } from '../domain/enums.ts';
import { InvalidStateError, NotFoundError, ScriptQuotaError, StorageQuotaError } from '../domain/errors.ts';
import { ACTIVE_STATUSES, SCRIPT_COLUMNS, type Script, type ScriptExtension } from '../domain/script.ts';

export interface NewScript {
  user_id: number;
  filename: string;
  original_filename: string;
  /** Only scripts whose bytes are still in STORAGE_DIR (legacy, tests); new uploads keep them in script_contents. */
  file_path?: string | null;
  file_size: number;
  file_extension: ScriptExtension;
  sha256: string;
}

export interface ScriptFile {
  user_id: number;
  original_filename: string;
  file_size: number;
}

export class ScriptRepository {
  private readonly db: Database;

  constructor(db: Database) {
    this.db = db;
  }

  private get sql() {
    return this.db.sql;
  }

  async create(input: NewScript): Promise<Script> {
    const sql = this.sql;
    return this.db.one<Script>(
      'scripts.create',
      sql`
        insert into scripts (user_id, filename, original_filename, file_path, file_size, file_extension, sha256)
        values (
          ${input.user_id}, ${input.filename}, ${input.original_filename}, ${input.file_path ?? null},
          ${input.file_size}, ${input.file_extension}, ${input.sha256}
        )
        returning ${sql(SCRIPT_COLUMNS)}
      `,
    );
  }

  /**
   * Inserts the script unless its owner would then keep more than `quota.scripts`
   * scripts or `quota.bytes` bytes of them: SCRIPT_QUOTA_EXCEEDED / STORAGE_QUOTA_EXCEEDED,
   * and nothing is written. Inside a transaction only (the upload's), which first locks
   * the owner's row: every upload of one user queues there, so parallel uploads cannot
   * all pass the last slot. The count is a statement of its own, after the lock: under
   * READ COMMITTED each statement sees what committed before it began, so it sees the
   * upload that held the lock; a count in the locking statement would use the snapshot
   * taken before the wait. (FOR NO KEY UPDATE: it conflicts with itself, not with the
   * key-share locks that inserts of the user's other rows take.)
   */
  async createWithinQuota(input: NewScript, quota: { scripts: number; bytes: number }): Promise<Script> {
    if (!this.db.inTransaction) throw new Error('scripts.createWithinQuota must run in a transaction');
    const sql = this.sql;
    const owner = await this.db.maybeOne<{ id: number }>(
      'scripts.lockOwner',
      sql`select id from users where id = ${input.user_id} for no key update`,
    );
    if (owner === null) throw new NotFoundError('user');
    const row = await this.db.one<{ used_scripts: number; used_bytes: number } & Partial<Script>>(
      'scripts.createWithinQuota',
      sql`
        with usage as (
          select count(*) as scripts, coalesce(sum(file_size), 0)::bigint as bytes
          from scripts
          where user_id = ${input.user_id}
        ), created as (
          insert into scripts (user_id, filename, original_filename, file_path, file_size, file_extension, sha256)
          select
            ${input.user_id}, ${input.filename}, ${input.original_filename}, ${input.file_path ?? null},
            ${input.file_size}, ${input.file_extension}, ${input.sha256}
          from usage
          where usage.scripts < ${quota.scripts}
            and usage.bytes + ${input.file_size} <= ${quota.bytes}
          returning ${sql(SCRIPT_COLUMNS)}
        )
        select usage.scripts as used_scripts, usage.bytes as used_bytes, created.*
        from usage
        left join created on true
      `,
    );
    const { used_scripts, used_bytes, ...script } = row;
    // No row inserted: the left join gives every column of `created` as null.
    if (script.id != null) return script as Script;
    if (used_scripts >= quota.scripts) throw new ScriptQuotaError(quota.scripts);
    throw new StorageQuotaError(quota.bytes, used_bytes);
  }

  /**
   * The hottest read of the API. Written out (no fragments): the driver then reuses the
   * statement text as is instead of rebuilding it on every call (measured in bench/).
   */
  async findById(id: number, ownerId?: number): Promise<Script | null> {
    const sql = this.sql;
    return this.db.maybeOne<Script>(
      'scripts.findById',
      ownerId === undefined
        ? sql`
            select id, user_id, filename, original_filename, file_extension, file_size, sha256, status,
              exit_code, execution_time_seconds, memory_usage_mb, error_message, started_at, completed_at,
              created_at, updated_at, ibkr_access, last_run_id, run_count
            from scripts
            where id = ${id}
          `
        : sql`
            select id, user_id, filename, original_filename, file_extension, file_size, sha256, status,
              exit_code, execution_time_seconds, memory_usage_mb, error_message, started_at, completed_at,
              created_at, updated_at, ibkr_access, last_run_id, run_count
            from scripts
            where id = ${id} and user_id = ${ownerId}
          `,
    );
  }

  async getById(id: number, ownerId?: number): Promise<Script> {
    const script = await this.findById(id, ownerId);
    if (script === null) throw new NotFoundError('script');
    return script;
  }

  /** Turns the IBKR credentials of the script's runs on or off; NOT_FOUND unless it is `ownerId`'s (when given). */
  async setIbkrAccess(id: number, ibkrAccess: boolean, ownerId?: number): Promise<Script> {
    const sql = this.sql;
    const script = await this.db.maybeOne<Script>(
      'scripts.setIbkrAccess',
      sql`
        update scripts set ibkr_access = ${ibkrAccess}
        where id = ${id} ${ownedBy(sql, ownerId)}
        returning ${sql(SCRIPT_COLUMNS)}
      `,
    );
    if (script === null) throw new NotFoundError('script');
    return script;
  }

  /** Whose the script is and its name, for the content route. */
  async getFile(id: number, ownerId?: number): Promise<ScriptFile> {
    const sql = this.sql;
    const file = await this.db.maybeOne<ScriptFile>(
      'scripts.getFile',
      sql`
        select user_id, original_filename, file_size
        from scripts
        where id = ${id} ${ownedBy(sql, ownerId)}
      `,
    );
    if (file === null) throw new NotFoundError('script');
    return file;
  }

  /**
   * Deletes a script that is not queued or running (its bytes go with it, cascade)
   * and returns whose it was. One statement: the delete re-checks the status on the
   * locked row, so a script queued a moment ago is never deleted under its executor.
   */
  async delete(id: number, ownerId?: number): Promise<{ script_id: number; user_id: number }> {
    const sql = this.sql;
    const row = await this.db.maybeOne<{ status: ScriptStatus; user_id: number | null }>(
      'scripts.delete',
      sql`
        with target as (
          select id, status from scripts where id = ${id} ${ownedBy(sql, ownerId)}
        ), deleted as (
          delete from scripts
          where id = (select id from target)
            and status <> all(${ACTIVE_STATUSES as ScriptStatus[]}::script_status[])
          returning user_id
        )
        select target.status, deleted.user_id
        from target
        left join deleted on true
      `,
    );
    if (row === null) throw new NotFoundError('script');
    if (row.user_id === null)
      throw new InvalidStateError(`a ${row.status} script cannot be deleted; cancel it first`, row.status);
    return { script_id: id, user_id: row.user_id };
  }
}

/** `and user_id = <ownerId>` when an owner is given: someone else's script is not found. */
export function ownedBy(sql: Database['sql'], ownerId: number | undefined): Fragment {
  return ownerId === undefined ? sql`` : sql`and user_id = ${ownerId}`;
}

export { SCRIPT_STATUSES };

/**
 * The SQL of import-legacy on the target database (docs/import.md), all inside the
 * import's one transaction: staging tables that the old database's rows are COPYed
 * into, the set-wise classification and normalisation of every row (import, already
 * present, refused with a reason), the INSERT … SELECT into users and scripts, and
 * the index/foreign-key handling of a load into an empty database.
 *
 * The staging tables are temporary (`on commit drop`): nothing of them outlives the
 * transaction, committed or not.
 */
import type { Readable, Writable } from 'node:stream';
import type { TransactionSql } from '../db/client.ts';

/** The columns read from the old database, in COPY order (LEGACY.md). */
export const LEGACY_USER_COLUMNS = [
  'id',
  'email',
  'username',
  'hashed_password',
  'auth_provider',
  'google_id',
  'is_active',
  'is_verified',
  'created_at',
  'updated_at',
  'last_login_at',
  'ibkr_user_id',
  'ibkr_access_token',
  'ibkr_refresh_token',
  'ibkr_token_expires_at',
  'ibkr_connected_at',
] as const;

export const LEGACY_SCRIPT_COLUMNS = [
  'id',
  'user_id',
  'filename',
  'original_filename',
  'file_size',
  'file_extension',
  'status',
  'execution_logs',
  'error_message',
  'execution_time_seconds',
  'memory_usage_mb',
  'exit_code',
  'started_at',
  'completed_at',
  'created_at',
  'updated_at',
] as const;

// The rule of ck_users_email_format (sql/schema/10-users.sql), to refuse with a reason
// instead of failing the whole INSERT.
const EMAIL_RE =
  '^[^@\\s\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]+@[^@\\s\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]+\\.[^@\\s\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]+$';
const BCRYPT_RE = '^\\$2[aby]\\$[0-9]{2}\\$[./A-Za-z0-9]{53}$';
// The original named files `<uuid4><ext>`; the names are kept as they are.
const FILENAME_RE = '^[0-9a-f-]{36}\\.(py|js|ts)$';

export const INTERRUPTED = 'interrupted by the migration';

/** What an import fills; in this order, so a foreign key's target is there first. */
const LOADED_TABLES = ['users', 'scripts', 'script_contents', 'script_runs', 'run_log_chunks'];

export interface Outcomes {
  import: number;
  present: number;
  refused: number;
}

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

interface DeferredIndex {
  name: string;
  definition: string;
}

interface DeferredForeignKey {
  table: string;
  name: string;
  definition: string;
}

/** What a load into an empty database took away and puts back afterwards. */
export interface Deferred {
  indexes: DeferredIndex[];
  foreignKeys: DeferredForeignKey[];
}

export class LegacyImportRepository {
  private readonly sql: TransactionSql;

  constructor(sql: TransactionSql) {
    this.sql = sql;
  }

  /** Marks the transaction as the import: the only writer allowed to store bcrypt hashes. */
  async begin(): Promise<void> {
    const sql = this.sql;
    // The load and the index builds take minutes at millions of rows, and the transaction
    // waits on file I/O between statements: no pool timeout applies to it.
    await sql`
      select set_config('dollarclub.legacy_import', 'on', true),
        set_config('statement_timeout', '0', true),
        set_config('idle_in_transaction_session_timeout', '0', true)
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
    await sql`
      create temp table import_files (id integer primary key, sha256 text, size bigint, content bytea) on commit drop
    `;
  }

  /** A COPY stream into a staging table (text format, columns in LEGACY_*_COLUMNS order). */
  async copyInto(
    table: 'legacy_users' | 'legacy_scripts' | 'import_tokens' | 'import_files',
  ): Promise<Writable> {
    const sql = this.sql;
    return sql`copy ${sql(table)} from stdin`.writable();
  }

  /**
   * Normalises and classifies every staged user (docs/import.md, "Rules"): outcome
   * `import`, `present` (the same user, same id and email, is already here: a re-run)
   * or `refused` with the first reason that applies.
   */
  async classifyUsers(): Promise<Outcomes> {
    const sql = this.sql;
    await sql`
      create temp table import_users on commit drop as
      with n as (
        select l.id,
          lower(btrim(l.email)) as email,
          (select case when length(x) < 3 then rpad(x, 3, '_') else x end
           from left(regexp_replace(l.username, '[^A-Za-z0-9_-]', '_', 'g'), 100) as x) as username,
          case when l.hashed_password ~ ${BCRYPT_RE} then l.hashed_password end as hashed_password,
          l.hashed_password is not null and l.hashed_password !~ ${BCRYPT_RE} as bad_hash,
          coalesce(lower(l.auth_provider), 'email') as auth_provider,
          nullif(l.google_id, '') as google_id,
          coalesce(l.is_active, true) as is_active,
          coalesce(l.is_verified, false) as is_verified,
          nullif(l.ibkr_user_id, '') as ibkr_user_id,
          l.ibkr_access_token, l.ibkr_refresh_token,
          l.ibkr_token_expires_at at time zone 'UTC' as ibkr_token_expires_at,
          l.ibkr_connected_at at time zone 'UTC' as ibkr_connected_at,
          l.created_at,
          coalesce(l.updated_at, l.created_at) as updated_at,
          l.last_login_at
        from legacy_users as l
      ),
      ranked as (
        select n.*,
          min(n.id) over (partition by n.email) as first_with_email,
          t.email as taken_email,
          (select u.id from users as u where u.email = n.email and u.id <> n.id) as email_owner,
          (select u.id from users as u where u.google_id = n.google_id and u.id <> n.id) as google_owner,
          (select u.id from users as u where u.ibkr_user_id = n.ibkr_user_id and u.id <> n.id) as ibkr_owner
        from n
        left join users as t on t.id = n.id
      )
      select r.*,
        case
          when r.taken_email = r.email then null
          when r.taken_email is not null then 'id ' || r.id || ' is taken by another user of this database'
          when not (r.email ~ ${EMAIL_RE} and length(r.email) <= 254) then 'email is not an email address'
          when r.first_with_email <> r.id then
            'email is the same as user ' || r.first_with_email || '''s after lower-casing (the older account is kept)'
          when r.email_owner is not null then 'email already belongs to user ' || r.email_owner || ' of this database'
          when r.auth_provider not in ('email', 'google') then 'unknown auth_provider ' || r.auth_provider
          when r.auth_provider = 'email' and r.bad_hash then 'hashed_password is not a bcrypt hash'
          when r.auth_provider = 'email' and r.hashed_password is null then 'email user without a password hash'
          when r.auth_provider = 'google' and r.google_id is null then 'google user without google_id'
          when r.google_owner is not null then 'google_id already belongs to user ' || r.google_owner
          when r.ibkr_owner is not null then 'ibkr_user_id already belongs to user ' || r.ibkr_owner
        end as reason,
        case
          when r.taken_email = r.email then 'present'
        end as preset
      from ranked as r
    `;
    await sql`
      alter table import_users add column outcome text;
      update import_users
      set outcome = case when preset is not null then preset when reason is null then 'import' else 'refused' end
    `.simple();
    await sql`alter table import_users add primary key (id)`;
    return this.outcomes('import_users');
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

  /** Classifies every staged script, after the users (a refused owner refuses its scripts). */
  async classifyScripts(now: Date): Promise<Outcomes> {
    const sql = this.sql;
    await sql`
      create temp table import_scripts on commit drop as
      with n as (
        select l.*,
          lower(l.filename) as key_name,
          lower(coalesce(nullif(l.file_extension, ''), substring(l.filename from '\\.[^.]*$'))) as ext,
          lower(l.status) as norm_status,
          u.outcome as owner_outcome, u.reason as owner_reason
        from legacy_scripts as l
        left join import_users as u on u.id = l.user_id
      ),
      ranked as (
        select n.*,
          t.filename as taken_filename,
          (select s.id from scripts as s where s.filename = n.key_name and s.id <> n.id) as filename_owner
        from n
        left join scripts as t on t.id = n.id
      )
      select r.id, r.user_id, r.key_name as filename, r.filename as source_name,
        coalesce(nullif(left(r.original_filename, 255), ''), r.key_name) as original_filename,
        r.ext as file_extension,
        (case when r.norm_status = 'running' then 'failed' else r.norm_status end) as status,
        r.norm_status = 'running' as interrupted,
        r.execution_logs,
        case when r.norm_status = 'running' then ${INTERRUPTED} else r.error_message end as error_message,
        r.exit_code,
        case when r.execution_time_seconds >= 0 then r.execution_time_seconds end as execution_time_seconds,
        case when r.memory_usage_mb >= 0 then r.memory_usage_mb end as memory_usage_mb,
        r.started_at,
        case
          when r.norm_status = 'running' then greatest(${now}::timestamptz, r.started_at)
          when r.norm_status in ('completed', 'failed', 'cancelled') then
            greatest(coalesce(r.completed_at, r.updated_at, r.started_at, r.created_at), r.started_at)
          else r.completed_at
        end as completed_at,
        r.created_at,
        coalesce(r.updated_at, r.created_at) as updated_at,
        case
          when r.taken_filename = r.key_name then null
          when r.taken_filename is not null then 'id ' || r.id || ' is taken by another script of this database'
          when r.owner_outcome = 'refused' then 'its user ' || r.user_id || ' is refused: ' || r.owner_reason
          when r.owner_outcome is null then 'its user ' || r.user_id || ' is not in the old database'
          when r.key_name !~ ${FILENAME_RE} then 'filename is not <uuid><extension>'
          when r.ext not in ('.py', '.js', '.ts') or r.ext is null then 'unsupported file extension'
          when right(r.key_name, length(r.ext)) <> r.ext then 'filename does not end with its file_extension'
          when r.norm_status not in ('uploaded', 'running', 'completed', 'failed', 'cancelled') then
            'unknown status ' || r.status
          when r.filename_owner is not null then 'filename already belongs to script ' || r.filename_owner
        end as reason,
        r.taken_filename = r.key_name as present
      from ranked as r
    `;
    await sql`
      alter table import_scripts
        add column outcome text, add column sha256 text, add column file_size bigint, add column run_id bigint;
      update import_scripts
      set outcome = case when present then 'present' when reason is null then 'import' else 'refused' end
    `.simple();
    await sql`alter table import_scripts add primary key (id)`;
    return this.outcomes('import_scripts');
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

  /** Applies what the file step found (import_files): sha256 and size, or a refusal. */
  async applyFiles(): Promise<Outcomes> {
    const sql = this.sql;
    await sql`
      update import_scripts as s
      set sha256 = f.sha256,
        file_size = f.size,
        -- The script's last execution becomes one run: its id is taken now, so the script
        -- row can name it (last_run_id) in the same INSERT.
        run_id = case
          when f.sha256 is not null and f.size > 0 and s.status <> 'uploaded'
            then nextval(pg_get_serial_sequence('script_runs', 'id'))
        end,
        outcome = case when f.sha256 is null or f.size = 0 then 'refused' else s.outcome end,
        reason = case
          when f.sha256 is null then 'file missing: ' || s.filename
          when f.size = 0 then 'file is empty: ' || s.filename
        end
      from import_files as f
      where f.id = s.id
    `;
    return this.outcomes('import_scripts');
  }

  /** True when neither users nor scripts has a row (so no run either): the fast path may drop and rebuild indexes. */
  async targetIsEmpty(): Promise<boolean> {
    const sql = this.sql;
    const [row] = await sql<{ empty: boolean }[]>`
      select not exists (select from users) and not exists (select from scripts) as empty
    `;
    return row!.empty;
  }

  /**
   * For a load into empty tables: drops the secondary indexes and the foreign keys of the
   * tables it fills (users, scripts, script_contents, script_runs, run_log_chunks), returning their
   * definitions (from the catalog, so they come back exactly as they were). Constraint
   * indexes (primary keys, unique) stay.
   */
  async deferIndexes(): Promise<Deferred> {
    const sql = this.sql;
    const indexes = await sql<DeferredIndex[]>`
      select c.relname as name, pg_get_indexdef(i.indexrelid) as definition
      from pg_index as i
      join pg_class as c on c.oid = i.indexrelid
      where i.indrelid = any(${LOADED_TABLES}::regclass[])
        and not exists (select from pg_constraint as k where k.conindid = i.indexrelid)
      order by c.relname
    `;
    const foreignKeys = await sql<DeferredForeignKey[]>`
      select conrelid::regclass::text as table, conname as name, pg_get_constraintdef(oid) as definition
      from pg_constraint
      where contype = 'f' and conrelid = any(${LOADED_TABLES}::regclass[])
    `;
    for (const index of indexes) await sql`drop index ${sql(index.name)}`;
    for (const fk of foreignKeys) await sql`alter table ${sql(fk.table)} drop constraint ${sql(fk.name)}`;
    return { indexes: [...indexes], foreignKeys: [...foreignKeys] };
  }

  /** Builds the indexes again and adds the foreign keys NOT VALID, then validates them. */
  async restoreIndexes(deferred: Deferred, onStep: (what: string) => void): Promise<void> {
    const sql = this.sql;
    for (const index of deferred.indexes) {
      onStep(`index ${index.name}`);
      // The definition is PostgreSQL's own text of an index that existed a moment ago.
      await sql.unsafe(index.definition);
    }
    for (const fk of deferred.foreignKeys) {
      onStep(`foreign key ${fk.name}`);
      await sql.unsafe(`alter table ${fk.table} add constraint ${fk.name} ${fk.definition} not valid`);
      await sql`alter table ${sql(fk.table)} validate constraint ${sql(fk.name)}`;
    }
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
      select id, user_id, filename, original_filename, file_size, file_extension, sha256,
        status::script_status, error_message, exit_code, execution_time_seconds,
        memory_usage_mb, started_at, completed_at, created_at, updated_at,
        case when ${linkRuns} then run_id end,
        case when ${linkRuns} and run_id is not null then 1 else 0 end
      from import_scripts
      where outcome = 'import'
      order by id
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
      select run_id, id, user_id, 'manual', status::run_status, sha256, exit_code, execution_time_seconds,
        memory_usage_mb, error_message, coalesce(octet_length(execution_logs), 0),
        coalesce(started_at, completed_at, created_at), started_at, completed_at
      from import_scripts
      where outcome = 'import' and run_id is not null
      order by run_id
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

  private async outcomes(table: 'import_users' | 'import_scripts'): Promise<Outcomes> {
    const sql = this.sql;
    const [row] = await sql<Outcomes[]>`
      select count(*) filter (where outcome = 'import')::int as import,
        count(*) filter (where outcome = 'present')::int as present,
        count(*) filter (where outcome = 'refused')::int as refused
      from ${sql(table)}
    `;
    return row!;
  }
}

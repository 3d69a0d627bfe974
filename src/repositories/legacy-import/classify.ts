/**
 * The rules of import-legacy (docs/import.md, "Rules"), set-wise on the staged rows:
 * one `CREATE TABLE … AS SELECT` per table normalises every row and decides its
 * outcome in the same pass — `import`, `present` (already imported by an earlier run)
 * or `refused` with the first reason that applies. No row is looked at one at a time,
 * and no table is rewritten by an UPDATE of every row afterwards.
 */
import type { TransactionSql } from '../../db/client.ts';

// The rule of ck_users_email_format (sql/schema/10-users.sql), to refuse with a reason
// instead of failing the whole INSERT.
const EMAIL_RE =
  '^[^@\\s\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]+@[^@\\s\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]+\\.[^@\\s\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]+$';
const BCRYPT_RE = '^\\$2[aby]\\$[0-9]{2}\\$[./A-Za-z0-9]{53}$';
// The original named files `<uuid4><ext>`; the names are kept as they are. The check is
// `^[0-9a-f-]{36}\.(py|js|ts)$` without a regular expression: PostgreSQL's regex engine
// expands the counted repetition, and matching it cost ~15 µs a row (1.5 s of 100k).
const UUID_CHARS = '0123456789abcdef-';

export const INTERRUPTED = 'interrupted by the migration';

export interface Outcomes {
  import: number;
  present: number;
  refused: number;
}

export class LegacyClassifier {
  private readonly sql: TransactionSql;

  constructor(sql: TransactionSql) {
    this.sql = sql;
  }

  /**
   * Normalises and classifies every staged user (import_users): outcome `import`,
   * `present` (the same user, same id and email, is already here: a re-run) or
   * `refused` with the first reason that applies.
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
          coalesce(d.first_id, n.id) as first_with_email,
          t.email as taken_email,
          (select u.id from users as u where u.email = n.email and u.id <> n.id) as email_owner,
          (select u.id from users as u where u.google_id = n.google_id and u.id <> n.id) as google_owner,
          (select u.id from users as u where u.ibkr_user_id = n.ibkr_user_id and u.id <> n.id) as ibkr_owner
        from n
        left join users as t on t.id = n.id
        -- Addresses more than one old user has once lower-cased, with the lowest id: a hashed
        -- aggregate of the addresses, not a sort of every whole row as a window would be.
        left join (
          select lower(btrim(email)) as email, min(id) as first_id
          from legacy_users
          group by 1
          having count(*) > 1
        ) as d on d.email = n.email
      ),
      decided as (
        select r.*,
          coalesce(r.taken_email = r.email, false) as present,
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
          end as reason
        from ranked as r
        -- Not flattened into the select below, which would compute each reason up to three times.
        offset 0
      )
      select d.*,
        case when d.present then 'present' when d.reason is null then 'import' else 'refused' end as outcome
      from decided as d
    `;
    await sql`alter table import_users add primary key (id)`;
    await sql`analyze import_users`;
    return this.outcomes('import_users');
  }

  /**
   * For a load into an empty target: reserves one block of run ids, so that the run of
   * old script N is `base + N` (see classifyScripts). One `setval` instead of a
   * `nextval` per run (~5 µs each: seconds at a million runs). script_runs is locked
   * first, so no other writer draws an id in between (an empty target has no script to
   * run anyway, and scripts is locked since begin). Returns null when there is no script.
   */
  async reserveRunIds(): Promise<number | null> {
    const sql = this.sql;
    await sql`lock table script_runs in exclusive mode`;
    const [row] = await sql<{ base: number | null }[]>`
      select nextval(pg_get_serial_sequence('script_runs', 'id')) - min(id) as base
      from legacy_scripts
      having count(*) > 0
    `;
    if (row === undefined || row.base === null) return null;
    await sql`
      select setval(pg_get_serial_sequence('script_runs', 'id'), ${row.base}::bigint + max(id))
      from legacy_scripts
    `;
    return row.base;
  }

  /**
   * Classifies every staged script (import_scripts), after the users (a refused owner
   * refuses its scripts). A script to import that ever ran gets the id of the run its
   * last execution becomes (run_id) now, so the script row can name it in the same
   * INSERT: `runIdBase + id` from a block reserveRunIds() reserved, else drawn from the
   * sequence one by one. A script refused later for its file leaves a gap in the ids,
   * as a rolled-back insert would.
   */
  async classifyScripts(now: Date, runIdBase: number | null = null): Promise<Outcomes> {
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
          coalesce(d.first_id, n.id) as first_with_name,
          t.filename as taken_filename,
          (select s.id from scripts as s where s.filename = n.key_name and s.id <> n.id) as filename_owner
        from n
        left join scripts as t on t.id = n.id
        left join (
          select lower(filename) as key_name, min(id) as first_id
          from legacy_scripts
          group by 1
          having count(*) > 1
        ) as d on d.key_name = n.key_name -- as in classifyUsers
      ),
      decided as (
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
          coalesce(r.taken_filename = r.key_name, false) as present,
          case
            when r.taken_filename = r.key_name then null
            when r.taken_filename is not null then 'id ' || r.id || ' is taken by another script of this database'
            when r.owner_outcome = 'refused' then 'its user ' || r.user_id || ' is refused: ' || r.owner_reason
            when r.owner_outcome is null then 'its user ' || r.user_id || ' is not in the old database'
            when not (length(r.key_name) = 39 and ltrim(left(r.key_name, 36), ${UUID_CHARS}) = ''
                      and right(r.key_name, 3) in ('.py', '.js', '.ts'))
              then 'filename is not <uuid><extension>'
            when r.ext not in ('.py', '.js', '.ts') or r.ext is null then 'unsupported file extension'
            when right(r.key_name, length(r.ext)) <> r.ext then 'filename does not end with its file_extension'
            when r.norm_status not in ('uploaded', 'running', 'completed', 'failed', 'cancelled') then
              'unknown status ' || r.status
            when r.first_with_name <> r.id then
              'filename is the same as script ' || r.first_with_name || '''s after lower-casing'
            when r.filename_owner is not null then 'filename already belongs to script ' || r.filename_owner
          end as reason
        from ranked as r
        offset 0 -- as in classifyUsers
      )
      select d.*,
        case when d.present then 'present' when d.reason is null then 'import' else 'refused' end as outcome,
        case
          when d.present or d.reason is not null or d.status = 'uploaded' then null
          when ${runIdBase}::bigint is not null then ${runIdBase}::bigint + d.id
          else nextval(pg_get_serial_sequence('script_runs', 'id'))
        end as run_id
      from decided as d
    `;
    await sql`alter table import_scripts add primary key (id)`;
    return this.outcomes('import_scripts');
  }

  /**
   * Applies what the file step found (import_files: sha256, size and bytes of every
   * script to import, nulls for a missing file): a script whose file is missing or
   * empty is refused. Only those rows are written; sha256 and size are joined from
   * import_files by the inserts.
   */
  async applyFiles(): Promise<Outcomes> {
    const sql = this.sql;
    await sql`
      update import_scripts as s
      set outcome = 'refused',
        run_id = null,
        reason = case
          when f.sha256 is null then 'file missing: ' || s.filename
          else 'file is empty: ' || s.filename
        end
      from import_files as f
      where f.id = s.id and (f.sha256 is null or f.size = 0)
    `;
    return this.outcomes('import_scripts');
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

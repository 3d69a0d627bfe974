/**
 * Statistics for operators. Each answer is one statement, one round trip; the
 * aggregates run in PostgreSQL, never over rows fetched into the app. These are
 * read-only and may be served by a read replica (DATABASE_READ_URL).
 */
import type { Database } from '../db/database.ts';
import type { AuthProvider, ScriptStatus } from '../domain/enums.ts';
import { type OffsetPage, type OffsetQuery, offsetOf, offsetPage } from '../domain/paging.ts';
import { pick } from './rows.ts';

export interface ScriptStats {
  total_scripts: number;
  running_scripts: number;
  by_status: Record<ScriptStatus, number>;
  total_size_mb: number;
  avg_execution_time: number | null;
  uploads_last_7_days: number;
}

export interface StatusStats {
  status: ScriptStatus;
  count: number;
  avg_time: number | null;
  total_size: number;
}

export interface PerformanceStats {
  avg_time: number | null;
  max_time: number | null;
  min_time: number | null;
  total_scripts: number;
}

export interface UserStats {
  total: number;
  active: number;
  verified: number;
  ibkr_connected: number;
  by_provider: Record<AuthProvider, number>;
  registrations_last_30_days: number;
}

export interface ProviderStats {
  auth_provider: AuthProvider;
  user_count: number;
  avg_created_at: Date | null;
}

export interface UserScriptCount {
  user_id: number;
  username: string;
  email?: string;
  script_count: number;
}

const USER_SCRIPT_COUNT_COLUMNS = ['user_id', 'username', 'email', 'script_count'] as const;

export class StatsRepository {
  private readonly db: Database;

  constructor(db: Database) {
    this.db = db;
  }

  /**
   * Counts by status (every status, zeros included), size, average run time, recent uploads.
   * From the counters (sql/schema/30-statistics.sql): constant cost, exact as of the last commit.
   */
  async scriptStats(): Promise<ScriptStats> {
    const db = this.db.reader;
    const sql = db.sql;
    return db.one<ScriptStats>(
      'stats.scripts',
      sql`
        with per_status as (
          select status, sum(scripts) as n, sum(size_bytes) as size, sum(timed) as timed,
            sum(time_sum) as time_sum
          from script_counters
          group by status
        )
        select
          coalesce(sum(p.n), 0)::int8 as total_scripts,
          coalesce(sum(p.n) filter (where e.status = 'running'), 0)::int8 as running_scripts,
          jsonb_object_agg(e.status, coalesce(p.n, 0)) as by_status,
          round(coalesce(sum(p.size), 0) / 1048576.0, 2) as total_size_mb,
          round(sum(p.time_sum) / nullif(sum(p.timed), 0), 3) as avg_execution_time,
          (
            (select coalesce(sum(u.scripts), 0) from script_upload_counts as u
             where u.hour >= date_trunc('hour', now() - interval '7 days', 'UTC') + interval '1 hour')
            -- The window's first, partial hour: at most one hour of uploads, from ix_scripts_created_at.
            + (select count(*) from scripts as s
               where s.created_at >= now() - interval '7 days'
                 and s.created_at < date_trunc('hour', now() - interval '7 days', 'UTC') + interval '1 hour')
          )::int8 as uploads_last_7_days
        from unnest(enum_range(null::script_status)) as e(status)
        left join per_status as p on p.status = e.status
      `,
    );
  }

  /** One row per status (zeros included), in the enum's order. Constant cost (counters). */
  async scriptsByStatus(): Promise<StatusStats[]> {
    const db = this.db.reader;
    const sql = db.sql;
    return db.many<StatusStats>(
      'stats.scriptsByStatus',
      sql`
        select e.status,
          coalesce(sum(c.scripts), 0)::int8 as count,
          round(sum(c.time_sum) / nullif(sum(c.timed), 0), 3) as avg_time,
          coalesce(sum(c.size_bytes), 0)::int8 as total_size
        from unnest(enum_range(null::script_status)) with ordinality as e(status, n)
        left join script_counters as c on c.status = e.status
        group by e.status, e.n
        order by e.n
      `,
    );
  }

  /** Run times of completed scripts: the counters, and min/max from ix_scripts_completed_time. */
  async performance(): Promise<PerformanceStats> {
    const db = this.db.reader;
    const sql = db.sql;
    return db.one<PerformanceStats>(
      'stats.performance',
      sql`
        select round(sum(c.time_sum) / nullif(sum(c.timed), 0), 3) as avg_time,
          (select max(execution_time_seconds) from scripts where status = 'completed') as max_time,
          (select min(execution_time_seconds) from scripts where status = 'completed') as min_time,
          coalesce(sum(c.scripts), 0)::int8 as total_scripts
        from script_counters as c
        where c.status = 'completed'
      `,
    );
  }

  /** Totals, flags, providers and registrations in the last 30 days. Constant cost (counters). */
  async userStats(): Promise<UserStats> {
    const db = this.db.reader;
    const sql = db.sql;
    return db.one<UserStats>(
      'stats.users',
      sql`
        with per_provider as (
          select auth_provider, sum(users) as n, sum(active) as active, sum(verified) as verified,
            sum(ibkr_connected) as ibkr
          from user_counters
          group by auth_provider
        )
        select
          coalesce(sum(p.n), 0)::int8 as total,
          coalesce(sum(p.active), 0)::int8 as active,
          coalesce(sum(p.verified), 0)::int8 as verified,
          coalesce(sum(p.ibkr), 0)::int8 as ibkr_connected,
          jsonb_object_agg(e.provider, coalesce(p.n, 0)) as by_provider,
          (
            (select coalesce(sum(r.users), 0) from user_registration_counts as r
             where r.hour >= date_trunc('hour', now() - interval '30 days', 'UTC') + interval '1 hour')
            -- The window's first, partial hour, from ix_users_created_at.
            + (select count(*) from users as u
               where u.created_at >= now() - interval '30 days'
                 and u.created_at < date_trunc('hour', now() - interval '30 days', 'UTC') + interval '1 hour')
          )::int8 as registrations_last_30_days
        from unnest(enum_range(null::auth_provider)) as e(provider)
        left join per_provider as p on p.auth_provider = e.provider
      `,
    );
  }

  /** Users per sign-in provider and their mean registration time. Constant cost (counters). */
  async usersByProvider(): Promise<ProviderStats[]> {
    const db = this.db.reader;
    const sql = db.sql;
    return db.many<ProviderStats>(
      'stats.usersByProvider',
      sql`
        select e.provider as auth_provider,
          coalesce(sum(c.users), 0)::int8 as user_count,
          to_timestamp(sum(c.created_epoch_sum) / nullif(sum(c.users), 0)) as avg_created_at
        from unnest(enum_range(null::auth_provider)) with ordinality as e(provider, n)
        left join user_counters as c on c.auth_provider = e.provider
        group by e.provider, e.n
        order by e.n
      `,
    );
  }

  /** The users with the most scripts, most first (ties: lower id first): ix_user_script_counts_top. */
  async topUsers(limit: number): Promise<UserScriptCount[]> {
    const db = this.db.reader;
    const sql = db.sql;
    return db.many<UserScriptCount>(
      'stats.topUsers',
      sql`
        select c.user_id, u.username, c.script_count
        from user_script_counts as c
        join users as u on u.id = c.user_id
        where c.script_count > 0
        order by c.script_count desc, c.user_id
        limit ${limit}
      `,
    );
  }

  /** Every user with its number of scripts (zero included), by id, as an offset page. */
  async userScriptCounts(page: OffsetQuery): Promise<OffsetPage<Required<UserScriptCount>>> {
    const db = this.db.reader;
    const sql = db.sql;
    const rows = await db.many<
      { total: number; user_id: number | null } & Omit<Required<UserScriptCount>, 'user_id'>
    >(
      'stats.userScriptCounts',
      sql`
        select c.total, p.user_id, p.username, p.email, p.script_count
        from (select coalesce(sum(users), 0)::int8 as total from user_counters) as c
        left join lateral (
          select u.id as user_id, u.username, u.email,
            coalesce((select n.script_count from user_script_counts as n where n.user_id = u.id), 0)::int8
              as script_count
          from users as u
          order by u.id
          limit ${page.per_page}
          offset ${offsetOf(page)}
        ) as p on true
      `,
    );
    const items = rows
      .filter((r) => r.user_id !== null)
      .map((r) => pick<Required<UserScriptCount>>(r, USER_SCRIPT_COUNT_COLUMNS));
    return offsetPage(items, rows[0]?.total ?? 0, page);
  }
}

/**
 * Statistics for operators. Each answer is one statement, one round trip; the
 * aggregates run in PostgreSQL, never over rows fetched into the app. These are
 * read-only and may be served by a read replica (DATABASE_READ_URL).
 */
import type { Database } from '../db/database.js';
import type { AuthProvider, ScriptStatus } from '../domain/enums.js';
import { type OffsetPage, type OffsetQuery, offsetOf, offsetPage } from './pagination.js';

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

export class StatsRepository {
  constructor(private readonly db: Database) {}

  /** Counts by status (every status, zeros included), size, average run time, recent uploads. */
  async scriptStats(): Promise<ScriptStats> {
    const sql = this.db.sql;
    return this.db.one<ScriptStats>(
      'stats.scripts',
      sql`
        with per_status as (
          select status,
            count(*) as n,
            sum(file_size) as size,
            sum(execution_time_seconds) as time_sum,
            count(execution_time_seconds) as timed,
            count(*) filter (where created_at >= now() - interval '7 days') as recent
          from scripts
          group by status
        )
        select
          coalesce(sum(p.n), 0)::int8 as total_scripts,
          coalesce(sum(p.n) filter (where e.status = 'running'), 0)::int8 as running_scripts,
          jsonb_object_agg(e.status, coalesce(p.n, 0)) as by_status,
          round(coalesce(sum(p.size), 0) / 1048576.0, 2) as total_size_mb,
          round(sum(p.time_sum) / nullif(sum(p.timed), 0), 3) as avg_execution_time,
          coalesce(sum(p.recent), 0)::int8 as uploads_last_7_days
        from unnest(enum_range(null::script_status)) as e(status)
        left join per_status as p on p.status = e.status
      `,
    );
  }

  /** One row per status (zeros included), in the enum's order. */
  async scriptsByStatus(): Promise<StatusStats[]> {
    const sql = this.db.sql;
    return this.db.many<StatusStats>(
      'stats.scriptsByStatus',
      sql`
        select e.status,
          count(s.id) as count,
          round(avg(s.execution_time_seconds), 3) as avg_time,
          coalesce(sum(s.file_size), 0)::int8 as total_size
        from unnest(enum_range(null::script_status)) with ordinality as e(status, n)
        left join scripts as s on s.status = e.status
        group by e.status, e.n
        order by e.n
      `,
    );
  }

  /** Run times of completed scripts. */
  async performance(): Promise<PerformanceStats> {
    const sql = this.db.sql;
    return this.db.one<PerformanceStats>(
      'stats.performance',
      sql`
        select round(avg(execution_time_seconds), 3) as avg_time,
          max(execution_time_seconds) as max_time,
          min(execution_time_seconds) as min_time,
          count(*) as total_scripts
        from scripts
        where status = 'completed'
      `,
    );
  }

  async userStats(): Promise<UserStats> {
    const sql = this.db.sql;
    return this.db.one<UserStats>(
      'stats.users',
      sql`
        with per_provider as (
          select auth_provider,
            count(*) as n,
            count(*) filter (where is_active) as active,
            count(*) filter (where is_verified) as verified,
            count(*) filter (where is_ibkr_connected) as ibkr,
            count(*) filter (where created_at >= now() - interval '30 days') as recent
          from users
          group by auth_provider
        )
        select
          coalesce(sum(p.n), 0)::int8 as total,
          coalesce(sum(p.active), 0)::int8 as active,
          coalesce(sum(p.verified), 0)::int8 as verified,
          coalesce(sum(p.ibkr), 0)::int8 as ibkr_connected,
          jsonb_object_agg(e.provider, coalesce(p.n, 0)) as by_provider,
          coalesce(sum(p.recent), 0)::int8 as registrations_last_30_days
        from unnest(enum_range(null::auth_provider)) as e(provider)
        left join per_provider as p on p.auth_provider = e.provider
      `,
    );
  }

  /** Users per sign-in provider and their mean registration time. */
  async usersByProvider(): Promise<ProviderStats[]> {
    const sql = this.db.sql;
    return this.db.many<ProviderStats>(
      'stats.usersByProvider',
      sql`
        select e.provider as auth_provider,
          count(u.id) as user_count,
          to_timestamp(avg(extract(epoch from u.created_at))) as avg_created_at
        from unnest(enum_range(null::auth_provider)) with ordinality as e(provider, n)
        left join users as u on u.auth_provider = e.provider
        group by e.provider, e.n
        order by e.n
      `,
    );
  }

  /** The users with the most scripts, most first (ties: lower id first). */
  async topUsers(limit: number): Promise<UserScriptCount[]> {
    const sql = this.db.sql;
    return this.db.many<UserScriptCount>(
      'stats.topUsers',
      sql`
        select u.id as user_id, u.username, c.script_count
        from (
          select user_id, count(*) as script_count
          from scripts
          group by user_id
          order by script_count desc, user_id
          limit ${limit}
        ) as c
        join users as u on u.id = c.user_id
        order by c.script_count desc, u.id
      `,
    );
  }

  /** Every user with its number of scripts (zero included), by id, as an offset page. */
  async userScriptCounts(page: OffsetQuery): Promise<OffsetPage<Required<UserScriptCount>>> {
    const sql = this.db.sql;
    const rows = await this.db.many<
      { total: number; user_id: number | null } & Omit<Required<UserScriptCount>, 'user_id'>
    >(
      'stats.userScriptCounts',
      sql`
        select c.total, p.user_id, p.username, p.email, p.script_count
        from (select count(*) as total from users) as c
        left join lateral (
          select u.id as user_id, u.username, u.email,
            (select count(*) from scripts as s where s.user_id = u.id) as script_count
          from users as u
          order by u.id
          limit ${page.per_page}
          offset ${offsetOf(page)}
        ) as p on true
      `,
    );
    const items = rows
      .filter((r) => r.user_id !== null)
      .map(({ total: _t, ...r }) => r as Required<UserScriptCount>);
    return offsetPage(items, rows[0]?.total ?? 0, page);
  }
}

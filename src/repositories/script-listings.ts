/**
 * Listings of scripts (Repositories exposes it as `scriptListings`): offset and keyset
 * pages filtered by owner, status, execution time and age in four sort orders, the
 * scripts running now, and recent uploads with their owners. Every statement goes to
 * `db.reader` (a replica when configured).
 */
import { Type } from '@sinclair/typebox';
import type { Fragment } from '../db/client.ts';
import type { Database } from '../db/database.ts';
import type { ScriptStatus } from '../domain/enums.ts';
import {
  type CursorPage,
  cursorPage,
  decodeCursor,
  invalidCursor,
  type OffsetPage,
  type OffsetQuery,
  offsetOf,
  offsetPage,
} from '../domain/paging.ts';
import { SCRIPT_COLUMNS, SCRIPT_SORTS, type Script, type ScriptSort } from '../domain/script.ts';
import { pick, rowsOf } from './rows.ts';
import { ownedBy } from './script-repository.ts';

export interface ScriptFilters {
  /** Only this user's scripts; undefined means everyone's (admin). */
  user_id?: number;
  status?: ScriptStatus;
  min_execution_time?: number;
  created_since?: Date;
}

export type ScriptWithUser = Script & { user: { id: number; email: string; username: string } };

// A cursor holds the sort, the sort key of the last row (exact text for a timestamp,
// since a JS Date would drop PostgreSQL's microseconds) and its id.
const ScriptCursor = Type.Tuple([
  Type.Union(SCRIPT_SORTS.map((s) => Type.Literal(s))),
  Type.Union([Type.String({ maxLength: 64 }), Type.Number({ minimum: -1, maximum: 1e7 })]),
  Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
]);

export class ScriptListingRepository {
  private readonly db: Database;

  constructor(db: Database) {
    this.db = db;
  }

  private get sql() {
    return this.db.sql;
  }

  /** Offset page with the total, in one round trip. */
  async listPage(filters: ScriptFilters, sort: ScriptSort, page: OffsetQuery): Promise<OffsetPage<Script>> {
    const db = this.db.reader;
    const sql = db.sql;
    const where = this.where(filters);
    const rows = await db.many<{ total: number } & { [K in keyof Script]: Script[K] | null }>(
      'scripts.listPage',
      sql`
        select c.total, s.*
        from (select count(*) as total from scripts ${where}) as c
        left join lateral (
          select ${sql(SCRIPT_COLUMNS)}
          from scripts
          ${where}
          order by ${ORDER_BY[sort](sql)}
          limit ${page.per_page}
          offset ${offsetOf(page)}
        ) as s on true
      `,
    );
    return offsetPage(rowsOf(rows, SCRIPT_COLUMNS), rows[0]?.total ?? 0, page);
  }

  /** Keyset page; `cursor` null for the first. The cursor remembers its sort: mixing them is a 400. */
  async listAfter(
    filters: ScriptFilters,
    sort: ScriptSort,
    cursor: string | null,
    limit: number,
  ): Promise<CursorPage<Script>> {
    const db = this.db.reader;
    const sql = db.sql;
    let after = sql``;
    if (cursor !== null) {
      const [cursorSort, key, id] = decodeCursor(cursor, ScriptCursor);
      const byTime = sort.endsWith('created_at');
      if (cursorSort !== sort || (byTime ? !isTimestampText(key) : typeof key !== 'number'))
        throw invalidCursor();
      const dir = sort.startsWith('-') ? sql`<` : sql`>`;
      after = sort.endsWith('created_at')
        ? // ::text first: a parameter typed timestamptz would be serialised through a JS Date
          // by the driver, dropping the microseconds the cursor carries.
          sql`and (created_at, id) ${dir} (${key}::text::timestamptz, ${id})`
        : sql`and (coalesce(execution_time_seconds, -1), id) ${dir} (${key}::numeric, ${id})`;
    }
    const rows = await db.many<Script & { sort_key: string | number }>(
      'scripts.listAfter',
      sql`
        select ${sql(SCRIPT_COLUMNS)},
          ${sort.endsWith('created_at') ? sql`created_at::text` : sql`coalesce(execution_time_seconds, -1)`} as sort_key
        from scripts
        ${this.where(filters)}
        ${after}
        order by ${ORDER_BY[sort](sql)}
        limit ${limit + 1}
      `,
    );
    const page = cursorPage(rows, limit, (row) => [sort, row.sort_key, row.id]);
    return { ...page, items: page.items.map((row) => pick<Script>(row, SCRIPT_COLUMNS)) };
  }

  /** Scripts running now, longest-running first. */
  async listRunning(ownerId?: number): Promise<Script[]> {
    const db = this.db.reader;
    const sql = db.sql;
    return db.many<Script>(
      'scripts.listRunning',
      sql`
        select ${sql(SCRIPT_COLUMNS)}
        from scripts
        where status = 'running' ${ownedBy(sql, ownerId)}
        order by started_at, id
      `,
    );
  }

  /** Scripts created since `since`, newest first, each with its owner, in one query. */
  async listRecentWithUser(since: Date, limit: number): Promise<ScriptWithUser[]> {
    const db = this.db.reader;
    const sql = db.sql;
    return db.many<ScriptWithUser>(
      'scripts.listRecentWithUser',
      sql`
        select ${sql(SCRIPT_COLUMNS.map((c) => `s.${c}`))},
          json_build_object('id', u.id, 'email', u.email, 'username', u.username) as user
        from scripts as s
        join users as u on u.id = s.user_id
        where s.created_at >= ${since}
        order by s.created_at desc, s.id desc
        limit ${limit}
      `,
    );
  }

  private where(f: ScriptFilters): Fragment {
    const sql = this.sql;
    return sql`
      where true
      ${f.user_id === undefined ? sql`` : sql`and user_id = ${f.user_id}`}
      ${f.status === undefined ? sql`` : sql`and status = ${f.status}`}
      ${f.min_execution_time === undefined ? sql`` : sql`and execution_time_seconds >= ${f.min_execution_time}`}
      ${f.created_since === undefined ? sql`` : sql`and created_at >= ${f.created_since}`}
    `;
  }
}

type AnySql = Database['sql'];
const ORDER_BY: Record<ScriptSort, (sql: AnySql) => Fragment> = {
  created_at: (sql) => sql`created_at, id`,
  '-created_at': (sql) => sql`created_at desc, id desc`,
  execution_time_seconds: (sql) => sql`coalesce(execution_time_seconds, -1), id`,
  '-execution_time_seconds': (sql) => sql`coalesce(execution_time_seconds, -1) desc, id desc`,
};

/**
 * `created_at::text` as this server writes it (sessions are in UTC): a cursor's
 * timestamp must be one, a real date included, before PostgreSQL is asked to read it.
 */
const TIMESTAMP_TEXT = /^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(\.\d{1,6})?\+00$/;
function isTimestampText(value: unknown): boolean {
  const m = typeof value === 'string' ? TIMESTAMP_TEXT.exec(value) : null;
  if (m === null) return false;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as number[];
  const date = new Date(Date.UTC(year!, month! - 1, day!, hour!, minute!, second!));
  return (
    date.getUTCFullYear() === year &&
    date.getUTCMonth() === month! - 1 &&
    date.getUTCDate() === day &&
    date.getUTCHours() === hour &&
    date.getUTCMinutes() === minute &&
    date.getUTCSeconds() === second
  );
}

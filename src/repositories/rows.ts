/** Row helpers shared by the repositories: page rows, json_agg rows, LIKE terms. */
import type { Script } from '../domain/script.ts';

type Nullable<T> = { [K in keyof T]: T[K] | null };

/** Rows of a `count left join lateral page` query: an empty page is one row of nulls. */
export function rowsOf<T extends { id: unknown }>(rows: Array<{ total: number } & Nullable<T>>): T[] {
  const items: T[] = [];
  for (const { total: _total, ...row } of rows) if (row.id !== null) items.push(row as unknown as T);
  return items;
}

/** The same rows' type, as the query returns them. */
export type PageRow<T> = { total: number } & Nullable<T>;

const DATE_FIELDS = ['started_at', 'completed_at', 'created_at', 'updated_at'] as const;

/** A script row that came through json_agg: timestamps back to Dates, as every other row has them. */
export function scriptFromJson(json: Record<string, unknown>): Script {
  const script = json as unknown as Script;
  for (const field of DATE_FIELDS) {
    const value = json[field];
    (script as unknown as Record<string, unknown>)[field] =
      typeof value === 'string' ? new Date(value) : value;
  }
  return script;
}

/** Escapes LIKE wildcards so a search term matches literally. */
export function likeContains(term: string): string {
  return `%${term.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

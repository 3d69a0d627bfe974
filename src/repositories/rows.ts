/** Row helpers shared by the repositories: page rows, json_agg rows, LIKE terms. */
import type { Script } from '../domain/script.ts';

type Nullable<T> = { [K in keyof T]: T[K] | null };

/**
 * A copy of `row` holding only `columns`, in their order. Rows carry a helper column
 * (a page's total, a cursor's sort key) that the domain object must not: a loop of plain
 * assignments costs ~0.3 µs a row, where a rest pattern (`{ total, ...row }`) cost 5–9 µs
 * a row in V8 (a 20-row page paid more for it than for its query's wrapper; bench/README.md).
 */
export function pick<T>(row: object, columns: readonly string[]): T {
  const from = row as Record<string, unknown>;
  const to: Record<string, unknown> = {};
  for (let i = 0; i < columns.length; i++) {
    const column = columns[i] as string;
    to[column] = from[column];
  }
  return to as T;
}

/**
 * Rows of a `count left join lateral page` query, without their `total`: an empty page is
 * one row of nulls.
 */
export function rowsOf<T extends { id: unknown }>(
  rows: Array<{ total: number } & Nullable<T>>,
  columns: readonly (keyof T & string)[],
): T[] {
  const items: T[] = [];
  for (const row of rows) if (row.id !== null) items.push(pick<T>(row, columns));
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

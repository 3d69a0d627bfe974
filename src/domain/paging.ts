/**
 * Pages of a list — the one paging module of every layer. A list answers an offset page
 * (`{items, total, page, per_page, pages}`, the default) or a keyset page
 * (`{items, next_cursor}`, when the request has `cursor`, empty for the first page):
 * which one is the client's choice, the queries are the repository's.
 *
 * A cursor is the sort key of the last row, base64url-encoded JSON; it is opaque to
 * clients and checked against a schema when it comes back, so a tampered cursor is a
 * 400 (INVALID_CURSOR), never a 500 and never another user's rows (ownership is a
 * separate condition of every query).
 */
import type { Static, TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { ValidationError } from './errors.ts';

export const PER_PAGE_MAX = 100;
export const PER_PAGE_DEFAULT = 20;

export interface OffsetQuery {
  /** From 1. */
  page: number;
  per_page: number;
}

export interface OffsetPage<T> {
  items: T[];
  total: number;
  page: number;
  per_page: number;
  pages: number;
}

export interface CursorPage<T> {
  items: T[];
  next_cursor: string | null;
}

export type Page<T> = OffsetPage<T> | CursorPage<T>;

export interface PageRequest {
  page?: number;
  per_page?: number;
  /** Keyset mode: empty for the first page, then the previous page's next_cursor. */
  cursor?: string;
}

export function offsetOf({ page, per_page }: OffsetQuery): number {
  return (page - 1) * per_page;
}

export function offsetPage<T>(items: T[], total: number, { page, per_page }: OffsetQuery): OffsetPage<T> {
  return { items, total, page, per_page, pages: Math.ceil(total / per_page) };
}

export function encodeCursor(key: readonly unknown[]): string {
  return Buffer.from(JSON.stringify(key)).toString('base64url');
}

/** Decodes a cursor made by encodeCursor, or throws ValidationError(INVALID_CURSOR). */
export function decodeCursor<S extends TSchema>(cursor: string, schema: S): Static<S> {
  let value: unknown;
  try {
    if (!/^[A-Za-z0-9_-]{1,512}$/.test(cursor)) throw new Error('not base64url');
    const bytes = Buffer.from(cursor, 'base64url');
    // Base64 decoding ignores stray trailing characters: only the canonical form is ours.
    if (bytes.toString('base64url') !== cursor) throw new Error('not canonical');
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw invalidCursor();
  }
  if (!Value.Check(schema, value)) throw invalidCursor();
  return value;
}

export function invalidCursor(): ValidationError {
  return ValidationError.field(
    '/cursor',
    'is not a cursor this server issued for this list',
    'INVALID_CURSOR',
  );
}

/**
 * Fetch one row more than the page holds: if it came, there is a next page and the
 * cursor is the key of the last row shown.
 */
export function cursorPage<T>(
  rows: T[],
  limit: number,
  keyOf: (row: T) => readonly unknown[],
): CursorPage<T> {
  if (rows.length <= limit) return { items: rows, next_cursor: null };
  const items = rows.slice(0, limit);
  return { items, next_cursor: encodeCursor(keyOf(items[items.length - 1] as T)) };
}

/** The page `request` asks for, by offset or by cursor. */
export async function fetchPage<T>(
  request: PageRequest,
  byOffset: (page: OffsetQuery) => Promise<OffsetPage<T>>,
  byCursor: (cursor: string | null, limit: number) => Promise<CursorPage<T>>,
): Promise<Page<T>> {
  const per_page = request.per_page ?? PER_PAGE_DEFAULT;
  if (request.cursor !== undefined) return byCursor(request.cursor === '' ? null : request.cursor, per_page);
  return byOffset({ page: request.page ?? 1, per_page });
}

type Items<N extends string, T> = { [K in N]: T[] };
export type PageBody<N extends string, T> =
  | (Items<N, T> & { total: number; page: number; per_page: number; pages: number })
  | (Items<N, T> & { next_cursor: string | null });

/** A page as answered: its items under `name` (`{scripts: [...], next_cursor}`). */
export function pageBody<N extends string, T>(name: N, page: Page<T>): PageBody<N, T> {
  const { items, ...rest } = page;
  return { [name]: items, ...rest } as PageBody<N, T>;
}

/**
 * A page of a list, by offset (the default) or by keyset cursor (when the request
 * has `cursor`, empty for the first page): which one is the client's choice, the
 * queries are the repository's.
 */
import {
  type CursorPage,
  type OffsetPage,
  type OffsetQuery,
  PER_PAGE_DEFAULT,
} from '../repositories/pagination.js';

export interface PageRequest {
  page?: number;
  per_page?: number;
  /** Keyset mode: empty for the first page, then the previous page's next_cursor. */
  cursor?: string;
}

export type Page<T> = OffsetPage<T> | CursorPage<T>;

export async function fetchPage<T>(
  request: PageRequest,
  byOffset: (page: OffsetQuery) => Promise<OffsetPage<T>>,
  byCursor: (cursor: string | null, limit: number) => Promise<CursorPage<T>>,
): Promise<Page<T>> {
  const per_page = request.per_page ?? PER_PAGE_DEFAULT;
  if (request.cursor !== undefined) return byCursor(request.cursor === '' ? null : request.cursor, per_page);
  return byOffset({ page: request.page ?? 1, per_page });
}

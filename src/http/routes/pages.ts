/**
 * Lists answer an offset page by default, or a keyset page when the query has
 * `cursor` (empty for the first page): `{<name>: [...], total, page, per_page, pages}`
 * or `{<name>: [...], next_cursor}`.
 */
import type { CursorPage, OffsetPage, OffsetQuery } from '../../repositories/pagination.js';
import { PER_PAGE_DEFAULT } from '../../repositories/pagination.js';

export async function listPage<N extends string, T>(
  name: N,
  query: { page?: number; per_page?: number; cursor?: string },
  byOffset: (page: OffsetQuery) => Promise<OffsetPage<T>>,
  byCursor: (cursor: string | null, limit: number) => Promise<CursorPage<T>>,
): Promise<
  | ({ [K in N]: T[] } & { total: number; page: number; per_page: number; pages: number })
  | ({ [K in N]: T[] } & { next_cursor: string | null })
> {
  const per_page = query.per_page ?? PER_PAGE_DEFAULT;
  if (query.cursor !== undefined) {
    const { items, next_cursor } = await byCursor(query.cursor === '' ? null : query.cursor, per_page);
    return { [name]: items, next_cursor } as { [K in N]: T[] } & { next_cursor: string | null };
  }
  const { items, ...rest } = await byOffset({ page: query.page ?? 1, per_page });
  return { [name]: items, ...rest } as { [K in N]: T[] } & {
    total: number;
    page: number;
    per_page: number;
    pages: number;
  };
}

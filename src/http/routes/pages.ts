/**
 * Lists answer an offset page by default, or a keyset page when the query has
 * `cursor` (empty for the first page): `{<name>: [...], total, page, per_page, pages}`
 * or `{<name>: [...], next_cursor}`.
 */
import type { CursorPage, OffsetPage, OffsetQuery } from '../../repositories/pagination.js';
import { fetchPage, type Page, type PageRequest } from '../../services/paging.js';

type Items<N extends string, T> = { [K in N]: T[] };
type PageBody<N extends string, T> =
  | (Items<N, T> & { total: number; page: number; per_page: number; pages: number })
  | (Items<N, T> & { next_cursor: string | null });

/** A page as answered: its items under `name`. */
export function pageBody<N extends string, T>(name: N, page: Page<T>): PageBody<N, T> {
  const { items, ...rest } = page;
  return { [name]: items, ...rest } as PageBody<N, T>;
}

/** Fetches the page a query asks for and answers it. */
export async function listPage<N extends string, T>(
  name: N,
  query: PageRequest,
  byOffset: (page: OffsetQuery) => Promise<OffsetPage<T>>,
  byCursor: (cursor: string | null, limit: number) => Promise<CursorPage<T>>,
): Promise<PageBody<N, T>> {
  return pageBody(name, await fetchPage(query, byOffset, byCursor));
}

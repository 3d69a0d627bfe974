/** What the Database does with a statement of the driver: its text, a copy on another pool, its cancel. */
import type postgres from 'postgres';
import type { Sql } from './client.ts';

/** The SQL text of a query, without its parameter values (they may be secrets). */
export function statementText(query: object): string {
  const strings = (query as unknown as { strings?: readonly string[] }).strings;
  return strings
    ? strings
        .map((s, i) => (i === 0 ? s : `$${i}${s}`))
        .join('')
        .replace(/\s+/g, ' ')
        .trim()
    : '';
}

/**
 * The same statement, made anew on another pool (a replica's query run again on the
 * primary): the tagged template's strings and values; fragments inside are values of the
 * driver's own classes, so they embed in any pool's query.
 */
export function rebuild<T extends object>(
  sql: Sql,
  query: postgres.PendingQuery<T[]>,
): postgres.PendingQuery<T[]> {
  const { strings, args } = query as unknown as { strings: TemplateStringsArray | string; args: unknown[] };
  if (typeof strings === 'string')
    return sql.unsafe(strings, args as postgres.ParameterOrJSON<never>[]) as never;
  return (sql as unknown as (s: TemplateStringsArray, ...a: unknown[]) => postgres.PendingQuery<T[]>)(
    strings,
    ...args,
  );
}

/** Asks the server to cancel; a failure to ask (the server is gone) changes nothing. */
export function cancel(query: { cancel(): unknown }): void {
  try {
    const asked = query.cancel() as Promise<unknown> | null | undefined;
    if (asked && typeof asked.catch === 'function') asked.catch(() => {});
  } catch {
    // nothing to cancel
  }
}

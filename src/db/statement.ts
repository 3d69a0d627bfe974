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
 * driver's own classes, so they embed in any pool's query. An `unsafe` query is not
 * tagged: the driver keeps its text as a one-element array (no `raw`), which the tagged
 * call would refuse (NOT_TAGGED_CALL), so it is made again with `unsafe`.
 */
export function rebuild<T extends object>(
  sql: Sql,
  query: postgres.PendingQuery<T[]>,
): postgres.PendingQuery<T[]> {
  const { strings, args, tagged, options } = query as unknown as {
    strings: TemplateStringsArray | readonly [string];
    args: unknown[];
    tagged: boolean;
    options: { prepare?: boolean };
  };
  if (!tagged)
    return sql.unsafe(strings[0], args as postgres.ParameterOrJSON<never>[], {
      prepare: options.prepare === true,
    }) as never;
  return (sql as unknown as (s: TemplateStringsArray, ...a: unknown[]) => postgres.PendingQuery<T[]>)(
    strings as TemplateStringsArray,
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

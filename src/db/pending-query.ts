/**
 * One query under way: the record the Database links into its deadline list, the shape
 * its rows take for the caller (`many`, `maybeOne`, `one`, `count`), and its settling —
 * by the driver's answer or by the deadline, whichever comes first.
 */
import { performance } from 'node:perf_hooks';
import postgres from 'postgres';
import { DatabaseUnavailableError } from '../domain/errors.ts';
import type { Deadline, DeadlineList } from './deadlines.ts';
import { mapPostgresError } from './map-error.ts';
import { cancel } from './statement.ts';

export type Row = Record<string, unknown>;

/** What a query reports to: its Database (the type is structural to keep the import one-way). */
export interface QueryOwner {
  readonly options: { queryTimeoutMs: number };
  readonly deadlines: DeadlineList;
  finish(pending: PendingQuery, ok: boolean, answered: boolean, end: number): void;
}

/** What a query's rows become for the caller. */
export type Shape<R> = (rows: postgres.RowList<Row[]>, name: string) => R;
export const allRows: Shape<never> = (rows) => rows as never;
export const firstRowOrNull: Shape<never> = (rows) => (rows[0] ?? null) as never;
export const firstRow: Shape<never> = (rows, name) => {
  const row = rows[0];
  if (row === undefined) throw new Error(`query ${name} returned no row`);
  return row as never;
};
export const rowCount: Shape<never> = (rows) => (rows.count ?? 0) as never;

/** One query under way. */
export class PendingQuery implements Deadline {
  deadline = 0;
  prev: Deadline | null = null;
  next: Deadline | null = null;
  done = false;
  readonly db: QueryOwner;
  readonly name: string;
  readonly query: postgres.PendingQuery<Row[]>;
  readonly shape: Shape<unknown>;
  readonly start: number;
  readonly resolve: (value: never) => void;
  readonly reject: (error: unknown) => void;

  constructor(
    db: QueryOwner,
    name: string,
    query: postgres.PendingQuery<Row[]>,
    shape: Shape<unknown>,
    start: number,
    resolve: (value: never) => void,
    reject: (error: unknown) => void,
  ) {
    this.db = db;
    this.name = name;
    this.query = query;
    this.shape = shape;
    this.start = start;
    this.resolve = resolve;
    this.reject = reject;
  }

  /** The time is up: the caller gets DatabaseUnavailable now; the query is cancelled on the server. */
  expire(now: number): void {
    if (this.done) return;
    this.done = true;
    cancel(this.query);
    this.db.finish(this, false, false, now);
    const ms = this.db.options.queryTimeoutMs;
    this.reject(new DatabaseUnavailableError(`the database did not answer ${this.name} within ${ms} ms`));
  }
}

/** The driver answered (rows or an error), unless the deadline came first. */
export function settle(pending: PendingQuery, ok: boolean, value: unknown): void {
  if (pending.done) return;
  pending.done = true;
  pending.db.deadlines.remove(pending);
  const end = performance.now();
  if (ok) {
    let result: unknown;
    try {
      result = pending.shape(value as postgres.RowList<Row[]>, pending.name);
    } catch (error) {
      pending.db.finish(pending, true, true, end);
      pending.reject(error);
      return;
    }
    pending.db.finish(pending, true, true, end);
    pending.resolve(result as never);
  } else {
    pending.db.finish(pending, false, value instanceof postgres.PostgresError, end);
    pending.reject(mapPostgresError(value));
  }
}

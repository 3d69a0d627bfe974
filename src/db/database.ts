/**
 * Database: the executor every repository receives — the pool, or a transaction.
 * Its query helpers say how many rows they expect (`many`, `maybeOne`, `one`),
 * and each call is timed, logged (debug; warn when slow), given a client-side
 * time limit, and has its PostgreSQL errors mapped to domain errors.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import postgres from 'postgres';
import { DatabaseUnavailableError } from '../domain/errors.ts';
import type { Sql, TransactionSql } from './client.ts';
import { type DeadlineList, deadlineList, withDeadline } from './deadlines.ts';
import { isRetryable, mapPostgresError, wasTerminated } from './map-error.ts';
import {
  allRows,
  firstRow,
  firstRowOrNull,
  PendingQuery,
  type Row,
  rowCount,
  type Shape,
  settle,
} from './pending-query.ts';
import { type PoolState, poolState, prePing } from './pre-ping.ts';
import { rebuild, statementText } from './statement.ts';

/** Called once per query with its name, duration and outcome (metrics). */
export type QueryObserver = (name: string, seconds: number, ok: boolean) => void;

export interface DatabaseOptions {
  log: Logger;
  /** Queries at least this slow are logged at warn. */
  slowQueryMs: number;
  /** Client-side limit: a frozen server never enforces its own statement_timeout. */
  queryTimeoutMs: number;
  onQuery?: QueryObserver;
  /**
   * Shared by every Database of a pool: queries and transactions under way,
   * including those waiting for a connection (readiness reports the waiting).
   */
  activity?: { inFlight: number };
  /**
   * Pre-ping: when the pool has had no answer from the server for longer than this, a
   * connection is checked (`select 1`) before the next query or transaction; one that fails
   * is closed by the driver and the next is tried. 0 or absent: off.
   */
  prePingIdleMs?: number;
  /**
   * On the primary's Database: where `reader` sends read-mostly queries (a ReadRouter,
   * src/db/read-router.ts). Absent: `reader` is this Database.
   */
  reads?: { reader(): Database };
  /**
   * On a replica's Database: a query the replica cannot answer (unavailable, or cancelled
   * by a conflict with recovery) runs again on `db`, and `failed` is told.
   */
  fallback?: { db: Database; failed(error: unknown): void };
}

export interface TransactionOptions {
  isolation?: 'read committed' | 'repeatable read' | 'serializable';
  /**
   * How often a transaction that hit a serialization failure or deadlock is run
   * again. Only for callbacks without outside side effects. Default 3.
   */
  retries?: number;
}

type AnySql = Sql | TransactionSql;

export class Database {
  readonly sql: AnySql;
  readonly options: DatabaseOptions;
  /** True when `sql` is a transaction: `transaction()` then makes a savepoint. */
  readonly inTransaction: boolean;
  /** Set when the transaction this Database belongs to ran out of time (see transaction()). */
  private readonly abort?: { aborted: boolean };

  constructor(sql: AnySql, options: DatabaseOptions, inTransaction = false, abort?: { aborted: boolean }) {
    this.sql = sql;
    this.options = options;
    this.inTransaction = inTransaction;
    this.abort = abort;
    this.pool = inTransaction ? undefined : poolState(sql as Sql);
    this.activity = inTransaction ? undefined : options.activity;
    this.deadlines = deadlineList(options.queryTimeoutMs);
  }

  /** State shared by every Database over the same pool (pre-ping); none inside a transaction. */
  private readonly pool: PoolState | undefined;
  /** Counted per query outside transactions (a transaction counts once, as a whole). */
  private readonly activity: { inFlight: number } | undefined;
  /** The deadlines of this Database's time limit (internal: used by `settle`). */
  readonly deadlines: DeadlineList;

  /**
   * Where read-mostly queries (listings, history, search, statistics) go: a read replica
   * when one is configured, up, not lagging, and not behind the caller's own write;
   * otherwise this Database. Inside a transaction, always the transaction.
   */
  get reader(): Database {
    if (this.inTransaction || this.options.reads === undefined) return this;
    return this.options.reads.reader();
  }

  /** All rows. */
  many<T extends object>(name: string, query: postgres.PendingQuery<T[]>): Promise<T[]> {
    return this.run(name, query, allRows);
  }

  /** The first row, or null when there is none. */
  maybeOne<T extends object>(name: string, query: postgres.PendingQuery<T[]>): Promise<T | null> {
    return this.run(name, query, firstRowOrNull);
  }

  /** Exactly one row; none is a bug in the query (an insert/aggregate always returns one). */
  one<T extends object>(name: string, query: postgres.PendingQuery<T[]>): Promise<T> {
    return this.run(name, query, firstRow);
  }

  /** The number of rows a statement affected (insert/update/delete without returning). */
  count(name: string, query: postgres.PendingQuery<Row[]>): Promise<number> {
    return this.run(name, query, rowCount);
  }

  /**
   * Runs `fn` in a transaction: commit when it returns, rollback when it throws.
   * Inside a transaction it makes a savepoint instead, so a failing inner part
   * rolls back alone. Serialization failures and deadlocks rerun the whole
   * transaction up to `retries` times.
   */
  async transaction<T>(fn: (tx: Database) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    if (this.inTransaction) {
      const savepoint = (this.sql as TransactionSql).savepoint((sql) => fn(this.bound(sql, this.abort)));
      try {
        return (await savepoint) as T;
      } catch (error) {
        throw mapPostgresError(error);
      }
    }
    const retries = options.retries ?? 3;
    const begin = options.isolation ? `isolation level ${options.isolation}` : '';
    const activity = this.activity;
    for (let attempt = 0; ; attempt++) {
      if (this.needsPrePing(performance.now()))
        await prePing(this.sql as Sql, this.pool as PoolState, this.options);
      if (activity) activity.inFlight++;
      // The caller is answered when the time is up, but the transaction may still be waiting
      // for a connection or a statement. It must not commit after that answer: once aborted,
      // its next statement fails, and so does its callback's return (so it rolls back).
      const abort = { aborted: false };
      try {
        const run = (this.sql as Sql).begin(begin, async (sql) => {
          const result = await fn(this.bound(sql, abort));
          if (abort.aborted) throw abortedError();
          return result;
        });
        const result = (await withDeadline(this.deadlines, run as Promise<T>, 'transaction', () => {
          abort.aborted = true;
        })) as T;
        this.answered(performance.now());
        return result;
      } catch (error) {
        if (error instanceof postgres.PostgresError) this.answered(performance.now());
        const mapped = mapPostgresError(error);
        if (attempt < retries && (isRetryable(mapped) || wasTerminated(mapped))) {
          const why = isRetryable(mapped)
            ? 'transaction conflict, retrying'
            : 'connection ended by the server, retrying';
          this.options.log.info({ attempt: attempt + 1, err: error }, why);
          await sleep(2 ** attempt * 5 + Math.random() * 10);
          continue;
        }
        throw mapped;
      } finally {
        if (activity) activity.inFlight--;
      }
    }
  }

  private bound(sql: TransactionSql, abort: { aborted: boolean } | undefined): Database {
    return new Database(sql, this.options, true, abort);
  }

  /**
   * The one path of every query. Per call: one promise, one small record linked into the
   * shared deadline list (no timer of its own), one `then` on the driver's query; the
   * result's shape (all rows, first row, ...) is applied when it settles, so no further
   * promise layers. Metric, logs and error mapping happen once, in `settle`.
   */
  private run<T extends object, R>(
    name: string,
    query: postgres.PendingQuery<T[]>,
    shape: Shape<R>,
  ): Promise<R> {
    const start = performance.now();
    const first = this.needsPrePing(start)
      ? prePing(this.sql as Sql, this.pool as PoolState, this.options).then(() =>
          this.execute(name, query, shape, performance.now()),
        )
      : this.execute(name, query, shape, start);
    // Once more when the server ended the connection under the statement (see wasTerminated);
    // inside a transaction the whole transaction is run again instead (transaction()).
    const result = this.inTransaction
      ? first
      : first.catch((error: unknown) => {
          if (!wasTerminated(error)) throw error;
          this.options.log.info(
            { query: name, err: error },
            'connection ended by the server, running the statement again',
          );
          return this.execute(name, rebuild(this.sql as Sql, query), shape, performance.now());
        });
    const fallback = this.options.fallback;
    if (fallback === undefined || this.inTransaction) return result;
    return result.catch((error: unknown) => {
      if (!(error instanceof DatabaseUnavailableError || isRetryable(error))) throw error;
      fallback.failed(error);
      return fallback.db.run(name, rebuild(fallback.db.sql as Sql, query), shape);
    });
  }

  private execute<T extends object, R>(
    name: string,
    query: postgres.PendingQuery<T[]>,
    shape: Shape<R>,
    start: number,
  ): Promise<R> {
    if (this.abort?.aborted) return Promise.reject(abortedError());
    if (this.activity) this.activity.inFlight++;
    return new Promise<R>((resolve, reject) => {
      const pending = new PendingQuery(
        this,
        name,
        query as unknown as postgres.PendingQuery<Row[]>,
        shape as Shape<unknown>,
        start,
        resolve,
        reject,
      );
      this.deadlines.add(pending, start);
      query.then(
        (rows) => settle(pending, true, rows),
        (error) => settle(pending, false, error),
      );
    });
  }

  /** Called once per query (internal: by `settle` and on expiry): what every outcome records. */
  finish(pending: PendingQuery, ok: boolean, answered: boolean, end: number): void {
    if (this.activity) this.activity.inFlight--;
    if (answered) this.answered(end);
    const ms = end - pending.start;
    const options = this.options;
    options.onQuery?.(pending.name, ms / 1000, ok);
    if (ms >= options.slowQueryMs) {
      options.log.warn(
        { query: pending.name, sql: statementText(pending.query), ms: round(ms), ok },
        'slow query',
      );
    } else if (options.log.levelVal <= DEBUG) {
      options.log.debug(
        { query: pending.name, sql: statementText(pending.query), ms: round(ms), ok },
        'query',
      );
    }
  }

  private needsPrePing(now: number): boolean {
    const pool = this.pool;
    const idleMs = this.options.prePingIdleMs;
    return pool !== undefined && idleMs !== undefined && idleMs > 0 && now - pool.lastAnswer > idleMs;
  }

  private answered(now: number): void {
    if (this.pool !== undefined) this.pool.lastAnswer = now;
  }
}

const DEBUG = 20; // pino's level value of debug

const abortedError = () =>
  new DatabaseUnavailableError('the transaction ran out of time; it was rolled back');

const round = (ms: number) => Math.round(ms * 100) / 100;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

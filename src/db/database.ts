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
import { isRetryable, mapPostgresError } from './map-error.ts';

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
type Row = Record<string, unknown>;

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
      if (this.needsPrePing(performance.now())) await this.prePing();
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
        if (attempt < retries && isRetryable(mapped)) {
          this.options.log.info({ attempt: attempt + 1, err: error }, 'transaction conflict, retrying');
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
    const result = this.needsPrePing(start)
      ? this.prePing().then(() => this.execute(name, query, shape, performance.now()))
      : this.execute(name, query, shape, start);
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

  /**
   * Checks connections until one answers, before the first query after an idle period: a
   * restarted server or a dropped NAT entry leaves connections that look open until used.
   * A failed ping closes its connection (the driver does), so the next ping takes the next
   * idle connection, then a new one. Concurrent queries share one check. Gives up after
   * more attempts than the pool has connections, or on an error that is not about the
   * connection; the query then runs and fails on its own.
   */
  private prePing(): Promise<void> {
    const pool = this.pool as PoolState;
    pool.checking ??= this.sweep(pool).finally(() => {
      pool.checking = undefined;
    });
    return pool.checking;
  }

  private async sweep(pool: PoolState): Promise<void> {
    const sql = this.sql as Sql;
    const attempts = (sql.options.max ?? 10) + 1;
    const ms = Math.min(this.options.queryTimeoutMs, (sql.options.connect_timeout ?? 5) * 1000);
    for (let attempt = 1; attempt <= attempts; attempt++) {
      const ping = sql`select 1`;
      try {
        await withDeadline(deadlineList(ms), ping, 'pre-ping', () => cancel(ping));
        pool.lastAnswer = performance.now();
        return;
      } catch (error) {
        const connectionLost = mapPostgresError(error) instanceof DatabaseUnavailableError;
        this.options.log.info({ attempt, err: error }, 'pre-ping: the connection did not answer');
        if (!connectionLost) return;
      }
    }
  }
}

const DEBUG = 20; // pino's level value of debug

/** What a query's rows become for the caller. */
type Shape<R> = (rows: postgres.RowList<Row[]>, name: string) => R;
const allRows: Shape<never> = (rows) => rows as never;
const firstRowOrNull: Shape<never> = (rows) => (rows[0] ?? null) as never;
const firstRow: Shape<never> = (rows, name) => {
  const row = rows[0];
  if (row === undefined) throw new Error(`query ${name} returned no row`);
  return row as never;
};
const rowCount: Shape<never> = (rows) => (rows.count ?? 0) as never;

/** Something with a deadline in a DeadlineList. */
interface Deadline {
  deadline: number;
  prev: Deadline | null;
  next: Deadline | null;
  expire(now: number): void;
}

/** One query under way. */
class PendingQuery implements Deadline {
  deadline = 0;
  prev: Deadline | null = null;
  next: Deadline | null = null;
  done = false;
  readonly db: Database;
  readonly name: string;
  readonly query: postgres.PendingQuery<Row[]>;
  readonly shape: Shape<unknown>;
  readonly start: number;
  readonly resolve: (value: never) => void;
  readonly reject: (error: unknown) => void;

  constructor(
    db: Database,
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
function settle(pending: PendingQuery, ok: boolean, value: unknown): void {
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

/**
 * The deadlines of work under way that share one time limit, in the order they started —
 * which, with one limit, is the order they expire. Adding and removing are O(1) (a doubly
 * linked list); one interval per list, running only while the list is not empty, expires
 * the overdue ones from the head. This replaces a timer per query: a deadline may fire up to
 * one tick late (a twentieth of the limit, at most 250 ms).
 */
class DeadlineList {
  private head: Deadline | null = null;
  private tail: Deadline | null = null;
  private timer: NodeJS.Timeout | undefined;
  private readonly tickMs: number;

  readonly ms: number;

  constructor(ms: number) {
    this.ms = ms;
    this.tickMs = Math.max(5, Math.min(250, Math.floor(ms / 20)));
  }

  add(item: Deadline, now = performance.now()): void {
    item.deadline = now + this.ms;
    item.prev = this.tail;
    item.next = null;
    if (this.tail === null) this.head = item;
    else this.tail.next = item;
    this.tail = item;
    if (this.timer === undefined) {
      this.timer = setInterval(() => this.tick(), this.tickMs);
      this.timer.unref();
    }
  }

  remove(item: Deadline): void {
    if (item.prev === null) {
      if (this.head !== item) return; // not (or no longer) in the list
      this.head = item.next;
    } else {
      item.prev.next = item.next;
    }
    if (item.next === null) this.tail = item.prev;
    else item.next.prev = item.prev;
    item.prev = null;
    item.next = null;
  }

  private tick(): void {
    const now = performance.now();
    for (let item = this.head; item !== null && item.deadline <= now; item = this.head) {
      this.remove(item);
      item.expire(now);
    }
    if (this.head === null && this.timer !== undefined) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }
}

const lists = new Map<number, DeadlineList>();

/** The list of a time limit, shared by every Database with that limit. */
function deadlineList(ms: number): DeadlineList {
  let list = lists.get(ms);
  if (list === undefined) {
    list = new DeadlineList(ms);
    lists.set(ms, list);
  }
  return list;
}

/**
 * Rejects with DatabaseUnavailableError when `work` takes longer than the list's limit
 * (transactions and pre-pings; queries have their own record, see PendingQuery).
 */
function withDeadline<T>(
  list: DeadlineList,
  work: PromiseLike<T>,
  name: string,
  onTimeout: () => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const item: Deadline = {
      deadline: 0,
      prev: null,
      next: null,
      expire() {
        settled = true;
        onTimeout();
        reject(new DatabaseUnavailableError(`the database did not answer ${name} within ${list.ms} ms`));
      },
    };
    let settled = false;
    list.add(item);
    work.then(
      (value) => {
        if (settled) return;
        settled = true;
        list.remove(item);
        resolve(value);
      },
      (error) => {
        if (settled) return;
        settled = true;
        list.remove(item);
        reject(error);
      },
    );
  });
}

/**
 * The same statement, made anew on another pool (a replica's query run again on the
 * primary): the tagged template's strings and values; fragments inside are values of the
 * driver's own classes, so they embed in any pool's query. An `unsafe` query is not
 * tagged: the driver keeps its text as a one-element array (no `raw`), which the tagged
 * call would refuse (NOT_TAGGED_CALL), so it is made again with `unsafe`.
 */
function rebuild<T extends object>(sql: Sql, query: postgres.PendingQuery<T[]>): postgres.PendingQuery<T[]> {
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
function cancel(query: { cancel(): unknown }): void {
  try {
    const asked = query.cancel() as Promise<unknown> | null | undefined;
    if (asked && typeof asked.catch === 'function') asked.catch(() => {});
  } catch {
    // nothing to cancel
  }
}

interface PoolState {
  /** performance.now() when the server last answered on this pool. */
  lastAnswer: number;
  /** The pre-ping under way, shared by the queries that wait for it. */
  checking: Promise<void> | undefined;
}

const pools = new WeakMap<Sql, PoolState>();

function poolState(sql: Sql): PoolState {
  let state = pools.get(sql);
  if (state === undefined) {
    // A new pool has no connection yet: its first query connects, which is check enough.
    state = { lastAnswer: performance.now(), checking: undefined };
    pools.set(sql, state);
  }
  return state;
}

/** The SQL text of a query, without its parameter values (they may be secrets). */
function statementText(query: object): string {
  const strings = (query as unknown as { strings?: readonly string[] }).strings;
  return strings
    ? strings
        .map((s, i) => (i === 0 ? s : `$${i}${s}`))
        .join('')
        .replace(/\s+/g, ' ')
        .trim()
    : '';
}

const abortedError = () =>
  new DatabaseUnavailableError('the transaction ran out of time; it was rolled back');

const round = (ms: number) => Math.round(ms * 100) / 100;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

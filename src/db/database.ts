/**
 * Database: the executor every repository receives — the pool, or a transaction.
 * Its query helpers say how many rows they expect (`many`, `maybeOne`, `one`),
 * and each call is timed, logged (debug; warn when slow), given a client-side
 * time limit, and has its PostgreSQL errors mapped to domain errors.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import postgres from 'postgres';
import { DatabaseUnavailableError } from '../domain/errors.js';
import type { Sql, TransactionSql } from './client.js';
import { isRetryable, mapPostgresError } from './map-error.js';

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
  constructor(
    readonly sql: AnySql,
    readonly options: DatabaseOptions,
    /** True when `sql` is a transaction: `transaction()` then makes a savepoint. */
    readonly inTransaction = false,
    /** Set when the transaction this Database belongs to ran out of time (see transaction()). */
    private readonly abort?: { aborted: boolean },
  ) {
    this.pool = inTransaction ? undefined : poolState(sql as Sql);
  }

  /** State shared by every Database over the same pool (pre-ping); none inside a transaction. */
  private readonly pool: PoolState | undefined;

  /** All rows. */
  async many<T extends object>(name: string, query: postgres.PendingQuery<T[]>): Promise<T[]> {
    return this.run(name, query);
  }

  /** The first row, or null when there is none. */
  async maybeOne<T extends object>(name: string, query: postgres.PendingQuery<T[]>): Promise<T | null> {
    const [row] = await this.run(name, query);
    return row ?? null;
  }

  /** Exactly one row; none is a bug in the query (an insert/aggregate always returns one). */
  async one<T extends object>(name: string, query: postgres.PendingQuery<T[]>): Promise<T> {
    const [row] = await this.run(name, query);
    if (row === undefined) throw new Error(`query ${name} returned no row`);
    return row;
  }

  /** The number of rows a statement affected (insert/update/delete without returning). */
  async count(name: string, query: postgres.PendingQuery<Row[]>): Promise<number> {
    const result = await this.run(name, query);
    return result.count ?? 0;
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
    const activity = this.options.activity;
    for (let attempt = 0; ; attempt++) {
      if (this.needsPrePing()) await this.prePing();
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
        const result = (await this.withTimeout(run as Promise<T>, 'transaction', () => {
          abort.aborted = true;
        })) as T;
        this.answered();
        return result;
      } catch (error) {
        if (error instanceof postgres.PostgresError) this.answered();
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

  private async run<T extends object>(
    name: string,
    query: postgres.PendingQuery<T[]>,
  ): Promise<postgres.RowList<T[]>> {
    if (this.needsPrePing()) await this.prePing();
    const start = performance.now();
    let ok = false;
    if (this.abort?.aborted) throw abortedError();
    const activity = this.inTransaction ? undefined : this.options.activity;
    if (activity) activity.inFlight++;
    try {
      const rows = await this.withTimeout(query, name, () => query.cancel());
      ok = true;
      this.answered();
      return rows;
    } catch (error) {
      if (error instanceof postgres.PostgresError) this.answered();
      throw mapPostgresError(error);
    } finally {
      if (activity) activity.inFlight--;
      const ms = performance.now() - start;
      this.options.onQuery?.(name, ms / 1000, ok);
      const { log, slowQueryMs } = this.options;
      if (ms >= slowQueryMs) {
        log.warn({ query: name, sql: statementText(query), ms: round(ms), ok }, 'slow query');
      } else if (log.isLevelEnabled('debug')) {
        log.debug({ query: name, sql: statementText(query), ms: round(ms), ok }, 'query');
      }
    }
  }

  private needsPrePing(): boolean {
    const pool = this.pool;
    const idleMs = this.options.prePingIdleMs;
    return (
      pool !== undefined && idleMs !== undefined && idleMs > 0 && performance.now() - pool.lastAnswer > idleMs
    );
  }

  private answered(): void {
    if (this.pool !== undefined) this.pool.lastAnswer = performance.now();
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
        await this.withTimeout(ping, 'pre-ping', () => ping.cancel(), ms);
        pool.lastAnswer = performance.now();
        return;
      } catch (error) {
        const connectionLost = mapPostgresError(error) instanceof DatabaseUnavailableError;
        this.options.log.info({ attempt, err: error }, 'pre-ping: the connection did not answer');
        if (!connectionLost) return;
      }
    }
  }

  /**
   * Rejects with DatabaseUnavailableError when `work` takes longer than the query
   * timeout. One promise and one timer per query (no Promise.race): it is on every call.
   */
  private withTimeout<T>(
    work: PromiseLike<T>,
    name: string,
    onTimeout?: () => void,
    ms = this.options.queryTimeoutMs,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        onTimeout?.();
        reject(new DatabaseUnavailableError(`the database did not answer ${name} within ${ms} ms`));
      }, ms);
      work.then(
        (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        (error) => {
          clearTimeout(timer);
          reject(error);
        },
      );
    });
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

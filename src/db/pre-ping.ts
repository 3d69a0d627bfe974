/**
 * Pre-ping: after an idle period, connections are checked before the next query, because
 * a restarted server or a dropped NAT entry leaves connections that look open until used.
 * The state is per pool, shared by every Database over it.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { DatabaseUnavailableError } from '../domain/errors.ts';
import type { Sql } from './client.ts';
import { deadlineList, withDeadline } from './deadlines.ts';
import { mapPostgresError } from './map-error.ts';
import { cancel } from './statement.ts';

export interface PoolState {
  /** performance.now() when the server last answered on this pool. */
  lastAnswer: number;
  /** The pre-ping under way, shared by the queries that wait for it. */
  checking: Promise<void> | undefined;
}

const pools = new WeakMap<Sql, PoolState>();

export function poolState(sql: Sql): PoolState {
  let state = pools.get(sql);
  if (state === undefined) {
    // A new pool has no connection yet: its first query connects, which is check enough.
    state = { lastAnswer: performance.now(), checking: undefined };
    pools.set(sql, state);
  }
  return state;
}

/**
 * Checks connections until one answers, before the first query after an idle period.
 * A failed ping closes its connection (the driver does), so the next ping takes the next
 * idle connection, then a new one. Concurrent queries share one check. Gives up after
 * more attempts than the pool has connections, or on an error that is not about the
 * connection; the query then runs and fails on its own.
 */
export function prePing(
  sql: Sql,
  pool: PoolState,
  options: { queryTimeoutMs: number; log: Logger },
): Promise<void> {
  pool.checking ??= sweep(sql, pool, options.queryTimeoutMs, options.log).finally(() => {
    pool.checking = undefined;
  });
  return pool.checking;
}

async function sweep(sql: Sql, pool: PoolState, queryTimeoutMs: number, log: Logger): Promise<void> {
  const attempts = (sql.options.max ?? 10) + 1;
  const ms = Math.min(queryTimeoutMs, (sql.options.connect_timeout ?? 5) * 1000);
  for (let attempt = 1; attempt <= attempts; attempt++) {
    const ping = sql`select 1`;
    try {
      await withDeadline(deadlineList(ms), ping, 'pre-ping', () => cancel(ping));
      pool.lastAnswer = performance.now();
      return;
    } catch (error) {
      const connectionLost = mapPostgresError(error) instanceof DatabaseUnavailableError;
      log.info({ attempt, err: error }, 'pre-ping: the connection did not answer');
      if (!connectionLost) return;
    }
  }
}

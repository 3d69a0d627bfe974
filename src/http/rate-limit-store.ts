/**
 * A store for @fastify/rate-limit in PostgreSQL (`rate_limits`, UNLOGGED), so the
 * limits hold across every API process: N processes allow a limit once, not N
 * times. One statement per hit: an upsert that starts a new fixed window when the
 * last one has ended, else counts the hit, and returns the count and the time left.
 */
import type { Database } from '../db/database.js';

type Callback = (error: Error | null, result?: { current: number; ttl: number }) => void;

interface RouteParams {
  routeInfo?: { method?: string | string[]; url?: string };
}

export interface RateLimitStore {
  incr(key: string, callback: Callback, timeWindow: number, max: number): void;
  child(params: object): RateLimitStore;
}

/** The store class @fastify/rate-limit instantiates (`store:` option), bound to `db`. */
export function pgRateLimitStore(db: Database): new (params?: unknown) => RateLimitStore {
  return class PgRateLimitStore implements RateLimitStore {
    constructor(
      _params?: unknown,
      /** Counters of different routes never mix. */
      private readonly prefix = '',
    ) {}

    incr(key: string, callback: Callback, timeWindow: number): void {
      hit(db, `${this.prefix}|${key}`, timeWindow).then(
        (result) => callback(null, result),
        (error: Error) => callback(error),
      );
    }

    /** Given the route's merged options (typed as route options, carrying `routeInfo`). */
    child(params: object): RateLimitStore {
      const route = (params as RouteParams).routeInfo;
      const method = [route?.method ?? ''].flat().join(',');
      return new PgRateLimitStore(undefined, `${method} ${route?.url ?? ''}`);
    }
  };
}

async function hit(db: Database, key: string, windowMs: number): Promise<{ current: number; ttl: number }> {
  const row = await db.one<{ hits: number; ttl: number }>(
    'rateLimits.hit',
    db.sql`
      insert into rate_limits as r (key, hits, expires_at)
      values (${key.slice(0, 512)}, 1, now() + make_interval(secs => ${windowMs / 1000}))
      on conflict (key) do update set
        hits = case when r.expires_at <= now() then 1 else r.hits + 1 end,
        expires_at = case when r.expires_at <= now() then excluded.expires_at else r.expires_at end
      returning hits, ceil(extract(epoch from expires_at - now()) * 1000)::bigint as ttl
    `,
  );
  return { current: row.hits, ttl: Math.max(0, row.ttl) };
}

/** Deletes counters whose window has ended (maintenance). */
export async function pruneRateLimits(db: Database): Promise<number> {
  return db.count('rateLimits.prune', db.sql`delete from rate_limits where expires_at < now()`);
}
